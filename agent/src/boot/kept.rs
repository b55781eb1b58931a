//! `repair`'s source: the spec and facts kept on the node by the last converging run.
//! No network at all; on a control-plane node the kept facts hold the etcd members it
//! had claimed, and volumes are not touched (that is `boot`'s and `watch`'s work).

use std::path::Path;

use crate::engine::applied::{AppliedError, AppliedSpec};
use crate::facts::Facts;
use crate::source::{BoxFuture, Context, Fetched, Source, SourceError, VerifiedSpec};

pub struct KeptSource {
    spec: VerifiedSpec,
    facts: Facts,
}

impl KeptSource {
    /// Reads the kept spec (its digest checked) and parses it as strictly as when it
    /// was fetched.
    pub fn load(state_dir: &Path) -> Result<Self, AppliedError> {
        let kept = AppliedSpec::load(state_dir)?;
        let spec = kept.node_spec(state_dir)?;
        tracing::info!(
            spec = %kept.spec_url,
            sha256 = %kept.spec_sha256,
            saved_at = %kept.saved_at,
            "using the spec kept on the node"
        );
        Ok(Self {
            spec: VerifiedSpec {
                spec,
                url: kept.spec_url,
                sha256: kept.spec_sha256,
                text: kept.spec,
            },
            facts: kept.facts,
        })
    }
}

impl Source for KeptSource {
    fn describe(&self) -> String {
        self.spec.url.clone()
    }

    fn facts(&self) -> Option<Facts> {
        Some(self.facts.clone())
    }

    fn fetch<'a>(&'a self, _: &'a Context<'a>) -> BoxFuture<'a, Result<Fetched, SourceError>> {
        Box::pin(async move {
            Ok(Fetched {
                spec: self.spec.clone(),
                credentials: Vec::new(),
            })
        })
    }
}
