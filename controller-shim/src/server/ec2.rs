//! Confirms with EC2 that a bootstrapping instance exists and what it is.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// What EC2 says about an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub instance_id: String,
    /// `pending`, `running`, `stopping`, `terminated`...
    pub state: String,
    pub tags: BTreeMap<String, String>,
    pub private_dns_name: String,
    /// Private IPv4 and IPv6 addresses of every interface, primary first.
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    #[error("EC2 does not know instance {0}")]
    NotFound(String),
    #[error("EC2 is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
}

impl Ec2 {
    pub fn new(client: aws_sdk_ec2::Client) -> Self {
        Self { client }
    }

    pub async fn describe(&self, instance_id: &str) -> Result<InstanceView, Ec2Error> {
        let output = self
            .client
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| classify(instance_id, e))?;
        let instance = output
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(instance_id))
            .ok_or_else(|| Ec2Error::NotFound(instance_id.to_owned()))?;
        let tags = instance
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
            .collect();
        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(ip) = instance.private_ip_address().and_then(|ip| ip.parse().ok()) {
            ips.push(ip);
        }
        for interface in instance.network_interfaces() {
            for address in interface.private_ip_addresses() {
                if let Some(ip) = address.private_ip_address().and_then(|ip| ip.parse().ok())
                    && !ips.contains(&ip)
                {
                    ips.push(ip);
                }
            }
            for address in interface.ipv6_addresses() {
                if let Some(ip) = address.ipv6_address().and_then(|ip| ip.parse().ok())
                    && !ips.contains(&ip)
                {
                    ips.push(ip);
                }
            }
        }
        Ok(InstanceView {
            instance_id: instance_id.to_owned(),
            state: instance
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            tags,
            private_dns_name: instance.private_dns_name().unwrap_or("").to_owned(),
            ips,
        })
    }
}

fn classify<E, R>(instance_id: &str, error: SdkError<E, R>) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let SdkError::ServiceError(service) = &error {
        let code = service.err().code().unwrap_or("Unknown");
        if code.starts_with("InvalidInstanceID") {
            return Ec2Error::NotFound(instance_id.to_owned());
        }
        return Ec2Error::Unavailable(format!("{code}: {}", service.err().message().unwrap_or("")));
    }
    Ec2Error::Unavailable(crate::client::error_chain(&error))
}
