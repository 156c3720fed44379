//! `crossback restore SYSTEM`: a system's backup restored — some paths,
//! the whole system into a directory, or onto its own (or new)
//! filesystems (`bare_metal`), a whole disk (`disk`), with what the
//! systems sit in (`layers`) and their bootloader (`grub`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use crossback_archive::extract::ExtractOptions;
use crossback_archive::{Archive, Progress};
use crossback_host::beneath::Dir;
use crossback_host::lock::Lock;
use crossback_host::offline;

use crate::backups::{self, SystemBackup};
use crate::cli::{FromRemote, RestoreArgs};
use crate::config::Config;
use crate::error::{refuse, Refusal};
use crate::layout::ArchiveRecord;
use crate::machine::{self, Machine};
use crate::output::{self, Bar};
use crate::{refuse, slots, Outcome};

mod bare_metal;
mod disk;
mod grub;

/// What the slots' read-only view and the system's backup hold open.
pub(super) struct Opened {
    pub(super) cfg: Config,
    /// The machine's devices: as the slots' view scanned them, or scanned
    /// for a restore that writes (`None`: a remote read into a directory).
    pub(super) machine: Option<Machine>,
    pub(super) source: Source,
    pub(super) mounts: offline::Mounted,
    pub(super) backup: SystemBackup,
    pub(super) _locks: Vec<Lock>,
}

/// Where the backups are read from.
pub(super) enum Source {
    Slots(Vec<slots::Slot>),
    /// A remote's store, and its key (unlocked).
    Remote(Arc<crate::remote::Store>, age::x25519::Identity),
}

impl Source {
    /// `system`'s newest backup here (or in `generation`).
    pub(super) fn find(&self, system: &str, generation: Option<u64>) -> anyhow::Result<SystemBackup> {
        match self {
            Source::Slots(slots) => backups::find(slots, system, generation),
            Source::Remote(store, key) => backups::find_remote(store, key, system, generation),
        }
    }
}

/// Locks the system (`write`: its filesystems are about to be written),
/// mounts the slots read-only (privately) and finds the system's backup —
/// or finds it on a remote.
pub(super) fn open(path: &Path, system: &str, generation: Option<u64>, write: bool, from: &FromRemote) -> anyhow::Result<Opened> {
    let mut locks = Vec::new();
    if write {
        let cfg = Config::load(path)?;
        let sys =
            cfg.system(system).with_context(|| refuse(Refusal::UnknownSystem, format!("no system called {:?} in the configuration", output::text(system))))?;
        locks.push(slots::lock_system(system, sys.root.get_ref())?);
    }
    if let Some(name) = &from.remote {
        let cfg = Config::load(path)?;
        let (store, key) = super::remote::open_read(&cfg, name, from.machine.as_deref(), from.as_of, &format!("reading {system}'s backup on remote {name}"))?;
        let source = Source::Remote(store, key);
        let backup = source.find(system, generation)?;
        let machine = if write { Some(Machine::scan(&[])?) } else { None };
        return Ok(Opened { cfg, machine, source, mounts: offline::Mounted::default(), backup, _locks: locks });
    }
    let v = slots::open_read_only(path, "crossback-restore")?;
    v.say_damaged();
    let backup = backups::find(&v.slots, system, generation)?;
    locks.push(v.lock);
    Ok(Opened { cfg: v.cfg, machine: Some(v.machine), source: Source::Slots(v.slots), mounts: v.mounts, backup, _locks: locks })
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
    Disk { disk: PathBuf, system: Option<String>, yes: bool, boot_repair: bool, new_key: Option<crate::stack::recreate::NewKey>, new_uuids: bool },
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
            let new_key = a.new_luks_key.then(|| crate::stack::recreate::NewKey { file: a.new_key_file.clone() });
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

/// An archive a restore reads, and what it takes from it (nothing: all).
pub(super) struct Selected<'a> {
    record: &'a ArchiveRecord,
    paths: Vec<Vec<u8>>,
    archive: Archive,
}

