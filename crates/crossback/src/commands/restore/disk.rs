//! `crossback restore [SYSTEM] --bare-metal --disk DEV`: after a disk
//! failure, the dead disk's partition table made again on a new disk
//! (same disk and partition identifiers and types, shrunk to fit a smaller
//! disk while the data fits), every system that was on it restored onto its
//! partitions — a filesystem several systems share (the ESP) once, from the
//! newest backup of it — and the firmware's boot entries made again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use crossback_host::beneath::Dir;
use crossback_host::offline::{self, FsMount};
use crossback_host::partitions::{self, Partition, Table};

use super::bare_metal::{check_fstab, check_targets, recreate, show_plan, targets, Target};
use super::grub::GrubRepair;
use super::{refuse_legacy, report};
use crate::backups::{self, SystemBackup};
use crate::cli::FromRemote;
use crate::config::Config;
use crate::error::{refuse, Refusal};
use crate::layout::{FsRecord, MountsFile};
use crate::machine::Machine;
use crate::stack::recreate::NewKey;
use crate::{output, refuse, slots, Outcome};

/// The disk the systems were on, as the newest of their backups recorded it.
fn recorded_table(backups: &[SystemBackup]) -> anyhow::Result<Table> {
    let newest = backups.iter().filter(|b| !b.mounts.disks.is_empty()).max_by(|a, b| a.record.finished.cmp(&b.record.finished));
    let Some(b) = newest else {
        refuse!(
            Refusal::Unsupported,
            "no backup of {} records a partition table (made by an older crossback, or not on a partitioned disk): partition the disk yourself and restore each system with --bare-metal --device MOUNTPOINT=DEV",
            backups.iter().map(|b| b.record.name.as_str()).collect::<Vec<_>>().join(", ")
        );
    };
    // The disk holding the root filesystem.
    let root = b.mounts.filesystems.iter().find(|r| r.mountpoint == "/").map(|r| b.mounts.partuuid_of(r)).unwrap_or("");
    let t = b.mounts.disks.iter().find(|t| t.partitions.iter().any(|p| p.uuid.eq_ignore_ascii_case(root))).unwrap_or(&b.mounts.disks[0]);
    Ok(t.clone())
}

/// The partition a filesystem is on (at the bottom of its stack).
fn on_table<'a>(t: &'a Table, m: &MountsFile, r: &FsRecord) -> Option<&'a Partition> {
    let partuuid = m.partuuid_of(r);
    t.partitions.iter().find(|p| !partuuid.is_empty() && p.uuid.eq_ignore_ascii_case(partuuid))
}

/// Every filesystem record of these backups, with its backup's mounts file.
fn all_records(backups: &[SystemBackup]) -> impl Iterator<Item = (&MountsFile, &FsRecord)> {
    backups.iter().flat_map(|b| b.mounts.filesystems.iter().map(move |r| (&b.mounts, r)))
}

/// What a partition must hold at least: its filesystem's data and what the
/// filesystem takes itself (None: a partition crossback has no backup of,
/// made again empty at its old size).
fn minimum(t: &Table, backups: &[SystemBackup], p: &Partition) -> Option<u64> {
    let recs: Vec<(&MountsFile, &FsRecord)> = all_records(backups).filter(|(m, r)| on_table(t, m, r).is_some_and(|x| x.number == p.number)).collect();
    let (mounts, r) = *recs.first()?;
    // A LUKS container or a volume group: its header, metadata and volumes at their smallest.
    let stack = mounts.stack_on(&p.uuid);
    if stack.luks.is_some() || stack.vg.is_some() {
        let fs_min = crossback_host::fstype::of(&r.fstype).map_or(r.size, |ft| ft.needs(r.used, r.size));
        return Some(crate::stack::recreate::minimum(&stack, fs_min, t.sector_size));
    }
    let recs: Vec<&FsRecord> = recs.into_iter().map(|(_, r)| r).collect();
    // A FAT filesystem (the ESP) keeps its size: its FAT type and cluster
    // size, which are recorded and made again, set its smallest size.
    if r.fstype == "vfat" {
        return None;
    }
    let bytes = if r.fstype == "swap" {
        1 << 20
    } else {
        let used = recs.iter().map(|r| r.used).max().unwrap_or(0);
        crossback_host::fstype::of(&r.fstype).map_or(p.size * t.sector_size, |ft| ft.needs(used, p.size * t.sector_size))
    };
    Some(bytes.div_ceil(t.sector_size))
}

