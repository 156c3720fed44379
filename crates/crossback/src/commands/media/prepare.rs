//! `crossback media prepare SLOT_A SLOT_B`: mark two filesystems as the
//! slots of one backup media, and record them in the configuration; with
//! `--disk DEV`, a whole disk laid out first (a rescue partition and the
//! two slots) and the rescue system made on it.

use crossback_host::tool::Tool;
use std::path::Path;

use anyhow::bail;
use crossback_host::blockdev::Device;
use crossback_host::{ns, offline, partitions};

use crate::cli::PrepareArgs;
use crate::config::{self, Config, Media, Sealing};
use crate::error::Refusal;
use crate::layout::{self, Marker, SlotId, SlotWriter};
use crate::machine::{self, Machine};
use crate::media;
use crate::{refuse, Outcome};
use crossback_host::beneath::Dir;

use super::{device_for, new_encryption};

pub fn prepare(path: &Path, a: PrepareArgs) -> anyhow::Result<Outcome> {
    machine::require_root("media prepare")?;
    let cfg = if path.exists() { Config::load(path)? } else { Config::default() };
    let mut m = Machine::scan(&[])?;
    let rescue_part = match &a.disk {
        Some(disk) => {
            let part = lay_out(&m, &cfg, disk, a.yes)?;
            m = Machine::scan(&[])?;
            Some(part)
        }
        None => None,
    };
    let (slot_a, slot_b) = match &a.disk {
        Some(disk) => (partitions::partition_device(disk, 2).display().to_string(), partitions::partition_device(disk, 3).display().to_string()),
        None => (a.slot_a.clone().unwrap_or_default(), a.slot_b.clone().unwrap_or_default()),
    };
    let mut devs = [device_for(&m, &slot_a)?, device_for(&m, &slot_b)?];
    if devs[0].path == devs[1].path {
        refuse!(Refusal::Usage, "slot A and slot B are the same device ({}): give two filesystems", devs[0].path.display());
    }
    check_candidates(&m, &cfg, &devs)?;
    if a.mkfs {
        devs = format_slots(&a, &devs)?;
    }
    for (letter, d) in SlotId::BOTH.iter().zip(&devs) {
        if d.fstype.is_empty() || !d.is_linux_fs() {
            refuse!(
                Refusal::Unsupported,
                "{} (for slot {letter}) holds {}: a slot must be a Linux filesystem (ext4, xfs, btrfs); pass --mkfs to format it as ext4",
                d.path.display(),
                if d.fstype.is_empty() { "no filesystem".to_string() } else { d.fstype.clone() }
            );
        }
    }

    let media_id = match &cfg.media {
        Some(mm) => mm.id.get_ref().clone(),
        None => media::new_media_id()?,
    };
    let _lock = crate::slots::lock_media(&media_id, crossback_host::lock::Mode::Exclusive)?;
    let encryption = if a.encrypt { Some(new_encryption(&a.recipient)?) } else { None };
    ns::enter_private()?;
    let base = crossback_host::inspect::scratch_dir("crossback-prepare")?;
    // Both slots are checked before either is written: a refusal for B
    // leaves A as it was.
    let mut mounted = offline::Mounted::default();
    let mut roots = Vec::new();
    for (&letter, d) in SlotId::BOTH.iter().zip(&devs) {
        let at = base.join(letter.letter());
        std::fs::create_dir_all(&at)?;
        offline::mount_one(&crate::slots::slot_fs(letter, d), &at, true, false, &mut mounted)?;
        let root = Dir::open(&at)?;
        let fresh = check_slot(letter, d, &root, &media_id, encryption.is_some())?;
        roots.push((letter, d, root, fresh));
    }
    for (letter, d, root, fresh) in &roots {
        if !fresh {
            println!("slot {letter}: {} (UUID={}) was prepared already", d.path.display(), d.uuid);
            continue;
        }
        let mut marker = Marker::new(&media_id, *letter);
        marker.encryption = encryption.as_ref().map(|(enc, _)| enc.clone());
        SlotWriter::prepare(root, &marker, encryption.as_ref().map(|(_, files)| files))?;
        println!("slot {letter}: {} (UUID={}) prepared{}", d.path.display(), d.uuid, if encryption.is_some() { ", encrypted" } else { "" });
    }
    drop(roots);
    let busy = mounted.unmount();
    if !busy.is_empty() {
        bail!("could not unmount the slots: {busy:?}");
    }
    if let Some(prefix) = &a.label {
        for (letter, d) in SlotId::BOTH.iter().zip(&devs) {
            let label = format!("{prefix}-{letter}");
            let cmd = crossback_host::fstype::of(&d.fstype)
                .and_then(|t| t.relabel(&d.path, &label))
                .ok_or_else(|| crate::error::refuse(Refusal::Unsupported, format!("cannot label a {} filesystem", d.fstype)))?;
            machine::run_tool(&cmd)?;
        }
    }
    let sealing = match &encryption {
        Some((enc, _)) => Sealing::Encrypted(enc.media_key.clone()),
        None => Sealing::Plain,
    };
    config::set_media(path, &Media::with_sealing(&media_id, &devs[0].uuid, &devs[1].uuid, &sealing))?;
    println!("media {media_id} recorded in {}", path.display());
    if let Some(part) = rescue_part {
        super::rescue::onto_new_partition(path, &part)?;
    }
    Ok(Outcome::Ok)
}