/// The archives a restore of `paths` (none: everything) reads, parents
/// first (/ before /home before /home/x), each with what to take from it
/// (nothing: all of it), opened and checked against their records: a
/// refused archive is refused before anything is written.
pub(super) fn open_selected<'a>(b: &'a SystemBackup, paths: &[String]) -> anyhow::Result<Vec<Selected<'a>>> {
    let mut archives: Vec<_> = b.record.archives.iter().collect();
    archives.sort_by_key(|a| a.mountpoint.matches('/').count() + usize::from(a.mountpoint != "/"));
    let mut out = Vec::new();
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
        out.push(Selected { record: ar, paths: sel, archive: b.open_archive(ar)? });
    }
    Ok(out)
}

/// Restores the archives [`open_selected`] opened, each into the directory
/// `dest_for` gives for it (its mount point beneath a target directory, or
/// its own new filesystem).
pub(super) fn restore_into(
    opened: Vec<Selected>,
    dest_for: &dyn Fn(&ArchiveRecord) -> anyhow::Result<Option<Dir>>,
) -> anyhow::Result<(u64, Vec<String>, Vec<String>)> {
    let mut entries = 0;
    let mut damaged = Vec::new();
    let mut failed = Vec::new();
    for Selected { record: ar, paths: sel, archive } in opened {
        // None: this archive's filesystem is restored by someone else.
        let Some(dest_dir) = dest_for(ar)? else { continue };
        let dest = dest_dir.fd_path();
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

pub(super) fn report(entries: u64, damaged: &[String], failed: &[String], start: Instant) -> Outcome {
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
        Mode::BareMetal { devices, new_uuids, yes, boot_repair } => bare_metal::run(path, &a, &devices, new_uuids, yes, boot_repair),
        Mode::Disk { disk, system, yes, boot_repair, new_key, new_uuids } => {
            disk::run(path, &disk, system.as_deref(), a.generation, &a.from, disk::Options { yes, boot_repair, new_key, new_uuids })
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
    let Opened { mut mounts, backup: b, .. } = open(path, system, a.generation, false, &a.from)?;
    // Every archive read is checked before the target is made (an adopted duplicity set has none).
    let opened = if b.record.legacy.is_some() { Vec::new() } else { open_selected(&b, paths)? };
    std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
    let to = std::fs::canonicalize(&to).with_context(|| format!("resolving {}", to.display()))?;
    let target = Dir::open_crossing_mounts(&to)?;
    println!("restoring {system} from generation {} ({}) into {}", b.generation.seq, b.from, to.display());
    let start = Instant::now();
    if let Some(set) = &b.record.legacy {
        let (entries, problems) = crate::duplicity::restore(b.slot_root()?, set, &target.fd_path(), &selected)?;
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
    let (entries, damaged, failed) = restore_into(opened, &beneath)?;
    let _ = mounts.unmount();
    if let Some(said) = b.fetched() {
        println!("{said}");
    }
    Ok(report(entries, &damaged, &failed, start))
}

/// Every archive of `b` opened and checked — its size, header, index and
/// data hash against the manifest — before a restore writes anything:
/// one that would be refused is refused now, with the target untouched.
pub(super) fn check_archives(b: &SystemBackup) -> anyhow::Result<()> {
    for ar in &b.record.archives {
        b.open_archive(ar).with_context(|| format!("{}'s {} archive; nothing was written", b.record.name, ar.mountpoint))?;
    }
    Ok(())
}

pub(super) fn refuse_legacy(b: &SystemBackup, system: &str) -> anyhow::Result<()> {
    if b.record.legacy.is_some() {
        refuse!(
            Refusal::Unsupported,
            "generation {} of {system} is a duplicity backup: it records no filesystem layout; restore it with --to DIR, or bare-metal from a crossback generation",
            b.generation.seq
        );
    }
    Ok(())
}