/// What is on `disk` now: its table and the filesystems of it and its partitions.
fn contents(m: &Machine, disk: &Path, name: &str) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    if let Some(t) = partitions::read(disk)? {
        found.push(format!("a {} partition table with {} partitions", t.label, t.partitions.len()));
    }
    for d in m.devices.iter().filter(|d| d.disk == name && !d.fstype.is_empty()) {
        found.push(format!(
            "{}: {}{}{}",
            d.path.display(),
            d.fstype,
            if d.label.is_empty() { String::new() } else { format!(" \"{}\"", output::text(&d.label)) },
            if d.uuid.is_empty() { String::new() } else { format!(" UUID={}", d.uuid) }
        ));
    }
    Ok(found)
}

/// What the restore will give the same identity as something attached
/// elsewhere — a LUKS container's or a filesystem's UUID (kept unless
/// `--new-uuids`), a PARTUUID (always kept) — is known before the first
/// byte is written: a duplicate UUID is refused (systems then open or mount
/// either), a duplicate PARTUUID too, or said when `--new-uuids` asked for
/// a second copy.
fn check_identities(m: &Machine, disk: &str, table: &Table, backups: &[SystemBackup], new_uuids: bool) -> anyhow::Result<()> {
    for d in m.devices.iter().filter(|d| d.disk != disk) {
        // A LUKS container's header is restored with its UUID unless
        // --new-uuids: the old container still attached would share it.
        let luks = backups.iter().flat_map(|b| &b.mounts.luks).find(|l| !new_uuids && !d.uuid.is_empty() && l.uuid.eq_ignore_ascii_case(&d.uuid));
        if let Some(l) = luks {
            refuse!(
                Refusal::DuplicateUuid,
                "the LUKS container {} is still attached at {}: restoring its header would leave two containers with one UUID (crypttab and the initramfs then open either). Detach the old disk, or pass --new-uuids; nothing was written",
                l.uuid,
                d.path.display()
            );
        }
        if !new_uuids {
            let same = all_records(backups).find(|(mf, r)| on_table(table, mf, r).is_some() && !r.uuid.is_empty() && r.uuid.eq_ignore_ascii_case(&d.uuid));
            if let Some((_, r)) = same {
                refuse!(
                    Refusal::DuplicateUuid,
                    "the filesystem of {} (UUID={}) is still attached at {}: restoring it would leave two filesystems with one UUID (systems then mount either). Detach the old disk, or pass --new-uuids; nothing was written",
                    r.mountpoint,
                    r.uuid,
                    d.path.display()
                );
            }
        }
        if let Some(p) = table.partitions.iter().find(|p| !p.uuid.is_empty() && p.uuid.eq_ignore_ascii_case(&d.partuuid)) {
            if new_uuids {
                eprintln!(
                    "warning: partition {} keeps its PARTUUID {}, which {} has too: anything that names it by PARTUUID (a kernel's root=PARTUUID=) may find either until one disk is detached",
                    p.number,
                    p.uuid,
                    d.path.display()
                );
            } else {
                refuse!(
                    Refusal::DuplicateUuid,
                    "partition {} of the recorded disk has PARTUUID {}, which {} still has: restoring would leave two partitions with one PARTUUID. Detach the old disk, or pass --new-uuids; nothing was written",
                    p.number,
                    p.uuid,
                    d.path.display()
                );
            }
        }
    }
    Ok(())
}

/// How the disk is made again.
#[derive(Debug)]
pub struct Options {
    pub yes: bool,
    /// The firmware's entries (and, with new UUIDs, GRUB) repaired.
    pub boot_repair: bool,
    pub new_key: Option<NewKey>,
    /// New UUIDs for the filesystems and LUKS containers; fstab and crypttab
    /// rewritten, GRUB and the initramfs made again in a chroot.
    pub new_uuids: bool,
}

