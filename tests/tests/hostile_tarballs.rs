//! Hostile archives: absolute paths, `..`, symlinks and hard links that point outside,
//! writes through links, device nodes, fifos, oversized entries and totals. Each is
//! refused, and nothing lands outside the extraction directory.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use nodewright::assets::Limits;
use nodewright::assets::extract::{ExtractError, extract_tar_gz};
use nodewright_e2e::assetkit::{AssetNode, Entry, bytes, sha256, tar_gz};
use nodewright_e2e::mirror::Mirror;
use nodewright_e2e::tree::snapshot;

fn file(name: &str) -> Entry {
    Entry::file(name, b"payload\n")
}

/// Extracts `entries` into `<tmp>/out` and returns the error, after checking that the
/// temp directory holds nothing but the archive and `out/`.
fn refused(entries: &[Entry], limits: Limits) -> String {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive.tgz");
    let bytes = tar_gz(entries);
    std::fs::write(&archive, &bytes).unwrap();
    let result = extract_tar_gz(&archive, &sha256(&bytes), &dir.path().join("out"), limits);
    let outside: Vec<String> = snapshot(dir.path())
        .into_keys()
        .map(|p| p.display().to_string())
        .filter(|p| p != "archive.tgz" && p != "out" && !p.starts_with("out/"))
        .collect();
    assert!(outside.is_empty(), "landed outside: {outside:?}");
    match result {
        Ok(manifest) => panic!(
            "accepted: {:?}",
            manifest.members.keys().collect::<Vec<_>>()
        ),
        Err(e) => e.to_string(),
    }
}

fn assert_refused(entries: &[Entry], expect: &str) {
    let error = refused(entries, Limits::default());
    assert!(error.contains(expect), "{error}");
}

#[test]
fn absolute_paths() {
    let target = format!("/tmp/nodewright-hostile-{}", std::process::id());
    assert_refused(&[file(&target)], "absolute paths are not allowed");
    assert!(!std::path::Path::new(&target).exists());
}

#[test]
fn dot_dot() {
    assert_refused(&[file("../escape")], "`..` is not allowed");
    assert_refused(&[file("bin/../../escape")], "`..` is not allowed");
}

#[test]
fn symlinks_that_escape() {
    let link = |target: &str| Entry::Symlink {
        name: "bin/link".into(),
        target: target.into(),
    };
    assert_refused(&[link("../../outside")], "points outside the archive");
    assert_refused(&[link("/etc")], "symlink to the absolute path /etc");
}

#[test]
fn writing_through_a_link_inside_the_archive() {
    assert_refused(
        &[
            Entry::Dir {
                name: "sub/".into(),
            },
            Entry::Symlink {
                name: "d".into(),
                target: "sub".into(),
            },
            file("d/x"),
        ],
        "writing through a link is not allowed",
    );
}

#[test]
fn hard_links_that_escape() {
    let link = |target: &str| Entry::HardLink {
        name: "h".into(),
        target: target.into(),
    };
    assert_refused(&[link("../outside")], "points outside the archive");
    assert_refused(&[link("/etc/passwd")], "points outside the archive");
    assert_refused(
        &[link("not-in-the-archive")],
        "not an earlier file of the archive",
    );
}

#[test]
fn device_nodes_and_fifos() {
    let device = |block| Entry::Device {
        name: "dev/sda".into(),
        block,
    };
    assert_refused(&[device(false)], "device nodes are not allowed");
    assert_refused(&[device(true)], "device nodes are not allowed");
    assert_refused(
        &[Entry::Fifo {
            name: "pipe".into(),
        }],
        "fifos are not allowed",
    );
}

