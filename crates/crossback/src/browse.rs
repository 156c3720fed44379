//! The backups as a read-only filesystem (`crossback browse`): a FUSE
//! filesystem over the archives, built from their indexes.
//!
//! ```text
//! /gen-000012/alpha/…          alpha as generation 12 holds it: each of its
//!                              filesystems at its mount point
//! /latest/alpha -> ../gen-000012/alpha   each system's newest backup
//! ```
//! A system's tree is built from its archives' indexes the first time it
//! is looked at; a file's bytes come from the frames that hold them, through
//! a small cache of decompressed frames per archive (at most [`CACHED`]
//! archives keep theirs). Nothing decrypted goes anywhere but memory.
//! A damaged frame is an I/O error for the files in it, said once per file.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;

use anyhow::Context;
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossback_archive::entry::Kind;
use crossback_archive::member_file::{self, FrameCache, MemberFile};
use crossback_archive::{IndexEntry, Time};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, IoctlFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::backups::SystemBackup;

type Ino = u64;
/// Extended attributes: names and values.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;
const ROOT: Ino = 1;
/// Archives that keep decompressed frames at a time (memory: this many
/// times [`FRAMES`] frames of 8 MiB).
const CACHED: usize = 3;
/// Frames kept per archive: a file read in order needs one, a directory's
/// headers one or two.
const FRAMES: usize = 2;
/// Extended attributes remembered for this many inodes.
const XATTRS_KEPT: usize = 4096;
/// Nothing changes: the kernel may keep what it was told.
const TTL: Duration = Duration::from_secs(3600);
/// `FS_IOC_GETFLAGS`: the inode flags (`lsattr`).
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;

/// One system's backup in one generation, as the filesystem shows it.
pub struct Shown {
    pub generation: u64,
    /// When the generation was sealed (or started), for its directory.
    pub time: SystemTime,
    pub backup: SystemBackup,
}

#[derive(Clone, Copy)]
struct Attr {
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    size: u64,
    blocks: u64,
    rdev: u32,
    nlink: u32,
    flags: u32,
}

impl Attr {
    fn dir(time: SystemTime) -> Attr {
        Attr { kind: FileType::Directory, perm: 0o555, uid: 0, gid: 0, mtime: time, size: 0, blocks: 0, rdev: 0, nlink: 2, flags: 0 }
    }

    fn of(e: &IndexEntry) -> Attr {
        let kind = match e.kind {
            Kind::Dir => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
            Kind::CharDev => FileType::CharDevice,
            Kind::BlockDev => FileType::BlockDevice,
            Kind::Fifo => FileType::NamedPipe,
            Kind::File | Kind::HardLink => FileType::RegularFile,
        };
        let size = match e.kind {
            Kind::File => e.size,
            Kind::Symlink => e.link.len() as u64,
            _ => 0,
        };
        // Stored bytes for a sparse file (holes are not stored), else its size.
        let allocated = if e.kind == Kind::File { e.size.min(e.stored_len) } else { 0 };
        let (major, minor) = e.rdev;
        Attr {
            kind,
            perm: (e.mode & 0o7777) as u16,
            uid: e.uid as u32,
            gid: e.gid as u32,
            mtime: system_time(e.mtime),
            size,
            blocks: allocated.div_ceil(4096) * 8,
            // The kernel's 32-bit encoding is makedev's low half.
            rdev: rustix::fs::makedev(major, minor) as u32,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            flags: e.flags,
        }
    }

    fn file_attr(&self, ino: Ino) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: self.size,
            blocks: self.blocks,
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind: self.kind,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: 4096,
            flags: 0,
        }
    }
}

fn system_time(t: Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(u64::from(t.nsec))
    }
}

/// Where a node's member is: which system, which of its archives, and the
/// index's record of it (its path left empty: the tree knows it).
#[derive(Clone)]
struct Member {
    system: usize,
    archive: usize,
    entry: Box<IndexEntry>,
}

