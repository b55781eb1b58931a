//! What a failure is, told by the error itself: its kind (which decides the exit code,
//! and whether waiting longer could help) and the runbook section that explains it.
//! Every error type that crosses a module answers from its own variants; nothing is
//! decided from message text.

use crate::runbook::Topic;

/// The classes of failure the command line tells apart (`nodewright --help`, "Exit
/// codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Input refused: user data, boot config, node spec, facts (parse, validation,
    /// digest), or a source that answered "no" for good.
    InvalidInput,
    /// A source (IMDS, the state store, controller-shim) did not answer usefully
    /// before the deadline: trying later may work.
    Unreachable,
    /// A change failed; the node is not converged.
    ChangeFailed,
    /// Nothing recorded to work from (no run, no kept spec).
    NoState,
    /// Another run holds the run lock.
    Busy,
    /// The command was used wrongly (a bad address to listen on, say).
    Usage,
    /// Anything else: a bug, or the machine itself failing.
    Internal,
}

/// An error that knows its class.
pub trait Classified {
    fn kind(&self) -> ErrorKind;
    /// The runbook section for it, when one helps.
    fn topic(&self) -> Option<Topic> {
        None
    }
}

/// An error and its causes on one line (shared with controller-shim).
pub use nodewright_shim::support::error_chain as chain;

/// A TLS certificate refused for its validity dates: on a fresh instance that is
/// almost always the clock (a certificate "not yet valid"), else a certificate that
/// has run out. Found by type in an error's causes (rustls's error, also when an I/O
/// error carries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsDates {
    NotYetValid,
    Expired,
}

impl TlsDates {
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(tls) = error.downcast_ref::<rustls::Error>() {
                return Self::of(tls);
            }
            // An I/O error hands on its inner error's causes, not the inner error.
            if let Some(inner) = error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                && let Some(found) = Self::find(inner)
            {
                return Some(found);
            }
            next = error.source();
        }
        None
    }

    fn of(error: &rustls::Error) -> Option<Self> {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
                Some(Self::NotYetValid)
            }
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                Some(Self::Expired)
            }
            _ => None,
        }
    }

    pub fn topic(self) -> Topic {
        match self {
            Self::NotYetValid => Topic::ClockSkew,
            Self::Expired => Topic::CertificateExpiry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_dates_are_found_through_io_errors() {
        let not_yet = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidYet,
        ));
        let wrapped = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, not_yet);
        assert_eq!(TlsDates::find(&wrapped), Some(TlsDates::NotYetValid));
        assert_eq!(TlsDates::NotYetValid.topic(), Topic::ClockSkew);
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(TlsDates::find(&expired), Some(TlsDates::Expired));
        let other = std::io::Error::other("connection refused");
        assert_eq!(TlsDates::find(&other), None);
    }
}
