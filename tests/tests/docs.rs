//! The docs cannot drift from the binaries: the spec reference is generated from the
//! schemas the binaries print, the exit codes are the ones `--help` prints, and every
//! link in the README and docs/ points at a file of this repository.
//!
//! `NODEWRIGHT_UPDATE_GOLDEN=1` rewrites docs/spec-reference.md from the schemas.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Command;

use nodewright_e2e::tools::workspace_bin;
use nodewright_e2e::workspace;
use serde_json::Value;

fn run(binary: &str, args: &[&str]) -> String {
    let out = Command::new(workspace_bin(binary))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{binary} {args:?}: {e}"));
    assert!(out.status.success(), "{binary} {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn schema(binary: &str, args: &[&str]) -> Value {
    serde_json::from_str(&run(binary, args)).expect("the schema is JSON")
}

#[test]
fn the_spec_reference_is_what_the_schemas_say() {
    let documents = [
        Document {
            title: "NodeSpec",
            command: "nodewright schema",
            intro: "What a node should be: the document in the state store (or served by controller-shim) that user data pins by sha256.",
            schema: schema("nodewright", &["schema"]),
        },
        Document {
            title: "BootConfig",
            command: "nodewright schema --boot-config",
            intro: "The document in EC2 user data: which cluster and node group, and where the node spec is.",
            schema: schema("nodewright", &["schema", "--boot-config"]),
        },
        Document {
            title: "Cluster",
            command: "nodewright-cluster schema",
            intro: "The cluster kit's input, from which it renders every node spec, the user data, IAM and CloudFormation (docs/deploy-aws.md).",
            schema: schema("nodewright-cluster", &["schema"]),
        },
    ];
    let rendered = reference(&documents);
    let path = workspace().join("docs/spec-reference.md");
    if std::env::var_os("NODEWRIGHT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == rendered,
        "docs/spec-reference.md differs from the schemas the binaries print; rewrite it with\n  NODEWRIGHT_UPDATE_GOLDEN=1 cargo nextest run --workspace --target x86_64-unknown-linux-musl -E 'binary(docs)'\nand review the diff"
    );
}

#[test]
fn the_exit_codes_page_quotes_the_help() {
    let help = run("nodewright", &["--help"]);
    let start = help
        .find("Exit codes:")
        .expect("--help lists the exit codes");
    let block = help[start..].split("\n\n").next().unwrap();
    let page = std::fs::read_to_string(workspace().join("docs/exit-codes.md")).unwrap();
    assert!(
        page.contains(&format!("```\n{block}\n```")),
        "docs/exit-codes.md must quote `nodewright --help` exactly:\n{block}"
    );
}

#[test]
fn the_docs_link_only_to_files_of_this_repository() {
    let mut pages = vec![workspace().join("README.md")];
    for entry in std::fs::read_dir(workspace().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut problems = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        problems.extend(link_problems(page, &text));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_broken_link_and_a_tracker_number_are_found() {
    let page = workspace().join("docs/example.md");
    let text = "See [x](missing.md), [y](../../outside.md), [z](pki.md#keep), as in issue 7.\n\
                `code [a](b)` is not a link\n```\n[c](d)\n```\n";
    let problems = link_problems(&page, text);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].contains("missing.md"));
    assert!(problems[1].contains("outside"));
    assert!(problems[2].contains("issue 7"));
}

/// Links that leave the repository or name no file, and tracker numbers a reader cannot
/// look up.
fn link_problems(page: &Path, text: &str) -> Vec<String> {
    let root = workspace();
    let name = page
        .strip_prefix(&root)
        .unwrap_or(page)
        .display()
        .to_string();
    let mut problems = Vec::new();
    let prose = without_code(text);
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let target = &rest[..rest.find(')').unwrap_or(rest.len())];
        let file = target.split('#').next().unwrap();
        if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
            continue;
        }
        let resolved = normalise(&page.parent().unwrap().join(file));
        if !resolved.starts_with(&root) {
            problems.push(format!("{name}: link {target} leaves the repository"));
        } else if !resolved.exists() {
            problems.push(format!("{name}: link {target} names no file"));
        }
    }
    let lower = text.to_lowercase();
    for word in ["issue ", "issues "] {
        for (at, _) in lower.match_indices(word) {
            let after = &lower[at + word.len()..];
            if after.starts_with(|c: char| c.is_ascii_digit()) {
                let number: String = after.chars().take_while(char::is_ascii_digit).collect();
                problems.push(format!(
                    "{name}: names tracker {word}{number}, which a reader cannot look up"
                ));
            }
        }
    }
    problems
}

