//! `crossback verify`: every archive of the chosen generations, byte for
//! byte, against the hashes in the archive and in `generation.toml`.

use std::path::Path;

use crossback_archive::Archive;
use crossback_host::beneath::Dir;

use crate::cli::VerifyGenArgs;
use crate::error::Refusal;
use crate::layout::{ArchiveRecord, GenEntry, GenName, SlotId, State};
use crate::machine;
use crate::{output, slots, Outcome};

pub fn run(path: &Path, a: VerifyGenArgs) -> anyhow::Result<Outcome> {
    machine::require_root("verify")?;
    let slots::ReadOnlyView { cfg, machine: m, slots: slot_list, mut mounts, scratch, lock: _lock, unread } = slots::open_read_only(path, "crossback-verify")?;
    let mut checked = 0;
    // A slot that does not read is damage found (said when it was skipped).
    let mut damaged = unread.len();
    let mut changed = 0;
    // With --against-source: archives that could not be compared (their
    // system not offline, not attached, not configured).
    let mut not_compared = 0;
    // Compared with the systems: encrypted and LVM ones opened read-only.
    let (_opened, m) = if a.against_source {
        let wanted: Vec<&crate::config::SystemConfig> = cfg.systems.iter().filter(|s| a.system.as_ref().is_none_or(|n| n == s.name.get_ref())).collect();
        let u = crate::unlock::open_for(&wanted, crate::unlock::Access::Read)?;
        for (name, e) in u.failed {
            println!("  {name}: its containers were not opened: {e:#}");
        }
        (Some(u.opened), u.machine)
    } else {
        (None, m)
    };
    let systems = if a.against_source { machine::systems(&m, &cfg)? } else { Vec::new() };
    // Each system's newest backup, wherever it is.
    let mut newest_backup: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for g in slot_list.iter().flat_map(|s| s.view.generations.iter().filter_map(GenEntry::valid)) {
        for r in &g.recorded {
            let n = newest_backup.entry(r.name.clone()).or_insert(g.seq);
            *n = (*n).max(g.seq);
        }
    }
    for s in &slot_list {
        if a.slot.as_deref().and_then(SlotId::parse).is_some_and(|l| l != s.id) {
            continue;
        }
        let slot_dir = s.dir()?;
        for g in &s.view.generations {
            let GenEntry::Valid { generation, .. } = g else {
                match g {
                    GenEntry::Leftover { why: crate::layout::classify::Leftover::Damaged(why), .. } => {
                        println!("slot {}: {} is DAMAGED: its manifest does not read ({why}); its archives cannot be checked without it", s.id, g.dir());
                        damaged += 1;
                    }
                    GenEntry::Leftover { why, .. } => {
                        println!("slot {}: {} is a leftover of an interrupted run, {why} (the next backup removes it)", s.id, g.dir())
                    }
                    GenEntry::Valid { .. } => {}
                }
                continue;
            };
            if a.generation.is_some_and(|n| n != generation.seq) {
                continue;
            }
            println!("generation {} (slot {}, {}):", generation.seq, s.id, if generation.state == State::Sealed { "sealed" } else { "open" });
            // Encrypted archives: the media key, asked for once.
            let keys = if generation.recorded.iter().flat_map(|r| &r.archives).any(|ar| ar.file.ends_with(".age")) {
                crate::keys::for_slot(&s.view, "verifying the encrypted backups")?
            } else {
                None
            };
            for rec in &generation.recorded {
                if a.system.as_ref().is_some_and(|n| n != &rec.name) {
                    continue;
                }
                if let Some(set) = &rec.legacy {
                    checked += 1;
                    let problems = crate::duplicity::verify(&s.root, set);
                    if problems.is_empty() {
                        println!("  {} (duplicity backup of {}, {} volumes) ok", rec.name, set.time, set.volumes.len());
                    } else {
                        damaged += 1;
                        println!("  {} (duplicity backup of {}) DAMAGED:", rec.name, set.time);
                        for p in &problems {
                            println!("      {p}");
                        }
                    }
                    continue;
                }
                // The offline system, mounted read-only, to compare with: by
                // default only with its newest backup (an older one differs
                // by what changed since, which is no news).
                let mut source = None;
                let newest = newest_backup.get(&rec.name).copied();
                if a.against_source && a.generation.is_none() && newest != Some(generation.seq) {
                    println!(
                        "  {}: not compared with the system (its newest backup is generation {}; --generation {} compares this one)",
                        rec.name,
                        newest.unwrap_or_default(),
                        generation.seq
                    );
                } else if a.against_source {
                    println!("  {}: compared with the system as it is now (generation {})", rec.name, generation.seq);
                    match systems
                        .iter()
                        .find(|x| x.name == rec.name)
                        .map(|sys| crate::offline::check(&m, sys, crate::offline::Allow { view: true, ..Default::default() }, false, "compare against"))
                    {
                        Some(Ok(fs)) => {
                            let mut mounted = crossback_host::offline::Mounted::default();
                            let mut points = Vec::new();
                            for (i, f) in fs.iter().enumerate() {
                                let at = scratch.join(format!("src-{}-{i}", rec.name));
                                std::fs::create_dir_all(&at)?;
                                crossback_host::offline::mount_one(f, &at, false, true, &mut mounted)?;
                                points.push((f.mountpoint.clone(), at, f.fstype.clone()));
                            }
                            source = Some((mounted, points));
                        }
                        Some(Err(e)) => {
                            not_compared += rec.archives.len();
                            println!("  {}: NOT COMPARED with the system: {e:#}", rec.name)
                        }
                        None => {
                            not_compared += rec.archives.len();
                            println!("  {}: not in the configuration; NOT COMPARED", rec.name)
                        }
                    }
                }
                // The LUKS headers kept beside the archives.
                if let Ok(b) = crate::backups::find(&slot_list, &rec.name, Some(generation.seq)) {
                    for l in &b.mounts.luks {
                        checked += 1;
                        match b.luks_header(l) {
                            Ok(_) => println!("  {} LUKS header of {} ok ({})", rec.name, l.uuid, output::bytes(l.header_bytes)),
                            Err(e) => {
                                damaged += 1;
                                println!("  {} LUKS header of {} DAMAGED: {e:#}", rec.name, l.uuid);
                            }
                        }
                    }
                }
                for ar in &rec.archives {
                    checked += 1;
                    let sys_dir = slot_dir.dir(&GenName::dir(generation.seq)).and_then(|d| d.dir(&rec.name));
                    if let (Some((_, points)), Ok(sd)) = (&source, &sys_dir) {
                        if let Some((_, at, fstype)) = points.iter().find(|(mp, _, _)| *mp == ar.mountpoint) {
                            if let Ok(archive) = sd
                                .open_file(&ar.file)
                                .map_err(anyhow::Error::from)
                                .and_then(|f| Ok(Archive::from_file_with(f, &sd.shown().join(&ar.file), keys.as_ref())?))
                            {
                                let compare =
                                    crossback_archive::verify::Compare { owners_and_modes: crossback_host::fstype::of(fstype).is_none_or(|t| t.keeps_modes()) };
                                let r = crossback_archive::verify::verify_with(&archive, Some(at), None, compare)?;
                                if r.differences.is_empty() {
                                    println!("  {} {:<10} same as the system", rec.name, ar.mountpoint);
                                } else {
                                    changed += 1;
                                    println!("  {} {:<10} changed since the backup:", rec.name, ar.mountpoint);
                                    for (p, w) in r.differences.iter().take(50) {
                                        println!("      {}{}: {w}", ar.mountpoint.trim_end_matches('/'), output::path(p));
                                    }
                                    if r.differences.len() > 50 {
                                        println!("      … and {} more", r.differences.len() - 50);
                                    }
                                }
                            }
                        }
                    }
                    let problems = match &sys_dir {
                        Ok(sd) => check_one(sd, ar, keys.as_ref()),
                        Err(e) => vec![format!("cannot be opened: {e}")],
                    };
                    if problems.is_empty() {
                        println!("  {} {:<10} ok ({} entries, {})", rec.name, ar.mountpoint, ar.entries, output::bytes(ar.bytes));
                    } else {
                        damaged += 1;
                        println!("  {} {:<10} DAMAGED:", rec.name, ar.mountpoint);
                        for p in problems.iter().take(50) {
                            println!("      {p}");
                        }
                        if problems.len() > 50 {
                            println!("      … and {} more", problems.len() - 50);
                        }
                    }
                }
            }
        }
    }
    let _ = mounts.unmount();
    if checked == 0 && damaged == 0 {
        crate::refuse!(Refusal::NoBackup, "nothing to verify: no generation matches");
    }
    println!(
        "{checked} archives checked, {damaged} damaged{}",
        if a.against_source { format!(", {changed} differ from their system, {not_compared} not compared") } else { String::new() }
    );
    Ok(if damaged > 0 {
        Outcome::Damaged
    } else if changed > 0 {
        Outcome::Differs
    } else if not_compared > 0 {
        // Not "same as the system": the comparison asked for was not made.
        Outcome::Partial
    } else {
        Outcome::Ok
    })
}

