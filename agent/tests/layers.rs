//! The agent's modules import only downward. This is the one place the order is
//! written (docs/architecture.md draws it): a module may use modules of the layers
//! below its own, never one above, nor another module of its own layer. Every path
//! `crate::<module>` in `agent/src` counts (`use` lines, grouped `use crate::{…}`, and
//! paths written out in code); comment lines do not.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::{sources, without_comment_lines};

/// Top to bottom.
const LAYERS: &[(&str, &[&str])] = &[
    ("the command line", &["cli"]),
    ("flows", &["boot", "prebake", "watch", "ops"]),
    (
        "the control plane, the live run record, input formats",
        &["controlplane", "progress", "kops"],
    ),
    ("the engine", &["engine"]),
    ("assets and sources", &["assets", "source"]),
    ("the OS and AWS", &["host", "cloud"]),
    ("the model", &["model"]),
    ("facts", &["facts"]),
    ("spec", &["spec"]),
    ("shared utilities", &["retry", "logging"]),
    ("shared utilities", &["error", "report"]),
    ("shared utilities", &["runbook", "clock"]),
];

/// Upward imports being taken out right now by other work: (file, module it uses).
const PENDING: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// The top-level modules a file names as `crate::…`, with the line of each.
fn uses(text: &str) -> Vec<(String, usize)> {
    let code = without_comment_lines(text);
    let line_at = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the names at depth 0 of the group.
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    c if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for item in items {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((name, line_at(at)));
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((name, line_at(at)));
        }
    }
    out
}

#[test]
fn modules_import_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap();
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            problems.push(format!(
                "module {module} is in no layer: add it to LAYERS in agent/tests/layers.rs (and to docs/architecture.md)"
            ));
            continue;
        };
        seen.insert(module.clone(), own);
        let text = std::fs::read_to_string(file).unwrap();
        for (used, line) in uses(&text) {
            // Items of the crate root (`crate::VERSION`) are not modules.
            if used == module || !used.starts_with(|c: char| c.is_lowercase()) {
                continue;
            }
            match layer_of(&used) {
                None => problems.push(format!(
                    "{}:{line}: uses {used}, which is in no layer",
                    relative.display()
                )),
                Some(_) if PENDING.contains(&(&*relative.to_string_lossy(), used.as_str())) => {}
                Some(layer) if layer <= own => problems.push(format!(
                    "{}:{line}: {module} ({}) uses {used} ({}){}",
                    relative.display(),
                    LAYERS[own].0,
                    LAYERS[layer].0,
                    if layer == own {
                        ": a module of its own layer"
                    } else {
                        ": a layer above"
                    }
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports that do not run downward:\n  {}",
        problems.join("\n  ")
    );
    // The check reads something: every layer's modules exist (kops may come later).
    for (_, modules) in LAYERS {
        for module in modules.iter().filter(|m| **m != "kops") {
            assert!(
                seen.contains_key(*module),
                "no module {module} in agent/src"
            );
        }
    }
}

#[test]
fn the_reader_finds_grouped_and_written_out_paths() {
    let text = "use crate::{\n    engine::Plan,\n    host::{self, Host},\n};\n// crate::cli in a comment\nlet x = crate::model::render(a);\n";
    let found: Vec<(String, usize)> = uses(text);
    assert_eq!(
        found,
        [
            ("engine".to_owned(), 1),
            ("host".to_owned(), 1),
            ("model".to_owned(), 6)
        ]
    );
}
