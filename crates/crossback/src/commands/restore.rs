//! `crossback ls SYSTEM` and `crossback restore SYSTEM`: a system's backup
//! browsed like a directory, and restored — some paths, the whole system
//! into a directory, or onto its own (or new) filesystems.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use crossback_archive::extract::ExtractOptions;
use crossback_archive::{Archive, Progress};
use crossback_host::offline::{self, FsMount};

use crate::backups::{self, SystemBackup};
use crate::cli::{LsSystemArgs, RestoreArgs};
use crate::commands::backup::FsRecord;
use crate::config::Config;
use crate::machine::{self, Machine};
use crate::output::{self, Bar};
use crate::{slots, Outcome};

/// Mounts the slots read-only (privately) and finds the system's backup.
fn open(path: &Path, system: &str, generation: Option<u64>) -> anyhow::Result<(Config, Machine, Vec<slots::Slot>, offline::Mounted, SystemBackup)> {
    let v = slots::open_read_only(path, "crossback-restore")?;
    let b = backups::find(&v.slots, system, generation)?;
    Ok((v.cfg, v.machine, v.slots, v.mounts, b))
}

pub fn ls(path: &Path, a: LsSystemArgs) -> anyhow::Result<Outcome> {
    machine::require_root("ls")?;
    let (_cfg, _m, _slots, mut mounts, b) = open(path, &a.system, a.generation)?;
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
            bail!("{want} is not in {}'s backup in generation {}", a.system, b.generation.seq);
        }
        return Ok(Outcome::Ok);
    }
    // The archive holding the path, and those of mount points below it.
    let (_, rest) = b.locate(&want).context("no archive holds that path")?;
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
        let archive = Archive::open(&b.archive_path(ar))?;
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
        bail!("{want} is not in {}'s backup in generation {}", a.system, b.generation.seq);
    }
    Ok(Outcome::Ok)
}

