//! The one place a node spec's bytes become a [`NodeSpec`]: the digest (when one is
//! pinned), UTF-8, the strict parse, the match with the boot config, and the log line.
//! Every source goes through here.

use crate::spec::{self, BootConfig, NodeSpec, Sha256Hex, SpecError};

/// A node spec checked and parsed, with what the run records about it.
#[derive(Debug, Clone)]
pub struct VerifiedSpec {
    pub spec: NodeSpec,
    /// Where it came from, as recorded (`s3://…`, `file://…`, `controller-shim https://…`).
    pub url: String,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Its exact text, kept on the node for `repair`.
    pub text: String,
}

/// Checks `bytes` (named `name` in messages) against `expected` when given, parses
/// them strictly and, with a boot config, checks they are for this instance.
pub fn verify(
    name: &str,
    url: String,
    bytes: Vec<u8>,
    expected: Option<&Sha256Hex>,
    boot: Option<&BootConfig>,
) -> Result<VerifiedSpec, SpecError> {
    let sha256 = spec::digest(&bytes);
    match expected {
        Some(expected) => spec::verify_digest(name, &bytes, expected)?,
        None => {
            tracing::warn!(spec = %name, sha256 = %sha256, "no digest given; the spec is not verified")
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| SpecError::Parse {
        source_name: name.to_owned(),
        detail: "the document is not UTF-8 text".to_owned(),
    })?;
    let parsed = NodeSpec::parse(name, &text)?;
    if let Some(boot) = boot {
        spec::check_spec_matches_boot(name, &text, &parsed, boot)?;
    }
    tracing::info!(spec = %name, sha256 = %sha256, "node spec verified and parsed");
    Ok(VerifiedSpec {
        spec: parsed,
        url,
        sha256,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "apiVersion: nodewright.io/v1alpha1
kind: NodeSpec
cluster:
  name: test.example.com
  kubernetesVersion: 1.33.4
  serviceCidr: 100.64.0.0/13
  podCidr: 100.96.0.0/11
  dnsIp: 100.64.0.10
  api:
    name: api.test.example.com
role: worker
";

    fn sha(text: &str) -> Sha256Hex {
        Sha256Hex::try_from(spec::digest(text.as_bytes()).as_str()).unwrap()
    }

    #[test]
    fn a_pinned_digest_is_checked_before_anything_is_parsed() {
        let wrong = sha("something else");
        let error = verify(
            "s",
            "file:///s".into(),
            b"not: [yaml".to_vec(),
            Some(&wrong),
            None,
        )
        .unwrap_err();
        assert!(matches!(error, SpecError::DigestMismatch { .. }), "{error}");
        let verified =
            verify("s", "file:///s".into(), SPEC.into(), Some(&sha(SPEC)), None).unwrap();
        assert_eq!(verified.sha256, sha(SPEC).as_str());
        assert_eq!(verified.text, SPEC);
        assert_eq!(verified.url, "file:///s");
    }

    #[test]
    fn bytes_that_are_not_text_or_not_a_spec_are_refused_with_their_name() {
        let error = verify("the spec", String::new(), vec![0xff, 0xfe], None, None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the spec: the document is not UTF-8 text"
        );
        let error = verify(
            "the spec",
            String::new(),
            format!("{SPEC}surprise: 1\n").into(),
            None,
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("surprise"), "{error}");
    }
}
