//! The one writer of a slot: every file crossback puts on a slot, or takes
//! off it, is written here, in the order that keeps a complete set alive
//! whatever stops the run (design rules R3–R6):
//!
//! - a generation starts as a directory with an `open` manifest, made
//!   durable before anything goes into it;
//! - a system's directory is made anew each time (what an interrupted run
//!   left is removed first), its archives are written under `….partial`
//!   and renamed when whole and synced, its records beside them;
//! - the manifest names a system only once everything of it is durable,
//!   and says `sealed` only when no configured system is missing;
//! - a generation is wiped by renaming it to `….wiping` first, so a
//!   half-removed one is never taken for a whole one.
//!
//! Where the generation goes, and what may be wiped, is decided elsewhere
//! (`crate::media::plan`, from what [`super::classify`] read); this module
//! only carries it out. On an encrypted media the writer holds the media's
//! public key and encrypts every record with a system's data in it.

use anyhow::Context;
use crossback_archive::crypt;
use crossback_host::beneath::Dir;

use super::{GenName, Generation, KeyFiles, Marker, State, SystemRecord};
use crate::error::{refuse, Refusal};

/// A slot, open for writing: its root and its `crossback/` directory.
pub struct SlotWriter<'a> {
    root: &'a Dir,
    dir: Dir,
    encrypt_to: Option<&'a age::x25519::Recipient>,
}

impl<'a> SlotWriter<'a> {
    /// `root` is the slot's filesystem root (mounted writable), holding
    /// `crossback/`; `encrypt_to` the media's key when the media is
    /// encrypted (decided from the configuration, see `crate::keys::write_to`).
    pub fn new(root: &'a Dir, encrypt_to: Option<&'a age::x25519::Recipient>) -> anyhow::Result<SlotWriter<'a>> {
        let dir = root.dir(super::DIR).map_err(|e| refuse(Refusal::SlotHostile, format!("{}: {e}", root.shown().display())))?;
        Ok(SlotWriter { root, dir, encrypt_to })
    }

    /// Removes what an adopted duplicity generation consists of (its listed
    /// files, beneath the slot's root, nothing followed), before the
    /// generation itself goes: the manifest that lists them goes last, so
    /// an interrupted wipe is finished next time.
    pub fn wipe_legacy(&self, files: &[String]) -> anyhow::Result<()> {
        for f in files {
            let (parent, name) = match f.rsplit_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, f.as_str()),
            };
            let dir = match parent {
                Some(p) => match self.root.dir(p) {
                    Ok(d) => d,
                    Err(crossback_host::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                },
                None => self.root.dir(".")?,
            };
            dir.remove_entry(name)?;
            dir.sync()?;
        }
        self.root.sync()?;
        Ok(())
    }

    /// Wipes a generation: renamed to its `….wiping` name first (made
    /// durable), then removed.
    pub fn wipe(&self, name: &str) -> anyhow::Result<()> {
        let g = GenName::parse(name).with_context(|| format!("{name} is not a generation directory"))?;
        let doomed = GenName::wiping_dir(g.seq);
        if !g.wiping {
            self.dir.rename(name, &doomed)?;
            self.dir.sync()?;
        }
        self.dir.remove_entry(&doomed)?;
        self.dir.sync()?;
        Ok(())
    }

    /// Starts generation `g` (open, nothing recorded): its directory and
    /// manifest are durable when this returns.
    pub fn start(&self, g: Generation) -> anyhow::Result<GenWriter<'a>> {
        debug_assert!(g.state == State::Open && g.recorded.is_empty());
        let dir = self.dir.create_private_dir(&GenName::dir(g.seq))?;
        self.dir.sync()?;
        let w = GenWriter { dir, generation: g, encrypt_to: self.encrypt_to };
        w.write_manifest()?;
        Ok(w)
    }

    /// Continues the open generation `g`, as classified.
    pub fn resume(&self, g: Generation) -> anyhow::Result<GenWriter<'a>> {
        let dir = self.dir.dir(&GenName::dir(g.seq))?;
        Ok(GenWriter { dir, generation: g, encrypt_to: self.encrypt_to })
    }

    /// Writes a generation adopted from elsewhere (duplicity's, number 0),
    /// whole: its directory and its manifest.
    pub fn adopt(&self, g: &Generation) -> anyhow::Result<()> {
        let dir = self.dir.create_private_dir(&GenName::dir(g.seq))?;
        self.dir.sync()?;
        dir.write_durable(super::MANIFEST, toml::to_string(g)?.as_bytes())?;
        Ok(())
    }

    /// The configuration's copy, for the other systems and a rescue system.
    pub fn put_config(&self, text: &str) -> anyhow::Result<()> {
        write_record(&self.dir, super::CONFIG, super::CONFIG_AGE, text, self.encrypt_to)
    }

    /// Carries this crossback binary (see the free function `carry_tool` below).
    pub fn carry_tool(&self) -> anyhow::Result<()> {
        carry_tool(&self.dir)
    }

    /// Makes `root` a slot: `crossback/` (private), the media key's files
    /// when the media is encrypted — first, so that a marker saying
    /// "encrypted" always has its key beside it —, the README, the marker,
    /// and the carried binary.
    pub fn prepare(root: &'a Dir, marker: &Marker, keys: Option<&KeyFiles>) -> anyhow::Result<SlotWriter<'a>> {
        let dir = root.create_private_dir(super::DIR)?;
        let w = SlotWriter { root, dir, encrypt_to: None };
        match keys {
            Some(k) => w.put_keys(k, marker)?,
            None => w.put_marker(marker)?,
        }
        w.carry_tool()?;
        Ok(w)
    }

    /// New key files (a missing one is removed), then the marker that
    /// says what they are.
    pub fn put_keys(&self, keys: &KeyFiles, marker: &Marker) -> anyhow::Result<()> {
        for (name, data) in [(super::KEY_BY_PASSPHRASE, &keys.passphrase), (super::KEY_BY_RECIPIENTS, &keys.recipients)] {
            match data {
                Some(d) => self.dir.write_durable(name, d)?,
                None => self.dir.remove_entry(name)?,
            }
        }
        self.put_marker(marker)
    }

    /// The README, then the marker.
    fn put_marker(&self, marker: &Marker) -> anyhow::Result<()> {
        let readme = super::readme::text(&marker.media_id, marker.slot, marker.encryption.as_ref());
        self.dir.write_durable(super::README, readme.as_bytes())?;
        Ok(self.dir.write_durable(super::MARKER, toml::to_string(marker)?.as_bytes())?)
    }
}

