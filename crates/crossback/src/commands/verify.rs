//! `crossback verify`: every archive of the chosen generations, byte for
//! byte, against the hashes in the archive and in `generation.toml`.

use std::collections::BTreeMap;
use std::path::Path;

use crossback_archive::Archive;
use crossback_host::beneath::Dir;

use crate::cli::VerifyGenArgs;
use crate::error::Refusal;
use crate::layout::{ArchiveRecord, GenEntry, GenName, Generation, SlotId, State};
use crate::machine;
use crate::{output, slots, Outcome};

/// What a run found, counted for the summary and the exit code.
#[derive(Default)]
struct Tally {
    checked: usize,
    damaged: usize,
    /// Archives that differ from their (offline) system.
    changed: usize,
    /// With --against-source: archives that could not be compared (their
    /// system not offline, not attached, not configured).
    not_compared: usize,
}

impl Tally {
    fn outcome(&self) -> Outcome {
        if self.damaged > 0 {
            Outcome::Damaged
        } else if self.changed > 0 {
            Outcome::Differs
        } else if self.not_compared > 0 {
            // Not "same as the system": the comparison asked for was not made.
            Outcome::Partial
        } else {
            Outcome::Ok
        }
    }
}

/// What every generation's check shares.
struct Ctx<'a> {
    a: &'a VerifyGenArgs,
    m: &'a machine::Machine,
    /// The configured systems as found (with --against-source).
    systems: Vec<machine::System>,
    scratch: &'a Path,
    slot_list: &'a [slots::Slot],
    /// Each system's newest backup, wherever it is.
    newest_backup: BTreeMap<String, u64>,
}

pub fn run(path: &Path, a: VerifyGenArgs) -> anyhow::Result<Outcome> {
    machine::require_root("verify")?;
    if let Some(name) = &a.from.remote {
        return verify_remote(path, &a, name);
    }
    let slots::ReadOnlyView { cfg, machine: m, slots: slot_list, mut mounts, scratch, lock: _lock, unread } = slots::open_read_only(path, "crossback-verify")?;
    // A slot that does not read is damage found (said when it was skipped).
    let mut tally = Tally { damaged: unread.len(), ..Default::default() };
    let (_opened, m, systems) = sources(&cfg, &a, m)?;
    let mut newest_backup = BTreeMap::new();
    for g in slot_list.iter().flat_map(|s| s.view.generations.iter().filter_map(GenEntry::valid)) {
        for r in &g.recorded {
            let n = newest_backup.entry(r.name.clone()).or_insert(g.seq);
            *n = (*n).max(g.seq);
        }
    }
    let ctx = Ctx { a: &a, m: &m, systems, scratch: &scratch, slot_list: &slot_list, newest_backup };
    for s in &slot_list {
        if a.slot.as_deref().and_then(SlotId::parse).is_some_and(|l| l != s.id) {
            continue;
        }
        let slot_dir = s.dir()?;
        for g in &s.view.generations {
            match g {
                GenEntry::Valid { generation, .. } if a.generation.is_none_or(|n| n == generation.seq) => {
                    verify_generation(&ctx, s, &slot_dir, generation, &mut tally)?
                }
                GenEntry::Valid { .. } => {}
                GenEntry::Leftover { why: crate::layout::classify::Leftover::Damaged(why), .. } => {
                    println!("slot {}: {} is DAMAGED: its manifest does not read ({why}); its archives cannot be checked without it", s.id, g.dir());
                    tally.damaged += 1;
                }
                GenEntry::Leftover { why, .. } => {
                    println!("slot {}: {} is a leftover of an interrupted run, {why} (the next backup removes it)", s.id, g.dir())
                }
            }
        }
    }
    let _ = mounts.unmount();
    tally.summary(&a)
}

impl Tally {
    /// The last line, and the exit code.
    fn summary(&self, a: &VerifyGenArgs) -> anyhow::Result<Outcome> {
        if self.checked == 0 && self.damaged == 0 {
            crate::refuse!(Refusal::NoBackup, "nothing to verify: no generation matches");
        }
        println!(
            "{} archives checked, {} damaged{}",
            self.checked,
            self.damaged,
            if a.against_source { format!(", {} differ from their system, {} not compared", self.changed, self.not_compared) } else { String::new() }
        );
        Ok(self.outcome())
    }
}

