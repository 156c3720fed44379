//! Reading what the slots hold: finding a system's archives in a
//! generation, for `ls`, `restore` and `verify`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use crossback_archive::Archive;
use crossback_host::beneath::Dir;

use crate::error::{refuse, Refusal};
use crate::layout::{self, ArchiveRecord, Generation, MountsFile, SlotId, State, SystemRecord};
use crate::remote::{Objects, Store};
use crate::slots::Slot;

/// One system's backup in one generation.
pub struct SystemBackup {
    pub generation: Generation,
    pub record: SystemRecord,
    pub from: Holder,
    pub mounts: MountsFile,
    /// The media key, when this backup is encrypted.
    pub keys: Option<crossback_archive::crypt::Keys>,
}

/// Where a backup's files are.
pub enum Holder {
    Slot {
        id: SlotId,
        /// `crossback/gen-NNNNNN/SYSTEM/` in the (privately mounted) slot.
        dir: Dir,
        /// The slot's root (where an adopted duplicity backup lives).
        root: Dir,
    },
    /// An off-site store: the generation's directory (`gen-NNNNNN`) and its
    /// objects as `objects.toml` lists them.
    Remote { store: Arc<Store>, gen: String, objects: Objects },
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Slot { id, .. } => write!(f, "slot {id}"),
            Holder::Remote { store, .. } => write!(f, "remote {}", store.name),
        }
    }
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
        let check = match &self.from {
            Holder::Slot { .. } => "crossback verify".to_string(),
            Holder::Remote { store, .. } => format!("crossback remote verify {}", store.name),
        };
        let mismatch = |shown: &dyn std::fmt::Display, len: u64, want: u64| {
            refuse(
                Refusal::ArchiveMismatch,
                format!(
                    "{shown} is {len} bytes, but generation {} records {want} for it: it is not the archive that was written (replaced or damaged); run `{check}`",
                    self.generation.seq,
                ),
            )
        };
        let (archive, shown) = match &self.from {
            Holder::Slot { dir, .. } => {
                let shown = dir.shown().join(&a.file);
                let file = dir.open_file(&a.file).map_err(|e| refuse(Refusal::SlotHostile, format!("{e}")))?;
                let len = file.metadata().with_context(|| format!("reading {}", shown.display()))?.len();
                if len != a.bytes {
                    return Err(mismatch(&shown.display(), len, a.bytes));
                }
                (Archive::from_file_with(file, &shown, self.keys.as_ref()), shown.display().to_string())
            }
            Holder::Remote { store, gen, objects } => {
                // The store's object, at the size the push recorded for it.
                let path = format!("{}/{}", self.record.name, a.file);
                let rel = format!("{gen}/{path}");
                let shown = format!("remote {}: {rel}", store.name);
                let listed = listed(objects, &path, &shown)?;
                let len = store.size(&rel)?.with_context(|| refuse(Refusal::RemoteDamaged, format!("{shown} is not on the store")))?;
                if len != listed.bytes {
                    return Err(mismatch(&shown, len, listed.bytes));
                }
                // Its age header, as pushed: then every chunk read is (age authenticates each under the header's file key).
                let bytes = Arc::new(crate::remote::RemoteBytes::new(Arc::clone(store), rel, len));
                let start = crate::remote::start_of(&bytes, len).map_err(|e| refuse(Refusal::RemoteUnreachable, format!("{shown}: {e}")))?;
                let head = crate::remote::age_header_len(&start).map(|n| blake3::hash(&start[..n]).to_hex().to_string());
                if head.as_deref() != Some(listed.head.as_str()) {
                    crate::refuse!(
                        Refusal::ArchiveMismatch,
                        "{shown} is not the object that was pushed (its encryption header differs), though its size is: replaced on the store; run `{check}`"
                    );
                }
                (Archive::from_bytes(bytes, Path::new(&shown), self.keys.as_ref()), shown)
            }
        };
        let archive = archive.map_err(crate::error::from_archive)?;
        if let crossback_archive::archive::Layout::Indexed { footer, .. } = &archive.layout {
            let hash = crate::output::hex(&footer.data_hash);
            if !hash.eq_ignore_ascii_case(&a.hash) {
                return Err(refuse(
                    Refusal::ArchiveMismatch,
                    format!(
                        "{shown} is not the archive generation {} records (its data hash differs): replaced or damaged; run `{check}`",
                        self.generation.seq
                    ),
                ));
            }
        }
        Ok(archive)
    }
}

impl SystemBackup {
    /// What was read from a remote, said in a line (`None` from a slot).
    pub fn fetched(&self) -> Option<String> {
        match &self.from {
            Holder::Slot { .. } => None,
            Holder::Remote { store, .. } => Some(store.said_fetched()),
        }
    }

    /// The slot's root, where an adopted duplicity backup lives (never pushed).
    pub fn slot_root(&self) -> anyhow::Result<&Dir> {
        match &self.from {
            Holder::Slot { root, .. } => Ok(root),
            Holder::Remote { .. } => anyhow::bail!("an adopted duplicity backup is never on a remote"),
        }
    }

