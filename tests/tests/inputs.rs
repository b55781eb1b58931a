//! Bad and unusual inputs: user data envelopes, and specs that must be refused with
//! the field path and the line, writing nothing.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use nodewright_e2e::world::World;

const CONTENT_TYPE: &str = "application/vnd.nodewright.bootconfig+yaml";

fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out =
        b"Content-Type: multipart/mixed; boundary=\"==BOUNDARY==\"\nMIME-Version: 1.0\n\n".to_vec();
    for (content_type, body) in parts {
        out.extend_from_slice(
            format!("--==BOUNDARY==\nContent-Type: {content_type}; charset=\"us-ascii\"\nMIME-Version: 1.0\n\n").as_bytes(),
        );
        out.extend_from_slice(body);
        out.push(b'\n');
    }
    out.extend_from_slice(b"--==BOUNDARY==--\n");
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn boot_with_user_data(user_data: &[u8]) -> (World, nodewright_e2e::agent::Run) {
    let spec = nodewright_e2e::example("worker/nodespec.yaml");
    let mut world = World::new(&nodewright_e2e::example("worker/bootconfig.yaml"), &spec);
    world.imds.set_user_data(user_data);
    let run = world.agent.run(&["boot", "--deadline", "10"]);
    world.agent.set_env("NODEWRIGHT_LOG", "info");
    (world, run)
}

#[test]
fn multipart_user_data_with_cloud_init_parts() {
    let boot = nodewright_e2e::example("worker/bootconfig.yaml");
    let user_data = multipart(&[
        ("text/cloud-config", b"#cloud-config\npackages: [jq]\n"),
        (CONTENT_TYPE, &boot),
        ("text/x-shellscript", b"#!/bin/bash\necho from cloud-init\n"),
    ]);
    let (_world, run) = boot_with_user_data(&user_data);
    run.expect_code(0);
}

#[test]
fn gzip_user_data_and_gzip_multipart() {
    let boot = nodewright_e2e::example("worker/bootconfig.yaml");
    let (_world, run) = boot_with_user_data(&gzip(&boot));
    run.expect_code(0);
    let (_world, run) = boot_with_user_data(&gzip(&multipart(&[(CONTENT_TYPE, &boot)])));
    run.expect_code(0);
}

#[test]
fn multipart_without_our_part_is_a_clear_error() {
    let user_data = multipart(&[
        ("text/cloud-config", b"#cloud-config\n"),
        ("text/x-shellscript", b"#!/bin/bash\n"),
    ]);
    let (world, run) = boot_with_user_data(&user_data);
    run.expect_code(3);
    assert!(run.stderr.contains(CONTENT_TYPE), "{}", run.stderr);
    assert!(
        run.stderr.contains("text/cloud-config, text/x-shellscript"),
        "{}",
        run.stderr
    );
    assert!(world.agent.untouched());
}

