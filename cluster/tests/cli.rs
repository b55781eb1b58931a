//! The binary on bad input: exit 3 with a message naming the field (and its line), and
//! nothing written. And a good render: the directory holds what `publish` needs.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use support::kit_args;

use std::path::Path;
use std::process::{Command, Output};

fn kit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodewright-cluster"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Renders the HA example changed by `edit`; the output and the directory it wrote to.
fn render_edited(edit: impl Fn(String) -> String) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = edit(std::fs::read_to_string(support::cluster_file("ha")).unwrap());
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, text).unwrap();
    let ca = support::workspace().join("cluster/tests/fixtures/ca.crt");
    let out = dir.path().join("out");
    let output = kit(&kit_args::render(&file, &ca, &out));
    (output, dir)
}

#[test]
fn bad_input_exits_3_naming_the_field() {
    let cases: &[(&str, &str, &[&str])] = &[
        // (replace, with, what the message must say)
        (
            "  instanceType: m7i.large\n",
            "  instanceType: m7i.large\n  spotPrice: \"0.1\"\n",
            &["controlPlane", "spotPrice", "line 28"],
        ),
        (
            "kubernetesVersion: \"1.34\"",
            "kubernetesVersion: \"1.29\"",
            &[
                "kubernetesVersion",
                "1.29",
                "known: 1.33.8, 1.34.4, 1.35.1",
                "line 10",
            ],
        ),
        (
            "kubernetesVersion: \"1.34\"",
            "kubernetesVersion: 1.34",
            &["kubernetesVersion", "quote the version"],
        ),
        (
            "  vpcCidr: 10.0.0.0/16\n",
            "  vpcCidr: 10.0.0.0/16\n  podCidr: 10.0.128.0/17\n",
            &["network.podCidr", "overlaps the VPC's 10.0.0.0/16"],
        ),
        (
            "  vpcCidr: 10.0.0.0/16\n",
            "  vpcCidr: 10.0.0.0/16\n  serviceCidr: 100.64.0.0/10\n",
            &["network.podCidr", "overlaps serviceCidr 100.64.0.0/10"],
        ),
        (
            "  count: 3\n",
            "  count: 4\n",
            &[
                "controlPlane.count",
                "4 control-plane nodes",
                "odd",
                "line 26",
            ],
        ),
        (
            "zones: [us-east-1a, us-east-1b, us-east-1c]",
            "zones: [us-east-1a, us-west-2b, us-east-1c]",
            &[
                "zones[1]",
                "us-west-2b is not a zone of region us-east-1",
                "line 8",
            ],
        ),
    ];
    for (from, to, wanted) in cases {
        let (output, dir) = render_edited(|text| {
            assert!(text.contains(from), "{from} is not in the example");
            text.replace(from, to)
        });
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{to}: {message}");
        for word in *wanted {
            assert!(
                message.contains(word),
                "{to}: {word:?} missing from: {message}"
            );
        }
        assert!(
            !dir.path().join("out").exists(),
            "{to}: something was written"
        );
    }
}

#[test]
fn a_cluster_with_workers_needs_the_ca_and_a_render_dir_is_never_someone_elses() {
    let dir = tempfile::tempdir().unwrap();
    let file = support::cluster_file("ha");
    let out = dir.path().join("out");
    let output = kit(&[
        "render",
        "-f",
        file.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("--ca-cert"), "{}", stderr(&output));
    assert!(!out.exists());

    // A directory holding other files is refused, and left as it was.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let ca = support::workspace().join("cluster/tests/fixtures/ca.crt");
    let args = kit_args::render(&file, &ca, &out);
    let output = kit(&args);
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("not a render"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );

    // An empty (or new) one is fine, and a render replaces a render.
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    for _ in 0..2 {
        let output = kit(&args);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    for file in [
        "publish.yaml",
        "cloudformation.yaml",
        "controller-shim/node-groups.yaml",
        "nodegroups/control-plane/nodespec.yaml",
        "nodegroups/control-plane/bootconfig.yaml",
        "nodegroups/nodes/nodespec.yaml",
        "nodegroups/nodes/bootconfig.yaml",
        "iam/control-plane.json",
        "iam/nodes.json",
    ] {
        assert!(out.join(file).is_file(), "{file} was not rendered");
    }
    // Nothing beside it is left over from the swap.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["out"]);
    // The rendered files equal the in-memory render (the goldens' source).
    let rendered = support::render_case("ha");
    for (path, bytes) in &rendered.files {
        assert_eq!(
            &std::fs::read(Path::new(&out).join(path)).unwrap(),
            bytes,
            "{path}"
        );
    }
}

#[test]
fn a_tampered_render_is_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    support::render_case("ha").write(&out).unwrap();
    let spec = out.join("nodegroups/nodes/nodespec.yaml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, format!("{text}# edited\n")).unwrap();
    let output = kit(&["publish", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("the file changed after render"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn versions_and_schema() {
    let output = kit(&["versions"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "1.33.8\n1.34.4\n1.35.1\n"
    );
    let output = kit(&["schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    for field in [
        "controlPlane",
        "nodeGroups",
        "network",
        "stateStore",
        "kubernetesVersion",
    ] {
        assert!(schema["properties"][field].is_object(), "{field}");
    }
    // The schema committed for editors is the one the binary prints.
    let committed =
        std::fs::read_to_string(support::workspace().join("cluster/cluster.schema.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&committed).unwrap(),
        schema,
        "cluster/cluster.schema.json is stale: nodewright-cluster schema > cluster/cluster.schema.json"
    );
}