/// The rescue partition's share of a whole disk (`--disk`), and the least
/// each slot gets.
const RESCUE_MIB: u64 = 160;
const SLOT_MIN_MIB: u64 = 512;

/// `--disk`: the disk checked (whole, none of this machine's systems,
/// nothing mounted, asked about when it holds anything), then laid out as
/// a FAT rescue partition and two ext4 slots. Returns the rescue partition.
fn lay_out(m: &Machine, cfg: &Config, disk: &Path, yes: bool) -> anyhow::Result<std::path::PathBuf> {
    let d = device_for(m, &disk.display().to_string())?;
    if d.disk != d.name {
        refuse!(
            Refusal::Usage,
            "--disk {}: a partition; give the whole disk (or two filesystems: `media prepare SLOT_A SLOT_B`); nothing was written",
            d.path.display()
        );
    }
    let on_it: Vec<&Device> = m.devices.iter().filter(|p| p.disk == d.name).collect();
    let systems = machine::systems(m, cfg)?;
    for p in &on_it {
        super::refuse_if_in_use(m, &systems, p)?;
    }
    let mib = d.size >> 20;
    if mib < RESCUE_MIB + 2 * SLOT_MIN_MIB + 2 {
        refuse!(
            Refusal::TargetTooSmall,
            "{} is {}: a backup disk needs at least {} MiB; nothing was written",
            d.path.display(),
            crate::output::bytes(d.size),
            RESCUE_MIB + 2 * SLOT_MIN_MIB + 2
        );
    }
    let held: Vec<String> = on_it.iter().filter(|p| !p.fstype.is_empty() || p.name != d.name).map(|p| describe(p)).collect();
    let table = partitions::read(&d.path)?;
    if (!held.is_empty() || table.is_some()) && !yes {
        println!("{} holds: {}", d.path.display(), if held.is_empty() { "a partition table".to_string() } else { held.join(", ") });
        if !crate::output::confirm(&format!("Erase {} and make it the backup disk?", d.path.display()))? {
            refuse!(Refusal::TargetNotEmpty, "{} holds {}: pass --yes to erase it; nothing was written", d.path.display(), held.join(", "));
        }
    }
    let half = (mib - RESCUE_MIB - 2) / 2;
    let script = format!(
        "label: gpt\nsize={RESCUE_MIB}MiB, type=U, name=\"crossback-rescue\"\nsize={half}MiB, type=L, name=\"crossback-A\"\ntype=L, name=\"crossback-B\"\n"
    );
    partitions::write_script(&d.path, &script, &[1, 2, 3])?;
    let part = |n| partitions::partition_device(&d.path, n);
    machine::run_tool(Tool::new("mkfs.vfat").args(["-F", "32", "-n", super::RESCUE_LABEL]).arg(part(1)))?;
    for (n, letter) in [(2, SlotId::A), (3, SlotId::B)] {
        machine::run_tool(Tool::new("mkfs.ext4").args(["-q", "-F", "-L", &format!("crossback-{letter}")]).arg(part(n)))?;
    }
    println!("{}: a rescue partition of {RESCUE_MIB} MiB and two slots of {} each", d.path.display(), crate::output::bytes(half << 20));
    Ok(part(1))
}

/// A device as a refusal names it: path, type, label.
fn describe(d: &Device) -> String {
    format!(
        "{} ({}{})",
        d.path.display(),
        if d.fstype.is_empty() { "no filesystem" } else { &d.fstype },
        if d.label.is_empty() { String::new() } else { format!(" \"{}\"", crate::output::text(&d.label)) }
    )
}

