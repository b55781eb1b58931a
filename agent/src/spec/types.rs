//! Validated scalar types used by the spec documents.
//!
//! Each type checks its value while the YAML is being deserialized, so a bad value is
//! reported by the parser with the field path and the line, like a type error.

use std::path::{Component, Path};

/// A value refused by its type's check: what is wrong with it, naming the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl From<String> for InvalidValue {
    fn from(reason: String) -> Self {
        Self(reason)
    }
}

/// Declares a string newtype that is checked by `$check` on the way in.
macro_rules! checked_string {
    ($(#[$meta:meta])* $name:ident, $check:path, $description:literal $(, pattern = $pattern:literal)?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::spec::InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $check(&value)?;
                Ok(Self(value))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = $crate::spec::InvalidValue;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::try_from(value.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl ::schemars::JsonSchema for $name {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                #[allow(unused_mut)]
                let mut schema = ::schemars::json_schema!({ "type": "string", "description": $description });
                $(schema.insert("pattern".into(), $pattern.into());)?
                schema
            }
        }
    };
}

// Other spec modules declare their own checked strings with it.
pub(crate) use checked_string;

checked_string!(
    /// An absolute, normalized path on the node: starts with `/`, no `.` or `..`
    /// components, no empty components, no trailing slash.
    AbsPath,
    check_abs_path,
    "An absolute path without `.` or `..` components",
    pattern = "^/"
);

checked_string!(
    /// A systemd unit name such as `kubelet.service`.
    UnitName,
    check_unit_name,
    "A systemd unit name with its type suffix",
    pattern = "^[A-Za-z0-9:_.@\\\\-]+\\.(service|socket|timer|mount|automount|path|target|slice|swap)$"
);

checked_string!(
    /// The file name of a systemd drop-in, ending in `.conf`.
    DropInName,
    check_drop_in_name,
    "A drop-in file name ending in .conf",
    pattern = "^[A-Za-z0-9_.@-]+\\.conf$"
);

checked_string!(
    /// A sysctl key in dotted form, e.g. `net.ipv4.ip_forward`.
    SysctlKey,
    check_sysctl_key,
    "A sysctl key in dotted form",
    pattern = "^[a-z0-9_]+(\\.[a-zA-Z0-9_*-]+)+$"
);

checked_string!(
    /// A kernel module name as `modprobe` takes it.
    ModuleName,
    check_module_name,
    "A kernel module name",
    pattern = "^[A-Za-z0-9_-]+$"
);

checked_string!(
    /// A lowercase hex sha256 digest.
    Sha256Hex,
    check_sha256,
    "A sha256 digest in lowercase hex (64 characters)",
    pattern = "^[0-9a-f]{64}$"
);

checked_string!(
    /// A DNS name (cluster names, API names): lowercase labels separated by dots.
    DnsName,
    check_dns_name,
    "A DNS name",
    pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
);

checked_string!(
    /// A name for a user or group: a name or a numeric id.
    Principal,
    check_principal,
    "A user or group name, or a numeric id",
    pattern = "^[a-z_][a-z0-9_-]*\\$?$|^[0-9]+$"
);

checked_string!(
    /// The name of an asset in the spec, e.g. `kubelet` or `cni-plugins`.
    AssetName,
    check_asset_name,
    "An asset name: lowercase letters, digits, `.`, `_` and `-`",
    pattern = "^[a-z0-9][a-z0-9._-]*$"
);

checked_string!(
    /// Where an asset can be downloaded: `https://`, `http://`, `s3://bucket/key` or
    /// `file:///path`. Credentials in the URL are refused: URLs are logged.
    AssetUrl,
    check_asset_url,
    "An https://, http://, s3:// or file:// URL",
    pattern = "^(https?|s3|file)://"
);

checked_string!(
    /// A path inside an archive, relative and normalized, e.g. `bin/containerd`.
    MemberPath,
    check_member_path,
    "A relative path inside an archive, without `.` or `..` components"
);

impl AbsPath {
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// The path with its leading `/` removed, for joining under a root directory.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }

    /// The parent directory, or `None` for `/`.
    pub fn parent(&self) -> Option<AbsPath> {
        let parent = Path::new(&self.0).parent()?;
        Some(AbsPath(parent.to_str()?.to_owned()))
    }

    /// Joins a relative, already-checked file name under this directory.
    pub fn join(&self, name: &str) -> Result<AbsPath, InvalidValue> {
        let joined = if self.0 == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.0)
        };
        AbsPath::try_from(joined)
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &AbsPath) -> bool {
        Path::new(&self.0).starts_with(Path::new(&other.0))
    }

    /// Every ancestor from the root down, excluding `/` and `self`.
    pub fn ancestors(&self) -> Vec<AbsPath> {
        let mut out: Vec<AbsPath> = Path::new(&self.0)
            .ancestors()
            .skip(1)
            .filter_map(|p| p.to_str())
            .filter(|p| *p != "/")
            .map(|p| AbsPath(p.to_owned()))
            .collect();
        out.reverse();
        out
    }
}

