//! The backup media: two slots, each a filesystem with a `crossback/`
//! directory holding its marker and generations, and the rules (R1–R6)
//! that choose where a backup goes and what may be wiped.
//!
//! The decisions are plain functions of what the slots hold ([`plan`]),
//! so the safety rules are tested without disks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub const FORMAT: u32 = 1;
pub const DIR: &str = "crossback";
pub const MARKER: &str = "slot.toml";
pub const README: &str = "README.txt";
pub const MANIFEST: &str = "generation.toml";

/// `crossback/slot.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub format: u32,
    pub media_id: String,
    /// "A" or "B".
    pub slot: String,
    pub prepared: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Open,
    Sealed,
}

/// One archive of one filesystem, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRecord {
    pub mountpoint: String,
    pub file: String,
    /// Size of the archive file, and BLAKE3 of all of it (hex).
    pub bytes: u64,
    pub hash: String,
    pub entries: u64,
    /// Bytes of file data archived.
    pub data_bytes: u64,
    /// Source files that could not be read completely (listed when backed up).
    #[serde(default)]
    pub unreadable: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemRecord {
    pub name: String,
    #[serde(default)]
    pub pretty_name: String,
    pub finished: String,
    #[serde(rename = "archive", default)]
    pub archives: Vec<ArchiveRecord>,
    /// A full backup made by the old duplicity scripts (generation 0), adopted as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<crate::duplicity::Set>,
}

/// `crossback/gen-NNNNNN/generation.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    pub format: u32,
    pub media_id: String,
    pub seq: u64,
    pub state: State,
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// The systems this generation needs before it is sealed.
    pub systems: Vec<String>,
    #[serde(default, rename = "system")]
    pub recorded: Vec<SystemRecord>,
    /// Generation 0 only: the paths (from the slot's root) that the adopted
    /// duplicity backups consist of; wiping the generation removes exactly these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_files: Vec<String>,
}

impl Generation {
    pub fn missing(&self) -> Vec<&str> {
        self.systems.iter().filter(|s| !self.recorded.iter().any(|r| &r.name == *s)).map(String::as_str).collect()
    }
}

pub fn gen_dir(seq: u64) -> String {
    format!("gen-{seq:06}")
}

/// The sequence number in a `gen-NNNNNN` name (leftovers included: `gen-000003.wiping`).
pub fn seq_of(name: &str) -> Option<u64> {
    name.strip_prefix("gen-")?.get(..6)?.parse().ok()
}

/// What one generation directory holds.
#[derive(Clone, Debug)]
pub enum GenEntry {
    Valid {
        dir: String,
        generation: Generation,
    },
    /// A leftover: a directory being wiped, or one whose manifest is missing
    /// or unreadable (a crash while it was made).
    Leftover {
        dir: String,
        why: String,
    },
}

impl GenEntry {
    /// Why a leftover is one (empty for a valid generation).
    pub fn why(&self) -> &str {
        match self {
            GenEntry::Valid { .. } => "",
            GenEntry::Leftover { why, .. } => why,
        }
    }

    pub fn dir(&self) -> &str {
        match self {
            GenEntry::Valid { dir, .. } | GenEntry::Leftover { dir, .. } => dir,
        }
    }
}

/// What a slot's `crossback/` holds.
#[derive(Clone, Debug, Default)]
pub struct SlotContents {
    pub generations: Vec<GenEntry>,
}

