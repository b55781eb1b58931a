//! Operating a node: status, verify, repair, reset, the run lock, the support bundle
//! and the runbook, against a node booted by the real binary into a temp root.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodewright_e2e::agent::{Agent, json_of, restarted};
use nodewright_e2e::front::Canned;
use nodewright_e2e::imds::Fault;
use nodewright_e2e::specs::{self, AGENT_BINARY, AGENT_CONFIG, SHIPPER_CONFIG};
use nodewright_e2e::tree::snapshot;
use nodewright_e2e::world::World;
use serde_json::Value;

fn booted_ops_worker() -> World {
    let world = specs::world("worker", &specs::ops_worker_spec());
    world
        .agent
        .run(&["boot", "--deadline", "20"])
        .expect_code(0);
    world
}

/// Steps acting on `path`, as "action" strings.
fn actions_on(steps: &Value, path: &str) -> Vec<String> {
    steps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["path"] == path)
        .map(|s| s["action"].as_str().unwrap().to_owned())
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

struct Case {
    name: &'static str,
    path: &'static str,
    damage: fn(&Path),
    /// What verify says about it.
    verify_says: &'static str,
    /// The repair step for the path.
    repair_action: &'static str,
    restarts: &'static [&'static str],
}

#[test]
fn verify_finds_each_drift_and_repair_restores_it_restarting_only_the_affected_service() {
    let world = booted_ops_worker();
    let agent = &world.agent;
    let clean = snapshot(agent.root());
    let cases = [
        Case {
            name: "changed binary",
            path: AGENT_BINARY,
            damage: |p| std::fs::write(p, "#!/bin/sh\n# trojan\nexec /bin/sleep 1\n").unwrap(),
            verify_says: "content changed (sha256 ",
            repair_action: "write-file",
            restarts: &["node-agent.service"],
        },
        Case {
            name: "changed config",
            path: SHIPPER_CONFIG,
            damage: |p| std::fs::write(p, "endpoint: https://evil.example.com\n").unwrap(),
            verify_says: "content changed (sha256 ",
            repair_action: "write-file",
            restarts: &["log-shipper.service"],
        },
        Case {
            name: "wrong mode",
            path: AGENT_BINARY,
            damage: |p| {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap()
            },
            verify_says: "mode 0644, recorded 0755",
            repair_action: "set-permissions",
            restarts: &["node-agent.service"],
        },
        Case {
            name: "wrong owner",
            path: AGENT_CONFIG,
            damage: |p| std::os::unix::fs::chown(p, Some(1234), Some(1234)).unwrap(),
            verify_says: "owner 1234:1234, recorded 0:0",
            repair_action: "set-permissions",
            restarts: &["node-agent.service"],
        },
        Case {
            name: "missing file",
            path: AGENT_CONFIG,
            damage: |p| std::fs::remove_file(p).unwrap(),
            verify_says: "missing",
            repair_action: "write-file",
            restarts: &["node-agent.service"],
        },
        Case {
            name: "missing unit file",
            path: "/etc/systemd/system/log-shipper.service",
            damage: |p| std::fs::remove_file(p).unwrap(),
            verify_says: "missing",
            repair_action: "write-file",
            restarts: &["log-shipper.service"],
        },
    ];
    agent.run(&["verify"]).expect_code(0);
    for case in &cases {
        let real = agent.path(case.path);
        let before = agent.state()["applied"].clone();
        (case.damage)(&real);

        let verify = agent.run(&["verify"]);
        verify.expect_code(7);
        let line = format!("{}: {}", case.path, case.verify_says);
        assert!(
            verify.stdout.contains(&line),
            "{}: {}",
            case.name,
            verify.stdout
        );
        assert!(
            verify.stdout.contains("Drift in 1 of"),
            "{}: {}",
            case.name,
            verify.stdout
        );
        // status finds it too, by its quick check.
        let status = json_of(agent.run(&["status", "--json"]).expect_code(0));
        assert_eq!(
            status["drift"]["drift"][0]["path"], case.path,
            "{}",
            case.name
        );

        let repair = agent.run(&["repair", "--json"]);
        repair.expect_code(0);
        let report = json_of(&repair);
        let steps = &report["steps"];
        assert_eq!(
            actions_on(steps, case.path),
            [case.repair_action],
            "{}: {steps:#}",
            case.name
        );
        assert_eq!(restarted(steps), case.restarts, "{}: {steps:#}", case.name);
        for step in steps.as_array().unwrap() {
            let outcome = step["outcome"].as_str().unwrap();
            assert!(
                outcome == "ok" || outcome.starts_with("skipped: root is"),
                "{}: {step}",
                case.name
            );
        }
        assert_eq!(report["remainingDrift"], Value::Array(vec![]));
        if case.path.starts_with("/etc/systemd/") {
            assert!(
                steps
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["action"] == "daemon-reload"),
                "{}: a restored unit file is reloaded: {steps:#}",
                case.name
            );
        }

        // The restart is recorded for the affected service only.
        let after = agent.state()["applied"].clone();
        for (key, record) in after.as_object().unwrap() {
            let unit = key.strip_prefix("service:").unwrap_or("");
            if case.restarts.contains(&unit) {
                assert_ne!(record["at"], before[key]["at"], "{}: {key}", case.name);
                assert!(
                    record["outcome"]
                        .as_str()
                        .unwrap()
                        .starts_with("skipped: root is")
                );
            } else if key.starts_with("service:") {
                assert_eq!(record, &before[key], "{}: {key} was acted on", case.name);
            }
        }
        agent.run(&["verify"]).expect_code(0);
        let now = snapshot(agent.root());
        assert_eq!(
            now.get(&PathBuf::from(case.path.trim_start_matches('/')))
                .map(|e| (&e.content, e.mode, e.uid)),
            clean
                .get(&PathBuf::from(case.path.trim_start_matches('/')))
                .map(|e| (&e.content, e.mode, e.uid)),
            "{}",
            case.name
        );
        assert_eq!(agent.state()["lastRun"]["command"], "repair");
    }
    // Nothing left to do, for repair or for a boot.
    let repair = agent.run(&["repair"]);
    repair.expect_code(0);
    assert!(
        repair.stdout.contains("Nothing to repair"),
        "{}",
        repair.stdout
    );
    let plan = agent.run(&["plan", "--deadline", "20"]);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);
}

