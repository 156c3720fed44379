//! The backup media: two slots, each a filesystem with a `crossback/`
//! directory holding its marker and generations, and the rules (R1–R6)
//! that choose where a backup goes and what may be wiped.
//!
//! The decisions are plain functions of what the slots hold ([`plan`]),
//! so the safety rules are tested without disks.

use anyhow::Context;
use crossback_host::beneath::Dir;

use crate::error::Refusal;
use crate::layout::{GenEntry, GenName, Generation, SlotId, State};

/// Where a backup goes, and what must go first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub target: SlotId,
    /// Generation directories to wipe in the target slot.
    pub wipe: Vec<String>,
    /// The open generation to continue, if any.
    pub resume: Option<u64>,
    /// The number of a new generation, if one starts.
    pub start: Option<u64>,
    /// The newest sealed generation: (slot, seq). Never touched.
    pub protected: Option<(SlotId, u64)>,
}

/// R1–R2: the target is the slot with the open generation, if any;
/// otherwise the slot without the newest sealed generation, wiped first.
/// The newest sealed generation is never in the target. A damaged
/// generation in the target is wiped only with `discard_damaged` (the
/// user's word); otherwise refused. Fails too when the generation numbers
/// are used up.
pub fn plan(slots: [&[GenEntry]; 2], new_generation: bool, discard_damaged: bool) -> anyhow::Result<Plan> {
    let all: Vec<(SlotId, &Generation)> =
        SlotId::BOTH.iter().flat_map(|&id| slots[id.index()].iter().filter_map(move |g| g.valid().map(|g| (id, g)))).collect();
    let protected = all.iter().filter(|(_, g)| g.state == State::Sealed).max_by_key(|(_, g)| g.seq).map(|(i, g)| (*i, g.seq));
    let max_seq = slots.iter().flat_map(|s| s.iter()).map(GenEntry::seq).max().unwrap_or(0);
    let open = all
        .iter()
        .filter(|(i, g)| g.state == State::Open && protected.is_none_or(|(pi, ps)| g.seq > ps && *i != pi))
        .max_by_key(|(_, g)| g.seq)
        .map(|(i, g)| (*i, g.seq));
    let target = match (open, protected) {
        (Some((i, _)), _) => i,
        (None, Some((pi, _))) => pi.other(),
        (None, None) => SlotId::A,
    };
    let resume = open.filter(|_| !new_generation).map(|(_, s)| s);
    let wipe = slots[target.index()]
        .iter()
        .filter(|g| Some(g.seq()) != resume || g.valid().is_none())
        .filter(|g| protected.is_none_or(|(pi, ps)| pi != target || g.seq() != ps || g.valid().is_none()))
        .map(|g| g.dir().to_string())
        .collect();
    let damaged: Vec<String> = slots[target.index()]
        .iter()
        .filter_map(|g| match g {
            GenEntry::Leftover { dir, why: crate::layout::classify::Leftover::Damaged(why), .. } => Some(format!("{dir} ({why})")),
            _ => None,
        })
        .collect();
    if !damaged.is_empty() && !discard_damaged {
        crate::refuse!(
            Refusal::SlotDamaged,
            "slot {target} holds a damaged generation, which this backup would replace: {}. Its archives may still hold files (`crossback verify` says which); copy what you need, then let the next backup remove it with `crossback backup --discard-damaged`. Nothing was written",
            damaged.join("; ")
        );
    }
    let start = match resume {
        Some(_) => None,
        None => Some(max_seq.checked_add(1).filter(|n| *n < u64::MAX / 2).context("the generation numbers are used up on this media: prepare a new media")?),
    };
    Ok(Plan { target, wipe, resume, start, protected })
}

/// Removes what an adopted duplicity generation consists of (its listed
/// files, and directories they leave empty), before the generation itself.
/// Each path is resolved beneath the slot's root; nothing is followed.
pub fn wipe_legacy(slot_root: &Dir, files: &[String]) -> anyhow::Result<()> {
    for f in files {
        let (parent, name) = match f.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, f.as_str()),
        };
        let dir = match parent {
            Some(p) => match slot_root.dir(p) {
                Ok(d) => d,
                Err(crossback_host::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            },
            None => slot_root.dir(".")?,
        };
        dir.remove_entry(name)?;
        dir.sync()?;
    }
    slot_root.sync()?;
    Ok(())
}

