//! Finds our boot config in EC2 user data.
//!
//! User data may be:
//! - the boot config itself, as YAML;
//! - that YAML compressed with gzip (EC2 limits user data to 16 KiB);
//! - a MIME multipart message (what cloud-init reads), where our part has the content
//!   type [`BOOT_CONFIG_CONTENT_TYPE`] and every other part is left to its owner.
//!   Parts may be base64 or quoted-printable encoded, and our part may itself be gzip.

use std::io::Read;

use flate2::read::GzDecoder;

use crate::error::{Classified, ErrorKind};
use crate::runbook::Topic;

/// The MIME content type that marks our part of a multipart user data message.
pub const BOOT_CONFIG_CONTENT_TYPE: &str = "application/vnd.nodewright.bootconfig+yaml";

/// Decompressed user data is bounded, so a gzip bomb cannot exhaust memory.
const MAX_DECODED_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    #[error("user data is empty: this instance was launched without a boot config")]
    Empty,
    #[error("user data looks gzip-compressed but does not decompress: {0}")]
    Gzip(std::io::Error),
    #[error("user data decompresses to more than {MAX_DECODED_BYTES} bytes; refusing it")]
    TooLarge,
    #[error("user data is a MIME message that does not parse: {0}")]
    Mime(String),
    #[error(
        "user data is a MIME multipart message without a part of type {BOOT_CONFIG_CONTENT_TYPE} \
         (its parts: {found})"
    )]
    NoBootConfigPart { found: String },
    #[error("user data has {0} parts of type {BOOT_CONFIG_CONTENT_TYPE}; exactly one is allowed")]
    SeveralBootConfigParts(usize),
    #[error("the boot config in user data is not UTF-8 text")]
    NotText,
}

/// User data that cannot be read is refused input: the launch template is wrong.
impl Classified for UserDataError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::InvalidSpec)
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Returns the boot config's YAML text from raw user data bytes.
pub fn boot_config_text(raw: &[u8]) -> Result<String, UserDataError> {
    let bytes = gunzip_if_compressed(raw)?;
    let text = String::from_utf8(bytes).map_err(|_| UserDataError::NotText)?;
    if text.trim().is_empty() {
        return Err(UserDataError::Empty);
    }
    if looks_like_mime(&text) {
        return from_multipart(text.as_bytes());
    }
    Ok(text)
}

fn gunzip_if_compressed(raw: &[u8]) -> Result<Vec<u8>, UserDataError> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw.to_vec());
    }
    let mut out = Vec::new();
    GzDecoder::new(raw)
        .take(MAX_DECODED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(UserDataError::Gzip)?;
    if out.len() as u64 > MAX_DECODED_BYTES {
        return Err(UserDataError::TooLarge);
    }
    Ok(out)
}

/// A MIME message starts with headers; cloud-init checks for the same two.
fn looks_like_mime(text: &str) -> bool {
    let head = text.trim_start().get(..64).unwrap_or(text.trim_start());
    let head = head.to_ascii_lowercase();
    head.starts_with("content-type:") || head.starts_with("mime-version:")
}

fn from_multipart(message: &[u8]) -> Result<String, UserDataError> {
    let mail = mailparse::parse_mail(message).map_err(|e| UserDataError::Mime(e.to_string()))?;
    let mut found = Vec::new();
    let mut ours = Vec::new();
    collect_parts(&mail, &mut found, &mut ours)?;
    match ours.len() {
        0 => Err(UserDataError::NoBootConfigPart {
            found: if found.is_empty() {
                "none".to_owned()
            } else {
                found.join(", ")
            },
        }),
        1 => {
            let bytes = gunzip_if_compressed(&ours[0])?;
            String::from_utf8(bytes).map_err(|_| UserDataError::NotText)
        }
        n => Err(UserDataError::SeveralBootConfigParts(n)),
    }
}