#[test]
fn oversized_entries_and_totals() {
    // A header claiming 3 GiB is refused before a byte is read.
    assert_refused(
        &[Entry::Claimed {
            name: "big".into(),
            size: 3 << 30,
        }],
        "more than the 2147483648 a member may have",
    );
    let small = Limits {
        max_entry_bytes: 4096,
        max_total_bytes: 10_000,
        max_entries: 10,
    };
    let kib = |name: &str, n: usize| Entry::file(name, &vec![7u8; n * 1024]);
    let error = refused(&[kib("a", 5)], small);
    assert!(error.contains("a member may have"), "{error}");
    let error = refused(&[kib("a", 4), kib("b", 4), kib("c", 4)], small);
    assert!(error.contains("allowed in all"), "{error}");
    let many: Vec<Entry> = (0..11).map(|i| file(&format!("f{i}"))).collect();
    let error = refused(&many, small);
    assert!(error.contains("more than 10 entries"), "{error}");
}

#[test]
fn duplicates_and_a_wrong_digest() {
    assert_refused(&[file("a"), file("a")], "appears twice");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tgz");
    std::fs::write(&archive, tar_gz(&[file("a")])).unwrap();
    let error = extract_tar_gz(
        &archive,
        &"0".repeat(64),
        &dir.path().join("out"),
        Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(error, ExtractError::Digest { .. }), "{error}");
}

#[test]
fn a_well_formed_archive_with_links_inside_extracts() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("ok.tgz");
    let data = bytes(1, 100_000);
    let archive_bytes = tar_gz(&[
        Entry::Dir { name: "./".into() },
        Entry::file("./bin/tool", &data),
        Entry::Symlink {
            name: "./bin/alias".into(),
            target: "tool".into(),
        },
        Entry::HardLink {
            name: "./bin/copy".into(),
            target: "./bin/tool".into(),
        },
    ]);
    std::fs::write(&archive, &archive_bytes).unwrap();
    let manifest = extract_tar_gz(
        &archive,
        &sha256(&archive_bytes),
        &dir.path().join("out"),
        Limits::default(),
    )
    .unwrap();
    let (name, digest) = manifest.resolve("bin/alias").unwrap();
    assert_eq!(
        (name.as_str(), digest),
        ("bin/tool", sha256(&data).as_str())
    );
    assert_eq!(manifest.resolve("bin/copy").unwrap().1, sha256(&data));
    assert_eq!(
        std::fs::read(dir.path().join("out/bin/copy")).unwrap(),
        data
    );
    assert!(
        manifest
            .resolve("bin/none")
            .unwrap_err()
            .contains("no member bin/none")
    );
}

#[test]
fn through_the_agent_a_hostile_archive_installs_nothing() {
    let mirror = Mirror::start();
    let node = AssetNode::new();
    let archive = tar_gz(&[file("bin/ok"), file("../../etc/cron.d/evil")]);
    mirror.put("/evil.tgz", archive.clone());
    let run = node.apply(&format!(
        "assets:\n  - name: evil\n    sha256: {}\n    urls: [{}]\n    archive: tar.gz\n    install:\n      - member: bin/ok\n        path: /usr/local/bin/ok\n",
        sha256(&archive),
        mirror.url("/evil.tgz")
    ));
    run.expect_code(5);
    // The download worked: what failed is the extraction, and it says so.
    assert!(
        run.stderr
            .contains("  - extract evil (failed: extracting evil: "),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("  - download evil"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("extracting evil: entry \"../../etc/cron.d/evil\": `..` is not allowed")
            && run.stderr.contains("nothing was installed from it"),
        "{}",
        run.stderr
    );
    let files: Vec<String> = snapshot(node.agent.root())
        .into_iter()
        .filter(|(_, e)| e.kind == "file")
        .map(|(p, _)| p.display().to_string())
        // The harness's seed, the host defaults every spec gets (they do not depend on
        // the archive, so they are applied) and nodewright's own records.
        .filter(|p| {
            ![
                "etc/os-release",
                "etc/sysctl.d/99-nodewright.conf",
                "etc/modules-load.d/nodewright.conf",
            ]
            .contains(&p.as_str())
                && (!p.starts_with("var/lib/nodewright/") || p == "var/lib/nodewright/state.json")
        })
        .collect();
    // Only the downloaded archive itself (and the state) are on disk.
    assert_eq!(
        files,
        [
            format!("var/cache/nodewright/sha256/{}", sha256(&archive)),
            "var/lib/nodewright/state.json".to_owned()
        ],
        "{files:?}"
    );
}