/// With --against-source, the systems to compare with: encrypted and LVM
/// ones opened read-only (kept open by what is returned first).
fn sources(
    cfg: &crate::config::Config,
    a: &VerifyGenArgs,
    m: machine::Machine,
) -> anyhow::Result<(Option<crossback_host::layers::mapping::Opened>, machine::Machine, Vec<machine::System>)> {
    if !a.against_source {
        return Ok((None, m, Vec::new()));
    }
    let wanted: Vec<&crate::config::SystemConfig> = cfg.systems.iter().filter(|s| a.system.as_ref().is_none_or(|n| n == s.name.get_ref())).collect();
    let u = crate::stack::open::open_for(&wanted, crate::stack::open::Access::Read)?;
    for (name, e) in u.failed {
        println!("  {name}: its containers were not opened: {e:#}");
    }
    let systems = machine::systems(&u.machine, cfg)?;
    Ok((Some(u.opened), u.machine, systems))
}

/// `verify --remote`: as from the slot, each generation the store holds
/// (sealed by the key unlocked here), each archive read back through its
/// key and checked against its own hashes and the manifest's; LUKS header
/// copies too. `remote verify` checks the objects' bytes without the key.
fn verify_remote(path: &Path, a: &VerifyGenArgs, name: &str) -> anyhow::Result<Outcome> {
    if a.slot.is_some() {
        crate::refuse!(Refusal::Usage, "--slot names a slot of the backup disk; with --remote there is none");
    }
    let cfg = crate::config::Config::load(path)?;
    let (store, key) = super::remote::open_read(&cfg, name, a.from.machine.as_deref(), a.from.as_of, &format!("verifying the backups on remote {name}"))?;
    let seal = crate::remote::SealKey::of(&key);
    let mut tally = Tally::default();
    let mut gens = Vec::new();
    for (seq, complete) in crate::remote::generations(&store)? {
        if a.generation.is_some_and(|n| n != seq) {
            continue;
        }
        if !complete {
            println!("generation {seq}: incomplete on remote {name} (a push did not finish; the next one carries on)");
            continue;
        }
        match crate::remote::read_generation(&store, seq, Some(&seal)) {
            Ok((g, _)) => gens.push(g),
            Err(e) => {
                tally.damaged += 1;
                println!("generation {seq} on remote {name} is DAMAGED: {e:#}");
            }
        }
    }
    // The systems are mounted to compare with where nobody else sees them.
    let scratch = if a.against_source {
        crossback_host::ns::start_guard()?;
        crossback_host::ns::enter_private()?;
        crossback_host::inspect::scratch_dir("crossback-verify")?
    } else {
        std::env::temp_dir()
    };
    let (_opened, m, systems) = sources(
        &cfg,
        a,
        if a.against_source { machine::Machine::scan(&[])? } else { machine::Machine { devices: Vec::new(), mounts: Vec::new(), own: Vec::new() } },
    )?;
    let mut newest_backup = BTreeMap::new();
    for g in &gens {
        for r in &g.recorded {
            let n = newest_backup.entry(r.name.clone()).or_insert(g.seq);
            *n = (*n).max(g.seq);
        }
    }
    let ctx = Ctx { a, m: &m, systems, scratch: &scratch, slot_list: &[], newest_backup };
    for g in &gens {
        println!("generation {} (remote {name}, sealed):", g.seq);
        for rec in g.recorded.iter().filter(|r| a.system.as_ref().is_none_or(|n| n == &r.name)) {
            let b = match crate::backups::find_remote(&store, &key, &rec.name, Some(g.seq)) {
                Ok(b) => b,
                Err(e) => {
                    tally.checked += rec.archives.len();
                    tally.damaged += rec.archives.len().max(1);
                    println!("  {} DAMAGED: {e:#}", rec.name);
                    continue;
                }
            };
            check_luks(&b, &mut tally);
            let source = source_of(&ctx, &rec.name, g.seq, rec.archives.len(), &mut tally)?;
            for ar in &rec.archives {
                tally.checked += 1;
                let problems = match b.open_archive(ar) {
                    Ok(archive) => {
                        if let Some((_, points)) = &source {
                            if let Some((_, at, fstype)) = points.iter().find(|(mp, _, _)| *mp == ar.mountpoint) {
                                compare_with_source(&archive, &rec.name, ar, at, fstype, &mut tally)?;
                            }
                        }
                        check_archive(&archive, ar)
                    }
                    Err(e) => vec![format!("{e:#}")],
                };
                say_archive(&rec.name, ar, &problems, &mut tally);
            }
        }
    }
    println!("{}", store.said_fetched());
    tally.summary(a)
}