pub fn run(path: &Path, disk: &Path, only: Option<&str>, generation: Option<u64>, from: &FromRemote, o: Options) -> anyhow::Result<Outcome> {
    let Options { yes, boot_repair, new_key, new_uuids } = o;
    let cfg = Config::load(path)?;
    let (disk, name, sys) = whole_disk(disk)?;
    // The backup disk's slots (read-only, kept mounted while the archives are read), or a remote.
    let view = match from.remote {
        None => {
            let v = slots::open_read_only(path, "crossback-restore")?;
            v.say_damaged();
            Some(v)
        }
        Some(_) => None,
    };
    let scanned;
    let m = match &view {
        Some(v) => &v.machine,
        None => {
            scanned = Machine::scan(&[])?;
            &scanned
        }
    };
    let (all, unbacked) = match (&view, &from.remote) {
        (Some(v), _) => newest_backups(&v.slots, &cfg, only, generation)?,
        (None, Some(remote)) => remote_backups(&cfg, remote, from, only, generation)?,
        (None, None) => unreachable!("a view is opened when no remote is named"),
    };
    let table = recorded_table(&all)?;
    let backups = on_this_disk(all, &table)?;
    let mut locks = Vec::new();
    for b in &backups {
        let sc = cfg.system(&b.record.name).ok_or_else(|| {
            refuse(Refusal::UnknownSystem, format!("{} is not in {}: run `crossback init` with the media attached first", b.record.name, path.display()))
        })?;
        locks.push(slots::lock_system(&b.record.name, sc.root.get_ref())?);
    }
    let (ss, sectors) = check_target(m, &cfg, &disk, &name, &sys, &table)?;
    let new = table.fit(sectors, &|p| minimum(&table, &backups, p)).map_err(|e| {
        refuse(Refusal::TargetTooSmall, format!("{} ({}) is too small for the recorded disk's partitions: {e}", disk.display(), output::bytes(sectors * ss)))
    })?;
    show_layout(&disk, ss, sectors, &table, &new, &backups, &unbacked);
    let now = contents(m, &disk, &name)?;
    if now.is_empty() {
        println!("{} is blank.", disk.display());
    } else {
        println!("{} is NOT blank; all of this will be lost:", disk.display());
        for n in &now {
            println!("  {n}");
        }
    }
    // Encrypted and LVM systems: their headers checked and their keys found
    // before anything is written; then what would be duplicated.
    let prepared = crate::stack::recreate::prepare(&backups, new_key.as_ref())?;
    check_identities(m, &name, &table, &backups, new_uuids)?;
    for b in &backups {
        super::check_archives(b)?;
    }
    if !yes && !output::confirm(&format!("Write the partition table to {} and restore?", disk.display()))? {
        refuse!(Refusal::NotConfirmed, "nothing written: pass --yes to restore without asking");
    }
    let start = Instant::now();
    partitions::write(&disk, &new).with_context(|| format!("writing the partition table to {}", disk.display()))?;
    println!("wrote the partition table of disk {} to {}", table.id, disk.display());
    let mut opened = crossback_host::layers::mapping::Opened::default();
    let made = if prepared.is_empty() {
        crate::stack::recreate::Made { devices: Vec::new(), luks_uuids: Vec::new() }
    } else {
        crate::stack::recreate::make(&prepared, &disk, &new, &mut opened, new_uuids)?
    };
    let done = restore_systems(&cfg, &disk, &table, &backups, &made, new_uuids)?;
    // A new master key: the key files the restored systems' crypttab names
    // for their containers open them too (so their initramfs does).
    if !prepared.is_empty() {
        crate::stack::recreate::add_system_keys(&prepared, &backups, &disk, &new, &done.uuids)?;
    }
    for (name, text) in &done.fstabs {
        check_fstab(name, text)?;
    }
    // The containers and volume groups made: closed before the boot is repaired.
    for why in opened.close() {
        eprintln!("warning: {why}");
    }
    if new_uuids {
        new_identities(path, &done.uuids, &done.repairs, boot_repair, new_key.as_ref())?;
    }
    if boot_repair {
        repair_boot(&disk, &table, &backups)?;
    } else {
        println!("boot entries left as they are (--no-boot-repair)");
    }
    drop(locks);
    let outcome = report(done.entries, &done.damaged, &done.failed, start);
    Ok(if unbacked.is_empty() || outcome != Outcome::Ok { outcome } else { Outcome::Partial })
}

