//! etcd backups in the booted control plane (issue 19), seen from outside the nodes:
//! what the members' timers put in the state store, read straight from the emulator
//! (not through the agent's code, which is what is under test), and keys written in
//! bulk through a node's own etcdctl.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::{Duration, Instant};

use crate::ha::{ETCD_CLIENT_PORT, STATE_BUCKET};
use crate::moto::Moto;
use crate::node::{Node, sh};
use crate::runtime::block_on;

/// Where the spec (tests/fixtures/booted-control-plane/nodespec.yaml) backs up etcd
/// cluster `main`, in the state bucket.
pub const BACKUP_PREFIX: &str = "prod.example.com/backups/etcd/main/";
/// The file that makes a backup complete (etcd-manager's, written last).
pub const META_FILE: &str = "_etcd_backup.meta";
pub const DATA_FILE: &str = "etcd.backup.gz";
pub const RECORD_FILE: &str = "nodewright-backup.json";

/// Every backup under the prefix, by name (`<time>-<revision>`), with its files.
pub fn stored_backups(moto: &Moto) -> BTreeMap<String, BTreeSet<String>> {
    let s3 = moto.s3();
    let mut backups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut token = None;
    loop {
        let page = block_on(
            s3.list_objects_v2()
                .bucket(STATE_BUCKET)
                .prefix(BACKUP_PREFIX)
                .set_continuation_token(token.take())
                .send(),
        )
        .expect("ListObjectsV2 of the backups");
        for object in page.contents() {
            let key = object.key().unwrap_or_default();
            let rest = key.strip_prefix(BACKUP_PREFIX).unwrap_or(key);
            let (name, file) = rest.split_once('/').unwrap_or((rest, ""));
            backups
                .entry(name.to_owned())
                .or_default()
                .insert(file.to_owned());
        }
        match page.next_continuation_token() {
            Some(next) => token = Some(next.to_owned()),
            None => return backups,
        }
    }
}

/// The complete backups (those with etcd-manager's meta), oldest first.
pub fn complete_backups(moto: &Moto) -> Vec<String> {
    stored_backups(moto)
        .into_iter()
        .filter(|(_, files)| files.contains(META_FILE))
        .map(|(name, _)| name)
        .collect()
}

/// The revision a backup's name ends with (`2026-12-07T21:03:00Z-000042` → 42).
pub fn revision_of(name: &str) -> i64 {
    name.rsplit_once('-')
        .and_then(|(_, revision)| revision.parse().ok())
        .unwrap_or_else(|| panic!("{name} names no revision"))
}

/// The interval slot a backup belongs to with a one-minute interval: its minute
/// (`2026-12-07T21:03`).
pub fn minute_of(name: &str) -> &str {
    &name[..16]
}

/// The backup rounds `node`'s timer ran, by the minute they ran in (UTC, as backup
/// names have it): each round prints one line, `etcd cluster main: ...`.
pub fn backup_rounds(node: &Node) -> BTreeMap<String, Vec<String>> {
    let mut rounds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in node.journal("nodewright-etcd-backup-main.service") {
        if !entry.message.starts_with("etcd cluster main: ") {
            continue;
        }
        let at = std::time::UNIX_EPOCH + Duration::from_micros(entry.realtime_us);
        let minute = minute_of(&nodewright::controlplane::etcd::layout::utc_seconds(at)).to_owned();
        rounds.entry(minute).or_default().push(entry.message);
    }
    rounds
}

/// Waits for a complete backup at `revision` or later; its name.
pub fn wait_for_backup(moto: &Moto, revision: i64, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(name) = complete_backups(moto)
            .into_iter()
            .find(|n| revision_of(n) >= revision)
        {
            return name;
        }
        assert!(
            Instant::now() < deadline,
            "no backup at revision {revision} or later within {timeout:?}: {:?}",
            stored_backups(moto)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One object of a backup: its bytes and its S3 user metadata.
pub fn backup_object(moto: &Moto, name: &str, file: &str) -> (Vec<u8>, BTreeMap<String, String>) {
    let s3 = moto.s3();
    block_on(async {
        let object = s3
            .get_object()
            .bucket(STATE_BUCKET)
            .key(format!("{BACKUP_PREFIX}{name}/{file}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObject {name}/{file}: {e:?}"));
        let metadata = object
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let bytes = object.body.collect().await.expect("the body").into_bytes();
        (bytes.to_vec(), metadata)
    })
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip stream");
    out
}

/// The etcdctl command line for `node`'s own member, as a shell string.
fn etcdctl_line() -> String {
    use nodewright::model::pki_paths as pki;
    format!(
        "ETCDCTL_API=3 etcdctl --dial-timeout=3s --command-timeout=20s \
         --endpoints=https://127.0.0.1:{ETCD_CLIENT_PORT} --cacert {} --cert {} --key {}",
        pki::ETCD_CA_CERT,
        pki::ETCD_CLIENT_CERT,
        pki::ETCD_CLIENT_KEY
    )
}

/// Writes `count` keys `<prefix><n>` (count ≤ 128, etcd's limit of operations in one
/// transaction) with `value_size` random letters each, in one transaction through
/// `node`'s member; the revision after it.
pub fn put_keys(node: &Node, prefix: &str, count: usize, value_size: usize) -> i64 {
    assert!(count <= 128, "one transaction holds 128 operations");
    // No compares, the puts, no failure operations (etcdctl txn's stdin format).
    let mut txn = String::from("\n");
    for n in 0..count {
        let value: String = (0..value_size).map(|_| fastrand::alphanumeric()).collect();
        txn.push_str(&format!("put {prefix}{n} {value}\n"));
    }
    txn.push_str("\n\n");
    let file = "/root/keys.txn";
    std::fs::write(node.path(file), txn).expect("writing the transaction onto the node");
    let output = sh(node, &format!("{} -w json txn < {file}", etcdctl_line()));
    let answer: serde_json::Value = serde_json::from_str(&output)
        .unwrap_or_else(|e| panic!("etcdctl txn answered {output:?}: {e}"));
    assert_eq!(answer["succeeded"], true, "{answer}");
    answer["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no revision in {answer}"))
}

/// How many keys under `prefix` `node`'s member serves (a linearizable read; etcd
/// counts the whole range whatever the limit, and leaves `count` out when it is 0).
pub fn count_keys(node: &Node, prefix: &str) -> i64 {
    let output = sh(
        node,
        &format!(
            "{} get {prefix} --prefix --keys-only --limit=1 -w json",
            etcdctl_line()
        ),
    );
    let answer: serde_json::Value = serde_json::from_str(&output)
        .unwrap_or_else(|e| panic!("etcdctl get answered {output:?}: {e}"));
    answer["count"].as_i64().unwrap_or(0)
}

/// `nodewright ARGS` on `node` as an operator runs it in a shell there: with the site
/// settings of `/etc/default/nodewright` (here the emulator's endpoint; on EC2 there
/// are none to set).
pub fn operator_nodewright(node: &Node, args: &str) -> std::process::Output {
    node.exec(&[
        "/bin/sh",
        "-c",
        &format!("set -a; . /etc/default/nodewright; exec nodewright {args}"),
    ])
}
