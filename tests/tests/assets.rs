//! Assets end to end: the agent downloads from the harness's mirror (which misbehaves
//! on request), verifies, caches, extracts and installs, and restarts what uses them.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt;

use nodewright_e2e::assetkit::{AssetNode, Entry, bytes, sha256, tar_gz};
use nodewright_e2e::front::{AwsFront, Canned};
use nodewright_e2e::mirror::{Fault, Mirror};
use nodewright_e2e::moto::Moto;

const MIB: usize = 1 << 20;

fn plain(name: &str, sha: &str, urls: &[String], path: &str) -> String {
    format!(
        "  - name: {name}\n    sha256: {sha}\n    urls: [{}]\n    install:\n      - path: {path}\n",
        urls.join(", ")
    )
}

fn assets(entries: &[String]) -> String {
    format!("assets:\n{}", entries.concat())
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn cache_leftovers(node: &AssetNode) -> Vec<String> {
    let tmp = node.agent.path("/var/cache/nodewright/tmp");
    std::fs::read_dir(tmp)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A kubelet binary, a containerd archive and units that use them.
struct Release {
    kubelet: Vec<u8>,
    containerd: Vec<u8>,
    ctr: Vec<u8>,
    archive_path: String,
    kubelet_path: String,
}

impl Release {
    fn publish(mirror: &Mirror, version: u64, ctr_version: u64) -> Self {
        let kubelet = bytes(100 + version, 3 * MIB);
        let containerd = bytes(200 + version, 2 * MIB);
        let ctr = bytes(300 + ctr_version, MIB / 2);
        let archive = tar_gz(&[
            Entry::Dir {
                name: "./bin/".into(),
            },
            Entry::file("./bin/containerd", &containerd),
            Entry::file("./bin/ctr", &ctr),
        ]);
        let kubelet_path = format!("/v{version}/kubelet");
        let archive_path = format!("/v{version}/containerd.tar.gz");
        mirror.put(&kubelet_path, kubelet.clone());
        mirror.put(&archive_path, archive);
        Self {
            kubelet,
            containerd,
            ctr,
            archive_path,
            kubelet_path,
        }
    }

    fn spec(&self, mirror: &Mirror) -> String {
        let archive_sha = sha256(&mirror_body(mirror, &self.archive_path));
        format!(
            "{}{}  - name: containerd\n    sha256: {archive_sha}\n    urls: [{}]\n    archive: tgz\n    install:\n      - member: bin/containerd\n        path: /usr/local/bin/containerd\n      - member: bin/ctr\n        path: /usr/local/bin/ctr\n        mode: \"0750\"\n{UNITS}",
            "assets:\n",
            plain(
                "kubelet",
                &sha256(&self.kubelet),
                &[mirror.url(&self.kubelet_path)],
                "/usr/local/bin/kubelet"
            ),
            mirror.url(&self.archive_path)
        )
    }
}

const UNITS: &str = "\
systemd:
  units:
    - name: kubelet.service
      content: |
        [Service]
        ExecStart=/usr/local/bin/kubelet
      restartOn: [/usr/local/bin/kubelet]
    - name: containerd.service
      content: |
        [Service]
        ExecStart=/usr/local/bin/containerd
      restartOn: [/usr/local/bin/containerd]
    - name: ctr-check.service
      content: |
        [Service]
        ExecStart=/usr/local/bin/ctr version
      restartOn: [/usr/local/bin/ctr]
";

/// What the mirror serves at `path` (fetched the way the agent would).
fn mirror_body(mirror: &Mirror, path: &str) -> Vec<u8> {
    let url = mirror.url(path);
    let body = nodewright_e2e::runtime::block_on(async move {
        nodewright_e2e::runtime::control_client()
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    mirror.clear_log();
    body.to_vec()
}

#[test]
fn plan_reads_only_then_apply_downloads_installs_and_a_rerun_does_nothing() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let release = Release::publish(&mirror, 1, 1);
    let spec = release.spec(&mirror);

    // Planning downloads nothing and writes nothing, and says what is missing.
    let plan = node.plan(&spec);
    plan.expect_code(0);
    assert!(
        plan.stdout
            .contains("download kubelet: not in the cache: download needed"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("install /usr/local/bin/ctr: missing"),
        "{}",
        plan.stdout
    );
    // An archive is downloaded, then extracted: two steps, each reported as itself.
    assert!(
        plan.stdout
            .contains("download containerd: not in the cache: download needed")
            && plan
                .stdout
                .contains("extract containerd: an archive: extracted once downloaded"),
        "{}",
        plan.stdout
    );
    assert!(
        mirror.hits().is_empty(),
        "plan downloaded: {:?}",
        mirror.hits()
    );
    assert!(node.agent.untouched(), "plan wrote files");

    node.apply(&spec).expect_code(0);
    let root = |p: &str| node.agent.path(p);
    assert_eq!(
        std::fs::read(root("/usr/local/bin/kubelet")).unwrap(),
        release.kubelet
    );
    assert_eq!(
        std::fs::read(root("/usr/local/bin/containerd")).unwrap(),
        release.containerd
    );
    assert_eq!(
        std::fs::read(root("/usr/local/bin/ctr")).unwrap(),
        release.ctr
    );
    assert_eq!(mode(&root("/usr/local/bin/kubelet")), 0o755);
    assert_eq!(mode(&root("/usr/local/bin/ctr")), 0o750);
    // Cached by digest, the archive extracted once with its manifest.
    let archive_sha = sha256(&mirror_body(&mirror, &release.archive_path));
    assert!(
        root(&format!(
            "/var/cache/nodewright/sha256/{}",
            sha256(&release.kubelet)
        ))
        .is_file()
    );
    assert!(
        root(&format!(
            "/var/cache/nodewright/extracted/{archive_sha}/manifest.json"
        ))
        .is_file()
    );
    assert!(cache_leftovers(&node).is_empty());

    // Recorded like any managed file, with where it came from; the service's input
    // digest is the binary's content digest.
    let state = node.agent.state();
    let ctr = &state["files"]["/usr/local/bin/ctr"];
    assert_eq!(ctr["digest"], sha256(&release.ctr));
    assert_eq!(ctr["source"], format!("sha256:{archive_sha}#bin/ctr"));
    assert_eq!(
        state["applied"]["service:ctr-check.service"]["inputs"]["/usr/local/bin/ctr"],
        sha256(&release.ctr)
    );
    assert_eq!(
        state["applied"]["service:kubelet.service"]["inputs"]["/usr/local/bin/kubelet"],
        sha256(&release.kubelet)
    );
    assert_eq!(state["assets"]["kubelet"], sha256(&release.kubelet));

    // A second run: no changes, no request.
    mirror.clear_log();
    let again = node.apply(&spec);
    again.expect_code(0);
    assert!(again.stdout.contains("no changes"), "{}", again.stdout);
    assert!(mirror.hits().is_empty(), "{:?}", mirror.hits());
}

#[test]
fn a_new_binary_restarts_exactly_the_services_whose_binary_changed() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let v1 = Release::publish(&mirror, 1, 1);
    node.apply(&v1.spec(&mirror)).expect_code(0);

    // v2: a new kubelet and a new containerd archive in which ctr is unchanged.
    let v2 = Release::publish(&mirror, 2, 1);
    let spec = v2.spec(&mirror);
    let plan = node.plan(&spec);
    plan.expect_code(0);
    assert!(
        plan.stdout
            .contains("restart kubelet.service: inputs changed: /usr/local/bin/kubelet"),
        "{}",
        plan.stdout
    );
    node.apply(&spec).expect_code(0);
    assert_eq!(
        std::fs::read(node.agent.path("/usr/local/bin/kubelet")).unwrap(),
        v2.kubelet
    );
    let state = node.agent.state();
    let applied = &state["applied"];
    assert_eq!(
        applied["service:kubelet.service"]["inputs"]["/usr/local/bin/kubelet"],
        sha256(&v2.kubelet)
    );
    assert_eq!(
        applied["service:containerd.service"]["inputs"]["/usr/local/bin/containerd"],
        sha256(&v2.containerd)
    );
    // Restarts are skipped off a live host, with the reason: a changed binary gives
    // "root is ...", an unchanged one (known only after the download) is not restarted.
    let outcome = |unit: &str| {
        applied[format!("service:{unit}")]["outcome"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        outcome("kubelet.service").starts_with("skipped: root is"),
        "{}",
        outcome("kubelet.service")
    );
    assert!(outcome("containerd.service").starts_with("skipped: root is"));
    assert_eq!(
        outcome("ctr-check.service"),
        "skipped: its inputs are unchanged once downloaded"
    );
    assert_eq!(
        applied["service:ctr-check.service"]["inputs"]["/usr/local/bin/ctr"],
        sha256(&v1.ctr)
    );
}

#[test]
fn a_503_is_retried_with_backoff() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(1, MIB);
    mirror.put("/a", data.clone());
    mirror.fault("/a", Fault::Status(503), 2);
    node.apply(&assets(&[plain(
        "a",
        &sha256(&data),
        &[mirror.url("/a")],
        "/opt/a",
    )]))
    .expect_code(0);
    let statuses: Vec<u16> = mirror.hits_for("/a").iter().map(|h| h.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    assert_eq!(std::fs::read(node.agent.path("/opt/a")).unwrap(), data);
}

/// The Range each request asked for, as the byte offset.
fn ranges(mirror: &Mirror, path: &str) -> Vec<Option<u64>> {
    mirror
        .hits_for(path)
        .iter()
        .map(|h| {
            h.range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.trim_end_matches('-').parse().ok())
        })
        .collect()
}

#[test]
fn a_cut_transfer_resumes_with_range() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(2, 4 * MIB);
    mirror.put("/a", data.clone());
    mirror.fault("/a", Fault::CloseAfter(MIB as u64), 1);
    let run = node.apply(&assets(&[plain(
        "a",
        &sha256(&data),
        &[mirror.url("/a")],
        "/opt/a",
    )]));
    run.expect_code(0);
    let ranges = ranges(&mirror, "/a");
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], None);
    let offset = ranges[1].expect("the second request resumes");
    assert!(offset > 0 && offset <= MIB as u64, "resumed at {offset}");
    assert_eq!(mirror.hits_for("/a")[1].status, 206);
    assert!(
        run.stderr.contains("transfer cut; resuming"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(node.agent.path("/opt/a")).unwrap(), data);
}

#[test]
fn a_stalled_transfer_is_detected_and_resumed() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(3, 2 * MIB);
    mirror.put("/a", data.clone());
    mirror.fault("/a", Fault::StallAfter(512 * 1024), 1);
    let spec = format!(
        "downloads:\n  idleTimeoutSeconds: 1\n{}",
        assets(&[plain("a", &sha256(&data), &[mirror.url("/a")], "/opt/a")])
    );
    let run = node.apply(&spec);
    run.expect_code(0);
    assert!(run.stderr.contains("stalled"), "{}", run.stderr);
    let ranges = ranges(&mirror, "/a");
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert!(ranges[1].is_some_and(|o| o > 0), "{ranges:?}");
    assert_eq!(std::fs::read(node.agent.path("/opt/a")).unwrap(), data);
}

