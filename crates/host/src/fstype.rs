//! What crossback knows about each filesystem type, in one table: how to
//! mount it read-only without replaying a journal, how to tell it was not
//! cleanly unmounted, which FUSE driver reads it where the kernel cannot,
//! how to make it again with a given UUID and label, how to relabel it, and
//! how much room it takes itself. Adding a filesystem type is adding a row
//! here (and a test).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use crate::tool::Tool;

use crate::error::{Error, Result};

/// One filesystem type.
pub struct FsType {
    /// As blkid names it.
    pub name: &'static str,
    /// Mount options that keep a read-only mount from writing (no journal replay).
    pub no_replay: &'static str,
    /// FUSE drivers that can mount it where the kernel has no driver.
    pub fuse: &'static [&'static str],
    /// A Linux root can live on it (a slot can be one): it keeps owners
    /// and permission bits of its own (see [`FsType::keeps_modes`]).
    pub linux: bool,
    /// Why it was not cleanly unmounted, if it was not.
    dirty: Option<DirtyFn>,
    /// The command that makes it (type name, `dev`, `uuid` (None: a new one),
    /// `label`, and the parameters [`FsType::params`] recorded).
    mkfs: Option<MkfsFn>,
    /// What makes this filesystem what it is beyond UUID and label (FAT type
    /// and cluster size, ext4 features and inode size), read from `dev`, so
    /// that it is made again the same, not as a newer mkfs would choose.
    params: Option<ParamsFn>,
    relabel: Option<fn(&Path, &str) -> Tool>,
    /// Bytes it takes itself on a device of `size` (journal, inode tables,
    /// metadata), beyond the data; a conservative estimate.
    overhead: fn(u64) -> u64,
    /// The smallest device its mkfs makes it on.
    min_size: u64,
}

const MIB: u64 = 1 << 20;

/// Why `dev`'s filesystem was not cleanly unmounted, if it was not.
type DirtyFn = fn(&Path) -> Result<Option<String>>;
/// The command that makes a filesystem: (type name, dev, uuid, label, params).
type MkfsFn = fn(&str, &Path, Option<&str>, &str, &Params) -> Tool;
/// A filesystem's parameters, read from `dev`.
type ParamsFn = fn(&Path) -> Result<Vec<String>>;

fn cmd(prog: &str) -> Tool {
    Tool::new(prog)
}

fn ext_mkfs(name: &str, dev: &Path, uuid: Option<&str>, label: &str, p: &Params) -> Tool {
    let mut c = cmd(&format!("mkfs.{name}"));
    c.args(["-q", "-F"]);
    if let Some(f) = p.words("features") {
        // "none" first: exactly these features, whatever this mke2fs's defaults.
        c.arg("-O").arg(format!("none,{}", f.join(",")));
    }
    if let Some(n) = p.number("inode_size") {
        c.arg("-I").arg(n.to_string());
    }
    if let Some(n) = p.number("block_size") {
        c.arg("-b").arg(n.to_string());
    }
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
    let text = Tool::new("dumpe2fs").arg("-h").arg(dev).run()?;
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
    let mut child = Tool::new("xfs_logprint")
        .arg("-t")
        .arg(dev)
        .command()
        .stdin(Stdio::null())
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
    // No state line is not "clean": the log was not read.
    if state.is_empty() {
        return Err(Error::Command(format!("xfs_logprint -t {} said nothing of the log's state: whether it is clean is not known", dev.display())));
    }
    Ok(state.contains("DIRTY").then(|| "its log is dirty (it was not cleanly unmounted)".into()))
}

fn btrfs_dirty(dev: &Path) -> Result<Option<String>> {
    let text = Tool::new("btrfs").args(["inspect-internal", "dump-super"]).arg(dev).run()?;
    // No log_root line is not "clean": the superblock was not read as expected.
    let Some(log_root) = text.lines().find(|l| l.starts_with("log_root\t") || l.starts_with("log_root ")).and_then(|l| l.split_whitespace().nth(1)) else {
        return Err(Error::Command(format!("btrfs inspect-internal dump-super {} printed no log_root: whether it is clean is not known", dev.display())));
    };
    Ok((log_root != "0").then(|| "its log tree needs replaying (it was not cleanly unmounted)".into()))
}

