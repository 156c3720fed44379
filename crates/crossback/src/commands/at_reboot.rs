//! `crossback backup --at-reboot`: the running system backed up offline,
//! in a boot of its own (systemd's offline-update mode).
//!
//! Arming writes a unit that `system-update.target` wants, the job
//! (`/var/lib/crossback/at-reboot.toml`) and the `/system-update` link that
//! makes the next boot an offline-update one, and sets the firmware's
//! BootNext to this system. In that boot the unit runs `at-reboot-job run`
//! before anything else writes: the link and the unit's wants-link go
//! first (the boot after is a normal one, whatever happens), then it waits
//! for the backup disk, stops the journal writing to disk, remounts the
//! system's filesystems read-only (or names what keeps them writable, and
//! refuses), runs `crossback backup --frozen` as a child (the running
//! system then counts as offline) and makes them writable again. `finish`
//! (the unit's ExecStopPost: also after a crash or the time limit) makes
//! sure of that, records how it ended (`status` shows it), sets BootNext to
//! this system again and reboots.

use crossback_host::tool::Tool;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cli::BackupArgs;
use crate::config::Config;
use crate::error::Refusal;
use crate::local::{self, AtReboot, AtRebootResult, Paths};
use crate::machine::{self, Machine, System};
use crate::{output, refuse, units, Outcome};

/// The boot's own notes (in [`Paths::run_dir`]): what `run` froze, that it started.
const FROZEN: &str = "frozen.toml";
const STARTED: &str = "started";

#[derive(Default, Serialize, Deserialize)]
struct Frozen {
    mountpoints: Vec<PathBuf>,
}

/// The running system, which must be a configured one.
fn running<'a>(systems: &'a [System], path: &Path) -> anyhow::Result<&'a System> {
    match systems.iter().find(|s| s.running) {
        Some(s) => Ok(s),
        None => refuse!(
            Refusal::UnknownSystem,
            "the running system is not one of the systems in {}: add it (`crossback init` here) before backing it up at reboot",
            path.display()
        ),
    }
}

/// crossback's own executable, which must be on the running system's
/// filesystems: in the boot of the backup nothing else is there.
pub fn installed_exe(sys: &System) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding crossback's own executable")?;
    let dev = std::fs::metadata(&exe).with_context(|| format!("reading {}", exe.display()))?.dev();
    if !sys.filesystems.iter().any(|f| std::fs::metadata(&f.mountpoint).is_ok_and(|m| m.dev() == dev)) {
        refuse!(
            Refusal::Unsupported,
            "crossback runs from {}, which is not on {}'s own filesystems: the units it installs must find it at every boot; install crossback on this system (its Debian package, or copy it to /usr/local/bin) and run that one",
            exe.display(),
            sys.name
        );
    }
    Ok(exe)
}

/// Where `/system-update` leads, if it exists.
fn pending(p: &Paths) -> Option<PathBuf> {
    let link = p.system_update();
    std::fs::symlink_metadata(&link).ok()?;
    Some(std::fs::read_link(&link).unwrap_or(link))
}

fn wants_link(p: &Paths) -> PathBuf {
    p.units_dir().join("system-update.target.wants").join(units::AT_REBOOT_SERVICE)
}

/// The firmware's next boot: the entry this system was started from.
fn boot_next_here() -> Option<String> {
    crossback_host::efi::boot_next_to_current().unwrap_or_else(|e| {
        eprintln!("warning: setting the firmware's next boot to this system: {e}");
        None
    })
}

