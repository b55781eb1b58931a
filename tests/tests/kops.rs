//! kops workers through the boot flow: the kops provider (kops's user data from IMDS)
//! and the nodeup-compatible command line (the binary run as `nodeup --conf=FILE`),
//! with the nodeupconfig in the state store (emulated S3), checked against
//! `NodeupConfigHash`, translated and planned by the one engine.
//!
//! The inputs are kops's own (the `minimal-aws` integration case): its worker user
//! data and nodeupconfig, made into what kops writes for a cluster whose nodes read the
//! state store (`ConfigBase`): the CA in the nodeupconfig, its new hash in kube_env.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::process::{Command, Stdio};

use nodewright::kops::nodeup_config::config_hash;
use nodewright_e2e::agent::{Agent, Run};
use nodewright_e2e::front::AwsFront;
use nodewright_e2e::imds::{FakeImds, Instance};
use nodewright_e2e::moto::Moto;
use nodewright_e2e::tools::workspace_bin;

const CASE: &str = "minimal-aws";
const CLUSTER: &str = "minimal-aws.example.com";
const BUCKET: &str = "kops-state";
const CONFIG_KEY: &str = "minimal-aws.example.com/igconfig/node/nodes/nodeupconfig.yaml";

fn fixture(name: &str) -> String {
    let path = nodewright_e2e::workspace()
        .join("agent/tests/fixtures/kops/cases")
        .join(CASE)
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// kops's inputs for the `nodes` group, as for a cluster whose nodes read the store.
struct KopsInputs {
    user_data: String,
    kube_env: String,
    nodeup_config: String,
}

impl KopsInputs {
    fn config_base(base: &str) -> Self {
        let script = fixture(&format!("aws_launch_template_nodes.{CLUSTER}_user_data"));
        let config = fixture("aws_s3_object_nodeupconfig-nodes_content");
        let heredoc = "cat > conf/kube_env.yaml << '__EOF_KUBE_ENV'\n";
        let start = script.find(heredoc).unwrap() + heredoc.len();
        let end = start + script[start..].find("__EOF_KUBE_ENV").unwrap();
        let kube_env = &script[start..end];
        // The CA bundle kops-controller's kube_env carries goes into the nodeupconfig.
        let ca: Vec<&str> = kube_env
            .lines()
            .skip_while(|l| !l.starts_with("  CACertificates: |"))
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .collect();
        assert!(ca.len() > 4, "the fixture's CA bundle");
        let cas = format!(
            "CAs:\n  kubernetes-ca: |\n{}\n",
            ca.iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let nodeup_config = config.replacen("CAs: {}\n", &cas, 1);
        assert_ne!(nodeup_config, config);
        let hash = config_hash(nodeup_config.as_bytes());
        let mut lines = Vec::new();
        let mut in_server = false;
        for line in kube_env.lines() {
            if line == "ConfigServer:" {
                in_server = true;
                lines.push(format!("ConfigBase: {base}"));
                continue;
            }
            if in_server && (line.starts_with(' ') || line.starts_with("- ")) {
                continue;
            }
            in_server = false;
            if line.starts_with("NodeupConfigHash: ") {
                lines.push(format!("NodeupConfigHash: {hash}"));
            } else {
                lines.push(line.to_owned());
            }
        }
        let new_env = lines.join("\n") + "\n";
        assert!(!new_env.contains("ConfigServer") && new_env.contains("InstanceGroupRole: Node"));
        let user_data = format!("{}{new_env}{}", &script[..start], &script[end..]);
        Self {
            user_data,
            kube_env: new_env,
            nodeup_config,
        }
    }
}

/// The emulator with the state store, a fake IMDS with the user data, an agent root.
struct KopsWorld {
    _moto: Moto,
    _front: AwsFront,
    _imds: FakeImds,
    agent: Agent,
    dir: tempfile::TempDir,
}

impl KopsWorld {
    fn new(user_data: &[u8], nodeup_config: &[u8]) -> Self {
        let moto = Moto::start();
        let front = AwsFront::start(moto.url());
        let imds = FakeImds::start(Instance::example("i-0a1b2c3d4e5f60718"), user_data);
        moto.put_object(BUCKET, CONFIG_KEY, nodeup_config);
        let agent = Agent::new(&imds.url(), &front.url());
        Self {
            _moto: moto,
            _front: front,
            _imds: imds,
            agent,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// kops's first run made the kubelet's credentials (kops-controller, on a real
    /// cluster): the run keeps what the node holds.
    fn seed_kubelet_credentials(&self) {
        for (path, text) in [
            (
                "/var/lib/kubelet/pki/kubelet-client-current.pem",
                "key and certificate",
            ),
            ("/var/lib/kubelet/pki/kubelet-client.crt", "certificate"),
        ] {
            let at = self.agent.path(path);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(at, text).unwrap();
        }
    }

    /// The binary, under the name kops's script runs it by.
    fn nodeup(&self) -> PathBuf {
        let link = self.dir.path().join("bin/nodeup");
        if !link.exists() {
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(workspace_bin("nodewright"), &link).unwrap();
        }
        link
    }

    fn write_kube_env(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("conf/kube_env.yaml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `nodeup ARGS`, with the agent's environment and `NODEWRIGHT_ROOT` for its root.
    fn run_nodeup(&self, args: &[&str]) -> Run {
        // The agent's command runs nodewright with --root: run the link instead, as
        // kops's script does, with the same environment.
        let template = self.agent.command(&[]);
        let mut nodeup = Command::new(self.nodeup());
        nodeup.env_clear();
        for (key, value) in template.get_envs() {
            if let Some(value) = value {
                nodeup.env(key, value);
            }
        }
        nodeup
            .env("NODEWRIGHT_ROOT", self.agent.root())
            .env("NODEWRIGHT_DEADLINE", "20")
            .args(args)
            .stdin(Stdio::null());
        Run::from_output(nodeup.output().unwrap())
    }
}

fn s3_base() -> String {
    format!("s3://{BUCKET}/{CLUSTER}")
}

#[test]
fn kops_user_data_from_imds_is_translated_and_planned() {
    let inputs = KopsInputs::config_base(&s3_base());
    let world = KopsWorld::new(inputs.user_data.as_bytes(), inputs.nodeup_config.as_bytes());
    world.seed_kubelet_credentials();
    let run = world.agent.run(&["plan", "--deadline", "20"]);
    run.expect_code(0);
    for wanted in [
        "/var/lib/kubelet/config.yaml",
        "/etc/containerd/config.toml",
        "kubelet.service",
        "/etc/kubernetes/manifests/kube-proxy.yaml",
    ] {
        assert!(
            run.stdout.contains(wanted),
            "{wanted} not planned:\n{}",
            run.stdout
        );
    }
    // Not run as nodeup: no nodeup unit.
    assert!(
        !run.stdout.contains("kops-configuration.service"),
        "{}",
        run.stdout
    );
}

#[test]
fn nodeup_command_line_plans_the_worker_with_its_boot_unit() {
    let inputs = KopsInputs::config_base(&s3_base());
    let world = KopsWorld::new(b"", inputs.nodeup_config.as_bytes());
    world.seed_kubelet_credentials();
    let conf = world.write_kube_env(&inputs.kube_env);
    let conf_arg = format!("--conf={}", conf.display());
    let run = world.run_nodeup(&["--install-systemd-unit", &conf_arg, "--v=8", "--dryrun"]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("kops-configuration.service"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("/var/lib/kubelet/config.yaml"),
        "{}",
        run.stdout
    );
    // nodeup's flags only: nodewright's are not nodeup's.
    let run = world.run_nodeup(&[&conf_arg, "--v=8", "--target=direct"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--target"), "{}", run.stderr);
}

#[test]
fn nodeup_refuses_a_tampered_nodeupconfig_writing_nothing() {
    let inputs = KopsInputs::config_base(&s3_base());
    let tampered = inputs.nodeup_config.replace("logLevel: 2", "logLevel: 9");
    assert_ne!(tampered, inputs.nodeup_config);
    let world = KopsWorld::new(b"", tampered.as_bytes());
    let conf = world.write_kube_env(&inputs.kube_env);
    let run = world.run_nodeup(&[
        "--install-systemd-unit",
        &format!("--conf={}", conf.display()),
        "--v=8",
    ]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("NodeupConfigHash") && run.stderr.contains(CONFIG_KEY),
        "{}",
        run.stderr
    );
    assert!(world.agent.untouched());
}

#[test]
fn bad_kube_env_and_truncated_scripts_are_refused_by_name() {
    let script = fixture(&format!("aws_launch_template_nodes.{CLUSTER}_user_data"));
    let world = KopsWorld::new(b"", b"");
    // A kube_env field nodeup would ignore is named, with its line.
    let inputs = KopsInputs::config_base(&s3_base());
    let conf = world.write_kube_env(&inputs.kube_env.replace(
        "InstanceGroupRole: Node\n",
        "InstanceGroupRole: Node\nWarmPoolMode: warm\n",
    ));
    let run = world.run_nodeup(&[&format!("--conf={}", conf.display()), "--v=2"]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("WarmPoolMode") && run.stderr.contains("line"),
        "{}",
        run.stderr
    );
    // A truncated script in user data.
    let cut = &script[..script.len() * 2 / 3];
    let world = KopsWorld::new(cut.as_bytes(), b"");
    let run = world.agent.run(&["boot", "--deadline", "10"]);
    run.expect_code(3);
    assert!(run.stderr.contains("truncated"), "{}", run.stderr);
    assert!(world.agent.untouched());
}

#[test]
fn a_worker_without_credentials_is_refused_before_anything_is_written() {
    let inputs = KopsInputs::config_base(&s3_base());
    let world = KopsWorld::new(inputs.user_data.as_bytes(), inputs.nodeup_config.as_bytes());
    let run = world.agent.run(&["boot", "--deadline", "20"]);
    run.expect_code(3);
    assert!(run.stderr.contains("client certificate"), "{}", run.stderr);
    assert!(world.agent.untouched());
}

// --- kops-controller (`ConfigServer`): kops's user data as kops writes it for every AWS
// worker, the nodeupconfig and the certificates from the fake kops-controller
// (`nodewright_e2e::kops_controller`), whose STS proof is checked by the emulator with
// signature checks on. Only the servers, the CA bundle (the fake's keyset) and the
// assets (the harness mirror, so that `boot` converges offline; hence a new
// NodeupConfigHash) differ from kops's fixture.

mod controller {
    use super::*;
    use nodewright::source::shim::{
        CLIENT_CERT, CLIENT_KEY, CLIENT_PEM, KUBE_PROXY_CERT, KUBE_PROXY_KEY, SERVING_CERT,
        SERVING_KEY,
    };
    use nodewright_e2e::assetkit::{Entry, tar_gz};
    use nodewright_e2e::kops_controller::{KopsWorld as ControllerWorld, NODES_ROLE};
    use nodewright_e2e::mirror::Mirror;
    use nodewright_e2e::shim::Node;

    const KEPT_NODEUP_CONFIG: &str = "/var/lib/nodewright/kops/nodeupconfig.yaml";

    /// The fixture's nodeupconfig with its amd64 assets served by `mirror` (stand-in
    /// bytes and tarballs with the members nodewright installs), pinned by their sha256.
    fn mirrored_nodeup_config(mirror: &Mirror) -> String {
        let config = fixture("aws_s3_object_nodeupconfig-nodes_content");
        let mut out = Vec::new();
        let mut in_amd64 = false;
        for line in config.lines() {
            if line == "  amd64:" {
                in_amd64 = true;
            } else if !line.starts_with("  - ") {
                in_amd64 = false;
            }
            let Some(asset) = line.strip_prefix("  - ").filter(|_| in_amd64) else {
                out.push(line.to_owned());
                continue;
            };
            let url = asset.split_once('@').unwrap().1;
            let file = url.rsplit('/').next().unwrap();
            let body = stand_in(file);
            let path = format!("/kops/{file}");
            mirror.put(&path, body.clone());
            out.push(format!(
                "  - {}@{}",
                nodewright_e2e::assetkit::sha256(&body),
                mirror.url(&path)
            ));
        }
        out.join("\n") + "\n"
    }

    fn stand_in(file: &str) -> Vec<u8> {
        let exe = |name: &str| format!("#!/bin/sh\n# stand-in for {name}\nexit 0\n").into_bytes();
        if file.starts_with("containerd-") {
            tar_gz(&[
                Entry::file("bin/containerd", &exe("containerd")),
                Entry::file("bin/containerd-shim-runc-v2", &exe("shim")),
                Entry::file("bin/ctr", &exe("ctr")),
            ])
        } else if file.starts_with("cni-plugins-") {
            // The plugins of kops's CNI release, as nodewright's table of it lists them.
            let plugins = nodewright::spec::CNI_PLUGINS;
            let mut entries: Vec<Entry> = plugins
                .iter()
                .map(|p| Entry::file(&format!("./{p}"), &exe(p)))
                .collect();
            entries.push(Entry::file("./LICENSE", b"license\n"));
            tar_gz(&entries)
        } else {
            exe(file)
        }
    }

    /// kops's worker user data with `servers`, `ca_bundle` and `nodeup_config`'s hash in
    /// its kube_env (everything else byte for byte).
    fn controller_user_data(servers: &[String], ca_bundle: &str, nodeup_config: &str) -> String {
        let script = fixture(&format!("aws_launch_template_nodes.{CLUSTER}_user_data"));
        let mut out = Vec::new();
        let mut skipping = false;
        for line in script.lines() {
            if skipping && line.starts_with("    ") {
                continue;
            }
            skipping = false;
            if line == "  CACertificates: |" {
                out.push(line.to_owned());
                out.extend(ca_bundle.lines().map(|l| format!("    {l}")));
                skipping = true;
            } else if line == "  servers:" {
                out.push(line.to_owned());
                out.extend(servers.iter().map(|s| format!("  - {s}")));
            } else if line.starts_with("  - https://kops-controller.internal.") {
                continue;
            } else if line.starts_with("NodeupConfigHash: ") {
                out.push(format!(
                    "NodeupConfigHash: {}",
                    config_hash(nodeup_config.as_bytes())
                ));
            } else {
                out.push(line.to_owned());
            }
        }
        let user_data = out.join("\n") + "\n";
        assert!(user_data.contains("ConfigServer:") && !user_data.contains("ConfigBase"));
        user_data
    }

    /// A kops cluster: the fake kops-controller, the nodeupconfig in its state store, an
    /// instance of `nodes` running under `role`, and its agent.
    struct Case {
        world: ControllerWorld,
        node: Node,
        _mirror: Mirror,
        _imds: FakeImds,
        agent: nodewright_e2e::agent::Agent,
    }

    impl Case {
        fn new(role: &str, servers: impl FnOnce(&ControllerWorld) -> Vec<String>) -> Self {
            let world = ControllerWorld::start(CLUSTER);
            let mirror = Mirror::start();
            let nodeup_config = mirrored_nodeup_config(&mirror);
            world.put_nodeup_config("nodes", nodeup_config.as_bytes());
            let node = world.launch("nodes", role);
            let user_data =
                controller_user_data(&servers(&world), &world.ca_bundle, &nodeup_config);
            let imds = FakeImds::start(node.imds_instance(), user_data.as_bytes());
            let agent = nodewright_e2e::agent::Agent::new(&imds.url(), world.moto.url());
            Self {
                world,
                node,
                _mirror: mirror,
                _imds: imds,
                agent,
            }
        }

        fn read(&self, path: &str) -> String {
            std::fs::read_to_string(self.agent.path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
        }
    }

    fn openssl(args: &[&str]) -> String {
        let output = Command::new("openssl").args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "openssl {args:?}: {text}");
        text
    }

    /// The certificate verifies against the CA bundle, has `subject`, and is for the key.
    fn check_pair(case: &Case, cert: &str, key: &str, subject: &str) {
        let ca = case.agent.path("/etc/kubernetes/pki/ca.crt");
        let cert_path = case.agent.path(cert);
        let verified = openssl(&[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            cert_path.to_str().unwrap(),
        ]);
        assert!(verified.contains(": OK"), "{cert}: {verified}");
        let got = openssl(&[
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
            "-in",
            cert_path.to_str().unwrap(),
        ]);
        assert_eq!(got.trim(), format!("subject={subject}"), "{cert}");
        let from_cert = openssl(&[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            cert_path.to_str().unwrap(),
        ]);
        let from_key = openssl(&[
            "pkey",
            "-pubout",
            "-in",
            case.agent.path(key).to_str().unwrap(),
        ]);
        assert_eq!(from_cert, from_key, "{cert} is not for {key}");
    }

    #[test]
    fn a_config_server_worker_boots_through_kops_controller_and_keeps_its_credentials() {
        let case = Case::new(NODES_ROLE, |world| vec![world.loopback_url()]);
        let id = case.node.instance_id.clone();
        let run = case.agent.run(&["boot", "--deadline", "60"]);
        run.expect_code(0);
        // The translated kops worker is on disk, with kops-controller's credentials.
        assert!(
            case.read("/var/lib/kubelet/config.yaml")
                .contains("tlsCertFile")
        );
        check_pair(
            &case,
            CLIENT_CERT,
            CLIENT_KEY,
            &format!("CN=system:node:{id},O=system:nodes"),
        );
        check_pair(&case, SERVING_CERT, SERVING_KEY, &format!("CN={id}"));
        check_pair(
            &case,
            KUBE_PROXY_CERT,
            KUBE_PROXY_KEY,
            "CN=system:kube-proxy",
        );
        assert!(case.read(CLIENT_PEM).contains(&case.read(CLIENT_CERT)));
        // The kubeconfigs name the files written.
        let kubeconfig = case.read("/var/lib/kubelet/kubeconfig");
        assert!(
            kubeconfig.contains(CLIENT_CERT) && kubeconfig.contains(CLIENT_KEY),
            "{kubeconfig}"
        );
        for key in [CLIENT_KEY, SERVING_KEY, KUBE_PROXY_KEY, CLIENT_PEM] {
            let mode = std::fs::metadata(case.agent.path(key))
                .unwrap()
                .permissions();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
                0o600,
                "{key}"
            );
        }
        // The CA the node trusts is kube_env's bundle (two CAs, as during a rotation).
        let ca = case.read("/etc/kubernetes/pki/ca.crt");
        assert_eq!(ca.matches("BEGIN CERTIFICATE").count(), 2, "{ca}");
        // The nodeupconfig is kept for the boots after this one.
        assert!(case.read(KEPT_NODEUP_CONFIG).contains("KeypairIDs"));
        assert!(case.world.controller.issued().contains(&id));
        assert!(
            case.world.controller.refusals().is_empty(),
            "{:?}",
            case.world.controller.refusals()
        );

        // The kubelet registered; kops-controller now answers this node 409. The next
        // boot keeps its credentials and uses the nodeupconfig it kept.
        case.world.controller.mark_ready(&id);
        let before: Vec<String> = [
            CLIENT_PEM,
            CLIENT_CERT,
            SERVING_CERT,
            KUBE_PROXY_CERT,
            KUBE_PROXY_KEY,
        ]
        .iter()
        .map(|p| case.read(p))
        .collect();
        let requests = case.world.controller.requests();
        let run = case.agent.run(&["boot", "--deadline", "60"]);
        run.expect_code(0);
        assert!(case.world.controller.requests() > requests);
        assert!(
            case.world
                .controller
                .refusals()
                .iter()
                .any(|r| r.contains("registered already")),
            "{:?}",
            case.world.controller.refusals()
        );
        let after: Vec<String> = [
            CLIENT_PEM,
            CLIENT_CERT,
            SERVING_CERT,
            KUBE_PROXY_CERT,
            KUBE_PROXY_KEY,
        ]
        .iter()
        .map(|p| case.read(p))
        .collect();
        assert_eq!(before, after, "the credentials changed on a 409");
        assert!(run.stderr.contains("409"), "{}", run.stderr);
    }

    #[test]
    fn a_registered_node_without_its_nodeup_config_is_refused_writing_nothing() {
        let case = Case::new(NODES_ROLE, |world| vec![world.loopback_url()]);
        case.world.controller.mark_ready(&case.node.instance_id);
        let run = case.agent.run(&["boot", "--deadline", "20"]);
        run.expect_code(3);
        assert!(
            run.stderr.contains("409") && run.stderr.contains(KEPT_NODEUP_CONFIG),
            "{}",
            run.stderr
        );
        assert!(case.agent.untouched());
    }

    #[test]
    fn kops_controller_down_is_reported_naming_the_server_writing_nothing() {
        let port = nodewright_e2e::moto::free_port();
        let down = format!("https://127.0.0.1:{port}/");
        let server = down.clone();
        let case = Case::new(NODES_ROLE, move |_| vec![server]);
        let run = case.agent.run(&["boot", "--deadline", "4"]);
        run.expect_code(4);
        assert!(
            run.stderr.contains(&down) && run.stderr.contains("gave up"),
            "{}",
            run.stderr
        );
        assert!(case.agent.untouched());
    }

    #[test]
    fn a_refused_identity_is_a_clear_403_refusal_writing_nothing() {
        // An instance whose role is not one of kops-controller's node roles.
        let case = Case::new("someone-else", |world| vec![world.loopback_url()]);
        let run = case.agent.run(&["boot", "--deadline", "4"]);
        run.expect_code(3);
        assert!(
            run.stderr.contains("403") && run.stderr.contains(&case.world.loopback_url()),
            "{}",
            run.stderr
        );
        assert!(
            case.world
                .controller
                .refusals()
                .iter()
                .any(|r| r.contains("does not contain acceptable node role")),
            "{:?}",
            case.world.controller.refusals()
        );
        assert!(case.agent.untouched());
    }

    #[test]
    fn the_placeholder_address_is_skipped_for_the_next_server() {
        // kops's placeholder (dns-controller has not published kops-controller yet) first:
        // never contacted, the next server answers.
        let case = Case::new(NODES_ROLE, |world| {
            vec![
                "https://203.0.113.123:3988/".to_owned(),
                world.loopback_url(),
            ]
        });
        let run = case.agent.run(&["plan", "--deadline", "30"]);
        run.expect_code(0);
        assert!(
            run.stdout.contains("/var/lib/kubelet/config.yaml"),
            "{}",
            run.stdout
        );
        assert!(
            run.stderr.contains("203.0.113.123") && run.stderr.contains("placeholder"),
            "{}",
            run.stderr
        );
        // plan asked for the configuration only, and wrote nothing.
        assert!(case.world.controller.issued().is_empty());
        assert!(case.agent.untouched());
    }
}
