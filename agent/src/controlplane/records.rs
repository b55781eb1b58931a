//! The Route53 changes one control-plane node makes, from what the zone holds. Pure.
//!
//! Each node owns only its own records: one A record per name with `SetIdentifier` =
//! its instance id and multivalue answers, so nodes never read-modify-write a shared
//! record set. A node also deletes the records of instances that no longer run, each
//! DELETE naming the exact record it read (Route53 refuses a DELETE that does not match,
//! so two nodes cleaning up at once cannot remove anything else), and replaces kops's
//! placeholder (203.0.113.123) on the names it publishes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::cloud::route53::{Action, Change, RecordSet};

/// The address kops puts in DNS records before a control-plane node publishes them.
pub const PLACEHOLDER: &str = "203.0.113.123";

/// What this node publishes.
#[derive(Debug, Clone)]
pub struct Publish<'a> {
    pub instance_id: &'a str,
    pub ip: Ipv4Addr,
    pub ttl: u32,
    /// Names this node answers for (the API name, its etcd member names).
    pub names: &'a [String],
}

/// Changes to make, given `existing` records of every managed name (this node's names
/// and its etcd peers' names) and the instances that run (pending or running).
pub(in crate::controlplane) fn changes(
    publish: &Publish,
    managed: &[String],
    existing: &[RecordSet],
    live_instances: &BTreeSet<String>,
) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    let mine = |set: &RecordSet| set.set_identifier.as_deref() == Some(publish.instance_id);
    for name in publish.names {
        let wanted = RecordSet {
            name: name.clone(),
            kind: "A".to_owned(),
            set_identifier: Some(publish.instance_id.to_owned()),
            multi_value: true,
            ttl: Some(i64::from(publish.ttl)),
            values: vec![publish.ip.to_string()],
        };
        let same_name: Vec<&RecordSet> = existing
            .iter()
            .filter(|s| s.name == *name && s.kind == "A")
            .collect();
        for simple in same_name.iter().filter(|s| s.set_identifier.is_none()) {
            if simple.values == [PLACEHOLDER] {
                out.push(Change {
                    action: Action::Delete,
                    record: (*simple).clone(),
                });
            } else {
                return Err(format!(
                    "{name} has a plain A record ({}) that nodewright did not make; a name cannot have both plain and per-instance records, so remove it",
                    simple.values.join(", ")
                ));
            }
        }
        if !same_name.iter().any(|s| **s == wanted) {
            out.push(Change {
                action: Action::Upsert,
                record: wanted,
            });
        }
    }
    let managed: BTreeSet<&str> = managed.iter().map(String::as_str).collect();
    for set in existing {
        if set.kind != "A" || !managed.contains(set.name.as_str()) {
            continue;
        }
        let Some(id) = set.set_identifier.as_deref() else {
            continue;
        };
        let stale_own = mine(set) && !publish.names.contains(&set.name);
        let dead_other = !mine(set) && looks_like_instance_id(id) && !live_instances.contains(id);
        if stale_own || dead_other {
            out.push(Change {
                action: Action::Delete,
                record: set.clone(),
            });
        }
    }
    // Deletes first (the derived order): the placeholder must be gone before the
    // per-instance records of the same name are added.
    out.sort();
    out.dedup();
    Ok(out)
}