/// `--disk`: an existing whole disk; its path, kernel name and sysfs directory.
fn whole_disk(disk: &Path) -> anyhow::Result<(PathBuf, String, PathBuf)> {
    let disk = std::fs::canonicalize(disk).map_err(|e| refuse(Refusal::Usage, format!("--disk {}: no such device ({e})", disk.display())))?;
    let name = disk.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sys = crossback_host::blockdev::sys_dir(&name);
    if !sys.is_dir() {
        refuse!(Refusal::Usage, "--disk {}: not a block device", disk.display());
    }
    if sys.join("partition").exists() {
        refuse!(Refusal::Usage, "--disk {}: a partition; --disk takes the whole disk (its partitions are made from the backup)", disk.display());
    }
    Ok((disk, name, sys))
}

/// Each system from its newest backup, wherever it is (an open newest
/// generation does not hide an older sealed one), or all from the
/// generation asked for; adopted duplicity backups left out (said). With
/// them, the configured systems that have no backup at all.
fn newest_backups(slot_list: &[slots::Slot], cfg: &Config, only: Option<&str>, generation: Option<u64>) -> anyhow::Result<(Vec<SystemBackup>, Vec<String>)> {
    let recorded_in = |g: &crate::layout::Generation| generation.is_none_or(|n| n == g.seq);
    let mut names: Vec<String> = Vec::new();
    for g in slot_list.iter().flat_map(|s| s.view.generations.iter().filter_map(|g| g.valid())).filter(|g| recorded_in(g)) {
        for r in &g.recorded {
            if only.is_none_or(|o| o == r.name) && !names.contains(&r.name) {
                names.push(r.name.clone());
            }
        }
    }
    if names.is_empty() {
        match (only, generation) {
            (Some(s), _) => refuse!(
                Refusal::NoBackup,
                "no generation holds a backup of {s}{} (see `crossback status`)",
                generation.map(|n| format!(" in generation {n}")).unwrap_or_default()
            ),
            (None, Some(n)) => refuse!(Refusal::NoBackup, "generation {n} holds no backup (see `crossback status`)"),
            (None, None) => refuse!(Refusal::NoBackup, "no generation holds a backup yet (see `crossback status`)"),
        }
    }
    // Configured systems with no backup at all: said, and the restore is not a full success.
    let unbacked: Vec<String> = if only.is_none() && generation.is_none() {
        cfg.systems.iter().map(|s| s.name.get_ref().clone()).filter(|n| !names.contains(n)).collect()
    } else {
        Vec::new()
    };
    let mut all = Vec::new();
    for n in &names {
        let b = backups::find(slot_list, n, generation)?;
        if b.record.legacy.is_some() && only.is_none() {
            println!(
                "note: {n}'s newest backup is an adopted duplicity one (generation {}), which records no disk layout: not restored here",
                b.generation.seq
            );
            continue;
        }
        refuse_legacy(&b, n)?;
        all.push(b);
    }
    Ok((all, unbacked))
}

/// As [`newest_backups`], from a remote: every system of its newest
/// sealed generation (or of the one asked for), which holds them all.
fn remote_backups(
    cfg: &Config,
    remote: &str,
    from: &FromRemote,
    only: Option<&str>,
    generation: Option<u64>,
) -> anyhow::Result<(Vec<SystemBackup>, Vec<String>)> {
    let (store, key) = super::super::remote::open_read(cfg, remote, from.machine.as_deref(), from.as_of, &format!("restoring from remote {remote}"))?;
    let seal = crate::remote::SealKey::of(&key);
    let Some((g, _)) = crate::remote::newest_sealed(&store, &seal, generation, |_, _| true)? else {
        refuse!(
            Refusal::NoBackup,
            "remote {remote} holds no complete generation{} of machine {} (`crossback remote verify {remote}` lists what it has)",
            generation.map(|n| format!(" {n}")).unwrap_or_default(),
            store.machine()
        );
    };
    let seq = g.seq;
    let names: Vec<String> = g.recorded.iter().map(|r| r.name.clone()).filter(|n| only.is_none_or(|o| o == n)).collect();
    if names.is_empty() {
        refuse!(Refusal::NoBackup, "generation {seq} on remote {remote} holds no backup of {}", only.unwrap_or("any system"));
    }
    let unbacked = if only.is_none() && generation.is_none() {
        cfg.systems.iter().map(|s| s.name.get_ref().clone()).filter(|n| !names.contains(n)).collect()
    } else {
        Vec::new()
    };
    let all = names.iter().map(|n| backups::find_remote(&store, &key, n, Some(seq))).collect::<anyhow::Result<Vec<_>>>()?;
    Ok((all, unbacked))
}

