//! `crossback browse MOUNTPOINT`: every backup on the media as a
//! read-only filesystem (see [`crate::browse`]) until `umount MOUNTPOINT`,
//! Ctrl-C, or the backup disk goes away.
//!
//! The slots are mounted privately, as for `ls` and `restore`; the
//! filesystem must be seen by the user's shell, so crossback goes back to
//! the machine's mount namespace to mount it, holding the slots' files
//! open (and the private namespace alive) meanwhile, and comes back to it
//! to unmount the slots at the end.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use fuser::{MountOption, SessionACL};

use crate::browse::{BrowseFs, Shown};
use crate::cli::BrowseArgs;
use crate::error::{refuse, Refusal};
use crate::{backups, machine, output, slots, Outcome};

pub fn run(config: &Path, a: BrowseArgs) -> anyhow::Result<Outcome> {
    machine::require_root("browse")?;
    let at = check_mountpoint(&a.mountpoint)?;
    let outside = mount_namespace()?;
    let v = slots::open_read_only(config, "crossback-browse")?;
    v.say_damaged();
    // Every system of every generation (the passphrase, if any, is asked
    // for once, here).
    let mut shown = Vec::new();
    for slot in &v.slots {
        for g in slot.view.generations.iter().filter_map(|g| g.valid()) {
            for r in &g.recorded {
                if a.system.as_ref().is_some_and(|s| s != &r.name) {
                    continue;
                }
                let backup = backups::open_in(slot, g, &r.name)?;
                let secs = output::parse_time(g.sealed.as_deref().unwrap_or(&g.started)).unwrap_or(0);
                let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
                shown.push(Shown { generation: g.seq, time, backup });
            }
        }
    }
    if shown.is_empty() {
        match &a.system {
            Some(s) => crate::refuse!(Refusal::NoBackup, "no generation holds a backup of {} (see `crossback status`)", output::text(s)),
            None => crate::refuse!(Refusal::NoBackup, "there is no backup to show (see `crossback status`)"),
        }
    }
    shown.sort_by_key(|s| (s.generation, s.backup.record.name.clone()));
    let (count, gens) = (shown.len(), shown.iter().map(|s| s.generation).collect::<std::collections::BTreeSet<_>>().len());
    let devices: Vec<PathBuf> = v
        .cfg
        .media
        .iter()
        .flat_map(|m| [m.slot_a.get_ref(), m.slot_b.get_ref()])
        .filter_map(|u| v.machine.by_uuid(u).ok().flatten().map(|d| d.path.clone()))
        .collect();
    let fs = BrowseFs::new(shown, SystemTime::now());

    // Back in the machine's namespace to mount where the user sees it; the
    // slots stay mounted in the private one, which `inside` keeps alive.
    let inside = mount_namespace()?;
    enter(&outside).context("going back to the machine's mount namespace to show the backups")?;
    let signals = Signals::block();
    let mut options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::DefaultPermissions,
        MountOption::FSName("crossback".into()),
        MountOption::Subtype("crossback".into()),
    ];
    if a.allow_other {
        options.push(MountOption::CUSTOM("allow_other".into()));
    }
    let mut cfg = fuser::Config::default();
    cfg.mount_options = options;
    cfg.acl = if a.allow_other { SessionACL::All } else { SessionACL::Owner };
    let mut session = fuser::Session::new(fs, &at, &cfg).with_context(|| format!("mounting the backups at {}", at.display()))?;
    println!(
        "{} of {} in {} shown at {} (read-only{}); `umount {}` or Ctrl-C ends it",
        output::count(count as u64, "backup", "backups"),
        output::count(v.slots.len() as u64, "slot", "slots"),
        output::count(gens as u64, "generation", "generations"),
        at.display(),
        if a.allow_other { ", every user as the files' owners and modes allow" } else { ", root only" },
        at.display()
    );
    let unmounter = session.unmount_callable();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        let at = at.clone();
        std::thread::spawn(move || watch(signals, unmounter, stop, devices, at))
    };
    let served = session.run();
    stop.store(true, Ordering::Relaxed);
    let why = watcher.join().unwrap_or(Ended::Unmounted);
    // Back inside to unmount the slots, single-threaded again.
    enter(&inside).context("going back to the private mount namespace to unmount the slots")?;
    drop(v);
    served.with_context(|| format!("serving the backups at {}", at.display()))?;
    match why {
        Ended::Unmounted => println!("{} unmounted; done", at.display()),
        Ended::Signal(n) => println!("stopped (signal {n}); {} unmounted", at.display()),
        Ended::DiskGone(d) => {
            eprintln!("the backup disk is gone ({} vanished); {} unmounted", d.display(), at.display());
            return Ok(Outcome::Partial);
        }
    }
    Ok(Outcome::Ok)
}

