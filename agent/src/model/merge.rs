//! Deep merges of a user's raw configuration over the one nodewright renders.
//!
//! The rule is the same for TOML (containerd) and YAML/JSON (kubelet, kube-proxy):
//! tables (mappings) merge key by key, recursively; any other value replaces ours
//! whole, arrays included (an array is one setting, e.g. a list of DNS servers, and a
//! user who sets it means the whole list). In YAML/JSON, `null` removes a key.
//!
//! A TOML overlay may not change a setting's kind: where we render a table it must give
//! a table, and where we render a scalar it must give a scalar of the same type, because
//! containerd refuses a config whose types are wrong only when it starts.

use serde_json::Value;

/// Merges `overlay` into `base` (YAML/JSON rules above): exactly RFC 7386 JSON Merge
/// Patch, so the maintained implementation does it.
pub use json_patch::merge as merge_json;

/// Merges the TOML `overlay` into `base`; refuses a change of kind, naming the key.
pub(in crate::model) fn merge_toml(
    base: &mut toml::Table,
    overlay: &toml::Table,
) -> Result<(), String> {
    merge_toml_at(base, overlay, "")
}

fn merge_toml_at(base: &mut toml::Table, overlay: &toml::Table, at: &str) -> Result<(), String> {
    for (key, value) in overlay {
        let path = if at.is_empty() {
            toml_key(key)
        } else {
            format!("{at}.{}", toml_key(key))
        };
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(value)) => {
                merge_toml_at(existing, value, &path)?;
            }
            (Some(existing), value) => {
                if existing.type_str() != value.type_str() {
                    return Err(format!(
                        "{path} is {} in nodewright's config but {} in the overlay",
                        article(existing.type_str()),
                        article(value.type_str())
                    ));
                }
                *existing = value.clone();
            }
            (None, value) => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn article(type_name: &str) -> String {
    match type_name {
        "integer" | "array" => format!("an {type_name}"),
        other => format!("a {other}"),
    }
}

/// Orders every mapping's keys, so the output does not depend on serde_json's map
/// implementation (insertion order when another crate enables `preserve_order`).
pub fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_tables_merge_arrays_replace_nulls_remove() {
        let mut base = json!({
            "authentication": {"anonymous": {"enabled": false}, "webhook": {"enabled": true, "cacheTTL": "2m0s"}},
            "clusterDNS": ["100.64.0.10"],
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "10%"},
            "maxPods": 110,
        });
        let overlay = json!({
            "authentication": {"webhook": {"cacheTTL": "30s"}},
            "clusterDNS": ["169.254.20.10"],
            "evictionHard": {"nodefs.available": null, "pid.available": "5%"},
            "maxPods": null,
            "newTable": {"a": 1, "gone": null},
        });
        merge_json(&mut base, &overlay);
        assert_eq!(
            base,
            json!({
                "authentication": {"anonymous": {"enabled": false}, "webhook": {"enabled": true, "cacheTTL": "30s"}},
                "clusterDNS": ["169.254.20.10"],
                "evictionHard": {"memory.available": "100Mi", "pid.available": "5%"},
                "newTable": {"a": 1},
            })
        );
    }

    #[test]
    fn json_overlay_may_change_a_kind() {
        // The kubelet checks its own config; YAML overlays are not second-guessed here
        // beyond the typed fields the spec checks.
        let mut base = json!({"a": {"b": 1}});
        merge_json(&mut base, &json!({"a": 5}));
        assert_eq!(base, json!({"a": 5}));
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn toml_nested_tables_merge_recursively() {
        let mut base = table(
            r#"
version = 2
[plugins."io.containerd.grpc.v1.cri"]
sandbox_image = "registry.k8s.io/pause:3.10"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
SystemdCgroup = true
"#,
        );
        let overlay = table(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
sandbox_image = "mirror.example.com/pause:3.10"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
BinaryName = "/opt/runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gvisor]
runtime_type = "io.containerd.runsc.v1"
"#,
        );
        merge_toml(&mut base, &overlay).unwrap();
        let cri = &base["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("mirror.example.com/pause:3.10")
        );
        let runtimes = &cri["containerd"]["runtimes"];
        // Ours kept beside theirs, at every depth.
        assert_eq!(
            runtimes["runc"]["runtime_type"].as_str(),
            Some("io.containerd.runc.v2")
        );
        assert_eq!(
            runtimes["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(true)
        );
        assert_eq!(
            runtimes["runc"]["options"]["BinaryName"].as_str(),
            Some("/opt/runc")
        );
        assert_eq!(
            runtimes["gvisor"]["runtime_type"].as_str(),
            Some("io.containerd.runsc.v1")
        );
        assert_eq!(base["version"].as_integer(), Some(2));
    }

    #[test]
    fn toml_arrays_replace_whole() {
        let mut base = table("imports = [\"/etc/containerd/conf.d/a.toml\"]\n[grpc]\nuid = 0\n");
        let overlay = table(
            "imports = [\"/etc/containerd/conf.d/b.toml\", \"/etc/containerd/conf.d/c.toml\"]\n",
        );
        merge_toml(&mut base, &overlay).unwrap();
        let imports: Vec<&str> = base["imports"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(
            imports,
            [
                "/etc/containerd/conf.d/b.toml",
                "/etc/containerd/conf.d/c.toml"
            ]
        );
        // An array of tables is an array too: replaced, not merged element-wise.
        let mut base = table("[[x]]\na = 1\n[[x]]\na = 2\n");
        merge_toml(&mut base, &table("[[x]]\nb = 3\n")).unwrap();
        assert_eq!(base["x"].as_array().unwrap().len(), 1);
        assert!(base["x"][0].get("a").is_none());
    }

    #[test]
    fn toml_kind_changes_are_refused_with_the_key() {
        let mut base = table(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"runc\"\n",
        );
        let err = merge_toml(
            &mut base,
            &table("[plugins.\"io.containerd.grpc.v1.cri\"]\ncontainerd = \"x\"\n"),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "plugins.\"io.containerd.grpc.v1.cri\".containerd is a table in nodewright's config but a string in the overlay"
        );
        let err = merge_toml(
            &mut base,
            &table(
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = 5\n",
            ),
        )
        .unwrap_err();
        assert!(err.contains("default_runtime_name is a string"), "{err}");
        assert!(err.contains("an integer in the overlay"), "{err}");
    }

    #[test]
    fn sorting_orders_nested_keys() {
        let value = sorted(json!({"b": {"z": 1, "a": 2}, "a": [{"y": 1, "x": 2}]}));
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"a":[{"x":2,"y":1}],"b":{"a":2,"z":1}}"#
        );
    }
}
