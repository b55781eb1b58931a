//! nodewright against kops's nodeup goldens: the same inputs, written as a nodewright
//! spec, rendered and compared by meaning (parsed TOML and YAML, unit directives, flag
//! sets, installed binaries). Every difference must be listed, with its reason, in
//! docs/kops-differences.md, and everything listed there must still differ.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nodewright::model::{DesiredState, Facts, desired_state};
use nodewright::spec::NodeSpec;
use serde::Deserialize;
use serde_json::Value;

const ABSENT: &str = "—";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    case: String,
    file: String,
    key: String,
    kops: String,
    ours: String,
}

impl Row {
    fn render(&self) -> String {
        let cell = |v: &str| {
            if v == ABSENT {
                ABSENT.to_owned()
            } else {
                format!("`{v}`")
            }
        };
        format!(
            "| {} | {} | {} | {} | {} |",
            self.case,
            self.file,
            cell(&self.key),
            cell(&self.kops),
            cell(&self.ours)
        )
    }
}

struct Diff {
    case: &'static str,
    rows: Vec<Row>,
}

impl Diff {
    fn new(case: &'static str) -> Self {
        Self {
            case,
            rows: Vec::new(),
        }
    }

    fn maps(
        &mut self,
        file: &str,
        kops: &BTreeMap<String, String>,
        ours: &BTreeMap<String, String>,
    ) {
        let keys: BTreeSet<&String> = kops.keys().chain(ours.keys()).collect();
        for key in keys {
            let (k, o) = (kops.get(key), ours.get(key));
            if k != o {
                self.rows.push(Row {
                    case: self.case.to_owned(),
                    file: file.to_owned(),
                    key: key.clone(),
                    kops: k.cloned().unwrap_or_else(|| ABSENT.to_owned()),
                    ours: o.cloned().unwrap_or_else(|| ABSENT.to_owned()),
                });
            }
        }
    }
}

fn fixture(case: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kops")
        .join(case)
        .join("tasks.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// kops's file tasks: path to contents (text), or to the asset member for binaries.
fn kops_files(docs: &[Value]) -> BTreeMap<String, Value> {
    docs.iter()
        .filter_map(|d| Some((d.get("path")?.as_str()?.to_owned(), d.clone())))
        .collect()
}

fn kops_text<'a>(files: &'a BTreeMap<String, Value>, path: &str) -> &'a str {
    files[path]["contents"].as_str().unwrap()
}

fn kops_service<'a>(docs: &'a [Value], name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d.get("Name").and_then(Value::as_str) == Some(name))
        .unwrap()
}

/// The assets kops's cases install from, with placeholder digests (never downloaded).
const KOPS_ASSETS: &str = "assets:
  - name: containerd
    sha256: 9d68969855fbf676cdb8ed758e420fb048d61f984f61de3e53eddfebe484d168
    urls: [https://github.com/containerd/containerd/releases/download/v2.3.4/containerd-2.3.4-linux-amd64.tar.gz]
    archive: tar.gz
  - name: runc
    sha256: f6ae8efc0fa40079e1475e97cbe9d1bd3f106a28d6af78a11d9f1bd565515e60
    urls: [https://github.com/opencontainers/runc/releases/download/v1.4.3/runc.amd64]
  - name: kubelet
    sha256: 5c0d28cea2a3a5c91861dda088a29d56c1b027e184dae1d792686f0710750076
    urls: [https://dl.k8s.io/release/v1.34.0/bin/linux/amd64/kubelet]
";

fn render(spec: &str) -> DesiredState {
    let pem =
        std::fs::read_to_string(common::workspace().join("examples/worker/nodespec.yaml")).unwrap();
    let start = pem.find("  caCertificate: |").unwrap();
    let end = pem.find("role: worker").unwrap();
    let text = format!(
        "apiVersion: nodewright.io/v1alpha1
kind: NodeSpec
cluster:
  name: minimal.example.com
  kubernetesVersion: 1.28.0
  serviceCidr: 100.64.0.0/13
  podCidr: 100.96.0.0/11
  dnsIp: 100.64.0.10
  api:
    name: api.internal.minimal.example.com
{}role: worker
{KOPS_ASSETS}{spec}",
        &pem[start..end]
    );
    let spec = NodeSpec::parse("kops comparison", &text).unwrap_or_else(|e| panic!("{e}"));
    desired_state(&spec, &Facts::example()).unwrap()
}

fn ours<'a>(desired: &'a DesiredState, path: &str) -> &'a str {
    std::str::from_utf8(desired.file(path).unwrap().content.bytes()).unwrap()
}

/// A TOML document as `dotted.key -> value`, arrays as whole values.
fn flat_toml(text: &str) -> BTreeMap<String, String> {
    fn walk(table: &toml::Table, at: &str, out: &mut BTreeMap<String, String>) {
        for (key, value) in table {
            let key = if key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
            {
                key.clone()
            } else {
                format!("{key:?}")
            };
            let path = if at.is_empty() {
                key
            } else {
                format!("{at}.{key}")
            };
            match value {
                toml::Value::Table(t) => walk(t, &path, out),
                other => {
                    out.insert(path, other.to_string());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&toml::from_str(text).unwrap(), "", &mut out);
    out
}

/// A YAML document as `dotted.key -> JSON value`, lists as whole values.
fn flat_yaml(text: &str) -> BTreeMap<String, String> {
    fn walk(value: &Value, at: &str, out: &mut BTreeMap<String, String>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, value) in map {
                    let path = if at.is_empty() {
                        key.clone()
                    } else {
                        format!("{at}.{key}")
                    };
                    walk(value, &path, out);
                }
            }
            other => {
                out.insert(at.to_owned(), other.to_string());
            }
        }
    }
    let value: Value = yaml_serde::from_str(text).unwrap();
    let mut out = BTreeMap::new();
    walk(&value, "", &mut out);
    out
}

/// kops writes every Go zero value of its config structs ("0s", 0, "0", {}), which the
/// kubelet reads as "unset": drop them before comparing.
fn without_zero_values(mut map: BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.retain(|_, v| !matches!(v.as_str(), "\"0s\"" | "0" | "\"0\"" | "{}"));
    map
}

/// A unit (plus drop-ins) as `Section.Key -> values joined with " ; "`.
fn flat_unit(texts: &[&str]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for text in texts {
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((key, value)) = line.split_once('=') {
                // NODEWRIGHT_KUBELET_ARGS and DAEMON_ARGS are compared as flag sets.
                let value = if value.contains("_ARGS=") {
                    "(the flags)".to_owned()
                } else {
                    value.to_owned()
                };
                out.entry(format!("{section}.{key}"))
                    .or_default()
                    .push(value);
            }
        }
    }
    out.into_iter().map(|(k, v)| (k, v.join(" ; "))).collect()
}