/// Reads `crossback/` of a mounted slot: the marker must be this media's,
/// and nothing may be there that crossback did not write.
pub fn read_slot(root: &Path, letter: &str, media_id: &str) -> anyhow::Result<(Marker, SlotContents)> {
    let mut foreign: Vec<String> = Vec::new();
    for e in std::fs::read_dir(root).with_context(|| format!("listing slot {letter}"))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name != "lost+found" && name != DIR {
            foreign.push(name);
        }
    }
    let dir = root.join(DIR);
    let marker_text = match std::fs::read_to_string(dir.join(MARKER)) {
        Ok(t) => t,
        Err(_) => bail!(
            "slot {letter} has no crossback marker ({DIR}/{MARKER}){}: it was never prepared, or preparing it did not finish; run `crossback media prepare`",
            if foreign.is_empty() { String::new() } else { format!(" and holds {}", foreign.join(", ")) }
        ),
    };
    let marker: Marker = toml::from_str(&marker_text).with_context(|| format!("slot {letter}: {DIR}/{MARKER} is damaged"))?;
    if marker.media_id != media_id {
        bail!(
            "slot {letter} belongs to another backup media (media id {}; this machine's configuration names media {media_id}): is it the right disk? A disk is never wiped for another machine's backups",
            marker.media_id
        );
    }
    if marker.slot != letter {
        bail!(
            "the filesystem configured as slot {letter} says it is slot {}: the configuration and the disk disagree; run `crossback media prepare` again",
            marker.slot
        );
    }
    if marker.format > FORMAT {
        bail!("slot {letter} was written by a newer crossback (format {}); upgrade crossback", marker.format);
    }
    let mut contents = SlotContents::default();
    for e in std::fs::read_dir(&dir).with_context(|| format!("listing slot {letter}"))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == MARKER || name == README || name.ends_with(".new") {
            continue;
        }
        if seq_of(&name).is_none() || !e.file_type()?.is_dir() {
            foreign.push(format!("{DIR}/{name}"));
            continue;
        }
        if name.ends_with(".wiping") || name.len() != 10 {
            contents.generations.push(GenEntry::Leftover { dir: name, why: "left by an interrupted wipe".into() });
            continue;
        }
        let entry = match std::fs::read_to_string(e.path().join(MANIFEST)) {
            Err(_) => GenEntry::Leftover { dir: name, why: "no manifest (interrupted while starting)".into() },
            Ok(t) => match toml::from_str::<Generation>(&t) {
                Ok(g) if g.media_id == media_id && gen_dir(g.seq) == name => GenEntry::Valid { dir: name, generation: g },
                Ok(_) => GenEntry::Leftover { dir: name, why: "its manifest names another media or number".into() },
                Err(err) => GenEntry::Leftover { dir: name, why: format!("its manifest does not read: {err}") },
            },
        };
        contents.generations.push(entry);
    }
    // What an adopted duplicity generation consists of is crossback's to keep or wipe.
    let legacy: Vec<&String> = contents
        .generations
        .iter()
        .filter_map(|g| if let GenEntry::Valid { generation, .. } = g { Some(generation.legacy_files.iter()) } else { None })
        .flatten()
        .collect();
    foreign.retain(|f| !legacy.iter().any(|l| *l == f || l.split('/').next() == Some(f.as_str())));
    if !foreign.is_empty() {
        foreign.sort();
        bail!(
            "slot {letter} holds files crossback did not write: {}. crossback wipes only its own generations; move these away (or use another disk) and run again",
            foreign.join(", ")
        );
    }
    Ok((marker, contents))
}

/// Where a backup goes, and what must go first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// 0 for slot A, 1 for slot B.
    pub target: usize,
    /// Generation directories to wipe in the target slot.
    pub wipe: Vec<String>,
    /// The open generation to continue, if any.
    pub resume: Option<u64>,
    /// The number of a new generation, if one starts.
    pub start: Option<u64>,
    /// The newest sealed generation: (slot, seq). Never touched.
    pub protected: Option<(usize, u64)>,
}

