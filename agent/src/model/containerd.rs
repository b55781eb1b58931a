//! containerd and runc: the binaries, config.toml in the schema the configured version
//! reads, registry mirrors in certs.d, the unit, and /etc/crictl.yaml.

use toml::{Table, Value};

use super::ModelError;
use super::builder::{StateBuilder, fixed_path};
use super::desired::{DesiredService, Ownership};
use super::merge::merge_toml;
use super::render::MANAGED;
use crate::spec::{AbsPath, ContainerdSpec, MirrorUrl, NodeSpec, RegistryHost, UnitName};

const COMPONENT: &str = "containerd";

pub const CONFIG: &str = "/etc/containerd/config.toml";
pub const CERTS_DIR: &str = "/etc/containerd/certs.d";
pub const SOCKET: &str = "unix:///run/containerd/containerd.sock";
pub const CRICTL_CONFIG: &str = "/etc/crictl.yaml";
pub const UNIT: &str = "containerd.service";
pub const DEFAULT_BIN_DIR: &str = "/usr/local/bin";
pub const DEFAULT_RUNC: &str = "/usr/local/sbin/runc";
/// The programs taken from the release archive (its `bin/` directory). The v1 shims and
/// containerd-stress are left out: Kubernetes uses the runc v2 shim only.
pub const BINARIES: &[&str] = &["containerd", "containerd-shim-runc-v2", "ctr"];

pub fn render(spec: &NodeSpec, out: &mut StateBuilder) -> Result<(), ModelError> {
    let Some(containerd) = &spec.containerd else {
        return Ok(());
    };
    let bin_dir = containerd.binaries.directory_or(DEFAULT_BIN_DIR);
    let executable = |name: &str| {
        bin_dir.join(name).map_err(|source| ModelError::Field {
            at: "containerd.binaries.directory",
            source,
        })
    };
    if let Some(asset) = &containerd.binaries.asset {
        for name in BINARIES {
            out.asset_file(
                COMPONENT,
                executable(name)?,
                asset.as_str(),
                Some(&format!("bin/{name}")),
                Ownership::root(0o755),
            )?;
        }
    }
    let runc = containerd.runc.path_or(DEFAULT_RUNC);
    if let Some(asset) = &containerd.runc.asset {
        out.asset_file(
            "runc",
            runc.clone(),
            asset.as_str(),
            containerd.runc.member.as_ref().map(|m| m.as_str()),
            Ownership::root(0o755),
        )?;
    }

    // containerd reads network configs here; the network add-on writes them.
    out.directory(
        COMPONENT,
        fixed_path(super::cni::CONF_DIR),
        Ownership::root(0o755),
    )?;
    let cni_dir = spec
        .cni
        .as_ref()
        .map(|cni| cni.plugins.directory_or(super::cni::DEFAULT_DIR));
    let config = config_toml(containerd, &runc, cni_dir.as_ref())?;
    out.file(
        COMPONENT,
        fixed_path(CONFIG),
        config,
        Ownership::root(0o644),
    )?;
    for (registry, mirrors) in &containerd.registry_mirrors {
        out.file(
            COMPONENT,
            hosts_toml_path(registry)?,
            hosts_toml(mirrors),
            Ownership::root(0o644),
        )?;
    }
    out.file(
        COMPONENT,
        fixed_path(CRICTL_CONFIG),
        format!("{MANAGED}runtime-endpoint: {SOCKET}\nimage-endpoint: {SOCKET}\ntimeout: 10\n"),
        Ownership::root(0o644),
    )?;

    let containerd_bin = executable("containerd")?;
    let unit = UnitName::try_from(UNIT)?;
    let unit_file = out.unit_file(COMPONENT, &unit, &unit_text(&containerd_bin))?;
    // hosts.toml files are read at every pull: changing them needs no restart.
    out.service(
        COMPONENT,
        DesiredService {
            unit,
            enabled: true,
            running: true,
            inputs: vec![unit_file, fixed_path(CONFIG), containerd_bin],
            ready_with_peers: false,
        },
    )
}

