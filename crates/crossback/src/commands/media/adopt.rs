//! `crossback media adopt`: an old duplicity backup disk (two partitions
//! taking turns, as the scripts before crossback made them) becomes a
//! crossback media, its newest full backup generation 0.

use std::path::Path;

use anyhow::{bail, Context};
use crossback_host::{ns, offline};

use crate::config::{self, Config, Media, Sealing};
use crate::layout::{self, Marker, SlotId, SlotWriter};
use crate::machine::{self, Machine};
use crate::media;
use crate::Outcome;
use crossback_host::beneath::Dir;

use super::device_for;

/// duplicity's `20261126T064749Z` as RFC 3339.
fn dup_time(t: &str) -> String {
    if t.len() == 16 && t.as_bytes()[8] == b'T' {
        format!("{}-{}-{}T{}:{}:{}Z", &t[0..4], &t[4..6], &t[6..8], &t[9..11], &t[11..13], &t[13..15])
    } else {
        crate::output::now()
    }
}

fn hostname_of(root: &Dir, set: &crate::duplicity::Set) -> String {
    let name = format!("duplicity-full.{}.manifest", set.time);
    let rel = if set.dir.is_empty() { name } else { format!("{}/{name}", set.dir) };
    // Only to help the user tell the two sets apart.
    let text = root.read_capped(&rel, 64 << 20).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default();
    format!("made on host {:?} from {:?}", get("Hostname "), get("Localdir "))
}

/// `crossback media adopt SLOT_A SLOT_B`: take over a disk made by the old
/// duplicity scripts: one slot holds a full backup at its root and one in a
/// hidden directory, the other only lost+found. The backups become sealed
/// generation 0; the empty slot takes the first crossback generation.
pub fn adopt(path: &Path, a: crate::cli::AdoptArgs) -> anyhow::Result<Outcome> {
    machine::require_root("media adopt")?;
    let cfg = Config::load(path)?;
    let m = Machine::scan(&[])?;
    let devs = slot_devices(&m, &cfg, &a)?;
    for n in [&a.root_backup, &a.hidden_backup].into_iter().flatten() {
        if cfg.system(n).is_none() {
            bail!("no system called {n:?} in the configuration");
        }
    }
    let media_id = match &cfg.media {
        Some(mm) => mm.id.get_ref().clone(),
        None => media::new_media_id()?,
    };
    let _lock = crate::slots::lock_media(&media_id, crossback_host::lock::Mode::Exclusive)?;
    ns::enter_private()?;
    let base = crossback_host::inspect::scratch_dir("crossback-adopt")?;
    let mut mounted = offline::Mounted::default();
    let mut roots = Vec::new();
    for (letter, d) in SlotId::BOTH.iter().zip(&devs) {
        let at = base.join(letter.letter());
        std::fs::create_dir_all(&at)?;
        let fm = crate::slots::slot_fs(*letter, d);
        offline::mount_one(&fm, &at, true, false, &mut mounted)?;
        roots.push(Dir::open(&at)?);
    }
    let old = OldLayout::read(&roots, &devs)?;
    let (dup, empty, droot, hidden) = (old.dup, old.empty, &roots[old.dup], old.hidden.as_str());
    let (root_set, hidden_set) = (&old.root_set, &old.hidden_set);
    let (Some(root_name), Some(hidden_name)) = (a.root_backup.clone(), a.hidden_backup.clone()) else {
        bail!(
            "which system is which? The backup at the root was {}, the one in {} was {}. Say it with --root-backup SYSTEM --hidden-backup SYSTEM (configured: {})",
            hostname_of(droot, root_set),
            hidden,
            hostname_of(droot, hidden_set),
            cfg.systems.iter().map(|s| s.name.get_ref().as_str()).collect::<Vec<_>>().join(", ")
        );
    };
    if root_name == hidden_name {
        bail!("--root-backup and --hidden-backup name the same system");
    }
    // Markers on both slots, generation 0 on the duplicity one.
    let writers = SlotId::BOTH
        .iter()
        .zip(&roots)
        .map(|(&letter, root)| SlotWriter::prepare(root, &Marker::new(&media_id, letter), None))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let g = generation_zero(&media_id, &old, [&root_name, &hidden_name]);
    g.check().context("the generation made of the duplicity backups does not check")?;
    writers[dup].adopt(&g)?;
    drop(writers);
    drop(roots);
    let busy = mounted.unmount();
    if !busy.is_empty() {
        bail!("could not unmount the slots: {busy:?}");
    }
    config::set_media(path, &Media::with_sealing(&media_id, &devs[0].uuid, &devs[1].uuid, &Sealing::Plain))?;
    println!(
        "adopted: slot {} holds generation 0 (duplicity: {root_name} from the root, {hidden_name} from {}), {} files; slot {} takes the first crossback generation",
        SlotId::BOTH[dup],
        hidden,
        g.legacy_files.len(),
        SlotId::BOTH[empty]
    );
    println!(
        "the duplicity files stay until a newer generation is complete in slot {} and rotation needs slot {} again",
        SlotId::BOTH[empty],
        SlotId::BOTH[dup]
    );
    Ok(Outcome::Ok)
}