/// Neither slot may hold the running system, be part of a configured
/// system, or be mounted.
fn check_candidates(m: &Machine, cfg: &Config, devs: &[Device; 2]) -> anyhow::Result<()> {
    let systems = machine::systems(m, cfg)?;
    let running = m.running_root().map(|(d, _)| d.path.clone());
    for (letter, d) in SlotId::BOTH.iter().zip(devs) {
        if running.as_ref() == Some(&d.path) {
            refuse!(Refusal::SystemRunning, "{} (for slot {letter}) holds the running system: choose the backup disk's filesystems", d.path.display());
        }
        for s in &systems {
            if s.uses(&d.path) {
                refuse!(Refusal::TargetInUse, "{} (for slot {letter}) is part of system {}: choose filesystems on the backup disk", d.path.display(), s.name);
            }
        }
        if let Some(at) = m.mounted_at(d) {
            refuse!(
                Refusal::TargetInUse,
                "{} (for slot {letter}) is mounted at {at}: unmount it first (and turn off automounting of the backup disk)",
                d.path.display()
            );
        }
    }
    Ok(())
}

/// `--mkfs`: both formatted as ext4 (after the user's yes); the devices
/// as found again.
fn format_slots(a: &PrepareArgs, devs: &[Device; 2]) -> anyhow::Result<[Device; 2]> {
    let list: Vec<String> = devs.iter().map(describe).collect();
    println!("--mkfs formats as ext4, destroying everything on: {}", list.join(", "));
    if !a.yes && !crate::output::confirm("Format them?")? {
        refuse!(Refusal::NotConfirmed, "not formatted: pass --yes with --mkfs to format without asking");
    }
    for (letter, d) in SlotId::BOTH.iter().zip(devs.iter()) {
        let label = a.label.as_ref().map(|p| format!("{p}-{letter}")).unwrap_or_else(|| format!("crossback-{letter}"));
        machine::run_tool(Tool::new("mkfs.ext4").args(["-q", "-F", "-L", &label]).arg(&d.path))?;
    }
    let m2 = Machine::scan(&[])?;
    Ok([device_for(&m2, &devs[0].path.display().to_string())?, device_for(&m2, &devs[1].path.display().to_string())?])
}

/// One slot, mounted at `root`, classified: true when it is an empty
/// filesystem to make a slot of this media, false when it is this slot
/// already; anything else refused. Nothing is written here.
fn check_slot(letter: SlotId, d: &Device, root: &Dir, media_id: &str, encrypt: bool) -> anyhow::Result<bool> {
    match layout::classify(root)? {
        Ok(view) if view.marker.media_id != media_id => refuse!(
            Refusal::SlotOfAnotherMedia,
            "{} is already slot {} of another backup media ({}): crossback will not take over another media's slot; choose another filesystem, or wipe it yourself if you are sure",
            d.path.display(),
            view.marker.slot,
            crate::output::text(&view.marker.media_id)
        ),
        Ok(view) if view.marker.slot != letter => {
            refuse!(Refusal::SlotOfAnotherMedia, "{} is already slot {} of this media; give the slots in the same order as before", d.path.display(), view.marker.slot)
        }
        Ok(view) if encrypt && view.marker.encryption.is_some() => refuse!(
            Refusal::Usage,
            "{} is slot {letter} of this media already, encrypted: `crossback media add-key` / `remove-key` change who can unlock it",
            d.path.display()
        ),
        Ok(view) if encrypt && view.marker.encryption.is_none() => refuse!(
            Refusal::Usage,
            "{} is slot {letter} of this media already, not encrypted: `crossback media encrypt` encrypts what is written from now on",
            d.path.display()
        ),
        Ok(_) => Ok(false),
        Err(mut foreign) => {
            if let Ok(dir) = root.dir(layout::DIR) {
                foreign.extend(dir.entries()?.into_iter().map(|(n, _)| format!("{}/{}", layout::DIR, crate::output::text(&n.to_string_lossy()))));
            }
            if !foreign.is_empty() {
                foreign.sort();
                refuse!(
                    Refusal::SlotHoldsForeignFiles,
                    "{} (for slot {letter}) is not empty: it holds {}. A slot must hold nothing but lost+found; move these away or choose an empty filesystem (or --mkfs)",
                    d.path.display(),
                    foreign.join(", ")
                );
            }
            Ok(true)
        }
    }
}
