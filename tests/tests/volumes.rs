//! etcd volumes against the emulator with the fidelity layer, loop devices as the
//! volumes. Needs root (losetup, mknod, mount): skipped with a reason otherwise.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::Child;

use nodewright_e2e::agent::{Agent, Run};
use nodewright_e2e::cluster::{CLUSTER, ControlPlane, SpecOptions, ZONE};
use nodewright_e2e::disks::{LoopDisk, is_root};
use nodewright_e2e::tree::snapshot;

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (loop devices, mknod, mount)");
            return;
        }
    };
}

/// A PATH directory whose `mkfs.ext4` logs each call, then runs the real one.
fn mkfs_counter() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mkfs.log");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> {}\nexec /usr/sbin/mkfs.ext4 \"$@\"\n",
        log.display()
    );
    let shim = dir.path().join("mkfs.ext4");
    std::fs::write(&shim, script).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&shim).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (dir, log)
}

fn with_counter(agent: &mut Agent, dir: &Path) {
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    agent.set_env("PATH", &path);
}

fn mkfs_calls(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn record(agent: &Agent) -> serde_json::Value {
    let text = std::fs::read_to_string(agent.path("/var/lib/nodewright/control-plane.json"))
        .unwrap_or_else(|e| panic!("no control-plane record: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn wait_all(children: Vec<Child>) -> Vec<Run> {
    children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            Run {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        })
        .collect()
}

fn spawn(agent: &Agent, args: &[&str]) -> Child {
    agent
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_volume_with_a_filesystem_is_mounted_never_formatted() {
    require_root!();
    let mut cp = ControlPlane::start();
    let disk = LoopDisk::new(64);
    let uuid = disk.format_with(&[("member.txt", "etcd data of member a\n")]);
    let volume = cp.add_volume("main", "a", "a,b,c", ZONE, CLUSTER, Some(disk));
    let user_data = cp.publish_spec(&SpecOptions {
        dns_mode: "",
        ..Default::default()
    });
    let n = cp.add_node(&user_data, ZONE);
    let (shim, log) = mkfs_counter();
    with_counter(&mut cp.nodes[n].agent, shim.path());
    let agent = &cp.nodes[n].agent;

    // plan first: it names the volume it would claim, and changes nothing anywhere.
    let before = snapshot(agent.root());
    let plan = agent.run(&["plan", "--deadline", "20"]);
    plan.expect_code(0);
    assert!(
        plan.stdout
            .contains(&format!("would claim {volume} as member a of main")),
        "{}",
        plan.stdout
    );
    assert_eq!(before, snapshot(agent.root()), "plan wrote something");
    assert!(
        !cp.front
            .log()
            .iter()
            .any(|l| l.action.as_deref() == Some("AttachVolume")),
        "plan attached a volume"
    );

    let boot = agent.run(&["boot", "--deadline", "30"]);
    boot.expect_code(0);
    let mount = agent.path("/mnt/etcd-main-a");
    assert_eq!(
        std::fs::read_to_string(mount.join("member.txt")).unwrap(),
        "etcd data of member a\n",
        "the file on the volume is intact"
    );
    assert_eq!(
        cp.disks[&volume].mount_points(),
        std::slice::from_ref(&mount)
    );
    assert_eq!(cp.disks[&volume].uuid().unwrap(), uuid, "never formatted");
    assert_eq!(mkfs_calls(&log), 0, "mkfs never ran");
    assert_eq!(cp.holder(&volume).unwrap(), cp.nodes[n].instance_id);
    let rec = record(agent);
    assert_eq!(rec["etcdMembers"]["main"]["member"], "a");
    assert_eq!(rec["etcdMembers"]["main"]["volumeId"], volume.as_str());
    // The mount unit is rendered, and enabled by its wants link.
    let unit =
        std::fs::read_to_string(agent.path("/etc/systemd/system/mnt-etcd\\x2dmain\\x2da.mount"))
            .unwrap();
    assert!(unit.contains("Where=/mnt/etcd-main-a"), "{unit}");
    assert!(
        unit.contains(&format!(
            "What=/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{}",
            volume.replace('-', "")
        )),
        "{unit}"
    );
    assert!(
        agent
            .path("/etc/systemd/system/local-fs.target.wants/mnt-etcd\\x2dmain\\x2da.mount")
            .is_symlink()
    );

    // Again: already attached and mounted; nothing is claimed, formatted or mounted.
    let again = agent.run(&["boot", "--deadline", "30"]);
    again.expect_code(0);
    assert_eq!(cp.disks[&volume].mount_points(), [mount]);
    assert_eq!(mkfs_calls(&log), 0);
    let status = agent.run(&["status"]);
    assert!(
        status.stdout.contains(&format!("member a on {volume}")),
        "{}",
        status.stdout
    );
}

#[test]
fn a_blank_volume_is_formatted_exactly_once_even_when_two_runs_overlap() {
    require_root!();
    let mut cp = ControlPlane::start();
    let volume = cp.add_volume("main", "b", "a,b,c", ZONE, CLUSTER, Some(LoopDisk::new(64)));
    let user_data = cp.publish_spec(&SpecOptions {
        dns_mode: "",
        ..Default::default()
    });
    let n = cp.add_node(&user_data, ZONE);
    let (shim, log) = mkfs_counter();
    with_counter(&mut cp.nodes[n].agent, shim.path());
    let agent = &cp.nodes[n].agent;
    let runs = wait_all(vec![
        spawn(agent, &["boot", "--deadline", "30"]),
        spawn(agent, &["boot", "--deadline", "30"]),
    ]);
    for run in &runs {
        run.expect_code(0);
    }
    assert_eq!(mkfs_calls(&log), 1, "formatted exactly once");
    let disk = &cp.disks[&volume];
    let uuid = disk.uuid().expect("an ext4 filesystem now");
    let formats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(agent.path("/var/lib/nodewright/etcd-formats.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(formats[&volume]["uuid"], uuid.as_str(), "{formats}");
    assert_eq!(
        disk.mount_points(),
        [agent.path("/mnt/etcd-main-b")],
        "mounted once"
    );
    // A third run finds the filesystem and leaves it be.
    agent.run(&["boot", "--deadline", "30"]).expect_code(0);
    assert_eq!(mkfs_calls(&log), 1);
    assert_eq!(disk.uuid().unwrap(), uuid);
}

#[test]
fn three_nodes_race_for_three_volumes_and_each_gets_exactly_one() {
    require_root!();
    let disks: Vec<LoopDisk> = ["a", "b", "c"]
        .iter()
        .map(|m| {
            let disk = LoopDisk::new(32);
            disk.format_with(&[("member", m)]);
            disk
        })
        .collect();
    let numbers: Vec<(u64, u64)> = disks.iter().map(LoopDisk::number).collect();
    let mut refused = 0;
    for round in 0..20 {
        let mut cp = ControlPlane::start();
        let mut volumes = Vec::new();
        for (i, member) in ["a", "b", "c"].iter().enumerate() {
            volumes.push(cp.add_volume_on("main", member, "a,b,c", ZONE, numbers[i]));
        }
        let user_data = cp.publish_spec(&SpecOptions {
            dns_mode: "",
            ..Default::default()
        });
        for _ in 0..3 {
            cp.add_node(&user_data, ZONE);
        }
        let runs = wait_all(
            cp.nodes
                .iter()
                .map(|node| spawn(&node.agent, &["boot", "--deadline", "30"]))
                .collect(),
        );
        for (i, run) in runs.iter().enumerate() {
            assert_eq!(run.code, 0, "round {round}, node {i}: {}", run.stderr);
        }
        let mut claimed = Vec::new();
        for node in &cp.nodes {
            let rec = record(&node.agent);
            let member = rec["etcdMembers"]["main"]["member"]
                .as_str()
                .unwrap()
                .to_owned();
            let volume = rec["etcdMembers"]["main"]["volumeId"]
                .as_str()
                .unwrap()
                .to_owned();
            // The node holds that volume in EC2, and its data is the member's.
            assert_eq!(
                cp.holder(&volume).as_deref(),
                Some(node.instance_id.as_str())
            );
            let on_disk = std::fs::read_to_string(
                node.agent.path(&format!("/mnt/etcd-main-{member}/member")),
            )
            .unwrap();
            assert_eq!(
                on_disk, member,
                "round {round}: mounted the member's own volume"
            );
            claimed.push(volume);
        }
        claimed.sort();
        let mut all = volumes.clone();
        all.sort();
        assert_eq!(claimed, all, "round {round}: one each, all distinct");
        refused += cp.fidelity.refused_attaches();
        cp.unmount_all();
    }
    eprintln!("AttachVolume refused with VolumeInUse {refused} times over 20 rounds");
    assert!(refused > 0, "the nodes never raced for a volume");
    drop(disks);
}

/// Every (action, VolumeId) the agents sent.
fn volume_calls(cp: &ControlPlane) -> std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> {
    let calls: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let sink = calls.clone();
    cp.front.hook(move |seen| {
        if let (Some(action), Some(volume)) = (seen.action(), seen.param("VolumeId")) {
            sink.lock().unwrap().push((action, volume));
        }
        None
    });
    calls
}

#[test]
fn wrong_cluster_other_zone_and_root_volumes_are_never_touched() {
    require_root!();
    let mut cp = ControlPlane::start();
    let wrong_cluster = cp.add_volume(
        "main",
        "a",
        "a,b,c",
        ZONE,
        "dev.example.com",
        Some(LoopDisk::new(32)),
    );
    let other_zone = cp.add_volume(
        "main",
        "b",
        "a,b,c",
        "us-east-1b",
        CLUSTER,
        Some(LoopDisk::new(32)),
    );
    let good = cp.add_volume("main", "c", "a,b,c", ZONE, CLUSTER, Some(LoopDisk::new(32)));
    let user_data = cp.publish_spec(&SpecOptions {
        dns_mode: "",
        ..Default::default()
    });
    let n = cp.add_node(&user_data, ZONE);
    let root_volume = {
        let out = nodewright_e2e::runtime::block_on(
            cp.ec2
                .describe_volumes()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("attachment.instance-id")
                        .values(&cp.nodes[n].instance_id)
                        .build(),
                )
                .send(),
        )
        .unwrap();
        out.volumes()[0].volume_id().unwrap().to_owned()
    };
    let calls = volume_calls(&cp);
    cp.nodes[n]
        .agent
        .run(&["boot", "--deadline", "30"])
        .expect_code(0);
    let touched: Vec<(String, String)> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(action, _)| action != "DescribeVolumes")
        .cloned()
        .collect();
    assert_eq!(touched, [("AttachVolume".to_owned(), good.clone())]);
    for untouched in [&wrong_cluster, &other_zone] {
        assert_eq!(cp.holder(untouched), None);
        assert!(cp.disks[untouched].uuid().is_none(), "never formatted");
    }
    assert_eq!(
        cp.holder(&root_volume).as_deref(),
        Some(cp.nodes[n].instance_id.as_str())
    );
    assert_eq!(
        record(&cp.nodes[n].agent)["etcdMembers"]["main"]["member"],
        "c"
    );
}

#[test]
fn a_volume_with_a_partition_table_is_refused_and_left_alone() {
    require_root!();
    let mut cp = ControlPlane::start();
    let disk = LoopDisk::new(32);
    disk.partition();
    let volume = cp.add_volume("main", "a", "a", ZONE, CLUSTER, Some(disk));
    let user_data = cp.publish_spec(&SpecOptions {
        dns_mode: "",
        ..Default::default()
    });
    let n = cp.add_node(&user_data, ZONE);
    let run = cp.nodes[n].agent.run(&["boot", "--deadline", "30"]);
    run.expect_code(5);
    assert!(
        run.stderr.contains(&volume) && run.stderr.contains("partition table (dos)"),
        "{}",
        run.stderr
    );
    assert!(cp.disks[&volume].mount_points().is_empty());
    let probe = std::process::Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "PTTYPE"])
        .arg(cp.disks[&volume].device())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        "dos",
        "still only a partition table"
    );
}

