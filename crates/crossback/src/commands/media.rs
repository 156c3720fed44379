//! `crossback media prepare SLOT_A SLOT_B`: mark two filesystems as the
//! slots of one backup media, and record them in the configuration.

use crossback_host::tool::Tool;
use std::path::Path;

use anyhow::{bail, Context};
use crossback_host::blockdev::Device;
use crossback_host::{ns, offline};

use crate::cli::PrepareArgs;
use crate::config::{self, Config, Media, Sealing};
use crate::error::Refusal;
use crate::keys;
use crate::layout::{self, Marker, SlotId, SlotWriter};
use crate::machine::{self, Machine};
use crate::media;
use crate::{refuse, Outcome};
use crossback_host::beneath::Dir;

fn device_for(m: &Machine, arg: &str) -> anyhow::Result<Device> {
    if arg.starts_with('/') {
        let p = std::fs::canonicalize(arg).with_context(|| format!("{arg}: no such device"))?;
        let found = m.devices.iter().find(|d| d.path == p).cloned();
        return found.with_context(|| format!("{arg} is not a block device of this machine"));
    }
    m.by_uuid(arg)?.cloned().with_context(|| format!("no filesystem with UUID {arg} is attached (`blkid` lists them)"))
}

pub fn prepare(path: &Path, a: PrepareArgs) -> anyhow::Result<Outcome> {
    machine::require_root("media prepare")?;
    let cfg = if path.exists() { Config::load(path)? } else { Config::default() };
    let m = Machine::scan(&[])?;
    let mut devs = [device_for(&m, &a.slot_a)?, device_for(&m, &a.slot_b)?];
    if devs[0].path == devs[1].path {
        refuse!(Refusal::Usage, "slot A and slot B are the same device ({}): give two filesystems", devs[0].path.display());
    }
    let systems = machine::systems(&m, &cfg)?;
    let running = m.running_root().map(|(d, _)| d.path.clone());
    for (letter, d) in SlotId::BOTH.iter().zip(&devs) {
        if running.as_ref() == Some(&d.path) {
            refuse!(Refusal::SystemRunning, "{} (for slot {letter}) holds the running system: choose the backup disk's filesystems", d.path.display());
        }
        for s in &systems {
            if s.filesystems.iter().chain(s.swap.iter()).any(|f| f.device.as_ref() == Some(&d.path)) {
                refuse!(Refusal::TargetInUse, "{} (for slot {letter}) is part of system {}: choose filesystems on the backup disk", d.path.display(), s.name);
            }
        }
        if !m.mounts_of(d).is_empty() {
            refuse!(
                Refusal::TargetInUse,
                "{} (for slot {letter}) is mounted at {}: unmount it first (and turn off automounting of the backup disk)",
                d.path.display(),
                m.mounts_of(d).iter().map(|x| x.mountpoint.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    if a.mkfs {
        let list: Vec<String> = devs
            .iter()
            .map(|d| {
                format!(
                    "{} ({}{})",
                    d.path.display(),
                    if d.fstype.is_empty() { "no filesystem" } else { &d.fstype },
                    if d.label.is_empty() { String::new() } else { format!(" \"{}\"", d.label) }
                )
            })
            .collect();
        println!("--mkfs formats as ext4, destroying everything on: {}", list.join(", "));
        if !a.yes && !crate::output::confirm("Format them?")? {
            bail!("not formatted: pass --yes with --mkfs to format without asking");
        }
        for (letter, d) in SlotId::BOTH.iter().zip(devs.iter()) {
            let label = a.label.as_ref().map(|p| format!("{p}-{letter}")).unwrap_or_else(|| format!("crossback-{letter}"));
            machine::run_tool(Tool::new("mkfs.ext4").args(["-q", "-F", "-L", &label]).arg(&d.path))?;
        }
        let m2 = Machine::scan(&[])?;
        devs = [device_for(&m2, &devs[0].path.display().to_string())?, device_for(&m2, &devs[1].path.display().to_string())?];
    }
    for (letter, d) in SlotId::BOTH.iter().zip(&devs) {
        if d.fstype.is_empty() || !d.is_linux_fs() {
            bail!(
                "{} (for slot {letter}) holds {}: a slot must be a Linux filesystem (ext4, xfs, btrfs); pass --mkfs to format it as ext4",
                d.path.display(),
                if d.fstype.is_empty() { "no filesystem".to_string() } else { d.fstype.clone() }
            );
        }
    }

    let media_id = match &cfg.media {
        Some(mm) => mm.id.get_ref().clone(),
        None => media::new_media_id()?,
    };
    let _lock = crate::slots::lock_media(&media_id, crossback_host::lock::Mode::Exclusive)?;
    let encryption = if a.encrypt { Some(new_encryption(&a.recipient)?) } else { None };
    ns::enter_private()?;
    let base = crossback_host::inspect::scratch_dir("crossback-prepare")?;
    for (&letter, d) in SlotId::BOTH.iter().zip(&devs) {
        let at = base.join(letter.letter());
        std::fs::create_dir_all(&at)?;
        let mut mounted = offline::Mounted::default();
        let fm = crate::slots::slot_fs(letter, d);
        offline::mount_one(&fm, &at, true, false, &mut mounted)?;
        let root = Dir::open(&at)?;
        match layout::classify(&root)? {
            Ok(view) if view.marker.media_id != media_id => refuse!(
                Refusal::SlotOfAnotherMedia,
                "{} is already slot {} of another backup media ({}): crossback will not take over another media's slot; choose another filesystem, or wipe it yourself if you are sure",
                d.path.display(),
                view.marker.slot,
                crate::output::text(&view.marker.media_id)
            ),
            Ok(view) if view.marker.slot != letter => {
                refuse!(Refusal::SlotOfAnotherMedia, "{} is already slot {} of this media; give the slots in the same order as before", d.path.display(), view.marker.slot)
            }
            Ok(view) if encryption.is_some() && view.marker.encryption.is_some() => refuse!(
                Refusal::Usage,
                "{} is slot {letter} of this media already, encrypted: `crossback media add-key` / `remove-key` change who can unlock it",
                d.path.display()
            ),
            Ok(view) if encryption.is_some() && view.marker.encryption.is_none() => refuse!(
                Refusal::Usage,
                "{} is slot {letter} of this media already, not encrypted: `crossback media encrypt` encrypts what is written from now on",
                d.path.display()
            ),
            Ok(_) => println!("slot {letter}: {} (UUID={}) was prepared already", d.path.display(), d.uuid),
            Err(mut foreign) => {
                if let Ok(dir) = root.dir(layout::DIR) {
                    foreign.extend(dir.entries()?.into_iter().map(|(n, _)| format!("{}/{}", layout::DIR, crate::output::text(&n.to_string_lossy()))));
                }
                if !foreign.is_empty() {
                    foreign.sort();
                    refuse!(
                        Refusal::SlotHoldsForeignFiles,
                        "{} (for slot {letter}) is not empty: it holds {}. A slot must hold nothing but lost+found; move these away or choose an empty filesystem (or --mkfs)",
                        d.path.display(),
                        foreign.join(", ")
                    );
                }
                let mut marker = Marker::new(&media_id, letter);
                marker.encryption = encryption.as_ref().map(|(enc, _)| enc.clone());
                SlotWriter::prepare(&root, &marker, encryption.as_ref().map(|(_, files)| files))?;
                println!("slot {letter}: {} (UUID={}) prepared{}", d.path.display(), d.uuid, if encryption.is_some() { ", encrypted" } else { "" });
            }
        }
        drop(root);
        let busy = mounted.unmount();
        if !busy.is_empty() {
            bail!("could not unmount slot {letter}: {:?}", busy);
        }
    }
    if let Some(prefix) = &a.label {
        for (letter, d) in SlotId::BOTH.iter().zip(&devs) {
            let label = format!("{prefix}-{letter}");
            let cmd = crossback_host::fstype::of(&d.fstype)
                .and_then(|t| t.relabel(&d.path, &label))
                .with_context(|| crate::error::refuse(Refusal::Unsupported, format!("cannot label a {} filesystem", d.fstype)))?;
            machine::run_tool(&cmd)?;
        }
    }
    let sealing = match &encryption {
        Some((enc, _)) => Sealing::Encrypted(enc.media_key.clone()),
        None => Sealing::Plain,
    };
    config::set_media(path, &Media::with_sealing(&media_id, &devs[0].uuid, &devs[1].uuid, &sealing))?;
    println!("media {media_id} recorded in {}", path.display());
    Ok(Outcome::Ok)
}

/// A new media key, wrapped by a new passphrase (asked twice, or read
/// from the passphrase file) unless only recipients are given.
fn new_encryption(recipients: &[String]) -> anyhow::Result<(layout::Encryption, layout::KeyFiles)> {
    let recipients = keys::parse_recipients(recipients)?;
    let pass = if recipients.is_empty() || keys::passphrase_given() { Some(keys::passphrase("the encrypted media", true)?) } else { None };
    let (enc, files, _) = keys::new_media(pass.as_ref(), &recipients)?;
    Ok((enc, files))
}

/// Both slots of the configured media, mounted writable, the media locked.
struct Writable {
    slots: Vec<crate::slots::Slot>,
    mounted: offline::Mounted,
    _lock: crossback_host::lock::Lock,
}

fn both_writable(path: &Path, what: &str) -> anyhow::Result<Writable> {
    both(path, what, true)
}

/// Both slots, mounted writable or (`writable` false) read-only.
fn both(path: &Path, what: &str, writable: bool) -> anyhow::Result<Writable> {
    machine::require_root(what)?;
    let cfg = Config::load(path)?;
    let Some(media_cfg) = &cfg.media else { refuse!(Refusal::Config, "no backup media in {}: run `crossback media prepare`", path.display()) };
    let lock = crate::slots::lock_media(media_cfg.id.get_ref(), crossback_host::lock::Mode::Exclusive)?;
    let m = Machine::scan(&[])?;
    let devs = crate::slots::find(&m, media_cfg, &[], true)?;
    crossback_host::ns::start_guard()?;
    ns::enter_private()?;
    let scratch = crossback_host::inspect::scratch_dir("crossback-keys")?;
    let access = if writable { crate::slots::Access::Backup } else { crate::slots::Access::Read };
    let (list, mut mounted) = crate::slots::mount(&devs, media_cfg.id.get_ref(), &scratch, access)?;
    if !writable {
        return Ok(Writable { slots: list, mounted, _lock: lock });
    }
    // A key command does not write over markers that disagree with the key
    // this system's configuration names. (A configuration that says plain
    // or nothing does not stop `media encrypt`, which makes the media what
    // it then records, nor a key change, which unlocks the key first.)
    let sealing = media_cfg.sealing();
    if matches!(sealing, Sealing::Encrypted(_)) {
        keys::write_to(&sealing, &list.iter().map(|s| &s.view).collect::<Vec<_>>())?;
    }
    let mut slots = Vec::new();
    for (s, d) in list.into_iter().zip(devs.iter()) {
        slots.push(crate::slots::make_writable(s, d, media_cfg.id.get_ref(), &mut mounted)?);
    }
    Ok(Writable { slots, mounted, _lock: lock })
}

/// Writes the key files, then the marker, on both slots; unmounts.
fn write_keys(w: Writable, enc: Option<&layout::Encryption>, files: &layout::KeyFiles) -> anyhow::Result<()> {
    for s in &w.slots {
        let mut marker = s.view.marker.clone();
        marker.encryption = enc.cloned();
        SlotWriter::new(&s.root, None)?.put_keys(files, &marker)?;
    }
    let Writable { slots, mut mounted, .. } = w;
    drop(slots);
    let busy = mounted.unmount();
    if !busy.is_empty() {
        bail!("could not unmount the slots: {busy:?}");
    }
    Ok(())
}

/// `crossback media encrypt`: from now on what is written is encrypted.
pub fn encrypt(path: &Path, a: crate::cli::EncryptArgs) -> anyhow::Result<Outcome> {
    let w = both_writable(path, "media encrypt")?;
    if w.slots.iter().any(|s| s.view.marker.encryption.is_some()) {
        refuse!(Refusal::Usage, "the media is encrypted already: `crossback media add-key` / `remove-key` change who can unlock it");
    }
    let (enc, files) = new_encryption(&a.recipient)?;
    write_keys(w, Some(&enc), &files)?;
    let cfg = Config::load(path)?;
    if let Some(m) = cfg.media {
        config::set_media(path, &Media::with_sealing(m.id.get_ref(), m.slot_a.get_ref(), m.slot_b.get_ref(), &Sealing::Encrypted(enc.media_key.clone())))?;
    }
    println!("the media is encrypted from now on (media key {}); generations written before stay as they are until rotation replaces them", enc.media_key);
    Ok(Outcome::Ok)
}

/// `crossback media trust`: this system's configuration learns what the
/// media is — its key through the passphrase (or the key itself, or its
/// public half typed), or `--plain` — never from the markers alone.
pub fn trust(path: &Path, a: crate::cli::TrustArgs) -> anyhow::Result<Outcome> {
    let w = both(path, "media trust", false)?;
    let views: Vec<&layout::SlotView> = w.slots.iter().map(|s| &s.view).collect();
    let sealing = if a.plain {
        if let Some(v) = views.iter().find(|v| v.marker.encryption.is_some()) {
            refuse!(
                Refusal::SlotHostile,
                "slot {}'s marker says the media is encrypted: `crossback media trust` without --plain learns its key with the passphrase; nothing was recorded",
                v.marker.slot
            );
        }
        Sealing::Plain
    } else {
        Sealing::Encrypted(keys::learn(&views, a.media_key.as_deref())?)
    };
    let Writable { slots, mut mounted, .. } = w;
    drop(slots);
    mounted.unmount();
    let cfg = Config::load(path)?;
    let m = cfg.media.context("the media left the configuration while crossback read it")?;
    let before = m.sealing();
    if let (Sealing::Encrypted(k), Sealing::Plain) = (&before, &sealing) {
        refuse!(
            Refusal::SlotHostile,
            "this system's configuration knows the media as encrypted (media key {k}), and markers that say otherwise do not make it plain: the markers were changed, or this is another disk; nothing was recorded"
        );
    }
    if before != Sealing::Unknown && before != sealing {
        println!("note: the configuration said {}; it now says {}", describe(&before), describe(&sealing));
    }
    config::set_media(path, &Media::with_sealing(m.id.get_ref(), m.slot_a.get_ref(), m.slot_b.get_ref(), &sealing))?;
    println!("recorded in {}: the media is {}", path.display(), describe(&sealing));
    Ok(Outcome::Ok)
}

fn describe(s: &Sealing) -> String {
    match s {
        Sealing::Encrypted(k) => format!("encrypted (media key {k})"),
        Sealing::Plain => "not encrypted".to_string(),
        Sealing::Unknown => "not known".to_string(),
    }
}

/// `crossback media add-key` / `remove-key`: the media key wrapped again,
/// for other recipients or another passphrase; the archives stay as they are.
pub fn change_keys(path: &Path, a: crate::cli::KeyArgs, add: bool) -> anyhow::Result<Outcome> {
    if a.recipient.is_empty() && !a.passphrase {
        refuse!(Refusal::Usage, "say which key: --recipient AGE1… and/or --passphrase");
    }
    let w = both_writable(path, if add { "media add-key" } else { "media remove-key" })?;
    let first = &w.slots[0].view;
    let Some(enc) = first.marker.encryption.clone() else {
        refuse!(Refusal::Usage, "the media is not encrypted: `crossback media encrypt` encrypts it");
    };
    let key = keys::media_key(&enc, &first.keys, "changing who can unlock the media")?;
    let mut recipients = enc.recipients.clone();
    let given: Vec<String> = keys::parse_recipients(&a.recipient)?.iter().map(|r| r.to_string()).collect();
    for r in &given {
        match (add, recipients.contains(r)) {
            (true, false) => recipients.push(r.clone()),
            (false, true) => recipients.retain(|x| x != r),
            (true, true) => println!("{r} unlocks the media already"),
            (false, false) => refuse!(Refusal::Usage, "{r} is not one of the media's recipients ({}); nothing was changed", enc.recipients.join(", ")),
        }
    }
    let new_pass = if add && a.passphrase { Some(keys::passphrase_from(a.new_passphrase_file.clone(), "the media (new)", true)?) } else { None };
    let keep_pass = enc.passphrase && !a.passphrase;
    if !add && a.passphrase && !enc.passphrase {
        refuse!(Refusal::Usage, "the media has no passphrase to remove; nothing was changed");
    }
    let by_passphrase = match new_pass {
        Some(p) => Some(keys::wrap_by_passphrase(&key, &p)?),
        // Kept as it is, not made again: the passphrase is not asked for.
        None if keep_pass => first.keys.passphrase.clone(),
        None => None,
    };
    let files = layout::KeyFiles { passphrase: by_passphrase, recipients: keys::wrap_for(&key, &keys::parse_recipients(&recipients)?)? };
    keys::check_unlockable(&files)?;
    let enc = layout::Encryption { media_key: enc.media_key.clone(), passphrase: files.passphrase.is_some(), recipients };
    write_keys(w, Some(&enc), &files)?;
    println!(
        "the media unlocks with {}{}",
        if enc.passphrase { "its passphrase" } else { "no passphrase" },
        if enc.recipients.is_empty() { String::new() } else { format!(" and {}", enc.recipients.join(", ")) }
    );
    Ok(Outcome::Ok)
}

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
    let devs = [device_for(&m, &a.slot_a)?, device_for(&m, &a.slot_b)?];
    if devs[0].path == devs[1].path {
        bail!("slot A and slot B are the same device ({})", devs[0].path.display());
    }
    let systems = machine::systems(&m, &cfg)?;
    for d in &devs {
        if systems.iter().any(|s| s.filesystems.iter().any(|f| f.device.as_ref() == Some(&d.path))) {
            bail!("{} is part of a configured system: choose the backup disk's filesystems", d.path.display());
        }
        if !m.mounts_of(d).is_empty() {
            bail!("{} is mounted: unmount it first (and turn off automounting of the backup disk)", d.path.display());
        }
    }
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
    // Which slot holds the duplicity backups, which is empty.
    let names = |r: &Dir| -> anyhow::Result<Vec<String>> {
        Ok(r.entries()?.into_iter().map(|(n, _)| n.to_string_lossy().into_owned()).filter(|n| n != "lost+found").collect())
    };
    let contents = [names(&roots[0])?, names(&roots[1])?];
    let has_dup = |v: &[String]| v.iter().any(|n| n.starts_with("duplicity-"));
    let (dup, empty) = match (has_dup(&contents[0]), has_dup(&contents[1])) {
        (true, false) => (0, 1),
        (false, true) => (1, 0),
        (false, false) => bail!("neither filesystem holds a duplicity backup at its root: nothing to adopt (for an empty disk, use `crossback media prepare`)"),
        (true, true) => bail!("both filesystems hold duplicity backups: the old scripts kept one complete set on one partition only; move one set away first"),
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
    let (Some(root_name), Some(hidden_name)) = (a.root_backup.clone(), a.hidden_backup.clone()) else {
        bail!(
            "which system is which? The backup at the root was {}, the one in {} was {}. Say it with --root-backup SYSTEM --hidden-backup SYSTEM (configured: {})",
            hostname_of(droot, root_set),
            hidden[0],
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
    let mut legacy_files: Vec<String> = root_set.files.clone();
    legacy_files.push(hidden[0].clone());
    if contents[dup].iter().any(|n| n == "duplicity_empty") {
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
    let g = layout::Generation {
        format: layout::FORMAT,
        media_id: media_id.clone(),
        seq: 0,
        state: layout::State::Sealed,
        started: dup_time(&root_set.time.clone().min(hidden_set.time.clone())),
        sealed: Some(dup_time(&root_set.time.clone().max(hidden_set.time.clone()))),
        systems: vec![root_name.clone(), hidden_name.clone()],
        recorded: vec![rec(&root_name, root_set), rec(&hidden_name, hidden_set)],
        legacy_files: legacy_files.clone(),
    };
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
        hidden[0],
        legacy_files.len(),
        SlotId::BOTH[empty]
    );
    println!(
        "the duplicity files stay until a newer generation is complete in slot {} and rotation needs slot {} again",
        SlotId::BOTH[empty],
        SlotId::BOTH[dup]
    );
    Ok(Outcome::Ok)
}
