//! Nodes booted from the baked image with systemd as PID 1: the agent runs from its unit
//! at boot exactly as on EC2, against the emulator in a private network. Needs root
//! (network namespaces, overlay mounts, systemd-nspawn): skipped with the reason where
//! that is missing, required under scripts/test.sh (`NODEWRIGHT_REQUIRE_ALL`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::time::Duration;

use nodewright_e2e::fleet::{Fleet, boot_config};
use nodewright_e2e::node::{Launch, Node, UnitStatus, sh};
use nodewright_e2e::worker::{self, AssetMirror};

const SPEC_URL: &str =
    "s3://nodewright-state/prod.example.com/nodegroups/nodes-us-east-1a/nodespec.yaml";

/// The booted-worker spec without Kubernetes (see its header), for the tests of the
/// harness itself.
fn base_spec() -> Vec<u8> {
    std::fs::read(nodewright_e2e::workspace().join("tests/fixtures/booted-worker/nodespec.yaml"))
        .unwrap()
}

/// A fleet on the booted-worker image, with the asset mirror serving the kubelet
/// stand-in in its network, and the worker's spec (see tests/src/worker.rs).
fn start() -> Option<(Fleet, AssetMirror, Vec<u8>)> {
    let (fleet, mirror) = worker::fleet()?;
    let spec = mirror.s3_worker_spec();
    Some((fleet, mirror, spec))
}

fn worker_user_data(spec: &[u8]) -> Vec<u8> {
    boot_config(
        "prod.example.com",
        "nodes-us-east-1a",
        "worker",
        SPEC_URL,
        spec,
    )
}

fn spec_digest(spec: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(spec))
}

/// The boot ids of the journal entries whose message starts with `prefix`.
fn boots_with_message(node: &Node, prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for entry in node.journal("nodewright.service") {
        if entry.message.starts_with(prefix) && !seen.contains(&entry.boot_id) {
            seen.push(entry.boot_id);
        }
    }
    seen
}

/// Waits until the agent has recorded a failed run and the unit is waiting to retry it.
fn wait_failed_and_retrying(node: &Node, exit_code: i32) -> serde_json::Value {
    node.wait_for_unit(
        "nodewright.service",
        &format!("failed with exit {exit_code} and waiting to retry"),
        |s: &UnitStatus| s.sub_state == "auto-restart" && s.exec_main_status == exit_code,
    );
    let state = node.state().expect("a failed run is recorded");
    assert_eq!(state["lastRun"]["result"], "failed", "{state:#}");
    state
}

