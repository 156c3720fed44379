//! What a slot holds, read once and the same way for every command: the
//! marker, each generation directory as a valid generation or a leftover,
//! and anything crossback did not write.

use std::fmt;

use crossback_host::beneath::{Dir, Kind};
use serde::{Deserialize, Serialize};

use super::marker::{KEY_BY_PASSPHRASE, KEY_BY_RECIPIENTS};
use super::{GenName, Generation, Marker, SlotId, CONFIG, CONFIG_AGE, CONFIG_CAP, DIR, MANIFEST, MANIFEST_CAP, MARKER, MARKER_CAP, README, TOOL, TOOL_VERSION};
use crate::error::{refuse, Refusal};

/// Why a generation directory is not a usable generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Leftover {
    /// Renamed for wiping; the wipe did not finish.
    Wiping,
    /// No manifest: interrupted while it was being started.
    NoManifest,
    /// Damaged: the directory or its manifest does not read (an I/O error,
    /// not a regular file, too large, does not parse or check). Not a
    /// leftover of a run — a manifest is only ever replaced whole — so it
    /// is never wiped without the user's word (`backup --discard-damaged`):
    /// its archives may be intact, and it may be the newest backup.
    Damaged(String),
    /// The manifest names another media or another number.
    NotThis,
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leftover::Wiping => f.write_str("left by an interrupted wipe"),
            Leftover::NoManifest => f.write_str("no manifest (interrupted while starting)"),
            Leftover::Damaged(why) => write!(f, "DAMAGED: its manifest does not read: {why}"),
            Leftover::NotThis => f.write_str("its manifest names another media or number"),
        }
    }
}

/// One generation directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GenEntry {
    Valid { dir: String, generation: Generation },
    Leftover { dir: String, seq: u64, why: Leftover },
}

impl GenEntry {
    pub fn dir(&self) -> &str {
        match self {
            GenEntry::Valid { dir, .. } | GenEntry::Leftover { dir, .. } => dir,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            GenEntry::Valid { generation, .. } => generation.seq,
            GenEntry::Leftover { seq, .. } => *seq,
        }
    }

    pub fn valid(&self) -> Option<&Generation> {
        match self {
            GenEntry::Valid { generation, .. } => Some(generation),
            GenEntry::Leftover { .. } => None,
        }
    }
}

/// A slot as read: its marker, its generation directories, and what else is on it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlotView {
    pub marker: Marker,
    pub generations: Vec<GenEntry>,
    /// Names (from the slot's root) that crossback did not write, shown escaped.
    pub foreign: Vec<String>,
    /// The configuration `backup` left on the slot, if it reads.
    #[serde(default)]
    pub config: Option<String>,
    /// The same, encrypted (an encrypted media): age bytes.
    #[serde(default)]
    pub config_age: Option<Vec<u8>>,
    /// An encrypted media's key, as kept on the slot (wrapped).
    #[serde(default)]
    pub keys: super::KeyFiles,
}

impl SlotView {
    /// The newest valid generation in this slot.
    pub fn newest(&self) -> Option<&Generation> {
        self.generations.iter().filter_map(GenEntry::valid).max_by_key(|g| g.seq)
    }