/// The systems that were on the recorded disk; each must be entirely on it.
fn on_this_disk(all: Vec<SystemBackup>, table: &Table) -> anyhow::Result<Vec<SystemBackup>> {
    let backups: Vec<SystemBackup> = all.into_iter().filter(|b| b.mounts.filesystems.iter().any(|r| on_table(table, &b.mounts, r).is_some())).collect();
    if backups.is_empty() {
        refuse!(Refusal::NoBackup, "no system with a backup was on disk {}", table.id);
    }
    for b in &backups {
        if let Some(r) = b.mounts.filesystems.iter().find(|r| on_table(table, &b.mounts, r).is_none()) {
            refuse!(
                Refusal::Unsupported,
                "{}'s {} was on another disk than the one recorded ({}): restore {} with --bare-metal --device MOUNTPOINT=DEV for each of its filesystems",
                b.record.name,
                r.mountpoint,
                table.id,
                b.record.name
            );
        }
    }
    Ok(backups)
}

/// The disk written to: not the media's, not the running system's, nothing
/// mounted, sectors of the recorded size. Its sector size and sectors.
fn check_target(m: &Machine, cfg: &Config, disk: &Path, name: &str, sys: &Path, table: &Table) -> anyhow::Result<(u64, u64)> {
    let slot_uuids: Vec<String> = cfg.media.iter().flat_map(|mm| [mm.slot_a.get_ref().to_lowercase(), mm.slot_b.get_ref().to_lowercase()]).collect();
    let on_disk: Vec<&crossback_host::blockdev::Device> = m.devices.iter().filter(|d| d.disk == name).collect();
    if on_disk.iter().any(|d| slot_uuids.contains(&d.uuid.to_lowercase())) {
        refuse!(Refusal::TargetInUse, "{} holds a slot of the backup media: restoring onto it would destroy the backups", disk.display());
    }
    if let Some((root, _)) = m.running_root() {
        if root.disk == name {
            refuse!(Refusal::TargetInUse, "{} holds the running system: restore from another system or a live USB", disk.display());
        }
    }
    let mounted: Vec<String> = on_disk.iter().flat_map(|d| m.mounts_of(d)).map(|x| x.mountpoint.clone()).collect();
    if !mounted.is_empty() {
        refuse!(Refusal::TargetInUse, "{} is in use: mounted at {}; unmount it first (nothing was written)", disk.display(), mounted.join(", "));
    }
    let ss = std::fs::read_to_string(sys.join("queue/logical_block_size")).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(512);
    if ss != table.sector_size {
        refuse!(
            Refusal::Unsupported,
            "{} has {ss}-byte sectors, the recorded disk had {}: partition it yourself and use --device",
            disk.display(),
            table.sector_size
        );
    }
    Ok((ss, partitions::sectors_512(disk)? * 512 / ss))
}

/// What will be written: the partitions (as recorded, or shrunk), what each
/// will hold, and the configured systems that have no backup.
fn show_layout(disk: &Path, ss: u64, sectors: u64, table: &Table, new: &Table, backups: &[SystemBackup], unbacked: &[String]) {
    println!(
        "bare-metal restore onto {} ({}): the partition table of disk {} ({} partitions{}) and these systems: {}",
        disk.display(),
        output::bytes(sectors * ss),
        table.id,
        new.partitions.len(),
        if new.partitions == table.partitions { String::new() } else { ", shrunk to fit".into() },
        backups.iter().map(|b| format!("{} (generation {}, {})", b.record.name, b.generation.seq, b.from)).collect::<Vec<_>>().join(", ")
    );
    for n in unbacked {
        eprintln!("warning: {n} is configured but has no backup on this media: it is NOT restored (if it was on this disk, its partition is made empty)");
    }
    for (old, p) in table.partitions.iter().zip(&new.partitions) {
        let what: Vec<String> = backups
            .iter()
            .flat_map(|b| {
                b.mounts
                    .filesystems
                    .iter()
                    .filter(|r| on_table(table, &b.mounts, r).is_some_and(|x| x.number == p.number))
                    .map(|r| format!("{}:{}{}", b.record.name, r.mountpoint, if r.on.is_empty() { String::new() } else { format!(" (in {})", r.on) }))
            })
            .collect();
        println!(
            "  {} {:>9} → {:>9}  {}{}",
            partitions::partition_device(disk, p.number).display(),
            output::bytes(old.size * ss),
            output::bytes(p.size * ss),
            if what.is_empty() { "(no backup: made empty)".to_string() } else { what.join(", ") },
            if p.name.is_empty() { String::new() } else { format!("  \"{}\"", output::text(&p.name)) }
        );
    }
}

