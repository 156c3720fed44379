//! `crossback ls SYSTEM` and `crossback restore SYSTEM`: a system's backup
//! browsed like a directory, and restored — some paths, the whole system
//! into a directory, or onto its own (or new) filesystems.

use crossback_host::tool::Tool;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use crossback_archive::extract::ExtractOptions;
use crossback_archive::Progress;
use crossback_host::beneath::Dir;
use crossback_host::lock::Lock;
use crossback_host::offline::{self, FsMount};

use crate::backups::{self, SystemBackup};
use crate::cli::{LsSystemArgs, RestoreArgs};
use crate::config::Config;
use crate::error::{refuse, Refusal};
use crate::layout::{ArchiveRecord, FsRecord};
use crate::machine::{self, Machine};
use crate::output::{self, Bar};
use crate::{refuse, slots, Outcome};

mod disk;
mod layers;

/// What the slots' read-only view and the system's backup hold open.
struct Opened {
    cfg: Config,
    machine: Machine,
    _slots: Vec<slots::Slot>,
    mounts: offline::Mounted,
    backup: SystemBackup,
    _locks: Vec<Lock>,
}

/// Locks the system (`write`: its filesystems are about to be written),
/// mounts the slots read-only (privately) and finds the system's backup.
fn open(path: &Path, system: &str, generation: Option<u64>, write: bool) -> anyhow::Result<Opened> {
    let mut locks = Vec::new();
    if write {
        let cfg = Config::load(path)?;
        let sys =
            cfg.system(system).with_context(|| refuse(Refusal::UnknownSystem, format!("no system called {:?} in the configuration", output::text(system))))?;
        locks.push(slots::lock_system(system, sys.root.get_ref())?);
    }
    let v = slots::open_read_only(path, "crossback-restore")?;
    v.say_damaged();
    let backup = backups::find(&v.slots, system, generation)?;
    locks.push(v.lock);
    Ok(Opened { cfg: v.cfg, machine: v.machine, _slots: v.slots, mounts: v.mounts, backup, _locks: locks })
}

/// What `restore` was asked to do, resolved and checked before any work
/// (options that do not apply to the mode are errors, not ignored).
enum Mode {
    /// Some paths, or the whole system, into a directory.
    Into { to: PathBuf, paths: Vec<String>, force: bool },
    /// Recreate the filesystems and restore onto them.
    BareMetal { devices: Vec<(String, PathBuf)>, new_uuids: bool, yes: bool, boot_repair: bool },
    /// Recreate a disk's partition table, its filesystems, and restore
    /// every system (or the one named) that was on it; then the boot entries.
    Disk { disk: PathBuf, system: Option<String>, yes: bool, boot_repair: bool, new_key: Option<disk::NewKey>, new_uuids: bool },
}

fn resolve(a: &RestoreArgs) -> anyhow::Result<Mode> {
    let usage = |m: String| Err(refuse(Refusal::Usage, m));
    if a.bare_metal {
        if !a.paths.is_empty() {
            return usage(format!(
                "--bare-metal restores the whole system; it takes no paths ({} given). To restore some files, use --to DIR {}",
                a.paths.iter().map(|p| output::text(p)).collect::<Vec<_>>().join(" "),
                a.paths.iter().map(|p| output::text(p)).collect::<Vec<_>>().join(" ")
            ));
        }
        if a.force {
            return usage("--force goes with --to DIR; --bare-metal asks before wiping (--yes answers for you)".into());
        }
        if let Some(disk) = &a.disk {
            if !a.devices.is_empty() {
                return usage("--disk makes the recorded partitions: it takes no --device (for a layout of your own, partition the disk and give --device MOUNTPOINT=DEV)".into());
            }
            let new_key = a.new_luks_key.then(|| disk::NewKey { file: a.new_key_file.clone() });
            return Ok(Mode::Disk {
                disk: disk.clone(),
                system: a.system.clone(),
                yes: a.yes,
                boot_repair: !a.no_boot_repair,
                new_key,
                new_uuids: a.new_uuids,
            });
        }
        if a.system.is_none() {
            return usage("name the system to restore (only --disk restores every system of a disk)".into());
        }
        let mut devices: Vec<(String, PathBuf)> = Vec::new();
        for d in &a.devices {
            let Some((mp, dev)) = d.split_once('=') else {
                return usage(format!("--device {}: write MOUNTPOINT=DEVICE, e.g. --device /home=/dev/sdb2", output::text(d)));
            };
            if devices.iter().any(|(m, _)| m == mp) {
                return usage(format!("--device names {} twice", output::text(mp)));
            }
            devices.push((mp.to_string(), PathBuf::from(dev)));
        }
        return Ok(Mode::BareMetal { devices, new_uuids: a.new_uuids, yes: a.yes, boot_repair: !a.no_boot_repair });
    }
    for (set, opt) in [
        (!a.devices.is_empty(), "--device"),
        (a.new_uuids, "--new-uuids"),
        (a.yes, "--yes"),
        (a.disk.is_some(), "--disk"),
        (a.no_boot_repair, "--no-boot-repair"),
    ] {
        if set {
            return usage(format!("{opt} goes with --bare-metal only"));
        }
    }
    let Some(to) = a.to.clone() else {
        return usage("say where: --to DIR (files or the whole system into a directory) or --bare-metal (onto its filesystems)".into());
    };
    Ok(Mode::Into { to, paths: a.paths.clone(), force: a.force })
}