pub fn arm(path: &Path, a: &BackupArgs) -> anyhow::Result<Outcome> {
    machine::require_root("backup --at-reboot")?;
    let p = Paths::new();
    if a.cancel {
        return cancel(&p);
    }
    let cfg = Config::load(path)?;
    let Some(media) = &cfg.media else {
        refuse!(Refusal::Config, "no backup media in {}: run `crossback media prepare SLOT_A SLOT_B` first", path.display());
    };
    for n in &a.systems {
        if cfg.system(n).is_none() {
            refuse!(Refusal::UnknownSystem, "no system called {:?} in the configuration", output::text(n));
        }
    }
    if p.live() && !Path::new("/run/systemd/system").is_dir() {
        refuse!(Refusal::Unsupported, "this system does not run systemd: a backup at reboot needs its offline-update boot (systemd.offline-updates(7))");
    }
    if let Some(to) = pending(&p) {
        if to != Path::new(local::STATE_DIR) {
            refuse!(
                Refusal::UpdatePending,
                "an offline update is already armed for the next boot (/system-update leads to {}): let it run first (reboot), then arm the backup; nothing was changed",
                to.display()
            );
        }
    }
    let m = Machine::scan(&[])?;
    let systems = machine::systems(&m, &cfg)?;
    let sys = running(&systems, path)?;
    let exe = installed_exe(sys)?;
    let state = p.state_dir();
    let job = AtReboot { armed: output::now(), systems: a.systems.clone(), time_limit_min: a.time_limit, disk_wait_secs: a.disk_wait, options: passed_on(a) };
    // The unit runs in another boot, from `/`: the configuration by its whole path.
    let config = std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    local::write_text(&p.units_dir(), units::AT_REBOOT_SERVICE, &units::at_reboot_service(&exe, &config, Path::new(local::STATE_DIR), a.time_limit)?)?;
    let wants = wants_link(&p);
    std::fs::create_dir_all(wants.parent().unwrap_or(Path::new("/"))).with_context(|| format!("creating the directory of {}", wants.display()))?;
    local::symlink(&Path::new("..").join(units::AT_REBOOT_SERVICE), &wants)?;
    local::write(&state, local::AT_REBOOT, &job)?;
    // Last: the link that makes the next boot the backup's.
    local::symlink(Path::new(local::STATE_DIR), &p.system_update())?;
    if p.live() {
        machine::try_tool(Tool::new("systemctl").arg("daemon-reload"), "reloading systemd's units");
    }
    if m.by_uuid(media.slot_a.get_ref())?.is_none() || m.by_uuid(media.slot_b.get_ref())?.is_none() {
        println!("note: the backup disk is not attached now: attach it before the reboot (that boot waits {} s for it, then boots as usual)", a.disk_wait);
    }
    let what = if a.systems.is_empty() { format!("{} (and every offline system not yet in the open generation)", sys.name) } else { a.systems.join(", ") };
    println!("armed: at the next boot, before anything else starts, {what} will be backed up offline; then {} boots as usual", sys.name);
    println!("  time limit {} min; cancel with `crossback backup --at-reboot --cancel`", a.time_limit);
    if p.live() {
        match boot_next_here() {
            Some(n) => println!("  the firmware's next boot: Boot{n} (this system)"),
            None if crossback_host::efi::available() => println!("  warning: the firmware's next boot could not be set: choose {} in its boot menu", sys.name),
            None => {}
        }
    }
    if a.no_reboot || !p.live() {
        println!("reboot when you are ready (`systemctl reboot`)");
        return Ok(Outcome::Ok);
    }
    println!("rebooting now");
    machine::run_tool(Tool::new("systemctl").arg("reboot"))?;
    Ok(Outcome::Ok)
}

/// The options of `backup` that the backup's boot runs it with.
fn passed_on(a: &BackupArgs) -> Vec<String> {
    let mut out = Vec::new();
    for (on, flag) in [(a.new_generation, "--new-generation"), (a.no_verify, "--no-verify"), (a.allow_dirty, "--allow-dirty")] {
        if on {
            out.push(flag.to_string());
        }
    }
    let c = &a.compression;
    out.extend(["--level".to_string(), c.level.to_string()]);
    if let Some(l) = c.max_level {
        out.extend(["--max-level".to_string(), l.to_string()]);
    }
    if let Some(t) = c.threads {
        out.extend(["--threads".to_string(), t.to_string()]);
    }
    for s in &a.accept_shrunk {
        out.extend(["--accept-shrunk".to_string(), s.clone()]);
    }
    out
}

fn cancel(p: &Paths) -> anyhow::Result<Outcome> {
    let ours = pending(p).is_some_and(|to| to == Path::new(local::STATE_DIR));
    if ours {
        local::remove(&p.system_update())?;
    }
    let had = local::remove(&wants_link(p))?;
    local::remove(&p.state_dir().join(local::AT_REBOOT))?;
    println!("{}", if ours || had { "the backup at reboot is cancelled: the next boot is a normal one" } else { "no backup at reboot was armed" });
    Ok(Outcome::Ok)
}

