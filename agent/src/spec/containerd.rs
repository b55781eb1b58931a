//! The `containerd` section: the container runtime, runc, and the CNI plugins.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::program::{Program, ProgramSet};
use super::validate::Problems;
use super::values::{ContainerdVersion, ImageRef, MirrorUrl, RegistryHost};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerdSpec {
    /// The containerd version of the binaries. It picks the schema of config.toml:
    /// version 2 for 1.6 and 1.7, 3 for 2.0 to 2.2, 4 for 2.3 and later.
    pub version: ContainerdVersion,
    /// containerd, containerd-shim-runc-v2 and ctr: from the release archive (members
    /// `bin/<name>`), installed in `directory` (default /usr/local/bin).
    #[serde(default)]
    pub binaries: ProgramSet,
    /// runc (default path /usr/local/sbin/runc).
    #[serde(default)]
    pub runc: Program,
    /// The pause image of every pod sandbox.
    #[serde(default = "default_sandbox_image")]
    pub sandbox_image: ImageRef,
    /// Mirrors per registry, tried in order before the registry itself; `*` applies
    /// to every registry. Written as /etc/containerd/certs.d/<registry>/hosts.toml.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry_mirrors: BTreeMap<RegistryHost, Vec<MirrorUrl>>,
    /// TOML merged over the config.toml nodewright renders: tables merge key by key,
    /// recursively; any other value, arrays included, replaces ours whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_config: Option<String>,
}

fn default_sandbox_image() -> ImageRef {
    ImageRef::try_from("registry.k8s.io/pause:3.10").expect("a valid constant")
}

/// Which config.toml schema a containerd version reads.
pub fn config_version(version: &ContainerdVersion) -> u8 {
    let v = version.version();
    match (v.major, v.minor) {
        (1, _) => 2,
        // 2.0 to 2.2 refuse version 4; 2.3 reads it, and refuses drop-ins (such as the
        // NVIDIA toolkit's) that declare a newer version than the main file.
        (2, minor) if minor < 3 => 3,
        _ => 4,
    }
}

impl ContainerdSpec {
    pub fn config_version(&self) -> u8 {
        config_version(&self.version)
    }

    pub fn check(&self, problems: &mut Problems) {
        self.runc.check("containerd.runc", problems);
        for (registry, mirrors) in &self.registry_mirrors {
            if mirrors.is_empty() {
                problems.add(
                    &format!("containerd.registryMirrors[{:?}]", registry.as_str()),
                    format!("registry {registry} lists no mirrors"),
                );
            }
        }
        if let Some(text) = &self.extra_config {
            for message in check_extra_config(text, self.config_version()) {
                problems.add("containerd.extraConfig", message);
            }
        }
    }
}

/// Top-level keys of config.toml and whether each holds a table.
const TOP_LEVEL: &[(&str, Shape)] = &[
    ("root", Shape::String),
    ("state", Shape::String),
    ("temp", Shape::String),
    ("plugin_dir", Shape::String),
    ("disabled_plugins", Shape::Array),
    ("required_plugins", Shape::Array),
    ("imports", Shape::Array),
    ("oom_score", Shape::Integer),
    ("grpc", Shape::Table),
    ("ttrpc", Shape::Table),
    ("debug", Shape::Table),
    ("metrics", Shape::Table),
    ("cgroup", Shape::Table),
    ("timeouts", Shape::Table),
    ("plugins", Shape::Table),
    ("proxy_plugins", Shape::Table),
    ("stream_processors", Shape::Table),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    String,
    Integer,
    Array,
    Table,
}

impl Shape {
    fn of(value: &toml::Value) -> &'static str {
        match value {
            toml::Value::String(_) => "a string",
            toml::Value::Integer(_) => "an integer",
            toml::Value::Float(_) => "a float",
            toml::Value::Boolean(_) => "a boolean",
            toml::Value::Datetime(_) => "a date",
            toml::Value::Array(_) => "an array",
            toml::Value::Table(_) => "a table",
        }
    }
    fn matches(self, value: &toml::Value) -> bool {
        matches!(
            (self, value),
            (Self::String, toml::Value::String(_))
                | (Self::Integer, toml::Value::Integer(_))
                | (Self::Array, toml::Value::Array(_))
                | (Self::Table, toml::Value::Table(_))
        )
    }
    fn name(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Integer => "an integer",
            Self::Array => "an array",
            Self::Table => "a table",
        }
    }
}