fn check_abs_path(value: &str) -> Result<(), String> {
    if !value.starts_with('/') {
        return Err(format!("path {value:?} must be absolute (start with /)"));
    }
    if value.len() > 1 && value.ends_with('/') {
        return Err(format!("path {value:?} must not end with /"));
    }
    if value.contains("//") {
        return Err(format!("path {value:?} has an empty component"));
    }
    if value.contains('\0') {
        return Err(format!("path {value:?} contains a NUL byte"));
    }
    for component in Path::new(value).components() {
        match component {
            Component::RootDir | Component::Normal(_) => {}
            Component::ParentDir => {
                return Err(format!("path {value:?} must not contain `..`"));
            }
            Component::CurDir | Component::Prefix(_) => {
                return Err(format!("path {value:?} must not contain `.`"));
            }
        }
    }
    if value.split('/').any(|c| c == ".") {
        return Err(format!("path {value:?} must not contain `.`"));
    }
    Ok(())
}

fn check_asset_name(value: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "asset name {value:?} must be 1-63 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
        ))
    }
}

fn check_asset_url(value: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{value:?} carries credentials; URLs are logged, so use the instance role (s3://) or a mirror instead"
        ));
    }
    match url.scheme() {
        "https" | "http" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("{value:?} has no host"));
            }
        }
        "s3" => {
            let bucket = url.host_str().unwrap_or("");
            if bucket.is_empty() || url.path().len() <= 1 {
                return Err(format!("{value:?} must be s3://bucket/key"));
            }
        }
        "file" => {
            if url.host_str().is_some_and(|h| !h.is_empty()) {
                return Err(format!("{value:?} must be file:///absolute/path"));
            }
        }
        other => {
            return Err(format!(
                "{value:?}: scheme {other}:// is not supported (https, http, s3, file)"
            ));
        }
    }
    Ok(())
}

fn check_member_path(value: &str) -> Result<(), String> {
    if value.is_empty() || value.starts_with('/') {
        return Err(format!(
            "member {value:?} must be a relative path inside the archive"
        ));
    }
    if value.contains('\0') {
        return Err(format!("member {value:?} contains a NUL byte"));
    }
    if value
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "member {value:?} must not contain empty, `.` or `..` components"
        ));
    }
    Ok(())
}

const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "timer",
    "mount",
    "automount",
    "path",
    "target",
    "slice",
    "swap",
];

fn check_unit_name(value: &str) -> Result<(), String> {
    let Some((stem, suffix)) = value.rsplit_once('.') else {
        return Err(format!(
            "unit name {value:?} needs a type suffix such as .service"
        ));
    };
    if !UNIT_SUFFIXES.contains(&suffix) {
        return Err(format!(
            "unit name {value:?} has an unknown type .{suffix} (expected one of {})",
            UNIT_SUFFIXES.join(", ")
        ));
    }
    let valid = !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.@-\\".contains(c));
    if !valid || value.len() > 255 {
        return Err(format!(
            "unit name {value:?} has characters systemd refuses"
        ));
    }
    Ok(())
}

fn check_drop_in_name(value: &str) -> Result<(), String> {
    let valid = value.ends_with(".conf")
        && value.len() > 5
        && !value.starts_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "drop-in name {value:?} must be a plain file name ending in .conf"
        ))
    }
}

fn check_sysctl_key(value: &str) -> Result<(), String> {
    let parts: Vec<&str> = value.split('.').collect();
    let valid = parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-*".contains(c))
        })
        && parts[0].chars().all(|c| c.is_ascii_lowercase() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "sysctl key {value:?} is not a dotted key such as net.ipv4.ip_forward"
        ))
    }
}

fn check_module_name(value: &str) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= 56
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!("kernel module name {value:?} is not valid"))
    }
}

fn check_sha256(value: &str) -> Result<(), String> {
    let valid = value.len() == 64
        && value
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a sha256 digest (64 lowercase hex characters)"
        ))
    }
}

fn check_dns_name(value: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if value.len() <= 253 && value.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a lowercase DNS name (labels of a-z, 0-9 and -)"
        ))
    }
}

