//! `crossback restore SYSTEM --bare-metal`: a system's filesystems made
//! again (type, UUID, label, parameters) on its own or given devices, its
//! backup restored onto them, `fstab`/`crypttab` rewritten for new UUIDs.

use crossback_host::tool::Tool;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use crossback_host::beneath::Dir;
use crossback_host::offline::{self, FsMount};

use crate::backups::SystemBackup;
use crate::cli::RestoreArgs;
use crate::config::Config;
use crate::error::{refuse, Refusal};
use crate::layout::{ArchiveRecord, FsRecord};
use crate::machine::{self, Machine};
use crate::output;
use crate::{refuse, Outcome};

use super::grub::{grub_of, repair_grub, GrubRepair};
use super::{open, refuse_legacy, report, restore_into, Opened};

/// A filesystem to recreate: the record(s) sharing one device (a btrfs
/// with several subvolumes is one filesystem), and where it goes.
pub(super) struct Target {
    pub(super) records: Vec<FsRecord>,
    pub(super) device: PathBuf,
    pub(super) new_uuid: Option<String>,
}

/// `mkfs` with the recorded identity (or a new one). What was on the device
/// is wiped first: a filesystem made over its own old copy (btrfs, say)
/// must not see the old superblock and take its UUID for someone else's.
pub(super) fn mkfs(t: &Target) -> anyhow::Result<()> {
    let r = &t.records[0];
    let keep = t.new_uuid.is_none();
    let ft = crossback_host::fstype::of(&r.fstype)
        .with_context(|| refuse(Refusal::Unsupported, format!("cannot recreate a {} filesystem (for {})", r.fstype, r.mountpoint)))?;
    let cmd = ft
        .mkfs(&t.device, keep.then_some(r.uuid.as_str()), &r.label, &r.params)
        .with_context(|| refuse(Refusal::Unsupported, format!("cannot recreate a {} filesystem (for {})", r.fstype, r.mountpoint)))?;
    machine::run_tool(Tool::new("wipefs").args(["-a", "-q"]).arg(&t.device))?;
    if r.fstype == "btrfs" {
        // The kernel remembers btrfs devices by filesystem UUID.
        // (Best effort: a device the kernel never saw has nothing to forget.)
        let _ = Tool::new("btrfs").args(["device", "scan", "--forget"]).arg(&t.device).output();
    }
    machine::run_tool(&cmd)
}

