//! A worker boots from EC2 user data and its spec in S3, into a temp root.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt;

use std::time::Instant;

use nodewright_e2e::agent::Agent;
use nodewright_e2e::front::Canned;
use nodewright_e2e::imds::{FakeImds, Fault, Instance};
use nodewright_e2e::tree::{partial_files, snapshot};
use nodewright_e2e::world::World;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn worker_boots_and_a_second_run_changes_nothing() {
    let world = World::example_worker();
    let agent = &world.agent;

    let first = agent.run(&["boot", "--deadline", "20"]);
    first.expect_code(0);
    assert!(first.stdout.contains("Timeline:"), "{}", first.stdout);

    // The spec's files are there, with their modes.
    let journald = agent.path("/etc/systemd/journald.conf.d/50-nodewright.conf");
    assert!(
        std::fs::read_to_string(&journald)
            .unwrap()
            .contains("SystemMaxUse=1G")
    );
    assert_eq!(mode(&journald), 0o644);
    assert_eq!(mode(&agent.path("/var/lib/kubelet")), 0o750);
    assert_eq!(mode(&agent.path("/var/lib/node-problem-check")), 0o700);
    let sysctl = std::fs::read_to_string(agent.path("/etc/sysctl.d/99-nodewright.conf")).unwrap();
    assert!(sysctl.contains("net.ipv4.ip_forward = 1"), "{sysctl}");
    let modules =
        std::fs::read_to_string(agent.path("/etc/modules-load.d/nodewright.conf")).unwrap();
    assert!(modules.contains("br_netfilter\noverlay\n"), "{modules}");
    let unit = agent.path("/etc/systemd/system/node-problem-check.timer");
    assert!(
        std::fs::read_to_string(unit)
            .unwrap()
            .contains("OnUnitActiveSec=10min")
    );

    // The node components: the runtime, the kubelet, kube-proxy, the host settings.
    let read = |path: &str| std::fs::read_to_string(agent.path(path)).unwrap();
    assert!(read("/etc/containerd/config.toml").contains("SystemdCgroup = true"));
    assert!(
        read("/var/lib/kubelet/config.yaml")
            .contains("providerID: aws:///us-east-1a/i-0a1b2c3d4e5f60718")
    );
    // TLS bootstrapping: the bootstrap kubeconfig and its token (the kubelet writes
    // its own kubeconfig once it holds a certificate).
    assert_eq!(
        mode(&agent.path("/var/lib/kubelet/bootstrap-kubeconfig")),
        0o600
    );
    assert_eq!(mode(&agent.path("/etc/kubernetes/bootstrap-token")), 0o600);
    assert!(!agent.path("/var/lib/kubelet/kubeconfig").exists());
    assert!(read("/var/lib/kubelet/config.yaml").contains("rotateCertificates: true"));
    assert!(
        read("/etc/systemd/system/kubelet.service.d/10-nodewright.conf")
            .contains("--hostname-override=ip-10-0-1-23.ec2.internal")
    );
    // kube-proxy runs as the cluster's DaemonSet on TLS-bootstrapped workers.
    assert!(
        !agent
            .path("/etc/kubernetes/manifests/kube-proxy.yaml")
            .exists()
    );
    assert!(read("/etc/hosts").contains("10.0.0.10\tapi.internal.prod.example.com\n"));
    assert_eq!(
        std::fs::read_link(agent.path("/etc/systemd/system/swap.target")).unwrap(),
        std::path::Path::new("/dev/null")
    );

    // Off a live host, service actions are recorded as skipped, with the reason.
    let state = agent.state();
    for key in [
        "packages",
        "swap-off",
        "service:kubelet.service",
        "service:containerd.service",
    ] {
        let outcome = state["applied"][key]["outcome"]
            .as_str()
            .unwrap_or_default();
        assert!(
            outcome.starts_with("skipped: root is"),
            "{key}: {outcome:?}"
        );
    }
    let timer = &state["applied"]["service:node-problem-check.timer"];
    assert!(
        timer["outcome"]
            .as_str()
            .unwrap()
            .starts_with("skipped: root is"),
        "{timer}"
    );
    assert_eq!(state["lastRun"]["result"], "converged");
    let changes = state["lastRun"]["changes"].as_u64().unwrap();
    assert!(changes > 10, "{changes} changes");
    // IMDSv2 only: every metadata read carried a token.
    assert_eq!(world.imds.counters().unauthenticated, 0);

    // The second run plans nothing and restarts nothing.
    let before = snapshot(agent.root());
    let plan = agent.run(&["plan", "--deadline", "20"]);
    plan.expect_code(0);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);
    let second = agent.run(&["boot", "--deadline", "20"]);
    second.expect_code(0);
    assert!(second.stdout.contains("no changes"), "{}", second.stdout);
    let state = agent.state();
    assert_eq!(state["lastRun"]["changes"], 0);
    assert_eq!(
        state["applied"]["service:node-problem-check.timer"],
        timer.clone()
    );
    // Nothing but the state record was rewritten.
    let after = snapshot(agent.root());
    let changed: Vec<_> = after
        .iter()
        .filter(|(path, entry)| before.get(*path) != Some(entry))
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert_eq!(
        changed,
        ["var/lib/nodewright", "var/lib/nodewright/state.json"],
        "only the state record may change on a no-op run"
    );
}