/// `GET /healthz` on the node's 127.0.0.1:10248 from inside it (the image has no curl:
/// bash's /dev/tcp), retried while the kubelet is starting; the raw answer.
fn wait_healthz(node: &Node) -> String {
    let request = "exec 3<>/dev/tcp/127.0.0.1/10248 && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && cat <&3";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let output = node.exec(&["bash", "-c", request]);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing answers on 127.0.0.1:10248: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            node.journal_text("kubelet.service")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the kubelet stand-in recorded at its start in this boot.
fn standin_record(node: &Node) -> serde_json::Value {
    let boot_id = sh(node, "cat /proc/sys/kernel/random/boot_id");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let record = std::fs::read_to_string(node.path(worker::STANDIN_RECORD))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        if let Some(record) = record.filter(|r| r["bootId"] == boot_id.as_str()) {
            return record;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the kubelet stand-in recorded nothing in this boot:\n{}",
            node.journal_text("kubelet.service")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn worker_boots_converges_and_a_reboot_changes_nothing() {
    let Some((mut fleet, mirror, spec)) = start() else {
        return;
    };
    let user_data = worker_user_data(&spec);
    fleet.publish(&user_data, &spec);
    let mut node = fleet.launch(&user_data);

    // The agent ran from its unit at boot and converged, at the first try.
    let unit = node.wait_converged();
    assert_eq!(unit.n_restarts, 0, "{unit:?}");
    let state = node.state().unwrap();
    let run = &state["lastRun"];
    assert_eq!(run["result"], "converged", "{state:#}");
    assert_eq!(run["command"], "boot");
    assert_eq!(run["specSha256"], spec_digest(&spec));
    assert!(run["changes"].as_u64().unwrap() > 10, "{run:#}");

    // What the spec says is live on the node, under the node's own systemd.
    assert_eq!(
        sh(&node, "systemctl is-active node-heartbeat.service"),
        "active"
    );
    assert_eq!(
        sh(&node, "systemctl is-enabled node-heartbeat.service"),
        "enabled"
    );
    assert_eq!(
        sh(&node, "systemctl is-active node-problem-check.timer"),
        "active"
    );
    assert_eq!(sh(&node, "cat /proc/sys/net/ipv4/ip_forward"), "1");
    let heartbeat = sh(
        &node,
        "for i in $(seq 50); do [ -s /run/node-heartbeat ] && break; sleep 0.1; done; cat /run/node-heartbeat",
    );
    assert!(heartbeat.parse::<u64>().is_ok(), "heartbeat: {heartbeat:?}");
    let journald =
        std::fs::read_to_string(node.path("/etc/systemd/journald.conf.d/50-nodewright.conf"))
            .unwrap();
    assert!(journald.contains("SystemMaxUse=1G"));

    // containerd: Debian's daemon from the image, under the unit nodewright rendered.
    assert_eq!(
        sh(&node, "systemctl is-active containerd.service"),
        "active"
    );
    assert_eq!(
        sh(&node, "systemctl show -P FragmentPath containerd.service"),
        "/etc/systemd/system/containerd.service"
    );
    let exec = sh(&node, "systemctl show -P ExecStart containerd.service");
    assert!(
        exec.contains("path=/usr/bin/containerd")
            && exec.contains("--config /etc/containerd/config.toml"),
        "{exec}"
    );
    let config = std::fs::read_to_string(node.path("/etc/containerd/config.toml")).unwrap();
    assert!(config.contains("SystemdCgroup = true"), "{config}");
    // The daemon answers on its socket: client and server versions.
    let version = sh(&node, "ctr version");
    assert!(
        version.contains("Server:") && version.contains("1.6.20"),
        "{version}"
    );

    // Its CRI plugin (what the kubelet talks to) and the overlayfs snapshotter loaded.
    let plugins = sh(&node, "ctr plugins ls");
    for (kind, id) in [
        ("io.containerd.grpc.v1", "cri"),
        ("io.containerd.snapshotter.v1", "overlayfs"),
    ] {
        assert!(
            plugins.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.first() == Some(&kind)
                    && words.get(1) == Some(&id)
                    && words.last() == Some(&"ok")
            }),
            "{kind} {id} is not loaded:\n{plugins}"
        );
    }
    // The kubelet (the stand-in, downloaded from the mirror and verified) under the
    // rendered unit and drop-in, and healthy on 10248 as a kubelet is.
    assert_eq!(
        mirror.mirror.hits_for(worker::KUBELET_PATH).len(),
        1,
        "{:?}",
        mirror.mirror.hits()
    );
    assert_eq!(
        nodewright_e2e::image::sha256_file(&node.path("/usr/local/bin/kubelet")),
        mirror.kubelet_sha256
    );
    assert_eq!(sh(&node, "systemctl is-active kubelet.service"), "active");
    assert_eq!(sh(&node, "systemctl is-enabled kubelet.service"), "enabled");
    let drop_ins = sh(&node, "systemctl show -P DropInPaths kubelet.service");
    assert_eq!(
        drop_ins,
        "/etc/systemd/system/kubelet.service.d/10-nodewright.conf"
    );
    let healthz = wait_healthz(&node);
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert!(healthz.ends_with("\r\n\r\nok"), "{healthz:?}");

    // What the real kubelet would have been given, as the stand-in recorded it.
    let record = standin_record(&node);
    let instance = node.instance();
    assert_eq!(record["argv"][0], "/usr/local/bin/kubelet", "{record:#}");
    let flags = &record["flags"];
    assert_eq!(flags["--config"], "/var/lib/kubelet/config.yaml");
    assert_eq!(flags["--kubeconfig"], "/var/lib/kubelet/kubeconfig");
    assert_eq!(flags["--cloud-provider"], "external");
    assert_eq!(flags["--hostname-override"], instance.hostname().as_str());
    assert_eq!(flags["--node-ip"], instance.private_ip.to_string().as_str());
    assert_eq!(
        flags["--node-labels"],
        "node.kubernetes.io/node-group=nodes-us-east-1a"
    );
    let config = &record["config"];
    assert_eq!(config["kind"], "KubeletConfiguration", "{record:#}");
    assert_eq!(
        config["providerID"],
        format!(
            "aws:///{}/{}",
            instance.availability_zone, instance.instance_id
        )
        .as_str()
    );
    assert_eq!(
        config["containerRuntimeEndpoint"],
        "unix:///run/containerd/containerd.sock"
    );
    assert_eq!(config["cgroupDriver"], "systemd");
    assert_eq!(config["clusterDNS"][0], "100.64.0.10");
    assert_eq!(config["maxPods"], 110);
    // Booted from S3, the kubelet joins by TLS bootstrapping: its bootstrap kubeconfig
    // names the API server and the token file; it writes its own kubeconfig later.
    assert_eq!(
        flags["--bootstrap-kubeconfig"],
        "/var/lib/kubelet/bootstrap-kubeconfig"
    );
    assert_eq!(config["rotateCertificates"], true);
    assert_eq!(
        record["files"]["/etc/kubernetes/bootstrap-token"]["exists"], true,
        "{record:#}"
    );
    let kubeconfig = &record["bootstrapKubeconfig"];
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"],
        "https://api.internal.prod.example.com"
    );
    // The CA it trusts is the spec's, and the API name resolves to the load balancer.
    let ca = &record["files"]["/etc/kubernetes/pki/ca.crt"];
    assert_eq!(ca["exists"], true, "{record:#}");
    assert!(
        ca["content"].as_str().unwrap().contains("zPXyi0+hfVY="),
        "{ca}"
    );
    assert!(
        sh(&node, "getent hosts api.internal.prod.example.com").starts_with("10.0.0.10"),
        "the API name is not pinned"
    );
    // No client certificate yet: the kubelet asks the API server for one (TLS
    // bootstrapping); through controller-shim it would come with the spec.
    assert!(
        !node
            .path("/var/lib/kubelet/pki/kubelet-client.key")
            .exists()
    );
    assert!(!node.path("/var/lib/kubelet/kubeconfig").exists());

    // `nodewright status` on the node: converged, with the timeline of the boot.
    let status = node.nodewright(&["status"]);
    status.expect_code(0);
    assert!(
        status.stdout.contains("boot converged"),
        "{}",
        status.stdout
    );
    for step in ["user data", "facts", "node spec", "plan", "apply"] {
        assert!(
            status.stdout.contains(step),
            "no {step:?} in:\n{}",
            status.stdout
        );
    }
    assert!(
        status.stdout.contains(&spec_digest(&spec)),
        "{}",
        status.stdout
    );

    // The journal holds the run, under the unit, with the agent's own messages.
    let journal = node.journal("nodewright.service");
    assert!(
        journal.iter().any(|e| e.message.starts_with("converged")
            && e.fields.get("SYSLOG_IDENTIFIER").map(String::as_str) == Some("nodewright")),
        "{}",
        node.journal_text("nodewright.service")
    );
    // IMDSv2 only, from the node's own metadata service.
    assert!(node.imds().counters().tokens > 0);
    assert_eq!(node.imds().counters().unauthenticated, 0);

    // The instance got its own identity at first boot; the image has none.
    let machine_id = std::fs::read_to_string(node.path("/etc/machine-id")).unwrap();
    assert_eq!(machine_id.trim().len(), 32, "{machine_id:?}");
    let image_id = std::fs::read_to_string(fleet.image().view().path("/etc/machine-id")).unwrap();
    assert!(
        image_id.is_empty(),
        "the image carries a machine-id: {image_id:?}"
    );

    // A reboot runs the agent again, which finds nothing to do and restarts nothing.
    let applied_before = state["applied"].clone();
    let heartbeat_pid = sh(&node, "systemctl show -P MainPID node-heartbeat.service");
    let kubelet_started = record["startedAtMs"].clone();
    node.reboot();
    let unit = node.wait_converged();
    assert_eq!(unit.n_restarts, 0, "{unit:?}");
    let state = node.state().unwrap();
    assert_eq!(state["lastRun"]["result"], "converged");
    assert_eq!(state["lastRun"]["changes"], 0, "{:#}", state["lastRun"]);
    assert_eq!(
        state["applied"], applied_before,
        "a service was acted on again"
    );
    assert_eq!(
        sh(&node, "systemctl is-active node-heartbeat.service"),
        "active"
    );
    assert_ne!(
        sh(&node, "systemctl show -P MainPID node-heartbeat.service"),
        heartbeat_pid
    );
    assert_eq!(
        std::fs::read_to_string(node.path("/etc/machine-id")).unwrap(),
        machine_id,
        "the machine-id must survive a reboot"
    );
    // systemd itself starts containerd and the kubelet again (enabled units); the
    // kubelet is not downloaded again.
    assert_eq!(
        sh(&node, "systemctl is-active containerd.service"),
        "active"
    );
    assert!(wait_healthz(&node).ends_with("ok"));
    let record = standin_record(&node);
    assert_ne!(record["startedAtMs"], kubelet_started, "{record:#}");
    // At the power-off, systemd stopped the last boot's kubelet cleanly (SIGTERM, exit 0).
    let kubelet_journal = node.journal_text("kubelet.service");
    assert!(
        kubelet_journal.contains("kubelet-standin: SIGTERM, exiting")
            && !kubelet_journal.contains("Failed with result"),
        "{kubelet_journal}"
    );
    assert_eq!(
        record["flags"]["--node-ip"],
        instance.private_ip.to_string().as_str()
    );
    assert_eq!(mirror.mirror.hits_for(worker::KUBELET_PATH).len(), 1);
    let converged_boots = boots_with_message(&node, "converged");
    assert_eq!(
        converged_boots.len(),
        2,
        "{}",
        node.journal_text("nodewright.service")
    );
    let status = node.nodewright(&["status"]);
    assert!(
        status.stdout.contains("Changes:      0"),
        "{}",
        status.stdout
    );
}

