//! crossback's logic: finding the systems and the media, the slot's layout
//! and its one writer, backing up, rotating, verifying, restoring and the
//! off-site copies. The `crossback` binary is a thin front: it parses the
//! command line into [`cli::Cli`] and hands it to [`run`].

mod backups;
mod browse;
pub mod cli;
mod commands;
pub mod config;
mod duplicity;
pub mod error;
mod keys;
pub mod layout;
mod local;
mod machine;
mod media;
mod notify;
mod offline_rules;
pub mod output;
mod remote;
mod slots;
mod stack;
mod units;

use std::process::ExitCode;

/// How a command ended; the numbers are documented in docs/reference.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done.
    Ok,
    /// Done, but some source files could not be read (listed).
    Partial,
    /// Damaged data found (listed); what was undamaged was restored.
    Damaged,
    /// `verify --against`: the archive and the tree differ (listed).
    Differs,
    /// The exit code of a command crossback ran (chroot).
    Child(u8),
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Partial => 3,
            Outcome::Damaged => 4,
            Outcome::Differs => 5,
            Outcome::Child(c) => c,
        }
    }
}

/// Runs one command and turns its end into the exit code and the message
/// the user sees.
pub fn run(cli: cli::Cli) -> ExitCode {
    keys::set_unlock(keys::Unlock { identity: cli.identity.clone(), passphrase_file: cli.passphrase_file.clone() });
    stack::open::set_key_files(cli.key_file.clone());
    match commands::run(cli) {
        Ok(outcome) => ExitCode::from(outcome.code()),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let kind = error::kind_of(&err);
            let shown = output::printable(&output::chain(&err));
            match kind {
                Some(kind) => eprintln!("crossback: error[{}]: {shown}", kind.name()),
                None => eprintln!("crossback: error: {shown}"),
            }
            // Bad usage is 2, as for the options clap refuses.
            ExitCode::from(if kind == Some(error::Refusal::Usage) { 2 } else { 1 })
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
