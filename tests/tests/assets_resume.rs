//! Downloads that survive the agent being killed: a run is SIGKILLed mid-download from
//! the harness's mirror, and the next run takes over the part it left and asks only for
//! the rest (the mirror counts the bytes it serves). And every way a resume can go
//! wrong falls back to a whole download that still ends in the right bytes: a server
//! that ignores the range, a part longer than the file (416), a file changed at its URL
//! (If-Range), a part from another mirror that is not the asset. Assertions are on
//! bytes and requests, never on time.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nodewright_e2e::agent::Run;
use nodewright_e2e::assetkit::{AssetNode, bytes, sha256};
use nodewright_e2e::mirror::{Fault, Hit, Mirror};

const MIB: u64 = 1 << 20;

fn spec(sha: &str, urls: &[String]) -> String {
    format!(
        "assets:\n  - name: kubelet\n    sha256: {sha}\n    urls: [{}]\n    install:\n      - path: /usr/local/bin/kubelet\n",
        urls.join(", ")
    )
}

fn part_of(node: &AssetNode, sha: &str) -> PathBuf {
    node.agent
        .path(&format!("/var/cache/nodewright/tmp/{sha}.part"))
}

fn temp_files(node: &AssetNode) -> Vec<String> {
    std::fs::read_dir(node.agent.path("/var/cache/nodewright/tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts `apply` of `spec`, SIGKILLs it once its part file holds at least `at` bytes,
/// and returns the part's size after the kill.
fn kill_mid_download(node: &AssetNode, spec: &str, part: &Path, at: u64) -> u64 {
    let path = node.spec_file(spec);
    let url = format!("file://{}", path.display());
    let mut child = node
        .agent
        .command(&["apply", "--spec", &url, "--deadline", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let began = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it was killed");
        }
        let len = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if len >= at {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(100),
            "the part never reached {at} bytes ({len})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    std::fs::metadata(part).unwrap().len()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// The run's `assets fetched` line has these counts.
fn assert_fetched(run: &Run, bytes: u64, resumed: u64, discarded: u64) {
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("assets fetched"))
        .unwrap_or_else(|| panic!("no summary:\n{}", run.stderr));
    for field in [
        format!("bytes={bytes}"),
        format!("resumed_bytes={resumed}"),
        format!("discarded_bytes={discarded}"),
    ] {
        assert!(line.contains(&field), "{field} not in: {line}");
    }
}

fn one_hit(mirror: &Mirror, path: &str) -> Hit {
    let hits = mirror.hits_for(path);
    assert_eq!(hits.len(), 1, "{hits:?}");
    hits.into_iter().next().unwrap()
}

fn installed(node: &AssetNode) -> Vec<u8> {
    std::fs::read(node.agent.path("/usr/local/bin/kubelet")).unwrap()
}

#[test]
fn a_download_killed_at_12_of_50_mib_is_resumed_by_the_next_run() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(41, 50 * MIB as usize);
    let sha = sha256(&data);
    mirror.put("/kubelet", data.clone());
    mirror.set_rate("/kubelet", Some(16 * MIB));
    let spec = spec(&sha, &[mirror.url("/kubelet")]);
    let part = part_of(&node, &sha);

    let left = kill_mid_download(&node, &spec, &part, 12 * MIB);
    assert!((12 * MIB..50 * MIB).contains(&left), "{left}");
    // What the dead run left: its part, and where the part's bytes came from.
    let mut temps = temp_files(&node);
    temps.sort();
    assert_eq!(temps, [format!("{sha}.part"), format!("{sha}.part.json")]);

    mirror.clear_log();
    mirror.set_rate("/kubelet", None);
    let run = node.apply(&spec);
    run.expect_code(0);
    let hit = one_hit(&mirror, "/kubelet");
    assert_eq!(hit.range, Some(format!("bytes={left}-")));
    assert!(hit.if_range.is_some(), "the same URL: If-Range sent");
    assert_eq!(hit.status, 206);
    assert_eq!(hit.sent, 50 * MIB - left, "only the rest was served");
    assert_eq!(installed(&node), data);
    assert!(temp_files(&node).is_empty(), "{:?}", temp_files(&node));
    assert!(
        run.stderr
            .contains("taking over the part an earlier run left"),
        "{}",
        run.stderr
    );

    // The summary: this run's bytes, over this run's time; what was resumed, apart.
    let rest = 50 * MIB - left;
    let summary = format!("downloaded: 50.0 MiB; {} transferred in ", mib(rest));
    assert!(run.stderr.contains(&summary), "{summary}\n{}", run.stderr);
    let resumed = format!("{} resumed from an earlier run's part", mib(left));
    assert!(run.stderr.contains(&resumed), "{resumed}\n{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "bytes={} transferred={rest} resumed={left} discarded=0",
            50 * MIB
        )),
        "{}",
        run.stderr
    );
    assert_fetched(&run, rest, left, 0);
}

#[test]
fn a_resume_the_server_ignores_starts_over_and_counts_every_byte() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(42, 16 * MIB as usize);
    let sha = sha256(&data);
    mirror.put("/kubelet", data.clone());
    mirror.set_rate("/kubelet", Some(8 * MIB));
    let spec = spec(&sha, &[mirror.url("/kubelet")]);
    let left = kill_mid_download(&node, &spec, &part_of(&node, &sha), 4 * MIB);

    mirror.clear_log();
    mirror.set_rate("/kubelet", None);
    mirror.set_range("/kubelet", false);
    let run = node.apply(&spec);
    run.expect_code(0);
    let hit = one_hit(&mirror, "/kubelet");
    assert_eq!(hit.range, Some(format!("bytes={left}-")), "asked to resume");
    assert_eq!(
        (hit.status, hit.sent),
        (200, 16 * MIB),
        "got the whole file"
    );
    assert!(
        run.stderr.contains("the server does not resume"),
        "{}",
        run.stderr
    );
    assert_eq!(installed(&node), data);
    assert!(
        run.stderr
            .contains("downloaded: 16.0 MiB; 16.0 MiB transferred in ")
            && run
                .stderr
                .contains(&format!("{} thrown away to start over", mib(left))),
        "{}",
        run.stderr
    );
    assert_fetched(&run, 16 * MIB, 0, left);
}

#[test]
fn a_file_changed_at_its_url_since_the_part_began_is_downloaded_whole_at_once() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let good = bytes(43, 16 * MIB as usize);
    let sha = sha256(&good);
    // The earlier run got another version of the file at this URL.
    mirror.put("/kubelet", bytes(44, 16 * MIB as usize));
    mirror.set_rate("/kubelet", Some(8 * MIB));
    let spec = spec(&sha, &[mirror.url("/kubelet")]);
    let left = kill_mid_download(&node, &spec, &part_of(&node, &sha), 4 * MIB);
    let old_etag = mirror.hits_for("/kubelet")[0].clone();
    assert_eq!(old_etag.status, 200);

    // Replaced (a new ETag): If-Range makes the server send the whole new file in
    // the same request, instead of the rest of it after the old part.
    mirror.put("/kubelet", good.clone());
    mirror.clear_log();
    let run = node.apply(&spec);
    run.expect_code(0);
    let hit = one_hit(&mirror, "/kubelet");
    assert_eq!(hit.range, Some(format!("bytes={left}-")));
    assert_eq!(hit.if_range.as_deref(), Some("\"v1\""));
    assert_eq!((hit.status, hit.sent), (200, 16 * MIB));
    assert!(
        run.stderr.contains("changed since the part was started"),
        "{}",
        run.stderr
    );
    assert_eq!(installed(&node), good);
    assert_fetched(&run, 16 * MIB, 0, left);
}

