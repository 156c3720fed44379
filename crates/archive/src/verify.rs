//! Checking an archive: every byte against its hashes, and optionally
//! against a directory tree.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::archive::{Archive, Layout};
use crate::entry::{display_path, Kind, Meta};
use crate::error::{ctx, Result};
use crate::members::{self, Data, Sink};
use crate::sys;
use crate::Progress;

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub entries: u64,
    pub bytes: u64,
    /// Damaged members, by path (empty path: the archive as a whole).
    pub damaged: Vec<(Vec<u8>, String)>,
    /// Differences with the tree given to `--against`.
    pub differences: Vec<(Vec<u8>, String)>,
}

impl VerifyReport {
    pub fn clean(&self) -> bool {
        self.damaged.is_empty() && self.differences.is_empty()
    }
}

fn data_hash(archive: &Archive, len: u64, progress: &Option<Arc<Progress>>) -> std::io::Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        archive.source().read_exact_at(&mut buf[..n], off)?;
        h.update(&buf[..n]);
        if let Some(p) = progress {
            p.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
            // Progress is what was read: the archive once, then its members.
            p.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        }
        off += n as u64;
    }
    Ok(*h.finalize().as_bytes())
}

/// Checks every member. With `against`, also compares each member with the
/// object at the same path under that directory, and lists what the tree
/// has that the archive has not.
pub fn verify(archive: &Archive, against: Option<&Path>, progress: Option<Arc<Progress>>) -> Result<VerifyReport> {
    verify_with(archive, against, progress, Compare::default())
}

/// What a comparison with a tree looks at beyond names, types and contents.
#[derive(Clone, Copy, Debug)]
pub struct Compare {
    /// Owners and permission bits. A filesystem that keeps none (FAT: they
    /// come from its mount options, `umask=0077` or the default) is compared
    /// without them, or a perfect restore reads as changed.
    pub owners_and_modes: bool,
}

impl Default for Compare {
    fn default() -> Compare {
        Compare { owners_and_modes: true }
    }
}

/// [`verify`], comparing with the tree as `compare` says.
pub fn verify_with(archive: &Archive, against: Option<&Path>, progress: Option<Arc<Progress>>, compare: Compare) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    if let Some(p) = &archive.trailer_problem {
        report.damaged.push((Vec::new(), p.clone()));
    }
    let tree = match against {
        Some(dir) => Some(Tree::open(dir, compare)?),
        None => None,
    };
    if let Layout::Indexed { footer, .. } = &archive.layout {
        match data_hash(archive, footer.data_len, &progress) {
            Ok(h) if h == footer.data_hash => {}
            Ok(_) => report.damaged.push((Vec::new(), "the archive's data does not match its hash".into())),
            Err(e) => report.damaged.push((Vec::new(), format!("the archive cannot be read: {e}"))),
        }
    }
    let mut sink = Checker { tree: tree.as_ref(), report: &mut report, seen: HashSet::new(), progress: &progress };
    members::walk(archive, &mut sink)?;
    let seen = std::mem::take(&mut sink.seen);
    if let Some(t) = &tree {
        t.extra(&seen, &mut report.differences)?;
    }
    Ok(report)
}

/// The sink that checks members: their hashes (the walk compares them with
/// the index), and with `--against`, the tree.
struct Checker<'a> {
    tree: Option<&'a Tree>,
    report: &'a mut VerifyReport,
    /// Paths of the archive, to find what only the tree has.
    seen: HashSet<Vec<u8>>,
    progress: &'a Option<Arc<Progress>>,
}

impl Sink for Checker<'_> {
    fn wants(&mut self, path: &[u8]) -> bool {
        self.report.entries += 1;
        if self.tree.is_some() {
            self.seen.insert(path.to_vec());
        }
        true
    }

    fn member(&mut self, meta: Meta, _entry: Option<&crate::index::IndexEntry>, data: &mut Data<'_>) -> Result<()> {
        let differences = &mut self.report.differences;
        let mut cmp = self.tree.and_then(|t| t.compare(&meta, differences));
        data.read(&mut |off, buf| {
            if let Some(c) = cmp.as_mut() {
                c.check(off, buf);
            }
            Ok(())
        })?;
        if let Some(c) = cmp {
            c.finish(&mut self.report.differences);
        }
        self.report.bytes += meta.data_len();
        if let Some(p) = self.progress {
            p.files.fetch_add(1, Ordering::Relaxed);
            p.bytes_in.fetch_add(meta.data_len(), Ordering::Relaxed);
        }
        Ok(())
    }

    fn damaged(&mut self, path: &[u8], why: String) {
        self.report.damaged.push((path.to_vec(), why));
    }

    fn refused(&mut self, raw_path: &[u8], why: String) {
        self.report.damaged.push((raw_path.to_vec(), why));
    }
}

