//! Finding and mounting the media's two slots (privately: the caller has
//! entered its own mount namespace), with the refusals of R6 and O3.

use std::path::PathBuf;

use anyhow::{bail, Context};
use crossback_host::blockdev::Device;
use crossback_host::offline::{self, FsMount, Mounted};

use crate::config::Media;
use crate::machine::{Machine, System};
use crate::media::{self, SlotContents};

pub const LETTERS: [&str; 2] = ["A", "B"];

pub struct Slot {
    pub letter: &'static str,
    /// Where it is mounted (privately).
    pub root: PathBuf,
    pub contents: SlotContents,
}

impl Slot {
    pub fn dir(&self) -> PathBuf {
        self.root.join(media::DIR)
    }
}

/// Both slot devices, or a refusal that says what is missing or wrong.
/// `systems`: the systems about to be read (a slot on one of their disks is refused).
pub fn find(m: &Machine, media: &Media, systems: &[&System], write: bool) -> anyhow::Result<[Device; 2]> {
    let mut out = Vec::new();
    for (letter, uuid) in LETTERS.iter().zip([media.slot_a.get_ref(), media.slot_b.get_ref()]) {
        let Some(d) = m.by_uuid(uuid)? else {
            bail!("slot {letter} (UUID={uuid}) is not attached: plug in the backup disk (both of its filesystems must be there)");
        };
        if write {
            let rw: Vec<String> = m.mounts_of(d).iter().filter(|mm| mm.is_rw()).map(|mm| mm.mountpoint.clone()).collect();
            if !rw.is_empty() {
                bail!("slot {letter} ({}) is mounted read-write at {}: something else may be writing to it; unmount it (and turn off automounting of the backup disk)", d.path.display(), rw.join(", "));
            }
        }
        for s in systems {
            for f in &s.filesystems {
                let Some(fd) = f.device.as_ref().and_then(|p| m.devices.iter().find(|x| &x.path == p)) else { continue };
                if fd.disk == d.disk {
                    bail!(
                        "slot {letter} ({}) is on the same disk ({}) as {}'s {}: a backup on the disk it protects is lost with it; use another disk for the slots",
                        d.path.display(),
                        d.disk,
                        s.name,
                        f.mountpoint
                    );
                }
            }
        }
        out.push(d.clone());
    }
    let [a, b]: [Device; 2] = out.try_into().map_err(|_| anyhow::anyhow!("two slots expected"))?;
    if a.path == b.path {
        bail!("slots A and B are the same filesystem ({}): the configuration is wrong", a.path.display());
    }
    Ok([a, b])
}

/// Mounts both slots under `base` and reads them (marker, foreign files, generations).
pub fn mount(devs: &[Device; 2], media_id: &str, base: &std::path::Path, write: bool) -> anyhow::Result<(Vec<Slot>, Mounted)> {
    let mut mounted = Mounted::default();
    let mut slots = Vec::new();
    for (letter, d) in LETTERS.iter().zip(devs.iter()) {
        let root = base.join(format!("slot-{letter}"));
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let fm = FsMount { mountpoint: format!("slot {letter}"), device: d.path.clone(), fstype: d.fstype.clone(), subvol: None, options: Vec::new() };
        offline::mount_one(&fm, &root, write, !write, &mut mounted).with_context(|| {
            format!(
                "slot {letter} ({}, {}) cannot be mounted: check it with fsck (e.g. `e2fsck -f {}`) or look at the disk's health; nothing was changed",
                d.path.display(),
                d.fstype,
                d.path.display()
            )
        })?;
        let (_marker, contents) = media::read_slot(&root, letter, media_id)?;
        slots.push(Slot { letter, root, contents });
    }
    Ok((slots, mounted))
}

/// For reading the backups (ls, restore, verify): the configuration, the
/// machine, and both slots mounted read-only in a private namespace (their
/// devices set read-only meanwhile, the guard started).
pub struct ReadOnlyView {
    pub cfg: crate::config::Config,
    pub machine: Machine,
    pub slots: Vec<Slot>,
    pub mounts: Mounted,
    /// Private scratch space for more mounts.
    pub scratch: std::path::PathBuf,
}

pub fn open_read_only(config: &std::path::Path, name: &str) -> anyhow::Result<ReadOnlyView> {
    let cfg = crate::config::Config::load(config)?;
    let Some(media_cfg) = &cfg.media else { bail!("no backup media in {}: run `crossback media prepare`", config.display()) };
    let machine = Machine::scan(&[])?;
    let devs = find(&machine, media_cfg, &[], false)?;
    crossback_host::ns::start_guard()?;
    crossback_host::ns::enter_private()?;
    let scratch = crossback_host::inspect::scratch_dir(name)?;
    let (slots, mounts) = mount(&devs, media_cfg.id.get_ref(), &scratch, false)?;
    Ok(ReadOnlyView { cfg, machine, slots, mounts, scratch })
}