#[test]
fn bad_user_data_is_reported_and_the_node_recovers_once_it_is_fixed() {
    let Some((mut fleet, _mirror, spec)) = start() else {
        return;
    };
    let good = worker_user_data(&spec);
    fleet.publish(&good, &spec);
    // A boot config with a field of the wrong type.
    let bad = String::from_utf8(good.clone())
        .unwrap()
        .replace("role: worker", "role: [worker]");
    let node = fleet.launch(bad.as_bytes());

    let state = wait_failed_and_retrying(&node, 3);
    let error = state["lastRun"]["error"].as_str().unwrap();
    assert!(
        error.contains("user data") && error.contains("role"),
        "{error}"
    );
    // Nothing of the spec was applied.
    assert!(!node.path("/etc/default/node-heartbeat").exists());
    let status = node.nodewright(&["status"]);
    status.expect_code(0);
    assert!(status.stdout.contains("boot FAILED"), "{}", status.stdout);
    assert!(
        status.stdout.contains("Error:") && status.stdout.contains("role"),
        "{}",
        status.stdout
    );
    let journal = node.journal_text("nodewright.service");
    assert!(
        journal.contains("run failed") && journal.contains("role"),
        "{journal}"
    );
    assert!(
        journal.contains("Failed with result 'exit-code'"),
        "{journal}"
    );

    // Fixed user data (on EC2: stop, modify the attribute, start). The unit's next
    // retry picks it up, without a reboot.
    node.imds().set_user_data(&good);
    let unit = node.wait_converged();
    assert!(unit.n_restarts >= 1, "{unit:?}");
    assert_eq!(node.boots(), 1);
    let state = node.state().unwrap();
    assert_eq!(state["lastRun"]["result"], "converged");
    assert_eq!(
        sh(&node, "systemctl is-active node-heartbeat.service"),
        "active"
    );
}

