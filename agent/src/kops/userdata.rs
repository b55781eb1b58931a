//! Recognises the user data kops writes for an instance group and takes `kube_env.yaml`
//! out of it, without running anything.
//!
//! kops's user data (`pkg/model/resources/nodeup.go`) is a bash script that downloads
//! nodeup, writes `kube_env.yaml` and runs nodeup. It comes in three forms:
//! - the script alone, with `kube_env.yaml` as a heredoc (`<< '__EOF_KUBE_ENV'`);
//! - the same with `compressUserData`: `echo "<base64 of gzip>" | base64 -d | gzip -d`;
//! - either one as the `text/x-shellscript` part of a MIME multipart message, beside the
//!   instance group's additional user data.
//!
//! The whole user data may also be gzip-compressed (EC2 passes it on as it is).

use std::collections::BTreeMap;
use std::io::Read;

use base64::Engine;
use flate2::read::GzDecoder;

use super::KopsError;

/// Decompressed text is bounded, so a gzip bomb cannot exhaust memory.
const MAX_DECODED_BYTES: u64 = 1 << 20;

const KUBE_ENV_HEREDOC: &str = "cat > conf/kube_env.yaml << '__EOF_KUBE_ENV'";
const KUBE_ENV_END: &str = "__EOF_KUBE_ENV";
const KUBE_ENV_COMPRESSED_PREFIX: &str = "echo \"";
const KUBE_ENV_COMPRESSED_SUFFIX: &str = "\" | base64 -d | gzip -d > conf/kube_env.yaml";
/// The script's last command: a script without it was cut short.
const DONE_MARKER: &str = "echo \"== nodeup node config done ==\"";
const RUN_MARKER: &str = "download-release";

/// How `kube_env.yaml` was carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeEnvForm {
    Heredoc,
    /// `compressUserData`: gzip, then base64, inside the script.
    Compressed,
}

/// What the kops script says, besides kube_env.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KopsUserData {
    /// `kube_env.yaml`, as nodeup would read it.
    pub kube_env: String,
    pub form: KubeEnvForm,
    /// Whether the script was one part of a MIME multipart message.
    pub multipart: bool,
    /// The other parts of a multipart message (their file names or content types):
    /// cloud-init runs them, nodewright does not.
    pub other_parts: Vec<String>,
    /// `NODEUP_URL_<ARCH>` and `NODEUP_HASH_<ARCH>` by architecture (`amd64`, `arm64`).
    pub nodeup: BTreeMap<String, NodeupBinary>,
    /// `export NAME=value` lines (`AWS_REGION`, ...).
    pub environment: BTreeMap<String, String>,
    /// The egress proxy the script writes to /etc/environment, when the cluster has one.
    pub proxy: Option<EgressProxy>,
    /// The `sysctl -w` lines the script runs before nodeup: `(key, value)`.
    pub early_sysctls: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeupBinary {
    /// Mirrors, in order; the script appends `.xz` to each.
    pub urls: Vec<String>,
    /// sha256 of the unpacked binary, lowercase hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressProxy {
    pub http_proxy: String,
    pub no_proxy: Vec<String>,
}

/// Whether `raw` user data is kops's (in any of its forms). Cheap; errors are left to
/// [`parse`].
pub fn is_kops(raw: &[u8]) -> bool {
    let Ok(bytes) = gunzip_if_compressed(raw) else {
        return false;
    };
    let text = String::from_utf8_lossy(&bytes);
    text.contains("NODEUP_URL_") && text.contains("conf/kube_env.yaml")
}

/// Takes kube_env and the script's settings out of raw user data. `source` names the
/// user data in errors (e.g. the file, or "IMDS user data").
pub fn parse(source: &str, raw: &[u8]) -> Result<KopsUserData, KopsError> {
    let fail = |detail: String| KopsError::UserData {
        source_name: source.to_owned(),
        detail,
    };
    let bytes = gunzip_if_compressed(raw).map_err(fail)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    if text.trim().is_empty() {
        return Err(fail("empty".to_owned()));
    }
    if looks_like_mime(&text) {
        let (script, other_parts) = script_part(&text).map_err(fail)?;
        let mut data = from_script(&script).map_err(fail)?;
        data.multipart = true;
        data.other_parts = other_parts;
        return Ok(data);
    }
    from_script(&text).map_err(fail)
}

fn gunzip_if_compressed(raw: &[u8]) -> Result<Vec<u8>, String> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw.to_vec());
    }
    gunzip(raw)
}