/// `--name=value` flags as `--name -> value`.
fn flat_flags(args: &str) -> BTreeMap<String, String> {
    args.split_whitespace()
        .map(|flag| match flag.split_once('=') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => (flag.to_owned(), "true".to_owned()),
        })
        .collect()
}

/// Binaries by name: where each side installs them from an asset.
fn binaries(kops: &BTreeMap<String, Value>, ours: &DesiredState) -> [BTreeMap<String, String>; 2] {
    let name = |path: &str| path.rsplit('/').next().unwrap().to_owned();
    let k = kops
        .iter()
        .filter(|(_, t)| t["contents"].get("Asset").is_some())
        .map(|(p, _)| (format!("binary {}", name(p)), p.clone()))
        .collect();
    let o = ours
        .asset_files
        .iter()
        .map(|f| {
            (
                format!("binary {}", name(f.path.as_str())),
                f.path.to_string(),
            )
        })
        .collect();
    [k, o]
}

/// Files present on one side only (the compared ones are matched by content above).
fn file_sets(
    diff: &mut Diff,
    kops: &BTreeMap<String, Value>,
    ours: &[String],
    compared: &[(&str, &str)],
) {
    let mut k: BTreeMap<String, String> = kops
        .iter()
        .filter(|(_, t)| t["contents"].get("Asset").is_none())
        .map(|(p, t)| {
            let kind = if t["type"] == "directory" {
                "directory"
            } else {
                "file"
            };
            (p.clone(), kind.to_owned())
        })
        .collect();
    let mut o: BTreeMap<String, String> = ours
        .iter()
        .map(|p| (p.clone(), "file".to_owned()))
        .collect();
    for (kops_path, our_path) in compared {
        k.remove(*kops_path);
        o.remove(*our_path);
    }
    diff.maps("(files)", &k, &o);
}

fn containerd_case(case: &'static str, fixture_dir: &str, spec: &str) -> Vec<Row> {
    let docs = fixture(fixture_dir);
    let kops = kops_files(&docs);
    let desired = render(spec);
    let mut diff = Diff::new(case);

    const CONFIG: &str = "/etc/containerd/config.toml";
    diff.maps(
        "config.toml",
        &flat_toml(kops_text(&kops, CONFIG)),
        &flat_toml(ours(&desired, CONFIG)),
    );
    diff.maps(
        "crictl.yaml",
        &flat_yaml(kops_text(&kops, "/etc/crictl.yaml")),
        &flat_yaml(ours(&desired, "/etc/crictl.yaml")),
    );
    let unit = kops_service(&docs, "containerd.service");
    diff.maps(
        "containerd.service",
        &flat_unit(&[unit["definition"].as_str().unwrap()]),
        &flat_unit(&[ours(&desired, "/etc/systemd/system/containerd.service")]),
    );
    let mut compared = vec![(CONFIG, CONFIG), ("/etc/crictl.yaml", "/etc/crictl.yaml")];
    let hosts: Vec<String> = kops
        .keys()
        .filter(|p| p.starts_with("/etc/containerd/certs.d/"))
        .cloned()
        .collect();
    for path in &hosts {
        let label = path.trim_start_matches("/etc/containerd/");
        match desired.file(path) {
            Some(_) => diff.maps(
                label,
                &flat_toml(kops_text(&kops, path)),
                &flat_toml(ours(&desired, path)),
            ),
            None => diff.maps(
                label,
                &BTreeMap::from([("(file)".to_owned(), "file".to_owned())]),
                &BTreeMap::new(),
            ),
        }
        compared.push((path, path));
    }
    let [k, o] = binaries(&kops, &desired);
    diff.maps("(binaries)", &k, &o);
    let our_files: Vec<String> = desired
        .files
        .iter()
        .map(|f| f.path.to_string())
        .filter(|p| p.starts_with("/etc/containerd/") || p == "/etc/crictl.yaml")
        .collect();
    file_sets(&mut diff, &kops, &our_files, &compared);
    diff.rows
}

