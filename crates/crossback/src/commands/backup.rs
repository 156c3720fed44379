//! `crossback backup [SYSTEM...]`: one full archive per filesystem of each
//! offline system, into the slot the rotation rules choose
//! (`crate::media::plan`), written through the slot's one writer
//! (`crate::layout::SlotWriter`), which keeps the order of writes (R3–R6):
//! archives under `.partial` names, fsynced, read back from the disk and
//! checked, renamed; only then the system is named in `generation.toml`;
//! the last system seals the generation. Whatever is interrupted, the
//! newest sealed generation is in the other slot (R1), and the next run
//! removes the leftovers (R5).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossback_archive::{CreateOptions, Progress};
use crossback_host::beneath::Dir;
use crossback_host::lock;
use crossback_host::ns;
use crossback_host::offline::{self, FsMount, Mounted};

use crate::cli::BackupArgs;
use crate::config::Config;
use crate::error::{refuse, Refusal};
use crate::layout::{self, ArchiveRecord, FsRecord, GenEntry, GenWriter, Generation, MountsFile, SlotWriter, State, SystemRecord, SystemWriter};
use crate::machine::{self, Machine, System};
use crate::notify::{self, Urgency};
use crate::offline_rules::Allow;
use crate::output::{self, Bar};
use crate::{keys, local, media, slots, Outcome};
use crossback_host::efi::BootEntry;
use crossback_host::partitions::Table;

/// The slot ran out of space: the generation does not fit.
#[derive(Debug)]
struct SlotFull;

impl std::fmt::Display for SlotFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no space left on the slot")
    }
}

impl std::error::Error for SlotFull {}

/// Files whose presence makes a root a system: one that loses them is broken (R9).
const ESSENTIALS: [&str; 2] = ["etc/os-release", "etc/fstab"];

/// Excludes for one filesystem: the system's (anchored ones made relative
/// to this mount point), and swap files that live on it.
fn excludes_for(sys_excludes: &[String], swap_files: &[String], mountpoint: &str, all_mounts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let under = |p: &str| -> Option<String> {
        let mp = mountpoint.trim_end_matches('/');
        let rest = if mp.is_empty() { Some(p) } else { p.strip_prefix(mp).filter(|r| r.is_empty() || r.starts_with('/')) }?;
        // A deeper mount point owns the path.
        if all_mounts.iter().any(|o| o.len() > mountpoint.len() && (p == o || p.starts_with(&format!("{}/", o.trim_end_matches('/'))))) {
            return None;
        }
        Some(if rest.is_empty() { "/".to_string() } else { rest.to_string() })
    };
    for e in sys_excludes {
        if e.starts_with('/') {
            if let Some(r) = under(e) {
                out.push(r);
            }
        } else {
            out.push(e.clone());
        }
    }
    for s in swap_files {
        if let Some(r) = under(s) {
            out.push(r);
        }
    }
    out
}

/// fusefat shows a FAT volume's label as an empty file at the root, in
/// 8.3 form ("ALPHA-EFI" → "ALPHA-EF.I"); it is not a file and cannot be
/// restored as one: leave it out. (The kernel's vfat driver hides it.)
fn fat_label_entry(label: &str) -> Option<String> {
    if label.is_empty() {
        return None;
    }
    let (base, ext) = label.split_at(label.len().min(8));
    Some(if ext.is_empty() { format!("/{base}") } else { format!("/{base}.{ext}") })
}

/// The filesystem's parameters to record; a failure to read them is said,
/// and the restore then uses mkfs's defaults.
fn fs_params(fstype: &str, dev: &std::path::Path) -> Vec<String> {
    match crossback_host::fstype::of(fstype).map(|t| t.params(dev)) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            eprintln!("  warning: the parameters of {} ({fstype}) could not be read ({e}); a bare-metal restore will use mkfs's defaults", dev.display());
            Vec::new()
        }
        None => Vec::new(),
    }
}

struct Timing {
    archive: Duration,
    check: Duration,
}

/// What one system's backup did, for the summary and the exit code.
struct Done {
    record: SystemRecord,
    unreadable: u64,
}