enum What {
    /// Children sorted by name (a name may be a hard link to a node elsewhere).
    Dir {
        children: Vec<(Box<[u8]>, Ino)>,
    },
    /// A system's root, not read yet.
    Unread {
        system: usize,
    },
    Link(Box<[u8]>),
    Leaf,
}

struct Node {
    parent: Ino,
    name: Box<[u8]>,
    attr: Attr,
    member: Option<Member>,
    what: What,
}

struct System {
    shown: Shown,
    /// The node where its tree starts.
    root: Ino,
    archives: Vec<Option<Opened>>,
}

/// An open file: a member of an archive, or (duplicity) its bytes.
enum Open {
    Member(Box<MemberFile>),
    Bytes(Vec<u8>),
}

/// The largest file of an adopted duplicity backup read into memory (its
/// volumes are tar streams without an index: a file is found by reading
/// them from the start).
const LEGACY_MAX: u64 = 256 << 20;

struct Opened {
    cache: FrameCache,
    /// The node of its mount point.
    mount: Ino,
}

struct Inner {
    nodes: Vec<Node>,
    systems: Vec<System>,
    files: HashMap<u64, (Ino, Open)>,
    /// Files of adopted duplicity backups: their system and path.
    legacy: HashMap<Ino, (usize, Vec<u8>)>,
    /// Their extended attributes (read with the listing: nothing else has them).
    legacy_xattrs: HashMap<Ino, Xattrs>,
    next_fh: u64,
    /// Archives whose caches hold frames, the most recent first.
    warm: Vec<(usize, usize)>,
    xattrs: HashMap<Ino, Xattrs>,
    /// Damage is said once per file.
    said: std::collections::HashSet<Ino>,
}

pub struct BrowseFs {
    inner: Mutex<Inner>,
}

