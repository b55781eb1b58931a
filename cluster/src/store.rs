//! The state store as the kit writes it: create an object only if it is absent (S3's
//! conditional `PutObject` with `If-None-Match: *`, so two runs racing cannot both
//! write), read one, replace one (the node-group definitions only).
//!
//! Credentials and endpoints come the standard AWS way (environment, profile, SSO), so
//! `AWS_ENDPOINT_URL` points the kit at an emulator as it does the agent.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

#[derive(Debug, thiserror::Error)]
#[error("s3://{bucket}/{key}: {detail}")]
pub struct StoreError {
    pub bucket: String,
    pub key: String,
    pub detail: String,
}

/// What a conditional create did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object was written.
    Written,
    /// It was there already; nothing was written.
    Existed,
}

pub struct Store {
    s3: aws_sdk_s3::Client,
    pub bucket: String,
}

impl Store {
    pub async fn connect(region: &str, bucket: &str) -> Self {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .load()
            .await;
        Self {
            s3: nodewright::cloud::aws::s3_client(&config),
            bucket: bucket.to_owned(),
        }
    }

    fn error(&self, key: &str, detail: String) -> StoreError {
        StoreError {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            detail,
        }
    }

    /// The object's bytes, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => {
                let bytes = output
                    .body
                    .collect()
                    .await
                    .map_err(|e| self.error(key, e.to_string()))?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
            Err(e) => Err(self.error(key, describe(&e))),
        }
    }

    /// Writes the object unless one exists, atomically: never overwrites.
    pub async fn create(
        &self,
        key: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Result<Created, StoreError> {
        let result = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .if_none_match("*")
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Created::Written),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err().code(),
                    Some("PreconditionFailed" | "ConditionalRequestConflict")
                ) =>
            {
                Ok(Created::Existed)
            }
            Err(e) => Err(self.error(key, describe(&e))),
        }
    }

    /// Writes the object, replacing any (only for documents read as "the current one").
    pub async fn replace(
        &self,
        key: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Result<(), StoreError> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error(key, describe(&e)))
    }
}

fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(e) => format!(
            "{}: {}",
            e.err().code().unwrap_or("Unknown"),
            e.err().message().unwrap_or("")
        ),
        other => {
            // The whole chain: the outer error alone says only "dispatch failure".
            let mut out = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(e) = source {
                out.push_str(&format!(": {e}"));
                source = e.source();
            }
            out
        }
    }
}