/// The LUKS header copies kept beside a system's archives, each against its record.
fn check_luks(b: &crate::backups::SystemBackup, tally: &mut Tally) {
    for l in &b.mounts.luks {
        tally.checked += 1;
        match b.luks_header(l) {
            Ok(_) => println!("  {} LUKS header of {} ok ({})", b.record.name, l.uuid, output::bytes(l.header_bytes)),
            Err(e) => {
                tally.damaged += 1;
                println!("  {} LUKS header of {} DAMAGED: {e:#}", b.record.name, l.uuid);
            }
        }
    }
}

/// One archive's line: ok, or what is damaged.
fn say_archive(system: &str, ar: &ArchiveRecord, problems: &[String], tally: &mut Tally) {
    if problems.is_empty() {
        println!("  {system} {:<10} ok ({} entries, {})", ar.mountpoint, ar.entries, output::bytes(ar.bytes));
    } else {
        tally.damaged += 1;
        println!("  {system} {:<10} DAMAGED:", ar.mountpoint);
        say_some(problems);
    }
}

/// One generation: each system's archives (and LUKS headers, or duplicity
/// volumes), and with --against-source the system itself.
fn verify_generation(ctx: &Ctx, s: &slots::Slot, slot_dir: &Dir, generation: &Generation, tally: &mut Tally) -> anyhow::Result<()> {
    println!("generation {} (slot {}, {}):", generation.seq, s.id, if generation.state == State::Sealed { "sealed" } else { "open" });
    // Encrypted archives: the media key, asked for once.
    let keys = if generation.recorded.iter().flat_map(|r| &r.archives).any(|ar| ar.file.ends_with(".age")) {
        crate::keys::for_slot(&s.view, "verifying the encrypted backups")?
    } else {
        None
    };
    for rec in &generation.recorded {
        if ctx.a.system.as_ref().is_some_and(|n| n != &rec.name) {
            continue;
        }
        if let Some(set) = &rec.legacy {
            tally.checked += 1;
            let problems = crate::duplicity::verify(&s.root, set);
            if problems.is_empty() {
                println!("  {} (duplicity backup of {}, {} volumes) ok", rec.name, set.time, set.volumes.len());
            } else {
                tally.damaged += 1;
                println!("  {} (duplicity backup of {}) DAMAGED:", rec.name, set.time);
                for p in &problems {
                    println!("      {p}");
                }
            }
            continue;
        }
        let source = source_of(ctx, &rec.name, generation.seq, rec.archives.len(), tally)?;
        // The LUKS headers kept beside the archives.
        if let Ok(b) = crate::backups::find(ctx.slot_list, &rec.name, Some(generation.seq)) {
            check_luks(&b, tally);
        }
        let sys_dir = slot_dir.dir(&GenName::dir(generation.seq)).and_then(|d| d.dir(&rec.name));
        for ar in &rec.archives {
            tally.checked += 1;
            if let (Some((_, points)), Ok(sd)) = (&source, &sys_dir) {
                if let Some((_, at, fstype)) = points.iter().find(|(mp, _, _)| *mp == ar.mountpoint) {
                    // An archive that does not open is said as damaged by check_one.
                    if let Ok(archive) = sd
                        .open_file(&ar.file)
                        .map_err(anyhow::Error::from)
                        .and_then(|f| Ok(Archive::from_file_with(f, &sd.shown().join(&ar.file), keys.as_ref())?))
                    {
                        compare_with_source(&archive, &rec.name, ar, at, fstype, tally)?;
                    }
                }
            }
            let problems = match &sys_dir {
                Ok(sd) => check_one(sd, ar, keys.as_ref()),
                Err(e) => vec![format!("cannot be opened: {e}")],
            };
            say_archive(&rec.name, ar, &problems, tally);
        }
    }
    Ok(())
}

/// A system's filesystems mounted at these points (mount point, where, type).
type Source = (crossback_host::offline::Mounted, Vec<(String, std::path::PathBuf, String)>);