fn e2label(dev: &Path, label: &str) -> Tool {
    let mut c = cmd("e2label");
    c.arg(dev).arg(label);
    c
}

/// ext2, ext3 and ext4: one family. Its overhead: inode tables, the
/// journal, reserved group descriptors.
const fn ext(name: &'static str, no_replay: &'static str) -> FsType {
    FsType {
        name,
        no_replay,
        fuse: &[],
        linux: true,
        dirty: Some(ext_dirty),
        mkfs: Some(ext_mkfs),
        params: Some(ext_params),
        relabel: Some(e2label),
        overhead: |size| size / 20 + 16 * MIB,
        min_size: 0,
    }
}

/// ext2/3/4: the features (less the state flags a mount sets), inode and block size.
fn ext_params(dev: &Path) -> Result<Vec<String>> {
    let text = Tool::new("dumpe2fs").arg("-h").arg(dev).run()?;
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
    let mut out = Vec::new();
    if let Some(f) = field("Filesystem features:") {
        let kept: Vec<&str> = f.split_whitespace().filter(|w| !matches!(*w, "needs_recovery" | "orphan_present")).collect();
        out.push(format!("features={}", kept.join(",")));
    }
    for (k, key) in [("Inode size:", "inode_size"), ("Block size:", "block_size")] {
        if let Some(v) = field(k) {
            out.push(format!("{key}={v}"));
        }
    }
    Ok(out)
}

/// FAT: its type (12, 16, 32), sectors per cluster and sector size, from the boot sector.
fn fat_params(dev: &Path) -> Result<Vec<String>> {
    use std::io::Read;
    let mut b = [0u8; 512];
    std::fs::File::open(dev)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::Io { what: format!("reading the boot sector of {}", dev.display()), source: e })?;
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let u32_at = |i: usize| u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    let (bps, spc, reserved, fats, root_entries) = (u16_at(11), u64::from(b[13]), u16_at(14), u64::from(b[16]), u16_at(17));
    if bps == 0 || spc == 0 {
        return Err(Error::Refused(format!("{} has no FAT boot sector", dev.display())));
    }
    let fat_size = if u16_at(22) != 0 { u16_at(22) } else { u32_at(36) };
    let total = if u16_at(19) != 0 { u16_at(19) } else { u32_at(32) };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let clusters = total.saturating_sub(reserved + fats * fat_size + root_sectors) / spc;
    let fat = if u16_at(22) == 0 {
        32
    } else if clusters < 4085 {
        12
    } else {
        16
    };
    Ok(vec![format!("fat={fat}"), format!("cluster_sectors={spc}"), format!("sector_size={bps}")])
}

/// xfs: the v5 features that mkfs.xfs can set, inode, block and sector size.
fn xfs_params(dev: &Path) -> Result<Vec<String>> {
    let text = Tool::new("xfs_db").arg("-r").args(["-c", "version", "-c", "sb 0", "-c", "p inodesize blocksize sectsize"]).arg(dev).run()?;
    let version =
        text.lines().find_map(|l| l.strip_prefix("versionnum")).ok_or_else(|| Error::Command(format!("xfs_db read no superblock from {}", dev.display())))?;
    let flags: Vec<String> = version.split(['=', ',', ' ']).map(|w| w.trim().to_ascii_lowercase()).collect();
    let kept: Vec<&str> = XFS_FEATURES.iter().map(|(word, _, _)| *word).filter(|w| flags.iter().any(|f| f == w)).collect();
    let mut out = vec![format!("features={}", kept.join(","))];
    for (k, key) in [("inodesize = ", "inode_size"), ("blocksize = ", "block_size"), ("sectsize = ", "sector_size")] {
        if let Some(v) = text.lines().find_map(|l| l.strip_prefix(k)) {
            out.push(format!("{key}={}", v.trim()));
        }
    }
    Ok(out)
}