/// The text without fenced blocks and inline code spans, where `](` is not a link.
fn without_code(text: &str) -> String {
    let mut prose = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            // Every other backtick-delimited piece is code.
            let pieces = line.split('`').step_by(2);
            prose.extend(pieces);
            prose.push('\n');
        }
    }
    prose
}

fn normalise(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

struct Document {
    title: &'static str,
    command: &'static str,
    intro: &'static str,
    schema: Value,
}

fn reference(documents: &[Document]) -> String {
    let mut out = String::from(
        "# Spec reference\n\n\
         For whoever writes node specs, boot configurations or cluster files: every field,\n\
         its type, its default and what it means. Generated from the schemas the binaries\n\
         print; do not edit by hand (`tests/tests/docs.rs` fails when this page and the\n\
         binaries disagree, and `NODEWRIGHT_UPDATE_GOLDEN=1` rewrites it). Unknown fields are\n\
         refused, with the field's path and line.\n\n",
    );
    for document in documents {
        out.push_str(&format!(
            "- [{}](#{})\n",
            document.title,
            anchor(document.title, "")
        ));
    }
    for document in documents {
        out.push('\n');
        out.push_str(&render_document(document));
    }
    out
}

fn anchor(document: &str, definition: &str) -> String {
    let id = if definition.is_empty() {
        document.to_string()
    } else {
        format!("{document}-{definition}")
    };
    id.to_lowercase()
}

fn render_document(document: &Document) -> String {
    let defs = document.schema["$defs"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut out = format!(
        "<a id=\"{}\"></a>\n\n## {} (`{}`)\n\n{}\n\n",
        anchor(document.title, ""),
        document.title,
        document.command,
        document.intro
    );
    if let Some(text) = description(&document.schema) {
        out.push_str(&text);
        out.push_str("\n\n");
    }
    out.push_str(&fields(document.title, &document.schema, &defs));
    // Each definition once, in the order a reader meets it from the top.
    let mut seen = BTreeMap::new();
    let mut queue: VecDeque<String> = refs(&document.schema).into();
    let mut order = Vec::new();
    while let Some(name) = queue.pop_front() {
        if seen.insert(name.clone(), ()).is_some() {
            continue;
        }
        let Some(def) = defs.get(&name) else { continue };
        queue.extend(refs(def));
        order.push(name);
    }
    for name in order {
        let def = &defs[&name];
        out.push_str(&format!(
            "\n<a id=\"{}\"></a>\n\n### {}: `{}`\n\n",
            anchor(document.title, &name),
            document.title,
            name
        ));
        if let Some(text) = description(def) {
            out.push_str(&text);
            out.push_str("\n\n");
        }
        if def.get("properties").is_some() {
            out.push_str(&fields(document.title, def, &defs));
        } else {
            out.push_str(&format!("Type: {}.\n", type_of(document.title, def)));
            if let Some(values) = described_values(def) {
                out.push('\n');
                out.push_str(&values);
            }
        }
    }
    out
}

/// The `$ref` names directly under a schema, in document order.
fn refs(value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect_refs(value, &mut found);
    found
}

fn collect_refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref")
                && let Some(name) = target.strip_prefix("#/$defs/")
            {
                found.push(name.to_string());
            }
            for (key, inner) in map {
                if key != "$defs" {
                    collect_refs(inner, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, found)),
        _ => {}
    }
}

fn description(value: &Value) -> Option<String> {
    value["description"].as_str().map(|text| {
        // Paragraphs stay paragraphs; lines within one are joined.
        text.split("\n\n")
            .map(|p| p.split('\n').collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n\n")
    })
}

fn fields(document: &str, object: &Value, defs: &serde_json::Map<String, Value>) -> String {
    let Some(properties) = object["properties"].as_object() else {
        return String::new();
    };
    let required: Vec<&str> = object["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out =
        String::from("| field | type | required or default | meaning |\n|---|---|---|---|\n");
    for (name, field) in properties {
        let presence = if required.contains(&name.as_str()) {
            "required".to_string()
        } else if let Some(default) = field.get("default") {
            format!("`{}`", serde_json::to_string(default).unwrap())
        } else {
            String::new()
        };
        let meaning = description(field)
            .or_else(|| named_description(field, defs))
            .unwrap_or_default()
            .replace("\n\n", "<br><br>");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            name,
            cell(&type_of(document, field)),
            cell(&presence),
            cell(&meaning)
        ));
    }
    out
}

/// For a field that only names a definition: the first paragraph of that definition's
/// description.
fn named_description(field: &Value, defs: &serde_json::Map<String, Value>) -> Option<String> {
    let name = refs(field).into_iter().next()?;
    let text = description(defs.get(&name)?)?;
    Some(text.split("\n\n").next().unwrap_or_default().to_string())
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A field's type in words, with links to the definitions it names.
fn type_of(document: &str, value: &Value) -> String {
    if let Some(target) = value["$ref"].as_str() {
        let name = target.trim_start_matches("#/$defs/");
        return format!("[{name}](#{})", anchor(document, name));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(variants) = value[key].as_array() {
            let present: Vec<&Value> = variants.iter().filter(|v| v["type"] != "null").collect();
            if present.iter().all(|v| v.get("const").is_some()) {
                return present
                    .iter()
                    .map(|v| format!("`{}`", v["const"].as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ");
            }
            return present
                .iter()
                .map(|v| type_of(document, v))
                .collect::<Vec<_>>()
                .join(" or ");
        }
    }
    if let Some(values) = value["enum"].as_array() {
        return values
            .iter()
            .map(|v| {
                format!(
                    "`{}`",
                    v.as_str().map(str::to_string).unwrap_or(v.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
    }
    if let Some(constant) = value.get("const") {
        return format!(
            "`{}`",
            constant
                .as_str()
                .map(str::to_string)
                .unwrap_or(constant.to_string())
        );
    }
    let kinds: Vec<&str> = match &value["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .filter(|k| *k != "null")
            .collect(),
        _ => vec![],
    };
    match kinds.first().copied() {
        Some("array") => format!("list of {}", type_of(document, &value["items"])),
        Some("object") => match (
            &value["additionalProperties"],
            value["patternProperties"].as_object(),
        ) {
            (Value::Object(_), _) => format!(
                "map of name to {}",
                type_of(document, &value["additionalProperties"])
            ),
            (_, Some(patterns)) => {
                let (_, inner) = patterns.iter().next().unwrap();
                format!("map of name to {}", type_of(document, inner))
            }
            _ => "object".to_string(),
        },
        Some("string") => match value["pattern"].as_str() {
            Some(pattern) => format!("string matching `{pattern}`"),
            None => "string".to_string(),
        },
        Some(kind) => kind.to_string(),
        None => "any".to_string(),
    }
}

/// An enumeration whose values carry their own descriptions, as a list.
fn described_values(value: &Value) -> Option<String> {
    let variants = value["oneOf"].as_array()?;
    let mut out = String::new();
    for variant in variants {
        let constant = variant["const"].as_str()?;
        let text = description(variant)
            .unwrap_or_default()
            .replace("\n\n", " ");
        out.push_str(&format!("- `{constant}`: {text}\n"));
    }
    Some(out)
}
