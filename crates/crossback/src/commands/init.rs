//! `crossback init`: find the systems and slots, write the configuration.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context};
use toml::Spanned;

use crate::cli::InitArgs;
use crate::config::{self, Config, SystemConfig};
use crossback_host::blockdev::Device;
use crossback_host::inspect::Inspection;

use crate::error::Refusal;
use crate::machine::{self, Found, Machine};
use crate::{refuse, Outcome};

fn spanned(s: &str) -> Spanned<String> {
    Spanned::new(0..0, s.to_string())
}

pub fn run(path: &Path, a: InitArgs) -> anyhow::Result<Outcome> {
    machine::require_root("init")?;
    if let Some(name) = &a.remote {
        return from_remote(path, name, a.yes);
    }
    // Encrypted and LVM systems: opened read-only to be found, closed at the end.
    let _opened = crate::stack::open::open_all(&Machine::scan(&a.devices)?)?;
    let m = Machine::scan(&a.devices)?;
    let (mut found, slots, warnings) = machine::discover(&m)?;
    for w in &warnings {
        eprintln!("warning: {}", crate::output::text(w));
    }
    if !a.only.is_empty() {
        for n in &a.only {
            if !found.iter().any(|f| &f.name == n) {
                bail!("--only {n}: no system of that name was found (found: {})", found.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "));
            }
        }
        found.retain(|f| a.only.contains(&f.name));
    }
    if !found.is_empty() {
        print_found(&m, &found);
    }
    print_slots(&slots);
    // A rescue system restoring a dead disk finds no system: the media's
    // configuration is all there is.
    if let (Some(m), true) = (&a.media, path.exists()) {
        refuse!(
            Refusal::Usage,
            "--media takes a media's configuration where there is none yet, and {} exists: move it away first to take media {}'s; nothing was written",
            path.display(),
            crate::output::text(m)
        );
    }
    if !path.exists() && !a.ignore_media && take_from_media(path, &slots, &found, a.media.as_deref())? {
        return Ok(Outcome::Ok);
    }
    if found.is_empty() {
        bail!("no Linux system found on this machine's filesystems (a system is a filesystem with etc/os-release and an init)");
    }
    let cfg = new_config(&m, &found, path)?;
    let text = config::render(&cfg);
    Config::parse(&text, path).context("the configuration crossback made does not check (a bug)")?;
    write_confirmed(path, &text, a.yes)
}

/// The systems found, each with its filesystems as the configuration will name them.
fn print_found(m: &Machine, found: &[Found]) {
    println!("Linux systems found:");
    for f in found {
        println!(
            "  {:<12} {}{}",
            f.name,
            crate::output::text(&f.pretty_name),
            if f.running { "  (running now: back it up from another system, or with `crossback backup --at-reboot`)" } else { "" }
        );
        let sv = |s: Option<String>| s.map(|s| format!(" subvol={s}")).unwrap_or_default();
        println!(
            "      {:<12} {:<6} UUID={}{}  {}",
            "/",
            f.device.fstype,
            f.device.uuid,
            sv((!f.subvol.is_empty()).then(|| f.subvol.clone())),
            f.device.path.display()
        );
        // Swap partitions too: their UUID and label are recorded and made again.
        for e in f.fstab.mounts.iter().filter(|e| e.mountpoint != "/").chain(&f.fstab.swap) {
            let dev = crossback_host::blockdev::find(&m.devices, &e.spec).ok().flatten();
            let at = dev.map(|d| d.path.display().to_string()).unwrap_or_else(|| "MISSING".into());
            println!(
                "      {:<12} {:<6} {}{}  {}",
                e.mountpoint,
                crate::output::text(&e.fstype),
                crate::output::text(&e.spec.to_fstab()),
                crate::output::text(&sv(e.subvol())),
                at
            );
        }
        for w in &f.fstab.warnings {
            println!("      fstab {}", crate::output::text(w));
        }
    }
}

fn print_slots(slots: &[(Device, Inspection)]) {
    if slots.is_empty() {
        println!("Backup slots: none prepared yet (see `crossback media prepare`)");
    } else {
        println!("Backup slots found:");
        for (d, i) in slots {
            let what = match crate::layout::slot_of(&i.extra) {
                Some(Ok(v)) => format!("slot {} of media {}", v.marker.slot, crate::output::text(&v.marker.media_id)),
                Some(Err(why)) => format!("a crossback slot that does not read: {why}"),
                None => String::new(),
            };
            println!("  {} UUID={} {what}", d.path.display(), d.uuid);
        }
    }
}

/// No configuration yet: the one a slot carries (the systems' names as the
/// backups know them), when one is there. True when it was taken.
fn take_from_media(path: &Path, slots: &[(Device, Inspection)], found: &[Found], media: Option<&str>) -> anyhow::Result<bool> {
    if let Some((text, from)) = media_copy(slots, path, media)? {
        config::write(path, &text)?;
        let cfg = Config::parse(&text, path)?;
        let named: Vec<&str> = cfg.systems.iter().map(|s| s.name.get_ref().as_str()).collect();
        // The running system (a rescue or live system restoring the
        // others) is not news: it is what runs this.
        let here: Vec<&str> = found
            .iter()
            .filter(|f| !f.running && !cfg.systems.iter().any(|s| s.root.get_ref().eq_ignore_ascii_case(&f.device.uuid)))
            .map(|f| f.name.as_str())
            .collect();
        println!("took the configuration from the backup media ({from}): systems {}; wrote {}", named.join(", "), path.display());
        if !here.is_empty() {
            println!("found here but not in it (not added): {}; `crossback init --ignore-media` makes a new configuration instead", here.join(", "));
        }
        return Ok(true);
    }
    if let Some(m) = media {
        refuse!(
            Refusal::NoBackup,
            "media {} carries no configuration to take (a backup writes it; both of the media's slots must be attached); nothing was written",
            crate::output::text(m)
        );
    }
    Ok(false)
}

/// The configuration of the systems found, keeping what the user wrote in
/// the one there: the media, and per system (by root) excludes and mounts.
fn new_config(m: &Machine, found: &[Found], path: &Path) -> anyhow::Result<Config> {
    // One that does not read is not replaced unseen: what the user wrote in
    // it (excludes, mounts, remotes) would be lost.
    let old = match path.exists() {
        true => Some(Config::load(path).with_context(|| format!("{} does not read; mend it, or move it away and run init again", path.display()))?),
        false => None,
    };
    let mut cfg = Config {
        media: old.as_ref().and_then(|o| o.media.as_ref()).map(|mm| config::Media {
            id: mm.id.clone(),
            slot_a: mm.slot_a.clone(),
            slot_b: mm.slot_b.clone(),
            media_key: mm.media_key.clone(),
            encrypted: mm.encrypted,
        }),
        systems: Vec::new(),
        remotes: old.as_ref().map(|o| o.remotes.clone()).unwrap_or_default(),
    };
    for f in found {
        let layers = system_layers(m, f)?;
        let prev = old
            .as_ref()
            .and_then(|o| o.systems.iter().find(|s| s.root.get_ref().eq_ignore_ascii_case(&f.device.uuid) && s.subvol.clone().unwrap_or_default() == f.subvol));
        cfg.systems.push(SystemConfig {
            name: spanned(&f.name),
            root: spanned(&f.device.uuid),
            subvol: (!f.subvol.is_empty()).then(|| f.subvol.clone()),
            exclude: prev.map(|p| p.exclude.clone()).unwrap_or_default(),
            mounts: prev.map(|p| p.mounts.clone()).unwrap_or_default(),
            luks: layers.0,
            lvm: layers.1,
        });
    }
    Ok(cfg)
}

/// Writes the configuration, asking first when it replaces another.
fn write_confirmed(path: &Path, text: &str, yes: bool) -> anyhow::Result<Outcome> {
    if path.exists() && !yes {
        if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
            println!("{} is up to date", path.display());
            return Ok(Outcome::Ok);
        }
        if !std::io::stdin().is_terminal() {
            crate::refuse!(crate::error::Refusal::NotConfirmed, "{} exists; pass --yes to replace it", path.display());
        }
        if !crate::output::confirm(&format!("{} exists. Replace it?", path.display()))? {
            println!("left {} as it was", path.display());
            return Ok(Outcome::Ok);
        }
    }
    config::write(path, text)?;
    println!("wrote {}", path.display());
    Ok(Outcome::Ok)
}

