//! Errors of the host crate: each says what was being done, to which
//! device or path, and why; the binary adds what the user can do next.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A command crossback runs (blkid, mount helpers) failed.
    #[error("{0}")]
    Command(String),
    /// A program run by [`crate::tool::Tool`] could not start or ended badly.
    #[error("`{program}{}` {}: {stderr}", args.iter().map(|a| format!(" {a}")).collect::<String>(), ended(*status))]
    Tool {
        program: String,
        args: Vec<String>,
        /// Its exit code; `None`: it could not be started, or a signal ended it.
        status: Option<i32>,
        /// The end of what it wrote to standard error.
        stderr: String,
    },
    /// Something on the machine is not as it must be.
    #[error("{0}")]
    Refused(String),
    /// A tool's report (cryptsetup's, lvm2's JSON) does not read as expected.
    #[error("{0}")]
    Parse(String),
    /// Another process holds a lock crossback needs.
    #[error("{name} is in use by {holder}: wait until it ends, then run again")]
    Locked { name: String, holder: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn ended(status: Option<i32>) -> String {
    match status {
        Some(c) => format!("failed (exit code {c})"),
        None => "did not complete".to_string(),
    }
}

pub(crate) fn ctx<E: Into<std::io::Error>>(what: impl FnOnce() -> String) -> impl FnOnce(E) -> Error {
    move |e| Error::Io { what: what(), source: e.into() }
}