pub fn ls(path: &Path, a: LsSystemArgs) -> anyhow::Result<Outcome> {
    machine::require_root("ls")?;
    let Opened { mut mounts, backup: b, .. } = open(path, &a.system, a.generation, false)?;
    let want = a.path.clone().unwrap_or_else(|| "/".into());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut found = false;
    if let Some(set) = &b.record.legacy {
        let prefix = crossback_archive::entry::normalize_path(want.as_bytes()).context("a '..' in the path")?;
        crate::duplicity::walk(&b.slot_root, set, |meta, _| {
            if crossback_archive::archive::under(&meta.path, &prefix) {
                found = true;
                let e = crossback_archive::IndexEntry::of(meta);
                crate::commands::archive::write_entry(&mut out, &e, "", a.json)?;
            }
            Ok(())
        })?;
        out.flush()?;
        drop(out);
        let _ = mounts.unmount();
        if !found {
            refuse!(Refusal::NotInBackup, "{} is not in {}'s backup in generation {}", output::text(&want), a.system, b.generation.seq);
        }
        return Ok(Outcome::Ok);
    }
    // The archive holding the path, and those of mount points below it.
    let (_, rest) = b.locate(&want).with_context(|| refuse(Refusal::NotInBackup, format!("no archive of {} holds {}", a.system, output::text(&want))))?;
    let norm = format!("/{}", want.trim_matches('/'));
    for ar in &b.record.archives {
        let mp = ar.mountpoint.trim_end_matches('/');
        let prefix_in: Vec<u8> = if b.locate(&want).is_some_and(|(x, _)| x.file == ar.file) {
            rest.as_bytes().to_vec()
        } else if norm == "/" || mp.starts_with(&format!("{}/", norm.trim_end_matches('/'))) {
            Vec::new()
        } else {
            continue;
        };
        let archive = b.open_archive(ar)?;
        let Some(index) = archive.index()? else { bail!("{} has no index: it is damaged; run `crossback verify`", ar.file) };
        for e in index {
            let e = e?;
            if crossback_archive::archive::under(&e.path, &prefix_in) {
                found = true;
                crate::commands::archive::write_entry(&mut out, &e, mp, a.json)?;
            }
        }
    }
    out.flush()?;
    drop(out);
    let _ = mounts.unmount();
    if !found {
        refuse!(Refusal::NotInBackup, "{} is not in {}'s backup in generation {}", output::text(&want), a.system, b.generation.seq);
    }
    Ok(Outcome::Ok)
}

