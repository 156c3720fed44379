//! `crossback schedule`: backups that start when the backup disk is
//! plugged in (a udev rule that matches its slots by UUID and wants a
//! systemd unit running `crossback backup --plugged`), and a daily
//! reminder when the newest complete backup gets old (a timer running
//! `crossback schedule --check`). `--off` removes all of it.

use crossback_host::tool::Tool;
use std::path::Path;

use anyhow::Context;

use crate::cli::ScheduleArgs;
use crate::config::Config;
use crate::error::Refusal;
use crate::local::{self, History, Paths, Schedule};
use crate::machine::{self, Machine};
use crate::notify::{self, Urgency};
use crate::{output, refuse, units, Outcome};

pub fn run(path: &Path, a: ScheduleArgs) -> anyhow::Result<Outcome> {
    let p = Paths::new();
    if a.check {
        return check(path, &p, a.remind_after);
    }
    machine::require_root("schedule")?;
    if a.off {
        return off(&p);
    }
    let cfg = Config::load(path)?;
    let Some(media) = &cfg.media else {
        refuse!(Refusal::Config, "no backup media in {}: run `crossback media prepare SLOT_A SLOT_B` first", path.display());
    };
    match media.sealing() {
        crate::config::Sealing::Encrypted(_) => {}
        crate::config::Sealing::Plain if a.unencrypted => {}
        crate::config::Sealing::Plain => refuse!(
            Refusal::NotEncrypted,
            "the backup media is not encrypted: a backup that starts when a disk with your slots' UUIDs is plugged in would write your systems in plaintext onto whatever disk that is. Encrypt the media (`crossback media encrypt`), or accept that with `crossback schedule --unencrypted`; nothing was installed"
        ),
        crate::config::Sealing::Unknown => refuse!(
            Refusal::Config,
            "{} does not say whether the backup media is encrypted (an older crossback wrote it): run `crossback media trust` first; nothing was installed",
            path.display()
        ),
    }
    if a.push && cfg.remotes.is_empty() {
        refuse!(Refusal::Usage, "--push: no remote is configured (`crossback remote add NAME URL` first); nothing was installed");
    }
    let m = Machine::scan(&[])?;
    let systems = machine::systems(&m, &cfg)?;
    let sys = systems.iter().find(|s| s.running);
    let exe = match sys {
        Some(sys) => super::at_reboot::installed_exe(sys)?,
        // A system that backs the others up without being one of them.
        None => std::env::current_exe()?,
    };
    let (a_uuid, b_uuid) = (media.slot_a.get_ref(), media.slot_b.get_ref());
    // The units run from `/`: the configuration by its whole path.
    let config = std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    local::write_text(&p.units_dir(), units::PLUGGED_SERVICE, &units::plugged_service(&exe, &config, a.unencrypted)?)?;
    local::write_text(&p.units_dir(), units::REMIND_SERVICE, &units::remind_service(&exe, &config, a.remind_after)?)?;
    local::write_text(&p.units_dir(), units::REMIND_TIMER, &units::remind_timer())?;
    local::write_text(&p.udev_rules_dir(), units::UDEV_RULE, &units::udev_rule(a_uuid, b_uuid))?;
    if a.push {
        local::write_text(&p.units_dir(), units::PUSH_SERVICE, &units::push_service(&exe, &config)?)?;
        local::write_text(&p.units_dir(), units::PUSH_TIMER, &units::push_timer())?;
    } else {
        // A schedule made again without --push no longer pushes.
        remove_push_timer(&p)?;
    }
    let s = Schedule { installed: output::now(), remind_after_days: a.remind_after, slot_a: a_uuid.clone(), slot_b: b_uuid.clone(), push: a.push };
    local::write(&p.state_dir(), local::SCHEDULE, &s)?;
    if p.live() {
        machine::try_tool(Tool::new("systemctl").arg("daemon-reload"), "reloading systemd's units");
        machine::try_tool(Tool::new("systemctl").args(["enable", "--now", units::REMIND_TIMER]), "starting the reminder");
        if a.push {
            machine::try_tool(Tool::new("systemctl").args(["enable", "--now", units::PUSH_TIMER]), "starting the push timer");
        }
        machine::try_tool(Tool::new("udevadm").args(["control", "--reload"]), "reloading udev's rules");
    }
    println!("scheduled on {}:", sys.map_or("this system (not one of the configured ones)", |s| s.name.as_str()));
    println!("  when the backup disk is plugged in (slot UUID {a_uuid} or {b_uuid}): `crossback backup` of the offline systems, with a desktop notification when it starts and ends");
    if a.unencrypted {
        println!("  onto a media that is not encrypted too (--unencrypted): a disk given your slots' UUIDs gets your systems in plaintext");
    }
    println!("  every day: a reminder when the newest complete backup is older than {} days", a.remind_after);
    if a.push {
        let names: Vec<&str> = cfg.remotes.iter().map(|r| r.name.as_str()).collect();
        println!("  every hour, once the network is up and while the backup disk is attached: `crossback push` to {}", names.join(", "));
    }
    println!(
        "  files: {}, {}, {}, {}",
        p.udev_rules_dir().join(units::UDEV_RULE).display(),
        units::PLUGGED_SERVICE,
        units::REMIND_SERVICE,
        units::REMIND_TIMER
    );
    println!("  the journal: `journalctl -u crossback-plugged -u crossback-remind`; remove it all with `crossback schedule --off`");
    Ok(Outcome::Ok)
}

