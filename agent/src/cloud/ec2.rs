//! The EC2 calls the control plane needs (volumes and instances), behind a small trait
//! so that the decisions built on them can be tested without AWS.
//!
//! The SDK's own retries are off: every call goes through [`crate::retry`] with one
//! policy (throttling, 5xx and transport errors are retried with jittered backoff
//! under a deadline; anything else fails at once with EC2's code and message).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_ec2::types::{Filter, VolumeAttachmentState};

use super::error::{CloudError, call};
use crate::retry::RetryPolicy;

/// An EBS volume as DescribeVolumes reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    pub availability_zone: String,
    pub size_gib: i32,
    /// `creating`, `available`, `in-use`, `deleting`, `deleted`, `error`.
    pub state: String,
    pub tags: BTreeMap<String, String>,
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub instance_id: String,
    /// The device name asked for at attach time (`/dev/xvdu`); on Nitro instances the
    /// device is an NVMe namespace whose name has nothing to do with it.
    pub device: String,
    /// `attaching`, `attached`, `detaching`, `detached`, `busy`.
    pub state: String,
}

/// An instance as DescribeInstances reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// `pending`, `running`, `shutting-down`, `terminated`, `stopping`, `stopped`.
    pub state: String,
    pub private_ip: Option<Ipv4Addr>,
    pub availability_zone: String,
    pub tags: BTreeMap<String, String>,
    /// Device names in use by its block device mappings.
    pub device_names: Vec<String>,
}

/// A DescribeVolumes / DescribeInstances filter: a name and the values it accepts.
pub type Filters = Vec<(String, Vec<String>)>;

pub trait Ec2: Send + Sync {
    /// Every volume matching the filters, all pages.
    fn describe_volumes(
        &self,
        filters: &Filters,
    ) -> impl Future<Output = Result<Vec<Volume>, CloudError>> + Send;
    /// Every instance matching the filters, all pages.
    fn describe_instances(
        &self,
        filters: &Filters,
    ) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;
    fn attach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
    fn detach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        force: bool,
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
}

/// The real thing, through the AWS SDK.
#[derive(Clone, Debug)]
pub struct SdkEc2 {
    client: aws_sdk_ec2::Client,
    policy: RetryPolicy,
    /// Page size asked of DescribeVolumes; EC2 may return fewer.
    page_size: i32,
}

impl SdkEc2 {
    pub fn new(config: &SdkConfig, deadline: Duration) -> Self {
        let config = aws_sdk_ec2::config::Builder::from(config)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(super::error::call_timeouts())
            .build();
        Self {
            client: aws_sdk_ec2::Client::from_conf(config),
            policy: RetryPolicy::with_deadline(deadline),
            page_size: 100,
        }
    }
}

fn filters(filters: &Filters) -> Vec<Filter> {
    filters
        .iter()
        .map(|(name, values)| {
            Filter::builder()
                .name(name)
                .set_values(Some(values.clone()))
                .build()
        })
        .collect()
}

fn tags(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
        .collect()
}

fn volume(v: &aws_sdk_ec2::types::Volume) -> Option<Volume> {
    Some(Volume {
        id: v.volume_id()?.to_owned(),
        availability_zone: v.availability_zone().unwrap_or_default().to_owned(),
        size_gib: v.size().unwrap_or_default(),
        state: v.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        tags: tags(v.tags()),
        attachments: v
            .attachments()
            .iter()
            .filter(|a| a.state() != Some(&VolumeAttachmentState::Detached))
            .filter_map(|a| {
                Some(Attachment {
                    instance_id: a.instance_id()?.to_owned(),
                    device: a.device().unwrap_or_default().to_owned(),
                    state: a.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                })
            })
            .collect(),
    })
}

fn instance(i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    Some(Instance {
        id: i.instance_id()?.to_owned(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        private_ip: i.private_ip_address().and_then(|ip| ip.parse().ok()),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_owned(),
        tags: tags(i.tags()),
        device_names: i
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.device_name().map(str::to_owned))
            .collect(),
    })
}

impl Ec2 for SdkEc2 {
    async fn describe_volumes(&self, wanted: &Filters) -> Result<Vec<Volume>, CloudError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // Pages are fetched one by one (not with the SDK's paginator) so that each page
        // is retried on its own and a repeated token cannot loop forever.
        for _ in 0..1000 {
            let page = call("DescribeVolumes", self.policy, || {
                self.client
                    .describe_volumes()
                    .set_filters(Some(filters(wanted)))
                    .max_results(self.page_size)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
            out.extend(page.volumes().iter().filter_map(volume));
            match page.next_token().filter(|t| !t.is_empty()) {
                Some(next) if Some(next) != token.as_deref() => token = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
        Err(CloudError::Protocol {
            operation: "DescribeVolumes",
            detail: "more than 1000 pages; giving up".to_owned(),
        })
    }

    async fn describe_instances(&self, wanted: &Filters) -> Result<Vec<Instance>, CloudError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..1000 {
            let page = call("DescribeInstances", self.policy, || {
                self.client
                    .describe_instances()
                    .set_filters(Some(filters(wanted)))
                    .max_results(self.page_size)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
            out.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter_map(instance),
            );
            match page.next_token().filter(|t| !t.is_empty()) {
                Some(next) if Some(next) != token.as_deref() => token = Some(next.to_owned()),
                _ => return Ok(out),
            }
        }
        Err(CloudError::Protocol {
            operation: "DescribeInstances",
            detail: "more than 1000 pages; giving up".to_owned(),
        })
    }

    async fn attach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> Result<(), CloudError> {
        call("AttachVolume", self.policy, || {
            self.client
                .attach_volume()
                .volume_id(volume_id)
                .instance_id(instance_id)
                .device(device)
                .send()
        })
        .await
        .map(|_| ())
    }

    async fn detach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        force: bool,
    ) -> Result<(), CloudError> {
        call("DetachVolume", self.policy, || {
            self.client
                .detach_volume()
                .volume_id(volume_id)
                .instance_id(instance_id)
                .force(force)
                .send()
        })
        .await
        .map(|_| ())
    }
}