/// Wipes a generation: renamed first (so a half-deleted one is never taken
/// for a whole one), then removed — all beneath the slot's `crossback/`.
pub fn wipe(slot_dir: &Dir, name: &str) -> anyhow::Result<()> {
    let g = GenName::parse(name).with_context(|| format!("{name} is not a generation directory"))?;
    let doomed = GenName::wiping_dir(g.seq);
    if !g.wiping {
        slot_dir.rename(name, &doomed)?;
        slot_dir.sync()?;
    }
    slot_dir.remove_entry(&doomed)?;
    slot_dir.sync()?;
    Ok(())
}

/// The README written on each slot: how to restore without crossback.
pub fn readme(media_id: &str, letter: SlotId, encryption: Option<&crate::layout::Encryption>) -> String {
    let plain = "RESTORING WITHOUT CROSSBACK: an archive is a standard tar stream compressed\n\
         with zstd. As root, with GNU tar and zstd installed:\n\
         \n    mkdir /mnt/target\n\
         \n    zstd -dc root.tar.zst | tar --xattrs --xattrs-include='*' --acls \\\n\
         \x20       --numeric-owner -xpf - -C /mnt/target\n";
    let encrypted = "THIS MEDIA IS ENCRYPTED (age, https://age-encryption.org). The archives\n\
         (root.tar.zst.age …), mounts.toml.age and config.toml.age are encrypted to the\n\
         media key; the media key is kept here encrypted with your passphrase\n\
         (crossback/media-key.passphrase.age) and/or to your own age keys\n\
         (crossback/media-key.recipients.age). Nothing here opens without one of them.\n\
         \n\
         RESTORING WITHOUT CROSSBACK, with age, zstd and GNU tar installed, as root:\n\
         first the media key (it stays in memory: /dev/shm), with the passphrase\n\
         \n    age -d -o /dev/shm/media-key crossback/media-key.passphrase.age\n\
         \nor with your own key\n\
         \n    age -d -i ~/my-age-key.txt -o /dev/shm/media-key crossback/media-key.recipients.age\n\
         \nthen the archive:\n\
         \n    mkdir /mnt/target\n\
         \n    age -d -i /dev/shm/media-key root.tar.zst.age | zstd -dc | \\\n\
         \x20       tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C /mnt/target\n\
         \n    rm /dev/shm/media-key\n";
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
         {}\
         \n\
         This restores files, owners, permissions, times, xattrs, ACLs and capabilities\n\
         (inode flags such as chattr +i are kept only by `crossback restore`). Extra\n\
         data at the end of each archive (its index) is ignored by zstd and tar.\n\
         \n\
         RESTORING WITH CROSSBACK FROM ANY LIVE SYSTEM: crossback/crossback is the\n\
         crossback program that wrote this disk (crossback.version says which; when\n\
         it is missing, the build that wrote the disk was too large to carry: install\n\
         crossback instead). As root, from a live USB or a new system, with this disk\n\
         mounted (`mount -o ro` is enough) and the new one attached:\n\
         \n    /media/…/crossback/crossback init            (takes the configuration from here)\n\
         \n    /media/…/crossback/crossback restore --bare-metal --disk /dev/NEWDISK\n\
         {}\
         \n\
         Do not put other files on this filesystem: crossback refuses a slot that holds\n\
         files it did not write, so that it never wipes anything of yours.\n",
        if encryption.is_some() { encrypted } else { plain },
        if encryption.is_some() { "\n(crossback asks for the passphrase, or give --identity ~/my-age-key.txt.)\n" } else { "" }
    )
}

/// The largest binary carried on a slot: a release build is about 11 MiB;
/// a debug build (80 MiB) is not carried.
const TOOL_CAP: u64 = 32 << 20;

