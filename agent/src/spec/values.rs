//! Checked values used by the node components' spec sections: images, packages,
//! labels, registries, Go durations and Kubernetes quantities.
//!
//! Like the types in `types.rs`, each one is checked while the YAML is read, so a bad
//! value is reported with its field path and line.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::types::{InvalidValue, checked_string};

checked_string!(
    /// A Go duration such as `30s`, `1m30s` or `12h`.
    GoDuration,
    check_go_duration,
    "A duration as Go writes it, e.g. 30s, 1m30s, 12h",
    pattern = "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$"
);

checked_string!(
    /// A Kubernetes resource quantity such as `100m`, `512Mi` or `1.5Gi`.
    Quantity,
    check_quantity,
    "A Kubernetes resource quantity, e.g. 100m, 512Mi, 2Gi"
);

checked_string!(
    /// A container image reference, e.g. `registry.k8s.io/pause:3.10`.
    ImageRef,
    check_image_ref,
    "A container image reference with a tag or digest"
);

checked_string!(
    /// An OS package name as apt or dnf take it.
    PackageName,
    check_package_name,
    "An OS package name",
    pattern = "^[A-Za-z0-9][A-Za-z0-9+._-]*$"
);

checked_string!(
    /// A Kubernetes label (or taint) key, e.g. `node-role.kubernetes.io/worker`.
    LabelKey,
    check_label_key,
    "A Kubernetes label key: an optional DNS prefix and a name of up to 63 characters"
);

checked_string!(
    /// A Kubernetes label (or taint) value: empty, or up to 63 characters.
    LabelValue,
    check_label_value,
    "A Kubernetes label value"
);

checked_string!(
    /// A registry host as image names spell it (`docker.io`, `localhost:5000`), or `*`
    /// for every registry.
    RegistryHost,
    check_registry_host,
    "A registry host[:port], or * for every registry"
);

checked_string!(
    /// An http:// or https:// URL of a registry mirror.
    MirrorUrl,
    check_mirror_url,
    "An http:// or https:// URL",
    pattern = "^https?://"
);

/// `time.ParseDuration`'s grammar, without a sign: one or more `<number><unit>`.
fn check_go_duration(value: &str) -> Result<(), String> {
    const UNITS: &[&str] = &["ns", "us", "µs", "ms", "s", "m", "h"];
    let fail = || {
        Err(format!(
            "duration {value:?} must be written like 30s, 1m30s or 12h"
        ))
    };
    if value == "0" {
        return Ok(());
    }
    let mut rest = value;
    if rest.is_empty() {
        return fail();
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        if number.is_empty() || number.parse::<f64>().is_err() {
            return fail();
        }
        rest = &rest[digits..];
        // Longest unit first, so "ms" is not read as "m".
        let Some(unit) = UNITS
            .iter()
            .filter(|u| rest.starts_with(**u))
            .max_by_key(|u| u.len())
        else {
            return fail();
        };
        rest = &rest[unit.len()..];
    }
    Ok(())
}

/// `resource.Quantity`'s grammar: a decimal number and an optional suffix.
fn check_quantity(value: &str) -> Result<(), String> {
    const SUFFIXES: &[&str] = &[
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let digits = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(digits);
    let number_ok = !number.is_empty()
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.matches('.').count() <= 1;
    let exponent_ok = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
        .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    if number_ok && (SUFFIXES.contains(&suffix) || exponent_ok) {
        Ok(())
    } else {
        Err(format!(
            "quantity {value:?} must be a number with an optional suffix, e.g. 100m, 512Mi, 2Gi"
        ))
    }
}

fn check_image_ref(value: &str) -> Result<(), String> {
    let fail = |why: &str| Err(format!("image {value:?} {why}"));
    if value.is_empty() || value.len() > 512 {
        return fail("must be between 1 and 512 characters");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
    {
        return fail("has characters an image reference cannot have");
    }
    let (name, digest) = match value.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (value, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return fail("has a digest that is not sha256:<64 hex digits>");
        }
    }
    // The tag follows the last `:` after the last `/` (a `:` before it is a port).
    let last_segment = name.rsplit('/').next().unwrap_or(name);
    let tagged = last_segment.contains(':');
    if !tagged && digest.is_none() {
        return fail("needs a tag or a digest (a moving `latest` is never pulled implicitly)");
    }
    let repository = match last_segment.split_once(':') {
        Some(_) => &name[..name.rfind(':').unwrap_or(name.len())],
        None => name,
    };
    if repository.is_empty()
        || repository.starts_with('/')
        || repository.ends_with('/')
        || repository.contains("//")
    {
        return fail("has an empty repository path");
    }
    // Registry hosts may have capitals only in theory; repository paths never.
    let path = repository.split_once('/').map_or(repository, |(_, p)| p);
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return fail("has capitals in its repository path");
    }
    Ok(())
}

fn check_package_name(value: &str) -> Result<(), String> {
    let valid = (1..=128).contains(&value.len())
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "package name {value:?} must start with a letter or digit and hold only letters, digits, +, ., _ and -"
        ))
    }
}

/// A label name: up to 63 characters, alphanumeric at both ends, `-_.` inside.
fn label_name_ok(name: &str) -> bool {
    name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

fn check_label_key(value: &str) -> Result<(), String> {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    });
    if prefix_ok && !name.is_empty() && label_name_ok(name) {
        Ok(())
    } else {
        Err(format!(
            "label key {value:?} must be [prefix/]name: a DNS prefix and a name of up to 63 letters, digits, -, _ and ., alphanumeric at both ends"
        ))
    }
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || label_name_ok(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?} must be empty or up to 63 letters, digits, -, _ and ., alphanumeric at both ends"
        ))
    }
}

