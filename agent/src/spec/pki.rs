//! `controlPlane.pki`: where a control-plane node finds the cluster's CAs, and how it
//! issues its own certificates from them (as kops's nodeup does). Workers never read it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::location::SpecLocation;
use super::types::InvalidValue;
use super::validate::Problems;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PkiSpec {
    /// The prefix holding the PKI objects (`ca.crt`, `ca.key`, `etcd-ca.crt`, ...; see
    /// docs/pki.md): `s3://bucket/prefix/` or `file:///dir/`. Read with the instance's
    /// credentials.
    pub store: String,
    /// The algorithm of the keys the node generates.
    #[serde(default)]
    pub key_algorithm: PkiKeyAlgorithm,
    /// How long an issued certificate is valid, in days.
    #[serde(default = "default_validity_days")]
    pub validity_days: u32,
    /// How far NotBefore is set in the past, in minutes, so that peers whose clock is
    /// behind accept a fresh certificate.
    #[serde(default = "default_backdate_minutes")]
    pub backdate_minutes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PkiKeyAlgorithm {
    #[default]
    EcdsaP256,
    Rsa2048,
}

fn default_validity_days() -> u32 {
    365
}
fn default_backdate_minutes() -> u32 {
    60
}

impl PkiSpec {
    /// The location of object `name` (e.g. `ca.key`) in the store.
    pub fn object(&self, name: &str) -> Result<SpecLocation, InvalidValue> {
        SpecLocation::parse(&format!("{}{name}", self.store))
    }

    pub(super) fn check(&self, problems: &mut Problems) {
        let at = "controlPlane.pki";
        let store = self.store.as_str();
        if !(store.starts_with("s3://") || store.starts_with("file://")) {
            problems.add(
                &format!("{at}.store"),
                format!("{store:?} must be s3://bucket/prefix/ or file:///dir/"),
            );
        } else if !store.ends_with('/') {
            problems.add(
                &format!("{at}.store"),
                format!("{store:?} is a prefix and must end with '/'"),
            );
        } else if let Err(e) = self.object("ca.crt") {
            problems.add(&format!("{at}.store"), e.to_string());
        }
        if !(1..=3650).contains(&self.validity_days) {
            problems.add(
                &format!("{at}.validityDays"),
                format!("{} is out of range (1 to 3650 days)", self.validity_days),
            );
        }
        // Re-issue happens 30 days before expiry: shorter validity would re-issue every run.
        if self.validity_days <= 30 && (1..=3650).contains(&self.validity_days) {
            problems.add(
                &format!("{at}.validityDays"),
                format!(
                    "{} days is within the 30-day renewal window; use more than 30",
                    self.validity_days
                ),
            );
        }
        if self.backdate_minutes > 24 * 60 {
            problems.add(
                &format!("{at}.backdateMinutes"),
                format!(
                    "{} is out of range (0 to 1440 minutes)",
                    self.backdate_minutes
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::NodeSpec;

    fn parse(pki: &str) -> Result<NodeSpec, String> {
        let text = include_str!("../../../examples/control-plane/nodespec.yaml").replace(
            "  pki:\n    store: s3://nodewright-state/prod.example.com/pki/\n",
            pki,
        );
        NodeSpec::parse("spec", &text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_bad_values_name_their_field() {
        let spec = parse("  pki:\n    store: file:///srv/pki/\n").unwrap();
        let pki = spec.control_plane.unwrap().pki.unwrap();
        assert_eq!(pki.validity_days, 365);
        assert_eq!(pki.backdate_minutes, 60);
        assert_eq!(pki.key_algorithm, super::PkiKeyAlgorithm::EcdsaP256);
        for (bad, says) in [
            ("  pki:\n    store: s3://b/pki\n", "controlPlane.pki.store"),
            (
                "  pki:\n    store: https://b/pki/\n",
                "controlPlane.pki.store",
            ),
            (
                "  pki:\n    store: s3://b/p/\n    validityDays: 20\n",
                "controlPlane.pki.validityDays",
            ),
            (
                "  pki:\n    store: s3://b/p/\n    keyAlgorithm: dsa\n",
                "keyAlgorithm",
            ),
            ("  pki:\n    store: s3://b/p/\n    extra: 1\n", "extra"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
