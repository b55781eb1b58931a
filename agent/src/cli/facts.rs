//! The instance's facts on the command line (`plan`/`apply --spec` off EC2): a
//! `--facts FILE`, flags that win over it, or IMDS asked briefly.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::source::facts::{FactsError, FactsFrom, GivenFacts};

#[derive(Debug, clap::Args)]
pub struct FactsArgs {
    /// The instance's facts in a YAML or JSON file (instanceId, region,
    /// availabilityZone, privateIpv4, instanceType; optional ipv6, hostname, accountId,
    /// mac), instead of the instance metadata service.
    #[arg(long = "facts", value_name = "FILE")]
    file: Option<PathBuf>,
    /// The instance's id (instead of IMDS; wins over --facts).
    #[arg(long, value_name = "ID")]
    instance_id: Option<String>,
    /// The instance's region.
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// The instance's availability zone.
    #[arg(long, value_name = "ZONE")]
    zone: Option<String>,
    /// The instance's private IPv4 address.
    #[arg(long, value_name = "IP")]
    private_ip: Option<Ipv4Addr>,
    /// The instance's IPv6 address, if it has one.
    #[arg(long, value_name = "IP")]
    ipv6: Option<Ipv6Addr>,
    /// The instance's type.
    #[arg(long, value_name = "TYPE")]
    instance_type: Option<String>,
    /// The instance's private DNS name (default: EC2's name for --private-ip).
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// With no facts given: how long to ask the instance metadata service before
    /// saying how to give them.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    imds_wait: u64,
}

impl FactsArgs {
    /// Given facts (file, then flags) when there are any, else IMDS for `--imds-wait`.
    pub fn resolve(&self) -> Result<FactsFrom, FactsError> {
        let file = match &self.file {
            Some(path) => GivenFacts::read(path)?,
            None => GivenFacts::default(),
        };
        let flags = GivenFacts {
            instance_id: self.instance_id.clone(),
            region: self.region.clone(),
            availability_zone: self.zone.clone(),
            private_ipv4: self.private_ip,
            instance_type: self.instance_type.clone(),
            ipv6: self.ipv6,
            hostname: self.hostname.clone(),
            account_id: None,
            mac: None,
        };
        if self.file.is_none() && flags.is_empty() {
            return Ok(FactsFrom::ImdsBriefly(Duration::from_secs(self.imds_wait)));
        }
        Ok(FactsFrom::Given(file.overridden_by(flags).complete()?))
    }
}
