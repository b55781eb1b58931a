//! Redaction for what leaves the node (support bundles): secret files' contents, any
//! value whose key looks like a password, token, key or credential, private keys in PEM
//! form, passwords in URLs, bearer tokens and AWS access key ids. Values found that way
//! in the spec are remembered, so the same secret is also caught where it appears
//! without its key (a journal line, an error message).
//!
//! It errs on the side of hiding: a flag such as `--authorization-mode` loses its value
//! too. Values that cannot be secrets (absolute paths, booleans, numbers) are kept,
//! so `--tls-private-key-file=/etc/kubernetes/pki/apiserver.key` stays readable.

use std::sync::LazyLock;

use regex_lite::{Captures, Regex};

use crate::spec::NodeSpec;

pub const REDACTED: &str = "<redacted>";

/// `key: value`, `key=value`, `"key": "value"` where the key names a secret.
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)(?P<key>\b(?:[A-Za-z0-9_.\-]*(?:password|passwd|secret|token|credential",
        r"|private[_\-]?key|api[_\-]?key|access[_\-]?key|client[_\-]?key|key[_\-]?data",
        r"|encryption[_\-]?key|signing[_\-]?key|session[_\-]?key)[A-Za-z0-9_.\-]*",
        r"|key|auth|pass|pwd))",
        r#"(?P<sep>["']?[ \t]*[:=][ \t]*)"#,
        r#"(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s,;"'}\]]+)"#,
    ))
    .expect("a valid pattern")
});

static PEM_PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----")
        .expect("a valid pattern")
});

static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?P<head>\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)(?P<password>[^@\s/]+)@")
        .expect("a valid pattern")
});

static BEARER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?P<scheme>bearer|basic)[ \t]+[A-Za-z0-9._~+/=\-]{8,}")
        .expect("a valid pattern")
});

static AWS_KEY_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b").expect("a valid pattern"));

static HARMLESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(?:/[A-Za-z0-9_.\-/]*|true|false|yes|no|on|off|null|none|[0-9]+|)$")
        .expect("a valid pattern")
});

/// Shortest text remembered as a secret: shorter ones would blank common words.
const MIN_KNOWN: usize = 6;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Secret values seen, longest first.
    known: Vec<String>,
}

impl Redactor {
    /// A redactor that knows the secrets `spec` holds.
    pub fn for_spec(spec: &NodeSpec) -> Self {
        let mut redactor = Self::default();
        for file in &spec.files {
            if file.secret {
                redactor.learn(&file.content);
                for line in file.content.lines() {
                    redactor.learn(line.trim());
                }
            }
            redactor.learn_from(&file.content);
        }
        for unit in &spec.systemd.units {
            if let Some(content) = &unit.content {
                redactor.learn_from(content);
            }
            for drop_in in &unit.drop_ins {
                redactor.learn_from(&drop_in.content);
            }
        }
        redactor.known.sort_by_key(|k| std::cmp::Reverse(k.len()));
        redactor.known.dedup();
        redactor
    }

    fn learn(&mut self, secret: &str) {
        if secret.len() >= MIN_KNOWN {
            self.known.push(secret.to_owned());
        }
    }

    /// Remembers the values the patterns would hide in `text`.
    fn learn_from(&mut self, text: &str) {
        for caps in KEY_VALUE.captures_iter(text) {
            let value = unquote(&caps["value"]);
            if !HARMLESS.is_match(value) {
                self.learn(value);
            }
        }
        for found in PEM_PRIVATE_KEY.find_iter(text) {
            for line in found.as_str().lines() {
                if !line.starts_with("-----") {
                    self.learn(line.trim());
                }
            }
        }
        for caps in URL_PASSWORD.captures_iter(text) {
            self.learn(&caps["password"]);
        }
    }

