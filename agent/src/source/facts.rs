//! The facts phase: the instance's facts from the instance metadata service (or as
//! given on the command line: [`GivenFacts`]), and the host's own from its OS.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::SourceError;
use crate::cloud::{Metadata, MetadataError};
use crate::error::{Classified, ErrorKind};
use crate::facts::{Facts, InstanceFacts};
use crate::host::os;
use crate::retry::RetryError;
use crate::runbook::Topic;

/// Where the instance's facts come from.
#[derive(Debug, Clone)]
pub enum FactsFrom {
    /// IMDS, retried for the run's deadline (`boot`: the service can be slow early).
    Imds,
    /// IMDS, asked only this long: a command run by hand (`plan`/`apply --spec`) that
    /// may be off EC2, where a silent IMDS means "give the facts", not "wait".
    ImdsBriefly(Duration),
    /// Given on the command line (flags or `--facts FILE`).
    Given(InstanceFacts),
}

/// Facts for the instance, then the host's own.
pub async fn gather(
    from: &FactsFrom,
    deadline: Duration,
    root: &Path,
) -> Result<Facts, SourceError> {
    let instance = match from {
        FactsFrom::Given(instance) => instance.clone(),
        FactsFrom::Imds => Metadata::new(deadline).instance_facts().await?,
        FactsFrom::ImdsBriefly(wait) => {
            Metadata::new(*wait)
                .instance_facts()
                .await
                .map_err(|cause| FactsError::ImdsSilent {
                    waited: *wait,
                    cause,
                })?
        }
    };
    let facts = Facts {
        instance,
        host: os::host_facts(root),
        control_plane: Default::default(),
    };
    tracing::info!(
        instance_id = %facts.instance.instance_id,
        availability_zone = %facts.instance.availability_zone,
        private_ipv4 = %facts.instance.private_ipv4,
        "gathered instance facts"
    );
    Ok(facts)
}

/// How to give the facts by hand; every message about missing facts ends with it.
pub const HOW_TO_GIVE: &str = "give them with --facts FILE (instanceId, region, \
availabilityZone, privateIpv4, instanceType; optional ipv6, hostname, accountId, mac) or \
with --instance-id, --region, --zone, --private-ip and --instance-type";

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(
        "the instance's facts: the instance metadata service did not answer within {}s (not on EC2?); {HOW_TO_GIVE}\n  last error: {cause}",
        waited.as_secs()
    )]
    ImdsSilent {
        waited: Duration,
        cause: RetryError<MetadataError>,
    },
    #[error("the instance's facts are incomplete: {} missing; {HOW_TO_GIVE}", missing.join(", "))]
    Missing { missing: Vec<&'static str> },
    #[error("reading the instance's facts from {path}: {detail}")]
    File { path: String, detail: String },
}

impl Classified for FactsError {
    fn kind(&self) -> ErrorKind {
        match self {
            // A source that did not answer.
            Self::ImdsSilent { .. } => ErrorKind::Unreachable,
            // The command line lacks something.
            Self::Missing { .. } => ErrorKind::Usage,
            Self::File { .. } => ErrorKind::InvalidInput,
        }
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::ImdsUnreachable)
    }
}

/// The instance's facts as a person gives them: a `--facts` file (YAML or JSON, the
/// field names of [`InstanceFacts`]) and flags, which win over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GivenFacts {
    pub instance_id: Option<String>,
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ipv4: Option<Ipv4Addr>,
    pub instance_type: Option<String>,
    pub ipv6: Option<Ipv6Addr>,
    pub hostname: Option<String>,
    pub account_id: Option<String>,
    pub mac: Option<String>,
}

