//! nodewright against kops's nodeup goldens: the same inputs, written as a nodewright
//! spec, rendered and compared by meaning (parsed TOML and YAML, unit directives, flag
//! sets, installed binaries). Every difference must be listed, with its reason, in
//! docs/kops-differences.md, and everything listed there must still differ.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

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