#[test]
fn a_server_without_range_support_starts_over() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(4, 3 * MIB);
    mirror.put("/a", data.clone());
    mirror.set_range("/a", false);
    mirror.fault("/a", Fault::CloseAfter(MIB as u64), 1);
    let run = node.apply(&assets(&[plain(
        "a",
        &sha256(&data),
        &[mirror.url("/a")],
        "/opt/a",
    )]));
    run.expect_code(0);
    let hits = mirror.hits_for("/a");
    assert_eq!(hits.len(), 2);
    assert!(hits[1].range.is_some(), "the agent asked to resume");
    assert_eq!(hits[1].status, 200, "and got the whole file");
    assert!(run.stderr.contains("starting over"), "{}", run.stderr);
    assert_eq!(std::fs::read(node.agent.path("/opt/a")).unwrap(), data);
}

#[test]
fn mirrors_are_tried_in_order_and_wrong_bytes_are_discarded() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(5, MIB);
    mirror.put("/m2/kubelet", data.clone());
    mirror.always("/m2/kubelet", Fault::WrongBytes);
    mirror.put("/upstream/kubelet", data.clone());
    let spec = format!(
        "downloads:\n  mirrors:\n    - upstream: {}\n      mirrors: [{}, {}]\n{}",
        mirror.url("/upstream/"),
        mirror.url("/m1/"),
        mirror.url("/m2/"),
        assets(&[plain(
            "kubelet",
            &sha256(&data),
            &[mirror.url("/upstream/kubelet")],
            "/usr/bin/kubelet"
        )])
    );
    let run = node.apply(&spec);
    run.expect_code(0);
    let order: Vec<(String, u16)> = mirror
        .hits()
        .into_iter()
        .map(|h| (h.path, h.status))
        .collect();
    assert_eq!(
        order,
        [
            ("/m1/kubelet".to_owned(), 404),
            ("/m2/kubelet".to_owned(), 200),
            ("/upstream/kubelet".to_owned(), 200)
        ]
    );
    assert!(run.stderr.contains("sha256 mismatch"), "{}", run.stderr);
    assert_eq!(
        std::fs::read(node.agent.path("/usr/bin/kubelet")).unwrap(),
        data
    );
    assert!(cache_leftovers(&node).is_empty());
}