/// `init --remote NAME`: the configuration the newest generation on the
/// remote carries (sealed with it, decrypted with the key the user
/// unlocks), with this machine's own remotes kept as they are here.
fn from_remote(path: &Path, name: &str, yes: bool) -> anyhow::Result<Outcome> {
    if !path.exists() {
        crate::refuse!(
            crate::error::Refusal::Usage,
            "no configuration at {} names remote {name}: on a new machine, `crossback remote add {name} URL --machine M …` first, then `crossback init --remote {name}`",
            path.display()
        );
    }
    let here = Config::load(path)?;
    if (here.media.is_some() || !here.systems.is_empty()) && !yes {
        crate::refuse!(
            crate::error::Refusal::NotConfirmed,
            "{} already names a media or systems; pass --yes to replace them with the remote's configuration",
            path.display()
        );
    }
    let (store, key) = super::remote::open_read(&here, name, None, None, &format!("taking the configuration from remote {name}"))?;
    let (text, seq) = crate::remote::read_config(&store, &key)?;
    let damaged = |e: anyhow::Error| {
        crate::error::refuse(crate::error::Refusal::RemoteDamaged, format!("remote {name}: the configuration of generation {seq} does not check: {e:#}"))
    };
    let mut cfg = Config::parse(&text, path).map_err(damaged)?;
    // This machine's remotes are its own (credentials' paths, the seal key's name); the copy's others are added.
    let theirs = std::mem::take(&mut cfg.remotes);
    cfg.remotes = here.remotes.clone();
    cfg.remotes.extend(theirs.into_iter().filter(|r| !here.remotes.iter().any(|h| h.name == r.name)));
    let text = config::render(&cfg);
    Config::parse(&text, path).map_err(damaged)?;
    config::write(path, &text)?;
    let named: Vec<&str> = cfg.systems.iter().map(|s| s.name.get_ref().as_str()).collect();
    println!(
        "took the configuration from remote {name} (machine {}, generation {seq}): systems {}; wrote {}. `crossback restore … --remote {name}` restores from there",
        store.machine(),
        named.join(", "),
        path.display()
    );
    Ok(Outcome::Ok)
}