impl GivenFacts {
    /// A facts file's text, strictly: an unknown or mistyped field is named with its line.
    pub fn parse(path: &str, text: &str) -> Result<Self, FactsError> {
        yaml_serde::from_str(text).map_err(|e| FactsError::File {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    /// Reads and parses a facts file.
    pub fn read(path: &Path) -> Result<Self, FactsError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| FactsError::File {
            path: name.clone(),
            detail: e.to_string(),
        })?;
        Self::parse(&name, &text)
    }

    /// Whether anything at all was given.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `other`'s fields where it has them, else ours.
    pub fn overridden_by(self, other: Self) -> Self {
        Self {
            instance_id: other.instance_id.or(self.instance_id),
            region: other.region.or(self.region),
            availability_zone: other.availability_zone.or(self.availability_zone),
            private_ipv4: other.private_ipv4.or(self.private_ipv4),
            instance_type: other.instance_type.or(self.instance_type),
            ipv6: other.ipv6.or(self.ipv6),
            hostname: other.hostname.or(self.hostname),
            account_id: other.account_id.or(self.account_id),
            mac: other.mac.or(self.mac),
        }
    }

    /// The instance's facts, or every required one that is missing. The hostname
    /// defaults to the one EC2 gives the private IP in that region.
    pub fn complete(self) -> Result<InstanceFacts, FactsError> {
        let mut missing = Vec::new();
        if self.instance_id.is_none() {
            missing.push("instance id (--instance-id)");
        }
        if self.region.is_none() {
            missing.push("region (--region)");
        }
        if self.availability_zone.is_none() {
            missing.push("availability zone (--zone)");
        }
        if self.private_ipv4.is_none() {
            missing.push("private IPv4 address (--private-ip)");
        }
        if self.instance_type.is_none() {
            missing.push("instance type (--instance-type)");
        }
        let (
            Some(instance_id),
            Some(region),
            Some(availability_zone),
            Some(private_ipv4),
            Some(instance_type),
        ) = (
            self.instance_id,
            self.region,
            self.availability_zone,
            self.private_ipv4,
            self.instance_type,
        )
        else {
            return Err(FactsError::Missing { missing });
        };
        let hostname = self
            .hostname
            .unwrap_or_else(|| ec2_private_dns_name(private_ipv4, &region));
        Ok(InstanceFacts {
            instance_id,
            account_id: self.account_id.unwrap_or_default(),
            region,
            availability_zone,
            instance_type,
            private_ipv4,
            ipv6: self.ipv6,
            hostname,
            mac: self.mac.unwrap_or_default(),
        })
    }
}

/// EC2's private DNS name of an address: `ip-10-0-1-23.ec2.internal` in us-east-1,
/// `ip-10-0-1-23.<region>.compute.internal` elsewhere.
fn ec2_private_dns_name(ip: Ipv4Addr, region: &str) -> String {
    let dashed = ip.to_string().replace('.', "-");
    if region == "us-east-1" {
        format!("ip-{dashed}.ec2.internal")
    } else {
        format!("ip-{dashed}.{region}.compute.internal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "instanceId: i-0123456789abcdef0
region: eu-west-1
availabilityZone: eu-west-1b
privateIpv4: 10.1.2.3
instanceType: m6i.large
";

    #[test]
    fn a_complete_file_gives_facts_with_ec2s_hostname() {
        let facts = GivenFacts::parse("f", FILE).unwrap().complete().unwrap();
        assert_eq!(facts.instance_id, "i-0123456789abcdef0");
        assert_eq!(facts.availability_zone, "eu-west-1b");
        assert_eq!(facts.private_ipv4, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(facts.hostname, "ip-10-1-2-3.eu-west-1.compute.internal");
        assert_eq!(
            ec2_private_dns_name(Ipv4Addr::new(10, 0, 1, 23), "us-east-1"),
            "ip-10-0-1-23.ec2.internal"
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = GivenFacts::parse("f", FILE).unwrap();
        let flags = GivenFacts {
            region: Some("us-east-1".into()),
            hostname: Some("node-a".into()),
            ..Default::default()
        };
        let facts = file.overridden_by(flags).complete().unwrap();
        assert_eq!(facts.region, "us-east-1");
        assert_eq!(facts.hostname, "node-a");
        assert_eq!(facts.instance_type, "m6i.large");
    }

    #[test]
    fn every_missing_fact_is_named_with_its_flag() {
        let given = GivenFacts {
            region: Some("eu-west-1".into()),
            ..Default::default()
        };
        let error = given.complete().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Usage);
        let text = error.to_string();
        for flag in ["--instance-id", "--zone", "--private-ip", "--instance-type"] {
            assert!(text.contains(flag), "{text}");
        }
        assert!(!text.contains("region (--region)"), "{text}");
        assert!(text.contains("--facts FILE"), "{text}");
    }

    #[test]
    fn a_bad_facts_file_names_the_file_the_field_and_the_line() {
        let error = GivenFacts::parse("/tmp/facts.yaml", &format!("{FILE}zone: x\n")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        let text = error.to_string();
        assert!(text.contains("/tmp/facts.yaml"), "{text}");
        assert!(text.contains("unknown field `zone`"), "{text}");
        assert!(text.contains("line 6"), "{text}");
        let error = GivenFacts::parse("f", "privateIpv4: 10.1.2\n").unwrap_err();
        assert!(error.to_string().contains("privateIpv4"), "{error}");
    }
}
