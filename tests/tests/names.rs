//! Control-plane names against the emulator with the fidelity layer: Route53 records
//! per instance, cleanup of terminated masters by `watch`, concurrent updates,
//! throttling; the /etc/hosts block of hosts and none modes.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::net::UnixDatagram;
use std::process::Child;
use std::time::{Duration, Instant};

use nodewright_e2e::agent::Run;
use nodewright_e2e::cluster::{CLUSTER, ControlPlane, SpecOptions, ZONE};
use nodewright_e2e::disks::{LoopDisk, is_root};
use nodewright_e2e::front::Canned;
use nodewright_e2e::runtime::block_on;

const API: &str = "api.internal.prod.example.com";

fn wait(child: Child) -> Run {
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn spawn(agent: &nodewright_e2e::agent::Agent, args: &[&str]) -> Child {
    agent
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn ids(records: &[(Option<String>, Vec<String>)]) -> Vec<String> {
    records.iter().filter_map(|(id, _)| id.clone()).collect()
}

#[test]
fn three_masters_publish_and_a_terminated_ones_records_go_on_the_next_watch_round() {
    if !is_root() {
        eprintln!("skipped: needs root (loop devices)");
        return;
    }
    let mut cp = ControlPlane::start();
    for member in ["a", "b", "c"] {
        let disk = LoopDisk::new(32);
        disk.format_with(&[]);
        cp.add_volume("main", member, "a,b,c", ZONE, CLUSTER, Some(disk));
    }
    let user_data = cp.publish_spec(&SpecOptions::default());
    for _ in 0..3 {
        cp.add_node(&user_data, ZONE);
    }
    let runs: Vec<Run> = cp
        .nodes
        .iter()
        .map(|n| spawn(&n.agent, &["boot", "--deadline", "30"]))
        .collect::<Vec<_>>()
        .into_iter()
        .map(wait)
        .collect();
    for run in &runs {
        run.expect_code(0);
    }
    let mut all_ids: Vec<String> = cp.nodes.iter().map(|n| n.instance_id.clone()).collect();
    all_ids.sort();
    let api = cp.records(API);
    assert_eq!(ids(&api), all_ids, "one API record per master: {api:?}");
    for node in &cp.nodes {
        assert!(api.contains(&(
            Some(node.instance_id.clone()),
            vec![node.private_ip.to_string()]
        )));
    }
    let mut etcd = Vec::new();
    for member in ["a", "b", "c"] {
        let records = cp.records(&format!("etcd-{member}.internal.{CLUSTER}"));
        assert_eq!(records.len(), 1, "{member}: {records:?}");
        etcd.push(records[0].0.clone().unwrap());
    }
    etcd.sort();
    assert_eq!(etcd, all_ids, "each master publishes its own member name");

    // A watch on master 0, with systemd's notify socket and the health endpoint.
    let socket_dir = tempfile::tempdir().unwrap();
    let socket_path = socket_dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let port = nodewright_e2e::moto::free_port();
    let mut agent0 = cp.nodes.remove(0);
    agent0
        .agent
        .set_env("NOTIFY_SOCKET", socket_path.to_str().unwrap());
    agent0.agent.set_env("WATCHDOG_USEC", "400000");
    let health = format!("127.0.0.1:{port}");
    let mut watch = spawn(
        &agent0.agent,
        &["watch", "--health", &health, "--deadline", "30"],
    );
    let mut seen = String::new();
    let mut buffer = [0u8; 512];
    let started = Instant::now();
    while !(seen.contains("READY=1") && seen.contains("WATCHDOG=1")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "notifications: {seen}"
        );
        let n = socket.recv(&mut buffer).expect("a notification");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        seen.push('\n');
    }
    let healthz = block_on(async {
        reqwest::Client::new()
            .get(format!("http://{health}/healthz"))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(healthz.status(), 200);
    // Its metrics beside it (the etcd backups' figures appear when the spec backs up:
    // this one does not; tests/tests/etcd_backup.rs and watch::metrics cover them).
    let metrics = block_on(async {
        let answer = reqwest::Client::new()
            .get(format!("http://{health}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.text().await.unwrap()
    });
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("nodewright_watch_rounds_total ")),
        "{metrics}"
    );
    assert!(!metrics.contains("etcd_cluster="), "{metrics}");

    // Terminate master 2; the next round (SIGHUP) removes its records.
    let gone = cp.nodes[1].instance_id.clone();
    block_on(cp.ec2.terminate_instances().instance_ids(&gone).send()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids(&cp.records(API)).contains(&gone) {
        assert!(
            Instant::now() < deadline,
            "the terminated master's record stayed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let api = ids(&cp.records(API));
    assert_eq!(api.len(), 2, "{api:?}");
    assert!(api.contains(&agent0.instance_id) && api.contains(&cp.nodes[0].instance_id));
    let etcd_left: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|m| ids(&cp.records(&format!("etcd-{m}.internal.{CLUSTER}"))))
        .collect();
    assert_eq!(etcd_left.len(), 2, "{etcd_left:?}");
    assert!(!etcd_left.contains(&gone));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = watch.wait().unwrap();
    assert!(status.success(), "{status:?}");
    cp.nodes.insert(0, agent0);
}

#[test]
fn two_masters_replacing_the_placeholder_at_once_keep_both_records() {
    let mut cp = ControlPlane::start();
    let user_data = cp.publish_spec(&SpecOptions {
        etcd_clusters: vec![],
        ..Default::default()
    });
    cp.add_node(&user_data, ZONE);
    cp.add_node(&user_data, ZONE);
    let mut expected: Vec<String> = cp.nodes.iter().map(|n| n.instance_id.clone()).collect();
    expected.sort();
    for round in 0..8 {
        // kops's placeholder, then both masters publish at the same moment.
        for (id, values) in cp.records(API) {
            delete_record(&cp, id.as_deref(), &values);
        }
        create_placeholder(&cp);
        let runs: Vec<Run> = cp
            .nodes
            .iter()
            .map(|n| {
                spawn(
                    &n.agent,
                    &["watch", "--rounds", "1", "--no-health", "--deadline", "30"],
                )
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(wait)
            .collect();
        for run in &runs {
            run.expect_code(0);
        }
        let records = cp.records(API);
        assert_eq!(ids(&records), expected, "round {round}: {records:?}");
        assert_eq!(
            records.len(),
            2,
            "round {round}: the placeholder is gone: {records:?}"
        );
    }
    eprintln!(
        "Route53 refused {} conflicting batches",
        cp.fidelity.refused_batches()
    );
}

fn create_placeholder(cp: &ControlPlane) {
    use aws_sdk_route53::types::*;
    let set = ResourceRecordSet::builder()
        .name(API)
        .r#type(RrType::A)
        .ttl(60)
        .resource_records(
            ResourceRecord::builder()
                .value("203.0.113.123")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    change(cp, ChangeAction::Create, set);
}

fn delete_record(cp: &ControlPlane, id: Option<&str>, values: &[String]) {
    use aws_sdk_route53::types::*;
    let mut set = ResourceRecordSet::builder()
        .name(API)
        .r#type(RrType::A)
        .ttl(if id.is_some() { 30 } else { 60 })
        .set_set_identifier(id.map(str::to_owned));
    if id.is_some() {
        set = set.multi_value_answer(true);
    }
    for v in values {
        set = set.resource_records(ResourceRecord::builder().value(v).build().unwrap());
    }
    change(cp, ChangeAction::Delete, set.build().unwrap());
}

fn change(
    cp: &ControlPlane,
    action: aws_sdk_route53::types::ChangeAction,
    set: aws_sdk_route53::types::ResourceRecordSet,
) {
    use aws_sdk_route53::types::*;
    block_on(
        cp.route53
            .change_resource_record_sets()
            .hosted_zone_id(&cp.zone_id)
            .change_batch(
                ChangeBatch::builder()
                    .changes(
                        Change::builder()
                            .action(action)
                            .resource_record_set(set)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send(),
    )
    .unwrap();
}

#[test]
fn route53_throttling_is_retried() {
    let mut cp = ControlPlane::start();
    let user_data = cp.publish_spec(&SpecOptions {
        etcd_clusters: vec![],
        ..Default::default()
    });
    cp.add_node(&user_data, ZONE);
    let is_change = |s: &nodewright_e2e::front::Seen| {
        s.method == "POST" && s.path.trim_end_matches('/').ends_with("/rrset")
    };
    cp.front.fail(
        Some(2),
        is_change,
        Canned::route53_error(400, "Throttling", "Rate exceeded"),
    );
    cp.front.fail(
        Some(1),
        is_change,
        Canned::route53_error(
            400,
            "PriorRequestNotComplete",
            "The request was rejected because Route 53 was still processing a prior request.",
        ),
    );
    cp.nodes[0]
        .agent
        .run(&["boot", "--deadline", "60"])
        .expect_code(0);
    let statuses: Vec<u16> = cp
        .front
        .log()
        .iter()
        .filter(|l| l.method == "POST" && l.path.contains("/rrset"))
        .map(|l| l.status)
        .collect();
    assert_eq!(statuses, [400, 400, 400, 200], "{statuses:?}");
    assert_eq!(ids(&cp.records(API)), [cp.nodes[0].instance_id.clone()]);
}

#[test]
fn hosts_and_none_modes_write_the_fenced_block() {
    if !is_root() {
        eprintln!("skipped: needs root (loop devices)");
        return;
    }
    for mode in ["hosts", "none"] {
        let mut cp = ControlPlane::start();
        for member in ["a", "b"] {
            let disk = LoopDisk::new(32);
            disk.format_with(&[]);
            cp.add_volume("main", member, "a,b", ZONE, CLUSTER, Some(disk));
        }
        // A volume of another cluster, attached elsewhere: never in the block.
        let stranger = cp.launch(ZONE, false);
        let other = cp.add_volume("main", "a", "a,b", ZONE, "dev.example.com", None);
        block_on(
            cp.ec2
                .attach_volume()
                .volume_id(&other)
                .instance_id(&stranger)
                .device("/dev/xvdk")
                .send(),
        )
        .unwrap();
        let user_data = cp.publish_spec(&SpecOptions {
            dns_mode: mode,
            load_balancer_ips: vec!["10.9.0.10", "10.9.0.11"],
            ..Default::default()
        });
        cp.add_node(&user_data, ZONE);
        cp.add_node(&user_data, ZONE);
        std::fs::create_dir_all(cp.nodes[0].agent.path("/etc")).unwrap();
        std::fs::write(
            cp.nodes[0].agent.path("/etc/hosts"),
            "127.0.0.1 localhost\n",
        )
        .unwrap();
        for node in &cp.nodes {
            node.agent.run(&["boot", "--deadline", "30"]).expect_code(0);
        }
        // The first node learns the second one's member on its next round.
        cp.nodes[0]
            .agent
            .run(&["watch", "--rounds", "1", "--no-health", "--deadline", "30"])
            .expect_code(0);
        let hosts = std::fs::read_to_string(cp.nodes[0].agent.path("/etc/hosts")).unwrap();
        assert!(
            hosts.starts_with("127.0.0.1 localhost\n# BEGIN nodewright"),
            "{hosts}"
        );
        let stranger_ip = cp.private_ip(&stranger).to_string();
        assert!(!hosts.contains(&stranger_ip), "{hosts}");
        let mut peers = Vec::new();
        for node in &cp.nodes {
            let rec: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(node.agent.path("/var/lib/nodewright/control-plane.json"))
                    .unwrap(),
            )
            .unwrap();
            let member = rec["etcdMembers"]["main"]["member"]
                .as_str()
                .unwrap()
                .to_owned();
            let line = format!("{}\tetcd-{member}.internal.{CLUSTER}\n", node.private_ip);
            assert!(
                hosts.contains(&line),
                "{mode}: missing {line:?} in\n{hosts}"
            );
            peers.push(node.private_ip.to_string());
            let api_line = format!("{}\t{API}\n", node.private_ip);
            assert_eq!(
                hosts.contains(&api_line),
                mode == "hosts",
                "{mode}:\n{hosts}"
            );
        }
        if mode == "none" {
            assert!(
                hosts.contains(&format!("10.9.0.10\t{API}\n10.9.0.11\t{API}\n")),
                "{hosts}"
            );
        }
    }
}