/// Puts this crossback binary on the slot (`crossback/crossback`, with its
/// version), unless the very same bytes are there already: compared by
/// content, so that a planted binary of the same size and version text is
/// replaced. A binary over [`TOOL_CAP`] is not carried, and one left from
/// before is removed rather than left to be run: both are said.
pub fn carry_tool(dir: &Dir) -> anyhow::Result<()> {
    let exe = std::fs::File::open("/proc/self/exe").context("opening crossback's own binary")?;
    let size = exe.metadata()?.len();
    let version = format!("crossback {} ({}), {size} bytes\n", env!("CARGO_PKG_VERSION"), std::env::consts::ARCH);
    if size > TOOL_CAP {
        let stale = dir.kind(crate::layout::TOOL)?.is_some();
        dir.remove_entry(crate::layout::TOOL)?;
        dir.remove_entry(crate::layout::TOOL_VERSION)?;
        dir.sync()?;
        println!(
            "note: crossback is not carried onto the slot: this binary is {} MiB, over the {} MiB a slot carries (a debug build? install a release build){}",
            size >> 20,
            TOOL_CAP >> 20,
            if stale { "; the copy that was there is removed" } else { "" }
        );
        return Ok(());
    }
    if same_content(dir, &exe, size)? && dir.read_capped(crate::layout::TOOL_VERSION, 4096).is_ok_and(|v| v == version.as_bytes()) {
        return Ok(());
    }
    let tmp = format!("{}.new", crate::layout::TOOL);
    let mut out = dir.create_file_mode(&tmp, 0o700)?;
    std::io::copy(&mut std::io::BufReader::new(&exe), &mut out).and_then(|_| out.sync_all()).context("copying crossback onto the slot")?;
    drop(out);
    dir.rename(&tmp, crate::layout::TOOL)?;
    dir.write_durable(crate::layout::TOOL_VERSION, version.as_bytes())?;
    Ok(())
}