/// With --against-source, the offline system `name`, mounted read-only
/// to compare with — by default only with its newest backup (an older one
/// differs by what changed since, which is no news). Said either way.
fn source_of(ctx: &Ctx, name: &str, seq: u64, archives: usize, tally: &mut Tally) -> anyhow::Result<Option<Source>> {
    if !ctx.a.against_source {
        return Ok(None);
    }
    let newest = ctx.newest_backup.get(name).copied();
    if ctx.a.generation.is_none() && newest != Some(seq) {
        println!(
            "  {name}: not compared with the system (its newest backup is generation {}; --generation {seq} compares this one)",
            newest.unwrap_or_default(),
        );
        return Ok(None);
    }
    println!("  {name}: compared with the system as it is now (generation {seq})");
    let Some(sys) = ctx.systems.iter().find(|x| x.name == name) else {
        tally.not_compared += archives;
        println!("  {name}: not in the configuration; NOT COMPARED");
        return Ok(None);
    };
    let fs = match crate::offline_rules::check(ctx.m, sys, crate::offline_rules::Allow { view: true, ..Default::default() }, false, "compare against") {
        Ok(fs) => fs,
        Err(e) => {
            tally.not_compared += archives;
            println!("  {name}: NOT COMPARED with the system: {e:#}");
            return Ok(None);
        }
    };
    let mut mounted = crossback_host::offline::Mounted::default();
    let mut points = Vec::new();
    for (i, f) in fs.iter().enumerate() {
        let at = ctx.scratch.join(format!("src-{name}-{i}"));
        std::fs::create_dir_all(&at)?;
        crossback_host::offline::mount_one(f, &at, false, true, &mut mounted)?;
        points.push((f.mountpoint.clone(), at, f.fstype.clone()));
    }
    Ok(Some((mounted, points)))
}

/// One archive against its filesystem mounted at `at`: what changed since
/// the backup (owners and modes left out on a filesystem that keeps none).
fn compare_with_source(archive: &Archive, name: &str, ar: &ArchiveRecord, at: &Path, fstype: &str, tally: &mut Tally) -> anyhow::Result<()> {
    let compare = crossback_archive::verify::Compare { owners_and_modes: crossback_host::fstype::of(fstype).is_none_or(|t| t.keeps_modes()) };
    let r = crossback_archive::verify::verify_with(archive, Some(at), None, compare)?;
    if r.differences.is_empty() {
        println!("  {name} {:<10} same as the system", ar.mountpoint);
        return Ok(());
    }
    if fstype == "vfat" {
        if let Some(from) = added_fallback(at, &r.differences) {
            println!(
                "  {name} {:<10} same as the system, but for the firmware's fallback loader EFI/BOOT that a restore put there (a copy of EFI/{from})",
                ar.mountpoint
            );
            return Ok(());
        }
    }
    tally.changed += 1;
    println!("  {name} {:<10} changed since the backup:", ar.mountpoint);
    let shown: Vec<String> = r.differences.iter().map(|(p, w)| format!("{}{}: {w}", ar.mountpoint.trim_end_matches('/'), output::path(p))).collect();
    say_some(&shown);
    Ok(())
}

/// When all that differs on an ESP is the firmware's fallback loader a
/// bare-metal restore adds to one that had none (`EFI/BOOT` only in the
/// tree, and `EFI`'s time, which the new directory changed) and every file
/// in `EFI/BOOT` is byte for byte a file of one other `EFI/` directory (what
/// the restore copied, as `grub-install --removable` does): that
/// directory's name. The restore's doing is not a change of the system.
fn added_fallback(at: &Path, differences: &[(Vec<u8>, String)]) -> Option<String> {
    // The archive's paths are relative ("EFI/BOOT"); shown with a '/'.
    fn bare(p: &[u8]) -> &[u8] {
        p.strip_prefix(b"/").unwrap_or(p)
    }
    let is_boot = |p: &[u8]| bare(p).eq_ignore_ascii_case(b"EFI/BOOT");
    let expected =
        |(p, w): &(Vec<u8>, String)| (is_boot(p) && w == "only in the tree") || (bare(p).eq_ignore_ascii_case(b"EFI") && w.starts_with("mtime differs"));
    if !differences.iter().any(|(p, w)| is_boot(p) && w == "only in the tree") || !differences.iter().all(expected) {
        return None;
    }
    const CAP: u64 = 64 << 20;
    let efi = Dir::open(at).ok()?.dir("EFI").ok()?;
    let entries = efi.entries().ok()?;
    let boot_name = entries.iter().find(|(n, _)| n.as_encoded_bytes().eq_ignore_ascii_case(b"BOOT"))?.0.to_str()?.to_string();
    let boot = efi.dir(&boot_name).ok()?;
    let files: Vec<Vec<u8>> = boot
        .entries()
        .ok()?
        .into_iter()
        .map(|(n, kind)| if kind == crossback_host::beneath::Kind::File { boot.read_capped(n.to_str()?, CAP).ok() } else { None })
        .collect::<Option<_>>()?;
    if files.is_empty() {
        return None;
    }
    entries.iter().filter(|(n, k)| *k == crossback_host::beneath::Kind::Dir && n.to_str() != Some(boot_name.as_str())).find_map(|(n, _)| {
        let name = n.to_str()?;
        let dir = efi.dir(name).ok()?;
        let theirs: Vec<Vec<u8>> = dir
            .entries()
            .ok()?
            .into_iter()
            .filter(|(_, k)| *k == crossback_host::beneath::Kind::File)
            .filter_map(|(m, _)| dir.read_capped(m.to_str()?, CAP).ok())
            .collect();
        files.iter().all(|f| theirs.contains(f)).then(|| name.to_string())
    })
}

