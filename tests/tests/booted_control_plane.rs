//! The HA control plane booted for real (issue 8, tests 2 and 3): three control-plane
//! nodes boot the baked image at once, each claims a distinct etcd volume from the
//! emulator, formats it once, mounts it, publishes its names in Route53 and starts its
//! etcd member (Debian's etcd, `etcd.mode: systemd`) with the certificates it issued
//! from the state store's etcd CA; the three form one cluster. Then one node is
//! terminated and a new instance takes its volume, finds the data and rejoins as the
//! same member. Last, a worker whose role has no S3 access bootstraps through
//! controller-shim running on those nodes: it gets its spec and its kubelet certificate
//! (test 4). See tests/src/ha.rs for the set-up.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::{Duration, Instant};

use nodewright::model::{kubelet, pki_paths as pki};
use nodewright_e2e::ha::{self, HaControlPlane, etcdctl_ok, peer_name, wait_cluster_healthy};
use nodewright_e2e::ha_backup;
use nodewright_e2e::node::{Node, sh};

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// How many times the agent on `node` formatted a volume, over all its boots.
fn formats(node: &Node) -> usize {
    node.journal("nodewright.service")
        .iter()
        .filter(|e| e.message.contains("formatting a blank etcd volume"))
        .count()
}

/// The member names and ids etcd lists, by name.
fn members(node: &Node) -> BTreeMap<String, String> {
    let listed = etcdctl_ok(node, &["member", "list", "--write-out=simple"]);
    listed
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(", ").collect();
            assert_eq!(fields[1], "started", "{line}");
            (fields[2].to_owned(), fields[0].to_owned())
        })
        .collect()
}

/// The filesystem UUID on a volume's loop device, read on the machine.
fn filesystem_uuid(device: &std::path::Path) -> String {
    let output = std::process::Command::new("blkid")
        .args(["-o", "value", "-s", "UUID"])
        .arg(device)
        .output()
        .unwrap();
    text(&output)
}

