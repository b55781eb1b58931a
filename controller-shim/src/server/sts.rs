//! Replays a worker's signed `GetCallerIdentity` to STS, which checks the signature.

use std::time::Duration;

use aws_smithy_xml::decode::{Document, try_data};

use crate::identity::StsEndpoint;
use crate::protocol::STS_BODY;

/// Who STS says signed the proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub arn: String,
    pub account: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// STS refused the proof: a forged or wrong signature, unknown or expired keys.
    #[error("STS refused the identity proof: {code}: {message}")]
    Rejected { code: String, message: String },
    /// STS could not be asked, throttled, or failed; a retry may work.
    #[error("STS is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct Sts {
    http: reqwest::Client,
    endpoint: StsEndpoint,
}

impl Sts {
    pub fn new(endpoint: StsEndpoint) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { http, endpoint })
    }

    pub fn endpoint(&self) -> &StsEndpoint {
        &self.endpoint
    }

    /// Sends the fixed `GetCallerIdentity` body with the proof's signed headers.
    pub async fn caller_identity(
        &self,
        headers: &[(String, String)],
    ) -> Result<CallerIdentity, StsError> {
        let mut request = self.http.post(self.endpoint.post_url()).body(STS_BODY);
        for (name, value) in headers {
            // The URL carries the host the proof was checked against.
            if !name.eq_ignore_ascii_case("host") {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let response = request.send().await.map_err(|e| {
            if e.is_builder() {
                // A proof that cannot even be sent is the proof's fault, not an outage
                // (the checks before should have refused it already).
                StsError::Rejected {
                    code: "MalformedProof".to_owned(),
                    message: crate::client::error_chain(&e),
                }
            } else {
                StsError::Unavailable(crate::client::error_chain(&e))
            }
        })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| StsError::Unavailable(crate::client::error_chain(&e)))?;
        if status == 200 {
            let arn = element_text(&text, "Arn");
            let account = element_text(&text, "Account");
            return match (arn, account) {
                (Some(arn), Some(account)) => Ok(CallerIdentity { arn, account }),
                _ => Err(StsError::Unavailable(format!(
                    "an answer without Arn and Account: {}",
                    snippet(&text)
                ))),
            };
        }
        let code = element_text(&text, "Code").unwrap_or_else(|| format!("HTTP {status}"));
        let message = element_text(&text, "Message").unwrap_or_else(|| snippet(&text));
        if status >= 500 || status == 429 || code.contains("Throttl") {
            Err(StsError::Unavailable(format!("{code}: {message}")))
        } else {
            Err(StsError::Rejected { code, message })
        }
    }
}

fn snippet(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The text of the first element named `name`.
fn element_text(xml: &str, name: &str) -> Option<String> {
    let mut doc = Document::new(xml);
    while let Some(start) = doc.next_start_element() {
        if start.local() == name {
            let mut scoped = doc.scoped_to(start);
            return try_data(&mut scoped).ok().map(|c| c.trim().to_owned());
        }
    }
    None
}

/// An instance role session, parsed from an assumed-role ARN:
/// `arn:<partition>:sts::<account>:assumed-role/<role>/<instance-id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSession {
    pub partition: String,
    pub account: String,
    pub role: String,
    pub session: String,
}

impl RoleSession {
    pub fn parse(arn: &str) -> Option<Self> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let ["arn", partition, "sts", "", account, resource] = parts.as_slice() else {
            return None;
        };
        let rest = resource.strip_prefix("assumed-role/")?;
        let (role, session) = rest.split_once('/')?;
        if role.is_empty() || session.is_empty() || session.contains('/') {
            return None;
        }
        Some(Self {
            partition: (*partition).to_owned(),
            account: (*account).to_owned(),
            role: role.to_owned(),
            session: session.to_owned(),
        })
    }
}

/// `i-` and 8 or 17 lowercase hex digits.
pub fn is_instance_id(text: &str) -> bool {
    text.strip_prefix("i-").is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_sts_answers() {
        let ok = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/nodes/i-0a1b2c3d4e5f60718</Arn>
    <UserId>AROA:i-0a1b2c3d4e5f60718</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>x</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;
        assert_eq!(
            element_text(ok, "Arn").unwrap(),
            "arn:aws:sts::123456789012:assumed-role/nodes/i-0a1b2c3d4e5f60718"
        );
        assert_eq!(element_text(ok, "Account").unwrap(), "123456789012");
        let err = "<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>bad</Message></Error></ErrorResponse>";
        assert_eq!(element_text(err, "Code").unwrap(), "SignatureDoesNotMatch");
        assert_eq!(element_text("not xml", "Arn"), None);
    }

    #[test]
    fn parses_role_sessions() {
        let session = RoleSession::parse(
            "arn:aws-cn:sts::123456789012:assumed-role/nodes/i-0a1b2c3d4e5f60718",
        )
        .unwrap();
        assert_eq!(session.partition, "aws-cn");
        assert_eq!(session.role, "nodes");
        assert!(is_instance_id(&session.session));
        assert!(RoleSession::parse("arn:aws:iam::123456789012:user/bob").is_none());
        assert!(RoleSession::parse("arn:aws:sts::123456789012:federated-user/bob").is_none());
        assert!(!is_instance_id("i-xyz"));
        assert!(!is_instance_id("i-0A1B2C3D"));
        assert!(is_instance_id("i-0a1b2c3d"));
    }
}
