//! `crossback mount SYSTEM` (undone by `crossback umount`): the old scripts'
//! persistent mounts, in the machine's own mount namespace.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use crossback_host::offline;

use crate::cli::MountArgs;
use crate::config::Config;
use crate::machine;
use crate::offline_rules::Allow;
use crate::Outcome;

const RECORDS: &str = "/run/crossback/mounts";

pub(super) fn record(system: &str) -> PathBuf {
    Path::new(RECORDS).join(system)
}

pub fn mount(config: &Path, a: MountArgs) -> anyhow::Result<Outcome> {
    machine::require_root("mount")?;
    let cfg = Config::load(config)?;
    let _lock = crate::slots::lock_configured(&cfg, &a.system)?;
    if record(&a.system).exists() {
        bail!("{} is mounted already (see {}); run `crossback umount {}` first", a.system, record(&a.system).display(), a.system);
    }
    let access = if a.rw { crate::stack::open::Access::Write } else { crate::stack::open::Access::Read };
    let (opened, m) = crate::stack::open::open_one(&cfg, &a.system, access)?;
    let sys = machine::system(&m, &cfg, &a.system)?;
    let fs =
        crate::offline_rules::check(&m, &sys, Allow { dirty: a.allow_dirty, mounted: false, mounted_option: None, view: false, frozen: false }, a.rw, "mount")?;
    let at = a.at.clone().unwrap_or_else(|| Path::new("/mnt/crossback").join(&sys.name));
    std::fs::create_dir_all(&at).with_context(|| format!("creating {}", at.display()))?;
    let mounted = offline::mount_tree(&at, &fs, a.rw, false, true).with_context(|| format!("mounting {} at {}", sys.name, at.display()))?;
    let points = mounted.keep();
    // What it sits in stays open as long as it is mounted: `umount` closes it.
    opened.keep(&sys.name)?;
    std::fs::create_dir_all(RECORDS).with_context(|| format!("creating {RECORDS}"))?;
    let text: String = points.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(record(&sys.name), text).with_context(|| format!("writing {}", record(&sys.name).display()))?;
    println!(
        "{} mounted {} at {} ({} filesystems); `crossback umount {}` undoes it",
        sys.name,
        if a.rw { "read-write" } else { "read-only" },
        at.display(),
        points.len(),
        sys.name
    );
    Ok(Outcome::Ok)
}

/// Processes that keep something under `path` busy: (pid, command, what).
pub(super) fn holders(path: &Path) -> Vec<(u32, String, String)> {
    let mut out = Vec::new();
    let under = |p: &Path| p.starts_with(path);
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let base = e.path();
        // The process may have ended meanwhile: then it holds nothing.
        let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default().trim().to_string();
        for what in ["cwd", "root", "exe"] {
            if std::fs::read_link(base.join(what)).is_ok_and(|p| under(&p)) {
                out.push((pid, comm.clone(), what.to_string()));
            }
        }
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            for fd in fds.flatten() {
                if let Ok(p) = std::fs::read_link(fd.path()) {
                    if under(&p) {
                        out.push((pid, comm.clone(), format!("open file {}", p.display())));
                    }
                }
            }
        }
        if let Ok(maps) = std::fs::read_to_string(base.join("maps")) {
            if let Some(l) = maps.lines().find(|l| l.split_whitespace().nth(5).is_some_and(|p| under(Path::new(p)))) {
                out.push((pid, comm.clone(), format!("mapped {}", l.split_whitespace().nth(5).unwrap_or(""))));
            }
        }
    }
    out
}