fn check_one(dir: &Dir, rec: &ArchiveRecord, keys: Option<&crossback_archive::crypt::Keys>) -> Vec<String> {
    let mut out = Vec::new();
    let file = match dir.open_file(&rec.file) {
        Err(e) => return vec![format!("{}: missing or not a regular file ({e})", rec.file)],
        Ok(f) => f,
    };
    match file.metadata() {
        Err(e) => return vec![format!("{}: cannot be read ({e})", rec.file)],
        Ok(md) if md.len() != rec.bytes => out.push(format!("size is {} bytes, the manifest says {}", md.len(), rec.bytes)),
        Ok(_) => {}
    }
    let archive = match Archive::from_file_with(file, &dir.shown().join(&rec.file), keys) {
        Ok(a) => a,
        Err(e) => return vec![format!("cannot be read: {e}")],
    };
    if let crossback_archive::archive::Layout::Indexed { footer, .. } = &archive.layout {
        let h: String = footer.data_hash.iter().map(|b| format!("{b:02x}")).collect();
        if h != rec.hash {
            out.push("its hash differs from the one recorded in generation.toml".into());
        }
    }
    match crossback_archive::verify::verify(&archive, None, None) {
        Ok(r) => out.extend(r.damaged.iter().map(|(p, w)| if p.is_empty() { w.clone() } else { format!("{}: {w}", output::path(p)) })),
        Err(e) => out.push(format!("cannot be checked: {e}")),
    }
    out
}