    /// R6: this slot is `id` of media `media_id`, written by a crossback that
    /// understands it, and holds nothing crossback did not write.
    pub fn check_owner(&self, id: SlotId, media_id: &str) -> anyhow::Result<()> {
        if self.marker.media_id != media_id {
            return Err(refuse(
                Refusal::SlotOfAnotherMedia,
                format!(
                    "slot {id} belongs to another backup media (media id {}; this machine's configuration names media {media_id}): is it the right disk? A disk is never wiped for another machine's backups",
                    crate::output::text(&self.marker.media_id)
                ),
            ));
        }
        if self.marker.slot != id {
            return Err(refuse(
                Refusal::SlotOfAnotherMedia,
                format!(
                    "the filesystem configured as slot {id} says it is slot {}: the configuration and the disk disagree; run `crossback media prepare` again",
                    self.marker.slot
                ),
            ));
        }
        if self.marker.format > super::FORMAT {
            return Err(refuse(Refusal::NewerFormat, format!("slot {id} was written by a newer crossback (format {}); upgrade crossback", self.marker.format)));
        }
        if !self.foreign.is_empty() {
            return Err(refuse(
                Refusal::SlotHoldsForeignFiles,
                format!(
                    "slot {id} holds files crossback did not write: {}. crossback wipes only its own generations; move these away (or use another disk) and run again",
                    self.foreign.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

fn shown(name: &std::ffi::OsStr) -> String {
    crate::output::text(&name.to_string_lossy())
}

/// Reads the slot whose filesystem root is `root`. `Ok(None)`: no marker
/// (not a slot, or preparing it did not finish); the names found are given.
pub fn classify(root: &Dir) -> anyhow::Result<Result<SlotView, Vec<String>>> {
    let mut foreign: Vec<String> = Vec::new();
    let mut has_dir = false;
    for (name, kind) in root.entries()? {
        match (name.to_str(), kind) {
            (Some("lost+found"), Kind::Dir) => {}
            (Some(DIR), Kind::Dir) => has_dir = true,
            _ => foreign.push(shown(&name)),
        }
    }
    if !has_dir {
        return Ok(Err(foreign));
    }
    let dir = root.dir(DIR).map_err(|e| refuse(Refusal::SlotHostile, format!("{e}")))?;
    let marker: Marker = match dir.kind(MARKER)? {
        None => return Ok(Err(foreign)),
        Some(_) => super::read_toml(&dir, MARKER, MARKER_CAP).map_err(|e| refuse(Refusal::SlotDamaged, format!("{DIR}/{MARKER} is damaged: {e:#}")))?,
    };
    let mut generations = Vec::new();
    for (name, kind) in dir.entries()? {
        let Some(n) = name.to_str() else {
            foreign.push(format!("{DIR}/{}", shown(&name)));
            continue;
        };
        let ours =
            [MARKER, README, CONFIG, CONFIG_AGE, TOOL, TOOL_VERSION, KEY_BY_PASSPHRASE, KEY_BY_RECIPIENTS].iter().any(|f| n == *f || n == format!("{f}.new"));
        if ours && kind == Kind::File {
            continue;
        }
        let Some(g) = GenName::parse(n).filter(|_| kind == Kind::Dir) else {
            foreign.push(format!("{DIR}/{}", crate::output::text(n)));
            continue;
        };
        if g.wiping {
            generations.push(GenEntry::Leftover { dir: n.to_string(), seq: g.seq, why: Leftover::Wiping });
            continue;
        }
        // A generation that does not read is damaged, said as such; it never
        // stops the others (on this slot or the other) from being read.
        let damaged = |e: String| GenEntry::Leftover { dir: n.to_string(), seq: g.seq, why: Leftover::Damaged(e) };
        let gdir = match dir.dir(n) {
            Ok(d) => d,
            Err(e) => {
                generations.push(damaged(e.to_string()));
                continue;
            }
        };
        let entry = match gdir.kind(MANIFEST) {
            Err(e) => damaged(e.to_string()),
            Ok(None) => GenEntry::Leftover { dir: n.to_string(), seq: g.seq, why: Leftover::NoManifest },
            Ok(Some(_)) => match super::read_toml::<Generation>(&gdir, MANIFEST, MANIFEST_CAP).and_then(|m| m.check().map(|_| m)) {
                Ok(m) if m.seq == g.seq && m.media_id == marker.media_id => GenEntry::Valid { dir: n.to_string(), generation: m },
                Ok(_) => GenEntry::Leftover { dir: n.to_string(), seq: g.seq, why: Leftover::NotThis },
                Err(e) => damaged(format!("{e:#}")),
            },
        };
        generations.push(entry);
    }
    generations.sort_by_key(|g| (g.seq(), g.dir().to_string()));
    // What an adopted duplicity generation consists of is crossback's to keep or wipe.
    let legacy: Vec<&String> = generations.iter().filter_map(GenEntry::valid).flat_map(|g| g.legacy_files.iter()).collect();
    foreign.retain(|f| !legacy.iter().any(|l| *l == f || l.split('/').next() == Some(f.as_str())));
    foreign.sort();
    let config = dir.read_capped(CONFIG, CONFIG_CAP).ok().and_then(|b| String::from_utf8(b).ok());
    let config_age = dir.read_capped(CONFIG_AGE, CONFIG_CAP).ok();
    let keys = super::KeyFiles::read(&dir).map_err(|e| refuse(Refusal::SlotDamaged, format!("{DIR}: the media key does not read: {e:#}")))?;
    Ok(Ok(SlotView { marker, generations, foreign, config, config_age, keys }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{GenName, Generation, State};

    fn manifest(seq: u64, state: State) -> String {
        let g = Generation {
            format: 1,
            media_id: "m".into(),
            seq,
            state,
            started: "2026-11-27T00:00:00Z".into(),
            sealed: None,
            systems: vec!["alpha".into()],
            recorded: vec![],
            legacy_files: vec![],
        };
        toml::to_string(&g).unwrap()
    }

    fn slot(gens: &[(&str, Option<String>)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join(DIR);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(MARKER), toml::to_string(&Marker::new("m", SlotId::A)).unwrap()).unwrap();
        for (name, m) in gens {
            std::fs::create_dir_all(d.join(name)).unwrap();
            if let Some(m) = m {
                std::fs::write(d.join(name).join(MANIFEST), m).unwrap();
            }
        }
        t
    }

    /// One classification for every command. A half-wiped
    /// generation is a leftover, whatever its manifest says; numbers past
    /// six digits are generations like the others.
    #[test]
    fn one_classification_of_a_slot() {
        let t = slot(&[
            (&GenName::wiping_dir(7), Some(manifest(7, State::Sealed))),
            (&GenName::dir(999_999), Some(manifest(999_999, State::Sealed))),
            (&GenName::dir(1_000_000), Some(manifest(1_000_000, State::Open))),
            (&GenName::dir(8), None),
            (&GenName::dir(9), Some(manifest(10, State::Sealed))),
            (&GenName::dir(11), Some("state = [".into())),
        ]);
        let v = classify(&Dir::open(t.path()).unwrap()).unwrap().unwrap();
        assert!(v.foreign.is_empty(), "{:?}", v.foreign);
        let kinds: Vec<(u64, bool)> = v.generations.iter().map(|g| (g.seq(), g.valid().is_some())).collect();
        assert_eq!(kinds, [(7, false), (8, false), (9, false), (11, false), (999_999, true), (1_000_000, true)]);
        assert_eq!(v.newest().map(|g| g.seq), Some(1_000_000));
        assert!(matches!(&v.generations[0], GenEntry::Leftover { why: Leftover::Wiping, .. }));
        assert!(matches!(&v.generations[2], GenEntry::Leftover { why: Leftover::NotThis, .. }));
    }

    /// Planted entries are foreign, not generations: a symlink named like a
    /// generation, a file named like one, a `crossback` that is a symlink.
    #[test]
    fn planted_entries_are_foreign() {
        let t = slot(&[(&GenName::dir(1), Some(manifest(1, State::Sealed)))]);
        let d = t.path().join(DIR);
        std::os::unix::fs::symlink("/etc", d.join(GenName::dir(2))).unwrap();
        std::fs::write(d.join(GenName::dir(3)), "x").unwrap();
        std::os::unix::fs::symlink("/", d.join("generation.toml.new")).unwrap();
        let v = classify(&Dir::open(t.path()).unwrap()).unwrap().unwrap();
        assert_eq!(v.foreign, ["crossback/gen-000002", "crossback/gen-000003", "crossback/generation.toml.new"]);
        assert!(v.check_owner(SlotId::A, "m").is_err());
        let t2 = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(d, t2.path().join(DIR)).unwrap();
        assert_eq!(classify(&Dir::open(t2.path()).unwrap()).unwrap().unwrap_err(), ["crossback"]);
    }
}