#[test]
fn plan_has_no_side_effects() {
    let world = World::example_worker();
    let agent = &world.agent;
    // On an empty root, and again on a converged one with a file drifted.
    for round in 0..2 {
        let before = snapshot(agent.root());
        let plan = agent.run(&["plan", "--deadline", "20"]);
        plan.expect_code(0);
        assert!(plan.stdout.contains("changes:"), "{}", plan.stdout);
        assert_eq!(
            before,
            snapshot(agent.root()),
            "plan changed the root (round {round})"
        );
        if round == 0 {
            agent.run(&["boot", "--deadline", "20"]).expect_code(0);
            std::fs::write(
                agent.path("/etc/security/limits.d/90-kubernetes.conf"),
                "drift\n",
            )
            .unwrap();
        }
    }
    let plan = agent.run(&["plan", "--json", "--deadline", "20"]);
    let steps: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(
        steps["steps"].as_array().unwrap().len(),
        1,
        "{}",
        plan.stdout
    );
    assert_eq!(steps["steps"][0]["action"], "write-file");
}

#[test]
fn spec_digest_mismatch_is_refused_and_nothing_is_written() {
    let boot = nodewright_e2e::example("worker/bootconfig.yaml");
    let mut spec = nodewright_e2e::example("worker/nodespec.yaml");
    spec.extend_from_slice(b"# tampered\n");
    let world = World::new(&boot, &spec);
    let run = world.agent.run(&["boot", "--deadline", "10"]);
    run.expect_code(3);
    assert!(run.stderr.contains("sha256"), "{}", run.stderr);
    assert!(run.stderr.contains("refusing"), "{}", run.stderr);
    assert!(world.agent.untouched(), "something was written");
}

#[test]
fn s3_access_denied_at_first_is_retried() {
    let world = World::example_worker();
    // A fresh instance's role can take seconds to be honoured.
    world.front.fail(
        Some(3),
        |seen| seen.method == "GET" && seen.path.ends_with("/nodespec.yaml"),
        Canned::s3_error(403, "AccessDenied", "Access Denied"),
    );
    world
        .agent
        .run(&["boot", "--deadline", "30"])
        .expect_code(0);
    let denied = world.front.log().iter().filter(|l| l.status == 403).count();
    assert_eq!(denied, 3);
}