/// Only records whose identifier is an instance id are nodewright's to clean up.
pub fn looks_like_instance_id(id: &str) -> bool {
    id.strip_prefix("i-")
        .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Instance ids named by the records (whose liveness must be checked).
pub fn instance_ids(existing: &[RecordSet]) -> BTreeSet<String> {
    existing
        .iter()
        .filter_map(|s| s.set_identifier.clone())
        .filter(|id| looks_like_instance_id(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, id: Option<&str>, ip: &str) -> RecordSet {
        RecordSet {
            name: name.to_owned(),
            kind: "A".to_owned(),
            set_identifier: id.map(str::to_owned),
            multi_value: id.is_some(),
            ttl: Some(60),
            values: vec![ip.to_owned()],
        }
    }

    const API: &str = "api.internal.prod";
    const ETCD_A: &str = "etcd-a.internal.prod";
    const ETCD_B: &str = "etcd-b.internal.prod";

    fn names() -> Vec<String> {
        vec![API.to_owned(), ETCD_A.to_owned()]
    }

    fn managed() -> Vec<String> {
        vec![API.to_owned(), ETCD_A.to_owned(), ETCD_B.to_owned()]
    }

    fn publish(names: &[String]) -> Publish<'_> {
        Publish {
            instance_id: "i-0a",
            ip: Ipv4Addr::new(10, 0, 0, 1),
            ttl: 60,
            names,
        }
    }

    fn live(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn publishes_own_records_and_nothing_when_current() {
        let names = names();
        let c = changes(&publish(&names), &managed(), &[], &live(&["i-0a"])).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.action == Action::Upsert
            && c.record.set_identifier.as_deref() == Some("i-0a")
            && c.record.multi_value));
        let existing: Vec<RecordSet> = c.into_iter().map(|c| c.record).collect();
        let again = changes(&publish(&names), &managed(), &existing, &live(&["i-0a"])).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn others_records_are_kept_while_they_run_and_deleted_exactly_when_not() {
        let names = names();
        let other_api = record(API, Some("i-0b"), "10.0.0.2");
        let other_etcd = record(ETCD_B, Some("i-0b"), "10.0.0.2");
        let dead_api = record(API, Some("i-0c"), "10.0.0.3");
        let manual = record(API, Some("blue"), "10.9.9.9");
        let existing = vec![
            other_api.clone(),
            other_etcd.clone(),
            dead_api.clone(),
            manual,
        ];
        let c = changes(
            &publish(&names),
            &managed(),
            &existing,
            &live(&["i-0a", "i-0b"]),
        )
        .unwrap();
        let deletes: Vec<&RecordSet> = c
            .iter()
            .filter(|c| c.action == Action::Delete)
            .map(|c| &c.record)
            .collect();
        assert_eq!(
            deletes,
            [&dead_api],
            "only the dead instance's record, exactly as read"
        );
    }

    #[test]
    fn placeholders_are_replaced_in_the_same_batch_and_plain_records_refused() {
        let names = names();
        let placeholder = record(API, None, PLACEHOLDER);
        let c = changes(
            &publish(&names),
            &managed(),
            std::slice::from_ref(&placeholder),
            &live(&[]),
        )
        .unwrap();
        assert_eq!(
            c[0],
            Change {
                action: Action::Delete,
                record: placeholder
            },
            "the placeholder goes first"
        );
        assert_eq!(c.iter().filter(|c| c.action == Action::Upsert).count(), 2);
        // A placeholder on a peer's name is the peer's to replace.
        let peer_placeholder = record(ETCD_B, None, PLACEHOLDER);
        let c = changes(
            &publish(&names),
            &managed(),
            &[peer_placeholder],
            &live(&[]),
        )
        .unwrap();
        assert!(c.iter().all(|c| c.action == Action::Upsert));
        let err = changes(
            &publish(&names),
            &managed(),
            &[record(API, None, "10.1.1.1")],
            &live(&[]),
        )
        .unwrap_err();
        assert!(err.contains("plain A record (10.1.1.1)"), "{err}");
    }

    #[test]
    fn own_records_for_names_no_longer_ours_are_removed() {
        let names = vec![API.to_owned()];
        let old = record(ETCD_A, Some("i-0a"), "10.0.0.1");
        let c = changes(
            &publish(&names),
            &managed(),
            std::slice::from_ref(&old),
            &live(&["i-0a"]),
        )
        .unwrap();
        assert!(c.contains(&Change {
            action: Action::Delete,
            record: old
        }));
    }

    #[test]
    fn a_moved_address_is_upserted() {
        let names = names();
        let stale = record(API, Some("i-0a"), "10.0.0.99");
        let c = changes(&publish(&names), &managed(), &[stale], &live(&["i-0a"])).unwrap();
        assert!(c.iter().any(|c| c.action == Action::Upsert
            && c.record.name == API
            && c.record.values == ["10.0.0.1"]));
        assert!(c.iter().all(|c| c.action == Action::Upsert));
    }
}