#[test]
fn redirects_are_followed() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(6, MIB);
    mirror.put("/new/a", data.clone());
    mirror.redirect("/old/a", &mirror.url("/new/a"));
    node.apply(&assets(&[plain(
        "a",
        &sha256(&data),
        &[mirror.url("/old/a")],
        "/opt/a",
    )]))
    .expect_code(0);
    let statuses: Vec<(String, u16)> = mirror
        .hits()
        .into_iter()
        .map(|h| (h.path, h.status))
        .collect();
    assert_eq!(
        statuses,
        [("/old/a".to_owned(), 302), ("/new/a".to_owned(), 200)]
    );
}

#[test]
fn a_too_slow_transfer_moves_on_to_the_next_url_and_keeps_its_bytes() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(7, 2 * MIB);
    mirror.put("/slow/a", data.clone());
    mirror.set_rate("/slow/a", Some(256 * 1024));
    mirror.put("/fast/a", data.clone());
    let spec = format!(
        "downloads:\n  maxSeconds: 1\n{}",
        assets(&[plain(
            "a",
            &sha256(&data),
            &[mirror.url("/slow/a"), mirror.url("/fast/a")],
            "/opt/a"
        )])
    );
    let run = node.apply(&spec);
    run.expect_code(0);
    assert!(
        run.stderr.contains("took longer than the 1s"),
        "{}",
        run.stderr
    );
    // The fast mirror was asked only for the rest.
    let fast = ranges(&mirror, "/fast/a");
    assert_eq!(fast.len(), 1);
    assert!(fast[0].is_some_and(|o| o > 0), "{fast:?}");
    assert_eq!(std::fs::read(node.agent.path("/opt/a")).unwrap(), data);
}