/// A generation being written.
pub struct GenWriter<'a> {
    dir: Dir,
    generation: Generation,
    encrypt_to: Option<&'a age::x25519::Recipient>,
}

impl<'a> GenWriter<'a> {
    pub fn generation(&self) -> &Generation {
        &self.generation
    }

    /// A new directory for system `name` (what an interrupted run left of
    /// it is removed first). The manifest does not name it until
    /// [`GenWriter::record`].
    pub fn system(&self, name: &str) -> anyhow::Result<SystemWriter<'a>> {
        self.dir.remove_entry(name)?;
        let dir = self.dir.create_private_dir(name)?;
        Ok(SystemWriter { dir, encrypt_to: self.encrypt_to })
    }

    /// Records a system whose files are all durable: the manifest names it
    /// (replacing an older record of it) and is sealed when no system is
    /// missing any more (at `now`).
    pub fn record(&mut self, record: SystemRecord, now: String) -> anyhow::Result<()> {
        let g = &mut self.generation;
        g.recorded.retain(|r| r.name != record.name);
        g.recorded.push(record);
        if g.state == State::Open && g.missing().is_empty() {
            g.state = State::Sealed;
            g.sealed = Some(now);
        }
        self.write_manifest()
    }

    /// Removes what a failed system left (the manifest never named it).
    pub fn discard(&self, name: &str) -> anyhow::Result<()> {
        Ok(self.dir.remove_entry(name)?)
    }

    fn write_manifest(&self) -> anyhow::Result<()> {
        Ok(self.dir.write_durable(super::MANIFEST, toml::to_string(&self.generation)?.as_bytes())?)
    }
}

