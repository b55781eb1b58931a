//! controller-shim as it runs on the control plane: the static pod manifest passes
//! `kubernetes-validate --strict`, and the FROM-scratch image built from the static
//! binary runs under containerd + runc and answers /healthz over HTTPS.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nodewright_e2e::moto::free_port;
use nodewright_e2e::runtime::block_on;
use nodewright_e2e::tools::{die_with_parent, kill_group, on_path, venv_bin};
use nodewright_shim::manifest::{StaticPodSettings, render_static_pod};
use nodewright_shim::pki::{
    CertificateAuthority, KeyAlgorithm, PrivateKey, Profile, Subject, Usage,
};

#[test]
fn the_static_pod_passes_kubernetes_validate_strict() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = StaticPodSettings::new("registry.example.com/controller-shim:0.1.0");
    settings.trust_bundle = "/etc/pki/tls/certs/ca-bundle.crt".to_owned();
    let file = dir.path().join("controller-shim.yaml");
    std::fs::write(&file, render_static_pod(&settings)).unwrap();
    let output = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", "1.33.0"])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    assert!(!text.contains("WARN"), "{text}");
    assert!(
        text.contains("passed for resource pod/controller-shim"),
        "{text}"
    );

    // And a broken one is caught, so the check can fail.
    std::fs::write(
        &file,
        render_static_pod(&settings).replace("readOnly: true", "readOnly: yes-please"),
    )
    .unwrap();
    let output = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", "1.33.0"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
}

/// The static shim binary: this build's own when the tests run from a static build (as
/// scripts/test.sh runs them, `--target x86_64-unknown-linux-musl`), else the `dist` one.
fn static_binary() -> Option<PathBuf> {
    let own = nodewright_e2e::tools::workspace_bin("controller-shim");
    let dist =
        nodewright_e2e::workspace().join("target/x86_64-unknown-linux-musl/dist/controller-shim");
    [own, dist].into_iter().find(|p| is_static(p))
}

/// Whether `path` is an executable that needs no dynamic loader or shared library.
fn is_static(path: &std::path::Path) -> bool {
    let Ok(output) = Command::new("readelf").arg("-ld").arg(path).output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    output.status.success() && !text.contains("INTERP") && !text.contains("(NEEDED)")
}

/// Prerequisites of the image test, or why it cannot run here. In CI they must all be
/// there (scripts/setup.sh and the static build in scripts/test.sh provide them).
fn image_prerequisites() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (containerd and runc)".to_owned());
    }
    for tool in ["buildah", "containerd", "ctr", "runc"] {
        if !on_path(tool) {
            return Err(format!(
                "{tool} is not installed (scripts/setup.sh installs it)"
            ));
        }
    }
    if static_binary().is_none() {
        return Err(
            "no static controller-shim: run the tests from a static build (scripts/test.sh), or the release build: cargo build -p nodewright -p nodewright-shim --bins --profile dist --target x86_64-unknown-linux-musl"
                .to_owned(),
        );
    }
    Ok(())
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    text
}

struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap());
        die_with_parent(&mut command);
        let child = command.spawn().expect("containerd starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, socket }
    }

    fn ctr(&self, args: &[&str]) -> String {
        let mut all = vec![
            "--address",
            self.socket.to_str().unwrap(),
            "--namespace",
            "nodewright-test",
        ];
        all.extend_from_slice(args);
        run("ctr", &all)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// A container started with `ctr run -d`; removed with its task (and so its
/// containerd-shim process) when dropped, before containerd stops.
struct Running<'a> {
    containerd: &'a Containerd,
    id: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let ctr = |args: &[&str]| {
            let _ = Command::new("ctr")
                .args([
                    "--address",
                    self.containerd.socket.to_str().unwrap_or(""),
                    "--namespace",
                    "nodewright-test",
                ])
                .args(args)
                .output();
        };
        ctr(&["tasks", "kill", "-s", "SIGKILL", &self.id]);
        for _ in 0..50 {
            let status = Command::new("ctr")
                .args([
                    "--address",
                    self.containerd.socket.to_str().unwrap_or(""),
                    "--namespace",
                    "nodewright-test",
                    "tasks",
                    "delete",
                    &self.id,
                ])
                .output();
            if status.is_ok_and(|o| o.status.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ctr(&["containers", "delete", &self.id]);
    }
}

#[test]
fn the_image_runs_under_containerd_and_answers_healthz() {
    if let Err(reason) = image_prerequisites() {
        assert!(
            std::env::var_os("NODEWRIGHT_REQUIRE_ALL").is_none(),
            "CI must run the image test, but: {reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("shim-image-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let workspace = nodewright_e2e::workspace();

    // Build the image reproducibly and export it as an archive.
    let storage = ["--storage-driver", "vfs", "--root"];
    let root = d.join("buildah-root");
    let runroot = d.join("buildah-run");
    let mut bud = storage.to_vec();
    bud.extend_from_slice(&[
        root.to_str().unwrap(),
        "--runroot",
        runroot.to_str().unwrap(),
    ]);
    // The static binary the prerequisites found, relative to the build context.
    let binary = static_binary().unwrap();
    let binary_arg = format!(
        "BINARY={}",
        binary
            .strip_prefix(&workspace)
            .expect("the binary is under the workspace")
            .display()
    );
    let mut build = bud.clone();
    build.extend_from_slice(&[
        "bud",
        "--timestamp",
        "0",
        "--build-arg",
        &binary_arg,
        "-f",
        "images/controller-shim.Containerfile",
        "-t",
        "localhost/controller-shim:test",
    ]);
    build.push(workspace.to_str().unwrap());
    let output = Command::new("buildah")
        .args(&build)
        .current_dir(&workspace)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "buildah bud: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let archive = d.join("image.tar");
    let mut push = bud.clone();
    let target = format!(
        "docker-archive:{}:localhost/controller-shim:test",
        archive.display()
    );
    push.extend_from_slice(&["push", "localhost/controller-shim:test", &target]);
    run("buildah", &push);

    // The shim's files, mounted where its configuration says.
    let etc = d.join("etc");
    std::fs::create_dir(&etc).unwrap();
    let (ca, ca_key) =
        CertificateAuthority::create("kubernetes-ca", Duration::from_secs(86400)).unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let serving = ca
        .issue(
            &key.public_key(),
            &Profile {
                subject: Subject::new("controller-shim", &[]),
                dns_names: vec!["localhost".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
                usage: Usage::Server,
                validity: Duration::from_secs(3600),
                backdate: Duration::from_secs(60),
            },
        )
        .unwrap();
    std::fs::write(etc.join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(etc.join("ca.key"), ca_key.to_pem()).unwrap();
    std::fs::write(etc.join("serving.crt"), &serving.pem).unwrap();
    std::fs::write(etc.join("serving.key"), key.to_pem()).unwrap();
    let port = free_port();
    let admin_port = free_port();
    let c = "/etc/kubernetes/controller-shim";
    std::fs::write(
        etc.join("config.yaml"),
        format!(
            "apiVersion: shim.nodewright.io/v1alpha1\nkind: ShimConfig\nclusterName: prod.example.com\n\
             listen: 127.0.0.1:{port}\nadminListen: 127.0.0.1:{admin_port}\ntls:\n  certFile: {c}/serving.crt\n  keyFile: {c}/serving.key\n\
             ca:\n  certFile: {c}/ca.crt\n  keyFile: {c}/ca.key\n\
             aws:\n  region: us-east-1\n  accountId: \"123456789012\"\n\
             state:\n  bucket: nodewright-state\n  prefix: nodes/\n\
             nodeGroups:\n  - name: nodes\n    nodeSpecs: s3://nodewright-state/nodes/\n    roles: [nodes]\n"
        ),
    )
    .unwrap();

    let containerd = Containerd::start(d);
    containerd.ctr(&["images", "import", archive.to_str().unwrap()]);
    let images = containerd.ctr(&["images", "ls", "-q"]);
    let image = images
        .lines()
        .find(|l| l.contains("controller-shim:test"))
        .unwrap_or_else(|| panic!("the image was not imported: {images}"))
        .to_owned();
    // As the static pod does: the files at the configuration's paths, and the host's
    // trust bundle for AWS (a FROM-scratch image has none).
    let mount = format!("type=bind,src={},dst={c},options=rbind:ro", etc.display());
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let trust = format!("type=bind,src={bundle},dst={bundle},options=rbind:ro");
    let log = d.join("shim.log");
    let log_uri = format!("file://{}", log.display());
    let env = format!("SSL_CERT_FILE={bundle}");
    let config = format!("{c}/config.yaml");
    // runc keeps its state outside containerd's root: a unique id per run.
    let id = format!("shim-test-{}-{}", std::process::id(), fastrand::u32(..));
    containerd.ctr(&[
        "run",
        "-d",
        "--net-host",
        "--mount",
        &mount,
        "--mount",
        &trust,
        "--env",
        &env,
        "--log-uri",
        &log_uri,
        &image,
        &id,
        "/controller-shim",
        "serve",
        "--config",
        &config,
    ]);
    let _running = Running {
        containerd: &containerd,
        id: id.clone(),
    };

    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.cert_pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let answer = block_on(async {
            let response = client
                .get(format!("https://127.0.0.1:{port}/healthz"))
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(())?;
            response.text().await.ok()
        });
        if let Some(body) = answer {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not answer /healthz; tasks: {}\nlog: {}",
            containerd.ctr(&["tasks", "ls"]),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(body, "ok\n");
    // Our task is the one running.
    let tasks = containerd.ctr(&["tasks", "ls"]);
    let line = tasks
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no task {id}: {tasks}"));
    assert!(line.contains("RUNNING"), "{tasks}");
}

#[test]
fn the_examples_parse() {
    let config = String::from_utf8(nodewright_e2e::example("controller-shim/config.yaml")).unwrap();
    let config =
        nodewright_shim::config::ShimConfig::parse("examples/controller-shim/config.yaml", &config)
            .unwrap();
    // Its node groups are in the store; the example of that document parses too.
    assert!(matches!(
        config.node_groups,
        nodewright_shim::config::NodeGroupsSource::Store(_)
    ));
    let groups =
        String::from_utf8(nodewright_e2e::example("controller-shim/node-groups.yaml")).unwrap();
    let groups = nodewright_shim::groups::NodeGroups::parse(
        "examples/controller-shim/node-groups.yaml",
        &groups,
    )
    .unwrap();
    assert_eq!(groups.node_groups[0].name, "nodes-us-east-1a");
    let boot = String::from_utf8(nodewright_e2e::example(
        "controller-shim/worker-bootconfig.yaml",
    ))
    .unwrap();
    let boot = nodewright::spec::BootConfig::parse("worker-bootconfig.yaml", &boot).unwrap();
    assert!(boot.node_spec.controller_shim.is_some());
    assert_eq!(
        boot.node_spec.sha256.as_str(),
        nodewright::spec::digest(&nodewright_e2e::example(
            "controller-shim/worker-nodespec.yaml"
        ))
    );
}
