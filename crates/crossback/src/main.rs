//! crossback: offline, full, verifiable backups of the Linux systems on one
//! machine. This binary is thin: `cli` says what the user typed, the
//! `commands` do the work with the library crates, `output` prints.

mod backups;
mod browse;
mod cli;
mod commands;
mod config;
mod duplicity;
mod error;
mod keys;
mod layering;
mod layout;
mod local;
mod machine;
mod media;
mod notify;
mod offline;
mod output;
mod remote;
mod slots;
mod units;
mod unlock;

use std::process::ExitCode;

use clap::Parser;

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

fn main() -> ExitCode {
    // A child crossback started to look inside one filesystem in a private
    // mount namespace (see crossback_host::inspect): before any thread starts.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(crossback_host::inspect::CHILD_ARG) {
        return ExitCode::from(crossback_host::inspect::serve(&args, layout::inspect_slot) as u8);
    }
    if args.get(1).map(String::as_str) == Some(crossback_host::ns::GUARD_ARG) {
        return ExitCode::from(crossback_host::ns::serve_guard(&args) as u8);
    }
    crossback_host::ns::quiet_on_closed_pipe();
    let cli = cli::Cli::parse();
    keys::set_unlock(keys::Unlock { identity: cli.identity.clone(), passphrase_file: cli.passphrase_file.clone() });
    unlock::set_key_files(cli.key_file.clone());
    let code = run(cli);
    // For tests and benchmarks: what the kernel counted this process reading.
    if std::env::var_os("CROSSBACK_REPORT_IO").is_some() {
        if let Ok(io) = std::fs::read_to_string("/proc/self/io") {
            eprintln!("crossback-io: {}", io.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    code
}

fn run(cli: cli::Cli) -> ExitCode {
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
