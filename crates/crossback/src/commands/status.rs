//! `crossback status`: the configured systems and slots as found now.

use std::path::Path;

use serde::Serialize;

use crate::cli::StatusArgs;
use crate::config::Config;
use crate::layout::{GenEntry, SlotId, SlotView, State};
use crate::machine::{self, Machine, System};
use crate::{local, output, Outcome};

#[derive(Serialize)]
struct GenStatus {
    seq: u64,
    /// `open` or `sealed`.
    state: State,
    started: String,
    sealed: Option<String>,
    systems: Vec<GenSystem>,
    missing: Vec<String>,
}

#[derive(Serialize)]
struct GenSystem {
    name: String,
    finished: String,
    bytes: u64,
    data_bytes: u64,
}

#[derive(Serialize)]
struct SlotStatus {
    letter: &'static str,
    uuid: String,
    found: bool,
    device: Option<String>,
    /// Mounted somewhere on this machine (any namespace crossback can see).
    mounted: bool,
    mounted_rw: bool,
    size: Option<u64>,
    free: Option<u64>,
    /// The generation in the slot (the newest, if a crash left more).
    generation: Option<GenStatus>,
    /// Generation directories left by interrupted runs (removed by the next backup).
    leftovers: Vec<String>,
    /// Generations whose manifest does not read (kept until `backup --discard-damaged`).
    damaged: Vec<String>,
    /// Why the slot cannot be used as it is (another media, foreign files, damage).
    problem: Option<String>,
    /// An encrypted media: how it unlocks (never a secret).
    encryption: Option<crate::layout::Encryption>,
}

/// The slot's newest valid generation and its leftovers, from the one classification.
fn fill(s: &mut SlotStatus, view: &SlotView, id: SlotId, media_id: &str) {
    if let Err(e) = view.check_owner(id, media_id) {
        s.problem = Some(format!("{e:#}"));
    }
    s.encryption = view.marker.encryption.clone();
    for g in &view.generations {
        match g {
            GenEntry::Leftover { dir, why: why @ crate::layout::classify::Leftover::Damaged(_), .. } => s.damaged.push(format!("{dir} ({why})")),
            GenEntry::Leftover { dir, why, .. } => s.leftovers.push(format!("{dir} ({why})")),
            GenEntry::Valid { .. } => {}
        }
    }
    if let Some(g) = view.newest() {
        s.generation = Some(GenStatus {
            seq: g.seq,
            state: g.state,
            started: g.started.clone(),
            sealed: g.sealed.clone(),
            missing: g.missing().iter().map(|x| x.to_string()).collect(),
            systems: g
                .recorded
                .iter()
                .map(|r| GenSystem {
                    name: r.name.clone(),
                    finished: r.finished.clone(),
                    bytes: r.archives.iter().map(|a| a.bytes).sum(),
                    data_bytes: r.data_bytes(),
                })
                .collect(),
        });
    }
}

#[derive(Serialize)]
struct Status {
    config: String,
    systems: Vec<System>,
    slots: Vec<SlotStatus>,
    /// The rescue systems on the media's disks (`media rescue`).
    rescue: Vec<RescueStatus>,
    /// What this system keeps: the backup at reboot, the schedule, the media as last seen.
    here: Here,
}

#[derive(Serialize, Default)]
struct Here {
    /// A backup armed for the next boot (`backup --at-reboot`).
    at_reboot_armed: Option<local::AtReboot>,
    /// How the last backup at reboot ended.
    at_reboot_last: Option<local::AtRebootResult>,
    /// What `crossback schedule` installed.
    schedule: Option<local::Schedule>,
    /// The generations as this system last saw them on the media.
    last_seen: Option<local::History>,
    /// How the last push to each remote ended.
    pushes: Option<local::Pushes>,
}

impl Here {
    fn read() -> Here {
        let dir = local::Paths::new().state_dir();
        fn get<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> Option<T> {
            local::read(dir, name).unwrap_or_else(|e| {
                eprintln!("warning: {e:#}");
                None
            })
        }
        Here {
            at_reboot_armed: get(&dir, local::AT_REBOOT),
            at_reboot_last: get(&dir, local::AT_REBOOT_RESULT),
            schedule: get(&dir, local::SCHEDULE),
            last_seen: get(&dir, local::HISTORY),
            pushes: get(&dir, local::PUSHES),
        }
    }

