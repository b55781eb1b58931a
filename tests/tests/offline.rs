//! Checking a spec needs no EC2 (issue 14 §2): `check` parses and validates a spec on
//! any machine; `plan`/`apply --spec` read a local spec before anything asks the
//! network, and off EC2 take the instance's facts from flags or `--facts FILE`, saying
//! what is missing instead of waiting for IMDS. The real binary, with IMDS pointed at a
//! closed loopback port (as on a laptop: nothing answers).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use nodewright_e2e::agent::Agent;

/// Nothing listens here: IMDS "off EC2".
const NO_IMDS: &str = "http://127.0.0.1:9";

fn agent() -> Agent {
    Agent::new(NO_IMDS, NO_IMDS)
}

fn example_path(path: &str) -> PathBuf {
    nodewright_e2e::workspace().join("examples").join(path)
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The worker example with one edit, written next to the agent's root.
fn edited_spec(dir: &Path, edit: impl Fn(&str) -> String) -> String {
    let spec = String::from_utf8(nodewright_e2e::example("worker/nodespec.yaml")).unwrap();
    let edited = edit(&spec);
    assert_ne!(edited, spec, "the edit applies");
    let path = dir.join("nodespec.yaml");
    std::fs::write(&path, edited).unwrap();
    file_url(&path)
}

fn unknown_field(spec: &str) -> String {
    spec.replace(
        "  clusterDomain: cluster.local",
        "  clusterDomian: cluster.local",
    )
}

const FACTS: &str = "instanceId: i-0123456789abcdef0
region: eu-west-1
availabilityZone: eu-west-1b
privateIpv4: 10.1.2.3
instanceType: m6i.large
";

#[test]
fn check_accepts_the_examples_with_their_boot_configs() {
    let agent = agent();
    for example in ["worker", "control-plane"] {
        let spec = example_path(&format!("{example}/nodespec.yaml"));
        let run = agent.run(&["check", "--spec", &file_url(&spec)]);
        run.expect_code(0);
        assert!(run.stdout.contains("a valid node spec"), "{}", run.stdout);
        // A plain path is a file too.
        agent
            .run(&["check", "--spec", spec.to_str().unwrap()])
            .expect_code(0);
    }
    let run = agent.run(&[
        "check",
        "--spec",
        &file_url(&example_path("worker/nodespec.yaml")),
        "--boot-config",
        example_path("worker/bootconfig.yaml").to_str().unwrap(),
    ]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("matching the boot config"),
        "{}",
        run.stdout
    );
    assert!(agent.untouched(), "check writes nothing");
}

#[test]
fn check_refuses_bad_specs_with_the_field_and_the_line() {
    let agent = agent();
    let dir = tempfile::tempdir().unwrap();
    let url = edited_spec(dir.path(), unknown_field);
    let run = agent.run(&["check", "--spec", &url]);
    run.expect_code(3);
    for expected in [
        "nodespec.yaml",
        "cluster.clusterDomian: unknown field `clusterDomian`",
        "line 9",
    ] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    // A validation across fields, not only the parse.
    let url = edited_spec(dir.path(), |s| {
        s.replace("  dnsIp: 100.64.0.10", "  dnsIp: 10.0.0.10")
    });
    let run = agent.run(&["check", "--spec", &url]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("cluster.dnsIp") && run.stderr.contains("is not inside serviceCidr"),
        "{}",
        run.stderr
    );
    // A digest that does not match.
    let run = agent.run(&["check", "--spec", &url, "--sha256", &"0".repeat(64)]);
    run.expect_code(3);
    assert!(run.stderr.contains("sha256"), "{}", run.stderr);
    // A boot config for another role.
    let run = agent.run(&[
        "check",
        "--spec",
        &file_url(&example_path("control-plane/nodespec.yaml")),
        "--boot-config",
        example_path("worker/bootconfig.yaml").to_str().unwrap(),
    ]);
    run.expect_code(3);
    assert!(run.stderr.contains("sha256"), "{}", run.stderr);
    // An s3:// spec with no region says so; nothing is asked.
    let run = agent.run(&["check", "--spec", "s3://bucket-a/spec.yaml"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--region"), "{}", run.stderr);
    assert!(agent.untouched());
}

#[test]
fn plan_refuses_a_bad_local_spec_before_asking_for_facts() {
    let agent = agent();
    let dir = tempfile::tempdir().unwrap();
    let url = edited_spec(dir.path(), unknown_field);
    // IMDS would be asked for 60 s; the spec is refused first (exit 3, not 4).
    for command in ["plan", "apply"] {
        let run = agent.run(&[command, "--spec", &url, "--imds-wait", "60"]);
        run.expect_code(3);
        assert!(run.stderr.contains("line 9"), "{}", run.stderr);
        assert!(!run.stderr.contains("metadata"), "{}", run.stderr);
    }
    assert!(agent.untouched());
}

#[test]
fn off_ec2_without_facts_the_error_says_how_to_give_them() {
    let agent = agent();
    let url = file_url(&example_path("worker/nodespec.yaml"));
    let run = agent.run(&["plan", "--spec", &url, "--imds-wait", "1"]);
    run.expect_code(4);
    for expected in [
        "did not answer within 1s",
        "--facts FILE",
        "--instance-id",
        "--private-ip",
    ] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    assert!(agent.untouched());
}

#[test]
fn missing_facts_are_named_and_a_bad_facts_file_has_its_line() {
    let agent = agent();
    let url = file_url(&example_path("worker/nodespec.yaml"));
    for command in ["plan", "apply"] {
        let run = agent.run(&[command, "--spec", &url, "--region", "eu-west-1"]);
        run.expect_code(2);
        for expected in ["--instance-id", "--zone", "--private-ip", "--instance-type"] {
            assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
        }
        assert!(!run.stderr.contains("region (--region)"), "{}", run.stderr);
    }
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("facts.yaml");
    std::fs::write(&facts, format!("{FACTS}zone: eu-west-1b\n")).unwrap();
    let run = agent.run(&["plan", "--spec", &url, "--facts", facts.to_str().unwrap()]);
    run.expect_code(3);
    for expected in ["facts.yaml", "unknown field `zone`", "line 6"] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    assert!(agent.untouched());
}

#[test]
fn plan_off_ec2_with_given_facts_plans_and_writes_nothing() {
    let agent = agent();
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("facts.yaml");
    std::fs::write(&facts, FACTS).unwrap();
    let url = file_url(&example_path("worker/nodespec.yaml"));
    let run = agent.run(&["plan", "--spec", &url, "--facts", facts.to_str().unwrap()]);
    run.expect_code(0);
    assert!(run.stdout.contains("kubelet"), "{}", run.stdout);
    // Flags alone do as well, and win over the file.
    let run = agent.run(&[
        "plan",
        "--json",
        "--spec",
        &url,
        "--instance-id",
        "i-0123456789abcdef0",
        "--region",
        "eu-west-1",
        "--zone",
        "eu-west-1b",
        "--private-ip",
        "10.1.2.3",
        "--instance-type",
        "m6i.large",
    ]);
    run.expect_code(0);
    let plan = nodewright_e2e::agent::json_of(&run);
    assert!(
        plan["steps"].as_array().is_some_and(|s| !s.is_empty()),
        "{plan}"
    );
    assert!(agent.untouched(), "plan writes nothing");
}