#[test]
fn when_every_url_fails_the_error_lists_each_with_its_own_failure() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(8, MIB);
    mirror.put("/wrong/a", data.clone());
    mirror.always("/wrong/a", Fault::WrongBytes);
    mirror.put("/down/a", data.clone());
    mirror.always("/down/a", Fault::Status(503));
    let urls = [
        mirror.url("/missing/a"),
        mirror.url("/wrong/a"),
        mirror.url("/down/a"),
    ];
    let spec = format!(
        "downloads:\n  retrySeconds: 3\n{}",
        assets(&[plain("a", &sha256(&data), &urls, "/opt/a")])
    );
    let run = node.apply(&spec);
    run.expect_code(5);
    let err = &run.stderr;
    assert!(err.contains("downloading a (sha256 "), "{err}");
    assert!(err.contains("every URL failed"), "{err}");
    assert!(
        err.contains(&format!("    - {}: HTTP 404 Not Found", urls[0])),
        "{err}"
    );
    assert!(
        err.contains(&format!("    - {}: sha256 mismatch", urls[1])),
        "{err}"
    );
    assert!(
        err.contains(&format!("    - {}: HTTP 503 Service Unavailable", urls[2])),
        "{err}"
    );
    // The 503 URL was retried in later rounds, the dead ones were not.
    assert!(mirror.hits_for("/down/a").len() >= 2);
    assert_eq!(mirror.hits_for("/missing/a").len(), 1);
    // Nothing installed, nothing half-downloaded left behind.
    assert!(!node.agent.path("/opt/a").exists());
    assert!(cache_leftovers(&node).is_empty());
    assert!(
        !node
            .agent
            .path(&format!("/var/cache/nodewright/sha256/{}", sha256(&data)))
            .exists()
    );
}