/// R1–R2: the target is the slot with the open generation, if any;
/// otherwise the slot without the newest sealed generation, wiped first.
/// The newest sealed generation is never in the target.
pub fn plan(slots: &[SlotContents; 2], new_generation: bool) -> Plan {
    let valid = |i: usize| {
        slots[i].generations.iter().filter_map(move |g| match g {
            GenEntry::Valid { generation, .. } => Some((i, generation)),
            GenEntry::Leftover { .. } => None,
        })
    };
    let all: Vec<(usize, &Generation)> = valid(0).chain(valid(1)).collect();
    let protected = all.iter().filter(|(_, g)| g.state == State::Sealed).max_by_key(|(_, g)| g.seq).map(|(i, g)| (*i, g.seq));
    let max_seq = slots.iter().flat_map(|s| s.generations.iter()).filter_map(|g| seq_of(g.dir())).max().unwrap_or(0);
    let open = all
        .iter()
        .filter(|(i, g)| g.state == State::Open && protected.is_none_or(|(pi, ps)| g.seq > ps && *i != pi))
        .max_by_key(|(_, g)| g.seq)
        .map(|(i, g)| (*i, g.seq));
    let target = match (open, protected) {
        (Some((i, _)), _) => i,
        (None, Some((pi, _))) => 1 - pi,
        (None, None) => 0,
    };
    let resume = open.filter(|_| !new_generation).map(|(_, s)| s);
    let wipe = slots[target]
        .generations
        .iter()
        .filter(|g| Some(seq_of(g.dir()).unwrap_or(0)) != resume || matches!(g, GenEntry::Leftover { .. }))
        .filter(|g| protected.is_none_or(|(pi, ps)| pi != target || seq_of(g.dir()) != Some(ps)))
        .map(|g| g.dir().to_string())
        .collect();
    Plan { target, wipe, resume, start: resume.is_none().then_some(max_seq + 1), protected }
}

/// Removes what an adopted duplicity generation consists of (its listed
/// files, and directories they leave empty), before the generation itself.
pub fn wipe_legacy(slot_root: &Path, files: &[String]) -> anyhow::Result<()> {
    for f in files {
        let p = slot_root.join(f);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
            Ok(_) => std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?,
            Err(_) => continue,
        }
    }
    crate::durable::fsync_dir(slot_root)
}

/// Wipes a generation: renamed first (so a half-deleted one is never taken
/// for a whole one), then removed.
pub fn wipe(slot_dir: &Path, name: &str) -> anyhow::Result<()> {
    let from = slot_dir.join(name);
    let doomed: PathBuf = if name.ends_with(".wiping") { from.clone() } else { slot_dir.join(format!("{}.wiping", &name[..name.len().min(10)])) };
    if from != doomed {
        std::fs::rename(&from, &doomed).with_context(|| format!("renaming {} for wiping", from.display()))?;
        crate::durable::fsync_dir(slot_dir)?;
    }
    std::fs::remove_dir_all(&doomed).with_context(|| format!("wiping {}", doomed.display()))?;
    crate::durable::fsync_dir(slot_dir)
}

/// The README written on each slot: how to restore without crossback.
pub fn readme(media_id: &str, letter: &str) -> String {
    format!(
        "This filesystem is slot {letter} of a crossback backup disk (media {media_id}).\n\
         \n\
         crossback (https://crates.io/crates/crossback) keeps full backups of the Linux\n\
         systems of one machine here, in generations: crossback/gen-NNNNNN/. The two\n\
         slots of the disk take turns; the newest generation marked `state = \"sealed\"`\n\
         in its generation.toml is the newest complete set.\n\
         \n\
         Each system has a directory, and one archive per filesystem in it:\n\
         root.tar.zst for /, home.tar.zst for /home, boot-efi.tar.zst for /boot/efi.\n\
         mounts.toml says which filesystem each archive holds (type, UUID, label).\n\
         \n\
         RESTORING WITHOUT CROSSBACK: an archive is a standard tar stream compressed\n\
         with zstd. As root, with GNU tar and zstd installed:\n\
         \n    mkdir /mnt/target\n\
         \n    zstd -dc root.tar.zst | tar --xattrs --xattrs-include='*' --acls \\\n\
         \x20       --numeric-owner -xpf - -C /mnt/target\n\
         \n\
         This restores files, owners, permissions, times, xattrs, ACLs and capabilities\n\
         (inode flags such as chattr +i are kept only by `crossback restore`). Extra\n\
         data at the end of each archive (its index) is ignored by zstd and tar.\n\
         \n\
         Do not put other files on this filesystem: crossback refuses a slot that holds\n\
         files it did not write, so that it never wipes anything of yours.\n"
    )
}