#[test]
fn a_part_longer_than_the_file_gets_a_416_and_starts_over() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let good = bytes(45, 8 * MIB as usize);
    let sha = sha256(&good);
    // The earlier run got a longer file, with no validators to tell it apart.
    mirror.put("/kubelet", bytes(46, 24 * MIB as usize));
    mirror.set_validators("/kubelet", None, None);
    mirror.set_rate("/kubelet", Some(12 * MIB));
    let spec = spec(&sha, &[mirror.url("/kubelet")]);
    let left = kill_mid_download(&node, &spec, &part_of(&node, &sha), 10 * MIB);
    assert!(left > 8 * MIB);

    mirror.put("/kubelet", good.clone());
    mirror.clear_log();
    let run = node.apply(&spec);
    run.expect_code(0);
    let hits: Vec<(Option<String>, Option<String>, u16, u64)> = mirror
        .hits_for("/kubelet")
        .into_iter()
        .map(|h| (h.range, h.if_range, h.status, h.sent))
        .collect();
    assert_eq!(
        hits,
        [
            (Some(format!("bytes={left}-")), None, 416, 0),
            (None, None, 200, 8 * MIB)
        ]
    );
    assert!(
        run.stderr.contains(&format!(
            "the part ({left} bytes) is longer than the file at this URL ({} bytes: HTTP 416)",
            8 * MIB
        )),
        "{}",
        run.stderr
    );
    assert_eq!(installed(&node), good);
    assert_fetched(&run, 8 * MIB, 0, left);
}