#[test]
fn a_damaged_cache_entry_is_never_installed_and_is_fetched_again() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let data = bytes(9, MIB);
    mirror.put("/a", data.clone());
    let spec = assets(&[plain("a", &sha256(&data), &[mirror.url("/a")], "/opt/a")]);
    node.apply(&spec).expect_code(0);
    // Damage the cached copy (same size) and lose the installed file.
    let blob = node
        .agent
        .path(&format!("/var/cache/nodewright/sha256/{}", sha256(&data)));
    std::fs::write(&blob, bytes(10, MIB)).unwrap();
    std::fs::remove_file(node.agent.path("/opt/a")).unwrap();
    mirror.clear_log();
    let run = node.apply(&spec);
    run.expect_code(0);
    assert!(run.stderr.contains("damaged"), "{}", run.stderr);
    assert_eq!(mirror.hits_for("/a").len(), 1, "fetched again");
    assert_eq!(std::fs::read(node.agent.path("/opt/a")).unwrap(), data);
    assert_eq!(std::fs::read(&blob).unwrap(), data);
}

#[test]
fn cache_verify_and_prune() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let old = bytes(11, MIB);
    let new = bytes(12, MIB);
    mirror.put("/old", old.clone());
    mirror.put("/new", new.clone());
    node.apply(&assets(&[plain(
        "a",
        &sha256(&old),
        &[mirror.url("/old")],
        "/opt/a",
    )]))
    .expect_code(0);
    node.apply(&assets(&[plain(
        "a",
        &sha256(&new),
        &[mirror.url("/new")],
        "/opt/a",
    )]))
    .expect_code(0);
    let blob = |data: &[u8]| {
        node.agent
            .path(&format!("/var/cache/nodewright/sha256/{}", sha256(data)))
    };
    assert!(blob(&old).exists() && blob(&new).exists());
    std::fs::create_dir_all(node.agent.path("/var/cache/nodewright/tmp")).unwrap();
    std::fs::write(
        node.agent
            .path("/var/cache/nodewright/tmp/dead.999999.part"),
        b"x",
    )
    .unwrap();

    let verify = node.agent.run(&["cache", "verify"]);
    verify.expect_code(0);
    assert!(
        verify.stdout.contains("Verified 2 cached assets"),
        "{}",
        verify.stdout
    );

    let prune = node.agent.run(&["cache", "prune"]);
    prune.expect_code(0);
    assert!(
        !blob(&old).exists(),
        "the old asset is no longer referenced"
    );
    assert!(blob(&new).exists(), "the current one is kept");
    assert!(cache_leftovers(&node).is_empty(), "leftovers removed");
    assert!(
        prune
            .stdout
            .contains(&format!("removed sha256/{}", sha256(&old))),
        "{}",
        prune.stdout
    );

    std::fs::write(blob(&new), b"damaged").unwrap();
    let verify = node.agent.run(&["cache", "verify", "--remove-damaged"]);
    verify.expect_code(5);
    assert!(
        verify
            .stderr
            .contains(&format!("damaged: sha256/{}", sha256(&new))),
        "{}",
        verify.stderr
    );
    assert!(!blob(&new).exists());
}

