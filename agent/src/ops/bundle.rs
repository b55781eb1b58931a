//! The support bundle: one tar.gz with what someone off the node needs to see what
//! happened, with secrets redacted. Every text goes through the [`Redactor`], which
//! knows the kept spec's secrets; what could not be collected is said in README.txt.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::redact::Redactor;
use super::status::{self, NodeStatus};
use crate::engine::State;
use crate::engine::applied::AppliedSpec;
use crate::engine::verify::{self, Check};
use crate::host::{Host, diag, fs as hostfs};

/// How many journal lines per unit.
pub const JOURNAL_LINES: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("writing the support bundle {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What went into a bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub path: PathBuf,
    pub files: Vec<String>,
    /// What could not be collected, and why.
    pub missing: Vec<String>,
}

/// The default file name: `nodewright-support-<host>-<UTC time>.tar.gz`.
pub fn default_name(host: &Host) -> String {
    let who = AppliedSpec::load(&host.state_dir())
        .map(|kept| kept.facts.instance.instance_id)
        .unwrap_or_else(|_| diag::hostname());
    let now = time::OffsetDateTime::from(SystemTime::now());
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "now".to_owned());
    format!("nodewright-support-{who}-{stamp}.tar.gz")
}

/// Collects everything and writes the bundle to `output` (mode 0600, atomically).
pub async fn create(host: &Host, output: &Path) -> Result<Bundle, BundleError> {
    let mut missing: Vec<String> = Vec::new();
    let state = State::load(&host.state_dir()).unwrap_or_else(|e| {
        missing.push(format!("state.json: {e}"));
        State::default()
    });
    let kept = AppliedSpec::load(&host.state_dir());
    let spec = kept
        .as_ref()
        .ok()
        .and_then(|k| k.node_spec(&host.state_dir()).ok());
    let redactor = spec.as_ref().map(Redactor::for_spec).unwrap_or_default();
    let mut files: Vec<(String, String)> = Vec::new();

    let status = status::gather(host, &state).await;
    files.push(("status.txt".into(), status::render_text(&status)));
    files.push(("status.json".into(), json(&status)));
    if let Some(run) = &state.last_run {
        files.push((
            "timeline.txt".into(),
            format!(
                "{} {} at {}\n{}",
                run.command,
                run.started_at,
                run.finished_at,
                crate::engine::timeline::render(&run.timeline)
            ),
        ));
    } else {
        missing.push("timeline.txt: no run is recorded".into());
    }
    files.push((
        "state.json".into(),
        json(&state_without_secret_digests(&state)),
    ));

    match (&kept, &spec) {
        (Ok(kept), Some(spec)) => {
            let yaml = yaml_serde::to_string(&redactor.spec(spec))
                .unwrap_or_else(|e| format!("(could not render the spec: {e})\n"));
            files.push((
                "spec.yaml".into(),
                format!(
                    "# The node spec kept on the node, with secrets redacted.\n# {} sha256:{} kept at {}\n{yaml}",
                    kept.spec_url, kept.spec_sha256, kept.saved_at
                ),
            ));
            files.push(("facts.json".into(), json(&kept.facts)));
        }
        (Err(e), _) => missing.push(format!("spec.yaml: {e}")),
        (Ok(_), None) => missing.push("spec.yaml: the kept spec no longer parses".into()),
    }

    let verified = verify::verify(host, &state, Check::Rehash);
    let mut text = format!(
        "Re-hashed {} managed paths: {} differ from their record.\n",
        verified.checked,
        verified.drift.len()
    );
    for drift in &verified.drift {
        text.push_str(&format!("  - {}\n", drift.describe()));
    }
    files.push(("verify.txt".into(), text));

    let units: Vec<String> = status.services.iter().map(|s| s.unit.clone()).collect();
    files.push(("units.txt".into(), units_text(host, &status, &units).await));
    journal(host, &units, &mut files, &mut missing).await;
    files.push(("disk.txt".into(), disk_text(host).await));
    files.push(("system.txt".into(), system_text(host).await));

    let mut names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    names.insert(0, "README.txt".into());
    files.insert(0, ("README.txt".into(), readme(&names, &missing)));
    let files: Vec<(String, String)> = files
        .into_iter()
        .map(|(name, text)| (name, redactor.text(&text)))
        .collect();
    write(output, &files).map_err(|source| BundleError::Write {
        path: output.to_owned(),
        source,
    })?;
    Ok(Bundle {
        path: output.to_owned(),
        files: names,
        missing,
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("(not serializable: {e})"))
}

/// A secret file's digest can confirm a guess of its content: leave it out.
fn state_without_secret_digests(state: &State) -> State {
    let mut state = state.clone();
    for record in state.files.values_mut().filter(|r| r.secret) {
        record.digest = "<redacted>".to_owned();
        record.stat = None;
    }
    state
}

async fn units_text(host: &Host, status: &NodeStatus, units: &[String]) -> String {
    let mut text = String::new();
    for service in &status.services {
        text.push_str(&format!(
            "{}: wanted {}, {} ({})\n",
            service.unit, service.wanted, service.state, service.source
        ));
    }
    match host.skip_reason() {
        None if !units.is_empty() => {
            let mut args = vec!["status", "--no-pager", "--full", "--lines=0", "--"];
            args.extend(units.iter().map(String::as_str));
            text.push('\n');
            text.push_str(&diag::capture("systemctl", &args).await);
            text.push('\n');
            text.push_str(
                &diag::capture("systemctl", &["list-units", "--failed", "--no-pager"]).await,
            );
        }
        None => {}
        Some(reason) => text.push_str(&format!(
            "\n(systemctl not asked: {reason}; the states above are nodewright's records)\n"
        )),
    }
    text
}

/// Recent journal lines of nodewright itself and of each of its units: from the
/// running journal on a live host, from the root's journal files otherwise.
async fn journal(
    host: &Host,
    units: &[String],
    files: &mut Vec<(String, String)>,
    missing: &mut Vec<String>,
) {
    let journal_dir = host.root().join("var/log/journal");
    let source: Vec<String> = match host.skip_reason() {
        None => Vec::new(),
        Some(_) if journal_dir.is_dir() => {
            vec!["--directory".to_owned(), journal_dir.display().to_string()]
        }
        Some(reason) => {
            missing.push(format!(
                "journal/: no journal to read ({reason}, and {} does not exist)",
                journal_dir.display()
            ));
            return;
        }
    };
    if !diag::on_path("journalctl") {
        missing.push("journal/: journalctl is not installed".into());
        return;
    }
    let lines = JOURNAL_LINES.to_string();
    let mut queries: Vec<(String, Vec<String>)> = vec![(
        "journal/nodewright.txt".into(),
        vec!["-t".into(), "nodewright".into()],
    )];
    for unit in units {
        queries.push((
            format!("journal/{unit}.txt"),
            vec!["-u".into(), unit.clone()],
        ));
    }
    for (name, filter) in queries {
        let mut args: Vec<&str> = vec!["--no-pager", "-o", "short-iso", "-n", &lines];
        args.extend(source.iter().map(String::as_str));
        args.extend(filter.iter().map(String::as_str));
        files.push((name, diag::capture("journalctl", &args).await));
    }
}

async fn disk_text(host: &Host) -> String {
    let root = host.root().display().to_string();
    let mut text = String::new();
    text.push_str(&diag::capture("df", &["-hT", &root]).await);
    text.push('\n');
    text.push_str(&diag::capture("df", &["-hT"]).await);
    text.push('\n');
    text.push_str(
        &diag::capture(
            "lsblk",
            &["-o", "NAME,SIZE,TYPE,FSTYPE,MOUNTPOINTS,SERIAL,LABEL"],
        )
        .await,
    );
    text.push('\n');
    text.push_str(&diag::capture("findmnt", &["-l", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS"]).await);
    text
}

async fn system_text(host: &Host) -> String {
    let mut text = format!(
        "nodewright {}\nhost: {}\ncollected at: {}\n\n",
        crate::VERSION,
        diag::hostname(),
        crate::clock::rfc3339(SystemTime::now())
    );
    text.push_str(&diag::capture("uname", &["-a"]).await);
    text.push_str("\n$ cat /proc/uptime\n");
    text.push_str(&diag::read_text(Path::new("/proc/uptime")));
    text.push_str(&format!(
        "\n$ cat {}/etc/os-release\n",
        host.root().display()
    ));
    text.push_str(&diag::read_text(&host.root().join("etc/os-release")));
    if host.skip_reason().is_none() {
        text.push('\n');
        text.push_str(&diag::capture("timedatectl", &["status"]).await);
        text.push('\n');
        text.push_str(&diag::capture("chronyc", &["tracking"]).await);
    }
    text
}

fn readme(names: &[String], missing: &[String]) -> String {
    let mut text = format!(
        "nodewright support bundle (nodewright {})\n\n\
         Secret files' contents, values whose key looks like a password, token, key or\n\
         credential, private keys, URL passwords and bearer tokens are replaced by\n\
         <redacted>. Check the files before sharing them anyway.\n\nFiles:\n",
        crate::VERSION
    );
    for name in names {
        text.push_str(&format!("  {name}\n"));
    }
    if missing.is_empty() {
        text.push_str("\nEverything was collected.\n");
    } else {
        text.push_str("\nNot collected:\n");
        for why in missing {
            text.push_str(&format!("  {why}\n"));
        }
    }
    text
}

fn write(output: &Path, files: &[(String, String)]) -> std::io::Result<()> {
    let mut archive = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mtime = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for (name, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(
            &mut header,
            format!("nodewright-support/{name}"),
            text.as_bytes(),
        )?;
    }
    let mut gz = archive.into_inner()?;
    gz.flush()?;
    let bytes = gz.finish()?;
    let (uid, gid) = hostfs::current_ids();
    hostfs::write_atomic(output, &bytes, 0o600, uid, gid)
}
