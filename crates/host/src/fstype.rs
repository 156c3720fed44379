//! What crossback knows about each filesystem type, in one table: how to
//! mount it read-only without replaying a journal, how to tell it was not
//! cleanly unmounted, which FUSE driver reads it where the kernel cannot,
//! how to make it again with a given UUID and label, how to relabel it, and
//! how much room it takes itself. Adding a filesystem type is adding a row
//! here (and a test).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// One filesystem type.
pub struct FsType {
    /// As blkid names it.
    pub name: &'static str,
    /// Mount options that keep a read-only mount from writing (no journal replay).
    pub no_replay: &'static str,
    /// FUSE drivers that can mount it where the kernel has no driver.
    pub fuse: &'static [&'static str],
    /// A Linux root can live on it (a slot can be one).
    pub linux: bool,
    /// Why it was not cleanly unmounted, if it was not.
    dirty: Option<fn(&Path) -> Result<Option<String>>>,
    /// The command that makes it (type name, `dev`, `uuid` (None: a new one), `label`).
    mkfs: Option<fn(&str, &Path, Option<&str>, &str) -> Command>,
    relabel: Option<fn(&Path, &str) -> Command>,
    /// Bytes it takes itself on a device of `size` (journal, inode tables,
    /// metadata), beyond the data; a conservative estimate.
    overhead: fn(u64) -> u64,
}

const MIB: u64 = 1 << 20;

fn cmd(prog: &str) -> Command {
    Command::new(prog)
}

fn ext_mkfs(name: &str, dev: &Path, uuid: Option<&str>, label: &str) -> Command {
    let mut c = cmd(&format!("mkfs.{name}"));
    c.args(["-q", "-F"]);
    if let Some(u) = uuid {
        c.args(["-U", u]);
    }
    if !label.is_empty() {
        c.args(["-L", label]);
    }
    c.arg(dev);
    c
}

fn ext_dirty(dev: &Path) -> Result<Option<String>> {
    let text = output(Command::new("dumpe2fs").arg("-h").arg(dev))?;
    let features = text.lines().find(|l| l.starts_with("Filesystem features:")).unwrap_or("");
    let state = text.lines().find(|l| l.starts_with("Filesystem state:")).unwrap_or("");
    if features.split_whitespace().any(|f| f == "needs_recovery") {
        return Ok(Some("its journal needs recovery (it was not cleanly unmounted)".into()));
    }
    if !state.contains("clean") || state.contains("not clean") {
        return Ok(Some(format!("it was not cleanly unmounted ({})", state.trim())));
    }
    Ok(None)
}

