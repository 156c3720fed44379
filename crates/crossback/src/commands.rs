//! One module per command; `run` dispatches.

mod archive;

use crate::cli::{ArchiveCommand, Cli, Command};
use crate::Outcome;

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Archive(cmd) => match cmd {
            ArchiveCommand::Create(a) => archive::create(a),
            ArchiveCommand::Extract(a) => archive::extract(a),
            ArchiveCommand::Ls(a) => archive::ls(a),
            ArchiveCommand::Verify(a) => archive::verify(a),
        },
    }
}