#[test]
fn a_whole_part_left_before_it_was_stored_is_checked_and_stored_without_a_transfer() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(47, 4 * MIB as usize);
    let sha = sha256(&data);
    mirror.put("/kubelet", data.clone());
    // A run killed between the last byte and the rename into the cache leaves this
    // (the cache's documented layout).
    let part = part_of(&node, &sha);
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &data).unwrap();

    let run = node.apply(&spec(&sha, &[mirror.url("/kubelet")]));
    run.expect_code(0);
    let hit = one_hit(&mirror, "/kubelet");
    assert_eq!(
        (hit.range, hit.status, hit.sent),
        (Some(format!("bytes={}-", 4 * MIB)), 416, 0)
    );
    assert_eq!(installed(&node), data);
    assert!(temp_files(&node).is_empty());
    assert_fetched(&run, 0, 4 * MIB, 0);
}

#[test]
fn a_part_from_one_mirror_is_resumed_from_the_next_and_the_sha256_decides() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(48, 16 * MIB as usize);
    let sha = sha256(&data);
    let urls = [mirror.url("/a/kubelet"), mirror.url("/b/kubelet")];
    let spec = spec(&sha, &urls);
    mirror.put("/a/kubelet", data.clone());
    mirror.set_rate("/a/kubelet", Some(8 * MIB));
    mirror.put("/b/kubelet", data.clone());
    let left = kill_mid_download(&node, &spec, &part_of(&node, &sha), 4 * MIB);

    // Mirror A is gone: B serves the rest of the same asset. A's validators mean
    // nothing to B, so no If-Range; the sha256 at the end is the guard.
    mirror.always("/a/kubelet", Fault::Status(404));
    mirror.clear_log();
    let run = node.apply(&spec);
    run.expect_code(0);
    let hit = one_hit(&mirror, "/b/kubelet");
    assert_eq!(
        (hit.range, hit.if_range, hit.status, hit.sent),
        (Some(format!("bytes={left}-")), None, 206, 16 * MIB - left)
    );
    assert_eq!(installed(&node), data);
    assert_fetched(&run, 16 * MIB - left, left, 0);
}

#[test]
fn a_part_from_a_mirror_that_served_other_bytes_fails_the_sha256_and_is_fetched_whole() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(49, 16 * MIB as usize);
    let sha = sha256(&data);
    let urls = [mirror.url("/a/kubelet"), mirror.url("/b/kubelet")];
    let spec = spec(&sha, &urls);
    mirror.put("/a/kubelet", bytes(50, 16 * MIB as usize));
    mirror.set_rate("/a/kubelet", Some(8 * MIB));
    mirror.put("/b/kubelet", data.clone());
    let left = kill_mid_download(&node, &spec, &part_of(&node, &sha), 4 * MIB);

    mirror.always("/a/kubelet", Fault::Status(404));
    mirror.clear_log();
    let run = node.apply(&spec);
    run.expect_code(0);
    let hits: Vec<(Option<String>, u16, u64)> = mirror
        .hits_for("/b/kubelet")
        .into_iter()
        .map(|h| (h.range, h.status, h.sent))
        .collect();
    assert_eq!(
        hits,
        [
            (Some(format!("bytes={left}-")), 206, 16 * MIB - left),
            (None, 200, 16 * MIB)
        ]
    );
    assert!(
        run.stderr
            .contains("the resumed download is not the asset; downloading it whole"),
        "{}",
        run.stderr
    );
    assert_eq!(installed(&node), data);
    // Transferred: the rest, then the whole; thrown away: the whole wrong file.
    assert_fetched(&run, 32 * MIB - left, 0, 16 * MIB);
}

#[test]
fn a_live_runs_part_is_left_alone_by_cache_prune() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(51, 8 * MIB as usize);
    let sha = sha256(&data);
    mirror.put("/kubelet", data.clone());
    mirror.set_rate("/kubelet", Some(4 * MIB));
    let path = node.spec_file(&spec(&sha, &[mirror.url("/kubelet")]));
    let url = format!("file://{}", path.display());
    let child = node
        .agent
        .command(&["apply", "--spec", &url, "--deadline", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let part = part_of(&node, &sha);
    let began = Instant::now();
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < MIB {
        assert!(began.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    }
    // Nothing in the state wants this asset yet: only the lock keeps the part.
    let prune = node.agent.run(&["cache", "prune"]);
    prune.expect_code(0);
    assert!(!prune.stdout.contains(".part"), "{}", prune.stdout);
    assert!(part.exists());
    let run = Run::from_output(child.wait_with_output().unwrap());
    run.expect_code(0);
    assert_eq!(installed(&node), data);
    assert_eq!(one_hit(&mirror, "/kubelet").sent, 8 * MIB);
}

#[test]
fn a_file_source_that_is_a_device_is_refused_not_read_forever() {
    let node = AssetNode::new();
    let run = node.apply(&spec(
        &sha256(b"anything"),
        &["file:///dev/zero".to_owned()],
    ));
    run.expect_code(5);
    assert!(
        run.stderr
            .contains("file:///dev/zero: /dev/zero is not a regular file (a character device)"),
        "{}",
        run.stderr
    );
    assert!(temp_files(&node).is_empty(), "{:?}", temp_files(&node));
}
