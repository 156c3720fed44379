//! Reading what the slots hold: finding a system's archives in a
//! generation, for `ls`, `restore` and `verify`.

use std::path::Path;

use anyhow::Context;
use crossback_archive::Archive;
use crossback_host::beneath::Dir;

use crate::error::{refuse, Refusal};
use crate::layout::{self, ArchiveRecord, Generation, MountsFile, SlotId, State, SystemRecord};
use crate::slots::Slot;

/// One system's backup in one generation.
pub struct SystemBackup {
    pub generation: Generation,
    pub slot: SlotId,
    pub record: SystemRecord,
    /// `crossback/gen-NNNNNN/SYSTEM/` in the (privately mounted) slot.
    pub dir: Dir,
    /// The slot's root (where an adopted duplicity backup lives).
    pub slot_root: Dir,
    pub mounts: MountsFile,
    /// The media key, when this backup is encrypted.
    pub keys: Option<crossback_archive::crypt::Keys>,
}

impl SystemBackup {
    /// The archive holding `path` (an absolute path in the system), and
    /// the path inside that archive.
    pub fn locate<'a>(&'a self, path: &str) -> Option<(&'a ArchiveRecord, String)> {
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

    /// Opens a recorded archive, checked against its record: the same size,
    /// and the same data hash in its footer. Another file put in its place
    /// is refused, not restored.
    pub fn open_archive(&self, a: &ArchiveRecord) -> anyhow::Result<Archive> {
        let file = self.dir.open_file(&a.file).map_err(|e| refuse(Refusal::SlotHostile, format!("{e}")))?;
        let len = file.metadata().with_context(|| format!("reading {}", self.dir.shown().join(&a.file).display()))?.len();
        if len != a.bytes {
            return Err(refuse(
                Refusal::ArchiveMismatch,
                format!(
                    "{} is {len} bytes, but generation {} records {} for it: it is not the archive that was written (replaced or damaged); run `crossback verify`",
                    self.dir.shown().join(&a.file).display(),
                    self.generation.seq,
                    a.bytes
                ),
            ));
        }
        let archive = Archive::from_file_with(file, &self.dir.shown().join(&a.file), self.keys.as_ref()).map_err(crate::error::from_archive)?;
        if let crossback_archive::archive::Layout::Indexed { footer, .. } = &archive.layout {
            let hash: String = footer.data_hash.iter().map(|b| format!("{b:02x}")).collect();
            if !hash.eq_ignore_ascii_case(&a.hash) {
                return Err(refuse(
                    Refusal::ArchiveMismatch,
                    format!(
                        "{} is not the archive generation {} records (its data hash differs): replaced or damaged; run `crossback verify`",
                        self.dir.shown().join(&a.file).display(),
                        self.generation.seq
                    ),
                ));
            }
        }
        Ok(archive)
    }
}

/// The newest generation holding `system` (sealed or open), or generation `seq`.
impl SystemBackup {
    /// A recorded LUKS container's header, read from beside the archives
    /// (decrypted on an encrypted media) and checked against its record.
    pub fn luks_header(&self, l: &crate::layering::LuksRecord) -> anyhow::Result<Vec<u8>> {
        let shown = self.dir.shown().join(&l.header);
        let bytes = self.dir.read_capped(&l.header, l.header_bytes + (1 << 20)).map_err(|e| refuse(Refusal::SlotDamaged, format!("{e}")))?;
        let plain = match &self.keys {
            Some(k) => k.decrypt_bytes(&shown.display().to_string(), &bytes, l.header_bytes).map_err(crate::error::from_archive)?,
            None => bytes,
        };
        if plain.len() as u64 != l.header_bytes || blake3::hash(&plain).to_hex().as_str() != l.header_hash {
            crate::refuse!(
                Refusal::LayerMismatch,
                "{} is not the LUKS header backup generation {} records for container {} (its size or hash differs): replaced or damaged; nothing was written",
                shown.display(),
                self.generation.seq,
                l.uuid
            );
        }
        Ok(plain)
    }
}

pub fn find(slots: &[Slot], system: &str, seq: Option<u64>) -> anyhow::Result<SystemBackup> {
    let mut best: Option<(&Slot, &Generation)> = None;
    for s in slots {
        for g in s.view.generations.iter().filter_map(|g| g.valid()) {
            if seq.is_some_and(|n| n != g.seq) || g.system(system).is_none() {
                continue;
            }
            if best.is_none_or(|(_, b)| g.seq > b.seq) {
                best = Some((s, g));
            }
        }
    }
    let Some((slot, g)) = best else {
        match seq {
            Some(n) => crate::refuse!(Refusal::NoBackup, "generation {n} holds no backup of {system} (see `crossback status`)"),
            None => crate::refuse!(Refusal::NoBackup, "no generation holds a backup of {system} yet (see `crossback status`)"),
        }
    };
    if g.state == State::Open {
        eprintln!("note: generation {} is not complete (open); {system}'s backup in it is", g.seq);
    }
    open_in(slot, g, system)
}

/// `system`'s backup in generation `g` of `slot` (which holds it).
pub fn open_in(slot: &Slot, g: &Generation, system: &str) -> anyhow::Result<SystemBackup> {
    let record = g.system(system).cloned().context("the system was just found in the generation")?;
    let gendir = slot.dir()?.dir(&layout::GenName::dir(g.seq)).map_err(|e| refuse(Refusal::SlotHostile, format!("{e}")))?;
    // An adopted duplicity backup has no directory of its own in the generation.
    let sysdir = if record.legacy.is_some() { gendir } else { gendir.dir(system).map_err(|e| refuse(Refusal::SlotHostile, format!("{e}")))? };
    // Encrypted (archives named .age): the media key is asked for now, once.
    let encrypted = record.archives.iter().any(|a| a.file.ends_with(".age")) || sysdir.kind(layout::MOUNTS_AGE)?.is_some();
    let keys = if encrypted { crate::keys::for_slot(&slot.view, &format!("reading {system}'s backup"))? } else { None };
    let mounts: MountsFile = if record.legacy.is_some() {
        MountsFile::default()
    } else {
        let m: MountsFile = match &keys {
            Some(k) => {
                let what = format!("{}/{}", sysdir.shown().display(), layout::MOUNTS_AGE);
                let sealed = sysdir.read_capped(layout::MOUNTS_AGE, layout::MOUNTS_CAP).map_err(|e| refuse(Refusal::SlotDamaged, format!("{e}")))?;
                toml::from_str(&crate::keys::open_text(k, &what, &sealed, layout::MOUNTS_CAP)?)
                    .map_err(|e| refuse(Refusal::SlotDamaged, format!("{what}: {}", e.message())))?
            }
            None => layout::read_toml(&sysdir, layout::MOUNTS, layout::MOUNTS_CAP).map_err(|e| refuse(Refusal::SlotDamaged, format!("{e:#}")))?,
        };
        m.check().map_err(|e| refuse(Refusal::SlotDamaged, format!("{}/{}: {e:#}", sysdir.shown().display(), layout::MOUNTS)))?;
        m
    };
    let slot_root = slot.root.dir(".")?;
    Ok(SystemBackup { generation: g.clone(), slot: slot.id, record, dir: sysdir, slot_root, mounts, keys })
}

/// A directory restore refuses to write into unless it is empty or forced.
pub fn check_target(dir: &Path, force: bool) -> anyhow::Result<()> {
    if dir.exists() && !force && std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_some() {
        crate::refuse!(Refusal::TargetNotEmpty, "{} is not empty; restore into an empty directory, or pass --force to write over what is there", dir.display());
    }
    Ok(())
}
