//! Finding and mounting the media's two slots (privately: the caller has
//! entered its own mount namespace), with the refusals of R6 and O3, and
//! the lock of R8.

use std::path::{Path, PathBuf};

use crossback_host::beneath::Dir;
use crossback_host::blockdev::Device;
use crossback_host::lock::{self, Lock};
use crossback_host::offline::{self, FsMount, Mounted};

use crate::config::Media;
use crate::error::{refuse, Refusal};
use crate::layout::{self, GenEntry, SlotId, SlotView};
use crate::machine::{Machine, System};

pub struct Slot {
    pub id: SlotId,
    /// Where it is mounted.
    pub at: PathBuf,
    /// The slot's filesystem root, mounted privately.
    pub root: Dir,
    pub view: SlotView,
}

impl Slot {
    /// `crossback/` on the slot.
    pub fn dir(&self) -> anyhow::Result<Dir> {
        self.root.dir(layout::DIR).map_err(|e| refuse(Refusal::SlotHostile, format!("slot {}: {e}", self.id)))
    }
}

/// R8: one crossback at a time per media (readers may share it).
pub fn lock_media(media_id: &str, mode: lock::Mode) -> anyhow::Result<Lock> {
    let id: String = media_id.chars().filter(|c| c.is_ascii_alphanumeric()).take(64).collect();
    lock::take(&format!("media-{id}"), mode).map_err(|e| refuse(Refusal::Locked, format!("the backup media: {e}")))
}

/// R8: one crossback at a time per system (by its root filesystem's UUID,
/// which is what makes it that system on every machine).
pub fn lock_system(name: &str, root_uuid: &str) -> anyhow::Result<Lock> {
    let id: String = root_uuid.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    lock::take(&format!("system-{id}"), lock::Mode::Exclusive).map_err(|e| refuse(Refusal::Locked, format!("system {name}: {e}")))
}

/// R8 for a command on one configured system (mount, chroot), before
/// anything is read; an unknown name is refused later with the list.
pub fn lock_configured(cfg: &crate::config::Config, name: &str) -> anyhow::Result<Option<Lock>> {
    cfg.system(name).map(|s| lock_system(name, s.root.get_ref())).transpose()
}

