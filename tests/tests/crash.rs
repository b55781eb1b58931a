//! Crash safety: `boot` and `apply` killed with SIGKILL at random points, then a normal
//! run. Whatever point the kill hit, the next run converges, leaves no partial file
//! anywhere, and its records agree with the disk (`verify` is clean, `plan` is empty).
//!
//! The kill points are chosen over the run's own system calls, not over wall-clock
//! time. A clean run is traced once with strace; then each round picks a point
//! (seeded) and `strace --inject=SYSCALL:signal=KILL:when=N` kills the process exactly
//! there. Two thirds of the rounds pick a path the run touches under the root and one
//! of the calls on it (`-P`): creating the temp file, writing it, chown, chmod, fsync,
//! rename, the directory's fsync, mkdir, symlink, the state record's own write... The
//! other third pick among all the run's calls, network phases included.
//!
//! The scenarios run the whole `boot` of a full worker spec and of the control-plane
//! example, so every step those flows gain is inside the kill range without changing
//! this test: when the etcd volume step (attach, format only if blank, mount) joins the
//! control-plane boot, its scenario gets a loop-device volume in its world and
//! [`Scenario::invariants`] gains "formatted at most once" (the filesystem UUID is the
//! same after every round).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use nodewright_e2e::agent::Agent;
use nodewright_e2e::specs;
use nodewright_e2e::tree::{partial_files, snapshot};

/// The calls that create, write, re-own, sync, rename or remove files: the per-path
/// kill points. (Reads of the same paths, while planning, are among "all calls".)
const CHANGING: &[&str] = &[
    "openat",
    "write",
    "pwrite64",
    "fchown",
    "fchownat",
    "lchown",
    "fchmod",
    "fchmodat",
    "chmod",
    "fsync",
    "fdatasync",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "symlink",
    "symlinkat",
    "unlink",
    "unlinkat",
    "close",
];

struct Scenario {
    name: &'static str,
    example: &'static str,
    spec: Vec<u8>,
    rounds: usize,
    seed: u64,
    /// Checks particular to the scenario, after each recovery.
    invariants: fn(&Agent),
}

/// What a clean run does, counted the way strace's `when=` counts: per thread. Each
/// figure is the largest count in any one thread, so every invocation number picked
/// is reached by some thread.
struct Profile {
    /// Calls per system call.
    calls: Vec<(String, u64)>,
    /// Changing calls per (node path, system call) on paths under the root; a temp
    /// file `.NAME.nwtmp` counts for NAME.
    paths: Vec<((String, String), u64)>,
}

fn profile(agent: &Agent, args: &[&str]) -> Profile {
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = agent
        .command_under(
            &[
                "strace",
                "-f",
                "-qq",
                "-y",
                "-o",
                out.path().to_str().unwrap(),
                "--",
            ],
            args,
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "the profiled run failed: {}\n{}",
        status.status,
        String::from_utf8_lossy(&status.stderr)
    );
    let trace = std::fs::read_to_string(out.path()).unwrap();
    let root = agent.root().display().to_string();
    // Lines look like `1234 fchown(7</R/etc/.a.nwtmp>, 0, 0) = 0`; resumed halves,
    // signals and exits are not calls.
    let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut paths: BTreeMap<((String, String), String), u64> = BTreeMap::new();
    for line in trace.lines() {
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some((name, _)) = rest.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        *calls.entry((name.to_owned(), tid.to_owned())).or_default() += 1;
        if let Some(path) = node_path(rest, &root)
            && CHANGING.contains(&name)
        {
            *paths
                .entry(((path, name.to_owned()), tid.to_owned()))
                .or_default() += 1;
        }
    }
    let calls = most_per_thread(calls);
    let paths = most_per_thread(paths);
    assert!(calls.len() > 10 && paths.len() > 10, "no profile:\n{trace}");
    Profile { calls, paths }
}

/// For each key, its largest count in any one thread.
fn most_per_thread<K: Ord>(counts: BTreeMap<(K, String), u64>) -> Vec<(K, u64)> {
    let mut out: BTreeMap<K, u64> = BTreeMap::new();
    for ((key, _thread), count) in counts {
        let entry = out.entry(key).or_default();
        *entry = (*entry).max(count);
    }
    out.into_iter().collect()
}

/// The node path a traced call acts on (its first path under `root`), with a temp
/// file's name mapped to its target's. Live run records are left out: their names
/// hold the pid, which differs from run to run.
fn node_path(call: &str, root: &str) -> Option<String> {
    let at = call.find(&format!("{root}/"))? + root.len();
    let path: String = call[at..]
        .chars()
        .take_while(|c| !matches!(c, '"' | '>' | ','))
        .collect();
    if path.starts_with("/run/") {
        return None;
    }
    let (dir, name) = path.rsplit_once('/')?;
    Some(
        match name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".nwtmp"))
        {
            Some(target) => format!("{dir}/{target}"),
            None => path,
        },
    )
}

