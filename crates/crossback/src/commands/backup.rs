//! `crossback backup [SYSTEM...]`: one full archive per filesystem of each
//! offline system, into the slot the rotation rules choose.
//!
//! Order of writes (R3): archives under `.partial` names, fsynced, read
//! back from the disk and checked, renamed, the directory fsynced; only
//! then the system is recorded in `generation.toml` (new file, fsync,
//! rename, fsync). The last system seals the generation (R4). Whatever is
//! interrupted, the newest sealed generation is in the other slot (R1), and
//! the next run removes the leftovers (R5).

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crossback_archive::{Archive, CreateOptions, Progress};
use crossback_host::ns;
use crossback_host::offline::{self, FsMount, Mounted};
use serde::Serialize;

use crate::cli::BackupArgs;
use crate::config::Config;
use crate::machine::{self, Machine, System};
use crate::media::{self, ArchiveRecord, Generation, State, SystemRecord};
use crate::offline::Allow;
use crate::output::{self, Bar};
use crate::{slots, Outcome};

/// The archive's file name for a mount point: `/` → root, `/boot/efi` → boot-efi.
pub fn archive_name(mountpoint: &str) -> String {
    let t = mountpoint.trim_matches('/');
    if t.is_empty() {
        "root".into()
    } else {
        t.replace('/', "-")
    }
}

/// The slot ran out of space: the generation does not fit.
#[derive(Debug)]
struct SlotFull;

impl std::fmt::Display for SlotFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no space left on the slot")
    }
}

impl std::error::Error for SlotFull {}

/// `mounts.toml`: what bare-metal restore needs to recreate each filesystem.
#[derive(Serialize, serde::Deserialize, Debug, Clone)]
pub struct MountsFile {
    #[serde(rename = "filesystem")]
    pub filesystems: Vec<FsRecord>,
}

#[derive(Serialize, serde::Deserialize, Debug, Clone)]
pub struct FsRecord {
    pub mountpoint: String,
    pub fstype: String,
    pub uuid: String,
    pub label: String,
    pub partuuid: String,
    pub subvol: Option<String>,
    /// Size of the filesystem's device, and bytes used on it.
    pub size: u64,
    pub used: u64,
    pub options: Vec<String>,
    pub fstab_line: String,
    pub archive: String,
}

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

/// Drops the file's pages from the cache, so the check reads the disk.
fn drop_cache(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = rustix::fs::fadvise(f.as_fd(), 0, None, rustix::fs::Advice::DontNeed);
    }
}

struct Timing {
    archive: Duration,
    check: Duration,
}

