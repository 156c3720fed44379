//! Looking inside a filesystem without changing it: what Linux systems it
//! holds (`os-release`, `fstab`, an init), whether it is a crossback slot,
//! and its free space.
//!
//! The work happens in a child process — this executable started again
//! with [`CHILD_ARG`] — that first unshares its mount namespace and makes
//! every mount private: the read-only mount it makes is invisible to the
//! rest of the machine and disappears with the child, even on `kill -9`.
//! The device is set read-only (BLKROSET) for the time of the mount unless
//! it is mounted elsewhere already, and journals are not replayed
//! (`noload`, `norecovery`, `rescue=nologreplay`).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{MountFlags, UnmountFlags};
use serde::{Deserialize, Serialize};

use crate::blockdev::Device;
use crate::error::{Error, Result};

/// The hidden first argument that makes the executable serve one inspection.
pub const CHILD_ARG: &str = "__crossback-inspect";

/// A Linux system found inside a filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundRoot {
    /// btrfs subvolume holding it (`@`), empty for the filesystem's top level.
    pub subvol: String,
    pub os_release: BTreeMap<String, String>,
    /// The system's `/etc/fstab`, as text (empty if it has none).
    pub fstab: String,
    /// The system's `/etc/crypttab`, as text (empty if it has none).
    #[serde(default)]
    pub crypttab: String,
    pub has_init: bool,
    /// Only from [`key_files`]: the key files its crypttab names inside the
    /// system, by path, with their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<(String, Vec<u8>)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    pub roots: Vec<FoundRoot>,
    /// What the caller's own look at the mounted filesystem found (see
    /// [`serve`]): this crate does not know what it means.
    #[serde(default)]
    pub extra: Option<serde_json::Value>,
    pub size: u64,
    pub free: u64,
    pub used: u64,
}

/// Inspects `dev` in a child process with its own mount namespace.
/// `mounted_elsewhere`: the device is mounted already (it is then not set
/// read-only, which would break the other mount).
pub fn inspect(dev: &Device, mounted_elsewhere: bool) -> Result<Inspection> {
    run_child(dev, mounted_elsewhere, false)
}

/// As [`inspect`], and each root's `keys`: the key files its crypttab
/// names (files inside the system, 64 KiB at most each). Key material:
/// asked for only to open a container with it.
pub fn key_files(dev: &Device, mounted_elsewhere: bool) -> Result<Inspection> {
    run_child(dev, mounted_elsewhere, true)
}

fn run_child(dev: &Device, mounted_elsewhere: bool, keys: bool) -> Result<Inspection> {
    let exe = std::env::current_exe().map_err(crate::error::ctx(|| "finding crossback's own executable".into()))?;
    let out = crate::tool::Tool::new(exe)
        .arg(CHILD_ARG)
        .arg(&dev.path)
        .arg(&dev.fstype)
        .arg(if mounted_elsewhere { "shared" } else { "exclusive" })
        .args(keys.then_some("keys"))
        .command()
        .output()
        .map_err(crate::error::ctx(|| format!("starting the inspection of {}", dev.path.display())))?;
    if !out.status.success() {
        return Err(Error::Command(format!("cannot look inside {} ({}): {}", dev.path.display(), dev.fstype, String::from_utf8_lossy(&out.stderr).trim())));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| Error::Command(format!("inspection of {} gave unreadable output: {e}", dev.path.display())))
}

/// The caller's own look at a mounted filesystem (its root), in the child.
pub type Look = fn(&Path) -> Option<serde_json::Value>;

