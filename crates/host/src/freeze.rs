//! The running system made read-only for a backup at boot (systemd's
//! offline-update mode), and writable again: its mounts remounted with
//! util-linux's `mount`, and the processes that keep one writable named.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Result;

/// A process holding a file open on a filesystem in a way that keeps it
/// from being remounted read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    pub pid: u32,
    pub command: String,
    pub path: String,
    /// Open for writing (else: a deleted file, whose blocks are freed only when closed).
    pub writing: bool,
}

impl std::fmt::Display for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.writing { "writing" } else { "holding the deleted" };
        write!(f, "{} (pid {}) {how} {}", self.command, self.pid, self.path)
    }
}

/// Is an `fdinfo` flags value (octal) open for writing?
fn flags_write(fdinfo: &str) -> bool {
    fdinfo.lines().find_map(|l| l.strip_prefix("flags:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok()).is_some_and(|f| matches!(f & 0o3, 1 | 2))
}

/// The processes with a file open for writing on the filesystem mounted at
/// `mountpoint` (or a deleted file open there): what makes a remount
/// read-only fail with "busy".
pub fn writers(mountpoint: &Path) -> Vec<Writer> {
    let Ok(dev) = std::fs::metadata(mountpoint).map(|m| m.dev()) else { return Vec::new() };
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let command = std::fs::read_to_string(p.path().join("comm")).map(|c| c.trim().to_string()).unwrap_or_default();
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(md) = std::fs::metadata(fd.path()) else { continue };
            if md.dev() != dev {
                continue;
            }
            let path = std::fs::read_link(fd.path()).map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
            let info = std::fs::read_to_string(p.path().join("fdinfo").join(fd.file_name())).unwrap_or_default();
            let writing = flags_write(&info);
            if writing || (md.is_file() && md.nlink() == 0) {
                out.push(Writer { pid, command: command.clone(), path, writing });
            }
        }
    }
    out
}

/// `mount -o remount,ro|rw MOUNTPOINT`: the filesystem as a whole (every
/// mount of it) becomes read-only or writable; the mount's other options
/// stay as they are.
pub fn remount(mountpoint: &Path, read_only: bool) -> Result<()> {
    let opt = if read_only { "remount,ro" } else { "remount,rw" };
    crate::tool::Tool::new("mount").args(["-o", opt]).arg(mountpoint).run()?;
    Ok(())
}

/// The mount points in the order to make them read-only: deepest first
/// (a mount below another keeps its parent's directory busy otherwise).
pub fn freeze_order(mut points: Vec<PathBuf>) -> Vec<PathBuf> {
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_flags() {
        assert!(flags_write("pos:\t0\nflags:\t0100001\nmnt_id:\t29\n"));
        assert!(flags_write("flags:\t02\n"));
        assert!(!flags_write("pos:\t0\nflags:\t0100000\nmnt_id:\t29\n"));
        assert!(!flags_write("pos:\t0\n"));
    }

    #[test]
    fn deepest_first() {
        let order = freeze_order(vec!["/".into(), "/boot/efi".into(), "/home".into(), "/boot".into()]);
        assert_eq!(order, [PathBuf::from("/boot/efi"), "/home".into(), "/boot".into(), "/".into()]);
    }

    #[test]
    fn finds_own_writer_of_another_process() {
        // A child process holding a file open for writing on this test's filesystem.
        let dir = std::env::temp_dir().join(format!("crossback-writers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("held");
        let mut child = crate::tool::Tool::new("sh")
            .arg("-c")
            .arg(format!("exec 3>>'{}'; sleep 5", f.display()))
            .command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut found = Vec::new();
        for _ in 0..50 {
            found = writers(&dir).into_iter().filter(|w| w.pid == child.id() && w.path.starts_with(dir.to_str().unwrap())).collect();
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].writing && found[0].path.ends_with("held"), "{found:?}");
    }
}