/// What the systems' restores did, together.
#[derive(Default)]
struct Done {
    entries: u64,
    damaged: Vec<String>,
    failed: Vec<String>,
    /// Each system's fstab as restored.
    fstabs: Vec<(String, String)>,
    /// Old → new UUIDs made so far (containers, then filesystems).
    uuids: Vec<(String, String)>,
    repairs: Vec<(String, Option<GrubRepair>)>,
}

/// Each system's filesystems made again on the new partitions (or in the
/// layers made on them) and its backup restored onto them; a filesystem
/// several systems share (the ESP) once, by the system whose backup of it
/// is the newest, which goes first.
fn restore_systems(
    cfg: &Config,
    disk: &Path,
    table: &Table,
    backups: &[SystemBackup],
    made: &crate::stack::recreate::Made,
    new_uuids: bool,
) -> anyhow::Result<Done> {
    let newest_of = |r: &FsRecord| {
        backups
            .iter()
            .filter(|b| b.mounts.filesystems.iter().any(|x| x.uuid == r.uuid && !r.uuid.is_empty()))
            .max_by(|a, b| a.record.finished.cmp(&b.record.finished))
            .map(|b| b.record.name.clone())
    };
    let mut done = Done { uuids: made.luks_uuids.clone(), ..Default::default() };
    let mut order: Vec<&SystemBackup> = backups.iter().collect();
    order.sort_by_key(|b| {
        !b.mounts.filesystems.iter().any(|r| {
            newest_of(r).as_deref() == Some(b.record.name.as_str())
                && backups.iter().filter(|x| x.mounts.filesystems.iter().any(|y| y.uuid == r.uuid)).count() > 1
        })
    });
    let m = Machine::scan(&[])?;
    for b in order {
        let name = &b.record.name;
        let explicit: Vec<(String, PathBuf)> = b
            .mounts
            .filesystems
            .iter()
            .filter_map(|r| {
                let dev = match made.devices.iter().find(|(on, _)| !r.on.is_empty() && on == &r.on) {
                    Some((_, d)) => d.clone(),
                    None => partitions::partition_device(disk, on_table(table, &b.mounts, r)?.number),
                };
                Some((r.mountpoint.clone(), dev))
            })
            .collect();
        let mut ts: Vec<Target> = targets(b, &m, &explicit, name)?;
        ts.retain(|t| newest_of(&t.records[0]).is_none_or(|owner| &owner == name));
        check_targets(&ts, &m, cfg, new_uuids)?;
        println!("{name} (backed up {}):", b.record.finished);
        show_plan(&m, &ts, new_uuids);
        if new_uuids {
            for t in ts.iter_mut() {
                t.new_uuid = Some(String::new());
            }
        }
        let r = recreate(b, name, &mut ts, new_uuids, &done.uuids)?;
        done.entries += r.entries;
        done.damaged.extend(r.damaged);
        done.failed.extend(r.failed);
        done.fstabs.push((name.clone(), r.fstab));
        done.uuids.extend(r.uuid_map.iter().cloned());
        done.repairs.push((name.clone(), r.grub));
    }
    Ok(done)
}