/// Archives every filesystem of `sys` into `gen/SYSTEM/` on the slot.
/// The partition tables of the disks holding `devices`, and the firmware's
/// boot entries that start a loader from one of their partitions: what
/// `restore --bare-metal --disk` makes again. What cannot be read is a
/// warning (the files are backed up all the same).
fn disk_layout(m: &Machine, devices: &[&std::path::Path]) -> (Vec<Table>, Vec<BootEntry>) {
    let mut disks: Vec<String> = Vec::new();
    for p in devices {
        if let Some(d) = m.devices.iter().find(|d| d.path == *p).filter(|d| d.disk != d.name) {
            if !disks.contains(&d.disk) {
                disks.push(d.disk.clone());
            }
        }
    }
    let mut tables = Vec::new();
    for disk in disks {
        match crossback_host::partitions::read(&std::path::Path::new("/dev").join(&disk)) {
            Ok(Some(t)) => tables.push(t),
            Ok(None) => {}
            Err(e) => eprintln!("  warning: the partition table of /dev/{disk} was not recorded ({e}); `restore --disk` will not be able to make it again"),
        }
    }
    let mut entries = match crossback_host::efi::entries() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("  warning: the firmware's boot entries were not recorded ({e})");
            Vec::new()
        }
    };
    entries.retain(|e| tables.iter().any(|t| t.partitions.iter().any(|p| p.uuid.eq_ignore_ascii_case(&e.partuuid))));
    entries.sort_by_key(|e| e.order.unwrap_or(u32::MAX));
    (tables, entries)
}

/// What every system's backup in one run shares.
struct Run<'a> {
    m: &'a Machine,
    a: &'a BackupArgs,
    /// Where the filesystems are mounted, privately.
    scratch: &'a std::path::Path,
    encrypted: bool,
    timing: Timing,
}

/// One system into the generation: each filesystem mounted read-only and
/// archived, then its records (filesystems, swap, layers, the disks'
/// tables), all durable before the caller names it in the manifest.
fn backup_system(run: &mut Run, sys: &System, fs: &[FsMount], cfg_excludes: &[String], gen: &GenWriter) -> anyhow::Result<Done> {
    let w = gen.system(&sys.name)?;
    let all_mounts: Vec<String> = fs.iter().map(|f| f.mountpoint.clone()).collect();
    let mut mounted = Mounted::default();
    let mut records = Vec::new();
    let mut unreadable = 0;
    let mut essentials = Vec::new();
    let mut mounts_file = MountsFile::default();
    // The device of each record, in the same order.
    let mut record_devices: Vec<&std::path::Path> = Vec::new();
    for (i, f) in fs.iter().enumerate() {
        let at = run.scratch.join(format!("{}-{i}", sys.name));
        std::fs::create_dir_all(&at)?;
        offline::mount_one(f, &at, false, true, &mut mounted).with_context(|| format!("mounting {}'s {} read-only", sys.name, f.mountpoint))?;
        if f.mountpoint == "/" {
            essentials = essentials_of(&at)?;
        }
        let mut excludes = excludes_for(cfg_excludes, &sys.swap_files, &f.mountpoint, &all_mounts);
        let d = run.m.devices.iter().find(|d| d.path == f.device);
        if let Some(n) = d.filter(|d| d.fstype == "vfat").and_then(|d| fat_label_entry(&d.label)) {
            excludes.push(n);
        }
        // A filesystem that statvfs cannot read has no size to say; the device's is recorded when known.
        let space = rustix::fs::statvfs(&at).map(|s| (s.f_blocks * s.f_frsize, (s.f_blocks - s.f_bfree) * s.f_frsize)).unwrap_or((0, 0));
        let (record, errors) = archive_filesystem(run, &w, &sys.name, f, &at, space.1, excludes)?;
        unreadable += errors;
        mounts_file.filesystems.push(fs_record(sys, f, d, space, &record.file));
        record_devices.push(&f.device);
        records.push(record);
    }
    // Swap partitions: no archive, but bare-metal restore recreates them (same UUID and label).
    for sw in &sys.swap {
        let Some(d) = sw.device.as_ref().and_then(|p| run.m.devices.iter().find(|d| &d.path == p)) else { continue };
        mounts_file.filesystems.push(FsRecord {
            mountpoint: "swap".into(),
            fstype: "swap".into(),
            uuid: d.uuid.clone(),
            label: d.label.clone(),
            partuuid: d.partuuid.clone(),
            subvol: None,
            size: d.size,
            used: 0,
            options: sw.options.clone(),
            fstab_line: sw.fstab_line.clone(),
            archive: String::new(),
            params: Vec::new(),
            on: String::new(),
        });
        record_devices.push(&d.path);
    }
    record_layers(run, &w, &mut mounts_file, &record_devices)?;
    w.put_mounts(&toml::to_string(&mounts_file)?)?;
    let busy = mounted.unmount();
    if !busy.is_empty() {
        eprintln!("  warning: could not unmount {:?} (they go away when crossback exits)", busy);
    }
    // The manifest stays readable on an encrypted media (rotation needs it
    // without a key): it does not name the distribution there.
    let pretty_name = if run.encrypted { String::new() } else { sys.pretty_name.clone() };
    let record = SystemRecord { name: sys.name.clone(), pretty_name, finished: output::now(), archives: records, legacy: None, essentials };
    Ok(Done { record, unreadable })
}