fn kubelet_case(case: &'static str, fixture_dir: &str, spec: &str) -> Vec<Row> {
    let docs = fixture(fixture_dir);
    let kops = kops_files(&docs);
    let desired = render(spec);
    let mut diff = Diff::new(case);

    diff.maps(
        "KubeletConfiguration",
        &without_zero_values(flat_yaml(kops_text(&kops, "/var/lib/kubelet/kubelet.conf"))),
        &flat_yaml(ours(&desired, "/var/lib/kubelet/config.yaml")),
    );
    let sysconfig = kops_text(&kops, "/etc/sysconfig/kubelet");
    let kops_args = sysconfig
        .lines()
        .find_map(|l| l.strip_prefix("DAEMON_ARGS=\""))
        .unwrap()
        .trim_end_matches('"');
    let drop_in = ours(
        &desired,
        "/etc/systemd/system/kubelet.service.d/10-nodewright.conf",
    );
    let our_args = drop_in
        .lines()
        .find_map(|l| l.strip_prefix("Environment=\"NODEWRIGHT_KUBELET_ARGS="))
        .unwrap()
        .trim_end_matches('"');
    diff.maps("(flags)", &flat_flags(kops_args), &flat_flags(our_args));
    let service = kops_service(&docs, "kubelet.service");
    diff.maps(
        "kubelet.service",
        &flat_unit(&[service["definition"].as_str().unwrap()]),
        &flat_unit(&[
            ours(&desired, "/etc/systemd/system/kubelet.service"),
            drop_in,
        ]),
    );
    let ours_service = desired
        .services
        .iter()
        .find(|s| s.unit.as_str() == "kubelet.service")
        .unwrap();
    diff.maps(
        "(service state)",
        &BTreeMap::from([
            ("enabled".to_owned(), service["enabled"].to_string()),
            ("running".to_owned(), service["running"].to_string()),
        ]),
        &BTreeMap::from([
            ("enabled".to_owned(), ours_service.enabled.to_string()),
            ("running".to_owned(), ours_service.running.to_string()),
        ]),
    );
    let [k, o] = binaries(&kops, &desired);
    diff.maps("(binaries)", &k, &o);
    let mut our_files: Vec<String> = desired
        .files
        .iter()
        .map(|f| f.path.to_string())
        .filter(|p| {
            p.starts_with("/var/lib/kubelet/") || p.starts_with("/etc/systemd/system/kubelet")
        })
        .collect();
    our_files.extend(
        desired
            .directories
            .iter()
            .filter(|d| d.path.as_str().starts_with("/etc/kubernetes/manifests"))
            .map(|d| d.path.to_string()),
    );
    file_sets(
        &mut diff,
        &kops,
        &our_files,
        &[
            (
                "/var/lib/kubelet/kubelet.conf",
                "/var/lib/kubelet/config.yaml",
            ),
            (
                "/etc/sysconfig/kubelet",
                "/etc/systemd/system/kubelet.service.d/10-nodewright.conf",
            ),
            // kops's unit is a service task, compared above as kubelet.service.
            ("", "/etc/systemd/system/kubelet.service"),
            ("/etc/kubernetes/manifests", "/etc/kubernetes/manifests"),
        ],
    );
    diff.rows
}

const CONTAINERD_SIMPLE: &str = "\
containerd:
  version: 2.3.4
  sandboxImage: registry.k8s.io/pause:3.10.1
  binaries: {asset: containerd}
  runc: {asset: runc}
";

/// kops's configAdditions, at the path containerd 2.x reads (see the test below for
/// kops's own path).
const CONTAINERD_COMPLEX: &str = r#"containerd:
  version: 2.3.4
  sandboxImage: registry.k8s.io/pause:3.10.1
  binaries: {asset: containerd}
  runc: {asset: runc}
  registryMirrors:
    "*": [https://fallback.example.com]
    docker.io: [https://registry-1.docker.io]
    registry.k8s.io: [https://mirror.example.com, https://backup.example.com]
  extraConfig: |
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.test-handler]
    test_bool_false = false
    test_bool_true = true
    test_int = 1
    test_intstr = "1"
    test_str = "test"
"#;

const KUBELET_BASE: &str = "\
containerd:
  version: 2.3.4
kubelet:
  binary: {asset: kubelet}
  config:
    resolvConf: /run/systemd/resolve/resolv.conf
  ecrCredentialProvider: {}
";

fn all_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    rows.extend(containerd_case(
        "containerd/simple",
        "containerd-simple",
        CONTAINERD_SIMPLE,
    ));
    rows.extend(containerd_case(
        "containerd/complex",
        "containerd-complex",
        CONTAINERD_COMPLEX,
    ));
    let featuregates = KUBELET_BASE.replace(
        "  config:\n",
        "  config:\n    featureGates:\n      ExperimentalCriticalPodAnnotation: true\n      AllowExtTrafficLocalEndpoints: false\n",
    );
    rows.extend(kubelet_case(
        "kubelet/featuregates",
        "kubelet-featuregates",
        &featuregates,
    ));
    rows.extend(kubelet_case(
        "kubelet/warmpool",
        "kubelet-warmpool",
        KUBELET_BASE,
    ));
    rows
}

/// The table rows of docs/kops-differences.md, without the reason column.
fn documented() -> Vec<Row> {
    let doc =
        std::fs::read_to_string(common::workspace().join("docs/kops-differences.md")).unwrap();
    let unquote = |cell: &str| cell.trim().trim_matches('`').to_owned();
    doc.lines()
        .filter(|l| l.starts_with("| containerd/") || l.starts_with("| kubelet/"))
        .map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split(" | ").collect();
            assert!(
                cells.len() >= 6,
                "a row needs 6 cells (the last is why): {line}"
            );
            assert!(
                !cells[5].trim().is_empty(),
                "a difference without its reason: {line}"
            );
            Row {
                case: cells[0].trim().to_owned(),
                file: cells[1].trim().to_owned(),
                key: unquote(cells[2]),
                kops: unquote(cells[3]),
                ours: unquote(cells[4]),
            }
        })
        .collect()
}