/// Restores every archive (or the given paths), each into the directory
/// `dest_for` gives for it (its mount point beneath a target directory, or
/// its own new filesystem).
fn restore_into(
    b: &SystemBackup,
    dest_for: &dyn Fn(&ArchiveRecord) -> anyhow::Result<Option<Dir>>,
    paths: &[String],
) -> anyhow::Result<(u64, Vec<String>, Vec<String>)> {
    let mut entries = 0;
    let mut damaged = Vec::new();
    let mut failed = Vec::new();
    // Parents first: / before /home before /home/x.
    let mut archives: Vec<_> = b.record.archives.iter().collect();
    archives.sort_by_key(|a| a.mountpoint.matches('/').count() + usize::from(a.mountpoint != "/"));
    for ar in archives {
        let mut sel = Vec::new();
        if !paths.is_empty() {
            for p in paths {
                if let Some((x, rest)) = b.locate(p) {
                    if x.file == ar.file {
                        sel.push(rest.into_bytes());
                    }
                }
                let norm = format!("/{}", p.trim_matches('/'));
                if ar.mountpoint.starts_with(&format!("{}/", norm.trim_end_matches('/'))) || norm == "/" {
                    sel.push(Vec::new());
                }
            }
            if sel.is_empty() {
                continue;
            }
            if sel.iter().any(|s| s.is_empty()) {
                sel.clear();
            }
        }
        // None: this archive's filesystem is restored by someone else.
        let Some(dest_dir) = dest_for(ar)? else { continue };
        let dest = dest_dir.fd_path();
        let archive = b.open_archive(ar)?;
        let progress = Arc::new(Progress::default());
        let bar = Bar::start(Arc::clone(&progress), if sel.is_empty() { ar.data_bytes } else { 0 }, "restoring");
        let r = crossback_archive::extract(&archive, &dest, &ExtractOptions { paths: sel, progress: Some(progress), threads: 0 });
        bar.finish();
        let r = r.with_context(|| format!("restoring {} into {}", ar.file, dest_dir.shown().display()))?;
        entries += r.entries;
        let shown = |p: &[u8]| format!("{}{}", ar.mountpoint.trim_end_matches('/'), output::path(p));
        damaged.extend(r.damaged.iter().map(|(p, w)| format!("{}: {w}", shown(p))));
        if let Some(p) = &r.archive_problem {
            damaged.push(format!("{}: {p}", ar.file));
        }
        failed.extend(r.failed.iter().map(|(p, w)| format!("{}: {w}", shown(p))));
        for (p, w) in &r.warnings {
            eprintln!("  warning: {}: {w}", shown(p));
        }
        println!("  {:<10} {} from {}", ar.mountpoint, output::count(r.entries, "entry", "entries"), ar.file);
    }
    Ok((entries, damaged, failed))
}

fn report(entries: u64, damaged: &[String], failed: &[String], start: Instant) -> Outcome {
    println!("restored {} in {:.1}s", output::count(entries, "entry", "entries"), start.elapsed().as_secs_f64());
    for (title, list) in [("damaged in the backup (the rest was restored)", damaged), ("not restored", failed)] {
        if !list.is_empty() {
            eprintln!("{title}:");
            for l in list.iter().take(50) {
                eprintln!("  {l}");
            }
            if list.len() > 50 {
                eprintln!("  … and {} more", list.len() - 50);
            }
        }
    }
    if !damaged.is_empty() {
        Outcome::Damaged
    } else if !failed.is_empty() {
        Outcome::Partial
    } else {
        Outcome::Ok
    }
}

pub fn restore(path: &Path, a: RestoreArgs) -> anyhow::Result<Outcome> {
    machine::require_root("restore")?;
    let mode = resolve(&a)?;
    match mode {
        Mode::BareMetal { devices, new_uuids, yes, boot_repair } => bare_metal(path, &a, &devices, new_uuids, yes, boot_repair),
        Mode::Disk { disk, system, yes, boot_repair, new_key, new_uuids } => {
            disk::run(path, &disk, system.as_deref(), a.generation, disk::Options { yes, boot_repair, new_key, new_uuids })
        }
        Mode::Into { to, paths, force } => into_dir(path, &a, to, &paths, force),
    }
}