/// A new media id: 128 random bits, hex.
pub fn new_media_id() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(seq: u64, state: State) -> GenEntry {
        GenEntry::Valid {
            dir: gen_dir(seq),
            generation: Generation {
                format: 1,
                media_id: "m".into(),
                seq,
                state,
                started: String::new(),
                sealed: None,
                systems: vec![],
                recorded: vec![],
                legacy_files: vec![],
            },
        }
    }

    fn slots(a: Vec<GenEntry>, b: Vec<GenEntry>) -> [SlotContents; 2] {
        [SlotContents { generations: a }, SlotContents { generations: b }]
    }

    #[test]
    fn first_backup_goes_to_slot_a() {
        let p = plan(&slots(vec![], vec![]), false);
        assert_eq!(p, Plan { target: 0, wipe: vec![], resume: None, start: Some(1), protected: None });
    }

    #[test]
    fn r1_never_the_slot_with_the_newest_sealed() {
        let p = plan(&slots(vec![gen(1, State::Sealed)], vec![]), false);
        assert_eq!((p.target, p.start, p.protected), (1, Some(2), Some((0, 1))));
        let p = plan(&slots(vec![gen(3, State::Sealed)], vec![gen(2, State::Sealed)]), false);
        assert_eq!((p.target, p.wipe.clone(), p.start), (1, vec![gen_dir(2)], Some(4)));
    }

    #[test]
    fn r2_an_open_generation_is_continued_or_restarted() {
        let p = plan(&slots(vec![gen(3, State::Sealed)], vec![gen(4, State::Open)]), false);
        assert_eq!((p.target, p.resume, p.start, p.wipe.clone()), (1, Some(4), None, vec![]));
        let p = plan(&slots(vec![gen(3, State::Sealed)], vec![gen(4, State::Open)]), true);
        assert_eq!((p.target, p.resume, p.start, p.wipe.clone()), (1, None, Some(5), vec![gen_dir(4)]));
    }

    #[test]
    fn r5_leftovers_are_wiped_and_numbers_never_reused() {
        let left = GenEntry::Leftover { dir: "gen-000007.wiping".into(), why: String::new() };
        let p = plan(&slots(vec![gen(5, State::Sealed)], vec![left, gen(6, State::Sealed)]), false);
        // gen 6 is the newest sealed: the target is A, which holds gen 5.
        assert_eq!((p.target, p.wipe.clone(), p.start), (0, vec![gen_dir(5)], Some(8)));
        let broken = GenEntry::Leftover { dir: gen_dir(9), why: String::new() };
        let p = plan(&slots(vec![gen(8, State::Sealed)], vec![broken]), false);
        assert_eq!((p.target, p.wipe.clone(), p.start), (1, vec![gen_dir(9)], Some(10)));
    }

    #[test]
    fn an_open_generation_in_the_protected_slot_is_left_alone() {
        let p = plan(&slots(vec![gen(2, State::Sealed), gen(3, State::Open)], vec![gen(1, State::Sealed)]), false);
        assert_eq!(p.target, 1);
        assert_eq!(p.wipe, vec![gen_dir(1)]);
    }

    #[test]
    fn manifests_round_trip() {
        let g = Generation {
            format: 1,
            media_id: "m".into(),
            seq: 2,
            state: State::Open,
            started: "2026-11-26T06:00:00Z".into(),
            sealed: None,
            systems: vec!["alpha".into()],
            recorded: vec![SystemRecord {
                name: "alpha".into(),
                pretty_name: "A".into(),
                finished: "x".into(),
                archives: vec![ArchiveRecord {
                    mountpoint: "/".into(),
                    file: "root.tar.zst".into(),
                    bytes: 1,
                    hash: "h".into(),
                    entries: 2,
                    data_bytes: 3,
                    unreadable: 0,
                }],
                legacy: None,
            }],
            legacy_files: vec![],
        };
        let t = toml::to_string(&g).unwrap();
        assert_eq!(toml::from_str::<Generation>(&t).unwrap(), g);
    }
}