/// The temp file a write to `path` goes through.
fn temp_of(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/.{name}.nwtmp"),
        None => path.to_owned(),
    }
}

/// The `n`-th entry among weighted `entries` (1-based), and the invocation in it.
fn pick<K: Clone>(entries: &[(K, u64)], mut n: u64) -> (K, u64) {
    for (key, count) in entries {
        if n <= *count {
            return (key.clone(), n);
        }
        n -= count;
    }
    let (key, count) = entries.last().unwrap();
    (key.clone(), *count)
}

fn total<K>(entries: &[(K, u64)]) -> u64 {
    entries.iter().map(|(_, c)| c).sum()
}

/// The node's files (outside nodewright's own records, without temp files), with
/// their digests.
fn files_of(root: &Path) -> BTreeMap<std::path::PathBuf, String> {
    snapshot(root)
        .into_iter()
        .filter(|(path, e)| {
            e.kind == "file"
                && !path.starts_with("var/lib/nodewright")
                && !path.starts_with("run")
                && !path.to_string_lossy().ends_with(".nwtmp")
        })
        .map(|(path, e)| {
            let content = if issued_on_the_node(&path) {
                "issued".to_owned()
            } else {
                e.content
            };
            (path, content)
        })
        .collect()
}

/// Keys and certificates a control-plane node issues itself: new random bytes whenever
/// one is (re-)issued, so runs are compared by their presence (a converged node's
/// `plan` showing no changes proves every pair matches and verifies).
fn issued_on_the_node(path: &Path) -> bool {
    let text = path.to_string_lossy();
    let from_store = [
        "etc/kubernetes/pki/ca.crt",
        "etc/kubernetes/pki/ca.key",
        "etc/kubernetes/pki/front-proxy-ca.crt",
        "etc/kubernetes/pki/etcd/ca.crt",
        "etc/kubernetes/pki/sa.key",
    ];
    (text.ends_with(".crt") || text.ends_with(".key"))
        && [
            "etc/kubernetes/pki/",
            "etc/kubernetes/controller-shim/",
            "var/lib/kubelet/pki/",
            "var/lib/kube-proxy/",
        ]
        .iter()
        .any(|dir| text.starts_with(dir))
        && !from_store.contains(&text.as_ref())
}

/// The spec a node had before: every file and unit differs, and it has a file and a
/// service that the scenario's spec no longer has, so the killed run rewrites,
/// restarts, removes and stops things.
fn previous_version(spec: &[u8]) -> Vec<u8> {
    let mut value: yaml_serde::Value = yaml_serde::from_slice(spec).unwrap();
    let suffix = |v: &mut yaml_serde::Value| {
        if let Some(text) = v.as_str() {
            *v = format!("{text}\n# previous version\n").into();
        }
    };
    for file in value["files"].as_sequence_mut().unwrap() {
        // A secret (the bootstrap token) keeps its format.
        if file["secret"].as_bool() != Some(true) {
            suffix(&mut file["content"]);
        }
    }
    if let Some(units) = value["systemd"]["units"].as_sequence_mut() {
        for unit in units.iter_mut() {
            suffix(&mut unit["content"]);
        }
    }
    value["sysctls"]["vm.swappiness"] = 10.into();
    // A module only the previous version loaded.
    match value["kernelModules"].as_sequence_mut() {
        Some(modules) => modules.push("ip_vs".into()),
        None => value["kernelModules"] = yaml_serde::Value::Sequence(vec!["ip_vs".into()]),
    }
    let extra = specs::extend_example(
        "worker",
        r#"
files:
  - path: /etc/obsolete/agent.conf
    content: "removed by the next version\n"
systemd:
  units:
    - name: obsolete.service
      content: |
        [Service]
        ExecStart=/bin/true
      restartOn: [/etc/obsolete/agent.conf]
"#,
    );
    let extra: yaml_serde::Value = yaml_serde::from_slice(&extra).unwrap();
    let obsolete_file = extra["files"]
        .as_sequence()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let obsolete_unit = extra["systemd"]["units"]
        .as_sequence()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    value["files"]
        .as_sequence_mut()
        .unwrap()
        .push(obsolete_file);
    match value["systemd"]["units"].as_sequence_mut() {
        Some(units) => units.push(obsolete_unit),
        None => value["systemd"]["units"] = yaml_serde::Value::Sequence(vec![obsolete_unit]),
    }
    yaml_serde::to_string(&value).unwrap().into_bytes()
}