#[test]
fn s3_persistently_denied_fails_after_the_deadline() {
    let world = World::example_worker();
    world.front.fail(
        None,
        |seen| seen.method == "GET" && seen.path.ends_with("/nodespec.yaml"),
        Canned::s3_error(403, "AccessDenied", "Access Denied"),
    );
    let run = world.agent.run(&["boot", "--deadline", "3"]);
    run.expect_code(4);
    assert!(run.stderr.contains("AccessDenied"), "{}", run.stderr);
    assert!(run.stderr.contains("gave up after"), "{}", run.stderr);
    assert!(
        run.stderr.contains("s3://nodewright-state/"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_spec_object_fails_at_once() {
    let boot = nodewright_e2e::example("worker/bootconfig.yaml");
    let world = World::new(&boot, b"");
    world.moto.s3();
    let s3 = world.moto.s3();
    nodewright_e2e::runtime::block_on(async {
        let _ = s3
            .delete_object()
            .bucket("nodewright-state")
            .key("prod.example.com/nodegroups/nodes-us-east-1a/nodespec.yaml")
            .send()
            .await;
    });
    let started = std::time::Instant::now();
    let run = world.agent.run(&["boot", "--deadline", "60"]);
    run.expect_code(3);
    assert!(run.stderr.contains("NoSuchKey"), "{}", run.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn imds_faults_are_retried() {
    for fault in [
        Fault::Errors(3),
        Fault::NotFound(2),
        Fault::Slow(std::time::Duration::from_millis(300)),
    ] {
        let world = World::example_worker();
        world.imds.set_fault(fault);
        let run = world.agent.run(&["boot", "--deadline", "30"]);
        run.expect_code(0);
        assert_eq!(world.imds.counters().unauthenticated, 0, "{fault:?}");
    }
}

#[test]
fn imds_down_fails_after_the_deadline() {
    let world = World::example_worker();
    world.imds.set_fault(Fault::Down);
    let started = std::time::Instant::now();
    let run = world.agent.run(&["boot", "--deadline", "3"]);
    run.expect_code(4);
    assert!(run.stderr.contains("/latest/user-data"), "{}", run.stderr);
    assert!(run.stderr.contains("gave up after"), "{}", run.stderr);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert!(world.agent.untouched());
}

#[test]
fn killed_between_writes_leaves_no_partial_file_and_the_next_run_converges() {
    let world = World::example_worker();
    // How long a whole first boot takes here, to spread the kills over all of it.
    let probe = Agent::new(&world.imds.url(), &world.front.url());
    let started = Instant::now();
    probe.run(&["boot", "--deadline", "20"]).expect_code(0);
    let full = started.elapsed();

    let mut rng = fastrand::Rng::with_seed(20261201);
    for round in 0..12 {
        let agent = Agent::new(&world.imds.url(), &world.front.url());
        let kill_at = full.mul_f64(rng.f64());
        let mut child = agent
            .command(&["boot", "--deadline", "20"])
            .spawn()
            .unwrap();
        std::thread::sleep(kill_at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        agent.run(&["boot", "--deadline", "20"]).expect_code(0);
        let partial = partial_files(agent.root());
        assert!(
            partial.is_empty(),
            "round {round} (killed at {kill_at:?}): {partial:?}"
        );
        let plan = agent.run(&["plan", "--deadline", "20"]);
        assert!(
            plan.stdout.contains("No changes"),
            "round {round}: {}",
            plan.stdout
        );
        // Every file has the content of a clean boot.
        let clean = snapshot(probe.root());
        let here = snapshot(agent.root());
        for (path, entry) in &clean {
            if entry.kind == "file" && !path.starts_with("var/lib/nodewright") {
                assert_eq!(
                    here.get(path).map(|e| &e.content),
                    Some(&entry.content),
                    "{path:?}"
                );
            }
        }
    }
}

#[test]
fn the_boot_config_proxy_carries_aws_calls_but_never_imds() {
    let proxy = nodewright_e2e::proxy::ForwardProxy::start();
    let boot = String::from_utf8(nodewright_e2e::example("worker/bootconfig.yaml")).unwrap();
    let boot = format!(
        "{boot}proxy:\n  http: {}\n  https: {}\n",
        proxy.url(),
        proxy.url()
    );
    let mut world = World::new(
        boot.as_bytes(),
        &nodewright_e2e::example("worker/nodespec.yaml"),
    );
    // IMDS on its own loopback address, so that "bypass IMDS" cannot also mean
    // "bypass the emulator".
    let imds = FakeImds::start_on(
        "127.0.0.2:0",
        Instance::example("i-0a1b2c3d4e5f60718"),
        boot.as_bytes(),
    );
    world
        .agent
        .set_env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url());
    world
        .agent
        .run(&["boot", "--deadline", "20"])
        .expect_code(0);
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .any(|url| url.contains("/nodewright-state/") && url.starts_with(&world.front.url())),
        "the spec was not fetched through the proxy: {seen:?}"
    );
    assert!(
        !seen.iter().any(|url| url.contains("/latest/")),
        "IMDS went through the proxy: {seen:?}"
    );
    assert!(imds.counters().gets > 0);
}