/// The config.toml text: ours, then the spec's overlay merged over it.
pub fn config_toml(
    spec: &ContainerdSpec,
    runc: &AbsPath,
    cni_dir: Option<&AbsPath>,
) -> Result<String, ModelError> {
    let schema = spec.config_version();
    let mut config = Table::new();
    set(&mut config, &["version"], Value::Integer(i64::from(schema)));
    let (images, runtime) = if schema == 2 {
        let cri = "io.containerd.grpc.v1.cri";
        set(
            &mut config,
            &["plugins", cri, "sandbox_image"],
            spec.sandbox_image.as_str().into(),
        );
        (vec!["plugins", cri], vec!["plugins", cri])
    } else {
        set(
            &mut config,
            &[
                "plugins",
                "io.containerd.cri.v1.images",
                "pinned_images",
                "sandbox",
            ],
            spec.sandbox_image.as_str().into(),
        );
        (
            vec!["plugins", "io.containerd.cri.v1.images"],
            vec!["plugins", "io.containerd.cri.v1.runtime"],
        )
    };
    set(
        &mut config,
        &[images.as_slice(), &["registry", "config_path"]].concat(),
        CERTS_DIR.into(),
    );
    let containerd = [runtime.as_slice(), &["containerd"]].concat();
    set(
        &mut config,
        &[containerd.as_slice(), &["default_runtime_name"]].concat(),
        "runc".into(),
    );
    let runc_runtime = [containerd.as_slice(), &["runtimes", "runc"]].concat();
    set(
        &mut config,
        &[runc_runtime.as_slice(), &["runtime_type"]].concat(),
        "io.containerd.runc.v2".into(),
    );
    set(
        &mut config,
        &[runc_runtime.as_slice(), &["options", "SystemdCgroup"]].concat(),
        Value::Boolean(true),
    );
    set(
        &mut config,
        &[runc_runtime.as_slice(), &["options", "BinaryName"]].concat(),
        runc.as_str().into(),
    );
    if let Some(dir) = cni_dir.filter(|d| d.as_str() != super::cni::DEFAULT_DIR) {
        // containerd 2.1 replaced `bin_dir` by the list `bin_dirs`.
        let version = spec.version.version();
        let cni = [runtime.as_slice(), &["cni"]].concat();
        if version.major >= 2 && version.minor >= 1 {
            set(
                &mut config,
                &[cni.as_slice(), &["bin_dirs"]].concat(),
                Value::Array(vec![dir.as_str().into()]),
            );
        } else {
            set(
                &mut config,
                &[cni.as_slice(), &["bin_dir"]].concat(),
                dir.as_str().into(),
            );
        }
    }
    if let Some(text) = &spec.extra_config {
        let overlay: Table = toml::from_str(text).map_err(|e| {
            ModelError::Spec(format!(
                "containerd.extraConfig: {}",
                crate::spec::containerd_toml_error(text, &e)
            ))
        })?;
        merge_toml(&mut config, &overlay)
            .map_err(|e| ModelError::Spec(format!("containerd.extraConfig: {e}")))?;
    }
    let body = toml::to_string(&config).map_err(|e| ModelError::Encode {
        what: "containerd config.toml",
        detail: e.to_string(),
    })?;
    Ok(format!("{MANAGED}{body}"))
}

/// Sets a value at a path of tables, creating the tables on the way.
fn set(table: &mut Table, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut here = table;
    for key in parents {
        let entry = here
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        here = entry.as_table_mut().expect("made a table just above");
    }
    here.insert((*last).to_owned(), value);
}

/// certs.d/<registry>/hosts.toml; `*` is containerd's `_default`.
fn hosts_toml_path(registry: &RegistryHost) -> Result<AbsPath, ModelError> {
    let dir = if registry.as_str() == "*" {
        "_default"
    } else {
        registry.as_str()
    };
    fixed_path(CERTS_DIR)
        .join(&format!("{dir}/hosts.toml"))
        .map_err(ModelError::Value)
}

/// Mirrors in the spec's order, which is the order containerd tries them. (A TOML
/// table would sort them, so the file is written by hand; mirror URLs are checked to
/// hold no quotes or backslashes.)
fn hosts_toml(mirrors: &[MirrorUrl]) -> String {
    let mut text = MANAGED.to_owned();
    for mirror in mirrors {
        text.push_str(&format!(
            "\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ));
    }
    text
}

fn unit_text(containerd: &AbsPath) -> String {
    format!(
        "{MANAGED}\
[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target dbus.service

[Service]
ExecStart={containerd} --config {CONFIG}
Type=notify
# The containers' cgroups belong to containerd, and they outlive a restart of it.
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
LimitNOFILE=1048576
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Facts, desired_state, test_spec};

    fn config(containerd: &str) -> toml::Table {
        let spec = test_spec(&format!("containerd:\n{containerd}"));
        let desired = desired_state(&spec, &Facts::example()).unwrap();
        let text =
            String::from_utf8_lossy(desired.file(CONFIG).unwrap().content.bytes()).into_owned();
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn each_version_gets_its_schema() {
        let v2 = config("  version: 1.7.27\n");
        assert_eq!(v2["version"].as_integer(), Some(2));
        let cri = &v2["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("registry.k8s.io/pause:3.10")
        );
        assert_eq!(
            cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(true)
        );
        for (version, schema) in [("2.0.5", 3), ("2.2.0", 3), ("2.3.0", 4)] {
            let v3 = config(&format!("  version: {version}\n"));
            assert_eq!(v3["version"].as_integer(), Some(schema), "{version}");
            let runtime = &v3["plugins"]["io.containerd.cri.v1.runtime"];
            assert_eq!(
                runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
                Some(true)
            );
            assert_eq!(
                v3["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"].as_str(),
                Some("registry.k8s.io/pause:3.10")
            );
            assert!(v3["plugins"].get("io.containerd.grpc.v1.cri").is_none());
        }
    }

    #[test]
    fn mirrors_keep_their_order() {
        let spec = test_spec(
            "containerd:\n  version: 2.1.4\n  registryMirrors:\n    \"*\": [https://z.example.com, https://a.example.com]\n",
        );
        let desired = desired_state(&spec, &Facts::example()).unwrap();
        let hosts = desired
            .file("/etc/containerd/certs.d/_default/hosts.toml")
            .unwrap();
        let text = String::from_utf8_lossy(hosts.content.bytes());
        let z = text.find("z.example.com").unwrap();
        let a = text.find("a.example.com").unwrap();
        assert!(z < a, "{text}");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["host"].as_table().unwrap().len(), 2);
    }

    #[test]
    fn an_overlay_that_changes_a_kind_is_refused() {
        let spec = test_spec(
            "containerd:\n  version: 2.1.4\n  extraConfig: |\n    [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes]\n    runc = \"fast\"\n",
        );
        let err = desired_state(&spec, &Facts::example())
            .unwrap_err()
            .to_string();
        assert!(err.contains("containerd.extraConfig"), "{err}");
        assert!(err.contains("runtimes.runc is a table"), "{err}");
    }
}