#[test]
fn a_volume_attached_to_a_stopped_instance_is_reported_and_taken_only_when_allowed() {
    require_root!();
    let mut cp = ControlPlane::start();
    let disk = LoopDisk::new(32);
    disk.format_with(&[("member", "a")]);
    let volume = cp.add_volume("main", "a", "a", ZONE, CLUSTER, Some(disk));
    let old = cp.launch(ZONE, true);
    nodewright_e2e::runtime::block_on(
        cp.ec2
            .attach_volume()
            .volume_id(&volume)
            .instance_id(&old)
            .device("/dev/xvdu")
            .send(),
    )
    .unwrap();
    nodewright_e2e::runtime::block_on(cp.ec2.stop_instances().instance_ids(&old).send()).unwrap();

    let user_data = cp.publish_spec(&SpecOptions {
        dns_mode: "",
        attach_deadline: 10,
        ..Default::default()
    });
    let n = cp.add_node(&user_data, ZONE);
    let calls = volume_calls(&cp);
    let run = cp.nodes[n].agent.run(&["boot", "--deadline", "30"]);
    run.expect_code(5);
    let expected =
        format!("etcd volume {volume} (member a of main) is attached to {old} (stopped)");
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(run.stderr.contains("forceDetach"), "{}", run.stderr);
    let status = cp.nodes[n].agent.run(&["status"]);
    assert!(
        status.stdout.contains("Waiting for etcd volume main") && status.stdout.contains(&expected),
        "{}",
        status.stdout
    );
    assert!(
        !calls
            .lock()
            .unwrap()
            .iter()
            .any(|(a, _)| a == "DetachVolume" || a == "AttachVolume"),
        "nothing was detached or attached"
    );
    assert_eq!(cp.holder(&volume).as_deref(), Some(old.as_str()));

    // Allowed: force-detached from the stopped instance and claimed, data intact.
    let user_data = cp.publish_spec(&SpecOptions {
        dns_mode: "",
        force_detach: true,
        ..Default::default()
    });
    cp.nodes[n].imds.set_user_data(&user_data);
    cp.nodes[n]
        .agent
        .run(&["boot", "--deadline", "30"])
        .expect_code(0);
    assert!(
        calls
            .lock()
            .unwrap()
            .contains(&("DetachVolume".to_owned(), volume.clone()))
    );
    assert_eq!(
        cp.holder(&volume).as_deref(),
        Some(cp.nodes[n].instance_id.as_str())
    );
    let data = std::fs::read_to_string(cp.nodes[n].agent.path("/mnt/etcd-main-a/member")).unwrap();
    assert_eq!(data, "a");
}

