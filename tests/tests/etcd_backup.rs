//! etcd backups and restores for real (issue 19): a three-member etcd 3.4 cluster on
//! loopback with TLS and client certificates (tests/src/etcd.rs), the AWS emulator's
//! S3 behind the harness's front (for store faults), and the agent's backup and
//! restore code as the timer and the command run it.
//!
//! - every member runs every round, only the leader backs up: one backup per interval
//!   slot, through a leader change; its sha256, record, etcd-manager meta and object
//!   metadata right, the snapshot inside restorable; retention as etcd-manager's;
//! - the store failing half-way (parts refused, the abort refused too, the meta
//!   refused, nothing listening): an error that names the store, and nothing in the
//!   store that lists as a backup or holds its bytes; the next round succeeds and clears
//!   the upload left behind;
//! - restore refusals, each leaving the member untouched: quorum with data (no
//!   `force`), a backup whose bytes changed, a backup of another cluster or etcd
//!   cluster, an etcd-manager backup not asked for;
//! - every member lost, blank volumes, a new empty cluster formed: each member restores
//!   the latest backup, and the keys come back through every member;
//! - a majority lost: the survivor without quorum restores too, from a backup made by
//!   etcd-manager's method (a gzipped `etcdctl snapshot save`, its meta, no record of
//!   ours), and the writes after that backup are gone.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use nodewright::controlplane::etcd::backup::{self, BackupSettings, Outcome, Trigger};
use nodewright::controlplane::etcd::layout::{
    BackupName, BackupRecord, EtcdManagerMeta, slot_start,
};
use nodewright::controlplane::etcd::record::{self, BackupStatus};
use nodewright::controlplane::etcd::restore::{
    self, RestoreError, RestoreSettings, Which, restored_cluster_id,
};
use nodewright::controlplane::etcd::retention::Retention;
use nodewright::controlplane::etcd::store::{BackupStore, MIN_PART};
use nodewright_e2e::agent::{Agent, json_of};
use nodewright_e2e::etcd::{ETCDCTL, EtcdCluster, ProcessMember, installed};
use nodewright_e2e::front::{AwsFront, Canned, Seen};
use nodewright_e2e::moto::{Moto, sdk_config_for};
use nodewright_e2e::runtime::block_on;

const BUCKET: &str = "nodewright-state";
const PREFIX: &str = "prod.example.com/backups/etcd/main/";
const STORE: &str = "s3://nodewright-state/prod.example.com/backups/etcd/main/";
const CLUSTER: &str = "prod.example.com";
const INTERVAL: Duration = Duration::from_secs(900);

struct World {
    moto: Moto,
    front: AwsFront,
    etcd: EtcdCluster,
}

impl World {
    fn start(members: usize) -> Option<Self> {
        if !installed() {
            return None;
        }
        let moto = Moto::start();
        let front = AwsFront::start(moto.url());
        block_on(moto.s3().create_bucket().bucket(BUCKET).send()).unwrap();
        Some(Self {
            moto,
            front,
            etcd: EtcdCluster::start(members),
        })
    }

    /// The agent's view of the store, through the front.
    fn store(&self) -> BackupStore {
        store_at(&self.front.url())
    }

    fn settings(&self, i: usize) -> BackupSettings {
        BackupSettings {
            cluster: CLUSTER.to_owned(),
            etcd_cluster: "main".to_owned(),
            member: self.etcd.members[i].name.clone(),
            interval: INTERVAL,
            retention: Retention::days(7, 730),
            part_size: MIN_PART,
        }
    }

    fn round(&self, i: usize, trigger: Trigger, now: SystemTime) -> backup::Round {
        block_on(backup::run(
            &self.etcd.client(i),
            &self.store(),
            &self.settings(i),
            trigger,
            now,
        ))
        .unwrap_or_else(|e| panic!("round on member {i}: {e}"))
    }

    fn restore_settings(&self, i: usize, force: bool) -> RestoreSettings {
        RestoreSettings {
            cluster: CLUSTER.to_owned(),
            etcd_cluster: "main".to_owned(),
            member: self.etcd.members[i].name.clone(),
            initial_cluster: self.etcd.initial_cluster(),
            data_dir: self.etcd.members[i].data_dir(),
            restore_tool: ETCDCTL.into(),
            force,
            etcd_manager_backup: false,
        }
    }

    fn restore(
        &self,
        i: usize,
        which: &Which,
        settings: &RestoreSettings,
        now: SystemTime,
    ) -> Result<restore::Restored, RestoreError> {
        let peers: Vec<_> = (0..self.etcd.members.len())
            .map(|p| {
                nodewright::controlplane::etcd::client::EtcdClient::new(
                    &self.etcd.members[p].client_url(),
                    &self.etcd.tls(),
                    Duration::from_secs(3),
                )
                .unwrap()
            })
            .collect();
        let member = ProcessMember {
            cluster: &self.etcd,
            index: i,
        };
        block_on(restore::restore(
            &self.store(),
            which,
            &peers,
            settings,
            &member,
            now,
        ))
    }