/// In the backup's boot: the job's first step.
pub fn run(path: &Path) -> anyhow::Result<Outcome> {
    let p = Paths::new();
    // The boot after this one is a normal one, whatever happens next.
    if pending(&p).is_some_and(|to| to == Path::new(local::STATE_DIR)) {
        local::remove(&p.system_update())?;
    }
    local::remove(&wants_link(&p))?;
    let state = p.state_dir();
    let Some(job) = local::read::<AtReboot>(&state, local::AT_REBOOT)? else {
        println!("crossback: no backup at reboot is armed: booting as usual");
        return Ok(Outcome::Ok);
    };
    let run_dir = p.run_dir();
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let started = output::now();
    std::fs::write(run_dir.join(STARTED), &started).with_context(|| format!("writing {}", run_dir.join(STARTED).display()))?;
    println!(
        "crossback: backup at reboot (armed {}): {}",
        job.armed,
        if job.systems.is_empty() { "this system and the offline ones not yet in the open generation".to_string() } else { job.systems.join(", ") }
    );
    let done = backup_frozen(path, &job, &p);
    let (ok, what) = match &done {
        Ok(w) => (true, w.clone()),
        Err(e) => (false, format!("{e:#}")),
    };
    let result = AtRebootResult { armed: job.armed.clone(), started, finished: output::now(), ok, what };
    local::write(&state, local::AT_REBOOT_RESULT, &result)?;
    local::remove(&state.join(local::AT_REBOOT))?;
    let _ = std::fs::remove_file(run_dir.join(STARTED));
    done.map(|_| Outcome::Ok)
}

/// Waits for the backup disk, freezes, backs up in a child, thaws.
fn backup_frozen(path: &Path, job: &AtReboot, p: &Paths) -> anyhow::Result<String> {
    let run_dir = p.run_dir();
    let cfg = Config::load(path)?;
    let media = cfg.media.as_ref().context("no backup media in the configuration")?;
    let t = Instant::now();
    if !crate::slots::wait_for(media, Duration::from_secs(job.disk_wait_secs))? {
        refuse!(
            Refusal::SlotMissing,
            "the backup disk did not appear within {} s (slots UUID={} and UUID={}): nothing was backed up; attach it and arm the backup again",
            job.disk_wait_secs,
            media.slot_a.get_ref(),
            media.slot_b.get_ref()
        );
    }
    println!("crossback: the backup disk is there ({:.0} s)", t.elapsed().as_secs_f64());
    let m = Machine::scan(&[])?;
    let systems = machine::systems(&m, &cfg)?;
    let sys = running(&systems, path)?;
    // The journal goes to /run while the system is read-only; it is written
    // to disk again (with what this boot logged) once it is writable.
    machine::try_tool(Tool::new("journalctl").arg("--relinquish-var"), "moving the journal off the disk");
    rustix::fs::sync();
    let points = crossback_host::freeze::freeze_order(sys.filesystems.iter().map(|f| PathBuf::from(&f.mountpoint)).collect());
    let mut frozen = Frozen::default();
    for at in &points {
        let writable = m.own.iter().rev().find(|mm| Path::new(&mm.mountpoint) == at).is_some_and(|mm| mm.is_rw());
        if !writable {
            continue;
        }
        if let Err(e) = crossback_host::freeze::remount(at, true) {
            let holders: Vec<String> = crossback_host::freeze::writers(at).iter().map(|w| w.to_string()).collect();
            thaw(&frozen);
            refuse!(
                Refusal::SystemRunning,
                "{}'s {} could not be made read-only ({e}){}: nothing was backed up; stop what writes there at boot, or back {} up from another system",
                sys.name,
                at.display(),
                if holders.is_empty() { String::new() } else { format!("; open for writing: {}", holders.join(", ")) },
                sys.name
            );
        }
        frozen.mountpoints.push(at.clone());
        std::fs::write(run_dir.join(FROZEN), toml::to_string(&frozen)?).with_context(|| format!("writing {}", run_dir.join(FROZEN).display()))?;
        println!("crossback: {} is read-only", at.display());
    }
    // The backup itself, as a child: its private mount namespace ends with it.
    let run_state = run_dir.join("state");
    std::fs::create_dir_all(&run_state)?;
    let _ = std::fs::copy(p.state_dir().join(local::HISTORY), run_state.join(local::HISTORY));
    let mut cmd = Tool::new(std::env::current_exe()?)
        .arg("--config")
        .arg(path)
        .args(["backup", "--frozen"])
        .args(&job.options)
        .arg("--")
        .args(&job.systems)
        .env("CROSSBACK_STATE_DIR", &run_state)
        .env("CROSSBACK_PROGRESS_SECS", "10")
        .command();
    cmd.stdin(std::process::Stdio::null());
    let status = cmd.status().context("starting crossback backup");
    thaw(&frozen);
    let _ = std::fs::remove_file(run_dir.join(FROZEN));
    if run_state.join(local::HISTORY).exists() {
        let to = p.state_dir();
        std::fs::create_dir_all(&to)?;
        if let Err(e) = std::fs::copy(run_state.join(local::HISTORY), to.join(local::HISTORY)) {
            eprintln!("warning: what the media holds was not noted on this system ({e})");
        }
    }
    let status = status?;
    match status.code() {
        Some(0) => Ok(format!("backed up offline at boot: {}", if job.systems.is_empty() { sys.name.clone() } else { job.systems.join(", ") })),
        Some(3) => Ok("backed up offline at boot; some files could not be read (listed in the journal of that boot)".to_string()),
        _ => anyhow::bail!("crossback backup failed ({status}); its messages are in the journal of that boot (`journalctl -b -1 -u crossback-at-reboot`)"),
    }
}