#[test]
fn every_difference_from_kops_is_documented_with_its_reason() {
    let found: BTreeSet<Row> = all_rows().into_iter().collect();
    let listed: BTreeSet<Row> = documented().into_iter().collect();
    let missing: Vec<String> = found.difference(&listed).map(Row::render).collect();
    let stale: Vec<String> = listed.difference(&found).map(Row::render).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/kops-differences.md is out of date.\n\nDifferences not listed (add a reason):\n{}\n\nListed but no longer found:\n{}",
        missing.join("\n"),
        stale.join("\n")
    );
}

#[test]
fn kops_complex_config_additions_path_is_refused_for_containerd_2() {
    // kops writes configAdditions verbatim; under config version 4 this section is
    // not where containerd 2.x reads runtimes, so they would be silently ignored.
    let spec = CONTAINERD_COMPLEX.replace(
        "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.test-handler]",
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.test-handler]",
    );
    let problems = nodewright::spec::check_containerd_extra_config(
        spec.split("extraConfig: |\n")
            .nth(1)
            .unwrap()
            .replace("    ", "")
            .as_str(),
        4,
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("io.containerd.cri.v1.runtime"),
        "{problems:?}"
    );
}

// ---------------------------------------------------------------------------------
// kops's own AWS cases, translated (see tests/kops/translated.rs).

#[path = "kops/translated.rs"]
mod translated;

use common::checkers::{
    add_stock_units, is_root, kubectl_view, kubernetes_validate, systemd_verify, units_to_verify,
    write_stand_in_certificates, write_tree,
};
use nodewright::kops::KopsError;
use translated::{Input, Outcome, Translated, golden_text, inputs, outcome};

