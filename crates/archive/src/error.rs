//! Errors of the archive crate.
//!
//! Rules every error here follows: it says what was being done, to which
//! thing (archive, path, offset), and why it failed; the binary adds what
//! the user can do next. Damage inside an archive is not an `Error` when
//! the work can go on: it is reported per file (see [`crate::Damage`]).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed while doing `what`.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The bytes are not what the format requires.
    #[error("{0}")]
    Format(String),
    /// The caller asked for something unsafe or impossible.
    #[error("{0}")]
    Refused(String),
    /// An encrypted archive, and no key, or a wrong one, to open it.
    #[error("{0}")]
    Key(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an `io::Error` with what was being done.
pub(crate) fn ctx<E: Into<io::Error>>(what: impl FnOnce() -> String) -> impl FnOnce(E) -> Error {
    move |e| Error::Io { what: what(), source: e.into() }
}

impl Error {
    /// True when the error is the disk being full (ENOSPC or EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)),
            _ => false,
        }
    }
}