#[test]
fn a_boot_that_restores_a_drifted_input_restarts_its_service() {
    let world = booted_ops_worker();
    let agent = &world.agent;
    std::fs::write(agent.path(AGENT_CONFIG), "logLevel: debug\n").unwrap();
    let plan = json_of(
        agent
            .run(&["plan", "--json", "--deadline", "20"])
            .expect_code(0),
    );
    assert_eq!(actions_on(&plan["steps"], AGENT_CONFIG), ["write-file"]);
    assert_eq!(restarted(&plan["steps"]), ["node-agent.service"]);
    let restart = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == "restart-unit")
        .unwrap();
    assert_eq!(
        restart["reason"],
        format!("inputs restored on disk: {AGENT_CONFIG}")
    );
    agent.run(&["boot", "--deadline", "20"]).expect_code(0);
    let plan = agent.run(&["plan", "--deadline", "20"]);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);
}

#[test]
fn verify_and_repair_reread_files_whose_stat_record_was_forged() {
    let world = booted_ops_worker();
    let agent = &world.agent;
    // Same size, and a state record whose stat matches the tampered file: as if it had
    // been changed behind the stat's back. A boot trusts the stat; verify must not.
    let real = agent.path(AGENT_BINARY);
    let original = std::fs::read(&real).unwrap();
    let mut tampered = original.clone();
    let at = tampered.len() - 3;
    tampered[at] = b'X';
    std::fs::write(&real, &tampered).unwrap();
    let meta = std::fs::metadata(&real).unwrap();
    let state_path = agent.path("/var/lib/nodewright/state.json");
    let mut state = agent.state();
    let stat = &mut state["files"][AGENT_BINARY]["stat"];
    stat["size"] = meta.size().into();
    stat["mtimeNs"] = (i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()))
        .to_string()
        .parse::<i64>()
        .unwrap()
        .into();
    stat["ctimeNs"] = (i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()))
        .to_string()
        .parse::<i64>()
        .unwrap()
        .into();
    stat["inode"] = meta.ino().into();
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();

    let plan = agent.run(&["plan", "--deadline", "20"]);
    assert!(
        plan.stdout.contains("No changes"),
        "the quick path trusts the stat: {}",
        plan.stdout
    );
    let verify = agent.run(&["verify"]);
    verify.expect_code(7);
    assert!(verify.stdout.contains(AGENT_BINARY), "{}", verify.stdout);
    let report = json_of(agent.run(&["repair", "--json"]).expect_code(0));
    assert_eq!(actions_on(&report["steps"], AGENT_BINARY), ["write-file"]);
    assert_eq!(restarted(&report["steps"]), ["node-agent.service"]);
    assert_eq!(std::fs::read(&real).unwrap(), original);
}