    /// Every key under the store prefix.
    fn objects(&self) -> Vec<String> {
        let s3 = self.moto.s3();
        let listed = block_on(s3.list_objects_v2().bucket(BUCKET).prefix(PREFIX).send()).unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(|k| k[PREFIX.len()..].to_owned()))
            .collect()
    }

    /// Multipart uploads S3 still holds under the prefix.
    fn uploads(&self) -> usize {
        let s3 = self.moto.s3();
        let listed = block_on(
            s3.list_multipart_uploads()
                .bucket(BUCKET)
                .prefix(PREFIX)
                .send(),
        )
        .unwrap();
        listed.uploads().len()
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let s3 = self.moto.s3();
        block_on(async {
            let object = s3
                .get_object()
                .bucket(BUCKET)
                .key(format!("{PREFIX}{key}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{key}: {e:?}"));
            object.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    fn put(&self, key: &str, body: &[u8]) {
        self.moto
            .put_object(BUCKET, &format!("{PREFIX}{key}"), body);
    }

    fn record(&self, name: &str) -> BackupRecord {
        serde_json::from_slice(&self.get(&format!("{name}/nodewright-backup.json"))).unwrap()
    }

    /// A copy of backup `from` as `to`, its record changed by `edit` (None: no record).
    fn copy_backup(
        &self,
        from: &str,
        to: &str,
        data: impl Fn(&mut Vec<u8>),
        edit: Option<&dyn Fn(&mut BackupRecord)>,
    ) {
        let mut bytes = self.get(&format!("{from}/etcd.backup.gz"));
        data(&mut bytes);
        self.put(&format!("{to}/etcd.backup.gz"), &bytes);
        if let Some(edit) = edit {
            let mut record = self.record(from);
            record.name = to.to_owned();
            edit(&mut record);
            self.put(
                &format!("{to}/nodewright-backup.json"),
                &serde_json::to_vec(&record).unwrap(),
            );
        }
        self.put(
            &format!("{to}/_etcd_backup.meta"),
            &self.get(&format!("{from}/_etcd_backup.meta")),
        );
    }
}

fn store_at(url: &str) -> BackupStore {
    let s3 = nodewright::cloud::aws::s3_client(&sdk_config_for(url));
    BackupStore::new(s3, STORE, Duration::from_secs(20)).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    nodewright_e2e::assetkit::sha256(bytes)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `etcdctl snapshot status` of snapshot bytes: (revision, total keys).
fn snapshot_status(bytes: &[u8]) -> (i64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.db");
    std::fs::write(&file, bytes).unwrap();
    let output = std::process::Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "--write-out=json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        status["revision"].as_i64().unwrap(),
        status["totalKey"].as_u64().unwrap(),
    )
}

/// The interval slot that starts after the current time: rounds run "in the future" so
/// the slots are fresh.
fn first_slot() -> SystemTime {
    slot_start(SystemTime::now(), INTERVAL) + INTERVAL
}

fn taken(round: &backup::Round) -> Option<&BackupRecord> {
    match &round.outcome {
        Outcome::Taken(record) => Some(record.as_ref()),
        _ => None,
    }
}

#[test]
fn three_members_make_one_backup_per_interval_whoever_leads() {
    let Some(world) = World::start(3) else {
        return;
    };
    let etcd = &world.etcd;
    let base = first_slot();
    // Backups as an older store holds them, and what etcd-manager keeps beside them.
    let old = |age: Duration, n: i64| BackupName::new(base - age, n).to_string();
    let ancient = old(Duration::from_secs(3 * 365 * 86_400), 1);
    let (first_of_hour, second_of_hour) = {
        let hour = slot_start(
            base - Duration::from_secs(2 * 86_400),
            Duration::from_secs(3600),
        );
        (
            BackupName::new(hour + Duration::from_secs(300), 2).to_string(),
            BackupName::new(hour + Duration::from_secs(1200), 3).to_string(),
        )
    };
    let broken = old(Duration::from_secs(2 * 3600), 4);
    let in_progress = old(Duration::from_secs(600), 5);
    for name in [&ancient, &first_of_hour, &second_of_hour] {
        world.put(&format!("{name}/etcd.backup.gz"), b"old");
        world.put(&format!("{name}/_etcd_backup.meta"), b"{}");
    }
    world.put(&format!("{broken}/etcd.backup.gz"), b"cut");
    world.put(&format!("{in_progress}/etcd.backup.gz"), b"being written");
    world.put("control/etcd-cluster-spec", b"{\"memberCount\":3}");

    let mut names = Vec::new();
    let mut stopped = None;
    for slot in 0..3u32 {
        // Through a member that runs: the stopped one may be member 0 (any member can
        // have been the leader).
        let writer = (0..3).find(|&i| Some(i) != stopped).unwrap();
        etcd.put_keys(writer, &format!("/registry/slot{slot}/"), 500, 64);
        let leader = etcd.leader();
        let now = base + INTERVAL * slot + Duration::from_secs(2);
        // Every member's timer fires; only the leader backs up.
        let mut backups = Vec::new();
        for i in 0..3 {
            if Some(i) == stopped {
                continue;
            }
            let round = world.round(
                i,
                Trigger::Interval,
                now + Duration::from_millis(300 * i as u64),
            );
            match &round.outcome {
                Outcome::Taken(record) => backups.push((i, record.clone(), round.removed.clone())),
                Outcome::NotLeader { leader: id } => {
                    assert_ne!(i, leader, "the leader said it was not");
                    assert_ne!(*id, 0);
                }
                Outcome::AlreadyTaken(name) => panic!("slot {slot}: {name} before any"),
            }
        }
        assert_eq!(backups.len(), 1, "slot {slot}: {backups:?}");
        let (taker, record, removed) = backups.pop().unwrap();
        assert_eq!(taker, leader);
        assert_eq!(record.taken_by, etcd.members[leader].name);
        // Later in the slot, every member again: nothing new.
        for i in 0..3 {
            if Some(i) == stopped {
                continue;
            }
            let round = world.round(i, Trigger::Interval, now + INTERVAL / 2);
            assert!(
                taken(&round).is_none(),
                "slot {slot}, member {i}: {round:?}"
            );
        }
        if slot == 1 {
            // The leader goes; the new one finds this slot's backup and takes none.
            etcd.stop_member(leader);
            stopped = Some(leader);
            let next = etcd.leader();
            let round = world.round(next, Trigger::Interval, now + INTERVAL / 2);
            assert_eq!(
                round.outcome,
                Outcome::AlreadyTaken(BackupName::parse(&record.name).unwrap())
            );
        }
        if slot == 0 {
            // etcd-manager's retention on the older ones, and the broken leftover.
            let removed: BTreeSet<String> = removed.iter().map(ToString::to_string).collect();
            let expected: BTreeSet<String> =
                [ancient.clone(), second_of_hour.clone(), broken.clone()].into();
            assert_eq!(removed, expected);
        }
        names.push(record.name.clone());
    }
    etcd.start_member(stopped.unwrap());

    // Exactly one backup per slot, and what was kept of the old ones.
    let objects: BTreeSet<String> = world.objects().into_iter().collect();
    let mut expected: BTreeSet<String> = names
        .iter()
        .flat_map(|n| {
            [
                format!("{n}/etcd.backup.gz"),
                format!("{n}/nodewright-backup.json"),
                format!("{n}/_etcd_backup.meta"),
            ]
        })
        .collect();
    expected.extend([
        format!("{first_of_hour}/etcd.backup.gz"),
        format!("{first_of_hour}/_etcd_backup.meta"),
        format!("{in_progress}/etcd.backup.gz"),
        "control/etcd-cluster-spec".to_owned(),
    ]);
    assert_eq!(objects, expected);

    for (slot, name) in names.iter().enumerate() {
        let record = world.record(name);
        let data = world.get(&format!("{name}/etcd.backup.gz"));
        assert_eq!(record.sha256, sha256(&data), "{name}");
        assert_eq!(record.size, data.len() as u64);
        assert_eq!(
            (record.cluster.as_str(), record.etcd_cluster.as_str()),
            (CLUSTER, "main")
        );
        assert_eq!(record.etcd_version, "3.4.23");
        assert_eq!(record.members, vec!["a", "b", "c"]);
        let slot_time = base + INTERVAL * slot as u32;
        let name_time = BackupName::parse(name).unwrap().time();
        assert!(
            name_time >= slot_time && name_time < slot_time + INTERVAL,
            "{name}"
        );
        // The snapshot inside is etcd's, whole, at the recorded revision, with the keys.
        let snapshot = gunzip(&data);
        assert_eq!(snapshot.len() as u64, record.snapshot_size);
        let (revision, _keys) = snapshot_status(&snapshot);
        assert_eq!(revision, record.revision, "{name}");
        // etcd-manager's meta, which it parses strictly.
        let meta: EtcdManagerMeta =
            serde_json::from_slice(&world.get(&format!("{name}/_etcd_backup.meta"))).unwrap();
        assert_eq!(meta.etcd_version, "3.4.23");
        assert_eq!(meta.cluster_spec.unwrap().member_count, 3);
        let meta_text: serde_json::Value =
            serde_json::from_slice(&world.get(&format!("{name}/_etcd_backup.meta"))).unwrap();
        let fields: BTreeSet<&str> = meta_text
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, ["clusterSpec", "etcdVersion", "timestamp"].into());
        // The object's own metadata says what it is.
        let head = block_on(
            world
                .moto
                .s3()
                .head_object()
                .bucket(BUCKET)
                .key(format!("{PREFIX}{name}/etcd.backup.gz"))
                .send(),
        )
        .unwrap();
        let metadata = head.metadata().unwrap();
        assert_eq!(metadata["cluster"], CLUSTER);
        assert_eq!(metadata["etcd-cluster"], "main");
        assert_eq!(metadata["revision"], record.revision.to_string());
    }
    // Each later backup holds the keys written before it.
    let last = gunzip(&world.get(&format!("{}/etcd.backup.gz", names[2])));
    let first = gunzip(&world.get(&format!("{}/etcd.backup.gz", names[0])));
    assert!(snapshot_status(&last).1 > snapshot_status(&first).1);

    // By hand on a follower: taken whatever the slot.
    let follower = (etcd.leader() + 1) % 3;
    let round = world.round(
        follower,
        Trigger::Now,
        base + INTERVAL * 2 + Duration::from_secs(60),
    );
    let record = taken(&round).expect("a backup by hand");
    assert_eq!(record.taken_by, etcd.members[follower].name);
}

/// An S3 request of the multipart kind `query_has` names (`partNumber=`, `uploadId=`).
fn multipart(seen: &Seen, method: &str, query_has: &str) -> bool {
    seen.method.as_str() == method && seen.query.contains(query_has)
}

#[test]
fn a_store_that_fails_half_way_leaves_nothing_and_the_next_round_succeeds() {
    let Some(world) = World::start(1) else {
        return;
    };
    // ~9 MB of values that compress little: two parts of 5 MiB.
    world.etcd.put_keys(0, "/registry/blob/", 9000, 1000);
    let base = first_slot();
    // The rounds run as the timer runs them: each recorded in the node's state dir.
    let state = tempfile::tempdir().unwrap();
    let recorded = |store: &BackupStore, slot: u32| {
        block_on(record::run_and_record(
            &world.etcd.client(0),
            store,
            &world.settings(0),
            Trigger::Interval,
            state.path(),
            base + INTERVAL * slot,
        ))
    };
    let failure = |slot: u32| {
        let (result, status) = recorded(&world.store(), slot);
        let error = result.expect_err("the round fails");
        // Reported: the record `status` and the watch read says so, with the topic.
        assert_eq!(status.last_round.result, "failed");
        assert_eq!(
            status.last_round.topic.as_deref(),
            Some(record::topic_id(&error))
        );
        assert_eq!(
            BackupStatus::load(state.path(), "main").as_ref(),
            Some(&status)
        );
        (error, status)
    };

    // 1. The first part goes up, then S3 answers 503 to every part: the upload is
    //    aborted, no object appears.
    let parts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = parts.clone();
    world.front.hook(move |seen| {
        (multipart(seen, "PUT", "partNumber=")
            && counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1)
            .then(|| Canned::s3_error(503, "ServiceUnavailable", "harness: S3 is away"))
    });
    let (error, status) = failure(0);
    assert_eq!(status.failures_in_a_row, 1);
    assert_eq!(
        record::topic_id(&error),
        "state-store-unreachable",
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains(STORE) && text.contains("ServiceUnavailable"),
        "{text}"
    );
    assert!(
        parts.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "a part went up first"
    );
    assert_eq!(world.objects(), Vec::<String>::new(), "an object was left");
    assert_eq!(world.uploads(), 0, "the upload was not aborted");

    // 2. The same, and the abort refused too: still no object; S3 keeps an invisible
    //    upload, which the next good round aborts.
    world.front.clear();
    world.front.hook(|seen| {
        (multipart(seen, "PUT", "partNumber=") || multipart(seen, "DELETE", "uploadId="))
            .then(|| Canned::s3_error(503, "ServiceUnavailable", "harness: S3 is away"))
    });
    assert_eq!(failure(1).1.failures_in_a_row, 2);
    assert_eq!(world.objects(), Vec::<String>::new());
    assert_eq!(world.uploads(), 1);

    // 3. The data went up, the meta that makes it a backup is refused: what was
    //    written is taken back.
    world.front.clear();
    world.front.hook(|seen| {
        (seen.method.as_str() == "PUT" && seen.path.ends_with("/_etcd_backup.meta"))
            .then(|| Canned::s3_error(500, "InternalError", "harness: S3 failed"))
    });
    let (error, _) = failure(2);
    assert!(error.to_string().contains("_etcd_backup.meta"), "{error}");
    assert_eq!(world.objects(), Vec::<String>::new());

    // 4. Nothing listening at all.
    let closed = format!("http://127.0.0.1:{}", nodewright_e2e::moto::free_port());
    let (result, status) = recorded(&store_at(&closed), 3);
    let error = result.expect_err("no store");
    assert_eq!(
        record::topic_id(&error),
        "state-store-unreachable",
        "{error}"
    );
    assert_eq!(status.failures_in_a_row, 4);
    let problem = status.problem(base + INTERVAL * 3).expect("a problem");
    for part in [
        "has no backup",
        "4 round(s) failed",
        "state-store-unreachable",
    ] {
        assert!(problem.contains(part), "{part}: {problem}");
    }

    // The next interval, with the store back: one backup, and the stale upload gone
    // (it is older than an hour by the round's clock).
    world.front.clear();
    let began = std::time::Instant::now();
    let (result, status) = recorded(&world.store(), 8);
    let seconds = began.elapsed().as_secs_f64();
    let round = result.unwrap();
    let record = taken(&round).expect("a backup").clone();
    assert_eq!(round.stale_uploads_aborted, 1);
    assert_eq!(status.failures_in_a_row, 0);
    assert_eq!(status.last_round.result, "taken");
    let last = status.last_backup.as_ref().expect("the last backup");
    assert_eq!(
        (last.name.as_str(), last.size, last.revision),
        (
            record.name.as_str(),
            Some(record.size),
            Some(record.revision)
        )
    );
    assert_eq!(status.problem(base + INTERVAL * 8), None);
    eprintln!(
        "backup of 9000 keys: snapshot {} bytes, gzip {} bytes, {} parts, {seconds:.2} s",
        record.snapshot_size,
        record.size,
        record.size.div_ceil(MIN_PART as u64)
    );
    assert_eq!(world.uploads(), 0);
    let data = world.get(&format!("{}/etcd.backup.gz", record.name));
    assert_eq!(sha256(&data), record.sha256);
    assert!(
        record.size > MIN_PART as u64,
        "{} bytes: not two parts",
        record.size
    );
    assert_eq!(world.objects().len(), 3);
}

/// The member's volume as a listing of paths and file digests, to prove it untouched.
fn volume_state(world: &World, i: usize) -> BTreeSet<String> {
    let root = &world.etcd.members[i].volume;
    let mut out = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                stack.push(path);
                out.insert(format!("{rel}/"));
            } else {
                out.insert(rel);
            }
        }
    }
    out
}