fn update_goldens() -> bool {
    std::env::var_os("NODEWRIGHT_UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty())
}

/// The sentence of docs/kops.md that gives the counts.
fn counts_sentence(cases: usize, workers: usize, translated: usize) -> String {
    format!(
        "Of the {workers} worker instance groups in kops's {cases} AWS integration cases, {translated} translate and {} are refused.",
        workers - translated
    )
}

#[test]
fn every_aws_case_translates_or_is_refused_by_name() {
    let mut failures = Vec::new();
    let mut kept = BTreeSet::new();
    let mut cases = BTreeSet::new();
    let (mut workers, mut translated) = (0, 0);
    let mut refused_workers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for input in inputs() {
        cases.insert(input.case.clone());
        let result = outcome(&input);
        let worker = input.nodeup_config.is_some();
        workers += usize::from(worker);
        match &result {
            Outcome::Translated(_) => {
                assert!(worker, "{}: only workers translate", input.name());
                translated += 1;
            }
            Outcome::Refused(KopsError::Refused { refusals, .. }) => {
                assert!(!refusals.is_empty(), "{}", input.name());
                for refusal in refusals {
                    // A kops field as kops spells it, and why.
                    assert!(
                        !refusal.field.is_empty()
                            && !refusal.field.contains(' ')
                            && !refusal.reason.is_empty(),
                        "{}: {refusal}",
                        input.name()
                    );
                }
                if worker {
                    let mut fields: Vec<String> =
                        refusals.iter().map(|r| r.field.clone()).collect();
                    fields.dedup();
                    refused_workers.insert(input.name(), fields);
                } else {
                    assert!(
                        refusals.iter().any(|r| r.field == "InstanceGroupRole"),
                        "{}: a group without a worker nodeupconfig is refused by its role",
                        input.name()
                    );
                }
            }
            Outcome::Refused(e @ KopsError::UserData { .. }) => {
                // kops's bastions carry only the additional user data, no nodeup script.
                assert!(
                    input.ig == "bastion" && e.to_string().contains("without kops's nodeup script"),
                    "{}: {e}",
                    input.name()
                );
            }
            Outcome::Refused(e) => panic!("{}: {e}", input.name()),
        }
        let (path, text) = golden_text(&input, &result);
        kept.insert(path.clone());
        if update_goldens() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else {
            match std::fs::read_to_string(&path) {
                Ok(golden) if golden == text => {}
                Ok(_) => {
                    failures.push(format!("{}: differs from {}", input.name(), path.display()))
                }
                Err(_) => failures.push(format!("{}: {} is missing", input.name(), path.display())),
            }
        }
    }
    // No golden is left over from a case or outcome that is gone.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kops");
    for case in std::fs::read_dir(&root).unwrap() {
        let case = case.unwrap().path();
        if !case.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&case).unwrap() {
            let file = file.unwrap().path();
            if !kept.contains(&file) {
                if update_goldens() {
                    std::fs::remove_file(&file).unwrap();
                } else {
                    failures.push(format!("{} is stale", file.display()));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\n(NODEWRIGHT_UPDATE_GOLDEN=1 rewrites the goldens; review the diff.)",
        failures.join("\n")
    );
    assert_eq!(cases.len(), 41, "every AWS case of the fixtures");
    // docs/kops.md gives the counts, and every refused worker group with its fields.
    let doc = std::fs::read_to_string(common::workspace().join("docs/kops.md")).unwrap();
    let sentence = counts_sentence(cases.len(), workers, translated);
    assert!(doc.contains(&sentence), "docs/kops.md must say: {sentence}");
    for (group, fields) in &refused_workers {
        let row = format!(
            "| {group} | {} |",
            fields
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(
            doc.contains(&row),
            "docs/kops.md must list the refusal: {row}"
        );
    }
}

/// A failure to report for one case.
fn expect(failures: &mut Vec<String>, name: &str, ok: bool, what: String) {
    if !ok {
        failures.push(format!("{name}: {what}"));
    }
}

/// kops's `a<b,c<d` (or `=`) lists.
fn pairs(list: &str, separator: char) -> BTreeMap<String, String> {
    list.split(',')
        .filter_map(|p| p.split_once(separator))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Checks one translation against the nodeupconfig it came from: every value the
/// issue lists is where the node will read it.
fn check_meaning(name: &str, t: &Translated, failures: &mut Vec<String>) {
    use translated::{kubelet_flags, render, text, yaml};
    let desired = render(t);
    let raw = &t.raw;
    let spec = &t.translation.spec;
    let mut f = |ok: bool, what: String| expect(failures, name, ok, what);

    // Every asset of the architecture, pinned by its sha256, from kops's URLs.
    let arch = &t.facts.host.arch;
    for asset in raw["Assets"][arch.as_str()].as_array().unwrap() {
        let (sha, urls) = asset.as_str().unwrap().split_once('@').unwrap();
        let urls: Vec<&str> = urls.split(',').collect();
        let found = desired.assets.values().find(|a| a.sha256.as_str() == sha);
        f(found.is_some(), format!("asset {sha} is not pinned"));
        if let Some(found) = found {
            let ours: Vec<&str> = found.urls.iter().map(|u| u.as_str()).collect();
            f(
                ours == urls,
                format!("asset {}: urls {ours:?}, kops {urls:?}", found.name),
            );
            let installed = desired.asset_files.iter().any(|a| a.asset == found.name);
            f(
                installed,
                format!("asset {} is downloaded but installs nothing", found.name),
            );
        }
    }

    // The kubelet: its KubeletConfiguration and flags.
    let kubelet = &raw["KubeletConfig"];
    let config = yaml(&desired, "/var/lib/kubelet/config.yaml");
    let dns = kubelet["clusterDNS"].as_str().unwrap();
    f(
        config["clusterDNS"] == serde_json::json!([dns]),
        format!("clusterDNS {}", config["clusterDNS"]),
    );
    f(
        config["clusterDomain"] == kubelet["clusterDomain"],
        "clusterDomain".into(),
    );
    let hard = pairs(kubelet["evictionHard"].as_str().unwrap(), '<');
    for (signal, threshold) in &hard {
        f(
            config["evictionHard"][signal] == threshold.as_str(),
            format!("evictionHard {signal}"),
        );
    }
    for key in [
        "protectKernelDefaults",
        "shutdownGracePeriod",
        "shutdownGracePeriodCriticalPods",
        "cgroupRoot",
        "cgroupDriver",
    ] {
        if !kubelet[key].is_null() {
            f(
                config[key] == kubelet[key],
                format!("{key}: ours {}, kops {}", config[key], kubelet[key]),
            );
        }
    }
    if let Some(gates) = kubelet["featureGates"].as_object() {
        for (gate, value) in gates {
            f(
                config["featureGates"][gate] == (value.as_str() == Some("true")),
                format!("featureGates.{gate}"),
            );
        }
    }
    f(
        config["logging"]["verbosity"] == kubelet["logLevel"],
        "logLevel".into(),
    );
    if let Some(anonymous) = kubelet["anonymousAuth"].as_bool() {
        f(
            config["authentication"]["anonymous"]["enabled"] == anonymous,
            "anonymousAuth".into(),
        );
    }
    let timeout = kubelet["runtimeRequestTimeout"].as_str().unwrap_or("15m0s");
    f(
        config["runtimeRequestTimeout"] == timeout,
        "runtimeRequestTimeout (nodeup's 15m default)".into(),
    );
    f(
        config["tlsCertFile"] == nodewright::model::pki_paths::KUBELET_SERVING_CERT,
        "tlsCertFile: kops-controller's kubelet-server".into(),
    );
    let taints: Vec<Value> = kubelet["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let (rest, effect) = t.as_str().unwrap().rsplit_once(':').unwrap();
            match rest.split_once('=') {
                Some((k, v)) => serde_json::json!({"key": k, "value": v, "effect": effect}),
                None => serde_json::json!({"key": rest, "effect": effect}),
            }
        })
        .collect();
    if taints.is_empty() {
        f(
            config.get("registerWithTaints").is_none(),
            "registerWithTaints without taints".into(),
        );
    } else {
        f(
            config["registerWithTaints"] == serde_json::json!(taints),
            format!("taints {}", config["registerWithTaints"]),
        );
    }
    let flags = kubelet_flags(&desired);
    let node_name = if raw["useIPBasedNodeNames"] == true {
        t.facts.instance.hostname.clone()
    } else {
        t.facts.instance.instance_id.clone()
    };
    f(
        flags["--hostname-override"] == node_name,
        format!("node name {}", flags["--hostname-override"]),
    );
    f(
        flags["--cloud-provider"] == "external",
        "cloud provider".into(),
    );
    // Labels kops leaves to kops-controller are not set by the kubelet.
    let labels = flags.get("--node-labels").cloned().unwrap_or_default();
    for label in kubelet["nodeLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        f(
            !labels.contains(label.as_str()),
            format!("label {label} is set by the kubelet"),
        );
    }
    let ipv6_only = raw["Networking"]["nonMasqueradeCIDR"] == "::/0";
    if ipv6_only {
        let ip = t.facts.instance.ipv6.unwrap().to_string();
        f(
            flags["--node-ip"] == ip,
            format!("IPv6 node IP {}", flags["--node-ip"]),
        );
    }

    // containerd: version (config schema), sandbox image, runc, mirrors, log level.
    let containerd = &raw["containerdConfig"];
    let toml_text = text(&desired, "/etc/containerd/config.toml");
    let toml: toml::Table = toml::from_str(&toml_text).unwrap();
    let version = containerd["version"].as_str().unwrap();
    let schema = if version.starts_with("2.3") || version.starts_with("2.4") {
        4
    } else {
        3
    };
    f(
        toml["version"].as_integer() == Some(schema),
        format!("config.toml version for containerd {version}"),
    );
    let sandbox = &toml["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"];
    f(
        sandbox.as_str() == containerd["sandboxImage"].as_str(),
        format!("sandbox image {sandbox}"),
    );
    if let Some(level) = containerd["logLevel"].as_str() {
        f(
            toml.get("debug")
                .and_then(|d| d.get("level"))
                .and_then(|l| l.as_str())
                == Some(level),
            "containerd log level".into(),
        );
    }
    f(
        spec.containerd.as_ref().unwrap().version.to_string() == version,
        "containerd version".into(),
    );
    let runc = desired
        .asset_files
        .iter()
        .find(|a| a.path.as_str() == "/usr/local/sbin/runc");
    f(
        runc.is_some_and(|r| r.asset == "runc"),
        "runc from the runc asset".into(),
    );
    for (registry, mirrors) in containerd["registryMirrors"]
        .as_object()
        .into_iter()
        .flatten()
    {
        for mirror in mirrors.as_array().unwrap() {
            let found = desired.files.iter().any(|file| {
                file.path.as_str().starts_with("/etc/containerd/certs.d/")
                    && String::from_utf8_lossy(file.content.bytes())
                        .contains(mirror.as_str().unwrap())
            });
            f(found, format!("mirror {mirror} of {registry}"));
        }
    }

    // The CNI plugins.
    if raw["InstallCNIAssets"] == true {
        let bridge = desired
            .asset_files
            .iter()
            .find(|a| a.path.as_str() == "/opt/cni/bin/bridge");
        f(
            bridge.is_some_and(|b| b.asset == "cni-plugins"),
            "CNI plugins in /opt/cni/bin".into(),
        );
    }

    // kube-proxy: off, or its image, cluster CIDR and verbosity.
    let manifest = "/etc/kubernetes/manifests/kube-proxy.yaml";
    if raw["KubeProxy"].is_null() {
        f(
            desired.file(manifest).is_none(),
            "kube-proxy runs although kops turned it off".into(),
        );
    } else {
        let proxy = &raw["KubeProxy"];
        let pod = yaml(&desired, manifest);
        let container = &pod["spec"]["containers"][0];
        f(
            container["image"] == proxy["image"],
            format!("kube-proxy image {}", container["image"]),
        );
        f(
            container["resources"]["requests"]["cpu"] == proxy["cpuRequest"],
            "kube-proxy cpu request".into(),
        );
        let verbosity = format!("--v={}", proxy["logLevel"]);
        f(
            container["command"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == verbosity.as_str()),
            "kube-proxy verbosity".into(),
        );
        let kp = yaml(&desired, "/var/lib/kube-proxy/config.yaml");
        f(
            kp.get("clusterCIDR") == proxy.get("clusterCIDR"),
            format!("kube-proxy clusterCIDR {:?}", kp.get("clusterCIDR")),
        );
        f(
            spec.cluster.pod_cidr.map(|c| c.to_string()).as_deref()
                == proxy["clusterCIDR"].as_str(),
            "cluster.podCidr".into(),
        );
    }

    // kops's sysctls, the cluster's own, and the port range.
    let ports = raw["ServiceNodePortRange"]
        .as_str()
        .unwrap_or("30000-32767");
    f(
        desired
            .sysctls
            .get("net.ipv4.ip_local_reserved_ports")
            .map(String::as_str)
            == Some(ports),
        "ip_local_reserved_ports".into(),
    );
    for line in raw["SysctlParameters"].as_array().into_iter().flatten() {
        let line = line.as_str().unwrap();
        if let Some((k, v)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            f(
                desired.sysctls.get(k.trim()).map(String::as_str) == Some(v.trim()),
                format!("sysctl {line}"),
            );
        }
    }
    let forward = if ipv6_only {
        "net.ipv6.conf.all.forwarding"
    } else {
        "net.ipv4.ip_forward"
    };
    f(
        desired.sysctls.get(forward).map(String::as_str) == Some("1"),
        forward.to_owned(),
    );

    // Packages.
    let packages = desired
        .packages
        .as_ref()
        .map(|p| p.names.clone())
        .unwrap_or_default();
    for package in raw["packages"].as_array().into_iter().flatten() {
        f(
            packages.iter().any(|p| p == package.as_str().unwrap()),
            format!("package {package}"),
        );
    }
    if raw["UpdatePolicy"] == "automatic" {
        f(
            packages.iter().any(|p| p == "unattended-upgrades"),
            "UpdatePolicy automatic".into(),
        );
    }

    // The cluster: CA bundle, API endpoint, node group, networks.
    let ca = text(&desired, "/etc/kubernetes/pki/ca.crt");
    let bundle = t.env.config_server.as_ref().unwrap().ca_certificates.trim();
    f(ca.trim() == bundle, "the CA bundle from kube_env".into());
    f(
        bundle.matches("BEGIN CERTIFICATE").count() == ca.matches("BEGIN CERTIFICATE").count(),
        "every CA of the bundle".into(),
    );
    let kubeconfig = text(&desired, "/var/lib/kubelet/kubeconfig");
    f(
        kubeconfig.contains(&format!(
            "server: https://api.internal.{}",
            t.env.cluster_name
        )),
        "API server".into(),
    );
    f(
        spec.node_group.as_ref().map(|g| g.to_string()) == Some(t.env.instance_group_name.clone()),
        "node group".into(),
    );
    f(
        spec.cluster.service_cidr.to_string()
            == raw["Networking"]["serviceClusterIPRange"].as_str().unwrap(),
        "service CIDR".into(),
    );
    f(
        spec.cluster.kubernetes_version.to_string() == raw["KubernetesVersion"].as_str().unwrap(),
        "Kubernetes version".into(),
    );
}

#[test]
fn translations_keep_what_the_nodeupconfig_says() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for input in inputs() {
        if let Outcome::Translated(t) = outcome(&input) {
            check_meaning(&input.name(), &t, &mut failures);
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} translations");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The translated specs, rendered: units pass systemd-analyze verify, manifests
/// kubernetes-validate --strict, kubeconfigs kubectl (as root).
#[test]
fn translations_pass_the_checkers() {
    let mut failures = Vec::new();
    let mut manifests = 0;
    // Many cases render the same manifest: each distinct one is validated once.
    let mut validated = BTreeSet::new();
    for input in inputs() {
        let Outcome::Translated(t) = outcome(&input) else {
            continue;
        };
        let name = input.name();
        let desired = translated::render(&t);
        let root = tempfile::tempdir().unwrap();
        add_stock_units(root.path());
        write_tree(root.path(), &desired);
        let units = units_to_verify(&desired);
        if let Err(e) = systemd_verify(root.path(), &units) {
            failures.push(format!("{name}: {e}"));
        }
        let version = t.translation.spec.cluster.kubernetes_version.to_string();
        for file in desired
            .files
            .iter()
            .filter(|f| f.path.as_str().starts_with("/etc/kubernetes/manifests/"))
        {
            if !validated.insert((version.clone(), file.content.bytes().to_vec())) {
                continue;
            }
            let path = root.path().join("manifest.yaml");
            std::fs::write(&path, file.content.bytes()).unwrap();
            match kubernetes_validate(&path, &version) {
                Ok(_) => manifests += 1,
                Err(e) => failures.push(format!("{name}: {}: {e}", file.path)),
            }
        }
        if is_root() {
            use nodewright::model::{kube_proxy, kubelet};
            write_stand_in_certificates(root.path(), &desired);
            let mut kubeconfigs = vec![kubelet::KUBECONFIG];
            if desired.file(kube_proxy::KUBECONFIG).is_some() {
                kubeconfigs.push(kube_proxy::KUBECONFIG);
            }
            for kubeconfig in kubeconfigs {
                match kubectl_view(root.path(), kubeconfig) {
                    Ok(flat) if flat.contains("certificate-authority-data:") => {}
                    Ok(flat) => failures.push(format!("{name}: {kubeconfig}: {flat}")),
                    Err(e) => failures.push(format!("{name}: {kubeconfig}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The kube-proxy manifests of the translated cases: 4 distinct ones (measured).
    assert!(
        manifests >= 4,
        "only {manifests} distinct kube-proxy manifests checked"
    );
}

/// `nodewright kops translate`, as an operator runs it: the golden on stdout, and the
/// bad inputs of the issue refused with exit 3 and a message naming the place.
#[test]
fn kops_translate_command() {
    let bin = env!("CARGO_BIN_EXE_nodewright");
    let case = translated::cases_dir().join("minimal-aws");
    let user_data = case.join("aws_launch_template_nodes.minimal-aws.example.com_user_data");
    let config = case.join("aws_s3_object_nodeupconfig-nodes_content");
    let run = |args: &[&Path]| {
        let output = std::process::Command::new(bin)
            .arg("kops")
            .arg("translate")
            .args(args.iter().flat_map(|a| {
                if a.extension().is_some_and(|e| e == "flag") {
                    vec![a.with_extension("").into_os_string()]
                } else {
                    vec![a.as_os_str().to_owned()]
                }
            }))
            .output()
            .unwrap();
        (
            output.status.code().unwrap(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let flag = |name: &str| PathBuf::from(format!("--{name}.flag"));
    let (code, stdout, stderr) = run(&[
        &flag("user-data"),
        &user_data,
        &flag("nodeup-config"),
        &config,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let golden = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kops/minimal-aws/nodes.yaml"),
    )
    .unwrap();
    // The header names the nodeupconfig as given (here a full path); the golden, its
    // file name. The spec below it is the golden's, byte for byte.
    let (header, spec) = stdout.split_once('\n').unwrap();
    let (golden_header, golden_spec) = golden.split_once('\n').unwrap();
    assert!(header.contains(&config.display().to_string()), "{header}");
    assert!(golden_header.contains("aws_s3_object_nodeupconfig-nodes_content"));
    assert_eq!(spec, golden_spec);

    let dir = tempfile::tempdir().unwrap();
    // A tampered nodeupconfig: refused by its hash, before it is read.
    let tampered = dir.path().join("nodeupconfig.yaml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("logLevel: 2", "logLevel: 9");
    std::fs::write(&tampered, text).unwrap();
    let (code, stdout, stderr) = run(&[
        &flag("user-data"),
        &user_data,
        &flag("nodeup-config"),
        &tampered,
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("nodeupconfig.yaml") && stderr.contains("NodeupConfigHash"),
        "{stderr}"
    );
    // A truncated script.
    let truncated = dir.path().join("user-data");
    let bytes = std::fs::read(&user_data).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let (code, _, stderr) = run(&[
        &flag("user-data"),
        &truncated,
        &flag("nodeup-config"),
        &config,
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("truncated"), "{stderr}");
    // An unknown kube_env field, named with its line.
    let unknown = dir.path().join("user-data-unknown");
    let text = String::from_utf8(bytes.clone()).unwrap().replace(
        "InstanceGroupRole: Node\n",
        "InstanceGroupRole: Node\nWarmPoolMode: warm\n",
    );
    std::fs::write(&unknown, text).unwrap();
    let (code, _, stderr) = run(&[
        &flag("user-data"),
        &unknown,
        &flag("nodeup-config"),
        &config,
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("kube_env") && stderr.contains("WarmPoolMode") && stderr.contains("line"),
        "{stderr}"
    );
    // A control-plane group is refused by its role, nodeupconfig or not.
    let master = case
        .join("aws_launch_template_master-us-test-1a.masters.minimal-aws.example.com_user_data");
    let (code, _, stderr) = run(&[&flag("user-data"), &master]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("InstanceGroupRole: ControlPlane"),
        "{stderr}"
    );
    // A worker without its nodeupconfig: where to get it.
    let (code, _, stderr) = run(&[&flag("user-data"), &user_data]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--nodeup-config") && stderr.contains("kops-controller"),
        "{stderr}"
    );
}

/// Refusals name every field at once, before anything is written.
#[test]
fn a_refused_group_names_every_field() {
    let input: Input = inputs()
        .into_iter()
        .find(|i| i.case == "nvidia" && i.ig == "nodes")
        .unwrap();
    let Outcome::Refused(KopsError::Refused { refusals, .. }) = outcome(&input) else {
        panic!("the nvidia case is refused");
    };
    let fields: Vec<&str> = refusals.iter().map(|r| r.field.as_str()).collect();
    assert!(
        fields.contains(&"NvidiaGPU") && fields.contains(&"containerdConfig.nvidiaGPU"),
        "{fields:?}"
    );
}

#[test]
fn the_asset_layout_table_is_documented() {
    let doc = std::fs::read_to_string(common::workspace().join("docs/kops.md")).unwrap();
    for row in nodewright::kops::translate::LAYOUT {
        let line = format!(
            "| `{}` | `{}` | {} | {} |",
            row.kops_file,
            row.name,
            if row.archive { "tar.gz" } else { "no" },
            row.installs
        );
        assert!(
            doc.contains(&line),
            "docs/kops.md lacks the layout row: {line}"
        );
    }
}