/// The first 50 lines, indented, and how many more there are.
fn say_some(lines: &[String]) {
    for l in lines.iter().take(50) {
        println!("      {l}");
    }
    if lines.len() > 50 {
        println!("      … and {} more", lines.len() - 50);
    }
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
    out.extend(check_archive(&archive, rec));
    out
}

/// An archive opened: its data hash against the manifest's, and every
/// member against the archive's own hashes.
fn check_archive(archive: &Archive, rec: &ArchiveRecord) -> Vec<String> {
    let mut out = Vec::new();
    if let crossback_archive::archive::Layout::Indexed { footer, .. } = &archive.layout {
        let h = crate::output::hex(&footer.data_hash);
        if h != rec.hash {
            out.push("its hash differs from the one recorded in generation.toml".into());
        }
    }
    match crossback_archive::verify::verify(archive, None, None) {
        Ok(r) => out.extend(r.damaged.iter().map(|(p, w)| if p.is_empty() { w.clone() } else { format!("{}: {w}", output::path(p)) })),
        Err(e) => out.push(format!("cannot be checked: {e}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("EFI/debian-a");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("grubx64.efi"), b"grub image").unwrap();
        std::fs::write(a.join("grub.cfg"), b"search --fs-uuid").unwrap();
        std::fs::create_dir_all(t.path().join("EFI/debian-b")).unwrap();
        std::fs::write(t.path().join("EFI/debian-b/grubx64.efi"), b"other grub").unwrap();
        let boot = t.path().join("EFI/BOOT");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("BOOTX64.EFI"), b"grub image").unwrap();
        std::fs::write(boot.join("grub.cfg"), b"search --fs-uuid").unwrap();
        t
    }

    fn diff(p: &str, w: &str) -> (Vec<u8>, String) {
        (p.as_bytes().to_vec(), w.to_string())
    }

    /// The fallback loader a restore copied is named as such, not as a
    /// change; anything else that differs, or a file in EFI/BOOT that is
    /// no copy, is a change as before.
    #[test]
    fn the_fallback_loader_a_restore_added_is_not_a_change() {
        let t = esp();
        // As the archive's comparison gives them: relative paths.
        let added = [diff("EFI", "mtime differs: 1 in the archive, 2 in the tree"), diff("EFI/BOOT", "only in the tree")];
        assert_eq!(added_fallback(t.path(), &[diff("/EFI/BOOT", "only in the tree")]).as_deref(), Some("debian-a"));
        assert_eq!(added_fallback(t.path(), &added).as_deref(), Some("debian-a"));
        assert_eq!(added_fallback(t.path(), &added[1..]).as_deref(), Some("debian-a"));
        assert_eq!(added_fallback(t.path(), &added[..1]), None, "nothing added");
        let more = [added[0].clone(), added[1].clone(), diff("EFI/debian-a/grub.cfg", "size differs")];
        assert_eq!(added_fallback(t.path(), &more), None);
        std::fs::write(t.path().join("EFI/BOOT/BOOTX64.EFI"), b"planted").unwrap();
        assert_eq!(added_fallback(t.path(), &added), None, "not a copy");
    }
}