impl BrowseFs {
    pub fn new(shown: Vec<Shown>, now: SystemTime) -> BrowseFs {
        let mut inner = Inner {
            nodes: Vec::new(),
            systems: Vec::new(),
            files: HashMap::new(),
            legacy: HashMap::new(),
            legacy_xattrs: HashMap::new(),
            next_fh: 1,
            warm: Vec::new(),
            xattrs: HashMap::new(),
            said: Default::default(),
        };
        inner.add(ROOT, b"", Attr::dir(now), What::Dir { children: Vec::new() });
        let latest = inner.add(ROOT, b"latest", Attr::dir(now), What::Dir { children: Vec::new() });
        let mut newest: HashMap<String, u64> = HashMap::new();
        for s in shown {
            let gen_name = crate::layout::GenName::dir(s.generation);
            let gen = match inner.child(ROOT, gen_name.as_bytes()) {
                Some(g) => g,
                None => inner.add(ROOT, gen_name.as_bytes(), Attr::dir(s.time), What::Dir { children: Vec::new() }),
            };
            let name = s.backup.record.name.clone();
            let system = inner.systems.len();
            let root = inner.add(gen, name.as_bytes(), Attr::dir(s.time), What::Unread { system });
            if newest.get(&name).is_none_or(|&g| s.generation > g) {
                newest.insert(name, s.generation);
            }
            inner.systems.push(System { shown: s, root, archives: Vec::new() });
        }
        let mut names: Vec<_> = newest.into_iter().collect();
        names.sort();
        for (name, seq) in names {
            let target = format!("../{}/{name}", crate::layout::GenName::dir(seq));
            let mut attr = Attr::dir(now);
            attr.kind = FileType::Symlink;
            attr.perm = 0o777;
            attr.size = target.len() as u64;
            attr.nlink = 1;
            inner.add(latest, name.as_bytes(), attr, What::Link(target.into_bytes().into()));
        }
        BrowseFs { inner: Mutex::new(inner) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// A new node, a child of `parent` (kept in order later by `sort`).
    fn add(&mut self, parent: Ino, name: &[u8], attr: Attr, what: What) -> Ino {
        let ino = self.nodes.len() as Ino + 1;
        self.nodes.push(Node { parent, name: name.into(), attr, member: None, what });
        if ino != ROOT {
            self.link(parent, name, ino);
        }
        ino
    }

    /// A new node in `parent`'s list of children, not in order yet (while
    /// an archive is read; `sort` puts them in order).
    fn push(&mut self, parent: Ino, name: &[u8], attr: Attr, what: What) -> Ino {
        let ino = self.nodes.len() as Ino + 1;
        let is_dir = attr.kind == FileType::Directory;
        self.nodes.push(Node { parent, name: name.into(), attr, member: None, what });
        self.push_name(parent, name, ino, is_dir);
        ino
    }

    fn push_name(&mut self, parent: Ino, name: &[u8], ino: Ino, is_dir: bool) {
        let p = &mut self.nodes[parent as usize - 1];
        if let What::Dir { children } = &mut p.what {
            children.push((name.into(), ino));
            if is_dir {
                p.attr.nlink += 1;
            }
        }
    }

    /// Puts a directory's children in order; of two with one name (a
    /// crafted archive), the first stays.
    fn sort(&mut self, dir: Ino) {
        if let What::Dir { children } = &mut self.nodes[dir as usize - 1].what {
            children.sort_by(|a, b| a.0.cmp(&b.0));
            children.dedup_by(|a, b| a.0 == b.0);
        }
    }

    /// Gives `ino` the name `name` in `parent` (kept in order).
    fn link(&mut self, parent: Ino, name: &[u8], ino: Ino) {
        let is_dir = self.node(ino).attr.kind == FileType::Directory;
        let p = &mut self.nodes[parent as usize - 1];
        if let What::Dir { children } = &mut p.what {
            match children.binary_search_by(|(n, _)| n.as_ref().cmp(name)) {
                Ok(i) => children[i].1 = ino,
                Err(i) => {
                    children.insert(i, (name.into(), ino));
                    if is_dir {
                        p.attr.nlink += 1;
                    }
                }
            }
        }
    }

    fn node(&self, ino: Ino) -> &Node {
        &self.nodes[ino as usize - 1]
    }

    fn get(&self, ino: INodeNo) -> Result<&Node, Errno> {
        self.nodes.get((ino.0 as usize).wrapping_sub(1)).ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        match &self.node(parent).what {
            What::Dir { children } => children.binary_search_by(|(n, _)| n.as_ref().cmp(name)).ok().map(|i| children[i].1),
            _ => None,
        }
    }

    /// Reads a system's archives' indexes into its tree (once).
    fn read_system(&mut self, ino: Ino) -> Result<(), Errno> {
        let What::Unread { system } = self.node(ino).what else { return Ok(()) };
        self.nodes[ino as usize - 1].what = What::Dir { children: Vec::new() };
        if self.systems[system].shown.backup.record.legacy.is_some() {
            if let Err(e) = self.read_legacy(system) {
                let s = &self.systems[system];
                eprintln!(
                    "crossback browse: {}/{}: the adopted duplicity backup does not read to its end: {e:#}; what was read is shown",
                    crate::layout::GenName::dir(s.shown.generation),
                    s.shown.backup.record.name
                );
            }
            return Ok(());
        }
        let mut order: Vec<usize> = (0..self.systems[system].shown.backup.record.archives.len()).collect();
        // Parents first: / before /home before /home/ann.
        order.sort_by_key(|&i| self.systems[system].shown.backup.record.archives[i].mountpoint.split('/').filter(|c| !c.is_empty()).count());
        self.systems[system].archives = (0..order.len()).map(|_| None).collect();
        for i in order {
            if let Err(e) = self.read_archive(system, i) {
                let s = &self.systems[system];
                eprintln!(
                    "crossback browse: {}/{}: {} is not shown: {e:#}",
                    crate::layout::GenName::dir(s.shown.generation),
                    s.shown.backup.record.name,
                    s.shown.backup.record.archives[i].mountpoint
                );
            }
        }
        Ok(())
    }

    /// The directory node at `mountpoint` in a system's tree, made (as an
    /// empty directory) where the archives above it do not have it.
    fn mount_node(&mut self, root: Ino, mountpoint: &str) -> Ino {
        let mut at = root;
        for name in mountpoint.split('/').filter(|c| !c.is_empty()) {
            at = match self.child(at, name.as_bytes()) {
                Some(c) if self.node(c).attr.kind == FileType::Directory => c,
                _ => {
                    let time = self.node(at).attr.mtime;
                    let mut a = Attr::dir(time);
                    a.perm = 0o755;
                    self.add(at, name.as_bytes(), a, What::Dir { children: Vec::new() })
                }
            };
        }
        at
    }

    fn read_archive(&mut self, system: usize, i: usize) -> anyhow::Result<()> {
        let root = self.systems[system].root;
        let record = self.systems[system].shown.backup.record.archives[i].clone();
        let archive = self.systems[system].shown.backup.open_archive(&record)?;
        let cache = FrameCache::new(&archive, FRAMES).map_err(crate::error::from_archive)?;
        let mount = self.mount_node(root, &record.mountpoint);
        // What a mounted filesystem hides is not seen.
        let n = &mut self.nodes[mount as usize - 1];
        if let What::Dir { children } = &mut n.what {
            children.clear();
            n.attr.nlink = 2;
        }
        let index = archive.index().map_err(crate::error::from_archive)?.ok_or_else(|| anyhow::anyhow!("{} has no index", record.file))?;
        // Path in the archive → node, for parents and hard links.
        let mut at: HashMap<Vec<u8>, Ino> = HashMap::new();
        at.insert(Vec::new(), mount);
        let mut problem = None;
        for e in index {
            let e = match e {
                Ok(e) => e,
                Err(err) => {
                    problem = Some(err.to_string());
                    break;
                }
            };
            let member = Member { system, archive: i, entry: Box::new(IndexEntry { path: Vec::new(), link: Vec::new(), ..e.clone() }) };
            if let Some(ino) = self.place(&mut at, mount, &e) {
                self.nodes[ino as usize - 1].member = Some(member);
            }
        }
        for &ino in at.values() {
            self.sort(ino);
        }
        self.systems[system].archives[i] = Some(Opened { cache, mount });
        if let Some(p) = problem {
            anyhow::bail!("{}: {p}; the entries before the damage are shown", record.file);
        }
        Ok(())
    }

    /// Puts entry `e` of a tree whose root is the node `root` into place
    /// (`at`: the tree's directories and files so far, by path): the root's
    /// own attributes, a new node, or a hard link's name for its first
    /// name's node. Returns the node that stands for `e`, if one does.
    fn place(&mut self, at: &mut HashMap<Vec<u8>, Ino>, root: Ino, e: &IndexEntry) -> Option<Ino> {
        if e.path.is_empty() {
            let n = &mut self.nodes[root as usize - 1];
            let nlink = n.attr.nlink;
            n.attr = Attr::of(e);
            n.attr.nlink = nlink;
            return Some(root);
        }
        let (parent_path, name) = match e.path.iter().rposition(|&b| b == b'/') {
            Some(cut) => (&e.path[..cut], &e.path[cut + 1..]),
            None => (&e.path[..0], &e.path[..]),
        };
        // A name no directory can hold (a crafted index) is not shown.
        let &parent = at.get(parent_path).filter(|_| shown_name(name))?;
        if e.kind == Kind::HardLink {
            let &target = at.get(&e.link)?;
            if self.node(target).attr.kind == FileType::RegularFile {
                self.nodes[target as usize - 1].attr.nlink += 1;
                self.push_name(parent, name, target, false);
            }
            return None;
        }
        let what = match e.kind {
            Kind::Dir => What::Dir { children: Vec::new() },
            Kind::Symlink => What::Link(e.link.clone().into()),
            _ => What::Leaf,
        };
        let ino = self.push(parent, name, Attr::of(e), what);
        if matches!(e.kind, Kind::Dir | Kind::File) {
            at.insert(e.path.clone(), ino);
        }
        Some(ino)
    }

    /// An adopted duplicity backup's listing (its volumes read once, whole).
    fn read_legacy(&mut self, system: usize) -> anyhow::Result<()> {
        let root = self.systems[system].root;
        let b = &self.systems[system].shown.backup;
        let (slot_root, set) = (b.slot_root()?.dir(".")?, b.record.legacy.clone().context("the record is duplicity's")?);
        let mut at: HashMap<Vec<u8>, Ino> = HashMap::new();
        at.insert(Vec::new(), root);
        let r = crate::duplicity::walk(&slot_root, &set, |mut meta, _| {
            let xattrs = std::mem::take(&mut meta.xattrs);
            let mut e = IndexEntry::of(meta);
            e.stored_len = e.size;
            if let Some(ino) = self.place(&mut at, root, &e) {
                if e.kind == Kind::File {
                    self.legacy.insert(ino, (system, e.path));
                }
                if !xattrs.is_empty() {
                    self.legacy_xattrs.insert(ino, xattrs);
                }
            }
            Ok(())
        });
        for &ino in at.values() {
            self.sort(ino);
        }
        r
    }

    /// A file of an adopted duplicity backup, read from its volumes.
    fn read_legacy_file(&self, system: usize, path: &[u8]) -> Result<Vec<u8>, String> {
        let b = &self.systems[system].shown.backup;
        let set = b.record.legacy.clone().ok_or("not a duplicity backup")?;
        let slot_root = b.slot_root().and_then(|r| Ok(r.dir(".")?)).map_err(|e| e.to_string())?;
        let mut found = None;
        let r = crate::duplicity::walk(&slot_root, &set, |meta, data| {
            if found.is_some() || meta.path != path {
                return Ok(());
            }
            if meta.size > LEGACY_MAX {
                found = Some(Err(format!("{} bytes: too large to read from an adopted duplicity backup here; `crossback restore` it", meta.size)));
                return Ok(());
            }
            let mut bytes = Vec::with_capacity(meta.size as usize);
            data.take(LEGACY_MAX + 1).read_to_end(&mut bytes)?;
            found = Some(Ok(bytes));
            Ok(())
        });
        match (found, r) {
            (Some(got), _) => got,
            (None, Err(e)) => Err(format!("{e:#}")),
            (None, Ok(())) => Err("not found in the duplicity backup".into()),
        }
    }

    /// The system and archive a node's member is in.
    fn archive_of(&self, ino: Ino) -> Option<(usize, usize)> {
        self.node(ino).member.as_ref().map(|m| (m.system, m.archive))
    }

    /// The node's member, with its path in its archive filled in.
    fn entry(&self, ino: Ino) -> Option<(usize, usize, IndexEntry)> {
        let m = self.node(ino).member.as_ref()?;
        let mount = self.systems[m.system].archives[m.archive].as_ref()?.mount;
        let mut names = Vec::new();
        let mut at = ino;
        while at != mount && at != ROOT {
            names.push(&self.node(at).name);
            at = self.node(at).parent;
        }
        let mut e = (*m.entry).clone();
        e.path = names.iter().rev().map(|n| n.to_vec()).collect::<Vec<_>>().join(&b'/');
        Some((m.system, m.archive, e))
    }

    /// The cache of an archive, marked as in use; the least recently used
    /// beyond [`CACHED`] gives its frames back.
    fn cache(&mut self, system: usize, archive: usize) -> Option<&mut FrameCache> {
        let key = (system, archive);
        self.warm.retain(|k| *k != key);
        self.warm.insert(0, key);
        while self.warm.len() > CACHED {
            if let Some((s, a)) = self.warm.pop() {
                if let Some(o) = self.systems[s].archives[a].as_mut() {
                    o.cache.clear();
                }
            }
        }
        self.systems[system].archives[archive].as_mut().map(|o| &mut o.cache)
    }

    /// The node's path on the mount, for messages.
    fn shown_path(&self, ino: Ino) -> String {
        let mut names = Vec::new();
        let mut at = ino;
        while at != ROOT {
            names.push(self.node(at).name.to_vec());
            at = self.node(at).parent;
        }
        names.reverse();
        format!("/{}", crate::output::path(&names.join(&b'/')))
    }

    /// Says (once per file) why it gave an I/O error.
    fn damaged(&mut self, ino: Ino, why: &str) -> Errno {
        if self.said.insert(ino) {
            eprintln!("crossback browse: {}: {why}", self.shown_path(ino));
        }
        Errno::EIO
    }

    fn xattrs(&mut self, ino: Ino) -> Result<&Xattrs, Errno> {
        if self.legacy_xattrs.contains_key(&ino) {
            return self.legacy_xattrs.get(&ino).ok_or(Errno::EIO);
        }
        if !self.xattrs.contains_key(&ino) {
            let list = match self.entry(ino) {
                None => Vec::new(),
                Some((s, a, e)) => {
                    let cache = self.cache(s, a).ok_or(Errno::EIO)?;
                    match member_file::read_meta(cache, &e) {
                        Ok((meta, _)) => meta.xattrs,
                        Err(err) => return Err(self.damaged(ino, &err.to_string())),
                    }
                }
            };
            if self.xattrs.len() >= XATTRS_KEPT {
                self.xattrs.clear();
            }
            self.xattrs.insert(ino, list);
        }
        self.xattrs.get(&ino).ok_or(Errno::EIO)
    }
}

/// A name a directory entry can have: not empty, `.` or `..`, no NUL.
fn shown_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&0)
}