#[test]
fn control_plane_forms_etcd_keeps_its_data_through_a_replacement_and_bootstraps_a_worker() {
    let Some(mut cp) = HaControlPlane::start() else {
        return;
    };
    // --- Test 2: three nodes boot at once.
    let started = Instant::now();
    let mut nodes: Vec<Node> = (0..3).map(|_| cp.launch()).collect();
    for node in &nodes {
        ha::wait_converged(node);
    }
    eprintln!(
        "three control-plane nodes converged in {:?}",
        started.elapsed()
    );

    // Each claimed a distinct volume, formatted it once and mounted it.
    let mut member_of = BTreeMap::new();
    for node in &nodes {
        let instance = node.instance();
        let (volume, member) = cp
            .volume_of(&instance.instance_id)
            .unwrap_or_else(|| panic!("{} holds no volume", instance.instance_id));
        assert_eq!(formats(node), 1, "{} formatted {volume} once", node.name());
        let mount = format!("/mnt/etcd-main-{member}");
        let source = sh(node, &format!("findmnt -n -o SOURCE,FSTYPE {mount}"));
        assert!(source.starts_with("/dev/nvme1n1"), "{mount}: {source}");
        assert!(source.ends_with("ext4"), "{mount}: {source}");
        assert!(
            member_of
                .insert(instance.instance_id.clone(), member)
                .is_none(),
            "two volumes on one node"
        );
    }
    let claimed: BTreeSet<&String> = member_of.values().collect();
    assert_eq!(claimed.len(), 3, "three distinct members: {member_of:?}");

    // Names: one record per member, and the API name on every node.
    let ip_of: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| {
            (
                n.instance().instance_id,
                n.instance().private_ip.to_string(),
            )
        })
        .collect();
    for (instance, member) in &member_of {
        assert_eq!(
            cp.records(&peer_name(member)),
            vec![(Some(instance.clone()), vec![ip_of[instance].clone()])],
            "the record of etcd member {member}"
        );
    }
    let api: Vec<(Option<String>, Vec<String>)> = ip_of
        .iter()
        .map(|(id, ip)| (Some(id.clone()), vec![ip.clone()]))
        .collect();
    assert_eq!(cp.records(&format!("api.internal.{}", ha::CLUSTER)), api);
    // Those names resolve on the nodes (the VPC resolver answers from Route53).
    let (first_instance, first_member) = member_of.iter().next().unwrap();
    let resolved = sh(
        &nodes[2],
        &format!("getent ahostsv4 {}", peer_name(first_member)),
    );
    assert!(resolved.starts_with(&ip_of[first_instance]), "{resolved}");
    let api_addresses: BTreeSet<String> = sh(
        &nodes[0],
        &format!(
            "getent ahostsv4 api.internal.{} | cut -d' ' -f1",
            ha::CLUSTER
        ),
    )
    .lines()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        api_addresses,
        ip_of.values().cloned().collect::<BTreeSet<_>>(),
        "the API name answers every control-plane node"
    );
    let unknown = nodes[0].exec(&["getent", "hosts", "etcd-z.internal.prod.example.com"]);
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "an unknown name resolves: {unknown:?}"
    );

    // etcd runs from the rendered unit with the certificates the node issued.
    for node in &nodes {
        let status = node.unit("etcd-main.service").unwrap();
        assert_eq!(
            (status.active_state.as_str(), status.sub_state.as_str()),
            ("active", "running"),
            "{}",
            node.journal_text("etcd-main.service")
        );
        let member = &member_of[&node.instance().instance_id];
        let server = pki::etcd_server_cert("main");
        let checked = sh(
            node,
            &format!(
                "openssl verify -CAfile {} {server} && openssl x509 -noout -ext subjectAltName -in {server}",
                pki::ETCD_CA_CERT
            ),
        );
        assert!(
            checked.contains(&format!("DNS:{}", peer_name(member))),
            "{checked}"
        );
        assert!(
            checked.contains(&format!(
                "IP Address:{}",
                ip_of[&node.instance().instance_id]
            )),
            "{checked}"
        );
        assert_eq!(
            std::fs::read_to_string(node.path(pki::ETCD_CA_CERT)).unwrap(),
            cp.pki.etcd.cert_pem,
            "the etcd CA is the state store's"
        );
    }

    // One healthy cluster of three; a key written through one is read through another.
    let health = wait_cluster_healthy(&nodes[0]);
    eprintln!(
        "etcd healthy on three members {:?} after the launch",
        started.elapsed()
    );
    let endpoints: Vec<String> = ha::MEMBERS
        .iter()
        .map(|m| format!("https://{}:{}", peer_name(m), ha::ETCD_CLIENT_PORT))
        .collect();
    assert_eq!(health.keys().cloned().collect::<Vec<_>>(), endpoints);
    let before = members(&nodes[0]);
    assert_eq!(
        before.keys().map(String::as_str).collect::<Vec<_>>(),
        ha::MEMBERS.to_vec()
    );
    assert_eq!(
        etcdctl_ok(
            &nodes[0],
            &["put", "/nodewright/proof", "written-via-node-1"]
        ),
        "OK"
    );
    assert_eq!(
        etcdctl_ok(
            &nodes[1],
            &["get", "/nodewright/proof", "--print-value-only"]
        ),
        "written-via-node-1"
    );

    // --- Test 3: the first node is terminated; a new instance takes its place.
    let old = nodes.remove(0);
    let old_instance = old.instance().instance_id;
    let old_member = member_of[&old_instance].clone();
    let (volume, _) = cp.volume_of(&old_instance).unwrap();
    let device = cp.volume_device(&volume);
    let uuid = filesystem_uuid(&device);
    assert!(!uuid.is_empty(), "{volume} has a filesystem");
    cp.terminate(old);
    assert_eq!(
        cp.fidelity.attached_to(&volume),
        None,
        "{volume} detached with the instance"
    );

    let started = Instant::now();
    let new = cp.launch();
    let new_instance = new.instance().instance_id;
    ha::wait_converged(&new);
    eprintln!("the replacement converged in {:?}", started.elapsed());
    assert_eq!(
        cp.volume_of(&new_instance),
        Some((volume.clone(), old_member.clone()))
    );
    assert_eq!(
        formats(&new),
        0,
        "the replacement found the data: no format"
    );
    assert_eq!(filesystem_uuid(&device), uuid, "the same filesystem");
    // The same member rejoined (same id), not a new one; the data is there.
    let health = wait_cluster_healthy(&new);
    assert_eq!(health.keys().cloned().collect::<Vec<_>>(), endpoints);
    assert_eq!(members(&new), before, "the members are the ones of before");
    assert_eq!(
        etcdctl_ok(&new, &["get", "/nodewright/proof", "--print-value-only"]),
        "written-via-node-1"
    );
    // DNS no longer lists the old instance: its member's name is the new one's.
    let new_ip = new.instance().private_ip.to_string();
    assert_eq!(
        cp.records(&peer_name(&old_member)),
        vec![(Some(new_instance.clone()), vec![new_ip.clone()])]
    );
    let api = cp.records(&format!("api.internal.{}", ha::CLUSTER));
    assert!(
        api.iter()
            .all(|(id, _)| id.as_deref() != Some(old_instance.as_str())),
        "{api:?}"
    );
    assert!(
        api.iter()
            .any(|(id, values)| id.as_deref() == Some(new_instance.as_str())
                && values == &vec![new_ip.clone()]),
        "{api:?}"
    );
    nodes.push(new);
    // Issue 19: keys written after the replacement, for the backup to carry.
    let keys_revision = ha_backup::put_keys(&nodes[2], BULK, BULK_KEYS, 1024);

    // --- Test 4: a worker bootstraps through controller-shim on the control plane.
    for node in &nodes {
        node.wait_for_unit_within(
            "controller-shim.service",
            "running",
            Duration::from_secs(30),
            |s| s.active_state == "active" && s.sub_state == "running",
        );
    }
    let started = Instant::now();
    let worker = cp.launch_worker();
    worker.wait_for_unit_within(
        "nodewright.service",
        "active after a successful run",
        Duration::from_secs(120),
        |s| s.active_state == "active" && s.result == "success",
    );
    eprintln!(
        "the worker converged through the shim in {:?}",
        started.elapsed()
    );
    let instance = worker.instance();
    let state = worker.state().unwrap();
    assert_eq!(state["lastRun"]["result"], "converged", "{state:#}");
    assert_eq!(
        state["lastRun"]["specSha256"],
        nodewright::spec::digest(&cp.worker_spec).as_str(),
        "the spec the shim served is the group's"
    );
    let journal = worker.journal_text("nodewright.service");
    assert!(journal.contains("controller-shim answered"), "{journal}");
    // Its role has no S3 access, and it never needed any.
    assert_eq!(cp.worker_s3_requests(), 0, "the worker called S3");
    // (The denial is real: its session reading the group's spec itself is refused.)
    let denied = cp.read_spec_as(&instance.role.clone().unwrap());
    assert!(denied.contains("AccessDenied"), "{denied}");
    assert_eq!(cp.worker_s3_requests(), 1);
    // The kubelet's client certificate: from the cluster CA, for this node, at the
    // pair its kubeconfig names.
    let kubeconfig = std::fs::read_to_string(worker.path("/var/lib/kubelet/kubeconfig")).unwrap();
    for path in [kubelet::CLIENT_CERT, kubelet::CLIENT_KEY] {
        assert!(kubeconfig.contains(path), "{kubeconfig}");
    }
    let verified = sh(
        &worker,
        &format!(
            "openssl verify -CAfile /etc/kubernetes/pki/ca.crt {cert} && openssl x509 -noout -subject -in {cert}",
            cert = kubelet::CLIENT_CERT
        ),
    );
    assert!(
        verified.contains(&format!("CN = system:node:{}", instance.hostname()))
            && verified.contains("O = system:nodes"),
        "{verified}"
    );
    assert_eq!(
        std::fs::read_to_string(worker.path("/etc/kubernetes/pki/ca.crt")).unwrap(),
        cp.pki.cluster.cert_pem
    );
    let key_matches = sh(
        &worker,
        &format!(
            "openssl x509 -noout -pubkey -in {} | sha256sum; openssl pkey -pubout -in {} | sha256sum",
            kubelet::CLIENT_CERT,
            kubelet::CLIENT_KEY
        ),
    );
    let sums: Vec<&str> = key_matches.lines().collect();
    assert_eq!(
        sums[0], sums[1],
        "the certificate is for the key kept on the node"
    );
    // The kubelet started with them, and the shim recorded the node.
    assert_eq!(sh(&worker, "systemctl is-active kubelet.service"), "active");
    let record = cp
        .shim_record(&instance.instance_id)
        .expect("a bootstrap record");
    assert_eq!(
        record["nodeName"],
        instance.hostname().as_str(),
        "{record:#}"
    );

    // --- Test 5 (issue 19): the timers' backups, every member lost, the restore.
    every_member_lost_the_cluster_is_restored_from_the_timers_backup(&mut cp, nodes, keys_revision);
}