#[test]
fn s3_urls_use_the_instance_role_and_fall_through_like_any_other() {
    let moto = Moto::start();
    let front = AwsFront::start(moto.url());
    let node = AssetNode::with_aws(&front.url());
    let data = bytes(13, 2 * MIB);
    moto.put_object("corp-assets", "k8s/v1.33.4/kubelet", &data);
    // The first mirror lacks the object; S3 throttles the first request to the second.
    front.fail(
        Some(1),
        |seen| seen.method == "GET" && seen.path.ends_with("/k8s/v1.33.4/kubelet"),
        Canned::s3_error(503, "SlowDown", "Please reduce your request rate."),
    );
    let spec = format!(
        "downloads:\n  airgapped: true\n  mirrors:\n    - upstream: https://dl.k8s.io/\n      mirrors: [s3://corp-assets/missing/, s3://corp-assets/k8s/]\n{}",
        assets(&[plain(
            "kubelet",
            &sha256(&data),
            &["https://dl.k8s.io/v1.33.4/kubelet".to_owned()],
            "/usr/local/bin/kubelet"
        )])
    );
    // Air-gapped: the upstream (dl.k8s.io) is never tried.
    let run = node.apply(&spec);
    run.expect_code(0);
    assert!(run.stderr.contains("NoSuchKey"), "{}", run.stderr);
    assert_eq!(
        std::fs::read(node.agent.path("/usr/local/bin/kubelet")).unwrap(),
        data
    );
    let gets: Vec<String> = front
        .log()
        .into_iter()
        .filter(|l| l.method == "GET")
        .map(|l| format!("{} {}", l.path, l.status))
        .collect();
    assert_eq!(
        gets,
        [
            "/corp-assets/missing/v1.33.4/kubelet 404",
            "/corp-assets/k8s/v1.33.4/kubelet 503",
            "/corp-assets/k8s/v1.33.4/kubelet 200"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
        "{gets:?}"
    );
}

#[test]
fn long_downloads_log_their_progress() {
    let mirror = Mirror::start();
    let mut node = AssetNode::new();
    node.agent.set_env("NODEWRIGHT_PROGRESS_SECONDS", "0.3");
    let data = bytes(14, 2 * MIB);
    mirror.put("/a", data.clone());
    mirror.set_rate("/a", Some(MIB as u64));
    let run = node.apply(&assets(&[plain(
        "a",
        &sha256(&data),
        &[mirror.url("/a")],
        "/opt/a",
    )]));
    run.expect_code(0);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("downloading: ") && l.contains(" of 2.0 MiB ("))
        .collect();
    assert!(lines.len() >= 3, "{}", run.stderr);
    assert!(run.stderr.contains("downloaded: 2.0 MiB"), "{}", run.stderr);
}

#[test]
fn a_member_lost_from_the_cache_is_extracted_again_without_a_download() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let release = Release::publish(&mirror, 1, 1);
    let spec = release.spec(&mirror);
    node.apply(&spec).expect_code(0);
    let archive_sha = sha256(&mirror_body(&mirror, &release.archive_path));
    let tree = node.agent.path(&format!(
        "/var/cache/nodewright/extracted/{archive_sha}/tree"
    ));
    std::fs::remove_file(tree.join("bin/ctr")).unwrap();
    std::fs::write(tree.join("bin/containerd"), b"damaged").unwrap();
    std::fs::remove_file(node.agent.path("/usr/local/bin/ctr")).unwrap();
    std::fs::remove_file(node.agent.path("/usr/local/bin/containerd")).unwrap();
    mirror.clear_log();
    node.apply(&spec).expect_code(0);
    assert!(mirror.hits().is_empty(), "{:?}", mirror.hits());
    assert_eq!(
        std::fs::read(node.agent.path("/usr/local/bin/ctr")).unwrap(),
        release.ctr
    );
    assert_eq!(
        std::fs::read(node.agent.path("/usr/local/bin/containerd")).unwrap(),
        release.containerd
    );
}
