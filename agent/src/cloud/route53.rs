//! The Route53 calls the control plane needs, behind a small trait.

use std::future::Future;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_route53::types::{
    Change as SdkChange, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
};

use super::error::{CloudError, call};
use crate::retry::RetryPolicy;

/// One record set, as far as nodewright uses them (A/AAAA records with values).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordSet {
    /// Lowercase, without the trailing dot.
    pub name: String,
    /// `A` or `AAAA` (other types are listed but never changed).
    pub kind: String,
    /// Set on multivalue (and other routing-policy) records: nodewright uses the
    /// instance id.
    pub set_identifier: Option<String>,
    pub multi_value: bool,
    pub ttl: Option<i64>,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Delete exactly this record: Route53 refuses unless every field matches, so a
    /// record changed by someone else since it was read is never deleted. Ordered
    /// first: a batch removes the placeholder before it adds per-instance records.
    Delete,
    /// Create or replace the record with this (name, type, set identifier).
    Upsert,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    pub action: Action,
    pub record: RecordSet,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = match self.action {
            Action::Upsert => "upsert",
            Action::Delete => "delete",
        };
        write!(
            f,
            "{verb} {} {} {}",
            self.record.name,
            self.record.kind,
            self.record.values.join(",")
        )?;
        if let Some(id) = &self.record.set_identifier {
            write!(f, " (set {id})")?;
        }
        Ok(())
    }
}

pub trait Route53: Send + Sync {
    /// The record sets named `name` (all types, all set identifiers).
    fn records_named(
        &self,
        zone: &str,
        name: &str,
    ) -> impl Future<Output = Result<Vec<RecordSet>, CloudError>> + Send;
    /// Applies `changes` as one batch: all or nothing.
    fn change(
        &self,
        zone: &str,
        changes: &[Change],
    ) -> impl Future<Output = Result<(), CloudError>> + Send;
}

#[derive(Clone, Debug)]
pub struct SdkRoute53 {
    client: aws_sdk_route53::Client,
    policy: RetryPolicy,
}

impl SdkRoute53 {
    pub fn new(config: &SdkConfig, deadline: Duration) -> Self {
        let config = aws_sdk_route53::config::Builder::from(config)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .timeout_config(super::error::call_timeouts())
            .build();
        Self {
            client: aws_sdk_route53::Client::from_conf(config),
            policy: RetryPolicy::with_deadline(deadline),
        }
    }
}

/// `Api.Internal.Example.com.` and `api.internal.example.com` are the same name.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn record_set(r: &ResourceRecordSet) -> RecordSet {
    RecordSet {
        name: normalize_name(r.name()),
        kind: r.r#type().as_str().to_owned(),
        set_identifier: r.set_identifier().map(str::to_owned),
        multi_value: r.multi_value_answer().unwrap_or(false),
        ttl: r.ttl(),
        values: r
            .resource_records()
            .iter()
            .map(|v| v.value().to_owned())
            .collect(),
    }
}

fn sdk_change(change: &Change) -> Result<SdkChange, CloudError> {
    let build = |e: aws_smithy_types::error::operation::BuildError| CloudError::Protocol {
        operation: "ChangeResourceRecordSets",
        detail: e.to_string(),
    };
    let r = &change.record;
    let records = r
        .values
        .iter()
        .map(|v| ResourceRecord::builder().value(v).build().map_err(build))
        .collect::<Result<Vec<_>, _>>()?;
    let mut set = ResourceRecordSet::builder()
        .name(&r.name)
        .r#type(RrType::from(r.kind.as_str()))
        .set_set_identifier(r.set_identifier.clone())
        .set_ttl(r.ttl)
        .set_resource_records(Some(records));
    if r.multi_value {
        set = set.multi_value_answer(true);
    }
    SdkChange::builder()
        .action(match change.action {
            Action::Upsert => ChangeAction::Upsert,
            Action::Delete => ChangeAction::Delete,
        })
        .resource_record_set(set.build().map_err(build)?)
        .build()
        .map_err(build)
}

impl Route53 for SdkRoute53 {
    async fn records_named(&self, zone: &str, name: &str) -> Result<Vec<RecordSet>, CloudError> {
        let wanted = normalize_name(name);
        let mut out = Vec::new();
        let mut start: (String, Option<RrType>, Option<String>) = (wanted.clone(), None, None);
        // Route53 lists in name order from the start name: stop once past it. Capped,
        // so that an endpoint ignoring the start name cannot keep us paging forever.
        for _ in 0..100 {
            let page = call("ListResourceRecordSets", self.policy, || {
                self.client
                    .list_resource_record_sets()
                    .hosted_zone_id(zone)
                    .start_record_name(&start.0)
                    .set_start_record_type(start.1.clone())
                    .set_start_record_identifier(start.2.clone())
                    .max_items(100)
                    .send()
            })
            .await?;
            let mut past = false;
            let mut seen_wanted = false;
            for set in page.resource_record_sets().iter().map(record_set) {
                if set.name == wanted {
                    seen_wanted = true;
                    if !out.contains(&set) {
                        out.push(set);
                    }
                } else if seen_wanted || !out.is_empty() {
                    past = true;
                }
            }
            let next = (
                page.next_record_name().map(normalize_name),
                page.next_record_type().cloned(),
                page.next_record_identifier().map(str::to_owned),
            );
            match next {
                (Some(name), kind, id) if page.is_truncated() && !past => {
                    let candidate = (name, kind, id);
                    if candidate == start {
                        break;
                    }
                    start = candidate;
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn change(&self, zone: &str, changes: &[Change]) -> Result<(), CloudError> {
        if changes.is_empty() {
            return Ok(());
        }
        let changes = changes
            .iter()
            .map(sdk_change)
            .collect::<Result<Vec<_>, _>>()?;
        let batch = ChangeBatch::builder()
            .comment("nodewright")
            .set_changes(Some(changes))
            .build()
            .map_err(|e| CloudError::Protocol {
                operation: "ChangeResourceRecordSets",
                detail: e.to_string(),
            })?;
        call("ChangeResourceRecordSets", self.policy, || {
            self.client
                .change_resource_record_sets()
                .hosted_zone_id(zone)
                .change_batch(batch.clone())
                .send()
        })
        .await
        .map(|_| ())
    }
}