fn collect_parts(
    part: &mailparse::ParsedMail<'_>,
    found: &mut Vec<String>,
    ours: &mut Vec<Vec<u8>>,
) -> Result<(), UserDataError> {
    if !part.subparts.is_empty() {
        for sub in &part.subparts {
            collect_parts(sub, found, ours)?;
        }
        return Ok(());
    }
    let mimetype = part.ctype.mimetype.to_ascii_lowercase();
    if mimetype == BOOT_CONFIG_CONTENT_TYPE {
        let body = part
            .get_body_raw()
            .map_err(|e| UserDataError::Mime(e.to_string()))?;
        ours.push(body);
    } else {
        found.push(mimetype);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    const YAML: &str = "apiVersion: nodewright.io/v1alpha1\nkind: BootConfig\n";

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn multipart(parts: &[(&str, &str, &str)]) -> String {
        let mut out = String::from(
            "Content-Type: multipart/mixed; boundary=\"MIMEBOUNDARY\"\nMIME-Version: 1.0\n\n",
        );
        for (ctype, encoding, body) in parts {
            out.push_str("--MIMEBOUNDARY\n");
            out.push_str(&format!("Content-Type: {ctype}\n"));
            if !encoding.is_empty() {
                out.push_str(&format!("Content-Transfer-Encoding: {encoding}\n"));
            }
            out.push_str("MIME-Version: 1.0\n\n");
            out.push_str(body);
            out.push('\n');
        }
        out.push_str("--MIMEBOUNDARY--\n");
        out
    }

    #[test]
    fn plain_yaml() {
        assert_eq!(boot_config_text(YAML.as_bytes()).unwrap(), YAML);
    }

    #[test]
    fn gzip_yaml() {
        assert_eq!(boot_config_text(&gzip(YAML.as_bytes())).unwrap(), YAML);
    }

    #[test]
    fn multipart_with_cloud_init_parts() {
        let message = multipart(&[
            ("text/x-shellscript", "", "#!/bin/sh\necho hi"),
            (
                &format!("{BOOT_CONFIG_CONTENT_TYPE}; charset=\"utf-8\""),
                "",
                YAML,
            ),
            ("text/cloud-config", "", "#cloud-config\npackages: [jq]"),
        ]);
        assert_eq!(
            boot_config_text(message.as_bytes()).unwrap().trim(),
            YAML.trim()
        );
    }

    #[test]
    fn multipart_base64_part_and_gzip_envelope() {
        let encoded = "YXBpVmVyc2lvbjogbm9kZXdyaWdodC5pby92MWFscGhhMQpraW5kOiBCb290Q29uZmlnCg==";
        let message = multipart(&[(BOOT_CONFIG_CONTENT_TYPE, "base64", encoded)]);
        assert_eq!(boot_config_text(&gzip(message.as_bytes())).unwrap(), YAML);
    }

    #[test]
    fn multipart_without_our_part() {
        let message = multipart(&[
            ("text/x-shellscript", "", "#!/bin/sh"),
            ("text/cloud-config", "", "#cloud-config"),
        ]);
        let err = boot_config_text(message.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains(BOOT_CONFIG_CONTENT_TYPE), "{err}");
        assert!(
            err.contains("text/x-shellscript, text/cloud-config"),
            "{err}"
        );
    }

    #[test]
    fn two_parts_of_ours_are_refused() {
        let message = multipart(&[
            (BOOT_CONFIG_CONTENT_TYPE, "", YAML),
            (BOOT_CONFIG_CONTENT_TYPE, "", YAML),
        ]);
        assert!(matches!(
            boot_config_text(message.as_bytes()),
            Err(UserDataError::SeveralBootConfigParts(2))
        ));
    }

    #[test]
    fn empty_and_broken() {
        assert!(matches!(
            boot_config_text(b"  \n"),
            Err(UserDataError::Empty)
        ));
        assert!(matches!(
            boot_config_text(&[0x1f, 0x8b, 0, 1, 2]),
            Err(UserDataError::Gzip(_))
        ));
        assert!(matches!(
            boot_config_text(&[0xff, 0xfe]),
            Err(UserDataError::NotText)
        ));
    }

    #[test]
    fn gzip_bomb_is_bounded() {
        let bomb = gzip(&vec![b'a'; (MAX_DECODED_BYTES + 10) as usize]);
        assert!(matches!(
            boot_config_text(&bomb),
            Err(UserDataError::TooLarge)
        ));
    }
}