fn gunzip(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    GzDecoder::new(raw)
        .take(MAX_DECODED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("does not decompress (gzip): {e}"))?;
    if out.len() as u64 > MAX_DECODED_BYTES {
        return Err(format!(
            "decompresses to more than {MAX_DECODED_BYTES} bytes; refusing it"
        ));
    }
    Ok(out)
}

fn looks_like_mime(text: &str) -> bool {
    let head = text.trim_start();
    let head = head.get(..64).unwrap_or(head).to_ascii_lowercase();
    head.starts_with("content-type:") || head.starts_with("mime-version:")
}

/// The multipart message's kops script, and a description of its other parts.
fn script_part(text: &str) -> Result<(String, Vec<String>), String> {
    let mail = mailparse::parse_mail(text.as_bytes())
        .map_err(|e| format!("a MIME message that does not parse: {e}"))?;
    let mut leaves = Vec::new();
    collect_leaves(&mail, &mut leaves);
    let mut scripts = Vec::new();
    let mut others = Vec::new();
    for part in leaves {
        let name = part
            .get_content_disposition()
            .params
            .get("filename")
            .cloned()
            .unwrap_or_else(|| part.ctype.mimetype.clone());
        let body = part
            .get_body_raw()
            .map_err(|e| format!("part {name}: does not decode: {e}"))?;
        let body = gunzip_if_compressed(&body).map_err(|e| format!("part {name}: {e}"))?;
        let body = String::from_utf8_lossy(&body).into_owned();
        if part
            .ctype
            .mimetype
            .eq_ignore_ascii_case("text/x-shellscript")
            && body.contains("NODEUP_URL_")
        {
            scripts.push(body);
        } else {
            others.push(format!("{name} ({})", part.ctype.mimetype));
        }
    }
    match scripts.len() {
        1 => Ok((scripts.remove(0), others)),
        0 => Err(format!(
            "a MIME multipart message without kops's nodeup script (a text/x-shellscript part that downloads nodeup); its parts: {}",
            if others.is_empty() {
                "none".to_owned()
            } else {
                others.join(", ")
            }
        )),
        n => Err(format!(
            "a MIME multipart message with {n} nodeup scripts; kops writes one"
        )),
    }
}

fn collect_leaves<'a>(
    part: &'a mailparse::ParsedMail<'a>,
    out: &mut Vec<&'a mailparse::ParsedMail<'a>>,
) {
    if part.subparts.is_empty() {
        out.push(part);
    } else {
        for sub in &part.subparts {
            collect_leaves(sub, out);
        }
    }
}