/// True when the slot's carried binary holds exactly `exe`'s bytes.
fn same_content(dir: &Dir, exe: &std::fs::File, size: u64) -> anyhow::Result<bool> {
    use std::io::{Read, Seek};
    let Ok(mut carried) = dir.open_file(crate::layout::TOOL) else { return Ok(false) };
    if carried.metadata()?.len() != size {
        return Ok(false);
    }
    let mut exe = exe;
    exe.rewind()?;
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = exe.read(&mut a).context("reading crossback's own binary")?;
        if n == 0 {
            exe.rewind()?;
            return Ok(true);
        }
        if carried.read_exact(&mut b[..n]).is_err() || a[..n] != b[..n] {
            exe.rewind()?;
            return Ok(false);
        }
    }
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
    use crate::layout::classify::Leftover;

    fn gen(seq: u64, state: State) -> GenEntry {
        GenEntry::Valid {
            dir: GenName::dir(seq),
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

    fn left(seq: u64, why: Leftover) -> GenEntry {
        let dir = if why == Leftover::Wiping { GenName::wiping_dir(seq) } else { GenName::dir(seq) };
        GenEntry::Leftover { dir, seq, why }
    }

    fn plan2(a: &[GenEntry], b: &[GenEntry], new: bool) -> Plan {
        plan([a, b], new, false).unwrap()
    }

    /// A generation whose manifest does not read is damage, not
    /// a leftover: never wiped without the user's word, and its number is
    /// never reused.
    #[test]
    fn a_damaged_generation_is_not_wiped_without_the_users_word() {
        let bad = || left(7, Leftover::Damaged("Bad message".into()));
        let e = plan([&[gen(6, State::Sealed)], &[bad()]], false, false).unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Some(Refusal::SlotDamaged));
        assert!(e.to_string().contains("gen-000007") && e.to_string().contains("--discard-damaged"), "{e}");
        let p = plan([&[gen(6, State::Sealed)], &[bad()]], false, true).unwrap();
        assert_eq!((p.target, p.wipe.clone(), p.start), (B, vec![GenName::dir(7)], Some(8)));
        // In the slot that is not the target it is left alone.
        let p = plan([&[gen(6, State::Sealed), bad()], &[gen(5, State::Sealed)]], false, false).unwrap();
        assert_eq!((p.target, p.wipe.clone(), p.start), (B, vec![GenName::dir(5)], Some(8)));
    }

    use SlotId::{A, B};

    /// A carried binary of the same size (and version text) but
    /// other bytes is not taken for this one.
    #[test]
    fn the_carried_binary_is_compared_by_content() {
        let t = tempfile::tempdir().unwrap();
        let exe_path = t.path().join("exe");
        std::fs::write(&exe_path, vec![7u8; 3 << 20]).unwrap();
        let exe = std::fs::File::open(&exe_path).unwrap();
        let slot = t.path().join("slot");
        std::fs::create_dir(&slot).unwrap();
        let dir = Dir::open(&slot).unwrap();
        assert!(!same_content(&dir, &exe, 3 << 20).unwrap(), "nothing carried yet");
        let mut trojan = vec![7u8; 3 << 20];
        trojan[(2 << 20) + 5] = 8;
        std::fs::write(slot.join(crate::layout::TOOL), &trojan).unwrap();
        assert!(!same_content(&dir, &exe, 3 << 20).unwrap(), "same size, other bytes");
        std::fs::write(slot.join(crate::layout::TOOL), vec![7u8; 3 << 20]).unwrap();
        assert!(same_content(&dir, &exe, 3 << 20).unwrap());
        std::fs::write(slot.join(crate::layout::TOOL), vec![7u8; 1 << 20]).unwrap();
        assert!(!same_content(&dir, &exe, 3 << 20).unwrap(), "shorter");
    }

    #[test]
    fn first_backup_goes_to_slot_a() {
        let p = plan2(&[], &[], false);
        assert_eq!(p, Plan { target: A, wipe: vec![], resume: None, start: Some(1), protected: None });
    }

    #[test]
    fn r1_never_the_slot_with_the_newest_sealed() {
        let p = plan2(&[gen(1, State::Sealed)], &[], false);
        assert_eq!((p.target, p.start, p.protected), (B, Some(2), Some((A, 1))));
        let p = plan2(&[gen(3, State::Sealed)], &[gen(2, State::Sealed)], false);
        assert_eq!((p.target, p.wipe.clone(), p.start), (B, vec![GenName::dir(2)], Some(4)));
    }

    #[test]
    fn r2_an_open_generation_is_continued_or_restarted() {
        let p = plan2(&[gen(3, State::Sealed)], &[gen(4, State::Open)], false);
        assert_eq!((p.target, p.resume, p.start, p.wipe.clone()), (B, Some(4), None, vec![]));
        let p = plan2(&[gen(3, State::Sealed)], &[gen(4, State::Open)], true);
        assert_eq!((p.target, p.resume, p.start, p.wipe.clone()), (B, None, Some(5), vec![GenName::dir(4)]));
    }

    #[test]
    fn r5_leftovers_are_wiped_and_numbers_never_reused() {
        let p = plan2(&[gen(5, State::Sealed)], &[left(7, Leftover::Wiping), gen(6, State::Sealed)], false);
        // gen 6 is the newest sealed: the target is A, which holds gen 5.
        assert_eq!((p.target, p.wipe.clone(), p.start), (A, vec![GenName::dir(5)], Some(8)));
        let p = plan2(&[gen(8, State::Sealed)], &[left(9, Leftover::NoManifest)], false);
        assert_eq!((p.target, p.wipe.clone(), p.start), (B, vec![GenName::dir(9)], Some(10)));
    }

    #[test]
    fn an_open_generation_in_the_protected_slot_is_left_alone() {
        let p = plan2(&[gen(2, State::Sealed), gen(3, State::Open)], &[gen(1, State::Sealed)], false);
        assert_eq!(p.target, B);
        assert_eq!(p.wipe, vec![GenName::dir(1)]);
    }

    /// Past gen-999999 the next generation is gen-1000000, a
    /// generation like any other: sealed, protected, never taken for a leftover.
    #[test]
    fn sequence_numbers_past_six_digits() {
        let p = plan2(&[gen(999_999, State::Sealed)], &[gen(999_998, State::Sealed)], false);
        assert_eq!((p.target, p.start), (B, Some(1_000_000)));
        let p = plan2(&[gen(999_999, State::Sealed)], &[gen(1_000_000, State::Sealed)], false);
        assert_eq!((p.target, p.wipe.clone(), p.protected), (A, vec![GenName::dir(999_999)], Some((B, 1_000_000))));
        // A wiping leftover with the protected number is not the protected generation.
        let p = plan2(&[gen(10, State::Sealed)], &[left(9, Leftover::Wiping)], false);
        assert_eq!((p.target, p.protected), (B, Some((A, 10))));
        assert!(plan([&[gen(u64::MAX - 1, State::Sealed)], &[]], false, false).is_err());
    }
}
