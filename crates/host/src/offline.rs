//! Reading a system that is not running without changing it: the checks
//! that say whether a filesystem may be mounted at all, and the mounts.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use rustix::mount::{MountFlags, UnmountFlags};

use crate::error::{Error, Result};
use crate::rodev::ReadOnly;

/// One filesystem to mount.
#[derive(Clone, Debug)]
pub struct FsMount {
    pub mountpoint: String,
    pub device: PathBuf,
    pub fstype: String,
    pub subvol: Option<String>,
    /// The system's own options (fstab), used for read-write mounts.
    pub options: Vec<String>,
    /// Where this filesystem is already mounted read-write (by the running
    /// system, e.g. a shared ESP at `/boot/efi`): a read-only mount of the
    /// device is then impossible, so it is read through a read-only bind of
    /// that mount instead, and its device is left writable.
    pub view_of: Option<PathBuf>,
}

/// Why a filesystem was not cleanly unmounted, if it was not: a journal
/// or log that a mount would replay (and so write).
pub fn dirty(dev: &Path, fstype: &str) -> Result<Option<String>> {
    crate::fstype::of(fstype).map_or(Ok(None), |t| t.dirty(dev))
}

fn subvol_option(m: &FsMount) -> String {
    m.subvol.as_ref().map(|sv| format!("subvol={sv}")).unwrap_or_default()
}

/// Options for a read-only mount that writes nothing, journal included.
fn ro_options(m: &FsMount) -> String {
    let mut o: Vec<String> = Vec::new();
    let nr = crate::fstype::of(&m.fstype).map_or("", |t| t.no_replay);
    if !nr.is_empty() {
        o.push(nr.to_string());
    }
    if let Some(sv) = &m.subvol {
        o.push(format!("subvol={sv}"));
    }
    o.join(",")
}

/// Options for a read-write mount: the system's own, less what only makes
/// sense to its boot (`noauto`, `x-systemd.*`, `nofail`, …).
fn rw_options(m: &FsMount) -> String {
    let mut o: Vec<String> = m
        .options
        .iter()
        .filter(|o| {
            !matches!(o.as_str(), "defaults" | "auto" | "noauto" | "nofail" | "user" | "users" | "nouser" | "owner" | "_netdev" | "rw" | "ro")
                && !o.starts_with("x-")
                && !o.starts_with("comment=")
                && !o.starts_with("errors=")
                && !o.starts_with("subvol")
        })
        .cloned()
        .collect();
    if let Some(sv) = &m.subvol {
        o.push(format!("subvol={sv}"));
    }
    o.join(",")
}

/// What is mounted, to be unmounted in reverse order.
#[derive(Debug, Default)]
pub struct Mounted {
    pub points: Vec<PathBuf>,
    read_only: Vec<ReadOnly>,
    /// FUSE drivers serving some of the mounts (they die with crossback).
    fuse: Vec<std::process::Child>,
    /// Mounts meant to outlive crossback (`crossback mount`): FUSE drivers
    /// are then started as daemons.
    pub persistent: bool,
}

impl Mounted {
    /// Unmounts everything, last first. Returns what could not be unmounted.
    pub fn unmount(&mut self) -> Vec<(PathBuf, String)> {
        let mut failed = Vec::new();
        while let Some(p) = self.points.pop() {
            if let Err(e) = rustix::mount::unmount(&p, UnmountFlags::empty()) {
                failed.push((p, e.to_string()));
            }
        }
        for mut c in self.fuse.drain(..) {
            let _ = c.wait();
        }
        if failed.is_empty() {
            self.read_only.clear();
        }
        failed
    }
}

