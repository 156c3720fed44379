//! One module per command; `run` dispatches.

pub mod archive;
mod at_reboot;
pub mod backup;
mod browse;
mod chroot;
mod init;
mod ls;
mod media;
mod mount;
mod push;
mod recover;
mod remote;
mod restore;
mod schedule;
mod status;
mod umount;
mod verify;

use crate::cli::{ArchiveCommand, Cli, Command, MediaCommand, RemoteCommand};
use crate::Outcome;

pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let config = crate::config::path(cli.config.as_deref());
    match cli.command {
        Command::Init(a) => init::run(&config, a),
        Command::Status(a) => status::run(&config, a),
        Command::Chroot(a) => chroot::run(&config, a),
        Command::Media(MediaCommand::Prepare(a)) => media::prepare(&config, a),
        Command::Media(MediaCommand::Adopt(a)) => media::adopt(&config, a),
        Command::Media(MediaCommand::Encrypt(a)) => media::encrypt(&config, a),
        Command::Media(MediaCommand::AddKey(a)) => media::change_keys(&config, a, true),
        Command::Media(MediaCommand::RemoveKey(a)) => media::change_keys(&config, a, false),
        Command::Media(MediaCommand::Trust(a)) => media::trust(&config, a),
        Command::Media(MediaCommand::Rescue(a)) => media::rescue(&config, a),
        Command::Backup(a) if a.at_reboot => at_reboot::arm(&config, &a),
        Command::Backup(a) => backup::run(&config, a),
        Command::Schedule(a) => schedule::run(&config, a),
        Command::AtRebootJob { step } if step == "run" => at_reboot::run(&config),
        Command::AtRebootJob { .. } => at_reboot::finish(&config),
        Command::Verify(a) => verify::run(&config, a),
        Command::Ls(a) => ls::run(&config, a),
        Command::Remote(RemoteCommand::Add(a)) => remote::add(&config, a),
        Command::Remote(RemoteCommand::List(a)) => remote::list(&config, a),
        Command::Remote(RemoteCommand::Remove { name }) => remote::remove(&config, &name),
        Command::Remote(RemoteCommand::Verify(a)) => remote::verify(&config, a),
        Command::Push(a) => push::run(&config, a),
        Command::Browse(a) => browse::run(&config, a),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "crossback", &mut std::io::stdout());
            Ok(Outcome::Ok)
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
            Ok(Outcome::Ok)
        }
        Command::Restore(a) => restore::restore(&config, a),
        Command::Recover(a) => recover::run(&config, a),
        Command::Mount(a) => mount::mount(&config, a),
        Command::Umount(a) => umount::umount(&config, a),
        Command::Archive(cmd) => match cmd {
            ArchiveCommand::Create(a) => archive::create(a),
            ArchiveCommand::Extract(a) => archive::extract(a),
            ArchiveCommand::Ls(a) => archive::ls(a),
            ArchiveCommand::Verify(a) => archive::verify(a),
        },
    }
}