fn into_dir(path: &Path, a: &RestoreArgs, to: PathBuf, paths: &[String], force: bool) -> anyhow::Result<Outcome> {
    let system = a.system.as_deref().context("clap requires it without --disk")?;
    let mut selected: Vec<Vec<u8>> = Vec::new();
    for p in paths {
        match crossback_archive::entry::normalize_path(p.as_bytes()) {
            Some(n) => selected.push(n),
            None => refuse!(Refusal::Usage, "{}: a path with '..' names nothing in the backup", output::text(p)),
        }
    }
    let to = if to.is_absolute() { to } else { std::env::current_dir()?.join(to) };
    backups::check_target(&to, force)?;
    // Locked and found before the target is made: a refusal writes nothing.
    let Opened { mut mounts, backup: b, .. } = open(path, system, a.generation, false)?;
    std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
    let to = std::fs::canonicalize(&to).with_context(|| format!("resolving {}", to.display()))?;
    let target = Dir::open_crossing_mounts(&to)?;
    println!("restoring {system} from generation {} (slot {}) into {}", b.generation.seq, b.slot, to.display());
    let start = Instant::now();
    if let Some(set) = &b.record.legacy {
        let (entries, problems) = crate::duplicity::restore(&b.slot_root, set, &target.fd_path(), &selected)?;
        let _ = mounts.unmount();
        return Ok(report(entries, &[], &problems, start));
    }
    // A recorded mount point is a plain path, resolved beneath the target without following anything.
    let beneath = |ar: &ArchiveRecord| -> anyhow::Result<Option<Dir>> {
        target
            .create_dirs(ar.mountpoint.trim_start_matches('/'))
            .map(Some)
            .map_err(|e| refuse(Refusal::SlotHostile, format!("restoring {}: {e}", ar.mountpoint)))
    };
    let (entries, damaged, failed) = restore_into(&b, &beneath, paths)?;
    let _ = mounts.unmount();
    Ok(report(entries, &damaged, &failed, start))
}

/// A filesystem to recreate: the record(s) sharing one device (a btrfs
/// with several subvolumes is one filesystem), and where it goes.
struct Target {
    records: Vec<FsRecord>,
    device: PathBuf,
    new_uuid: Option<String>,
}

