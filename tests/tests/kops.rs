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
fn kops_controller_and_bad_kube_env_are_refused_by_name() {
    // kops's user data as it is: the worker asks kops-controller.
    let script = fixture(&format!("aws_launch_template_nodes.{CLUSTER}_user_data"));
    let world = KopsWorld::new(script.as_bytes(), b"");
    let run = world.agent.run(&["boot", "--deadline", "10"]);
    run.expect_code(3);
    assert!(run.stderr.contains("ConfigServer: "), "{}", run.stderr);
    assert!(world.agent.untouched());
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