/// The keys written for the backup: 100 of 1 KiB (one transaction's worth).
const BULK: &str = "/registry/bulk/";
const BULK_KEYS: usize = 100;

/// Issue 19 in the booted control plane. The members' timers (real systemd, a
/// one-minute interval from the spec) have backed etcd up since the first boot; the
/// harness waits for a backup holding the keys written after the replacement, checks
/// one backup per interval across the three members and its sha256, then powers every
/// member off, replaces the volumes with blank ones, boots three new instances (they
/// form an empty cluster), runs `nodewright etcd restore` on each, and reads the keys
/// back through every member.
fn every_member_lost_the_cluster_is_restored_from_the_timers_backup(
    cp: &mut HaControlPlane,
    nodes: Vec<Node>,
    keys_revision: i64,
) {
    let started = Instant::now();
    let moto = &cp.fleet.moto;
    let name = ha_backup::wait_for_backup(moto, keys_revision, Duration::from_secs(150));
    eprintln!(
        "a backup at revision {keys_revision} or later was in the store {:?} after the worker phase",
        started.elapsed()
    );
    // Every member's timer runs; all rounds are the timers' (the test starts none).
    for node in &nodes {
        assert_eq!(
            sh(
                node,
                "systemctl is-active nodewright-etcd-backup-main.timer"
            ),
            "active"
        );
    }
    // One backup per interval slot, whichever member led.
    let complete = ha_backup::complete_backups(moto);
    let mut slots = BTreeMap::new();
    for backup in &complete {
        if let Some(earlier) = slots.insert(ha_backup::minute_of(backup), backup) {
            panic!("two backups in one interval: {earlier} and {backup} (all: {complete:?})");
        }
    }
    // That slot's round ran on every member (each timer fires within 20 s of the
    // minute): exactly one took the backup, the others found nothing to do.
    let slot = ha_backup::minute_of(&name).to_owned();
    let deadline = Instant::now() + Duration::from_secs(45);
    let in_slot = loop {
        let in_slot: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                ha_backup::backup_rounds(n)
                    .remove(&slot)
                    .unwrap_or_default()
            })
            .collect();
        if in_slot.iter().all(|rounds| !rounds.is_empty()) {
            break in_slot;
        }
        assert!(
            Instant::now() < deadline,
            "not every member ran the round of {slot}: {in_slot:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let all: Vec<&String> = in_slot.iter().flatten().collect();
    assert_eq!(all.len(), 3, "one round per member in {slot}: {all:?}");
    let takers: Vec<&&String> = all.iter().filter(|m| m.contains(" taken (")).collect();
    assert_eq!(takers.len(), 1, "one member took the backup: {all:?}");
    assert!(takers[0].contains(&format!("/{name}/ taken")), "{all:?}");
    assert_eq!(
        all.iter().filter(|m| m.contains("nothing to do")).count(),
        2,
        "{all:?}"
    );
    // Over the whole run, every backup any member says it took is in the store, one
    // per slot.
    let mut taken = Vec::new();
    for node in &nodes {
        for round in ha_backup::backup_rounds(node).into_values().flatten() {
            if let Some(backup) = round
                .split_whitespace()
                .nth(4)
                .filter(|_| round.contains(" taken ("))
            {
                let backup = backup.trim_end_matches('/').rsplit('/').next().unwrap();
                assert!(
                    complete.iter().any(|c| c == backup),
                    "{round}: {complete:?}"
                );
                taken.push(ha_backup::minute_of(backup).to_owned());
            }
        }
    }
    let distinct: BTreeSet<&String> = taken.iter().collect();
    assert_eq!(
        distinct.len(),
        taken.len(),
        "two members backed up one slot: {taken:?}"
    );

    // Its sha256, record and metadata agree, and the snapshot inside holds the keys.
    let (data, metadata) = ha_backup::backup_object(moto, &name, ha_backup::DATA_FILE);
    let (record, _) = ha_backup::backup_object(moto, &name, ha_backup::RECORD_FILE);
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(
        record["sha256"],
        nodewright_e2e::assetkit::sha256(&data).as_str(),
        "{record:#}"
    );
    assert_eq!(record["size"], data.len() as u64);
    assert_eq!(record["cluster"], ha::CLUSTER);
    assert_eq!(record["etcdCluster"], "main");
    assert_eq!(record["members"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(
        metadata.get("revision"),
        Some(&ha_backup::revision_of(&name).to_string())
    );
    let snapshot = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(snapshot.path(), ha_backup::gunzip(&data)).unwrap();
    let status = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(snapshot.path())
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|e| panic!("snapshot status: {e}: {status:?}"));
    assert!(
        status["revision"].as_i64().unwrap() >= keys_revision,
        "{status}"
    );
    assert!(
        status["totalKey"].as_u64().unwrap() > BULK_KEYS as u64,
        "{status}"
    );
    // While the cluster has quorum and data, the restore is refused (exit 2, until
    // --force) and changes nothing: etcd still runs on its data.
    let refused = ha_backup::operator_nodewright(
        &nodes[0],
        &format!("etcd restore --cluster main --backup {name}"),
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("has quorum") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        sh(&nodes[0], "systemctl is-active etcd-main.service"),
        "active"
    );
    assert_eq!(ha_backup::count_keys(&nodes[0], BULK), BULK_KEYS as i64);
    // A write after the backup: lost by the restore, as the runbook says.
    assert_eq!(
        etcdctl_ok(&nodes[0], &["put", "/nodewright/after-backup", "lost"]),
        "OK"
    );

    // Every member lost: powered off, its volume replaced by a blank one.
    let lost = Instant::now();
    for node in nodes {
        cp.terminate(node);
    }
    cp.replace_volumes_with_blank_ones();
    let nodes: Vec<Node> = (0..3).map(|_| cp.launch()).collect();
    for node in &nodes {
        ha::wait_converged(node);
        assert_eq!(
            formats(node),
            1,
            "{} formatted its blank volume",
            node.name()
        );
    }
    wait_cluster_healthy(&nodes[0]);
    assert_eq!(
        ha_backup::count_keys(&nodes[0], "/"),
        0,
        "the new cluster is empty"
    );
    eprintln!(
        "three new members of an empty cluster in {:?}",
        lost.elapsed()
    );

    // The restore, on each node in turn, of the backup chosen by name.
    let restoring = Instant::now();
    for node in &nodes {
        let output = ha_backup::operator_nodewright(
            node,
            &format!("etcd restore --cluster main --backup {name} --json"),
        );
        assert!(
            output.status.success(),
            "restore on {}: {output:?}
--- etcd
{}",
            node.name(),
            node.journal_text("etcd-main.service")
        );
        let done: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(done["sha256"], record["sha256"], "{done:#}");
        let aside = done["movedAside"].as_str().unwrap();
        assert!(aside.contains("data.before-restore-"), "{done:#}");
        // The empty cluster's data directory is kept on the volume, not removed.
        sh(node, &format!("test -d {aside}/member"));
        assert!(done["notes"].as_array().unwrap().is_empty(), "{done:#}");
    }
    eprintln!("three members restored in {:?}", restoring.elapsed());

    // The keys back through every member, etcd healthy on three, the later write gone.
    for node in &nodes {
        let health = wait_cluster_healthy(node);
        assert_eq!(health.len(), 3);
        assert_eq!(sh(node, "systemctl is-active etcd-main.service"), "active");
        assert_eq!(
            ha_backup::count_keys(node, BULK),
            BULK_KEYS as i64,
            "on {}",
            node.name()
        );
        assert_eq!(
            etcdctl_ok(node, &["get", "/nodewright/proof", "--print-value-only"]),
            "written-via-node-1"
        );
        assert_eq!(ha_backup::count_keys(node, "/nodewright/after-backup"), 0);
    }
    // The restore run again on a member that is back: refused (exit 2), nothing done.
    let again = ha_backup::operator_nodewright(
        &nodes[1],
        &format!("etcd restore --cluster main --backup {name}"),
    );
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already runs the cluster restored"),
        "{again:?}"
    );
    assert_eq!(ha_backup::count_keys(&nodes[1], BULK), BULK_KEYS as i64);
    let listed = members(&nodes[0]);
    assert_eq!(
        listed.keys().map(String::as_str).collect::<Vec<_>>(),
        ha::MEMBERS.to_vec()
    );
    eprintln!(
        "issue 19's phase took {:?} (backup wait, loss, restore, checks)",
        started.elapsed()
    );
}