fn check_principal(value: &str) -> Result<(), String> {
    let numeric = !value.is_empty() && value.chars().all(|c| c.is_ascii_digit());
    let name = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-$".contains(c))
        && value.len() <= 32;
    if numeric || name {
        Ok(())
    } else {
        Err(format!("{value:?} is not a user or group name or id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{FileMode, KubernetesVersion};

    #[test]
    fn abs_path_rules() {
        assert!(AbsPath::try_from("/etc/kubernetes/kubelet.conf").is_ok());
        assert!(AbsPath::try_from("/").is_ok());
        for bad in [
            "etc/x",
            "/etc/../x",
            "/etc/./x",
            "/etc//x",
            "/etc/",
            "",
            "./x",
        ] {
            assert!(AbsPath::try_from(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn abs_path_ancestors_and_join() {
        let p = AbsPath::try_from("/etc/systemd/system/kubelet.service").unwrap();
        let names: Vec<String> = p.ancestors().into_iter().map(String::from).collect();
        assert_eq!(names, ["/etc", "/etc/systemd", "/etc/systemd/system"]);
        assert_eq!(p.relative(), "etc/systemd/system/kubelet.service");
        let root = AbsPath::try_from("/").unwrap();
        assert_eq!(root.join("etc").unwrap().as_str(), "/etc");
        assert!(root.join("..").is_err());
    }

    #[test]
    fn modes_are_octal_strings() {
        assert_eq!(FileMode::try_from("0644".to_owned()).unwrap().bits(), 0o644);
        assert_eq!(FileMode::try_from("600".to_owned()).unwrap().bits(), 0o600);
        for bad in ["0648", "rw-r--r--", "12", "07777x", "77777"] {
            assert!(FileMode::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        assert_eq!(String::from(FileMode::new(0o755)), "0755");
    }

    #[test]
    fn names() {
        assert!(UnitName::try_from("kubelet.service").is_ok());
        assert!(UnitName::try_from("var-lib-etcd.mount").is_ok());
        assert!(UnitName::try_from("kubelet").is_err());
        assert!(UnitName::try_from("kube let.service").is_err());
        assert!(UnitName::try_from("x.conf").is_err());
        assert!(DropInName::try_from("10-proxy.conf").is_ok());
        assert!(DropInName::try_from("../x.conf").is_err());
        assert!(SysctlKey::try_from("net.ipv4.ip_forward").is_ok());
        assert!(SysctlKey::try_from("net.ipv4.conf.all.rp_filter").is_ok());
        assert!(SysctlKey::try_from("net/ipv4/ip_forward").is_err());
        assert!(SysctlKey::try_from("net..ipv4").is_err());
        assert!(SysctlKey::try_from("forward").is_err());
        assert!(ModuleName::try_from("br_netfilter").is_ok());
        assert!(ModuleName::try_from("br netfilter").is_err());
        assert!(DnsName::try_from("prod.example.com").is_ok());
        assert!(DnsName::try_from("Prod.example.com").is_err());
        assert!(DnsName::try_from("-a.b").is_err());
        assert!(Sha256Hex::try_from("a".repeat(64)).is_ok());
        assert!(Sha256Hex::try_from("A".repeat(64)).is_err());
        assert!(Principal::try_from("root").is_ok());
        assert!(Principal::try_from("1000").is_ok());
        assert!(Principal::try_from("Root User").is_err());
    }

    #[test]
    fn asset_names_urls_and_members() {
        assert!(AssetName::try_from("cni-plugins").is_ok());
        assert!(AssetName::try_from("Kubelet").is_err());
        assert!(AssetName::try_from("-x").is_err());
        for good in [
            "https://dl.k8s.io/release/v1.33.4/bin/linux/amd64/kubelet",
            "http://10.0.0.1:8080/x",
            "s3://my-bucket/assets/kubelet",
            "file:///opt/assets/kubelet",
        ] {
            assert!(AssetUrl::try_from(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://x/y",
            "https://user:secret@x/y",
            "s3://bucket",
            "file://host/x",
            "kubelet",
        ] {
            assert!(AssetUrl::try_from(bad).is_err(), "{bad}");
        }
        assert!(MemberPath::try_from("bin/containerd").is_ok());
        for bad in [
            "/bin/x", "../x", "bin/../x", "./bin/x", "bin//x", "bin/", "",
        ] {
            assert!(MemberPath::try_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kubernetes_versions() {
        let v = KubernetesVersion::try_from("v1.33.4".to_owned()).unwrap();
        assert_eq!(v.minor(), "1.33");
        assert_eq!(String::from(v), "1.33.4");
        assert!(KubernetesVersion::try_from("1.20.0".to_owned()).is_err());
        assert!(KubernetesVersion::try_from("latest".to_owned()).is_err());
    }
}