#[test]
fn repair_works_without_the_network() {
    let world = booted_ops_worker();
    let agent = &world.agent;
    // IMDS and S3 both gone, as on a node whose network is what broke.
    world.imds.set_fault(Fault::Down);
    world.front.fail(
        None,
        |_| true,
        Canned::s3_error(403, "AccessDenied", "Access Denied"),
    );
    let imds_before = world.imds.counters();
    let front_before = world.front.log().len();
    std::fs::write(agent.path(SHIPPER_CONFIG), "drifted\n").unwrap();

    let started = Instant::now();
    let report = json_of(agent.run(&["repair", "--json"]).expect_code(0));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(actions_on(&report["steps"], SHIPPER_CONFIG), ["write-file"]);
    let imds_after = world.imds.counters();
    assert_eq!(imds_after.gets, imds_before.gets, "repair asked IMDS");
    assert_eq!(imds_after.tokens, imds_before.tokens, "repair asked IMDS");
    assert_eq!(world.front.log().len(), front_before, "repair called AWS");
    // The kept spec is private.
    assert_eq!(
        mode(&agent.path("/var/lib/nodewright/applied-spec.json")),
        0o600
    );

    // Without a kept spec, repair says what to do.
    std::fs::remove_file(agent.path("/var/lib/nodewright/applied-spec.json")).unwrap();
    let run = agent.run(&["repair"]);
    run.expect_code(6);
    assert!(
        run.stderr.contains("no applied spec is kept"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nodewright runbook no-applied-spec"),
        "{}",
        run.stderr
    );
}

/// Everything under the root but nodewright's own records, without times.
fn shape(root: &Path) -> BTreeMap<PathBuf, (String, u32, u32, u32, String)> {
    snapshot(root)
        .into_iter()
        .filter(|(path, _)| {
            let ours = Path::new("var/lib/nodewright");
            // The harness seeds every root with an os-release (the image's).
            let seed = Path::new("etc/os-release");
            !path.starts_with(ours)
                && !ours.starts_with(path)
                && !path.starts_with("run")
                && !seed.starts_with(path)
        })
        .map(|(path, e)| (path, (e.kind.to_owned(), e.mode, e.uid, e.gid, e.content)))
        .collect()
}

#[test]
fn reset_then_boot_gives_the_same_node() {
    let world = booted_ops_worker();
    let agent = &world.agent;
    let booted = shape(agent.root());
    let managed: Vec<String> = agent.state()["files"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(managed.len() > 10);

    // Without --yes (or with only one of the etcd flags) nothing happens.
    let before = snapshot(agent.root());
    let refused = agent.run(&["reset"]);
    refused.expect_code(2);
    assert!(refused.stdout.contains(AGENT_BINARY), "{}", refused.stdout);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    agent.run(&["reset", "--dry-run"]).expect_code(0);
    agent
        .run(&["reset", "--yes", "--include-etcd-data"])
        .expect_code(2);
    assert_eq!(
        before,
        snapshot(agent.root()),
        "a refused reset changed the node"
    );

    let reset = agent.run(&["reset", "--yes"]);
    reset.expect_code(0);
    for path in &managed {
        assert!(
            !agent.path(path).exists() || agent.path(path).is_dir(),
            "{path} is still there"
        );
    }
    let left = shape(agent.root());
    assert!(
        left.is_empty(),
        "reset left more than nodewright's records: {:?}",
        left.keys().collect::<Vec<_>>()
    );
    assert!(!agent.path("/var/lib/nodewright/applied-spec.json").exists());
    let state = agent.state();
    assert_eq!(state["lastRun"]["command"], "reset");
    assert_eq!(state["lastRun"]["result"], "reset");
    assert!(state["applied"].as_object().unwrap().is_empty());
    let status = agent.run(&["status"]);
    status.expect_code(0);
    assert!(
        status.stdout.contains("Last run:     reset done"),
        "{}",
        status.stdout
    );
    // A second reset has nothing left to do.
    let again = agent.run(&["reset", "--dry-run"]);
    assert!(
        again.stdout.contains("Nothing to remove"),
        "{}",
        again.stdout
    );

    agent.run(&["boot", "--deadline", "20"]).expect_code(0);
    assert_eq!(
        shape(agent.root()),
        booted,
        "reset then boot made another node"
    );
    agent.run(&["verify"]).expect_code(0);
    let plan = agent.run(&["plan", "--deadline", "20"]);
    assert!(plan.stdout.contains("No changes"), "{}", plan.stdout);
}

#[test]
fn reset_and_repair_never_touch_etcd_data_without_the_flags() {
    // A control plane whose spec puts a marker in etcd's data directory and a file
    // under a volume mount the state records as protected (as the etcd volume code
    // records its mounts).
    let spec = specs::extend_example(
        "control-plane",
        r#"
directories:
  - path: /var/lib/etcd
    mode: "0700"
files:
  - path: /var/lib/etcd/nodewright-marker
    mode: "0600"
    content: "member etcd-a of prod.example.com\n"
  - path: /mnt/etcd-prod-a/member-id
    content: "etcd-a\n"
  - path: /etc/kubernetes/etcd.env
    content: "ETCD_NAME=etcd-a\n"
"#,
    );
    let world = specs::world("control-plane", &spec);
    let agent = &world.agent;
    agent.run(&["boot", "--deadline", "20"]).expect_code(0);
    let state_path = agent.path("/var/lib/nodewright/state.json");
    let mut state = agent.state();
    state["protected"] = serde_json::json!({ "/mnt/etcd-prod-a": "etcd data of member etcd-a" });
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    // etcd's own data, which nodewright never recorded.
    let data = [
        "/var/lib/etcd/member/snap/db",
        "/mnt/etcd-prod-a/member/wal/0000000000000000-0000000000000000.wal",
    ];
    for path in data {
        std::fs::create_dir_all(agent.path(path).parent().unwrap()).unwrap();
        std::fs::write(agent.path(path), "etcd bytes").unwrap();
    }
    let marker = agent.path("/var/lib/etcd/nodewright-marker");

    // Repair leaves drift under protected paths alone, and says so.
    std::fs::write(&marker, "etcd rewrote this\n").unwrap();
    std::fs::write(agent.path("/etc/kubernetes/etcd.env"), "ETCD_NAME=x\n").unwrap();
    let repair = agent.run(&["repair"]);
    repair.expect_code(7);
    assert!(
        repair
            .stdout
            .contains("Left alone: /var/lib/etcd/nodewright-marker"),
        "{}",
        repair.stdout
    );
    assert!(
        repair.stderr.contains("repair never touches etcd data"),
        "{}",
        repair.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "etcd rewrote this\n"
    );
    assert_eq!(
        std::fs::read_to_string(agent.path("/etc/kubernetes/etcd.env")).unwrap(),
        "ETCD_NAME=etcd-a\n",
        "the rest was repaired"
    );

    let protected_paths = [
        "/var/lib/etcd/nodewright-marker",
        "/mnt/etcd-prod-a/member-id",
        data[0],
        data[1],
    ];
    let reset = agent.run(&["reset", "--yes"]);
    reset.expect_code(0);
    assert!(
        reset.stdout.contains(
            "Kept /var/lib/etcd/nodewright-marker (under protected /var/lib/etcd: etcd data"
        ),
        "{}",
        reset.stdout
    );
    assert!(
        reset
            .stdout
            .contains("Kept /mnt/etcd-prod-a/member-id (under protected /mnt/etcd-prod-a: etcd data of member etcd-a)"),
        "{}",
        reset.stdout
    );
    for path in protected_paths {
        assert!(agent.path(path).exists(), "reset removed {path}");
    }
    assert!(!agent.path("/etc/kubernetes/etcd.env").exists());

    // One flag is not enough, in either order.
    for flags in [
        ["--include-etcd-data", "--yes"],
        ["--confirm-etcd-data-loss", "--yes"],
    ] {
        let run = agent.run(&["reset", flags[0], flags[1]]);
        run.expect_code(2);
        for path in protected_paths {
            assert!(agent.path(path).exists(), "{flags:?} removed {path}");
        }
    }

    // Both flags: the data goes.
    let wipe = agent.run(&[
        "reset",
        "--yes",
        "--include-etcd-data",
        "--confirm-etcd-data-loss",
    ]);
    wipe.expect_code(0);
    assert!(
        wipe.stdout
            .contains("delete etcd data under /var/lib/etcd: ok"),
        "{}",
        wipe.stdout
    );
    for path in protected_paths {
        assert!(!agent.path(path).exists(), "{path} survived");
    }
}

#[test]
fn status_shows_what_a_boot_waits_for_and_a_killed_run() {
    let world = specs::world("worker", &specs::ops_worker_spec());
    let agent = &world.agent;
    let nothing = agent.run(&["status"]);
    nothing.expect_code(6);
    assert!(
        nothing.stderr.contains("no run is recorded"),
        "{}",
        nothing.stderr
    );
    agent.run(&["verify"]).expect_code(6);

    world.front.fail(
        None,
        |seen| seen.method == "GET" && seen.path.ends_with("/nodespec.yaml"),
        Canned::s3_error(403, "AccessDenied", "Access Denied"),
    );
    let mut boot = agent
        .command(&["boot", "--deadline", "60"])
        .spawn()
        .unwrap();
    let started = Instant::now();
    let waiting = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never saw a wait"
        );
        let run = agent.run(&["status", "--json"]);
        if run.code == 0 {
            let status = json_of(&run);
            if let Some(waiting) = status["inProgress"][0]["waiting"].get(0) {
                assert_eq!(status["inProgress"][0]["command"], "boot");
                assert_eq!(status["inProgress"][0]["phase"], "node spec");
                break waiting.clone();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        waiting["subject"]
            .as_str()
            .unwrap()
            .starts_with("s3://nodewright-state/"),
        "{waiting}"
    );
    assert!(
        waiting["reason"].as_str().unwrap().contains("AccessDenied"),
        "{waiting}"
    );
    assert!(waiting["attempts"].as_u64().unwrap() >= 1);
    assert!(waiting["givesUpAt"].is_string());
    assert!(
        waiting["runbook"]
            .as_str()
            .unwrap()
            .contains("nodewright runbook s3-access-denied"),
        "{waiting}"
    );
    let text = agent.run(&["status"]);
    text.expect_code(0);
    assert!(
        text.stdout.contains("In progress:  boot (pid"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("waiting for s3://nodewright-state/"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("Last run:     none recorded"),
        "{}",
        text.stdout
    );

    // Killed while waiting: status says the run ended without finishing.
    let _ = boot.kill();
    let _ = boot.wait();
    let status = json_of(agent.run(&["status", "--json"]).expect_code(0));
    assert_eq!(status["inProgress"], Value::Array(vec![]));
    assert_eq!(status["interrupted"][0]["command"], "boot");
    let problems = status["problems"].to_string();
    assert!(problems.contains("ended without finishing"), "{problems}");

    // The next run clears the stale record and converges.
    world.front.clear();
    agent.run(&["boot", "--deadline", "20"]).expect_code(0);
    let status = json_of(agent.run(&["status", "--json"]).expect_code(0));
    assert_eq!(status["interrupted"], Value::Array(vec![]));
    assert_eq!(status["problems"], Value::Array(vec![]));
    let phases: Vec<&str> = status["lastRun"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["user data", "facts", "node spec", "model", "plan", "apply"]
    );
    let services: Vec<(&str, &str, bool)> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["unit"].as_str().unwrap(),
                s["wanted"].as_str().unwrap(),
                s["healthy"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            ("chrony.service", "running", true),
            ("containerd.service", "running", true),
            ("kubelet.service", "running", true),
            ("node-problem-check.service", "stopped", true),
            ("node-problem-check.timer", "running", true),
            ("node-agent.service", "running", true),
            ("log-shipper.service", "running", true),
        ]
    );
    assert_eq!(status["services"][2]["source"], "recorded");
    assert_eq!(status["lastRun"]["agentVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        status["lastRun"]["specSha256"],
        nodewright::spec::digest(&specs::ops_worker_spec())
    );
}

#[test]
fn a_damaged_state_record_is_reported_by_status_and_set_aside_by_boot() {
    let world = booted_ops_worker();
    let agent = &world.agent;
    let state = agent.path("/var/lib/nodewright/state.json");
    std::fs::write(&state, "{ half a record").unwrap();
    let status = agent.run(&["status"]);
    status.expect_code(0);
    assert!(status.stdout.contains("reading state"), "{}", status.stdout);
    assert!(status.stdout.contains("sets it aside"), "{}", status.stdout);
    // status only reads: the damaged record is still there for the boot to handle.
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "{ half a record");
    agent.run(&["boot", "--deadline", "20"]).expect_code(0);
    assert!(
        agent
            .path("/var/lib/nodewright/state.json.corrupt")
            .exists()
    );
    agent.run(&["verify"]).expect_code(0);
}

#[test]
fn a_failed_start_makes_the_service_unhealthy_in_status() {
    let world = booted_ops_worker();
    let agent = &world.agent;
    // Make the next run fail to write the agent's config: a directory in its way.
    std::fs::remove_file(agent.path(AGENT_CONFIG)).unwrap();
    std::fs::create_dir(agent.path(AGENT_CONFIG)).unwrap();
    let run = agent.run(&["boot", "--deadline", "20"]);
    run.expect_code(5);
    assert!(
        run.stderr.contains("nodewright runbook apply-failed"),
        "{}",
        run.stderr
    );
    let status = json_of(agent.run(&["status", "--json"]).expect_code(0));
    assert_eq!(status["lastRun"]["result"], "failed");
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("the last run (boot) failed"),
        "{problems}"
    );
    assert!(problems.contains(AGENT_CONFIG), "{problems}");
}

#[test]
fn the_run_lock_keeps_runs_apart() {
    let world = booted_ops_worker();
    let agent = &world.agent;
    // Hold the lock as another run would.
    let lock_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(agent.path("/var/lib/nodewright/lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();

    std::fs::write(agent.path(SHIPPER_CONFIG), "drifted\n").unwrap();
    let state_before = std::fs::read(agent.path("/var/lib/nodewright/state.json")).unwrap();
    for args in [&["repair"][..], &["reset", "--yes"][..]] {
        let run = agent.run(args);
        run.expect_code(8);
        assert!(
            run.stderr.contains("another nodewright run holds the lock"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("nodewright runbook another-run"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        std::fs::read_to_string(agent.path(SHIPPER_CONFIG)).unwrap(),
        "drifted\n"
    );

    // A boot waits for it (and says so in status), then gives up at its deadline.
    let mut boot = agent.command(&["boot", "--deadline", "4"]).spawn().unwrap();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never saw the wait"
        );
        let status = json_of(&agent.run(&["status", "--json"]));
        if status["inProgress"][0]["waiting"][0]["subject"] == "the run lock" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let code = boot.wait().unwrap().code();
    assert_eq!(code, Some(8));
    // Runs that never got the lock recorded nothing.
    assert_eq!(
        std::fs::read(agent.path("/var/lib/nodewright/state.json")).unwrap(),
        state_before
    );

    // Released: a boot waiting for it goes on.
    let mut boot = agent
        .command(&["boot", "--deadline", "20"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(held);
    assert_eq!(boot.wait().unwrap().code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(agent.path(SHIPPER_CONFIG)).unwrap(),
        "endpoint: https://logs.internal.example.com:443\nbatch: 512\n"
    );
}

#[test]
fn support_bundle_contains_no_secret() {
    // Every kind of secret the redaction knows, each with a marker; and public text
    // with another marker, to prove the spec is in the bundle.
    let spec = specs::extend_example(
        "worker",
        r#"
files:
  - path: /etc/app/secret-token
    mode: "0600"
    secret: true
    content: "NWSECRET-secret-file-line\n"
  - path: /etc/app/config.yaml
    content: |
      logLevel: NWPUBLIC-loglevel
      password: NWSECRET-password
      apiToken: "NWSECRET-apitoken"
      client-key-data: NWSECRET-clientkeydata
      proxy: http://admin:NWSECRET-urlpassword@proxy.internal:3128
      header: "Authorization: Bearer NWSECRET-bearer-0123456789"
  - path: /etc/default/app
    content: |
      AWS_SECRET_ACCESS_KEY=NWSECRET-awssecret
      DB_PASSWORD="NWSECRET-dbpassword"
      REGION=NWPUBLIC-region
  - path: /etc/app/tls.key
    mode: "0600"
    content: |
      -----BEGIN PRIVATE KEY-----
      NWSECRET-pem-body-line-one
      NWSECRET-pem-body-line-two
      -----END PRIVATE KEY-----
systemd:
  units:
    - name: app.service
      content: |
        [Service]
        Environment=API_TOKEN=NWSECRET-unit-env-token
        ExecStart=/bin/sh -c 'exec /bin/sleep infinity'
      dropIns:
        - name: 10-auth.conf
          content: |
            [Service]
            Environment="SESSION_KEY=NWSECRET-dropin-session-key"
"#,
    );
    let world = specs::world("worker", &spec);
    let agent = &world.agent;
    agent.run(&["boot", "--deadline", "20"]).expect_code(0);
    // The secrets are on the node (so finding none in the bundle means something).
    let on_node = String::from_utf8_lossy(
        &std::fs::read(agent.path("/var/lib/nodewright/applied-spec.json")).unwrap(),
    )
    .matches("NWSECRET-")
    .count();
    assert_eq!(on_node, 12, "every marker secret is on the node");
    // Drift in the secret file and a failed status line, so verify and status have
    // something to say about them.
    std::fs::write(
        agent.path("/etc/kubernetes/bootstrap-token"),
        "NWSECRET-drifted\n",
    )
    .unwrap();

    let out = tempfile::tempdir().unwrap();
    let bundle_path = out.path().join("bundle.tar.gz");
    let run = agent.run(&["support-bundle", "--output", bundle_path.to_str().unwrap()]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("not collected: journal/"),
        "{}",
        run.stdout
    );
    assert_eq!(mode(&bundle_path), 0o600);
    let without_journal = read_bundle(&bundle_path);
    let readme = &without_journal["nodewright-support/README.txt"];
    assert!(readme.contains("journal/: no journal to read"), "{readme}");

    // With the node's journal (a real journal file, as journald writes it): lines of
    // nodewright and of the spec's units, some holding secrets.
    write_journal(
        &agent.path("/var/log/journal/0123456789abcdef0123456789abcdef/system.journal"),
        &[
            ("nodewright", None, "NWPUBLIC-journal-agent run failed"),
            (
                "nodewright",
                None,
                "retrying with password NWSECRET-password",
            ),
            ("app", Some("app.service"), "NWPUBLIC-journal-app started"),
            (
                "app",
                Some("app.service"),
                "login with token=NWSECRET-journal-token",
            ),
            (
                "app",
                Some("app.service"),
                "Authorization: Bearer NWSECRET-journal-bearer",
            ),
        ],
    );
    agent
        .run(&["support-bundle", "--output", bundle_path.to_str().unwrap()])
        .expect_code(0);
    let files = read_bundle(&bundle_path);
    for name in [
        "README.txt",
        "status.txt",
        "status.json",
        "timeline.txt",
        "state.json",
        "spec.yaml",
        "facts.json",
        "verify.txt",
        "units.txt",
        "disk.txt",
        "system.txt",
    ] {
        assert!(
            files.contains_key(&format!("nodewright-support/{name}")),
            "{name} missing: {:?}",
            files.keys()
        );
    }
    for (name, text) in &files {
        assert!(!text.contains("NWSECRET"), "{name} holds a secret:\n{text}");
    }
    let spec_yaml = &files["nodewright-support/spec.yaml"];
    assert!(spec_yaml.contains("NWPUBLIC-loglevel"), "{spec_yaml}");
    assert!(spec_yaml.contains("NWPUBLIC-region"), "{spec_yaml}");
    assert!(spec_yaml.contains("<redacted: secret file"), "{spec_yaml}");
    assert!(spec_yaml.contains("<redacted: private key>"), "{spec_yaml}");
    let verify = &files["nodewright-support/verify.txt"];
    assert!(
        verify.contains("/etc/kubernetes/bootstrap-token: content changed (a secret file"),
        "{verify}"
    );
    let agent_journal = &files["nodewright-support/journal/nodewright.txt"];
    assert!(
        agent_journal.contains("NWPUBLIC-journal-agent"),
        "{agent_journal}"
    );
    assert!(
        agent_journal.contains("retrying with password <redacted>"),
        "{agent_journal}"
    );
    let app_journal = &files["nodewright-support/journal/app.service.txt"];
    assert!(
        app_journal.contains("NWPUBLIC-journal-app"),
        "{app_journal}"
    );
    assert!(
        !app_journal.contains("NWPUBLIC-journal-agent"),
        "{app_journal}"
    );
    assert!(
        files["nodewright-support/README.txt"].contains("Everything was collected"),
        "{}",
        files["nodewright-support/README.txt"]
    );
    assert!(files["nodewright-support/disk.txt"].contains("$ df -hT"));
    assert!(files["nodewright-support/timeline.txt"].contains("apply: write /etc/app/config.yaml"));
    assert!(files["nodewright-support/units.txt"].contains("app.service: wanted running"));
}

/// Every file of a bundle, by name.
fn read_bundle(path: &Path) -> BTreeMap<String, String> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    let mut archive = tar::Archive::new(gz);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            (name, text)
        })
        .collect()
}

/// Writes a real journal file with `systemd-journal-remote` (from the journal export
/// format): (identifier, unit, message) per entry.
fn write_journal(path: &Path, entries: &[(&str, Option<&str>, &str)]) {
    let remote = Path::new("/lib/systemd/systemd-journal-remote");
    assert!(
        remote.exists(),
        "{} is missing: run scripts/setup.sh",
        remote.display()
    );
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let mut export = String::new();
    for (i, (identifier, unit, message)) in entries.iter().enumerate() {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\nSYSLOG_IDENTIFIER={identifier}\n",
            now + i as u128,
            1000 + i
        ));
        if let Some(unit) = unit {
            export.push_str(&format!("_SYSTEMD_UNIT={unit}\n"));
        }
        export.push_str(&format!("MESSAGE={message}\n\n"));
    }
    let mut child = std::process::Command::new(remote)
        .arg("-o")
        .arg(path)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), export.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn failures_point_at_the_runbook_and_the_runbook_is_built_in() {
    let world = World::example_worker();
    world.imds.set_fault(Fault::Down);
    let run = world.agent.run(&["boot", "--deadline", "2"]);
    run.expect_code(4);
    assert!(
        run.stderr
            .contains("runbook: `nodewright runbook imds-unreachable`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("docs/runbook.md#imds-unreachable"),
        "{}",
        run.stderr
    );

    let agent = Agent::new("http://127.0.0.1:9", "http://127.0.0.1:9");
    let list = agent.run(&["runbook"]);
    list.expect_code(0);
    for topic in [
        "imds-unreachable",
        "volume-stuck",
        "clock-skew",
        "dns-placeholder",
    ] {
        assert!(list.stdout.contains(topic), "{}", list.stdout);
    }
    let section = agent.run(&["runbook", "imds-unreachable"]);
    section.expect_code(0);
    assert!(section.stdout.contains("hop limit"), "{}", section.stdout);
    agent.run(&["runbook", "no-such-topic"]).expect_code(2);
    let help = agent.run(&["--help"]);
    assert!(help.stdout.contains("7  drift"), "{}", help.stdout);
    assert!(
        help.stdout.contains("8  another nodewright run"),
        "{}",
        help.stdout
    );
}