/// Which of [`ESSENTIALS`] the root mounted at `at` has.
fn essentials_of(at: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let etc = Dir::open(at)?.dir("etc").ok();
    Ok(ESSENTIALS.iter().filter(|e| etc.as_ref().and_then(|d| d.kind(e.trim_start_matches("etc/")).ok().flatten()).is_some()).map(|e| e.to_string()).collect())
}

/// The record of a filesystem (its size and bytes used as mounted):
/// what a bare-metal restore makes again.
fn fs_record(sys: &System, f: &FsMount, d: Option<&crossback_host::blockdev::Device>, (size, used): (u64, u64), archive: &str) -> FsRecord {
    FsRecord {
        mountpoint: f.mountpoint.clone(),
        fstype: f.fstype.clone(),
        uuid: d.map(|d| d.uuid.clone()).unwrap_or_default(),
        label: d.map(|d| d.label.clone()).unwrap_or_default(),
        partuuid: d.map(|d| d.partuuid.clone()).unwrap_or_default(),
        subvol: f.subvol.clone(),
        size: d.map(|d| d.size).unwrap_or(size),
        used,
        options: f.options.clone(),
        fstab_line: sys.filesystems.iter().find(|x| x.mountpoint == f.mountpoint).map(|x| x.fstab_line.clone()).unwrap_or_default(),
        archive: archive.to_string(),
        params: fs_params(&f.fstype, &f.device),
        on: String::new(),
    }
}

/// One filesystem, mounted at `at` with `used` bytes (for the progress),
/// into its archive: written under its partial name, read back while
/// written, committed. The record and how many files could not be read.
fn archive_filesystem(
    run: &mut Run,
    w: &SystemWriter,
    name: &str,
    f: &FsMount,
    at: &std::path::Path,
    used: u64,
    excludes: Vec<String>,
) -> anyhow::Result<(ArchiveRecord, u64)> {
    let (pending, out) = w.archive(&f.mountpoint)?;
    let progress = Arc::new(Progress::default());
    let a = run.a;
    let opts = CreateOptions {
        excludes,
        spool_dir: Some(w.spool_dir()),
        progress: Some(Arc::clone(&progress)),
        encrypt_to: w.recipients(),
        read_back: !a.no_verify,
        ..a.compression.options()
    };
    let start = Instant::now();
    let bar = Bar::start(Arc::clone(&progress), used, "archiving");
    let made = crossback_archive::create(at, out, &opts);
    bar.finish();
    let report = match made {
        Ok(r) => r,
        Err(e) => {
            w.abandon(pending);
            if e.is_disk_full() {
                return Err(anyhow::Error::new(SlotFull).context(refuse(
                    Refusal::SlotFull,
                    format!(
                        "slot is full while archiving {name}'s {} ({} of it archived so far): the generation does not fit; use a larger disk or exclude more (nothing was recorded; the other slot is untouched)",
                        f.mountpoint,
                        output::bytes(progress.bytes_out.load(std::sync::atomic::Ordering::Relaxed))
                    ),
                )));
            }
            return Err(anyhow::Error::new(e).context(format!("archiving {name}'s {}", f.mountpoint)));
        }
    };
    run.timing.archive += start.elapsed();
    for p in &report.problems {
        eprintln!("  warning: {name}:{}: {}", output::path(&p.path), output::text(&p.what));
    }
    // Read back while it was written (after the final fsync, the tail).
    run.timing.archive -= report.read_back_tail;
    run.timing.check += report.read_back_tail;
    if let Some(Err(why)) = &report.read_back {
        crate::refuse!(
            Refusal::SlotIo,
            "the archive of {name}'s {} does not read back correctly from the slot ({why}): the backup disk may be failing; look at `dmesg` and its health (`smartctl -a`)",
            f.mountpoint,
        );
    }
    let file = pending.file.clone();
    let bytes = w.commit(pending)?;
    println!(
        "  {name} {:<10} {}, {} → {} in {:.1}s{}",
        f.mountpoint,
        output::count(report.summary.entries, "entry", "entries"),
        output::bytes(report.summary.data_bytes),
        output::bytes(bytes),
        start.elapsed().as_secs_f64(),
        output::levels(&report.levels).map(|l| format!(" (zstd levels: {l})")).unwrap_or_default()
    );
    let record = ArchiveRecord {
        mountpoint: f.mountpoint.clone(),
        file,
        bytes,
        hash: crate::output::hex(&report.footer.data_hash),
        entries: report.summary.entries,
        data_bytes: report.summary.data_bytes,
        unreadable: report.summary.errors,
    };
    Ok((record, report.summary.errors))
}