#[test]
fn a_bad_boot_config_names_the_field() {
    let boot = String::from_utf8(nodewright_e2e::example("worker/bootconfig.yaml")).unwrap();
    let (world, run) = boot_with_user_data(boot.replace("role: worker", "role: master").as_bytes());
    run.expect_code(3);
    assert!(
        run.stderr
            .contains("user data: role: unknown variant `master`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("line 8"), "{}", run.stderr);
    assert!(world.agent.untouched());
}

/// Publishes a broken spec (with its true digest in the boot config) and boots.
fn boot_with_spec(edit: impl Fn(&str) -> String) -> (World, nodewright_e2e::agent::Run) {
    let spec = edit(&String::from_utf8(nodewright_e2e::example("worker/nodespec.yaml")).unwrap());
    let digest = nodewright::spec::digest(spec.as_bytes());
    let boot = String::from_utf8(nodewright_e2e::example("worker/bootconfig.yaml")).unwrap();
    let boot: String = boot
        .lines()
        .map(|l| {
            if l.starts_with("  sha256: ") {
                format!("  sha256: {digest}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let world = World::new(boot.as_bytes(), spec.as_bytes());
    let run = world.agent.run(&["boot", "--deadline", "10"]);
    (world, run)
}

#[test]
fn bad_specs_name_the_field_and_line_and_write_nothing() {
    type Edit = dyn Fn(&str) -> String;
    let cases: &[(&str, &Edit, &[&str])] = &[
        (
            "malformed YAML",
            &|s| s.replace("  dnsIp: 100.64.0.10", "  dnsIp: [100.64.0.10"),
            &["line"],
        ),
        (
            "unknown field",
            &|s| {
                s.replace(
                    "  clusterDomain: cluster.local",
                    "  clusterDomian: cluster.local",
                )
            },
            &[
                "cluster.clusterDomian: unknown field `clusterDomian`",
                "line 9",
            ],
        ),
        (
            "wrong type",
            &|s| s.replace("    mode: \"0700\"", "    mode: [7]"),
            &["directories[1].mode: invalid type: sequence", "line 41"],
        ),
        (
            "relative path",
            &|s| {
                s.replace(
                    "- path: /var/lib/node-problem-check",
                    "- path: var/lib/node-problem-check",
                )
            },
            &[
                "directories[1].path: path \"var/lib/node-problem-check\" must be absolute",
                "line 40",
            ],
        ),
        (
            "role mismatch",
            // (Without TLS bootstrapping, which only workers do.)
            &|s| {
                s.replace("role: worker", "role: control-plane").replace(
                    "  tlsBootstrap:\n    tokenFile: /etc/kubernetes/bootstrap-token\n",
                    "",
                )
            },
            &["role: the spec is for role control-plane", "line 29"],
        ),
        (
            "invalid sysctl key",
            &|s| {
                s.replace(
                    "  net.ipv4.tcp_keepalive_time: 600",
                    "  net/ipv4/tcp_keepalive_time: 600",
                )
            },
            &[
                "sysctl key \"net/ipv4/tcp_keepalive_time\" is not a dotted key",
                "line 36",
            ],
        ),
        (
            "kubelet field of the wrong type",
            &|s| s.replace("    maxPods: 110", "    maxPods: lots"),
            &[
                "kubelet.config.maxPods: invalid type: string \"lots\", expected u32",
                "line 117",
            ],
        ),
        (
            "kubelet passthrough field of the wrong type",
            &|s| s.replace("    containerLogMaxWorkers: 2", "    maxPods: [110]"),
            &[
                "kubelet.extraConfig.maxPods: invalid type: sequence, expected u32",
                "line 129",
            ],
        ),
        (
            "containerd plugin section of another schema",
            &|s| {
                s.replace(
                    "    [plugins.\"io.containerd.grpc.v1.cri\"]\n",
                    "    [plugins.\"io.containerd.cri.v1.runtime\"]\n",
                )
            },
            &[
                "containerd.extraConfig: [plugins.\"io.containerd.cri.v1.runtime\"] is not a plugin of containerd with config version 2",
                "io.containerd.grpc.v1.cri",
                "line 104",
            ],
        ),
        (
            "containerd plugin section of the wrong shape",
            &|s| {
                s.replace(
                    "    max_container_log_line_size = 65536\n",
                    "    containerd = \"runc\"\n",
                )
            },
            &[
                "containerd.extraConfig: plugins.\"io.containerd.grpc.v1.cri\".containerd is a table in nodewright's config but a string in the overlay",
            ],
        ),
    ];
    for (name, edit, expected) in cases {
        let (world, run) = boot_with_spec(edit);
        assert_eq!(run.code, 3, "{name}: {}", run.stderr);
        for text in *expected {
            assert!(
                run.stderr.contains(text),
                "{name}: missing {text:?} in\n{}",
                run.stderr
            );
        }
        assert!(
            run.stderr.contains("s3://nodewright-state/"),
            "{name}: {}",
            run.stderr
        );
        assert!(world.agent.untouched(), "{name}: something was written");
    }
}
