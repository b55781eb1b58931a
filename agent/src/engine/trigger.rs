//! Triggers: the inputs an action on the running system depends on (a service's unit,
//! configs and binary; the sysctl file...), with the digest each has. Recorded in the
//! state once the action is done, they decide the next time: a service restarts
//! exactly when one of its inputs' digests differs from the recorded one, even if the
//! run that wrote the new file was killed before it could restart it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::apply::Outcome;
use super::keys::{AppliedKey, AssetSource};
use super::state::{AppliedRecord, State};
use crate::assets::Fetcher;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trigger {
    pub key: AppliedKey,
    /// Input (a node path, or e.g. `apt:<package>`) to its digest.
    pub inputs: BTreeMap<String, String>,
}

impl Trigger {
    pub fn new(key: AppliedKey, inputs: BTreeMap<String, String>) -> Self {
        Self { key, inputs }
    }

    /// Inputs whose digest differs from `last` (what the trigger last acted on):
    /// `None` when none does, an empty list when it never acted.
    pub fn changed_since(&self, last: Option<&AppliedRecord>) -> Option<Vec<String>> {
        let Some(record) = last else {
            return Some(vec![]);
        };
        let mut changed: Vec<String> = self
            .inputs
            .iter()
            .filter(|(path, digest)| record.inputs.get(*path) != Some(*digest))
            .map(|(path, _)| path.clone())
            .collect();
        changed.extend(
            record
                .inputs
                .keys()
                .filter(|p| !self.inputs.contains_key(*p))
                .cloned(),
        );
        (!changed.is_empty()).then_some(changed)
    }

    /// Fills in the digests that were `pending:<source>` when planning (members of
    /// archives not yet downloaded) from the cache. Returns whether any was.
    pub fn resolve_pending(&mut self, fetcher: &Fetcher) -> bool {
        let mut resolved_any = false;
        for digest in self.inputs.values_mut() {
            if let Some(source) = AssetSource::of_pending(digest)
                && let Some(actual) = resolve_source(fetcher, &source)
            {
                *digest = actual;
                resolved_any = true;
            }
        }
        resolved_any
    }

    /// Records that the action was done (or skipped) with these inputs.
    pub fn record(&self, state: &mut State, at: &str, outcome: &Outcome) {
        state.applied.insert(
            self.key.clone(),
            AppliedRecord {
                inputs: self.inputs.clone(),
                at: at.to_owned(),
                outcome: outcome.describe(),
            },
        );
    }
}

/// The content digest of an asset, or of an archive's member, from the cache.
pub fn resolve_source(fetcher: &Fetcher, source: &AssetSource) -> Option<String> {
    match &source.member {
        None => Some(source.sha256.clone()),
        Some(member) => fetcher
            .cache()
            .manifest(&source.sha256)?
            .resolve(member)
            .ok()
            .map(|(_, digest)| digest.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn changed_inputs_are_named() {
        let trigger = Trigger::new(AppliedKey::Sysctls, inputs(&[("/a", "1"), ("/b", "2")]));
        assert_eq!(trigger.changed_since(None), Some(vec![]));
        let record = |pairs: &[(&str, &str)]| AppliedRecord {
            inputs: inputs(pairs),
            at: String::new(),
            outcome: "ok".to_owned(),
        };
        assert_eq!(
            trigger.changed_since(Some(&record(&[("/a", "1"), ("/b", "2")]))),
            None
        );
        assert_eq!(
            trigger.changed_since(Some(&record(&[("/a", "1"), ("/b", "3"), ("/c", "4")]))),
            Some(vec!["/b".to_owned(), "/c".to_owned()])
        );
    }
}