/// Plugin types (`io.containerd.<type>.<id>`) of containerd 1.6 and 1.7 (schema 2).
const PLUGIN_TYPES_V2: &[&str] = &[
    "content.v1",
    "differ.v1",
    "event.v1",
    "gc.v1",
    "grpc.v1",
    "image-verifier.v1",
    "internal.v1",
    "lease.v1",
    "metadata.v1",
    "monitor.v1",
    "nri.v1",
    "runtime.v1",
    "runtime.v2",
    "sandbox.controller.v1",
    "sandbox.store.v1",
    "service.v1",
    "snapshotter.v1",
    "streaming.v1",
    "tracing.processor.v1",
    "transfer.v1",
    "ttrpc.v1",
    "warning.v1",
];

/// Plugin types of containerd 2.x (schemas 3 and 4).
const PLUGIN_TYPES_V3: &[&str] = &[
    "content.v1",
    "cri.v1",
    "differ.v1",
    "event.v1",
    "gc.v1",
    "grpc.v1",
    "image-verifier.v1",
    "internal.v1",
    "lease.v1",
    "metadata.v1",
    "metrics.v1",
    "monitor.container.v1",
    "monitor.task.v1",
    "mount-handler.v1",
    "mount-manager.v1",
    "nri.v1",
    "podsandbox.controller.v1",
    "runtime.v2",
    "sandbox.controller.v1",
    "sandbox.store.v1",
    "server.v1",
    "service.v1",
    "shim.v1",
    "snapshotter.v1",
    "streaming.v1",
    "tracing.processor.v1",
    "transfer.v1",
    "ttrpc.v1",
    "warning.v1",
];

/// What `io.containerd.grpc.v1.cri` still holds in schema 3: the streaming server.
const CRI_SERVER_KEYS_V3: &[&str] = &[
    "disable_tcp_service",
    "stream_server_address",
    "stream_server_port",
    "stream_idle_timeout",
    "enable_tls_streaming",
    "x509_key_pair_streaming",
];

/// Where schema 2's CRI keys moved in schema 3.
const CRI_MOVED_V3: &[(&str, &str)] = &[
    ("containerd", "io.containerd.cri.v1.runtime"),
    ("cni", "io.containerd.cri.v1.runtime"),
    ("enable_selinux", "io.containerd.cri.v1.runtime"),
    ("enable_cdi", "io.containerd.cri.v1.runtime"),
    ("cdi_spec_dirs", "io.containerd.cri.v1.runtime"),
    (
        "max_container_log_line_size",
        "io.containerd.cri.v1.runtime",
    ),
    (
        "device_ownership_from_security_context",
        "io.containerd.cri.v1.runtime",
    ),
    ("registry", "io.containerd.cri.v1.images"),
    ("image_decryption", "io.containerd.cri.v1.images"),
    ("image_pull_progress_timeout", "io.containerd.cri.v1.images"),
    (
        "sandbox_image",
        "io.containerd.cri.v1.images (pinned_images.sandbox)",
    ),
];

/// Checks the shape of an `extraConfig` TOML overlay against the schema containerd will
/// read: it parses; known top-level keys have their types; every plugin section names a
/// plugin type this containerd has and is a table; CRI settings sit where this schema
/// keeps them; `version` and runc's cgroup driver stay ours. Returns the problems.
pub fn check_extra_config(text: &str, schema: u8) -> Vec<String> {
    let table: toml::Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(e) => return vec![describe_toml_error(text, &e)],
    };
    let mut out = Vec::new();
    for (key, value) in &table {
        if key == "version" {
            out.push(
                "`version` is set by nodewright from containerd.version; remove it".to_owned(),
            );
            continue;
        }
        let Some((_, shape)) = TOP_LEVEL.iter().find(|(k, _)| k == key) else {
            out.push(format!(
                "`{key}` is not a top-level key of containerd's config (known: {})",
                TOP_LEVEL
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        };
        if !shape.matches(value) {
            out.push(format!(
                "`{key}` must be {} but is {}",
                shape.name(),
                Shape::of(value)
            ));
        }
    }
    if let Some(toml::Value::Table(plugins)) = table.get("plugins") {
        for (id, section) in plugins {
            check_plugin_section(id, section, schema, &mut out);
        }
    }
    out
}

fn check_plugin_section(id: &str, section: &toml::Value, schema: u8, out: &mut Vec<String>) {
    let at = format!("plugins.{id:?}");
    let types = if schema == 2 {
        PLUGIN_TYPES_V2
    } else {
        PLUGIN_TYPES_V3
    };
    let known = id.strip_prefix("io.containerd.").is_some_and(|rest| {
        types.iter().any(|t| {
            rest.strip_prefix(t)
                .and_then(|r| r.strip_prefix('.'))
                .is_some_and(|name| !name.is_empty())
        })
    });
    if !known {
        let hint = if schema == 2 && id.starts_with("io.containerd.cri.v1.") {
            "; containerd 1.x keeps its CRI settings under io.containerd.grpc.v1.cri".to_owned()
        } else if schema > 2 && id == "io.containerd.monitor.v1.cgroups" {
            "; containerd 2.x calls it io.containerd.monitor.task.v1.cgroups".to_owned()
        } else {
            String::new()
        };
        out.push(format!(
            "[{at}] is not a plugin of containerd with config version {schema}{hint}"
        ));
        return;
    }
    let toml::Value::Table(section) = section else {
        out.push(format!(
            "[{at}] must be a table but is {}",
            Shape::of(section)
        ));
        return;
    };
    if schema > 2 && id == "io.containerd.grpc.v1.cri" {
        for key in section.keys() {
            if CRI_SERVER_KEYS_V3.contains(&key.as_str()) {
                continue;
            }
            let moved = CRI_MOVED_V3
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, to)| format!("; config version {schema} keeps it in {to}"))
                .unwrap_or_default();
            out.push(format!(
                "[{at}] has no `{key}` in config version {schema}{moved}"
            ));
        }
    }
    let runtime = if schema == 2 {
        "io.containerd.grpc.v1.cri"
    } else {
        "io.containerd.cri.v1.runtime"
    };
    if id == runtime {
        let systemd_cgroup = section
            .get("containerd")
            .and_then(|c| c.get("runtimes"))
            .and_then(|r| r.get("runc"))
            .and_then(|r| r.get("options"))
            .and_then(|o| o.get("SystemdCgroup"));
        if let Some(value) = systemd_cgroup
            && value.as_bool() != Some(true)
        {
            out.push(format!(
                "[{at}.containerd.runtimes.runc.options] SystemdCgroup must stay true: the kubelet uses the systemd cgroup driver"
            ));
        }
    }
}

