//! A bare `String` error stays inside the module that made it. A function that returns
//! `Result<_, String>` (a validator's message, a private helper) may be seen at most
//! inside its own top-level module (`pub(in crate::<module>)`, `pub(super)` below it,
//! or private), so the compiler refuses any caller outside; what crosses a module is a
//! typed error with its class (`error::Classified`, docs/architecture.md, "Errors").

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::path::Path;

use support::{sources, without_comment_lines};

/// A function's visibility and return type, as written.
#[derive(Debug, PartialEq)]
struct Signature {
    name: String,
    line: usize,
    visibility: String,
    returns: String,
}

/// Every `fn` of a file (comment lines left out), with what precedes it on its line
/// and the type after `->`, up to its body or `;`.
fn signatures(text: &str) -> Vec<Signature> {
    let code = without_comment_lines(text);
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("fn ") {
        let start = from + at;
        from = start + 3;
        let before = &code[..start];
        let starts_word = before
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || c == '(');
        if !starts_word {
            continue;
        }
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let prefix = before[line_start..].trim();
        let rest = &code[start + 3..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let end = rest.find(['{', ';']).unwrap_or(rest.len());
        let head = &rest[..end];
        let Some(arrow) = head.find("->") else {
            continue;
        };
        let returns = head[arrow + 2..].split(" where").next().unwrap().trim();
        found.push(Signature {
            name,
            line: before.matches('\n').count() + 1,
            visibility: prefix
                .trim_end_matches("async")
                .trim_end_matches("const")
                .trim()
                .to_owned(),
            returns: returns.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    found
}

/// `Result<T, String>`: the last type argument is a bare String.
fn string_error(returns: &str) -> bool {
    returns.starts_with("Result<") && returns.ends_with(", String>")
}

/// Whether `visibility`, on a function of the file at `module_path` (its path under
/// `agent/src`, as modules), keeps it inside that path's top-level module.
fn stays_inside(visibility: &str, module_path: &[String]) -> bool {
    let top = &module_path[0];
    match visibility {
        "" | "pub(self)" => true,
        // The parent of a module nested in the top-level one is still inside it.
        "pub(super)" => module_path.len() >= 2,
        _ => visibility
            .strip_prefix("pub(in crate::")
            .and_then(|v| v.strip_suffix(')'))
            .is_some_and(|path| path.split("::").next() == Some(top.as_str())),
    }
}

/// `agent/src/controlplane/etcd/store.rs` → `controlplane::etcd::store`; a `mod.rs`
/// is its directory's module.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

#[test]
fn string_errors_stay_inside_their_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources(&src);
    let mut crossing = Vec::new();
    let mut checked = 0;
    for file in &files {
        let path = module_path(&src, file);
        if path.len() == 1 && (path[0] == "lib" || path[0] == "main") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for sig in signatures(&text) {
            if !string_error(&sig.returns) {
                continue;
            }
            checked += 1;
            if !stays_inside(&sig.visibility, &path) {
                crossing.push(format!(
                    "{}:{} `{} fn {} -> {}` can be called outside `{}`: return a typed error, or narrow it to `pub(in crate::{})`",
                    file.strip_prefix(&src).unwrap().display(),
                    sig.line,
                    sig.visibility,
                    sig.name,
                    sig.returns,
                    path[0],
                    path[0],
                ));
            }
        }
    }
    assert!(checked > 0, "the reader found no Result<_, String> at all");
    assert!(
        crossing.is_empty(),
        "{} String error(s) visible outside their module:\n{}",
        crossing.len(),
        crossing.join("\n")
    );
}

#[test]
fn the_reader_sees_visibility_and_multi_line_returns() {
    let text = "pub(crate) async fn a(\n    x: u8,\n) -> Result<Vec<String>, String> {\n}\n\
                // pub fn hidden() -> Result<(), String> {\n\
                pub(super) fn b() -> Result<u8, Error>;\n\
                fn c<T>(t: T) -> Result<(), String> where T: Copy {}\n";
    let sigs = signatures(text);
    let summary: Vec<(&str, &str, &str)> = sigs
        .iter()
        .map(|s| (s.name.as_str(), s.visibility.as_str(), s.returns.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", "pub(crate)", "Result<Vec<String>, String>"),
            ("b", "pub(super)", "Result<u8, Error>"),
            ("c", "", "Result<(), String>"),
        ]
    );
    assert!(string_error(&sigs[0].returns) && !string_error(&sigs[1].returns));
    let nested = ["host".to_owned(), "users".to_owned()];
    let top = ["retry".to_owned()];
    assert!(stays_inside("", &top));
    assert!(stays_inside("pub(super)", &nested));
    assert!(!stays_inside("pub(super)", &top));
    assert!(stays_inside("pub(in crate::host::users)", &nested));
    assert!(!stays_inside("pub(in crate::engine)", &nested));
    assert!(!stays_inside("pub(crate)", &nested));
    assert!(!stays_inside("pub", &nested));
}