/// xfs_db's name of a v5 feature, mkfs.xfs's option section and name.
const XFS_FEATURES: &[(&str, &str, &str)] = &[
    ("crc", "-m", "crc"),
    ("finobt", "-m", "finobt"),
    ("reflink", "-m", "reflink"),
    ("rmapbt", "-m", "rmapbt"),
    ("inobtcnt", "-m", "inobtcount"),
    ("bigtime", "-m", "bigtime"),
    ("sparse_inodes", "-i", "sparse"),
];

fn xfs_mkfs(dev: &Path, uuid: Option<&str>, label: &str, p: &Params) -> Tool {
    let mut c = cmd("mkfs.xfs");
    c.args(["-q", "-f"]);
    let mut meta: Vec<String> = Vec::new();
    let mut inode: Vec<String> = Vec::new();
    if let Some(f) = p.words("features").or_else(|| p.get("features").filter(|v| v.is_empty()).map(|_| Vec::new())) {
        for (word, section, name) in XFS_FEATURES {
            let on = u8::from(f.contains(word));
            if *section == "-m" {
                meta.push(format!("{name}={on}"))
            } else {
                inode.push(format!("{name}={on}"))
            }
        }
    }
    if let Some(u) = uuid {
        meta.push(format!("uuid={u}"));
    }
    if let Some(n) = p.number("inode_size") {
        inode.push(format!("size={n}"));
    }
    if !meta.is_empty() {
        c.arg("-m").arg(meta.join(","));
    }
    if !inode.is_empty() {
        c.arg("-i").arg(inode.join(","));
    }
    if let Some(n) = p.number("block_size") {
        c.arg("-b").arg(format!("size={n}"));
    }
    if let Some(n) = p.number("sector_size") {
        c.arg("-s").arg(format!("size={n}"));
    }
    if !label.is_empty() {
        c.args(["-L", label]);
    }
    c.arg(dev);
    c
}

/// btrfs: the features mkfs.btrfs can set (-O, and the free-space tree),
/// node and sector size.
fn btrfs_params(dev: &Path) -> Result<Vec<String>> {
    let text = Tool::new("btrfs").args(["inspect-internal", "dump-super", "-f"]).arg(dev).run()?;
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
    let upper = text.to_ascii_uppercase();
    let kept: Vec<&str> = BTRFS_FEATURES.iter().filter(|(flag, _, _)| upper.contains(flag)).map(|(_, word, _)| *word).collect();
    let mut out = vec![format!("features={}", kept.join(","))];
    for (k, key) in [("nodesize", "node_size"), ("sectorsize", "sector_size")] {
        if let Some(v) = field(k) {
            out.push(format!("{key}={v}"));
        }
    }
    Ok(out)
}

/// dump-super's flag, the recorded word, mkfs.btrfs's name (`-R` for the free-space tree).
const BTRFS_FEATURES: &[(&str, &str, &str)] = &[
    ("EXTENDED_IREF", "extended_iref", "extref"),
    ("SKINNY_METADATA", "skinny_metadata", "skinny-metadata"),
    ("NO_HOLES", "no_holes", "no-holes"),
    ("RAID56", "raid56", "raid56"),
    ("FREE_SPACE_TREE_VALID", "free_space_tree", "-R free-space-tree"),
];

fn btrfs_mkfs(dev: &Path, uuid: Option<&str>, label: &str, p: &Params) -> Tool {
    let mut c = cmd("mkfs.btrfs");
    c.args(["-q", "-f"]);
    if let Some(f) = p.words("features").or_else(|| p.get("features").filter(|v| v.is_empty()).map(|_| Vec::new())) {
        let mut o: Vec<String> = Vec::new();
        for (_, word, name) in BTRFS_FEATURES {
            let on = f.contains(word);
            match name.strip_prefix("-R ") {
                Some(r) if on => {
                    c.args(["-R", r]);
                }
                Some(_) => {}
                None => o.push(if on { name.to_string() } else { format!("^{name}") }),
            }
        }
        c.arg("-O").arg(o.join(","));
    }
    if let Some(n) = p.number("node_size") {
        c.arg("-n").arg(n.to_string());
    }
    if let Some(n) = p.number("sector_size") {
        c.arg("-s").arg(n.to_string());
    }
    if let Some(u) = uuid {
        c.args(["-U", u]);
    }
    if !label.is_empty() {
        c.args(["-L", label]);
    }
    c.arg(dev);
    c
}