#[test]
fn tampered_spec_is_refused_until_the_published_spec_matches() {
    let Some((mut fleet, _mirror, spec)) = start() else {
        return;
    };
    let user_data = worker_user_data(&spec);
    let mut tampered = spec.clone();
    tampered.extend_from_slice(b"# changed after the boot config was made\n");
    fleet.publish(&user_data, &tampered);
    let node = fleet.launch(&user_data);

    let state = wait_failed_and_retrying(&node, 3);
    let error = state["lastRun"]["error"].as_str().unwrap();
    assert!(
        error.contains("sha256") && error.contains(SPEC_URL),
        "{error}"
    );
    assert!(!node.path("/etc/default/node-heartbeat").exists());
    let journal = node.journal_text("nodewright.service");
    assert!(
        journal.contains(&spec_digest(&spec)),
        "the expected digest is not named:\n{journal}"
    );
    let status = node.nodewright(&["status"]);
    assert!(
        status.stdout.contains("boot FAILED") && status.stdout.contains("sha256"),
        "{}",
        status.stdout
    );

    fleet.publish(&user_data, &spec);
    let unit = node.wait_converged();
    assert!(unit.n_restarts >= 1, "{unit:?}");
    assert_eq!(
        node.state().unwrap()["lastRun"]["specSha256"],
        spec_digest(&spec)
    );
}