    /// `text` with every secret it holds replaced.
    pub fn text(&self, text: &str) -> String {
        let out = PEM_PRIVATE_KEY.replace_all(text, "<redacted: private key>");
        let source: &str = &out;
        let out = KEY_VALUE.replace_all(source, |caps: &Captures| {
            let value = &caps["value"];
            let start = caps.get(0).map_or(0, |m| m.start());
            // `/etc/kubernetes/bootstrap-token: missing` names a path, not a secret.
            let in_path = source[..start].ends_with('/');
            if in_path || HARMLESS.is_match(unquote(value)) {
                caps[0].to_owned()
            } else {
                format!("{}{}{REDACTED}", &caps["key"], &caps["sep"])
            }
        });
        let out = URL_PASSWORD.replace_all(&out, |caps: &Captures| {
            format!("{}{REDACTED}@", &caps["head"])
        });
        let out = BEARER.replace_all(&out, |caps: &Captures| {
            format!("{} {REDACTED}", &caps["scheme"])
        });
        let mut out = AWS_KEY_ID.replace_all(&out, REDACTED).into_owned();
        for secret in &self.known {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    /// The spec with secret files' contents removed and every other text redacted.
    pub fn spec(&self, spec: &NodeSpec) -> NodeSpec {
        let mut out = spec.clone();
        for file in &mut out.files {
            file.content = if file.secret {
                format!("<redacted: secret file, {} bytes>", file.content.len())
            } else {
                self.text(&file.content)
            };
        }
        for unit in &mut out.systemd.units {
            if let Some(content) = &mut unit.content {
                *content = self.text(content);
            }
            for drop_in in &mut unit.drop_ins {
                drop_in.content = self.text(&drop_in.content);
            }
        }
        out
    }
}

fn unquote(value: &str) -> &str {
    value.trim_matches(|c| c == '"' || c == '\'')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Redactor {
        Redactor::default()
    }

    #[test]
    fn key_value_secrets_are_hidden() {
        let cases = [
            ("password: hunter2-xyz", "password: <redacted>"),
            ("DB_PASSWORD=\"s3cr3t value\"", "DB_PASSWORD=<redacted>"),
            (
                "Environment=AWS_SECRET_ACCESS_KEY=abcd1234",
                "Environment=AWS_SECRET_ACCESS_KEY=<redacted>",
            ),
            ("  token: eyJhbGciOi.x.y", "  token: <redacted>"),
            ("\"apiKey\": \"k-123456\"", "\"apiKey\": <redacted>"),
            (
                "client-key-data: LS0tLS1CRUdJTg==",
                "client-key-data: <redacted>",
            ),
            ("auth=dXNlcjpwYXNz", "auth=<redacted>"),
            (
                "--bootstrap-token=abcdef.0123456789abcdef",
                "--bootstrap-token=<redacted>",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(plain().text(input), want, "{input}");
        }
    }

    #[test]
    fn harmless_values_and_unrelated_keys_stay() {
        for input in [
            "--tls-private-key-file=/etc/kubernetes/pki/apiserver.key",
            "anonymous-auth: false",
            "tokenTTL: 3600",
            "monkey: banana",
            "/etc/kubernetes/bootstrap-token: content changed",
            "keyring: none",
            "SystemMaxUse=1G",
            "net.ipv4.ip_forward = 1",
        ] {
            assert_eq!(plain().text(input), input);
        }
    }

    #[test]
    fn keys_urls_bearers_and_key_ids() {
        let pem = "before\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----\nafter";
        assert_eq!(plain().text(pem), "before\n<redacted: private key>\nafter");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(plain().text(cert), cert, "certificates are public");
        assert_eq!(
            plain().text("HTTPS_PROXY=http://user:pa55w0rd@proxy:3128"),
            "HTTPS_PROXY=http://user:<redacted>@proxy:3128"
        );
        assert_eq!(
            plain().text("Authorization: Bearer abcdefghijklmnop"),
            "Authorization: Bearer <redacted>"
        );
        assert_eq!(
            plain().text("id AKIAIOSFODNN7EXAMPLE used"),
            "id <redacted> used"
        );
    }

    #[test]
    fn secrets_of_the_spec_are_caught_anywhere() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/worker/nodespec.yaml"
        ))
        .unwrap();
        let mut spec = NodeSpec::parse("t", &text).unwrap();
        spec.files[0].secret = true;
        spec.files[0].content = "first line is public-ish\nsuper-secret-value-1\n".to_owned();
        spec.files[1].content = "api_token: tok-987654321\nplain: kept\n".to_owned();
        let redactor = Redactor::for_spec(&spec);
        let log = "journal: retrying with tok-987654321 and super-secret-value-1 now";
        assert_eq!(
            redactor.text(log),
            "journal: retrying with <redacted> and <redacted> now"
        );
        let redacted = redactor.spec(&spec);
        assert_eq!(
            redacted.files[0].content,
            "<redacted: secret file, 46 bytes>"
        );
        assert_eq!(
            redacted.files[1].content,
            "api_token: <redacted>\nplain: kept\n"
        );
        // Everything that is not secret is untouched.
        assert_eq!(redacted.systemd, spec.systemd);
        assert_eq!(redacted.sysctls, spec.sysctls);
    }
}
