//! The keys and kinds the state records, as types. On disk they are the strings the
//! agent has always written (`service:kubelet.service`, `file`, `sha256:<hex>#<member>`),
//! so a node upgraded to a new agent reads its old `state.json` and writes the same keys.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::{AbsPath, UnitName};

/// What an applied record is about: the trigger whose inputs it holds.
#[derive(Debug, Clone)]
pub enum AppliedKey {
    /// A service started or restarted (`service:<unit>`).
    Service(UnitName),
    /// A unit enabled (`enable:<unit>`).
    Enable(UnitName),
    /// The inputs a static pod manifest was last written with (`static-pod:<path>`).
    StaticPod(AbsPath),
    /// systemd's unit set, as last loaded (`daemon-reload`).
    DaemonReload,
    /// The kernel modules file, as last loaded (`modules`).
    Modules,
    /// The sysctl file, as last applied (`sysctls`).
    Sysctls,
    /// The OS packages, as last installed (`packages`).
    Packages,
    /// Swap turned off (`swap-off`).
    SwapOff,
    /// A key this agent does not know (written by another version): kept as it is.
    Other(String),
}

impl AppliedKey {
    /// The text on disk, in two parts that are never copied to compare keys: a fixed
    /// prefix and what follows it.
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::Service(unit) => ("service:", unit.as_str()),
            Self::Enable(unit) => ("enable:", unit.as_str()),
            Self::StaticPod(path) => ("static-pod:", path.as_str()),
            Self::DaemonReload => ("daemon-reload", ""),
            Self::Modules => ("modules", ""),
            Self::Sysctls => ("sysctls", ""),
            Self::Packages => ("packages", ""),
            Self::SwapOff => ("swap-off", ""),
            Self::Other(text) => ("", text),
        }
    }

    /// The unit of a service or enable record.
    pub fn unit(&self) -> Option<&UnitName> {
        match self {
            Self::Service(unit) | Self::Enable(unit) => Some(unit),
            _ => None,
        }
    }

    /// Reads a key as written on disk; anything unknown (or malformed) is `Other`.
    pub fn parse(text: &str) -> Self {
        let typed = if let Some(unit) = text.strip_prefix("service:") {
            UnitName::try_from(unit).ok().map(Self::Service)
        } else if let Some(unit) = text.strip_prefix("enable:") {
            UnitName::try_from(unit).ok().map(Self::Enable)
        } else if let Some(path) = text.strip_prefix("static-pod:") {
            AbsPath::try_from(path).ok().map(Self::StaticPod)
        } else {
            match text {
                "daemon-reload" => Some(Self::DaemonReload),
                "modules" => Some(Self::Modules),
                "sysctls" => Some(Self::Sysctls),
                "packages" => Some(Self::Packages),
                "swap-off" => Some(Self::SwapOff),
                _ => None,
            }
        };
        typed.unwrap_or_else(|| Self::Other(text.to_owned()))
    }
}

impl fmt::Display for AppliedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, rest) = self.parts();
        write!(f, "{prefix}{rest}")
    }
}

// Keys compare as their text does, so a map of them is written in the order the
// string-keyed map of earlier agents was.
impl Ord for AppliedKey {
    fn cmp(&self, other: &Self) -> Ordering {
        let ((a, b), (c, d)) = (self.parts(), other.parts());
        a.bytes().chain(b.bytes()).cmp(c.bytes().chain(d.bytes()))
    }
}

impl PartialOrd for AppliedKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for AppliedKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for AppliedKey {}

impl Serialize for AppliedKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AppliedKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(Self::parse(&text))
    }
}

/// What a managed path's record describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    File,
    Directory,
    Symlink,
    /// nodewright's block in a shared file, keyed `<path>#<name>`.
    Block,
    /// A kind this agent does not know (written by another version).
    Other(String),
}

impl RecordKind {
    pub fn as_str(&self) -> &str {
        match self {
            Self::File => "file",
            Self::Directory => "directory",
            Self::Symlink => "symlink",
            Self::Block => "block",
            Self::Other(text) => text,
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "file" => Self::File,
            "directory" => Self::Directory,
            "symlink" => Self::Symlink,
            "block" => Self::Block,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RecordKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RecordKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(Self::parse(&text))
    }
}

/// The key of a block's record: `<path>#<name>`.
pub fn block_key(path: &str, name: &str) -> String {
    format!("{path}#{name}")
}

/// A block record's key split back into its file and block name.
pub fn split_block_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('#')
}