#[test]
fn restores_that_must_not_happen_are_refused_and_touch_nothing() {
    let Some(world) = World::start(3) else {
        return;
    };
    let etcd = &world.etcd;
    etcd.put_keys(0, "/registry/pods/", 200, 100);
    let now = first_slot();
    let round = world.round(etcd.leader(), Trigger::Interval, now);
    let good = taken(&round).unwrap().name.clone();
    let later = |s: u64| now + Duration::from_secs(s);

    // Copies of that backup: changed bytes, another cluster, another etcd cluster, and
    // one without our record (as etcd-manager writes them).
    let name = |s: u64| BackupName::new(later(s), 7).to_string();
    let (changed, other_cluster, other_etcd, foreign) = (name(60), name(120), name(180), name(240));
    world.copy_backup(
        &good,
        &changed,
        |b| {
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
        },
        Some(&|_| {}),
    );
    world.copy_backup(
        &good,
        &other_cluster,
        |_| {},
        Some(&|r| r.cluster = "staging.example.com".into()),
    );
    world.copy_backup(
        &good,
        &other_etcd,
        |_| {},
        Some(&|r| r.etcd_cluster = "events".into()),
    );
    world.copy_backup(&good, &foreign, |_| {}, None);

    let before = volume_state(&world, 0);
    let untouched = |what: &str| {
        assert!(etcd.is_running(0), "{what}: etcd was stopped");
        assert_eq!(
            volume_state(&world, 0),
            before,
            "{what}: the volume changed"
        );
        assert_eq!(etcd.get(0, "/registry/pods/7").map(|v| v.len()), Some(100));
    };
    let named = |n: &str| Which::Named(BackupName::parse(n).unwrap());

    // Quorum with data, no force.
    let error = world
        .restore(
            0,
            &named(&good),
            &world.restore_settings(0, false),
            later(300),
        )
        .unwrap_err();
    assert!(error.is_quorum_refusal(), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("has quorum") && text.contains("--force"),
        "{text}"
    );
    untouched("quorum");

    // With force, each bad backup is still refused before anything changes.
    let forced = world.restore_settings(0, true);
    let error = world
        .restore(0, &named(&changed), &forced, later(310))
        .unwrap_err();
    assert!(matches!(error, RestoreError::Digest { .. }), "{error}");
    assert!(error.to_string().contains("sha256 is"), "{error}");
    untouched("changed bytes");

    let error = world
        .restore(0, &named(&other_cluster), &forced, later(320))
        .unwrap_err();
    assert!(
        matches!(error, RestoreError::OtherCluster { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("staging.example.com"), "{error}");
    untouched("another cluster");

    let error = world
        .restore(0, &named(&other_etcd), &forced, later(330))
        .unwrap_err();
    assert!(error.to_string().contains("etcd cluster events"), "{error}");
    untouched("another etcd cluster");

    let error = world
        .restore(0, &named(&foreign), &forced, later(340))
        .unwrap_err();
    assert!(matches!(error, RestoreError::Foreign { .. }), "{error}");
    untouched("an etcd-manager backup not asked for");

    let missing = Which::Named(BackupName::new(later(999), 1));
    let error = world.restore(0, &missing, &forced, later(350)).unwrap_err();
    assert!(matches!(error, RestoreError::Incomplete { .. }), "{error}");
    untouched("no such backup");
}

#[test]
fn every_member_lost_the_cluster_comes_back_from_the_latest_backup() {
    let Some(world) = World::start(3) else {
        return;
    };
    let etcd = &world.etcd;
    etcd.put_keys(1, "/registry/configmaps/", 1000, 200);
    let now = first_slot();
    let round = world.round(etcd.leader(), Trigger::Interval, now);
    let record = taken(&round).unwrap().clone();
    let value = etcd.get(2, "/registry/configmaps/999").unwrap();

    // All three lost: powered off, blank volumes; new members form a new, empty cluster.
    for i in 0..3 {
        etcd.stop_member(i);
        etcd.wipe_member(i);
    }
    for i in 0..3 {
        etcd.start_member(i);
    }
    etcd.wait_healthy();
    assert_eq!(
        etcd.get(0, "/registry/configmaps/999"),
        None,
        "a new, empty cluster"
    );

    // Each member restores the latest backup: the first two from an empty cluster, the
    // last joining the cluster the first two restored.
    let mut restored = Vec::new();
    for i in 0..3 {
        let result = world
            .restore(
                i,
                &Which::Latest,
                &world.restore_settings(i, false),
                now + Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("restoring member {i}: {e}\n{}", etcd.log(i)));
        assert_eq!(result.record.as_ref().unwrap().name, record.name);
        assert_eq!(result.sha256, record.sha256);
        eprintln!("member {i}: {:.2} s; {}", result.seconds, result.quorum);
        restored.push(result);
    }
    assert!(
        restored[0].quorum.contains("empty cluster"),
        "{}",
        restored[0].quorum
    );
    assert!(
        restored[2].quorum.contains("restored from this backup"),
        "{}",
        restored[2].quorum
    );
    // The old (blank-volume) data directories were moved aside, not deleted.
    for (i, result) in restored.iter().enumerate() {
        let aside = result.moved_aside.as_ref().expect("moved aside");
        assert!(aside.join("member").is_dir(), "{}", aside.display());
        assert_eq!(aside.parent(), etcd.members[i].data_dir().parent());
    }
    etcd.wait_healthy();
    for i in 0..3 {
        assert_eq!(
            etcd.get(i, "/registry/configmaps/999").as_deref(),
            Some(value.as_str())
        );
        assert_eq!(
            etcd.get(i, "/registry/configmaps/0").map(|v| v.len()),
            Some(200)
        );
    }
    // The cluster is the one the restore said it would make, with the three members.
    let count = block_on(etcd.client(0).count_keys()).unwrap();
    assert_eq!(count.cluster_id, restored[0].cluster_id);
    assert_eq!(
        restored[0].cluster_id,
        restored_cluster_id(&restored[0].cluster_token, &etcd.initial_cluster())
    );
    let members = block_on(etcd.client(2).members()).unwrap();
    let names: BTreeSet<String> = members.iter().map(|m| m.name.clone()).collect();
    assert_eq!(names, ["a", "b", "c"].map(String::from).into());
    assert_eq!(count.keys, 1000);
    // The step run again on a member that is back: refused, the member untouched.
    let again = world
        .restore(
            1,
            &Which::Latest,
            &world.restore_settings(1, false),
            now + Duration::from_secs(120),
        )
        .unwrap_err();
    assert!(
        matches!(again, RestoreError::AlreadyRestored { .. }),
        "{again}"
    );
    assert!(again.to_string().contains("Nothing was done"), "{again}");
    assert!(etcd.is_running(1));
    assert!(
        !std::fs::read_dir(etcd.members[1].volume.clone())
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("restored-")),
        "no restore left behind"
    );
}

#[test]
fn a_cluster_formed_anew_on_blank_volumes_is_not_backed_up_over_the_store() {
    let Some(world) = World::start(1) else {
        return;
    };
    let etcd = &world.etcd;
    etcd.put_keys(0, "/registry/secrets/", 50, 100);
    let slot = first_slot();
    let older = taken(&world.round(0, Trigger::Interval, slot))
        .unwrap()
        .clone();
    etcd.put_keys(0, "/registry/pods/", 50, 100);
    let newest = taken(&world.round(0, Trigger::Interval, slot + INTERVAL))
        .unwrap()
        .clone();
    assert!(newest.revision > older.revision);

    // Every member lost: the blank volume forms a new cluster (same token and peer
    // names as the lost one, so the same cluster id), empty, at revision 1. The timer's
    // round refuses it, and nothing is written: `latest` stays the real cluster's.
    etcd.stop_member(0);
    etcd.wipe_member(0);
    etcd.start_member(0);
    etcd.wait_healthy();
    let before = world.objects();
    let refused = block_on(backup::run(
        &etcd.client(0),
        &world.store(),
        &world.settings(0),
        Trigger::Interval,
        slot + INTERVAL * 2,
    ))
    .unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains(&format!("behind the store's newest backup {}", newest.name))
            && text.contains("nodewright runbook etcd-restore")
            && text.contains("--now"),
        "{text}"
    );
    assert!(matches!(refused, backup::BackupError::NewCluster { .. }));
    assert_eq!(
        nodewright::error::Classified::topic(&refused),
        Some(nodewright::runbook::Topic::EtcdBackupFailed)
    );
    assert_eq!(world.objects(), before, "the refused round wrote nothing");
    assert_eq!(world.uploads(), 0);

    // Rolled back on purpose to the older backup: a cluster behind the newest backup
    // again, but restored from the store's, so the timer backs it up.
    let which = Which::Named(BackupName::parse(&older.name).unwrap());
    world
        .restore(
            0,
            &which,
            &world.restore_settings(0, false),
            slot + INTERVAL * 2,
        )
        .unwrap_or_else(|e| panic!("restoring: {e}\n{}", etcd.log(0)));
    etcd.wait_healthy();
    let count = block_on(etcd.client(0).count_keys()).unwrap();
    assert!(count.revision < newest.revision, "{count:?}");
    let round = world.round(0, Trigger::Interval, slot + INTERVAL * 3);
    let record = taken(&round).expect("the restored cluster is backed up");
    assert_eq!(record.revision, count.revision);
    assert_eq!(
        etcd.get(0, "/registry/pods/0"),
        None,
        "the roll-back's state"
    );
}