/// `mkfs` with the recorded identity (or a new one). What was on the device
/// is wiped first: a filesystem made over its own old copy (btrfs, say)
/// must not see the old superblock and take its UUID for someone else's.
fn mkfs(t: &Target) -> anyhow::Result<()> {
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
fn targets(b: &SystemBackup, m: &Machine, explicit: &[(String, PathBuf)], system: &str) -> anyhow::Result<Vec<Target>> {
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
fn check_targets(targets: &[Target], m: &Machine, cfg: &Config, new_uuids: bool) -> anyhow::Result<()> {
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
        let holders = crate::unlock::holders(d);
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
        if !m.mounts_of(d).is_empty() {
            refuse!(
                Refusal::TargetInUse,
                "{} is mounted at {}: unmount it first (nothing was written)",
                d.path.display(),
                m.mounts_of(d).iter().map(|x| x.mountpoint.as_str()).collect::<Vec<_>>().join(", ")
            );
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
struct Restored {
    entries: u64,
    damaged: Vec<String>,
    failed: Vec<String>,
    /// Old UUID → new one (with --new-uuids).
    uuid_map: Vec<(String, String)>,
    /// The restored root's /etc/fstab ("" when the root was not among them).
    fstab: String,
    /// With new UUIDs: the GRUB EFI installation that needs repair.
    grub: Option<GrubRepair>,
}

/// Prints what will be wiped and made: one line a filesystem.
fn show_plan(m: &Machine, targets: &[Target], new_uuids: bool) {
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
fn recreate(b: &SystemBackup, system: &str, targets: &mut [Target], new_uuids: bool, also: &[(String, String)]) -> anyhow::Result<Restored> {
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
    let (entries, damaged, failed) = restore_into(b, &own_fs, &[])?;
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
fn check_fstab(system: &str, text: &str) -> anyhow::Result<()> {
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

fn bare_metal(path: &Path, a: &RestoreArgs, explicit: &[(String, PathBuf)], new_uuids: bool, yes: bool, boot_repair: bool) -> anyhow::Result<Outcome> {
    let system = a.system.as_deref().context("checked when the mode was resolved")?;
    // An encrypted or LVM system restored in place: its containers opened
    // and volume groups activated (read-write) first, so its filesystems are found.
    let configured = crate::config::Config::load(path)?;
    let _layers = match configured.system(system) {
        Some(sc) if (!sc.luks.is_empty() || !sc.lvm.is_empty()) && explicit.is_empty() => {
            Some(crate::unlock::open_one(&configured, system, crate::unlock::Access::Write)?.0)
        }
        _ => None,
    };
    let Opened { cfg, machine: m, mounts: mut slot_mounts, backup: b, _slots: slot_list, .. } = open(path, system, a.generation, true)?;
    refuse_legacy(&b, system)?;
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
    println!("bare-metal restore of {system} from generation {} (slot {}): these filesystems will be WIPED and recreated:", b.generation.seq, b.slot);
    show_plan(&m, &targets, new_uuids);
    // A filesystem another system mounts too (a shared ESP): a new UUID
    // leaves that system's fstab naming the old one. Said before, and after.
    let shared = if new_uuids { shared_with_others(&slot_list, &cfg, system, &targets) } else { Vec::new() };
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
            (Some(g), true) => repair_grub(path, system, g, crate::unlock::key_files())?,
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
fn shared_with_others(slot_list: &[slots::Slot], cfg: &Config, system: &str, targets: &[Target]) -> Vec<Shared> {
    let mut out = Vec::new();
    for other in cfg.systems.iter().map(|s| s.name.get_ref()).filter(|n| n.as_str() != system) {
        let ob = match backups::find(slot_list, other, None) {
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

/// What a GRUB EFI system needs repaired after its filesystems got new UUIDs.
struct GrubRepair {
    /// The ESP's mount point in the system (`/boot/efi`).
    esp: String,
    /// The loader directory on the ESP whose grub.cfg named the old root (`debian`).
    id: Option<String>,
    /// The initramfs names an old UUID too (crypttab, resume).
    initramfs: bool,
}

/// Finds out whether the restored system boots with GRUB EFI, and from which
/// loader directory: the one whose grub.cfg searches for the old root UUID.
fn grub_of(dests: &[(String, PathBuf)], records: &[&FsRecord], root_partition: Option<u32>, others: &[String]) -> Option<GrubRepair> {
    let (_, tree) = dests.iter().find(|(mp, _)| mp == "/")?;
    let root = Dir::open(tree).ok()?;
    let has = |dir: &str, name: &str| root.dir(dir).ok().and_then(|d| d.kind(name).ok().flatten()).is_some();
    if !has("usr/sbin", "grub-install") && !has("usr/bin", "grub-install") {
        return None;
    }
    let esp = records.iter().find(|r| r.fstype == "vfat" && matches!(r.mountpoint.as_str(), "/boot/efi" | "/efi" | "/boot"))?;
    let (_, esp_at) = dests.iter().find(|(mp, _)| *mp == esp.mountpoint)?;
    let old_root = records.iter().find(|r| r.mountpoint == "/").map(|r| r.uuid.to_lowercase()).unwrap_or_default();
    // With /boot apart (encrypted installs), GRUB's image names /boot's filesystem.
    let old_boot = records.iter().find(|r| r.mountpoint == "/boot" && r.fstype != "vfat").map(|r| r.uuid.to_lowercase());
    let mut id = None;
    if let Ok(efi) = Dir::open(esp_at).and_then(|d| d.dir("EFI").or_else(|_| d.dir("efi"))) {
        for (name, _) in efi.entries().unwrap_or_default() {
            let Some(name) = name.to_str().map(str::to_string) else { continue };
            let Ok(dir) = efi.dir(&name) else { continue };
            // A signed GRUB (shim) reads grub.cfg on the ESP; an unsigned
            // one carries its search in its image: the root's UUID, or (as
            // Debian 12 installs it) the root's partition, `(,gpt2)/boot/grub`.
            let marks: Vec<String> =
                [Some(old_root.clone()), old_boot.clone(), root_partition.map(|n| format!("(,gpt{n})/")), root_partition.map(|n| format!("(,msdos{n})/"))]
                    .into_iter()
                    .flatten()
                    .filter(|m| !m.is_empty())
                    .collect();
            let names_root = |file: &str| {
                dir.read_capped(file, 16 << 20).is_ok_and(|b| {
                    let text = String::from_utf8_lossy(&b).to_lowercase();
                    marks.iter().any(|m| text.contains(m.as_str()))
                })
            };
            let efi_files: Vec<String> = dir
                .entries()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(n, _)| n.to_str().map(str::to_string))
                .filter(|n| n.to_lowercase().ends_with(".efi") || n == "grub.cfg")
                .collect();
            if !marks.is_empty() && !name.eq_ignore_ascii_case("boot") && efi_files.iter().any(|f| names_root(f)) {
                id = Some(name);
                break;
            }
        }
    }
    let initramfs = others.iter().any(|o| o.starts_with("/etc/crypttab") || o.starts_with("/etc/initramfs-tools"));
    Some(GrubRepair { esp: esp.mountpoint.clone(), id, initramfs })
}

/// Reinstalls GRUB EFI and regenerates its configuration (and the
/// initramfs when it names an old UUID) with the system's own tools, in a
/// chroot of the restored system (`crossback chroot`). Each step is its own
/// argument vector — a name read from the ESP or the restored tree is one
/// argument, never shell text — and the first that fails is said as failed.
fn repair_grub(path: &Path, system: &str, g: &GrubRepair, keys: &[PathBuf]) -> anyhow::Result<()> {
    let steps = grub_steps(g);
    let shown: Vec<String> = steps.iter().map(|s| s.iter().map(|a| output::text(a)).collect::<Vec<_>>().join(" ")).collect();
    println!("boot: repairing {system}'s GRUB for its new UUIDs, in a chroot: {}", shown.join(", then "));
    // udev's /dev/disk/by-uuid links for the new filesystems: update-grub
    // names the root by UUID only when its link exists.
    let _ = Tool::new("udevadm").arg("settle").output();
    let exe = std::env::current_exe().context("finding crossback's own binary")?;
    for (step, shown) in steps.iter().zip(&shown) {
        // The chroot opens the system's containers: with the same keys.
        let mut cmd = Command::new(&exe);
        cmd.arg("--config").arg(path);
        for k in keys {
            cmd.arg("--key-file").arg(k);
        }
        let status = cmd.args(["chroot", system, "--"]).args(step).status().context("running crossback chroot")?;
        if !status.success() {
            refuse!(
                Refusal::BootRepair,
                "repairing {system}'s bootloader failed: `{shown}` ended with {status}; the files are restored: repair it by hand in `crossback chroot {system}`"
            );
        }
    }
    println!("boot: {system}'s GRUB now finds its new UUIDs{}", g.id.as_ref().map(|i| format!(" (loader EFI/{})", output::text(i))).unwrap_or_default());
    Ok(())
}

/// The commands of a GRUB repair, each an argument vector.
fn grub_steps(g: &GrubRepair) -> Vec<Vec<String>> {
    let mut install = vec!["grub-install".to_string(), "--target=x86_64-efi".to_string(), format!("--efi-directory={}", g.esp)];
    if let Some(id) = &g.id {
        install.push(format!("--bootloader-id={id}"));
    }
    let mut steps = vec![install, vec!["update-grub".to_string()]];
    if g.initramfs {
        steps.push(["update-initramfs", "-u", "-k", "all"].map(String::from).to_vec());
    }
    steps
}

fn refuse_legacy(b: &SystemBackup, system: &str) -> anyhow::Result<()> {
    if b.record.legacy.is_some() {
        refuse!(
            Refusal::Unsupported,
            "generation {} of {system} is a duplicity backup: it records no filesystem layout; restore it with --to DIR, or bare-metal from a crossback generation",
            b.generation.seq
        );
    }
    Ok(())
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

    fn record(mountpoint: &str, fstype: &str, uuid: &str) -> FsRecord {
        FsRecord {
            mountpoint: mountpoint.into(),
            fstype: fstype.into(),
            uuid: uuid.into(),
            label: String::new(),
            partuuid: String::new(),
            subvol: None,
            size: 0,
            used: 0,
            options: vec![],
            fstab_line: String::new(),
            archive: String::new(),
            params: vec![],
            on: String::new(),
        }
    }

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

    /// A loader directory named like a shell command stays one
    /// argument of grub-install; every step runs, as its own vector.
    #[test]
    fn grub_repair_runs_argument_vectors_not_shell_text() {
        for id in ["x;touch${IFS}INJECTED;#", "a b", "$(reboot)", "`id`", "x'\"y"] {
            let g = GrubRepair { esp: "/boot/efi".into(), id: Some(id.into()), initramfs: true };
            let steps = grub_steps(&g);
            assert_eq!(steps.len(), 3, "{id}");
            assert_eq!(steps[0], ["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi", &format!("--bootloader-id={id}")]);
            assert_eq!(steps[1], ["update-grub"]);
            assert_eq!(steps[2], ["update-initramfs", "-u", "-k", "all"]);
        }
        let g = GrubRepair { esp: "/efi".into(), id: None, initramfs: false };
        assert_eq!(grub_steps(&g), [vec!["grub-install", "--target=x86_64-efi", "--efi-directory=/efi"], vec!["update-grub"]]);
    }

    #[test]
    fn grub_is_repaired_from_the_loader_directory_that_named_the_old_root() {
        let t = tempfile::tempdir().unwrap();
        let (root, esp) = (t.path().join("root"), t.path().join("esp"));
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::create_dir_all(esp.join("EFI/other")).unwrap();
        std::fs::create_dir_all(esp.join("EFI/debian-a")).unwrap();
        std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
        let old = "0a1b2c3d-0000-4000-8000-00000000abcd";
        std::fs::write(esp.join("EFI/other/grub.cfg"), "search.fs_uuid 11111111-0000-4000-8000-000000000000 root\n").unwrap();
        std::fs::write(esp.join("EFI/BOOT/grub.cfg"), format!("search.fs_uuid {} root\n", old.to_uppercase())).unwrap();
        std::fs::write(esp.join("EFI/debian-a/grub.cfg"), format!("search.fs_uuid {old} root hd0,gpt2\n")).unwrap();
        let dests = vec![("/".to_string(), root.clone()), ("/boot/efi".to_string(), esp.clone())];
        let (r, e) = (record("/", "ext4", old), record("/boot/efi", "vfat", "ABCD-1234"));
        let records = vec![&r, &e];
        // No grub-install in the system: nothing crossback knows to repair.
        assert!(grub_of(&dests, &records, None, &[]).is_none());
        std::fs::write(root.join("usr/sbin/grub-install"), "").unwrap();
        let g = grub_of(&dests, &records, None, &["/etc/crypttab".to_string()]).unwrap();
        assert_eq!((g.esp.as_str(), g.id.as_deref(), g.initramfs), ("/boot/efi", Some("debian-a"), true));
        let g = grub_of(&dests, &records, None, &["/boot/grub/grub.cfg".to_string()]).unwrap();
        assert!(!g.initramfs);
        // An unsigned GRUB: the search is embedded in its image, no grub.cfg.
        std::fs::remove_file(esp.join("EFI/debian-a/grub.cfg")).unwrap();
        assert_eq!(grub_of(&dests, &records, None, &[]).unwrap().id, None);
        std::fs::write(esp.join("EFI/debian-a/grubx64.efi"), format!("\x7fMZ...search.fs_uuid {old} root...")).unwrap();
        assert_eq!(grub_of(&dests, &records, None, &[]).unwrap().id.as_deref(), Some("debian-a"));
        // Debian 12's unsigned GRUB names the root's partition, not its UUID.
        std::fs::write(esp.join("EFI/debian-a/grubx64.efi"), "\x7fMZ...prefix...(,gpt2)/boot/grub...").unwrap();
        std::fs::write(esp.join("EFI/other/grubx64.efi"), "\x7fMZ...prefix...(,gpt4)/@/boot/grub...").unwrap();
        assert_eq!(grub_of(&dests, &records, None, &[]).unwrap().id, None);
        assert_eq!(grub_of(&dests, &records, Some(2), &[]).unwrap().id.as_deref(), Some("debian-a"));
        assert_eq!(grub_of(&dests, &records, Some(4), &[]).unwrap().id.as_deref(), Some("other"));
    }
}