/// The configuration a backup left on the media (the one named, else the
/// only one attached that carries one), from the slot with the newest
/// generation, if both of the media's slots are attached and it checks.
/// Several media carrying one and none named is refused: which machine's
/// configuration to take is not guessed. An encrypted copy is opened with
/// the media key (asked for): a wrong key is an error, not a reason to make
/// a new configuration.
fn media_copy(slots: &[(Device, Inspection)], path: &Path, media: Option<&str>) -> anyhow::Result<Option<(String, String)>> {
    let views: Vec<(&Device, crate::layout::SlotView)> = slots
        .iter()
        .filter_map(|(d, i)| crate::layout::slot_of(&i.extra).and_then(Result::ok).map(|v| (d, v)))
        .filter(|(_, v)| media.is_none_or(|m| v.marker.media_id == m))
        .collect();
    if let (Some(m), true) = (media, views.is_empty()) {
        refuse!(Refusal::SlotMissing, "no slot of media {} is attached: attach its backup disk; nothing was written", crate::output::text(m));
    }
    let carrying: Vec<&(&Device, crate::layout::SlotView)> = views.iter().filter(|(_, v)| v.config.is_some() || v.config_age.is_some()).collect();
    let mut ids: Vec<&str> = carrying.iter().map(|(_, v)| v.marker.media_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() > 1 {
        refuse!(
            Refusal::Usage,
            "the slots of several backup media are attached, each with its machine's configuration ({}): give --media ID for the one to take (or --ignore-media); nothing was written",
            ids.iter().map(|m| crate::output::text(m)).collect::<Vec<_>>().join(", ")
        );
    }
    let Some((d, v)) = carrying.into_iter().max_by_key(|(_, v)| v.newest().map(|g| g.seq)) else {
        return Ok(None);
    };
    let text = match (&v.config_age, &v.config) {
        (Some(sealed), _) if v.marker.encryption.is_some() => {
            let Some(keys) = crate::keys::for_slot(v, "taking the configuration from the encrypted media")? else { return Ok(None) };
            crate::keys::open_text(&keys, &format!("slot {}'s {}", v.marker.slot, crate::layout::CONFIG_AGE), sealed, crate::layout::CONFIG_CAP)?
        }
        (_, Some(text)) => text.clone(),
        _ => return Ok(None),
    };
    let Ok(cfg) = Config::parse(&text, path) else { return Ok(None) };
    let Some(media) = cfg.media.as_ref() else { return Ok(None) };
    // Both slots of that media are here: it is this machine's media.
    let attached = |u: &str| views.iter().any(|(d, w)| d.uuid.eq_ignore_ascii_case(u) && w.marker.media_id == v.marker.media_id);
    if media.id.get_ref() != &v.marker.media_id || !attached(media.slot_a.get_ref()) || !attached(media.slot_b.get_ref()) {
        return Ok(None);
    }
    let generation = v.newest().map(|g| format!(", generation {}", g.seq)).unwrap_or_default();
    Ok(Some((text, format!("slot {} on {}{generation}", v.marker.slot, d.path.display()))))
}

/// The LUKS containers and volume groups below a found system's root and
/// the other filesystems its fstab names, each once, in order.
fn system_layers(m: &Machine, f: &Found) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut devices = vec![&f.device];
    devices.extend(f.fstab.mounts.iter().chain(f.fstab.swap.iter()).filter_map(|e| crossback_host::blockdev::find(&m.devices, &e.spec).ok().flatten()));
    let (mut luks, mut lvm) = (Vec::new(), Vec::new());
    for d in devices {
        let (l, v) = crate::stack::open::layers_of(d)?;
        for x in l {
            if !luks.contains(&x) {
                luks.push(x);
            }
        }
        for x in v {
            if !lvm.contains(&x) {
                lvm.push(x);
            }
        }
    }
    Ok((luks, lvm))
}