/// The directory given to `verify --against`, read without following symlinks.
struct Tree {
    root: std::os::fd::OwnedFd,
    compare: Compare,
}

struct ContentCheck {
    path: Vec<u8>,
    file: std::fs::File,
    size: u64,
    /// Next offset expected to be checked; gaps (holes) must read as zeros.
    next: u64,
    differs: Option<String>,
}

impl ContentCheck {
    /// The tree's file must read as zeros in `from..to` (a hole in the archive).
    fn zeros(&mut self, from: u64, to: u64) {
        use rustix::fs::SeekFrom;
        let mut buf = vec![0u8; 256 * 1024];
        let mut off = from;
        while off < to && self.differs.is_none() {
            // Skip the tree's own holes: they read as zeros.
            let data = match rustix::fs::seek(&self.file, SeekFrom::Data(off)) {
                Ok(d) => d,
                Err(_) => return,
            };
            if data >= to {
                return;
            }
            let end = rustix::fs::seek(&self.file, SeekFrom::Hole(data)).map_or(to, |h| h.min(to));
            off = data;
            while off < end && self.differs.is_none() {
                let n = (end - off).min(buf.len() as u64) as usize;
                match sys::pread_full(&self.file, &mut buf[..n], off) {
                    Ok(got) if got == n && buf[..n].iter().all(|&b| b == 0) => {}
                    _ => self.differs = Some(format!("content differs in the hole at byte {off}")),
                }
                off += n as u64;
            }
        }
    }

    fn check(&mut self, off: u64, data: &[u8]) {
        if self.differs.is_some() {
            return;
        }
        if off > self.next {
            self.zeros(self.next, off);
        }
        let mut buf = vec![0u8; data.len()];
        match sys::pread_full(&self.file, &mut buf, off) {
            Ok(n) if n == data.len() && buf == data => {}
            _ => self.differs = Some(format!("content differs at or after byte {off}")),
        }
        self.next = off + data.len() as u64;
    }

    fn finish(mut self, out: &mut Vec<(Vec<u8>, String)>) {
        if self.next < self.size {
            let (from, to) = (self.next, self.size);
            self.zeros(from, to);
        }
        if let Some(d) = self.differs {
            out.push((self.path, d));
        }
    }
}

impl Tree {
    fn open(dir: &Path, compare: Compare) -> Result<Tree> {
        let root =
            rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(ctx(|| format!("opening {}", dir.display())))?;
        Ok(Tree { root, compare })
    }

