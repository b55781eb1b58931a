//! `containerdConfig` -> the `containerd` section, as nodeup's
//! `nodeup/pkg/model/containerd.go` renders config.toml (containerd 2.x, schema 3 or 4).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::assets::{AssetUse, TranslatedAssets};
use crate::kops::nodeup_config::{ContainerdConfig, IntOrString, Nri, Runc};
use crate::kops::refusals::Ledger;
use crate::spec::{
    ContainerdVersion, ImageRef, MirrorUrl, RegistryHost, containerd_config_version,
};

const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
const DEFAULT_ROOT: &str = "/var/lib/containerd";
const DEFAULT_STATE: &str = "/run/containerd";

pub(super) fn translate(
    config: Option<&ContainerdConfig>,
    assets: &TranslatedAssets,
    ledger: &mut Ledger,
) -> Value {
    let Some(config) = config else {
        ledger.refuse(
            "containerdConfig",
            "missing: nodeup needs containerd's version to configure it",
        );
        return json!({});
    };
    let ContainerdConfig {
        address,
        config_additions,
        config_override,
        log_level,
        packages,
        registry_mirrors,
        root,
        skip_install,
        state,
        version,
        nvidia_gpu,
        gvisor,
        runc,
        selinux_enabled,
        nri,
        // Read by the kubelet's translation (the ECR provider's registries).
        use_ecr_credentials_for_mirrors: _,
        install_cri_ctl,
        install_nerd_ctl,
        sandbox_image,
    } = config;
    for (field, value, default) in [
        ("address", address, DEFAULT_ADDRESS),
        ("root", root, DEFAULT_ROOT),
        ("state", state, DEFAULT_STATE),
    ] {
        if let Some(value) = value.as_deref().filter(|v| *v != default) {
            ledger.refuse(
                format!("containerdConfig.{field}"),
                format!("{value:?}: nodewright runs containerd at {default} (the kubelet's endpoint and containerd's unit name it)"),
            );
        }
    }
    ledger.refuse_if(
        config_override.is_some(),
        "containerdConfig.configOverride",
        "a whole config.toml in place of the rendered one: give the settings as configAdditions",
    );
    ledger.refuse_if(
        *skip_install,
        "containerdConfig.skipInstall",
        "nodewright always installs and configures containerd on a worker",
    );
    ledger.refuse_if(
        nvidia_gpu.is_some(),
        "containerdConfig.nvidiaGPU",
        "GPU nodes: the NVIDIA runtime is not configured by nodewright",
    );
    ledger.refuse_if(
        gvisor.is_some(),
        "containerdConfig.gvisor",
        "the gVisor runtime: nodewright does not install runsc",
    );
    ledger.refuse_if(
        *selinux_enabled,
        "containerdConfig.selinuxEnabled",
        "SELinux: nodeup also relabels the binaries at every start; nodewright does not",
    );
    if packages.is_some() {
        ledger.note(
            "containerdConfig.packages",
            "kops chose the containerd archive from it; the nodeupconfig's assets carry that choice",
        );
    }
    if let Some(Runc { version, packages }) = runc {
        if let Some(version) = version {
            ledger.note(
                "containerdConfig.runc.version",
                format!("{version}: the runc asset is that version"),
            );
        }
        if packages.is_some() {
            ledger.note(
                "containerdConfig.runc.packages",
                "kops chose the runc asset from it",
            );
        }
    }
    for (wanted, field, used_as) in [
        (*install_cri_ctl, "installCriCtl", AssetUse::Crictl),
        (*install_nerd_ctl, "installNerdCtl", AssetUse::Nerdctl),
    ] {
        if wanted && assets.name(used_as).is_none() {
            ledger.refuse(
                format!("containerdConfig.{field}"),
                "is true but the nodeupconfig's assets have no such archive",
            );
        }
    }

    let mut section = Map::new();
    let Some(version) = version.as_deref() else {
        ledger.refuse(
            "containerdConfig.version",
            "missing: it picks containerd's config schema",
        );
        return Value::Object(section);
    };
    let Some(version) = ledger.value(
        "containerdConfig.version",
        ContainerdVersion::try_from(version),
    ) else {
        return Value::Object(section);
    };
    let schema = containerd_config_version(&version);
    section.insert("version".into(), json!(version));
    if let Some(asset) = assets.name(AssetUse::Containerd) {
        section.insert("binaries".into(), json!({"asset": asset}));
    }
    if let Some(asset) = assets.name(AssetUse::Runc) {
        section.insert("runc".into(), json!({"asset": asset}));
    }
    if let Some(image) = sandbox_image
        && let Some(image) = ledger.value(
            "containerdConfig.sandboxImage",
            ImageRef::try_from(image.as_str()),
        )
    {
        section.insert("sandboxImage".into(), json!(image));
    }
    let mirrors = mirrors(registry_mirrors.as_ref(), ledger);
    if !mirrors.is_empty() {
        section.insert("registryMirrors".into(), Value::Object(mirrors));
    }
    let mut overlay = toml::Table::new();
    if let Some(level) = log_level.as_deref().filter(|l| !l.is_empty()) {
        // nodeup passes `--log-level`; the config's [debug] level is the same setting.
        set(
            &mut overlay,
            &["debug", "level"],
            toml::Value::String(level.to_owned()),
        );
    }
    if let Some(nri) = nri {
        apply_nri(&mut overlay, nri);
    }
    if let Some(additions) = config_additions {
        apply_additions(&mut overlay, additions, ledger);
    }
    if !overlay.is_empty() {
        let text = toml::to_string(&overlay).unwrap_or_default();
        let problems = crate::spec::check_containerd_extra_config(&text, schema);
        if problems.is_empty() {
            section.insert("extraConfig".into(), json!(text));
        } else {
            for problem in problems {
                ledger.refuse(
                    "containerdConfig.configAdditions",
                    format!("containerd {version} (config version {schema}): {problem}"),
                );
            }
        }
    }
    Value::Object(section)
}

