//! What crossback keeps on the system it runs on, apart from the
//! configuration: the backup armed for the next reboot and the result of
//! the last one, the schedule, and the backups last seen on the media (for
//! `status` and the reminder when the media is not attached).
//!
//! Paths are under `/` — or under `$CROSSBACK_SYSTEM_ROOT` (tests: units,
//! rules and state written into a directory, and nothing started).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::layout::{Generation, State};

pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn new() -> Paths {
        let root = std::env::var_os("CROSSBACK_SYSTEM_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        Paths { root }
    }

    /// The system's root (`/`, or a test's directory).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True on the machine itself (units are started, the machine reboots).
    pub fn live(&self) -> bool {
        self.root == Path::new("/")
    }

    fn at(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// `/var/lib/crossback`: also the target of the `/system-update` link.
    pub fn state_dir(&self) -> PathBuf {
        self.at(STATE_DIR)
    }

    pub fn units_dir(&self) -> PathBuf {
        self.at("/etc/systemd/system")
    }

    pub fn udev_rules_dir(&self) -> PathBuf {
        self.at("/etc/udev/rules.d")
    }

    /// The backup boot's own notes (what it froze, that it started): gone with the boot.
    pub fn run_dir(&self) -> PathBuf {
        self.at("/run/crossback/at-reboot")
    }

    /// systemd's offline-update trigger (systemd.offline-updates(7)).
    pub fn system_update(&self) -> PathBuf {
        self.at("/system-update")
    }
}

/// The link target `/system-update` has while a backup at reboot is armed.
pub const STATE_DIR: &str = "/var/lib/crossback";
pub const AT_REBOOT: &str = "at-reboot.toml";
pub const AT_REBOOT_RESULT: &str = "at-reboot-result.toml";
pub const HISTORY: &str = "history.toml";
pub const SCHEDULE: &str = "schedule.toml";
pub const PUSHES: &str = "pushes.toml";

/// A backup armed for the next boot (`backup --at-reboot`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtReboot {
    pub armed: String,
    /// The systems to back up (empty: every one not yet in the open generation).
    #[serde(default)]
    pub systems: Vec<String>,
    pub time_limit_min: u64,
    /// How long to wait for the backup disk in that boot.
    pub disk_wait_secs: u64,
    /// The other options of `backup` given with `--at-reboot` (`--level 5`, …), for that boot.
    #[serde(default)]
    pub options: Vec<String>,
}

/// How the last backup at reboot ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtRebootResult {
    pub armed: String,
    pub started: String,
    pub finished: String,
    pub ok: bool,
    /// What was done, or why it was not.
    pub what: String,
}

/// The schedule `crossback schedule` installed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub installed: String,
    pub remind_after_days: u32,
    pub slot_a: String,
    pub slot_b: String,
    /// `schedule --push`: the hourly push timer is installed too.
    #[serde(default)]
    pub push: bool,
}

/// How the last push to each remote ended (`status` shows it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushes {
    #[serde(default)]
    pub remote: BTreeMap<String, PushResult>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResult {
    pub finished: String,
    pub ok: bool,
    /// The newest generation the remote holds, as that push left it.
    #[serde(default)]
    pub newest: Option<u64>,
    /// What was done, or why it was not.
    pub what: String,
}

/// One system's newest backup, as last seen on the media.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBackup {
    pub finished: String,
    pub generation: u64,
    /// How the run that made it was started, when it ran here: "at reboot",
    /// "plugged in", "by hand" (empty: made from another system).
    #[serde(default)]
    pub how: String,
}

/// The media as last seen from this system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub seen: String,
    /// The newest sealed generation: its number and when it was sealed.
    pub sealed_seq: Option<u64>,
    pub sealed: Option<String>,
    /// The open generation, if any, and the systems it still misses.
    pub open_seq: Option<u64>,
    #[serde(default)]
    pub open_missing: Vec<String>,
    #[serde(default)]
    pub systems: BTreeMap<String, LastBackup>,
}