fn run_scenario(scenario: &Scenario) {
    let world = specs::world(scenario.example, &scenario.spec);
    let spec_dir = tempfile::tempdir().unwrap();
    let url_of = |name: &str, spec: &[u8]| {
        let file = spec_dir.path().join(name);
        std::fs::write(&file, spec).unwrap();
        format!("file://{}", file.display())
    };
    let spec_url = url_of("nodespec.yaml", &scenario.spec);
    let digest = nodewright::spec::digest(&scenario.spec);
    let previous = previous_version(&scenario.spec);
    let previous_url = url_of("previous.yaml", &previous);
    let boot: Vec<&str> = vec!["boot", "--deadline", "30"];
    let apply: Vec<&str> = vec![
        "apply",
        "--spec",
        &spec_url,
        "--sha256",
        &digest,
        "--deadline",
        "30",
    ];
    let apply_previous: Vec<&str> = vec!["apply", "--spec", &previous_url, "--deadline", "30"];

    let reference = Agent::new(&world.imds.url(), &world.front.url());
    let boot_profile = profile(&reference, &boot);
    let clean = files_of(reference.root());
    assert!(
        clean.len() > 10,
        "{}: the clean run wrote {} files",
        scenario.name,
        clean.len()
    );
    let before = Agent::new(&world.imds.url(), &world.front.url());
    before.run(&apply_previous).expect_code(0);
    let old = files_of(before.root());
    // The upgrade rewrites the spec's own files, units, sysctls and modules (generated
    // component configs and the harness's seed stay the same).
    let differing = old
        .iter()
        .filter(|(path, digest)| clean.get(*path) != Some(*digest))
        .count();
    assert!(
        differing >= 5,
        "{}: only {differing} files differ between the two versions",
        scenario.name
    );

    // An upgrade rewrites fewer files than a first boot: kill points for upgrade rounds
    // come from a profile of an upgrade, so that they land as often.
    let upgraded = Agent::new(&world.imds.url(), &world.front.url());
    upgraded.run(&apply_previous).expect_code(0);
    let upgrade_profile = profile(&upgraded, &boot);

    let mut rng = fastrand::Rng::with_seed(scenario.seed);
    let (mut killed, mut unfinished, mut temps_left) = (0, 0, 0);
    for round in 0..scenario.rounds {
        let agent = Agent::new(&world.imds.url(), &world.front.url());
        // Half the rounds upgrade a node converged on the previous spec.
        let upgrade = round % 2 == 1;
        if upgrade {
            agent.run(&apply_previous).expect_code(0);
        }
        let start = shape(agent.root());
        let args = if round % 4 == 3 { &apply } else { &boot };
        let profile = if upgrade {
            &upgrade_profile
        } else {
            &boot_profile
        };
        let mut strace: Vec<String> = ["strace", "-f", "-qq", "-o", "/dev/null"]
            .map(str::to_owned)
            .to_vec();
        let (syscall, n, at) = if round % 3 == 0 {
            let (syscall, n) = pick(&profile.calls, rng.u64(1..=total(&profile.calls)));
            (syscall, n, "any path".to_owned())
        } else {
            let ((path, syscall), n) = pick(&profile.paths, rng.u64(1..=total(&profile.paths)));
            for traced in [path.clone(), temp_of(&path)] {
                strace.push("-P".to_owned());
                strace.push(
                    agent
                        .root()
                        .join(traced.trim_start_matches('/'))
                        .display()
                        .to_string(),
                );
            }
            (syscall, n, path)
        };
        let inject = format!("{syscall}:signal=KILL:when={n}");
        strace.extend([
            "-e".to_owned(),
            format!("trace={syscall}"),
            "-e".to_owned(),
            format!("inject={inject}"),
            "--".to_owned(),
        ]);
        let wrapper: Vec<&str> = strace.iter().map(String::as_str).collect();
        let status = agent
            .command_under(&wrapper, args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let context = format!(
            "{} round {round} ({}{}, killed at {inject} on {at})",
            scenario.name,
            args[0],
            if upgrade {
                " over the previous spec"
            } else {
                ""
            }
        );
        if status.signal() == Some(9) {
            killed += 1;
        } else {
            assert_eq!(
                status.code(),
                Some(0),
                "{context}: the run neither died nor converged"
            );
        }

        // Right after the kill: every file is whole, the old version or the new one.
        let left = files_of(agent.root());
        for (path, digest) in &left {
            assert!(
                clean.get(path) == Some(digest) || old.get(path) == Some(digest),
                "{context}: {} is neither the old nor the new file",
                path.display()
            );
        }
        records_are_whole(&agent, &context);
        // Did the kill land between the run's first change and its record?
        let state = agent.path("/var/lib/nodewright/state.json");
        let recorded = state.exists() && {
            let state = agent.state();
            state["lastRun"]["result"] == "converged"
                && state["lastRun"]["specSha256"] == digest.as_str()
        };
        if shape(agent.root()) != start && !recorded {
            unfinished += 1;
        }
        if !partial_files(agent.root()).is_empty() {
            temps_left += 1;
        }
        // A killed run is never shown as in progress.
        let status = agent.run(&["status", "--json"]);
        if status.code == 0 {
            let value: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
            assert_eq!(value["inProgress"], serde_json::json!([]), "{context}");
        } else {
            status.expect_code(6);
        }

        // The next normal run converges, and leaves the node as a clean run does.
        agent.run(args).expect_code(0);
        let partial = partial_files(agent.root());
        assert!(partial.is_empty(), "{context}: partial files {partial:?}");
        assert_eq!(
            files_of(agent.root()),
            clean,
            "{context}: files differ from a clean run"
        );
        let plan = agent.run(&["plan", "--deadline", "30"]);
        assert!(
            plan.stdout.contains("No changes"),
            "{context}: {}",
            plan.stdout
        );
        agent.run(&["verify"]).expect_code(0);
        let records = std::fs::read_dir(agent.path("/run/nodewright"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(records, 0, "{context}: live run records left behind");
        (scenario.invariants)(&agent);
    }
    eprintln!(
        "{}: {} rounds, kill points from {} calls ({} changing calls on {} paths under the root): {killed} killed, {unfinished} between the first change and the record, {temps_left} left a temp file",
        scenario.name,
        scenario.rounds,
        total(&boot_profile.calls),
        total(&boot_profile.paths),
        boot_profile
            .paths
            .iter()
            .map(|((path, _), _)| path)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
    // The kills must land all over the run, not only before or after the changes.
    assert!(
        killed * 10 >= scenario.rounds * 7,
        "{}: only {killed} kills",
        scenario.name
    );
    assert!(
        unfinished * 3 >= scenario.rounds,
        "{}: only {unfinished} kills between the first change and the last",
        scenario.name
    );
    assert!(
        temps_left >= 1,
        "{}: no kill ever hit a write",
        scenario.name
    );
}

/// Everything under the root but live run records, without times.
fn shape(root: &Path) -> BTreeMap<std::path::PathBuf, (&'static str, u32, String)> {
    snapshot(root)
        .into_iter()
        .filter(|(path, _)| !path.starts_with("run"))
        .map(|(path, e)| (path, (e.kind, e.mode, e.content)))
        .collect()
}

/// The state record and the kept spec are whole JSON whenever they exist.
fn records_are_whole(agent: &Agent, context: &str) {
    let state = agent.path("/var/lib/nodewright/state.json");
    if state.exists() {
        let text = std::fs::read(&state).unwrap();
        serde_json::from_slice::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("{context}: state.json is not whole: {e}"));
    }
    let kept = agent.path("/var/lib/nodewright/applied-spec.json");
    if kept.exists() {
        let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&kept).unwrap())
            .unwrap_or_else(|e| panic!("{context}: applied-spec.json is not whole: {e}"));
        assert_eq!(
            nodewright::spec::digest(value["spec"].as_str().unwrap().as_bytes()),
            value["specSha256"].as_str().unwrap(),
            "{context}"
        );
    }
}

/// Every service the spec starts has a record of the inputs it runs with.
fn services_recorded(agent: &Agent) {
    let state = agent.state();
    let applied = state["applied"].as_object().unwrap();
    for (key, record) in applied {
        assert!(
            record["outcome"] == "ok"
                || record["outcome"]
                    .as_str()
                    .unwrap()
                    .starts_with("skipped: root is"),
            "{key}: {record}"
        );
    }
}

#[test]
fn killed_worker_boots_and_applies_converge_on_the_next_run() {
    run_scenario(&Scenario {
        name: "worker",
        example: "worker",
        spec: specs::ops_worker_spec(),
        rounds: 30,
        seed: 0x9e37_79b9,
        invariants: services_recorded,
    });
}

#[test]
fn killed_control_plane_boots_and_applies_converge_on_the_next_run() {
    run_scenario(&Scenario {
        name: "control-plane",
        example: "control-plane",
        spec: specs::ops_control_plane_spec(),
        rounds: 30,
        seed: 0x85eb_ca6b,
        invariants: services_recorded,
    });
}