/// A system's directory in a generation being written.
pub struct SystemWriter<'a> {
    dir: Dir,
    encrypt_to: Option<&'a age::x25519::Recipient>,
}

/// An archive being written: `file` once committed.
pub struct Pending {
    pub file: String,
    partial: String,
}

impl SystemWriter<'_> {
    /// The archive of the filesystem mounted at `mountpoint` (its file
    /// name follows the media's encryption), opened under its partial name.
    pub fn archive(&self, mountpoint: &str) -> anyhow::Result<(Pending, std::fs::File)> {
        let file = if self.encrypt_to.is_some() { super::encrypted_archive_file(mountpoint) } else { super::archive_file(mountpoint) };
        let partial = format!("{file}.partial");
        let out = self.dir.create_file(&partial)?;
        Ok((Pending { file, partial }, out))
    }

    /// The archive is whole and synced: it takes its name. Its size.
    pub fn commit(&self, p: Pending) -> anyhow::Result<u64> {
        self.dir.rename(&p.partial, &p.file)?;
        self.dir.sync()?;
        Ok(self.dir.open_file(&p.file)?.metadata()?.len())
    }

    /// An archive that failed goes (errors ignored: the directory goes
    /// with the failed system anyway).
    pub fn abandon(&self, p: Pending) {
        let _ = self.dir.remove_entry(&p.partial);
    }

    /// Whom the archives are encrypted to: the media's key, or nobody.
    pub fn recipients(&self) -> Vec<age::x25519::Recipient> {
        self.encrypt_to.into_iter().cloned().collect()
    }

    /// Where the archiver may spool, through the open directory (it cannot
    /// be led elsewhere).
    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.dir.fd_path()
    }

    /// A LUKS container's header, encrypted on an encrypted media.
    pub fn put_header(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let data = match self.encrypt_to {
            Some(to) => crypt::encrypt_bytes(bytes, std::slice::from_ref(to))?,
            None => bytes.to_vec(),
        };
        Ok(self.dir.write_durable(name, &data)?)
    }

    /// The system's `mounts.toml` (its filesystems, layers and disks).
    pub fn put_mounts(&self, text: &str) -> anyhow::Result<()> {
        write_record(&self.dir, super::MOUNTS, super::MOUNTS_AGE, text, self.encrypt_to)
    }
}

/// Writes a small record durably into `dir`: as `plain`, or encrypted to
/// `to` as `sealed` (a plaintext one left by the media's plain days is
/// removed).
fn write_record(dir: &Dir, plain: &str, sealed: &str, text: &str, to: Option<&age::x25519::Recipient>) -> anyhow::Result<()> {
    match to {
        Some(to) => {
            dir.write_durable(sealed, &crypt::encrypt_bytes(text.as_bytes(), std::slice::from_ref(to))?)?;
            dir.remove_entry(plain)?;
        }
        None => dir.write_durable(plain, text.as_bytes())?,
    }
    Ok(())
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
        let stale = dir.kind(super::TOOL)?.is_some();
        dir.remove_entry(super::TOOL)?;
        dir.remove_entry(super::TOOL_VERSION)?;
        dir.sync()?;
        println!(
            "note: crossback is not carried onto the slot: this binary is {} MiB, over the {} MiB a slot carries (a debug build? install a release build){}",
            size >> 20,
            TOOL_CAP >> 20,
            if stale { "; the copy that was there is removed" } else { "" }
        );
        return Ok(());
    }
    if same_content(dir, &exe, size)? && dir.read_capped(super::TOOL_VERSION, 4096).is_ok_and(|v| v == version.as_bytes()) {
        return Ok(());
    }
    let tmp = format!("{}.new", super::TOOL);
    let mut out = dir.create_file_mode(&tmp, 0o700)?;
    std::io::copy(&mut std::io::BufReader::new(&exe), &mut out).and_then(|_| out.sync_all()).context("copying crossback onto the slot")?;
    drop(out);
    dir.rename(&tmp, super::TOOL)?;
    dir.write_durable(super::TOOL_VERSION, version.as_bytes())?;
    Ok(())
}

