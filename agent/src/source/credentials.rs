//! The credentials a node holds from an earlier run: a worker's kubelet certificates
//! from controller-shim. Every converging run declares them as they are on disk (unless
//! it gets new ones), so that a run that gets none (every re-boot, `apply --spec`,
//! `repair`) keeps them rather than removing them as files no longer wanted.
//!
//! The keys are not among them: the worker makes them before it asks (a retry after a
//! lost answer must reuse them, controller-shim recognises a node by its key) and they
//! are never removed, not even by `reset`, so that the node can always ask again.

use std::io;

use super::shim::{CA_BUNDLE, CLIENT_CERT, CLIENT_PEM, SERVING_CERT, SERVING_PEM};
use crate::error::{Classified, ErrorKind};
use crate::host::Host;
use crate::host::fs as hostfs;
use crate::model::{CredentialFile, Origin, fixed_path, kubelet};
use crate::runbook::Topic;
use crate::spec::NodeSpec;

/// The files, with their modes and whether they hold a key.
pub const WORKER: [(&str, u32, bool); 5] = [
    (CLIENT_PEM, 0o600, true),
    (SERVING_PEM, 0o600, true),
    (CLIENT_CERT, 0o644, false),
    (SERVING_CERT, 0o644, false),
    (CA_BUNDLE, 0o644, false),
];

/// The worker credentials present on the node, except those in `fresh` (this run's).
pub fn kept(host: &Host, fresh: &[CredentialFile]) -> io::Result<Vec<CredentialFile>> {
    let mut out = Vec::new();
    for (path, mode, secret) in WORKER {
        if fresh.iter().any(|c| c.file.path.as_str() == path) {
            continue;
        }
        if let Some(bytes) = hostfs::read_if_present(&host.path(&fixed_path(path)))? {
            out.push(CredentialFile::new(
                path,
                bytes,
                mode,
                secret,
                None,
                Origin::Kept,
            ));
        }
    }
    Ok(out)
}

/// A spec that leaves the kubelet without credentials, refused before anything is
/// written: nothing would ever issue the client certificate its kubeconfig names.
#[derive(Debug, thiserror::Error)]
#[error("{spec}: refusing it: {reason}")]
pub struct NoWayIn {
    pub spec: String,
    pub reason: String,
}

impl Classified for NoWayIn {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
    fn topic(&self) -> Option<Topic> {
        Some(Topic::InvalidSpec)
    }
}

/// Refuses a spec whose kubelet gets no client certificate on this path: not from the
/// source (`issued_by_source`: controller-shim), not from the control plane's PKI or
/// TLS bootstrapping (the spec), and not already on the node (`credentials`).
pub fn check_way_in(
    name: &str,
    spec: &NodeSpec,
    issued_by_source: bool,
    credentials: &[CredentialFile],
) -> Result<(), NoWayIn> {
    if issued_by_source
        || credentials
            .iter()
            .any(|c| c.file.path.as_str() == kubelet::CLIENT_CERT)
    {
        return Ok(());
    }
    match spec.kubelet_credentials_problem() {
        None => Ok(()),
        Some(reason) => Err(NoWayIn {
            spec: name.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_present_and_not_fresh_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        for path in [CLIENT_PEM, CA_BUNDLE] {
            let real = host.path(&fixed_path(path));
            std::fs::create_dir_all(real.parent().unwrap()).unwrap();
            std::fs::write(real, format!("{path} on disk")).unwrap();
        }
        let fresh = vec![CredentialFile::new(
            CA_BUNDLE,
            "new",
            0o644,
            false,
            None,
            Origin::Issued {
                by: "controller-shim".into(),
            },
        )];
        let kept = kept(&host, &fresh).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].file.path.as_str(), CLIENT_PEM);
        assert_eq!(kept[0].origin, Origin::Kept);
        assert!(kept[0].file.secret);
        assert_eq!(kept[0].file.ownership.mode.bits(), 0o600);
    }

    #[test]
    fn a_kubelet_with_no_way_in_is_refused_with_the_reason() {
        let worker = crate::model::test_spec("containerd:\n  version: 1.7.27\nkubelet: {}\n");
        let error = check_way_in("s3://b/spec.yaml", &worker, false, &[]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        let text = error.to_string();
        assert!(text.starts_with("s3://b/spec.yaml: refusing it"), "{text}");
        assert!(text.contains("kubelet.tlsBootstrap"), "{text}");
        assert!(text.contains("controller-shim"), "{text}");
        // Through controller-shim, or with a certificate the node holds, it has one.
        check_way_in("s", &worker, true, &[]).unwrap();
        let held = CredentialFile::new(kubelet::CLIENT_CERT, "c", 0o644, false, None, Origin::Kept);
        check_way_in("s", &worker, false, &[held]).unwrap();
        // No kubelet, nothing to refuse.
        check_way_in("s", &crate::model::test_spec(""), false, &[]).unwrap();
    }
}
