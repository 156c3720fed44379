//! Setting block devices read-only (BLKROSET) while crossback reads them.
//!
//! The flag is kernel state: it outlives a killed process and, on a loop
//! device, even a detach and re-attach. So every device crossback sets
//! read-only is recorded in `/run/crossback/blkro/` first, the record is
//! removed when the flag is put back, and [`restore_leftovers`] puts back
//! what a killed run left (the record names the pid that set it).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{ctx, Error, Result};

const RECORDS: &str = "/run/crossback/blkro";
/// `_IO(0x12, 93)` and `_IO(0x12, 94)` from `<linux/fs.h>` (not in the libc crate).
const BLKROSET: libc::Ioctl = 0x125d;
const BLKROGET: libc::Ioctl = 0x125e;

fn ioctl_get(f: &File) -> std::io::Result<bool> {
    let mut ro: libc::c_int = 0;
    // SAFETY: BLKROGET writes one int through the pointer, which points to a
    // live local; the fd is open for the whole call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKROGET, &mut ro) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ro != 0)
}

fn ioctl_set(f: &File, ro: bool) -> std::io::Result<()> {
    let v: libc::c_int = ro.into();
    // SAFETY: BLKROSET reads one int through the pointer, which points to a
    // live local; the fd is open for the whole call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKROSET, &v) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn record_path(dev: &Path) -> PathBuf {
    let name = dev.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Path::new(RECORDS).join(name)
}

/// A device set read-only by this process; put back to writable on drop
/// (or by the next run, if this one is killed).
#[derive(Debug)]
pub struct ReadOnly {
    dev: PathBuf,
    /// False when the device was read-only already: nothing to put back.
    changed: bool,
}

impl ReadOnly {
    pub fn set(dev: &Path) -> Result<ReadOnly> {
        let f = File::open(dev).map_err(ctx(|| format!("opening {}", dev.display())))?;
        if ioctl_get(&f).map_err(ctx(|| format!("reading the read-only flag of {}", dev.display())))? {
            return Ok(ReadOnly { dev: dev.to_path_buf(), changed: false });
        }
        std::fs::create_dir_all(RECORDS).map_err(ctx(|| format!("creating {RECORDS}")))?;
        let rec = record_path(dev);
        std::fs::write(&rec, format!("{}\n{}\n", std::process::id(), dev.display())).map_err(ctx(|| format!("writing {}", rec.display())))?;
        ioctl_set(&f, true).map_err(ctx(|| format!("setting {} read-only (BLKROSET)", dev.display())))?;
        Ok(ReadOnly { dev: dev.to_path_buf(), changed: true })
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.changed {
            if let Ok(f) = File::open(&self.dev) {
                if ioctl_set(&f, false).is_ok() {
                    let _ = std::fs::remove_file(record_path(&self.dev));
                }
            }
        }
    }
}

/// Puts back devices that a killed crossback left read-only. Returns them.
pub fn restore_leftovers() -> Result<Vec<PathBuf>> {
    let mut restored = Vec::new();
    let Ok(rd) = std::fs::read_dir(RECORDS) else { return Ok(restored) };
    for e in rd.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut lines = text.lines();
        let pid: u32 = lines.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let dev = PathBuf::from(lines.next().unwrap_or(""));
        // Still held by a live crossback: leave it.
        if pid != 0 && pid != std::process::id() && alive(pid) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "crossback" {
                continue;
            }
        }
        if let Ok(f) = File::open(&dev) {
            ioctl_set(&f, false)
                .map_err(|e| Error::Io { what: format!("setting {} writable again (a killed crossback left it read-only)", dev.display()), source: e })?;
            restored.push(dev);
        }
        let _ = std::fs::remove_file(e.path());
    }
    Ok(restored)
}

/// A process that exists and is not a zombie (a killed crossback stays a
/// zombie until its parent reaps it; its devices are free already).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("");
            !matches!(state, "Z" | "X" | "x")
        }
        Err(_) => false,
    }
}
