//! Reading what the slots hold: finding a system's archives in a
//! generation, for `ls`, `restore` and `verify`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::commands::backup::MountsFile;
use crate::media::{GenEntry, Generation, State, SystemRecord};
use crate::slots::Slot;

/// One system's backup in one generation.
pub struct SystemBackup {
    pub generation: Generation,
    pub slot: &'static str,
    pub record: SystemRecord,
    /// `crossback/gen-NNNNNN/SYSTEM/` in the (privately mounted) slot.
    pub dir: PathBuf,
    /// The slot's root (where an adopted duplicity backup lives).
    pub slot_root: PathBuf,
    pub mounts: MountsFile,
}

impl SystemBackup {
    /// The archive holding `path` (an absolute path in the system), and
    /// the path inside that archive.
    pub fn locate<'a>(&'a self, path: &str) -> Option<(&'a crate::media::ArchiveRecord, String)> {
        let p = format!("/{}", path.trim_matches('/'));
        self.record
            .archives
            .iter()
            .filter(|a| {
                let mp = a.mountpoint.trim_end_matches('/');
                mp.is_empty() || p == mp || p.starts_with(&format!("{mp}/"))
            })
            .max_by_key(|a| a.mountpoint.len())
            .map(|a| {
                let rest = p[a.mountpoint.trim_end_matches('/').len()..].trim_start_matches('/').to_string();
                (a, rest)
            })
    }

    pub fn archive_path(&self, a: &crate::media::ArchiveRecord) -> PathBuf {
        self.dir.join(&a.file)
    }
}

/// The newest generation holding `system` (sealed or open), or generation `seq`.
pub fn find(slots: &[Slot], system: &str, seq: Option<u64>) -> anyhow::Result<SystemBackup> {
    let mut best: Option<(&Slot, &str, &Generation)> = None;
    for s in slots {
        for g in &s.contents.generations {
            let GenEntry::Valid { dir, generation } = g else { continue };
            if seq.is_some_and(|n| n != generation.seq) || generation.recorded.iter().all(|r| r.name != system) {
                continue;
            }
            if best.is_none_or(|(_, _, b)| generation.seq > b.seq) {
                best = Some((s, dir, generation));
            }
        }
    }
    let Some((slot, dir, g)) = best else {
        match seq {
            Some(n) => bail!("generation {n} holds no backup of {system} (see `crossback status`)"),
            None => bail!("no generation holds a backup of {system} yet (see `crossback status`)"),
        }
    };
    let record = g.recorded.iter().find(|r| r.name == system).cloned().expect("filtered above");
    let sysdir = slot.dir().join(dir).join(system);
    let mounts: MountsFile = if record.legacy.is_some() {
        MountsFile { filesystems: Vec::new() }
    } else {
        toml::from_str(&std::fs::read_to_string(sysdir.join("mounts.toml")).with_context(|| format!("reading {}/mounts.toml", sysdir.display()))?)
            .with_context(|| format!("{}/mounts.toml is damaged", sysdir.display()))?
    };
    if g.state == State::Open {
        eprintln!("note: generation {} is not complete (open); {system}'s backup in it is", g.seq);
    }
    Ok(SystemBackup { generation: g.clone(), slot: slot.letter, record, dir: sysdir, slot_root: slot.root.clone(), mounts })
}

/// A directory restore refuses to write into unless it is empty or forced.
pub fn check_target(dir: &Path, force: bool) -> anyhow::Result<()> {
    if dir.exists() && !force {
        if std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_some() {
            bail!("{} is not empty; restore into an empty directory, or pass --force to write over what is there", dir.display());
        }
    }
    Ok(())
}