    fn print(&self, now: i64, remotes: &[crate::config::RemoteConfig]) {
        let ago = |t: &str| output::parse_time(t).map(|x| format!(" ({} ago)", output::age(now - x))).unwrap_or_default();
        println!("on this system:");
        if let Some(j) = &self.at_reboot_armed {
            let what = if j.systems.is_empty() { "this system and the offline ones not yet in the open generation".to_string() } else { j.systems.join(", ") };
            println!("  backup at reboot: ARMED on {}: the next boot backs up {what}", j.armed);
        }
        if let Some(r) = &self.at_reboot_last {
            println!("  last backup at reboot: {}{}: {} — {}", r.finished, ago(&r.finished), if r.ok { "done" } else { "FAILED" }, output::text(&r.what));
        }
        match &self.schedule {
            Some(s) => {
                let push = if s.push { "; an hourly push to the remotes" } else { "" };
                println!(
                    "  scheduled: a backup when the backup disk is plugged in; a reminder after {} days{push} (installed {})",
                    s.remind_after_days, s.installed
                )
            }
            None => println!("  scheduled: nothing (`crossback schedule` starts backups when the backup disk is plugged in)"),
        }
        for r in remotes {
            let when = if r.push == crate::config::PushWhen::AfterBackup { "after every backup" } else { "by `crossback push`" };
            match self.pushes.as_ref().and_then(|p| p.remote.get(&r.name)) {
                Some(p) if p.ok => println!("  remote {} (pushed {when}): last push {}{}: {}", r.name, p.finished, ago(&p.finished), output::text(&p.what)),
                Some(p) => println!(
                    "  remote {} (pushed {when}): last push FAILED {}{}: {}; `crossback push {}` tries again",
                    r.name,
                    p.finished,
                    ago(&p.finished),
                    output::text(&p.what),
                    r.name
                ),
                None => println!("  remote {} (pushed {when}): never pushed from here (`crossback push {}`)", r.name, r.name),
            }
        }
        if let Some(h) = &self.last_seen {
            println!("  the media as last seen from here ({}):", h.seen);
            match (&h.sealed_seq, &h.sealed) {
                (Some(seq), Some(t)) => println!("    newest complete backup: generation {seq}, sealed {t}{}", ago(t)),
                _ => println!("    no complete backup"),
            }
            if let Some(seq) = h.open_seq {
                println!("    generation {seq} open, missing {}", h.open_missing.join(", "));
            }
            for (name, b) in &h.systems {
                let how = if b.how.is_empty() { String::new() } else { format!(", {}", b.how) };
                println!("    {name:<12} last backed up {}{} (generation {}{how})", b.finished, ago(&b.finished), b.generation);
            }
        }
    }
}

/// What to do next, in words: finish an open generation, or make a new one.
fn advice(st: &Status, now: i64) {
    let newest_sealed = st.slots.iter().filter_map(|s| s.generation.as_ref()).filter(|g| g.state == State::Sealed).max_by_key(|g| g.seq);
    let open = st.slots.iter().filter_map(|s| s.generation.as_ref()).filter(|g| g.state == State::Open).max_by_key(|g| g.seq);
    if let Some(g) = open {
        for name in &g.missing {
            let hint = match st.systems.iter().find(|s| &s.name == name) {
                Some(s) if s.running => {
                    format!("run `crossback backup --at-reboot` here, or boot into another system (or a live USB) and run `crossback backup`, to add {name}")
                }
                _ => format!("run `crossback backup` (from a system other than {name}, or a live USB)"),
            };
            println!("to complete generation {}: {hint}", g.seq);
        }
        if let Some(t) = output::parse_time(&g.started) {
            if now - t > 7 * 86400 {
                println!("warning: generation {} has been open for {}; until it is sealed, the newest complete set is older", g.seq, output::age(now - t));
            }
        }
    }
    match newest_sealed {
        None if st.slots.iter().all(|s| !s.found) => println!("the backup disk is not attached: plug it in to see (and add to) its generations"),
        // The open generation's advice above says how to complete it; a
        // plain `crossback backup` cannot add the running system.
        None if open.is_some() => println!("no complete backup yet: generation {} becomes the first once the systems above are in", open.map_or(0, |g| g.seq)),
        None => println!("no complete backup yet: run `crossback backup` (it backs up every system that is not running)"),
        Some(g) => {
            if let Some(t) = g.sealed.as_deref().and_then(output::parse_time) {
                if now - t > 30 * 86400 {
                    println!("warning: the newest complete backup (generation {}) is {} old", g.seq, output::age(now - t));
                }
            }
        }
    }
}

