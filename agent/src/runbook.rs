//! The operator's runbook (`docs/runbook.md`), built into the binary so that
//! `nodewright runbook TOPIC` works on a node without network, and the topics that
//! error messages point at.

/// The runbook's text, as shipped.
pub const TEXT: &str = include_str!("../../docs/runbook.md");

/// A section of the runbook. Each has an anchor `<a id="…">` in docs/runbook.md; a
/// unit test keeps the two in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Topic {
    ImdsUnreachable,
    S3AccessDenied,
    StateStoreUnreachable,
    ControllerShim,
    SpecHashMismatch,
    InvalidSpec,
    DownloadFailures,
    AssetHashMismatch,
    VolumeStuck,
    DnsPlaceholder,
    CertificateExpiry,
    ClockSkew,
    ApplyFailed,
    Drift,
    AnotherRun,
    ServiceUnhealthy,
    NoAppliedSpec,
    Reset,
    SupportBundle,
}

impl Topic {
    pub const ALL: &[Topic] = &[
        Topic::ImdsUnreachable,
        Topic::S3AccessDenied,
        Topic::StateStoreUnreachable,
        Topic::ControllerShim,
        Topic::SpecHashMismatch,
        Topic::InvalidSpec,
        Topic::DownloadFailures,
        Topic::AssetHashMismatch,
        Topic::VolumeStuck,
        Topic::DnsPlaceholder,
        Topic::CertificateExpiry,
        Topic::ClockSkew,
        Topic::ApplyFailed,
        Topic::Drift,
        Topic::AnotherRun,
        Topic::ServiceUnhealthy,
        Topic::NoAppliedSpec,
        Topic::Reset,
        Topic::SupportBundle,
    ];

    /// The anchor in docs/runbook.md, and the argument of `nodewright runbook`.
    pub fn id(self) -> &'static str {
        match self {
            Self::ImdsUnreachable => "imds-unreachable",
            Self::S3AccessDenied => "s3-access-denied",
            Self::StateStoreUnreachable => "state-store-unreachable",
            Self::ControllerShim => "controller-shim",
            Self::SpecHashMismatch => "spec-hash-mismatch",
            Self::InvalidSpec => "invalid-spec",
            Self::DownloadFailures => "download-failures",
            Self::AssetHashMismatch => "asset-hash-mismatch",
            Self::VolumeStuck => "volume-stuck",
            Self::DnsPlaceholder => "dns-placeholder",
            Self::CertificateExpiry => "certificate-expiry",
            Self::ClockSkew => "clock-skew",
            Self::ApplyFailed => "apply-failed",
            Self::Drift => "drift",
            Self::AnotherRun => "another-run",
            Self::ServiceUnhealthy => "service-unhealthy",
            Self::NoAppliedSpec => "no-applied-spec",
            Self::Reset => "reset",
            Self::SupportBundle => "support-bundle",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// The line an error message ends with.
    pub fn hint(self) -> String {
        format!(
            "runbook: `nodewright runbook {}` ({}/blob/main/docs/runbook.md#{})",
            self.id(),
            env!("CARGO_PKG_REPOSITORY"),
            self.id()
        )
    }

    /// The section's text, from its anchor to the next one.
    pub fn section(self) -> Option<&'static str> {
        section(TEXT, self.id())
    }
}

fn section<'a>(text: &'a str, id: &str) -> Option<&'a str> {
    let anchor = format!("<a id=\"{id}\"></a>");
    let start = text.find(&anchor)? + anchor.len();
    let rest = &text[start..];
    let end = rest.find("<a id=\"").unwrap_or(rest.len());
    Some(rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_has_a_section_and_every_section_a_topic() {
        for topic in Topic::ALL {
            let section = topic
                .section()
                .unwrap_or_else(|| panic!("docs/runbook.md has no <a id=\"{}\">", topic.id()));
            assert!(section.len() > 80, "{}: {section}", topic.id());
            assert!(section.starts_with("## "), "{}: {section}", topic.id());
            assert_eq!(Topic::from_id(topic.id()), Some(*topic));
        }
        let anchors = TEXT.matches("<a id=\"").count();
        assert_eq!(anchors, Topic::ALL.len(), "an anchor without a Topic");
    }
}