#[allow(clippy::too_many_arguments)]
fn backup_system(
    m: &Machine,
    sys: &System,
    fs: &[FsMount],
    cfg_excludes: &[String],
    gen_dir: &Path,
    scratch: &Path,
    a: &BackupArgs,
    t: &mut Timing,
) -> anyhow::Result<SystemRecord> {
    let dir = gen_dir.join(&sys.name);
    if dir.exists() {
        // Left by an interrupted run: start this system again.
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing the unfinished {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let all_mounts: Vec<String> = fs.iter().map(|f| f.mountpoint.clone()).collect();
    let mut mounted = Mounted::default();
    let mut records = Vec::new();
    let mut mounts_file = MountsFile { filesystems: Vec::new() };
    for (i, f) in fs.iter().enumerate() {
        let at = scratch.join(format!("{}-{i}", sys.name));
        std::fs::create_dir_all(&at)?;
        offline::mount_one(f, &at, false, true, &mut mounted).with_context(|| format!("mounting {}'s {} read-only", sys.name, f.mountpoint))?;
        let d = m.devices.iter().find(|d| d.path == f.device);
        let (size, used) = rustix::fs::statvfs(&at).map(|s| (s.f_blocks * s.f_frsize, (s.f_blocks - s.f_bfree) * s.f_frsize)).unwrap_or((0, 0));
        let name = archive_name(&f.mountpoint);
        let file = format!("{name}.tar.zst");
        mounts_file.filesystems.push(FsRecord {
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
            archive: file.clone(),
        });
        let partial = dir.join(format!("{file}.partial"));
        let out = std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let progress = Arc::new(Progress::default());
        let mut opts = CreateOptions {
            level: a.level,
            excludes: excludes_for(cfg_excludes, &sys.swap_files, &f.mountpoint, &all_mounts),
            spool_dir: Some(dir.clone()),
            progress: Some(Arc::clone(&progress)),
            ..Default::default()
        };
        if let Some(th) = a.threads {
            opts.threads = th.max(1);
        }
        if let Some(n) = d.filter(|d| d.fstype == "vfat").and_then(|d| fat_label_entry(&d.label)) {
            opts.excludes.push(n);
        }
        let start = Instant::now();
        let bar = Bar::start(Arc::clone(&progress), used, "archiving");
        let made = crossback_archive::create(&at, out, &opts);
        bar.finish();
        let report = match made {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                if e.is_disk_full() {
                    return Err(anyhow::Error::new(SlotFull).context(format!("slot is full while archiving {}'s {} ({} of it archived so far): the generation does not fit; use a larger disk or exclude more (nothing was recorded; the other slot is untouched)", sys.name, f.mountpoint, output::bytes(progress.bytes_out.load(std::sync::atomic::Ordering::Relaxed)))));
                }
                return Err(anyhow::Error::new(e).context(format!("archiving {}'s {}", sys.name, f.mountpoint)));
            }
        };
        t.archive += start.elapsed();
        for p in &report.problems {
            eprintln!("  warning: {}:{}: {}", sys.name, output::path(&p.path), p.what);
        }
        if !a.no_verify {
            let start = Instant::now();
            drop_cache(&partial);
            let archive = Archive::open(&partial).with_context(|| format!("reading back {}", partial.display()))?;
            let check = crossback_archive::verify::verify(&archive, None, None).with_context(|| format!("checking {}", partial.display()))?;
            if !check.clean() {
                bail!(
                    "the archive of {}'s {} does not read back correctly from the slot ({} damaged: {:?}): the backup disk may be failing",
                    sys.name,
                    f.mountpoint,
                    check.damaged.len(),
                    check.damaged.iter().take(3).map(|(p, w)| format!("{}: {w}", output::path(p))).collect::<Vec<_>>()
                );
            }
            t.check += start.elapsed();
        }
        let final_path = dir.join(&file);
        std::fs::rename(&partial, &final_path).with_context(|| format!("renaming {}", partial.display()))?;
        crate::durable::fsync_dir(&dir)?;
        let bytes = std::fs::metadata(&final_path)?.len();
        records.push(ArchiveRecord {
            mountpoint: f.mountpoint.clone(),
            file,
            bytes,
            hash: report.footer.data_hash.iter().map(|b| format!("{b:02x}")).collect(),
            entries: report.summary.entries,
            data_bytes: report.summary.data_bytes,
            unreadable: report.summary.errors,
        });
        println!(
            "  {} {:<10} {}, {} → {} in {:.1}s",
            sys.name,
            f.mountpoint,
            output::count(report.summary.entries, "entry", "entries"),
            output::bytes(report.summary.data_bytes),
            output::bytes(bytes),
            start.elapsed().as_secs_f64()
        );
    }
    // Swap partitions: no archive, but bare-metal restore recreates them (same UUID and label).
    for sw in &sys.swap {
        let Some(d) = sw.device.as_ref().and_then(|p| m.devices.iter().find(|d| &d.path == p)) else { continue };
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
        });
    }
    crate::durable::write(&dir.join("mounts.toml"), toml::to_string(&mounts_file)?.as_bytes())?;
    let busy = mounted.unmount();
    if !busy.is_empty() {
        eprintln!("  warning: could not unmount {:?} (they go away when crossback exits)", busy);
    }
    Ok(SystemRecord { name: sys.name.clone(), pretty_name: sys.pretty_name.clone(), finished: output::now(), archives: records, legacy: None })
}

fn write_manifest(gen_dir: &Path, g: &Generation) -> anyhow::Result<()> {
    crate::durable::write(&gen_dir.join(media::MANIFEST), toml::to_string(g)?.as_bytes())
}