#[test]
fn a_majority_lost_restores_from_an_etcd_manager_backup_and_later_writes_are_gone() {
    let Some(world) = World::start(3) else {
        return;
    };
    let etcd = &world.etcd;
    etcd.put_keys(0, "/registry/secrets/", 300, 100);
    // A backup as etcd-manager makes one: the client's snapshot, gzipped; its meta.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("snapshot.db");
    let output = etcd.etcdctl(0, &["snapshot", "save", saved.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&std::fs::read(&saved).unwrap()).unwrap();
    let name = "2025-06-01T10:15:00Z-000001";
    world.put(&format!("{name}/etcd.backup.gz"), &gzip.finish().unwrap());
    world.put(
        &format!("{name}/_etcd_backup.meta"),
        b"{\n  \"etcdVersion\": \"3.4.23\",\n  \"timestamp\": \"1748772900\",\n  \"clusterSpec\": {\n    \"memberCount\": 3,\n    \"etcdVersion\": \"3.4.23\"\n  }\n}",
    );
    // Written after the backup: lost by the restore.
    etcd.put_keys(0, "/registry/after-backup/", 5, 10);

    // Two members lost; the third runs without quorum.
    etcd.stop_member(1);
    etcd.stop_member(2);
    let which = Which::Named(BackupName::parse(name).unwrap());
    let now = first_slot();
    for i in 0..3 {
        let mut settings = world.restore_settings(i, false);
        settings.etcd_manager_backup = true;
        let result = world
            .restore(i, &which, &settings, now)
            .unwrap_or_else(|e| panic!("restoring member {i}: {e}"));
        assert!(result.record.is_none());
        if i == 0 {
            assert_eq!(result.quorum, "no member has quorum");
            assert!(result.moved_aside.unwrap().join("member").is_dir());
        }
    }
    etcd.wait_healthy();
    for i in 0..3 {
        assert_eq!(
            etcd.get(i, "/registry/secrets/299").map(|v| v.len()),
            Some(100)
        );
        assert_eq!(etcd.get(i, "/registry/after-backup/0"), None);
    }
}

/// The node the commands run on: member `a` of this world's etcd, its kept spec
/// backing up to the store through the front (tests/src/etcd.rs).
fn node_for(world: &World, interval_minutes: u32) -> Agent {
    nodewright_e2e::etcd::node_with_kept_spec(
        &world.etcd,
        &world.front.url(),
        STORE,
        interval_minutes,
    )
}

/// `status --json`'s problems.
fn problems(agent: &Agent) -> Vec<String> {
    let run = agent.run(&["status", "--json"]);
    run.expect_code(0);
    json_of(&run)["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_commands_back_up_and_restore_a_node_from_its_kept_spec() {
    let Some(world) = World::start(1) else {
        return;
    };
    let etcd = &world.etcd;
    etcd.put_keys(0, "/registry/deployments/", 300, 100);
    let mut node = node_for(&world, 15);
    let backup = ["etcd", "backup", "--cluster", "main"];

    // A failed round exits non-zero with its runbook topic, is recorded, and leaves
    // nothing in the store. The store refusing the upload: exit 5, the backup's topic.
    world.front.hook(|seen| {
        (seen.method.as_str() == "POST" && seen.query.contains("uploads"))
            .then(|| Canned::s3_error(403, "AccessDenied", "harness: no PutObject"))
    });
    let run = node.run(&backup);
    run.expect_code(5);
    assert!(
        run.stderr.contains("AccessDenied")
            && run.stderr.contains("nodewright runbook etcd-backup-failed"),
        "{}",
        run.stderr
    );
    // The store unreachable: exit 4, the store's topic; a problem in `status`.
    world.front.clear();
    let closed = format!("http://127.0.0.1:{}", nodewright_e2e::moto::free_port());
    node.set_env("AWS_ENDPOINT_URL", &closed);
    let run = node.run(&backup);
    node.set_env("AWS_ENDPOINT_URL", &world.front.url());
    run.expect_code(4);
    assert!(
        run.stderr
            .contains("nodewright runbook state-store-unreachable"),
        "{}",
        run.stderr
    );
    assert_eq!(world.objects(), Vec::<String>::new());
    let found = problems(&node);
    assert!(
        found
            .iter()
            .any(|p| p.contains("etcd cluster main has no backup")
                && p.contains("2 round(s) failed")
                && p.contains("state-store-unreachable")),
        "{found:?}"
    );

    // The timer's command, as every member runs it: this one leads, so it backs up.
    let run = node.run(&["etcd", "backup", "--cluster", "main", "--json"]);
    run.expect_code(0);
    let out = json_of(&run);
    assert_eq!(out["result"], "taken", "{}", run.stdout);
    let last = &out["status"]["lastBackup"];
    let name = last["name"].as_str().unwrap().to_owned();
    let record = world.record(&name);
    let data = world.get(&format!("{name}/etcd.backup.gz"));
    assert_eq!(record.sha256, sha256(&data));
    assert_eq!(last["size"].as_u64(), Some(data.len() as u64));
    assert_eq!(last["revision"].as_i64(), Some(record.revision));
    assert_eq!(record.taken_by, "a");
    assert_eq!(snapshot_status(&gunzip(&data)).0, record.revision);
    // Recorded where `status` and the watch's metrics read it; no problem now.
    let status = BackupStatus::load(&node.path("/var/lib/nodewright"), "main").unwrap();
    assert_eq!(status.failures_in_a_row, 0);
    assert_eq!(status.last_backup.as_ref().unwrap().name, name);
    let found = problems(&node);
    assert!(
        !found.iter().any(|p| p.contains("etcd cluster main")),
        "{found:?}"
    );
    let text = node.run(&["status"]);
    assert!(
        text.stdout
            .contains(&format!("etcd backup:  main every 15 min to {STORE}")),
        "{}",
        text.stdout
    );

    // The timer stopped: the newest backup grows older than two intervals.
    let mut stale = status.clone();
    let last = stale.last_backup.as_mut().unwrap();
    last.unix -= 31 * 60;
    stale.save(&node.path("/var/lib/nodewright")).unwrap();
    let found = problems(&node);
    assert!(
        found
            .iter()
            .any(|p| p.contains("etcd cluster main: the last backup")
                && p.contains("more than twice the 15-minute interval")),
        "{found:?}"
    );

    // Written after the backup: a restore loses them.
    etcd.put_keys(0, "/registry/after-backup/", 5, 10);
    let before = volume_state(&world, 0);
    let restore = ["etcd", "restore", "--cluster", "main", "--backup", "latest"];
    // Quorum and data: refused without --force, nothing touched.
    let run = node.run(&restore);
    run.expect_code(2);
    assert!(
        run.stderr.contains("has quorum")
            && run.stderr.contains("--force")
            && run.stderr.contains("nodewright runbook etcd-restore"),
        "{}",
        run.stderr
    );
    assert_eq!(volume_state(&world, 0), before);
    // With --force, but etcd cannot be stopped from this root (no systemd) and still
    // answers: refused before the data directory is touched.
    let mut forced = restore.to_vec();
    forced.push("--force");
    let run = node.run(&forced);
    run.expect_code(5);
    assert!(run.stderr.contains("still answers"), "{}", run.stderr);
    assert!(etcd.is_running(0));
    assert!(
        !volume_state(&world, 0)
            .iter()
            .any(|p| p.starts_with("data.before-restore"))
    );

    // Quorum lost (the member is down, as after losing the node): the restore runs.
    etcd.stop_member(0);
    let run = node.run(&[
        "etcd",
        "restore",
        "--cluster",
        "main",
        "--backup",
        "latest",
        "--json",
    ]);
    run.expect_code(0);
    let out = json_of(&run);
    assert_eq!(out["sha256"], record.sha256.as_str());
    assert_eq!(out["quorum"], "no member has quorum");
    let aside = std::path::PathBuf::from(out["movedAside"].as_str().unwrap());
    assert!(
        aside.join("member").is_dir(),
        "the old data kept: {}",
        aside.display()
    );
    assert!(
        out["notes"]
            .to_string()
            .contains("etcd-main.service was not started here"),
        "{}",
        run.stdout
    );
    // The test plays systemd: start the member on the restored data.
    etcd.start_member(0);
    etcd.wait_healthy();
    assert_eq!(
        etcd.get(0, "/registry/deployments/299").map(|v| v.len()),
        Some(100)
    );
    assert_eq!(etcd.get(0, "/registry/after-backup/0"), None);
    let count = block_on(etcd.client(0).count_keys()).unwrap();
    assert_eq!(
        format!("{:x}", count.cluster_id),
        out["clusterId"].as_str().unwrap()
    );
}