/// Where a file installed from an asset came from: the asset itself
/// (`sha256:<asset>`) or one member of an archive (`sha256:<archive>#<member>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AssetSource {
    /// The asset's (or archive's) sha256.
    pub sha256: String,
    pub member: Option<String>,
}

/// The input digest of a file whose content only the download will tell.
const PENDING: &str = "pending:";

impl AssetSource {
    pub fn new(sha256: impl Into<String>, member: Option<&str>) -> Self {
        Self {
            sha256: sha256.into(),
            member: member.map(str::to_owned),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("sha256:")?;
        Some(match rest.split_once('#') {
            None => Self::new(rest, None),
            Some((archive, member)) => Self::new(archive, Some(member)),
        })
    }

    /// The digest recorded for an input installed from this source until the
    /// download tells the real one: `pending:<source>`.
    pub fn pending(&self) -> String {
        format!("{PENDING}{self}")
    }

    /// The source of a `pending:<source>` digest.
    pub fn of_pending(digest: &str) -> Option<Self> {
        Self::parse(digest.strip_prefix(PENDING)?)
    }
}

impl fmt::Display for AssetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.member {
            None => write!(f, "sha256:{}", self.sha256),
            Some(member) => write!(f, "sha256:{}#{member}", self.sha256),
        }
    }
}

impl Serialize for AssetSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn unit(name: &str) -> UnitName {
        UnitName::try_from(name).unwrap()
    }

    #[test]
    fn applied_keys_read_and_write_the_strings_of_earlier_agents() {
        let keys = [
            "daemon-reload",
            "enable:kubelet.service",
            "modules",
            "packages",
            "service:containerd.service",
            "static-pod:/etc/kubernetes/manifests/etcd.yaml",
            "swap-off",
            "sysctls",
            "some-future-key",
            "service:not a unit",
        ];
        for text in keys {
            assert_eq!(AppliedKey::parse(text).to_string(), text);
        }
        assert_eq!(
            AppliedKey::parse("service:kubelet.service"),
            AppliedKey::Service(unit("kubelet.service"))
        );
        assert_eq!(
            AppliedKey::parse("enable:kubelet.service").unit(),
            Some(&unit("kubelet.service"))
        );
        assert!(matches!(
            AppliedKey::parse("service:not a unit"),
            AppliedKey::Other(_)
        ));
    }

    #[test]
    fn applied_keys_sort_as_their_text() {
        let texts = [
            "sysctls",
            "service:kubelet.service",
            "service:containerd.service",
            "enable:a.service",
            "daemon-reload",
            "swap-off",
            "static-pod:/etc/kubernetes/manifests/a.yaml",
            "modules",
            "packages",
            "servicez",
            "service:",
            "",
        ];
        let typed: BTreeMap<AppliedKey, ()> =
            texts.iter().map(|t| (AppliedKey::parse(t), ())).collect();
        let strings: BTreeMap<String, ()> = texts.iter().map(|t| ((*t).to_owned(), ())).collect();
        let typed: Vec<String> = typed.keys().map(ToString::to_string).collect();
        let strings: Vec<String> = strings.into_keys().collect();
        assert_eq!(typed, strings);
        assert_eq!(
            serde_json::to_string(&BTreeMap::from([(AppliedKey::Modules, 1)])).unwrap(),
            r#"{"modules":1}"#
        );
    }

    #[test]
    fn record_kinds_and_sources_round_trip() {
        for text in ["file", "directory", "symlink", "block", "fifo"] {
            let kind: RecordKind = serde_json::from_str(&format!("{text:?}")).unwrap();
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("{text:?}"));
        }
        assert_eq!(RecordKind::parse("block"), RecordKind::Block);

        let plain = AssetSource::parse("sha256:abc").unwrap();
        assert_eq!(plain, AssetSource::new("abc", None));
        let member = AssetSource::parse("sha256:abc#bin/ctr").unwrap();
        assert_eq!(member.member.as_deref(), Some("bin/ctr"));
        assert_eq!(member.to_string(), "sha256:abc#bin/ctr");
        assert_eq!(member.pending(), "pending:sha256:abc#bin/ctr");
        assert_eq!(AssetSource::of_pending(&member.pending()), Some(member));
        assert_eq!(AssetSource::parse("md5:abc"), None);
        assert_eq!(
            split_block_key(&block_key("/etc/hosts", "api")),
            Some(("/etc/hosts", "api"))
        );
    }
}
