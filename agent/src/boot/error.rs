//! Why a run failed, with its class: the exit code and the runbook section come from
//! the failing phase's own error ([`Classified`]), never from its text.

use crate::controlplane::ControlPlaneError;
use crate::engine::applied::AppliedError;
use crate::engine::{PlanError, StateError};
use crate::error::{Classified, ErrorKind};
use crate::host::lock::LockError;
use crate::model::ModelError;
use crate::runbook::Topic;
use crate::source::SourceError;
use crate::source::issue::IssueError;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// User data, facts, the spec or the credentials that came with it.
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error("issuing the control plane's certificates: {0}")]
    Issue(#[from] IssueError),
    #[error("reading the node's credentials: {0}")]
    Credentials(#[source] std::io::Error),
    #[error("building the node's desired state: {0}")]
    Model(#[from] ModelError),
    #[error("planning: {0}")]
    Plan(#[from] PlanError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{} of the changes failed:\n  - {}", failures.len(), failures.join("\n  - "))]
    Apply { failures: Vec<String> },
    #[error("{source}{}", holder.as_ref().map(|h| format!(": {h} is running")).unwrap_or_default())]
    Locked {
        source: LockError,
        /// The run holding it, from its live record.
        holder: Option<String>,
    },
    #[error(transparent)]
    Kept(#[from] AppliedError),
}

impl Classified for BootError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Source(e) => e.kind(),
            Self::Issue(e) => e.kind(),
            Self::Model(e) => e.kind(),
            // Whatever the cloud said, the control-plane phase failed to change the node.
            Self::ControlPlane(_) | Self::Plan(_) | Self::Apply { .. } => ErrorKind::ChangeFailed,
            Self::Credentials(_) | Self::State(_) => ErrorKind::Internal,
            Self::Locked { source, .. } => source.kind(),
            Self::Kept(e) => e.kind(),
        }
    }

    fn topic(&self) -> Option<Topic> {
        match self {
            Self::Source(e) => e.topic(),
            Self::Issue(e) => e.topic(),
            Self::Model(e) => e.topic(),
            Self::ControlPlane(e) => e.topic(),
            Self::Plan(_) | Self::Apply { .. } => Some(Topic::ApplyFailed),
            Self::Credentials(_) | Self::State(_) => None,
            Self::Locked { .. } => Some(Topic::AnotherRun),
            Self::Kept(e) => e.topic(),
        }
    }
}

impl Classified for LockError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Held { .. } => ErrorKind::Busy,
            Self::Io { .. } => ErrorKind::Internal,
        }
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::AnotherRun)
    }
}

impl Classified for AppliedError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Missing { .. } => ErrorKind::NoState,
            _ => ErrorKind::Internal,
        }
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::NoAppliedSpec)
    }
}
