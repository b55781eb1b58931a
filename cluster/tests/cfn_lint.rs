//! cfn-lint (AWS's CloudFormation linter, with the resource specifications) on every
//! rendered template: no errors and no warnings.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::process::Command;

use support::{CASES, render_case, venv_bin};

fn lint(path: &std::path::Path, region: &str) -> (i32, String) {
    let output = Command::new(venv_bin("cfn-lint"))
        .args(["--regions", region, "--format", "parseable", "--"])
        .arg(path)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn every_template_passes_cfn_lint() {
    for case in CASES {
        let cluster = support::parse(case);
        let rendered = render_case(case);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cloudformation.yaml");
        std::fs::write(&path, &rendered.files["cloudformation.yaml"]).unwrap();
        let (code, report) = lint(&path, &cluster.region);
        assert_eq!(code, 0, "{case}: cfn-lint found:\n{report}");
    }
}

#[test]
fn cfn_lint_catches_a_broken_template() {
    // The check can fail: a launch template with a misspelled property is reported.
    let rendered = render_case("ha");
    let text = String::from_utf8(rendered.files["cloudformation.yaml"].clone())
        .unwrap()
        .replacen("HttpPutResponseHopLimit", "HttpPutResponseHopLimmit", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloudformation.yaml");
    std::fs::write(&path, text).unwrap();
    let (code, report) = lint(&path, "us-east-1");
    assert_ne!(code & 2, 0, "{report}");
    assert!(report.contains("HttpPutResponseHopLimmit"), "{report}");
}