/// The child's side: called by `main` when `args[1] == CHILD_ARG`.
/// Prints the [`Inspection`] as JSON; returns the exit code. `extra` looks
/// at the filesystem for the caller (a crossback slot's contents, say).
pub fn serve(args: &[String], extra: Look) -> i32 {
    match serve_inner(args, extra) {
        Ok(i) => {
            println!("{}", serde_json::to_string(&i).unwrap_or_default());
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Where private scratch space is mounted: an empty directory on the
/// machine; inside a private namespace, a tmpfs that only it sees.
pub const SCRATCH: &str = "/run/crossback/private";

/// A scratch directory in the private namespace: a tmpfs over
/// [`SCRATCH`], so nothing is created on the machine's disks and other
/// processes (and paths such as /tmp) are not affected.
pub fn scratch_dir(name: &str) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(SCRATCH).map_err(crate::error::ctx(|| format!("creating {SCRATCH}")))?;
    rustix::mount::mount("crossback", SCRATCH, "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, Some(c"mode=0700,size=1m"))
        .map_err(crate::error::ctx(|| "mounting a private tmpfs".into()))?;
    let dir = Path::new(SCRATCH).join(name);
    std::fs::create_dir_all(&dir).map_err(crate::error::ctx(|| format!("creating {}", dir.display())))?;
    Ok(dir)
}

fn serve_inner(args: &[String], extra: Look) -> Result<Inspection> {
    let (dev, fstype, shared, keys) = match args {
        [_, _, dev, fstype, mode, rest @ ..] => (Path::new(dev), fstype.as_str(), mode == "shared", rest.first().is_some_and(|k| k == "keys")),
        _ => return Err(Error::Refused("usage: __crossback-inspect DEVICE FSTYPE shared|exclusive".into())),
    };
    crate::ns::enter_private()?;
    let mnt = scratch_dir("fs")?;
    let _ro = if shared { None } else { Some(crate::rodev::ReadOnly::set(dev)?) };
    let mut opts = if shared { String::new() } else { crate::fstype::of(fstype).map_or("", |t| t.no_replay).to_string() };
    if fstype == "btrfs" {
        opts.push_str(",subvolid=5");
    }
    let data = CString::new(opts.trim_matches(',')).map_err(|_| Error::Refused("mount options with a NUL byte".into()))?;
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let mounted = rustix::mount::mount(dev, &mnt, fstype, flags | MountFlags::RDONLY, Some(data.as_c_str()));
    match mounted {
        Ok(()) => {}
        // Mounted read-write elsewhere: the superblock is shared and stays
        // read-write; this mount alone is made read-only.
        Err(rustix::io::Errno::BUSY) if shared => {
            rustix::mount::mount(dev, &mnt, fstype, flags, Some(data.as_c_str()))
                .map_err(|e| Error::Command(format!("mounting {} ({fstype}) a second time: {e}", dev.display())))?;
            rustix::mount::mount_remount(&mnt, MountFlags::BIND | MountFlags::RDONLY | flags, "")
                .map_err(|e| Error::Command(format!("making the second mount of {} read-only: {e}", dev.display())))?;
        }
        Err(e) => return Err(Error::Command(format!("mounting {} ({fstype}) read-only: {e}", dev.display()))),
    }
    let result = look(&mnt, fstype, keys).map(|mut i| {
        i.extra = extra(&mnt);
        i
    });
    let _ = rustix::mount::unmount(&mnt, UnmountFlags::DETACH);
    result
}

fn open_root(p: &Path) -> Result<OwnedFd> {
    rustix::fs::open(p, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(crate::error::ctx(|| format!("opening {}", p.display())))
}

/// Reads `path` inside the tree at `root` as if `root` were `/` (absolute
/// symlinks such as `etc/os-release -> /usr/lib/os-release` stay inside).
/// None when there is no such file; a file that does not read, or is
/// larger than `limit`, is an error (read as empty, a system's fstab
/// would lose its filesystems from the backup unseen).
pub(crate) fn read_in_root(root: &OwnedFd, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
    let what = || format!("reading {path} in the system's root");
    let fd = match rustix::fs::openat2(
        root,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(Error::Io { what: what(), source: e.into() }),
    };
    let mut f = std::fs::File::from(fd);
    if !f.metadata().map_err(crate::error::ctx(what))?.is_file() {
        return Ok(None);
    }
    let mut buf = Vec::new();
    f.by_ref().take(limit + 1).read_to_end(&mut buf).map_err(crate::error::ctx(what))?;
    if buf.len() as u64 > limit {
        return Err(Error::Parse(format!("{path} in the system's root is larger than {limit} bytes")));
    }
    Ok(Some(buf))
}

fn exists_in_root(root: &OwnedFd, path: &str) -> bool {
    rustix::fs::openat2(root, path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS).is_ok()
}

/// `os-release` as key/value pairs (quotes removed).
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\''))).unwrap_or(v);
            (k.trim().to_string(), v.replace("\\\"", "\"").replace("\\$", "$").replace("\\\\", "\\"))
        })
        .collect()
}

