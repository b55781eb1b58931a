//! Where a node's inputs come from: a chain of providers (as nodeadm's
//! `configprovider`). Each provider recognises its own user data; what it recognised is
//! a [`Source`], which fetches the verified node spec and the credentials that come
//! with it. Today: nodewright's boot config, with the spec in the state store
//! (`s3://`, `file://`) or from controller-shim. A new input format (kops) is one more
//! provider plus a pure translation into a `NodeSpec`, never a second flow.
//!
//! Also here, because they are inputs too: the instance's facts ([`facts`]), the
//! control plane's PKI from the state store ([`pki`]) and the certificates issued from
//! it ([`issue`]), and the credentials a node keeps ([`credentials`]).

pub mod credentials;
pub mod facts;
pub mod issue;
pub mod nodewright;
pub mod pki;
pub mod shim;
pub mod spec;
pub mod store;
pub mod userdata;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use spec::VerifiedSpec;
pub use store::{StoreCause, StoreError, fetch};
pub use userdata::{BOOT_CONFIG_CONTENT_TYPE, UserDataError, boot_config_text};

use crate::cloud::{Metadata, NetworkSettings};
use crate::error::{Classified, ErrorKind};
use crate::facts::Facts;
use crate::model::CredentialFile;
use crate::runbook::Topic;

/// One way a node's inputs can arrive: it recognises its own user data.
pub trait Provider: Send + Sync {
    /// A short name for logs: `nodewright`, `kops`.
    fn name(&self) -> &'static str;
    /// The source the user data describes, `Ok(None)` when the user data is not this
    /// provider's, an error when it is but cannot be used.
    fn recognise(&self, user_data: &[u8]) -> Result<Option<Box<dyn Source>>, SourceError>;
}

/// What a provider recognised: where the node's spec is, and how to get it.
pub trait Source: Send + Sync {
    /// Where the spec comes from, for logs and the run record (`s3://…`,
    /// `controller-shim https://…`).
    fn describe(&self) -> String;
    /// The proxy and CA every outbound call uses from here on (IMDS bypasses them).
    fn network(&self) -> NetworkSettings {
        NetworkSettings::default()
    }
    /// Facts the source knows already (the ones kept with a kept spec): then the
    /// instance metadata service is not asked.
    fn facts(&self) -> Option<Facts> {
        None
    }
    /// Whether this source issues the node's kubelet credentials with the spec
    /// (controller-shim); otherwise the spec must say how the kubelet gets them.
    fn issues_credentials(&self) -> bool {
        false
    }
    /// Fetches the spec, checks it (digest, strict parse, match with the user data)
    /// and gets the credentials that come with it.
    fn fetch<'a>(&'a self, context: &'a Context<'a>)
    -> BoxFuture<'a, Result<Fetched, SourceError>>;
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a source may use while fetching.
pub struct Context<'a> {
    /// The root everything is written under (a worker's keys are made there first).
    pub root: &'a Path,
    pub facts: &'a Facts,
    pub network: &'a NetworkSettings,
    /// How long each remote source is retried.
    pub deadline: Duration,
    /// Ask for credentials when the node holds no good ones (`boot`). `plan` never
    /// does: it asks for the spec only and writes nothing.
    pub credentials: bool,
}

/// A verified spec, and the credential files that came with it.
#[derive(Debug)]
pub struct Fetched {
    pub spec: VerifiedSpec,
    pub credentials: Vec<CredentialFile>,
}

/// The providers, asked in order; the last one is nodewright's own, which claims any
/// user data nobody else did (and so explains why it is not a boot config).
#[derive(Clone)]
pub struct Chain(Arc<Vec<Box<dyn Provider>>>);

impl Chain {
    pub fn new(providers: Vec<Box<dyn Provider>>) -> Self {
        Self(Arc::new(providers))
    }

    /// The source the user data describes, from the first provider that claims it.
    pub fn recognise(&self, user_data: &[u8]) -> Result<Box<dyn Source>, SourceError> {
        for provider in self.0.iter() {
            if let Some(source) = provider.recognise(user_data)? {
                tracing::debug!(provider = provider.name(), "user data recognised");
                return Ok(source);
            }
        }
        Err(SourceError::new(InputError::Unrecognised {
            providers: self
                .0
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", "),
        }))
    }
}

impl Default for Chain {
    /// nodewright's own provider alone.
    fn default() -> Self {
        Self::new(vec![Box::new(nodewright::Provider)])
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|p| p.name()))
            .finish()
    }
}

/// User data: from a file when given (`--user-data`), else from IMDS.
pub async fn user_data(file: Option<&Path>, metadata: &Metadata) -> Result<Vec<u8>, SourceError> {
    match file {
        Some(path) => std::fs::read(path).map_err(|source| {
            SourceError::new(InputError::UserDataFile {
                path: path.to_owned(),
                source,
            })
        }),
        None => Ok(metadata.user_data().await?),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("reading user data from {path}: {source}")]
    UserDataFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("user data is for none of the providers ({providers})")]
    Unrecognised { providers: String },
}

impl Classified for InputError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::InvalidSpec)
    }
}

/// Any error of a source behind one type: the provider's own error keeps its message,
/// its causes and its class (exit code, runbook topic), so a new provider brings its
/// own error type and the flow needs no new variant.
pub struct SourceError(Box<dyn Failure>);

/// What a source's error must be.
pub trait Failure: std::error::Error + Classified + Send + Sync + 'static {}

impl<T: std::error::Error + Classified + Send + Sync + 'static> Failure for T {}

impl SourceError {
    pub fn new(error: impl Failure) -> Self {
        Self(Box::new(error))
    }

    /// The error itself, to look at its type (tests, callers that need the detail).
    pub fn inner(&self) -> &(dyn std::error::Error + 'static) {
        self.0.as_ref()
    }
}

impl fmt::Debug for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Classified for SourceError {
    fn kind(&self) -> ErrorKind {
        self.0.kind()
    }
    fn topic(&self) -> Option<Topic> {
        self.0.topic()
    }
}

/// The errors the sources here raise.
macro_rules! source_errors {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for SourceError {
            fn from(error: $error) -> Self {
                Self::new(error)
            }
        })*
    };
}

source_errors!(
    InputError,
    UserDataError,
    crate::spec::SpecError,
    crate::cloud::http::NetworkError,
    crate::retry::RetryError<crate::cloud::MetadataError>,
    crate::retry::RetryError<StoreError>,
    shim::ShimSourceError,
    pki::PkiSourceError,
    facts::FactsError,
    credentials::NoWayIn,
);