/// Sends an extended attribute's value (or its list of names) the way
/// `getxattr(2)` asks: its size when `size` is 0, else the bytes if they fit.
fn reply_bytes(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        reply.size(bytes.len() as u32);
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

impl Filesystem for BrowseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // ACLs are enforced by the kernel as on the original system; inode
        // flags are asked for on directories too.
        use fuser::InitFlags;
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_HAS_IOCTL_DIR | InitFlags::FUSE_CACHE_SYMLINKS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        if s.get(parent).is_err() {
            return reply.error(Errno::ENOENT);
        }
        if let Err(e) = s.read_system(parent.0) {
            return reply.error(e);
        }
        let Some(ino) = s.child(parent.0, name.as_bytes()) else { return reply.error(Errno::ENOENT) };
        if let Err(e) = s.read_system(ino) {
            return reply.error(e);
        }
        reply.entry(&TTL, &s.node(ino).attr.file_attr(ino), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut s = self.lock();
        if s.get(ino).is_err() {
            return reply.error(Errno::ENOENT);
        }
        if let Err(e) = s.read_system(ino.0) {
            return reply.error(e);
        }
        reply.attr(&TTL, &s.node(ino.0).attr.file_attr(ino.0));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let s = self.lock();
        match s.get(ino).map(|n| &n.what) {
            Ok(What::Link(target)) => reply.data(target),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let mut s = self.lock();
        if s.get(ino).map(|n| n.attr.kind) != Ok(FileType::RegularFile) {
            return reply.error(Errno::EINVAL);
        }
        let opened = if let Some((system, path)) = s.legacy.get(&ino.0).cloned() {
            s.read_legacy_file(system, &path).map(Open::Bytes)
        } else {
            let Some((system, archive, e)) = s.entry(ino.0) else { return reply.error(Errno::EIO) };
            let Some(cache) = s.cache(system, archive) else { return reply.error(Errno::EIO) };
            MemberFile::open(cache, &e).map(|f| Open::Member(Box::new(f))).map_err(|e| e.to_string())
        };
        match opened {
            Ok(f) => {
                let fh = s.next_fh;
                s.next_fh += 1;
                s.files.insert(fh, (ino.0, f));
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(why) => reply.error(s.damaged(ino.0, &why)),
        }
    }

    fn read(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, size: u32, _flags: OpenFlags, _lock: Option<LockOwner>, reply: ReplyData) {
        let mut s = self.lock();
        let Some((_, mut f)) = s.files.remove(&fh.0) else { return reply.error(Errno::EBADF) };
        let mut buf = vec![0u8; size as usize];
        let got = match &mut f {
            Open::Bytes(bytes) => {
                let from = (offset as usize).min(bytes.len());
                let n = (bytes.len() - from).min(buf.len());
                buf[..n].copy_from_slice(&bytes[from..from + n]);
                Ok(n)
            }
            Open::Member(m) => match s.archive_of(ino.0).and_then(|(system, archive)| s.cache(system, archive)) {
                Some(cache) => m.read_at(cache, offset, &mut buf).map_err(|e| e.to_string()),
                None => Err("its archive is not open".to_string()),
            },
        };
        s.files.insert(fh.0, (ino.0, f));
        match got {
            Ok(n) => reply.data(&buf[..n]),
            Err(why) => reply.error(s.damaged(ino.0, &why)),
        }
    }

    fn release(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, _lock: Option<LockOwner>, _flush: bool, reply: fuser::ReplyEmpty) {
        self.lock().files.remove(&fh.0);
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut s = self.lock();
        if s.get(ino).is_err() {
            return reply.error(Errno::ENOENT);
        }
        if let Err(e) = s.read_system(ino.0) {
            return reply.error(e);
        }
        let node = s.node(ino.0);
        let What::Dir { children } = &node.what else { return reply.error(Errno::ENOTDIR) };
        let dots = [(&b"."[..], ino.0), (&b".."[..], if ino.0 == ROOT { ROOT } else { node.parent })];
        let all = dots.iter().map(|&(n, i)| (n, i)).chain(children.iter().map(|(n, i)| (n.as_ref(), *i)));
        for (k, (name, child)) in all.enumerate().skip(offset as usize) {
            let kind = s.node(child).attr.kind;
            if reply.add(INodeNo(child), k as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.lock();
        let blocks: u64 = s.systems.iter().flat_map(|x| x.shown.backup.record.archives.iter()).map(|a| a.data_bytes.div_ceil(4096)).sum();
        let files: u64 = s.systems.iter().flat_map(|x| x.shown.backup.record.archives.iter()).map(|a| a.entries).sum();
        reply.statfs(blocks, 0, 0, files, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let mut s = self.lock();
        if s.get(ino).is_err() {
            return reply.error(Errno::ENOENT);
        }
        match s.xattrs(ino.0) {
            Ok(list) => match list.iter().find(|(n, _)| n.as_slice() == name.as_bytes()) {
                Some((_, v)) => reply_bytes(reply, size, v),
                None => reply.error(Errno::ENODATA),
            },
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut s = self.lock();
        if s.get(ino).is_err() {
            return reply.error(Errno::ENOENT);
        }
        match s.xattrs(ino.0) {
            Ok(list) => {
                let mut names = Vec::new();
                for (n, _) in list {
                    names.extend_from_slice(n);
                    names.push(0);
                }
                reply_bytes(reply, size, &names);
            }
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _flags: IoctlFlags, cmd: u32, _in: &[u8], out_size: u32, reply: ReplyIoctl) {
        let s = self.lock();
        match (s.get(ino), cmd) {
            (Ok(n), FS_IOC_GETFLAGS) if out_size >= 4 => reply.ioctl(0, &n.attr.flags.to_ne_bytes()),
            (Err(e), _) => reply.error(e),
            _ => reply.error(Errno::ENOTTY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_no_directory_can_hold_are_not_shown() {
        for bad in [&b""[..], b".", b"..", b"a\0b"] {
            assert!(!shown_name(bad), "{bad:?}");
        }
        for good in [&b"a"[..], b"...", b".hidden", b"caf\xe9"] {
            assert!(shown_name(good), "{good:?}");
        }
    }
}