/// After `--new-uuids`: the configuration names each system's new root and
/// containers, and each GRUB EFI system's loader and initramfs are made
/// again in a chroot (which opens its containers with the same keys).
fn new_identities(
    path: &Path,
    uuids: &[(String, String)],
    repairs: &[(String, Option<GrubRepair>)],
    boot_repair: bool,
    new_key: Option<&NewKey>,
) -> anyhow::Result<()> {
    let now = |u: &str| uuids.iter().find(|(old, _)| old.eq_ignore_ascii_case(u)).map(|(_, new)| new.clone());
    let cfg = Config::load(path)?;
    for (name, _) in repairs {
        let Some(sc) = cfg.system(name) else { continue };
        if let Some(root) = now(sc.root.get_ref()) {
            crate::config::set_system_root(path, name, &root)?;
        }
        if !sc.luks.is_empty() {
            let luks: Vec<String> = sc.luks.iter().map(|u| now(u).unwrap_or_else(|| u.clone())).collect();
            crate::config::set_system_luks(path, name, &luks)?;
        }
        println!("{} now names {name}'s new UUIDs", path.display());
    }
    let mut keys: Vec<PathBuf> = crate::stack::open::key_files().to_vec();
    keys.extend(new_key.and_then(|k| k.file.clone()));
    for (name, grub) in repairs {
        match (grub, boot_repair) {
            (Some(g), true) => super::grub::repair_grub(path, name, g, &keys)?,
            (Some(_), false) => println!("boot: {name}'s GRUB left as it is (--no-boot-repair): it still names the old UUIDs"),
            (None, _) => println!("next: `crossback chroot {name}` to make its bootloader and initramfs find the new UUIDs (crossback repairs GRUB EFI only)"),
        }
    }
    Ok(())
}

/// The firmware's entries for the loaders on the restored disk, made again
/// as recorded (the partitions kept their PARTUUIDs, so the entries lead to
/// them), in their recorded order; the fallback loader checked.
fn repair_boot(disk: &Path, table: &Table, backups: &[SystemBackup]) -> anyhow::Result<()> {
    fallback_loader(disk, table, backups)?;
    let newest = backups.iter().filter(|b| !b.mounts.boot_entries.is_empty()).max_by(|a, b| a.record.finished.cmp(&b.record.finished));
    let recorded = newest.map(|b| b.mounts.boot_entries.clone()).unwrap_or_default();
    if recorded.is_empty() {
        println!(
            "boot: no firmware boot entries were recorded; the disk starts through the firmware's fallback loader (EFI/BOOT/BOOTX64.EFI) or its BIOS boot code"
        );
        return Ok(());
    }
    if !crossback_host::efi::available() {
        println!(
            "boot: this system was not started by UEFI (no EFI variables): the recorded entries ({}) were not made; the disk starts through the fallback loader, or make them from one of the restored systems",
            recorded.iter().map(|e| e.label.as_str()).collect::<Vec<_>>().join(", ")
        );
        return Ok(());
    }
    let existing = match crossback_host::efi::entries() {
        Ok(e) => e,
        // Made blind, entries could repeat: none are made, and that is said.
        Err(e) => {
            println!("boot: the firmware's entries do not read ({e}): none were made; the disk starts through the fallback loader, or make them from one of the restored systems");
            return Ok(());
        }
    };
    // efibootmgr puts each new entry first: make them last to first.
    for e in recorded.iter().rev() {
        let Some(p) = table.partitions.iter().find(|p| p.uuid.eq_ignore_ascii_case(&e.partuuid)) else { continue };
        if existing.iter().any(|x| x.label == e.label && x.partuuid.eq_ignore_ascii_case(&e.partuuid) && x.loader.eq_ignore_ascii_case(&e.loader)) {
            println!("boot: entry {} ({}) is there already", output::text(&e.label), e.loader);
            continue;
        }
        match crossback_host::efi::create(disk, p.number, &e.label, &e.loader) {
            Ok(()) => println!("boot: made the firmware entry {} → partition {} {}", output::text(&e.label), p.number, e.loader),
            Err(err) => eprintln!("warning: the firmware entry {} was not made: {err}", output::text(&e.label)),
        }
    }
    Ok(())
}