/// Stops and removes the push timer and its service; what was there.
fn remove_push_timer(p: &Paths) -> anyhow::Result<Vec<String>> {
    let timer = p.units_dir().join(units::PUSH_TIMER);
    if p.live() && timer.exists() {
        machine::try_tool(Tool::new("systemctl").args(["disable", "--now", units::PUSH_TIMER]), "stopping the push timer");
    }
    let mut removed = Vec::new();
    for f in [timer, p.units_dir().join(units::PUSH_SERVICE)] {
        if local::remove(&f)? {
            removed.push(f.display().to_string());
        }
    }
    Ok(removed)
}

fn off(p: &Paths) -> anyhow::Result<Outcome> {
    if p.live() {
        machine::try_tool(Tool::new("systemctl").args(["disable", "--now", units::REMIND_TIMER]), "stopping the reminder");
    }
    let mut removed = remove_push_timer(p)?;
    for f in [
        p.udev_rules_dir().join(units::UDEV_RULE),
        p.units_dir().join(units::PLUGGED_SERVICE),
        p.units_dir().join(units::REMIND_SERVICE),
        p.units_dir().join(units::REMIND_TIMER),
    ] {
        if local::remove(&f)? {
            removed.push(f.display().to_string());
        }
    }
    local::remove(&p.state_dir().join(local::SCHEDULE))?;
    if p.live() {
        machine::try_tool(Tool::new("systemctl").arg("daemon-reload"), "reloading systemd's units");
        machine::try_tool(Tool::new("udevadm").args(["control", "--reload"]), "reloading udev's rules");
    }
    if removed.is_empty() {
        println!("nothing was scheduled");
    } else {
        println!("schedule removed: {}", removed.join(", "));
    }
    Ok(Outcome::Ok)
}