#[test]
fn unreachable_s3_is_reported_and_the_node_recovers_when_it_is_back() {
    let Some((mut fleet, _mirror, spec)) = start() else {
        return;
    };
    let user_data = worker_user_data(&spec);
    fleet.publish(&user_data, &spec);
    fleet.aws.set_reachable(false);
    let mut environment = fleet.environment();
    // The agent retries an unreachable store for its deadline (180 s by default)
    // before it gives up; a short one keeps the test short.
    environment.insert("NODEWRIGHT_DEADLINE".to_owned(), "8".to_owned());
    let launch = Launch {
        instance: fleet.next_instance(),
        user_data: user_data.clone(),
        environment,
    };
    let node = fleet.launch_with(launch);

    let state = wait_failed_and_retrying(&node, 4);
    let error = state["lastRun"]["error"].as_str().unwrap();
    assert!(
        error.contains("gave up after") && error.contains(SPEC_URL),
        "{error}"
    );
    let journal = node.journal_text("nodewright.service");
    assert!(journal.contains("gave up after"), "{journal}");
    let status = node.nodewright(&["status"]);
    assert!(status.stdout.contains("boot FAILED"), "{}", status.stdout);

    fleet.aws.set_reachable(true);
    let unit = node.wait_for_unit_within(
        "nodewright.service",
        "converged after S3 came back",
        Duration::from_secs(90),
        |s| s.active_state == "active" && s.result == "success",
    );
    assert!(unit.n_restarts >= 1, "{unit:?}");
    assert_eq!(node.state().unwrap()["lastRun"]["result"], "converged");
}

#[test]
fn unreachable_mirror_is_reported_and_the_node_recovers_when_it_is_back() {
    let Some((mut fleet, mirror, spec)) = start() else {
        return;
    };
    let user_data = worker_user_data(&spec);
    fleet.publish(&user_data, &spec);
    // The asset mirror is down at first boot: connections to it are refused.
    mirror.set_reachable(false);
    let node = fleet.launch(&user_data);

    let state = wait_failed_and_retrying(&node, 5);
    let error = state["lastRun"]["error"].as_str().unwrap();
    let url = mirror.kubelet_url();
    assert!(
        error.contains("downloading kubelet") && error.contains(&url),
        "{error}"
    );
    assert!(error.contains("every URL failed"), "{error}");
    // The kubelet is not there, nor started; nothing of it was half installed.
    assert!(!node.path("/usr/local/bin/kubelet").exists());
    assert_ne!(
        sh(&node, "systemctl is-active kubelet.service || true"),
        "active"
    );
    let journal = node.journal_text("nodewright.service");
    assert!(
        journal.contains(&url) && journal.contains("run failed"),
        "{journal}"
    );
    let status = node.nodewright(&["status"]);
    assert!(status.stdout.contains("boot FAILED"), "{}", status.stdout);
    // The asset, each URL tried and how it failed, and what that held up.
    assert!(
        status.stdout.contains("download kubelet")
            && status.stdout.contains(&url)
            && status.stdout.contains("Connection refused"),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains("install /usr/local/bin/kubelet     not run"),
        "{}",
        status.stdout
    );

    mirror.set_reachable(true);
    let unit = node.wait_for_unit_within(
        "nodewright.service",
        "converged after the mirror came back",
        Duration::from_secs(60),
        |s| s.active_state == "active" && s.result == "success",
    );
    assert!(unit.n_restarts >= 1, "{unit:?}");
    assert_eq!(node.state().unwrap()["lastRun"]["result"], "converged");
    assert_eq!(node.boots(), 1);
    assert_eq!(
        nodewright_e2e::image::sha256_file(&node.path("/usr/local/bin/kubelet")),
        mirror.kubelet_sha256
    );
    assert!(wait_healthz(&node).ends_with("ok"));
}

