//! `crossback media …`: the backup media's two slots — prepared
//! (`prepare`), encrypted and their keys changed (`encryption`), or made of an
//! old duplicity disk (`adopt`) — and what the three share: the slots'
//! devices, mounted together.

use std::path::Path;

use anyhow::Context;
use crossback_host::blockdev::Device;
use crossback_host::{ns, offline};

use crate::config::{Config, Sealing};
use crate::error::Refusal;
use crate::keys;
use crate::layout;
use crate::machine::{self, Machine};
use crate::refuse;

mod adopt;
mod encryption;
mod prepare;
mod rescue;

pub use adopt::adopt;
pub use encryption::{change_keys, encrypt, trust};
pub use prepare::prepare;
pub use rescue::{record_on as rescue_record, refresh as refresh_rescue, rescue, LABEL as RESCUE_LABEL};

pub(super) fn device_for(m: &Machine, arg: &str) -> anyhow::Result<Device> {
    if arg.starts_with('/') {
        let p = std::fs::canonicalize(arg).with_context(|| format!("{arg}: no such device"))?;
        let found = m.devices.iter().find(|d| d.path == p).cloned();
        return found.with_context(|| format!("{arg} is not a block device of this machine"));
    }
    m.by_uuid(arg)?.cloned().with_context(|| format!("no filesystem with UUID {arg} is attached (`blkid` lists them)"))
}

/// Both slots of the configured media, mounted writable, the media locked.
pub(super) struct Writable {
    pub(super) slots: Vec<crate::slots::Slot>,
    pub(super) mounted: offline::Mounted,
    pub(super) _lock: crossback_host::lock::Lock,
}

pub(super) fn both_writable(path: &Path, what: &str) -> anyhow::Result<Writable> {
    both(path, what, true)
}

/// Both slots, mounted writable or (`writable` false) read-only.
pub(super) fn both(path: &Path, what: &str, writable: bool) -> anyhow::Result<Writable> {
    machine::require_root(what)?;
    let cfg = Config::load(path)?;
    let Some(media_cfg) = &cfg.media else { refuse!(Refusal::Config, "no backup media in {}: run `crossback media prepare`", path.display()) };
    let lock = crate::slots::lock_media(media_cfg.id.get_ref(), crossback_host::lock::Mode::Exclusive)?;
    let m = Machine::scan(&[])?;
    let devs = crate::slots::find(&m, media_cfg, &[], true)?;
    crossback_host::ns::start_guard()?;
    ns::enter_private()?;
    let scratch = crossback_host::inspect::scratch_dir("crossback-keys")?;
    let access = if writable { crate::slots::Access::Backup } else { crate::slots::Access::Read };
    let (list, mut mounted) = crate::slots::mount(&devs, media_cfg.id.get_ref(), &scratch, access)?;
    if !writable {
        return Ok(Writable { slots: list, mounted, _lock: lock });
    }
    // A key command does not write over markers that disagree with the key
    // this system's configuration names. (A configuration that says plain
    // or nothing does not stop `media encrypt`, which makes the media what
    // it then records, nor a key change, which unlocks the key first.)
    let sealing = media_cfg.sealing();
    if matches!(sealing, Sealing::Encrypted(_)) {
        keys::write_to(&sealing, &list.iter().map(|s| &s.view).collect::<Vec<_>>())?;
    }
    let mut slots = Vec::new();
    for (s, d) in list.into_iter().zip(devs.iter()) {
        slots.push(crate::slots::make_writable(s, d, media_cfg.id.get_ref(), &mut mounted)?);
    }
    Ok(Writable { slots, mounted, _lock: lock })
}

/// A new media key, wrapped by a new passphrase (asked twice, or read
/// from the passphrase file) unless only recipients are given.
pub(super) fn new_encryption(recipients: &[String]) -> anyhow::Result<(layout::Encryption, layout::KeyFiles)> {
    let recipients = keys::parse_recipients(recipients)?;
    let pass = if recipients.is_empty() || keys::passphrase_given() { Some(keys::passphrase("the encrypted media", true)?) } else { None };
    let (enc, files, _) = keys::new_media(pass.as_ref(), &recipients)?;
    Ok((enc, files))
}

/// `dev` may be written over: it does not hold the running system, is part
/// of none of `systems`, and is not mounted.
fn refuse_if_in_use(m: &Machine, systems: &[machine::System], dev: &Device) -> anyhow::Result<()> {
    if m.running_root().is_some_and(|(d, _)| d.path == dev.path) {
        refuse!(Refusal::SystemRunning, "{} holds the running system; nothing was written", dev.path.display());
    }
    if let Some(s) = systems.iter().find(|s| s.uses(&dev.path)) {
        refuse!(Refusal::TargetInUse, "{} is part of system {}; nothing was written", dev.path.display(), s.name);
    }
    if let Some(at) = m.mounted_at(dev) {
        refuse!(Refusal::TargetInUse, "{} is mounted at {at}: unmount it first; nothing was written", dev.path.display());
    }
    Ok(())
}
