//! The error of this crate: what was being done, and why it failed.

use std::error::Error as StdError;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A step failed for a reason below it (a file, a parser, rustls).
    #[error("{what}: {source}")]
    Failed {
        what: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Input that cannot be used as it is.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = TlsError> = std::result::Result<T, E>;

impl TlsError {
    pub(crate) fn invalid(message: impl Into<String>) -> TlsError {
        TlsError::Invalid(message.into())
    }
}

/// Names the step that failed (in the manner of `anyhow::Context`).
pub(crate) trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: StdError + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| TlsError::Failed {
            what: what.to_string(),
            source: Box::new(e),
        })
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| TlsError::Failed {
            what: what(),
            source: Box::new(e),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: &str) -> Result<T> {
        self.ok_or_else(|| TlsError::invalid(what))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| TlsError::Invalid(what()))
    }
}

macro_rules! from_source {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl From<$t> for TlsError {
            fn from(e: $t) -> TlsError {
                TlsError::Failed { what: $what.into(), source: Box::new(e) }
            }
        }
    )*};
}

from_source! {
    std::io::Error => "I/O",
    rustls::Error => "TLS",
    rcgen::Error => "certificate generation",
    rustls::pki_types::pem::Error => "PEM",
}