#[test]
fn teardown_leaves_nothing_behind_even_when_the_test_fails() {
    let Some(mut fleet) = Fleet::start() else {
        return;
    };
    let spec = base_spec();
    let user_data = worker_user_data(&spec);
    fleet.publish(&user_data, &spec);

    let mut seen = None;
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let node = fleet.launch(&user_data);
        node.wait_for_unit("multi-user.target", "active", |s| {
            s.active_state == "active"
        });
        seen = Some((
            node.netns_name().unwrap().to_owned(),
            node.dir().to_owned(),
            node.pids().unwrap(),
        ));
        panic!("a failing assertion with the node still running");
    }));
    assert!(failed.is_err());
    let (netns, dir, pids) = seen.unwrap();
    assert_gone(&netns, &dir, &pids);

    // The fleet's own namespace goes with it.
    let owned: BTreeSet<String> = nodewright_e2e::netns::list()
        .into_iter()
        .filter(|n| n.contains(nodewright_e2e::janitor::owner_tag()))
        .collect();
    assert_eq!(owned.len(), 1, "only the switch remains: {owned:?}");
    drop(fleet);
    assert!(
        !nodewright_e2e::netns::list()
            .iter()
            .any(|n| n.contains(nodewright_e2e::janitor::owner_tag())),
        "a namespace outlived the fleet"
    );
}

fn assert_gone(netns: &str, dir: &std::path::Path, pids: &[i32]) {
    assert!(
        !nodewright_e2e::netns::list().iter().any(|n| n == netns),
        "namespace {netns} leaked"
    );
    assert!(!dir.exists(), "{} leaked", dir.display());
    let mounts: Vec<_> = nodewright_e2e::janitor::mount_points()
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect();
    assert!(mounts.is_empty(), "mounts leaked: {mounts:?}");
    for pid in pids {
        // A zombie may linger until its parent reaps it; a live process may not.
        assert!(
            !nodewright_e2e::node::is_running(*pid),
            "process {pid} outlived its node"
        );
    }
}

#[test]
fn janitor_reclaims_what_a_killed_test_process_left() {
    if !nodewright_e2e::fleet::supported_or_skip() {
        return;
    }
    // What a test process killed mid-way leaves: a namespace and a node directory with
    // an overlay mounted in it, named after an owner that no longer exists.
    let dead_owner = "4194305-0dead0";
    let netns = format!("{}{dead_owner}-n1", nodewright_e2e::netns::PREFIX);
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .unwrap();
    assert!(status.success());
    let dir = nodewright_e2e::image::cache_dir()
        .join("nodes")
        .join(format!("{dead_owner}-n1"));
    let lower = dir.join("lower");
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::write(lower.join("file"), "x").unwrap();
    let overlay = nodewright_e2e::overlay::Overlay::mount(
        std::slice::from_ref(&lower),
        &dir.join("upper"),
        &dir.join("root"),
    )
    .unwrap();
    assert!(dir.join("root/file").exists());
    std::mem::forget(overlay); // as if its owner died with it mounted

    nodewright_e2e::janitor::sweep();
    assert_gone(&netns, &dir, &[]);
}