/// Makes writable again what was frozen, last frozen first; then the
/// journal goes back to the disk.
fn thaw(frozen: &Frozen) {
    for at in frozen.mountpoints.iter().rev() {
        match crossback_host::freeze::remount(at, false) {
            Ok(()) => println!("crossback: {} is writable again", at.display()),
            Err(e) => eprintln!("warning: {} stays read-only until the reboot: {e}", at.display()),
        }
    }
    machine::try_tool(Tool::new("journalctl").arg("--flush"), "writing the journal to disk again");
}

/// The job's last step (ExecStopPost): also after a crash or the time limit.
pub fn finish(_path: &Path) -> anyhow::Result<Outcome> {
    let p = Paths::new();
    let run = p.run_dir();
    if let Ok(text) = std::fs::read_to_string(run.join(FROZEN)) {
        match toml::from_str::<Frozen>(&text) {
            Ok(frozen) => thaw(&frozen),
            // Not "nothing was frozen": said; the reboot that follows makes them writable.
            Err(e) => {
                eprintln!("warning: {} does not read ({}): the filesystems made read-only stay so until the reboot", run.join(FROZEN).display(), e.message())
            }
        }
        let _ = std::fs::remove_file(run.join(FROZEN));
    }
    let state = p.state_dir();
    if let Ok(started) = std::fs::read_to_string(run.join(STARTED)) {
        // `run` did not get to record how it ended: it was stopped.
        // What was armed, for the message; a record that does not read is said as such.
        let job: AtReboot = match local::read(&state, local::AT_REBOOT) {
            Ok(j) => j.unwrap_or_default(),
            Err(e) => {
                eprintln!("warning: {e:#}");
                AtReboot::default()
            }
        };
        let why = match std::env::var("SERVICE_RESULT").as_deref() {
            Ok("timeout") => format!("stopped: the time limit of {} minutes passed", job.time_limit_min),
            Ok(r) => format!("stopped ({r}, {} {})", std::env::var("EXIT_CODE").unwrap_or_default(), std::env::var("EXIT_STATUS").unwrap_or_default()),
            Err(_) => "stopped before it finished".to_string(),
        };
        let result = AtRebootResult { armed: job.armed, started, finished: output::now(), ok: false, what: why };
        local::write(&state, local::AT_REBOOT_RESULT, &result)?;
        local::remove(&state.join(local::AT_REBOOT))?;
        let _ = std::fs::remove_file(run.join(STARTED));
    }
    if let Some(r) = local::read::<AtRebootResult>(&state, local::AT_REBOOT_RESULT)? {
        println!("crossback: backup at reboot {}: {}", if r.ok { "done" } else { "FAILED" }, r.what);
    }
    if p.live() {
        machine::try_tool(Tool::new("journalctl").arg("--flush"), "writing the journal to disk");
        let _ = boot_next_here();
        println!("crossback: rebooting into this system");
        machine::try_tool(Tool::new("systemctl").args(["reboot", "--no-block"]), "rebooting");
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn backup_args(args: &[&str]) -> BackupArgs {
        match crate::cli::Cli::try_parse_from([&["crossback", "backup"], args].concat()).unwrap().command {
            crate::cli::Command::Backup(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_backup_boot_gets_the_options_given_with_at_reboot() {
        let a = backup_args(&["--at-reboot", "--new-generation", "--level", "5", "--max-level", "9", "--accept-shrunk", "beta", "--time-limit", "30", "beta"]);
        assert_eq!(passed_on(&a), ["--new-generation", "--level", "5", "--max-level", "9", "--accept-shrunk", "beta"]);
        assert_eq!(passed_on(&backup_args(&["--at-reboot"])), ["--level", "3"]);
    }
}
