//! Golden snapshots of every file the model renders for the example specs and the test
//! cases, kept as a real tree under `tests/golden/<case>/`:
//!
//! - `files/<node path>`: each rendered file, byte for byte;
//! - `desired.txt`: everything else the model decides (modes and owners, directories,
//!   links, files from assets, packages, blocks, services with their inputs).
//!
//! Set `NODEWRIGHT_UPDATE_GOLDEN=1` to rewrite them, then review the diff.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{CASES, golden_dir, render_case};
use nodewright::model::DesiredState;

fn update() -> bool {
    std::env::var_os("NODEWRIGHT_UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty())
}

/// The summary of what is not a file's bytes.
fn summary(desired: &DesiredState) -> String {
    let mut out = String::new();
    let owner = |o: &nodewright::model::Ownership| format!("{} {}:{}", o.mode, o.owner, o.group);
    out.push_str("directories:\n");
    for dir in &desired.directories {
        out.push_str(&format!("  {} {}\n", dir.path, owner(&dir.ownership)));
    }
    out.push_str("files:\n");
    for file in &desired.files {
        let secret = if file.secret { " secret" } else { "" };
        out.push_str(&format!(
            "  {} {}{secret}\n",
            file.path,
            owner(&file.ownership)
        ));
    }
    out.push_str("symlinks:\n");
    for link in &desired.symlinks {
        out.push_str(&format!("  {} -> {}\n", link.path, link.target));
    }
    out.push_str("files from assets:\n");
    for file in &desired.asset_files {
        let member = file
            .member
            .as_deref()
            .map(|m| format!(":{m}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {} {} <- {}{member}\n",
            file.path,
            owner(&file.ownership),
            file.asset
        ));
    }
    out.push_str(&format!("modules: {}\n", desired.modules.join(", ")));
    match &desired.packages {
        Some(p) => out.push_str(&format!(
            "packages ({}): {}\n",
            p.manager.as_str(),
            p.names.join(", ")
        )),
        None => out.push_str("packages: none\n"),
    }
    out.push_str(&format!("swap off: {}\n", desired.swap_off));
    out.push_str("blocks:\n");
    for block in &desired.blocks {
        out.push_str(&format!("  {} ({}):\n", block.path, block.name));
        for line in block.lines.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out.push_str("services, in start order:\n");
    for service in &desired.services {
        out.push_str(&format!(
            "  {} enabled={} running={}{}\n",
            service.unit,
            service.enabled,
            service.running,
            if service.ready_with_peers {
                " (started without waiting: ready with its peers)"
            } else {
                ""
            }
        ));
        for input in &service.inputs {
            out.push_str(&format!("    input {input}\n"));
        }
    }
    out
}

/// Every file of a golden tree, relative path to bytes.
fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(here) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&here) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_owned();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn expected_tree(desired: &DesiredState) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out: BTreeMap<PathBuf, Vec<u8>> = desired
        .files
        .iter()
        .map(|f| {
            (
                Path::new("files").join(f.path.relative()),
                f.content.bytes().to_vec(),
            )
        })
        .collect();
    out.insert("desired.txt".into(), summary(desired).into_bytes());
    out
}

#[test]
fn rendered_files_match_the_goldens() {
    let mut failures = Vec::new();
    for case in CASES {
        let desired = render_case(case);
        let expected = expected_tree(&desired);
        let dir = golden_dir(case.name);
        if update() {
            let _ = std::fs::remove_dir_all(&dir);
            for (path, bytes) in &expected {
                let full = dir.join(path);
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(full, bytes).unwrap();
            }
            continue;
        }
        let actual = read_tree(&dir);
        for (path, bytes) in &expected {
            match actual.get(path) {
                None => failures.push(format!(
                    "{}: {} is not in the goldens",
                    case.name,
                    path.display()
                )),
                Some(golden) if golden != bytes => failures.push(format!(
                    "{}: {} differs from its golden:\n--- golden\n{}\n--- rendered\n{}",
                    case.name,
                    path.display(),
                    String::from_utf8_lossy(golden),
                    String::from_utf8_lossy(bytes)
                )),
                Some(_) => {}
            }
        }
        for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
            failures.push(format!(
                "{}: golden {} is no longer rendered",
                case.name,
                path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\n(NODEWRIGHT_UPDATE_GOLDEN=1 rewrites the goldens; review the diff.)",
        failures.join("\n")
    );
}