#[test]
fn a_grown_volume_grows_its_filesystem() {
    require_root!();
    let mut cp = ControlPlane::start();
    // Big enough for the kernel's online resize (it refuses some tiny filesystems).
    let disk = LoopDisk::new(256);
    disk.format_with(&[("member", "a")]);
    let volume = cp.add_volume("main", "a", "a", ZONE, CLUSTER, Some(disk));
    let user_data = cp.publish_spec(&SpecOptions {
        dns_mode: "",
        ..Default::default()
    });
    let n = cp.add_node(&user_data, ZONE);
    cp.nodes[n]
        .agent
        .run(&["boot", "--deadline", "30"])
        .expect_code(0);
    let mount = cp.nodes[n].agent.path("/mnt/etcd-main-a");
    let size = |path: &Path| {
        nix::sys::statvfs::statvfs(path)
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap()
    };
    let before = size(&mount);
    // EBS: ModifyVolume, then the device grows.
    nodewright_e2e::runtime::block_on(cp.ec2.modify_volume().volume_id(&volume).size(2).send())
        .unwrap();
    cp.disks[&volume].grow(768);
    let run = cp.nodes[n]
        .agent
        .run(&["watch", "--rounds", "1", "--no-health", "--deadline", "30"]);
    run.expect_code(0);
    assert_eq!(std::fs::read_to_string(mount.join("member")).unwrap(), "a");
    let report = record(&cp.nodes[n].agent)["report"].to_string();
    if has_cap_sys_resource() {
        let after = size(&mount);
        assert!(after > before * 2, "{before} → {after}");
        assert!(report.contains("grew the filesystem"), "{report}");
    } else {
        // This sandbox withholds CAP_SYS_RESOURCE, which the kernel's online resize
        // needs: the agent saw the bigger device, tried, and says why it could not.
        eprintln!("no CAP_SYS_RESOURCE here: checking the attempt, not the growth");
        assert!(
            report.contains("could not grow the filesystem from")
                && report.contains("Permission denied"),
            "{report}"
        );
        assert_eq!(size(&mount), before);
    }
}