pub fn run(path: &Path, a: BackupArgs) -> anyhow::Result<Outcome> {
    machine::require_root("backup")?;
    let cfg = Config::load(path)?;
    let Some(media_cfg) = &cfg.media else {
        bail!("no backup media in {}: run `crossback media prepare SLOT_A SLOT_B` first", path.display());
    };
    if cfg.systems.is_empty() {
        bail!("no systems in {}: run `crossback init`", path.display());
    }
    for n in &a.systems {
        if cfg.system(n).is_none() {
            bail!(
                "no system called {n:?} in the configuration (configured: {})",
                cfg.systems.iter().map(|s| s.name.get_ref().as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let m = Machine::scan(&[])?;
    let systems = machine::systems(&m, &cfg)?;
    let wanted: Vec<&System> = systems.iter().filter(|s| a.systems.is_empty() || a.systems.contains(&s.name)).collect();
    let devs = slots::find(&m, media_cfg, &wanted, true)?;

    ns::start_guard()?;
    ns::enter_private()?;
    let scratch = crossback_host::inspect::scratch_dir("crossback-backup")?;
    let (slot_list, mut slot_mounts) = slots::mount(&devs, media_cfg.id.get_ref(), &scratch, true)?;
    let contents = [slot_list[0].contents.clone(), slot_list[1].contents.clone()];
    let plan = media::plan(&contents, a.new_generation);
    let target = &slot_list[plan.target];
    let slot_dir = target.dir();
    for w in &plan.wipe {
        println!("slot {}: wiping {w} (older than the newest complete generation)", target.letter);
        // An adopted duplicity generation: its files go first (the manifest that
        // lists them goes last, so an interrupted wipe is finished next time).
        let legacy = target.contents.generations.iter().find_map(|g| match g {
            media::GenEntry::Valid { dir, generation } if dir == w && !generation.legacy_files.is_empty() => Some(generation.legacy_files.clone()),
            _ => None,
        });
        if let Some(files) = legacy {
            println!("slot {}: removing the duplicity backup it adopted: {}", target.letter, files.join(", "));
            media::wipe_legacy(&target.root, &files)?;
        }
        media::wipe(&slot_dir, w)?;
    }
    let mut generation = match plan.resume {
        Some(seq) => {
            let text = std::fs::read_to_string(slot_dir.join(media::gen_dir(seq)).join(media::MANIFEST))?;
            let g: Generation = toml::from_str(&text)?;
            println!("continuing generation {seq} in slot {} (still missing: {})", target.letter, g.missing().join(", "));
            g
        }
        None => {
            let seq = plan.start.expect("a plan starts or resumes");
            let g = Generation {
                format: media::FORMAT,
                media_id: media_cfg.id.get_ref().clone(),
                seq,
                state: State::Open,
                started: output::now(),
                sealed: None,
                systems: cfg.systems.iter().map(|s| s.name.get_ref().clone()).collect(),
                recorded: Vec::new(),
                legacy_files: Vec::new(),
            };
            let gd = slot_dir.join(media::gen_dir(seq));
            std::fs::create_dir_all(&gd).with_context(|| format!("creating {}", gd.display()))?;
            crate::durable::fsync_dir(&slot_dir)?;
            write_manifest(&gd, &g)?;
            println!(
                "generation {seq} started in slot {}{}",
                target.letter,
                plan.protected.map(|(s, q)| format!("; generation {q} in slot {} stays as it is", slots::LETTERS[s])).unwrap_or_default()
            );
            g
        }
    };
    let gen_dir = slot_dir.join(media::gen_dir(generation.seq));
    // Which systems now: the named ones, or every one not running and not yet in.
    let recorded: BTreeSet<String> = generation.recorded.iter().map(|r| r.name.clone()).collect();
    let mut todo = Vec::new();
    let mut skipped_running = Vec::new();
    for s in &wanted {
        if recorded.contains(&s.name) {
            if !a.systems.is_empty() {
                bail!("{} is in generation {} already; pass --new-generation to start a new one", s.name, generation.seq);
            }
            continue;
        }
        if s.running && a.systems.is_empty() {
            skipped_running.push(s.name.clone());
            continue;
        }
        todo.push(*s);
    }
    let mut timing = Timing { archive: Duration::ZERO, check: Duration::ZERO };
    let mut failures = Vec::new();
    let started = Instant::now();
    for s in todo {
        let allow = Allow { dirty: a.allow_dirty, mounted: false };
        let fs = match crate::offline::check(&m, s, allow, false, "back up") {
            Ok(fs) => fs,
            Err(e) => {
                eprintln!("{}: not backed up: {e:#}", s.name);
                failures.push(s.name.clone());
                continue;
            }
        };
        println!("{}: {}", s.name, if s.pretty_name.is_empty() { "" } else { &s.pretty_name });
        let excludes = cfg.system(&s.name).map(|c| c.exclude.clone()).unwrap_or_default();
        match backup_system(&m, s, &fs, &excludes, &gen_dir, &scratch, &a, &mut timing) {
            Ok(rec) => {
                generation.recorded.retain(|r| r.name != rec.name);
                generation.recorded.push(rec);
                if generation.missing().is_empty() {
                    generation.state = State::Sealed;
                    generation.sealed = Some(output::now());
                }
                write_manifest(&gen_dir, &generation)?;
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(gen_dir.join(&s.name));
                eprintln!("{}: not backed up: {e:#}", s.name);
                failures.push(s.name.clone());
                // A full slot fails every system after it too: stop here.
                if e.downcast_ref::<SlotFull>().is_some() {
                    break;
                }
            }
        }
    }
    let busy = slot_mounts.unmount();
    if !busy.is_empty() {
        eprintln!("warning: could not unmount a slot: {busy:?}");
    }
    println!(
        "generation {} in slot {}: {}{}; archiving {:.1}s, read-back check {:.1}s, total {:.1}s",
        generation.seq,
        target.letter,
        if generation.state == State::Sealed { "sealed: complete".to_string() } else { format!("open, missing {}", generation.missing().join(", ")) },
        if skipped_running.is_empty() {
            String::new()
        } else {
            format!(" ({} is running: boot another system or a live USB and run `crossback backup` to add it)", skipped_running.join(", "))
        },
        timing.archive.as_secs_f64(),
        timing.check.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!("not backed up: {} (see above)", failures.join(", "));
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_excludes() {
        assert_eq!(archive_name("/"), "root");
        assert_eq!(archive_name("/boot/efi"), "boot-efi");
        let mounts = vec!["/".to_string(), "/home".to_string()];
        let ex = excludes_for(&["/home/*/.cache".into(), "/var/tmp".into(), "*.tmp".into()], &["/swapfile".into()], "/home", &mounts);
        assert_eq!(ex, ["/*/.cache", "*.tmp"]);
        let ex = excludes_for(&["/home/*/.cache".into(), "/var/tmp".into()], &["/swapfile".into()], "/", &mounts);
        assert_eq!(ex, ["/var/tmp", "/swapfile"]);
    }
}