/// A loop device over a sparse file: the machine-side stand-in for an EBS volume.
struct LoopDevice {
    path: std::path::PathBuf,
    _file: tempfile::TempDir,
}

impl LoopDevice {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("volume.img");
        let status = std::process::Command::new("truncate")
            .args(["-s", size])
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success());
        let output = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let path = String::from_utf8(output.stdout).unwrap().trim().into();
        Self { path, _file: dir }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_volume_appears_under_its_ebs_name_and_stays_attached_across_a_reboot() {
    let Some(mut fleet) = Fleet::start() else {
        return;
    };
    let spec = base_spec();
    let user_data = worker_user_data(&spec);
    fleet.publish(&user_data, &spec);
    let volume = LoopDevice::new("64M");
    let mut node = fleet.launch(&user_data);
    node.wait_converged();

    let by_id = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0";
    node.attach_block_device(&volume.path, "nvme1n1", &[by_id]);
    assert_eq!(sh(&node, &format!("readlink -f {by_id}")), "/dev/nvme1n1");
    // Blank (blkid exits 2), then formatted and used from inside the node.
    let blank = node.exec(&["blkid", by_id]);
    assert_eq!(blank.status.code(), Some(2), "{blank:?}");
    sh(
        &node,
        &format!(
            "mkfs.ext4 -q {by_id} && mkdir -p /mnt/data && mount {by_id} /mnt/data && echo kept > /mnt/data/marker && umount /mnt/data"
        ),
    );

    node.reboot();
    node.wait_for_unit("multi-user.target", "active", |s| {
        s.active_state == "active"
    });
    assert_eq!(sh(&node, &format!("readlink -f {by_id}")), "/dev/nvme1n1");
    assert_eq!(
        sh(
            &node,
            &format!("mount {by_id} /mnt/data && cat /mnt/data/marker && umount /mnt/data")
        ),
        "kept"
    );

    node.detach_block_device("nvme1n1");
    let gone = node.exec(&["test", "-e", by_id]);
    assert!(
        !gone.status.success(),
        "{by_id} is still there after the detach"
    );
    drop(node);
}

#[test]
fn a_killed_test_process_leaves_nothing_running_and_its_leftovers_are_reclaimed() {
    if !nodewright_e2e::fleet::supported_or_skip() {
        return;
    }
    use std::io::BufRead;
    // A process that boots a node and would keep it up for minutes, killed outright.
    let mut owner = std::process::Command::new(nodewright_e2e::tools::workspace_bin("boot-node"))
        .arg(nodewright_e2e::workspace().join("tests/fixtures/booted-worker/nodespec.yaml"))
        .arg("300")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut init = None;
    let mut disk = None;
    for line in std::io::BufReader::new(owner.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(pid) = line.trim().strip_prefix("nsenter --target ") {
            init = pid
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<i32>().ok());
        }
        if let Some(path) = line.strip_prefix("Its disk: ") {
            disk = Some(std::path::PathBuf::from(path.trim()));
            break;
        }
    }
    let (init, disk) = (init.unwrap(), disk.unwrap());
    let node_dir = disk.parent().unwrap().to_owned();
    assert!(nodewright_e2e::node::is_running(init));
    let tag = format!("{}{}-", nodewright_e2e::netns::PREFIX, owner.id());
    let netns: Vec<String> = nodewright_e2e::netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&tag))
        .collect();
    assert_eq!(netns.len(), 2, "the owner's switch and node: {netns:?}");
    owner.kill().unwrap();
    owner.wait().unwrap();

    // The node's processes die with their owner (its PID namespace goes with nspawn).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while nodewright_e2e::node::is_running(init) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !nodewright_e2e::node::is_running(init),
        "the node outlived its owner"
    );

    // Its namespaces, mounts and directory are reclaimed by the next sweep (this one,
    // or another test process's that got there first).
    nodewright_e2e::janitor::sweep();
    for name in &netns {
        assert_gone(name, &node_dir, &[init]);
    }
}