/// Both slot devices, or a refusal that says what is missing or wrong.
/// `systems`: the systems about to be read (a slot on one of their disks is refused).
pub fn find(m: &Machine, media: &Media, systems: &[&System], write: bool) -> anyhow::Result<[Device; 2]> {
    let mut out = Vec::new();
    for (id, uuid) in SlotId::BOTH.into_iter().zip([media.slot_a.get_ref(), media.slot_b.get_ref()]) {
        let Some(d) = m.by_uuid(uuid)? else {
            crate::refuse!(Refusal::SlotMissing, "slot {id} (UUID={uuid}) is not attached: plug in the backup disk (both of its filesystems must be there)");
        };
        if write {
            let rw: Vec<String> = m.mounts_of(d).iter().filter(|mm| mm.is_rw()).map(|mm| mm.mountpoint.clone()).collect();
            if !rw.is_empty() {
                crate::refuse!(
                    Refusal::SlotMountedReadWrite,
                    "slot {id} ({}) is mounted read-write at {}: something else may be writing to it; unmount it (and turn off automounting of the backup disk)",
                    d.path.display(),
                    rw.join(", ")
                );
            }
        }
        for s in systems {
            for f in &s.filesystems {
                let Some(fd) = f.device.as_ref().and_then(|p| m.devices.iter().find(|x| &x.path == p)) else { continue };
                if fd.disk == d.disk {
                    crate::refuse!(
                        Refusal::SlotOnSystemDisk,
                        "slot {id} ({}) is on the same disk ({}) as {}'s {}: a backup on the disk it protects is lost with it; use another disk for the slots",
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
        crate::refuse!(Refusal::Config, "slots A and B are the same filesystem ({}): the configuration is wrong", a.path.display());
    }
    Ok([a, b])
}

/// Waits until both slots of `media` are attached (udev announces a disk's
/// filesystems one by one); false if they are not within `limit`.
pub fn wait_for(media: &Media, limit: std::time::Duration) -> anyhow::Result<bool> {
    let t = std::time::Instant::now();
    // Best effort: the scan below is what decides.
    let _ = crossback_host::tool::Tool::new("udevadm").args(["settle", &format!("--timeout={}", limit.as_secs())]).output();
    loop {
        let m = Machine::scan(&[])?;
        if m.by_uuid(media.slot_a.get_ref())?.is_some() && m.by_uuid(media.slot_b.get_ref())?.is_some() {
            return Ok(true);
        }
        if t.elapsed() >= limit {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Why a slot could not be mounted, in words that send the user the right way.
fn mount_refusal(id: SlotId, d: &Device, err: &crossback_host::Error) -> anyhow::Error {
    let errno = match err {
        crossback_host::Error::Io { source, .. } => source.raw_os_error(),
        _ => None,
    };
    let dev = d.path.display();
    match errno {
        Some(libc::EBUSY) => refuse(
            Refusal::SlotBusy,
            format!("slot {id} ({dev}) is busy: another program has it open or mounted (an automounter, a file manager, another crossback); close it or unmount it (a backup writes only to a slot nothing else has mounted; reading works from a slot you mounted), then run again; nothing was changed"),
        ),
        Some(libc::EIO) => refuse(
            Refusal::SlotIo,
            format!("slot {id} ({dev}) gave an I/O error: the backup disk or its cable may be failing; look at `dmesg` and the disk's health (`smartctl -a`), and copy what you can; nothing was changed"),
        ),
        Some(libc::EROFS) | Some(libc::EACCES) => refuse(
            Refusal::SlotIo,
            format!("slot {id} ({dev}) cannot be written: the disk is read-only (a write-protect switch, or the kernel made it read-only after errors; see `dmesg`)"),
        ),
        _ => refuse(
            Refusal::SlotDamaged,
            format!(
                "slot {id} ({dev}, {}) cannot be mounted ({err}): its filesystem may be damaged; check it with fsck (e.g. `e2fsck -f {dev}`); nothing was changed",
                d.fstype
            ),
        ),
    }
}

/// How the slots are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-only, the devices set read-only too (ls, restore, verify).
    Read,
    /// Read-only for now: `backup` makes only its target writable, once it
    /// knows which one it is (the slot holding the newest complete set is
    /// never mounted writable).
    Backup,
}

/// An I/O error while reading a slot points at the disk's health.
fn io_hint(id: SlotId, d: &Device, e: anyhow::Error) -> anyhow::Error {
    let eio = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().and_then(|io| io.raw_os_error()) == Some(libc::EIO)
            || matches!(c.downcast_ref::<crossback_host::Error>(), Some(crossback_host::Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EIO))
    });
    if eio {
        refuse(
            Refusal::SlotIo,
            format!("slot {id} ({}) gave an I/O error while it was read ({e:#}): the backup disk or its cable may be failing; look at `dmesg` and the disk's health (`smartctl -a`)", d.path.display()),
        )
    } else {
        e
    }
}

/// Mounts both slots under `base` and reads them (marker, foreign files,
/// generations), refusing a slot that is not this media's.
pub fn mount(devs: &[Device; 2], media_id: &str, base: &Path, access: Access) -> anyhow::Result<(Vec<Slot>, Mounted)> {
    let mut mounted = Mounted::default();
    let mut slots = Vec::new();
    for (id, d) in SlotId::BOTH.into_iter().zip(devs.iter()) {
        let at: PathBuf = base.join(format!("slot-{id}"));
        std::fs::create_dir_all(&at)?;
        let fs = slot_fs(id, d);
        match access {
            Access::Read => offline::mount_one(&fs, &at, false, true, &mut mounted),
            Access::Backup => offline::mount_replaying(&fs, &at, &mut mounted),
        }
        .map_err(|e| mount_refusal(id, d, &e))?;
        slots.push(read(id, d, at, media_id)?);
    }
    Ok((slots, mounted))
}

/// A slot's filesystem, to mount.
pub fn slot_fs(id: SlotId, d: &Device) -> FsMount {
    FsMount { mountpoint: format!("slot {id}"), device: d.path.clone(), fstype: d.fstype.clone(), subvol: None, options: Vec::new(), view_of: None }
}

/// Mounts `slot` again, writable (for `backup`'s target), and reads it again.
pub fn make_writable(slot: Slot, d: &Device, media_id: &str, mounted: &mut Mounted) -> anyhow::Result<Slot> {
    let Slot { id, at, root, .. } = slot;
    drop(root);
    rustix::mount::unmount(&at, rustix::mount::UnmountFlags::empty())
        .map_err(|e| refuse(Refusal::SlotBusy, format!("slot {id}: unmounting it to write to it: {e}")))?;
    mounted.points.retain(|p| p != &at);
    offline::mount_one(&slot_fs(id, d), &at, true, false, mounted).map_err(|e| mount_refusal(id, d, &e))?;
    let slot = read(id, d, at, media_id)?;
    // What is on a slot is root's only, also on a slot an older crossback
    // made open to all (its `crossback/` was 0755, its archives 0644).
    slot.dir()?.make_private()?;
    Ok(slot)
}

/// Reads a mounted slot: its classification, checked to be this media's.
fn read(id: SlotId, d: &Device, at: PathBuf, media_id: &str) -> anyhow::Result<Slot> {
    {
        let root = Dir::open(&at)?;
        let view = match layout::classify(&root).map_err(|e| io_hint(id, d, e))? {
            Ok(v) => v,
            Err(names) => crate::refuse!(
                Refusal::SlotNotPrepared,
                "slot {id} ({}) has no crossback marker ({}/{}){}: it was never prepared, or preparing it did not finish; run `crossback media prepare`",
                d.path.display(),
                layout::DIR,
                layout::MARKER,
                if names.is_empty() { String::new() } else { format!(" and holds {}", names.join(", ")) }
            ),
        };
        view.check_owner(id, media_id)?;
        Ok(Slot { id, at, root, view })
    }
}

/// For reading the backups (ls, restore, verify): the configuration, the
/// machine, and both slots mounted read-only in a private namespace (their
/// devices set read-only meanwhile, the guard started), the media locked
/// for reading.
pub struct ReadOnlyView {
    pub cfg: crate::config::Config,
    pub machine: Machine,
    pub slots: Vec<Slot>,
    pub mounts: Mounted,
    /// Private scratch space for more mounts.
    pub scratch: PathBuf,
    /// The media's lock, shared with other readers.
    pub lock: Lock,
    /// A slot that could not be read (damaged, I/O errors, not this
    /// media's), said when it was skipped: the other one is read alone.
    pub unread: Vec<(SlotId, String)>,
}

impl ReadOnlyView {
    /// Says each damaged generation (its manifest does not read) that the
    /// command reads past: a backup may be missing from what it shows.
    pub fn say_damaged(&self) {
        for s in &self.slots {
            for g in &s.view.generations {
                if let GenEntry::Leftover { dir, why: why @ crate::layout::classify::Leftover::Damaged(_), .. } = g {
                    eprintln!("warning: slot {}: {dir} is {why}; it is not read (`crossback verify` says more)", s.id);
                }
            }
        }
    }
}

pub fn open_read_only(config: &Path, name: &str) -> anyhow::Result<ReadOnlyView> {
    let cfg = crate::config::Config::load(config)?;
    let Some(media_cfg) = &cfg.media else { crate::refuse!(Refusal::Config, "no backup media in {}: run `crossback media prepare`", config.display()) };
    let lock = lock_media(media_cfg.id.get_ref(), lock::Mode::Shared)?;
    let machine = Machine::scan(&[])?;
    let devs = find(&machine, media_cfg, &[], false)?;
    crossback_host::ns::start_guard()?;
    crossback_host::ns::enter_private()?;
    let scratch = crossback_host::inspect::scratch_dir(name)?;
    // A damaged or half-dead slot never blocks reading the other: a failing
    // backup disk is exactly when the good slot is needed.
    let mut mounts = Mounted::default();
    let (mut slots, mut unread, mut first_err) = (Vec::new(), Vec::new(), None);
    for (id, d) in SlotId::BOTH.into_iter().zip(devs.iter()) {
        let at: PathBuf = scratch.join(format!("slot-{id}"));
        std::fs::create_dir_all(&at)?;
        // A slot the user mounted (the rescue path: the slot's README says to
        // mount it and run the crossback it carries) is read through a
        // read-only view of that mount; mounting it again would be refused
        // as busy.
        let mut fs = slot_fs(id, d);
        fs.view_of = machine.mounts_of(d).iter().find(|m| m.root == "/").map(|m| PathBuf::from(&m.mountpoint));
        let one =
            offline::mount_one(&fs, &at, false, true, &mut mounts).map_err(|e| mount_refusal(id, d, &e)).and_then(|()| read(id, d, at, media_cfg.id.get_ref()));
        match one {
            Ok(slot) => slots.push(slot),
            Err(e) => {
                unread.push((id, format!("slot {id} ({}) is not read: {e:#}", d.path.display())));
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err.filter(|_| slots.is_empty()) {
        return Err(e);
    }
    for (_, why) in &unread {
        eprintln!("warning: {why}; the other slot is read alone");
    }
    Ok(ReadOnlyView { cfg, machine, slots, mounts, scratch, lock, unread })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy slot is not sent to fsck, an I/O error points at
    /// the disk's health; each by its kind.
    #[test]
    fn mount_failures_send_the_user_the_right_way() {
        let d = Device { path: "/dev/sdz1".into(), fstype: "ext4".into(), ..Default::default() };
        let err = |errno: i32| crossback_host::Error::Io { what: "mounting".into(), source: std::io::Error::from_raw_os_error(errno) };
        let busy = mount_refusal(SlotId::A, &d, &err(libc::EBUSY));
        assert_eq!(crate::error::kind_of(&busy), Some(Refusal::SlotBusy));
        assert!(!busy.to_string().contains("fsck"), "{busy}");
        let io = mount_refusal(SlotId::B, &d, &err(libc::EIO));
        assert_eq!(crate::error::kind_of(&io), Some(Refusal::SlotIo));
        assert!(io.to_string().contains("health"), "{io}");
        let bad = mount_refusal(SlotId::A, &d, &err(libc::EUCLEAN));
        assert_eq!(crate::error::kind_of(&bad), Some(Refusal::SlotDamaged));
        assert!(bad.to_string().contains("fsck"), "{bad}");
    }
}