/// What the filesystems sit in (LUKS, LVM) is recorded, with the LUKS
/// headers beside the archives, and the partition tables of the disks at
/// the bottom, with the firmware's entries for their loaders.
fn record_layers(run: &Run, w: &SystemWriter, mounts_file: &mut MountsFile, record_devices: &[&std::path::Path]) -> anyhow::Result<()> {
    let devices: Vec<(&std::path::Path, &str, u64)> =
        mounts_file.filesystems.iter().zip(record_devices).map(|(r, d)| (*d, r.mountpoint.as_str(), r.used)).collect();
    let layering = crate::stack::open::record(run.m, &devices, run.encrypted)?;
    for (uuid, bytes) in &layering.headers {
        let l = layering.luks.iter().find(|l| &l.uuid == uuid).context("a header of a recorded container")?;
        w.put_header(&l.header, bytes)?;
    }
    for (r, (on, _)) in mounts_file.filesystems.iter_mut().zip(&layering.on) {
        r.on = on.clone();
    }
    let bottoms: Vec<&std::path::Path> = layering.on.iter().map(|(_, b)| b.as_path()).collect();
    (mounts_file.disks, mounts_file.boot_entries) = disk_layout(run.m, &bottoms);
    mounts_file.luks = layering.luks;
    mounts_file.vgs = layering.vgs;
    Ok(())
}

/// R9: what a system lost since its previous backup that makes it look
/// broken (a restore killed early, a disk that lost its tree): most of its
/// entries or bytes, or its os-release or fstab. Empty when it looks whole.
pub fn shrunk(previous: &SystemRecord, now: &SystemRecord) -> Vec<String> {
    let mut out = Vec::new();
    if previous.legacy.is_some() {
        return out;
    }
    let (pe, ne) = (previous.entries(), now.entries());
    if ne * 2 < pe {
        out.push(format!("{ne} entries instead of {pe}"));
    }
    let (pb, nb) = (previous.data_bytes(), now.data_bytes());
    if nb * 2 < pb {
        out.push(format!("{} of data instead of {}", output::bytes(nb), output::bytes(pb)));
    }
    for e in &previous.essentials {
        if !now.essentials.contains(e) {
            out.push(format!("no /{e}"));
        }
    }
    out
}

/// The newest backup of `name` in any slot, other than in generation `except`.
fn previous<'a>(slots: &'a [slots::Slot], name: &str, except: u64) -> Option<(u64, &'a SystemRecord)> {
    slots
        .iter()
        .flat_map(|s| s.view.generations.iter().filter_map(GenEntry::valid))
        .filter(|g| g.seq != except)
        .filter_map(|g| g.system(name).map(|r| (g.seq, r)))
        .max_by_key(|(seq, _)| *seq)
}

pub fn run(path: &std::path::Path, a: BackupArgs) -> anyhow::Result<Outcome> {
    let outcome = if a.plugged { plugged(path, &a)? } else { backup(path, &a)?.0 };
    // Its locks released, the backup is done: the remotes that take each
    // new generation get it (not at reboot: no network in that boot).
    if !a.frozen {
        super::push::after_backup(path);
    }
    Ok(outcome)
}