pub fn run(path: &Path, a: StatusArgs) -> anyhow::Result<Outcome> {
    machine::require_root("status")?;
    let cfg = Config::load(path)?;
    let m = Machine::scan(&[])?;
    let systems = machine::systems(&m, &cfg)?;
    let mut slots = Vec::new();
    if let Some(media) = &cfg.media {
        for (id, uuid) in SlotId::BOTH.into_iter().zip([media.slot_a.get_ref(), media.slot_b.get_ref()]) {
            slots.push(slot_status(&m, id, uuid, media.id.get_ref())?);
        }
    }
    let rescue = rescue_status(&m, &slots);
    let st = Status { config: path.display().to_string(), systems, slots, rescue, here: Here::read() };
    let now = output::parse_time(&output::now()).unwrap_or(0);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(Outcome::Ok);
    }
    println!("configuration: {}", st.config);
    print_systems(&st.systems);
    print_slots(&st, now);
    print_rescue(&st.rescue, now);
    st.here.print(now, &cfg.remotes);
    Ok(Outcome::Ok)
}

/// A rescue system on one of the media's disks.
#[derive(Serialize)]
struct RescueStatus {
    device: String,
    /// Its record, or why it does not read.
    record: Result<crate::layout::RescueRecord, String>,
}

/// The rescue partitions (FAT, labelled as `media rescue` makes them) on
/// the disks the media's slots are on.
fn rescue_status(m: &Machine, slots: &[SlotStatus]) -> Vec<RescueStatus> {
    let disks: Vec<&str> = slots
        .iter()
        .filter_map(|s| s.device.as_deref())
        .filter_map(|p| m.devices.iter().find(|d| d.path.display().to_string() == p))
        .map(|d| d.disk.as_str())
        .collect();
    m.devices
        .iter()
        .filter(|d| d.fstype == "vfat" && d.label == super::media::RESCUE_LABEL && disks.contains(&d.disk.as_str()))
        .map(|d| RescueStatus { device: d.path.display().to_string(), record: super::media::rescue_record(&d.path) })
        .collect()
}

fn print_rescue(rescue: &[RescueStatus], now: i64) {
    for r in rescue {
        match &r.record {
            Ok(rec) => {
                let ago = |t: &str| output::parse_time(t).map(|x| format!(" ({} ago)", output::age(now - x))).unwrap_or_default();
                println!(
                    "rescue system: {}, built {}{} with kernel {}, runs crossback {}{}; {}",
                    r.device,
                    output::text(&rec.built),
                    ago(&rec.built),
                    output::text(&rec.kernel),
                    output::text(&rec.crossback),
                    rec.refreshed.as_deref().map(|t| format!(" (refreshed {}{})", output::text(t), ago(t))).unwrap_or_default(),
                    if rec.secure_boot {
                        "boots under Secure Boot (its kernel is signed)"
                    } else {
                        "does NOT boot under Secure Boot (made with --no-secure-boot)"
                    }
                );
            }
            Err(why) => println!("rescue system: {}: {}; `crossback media rescue --device {}` makes it again", r.device, output::text(why), r.device),
        }
    }
}

/// What one slot of the media holds and how it is attached.
fn slot_status(m: &Machine, id: SlotId, uuid: &str, media_id: &str) -> anyhow::Result<SlotStatus> {
    let dev = m.by_uuid(uuid)?;
    let mut s = SlotStatus {
        letter: id.letter(),
        problem: None,
        encryption: None,
        uuid: uuid.to_string(),
        found: dev.is_some(),
        device: dev.map(|d| d.path.display().to_string()),
        mounted: false,
        mounted_rw: false,
        size: None,
        free: None,
        generation: None,
        leftovers: Vec::new(),
        damaged: Vec::new(),
    };
    if let Some(d) = dev {
        s.mounted = !m.mounts_of(d).is_empty();
        s.mounted_rw = m.mounted_rw(d);
        match m.inspect(d) {
            Ok(i) => {
                s.size = Some(i.size);
                s.free = Some(i.free);
                match crate::layout::slot_of(&i.extra) {
                    Some(Ok(view)) => fill(&mut s, &view, id, media_id),
                    Some(Err(why)) => s.problem = Some(why),
                    None => s.problem = Some("no crossback marker: not prepared (run `crossback media prepare`)".into()),
                }
            }
            Err(e) => s.problem = Some(format!("cannot be read: {e:#}")),
        }
    }
    Ok(s)
}