impl Mounted {
    /// Leaves everything mounted (a persistent mount); returns the mount points in order.
    pub fn keep(mut self) -> Vec<PathBuf> {
        self.read_only.clear();
        // Persistent mounts keep their FUSE drivers running after crossback.
        self.fuse.clear();
        std::mem::take(&mut self.points)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        while let Some(p) = self.points.pop() {
            if rustix::mount::unmount(&p, UnmountFlags::empty()).is_err() {
                let _ = rustix::mount::unmount(&p, UnmountFlags::DETACH);
            }
        }
        for mut c in self.fuse.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn is_mount_point(at: &Path) -> Result<bool> {
    let at = std::fs::canonicalize(at).unwrap_or_else(|_| at.to_path_buf());
    let mounts = crate::mountinfo::own().map_err(|e| Error::Io { what: "reading /proc/self/mountinfo".into(), source: e })?;
    Ok(mounts.iter().any(|m| Path::new(&m.mountpoint) == at))
}

/// Mounts one filesystem at `at`: read-only without journal replay (the
/// device set read-only first when `set_ro`), or read-write with the
/// system's options. Falls back to a FUSE driver when the kernel does not
/// know the type.
pub fn mount_one(m: &FsMount, at: &Path, rw: bool, set_ro: bool, into: &mut Mounted) -> Result<()> {
    mount_with(m, at, rw, set_ro, false, into)
}

/// A read-only mount of one of crossback's own filesystems (a slot) that
/// replays its journal first, as any mount would: after a power cut the
/// journal holds the last manifests written, and a view without them
/// would be an old one.
pub fn mount_replaying(m: &FsMount, at: &Path, into: &mut Mounted) -> Result<()> {
    mount_with(m, at, false, false, true, into)
}

/// A read-only bind of the mount at `from`: the filesystem as the running
/// system sees it, through a mount that cannot write.
fn mount_view(from: &Path, at: &Path, into: &mut Mounted) -> Result<()> {
    let io = |what: &str, e: rustix::io::Errno| Error::Io { what: format!("{what} {} at {}", from.display(), at.display()), source: e.into() };
    rustix::mount::mount_bind(from, at).map_err(|e| io("binding", e))?;
    into.points.push(at.to_path_buf());
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    rustix::mount::mount_remount(at, flags | MountFlags::BIND, "").map_err(|e| io("making read-only the view of", e))
}

fn mount_with(m: &FsMount, at: &Path, rw: bool, set_ro: bool, replay: bool, into: &mut Mounted) -> Result<()> {
    if let Some(from) = m.view_of.as_deref().filter(|_| !rw) {
        return mount_view(from, at, into);
    }
    if !rw && set_ro {
        into.read_only.push(ReadOnly::set(&m.device)?);
    }
    // Fail closed: options that cannot be passed (a NUL byte from a crafted
    // fstab) must not become no options, which would drop `noload`.
    let data = CString::new(if rw {
        rw_options(m)
    } else if replay {
        subvol_option(m)
    } else {
        ro_options(m)
    })
    .map_err(|_| Error::Refused(format!("the mount options of {} hold a NUL byte: refused", m.mountpoint)))?;
    let flags = if rw { MountFlags::empty() } else { MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV };
    // EBUSY can be passing: a probe (blkid, udev) holding the device open
    // exclusively for a moment. Try again for up to 3 seconds.
    let mut tries = 0;
    let result = loop {
        match rustix::mount::mount(&m.device, at, m.fstype.as_str(), flags, Some(data.as_c_str())) {
            Err(rustix::io::Errno::BUSY) if tries < 30 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            r => break r,
        }
    };
    match result {
        Ok(()) => {
            into.points.push(at.to_path_buf());
            Ok(())
        }
        Err(rustix::io::Errno::NODEV) => {
            let Some(driver) = crate::fstype::of(&m.fstype).and_then(|t| t.fuse_driver()) else {
                return Err(Error::Refused(format!(
                    "cannot mount {} ({}) at {}: this kernel has no {} driver and no FUSE driver for it is installed (for vfat: apt-get install fusefat)",
                    m.device.display(),
                    m.fstype,
                    m.mountpoint,
                    m.fstype
                )));
            };
            // In the foreground, as crossback's child: it dies with crossback
            // (a daemon would keep the private namespace and its mounts alive).
            let mut cmd = crate::tool::Tool::new(driver).arg("-f").arg(&m.device).arg(at).arg("-o").arg(if rw { "rw+" } else { "ro" }).command();
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
            if into.persistent {
                // Detached from crossback: it must outlive it.
                // SAFETY: only setsid between fork and exec.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                        rustix::process::setsid()?;
                        Ok(())
                    });
                }
            } else {
                // SAFETY: only prctl between fork and exec.
                unsafe {
                    std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
                        Ok(())
                    });
                }
            }
            let mut child = cmd.spawn().map_err(|e| Error::Command(format!("running {driver}: {e}")))?;
            let start = std::time::Instant::now();
            while !is_mount_point(at)? {
                if let Ok(Some(st)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    return Err(Error::Command(format!("{driver} could not mount {} at {} ({st}): {}", m.device.display(), at.display(), err.trim())));
                }
                if start.elapsed() > std::time::Duration::from_secs(10) {
                    let _ = child.kill();
                    return Err(Error::Command(format!("{driver} did not mount {} at {} within 10 s", m.device.display(), at.display())));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            into.points.push(at.to_path_buf());
            into.fuse.push(child);
            Ok(())
        }
        Err(e) => Err(Error::Io {
            what: format!("mounting {} ({}) {} at {}", m.device.display(), m.fstype, if rw { "read-write" } else { "read-only" }, at.display()),
            source: e.into(),
        }),
    }
}

/// Mounts a system's filesystems as one tree under `target`: the root
/// first, then the others in fstab order (parents before children).
pub fn mount_tree(target: &Path, fs: &[FsMount], rw: bool, set_ro: bool, persistent: bool) -> Result<Mounted> {
    let mut mounted = Mounted::default();
    mounted.persistent = persistent;
    let mut order: Vec<&FsMount> = fs.iter().collect();
    order.sort_by_key(|m| if m.mountpoint == "/" { 0 } else { m.mountpoint.matches('/').count() });
    let mut done: Vec<&str> = Vec::new();
    for m in order {
        // The mount point comes from the system's fstab or a slot's record:
        // it must be a plain path, and resolve beneath the target without a
        // symlink (the system's own `/home -> /elsewhere` must not lead the
        // mount out of its root).
        if !crate::fstab::clean_mountpoint(&m.mountpoint) {
            return Err(Error::Refused(format!("mount point {:?} is not a plain absolute path: refused", m.mountpoint)));
        }
        let rel = m.mountpoint.trim_start_matches('/');
        let at = target.join(rel);
        if !rel.is_empty() {
            // Resolved beneath the deepest filesystem of the tree mounted
            // above it (`/boot/efi` on a `/boot` of its own): a resolution
            // beneath the root alone would stop at that mount.
            let parent = done
                .iter()
                .map(|p| p.trim_start_matches('/'))
                .filter(|p| p.is_empty() || rel.starts_with(&format!("{p}/")))
                .max_by_key(|p| p.len())
                .unwrap_or("");
            let rest = rel[parent.len()..].trim_start_matches('/');
            let root = crate::beneath::Dir::open(&target.join(parent))?;
            let found = if rw { root.create_dirs(rest).map(|_| ()) } else { root.dir(rest).map(|_| ()) };
            if let Err(e) = found {
                return Err(Error::Refused(format!(
                    "mount point {} is not a directory in the system's root ({e}): cannot mount {} there",
                    m.mountpoint,
                    m.device.display()
                )));
            }
        }
        mount_one(m, &at, rw, set_ro, &mut mounted)?;
        done.push(&m.mountpoint);
    }
    Ok(mounted)
}