/// Started by the backup disk being plugged in (`crossback schedule`):
/// the logged-in users are told when it starts and how it ended.
fn plugged(path: &std::path::Path, a: &BackupArgs) -> anyhow::Result<Outcome> {
    let cfg = Config::load(path)?;
    let Some(media_cfg) = &cfg.media else {
        crate::refuse!(Refusal::Config, "no backup media in {}: run `crossback media prepare SLOT_A SLOT_B` first", path.display());
    };
    // udev announces the slots one by one: both must be there.
    if !slots::wait_for(media_cfg, Duration::from_secs(30))? {
        println!("only one of the backup disk's slots appeared within 30 s: nothing was done");
        return Ok(Outcome::Ok);
    }
    notify::users(
        "Backup started",
        "crossback is backing up the offline systems onto the backup disk: leave it plugged in until it says it has finished",
        Urgency::Normal,
    );
    match backup(path, a) {
        Ok((outcome, summary)) => {
            let title = if outcome == Outcome::Partial { "Backup finished; some files could not be read" } else { "Backup finished" };
            notify::users(title, &format!("{summary}. The backup disk can be unplugged"), Urgency::Normal);
            Ok(outcome)
        }
        Err(e) => {
            notify::users("Backup failed", &format!("{e:#}"), Urgency::Critical);
            Err(e)
        }
    }
}