impl History {
    /// From the generations on both slots; `ran`: the systems this run
    /// recorded, and how the run started (kept from `old` for the backups
    /// it does not replace).
    pub fn from_generations(gens: &[&Generation], old: &History, ran: &[String], how: &str) -> History {
        let sealed = gens.iter().filter(|g| g.state == State::Sealed).max_by_key(|g| g.seq);
        let open = gens.iter().filter(|g| g.state == State::Open).max_by_key(|g| g.seq).filter(|g| sealed.is_none_or(|s| g.seq > s.seq));
        let mut systems = BTreeMap::new();
        for g in gens.iter() {
            for r in &g.recorded {
                let newer = systems.get(&r.name).is_none_or(|b: &LastBackup| b.generation < g.seq);
                if newer {
                    let how = if ran.contains(&r.name) {
                        how.to_string()
                    } else {
                        old.systems.get(&r.name).filter(|o| o.generation == g.seq && o.finished == r.finished).map(|o| o.how.clone()).unwrap_or_default()
                    };
                    systems.insert(r.name.clone(), LastBackup { finished: r.finished.clone(), generation: g.seq, how });
                }
            }
        }
        History {
            seen: crate::output::now(),
            sealed_seq: sealed.map(|g| g.seq),
            sealed: sealed.and_then(|g| g.sealed.clone()),
            open_seq: open.map(|g| g.seq),
            open_missing: open.map(|g| g.missing().iter().map(|s| s.to_string()).collect()).unwrap_or_default(),
            systems,
        }
    }
}

/// Reads a state file; `None` when there is none.
pub fn read<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> anyhow::Result<Option<T>> {
    let p = dir.join(name);
    match std::fs::read_to_string(&p) {
        Ok(t) => Ok(Some(toml::from_str(&t).with_context(|| format!("reading {} (remove it if it is damaged)", p.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Writes a state file durably (new file, fsync, rename, fsync).
pub fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> anyhow::Result<()> {
    write_mode(dir, name, &toml::to_string(value)?, 0o600)
}

/// Writes a unit or a rule durably, mode 0644, creating its directory.
pub fn write_text(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    write_mode(dir, name, text, 0o644)
}

/// Writes a file durably with `mode`, creating its directory. State files
/// are root's only (0600): they name the slots and the systems.
fn write_mode(dir: &Path, name: &str, text: &str, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crossback_host::beneath::Dir::open(dir)?.write_durable_mode(name, text.as_bytes(), mode)?;
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

/// Removes a file or link if it is there, durably; true if it was.
pub fn remove(p: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(p) {
        Ok(()) => {
            sync_dir(p.parent().unwrap_or(Path::new("/")))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

/// Links `link` to `target` atomically (a new link renamed over it), durably.
pub fn symlink(target: &Path, link: &Path) -> anyhow::Result<()> {
    let tmp = link.with_extension("crossback-new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("creating {}", tmp.display()))?;
    std::fs::rename(&tmp, link).with_context(|| format!("creating {}", link.display()))?;
    sync_dir(link.parent().unwrap_or(Path::new("/")))
}

/// Records what a backup run saw on the media; a system that cannot keep
/// it (its root is read-only: the backup at reboot) says so and goes on.
pub fn record_history(gens: &[&Generation], ran: &[String], how: &str) {
    let dir = std::env::var_os("CROSSBACK_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| Paths::new().state_dir());
    // A note, not the backups: one that does not read is replaced by what the media holds now.
    let old: History = read(&dir, HISTORY).ok().flatten().unwrap_or_default();
    let new = History::from_generations(gens, &old, ran, how);
    if let Err(e) = write(&dir, HISTORY, &new) {
        eprintln!("note: what the media holds was not noted on this system ({e:#}); `crossback status` shows it when the media is attached");
    }
}
