//! The instance metadata service, IMDSv2 only, through the AWS SDK's client.
//!
//! The SDK's client always fetches a session token first and never falls back to
//! IMDSv1. We add the policy a boot needs: retries with backoff under one deadline
//! (the metadata service can be slow or briefly failing early in boot), and a direct
//! connection that no proxy setting can divert.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use aws_config::imds::client::error::ImdsError;
use aws_config::provider_config::ProviderConfig;
use serde::Deserialize;

use super::http::direct_http_client;
use crate::error::{Classified, ErrorKind};
use crate::facts::InstanceFacts;
use crate::retry::{RetryError, RetryPolicy, Verdict, retry};
use crate::runbook::Topic;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("instance metadata {path}: {source}")]
    Request {
        path: String,
        #[source]
        source: Box<ImdsError>,
    },
    #[error("instance metadata {path}: not found (HTTP 404)")]
    NotFound { path: String },
    #[error("instance metadata {path}: {detail}")]
    Raw { path: String, detail: String },
    #[error("instance metadata {path}: unexpected content: {detail}")]
    Malformed { path: String, detail: String },
}

/// A permanent failure is an answer that makes no sense (refused input); giving up at
/// the deadline is "unreachable". Either way the runbook's IMDS section helps.
impl Classified for MetadataError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::ImdsUnreachable)
    }
}

impl MetadataError {
    /// The SDK could not read the body as text (binary user data, e.g. gzip).
    fn is_unexpected_body(&self) -> bool {
        matches!(self, Self::Request { source, .. } if matches!(**source, ImdsError::Unexpected(_)))
    }

    fn verdict(&self) -> Verdict {
        match self {
            // Everything else is transient at boot: connection refused while the network
            // comes up, timeouts, 5xx, 401 after a token expired, even a 404 that some
            // paths give before the instance is fully started.
            Self::Malformed { .. } => Verdict::Fail,
            error if error.is_unexpected_body() => Verdict::Fail,
            Self::NotFound { .. } | Self::Request { .. } | Self::Raw { .. } => Verdict::Retry,
        }
    }
}

/// Reads instance metadata with retries under a deadline.
#[derive(Clone, Debug)]
pub struct Metadata {
    client: aws_config::imds::Client,
    policy: RetryPolicy,
}

/// The parts of the instance identity document we use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument {
    account_id: String,
    availability_zone: String,
    instance_id: String,
    instance_type: String,
    private_ip: Ipv4Addr,
    region: String,
}

impl Metadata {
    /// A client for the endpoint configured the standard AWS way
    /// (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, else `http://169.254.169.254`).
    pub fn new(deadline: Duration) -> Self {
        let provider = ProviderConfig::without_region().with_http_client(direct_http_client());
        let client = aws_config::imds::Client::builder()
            .configure(&provider)
            // One attempt per call: the retry loop here owns the policy and the deadline.
            .max_attempts(1)
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .build();
        Self {
            client,
            policy: RetryPolicy::with_deadline(deadline),
        }
    }

    async fn get_once(&self, path: &str) -> Result<String, MetadataError> {
        match self.client.get(path).await {
            Ok(value) => Ok(value.as_ref().to_owned()),
            Err(ImdsError::ErrorResponse(response))
                if response.response().status().as_u16() == 404 =>
            {
                Err(MetadataError::NotFound {
                    path: path.to_owned(),
                })
            }
            Err(source) => Err(MetadataError::Request {
                path: path.to_owned(),
                source: Box::new(source),
            }),
        }
    }

    /// A path that must exist: retried (404 included) until the deadline.
    pub async fn get(&self, path: &str) -> Result<String, RetryError<MetadataError>> {
        retry(&subject(path), self.policy, MetadataError::verdict, || {
            self.get_once(path)
        })
        .await
    }

    /// A path that may legitimately be absent (404 means "none").
    async fn get_optional(&self, path: &str) -> Result<Option<String>, RetryError<MetadataError>> {
        let outcome = retry(
            &subject(path),
            self.policy,
            |e: &MetadataError| match e {
                MetadataError::NotFound { .. } => Verdict::Fail,
                other => other.verdict(),
            },
            || self.get_once(path),
        )
        .await;
        match outcome {
            Ok(value) => Ok(Some(value)),
            Err(RetryError::Permanent(MetadataError::NotFound { .. })) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Raw user data bytes. The SDK's client returns text only, and gzip user data is
    /// binary: when the SDK reports a body that is not UTF-8, the same IMDSv2 exchange
    /// (token PUT, then GET with the token) is made here for the bytes.
    pub async fn user_data(&self) -> Result<Vec<u8>, RetryError<MetadataError>> {
        const PATH: &str = "/latest/user-data";
        match self.get(PATH).await {
            Ok(text) => Ok(text.into_bytes()),
            Err(RetryError::Permanent(error)) if error.is_unexpected_body() => {
                retry(
                    &subject(PATH),
                    self.policy,
                    MetadataError::verdict,
                    || async {
                        raw_get(PATH).await.map_err(|detail| MetadataError::Raw {
                            path: PATH.to_owned(),
                            detail,
                        })
                    },
                )
                .await
            }
            Err(other) => Err(other),
        }
    }

    /// The instance's identity and network facts.
    pub async fn instance_facts(&self) -> Result<InstanceFacts, RetryError<MetadataError>> {
        const DOC: &str = "/latest/dynamic/instance-identity/document";
        let text = self.get(DOC).await?;
        let doc: IdentityDocument = serde_json::from_str(&text).map_err(|e| {
            RetryError::Permanent(MetadataError::Malformed {
                path: DOC.to_owned(),
                detail: e.to_string(),
            })
        })?;
        let hostname = self.get("/latest/meta-data/local-hostname").await?;
        let mac = self.get("/latest/meta-data/mac").await?;
        let ipv6_path = format!("/latest/meta-data/network/interfaces/macs/{mac}/ipv6s");
        let ipv6 = match self.get_optional(&ipv6_path).await? {
            None => None,
            Some(list) => Some(
                list.lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .parse::<Ipv6Addr>()
                    .map_err(|e| {
                        RetryError::Permanent(MetadataError::Malformed {
                            path: ipv6_path.clone(),
                            detail: e.to_string(),
                        })
                    })?,
            ),
        };
        Ok(InstanceFacts {
            instance_id: doc.instance_id,
            account_id: doc.account_id,
            region: doc.region,
            availability_zone: doc.availability_zone,
            instance_type: doc.instance_type,
            private_ipv4: doc.private_ip,
            ipv6,
            hostname: hostname.trim().to_owned(),
            mac: mac.trim().to_owned(),
        })
    }
}

/// How a metadata path is named in logs and in the live run record.
fn subject(path: &str) -> String {
    format!("instance metadata {path}")
}

/// The IMDS endpoint the SDK would use, for the one raw request above.
fn endpoint() -> String {
    std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|_| "http://169.254.169.254".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

async fn raw_get(path: &str) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let base = endpoint();
    let token = client
        .put(format!("{base}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("token request failed: {e}"))?
        .text()
        .await
        .map_err(|e| format!("token request failed: {e}"))?;
    let response = client
        .get(format!("{base}{path}"))
        .header("x-aws-ec2-metadata-token", token.trim())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?;
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    Ok(body.to_vec())
}