/// The mount point: an existing empty directory (what is in a directory
/// would be hidden while the backups are shown over it).
fn check_mountpoint(p: &Path) -> anyhow::Result<PathBuf> {
    let at =
        std::fs::canonicalize(p).map_err(|e| refuse(Refusal::Usage, format!("{}: {e}; give an existing empty directory (mkdir it first)", p.display())))?;
    let meta = std::fs::metadata(&at).with_context(|| format!("reading {}", at.display()))?;
    if !meta.is_dir() {
        crate::refuse!(Refusal::Usage, "{} is not a directory", at.display());
    }
    if std::fs::read_dir(&at).with_context(|| format!("reading {}", at.display()))?.next().is_some() {
        crate::refuse!(Refusal::TargetNotEmpty, "{} is not empty: show the backups in an empty directory", at.display());
    }
    Ok(at)
}

/// This process's mount namespace, held open.
fn mount_namespace() -> anyhow::Result<OwnedFd> {
    let f = std::fs::File::open("/proc/thread-self/ns/mnt").context("opening this process's mount namespace")?;
    Ok(f.into())
}

/// Moves this (single-threaded) process into the mount namespace `ns`.
fn enter(ns: &OwnedFd) -> anyhow::Result<()> {
    rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(ns), Some(rustix::thread::LinkNameSpaceType::Mount))?;
    Ok(())
}

enum Ended {
    Unmounted,
    Signal(i32),
    DiskGone(PathBuf),
}

/// Waits for Ctrl-C (or another ending signal) or the backup disk going,
/// and unmounts; returns when the filesystem was unmounted by anyone.
fn watch(signals: Signals, mut unmounter: fuser::SessionUnmounter, stop: Arc<AtomicBool>, devices: Vec<PathBuf>, at: PathBuf) -> Ended {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ended::Unmounted;
        }
        if let Some(n) = signals.wait(Duration::from_millis(500)) {
            if let Err(e) = unmounter.unmount() {
                eprintln!("crossback browse: unmounting {}: {e}", at.display());
            }
            return Ended::Signal(n);
        }
        if let Some(d) = devices.iter().find(|d| !d.exists()) {
            // Reads already fail (EIO); unmounting ends the run.
            if let Err(e) = unmounter.unmount() {
                eprintln!("crossback browse: unmounting {}: {e}", at.display());
            }
            return Ended::DiskGone(d.clone());
        }
    }
}

/// The signals that end `browse`, blocked in every thread and taken by
/// the watcher with `sigtimedwait`.
struct Signals {
    set: libc::sigset_t,
}

// SAFETY: a sigset_t is plain data, read by the thread that owns it.
unsafe impl Send for Signals {}

impl Signals {
    /// Blocks them in this thread, before any other starts (threads inherit the mask).
    fn block() -> Signals {
        // SAFETY: `set` is initialised by sigemptyset before use; the
        // calls read and write only it and this thread's signal mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Signals { set }
        }
    }

    /// One of them, if it came within `limit`.
    fn wait(&self, limit: Duration) -> Option<i32> {
        let ts = libc::timespec { tv_sec: limit.as_secs() as libc::time_t, tv_nsec: limit.subsec_nanos() as libc::c_long };
        // SAFETY: both pointers are valid for the call; no siginfo is asked for.
        let n = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (n > 0).then_some(n)
    }
}
