//! Confirms with EC2 that a bootstrapping instance exists and what it is.
//!
//! Lookups are batched: a few loops each take every lookup waiting at that moment (up
//! to [`MAX_BATCH`]) into one `DescribeInstances` call filtered by instance id. A lone
//! node waits for nothing extra; a fleet booting at once makes a handful of calls
//! instead of one per node, which is what keeps a large scale-up under EC2's API rate
//! limits. (A filter, unlike `InstanceIds`, does not fail the whole call for one
//! unknown id.)

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, Instance};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Instance ids per call (EC2 allows 200 filter values).
pub const MAX_BATCH: usize = 100;
/// Calls in flight at once.
const LOOPS: usize = 4;

type Lookup = (String, oneshot::Sender<Result<InstanceView, Ec2Error>>);

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

#[derive(Debug, Clone, thiserror::Error)]
pub enum Ec2Error {
    #[error("EC2 does not know instance {0}")]
    NotFound(String),
    #[error("EC2 is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct Ec2 {
    lookups: mpsc::Sender<Lookup>,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

impl Ec2 {
    /// Starts the lookup loops on the current runtime.
    pub fn new(client: aws_sdk_ec2::Client) -> Self {
        let (lookups, queue) = mpsc::channel::<Lookup>(8192);
        let queue = Arc::new(Mutex::new(queue));
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for _ in 0..LOOPS {
            let (client, queue, calls) = (client.clone(), queue.clone(), calls.clone());
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut queue = queue.lock().await;
                        let Some(first) = queue.recv().await else {
                            return;
                        };
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match queue.try_recv() {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    describe_batch(&client, batch).await;
                }
            });
        }
        Self { lookups, calls }
    }

    /// `DescribeInstances` calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn describe(&self, instance_id: &str) -> Result<InstanceView, Ec2Error> {
        let (answer, wait) = oneshot::channel();
        self.lookups
            .send((instance_id.to_owned(), answer))
            .await
            .map_err(|_| Ec2Error::Unavailable("the EC2 lookups stopped".to_owned()))?;
        wait.await
            .map_err(|_| Ec2Error::Unavailable("the EC2 lookup was dropped".to_owned()))?
    }
}

/// One `DescribeInstances` for a batch; every waiter gets its own answer. One instance
/// may be asked for by several waiters at once (a node retrying, racing bootstraps): its
/// id is sent once and its answer given to each.
async fn describe_batch(client: &aws_sdk_ec2::Client, batch: Vec<Lookup>) {
    let ids: Vec<String> = unique_ids(&batch);
    let mut found: HashMap<String, InstanceView> = HashMap::new();
    let mut pages = client
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-id")
                .set_values(Some(ids))
                .build(),
        )
        .into_paginator()
        .send();
    let mut failure = None;
    while let Some(page) = pages.next().await {
        match page {
            Ok(output) => {
                for instance in output.reservations().iter().flat_map(|r| r.instances()) {
                    if let Some(view) = view(instance) {
                        found.insert(view.instance_id.clone(), view);
                    }
                }
            }
            Err(e) => {
                failure = Some(classify(e));
                break;
            }
        }
    }
    for (id, answer) in batch {
        let _ = answer.send(outcome(&found, failure.as_ref(), id));
    }
}

fn unique_ids(batch: &[Lookup]) -> Vec<String> {
    let mut ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// One waiter's answer from the batch's (never consumed: ids repeat).
fn outcome(
    found: &HashMap<String, InstanceView>,
    failure: Option<&Ec2Error>,
    id: String,
) -> Result<InstanceView, Ec2Error> {
    match (failure, found.get(&id)) {
        (Some(error), _) => Err(error.clone()),
        (None, Some(view)) => Ok(view.clone()),
        (None, None) => Err(Ec2Error::NotFound(id)),
    }
}

fn view(instance: &Instance) -> Option<InstanceView> {
    let instance_id = instance.instance_id()?.to_owned();
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
    Some(InstanceView {
        instance_id,
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

fn classify<E, R>(error: SdkError<E, R>) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let SdkError::ServiceError(service) = &error {
        let code = service.err().code().unwrap_or("Unknown");
        return Ec2Error::Unavailable(format!("{code}: {}", service.err().message().unwrap_or("")));
    }
    Ec2Error::Unavailable(crate::client::error_chain(&error))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_id_asked_for_twice_in_one_batch_is_sent_once_and_answered_twice() {
        let (a1, _) = oneshot::channel();
        let (a2, _) = oneshot::channel();
        let (b, _) = oneshot::channel();
        let batch = vec![
            ("i-0aaaaaaaaaaaaaaaa".to_owned(), a1),
            ("i-0bbbbbbbbbbbbbbbb".to_owned(), b),
            ("i-0aaaaaaaaaaaaaaaa".to_owned(), a2),
        ];
        assert_eq!(
            unique_ids(&batch),
            ["i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"]
        );
        let view = InstanceView {
            instance_id: "i-0aaaaaaaaaaaaaaaa".to_owned(),
            state: "running".to_owned(),
            tags: BTreeMap::new(),
            private_dns_name: String::new(),
            ips: Vec::new(),
        };
        let found: HashMap<String, InstanceView> = [(view.instance_id.clone(), view.clone())]
            .into_iter()
            .collect();
        for _ in 0..2 {
            assert_eq!(
                outcome(&found, None, "i-0aaaaaaaaaaaaaaaa".to_owned()).unwrap(),
                view
            );
        }
        assert!(matches!(
            outcome(&found, None, "i-0bbbbbbbbbbbbbbbb".to_owned()),
            Err(Ec2Error::NotFound(_))
        ));
    }
}
