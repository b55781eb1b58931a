//! Benchmark of etcd backups and the restore (issue 19), run by `bench/etcd-backup.sh`:
//! for each database size, a real etcd 3.4 member (TLS, client certificates, on
//! loopback) filled with keys of 1 KiB random letters, then the agent binary under test
//! as an operator runs it on the node:
//!
//! - backup: `nodewright etcd backup --cluster main --now` (etcd's status, the snapshot
//!   streamed through gzip into a multipart upload to the AWS emulator's S3, the record
//!   and the meta written);
//! - restore: the member stopped (quorum lost), then `nodewright etcd restore --cluster
//!   main --backup latest` (the listing, the record checked, the download onto the
//!   member's volume with its sha256, the snapshot's own digest, `etcdctl snapshot
//!   restore`, the data directories swapped); then the member started and its keys
//!   counted, so a figure is never that of a broken restore.
//!
//! Both are wall-clock times of the whole command, side by side per size, with the
//! throughput and the ratio between the sizes (linear would be the ratio of the keys).
//!
//! Usage: bench-etcd-backup [--quick] NODEWRIGHT [KEYS...] (default 10000 100000;
//! --quick: 1000 keys, one run).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nodewright_e2e::agent::{Agent, json_of};
use nodewright_e2e::etcd::{EtcdCluster, installed, node_with_kept_spec};
use nodewright_e2e::moto::Moto;
use nodewright_e2e::runtime::block_on;

const BUCKET: &str = "nodewright-state";
const STORE: &str = "s3://nodewright-state/prod.example.com/backups/etcd/main/";
const VALUE_SIZE: usize = 1024;
const PREFIX: &str = "/registry/bench/";

struct Figures {
    keys: usize,
    db_bytes: u64,
    backup_bytes: u64,
    backup: Duration,
    restore: Duration,
    /// What the restore itself reported (its own clock, without the process start).
    restore_reported: f64,
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.first().is_some_and(|a| a == "--quick");
    if quick {
        args.remove(0);
    }
    let mut args = args.into_iter();
    let binary = PathBuf::from(args.next().expect("the nodewright binary under test"));
    assert!(binary.exists(), "{} is missing", binary.display());
    let mut sizes: Vec<usize> = args.filter_map(|n| n.parse().ok()).collect();
    if quick {
        sizes = vec![1000];
    } else if sizes.is_empty() {
        sizes = vec![10_000, 100_000];
    }
    if !installed() {
        eprintln!("bench-etcd-backup: Debian's etcd is missing (scripts/setup.sh installs it)");
        std::process::exit(1);
    }
    let moto = Moto::start();
    block_on(moto.s3().create_bucket().bucket(BUCKET).send()).expect("the state bucket");

    let figures: Vec<Figures> = sizes
        .iter()
        .map(|&keys| measure(&binary, &moto, keys))
        .collect();

    println!(
        "\n## etcd backup and restore ({} binary {}, 1 member, values of {VALUE_SIZE} bytes)\n",
        if quick { "debug" } else { "the" },
        binary.display()
    );
    println!(
        "| keys | etcd db | backup object (gzip) | backup (snapshot + upload) | backup MB/s of db | restore (download + check + restore + swap) | restore as it reports | restore MB/s of db |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in &figures {
        let mb = f.db_bytes as f64 / 1e6;
        println!(
            "| {} | {:.1} MB | {:.1} MB | {:.2} s | {:.0} | {:.2} s | {:.2} s | {:.0} |",
            f.keys,
            mb,
            f.backup_bytes as f64 / 1e6,
            f.backup.as_secs_f64(),
            mb / f.backup.as_secs_f64(),
            f.restore.as_secs_f64(),
            f.restore_reported,
            mb / f.restore.as_secs_f64(),
        );
    }
    if let [small, .., large] = figures.as_slice() {
        println!(
            "\n| ratio {} / {} keys | keys | backup time | restore time |",
            large.keys, small.keys
        );
        println!("|---|---:|---:|---:|");
        println!(
            "| larger / smaller | {:.1}x | {:.1}x | {:.1}x |",
            large.keys as f64 / small.keys as f64,
            large.backup.as_secs_f64() / small.backup.as_secs_f64(),
            large.restore.as_secs_f64() / small.restore.as_secs_f64(),
        );
    }
}

/// One size: a fresh member filled with `keys` keys, one backup, one restore.
fn measure(binary: &std::path::Path, moto: &Moto, keys: usize) -> Figures {
    let etcd = EtcdCluster::start(1);
    let filled = Instant::now();
    etcd.put_keys(0, PREFIX, keys, VALUE_SIZE);
    eprintln!("{keys} keys written in {:?}", filled.elapsed());
    // Each size its own prefix, so `latest` is this size's backup.
    let store = format!("{STORE}{keys}/");
    let mut node: Agent = node_with_kept_spec(&etcd, moto.url(), &store, 15);
    node.set_binary(binary);
    node.set_env("NODEWRIGHT_LOG", "warn");

    let started = Instant::now();
    let run = node.run(&["etcd", "backup", "--cluster", "main", "--now", "--json"]);
    let backup = started.elapsed();
    run.expect_code(0);
    let taken = json_of(&run);
    assert_eq!(taken["result"], "taken", "{taken:#}");
    let last = &taken["status"]["lastBackup"];
    let backup_bytes = last["size"].as_u64().unwrap_or_else(|| panic!("{taken:#}"));
    let db_bytes = std::fs::metadata(etcd.members[0].data_dir().join("member/snap/db"))
        .expect("the member's database")
        .len();

    // Quorum lost: the member stopped. Nothing on this root can stop or start it (no
    // systemd), so the command restores only because etcd does not answer.
    etcd.stop_member(0);
    let started = Instant::now();
    let run = node.run(&[
        "etcd",
        "restore",
        "--cluster",
        "main",
        "--backup",
        "latest",
        "--json",
    ]);
    let restore = started.elapsed();
    run.expect_code(0);
    let restored = json_of(&run);
    let restore_reported = restored["seconds"].as_f64().unwrap_or(0.0);
    etcd.start_member(0);
    etcd.wait_healthy();
    let count = block_on(etcd.client(0).count_keys()).expect("counting the keys");
    assert_eq!(
        count.keys, keys as u64,
        "the restored member serves every key"
    );
    Figures {
        keys,
        db_bytes,
        backup_bytes,
        backup,
        restore,
        restore_reported,
    }
}