/// The backup; with the outcome, the summary line.
fn backup(path: &std::path::Path, a: &BackupArgs) -> anyhow::Result<(Outcome, String)> {
    machine::require_root("backup")?;
    let cfg = Config::load(path)?;
    let Some(media_cfg) = &cfg.media else {
        crate::refuse!(Refusal::Config, "no backup media in {}: run `crossback media prepare SLOT_A SLOT_B` first", path.display());
    };
    check_names(&cfg, a, path)?;
    // R8: before anything is read or written.
    let _media_lock = slots::lock_media(media_cfg.id.get_ref(), lock::Mode::Exclusive)?;
    let wanted_cfg: Vec<&crate::config::SystemConfig> = cfg.systems.iter().filter(|s| a.systems.is_empty() || a.systems.contains(s.name.get_ref())).collect();
    let _system_locks = wanted_cfg.iter().map(|s| slots::lock_system(s.name.get_ref(), s.root.get_ref())).collect::<anyhow::Result<Vec<_>>>()?;
    // Encrypted and LVM systems: their containers opened and volume groups
    // activated read-only (closed when this returns, or by the guard).
    let access = if a.frozen { crate::stack::open::Access::Frozen } else { crate::stack::open::Access::Read };
    let crate::stack::open::Unlocked { opened: _opened, machine: m, failed: mut locked } = crate::stack::open::open_for(&wanted_cfg, access)?;
    let systems = machine::systems(&m, &cfg)?;
    let wanted: Vec<&System> = systems.iter().filter(|s| a.systems.is_empty() || a.systems.contains(&s.name)).collect();
    // A system named that cannot be opened, or nothing else to back up:
    // refused before the media is touched.
    let others = wanted.iter().filter(|s| (!s.running || a.frozen) && !locked.iter().any(|(n, _)| n == &s.name)).count();
    if !locked.is_empty() && (!a.systems.is_empty() || others == 0) {
        let (name, e) = locked.remove(0);
        return Err(e.context(format!("{name} cannot be backed up; nothing was written")));
    }
    let devs = slots::find(&m, media_cfg, &wanted, true)?;

    ns::start_guard()?;
    ns::enter_private()?;
    let scratch = crossback_host::inspect::scratch_dir("crossback-backup")?;
    let target = open_target(&devs, media_cfg, a, &scratch)?;
    let slot = &target.slots[target.index];
    let writer = SlotWriter::new(&slot.root, target.encrypt_to.as_ref())?;
    let mut gen = open_generation(&writer, slot, &target.plan, &cfg, media_cfg.id.get_ref())?;
    // A copy of the configuration on the media: the other systems and a
    // rescue system take it from there (`crossback init`).
    writer.put_config(&crate::config::text(path)?)?;
    writer.carry_tool()?;
    let (todo, skipped_running) = choose(&wanted, gen.generation(), a)?;
    let mut run =
        Run { m: &m, a, scratch: &scratch, encrypted: target.encrypt_to.is_some(), timing: Timing { archive: Duration::ZERO, check: Duration::ZERO } };
    let started = Instant::now();
    let each = back_up_each(&mut run, &todo, &mut locked, &cfg, &mut gen, &target.slots)?;
    let how = if a.frozen {
        "at reboot"
    } else if a.plugged {
        "plugged in"
    } else {
        "by hand"
    };
    let generation = gen.generation().clone();
    let gens: Vec<&Generation> = target
        .slots
        .iter()
        .flat_map(|s| s.view.generations.iter().filter_map(GenEntry::valid))
        .filter(|g| g.seq != generation.seq)
        .chain([&generation])
        .collect();
    local::record_history(&gens, &each.ran, how);
    // What holds the slots open goes before they are unmounted.
    let target_id = slot.id;
    drop((gen, writer));
    let Target { slots: slot_list, mounts: mut slot_mounts, .. } = target;
    drop(slot_list);
    let busy = slot_mounts.unmount();
    if !busy.is_empty() {
        eprintln!("warning: could not unmount a slot: {busy:?}");
    }
    // A rescue system on the backup disk runs this crossback from now on.
    super::media::refresh_rescue(&m, &devs.iter().map(|d| d.disk.clone()).collect::<Vec<_>>());
    let summary = format!(
        "generation {} in slot {}: {}{}",
        generation.seq,
        target_id,
        if generation.state == State::Sealed { "sealed: complete".to_string() } else { format!("open, missing {}", generation.missing().join(", ")) },
        if skipped_running.is_empty() {
            String::new()
        } else {
            format!(
                " ({} is running: run `crossback backup --at-reboot`, or boot another system or a live USB and run `crossback backup`, to add it)",
                skipped_running.join(", ")
            )
        },
    );
    println!(
        "{summary}; archiving {:.1}s, read-back check {:.1}s, total {:.1}s",
        run.timing.archive.as_secs_f64(),
        run.timing.check.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    each.outcome().map(|o| (o, summary))
}

/// Every system named on the command line is configured.
fn check_names(cfg: &Config, a: &BackupArgs, path: &std::path::Path) -> anyhow::Result<()> {
    if cfg.systems.is_empty() {
        crate::refuse!(Refusal::Config, "no systems in {}: run `crossback init`", path.display());
    }
    for n in a.systems.iter().chain(a.accept_shrunk.iter()) {
        if cfg.system(n).is_none() {
            crate::refuse!(
                Refusal::UnknownSystem,
                "no system called {:?} in the configuration (configured: {})",
                output::text(n),
                cfg.systems.iter().map(|s| s.name.get_ref().as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(())
}

/// Both slots mounted, the target made writable: what the plan chose.
struct Target {
    slots: Vec<slots::Slot>,
    mounts: Mounted,
    plan: media::Plan,
    index: usize,
    encrypt_to: Option<age::x25519::Recipient>,
}

/// Mounts both slots (read-only), plans (R1–R2), decides from the
/// configuration what the media is, makes only the target writable and
/// reads it again: a slot that changed meanwhile is refused.
fn open_target(
    devs: &[crossback_host::blockdev::Device; 2],
    media_cfg: &crate::config::Media,
    a: &BackupArgs,
    scratch: &std::path::Path,
) -> anyhow::Result<Target> {
    let (mut slot_list, mut slot_mounts) = slots::mount(devs, media_cfg.id.get_ref(), scratch, slots::Access::Backup)?;
    let plan = media::plan([&slot_list[0].view.generations, &slot_list[1].view.generations], a.new_generation, a.discard_damaged)?;
    // What the media is comes from this system's configuration; the
    // markers may only agree. Decided before anything is written.
    let sealing = media_cfg.sealing();
    let encrypt_to = keys::write_to(&sealing, &[&slot_list[0].view, &slot_list[1].view])?;
    if encrypt_to.is_none() && a.plugged && !a.unencrypted {
        crate::refuse!(
            Refusal::NotEncrypted,
            "the backup disk is not encrypted, and a backup started by plugging a disk in goes only onto an encrypted one: a stick given your slots' UUIDs would get your systems in plaintext. `crossback media encrypt` encrypts the media; `crossback schedule --unencrypted` accepts a plain one; nothing was written"
        );
    }
    // Only the target is made writable; it is read again once it is.
    let i = plan.target.index();
    let t = slot_list.remove(i);
    let t = slots::make_writable(t, &devs[i], media_cfg.id.get_ref(), &mut slot_mounts)?;
    slot_list.insert(i, t);
    if media::plan([&slot_list[0].view.generations, &slot_list[1].view.generations], a.new_generation, a.discard_damaged)? != plan
        || keys::write_to(&sealing, &[&slot_list[0].view, &slot_list[1].view])? != encrypt_to
    {
        crate::refuse!(Refusal::SlotBusy, "slot {} changed while crossback was reading it: is another program writing to it? Nothing was written", plan.target);
    }
    Ok(Target { slots: slot_list, mounts: slot_mounts, plan, index: i, encrypt_to })
}

/// Wipes what the plan says (R5), then continues the open generation or
/// starts a new one.
fn open_generation<'a>(writer: &SlotWriter<'a>, slot: &slots::Slot, plan: &media::Plan, cfg: &Config, media_id: &str) -> anyhow::Result<GenWriter<'a>> {
    for w in &plan.wipe {
        println!("slot {}: wiping {w} (older than the newest complete generation)", slot.id);
        // An adopted duplicity generation: its files go first.
        let legacy = slot.view.generations.iter().find_map(|g| match g {
            GenEntry::Valid { dir, generation } if dir == w && !generation.legacy_files.is_empty() => Some(generation.legacy_files.clone()),
            _ => None,
        });
        if let Some(files) = legacy {
            println!("slot {}: removing the duplicity backup it adopted: {}", slot.id, files.join(", "));
            writer.wipe_legacy(&files)?;
        }
        writer.wipe(w)?;
    }
    if let Some(seq) = plan.resume {
        let g = slot.view.generations.iter().filter_map(GenEntry::valid).find(|g| g.seq == seq).cloned().context("the open generation was just classified")?;
        println!("continuing generation {seq} in slot {} (still missing: {})", slot.id, g.missing().join(", "));
        return writer.resume(g);
    }
    let seq = plan.start.context("a plan starts or resumes")?;
    let g = Generation {
        format: layout::FORMAT,
        media_id: media_id.to_string(),
        seq,
        state: State::Open,
        started: output::now(),
        sealed: None,
        systems: cfg.systems.iter().map(|s| s.name.get_ref().clone()).collect(),
        recorded: Vec::new(),
        legacy_files: Vec::new(),
    };
    let gen = writer.start(g)?;
    println!(
        "generation {seq} started in slot {}{}",
        slot.id,
        plan.protected.map(|(s, q)| format!("; generation {q} in slot {s} stays as it is")).unwrap_or_default()
    );
    Ok(gen)
}

/// Which systems now: the named ones, or every one not running and not
/// yet in the generation; and the running ones left out.
fn choose<'a>(wanted: &[&'a System], generation: &Generation, a: &BackupArgs) -> anyhow::Result<(Vec<&'a System>, Vec<String>)> {
    let recorded: BTreeSet<&str> = generation.recorded.iter().map(|r| r.name.as_str()).collect();
    let mut todo = Vec::new();
    let mut skipped_running = Vec::new();
    for s in wanted {
        if recorded.contains(s.name.as_str()) {
            if !a.systems.is_empty() {
                crate::refuse!(Refusal::AlreadyRecorded, "{} is in generation {} already; pass --new-generation to start a new one", s.name, generation.seq);
            }
            continue;
        }
        if s.running && a.systems.is_empty() && !a.frozen {
            skipped_running.push(s.name.clone());
            continue;
        }
        todo.push(*s);
    }
    Ok((todo, skipped_running))
}

/// How the systems of one run went.
#[derive(Default)]
struct Each {
    ran: Vec<String>,
    failures: Vec<(String, Option<Refusal>)>,
    unreadable: u64,
}

impl Each {
    /// The run's outcome: failed (with the first refusal's kind when every
    /// failure was a refusal), partial when files could not be read, or ok.
    fn outcome(&self) -> anyhow::Result<Outcome> {
        if !self.failures.is_empty() {
            let names: Vec<&str> = self.failures.iter().map(|(n, _)| n.as_str()).collect();
            let kind = self.failures.iter().map(|(_, k)| *k).collect::<Option<Vec<_>>>().and_then(|k| k.first().copied());
            let msg = format!("not backed up: {} (see above)", names.join(", "));
            return Err(match kind {
                Some(k) => refuse(k, msg),
                None => anyhow::anyhow!(msg),
            });
        }
        if self.unreadable > 0 {
            eprintln!(
                "{} could not be read completely (listed above): the backup is recorded, but without them",
                output::count(self.unreadable, "file", "files")
            );
            return Ok(Outcome::Partial);
        }
        Ok(Outcome::Ok)
    }
}

/// Each system in turn: checked offline, backed up, compared with its
/// previous backup (R9), recorded — the last one seals the generation. A
/// system that fails is said and left out; a full slot stops the run.
fn back_up_each(
    run: &mut Run,
    todo: &[&System],
    locked: &mut Vec<(String, anyhow::Error)>,
    cfg: &Config,
    gen: &mut GenWriter,
    slot_list: &[slots::Slot],
) -> anyhow::Result<Each> {
    let a = run.a;
    let mut each = Each::default();
    for s in todo {
        if let Some(i) = locked.iter().position(|(n, _)| n == &s.name) {
            let (_, e) = locked.remove(i);
            eprintln!("{}: not backed up: {e:#}", s.name);
            each.failures.push((s.name.clone(), crate::error::kind_of(&e)));
            continue;
        }
        let allow = Allow { dirty: a.allow_dirty, mounted: false, mounted_option: None, view: true, frozen: a.frozen };
        let fs = match crate::offline_rules::check(run.m, s, allow, false, "back up") {
            Ok(fs) => fs,
            Err(e) => {
                eprintln!("{}: not backed up: {e:#}", s.name);
                each.failures.push((s.name.clone(), crate::error::kind_of(&e)));
                continue;
            }
        };
        println!("{}: {}", s.name, output::text(&s.pretty_name));
        let excludes = cfg.system(&s.name).map(|c| c.exclude.clone()).unwrap_or_default();
        let seq = gen.generation().seq;
        let done = backup_system(run, s, &fs, &excludes, gen).and_then(|done| {
            not_shrunk(slot_list, &s.name, seq, &done.record, a)?;
            Ok(done)
        });
        match done {
            Ok(done) => {
                each.unreadable += done.unreadable;
                each.ran.push(done.record.name.clone());
                gen.record(done.record, output::now())?;
            }
            Err(e) => {
                let _ = gen.discard(&s.name);
                eprintln!("{}: not backed up: {e:#}", s.name);
                each.failures.push((s.name.clone(), crate::error::kind_of(&e)));
                // A full slot fails every system after it too: stop here.
                if e.downcast_ref::<SlotFull>().is_some() {
                    break;
                }
            }
        }
    }
    Ok(each)
}

/// R9: a system that lost most of itself does not push out its last good
/// backup, unless the user says so (asked, or `--accept-shrunk`).
fn not_shrunk(slot_list: &[slots::Slot], name: &str, seq: u64, now: &SystemRecord, a: &BackupArgs) -> anyhow::Result<()> {
    let Some((prev_seq, prev)) = previous(slot_list, name, seq) else { return Ok(()) };
    let lost = shrunk(prev, now);
    if lost.is_empty() || a.accept_shrunk.iter().any(|n| n == name) {
        return Ok(());
    }
    let what = lost.join(", ");
    if !output::confirm(&format!("{name} looks broken since generation {prev_seq}: {what}. Record it anyway?"))? {
        crate::refuse!(
            Refusal::SystemShrunk,
            "{name} has {what} compared with its backup in generation {prev_seq}: it looks broken (an interrupted restore, a lost disk), so it is not recorded and the generation is not sealed over it; the older backups stay. If this is what you want, run again with --accept-shrunk {name}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_excludes() {
        let mounts = vec!["/".to_string(), "/home".to_string()];
        let ex = excludes_for(&["/home/*/.cache".into(), "/var/tmp".into(), "*.tmp".into()], &["/swapfile".into()], "/home", &mounts);
        assert_eq!(ex, ["/*/.cache", "*.tmp"]);
        let ex = excludes_for(&["/home/*/.cache".into(), "/var/tmp".into()], &["/swapfile".into()], "/", &mounts);
        assert_eq!(ex, ["/var/tmp", "/swapfile"]);
    }
}
