//! Compares two trees the way a restore must reproduce them: type, all
//! mode bits, owner, mtime (ns), size, content, symlink target, device
//! numbers, every xattr, inode flags, hard-link groups, and holes (a sparse
//! file must stay sparse, a dense one dense). Walks by directory fds, so
//! paths longer than PATH_MAX are fine. Sockets are left out.
//!
//! Written apart from the archive crate on purpose: it shares no code with
//! what it checks.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

#[derive(Debug, PartialEq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u64),
    size: u64,
    rdev: u64,
    target: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    flags: u32,
    /// Content hash (files).
    hash: u64,
    /// Allocated bytes (files).
    alloc: u64,
    /// Inode key for hard-link grouping (not compared directly).
    ino: (u64, u64),
    nlink: u64,
}

/// chattr flags a user sets on purpose: S (sync), i, a, d (nodump), A (noatime),
/// D (dirsync), C (no copy-on-write, FS_NOCOW_FL).
const USER_FLAGS: u32 = 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x10000 | 0x0080_0000;

fn fnv(h: &mut u64, data: &[u8]) {
    for &b in data {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// Hashes (offset, block) for every block that is not all zeros, found
/// through SEEK_DATA: the same for a sparse and a dense copy of the same
/// bytes, different for any changed byte.
fn hash_content(fd: &OwnedFd, size: u64, h: &mut u64) {
    use rustix::fs::SeekFrom;
    const BLOCK: usize = 4096;
    let mut buf = vec![0u8; BLOCK];
    let mut pos = 0u64;
    let mut hashed_end = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(_) => break,
        };
        let end = rustix::fs::seek(fd, SeekFrom::Hole(data)).unwrap_or(size).min(size);
        let mut off = (data - data % BLOCK as u64).max(hashed_end);
        while off < end {
            let got = rustix::io::pread(fd, &mut buf[..], off).expect("read");
            if got == 0 {
                break;
            }
            if buf[..got].iter().any(|&b| b != 0) {
                fnv(h, &off.to_le_bytes());
                fnv(h, &buf[..got]);
            }
            off += got as u64;
        }
        hashed_end = off;
        pos = end.max(off);
    }
}

fn xattrs_of(path: &CString) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path.as_c_str(), &mut list[..]).unwrap_or(0);
    let mut out = Vec::new();
    for name in list[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).expect("xattr name");
        let mut val = vec![0u8; 65536];
        let m = rustix::fs::lgetxattr(path.as_c_str(), cname.as_c_str(), &mut val[..]).unwrap_or(0);
        out.push((name.to_vec(), val[..m].to_vec()));
    }
    out.sort();
    out
}

fn node(dir: &OwnedFd, name: &CString) -> Option<Node> {
    let st = rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).expect("stat");
    let ft = FileType::from_raw_mode(st.st_mode);
    let kind = match ft {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::CharacterDevice => "chr",
        FileType::BlockDevice => "blk",
        _ => return None,
    };
    let mut proc_path = format!("/proc/self/fd/{}/", rustix::fd::AsRawFd::as_raw_fd(dir)).into_bytes();
    proc_path.extend_from_slice(name.as_bytes());
    let proc_path = CString::new(proc_path).expect("path");
    let mut n = Node {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: (st.st_mtime, st.st_mtime_nsec as u64),
        size: if ft == FileType::RegularFile || ft == FileType::Symlink { st.st_size as u64 } else { 0 },
        rdev: if matches!(ft, FileType::CharacterDevice | FileType::BlockDevice) { st.st_rdev } else { 0 },
        target: Vec::new(),
        xattrs: xattrs_of(&proc_path),
        flags: 0,
        hash: 0xcbf2_9ce4_8422_2325,
        alloc: st.st_blocks as u64 * 512,
        ino: (st.st_dev, st.st_ino),
        nlink: st.st_nlink,
    };
    if ft == FileType::Symlink {
        n.target = rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new()).expect("readlink").into_bytes();
    }
    if matches!(ft, FileType::RegularFile | FileType::Directory) {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        if let Ok(fd) = rustix::fs::openat(dir, name.as_c_str(), flags, Mode::empty()) {
            n.flags = rustix::fs::ioctl_getflags(&fd).map(|f| f.bits()).unwrap_or(0) & USER_FLAGS;
            if ft == FileType::RegularFile {
                hash_content(&fd, st.st_size as u64, &mut n.hash);
            }
        }
    }
    Some(n)
}

fn walk(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    let rootfd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).expect("open root");
    let parent =
        rustix::fs::open(root.parent().unwrap_or(Path::new("/")), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).expect("open parent");
    let rootname = CString::new(root.file_name().map(|n| std::os::unix::ffi::OsStrExt::as_bytes(n).to_vec()).unwrap_or_else(|| b".".to_vec())).expect("name");
    if let Some(n) = node(&parent, &rootname) {
        out.insert(Vec::new(), n);
    }
    let mut stack: Vec<(Vec<u8>, OwnedFd)> = vec![(Vec::new(), rootfd)];
    while let Some((path, fd)) = stack.pop() {
        let mut dir = Dir::read_from(fd.as_fd()).expect("readdir");
        while let Some(ent) = dir.read() {
            let ent = ent.expect("readdir entry");
            let name = ent.file_name().to_owned();
            if name.as_bytes() == b"." || name.as_bytes() == b".." {
                continue;
            }
            let mut p = path.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name.as_bytes());
            let Some(n) = node(&fd, &name) else { continue };
            if n.kind == "dir" {
                let sub = rustix::fs::openat(&fd, name.as_c_str(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                    .expect("open dir");
                stack.push((p.clone(), sub));
            }
            out.insert(p, n);
        }
    }
    out
}