/// Recorded parameters, read with care: they come from a slot.
pub struct Params<'a>(pub &'a [String]);

impl Params<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find_map(|p| p.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    fn number(&self, key: &str) -> Option<u32> {
        self.get(key)?.parse().ok()
    }

    /// A comma-separated list of plain words (a-z, 0-9, _).
    fn words(&self, key: &str) -> Option<Vec<&str>> {
        let v = self.get(key)?;
        let w: Vec<&str> = v.split(',').filter(|w| !w.is_empty()).collect();
        (!w.is_empty() && w.iter().all(|w| w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))).then_some(w)
    }
}

pub static TYPES: &[FsType] = &[
    ext("ext4", "noload"),
    ext("ext3", "noload"),
    ext("ext2", ""),
    FsType {
        name: "xfs",
        params: Some(xfs_params),
        no_replay: "norecovery",
        fuse: &[],
        linux: true,
        dirty: Some(xfs_dirty),
        mkfs: Some(|_, d, u, l, p| xfs_mkfs(d, u, l, p)),
        relabel: Some(|d, l| {
            let mut c = cmd("xfs_admin");
            c.arg("-L").arg(l).arg(d);
            c
        }),
        // The log (at least 64 MiB on recent mkfs.xfs) and allocation groups.
        overhead: |size| size / 50 + 80 * MIB,
        // mkfs.xfs refuses filesystems under 300 MiB.
        min_size: 300 * MIB,
    },
    FsType {
        name: "btrfs",
        params: Some(btrfs_params),
        no_replay: "rescue=nologreplay",
        fuse: &[],
        linux: true,
        dirty: Some(btrfs_dirty),
        mkfs: Some(|_, d, u, l, p| btrfs_mkfs(d, u, l, p)),
        relabel: Some(|d, l| {
            let mut c = cmd("btrfs");
            c.args(["filesystem", "label"]).arg(d).arg(l);
            c
        }),
        // Metadata is duplicated (DUP) and allocated in chunks.
        overhead: |size| size / 10 + 64 * MIB,
        // mkfs.btrfs: "minimum size for each btrfs device is 114294784".
        min_size: 128 * MIB,
    },
    FsType {
        name: "vfat",
        no_replay: "",
        fuse: &["fusefat"],
        linux: false,
        dirty: None,
        params: Some(fat_params),
        mkfs: Some(|_, d, u, l, p| {
            let mut c = cmd("mkfs.vfat");
            for (flag, key) in [("-F", "fat"), ("-s", "cluster_sectors"), ("-S", "sector_size")] {
                if let Some(n) = p.number(key) {
                    c.arg(flag).arg(n.to_string());
                }
            }
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
        min_size: 0,
    },
    FsType {
        name: "swap",
        params: None,
        no_replay: "",
        fuse: &[],
        linux: false,
        dirty: None,
        mkfs: Some(|_, d, u, l, _| {
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
        min_size: 0,
    },
    FsType {
        name: "exfat",
        no_replay: "",
        fuse: &["mount.exfat-fuse", "exfat-fuse"],
        linux: false,
        dirty: None,
        mkfs: None,
        params: None,
        relabel: None,
        overhead: |size| size / 50 + MIB,
        min_size: 0,
    },
    FsType {
        name: "ntfs",
        no_replay: "",
        fuse: &["ntfs-3g"],
        linux: false,
        dirty: None,
        mkfs: None,
        params: None,
        relabel: None,
        overhead: |size| size / 20 + 16 * MIB,
        min_size: 0,
    },
];

/// The row for `name` (blkid's name; `msdos` and `fat` are vfat).
/// Linux filesystems the table has no row for: a system on one is found
/// (and its backup refused as not supported), not passed over.
const OTHER_LINUX: &[&str] = &["f2fs", "jfs", "reiserfs", "bcachefs"];

/// True for the filesystems a Linux root can live on.
pub fn linux(name: &str) -> bool {
    of(name).is_some_and(|t| t.linux) || OTHER_LINUX.contains(&name)
}

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
    pub fn mkfs(&self, dev: &Path, uuid: Option<&str>, label: &str, params: &[String]) -> Option<Tool> {
        self.mkfs.map(|f| f(self.name, dev, uuid, label, &Params(params)))
    }

    /// The parameters to record for the filesystem on `dev` (empty when
    /// this type has none crossback recreates).
    pub fn params(&self, dev: &Path) -> Result<Vec<String>> {
        self.params.map_or(Ok(Vec::new()), |f| f(dev))
    }

    /// Owners and modes are the filesystem's own, not its mount options'
    /// (FAT's come from `uid=`, `umask=`…): only then do they compare.
    pub fn keeps_modes(&self) -> bool {
        self.linux
    }

    pub fn relabel(&self, dev: &Path, label: &str) -> Option<Tool> {
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
        used.saturating_add((self.overhead)(size)).max(self.min_size)
    }

    /// An installed FUSE driver for it, if any.
    pub(crate) fn fuse_driver(&self) -> Option<&'static str> {
        self.fuse.iter().copied().find(|c| std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(c).is_file())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made again from what was recorded, a filesystem is what it was, not
    /// what mkfs would choose by default (a restored ESP got 4 KiB
    /// clusters instead of 512 bytes). Image files only: no root needed.
    #[test]
    fn filesystems_are_made_again_with_their_parameters() {
        let t = tempfile::tempdir().unwrap();
        let img = |n: &str| {
            let p = t.path().join(n);
            std::fs::File::create(&p).unwrap().set_len(if n.starts_with("xfs") { 320 * MIB } else { 160 * MIB }).unwrap();
            p
        };
        for (ty, custom) in [
            ("vfat", vec!["-F", "32", "-s", "1"]),
            ("ext4", vec!["-q", "-F", "-I", "128", "-O", "^metadata_csum,^64bit"]),
            ("xfs", vec!["-q", "-f", "-m", "reflink=0,bigtime=0,inobtcount=0", "-i", "size=1024"]),
            ("btrfs", vec!["-q", "-f", "-O", "^no-holes", "-n", "32768"]),
        ] {
            let a = img(&format!("{ty}-a"));
            Tool::new(format!("mkfs.{ty}")).args(&custom).arg(&a).run().unwrap();
            let t = of(ty).unwrap();
            let p = t.params(&a).unwrap();
            let b = img(&format!("{ty}-b"));
            t.mkfs(&b, None, "", &p).unwrap().run().unwrap();
            assert_eq!(t.params(&b).unwrap(), p, "{ty}");
            let c = img(&format!("{ty}-c"));
            t.mkfs(&c, None, "", &[]).unwrap().run().unwrap();
            assert_ne!(t.params(&c).unwrap(), p, "{ty}: the defaults differ, so the test means something");
        }
        // Values from a slot are words and numbers only.
        let hostile = ["features=has_journal,-E,x".to_string(), "inode_size=128 -O x".to_string()];
        let c = of("ext4").unwrap().mkfs(Path::new("/dev/x"), None, "", &hostile).unwrap();
        assert_eq!(c.get_args().collect::<Vec<_>>(), ["-q", "-F", "/dev/x"]);
    }

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
        let c = ext4.mkfs(Path::new("/dev/x"), Some("u"), "L", &[]).unwrap();
        assert_eq!(c.get_args().collect::<Vec<_>>(), ["-q", "-F", "-U", "u", "-L", "L", "/dev/x"]);
        let c = of("vfat").unwrap().mkfs(Path::new("/dev/x"), Some("ABCD-1234"), "", &[]).unwrap();
        assert_eq!(c.get_args().collect::<Vec<_>>(), ["-i", "ABCD1234", "/dev/x"]);
    }
}