/// What to tell the user when the newest complete backup is older than
/// `days` (or there is none): `None` when it is recent enough.
pub fn reminder(h: Option<&History>, now: i64, days: u32, running: Option<&str>, others: &[String]) -> Option<String> {
    let Some(h) = h else {
        return Some("no backup of this machine is known here: plug in the backup disk (and run `crossback backup` if nothing starts)".into());
    };
    let age = h.sealed.as_deref().and_then(output::parse_time).map(|t| now - t);
    if age.is_some_and(|a| a <= i64::from(days) * 86400) {
        return None;
    }
    let newest = match (age, h.sealed_seq) {
        (Some(a), Some(seq)) => format!("the newest complete backup (generation {seq}) is {} old", output::age(a)),
        _ => "there is no complete backup yet".to_string(),
    };
    let todo = match running.filter(|r| h.open_missing.iter().any(|m| m == r)) {
        Some(r) => {
            let boot = if others.is_empty() { String::new() } else { format!(", or boot {} once with the backup disk plugged in", others.join(" or ")) };
            format!("generation {} still misses {r}, the system running now: run `crossback backup --at-reboot`{boot}", h.open_seq.unwrap_or_default())
        }
        None if !h.open_missing.is_empty() => {
            format!("generation {} still misses {}: plug in the backup disk", h.open_seq.unwrap_or_default(), h.open_missing.join(", "))
        }
        None => "plug in the backup disk".to_string(),
    };
    Some(format!("{newest}: {todo}"))
}

fn check(path: &Path, p: &Paths, days: u32) -> anyhow::Result<Outcome> {
    let h: Option<History> = local::read(&p.state_dir(), local::HISTORY)?;
    let cfg = Config::load(path).ok();
    let names: Vec<String> = cfg.as_ref().map(|c| c.systems.iter().map(|s| s.name.get_ref().clone()).collect()).unwrap_or_default();
    let running = cfg
        .as_ref()
        .and_then(|c| Machine::scan(&[]).ok().and_then(|m| machine::systems(&m, c).ok()))
        .and_then(|systems| systems.into_iter().find(|s| s.running).map(|s| s.name));
    let others: Vec<String> = names.iter().filter(|n| Some(*n) != running.as_ref()).cloned().collect();
    let now = output::parse_time(&output::now()).unwrap_or(0);
    match reminder(h.as_ref(), now, days, running.as_deref(), &others) {
        Some(msg) => notify::users("Backup reminder", &msg, Urgency::Critical),
        None => println!("the newest complete backup is less than {days} days old"),
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LastBackup;

    const DAY: i64 = 86400;

    fn hist(sealed_days_ago: Option<i64>, open_missing: &[&str], now: i64) -> History {
        History {
            seen: String::new(),
            sealed_seq: sealed_days_ago.map(|_| 4),
            sealed: sealed_days_ago.map(|d| output::utc(now - d * DAY).replacen(' ', "T", 1) + "Z"),
            open_seq: (!open_missing.is_empty()).then_some(5),
            open_missing: open_missing.iter().map(|s| s.to_string()).collect(),
            systems: [("beta".to_string(), LastBackup::default())].into(),
        }
    }

    #[test]
    fn reminds_only_when_too_old_and_says_what_to_do() {
        let now = 1_800_000_000;
        let others = vec!["beta".to_string()];
        assert_eq!(reminder(Some(&hist(Some(3), &[], now)), now, 7, Some("alpha"), &others), None);
        let m = reminder(Some(&hist(Some(9), &[], now)), now, 7, Some("alpha"), &others).unwrap();
        assert_eq!(m, "the newest complete backup (generation 4) is 9 days old: plug in the backup disk");
        let m = reminder(Some(&hist(Some(9), &["alpha"], now)), now, 7, Some("alpha"), &others).unwrap();
        assert_eq!(
            m,
            "the newest complete backup (generation 4) is 9 days old: generation 5 still misses alpha, the system running now: run `crossback backup --at-reboot`, or boot beta once with the backup disk plugged in"
        );
        let m = reminder(Some(&hist(None, &["beta"], now)), now, 7, Some("alpha"), &others).unwrap();
        assert_eq!(m, "there is no complete backup yet: generation 5 still misses beta: plug in the backup disk");
        assert!(reminder(None, now, 7, None, &[]).unwrap().starts_with("no backup of this machine is known here"));
    }
}