/// Makes sure the restored ESP has the firmware's fallback loader
/// (`EFI/BOOT/BOOTX64.EFI`), the one a firmware without entries (a new
/// motherboard, cleared variables) starts: when it is missing, the loader
/// of the first recorded boot entry (or the only one on the ESP) is copied
/// there with the files beside it, as `grub-install --removable` does.
fn fallback_loader(disk: &Path, table: &Table, backups: &[SystemBackup]) -> anyhow::Result<()> {
    const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    let Some(p) = table.partitions.iter().find(|p| p.kind.eq_ignore_ascii_case(ESP) || p.kind == "ef") else { return Ok(()) };
    let Some(r) = all_records(backups).find(|(m, r)| r.fstype == "vfat" && on_table(table, m, r).is_some_and(|x| x.number == p.number)).map(|(_, r)| r) else {
        return Ok(());
    };
    let at = Path::new(crossback_host::inspect::SCRATCH).join("crossback-restore").join("esp");
    std::fs::create_dir_all(&at)?;
    let fs = FsMount {
        mountpoint: r.mountpoint.clone(),
        device: partitions::partition_device(disk, p.number),
        fstype: "vfat".into(),
        subvol: None,
        options: vec![],
        view_of: None,
    };
    let mut mounted = offline::Mounted::default();
    offline::mount_one(&fs, &at, true, false, &mut mounted).with_context(|| format!("mounting the restored ESP {}", fs.device.display()))?;
    let result = (|| -> anyhow::Result<String> {
        let esp = Dir::open(&at)?;
        let efi = esp.create_dirs("EFI")?;
        if efi.dir("BOOT").is_ok_and(|b| b.kind("BOOTX64.EFI").ok().flatten().is_some()) {
            return Ok("has the fallback loader EFI/BOOT/BOOTX64.EFI: a firmware without entries starts it".into());
        }
        // The loader: the first recorded entry's on this ESP, else the only one there.
        let newest = backups.iter().max_by(|a, b| a.record.finished.cmp(&b.record.finished));
        let recorded = newest.map(|b| b.mounts.boot_entries.clone()).unwrap_or_default();
        let from_entries = recorded.iter().filter(|e| e.partuuid.eq_ignore_ascii_case(&p.uuid)).find_map(|e| {
            let parts: Vec<&str> = e.loader.trim_start_matches('\\').split('\\').collect();
            match parts.as_slice() {
                [top, dir, file] if top.eq_ignore_ascii_case("efi") && !dir.eq_ignore_ascii_case("boot") => Some((dir.to_string(), file.to_string())),
                _ => None,
            }
        });
        let found = from_entries.or_else(|| {
            let mut dirs: Vec<String> =
                efi.entries().ok()?.into_iter().filter_map(|(n, _)| n.to_str().map(str::to_string)).filter(|n| !n.eq_ignore_ascii_case("boot")).collect();
            dirs.sort();
            dirs.into_iter().find_map(|d| {
                let dir = efi.dir(&d).ok()?;
                ["shimx64.efi", "grubx64.efi"].iter().find(|f| dir.kind(f).ok().flatten().is_some()).map(|f| (d.clone(), f.to_string()))
            })
        });
        let Some((src, loader)) = found else {
            return Ok(
                "has no fallback loader (EFI/BOOT/BOOTX64.EFI) and no loader crossback knows to put there: a firmware without entries will not start it".into(),
            );
        };
        let from = efi.dir(&src)?;
        let boot = efi.create_dirs("BOOT")?;
        let copy = |name: &str, to: &str| -> anyhow::Result<()> {
            let mut input = from.open_file(name)?;
            let mut out = boot.create_file(to)?;
            std::io::copy(&mut input, &mut out).and_then(|_| out.sync_all()).with_context(|| format!("copying EFI/{src}/{name} to EFI/BOOT/{to}"))?;
            Ok(())
        };
        // The files beside it (grubx64.efi and grub.cfg beside a shim), not
        // shim's fallback (fbx64.efi), which would rewrite the entries.
        for (n, kind) in from.entries()? {
            let Some(n) = n.to_str() else { continue };
            if kind == crossback_host::beneath::Kind::File && !n.eq_ignore_ascii_case("fbx64.efi") && n != loader {
                copy(n, n)?;
            }
        }
        copy(&loader, "BOOTX64.EFI")?;
        Ok(format!(
            "had no fallback loader: copied EFI/{src}/{loader} to EFI/BOOT/BOOTX64.EFI (with the files beside it), so a firmware without entries starts it"
        ))
    })();
    let busy = mounted.unmount();
    if !busy.is_empty() {
        eprintln!("warning: could not unmount {busy:?}");
    }
    println!("boot: the ESP ({}) {}", r.mountpoint, result?);
    Ok(())
}