fn check_registry_host(value: &str) -> Result<(), String> {
    if value == "*" {
        return Ok(());
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!(
            "registry {value:?} must be a lowercase host name with an optional :port, or *"
        ))
    }
}

fn check_mirror_url(value: &str) -> Result<(), String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    let valid = rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with('/')
            && r.chars()
                .all(|c| c.is_ascii_graphic() && !"\"'\\`".contains(c))
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "mirror {value:?} must be an http:// or https:// URL without quotes or spaces"
        ))
    }
}

/// A containerd version, 1.6 or newer; it decides which config schema is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerdVersion(semver::Version);

impl ContainerdVersion {
    pub fn version(&self) -> &semver::Version {
        &self.0
    }
}

impl TryFrom<String> for ContainerdVersion {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
        let bare = value.strip_prefix('v').unwrap_or(&value);
        let version = semver::Version::parse(bare)
            .map_err(|e| InvalidValue(format!("{value:?} is not a version such as 2.1.4: {e}")))?;
        let supported = (version.major == 1 && version.minor >= 6) || version.major == 2;
        if !supported {
            return Err(InvalidValue(format!(
                "containerd {value:?} is not supported (1.6, 1.7 or 2.x)"
            )));
        }
        Ok(Self(version))
    }
}

impl TryFrom<&str> for ContainerdVersion {
    type Error = InvalidValue;
    fn try_from(value: &str) -> Result<Self, InvalidValue> {
        Self::try_from(value.to_owned())
    }
}

impl From<ContainerdVersion> for String {
    fn from(value: ContainerdVersion) -> String {
        value.0.to_string()
    }
}

impl fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for ContainerdVersion {
    fn schema_name() -> Cow<'static, str> {
        "ContainerdVersion".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A containerd version: 1.6, 1.7 or 2.x, e.g. \"2.1.4\"",
            "pattern": "^v?[12]\\.[0-9]+\\.[0-9]+"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T: TryFrom<&'static str>>(values: &[&'static str]) {
        for value in values {
            assert!(T::try_from(value).is_ok(), "{value} was refused");
        }
    }
    fn bad<T: TryFrom<&'static str>>(values: &[&'static str]) {
        for value in values {
            assert!(T::try_from(value).is_err(), "{value} was accepted");
        }
    }

    #[test]
    fn durations() {
        ok::<GoDuration>(&["0", "30s", "1m30s", "12h", "1.5h", "250ms", "15m0s", "10µs"]);
        bad::<GoDuration>(&["", "30", "-5s", "5 s", "1d", "s", "1m30", "1..5s"]);
    }

    #[test]
    fn quantities() {
        ok::<Quantity>(&["100m", "512Mi", "2Gi", "1.5Gi", "1", "1e3", "0"]);
        bad::<Quantity>(&["", "Mi", "1.Gi", "100 m", "10%", "1GB", "-1"]);
    }

    #[test]
    fn images() {
        ok::<ImageRef>(&[
            "registry.k8s.io/pause:3.10",
            "localhost:5000/kube-proxy:v1.33.4",
            "pause:3.10",
            &*Box::leak(
                format!("registry.k8s.io/pause@sha256:{}", "a".repeat(64)).into_boxed_str(),
            ),
        ]);
        bad::<ImageRef>(&[
            "",
            "registry.k8s.io/pause",
            "localhost:5000/pause",
            "registry.k8s.io/Pause:3.10",
            "registry.k8s.io/pause:3.10 ",
            "registry.k8s.io/pause@sha256:abc",
            "/pause:3.10",
        ]);
    }

    #[test]
    fn packages_labels_registries() {
        ok::<PackageName>(&["conntrack", "libstdc++6", "python3.11", "NetworkManager"]);
        bad::<PackageName>(&["-y", "--allow-downgrades", "a b", "pkg=1.0", ""]);
        ok::<LabelKey>(&[
            "node-role.kubernetes.io/worker",
            "topology.kubernetes.io/zone",
            "team",
        ]);
        bad::<LabelKey>(&["", "/x", "Node-Role.example.com/x", "a/b/c", "-x", "x_"]);
        ok::<LabelValue>(&["", "spot", "a.b-c_d"]);
        bad::<LabelValue>(&["-a", "a b", &*"x".repeat(64).leak()]);
        ok::<RegistryHost>(&["docker.io", "*", "localhost:5000", "registry.k8s.io"]);
        bad::<RegistryHost>(&["Docker.io", "https://docker.io", "a:b", ""]);
        ok::<MirrorUrl>(&["https://mirror.example.com", "http://10.0.0.5:5000/v2"]);
        bad::<MirrorUrl>(&[
            "mirror.example.com",
            "https://",
            "https://a b",
            "https://a\"b",
        ]);
    }

    #[test]
    fn containerd_versions() {
        assert_eq!(
            ContainerdVersion::try_from("v2.1.4").unwrap().to_string(),
            "2.1.4"
        );
        ok::<ContainerdVersion>(&["1.6.20", "1.7.27", "2.0.0", "2.3.4"]);
        bad::<ContainerdVersion>(&["1.5.13", "3.0.0", "latest", "2.1"]);
    }
}