    /// A small file beside the archives, whole (at most `cap` bytes), and
    /// how to name it.
    fn read_small(&self, name: &str, cap: u64) -> anyhow::Result<(String, Vec<u8>)> {
        match &self.from {
            Holder::Slot { dir, .. } => {
                let bytes = dir.read_capped(name, cap).map_err(|e| refuse(Refusal::SlotDamaged, format!("{e}")))?;
                Ok((dir.shown().join(name).display().to_string(), bytes))
            }
            Holder::Remote { store, gen, objects } => {
                let path = format!("{}/{name}", self.record.name);
                let rel = format!("{gen}/{path}");
                let shown = format!("remote {}: {rel}", store.name);
                let listed = listed(objects, &path, &shown)?;
                let bytes = store.get(&rel, cap)?.with_context(|| refuse(Refusal::RemoteDamaged, format!("{shown} is missing")))?;
                if blake3::hash(&bytes).to_hex().as_str() != listed.blake3 {
                    crate::refuse!(Refusal::RemoteDamaged, "{shown} is not the file that was pushed (its hash differs): replaced or damaged on the store");
                }
                Ok((shown, bytes))
            }
        }
    }

    /// A recorded LUKS container's header, read from beside the archives
    /// (decrypted on an encrypted media) and checked against its record.
    pub fn luks_header(&self, l: &crate::stack::plan::LuksRecord) -> anyhow::Result<Vec<u8>> {
        let (shown, bytes) = self.read_small(&l.header, l.header_bytes + (1 << 20))?;
        let plain = match &self.keys {
            Some(k) => k.decrypt_bytes(&shown, &bytes, l.header_bytes).map_err(crate::error::from_archive)?,
            None => bytes,
        };
        if plain.len() as u64 != l.header_bytes || blake3::hash(&plain).to_hex().as_str() != l.header_hash {
            crate::refuse!(
                Refusal::LayerMismatch,
                "{} is not the LUKS header backup generation {} records for container {} (its size or hash differs): replaced or damaged; nothing was written",
                shown,
                self.generation.seq,
                l.uuid
            );
        }
        Ok(plain)
    }
}

/// The newest generation holding `system` (sealed or open), or generation `seq`.
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
    let root = slot.root.dir(".")?;
    Ok(SystemBackup { generation: g.clone(), record, from: Holder::Slot { id: slot.id, dir: sysdir, root }, mounts, keys })
}

/// `system`'s backup in the newest complete generation of a store that
/// holds it (or in generation `seq`), read with `key` (the store's secret
/// key, unlocked): a generation whose seal that key does not make is
/// refused, not passed over for an older one.
pub fn find_remote(store: &Arc<Store>, key: &age::x25519::Identity, system: &str, seq: Option<u64>) -> anyhow::Result<SystemBackup> {
    let seal = crate::remote::SealKey::of(key);
    let keys = crossback_archive::crypt::Keys::new(vec![Box::new(key.clone())]);
    if let Some((g, objects)) = crate::remote::newest_sealed(store, &seal, seq, |g, _| g.system(system).is_some())? {
        let (n, record) = (g.seq, g.system(system).cloned().context("found above")?);
        let mut b = SystemBackup {
            generation: g,
            record,
            from: Holder::Remote { store: Arc::clone(store), gen: layout::GenName::dir(n), objects },
            mounts: MountsFile::default(),
            keys: Some(keys),
        };
        let (what, sealed) = b.read_small(layout::MOUNTS_AGE, layout::MOUNTS_CAP)?;
        let text = crate::keys::open_text(b.keys.as_ref().context("set above")?, &what, &sealed, layout::MOUNTS_CAP)?;
        let m: MountsFile = toml::from_str(&text).map_err(|e| refuse(Refusal::RemoteDamaged, format!("{what}: {}", e.message())))?;
        m.check().map_err(|e| refuse(Refusal::RemoteDamaged, format!("{what}: {e:#}")))?;
        b.mounts = m;
        return Ok(b);
    }
    let on = format!("remote {} ({})", store.name, store.machine());
    match seq {
        Some(n) => crate::refuse!(
            Refusal::NoBackup,
            "{on} has no complete generation {n} holding {system}: `crossback remote verify {}` lists what it has",
            store.name
        ),
        None => crate::refuse!(Refusal::NoBackup, "{on} holds no complete generation with {system} (was it pushed? `crossback push`)"),
    }
}

/// An object's entry in its generation's `objects.toml`.
fn listed<'a>(objects: &'a Objects, path: &str, shown: &str) -> anyhow::Result<&'a crate::remote::Object> {
    objects
        .list
        .iter()
        .find(|o| o.path == path)
        .with_context(|| refuse(Refusal::RemoteDamaged, format!("{shown} is in the manifest but not in objects.toml: the push of it never finished")))
}

/// A directory restore refuses to write into unless it is empty or forced.
pub fn check_target(dir: &Path, force: bool) -> anyhow::Result<()> {
    if dir.exists() && !force && std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_some() {
        crate::refuse!(Refusal::TargetNotEmpty, "{} is not empty; restore into an empty directory, or pass --force to write over what is there", dir.display());
    }
    Ok(())
}
