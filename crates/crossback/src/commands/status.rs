//! `crossback status`: the configured systems and slots as found now.

use std::path::Path;

use serde::Serialize;

use crate::cli::StatusArgs;
use crate::config::Config;
use crate::machine::{self, Machine, System};
use crate::output;
use crate::Outcome;

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
}

#[derive(Serialize)]
struct Status {
    config: String,
    systems: Vec<System>,
    slots: Vec<SlotStatus>,
}

pub fn run(path: &Path, a: StatusArgs) -> anyhow::Result<Outcome> {
    machine::require_root("status")?;
    let cfg = Config::load(path)?;
    let m = Machine::scan(&[])?;
    let systems = machine::systems(&m, &cfg)?;
    let mut slots = Vec::new();
    if let Some(media) = &cfg.media {
        for (letter, uuid) in [("A", media.slot_a.get_ref()), ("B", media.slot_b.get_ref())] {
            let dev = m.by_uuid(uuid)?;
            let mut s = SlotStatus {
                letter,
                uuid: uuid.clone(),
                found: dev.is_some(),
                device: dev.map(|d| d.path.display().to_string()),
                mounted: false,
                mounted_rw: false,
                size: None,
                free: None,
            };
            if let Some(d) = dev {
                s.mounted = !m.mounts_of(d).is_empty();
                s.mounted_rw = m.mounted_rw(d);
                if let Ok(i) = m.inspect(d) {
                    s.size = Some(i.size);
                    s.free = Some(i.free);
                }
            }
            slots.push(s);
        }
    }
    let st = Status { config: path.display().to_string(), systems, slots };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(Outcome::Ok);
    }
    println!("configuration: {}", st.config);
    println!("systems:");
    for s in &st.systems {
        let state = if s.running {
            "running now"
        } else if s.filesystems.iter().all(|f| f.found) {
            "offline"
        } else {
            "incomplete"
        };
        println!("  {:<12} {:<40} {}", s.name, s.pretty_name, state);
        for f in &s.filesystems {
            let sv = f.subvol.as_ref().map(|s| format!(" subvol={s}")).unwrap_or_default();
            let at = f.device.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "MISSING".into());
            println!("      {:<12} {:<6} {}{}  {}", f.mountpoint, f.fstype, f.spec, sv, at);
        }
        for w in &s.warnings {
            println!("      warning: {w}");
        }
    }
    if st.slots.is_empty() {
        println!("slots: none configured (run `crossback media prepare SLOT_A SLOT_B`)");
    } else {
        println!("slots:");
        for s in &st.slots {
            let state = match (&s.device, s.mounted_rw, s.mounted) {
                (None, _, _) => "NOT ATTACHED".to_string(),
                (Some(d), true, _) => format!("{d}, mounted read-write elsewhere"),
                (Some(d), false, true) => format!("{d}, mounted elsewhere"),
                (Some(d), false, false) => d.clone(),
            };
            let free = s.free.map(|f| format!(", {} free of {}", output::bytes(f), output::bytes(s.size.unwrap_or(0)))).unwrap_or_default();
            println!("  {}  UUID={}  {}{}", s.letter, s.uuid, state, free);
        }
    }
    Ok(Outcome::Ok)
}