/// The two devices named, checked: two of them, neither part of a
/// configured system nor mounted.
fn slot_devices(m: &Machine, cfg: &Config, a: &crate::cli::AdoptArgs) -> anyhow::Result<[crossback_host::blockdev::Device; 2]> {
    let devs = [device_for(m, &a.slot_a)?, device_for(m, &a.slot_b)?];
    if devs[0].path == devs[1].path {
        bail!("slot A and slot B are the same device ({})", devs[0].path.display());
    }
    let systems = machine::systems(m, cfg)?;
    for d in &devs {
        if systems.iter().any(|s| s.filesystems.iter().any(|f| f.device.as_ref() == Some(&d.path))) {
            bail!("{} is part of a configured system: choose the backup disk's filesystems", d.path.display());
        }
        if !m.mounts_of(d).is_empty() {
            bail!("{} is mounted: unmount it first (and turn off automounting of the backup disk)", d.path.display());
        }
    }
    Ok(devs)
}

/// What the old scripts left: which slot holds the duplicity backups (one
/// set at its root, one in a hidden directory), which is empty.
struct OldLayout {
    dup: usize,
    empty: usize,
    /// What the duplicity slot holds at its root.
    contents: Vec<String>,
    hidden: String,
    root_set: crate::duplicity::Set,
    hidden_set: crate::duplicity::Set,
}

impl OldLayout {
    /// Reads both slots and checks the duplicity backups' volumes; anything
    /// that is not the old layout is refused.
    fn read(roots: &[Dir], devs: &[crossback_host::blockdev::Device; 2]) -> anyhow::Result<OldLayout> {
        let names = |r: &Dir| -> anyhow::Result<Vec<String>> {
            Ok(r.entries()?.into_iter().map(|(n, _)| n.to_string_lossy().into_owned()).filter(|n| n != "lost+found").collect())
        };
        let contents = [names(&roots[0])?, names(&roots[1])?];
        let has_dup = |v: &[String]| v.iter().any(|n| n.starts_with("duplicity-"));
        let (dup, empty) = match (has_dup(&contents[0]), has_dup(&contents[1])) {
            (true, false) => (0, 1),
            (false, true) => (1, 0),
            (false, false) => {
                bail!("neither filesystem holds a duplicity backup at its root: nothing to adopt (for an empty disk, use `crossback media prepare`)")
            }
            (true, true) => {
                bail!("both filesystems hold duplicity backups: the old scripts kept one complete set on one partition only; move one set away first")
            }
        };
        if !contents[empty].is_empty() {
            bail!("slot {} ({}) should hold nothing but lost+found, and holds {}", SlotId::BOTH[empty], devs[empty].path.display(), contents[empty].join(", "));
        }
        let droot = &roots[dup];
        let root_sets = crate::duplicity::find_sets(droot, "")?;
        let hidden: Vec<&String> =
            contents[dup].iter().filter(|n| n.starts_with('.') && droot.kind(n).ok().flatten() == Some(crossback_host::beneath::Kind::Dir)).collect();
        let foreign: Vec<&String> = contents[dup].iter().filter(|n| !n.starts_with("duplicity-") && *n != "duplicity_empty" && !hidden.contains(n)).collect();
        if !foreign.is_empty() {
            bail!(
                "slot {} also holds {}: not part of the duplicity backups; move them away, then adopt",
                SlotId::BOTH[dup],
                foreign.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        if hidden.len() != 1 {
            bail!(
                "the old layout has exactly one hidden directory holding the other system's backup; found {}",
                if hidden.is_empty() { "none".to_string() } else { hidden.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ") }
            );
        }
        let hidden_sets = crate::duplicity::find_sets(droot, hidden[0])?;
        let (Some(root_set), Some(hidden_set)) = (root_sets.iter().max_by_key(|s| s.time.clone()), hidden_sets.iter().max_by_key(|s| s.time.clone())) else {
            bail!("the old layout needs a full duplicity backup at the root and one in {}; one is missing", hidden[0]);
        };
        for (what, set) in [("root", root_set), (hidden[0].as_str(), hidden_set)] {
            let problems = crate::duplicity::verify(droot, set);
            if !problems.is_empty() {
                bail!("the duplicity backup in {what} is damaged: {}; not adopted", problems.join("; "));
            }
        }
        if contents[dup].iter().any(|n| n == "duplicity_empty") {
            println!("note: duplicity_empty is still there (the old script deletes it when it finishes); the backups' volumes check out, so they are adopted");
        }
        let (hidden, root_set, hidden_set) = (hidden[0].clone(), root_set.clone(), hidden_set.clone());
        let [a, b] = contents;
        Ok(OldLayout { dup, empty, contents: if dup == 0 { a } else { b }, hidden, root_set, hidden_set })
    }
}

/// Generation 0, made of the two duplicity backups (root first, then hidden)
/// as the systems `names` say, sealed as the old scripts left it.
fn generation_zero(media_id: &str, old: &OldLayout, names: [&String; 2]) -> layout::Generation {
    let mut legacy_files: Vec<String> = old.root_set.files.clone();
    legacy_files.push(old.hidden.clone());
    if old.contents.iter().any(|n| n == "duplicity_empty") {
        legacy_files.push("duplicity_empty".into());
    }
    let rec = |name: &str, set: &crate::duplicity::Set| layout::SystemRecord {
        name: name.to_string(),
        pretty_name: String::new(),
        finished: dup_time(&set.time),
        archives: vec![],
        legacy: Some(set.clone()),
        essentials: vec![],
    };
    layout::Generation {
        format: layout::FORMAT,
        media_id: media_id.to_string(),
        seq: 0,
        state: layout::State::Sealed,
        started: dup_time(&old.root_set.time.clone().min(old.hidden_set.time.clone())),
        sealed: Some(dup_time(&old.root_set.time.clone().max(old.hidden_set.time.clone()))),
        systems: vec![names[0].clone(), names[1].clone()],
        recorded: vec![rec(names[0], &old.root_set), rec(names[1], &old.hidden_set)],
        legacy_files,
    }
}