fn print_systems(systems: &[System]) {
    println!("systems:");
    for s in systems {
        let state = if s.running {
            "running now"
        } else if s.locked() && !s.filesystems.iter().all(|f| f.found) {
            "locked (in an encrypted container: backup, mount and chroot open it)"
        } else if s.filesystems.iter().all(|f| f.found) {
            "offline"
        } else {
            "incomplete"
        };
        println!("  {:<12} {:<40} {}", s.name, output::text(&s.pretty_name), state);
        for f in &s.filesystems {
            let sv = f.subvol.as_ref().map(|s| format!(" subvol={s}")).unwrap_or_default();
            let at = f.device.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "MISSING".into());
            println!("      {:<12} {:<6} {}{}  {}", f.mountpoint, output::text(&f.fstype), output::text(&f.spec), output::text(&sv), at);
        }
        for l in &s.layers {
            let what = if l.kind == "luks" { "in LUKS container" } else { "in LVM volume group" };
            let at = l.device.as_ref().map(|d| format!(" on {}", d.display())).unwrap_or_default();
            println!("      {what} {}{at}: {}", output::text(&l.name), l.state);
        }
        for w in &s.warnings {
            println!("      warning: {}", output::text(w));
        }
    }
}

fn print_slots(st: &Status, now: i64) {
    if st.slots.is_empty() {
        println!("slots: none configured (run `crossback media prepare SLOT_A SLOT_B`)");
    } else {
        println!("slots:");
        for s in &st.slots {
            let state = match (&s.device, s.mounted_rw, s.mounted) {
                (None, _, _) => "NOT ATTACHED".to_string(),
                (Some(d), true, _) => format!("{d}, mounted read-write elsewhere (ls, restore and verify read it as it is; a backup needs it unmounted)"),
                (Some(d), false, true) => format!("{d}, mounted elsewhere"),
                (Some(d), false, false) => d.clone(),
            };
            let free = s.free.map(|f| format!(", {} free of {}", output::bytes(f), output::bytes(s.size.unwrap_or(0)))).unwrap_or_default();
            println!("  {}  UUID={}  {}{}", s.letter, s.uuid, state, free);
            if let Some(e) = &s.encryption {
                let mut ways = Vec::new();
                if e.passphrase {
                    ways.push("its passphrase".to_string());
                }
                ways.extend(e.recipients.iter().cloned());
                println!("     encrypted (age); unlocks with {}", ways.join(", "));
            }
            match &s.generation {
                None => println!("     no generation yet"),
                Some(g) => {
                    let when = g.sealed.as_ref().unwrap_or(&g.started);
                    let ago = output::parse_time(when).map(|t| output::age(now - t)).unwrap_or_default();
                    match g.state {
                        State::Sealed => println!("     generation {}: sealed {} ({} ago), complete", g.seq, when, ago),
                        State::Open => {
                            println!("     generation {}: OPEN since {} ({} ago), missing {}", g.seq, g.started, ago, g.missing.join(", "))
                        }
                    }
                    for sy in &g.systems {
                        println!(
                            "       {:<12} {} ({} of data) at {}",
                            sy.name,
                            output::bytes(sy.bytes),
                            output::bytes(sy.data_bytes),
                            output::text(&sy.finished)
                        );
                    }
                }
            }
            if let Some(p) = &s.problem {
                println!("     PROBLEM: {p}");
            }
            if !s.leftovers.is_empty() {
                println!("     leftovers of an interrupted run (the next backup removes them): {}", s.leftovers.join(", "));
            }
            for d in &s.damaged {
                println!("     damaged generation: {d}; `crossback verify` says what still reads, `backup --discard-damaged` lets a backup replace it");
            }
        }
        advice(st, now);
    }
}