fn mirrors(
    registry_mirrors: Option<&BTreeMap<String, Vec<String>>>,
    ledger: &mut Ledger,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (registry, urls) in registry_mirrors.into_iter().flatten() {
        let field = format!("containerdConfig.registryMirrors.{registry}");
        let Some(host) = ledger.value(&field, RegistryHost::try_from(registry.as_str())) else {
            continue;
        };
        let mut checked = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            if let Some(url) =
                ledger.value(&format!("{field}[{i}]"), MirrorUrl::try_from(url.as_str()))
            {
                checked.push(url);
            }
        }
        out.insert(host.to_string(), json!(checked));
    }
    out
}

fn apply_nri(overlay: &mut toml::Table, nri: &Nri) {
    if nri.enabled == Some(false) {
        return;
    }
    let path = ["plugins", "io.containerd.nri.v1.nri"];
    set(
        overlay,
        &[path[0], path[1], "disable"],
        toml::Value::Boolean(false),
    );
    for (key, value) in [
        ("plugin_request_timeout", &nri.plugin_request_timeout),
        (
            "plugin_registration_timeout",
            &nri.plugin_registration_timeout,
        ),
    ] {
        if let Some(value) = value {
            set(
                overlay,
                &[path[0], path[1], key],
                toml::Value::String(value.clone()),
            );
        }
    }
}

/// kops's configAdditions: each key a dotted path (segments may be quoted), each value
/// an int, `true`/`false`, or a string; applied in sorted order, as nodeup does.
fn apply_additions(
    overlay: &mut toml::Table,
    additions: &BTreeMap<String, IntOrString>,
    ledger: &mut Ledger,
) {
    for (key, value) in additions {
        let Some(path) = split_path(key) else {
            ledger.refuse(
                format!("containerdConfig.configAdditions.{key}"),
                "not a dotted path (unbalanced quotes or an empty segment)",
            );
            continue;
        };
        let value = match value {
            IntOrString::Int(n) => toml::Value::Integer(*n),
            IntOrString::String(s) if s == "true" => toml::Value::Boolean(true),
            IntOrString::String(s) if s == "false" => toml::Value::Boolean(false),
            IntOrString::String(s) => toml::Value::String(s.clone()),
        };
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        if !set(overlay, &segments, value) {
            ledger.refuse(
                format!("containerdConfig.configAdditions.{key}"),
                "sets a key below a value that is not a table",
            );
        }
    }
}

/// Splits `a."b.c".d` into `a`, `b.c`, `d` (Go's CSV reader with '.' as the comma).
fn split_path(key: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if quoted {
        return None;
    }
    out.push(current);
    (!out.iter().any(String::is_empty)).then_some(out)
}

/// Sets `path` to `value`, making tables on the way; false if a value is in the way.
fn set(table: &mut toml::Table, path: &[&str], value: toml::Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut here = table;
    for segment in parents {
        let entry = here
            .entry((*segment).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(next) = entry else {
            return false;
        };
        here = next;
    }
    here.insert((*last).to_owned(), value);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_paths_with_quotes() {
        assert_eq!(
            split_path(
                r#"plugins."io.containerd.cri.v1.runtime".containerd.runtimes.x.runtime_type"#
            )
            .unwrap(),
            [
                "plugins",
                "io.containerd.cri.v1.runtime",
                "containerd",
                "runtimes",
                "x",
                "runtime_type"
            ]
        );
        assert!(split_path(r#"plugins."unbalanced"#).is_none());
        assert!(split_path("a..b").is_none());
    }

    #[test]
    fn additions_become_an_overlay() {
        let mut ledger = Ledger::default();
        let mut overlay = toml::Table::new();
        let additions: BTreeMap<String, IntOrString> = [
            (
                r#"plugins."io.containerd.cri.v1.runtime".containerd.runtimes.h.flag"#.to_owned(),
                IntOrString::String("true".to_owned()),
            ),
            ("oom_score".to_owned(), IntOrString::Int(-999)),
            ("oom_score.x".to_owned(), IntOrString::Int(1)),
        ]
        .into();
        apply_additions(&mut overlay, &additions, &mut ledger);
        assert_eq!(overlay["oom_score"].as_integer(), Some(-999));
        assert_eq!(ledger.refusals.len(), 1, "{:?}", ledger.refusals);
        assert!(ledger.refusals[0].field.ends_with("oom_score.x"));
        let text = toml::to_string(&overlay).unwrap();
        assert!(text.contains("flag = true"), "{text}");
    }
}