/// "TOML line N: <message>", with the line counted inside the overlay.
pub fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    match line {
        Some(line) => format!("TOML line {line}: {}", error.message().trim()),
        None => format!("TOML: {}", error.message().trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_versions() {
        let v = |s: &str| config_version(&ContainerdVersion::try_from(s).unwrap());
        assert_eq!(v("1.6.20"), 2);
        assert_eq!(v("1.7.27"), 2);
        assert_eq!(v("2.0.5"), 3);
        assert_eq!(v("2.2.1"), 3);
        assert_eq!(v("2.3.4"), 4);
    }

    #[test]
    fn overlay_shapes() {
        assert!(check_extra_config("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.gvisor]\nruntime_type = \"io.containerd.runsc.v1\"\n", 2).is_empty());
        assert!(check_extra_config("oom_score = -999\n[debug]\nlevel = \"info\"\n", 3).is_empty());
        let problems = |text: &str, schema| check_extra_config(text, schema).join("\n");

        let p = problems("version = 3\n", 3);
        assert!(p.contains("`version` is set by nodewright"), "{p}");
        let p = problems("rooot = \"/x\"\n", 2);
        assert!(p.contains("`rooot` is not a top-level key"), "{p}");
        let p = problems("debug = \"info\"\n", 2);
        assert!(p.contains("`debug` must be a table but is a string"), "{p}");
        let p = problems("[plugins]\n\"io.containerd.grpc.v1.cri\" = 5\n", 2);
        assert!(p.contains("must be a table but is an integer"), "{p}");
        let p = problems("[plugins.\"io.containerd.grpc.v1.crii\"]\n", 2);
        assert!(p.is_empty(), "a grpc.v1 plugin id is well formed: {p}");
        let p = problems("[plugins.\"io.containerd.cri.v1.runtime\"]\nx = 1\n", 2);
        assert!(p.contains("io.containerd.grpc.v1.cri"), "{p}");
        let p = problems("[plugins.\"io.containerd.magic.v9.x\"]\n", 3);
        assert!(p.contains("is not a plugin of containerd"), "{p}");
        let p = problems("[plugins.\"io.containerd.monitor.v1.cgroups\"]\n", 3);
        assert!(p.contains("io.containerd.monitor.task.v1.cgroups"), "{p}");
        // kops's `complex` case: 1.x paths in a 2.x config are silently ignored by
        // containerd; refuse them with where they went.
        let p = problems(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.test-handler]\ntest_str = \"test\"\n",
            4,
        );
        assert!(
            p.contains("has no `containerd` in config version 4")
                && p.contains("io.containerd.cri.v1.runtime"),
            "{p}"
        );
        let p = problems(
            "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]\nSystemdCgroup = false\n",
            3,
        );
        assert!(p.contains("SystemdCgroup must stay true"), "{p}");
        let p = problems("[plugins\nx = 1\n", 3);
        assert!(p.starts_with("TOML line 1:"), "{p}");
    }
}
