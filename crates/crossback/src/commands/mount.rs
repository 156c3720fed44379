//! `crossback mount SYSTEM` / `crossback umount SYSTEM`: the old scripts'
//! persistent mounts, in the machine's own mount namespace.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use crossback_host::offline;

use crate::cli::{MountArgs, UmountArgs};
use crate::config::Config;
use crate::machine;
use crate::offline_rules::Allow;
use crate::Outcome;

const RECORDS: &str = "/run/crossback/mounts";

fn record(system: &str) -> PathBuf {
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
fn holders(path: &Path) -> Vec<(u32, String, String)> {
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

pub fn umount(_config: &Path, a: UmountArgs) -> anyhow::Result<Outcome> {
    machine::require_root("umount")?;
    let rec = record(&a.system);
    let text = match std::fs::read_to_string(&rec) {
        Ok(t) => t,
        Err(_) => bail!("{} is not mounted by crossback (no {})", a.system, rec.display()),
    };
    let mut points: Vec<PathBuf> = text.lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect();
    let mut busy = Vec::new();
    while let Some(p) = points.pop() {
        match rustix::mount::unmount(&p, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => println!("unmounted {}", p.display()),
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => println!("{} was not mounted any more", p.display()),
            Err(e) => {
                busy.push((p.clone(), e));
                // Its parents cannot go while it stays: keep them too.
                points.push(p);
                break;
            }
        }
    }
    if busy.is_empty() {
        let _ = std::fs::remove_file(&rec);
        // The containers and volume groups `mount` opened for it.
        for said in crossback_host::layers::mapping::close_kept(&a.system)? {
            println!("{said}");
        }
        return Ok(Outcome::Ok);
    }
    let text: String = points.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&rec, text).with_context(|| format!("writing {}", rec.display()))?;
    for (p, e) in &busy {
        eprintln!("{} is busy ({e}):", p.display());
        let h = holders(p);
        if h.is_empty() {
            eprintln!("  no process found holding it (a mount inside it, or a kernel user such as swap or a loop device)");
        }
        for (pid, comm, what) in h {
            eprintln!("  pid {pid} ({comm}): {what}");
        }
    }
    bail!("{} is still mounted at {} place(s); stop the processes above and run `crossback umount {}` again", a.system, points.len(), a.system)
}