/// Differences between the trees at `a` and `b`, one line each; empty when equal.
pub fn trees(a: &Path, b: &Path) -> Vec<String> {
    trees_with(a, b, false)
}

/// As [`trees`]; `ignore_flags` for restores by tools that cannot set inode flags (GNU tar).
pub fn trees_with(a: &Path, b: &Path, ignore_flags: bool) -> Vec<String> {
    trees_except(a, b, ignore_flags, &[])
}

/// As [`trees_with`], leaving out the paths in `except` (relative to the
/// roots, e.g. `etc/fstab`) and what is below them.
pub fn trees_except(a: &Path, b: &Path, ignore_flags: bool, except: &[&[u8]]) -> Vec<String> {
    let kept = |p: &Vec<u8>| !except.iter().any(|e| p.starts_with(e) && (p.len() == e.len() || p[e.len()] == b'/'));
    let mut ta = walk(a);
    let mut tb = walk(b);
    ta.retain(|p, _| kept(p));
    tb.retain(|p, _| kept(p));
    let mut diffs = Vec::new();
    let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    // Hard-link groups: the first path of each inode, per tree.
    let group = |t: &BTreeMap<Vec<u8>, Node>| -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut first: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
        let mut g = BTreeMap::new();
        for (p, n) in t {
            if n.kind != "dir" && n.nlink > 1 {
                let f = first.entry(n.ino).or_insert_with(|| p.clone()).clone();
                g.insert(p.clone(), f);
            }
        }
        g
    };
    let (ga, gb) = (group(&ta), group(&tb));
    for (p, na) in &ta {
        let Some(nb) = tb.get(p) else {
            diffs.push(format!("only in A: {}", show(p)));
            continue;
        };
        let mut d = |what: &str, x: String, y: String| diffs.push(format!("{what} differs at {}: {x} vs {y}", show(p)));
        if na.kind != nb.kind {
            d("type", na.kind.into(), nb.kind.into());
            continue;
        }
        if na.mode != nb.mode && na.kind != "symlink" {
            d("mode", format!("{:o}", na.mode), format!("{:o}", nb.mode));
        }
        if (na.uid, na.gid) != (nb.uid, nb.gid) {
            d("owner", format!("{}:{}", na.uid, na.gid), format!("{}:{}", nb.uid, nb.gid));
        }
        if na.mtime != nb.mtime {
            d("mtime", format!("{:?}", na.mtime), format!("{:?}", nb.mtime));
        }
        if na.size != nb.size || na.hash != nb.hash {
            d("content", format!("{} bytes", na.size), format!("{} bytes", nb.size));
        }
        if na.target != nb.target {
            d("target", show(&na.target), show(&nb.target));
        }
        if na.rdev != nb.rdev {
            d("rdev", na.rdev.to_string(), nb.rdev.to_string());
        }
        if na.xattrs != nb.xattrs {
            d(
                "xattrs",
                format!("{:?}", na.xattrs.iter().map(|x| show(&x.0)).collect::<Vec<_>>()),
                format!("{:?}", nb.xattrs.iter().map(|x| show(&x.0)).collect::<Vec<_>>()),
            );
        }
        if na.flags != nb.flags && !ignore_flags {
            d("flags", format!("{:#x}", na.flags), format!("{:#x}", nb.flags));
        }
        if na.kind == "file" {
            let sparse = |n: &Node| n.alloc < n.size / 2;
            if sparse(na) || sparse(nb) {
                let (x, y) = (na.alloc.max(1), nb.alloc.max(1));
                if x > 2 * y + 65536 || y > 2 * x + 65536 {
                    d("allocation", format!("{} bytes allocated", na.alloc), format!("{} bytes allocated", nb.alloc));
                }
            }
        }
        let (fa, fb) = (ga.get(p), gb.get(p));
        if fa != fb {
            d("hard links", format!("{:?}", fa.map(|f| show(f))), format!("{:?}", fb.map(|f| show(f))));
        }
    }
    for p in tb.keys() {
        if !ta.contains_key(p) {
            diffs.push(format!("only in B: {}", show(p)));
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_differs() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::write(d.join("f"), b"same").unwrap();
            std::fs::write(d.join("g"), b"data").unwrap();
        }
        std::fs::set_permissions(b.path(), std::fs::metadata(a.path()).unwrap().permissions()).unwrap();
        let t = std::fs::metadata(a.path()).unwrap().modified().unwrap();
        for d in [a.path(), b.path()] {
            for f in ["", "f", "g"] {
                std::fs::File::open(d.join(f)).unwrap().set_modified(t).unwrap();
            }
        }
        assert!(trees(a.path(), b.path()).is_empty(), "{:?}", trees(a.path(), b.path()));
        std::fs::write(b.path().join("g"), b"Data").unwrap();
        std::fs::File::open(b.path().join("g")).unwrap().set_modified(t).unwrap();
        let d = trees(a.path(), b.path());
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("content differs at g"), "{d:?}");
    }
}