/// Restores every archive (or the given paths) under `target`, each at its mount point.
fn restore_into(b: &SystemBackup, target: &Path, paths: &[String]) -> anyhow::Result<(u64, Vec<String>, Vec<String>)> {
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
        let dest = target.join(ar.mountpoint.trim_start_matches('/'));
        std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
        let archive = Archive::open(&b.archive_path(ar))?;
        let progress = Arc::new(Progress::default());
        let bar = Bar::start(Arc::clone(&progress), if sel.is_empty() { ar.data_bytes } else { 0 }, "restoring");
        let r = crossback_archive::extract(&archive, &dest, &ExtractOptions { paths: sel, progress: Some(progress) });
        bar.finish();
        let r = r.with_context(|| format!("restoring {} into {}", ar.file, dest.display()))?;
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
    println!("restored {entries} entries in {:.1}s", start.elapsed().as_secs_f64());
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
    if a.bare_metal {
        return bare_metal(path, a);
    }
    let Some(to) = a.to.clone() else { bail!("say where: --to DIR (files or the whole system into a directory) or --bare-metal (onto its filesystems)") };
    // The target is resolved before the private namespace hides nothing of it.
    let to = if to.is_absolute() { to } else { std::env::current_dir()?.join(to) };
    backups::check_target(&to, a.force)?;
    let (_cfg, _m, _slots, mut mounts, b) = open(path, &a.system, a.generation)?;
    println!("restoring {} from generation {} (slot {}) into {}", a.system, b.generation.seq, b.slot, to.display());
    let start = Instant::now();
    std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
    if let Some(set) = &b.record.legacy {
        let paths: Vec<Vec<u8>> = a.paths.iter().filter_map(|p| crossback_archive::entry::normalize_path(p.as_bytes())).collect();
        let (entries, problems) = crate::duplicity::restore(&b.slot_root, set, &to, &paths)?;
        let _ = mounts.unmount();
        return Ok(report(entries, &[], &problems, start));
    }
    let (entries, damaged, failed) = restore_into(&b, &to, &a.paths)?;
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

fn parse_devices(list: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for d in list {
        let Some((mp, dev)) = d.split_once('=') else { bail!("--device {d}: write MOUNTPOINT=DEVICE, e.g. --device /home=/dev/sdb2") };
        out.insert(mp.to_string(), PathBuf::from(dev));
    }
    Ok(out)
}

/// `mkfs` with the recorded identity (or a new one).
fn mkfs(t: &Target) -> anyhow::Result<()> {
    let r = &t.records[0];
    let uuid = t.new_uuid.as_deref().unwrap_or(&r.uuid);
    let keep = t.new_uuid.is_none();
    let mut cmd;
    match r.fstype.as_str() {
        "ext2" | "ext3" | "ext4" => {
            cmd = Command::new(format!("mkfs.{}", r.fstype));
            cmd.args(["-q", "-F"]);
            if keep {
                cmd.args(["-U", uuid]);
            }
            if !r.label.is_empty() {
                cmd.args(["-L", &r.label]);
            }
        }
        "xfs" => {
            cmd = Command::new("mkfs.xfs");
            cmd.args(["-q", "-f"]);
            if keep {
                cmd.args(["-m", &format!("uuid={uuid}")]);
            }
            if !r.label.is_empty() {
                cmd.args(["-L", &r.label]);
            }
        }
        "btrfs" => {
            cmd = Command::new("mkfs.btrfs");
            cmd.args(["-q", "-f"]);
            if keep {
                cmd.args(["-U", uuid]);
            }
            if !r.label.is_empty() {
                cmd.args(["-L", &r.label]);
            }
        }
        "swap" => {
            cmd = Command::new("mkswap");
            if keep {
                cmd.args(["-U", uuid]);
            }
            if !r.label.is_empty() {
                cmd.args(["-L", &r.label]);
            }
        }
        "vfat" => {
            cmd = Command::new("mkfs.vfat");
            if keep {
                cmd.args(["-i", &uuid.replace('-', "")]);
            }
            if !r.label.is_empty() {
                cmd.args(["-n", &r.label]);
            }
        }
        other => bail!("cannot recreate a {other} filesystem (for {})", r.mountpoint),
    }
    machine::run_tool(cmd.arg(&t.device))
}

pub fn bare_metal(path: &Path, a: RestoreArgs) -> anyhow::Result<Outcome> {
    let explicit = parse_devices(&a.devices)?;
    let (cfg, m, _slots, mut slot_mounts, b) = open(path, &a.system, a.generation)?;
    if b.record.legacy.is_some() {
        bail!(
            "generation {} of {} is a duplicity backup: it records no filesystem layout; restore it with --to DIR, or bare-metal from a crossback generation",
            b.generation.seq,
            a.system
        );
    }
    // Group the records by filesystem (UUID), find or take each device.
    let mut targets: Vec<Target> = Vec::new();
    for r in &b.mounts.filesystems {
        if let Some(t) = targets.iter_mut().find(|t| !r.uuid.is_empty() && t.records[0].uuid == r.uuid) {
            t.records.push(r.clone());
            continue;
        }
        let device = match explicit.get(&r.mountpoint) {
            Some(d) => std::fs::canonicalize(d).with_context(|| format!("--device {}={}: no such device", r.mountpoint, d.display()))?,
            None => {
                let by = |f: &dyn Fn(&crossback_host::blockdev::Device) -> bool| m.devices.iter().find(|d| f(d)).map(|d| d.path.clone());
                let found = by(&|d| !r.uuid.is_empty() && d.uuid.eq_ignore_ascii_case(&r.uuid))
                    .or_else(|| by(&|d| !r.partuuid.is_empty() && d.partuuid.eq_ignore_ascii_case(&r.partuuid)));
                found.with_context(|| {
                    format!("{}'s {} (UUID={}) is not attached: give the new device with --device {}=/dev/…", a.system, r.mountpoint, r.uuid, r.mountpoint)
                })?
            }
        };
        targets.push(Target { records: vec![r.clone()], device, new_uuid: None });
    }
    // Checks before anything is written.
    let slot_uuids: Vec<String> = cfg.media.iter().flat_map(|mm| [mm.slot_a.get_ref().to_lowercase(), mm.slot_b.get_ref().to_lowercase()]).collect();
    let running = m.running_root().map(|(d, _)| d.path.clone());
    for t in &targets {
        let d = m.devices.iter().find(|d| d.path == t.device).with_context(|| format!("{} is not a block device of this machine", t.device.display()))?;
        let need: u64 = t.records.iter().map(|r| r.used).sum();
        if d.size < need {
            bail!(
                "{} is too small for {}: {} needed (used at backup time), {} available",
                d.path.display(),
                t.records[0].mountpoint,
                output::bytes(need),
                output::bytes(d.size)
            );
        }
        if !m.mounts_of(d).is_empty() {
            bail!(
                "{} is mounted at {}: unmount it first",
                d.path.display(),
                m.mounts_of(d).iter().map(|x| x.mountpoint.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        if Some(&d.path) == running.as_ref() || m.devices.iter().any(|x| Some(&x.path) == running.as_ref() && x.disk == d.disk && x.path == d.path) {
            bail!("{} holds the running system: restore from another system or a live USB", d.path.display());
        }
        if slot_uuids.contains(&d.uuid.to_lowercase()) {
            bail!("{} is a slot of the backup media: restoring onto it would destroy the backups", d.path.display());
        }
    }
    if a.new_uuids {
        for t in &mut targets {
            t.new_uuid = Some(String::new());
        }
    }
    println!("bare-metal restore of {} from generation {} (slot {}): these filesystems will be WIPED and recreated:", a.system, b.generation.seq, b.slot);
    for t in &targets {
        let r = &t.records[0];
        let d = m.devices.iter().find(|d| d.path == t.device).expect("checked");
        println!(
            "  {} ({} now{}) ← {} {} {}{}",
            t.device.display(),
            if d.fstype.is_empty() { "empty".to_string() } else { d.fstype.clone() },
            if d.label.is_empty() { String::new() } else { format!(", \"{}\"", d.label) },
            t.records.iter().map(|r| r.mountpoint.as_str()).collect::<Vec<_>>().join(" + "),
            r.fstype,
            if a.new_uuids { "with a new UUID".to_string() } else { format!("UUID={}", r.uuid) },
            if r.label.is_empty() { String::new() } else { format!(" LABEL={}", r.label) }
        );
    }
    if !a.yes {
        let ok = std::io::stdin().is_terminal() && {
            print!("Type yes to wipe them: ");
            std::io::stdout().flush()?;
            let mut s = String::new();
            std::io::stdin().lock().read_line(&mut s)?;
            s.trim() == "yes"
        };
        if !ok {
            bail!("nothing written: pass --yes to restore without asking");
        }
    }
    let start = Instant::now();
    for t in &targets {
        mkfs(t).with_context(|| format!("recreating {}", t.records[0].mountpoint))?;
    }
    // The new identities, as blkid now reads them.
    let mut uuid_map: Vec<(String, String)> = Vec::new();
    for t in &mut targets {
        let probed = crossback_host::blockdev::probe(&t.device)?;
        let now = probed.get("UUID").cloned().unwrap_or_default();
        if a.new_uuids {
            uuid_map.push((t.records[0].uuid.clone(), now.clone()));
            t.new_uuid = Some(now);
        } else if !now.eq_ignore_ascii_case(&t.records[0].uuid) {
            bail!("{} got UUID {now} instead of {}: mkfs did not keep it", t.device.display(), t.records[0].uuid);
        }
    }
    // btrfs subvolumes, then the tree, mounted privately, restored.
    let base = crossback_host::inspect::SCRATCH;
    let tree = Path::new(base).join("crossback-restore").join("target");
    std::fs::create_dir_all(&tree)?;
    let mut fs_mounts = Vec::new();
    for t in &targets {
        if t.records[0].fstype == "btrfs" && t.records.iter().any(|r| r.subvol.is_some()) {
            let top = Path::new(base).join("crossback-restore").join("btrfs-top");
            std::fs::create_dir_all(&top)?;
            let mut mm = offline::Mounted::default();
            offline::mount_one(
                &FsMount { mountpoint: "btrfs top".into(), device: t.device.clone(), fstype: "btrfs".into(), subvol: None, options: vec![] },
                &top,
                true,
                false,
                &mut mm,
            )?;
            for r in &t.records {
                if let Some(sv) = &r.subvol {
                    machine::run_tool(Command::new("btrfs").args(["-q", "subvolume", "create"]).arg(top.join(sv)))?;
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
            });
        }
    }
    let mut mounted = offline::mount_tree(&tree, &fs_mounts, true, false, false)?;
    let (entries, damaged, failed) = restore_into(&b, &tree, &[])?;
    // New UUIDs: fstab and crypttab follow; other files are named.
    if a.new_uuids {
        for f in ["etc/fstab", "etc/crypttab"] {
            let p = tree.join(f);
            if let Ok(text) = std::fs::read_to_string(&p) {
                let mut t = text.clone();
                for (old, new) in &uuid_map {
                    t = replace_ci(&t, old, new);
                }
                if t != text {
                    std::fs::write(&p, t)?;
                    println!("rewrote {} for the new UUIDs", f);
                }
            }
        }
        let mut others = Vec::new();
        for dir in ["etc/default", "etc/kernel", "boot", "etc/crypttab.initramfs"] {
            find_mentions(&tree.join(dir), &tree, &uuid_map, &mut others);
        }
        if !others.is_empty() {
            println!("these files still name an old UUID; fix them in `crossback chroot {}` (e.g. update-grub, update-initramfs -u):", a.system);
            for o in &others {
                println!("  {o}");
            }
        }
    }
    // The restored fstab must resolve to what exists now.
    let fstab = crossback_host::fstab::parse(&std::fs::read_to_string(tree.join("etc/fstab")).unwrap_or_default());
    let now_devices = crossback_host::blockdev::scan()?;
    let mut unresolved = Vec::new();
    for e in fstab.mounts.iter().chain(fstab.swap.iter()) {
        if crossback_host::blockdev::find(&now_devices, &e.spec)?.is_none() {
            unresolved.push(format!("{} {}", e.spec.to_fstab(), e.mountpoint));
        }
    }
    let busy = mounted.unmount();
    let _ = slot_mounts.unmount();
    if !busy.is_empty() {
        eprintln!("warning: could not unmount {busy:?}");
    }
    if !unresolved.is_empty() {
        eprintln!("warning: the restored /etc/fstab names filesystems that are not attached: {}", unresolved.join("; "));
    }
    let outcome = report(entries, &damaged, &failed, start);
    if a.new_uuids {
        if let Some(root) = uuid_map.iter().find(|(old, _)| cfg.system(&a.system).is_some_and(|s| s.root.get_ref().eq_ignore_ascii_case(old))) {
            let text = std::fs::read_to_string(path)?.replace(&root.0, &root.1);
            crate::config::write(path, &text)?;
            println!("{} now names {}'s new root UUID {}", path.display(), a.system, root.1);
        }
    }
    println!("next: `crossback chroot {}` to reinstall the bootloader or drivers (e.g. grub-install, update-initramfs -u)", a.system);
    Ok(outcome)
}

fn replace_ci(text: &str, old: &str, new: &str) -> String {
    let mut out = text.replace(old, new);
    out = out.replace(&old.to_uppercase(), new).replace(&old.to_lowercase(), new);
    out
}

fn find_mentions(dir: &Path, root: &Path, map: &[(String, String)], out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        if let Ok(t) = std::fs::read(dir) {
            let t = String::from_utf8_lossy(&t).to_lowercase();
            if map.iter().any(|(old, _)| t.contains(&old.to_lowercase())) {
                out.push(format!("/{}", dir.strip_prefix(root).unwrap_or(dir).display()));
            }
        }
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            find_mentions(&p, root, map, out);
        } else if e.file_type().is_ok_and(|t| t.is_file()) && e.metadata().is_ok_and(|m| m.len() < 1 << 20) {
            find_mentions(&p, root, map, out);
        }
    }
}