/// Reads the script. Everything it needs must be there, in kops's order: a script cut
/// short (an upload limit, a bad copy) is refused rather than half understood.
fn from_script(script: &str) -> Result<KopsUserData, String> {
    if !script.starts_with("#!") {
        return Err("not a script (kops's user data starts with #!/bin/bash)".to_owned());
    }
    if !script.contains("NODEUP_URL_") {
        return Err(
            "a script, but not kops's: it does not download nodeup (no NODEUP_URL_*)".to_owned(),
        );
    }
    let lines: Vec<&str> = script.lines().collect();
    let mut environment = BTreeMap::new();
    let mut urls: BTreeMap<String, String> = BTreeMap::new();
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    let mut early_sysctls = Vec::new();
    let mut proxy = ProxyLines::default();
    let mut kube_env: Option<(String, KubeEnvForm)> = None;
    let mut ran = false;
    let mut done = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if let Some(rest) = line.strip_prefix("NODEUP_URL_") {
            let (arch, value) = rest
                .split_once('=')
                .ok_or_else(|| at(i, "a NODEUP_URL_ line without ="))?;
            urls.insert(arch.to_ascii_lowercase(), value.to_owned());
        } else if let Some(rest) = line.strip_prefix("NODEUP_HASH_") {
            let (arch, value) = rest
                .split_once('=')
                .ok_or_else(|| at(i, "a NODEUP_HASH_ line without ="))?;
            hashes.insert(arch.to_ascii_lowercase(), value.to_owned());
        } else if let Some(rest) = line.strip_prefix("export ") {
            if let Some((name, value)) = rest.split_once('=') {
                environment.insert(name.to_owned(), unquote(value));
            }
        } else if let Some(rest) = trimmed.strip_prefix("sysctl -w ") {
            let setting = rest.trim_end_matches("|| true").trim();
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| at(i, "a sysctl -w line without ="))?;
            early_sysctls.push((key.to_owned(), unquote(value)));
        } else if let Some(rest) = trimmed.strip_prefix("echo \"http_proxy=") {
            proxy.http = Some(rest.trim_end_matches('"').to_owned());
        } else if let Some(rest) = trimmed.strip_prefix("echo \"no_proxy=") {
            proxy.no_proxy = Some(rest.trim_end_matches('"').to_owned());
        } else if line == KUBE_ENV_HEREDOC {
            let end = lines[i + 1..]
                .iter()
                .position(|l| *l == KUBE_ENV_END)
                .ok_or_else(|| {
                    at(
                        i,
                        "the kube_env heredoc never ends (no __EOF_KUBE_ENV line): the user data is truncated",
                    )
                })?;
            let mut text = lines[i + 1..i + 1 + end].join("\n");
            text.push('\n');
            kube_env = Some((text, KubeEnvForm::Heredoc));
            i += end + 1;
        } else if let Some(rest) = line
            .strip_prefix(KUBE_ENV_COMPRESSED_PREFIX)
            .and_then(|r| r.strip_suffix(KUBE_ENV_COMPRESSED_SUFFIX))
        {
            let gz = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|e| at(i, &format!("the compressed kube_env is not base64: {e}")))?;
            let bytes = gunzip(&gz).map_err(|e| at(i, &format!("the compressed kube_env {e}")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| at(i, "the compressed kube_env is not UTF-8 text"))?;
            kube_env = Some((text, KubeEnvForm::Compressed));
        } else if line.contains("conf/kube_env.yaml") && !line.contains("--conf=") {
            return Err(at(
                i,
                "writes kube_env.yaml in a way kops does not (neither its heredoc nor its base64 | gzip line)",
            ));
        } else if trimmed == RUN_MARKER && kube_env.is_some() {
            ran = true;
        } else if trimmed == DONE_MARKER && ran {
            done = true;
        }
        i += 1;
    }
    let Some((kube_env, form)) = kube_env else {
        return Err(
            "kops's script, but it never writes kube_env.yaml: the user data is truncated or edited"
                .to_owned(),
        );
    };
    if !done {
        return Err(format!(
            "kops's script ends before it runs nodeup (no `{RUN_MARKER}` then `{DONE_MARKER}` after kube_env): the user data is truncated"
        ));
    }
    let mut nodeup = BTreeMap::new();
    for (arch, url) in urls {
        let Some(sha256) = hashes.remove(&arch) else {
            return Err(format!(
                "NODEUP_URL_{} has no NODEUP_HASH_{}",
                arch.to_uppercase(),
                arch.to_uppercase()
            ));
        };
        nodeup.insert(
            arch,
            NodeupBinary {
                urls: url.split(',').map(str::to_owned).collect(),
                sha256,
            },
        );
    }
    let proxy = match (proxy.http, proxy.no_proxy) {
        (Some(http_proxy), no_proxy) => Some(EgressProxy {
            http_proxy,
            no_proxy: no_proxy
                .map(|n| {
                    n.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        }),
        (None, _) => None,
    };
    Ok(KopsUserData {
        kube_env,
        form,
        multipart: false,
        other_parts: Vec::new(),
        nodeup,
        environment,
        proxy,
        early_sysctls,
    })
}

#[derive(Default)]
struct ProxyLines {
    http: Option<String>,
    no_proxy: Option<String>,
}

fn at(index: usize, what: &str) -> String {
    format!("script line {}: {what}", index + 1)
}

fn unquote(value: &str) -> String {
    let v = value.trim();
    for quote in ['\'', '"'] {
        if let Some(inner) = v.strip_prefix(quote).and_then(|r| r.strip_suffix(quote)) {
            return inner.to_owned();
        }
    }
    v.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    const KUBE_ENV: &str = "CloudProvider: aws\nClusterName: a.example.com\n";

    fn script(kube_env_lines: &str) -> String {
        format!(
            "#!/bin/bash
set -o errexit

NODEUP_URL_AMD64=https://a.example/nodeup,https://b.example/nodeup
NODEUP_HASH_AMD64=aaaa
NODEUP_URL_ARM64=https://a.example/arm/nodeup
NODEUP_HASH_ARM64=bbbb

export AWS_REGION=us-test-1

sysctl -w net.core.rmem_max=16777216 || true
sysctl -w net.ipv4.tcp_rmem='4096 87380 16777216' || true

function download-release() {{
  ( cd ${{INSTALL_DIR}}/bin; ./nodeup --install-systemd-unit --conf=${{INSTALL_DIR}}/conf/kube_env.yaml --v=8  )
}}

echo \"== nodeup node config starting ==\"
ensure-install-dir

{kube_env_lines}
download-release
echo \"== nodeup node config done ==\"
"
        )
    }

    fn heredoc() -> String {
        script(&format!("{KUBE_ENV_HEREDOC}\n{KUBE_ENV}\n{KUBE_ENV_END}\n"))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn heredoc_form() {
        let data = parse("user-data", heredoc().as_bytes()).unwrap();
        assert_eq!(data.form, KubeEnvForm::Heredoc);
        assert_eq!(data.kube_env, format!("{KUBE_ENV}\n"));
        assert_eq!(data.nodeup["amd64"].urls.len(), 2);
        assert_eq!(data.nodeup["arm64"].sha256, "bbbb");
        assert_eq!(data.environment["AWS_REGION"], "us-test-1");
        assert_eq!(
            data.early_sysctls[1],
            (
                "net.ipv4.tcp_rmem".to_owned(),
                "4096 87380 16777216".to_owned()
            )
        );
        assert!(!data.multipart);
        assert!(is_kops(heredoc().as_bytes()));
        assert!(!is_kops(
            b"apiVersion: nodewright.io/v1alpha1\nkind: BootConfig\n"
        ));
    }

    #[test]
    fn compressed_form_and_gzipped_user_data() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(gzip(KUBE_ENV.as_bytes()));
        let text = script(&format!(
            "{KUBE_ENV_COMPRESSED_PREFIX}{b64}{KUBE_ENV_COMPRESSED_SUFFIX}"
        ));
        let data = parse("user-data", &gzip(text.as_bytes())).unwrap();
        assert_eq!(data.form, KubeEnvForm::Compressed);
        assert_eq!(data.kube_env, KUBE_ENV);
    }

    #[test]
    fn multipart_form_keeps_the_other_parts_out() {
        let message = format!(
            "Content-Type: multipart/mixed; boundary=\"MIMEBOUNDARY\"\r\nMIME-Version: 1.0\r\n\r\n\
--MIMEBOUNDARY\r\nContent-Disposition: attachment; filename=\"nodeup.sh\"\r\nContent-Transfer-Encoding: 7bit\r\nContent-Type: text/x-shellscript\r\nMime-Version: 1.0\r\n\r\n{}\r\n\
--MIMEBOUNDARY\r\nContent-Disposition: attachment; filename=\"myscript.sh\"\r\nContent-Type: text/x-shellscript\r\n\r\n#!/bin/sh\necho hi\r\n--MIMEBOUNDARY--\r\n",
            heredoc()
        );
        let data = parse("user-data", message.as_bytes()).unwrap();
        assert!(data.multipart);
        assert_eq!(data.other_parts, ["myscript.sh (text/x-shellscript)"]);
        assert_eq!(data.kube_env, format!("{KUBE_ENV}\n"));
    }

    #[test]
    fn truncated_and_foreign_user_data_is_refused_with_the_reason() {
        let full = heredoc();
        // Cut inside the heredoc.
        let cut = &full[..full.rfind(KUBE_ENV_END).unwrap()];
        let err = parse("user-data", cut.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("user-data") && err.contains("never ends") && err.contains("truncated"),
            "{err}"
        );
        // Cut after kube_env, before nodeup runs.
        let cut = &full[..full.find("download-release\necho").unwrap()];
        let err = parse("user-data", cut.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("ends before it runs nodeup"), "{err}");
        // Not kops's.
        let err = parse("user-data", b"#!/bin/bash\necho hello\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not kops's"), "{err}");
        let err = parse("user-data", b"").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        // A multipart message without the script (kops's bastions).
        let message = "Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n--B\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho hi\n--B--\n";
        let err = parse("user-data", message.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("without kops's nodeup script"), "{err}");
        // A compressed kube_env that is not base64.
        let text = script(&format!(
            "{KUBE_ENV_COMPRESSED_PREFIX}@@@{KUBE_ENV_COMPRESSED_SUFFIX}"
        ));
        let err = parse("user-data", text.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("not base64") && err.contains("script line 21"),
            "{err}"
        );
    }
}