/// A system root inside `dir`, if there is one; with `keys`, the key
/// files its crypttab names.
pub(crate) fn find_root(dir: &Path, subvol: &str, keys: bool) -> Result<Option<FoundRoot>> {
    let root = open_root(dir)?;
    let os = match read_in_root(&root, "etc/os-release", 1 << 16)? {
        Some(os) => Some(os),
        None => read_in_root(&root, "usr/lib/os-release", 1 << 16)?,
    };
    let Some(os) = os else { return Ok(None) };
    let has_init = ["sbin/init", "usr/sbin/init", "lib/systemd/systemd", "usr/lib/systemd/systemd", "bin/init"].iter().any(|p| exists_in_root(&root, p));
    // A system without them mounts nothing but its root and opens nothing.
    let text = |p: &str| -> Result<String> { Ok(read_in_root(&root, p, 1 << 20)?.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()) };
    let (fstab, crypttab) = (text("etc/fstab")?, text("etc/crypttab")?);
    let mut found_keys = Vec::new();
    if keys {
        for e in crate::layers::parse_crypttab(&crypttab).entries {
            let Some(path) = e.keyfile.filter(|k| k.starts_with('/') && !k.starts_with("/dev/")) else { continue };
            // A key file that does not read is left out: the passphrase is asked instead.
            if let Ok(Some(bytes)) = read_in_root(&root, path.trim_start_matches('/'), 64 << 10) {
                found_keys.push((path, bytes));
            }
        }
    }
    Ok(Some(FoundRoot { subvol: subvol.to_string(), os_release: parse_os_release(&String::from_utf8_lossy(&os)), fstab, crypttab, has_init, keys: found_keys }))
}

fn look(mnt: &Path, fstype: &str, keys: bool) -> Result<Inspection> {
    let mut i = Inspection::default();
    if let Some(r) = find_root(mnt, "", keys)? {
        i.roots.push(r);
    }
    let mut top: Vec<String> = std::fs::read_dir(mnt)
        .map_err(crate::error::ctx(|| format!("listing {}", mnt.display())))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(crate::error::ctx(|| format!("listing {}", mnt.display())))?;
    top.sort();
    if fstype == "btrfs" {
        // Subvolumes at the top level (their root inode is 256): @, @home, …
        for name in &top {
            let p = mnt.join(name);
            if let Ok(st) = rustix::fs::stat(&p) {
                if st.st_ino == 256 && rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
                    if let Some(r) = find_root(&p, name, keys)? {
                        i.roots.push(r);
                    }
                }
            }
        }
    }
    if let Ok(s) = rustix::fs::statvfs(mnt) {
        i.size = s.f_blocks * s.f_frsize;
        i.free = s.f_bavail * s.f_frsize;
        i.used = (s.f_blocks - s.f_bfree) * s.f_frsize;
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quotes() {
        let m = parse_os_release("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n# comment\nVERSION_ID='12'\n");
        assert_eq!(m["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(m["ID"], "debian");
        assert_eq!(m["VERSION_ID"], "12");
    }
}