fn xfs_dirty(dev: &Path) -> Result<Option<String>> {
    // Only the first lines matter; the rest can be long.
    let mut child = Command::new("xfs_logprint")
        .arg("-t")
        .arg(dev)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Command(format!("running xfs_logprint: {e}")))?;
    let mut state = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().take(20).map_while(|l| l.ok()) {
            if line.contains("state:") {
                state = line;
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(state.contains("DIRTY").then(|| "its log is dirty (it was not cleanly unmounted)".into()))
}

fn btrfs_dirty(dev: &Path) -> Result<Option<String>> {
    let text = output(Command::new("btrfs").args(["inspect-internal", "dump-super"]).arg(dev))?;
    let log_root = text.lines().find(|l| l.starts_with("log_root\t") || l.starts_with("log_root ")).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("0");
    Ok((log_root != "0").then(|| "its log tree needs replaying (it was not cleanly unmounted)".into()))
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.stderr(Stdio::null()).output().map_err(|e| Error::Command(format!("running {cmd:?}: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn e2label(dev: &Path, label: &str) -> Command {
    let mut c = cmd("e2label");
    c.arg(dev).arg(label);
    c
}

/// ext2, ext3 and ext4: one family. Its overhead: inode tables, the
/// journal, reserved group descriptors.
const fn ext(name: &'static str, no_replay: &'static str) -> FsType {
    FsType { name, no_replay, fuse: &[], linux: true, dirty: Some(ext_dirty), mkfs: Some(ext_mkfs), relabel: Some(e2label), overhead: |size| size / 20 + 16 * MIB }
}

pub static TYPES: &[FsType] = &[
    ext("ext4", "noload"),
    ext("ext3", "noload"),
    ext("ext2", ""),
    FsType {
        name: "xfs",
        no_replay: "norecovery",
        fuse: &[],
        linux: true,
        dirty: Some(xfs_dirty),
        mkfs: Some(|_, d, u, l| {
            let mut c = cmd("mkfs.xfs");
            c.args(["-q", "-f"]);
            if let Some(u) = u {
                c.args(["-m", &format!("uuid={u}")]);
            }
            if !l.is_empty() {
                c.args(["-L", l]);
            }
            c.arg(d);
            c
        }),
        relabel: Some(|d, l| {
            let mut c = cmd("xfs_admin");
            c.arg("-L").arg(l).arg(d);
            c
        }),
        // The log (at least 64 MiB on recent mkfs.xfs) and allocation groups.
        overhead: |size| size / 50 + 80 * MIB,
    },
    FsType {
        name: "btrfs",
        no_replay: "rescue=nologreplay",
        fuse: &[],
        linux: true,
        dirty: Some(btrfs_dirty),
        mkfs: Some(|_, d, u, l| {
            let mut c = cmd("mkfs.btrfs");
            c.args(["-q", "-f"]);
            if let Some(u) = u {
                c.args(["-U", u]);
            }
            if !l.is_empty() {
                c.args(["-L", l]);
            }
            c.arg(d);
            c
        }),
        relabel: Some(|d, l| {
            let mut c = cmd("btrfs");
            c.args(["filesystem", "label"]).arg(d).arg(l);
            c
        }),
        // Metadata is duplicated (DUP) and allocated in chunks.
        overhead: |size| size / 10 + 64 * MIB,
    },
    FsType {
        name: "vfat",
        no_replay: "",
        fuse: &["fusefat"],
        linux: false,
        dirty: None,
        mkfs: Some(|_, d, u, l| {
            let mut c = cmd("mkfs.vfat");
            if let Some(u) = u {
                c.args(["-i", &u.replace('-', "")]);
            }
            if !l.is_empty() {
                c.args(["-n", l]);
            }
            c.arg(d);
            c
        }),
        relabel: Some(|d, l| {
            let mut c = cmd("fatlabel");
            c.arg(d).arg(l);
            c
        }),
        // Two FATs and the clusters' rounding.
        overhead: |size| size / 50 + MIB,
    },
    FsType {
        name: "swap",
        no_replay: "",
        fuse: &[],
        linux: false,
        dirty: None,
        mkfs: Some(|_, d, u, l| {
            let mut c = cmd("mkswap");
            if let Some(u) = u {
                c.args(["-U", u]);
            }
            if !l.is_empty() {
                c.args(["-L", l]);
            }
            c.arg(d);
            c
        }),
        relabel: None,
        overhead: |_| MIB,
    },
    FsType { name: "exfat", no_replay: "", fuse: &["mount.exfat-fuse", "exfat-fuse"], linux: false, dirty: None, mkfs: None, relabel: None, overhead: |size| size / 50 + MIB },
    FsType { name: "ntfs", no_replay: "", fuse: &["ntfs-3g"], linux: false, dirty: None, mkfs: None, relabel: None, overhead: |size| size / 20 + 16 * MIB },
];

/// The row for `name` (blkid's name; `msdos` and `fat` are vfat).
pub fn of(name: &str) -> Option<&'static FsType> {
    let name = match name {
        "msdos" | "fat" => "vfat",
        n => n,
    };
    TYPES.iter().find(|t| t.name == name)
}

impl FsType {
    /// Why the filesystem on `dev` was not cleanly unmounted, if it was not.
    pub fn dirty(&self, dev: &Path) -> Result<Option<String>> {
        self.dirty.map_or(Ok(None), |f| f(dev))
    }

    /// The command that makes this filesystem on `dev`; `None`: crossback cannot make it.
    pub fn mkfs(&self, dev: &Path, uuid: Option<&str>, label: &str) -> Option<Command> {
        self.mkfs.map(|f| f(self.name, dev, uuid, label))
    }

    pub fn relabel(&self, dev: &Path, label: &str) -> Option<Command> {
        self.relabel.map(|f| f(dev, label))
    }

    /// What a device of `size` must at least offer to hold `used` bytes of
    /// this filesystem's data.
    pub fn fits(&self, used: u64, size: u64) -> bool {
        self.needs(used, size) <= size
    }

    /// Bytes a device of `size` must have to hold `used` bytes of data in
    /// this filesystem: the data and what the filesystem takes itself.
    pub fn needs(&self, used: u64, size: u64) -> u64 {
        used.saturating_add((self.overhead)(size))
    }

    /// An installed FUSE driver for it, if any.
    pub fn fuse_driver(&self) -> Option<&'static str> {
        self.fuse.iter().copied().find(|c| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(c).is_file())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_answers() {
        for t in TYPES {
            assert_eq!(of(t.name).map(|x| x.name), Some(t.name));
        }
        assert_eq!(of("msdos").map(|t| t.name), Some("vfat"));
        assert!(of("zfs").is_none());
        let ext4 = of("ext4").unwrap();
        assert!(ext4.fits(100 * MIB, 1024 * MIB));
        assert!(!ext4.fits(100 * MIB, 100 * MIB), "a device as small as the data does not hold it");
        let c = ext4.mkfs(Path::new("/dev/x"), Some("u"), "L").unwrap();
        assert_eq!(c.get_args().collect::<Vec<_>>(), ["-q", "-F", "-U", "u", "-L", "L", "/dev/x"]);
        let c = of("vfat").unwrap().mkfs(Path::new("/dev/x"), Some("ABCD-1234"), "").unwrap();
        assert_eq!(c.get_args().collect::<Vec<_>>(), ["-i", "ABCD1234", "/dev/x"]);
    }
}