    fn parent(&self, path: &[u8]) -> std::io::Result<(std::os::fd::OwnedFd, CString)> {
        let (pp, name): (&[u8], &[u8]) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (b".", path),
        };
        let pp: &[u8] = if pp == b"." { b"" } else { pp };
        let fd = sys::open_dir_beneath(self.root.as_fd(), pp)?;
        let name: &[u8] = if name.is_empty() { b"." } else { name };
        Ok((fd, CString::new(name)?))
    }

    /// Compares metadata now; returns a content checker for regular files.
    fn compare(&self, meta: &Meta, out: &mut Vec<(Vec<u8>, String)>) -> Option<ContentCheck> {
        let mut diff = |what: String| out.push((meta.path.clone(), what));
        let (parent, name) = match self.parent(&meta.path) {
            Ok(p) => p,
            Err(e) => {
                diff(format!("missing from the tree ({e})"));
                return None;
            }
        };
        let st = match rustix::fs::statat(&parent, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(_) => {
                diff("missing from the tree".into());
                return None;
            }
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        let want = match meta.kind {
            Kind::File | Kind::HardLink => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
            Kind::Fifo => FileType::Fifo,
            Kind::CharDev => FileType::CharacterDevice,
            Kind::BlockDev => FileType::BlockDevice,
        };
        if ft != want {
            diff(format!("type differs: {:?} in the archive, {:?} in the tree", want, ft));
            return None;
        }
        if meta.kind == Kind::HardLink {
            return None;
        }
        let owners_and_modes = self.compare.owners_and_modes;
        if owners_and_modes && st.st_mode & 0o7777 != meta.mode && meta.kind != Kind::Symlink {
            diff(format!("mode differs: {:o} in the archive, {:o} in the tree", meta.mode, st.st_mode & 0o7777));
        }
        if owners_and_modes && (u64::from(st.st_uid) != meta.uid || u64::from(st.st_gid) != meta.gid) {
            diff(format!("owner differs: {}:{} in the archive, {}:{} in the tree", meta.uid, meta.gid, st.st_uid, st.st_gid));
        }
        if st.st_mtime != meta.mtime.sec || st.st_mtime_nsec as u32 != meta.mtime.nsec {
            diff(format!("mtime differs: {}.{:09} in the archive, {}.{:09} in the tree", meta.mtime.sec, meta.mtime.nsec, st.st_mtime, st.st_mtime_nsec));
        }
        let xattrs = if meta.kind == Kind::File || meta.kind == Kind::Dir {
            let flags = if meta.kind == Kind::Dir { OFlags::DIRECTORY } else { OFlags::empty() };
            rustix::fs::openat(&parent, name.as_c_str(), OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | flags, Mode::empty()).ok().and_then(|fd| {
                if sys::flags(fd.as_fd()) & crate::entry::KEPT_FLAGS != meta.flags {
                    out.push((
                        meta.path.clone(),
                        format!("inode flags differ: {:#x} in the archive, {:#x} in the tree", meta.flags, sys::flags(fd.as_fd()) & crate::entry::KEPT_FLAGS),
                    ));
                }
                sys::xattrs_fd(fd.as_fd()).ok()
            })
        } else {
            sys::xattrs_path(&sys::proc_path(parent.as_fd(), &name)).ok()
        };
        let mut a = meta.xattrs.clone();
        a.sort();
        if let Some(b) = xattrs {
            if a != b {
                out.push((meta.path.clone(), "xattrs or ACLs differ".into()));
            }
        }
        match meta.kind {
            Kind::Symlink => {
                if let Ok(t) = rustix::fs::readlinkat(&parent, name.as_c_str(), Vec::new()) {
                    if t.as_bytes() != meta.link.as_slice() {
                        out.push((meta.path.clone(), "symlink target differs".into()));
                    }
                }
            }
            Kind::CharDev | Kind::BlockDev if (rustix::fs::major(st.st_rdev) != meta.rdev_major || rustix::fs::minor(st.st_rdev) != meta.rdev_minor) => {
                out.push((meta.path.clone(), "device number differs".into()));
            }
            Kind::File => {
                if st.st_size as u64 != meta.size {
                    out.push((meta.path.clone(), format!("size differs: {} in the archive, {} in the tree", meta.size, st.st_size)));
                    return None;
                }
                let fd = rustix::fs::openat(&parent, name.as_c_str(), OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).ok()?;
                return Some(ContentCheck { path: meta.path.clone(), file: std::fs::File::from(fd), size: meta.size, next: 0, differs: None });
            }
            _ => {}
        }
        None
    }

    /// What the tree holds that the archive does not (one file system only).
    fn extra(&self, seen: &HashSet<Vec<u8>>, out: &mut Vec<(Vec<u8>, String)>) -> Result<()> {
        let mut stack: Vec<(Vec<u8>, std::os::fd::OwnedFd)> =
            vec![(Vec::new(), rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(ctx(|| "reading the tree".into()))?)];
        while let Some((path, fd)) = stack.pop() {
            let mut dir = rustix::fs::Dir::read_from(&fd).map_err(ctx(|| format!("listing {}", display_path(&path))))?;
            while let Some(ent) = dir.read() {
                let Ok(ent) = ent else { break };
                let name = ent.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                if ent.file_type() == FileType::Socket {
                    continue;
                }
                if !seen.contains(&p) {
                    out.push((p, "only in the tree".into()));
                    continue;
                }
                if ent.file_type() == FileType::Directory {
                    if let Ok(sub) =
                        rustix::fs::openat(&fd, ent.file_name(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                    {
                        stack.push((p, sub));
                    }
                }
            }
        }
        Ok(())
    }
}
