//! The node's credentials as desired files: certificates, keys and CA bundles issued or
//! fetched at run time (the control plane's from the state store's CAs, a worker's
//! from controller-shim), and the ones a node already holds. They join the desired
//! state like any file, so the engine writes them atomically with their modes, records
//! them, and `plan` shows them; a file holding a key is secret (never logged, its digest
//! never shown).

use super::ModelError;
use super::builder::fixed_path;
use super::desired::{Content, DesiredFile, DesiredState, FileKind, Ownership};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFile {
    pub file: DesiredFile,
    pub origin: Origin,
}

/// Where a credential file comes from, which says how it meets the spec's own files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Issued or fetched by this run, by `by` (`controlPlane.pki`, `controller-shim`):
    /// the spec must not declare the path too.
    Issued { by: String },
    /// A CA certificate that the spec may also carry (`cluster.caCertificate`); whoever
    /// produced it has checked both hold the same certificates. This copy is written.
    Replaces { by: String },
    /// As the node holds it (from an earlier run): declared only where nothing else
    /// is, so that a run that gets no new credentials keeps them instead of removing
    /// them.
    Kept,
}

impl CredentialFile {
    /// A root-owned file at `path`; `secret` when it holds a key. `why` says, for
    /// `plan`, why it is (re-)issued; `None` when it is only written or kept.
    pub fn new(
        path: &str,
        text: impl Into<Vec<u8>>,
        mode: u32,
        secret: bool,
        why: Option<String>,
        origin: Origin,
    ) -> Self {
        Self {
            file: DesiredFile {
                path: fixed_path(path),
                content: Content::new(text),
                ownership: Ownership::root(mode),
                kind: FileKind::Plain,
                secret,
                issued: why,
            },
            origin,
        }
    }
}

/// Adds `credentials` to the rendered state, in their order.
pub fn add(state: &mut DesiredState, credentials: Vec<CredentialFile>) -> Result<(), ModelError> {
    for credential in credentials {
        let path = credential.file.path.as_str();
        let declared = state.file(path).is_some();
        match &credential.origin {
            Origin::Issued { by } if declared => {
                return Err(ModelError::Credential {
                    path: path.to_owned(),
                    by: by.clone(),
                });
            }
            Origin::Replaces { .. } if declared => state.files.retain(|f| f.path.as_str() != path),
            Origin::Kept if declared => continue,
            _ => {}
        }
        state.files.push(credential.file);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(path: &str) -> DesiredState {
        let mut state = DesiredState::default();
        state
            .files
            .push(CredentialFile::new(path, "spec's", 0o644, false, None, Origin::Kept).file);
        state
    }

    fn issued(path: &str) -> CredentialFile {
        CredentialFile::new(
            path,
            "issued",
            0o600,
            true,
            Some("missing".into()),
            Origin::Issued {
                by: "controller-shim".into(),
            },
        )
    }

    #[test]
    fn an_issued_file_the_spec_also_declares_is_refused() {
        let mut state = state_with("/etc/kubernetes/pki/apiserver.crt");
        let error = add(
            &mut state,
            vec![issued("/etc/kubernetes/pki/apiserver.crt")],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "/etc/kubernetes/pki/apiserver.crt is issued by controller-shim, so the spec must not declare it"
        );
    }

    #[test]
    fn a_ca_replaces_the_specs_copy_and_kept_files_never_override() {
        let ca = "/etc/kubernetes/pki/ca.crt";
        let mut state = state_with(ca);
        let replacing = CredentialFile::new(
            ca,
            "store's",
            0o644,
            false,
            None,
            Origin::Replaces {
                by: "controlPlane.pki".into(),
            },
        );
        let kept = CredentialFile::new(ca, "disk's", 0o644, false, None, Origin::Kept);
        let kept_elsewhere = CredentialFile::new("/k", "disk's", 0o600, true, None, Origin::Kept);
        add(&mut state, vec![replacing, kept, kept_elsewhere]).unwrap();
        let files: Vec<(&str, &[u8])> = state
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.content.bytes()))
            .collect();
        assert_eq!(files, [(ca, &b"store's"[..]), ("/k", &b"disk's"[..])]);
        assert!(state.files[1].secret);
    }
}