/// True when the slot's carried binary holds exactly `exe`'s bytes.
fn same_content(dir: &Dir, exe: &std::fs::File, size: u64) -> anyhow::Result<bool> {
    use std::io::{Read, Seek};
    let Ok(mut carried) = dir.open_file(super::TOOL) else { return Ok(false) };
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::layout::{archive_file, classify, ArchiveRecord, GenEntry, SlotId, SlotView};
    use std::io::Write;

    /// Where a run stops (a power cut, a kill): after each step that
    /// writes, or not at all.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Stop {
        AfterWipe,
        AfterStart,
        MidArchive,
        AfterCommit,
        Never,
    }

    const SYSTEMS: [&str; 2] = ["alpha", "beta"];

    fn prepared() -> [tempfile::TempDir; 2] {
        SlotId::BOTH.map(|id| {
            let t = tempfile::tempdir().unwrap();
            let root = Dir::open(t.path()).unwrap();
            SlotWriter::prepare(&root, &Marker::new("m", id), None).unwrap();
            t
        })
    }

    fn view(t: &tempfile::TempDir) -> SlotView {
        classify(&Dir::open(t.path()).unwrap()).unwrap().unwrap()
    }

    /// One backup of `system` as `crossback backup` makes it: the plan
    /// from what the slots hold, then the writer, stopped at `stop`.
    fn run(media: &[tempfile::TempDir; 2], system: &str, stop: Stop) {
        let views = [view(&media[0]), view(&media[1])];
        let plan = crate::media::plan([&views[0].generations, &views[1].generations], false, false).unwrap();
        let i = plan.target.index();
        let root = Dir::open(media[i].path()).unwrap();
        let w = SlotWriter::new(&root, None).unwrap();
        for x in &plan.wipe {
            w.wipe(x).unwrap();
        }
        if stop == Stop::AfterWipe {
            return;
        }
        let mut gen = match plan.resume {
            Some(seq) => w.resume(views[i].generations.iter().filter_map(GenEntry::valid).find(|g| g.seq == seq).unwrap().clone()).unwrap(),
            None => w
                .start(Generation {
                    format: super::super::FORMAT,
                    media_id: "m".into(),
                    seq: plan.start.unwrap(),
                    state: State::Open,
                    started: "2026-12-06T00:00:00Z".into(),
                    sealed: None,
                    systems: SYSTEMS.map(String::from).to_vec(),
                    recorded: vec![],
                    legacy_files: vec![],
                })
                .unwrap(),
        };
        if stop == Stop::AfterStart {
            return;
        }
        let sw = gen.system(system).unwrap();
        let (p, mut out) = sw.archive("/").unwrap();
        let content = format!("{system} in generation {}", gen.generation().seq);
        out.write_all(content.as_bytes()).unwrap();
        drop(out);
        if stop == Stop::MidArchive {
            return;
        }
        let bytes = sw.commit(p).unwrap();
        if stop == Stop::AfterCommit {
            return;
        }
        let archive =
            ArchiveRecord { mountpoint: "/".into(), file: archive_file("/"), bytes, hash: "0".repeat(64), entries: 1, data_bytes: bytes, unreadable: 0 };
        let record =
            SystemRecord { name: system.into(), pretty_name: String::new(), finished: "now".into(), archives: vec![archive], legacy: None, essentials: vec![] };
        gen.record(record, "2026-12-06T01:00:00Z".into()).unwrap();
    }

    /// The newest sealed generation on the media, with the content of each
    /// system's archive as read back from the slot.
    fn newest_complete(media: &[tempfile::TempDir; 2]) -> Option<(u64, Vec<String>)> {
        let (t, g) = media
            .iter()
            .flat_map(|t| view(t).generations.into_iter().filter_map(|g| g.valid().cloned()).map(move |g| (t, g)))
            .filter(|(_, g)| g.state == State::Sealed)
            .max_by_key(|(_, g)| g.seq)?;
        let files = g
            .recorded
            .iter()
            .map(|r| std::fs::read_to_string(t.path().join(super::super::DIR).join(GenName::dir(g.seq)).join(&r.name).join(&r.archives[0].file)).unwrap())
            .collect();
        Some((g.seq, files))
    }

    /// R1, R3–R6 through the writer and the plan together, without root:
    /// whatever step a run stops after, the newest complete set that
    /// existed before it is still there, whole, with every archive it
    /// names; the next run finishes or replaces what was left, and no
    /// generation number is used twice.
    #[test]
    fn a_complete_set_survives_a_run_stopped_anywhere() {
        let media = prepared();
        assert_eq!(newest_complete(&media), None);
        run(&media, "alpha", Stop::Never);
        run(&media, "beta", Stop::Never);
        let first = newest_complete(&media).expect("generation 1 sealed");
        assert_eq!(first, (1, vec!["alpha in generation 1".into(), "beta in generation 1".into()]));
        let mut complete = first;
        let mut seen = std::collections::BTreeSet::new();
        for stop in [Stop::AfterWipe, Stop::AfterStart, Stop::MidArchive, Stop::AfterCommit, Stop::Never] {
            for system in SYSTEMS {
                for attempt in [stop, Stop::Never] {
                    run(&media, system, attempt);
                    let now = newest_complete(&media).expect("a complete set");
                    assert!(now.0 >= complete.0, "the newest complete set went back: {now:?} after {complete:?}");
                    assert_eq!(now.1.len(), 2, "a sealed generation without both systems: {now:?}");
                    assert!(now.1.iter().all(|c| c.ends_with(&format!("generation {}", now.0))), "{now:?}");
                    complete = now;
                    for t in &media {
                        for g in view(t).generations {
                            if let Some(g) = g.valid() {
                                seen.insert(g.seq);
                            }
                        }
                    }
                }
            }
        }
        // Each round of two systems seals one generation; the stopped runs
        // did not make numbers of their own that came back.
        assert!(complete.0 >= 6, "{complete:?}");
        let max = seen.iter().max().copied().unwrap();
        assert!(max <= complete.0 + 1, "generation numbers ran ahead: {seen:?}");
    }

    /// A system's directory is made anew: what an interrupted run left in
    /// it (a partial archive, a stray file) is gone, and the manifest does
    /// not name the system until it is recorded.
    #[test]
    fn a_system_is_named_only_once_its_files_are_durable() {
        let media = prepared();
        run(&media, "alpha", Stop::AfterCommit);
        let g = view(&media[0]).newest().cloned().unwrap();
        assert_eq!((g.seq, g.state, g.recorded.len()), (1, State::Open, 0));
        let alpha = media[0].path().join("crossback/gen-000001/alpha");
        std::fs::write(alpha.join("stray"), "x").unwrap();
        run(&media, "alpha", Stop::MidArchive);
        let names: Vec<String> = std::fs::read_dir(&alpha).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, [format!("{}.partial", archive_file("/"))]);
        run(&media, "alpha", Stop::Never);
        let g = view(&media[0]).newest().cloned().unwrap();
        assert_eq!((g.state, g.missing()), (State::Open, vec!["beta"]));
    }

    /// A wipe that stopped after its rename is finished by the next run:
    /// the half-removed generation was never taken for a whole one.
    #[test]
    fn a_wipe_is_a_rename_first() {
        let media = prepared();
        for s in SYSTEMS.iter().chain(SYSTEMS.iter()) {
            run(&media, s, Stop::Never);
        }
        // Generations 1 (slot A) and 2 (slot B) sealed; the next goes to A.
        let slot_a = media[0].path().join("crossback");
        std::fs::rename(slot_a.join(GenName::dir(1)), slot_a.join(GenName::wiping_dir(1))).unwrap();
        assert!(matches!(view(&media[0]).generations[..], [GenEntry::Leftover { .. }]));
        run(&media, "alpha", Stop::AfterWipe);
        assert!(!slot_a.join(GenName::wiping_dir(1)).exists());
        assert_eq!(newest_complete(&media).map(|c| c.0), Some(2));
    }

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
}