/// Whether this process may resize a mounted ext4 filesystem (CAP_SYS_RESOURCE).
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    eff & (1 << 24) != 0
}

#[test]
fn volumes_are_found_across_describe_volumes_pages() {
    require_root!();
    let mut cp = ControlPlane::start();
    cp.fidelity.set_page_size(1);
    // Two volumes held by running instances, then the free one: it is on the last page.
    for member in ["a", "b"] {
        let volume = cp.add_volume("main", member, "a,b,c", ZONE, CLUSTER, None);
        let holder = cp.launch(ZONE, true);
        nodewright_e2e::runtime::block_on(
            cp.ec2
                .attach_volume()
                .volume_id(&volume)
                .instance_id(&holder)
                .device("/dev/xvdu")
                .send(),
        )
        .unwrap();
    }
    let disk = LoopDisk::new(32);
    disk.format_with(&[]);
    let free = cp.add_volume("main", "c", "a,b,c", ZONE, CLUSTER, Some(disk));
    let user_data = cp.publish_spec(&SpecOptions {
        dns_mode: "",
        ..Default::default()
    });
    let n = cp.add_node(&user_data, ZONE);
    let before = cp.fidelity.paged_calls();
    cp.nodes[n]
        .agent
        .run(&["boot", "--deadline", "30"])
        .expect_code(0);
    assert!(
        cp.fidelity.paged_calls() - before >= 3,
        "DescribeVolumes was paged"
    );
    assert_eq!(
        record(&cp.nodes[n].agent)["etcdMembers"]["main"]["volumeId"],
        free.as_str()
    );
}