/// Which device each recorded filesystem goes to, grouped by filesystem.
pub(super) fn targets(b: &SystemBackup, m: &Machine, explicit: &[(String, PathBuf)], system: &str) -> anyhow::Result<Vec<Target>> {
    for (mp, _) in explicit {
        if !b.mounts.filesystems.iter().any(|r| &r.mountpoint == mp) {
            refuse!(
                Refusal::Usage,
                "--device {}=…: {system}'s backup has no filesystem mounted there (it has: {})",
                output::text(mp),
                b.mounts.filesystems.iter().map(|r| r.mountpoint.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let mut targets: Vec<Target> = Vec::new();
    for r in &b.mounts.filesystems {
        let given = explicit.iter().find(|(mp, _)| mp == &r.mountpoint).map(|(_, d)| d);
        if let Some(t) = targets.iter_mut().find(|t| !r.uuid.is_empty() && t.records[0].uuid == r.uuid) {
            if let Some(d) = given {
                let d =
                    std::fs::canonicalize(d).with_context(|| refuse(Refusal::Usage, format!("--device {}={}: no such device", r.mountpoint, d.display())))?;
                if d != t.device {
                    refuse!(Refusal::Usage, "{} and {} are one filesystem (UUID={}): give them one device", t.records[0].mountpoint, r.mountpoint, r.uuid);
                }
            }
            t.records.push(r.clone());
            continue;
        }
        let device = match given {
            Some(d) => {
                std::fs::canonicalize(d).with_context(|| refuse(Refusal::Usage, format!("--device {}={}: no such device", r.mountpoint, d.display())))?
            }
            None => {
                let by = |f: &dyn Fn(&crossback_host::blockdev::Device) -> bool| m.devices.iter().find(|d| f(d)).map(|d| d.path.clone());
                let found = by(&|d| !r.uuid.is_empty() && d.uuid.eq_ignore_ascii_case(&r.uuid))
                    .or_else(|| by(&|d| !r.partuuid.is_empty() && d.partuuid.eq_ignore_ascii_case(&r.partuuid)));
                found.with_context(|| {
                    refuse(
                        Refusal::SystemIncomplete,
                        format!("{system}'s {} (UUID={}) is not attached: give the new device with --device {}=/dev/…", r.mountpoint, r.uuid, r.mountpoint),
                    )
                })?
            }
        };
        if let Some(other) = targets.iter().find(|t| t.device == device) {
            refuse!(
                Refusal::Usage,
                "{} is given for {} and for {}: each filesystem needs its own device (formatting it twice would leave one of them lost)",
                device.display(),
                other.records[0].mountpoint,
                r.mountpoint
            );
        }
        targets.push(Target { records: vec![r.clone()], device, new_uuid: None });
    }
    Ok(targets)
}

/// Everything that must hold before the first byte is written (item 5 and 6 of the hardening).
pub(super) fn check_targets(targets: &[Target], m: &Machine, cfg: &Config, new_uuids: bool) -> anyhow::Result<()> {
    let slot_uuids: Vec<String> = cfg.media.iter().flat_map(|mm| [mm.slot_a.get_ref().to_lowercase(), mm.slot_b.get_ref().to_lowercase()]).collect();
    let slot_disks: Vec<&str> = m.devices.iter().filter(|d| slot_uuids.contains(&d.uuid.to_lowercase())).map(|d| d.disk.as_str()).collect();
    let running = m.running_root().map(|(d, _)| d.path.clone());
    for t in targets {
        let r = &t.records[0];
        let d = m
            .devices
            .iter()
            .find(|d| d.path == t.device)
            .with_context(|| refuse(Refusal::Usage, format!("{} is not a block device of this machine", t.device.display())))?;
        if Some(&d.path) == running.as_ref() {
            refuse!(Refusal::TargetInUse, "{} holds the running system: restore from another system or a live USB", d.path.display());
        }
        if slot_uuids.contains(&d.uuid.to_lowercase()) || (d.name == d.disk && slot_disks.contains(&d.name.as_str())) {
            refuse!(Refusal::TargetInUse, "{} is (or holds) a slot of the backup media: restoring onto it would destroy the backups", d.path.display());
        }
        if let Some(why) = &d.unreadable {
            refuse!(
                Refusal::TargetInUse,
                "{} does not read ({why}): what is on it is not known, so it is not taken for empty; nothing was written",
                d.path.display()
            );
        }
        // Not "empty" because it has no filesystem: a disk with a partition
        // table, or a device something is built on or reads from, holds
        // data. The table is the disk's own word (sfdisk), not the kernel's
        // list, which can keep a partition of a loop device's earlier
        // backing file; and it is asked of a disk with no filesystem only (a
        // vfat filesystem's boot sector looks like an MBR to sfdisk).
        if d.name == d.disk && d.fstype.is_empty() {
            if let Some(t) = crossback_host::partitions::read(&d.path)? {
                refuse!(
                    Refusal::TargetNotEmpty,
                    "{} is a whole disk with a {} partition table ({} partitions): --device takes a partition or an empty device (for a whole disk, `restore --bare-metal --disk`); nothing was written",
                    d.path.display(),
                    t.label,
                    t.partitions.len()
                );
            }
        }
        let holders = crate::stack::open::holders(d);
        if !holders.is_empty() {
            refuse!(
                Refusal::TargetInUse,
                "{} is in use: {} is built on it (a mapping, a RAID or a volume group); close that first; nothing was written",
                d.path.display(),
                holders.join(", ")
            );
        }
        if let Some(lo) = loop_reading(&d.path)? {
            refuse!(
                Refusal::TargetInUse,
                "{} is in use: loop device {lo} reads from it; detach it first (`losetup -d`); nothing was written",
                d.path.display()
            );
        }
        if let Some(at) = m.mounted_at(d) {
            refuse!(Refusal::TargetInUse, "{} is mounted at {at}: unmount it first (nothing was written)", d.path.display());
        }
        // What the data needs: the bytes used on the old filesystem (once per
        // filesystem, whatever the number of subvolumes), plus what the new
        // filesystem takes itself on this device.
        let used = t.records.iter().map(|r| r.used).max().unwrap_or(0);
        let need = crossback_host::fstype::of(&r.fstype).map_or(u64::MAX, |ft| ft.needs(used, d.size));
        if need > d.size {
            refuse!(
                Refusal::TargetTooSmall,
                "{} is too small for {} ({}): {} needed ({} used at backup time, and what a {} filesystem takes itself), {} available; use a larger device",
                d.path.display(),
                t.records.iter().map(|r| r.mountpoint.as_str()).collect::<Vec<_>>().join(" + "),
                r.fstype,
                output::bytes(need),
                output::bytes(used),
                r.fstype,
                output::bytes(d.size)
            );
        }
        // Two filesystems with one UUID: the old one is still attached.
        if !new_uuids && !r.uuid.is_empty() {
            if let Some(old) = m.devices.iter().find(|x| x.path != d.path && x.uuid.eq_ignore_ascii_case(&r.uuid)) {
                refuse!(
                    Refusal::DuplicateUuid,
                    "{}'s filesystem with UUID={} is still attached at {}: recreating it on {} would leave two filesystems with one UUID (systems then mount either). Detach the old disk, restore onto {} itself, or pass --new-uuids",
                    r.mountpoint,
                    r.uuid,
                    old.path.display(),
                    d.path.display(),
                    old.path.display()
                );
            }
        }
    }
    Ok(())
}

/// What one system's bare-metal restore did.
pub(super) struct Restored {
    pub(super) entries: u64,
    pub(super) damaged: Vec<String>,
    pub(super) failed: Vec<String>,
    /// Old UUID → new one (with --new-uuids).
    pub(super) uuid_map: Vec<(String, String)>,
    /// The restored root's /etc/fstab ("" when the root was not among them).
    pub(super) fstab: String,
    /// With new UUIDs: the GRUB EFI installation that needs repair.
    pub(super) grub: Option<GrubRepair>,
}

/// Prints what will be wiped and made: one line a filesystem.
pub(super) fn show_plan(m: &Machine, targets: &[Target], new_uuids: bool) {
    for t in targets {
        let r = &t.records[0];
        let now = m.devices.iter().find(|d| d.path == t.device);
        let fs_now = now.map_or("new partition".to_string(), |d| if d.fstype.is_empty() { "empty".to_string() } else { d.fstype.clone() });
        let label_now = now.filter(|d| !d.label.is_empty()).map(|d| format!(", \"{}\"", output::text(&d.label))).unwrap_or_default();
        println!(
            "  {} ({fs_now} now{label_now}) ← {} {} {}{}",
            t.device.display(),
            t.records.iter().map(|r| r.mountpoint.as_str()).collect::<Vec<_>>().join(" + "),
            r.fstype,
            if new_uuids { "with a new UUID".to_string() } else { format!("UUID={}", r.uuid) },
            if r.label.is_empty() { String::new() } else { format!(" LABEL={}", output::text(&r.label)) }
        );
    }
}

/// The loop device (kernel name) whose backing file is `dev`, if any; a
/// sysfs that does not list the block devices is an error, not "none".
fn loop_reading(dev: &Path) -> anyhow::Result<Option<String>> {
    let names = crossback_host::blockdev::kernel_names().context("listing the block devices (/sys/class/block)")?;
    Ok(names.into_iter().filter(|n| n.starts_with("loop")).find(|n| Path::new(crossback_host::blockdev::sys_text(n, "loop/backing_file").trim()) == dev))
}

/// Makes `targets`' filesystems again and restores `b`'s archives of them
/// (each filesystem mounted on its own); with `new_uuids`, rewrites the
/// restored fstab and crypttab. The archives of filesystems not among the
/// targets (a shared ESP another system's backup restores) are left out.
/// `also`: new UUIDs made elsewhere that this system's files name too (its
/// LUKS containers', a shared ESP restored with another system).
pub(super) fn recreate(b: &SystemBackup, system: &str, targets: &mut [Target], new_uuids: bool, also: &[(String, String)]) -> anyhow::Result<Restored> {
    for t in targets.iter() {
        mkfs(t).with_context(|| format!("recreating {}", t.records[0].mountpoint))?;
    }
    // The new identities, as blkid now reads them.
    let mut uuid_map: Vec<(String, String)> = Vec::new();
    for t in targets.iter_mut() {
        let probed = crossback_host::blockdev::probe(&t.device)?;
        let now = probed.get("UUID").cloned().unwrap_or_default();
        if new_uuids {
            uuid_map.push((t.records[0].uuid.clone(), now.clone()));
            t.new_uuid = Some(now);
        } else if !now.eq_ignore_ascii_case(&t.records[0].uuid) {
            bail!("{} got UUID {now} instead of {}: mkfs did not keep it", t.device.display(), t.records[0].uuid);
        }
    }
    // btrfs subvolumes, then each filesystem, mounted privately, restored.
    let base = Path::new(crossback_host::inspect::SCRATCH).join("crossback-restore").join(system);
    let mut fs_mounts = Vec::new();
    for t in targets.iter() {
        if t.records[0].fstype == "btrfs" && t.records.iter().any(|r| r.subvol.is_some()) {
            let top = base.join("btrfs-top");
            std::fs::create_dir_all(&top)?;
            let mut mm = offline::Mounted::default();
            offline::mount_one(
                &FsMount { mountpoint: "btrfs top".into(), device: t.device.clone(), fstype: "btrfs".into(), subvol: None, options: vec![], view_of: None },
                &top,
                true,
                false,
                &mut mm,
            )?;
            for r in &t.records {
                if let Some(sv) = &r.subvol {
                    // Checked as a plain relative path when mounts.toml was read.
                    machine::run_tool(Tool::new("btrfs").args(["-q", "subvolume", "create"]).arg(top.join(sv.trim_start_matches('/'))))?;
                }
            }
            let _ = mm.unmount();
        }
        for r in t.records.iter().filter(|r| r.fstype != "swap") {
            fs_mounts.push(FsMount {
                mountpoint: r.mountpoint.clone(),
                device: t.device.clone(),
                fstype: r.fstype.clone(),
                subvol: r.subvol.clone(),
                options: vec![],
                view_of: None,
            });
        }
    }
    // Each filesystem mounted on its own, not as a tree: the root
    // archive then restores the mount point directories (/home, /boot/efi)
    // with their own recorded owner, mode and times, as they are beneath
    // the mounts on the real machine.
    let mut mounted = offline::Mounted::default();
    let mut dests: Vec<(String, PathBuf)> = Vec::new();
    for (i, f) in fs_mounts.iter().enumerate() {
        let at = base.join(format!("fs-{i}"));
        std::fs::create_dir_all(&at)?;
        offline::mount_one(f, &at, true, false, &mut mounted).with_context(|| format!("mounting the new {}", f.mountpoint))?;
        dests.push((f.mountpoint.clone(), at));
    }
    let own_fs = |ar: &ArchiveRecord| -> anyhow::Result<Option<Dir>> {
        dests.iter().find(|(mp, _)| *mp == ar.mountpoint).map(|(_, at)| Dir::open(at).map_err(Into::into)).transpose()
    };
    let (entries, damaged, failed) = restore_into(super::open_selected(b, &[])?, &own_fs)?;
    let mut fstab = String::new();
    let mut grub = None;
    if let Some((_, tree)) = dests.iter().find(|(mp, _)| mp == "/") {
        let root = Dir::open(tree)?;
        if new_uuids {
            let mut rewrite: Vec<(String, String)> = uuid_map.clone();
            rewrite.extend(also.iter().filter(|(old, _)| !uuid_map.iter().any(|(o, _)| o == old)).cloned());
            let others = rewrite_uuids(&root, &rewrite, system)?;
            let records: Vec<&FsRecord> = targets.iter().flat_map(|t| t.records.iter()).collect();
            // The partition number, on its recorded disk, of the filesystem
            // holding /boot/grub: /boot's when it is apart (and not the ESP),
            // else the root's.
            let boot_fs = records.iter().find(|r| r.mountpoint == "/boot" && r.fstype != "vfat").or_else(|| records.iter().find(|r| r.mountpoint == "/"));
            let root_partuuid = boot_fs.map(|r| r.partuuid.to_lowercase()).unwrap_or_default();
            let root_partition =
                b.mounts.disks.iter().flat_map(|t| t.partitions.iter()).find(|p| !root_partuuid.is_empty() && p.uuid == root_partuuid).map(|p| p.number);
            grub = grub_of(&dests, &records, root_partition, &others);
            // A container with a new UUID: the initramfs's copy of crypttab names the old one.
            if let Some(g) = grub.as_mut() {
                g.initramfs |= also.iter().any(|(old, _)| b.mounts.luks.iter().any(|l| &l.uuid == old));
            }
        }
        fstab = root.dir("etc").and_then(|d| d.read_capped("fstab", 1 << 20)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    }
    let busy = mounted.unmount();
    if !busy.is_empty() {
        eprintln!("warning: could not unmount {busy:?}");
    }
    Ok(Restored { entries, damaged, failed, uuid_map, fstab, grub })
}

/// Warns when a restored fstab names filesystems that do not exist now.
pub(super) fn check_fstab(system: &str, text: &str) -> anyhow::Result<()> {
    let fstab = crossback_host::fstab::parse(text);
    let now_devices = crossback_host::blockdev::scan()?;
    let mut unresolved = Vec::new();
    for e in fstab.mounts.iter().chain(fstab.swap.iter()) {
        if crossback_host::blockdev::find(&now_devices, &e.spec)?.is_none() {
            unresolved.push(format!("{} {}", e.spec.to_fstab(), e.mountpoint));
        }
    }
    if !unresolved.is_empty() {
        eprintln!("warning: {system}'s restored /etc/fstab names filesystems that are not attached: {}", output::text(&unresolved.join("; ")));
    }
    Ok(())
}

/// New UUIDs: fstab and crypttab follow; other files are named. The
/// restored tree came from an archive: its files are read and written
/// beneath it, never through a symlink it holds.
fn rewrite_uuids(root: &Dir, uuid_map: &[(String, String)], system: &str) -> anyhow::Result<Vec<String>> {
    for f in ["fstab", "crypttab"] {
        let Ok(etc) = root.dir("etc") else { continue };
        let Ok(bytes) = etc.read_capped(f, 1 << 20) else { continue };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut t = text.clone();
        for (old, new) in uuid_map {
            t = replace_ci(&t, old, new);
        }
        if t != text {
            // The directory keeps its restored times: only the file changed.
            let before = rustix::fs::fstat(etc.as_fd()).context("reading /etc's times")?;
            let mode = etc
                .open_file(f)
                .and_then(|file| file.metadata().map_err(|e| crossback_host::Error::Io { what: format!("reading etc/{f}'s mode"), source: e }))?;
            etc.write_durable_mode(f, t.as_bytes(), std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777)?;
            let times = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec { tv_sec: before.st_atime, tv_nsec: before.st_atime_nsec as _ },
                last_modification: rustix::fs::Timespec { tv_sec: before.st_mtime, tv_nsec: before.st_mtime_nsec as _ },
            };
            rustix::fs::futimens(etc.as_fd(), &times).context("putting back /etc's times")?;
            println!("rewrote etc/{f} for the new UUIDs");
        }
    }
    let mut others = Vec::new();
    for dir in ["etc/default", "etc/kernel", "boot", "etc/crypttab.initramfs"] {
        find_mentions(root, dir, uuid_map, &mut others, 16);
    }
    if !others.is_empty() {
        println!("these files still name an old UUID (GRUB's and the initramfs's are made again below when crossback can; otherwise fix them in `crossback chroot {system}`):");
        for o in &others {
            println!("  {}", output::text(o));
        }
    }
    Ok(others)
}

pub(super) fn run(path: &Path, a: &RestoreArgs, explicit: &[(String, PathBuf)], new_uuids: bool, yes: bool, boot_repair: bool) -> anyhow::Result<Outcome> {
    let system = a.system.as_deref().context("checked when the mode was resolved")?;
    // An encrypted or LVM system restored in place: its containers opened
    // and volume groups activated (read-write) first, so its filesystems are found.
    let configured = crate::config::Config::load(path)?;
    let _layers = match configured.system(system) {
        Some(sc) if (!sc.luks.is_empty() || !sc.lvm.is_empty()) && explicit.is_empty() => {
            Some(crate::stack::open::open_one(&configured, system, crate::stack::open::Access::Write)?.0)
        }
        _ => None,
    };
    let Opened { cfg, machine: m, mounts: mut slot_mounts, backup: b, source, .. } = open(path, system, a.generation, true, &a.from)?;
    let m = m.context("a restore that writes scans the machine")?;
    refuse_legacy(&b, system)?;
    // Every archive opened and checked (size, header, index, data hash) before anything is wiped.
    super::check_archives(&b)?;
    if !b.mounts.luks.is_empty() || !b.mounts.vgs.is_empty() {
        println!(
            "note: {system} sat in {}; --bare-metal restores its filesystems onto what is there now (`restore --bare-metal --disk` makes containers and volume groups again)",
            b.mounts.luks.iter().map(|l| format!("LUKS container {}", l.uuid)).chain(b.mounts.vgs.iter().map(|v| format!("volume group {}", v.name))).collect::<Vec<_>>().join(", ")
        );
    }
    let mut targets = targets(&b, &m, explicit, system)?;
    check_targets(&targets, &m, &cfg, new_uuids)?;
    if new_uuids {
        for t in &mut targets {
            t.new_uuid = Some(String::new());
        }
    }
    println!("bare-metal restore of {system} from generation {} ({}): these filesystems will be WIPED and recreated:", b.generation.seq, b.from);
    show_plan(&m, &targets, new_uuids);
    // A filesystem another system mounts too (a shared ESP): a new UUID
    // leaves that system's fstab naming the old one. Said before, and after.
    let shared = if new_uuids { shared_with_others(&source, &cfg, system, &targets) } else { Vec::new() };
    for sh in &shared {
        println!(
            "  note: {} (UUID={}) is also {}'s {}: it gets a new UUID, and {}'s /etc/fstab is not changed by this restore: {} will not mount it until its fstab names the new UUID",
            sh.mountpoint, sh.uuid, sh.other, sh.other_mountpoint, sh.other, sh.other
        );
    }
    if !yes && !output::confirm("Wipe them?")? {
        refuse!(Refusal::NotConfirmed, "nothing written: pass --yes to restore without asking");
    }
    let start = Instant::now();
    let r = recreate(&b, system, &mut targets, new_uuids, &[])?;
    check_fstab(system, &r.fstab)?;
    let _ = slot_mounts.unmount();
    for sh in &shared {
        if let Some((_, new)) = r.uuid_map.iter().find(|(old, _)| old.eq_ignore_ascii_case(&sh.uuid)) {
            eprintln!(
                "warning: {}'s /etc/fstab names its {} as UUID={}; the restored filesystem is UUID={new}: change that line (`crossback chroot {}`), or {} does not boot",
                sh.other, sh.other_mountpoint, sh.uuid, sh.other, sh.other
            );
        }
    }
    let outcome = report(r.entries, &r.damaged, &r.failed, start);
    if new_uuids {
        if let Some(root) = r.uuid_map.iter().find(|(old, _)| cfg.system(system).is_some_and(|s| s.root.get_ref().eq_ignore_ascii_case(old))) {
            crate::config::set_system_root(path, system, &root.1)?;
            println!("{} now names {system}'s new root UUID {}", path.display(), root.1);
        }
        match (&r.grub, boot_repair) {
            (Some(g), true) => repair_grub(path, system, g, crate::stack::open::key_files())?,
            (Some(_), false) => println!("boot: left as it is (--no-boot-repair): its bootloader still names the old UUIDs"),
            (None, _) => println!("next: `crossback chroot {system}` to make its bootloader find the new UUIDs (crossback repairs GRUB EFI only)"),
        }
    } else {
        println!("next: `crossback chroot {system}` if its bootloader needs repair (e.g. grub-install, update-initramfs -u)");
    }
    Ok(outcome)
}

/// A filesystem being restored that another configured system mounts too.
struct Shared {
    mountpoint: String,
    uuid: String,
    other: String,
    other_mountpoint: String,
}

/// The targets' filesystems that another system's newest backup records
/// by the same UUID (a shared ESP). A system whose backup does not read is
/// said and left out: this is advice, not a check of the restore.
fn shared_with_others(source: &super::Source, cfg: &Config, system: &str, targets: &[Target]) -> Vec<Shared> {
    let mut out = Vec::new();
    for other in cfg.systems.iter().map(|s| s.name.get_ref()).filter(|n| n.as_str() != system) {
        let ob = match source.find(other, None) {
            Ok(ob) => ob,
            Err(e) if crate::error::kind_of(&e) == Some(Refusal::NoBackup) => continue,
            Err(e) => {
                eprintln!("note: {other}'s backup does not read ({e:#}): whether it shares a filesystem with {system} is not known");
                continue;
            }
        };
        for r in targets.iter().map(|t| &t.records[0]).filter(|r| !r.uuid.is_empty()) {
            if let Some(o) = ob.mounts.filesystems.iter().find(|o| o.uuid.eq_ignore_ascii_case(&r.uuid)) {
                out.push(Shared { mountpoint: r.mountpoint.clone(), uuid: r.uuid.clone(), other: other.clone(), other_mountpoint: o.mountpoint.clone() });
            }
        }
    }
    out
}

/// `text` with every spelling of `old` (as is, upper, lower case) as
/// `new`; an empty `old` (a filesystem that had no UUID) changes nothing.
fn replace_ci(text: &str, old: &str, new: &str) -> String {
    if old.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(old, new);
    out = out.replace(&old.to_uppercase(), new).replace(&old.to_lowercase(), new);
    out
}

/// Files at or beneath `rel` in the restored tree that name an old UUID:
/// walked beneath its root, never through a symlink (a restored
/// `etc/kernel -> /proc` leads nowhere), only regular files read (never a
/// FIFO or a device), to a bounded depth.
fn find_mentions(root: &Dir, rel: &str, map: &[(String, String)], out: &mut Vec<String>, depth: usize) {
    let names_old = |bytes: &[u8]| {
        let t = String::from_utf8_lossy(bytes).to_lowercase();
        map.iter().any(|(old, _)| !old.is_empty() && t.contains(&old.to_lowercase()))
    };
    let Ok(dir) = root.dir(rel) else {
        if root.read_capped(rel, 1 << 20).is_ok_and(|b| names_old(&b)) {
            out.push(format!("/{rel}"));
        }
        return;
    };
    if depth == 0 {
        return;
    }
    // Only hints: a directory that does not read is not searched.
    for (name, kind) in dir.entries().unwrap_or_default() {
        let Some(name) = name.to_str() else { continue };
        let p = format!("{rel}/{name}");
        match kind {
            crossback_host::beneath::Kind::Dir => find_mentions(root, &p, map, out, depth - 1),
            crossback_host::beneath::Kind::File if dir.read_capped(name, 1 << 20).is_ok_and(|b| names_old(&b)) => out.push(format!("/{p}")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The restored tree is read beneath its root: a symlink out
    /// of it (`etc/kernel -> /proc`) is not followed, a FIFO is not opened
    /// (this test would hang), and an empty UUID (a filesystem that had
    /// none) matches nothing and replaces nothing.
    #[test]
    fn the_restored_tree_is_read_beneath_it_and_empty_uuids_match_nothing() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc/default")).unwrap();
        std::os::unix::fs::symlink("/proc", root.join("etc/kernel")).unwrap();
        std::fs::create_dir_all(root.join("boot/grub")).unwrap();
        std::fs::write(root.join("boot/grub/grub.cfg"), "search --fs-uuid 1234-ABCD\n").unwrap();
        std::fs::write(root.join("etc/default/grub"), "nothing here\n").unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, root.join("etc/default/fifo").as_path(), rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0)
            .unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("etc/crypttab.initramfs")).unwrap();
        let dir = Dir::open(root).unwrap();
        let map = vec![("1234-abcd".to_string(), "5678-EF01".to_string()), (String::new(), "9999-0000".to_string())];
        let mut found = Vec::new();
        for d in ["etc/default", "etc/kernel", "boot", "etc/crypttab.initramfs"] {
            find_mentions(&dir, d, &map, &mut found, 16);
        }
        assert_eq!(found, ["/boot/grub/grub.cfg"]);
        assert_eq!(replace_ci("UUID=abc / ext4\n", "", "9999-0000"), "UUID=abc / ext4\n");
        assert_eq!(replace_ci("UUID=1234-ABCD /\n", "1234-abcd", "5678-EF01"), "UUID=5678-EF01 /\n");
    }
}
