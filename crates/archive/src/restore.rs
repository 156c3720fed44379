//! Writing members into a directory, never outside it.
//!
//! Every path is resolved from the target's directory fd with `openat2`
//! and `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`:
//! a `..`, an absolute name, or a symlink anywhere in a member's parent
//! path (planted by an earlier member or already in the target) makes the
//! kernel refuse, so a hostile archive cannot reach anything outside.
//! The last component is always created or changed with `*at` calls that
//! do not follow it.
//!
//! Order per object: create → chown → chmod → xattrs → times; inode flags
//! (immutable, append-only) last of all, at the very end, because an
//! immutable file cannot get further hard links nor an immutable
//! directory new entries. Directories get their owner, mode, xattrs and
//! times when the walk leaves them, so that writing their contents does
//! not change their mtime and a read-only mode does not get in the way.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, Dev, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::entry::{Kind, Meta, Time};
use crate::error::{ctx, Error, Result};
use crate::sys;

const RESOLVE: rustix::fs::ResolveFlags = sys::BENEATH;

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name holds a NUL byte"))
}

fn ts(t: Time) -> Timespec {
    Timespec { tv_sec: t.sec, tv_nsec: t.nsec as _ }
}

fn times(t: Time) -> Timestamps {
    Timestamps { last_access: Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT }, last_modification: ts(t) }
}

struct PendingDir {
    path: Vec<u8>,
    meta: Meta,
}

/// One restore target. Call [`Restorer::finish`] at the end: it applies the
/// directories' metadata and the deferred inode flags.
pub struct Restorer {
    root: OwnedFd,
    /// Cached fd of the last parent directory used.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directories entered and not yet left, outermost first.
    dirs: Vec<PendingDir>,
    flags: Vec<(Vec<u8>, u32)>,
    is_root: bool,
    /// Problems that did not stop the restore (an xattr the target file
    /// system refuses, say).
    pub warnings: Vec<(Vec<u8>, String)>,
}

fn parent_and_name(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

impl Restorer {
    pub fn new(dest: &Path) -> Result<Restorer> {
        let root = rustix::fs::open(dest, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(ctx(|| format!("opening {}", dest.display())))?;
        Ok(Restorer { root, cache: None, dirs: Vec::new(), flags: Vec::new(), is_root: rustix::process::geteuid().is_root(), warnings: Vec::new() })
    }

    fn open_beneath(&self, path: &[u8]) -> io::Result<OwnedFd> {
        sys::open_dir_beneath(self.root.as_fd(), path)
    }

    /// The directory `path` inside the target, created (mode 0700 until
    /// its own member says otherwise) where missing.
    fn dir(&mut self, path: &[u8]) -> io::Result<Rc<OwnedFd>> {
        if let Some((p, fd)) = &self.cache {
            if p == path {
                return Ok(Rc::clone(fd));
            }
        }
        let fd = match self.open_beneath(path) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let mut cur = rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?;
                for comp in path.split(|&b| b == b'/') {
                    let c = cstr(comp)?;
                    match rustix::fs::mkdirat(&cur, c.as_c_str(), Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    cur = rustix::fs::openat2(&cur, c.as_c_str(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), RESOLVE)?;
                }
                cur
            }
            Err(e) => return Err(e),
        };
        let fd = Rc::new(fd);
        self.cache = Some((path.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    /// Applies the metadata of directories the stream has left.
    fn leave_dirs_until(&mut self, path: &[u8]) -> Result<()> {
        while let Some(top) = self.dirs.last() {
            if crate::archive::under(path, &top.path) && path != top.path.as_slice() {
                break;
            }
            let d = self.dirs.pop().expect("checked above");
            self.finish_dir(d);
        }
        Ok(())
    }

    fn finish_dir(&mut self, d: PendingDir) {
        let fd = match self.open_beneath(&d.path) {
            Ok(fd) => fd,
            Err(e) => {
                self.warnings.push((d.path, format!("directory metadata not applied: {e}")));
                return;
            }
        };
        if let Err(e) = self.apply_fd(&fd, &d.meta) {
            self.warnings.push((d.path.clone(), e.to_string()));
        }
        if d.meta.flags != 0 {
            self.flags.push((d.path, d.meta.flags));
        }
    }

    fn chown_ok(&self, r: rustix::io::Result<()>) -> io::Result<()> {
        match r {
            Err(Errno::PERM) if !self.is_root => Ok(()),
            r => r.map_err(Into::into),
        }
    }

    fn set_xattrs_fd(&mut self, fd: &OwnedFd, meta: &Meta) {
        for (name, value) in &meta.xattrs {
            let Ok(n) = cstr(name) else { continue };
            if let Err(e) = rustix::fs::fsetxattr(fd, n.as_c_str(), value, rustix::fs::XattrFlags::empty()) {
                self.warnings.push((meta.path.clone(), format!("xattr {} not restored: {e}", String::from_utf8_lossy(name))));
            }
        }
    }

    /// A filesystem without the notion (owners on FAT through FUSE) says
    /// ENOSYS or EOPNOTSUPP: the file is there, the metadata is a warning.
    fn unsupported_ok(&mut self, meta: &Meta, what: &str, r: rustix::io::Result<()>) -> io::Result<()> {
        match r {
            Err(e @ (Errno::NOSYS | Errno::OPNOTSUPP)) => {
                self.warnings.push((meta.path.clone(), format!("{what} not kept: {e}")));
                Ok(())
            }
            r => r.map_err(Into::into),
        }
    }

    fn apply_fd(&mut self, fd: &OwnedFd, meta: &Meta) -> io::Result<()> {
        let r = self.chown_ok(rustix::fs::fchown(fd, Some(Uid::from_raw(meta.uid as u32)), Some(Gid::from_raw(meta.gid as u32))));
        self.unsupported_ok(meta, "owner", r.map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
        let r = rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode));
        self.unsupported_ok(meta, "mode", r)?;
        self.set_xattrs_fd(fd, meta);
        let r = rustix::fs::futimens(fd, &times(meta.mtime));
        self.unsupported_ok(meta, "times", r)
    }

    /// Metadata of an object that cannot be opened (symlink, device, fifo).
    fn apply_at(&mut self, parent: &OwnedFd, name: &CString, meta: &Meta) -> io::Result<()> {
        self.chown_ok(rustix::fs::chownat(
            parent,
            name.as_c_str(),
            Some(Uid::from_raw(meta.uid as u32)),
            Some(Gid::from_raw(meta.gid as u32)),
            AtFlags::SYMLINK_NOFOLLOW,
        ))?;
        if meta.kind != Kind::Symlink {
            rustix::fs::chmodat(parent, name.as_c_str(), Mode::from_raw_mode(meta.mode), AtFlags::empty())?;
        }
        let p = sys::proc_path(parent.as_fd(), name);
        for (xname, value) in &meta.xattrs {
            let Ok(n) = cstr(xname) else { continue };
            if let Err(e) = rustix::fs::lsetxattr(p.as_c_str(), n.as_c_str(), value, rustix::fs::XattrFlags::empty()) {
                self.warnings.push((meta.path.clone(), format!("xattr {} not restored: {e}", String::from_utf8_lossy(xname))));
            }
        }
        rustix::fs::utimensat(parent, name.as_c_str(), &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// Runs `create`; if something stands in the way, removes it and tries
    /// once more. (Cheaper than looking first: a restore target is mostly empty.)
    fn create(parent: &OwnedFd, name: &CString, mut create: impl FnMut() -> rustix::io::Result<()>) -> io::Result<()> {
        match create() {
            Err(Errno::EXIST) => {
                Self::clear(parent, name, false)?;
                Ok(create()?)
            }
            r => Ok(r?),
        }
    }

    /// Removes what stands at `name` unless it is a directory and `keep_dir`.
    fn clear(parent: &OwnedFd, name: &CString, keep_dir: bool) -> io::Result<bool> {
        match rustix::fs::statat(parent, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                if keep_dir {
                    return Ok(true);
                }
                rustix::fs::unlinkat(parent, name.as_c_str(), AtFlags::REMOVEDIR).map_err(|e| {
                    if e == Errno::NOTEMPTY {
                        io::Error::other("a non-empty directory stands there")
                    } else {
                        e.into()
                    }
                })?;
                Ok(false)
            }
            Ok(_) => {
                rustix::fs::unlinkat(parent, name.as_c_str(), AtFlags::empty())?;
                Ok(false)
            }
        }
    }

    /// Restores one member. `data` fills a regular file: it is called with
    /// the open file and writes the stored bytes (segments for a sparse file).
    pub fn entry(&mut self, meta: &Meta, data: &mut dyn FnMut(&mut dyn FnMut(u64, &[u8]) -> io::Result<()>) -> Result<()>) -> Result<()> {
        self.leave_dirs_until(&meta.path)?;
        let what = || format!("restoring {}", crate::entry::display_path(&meta.path));
        if meta.path.is_empty() {
            if meta.kind == Kind::Dir {
                self.dirs.push(PendingDir { path: Vec::new(), meta: meta.clone() });
            }
            return Ok(());
        }
        let (parent_path, name) = parent_and_name(&meta.path);
        let parent = self.dir(parent_path).map_err(ctx(what))?;
        let name = cstr(name).map_err(ctx(what))?;
        match meta.kind {
            Kind::Dir => {
                match rustix::fs::mkdirat(&*parent, name.as_c_str(), Mode::from_raw_mode(0o700)) {
                    Err(Errno::EXIST) => {
                        if !Self::clear(&parent, &name, true).map_err(ctx(what))? {
                            rustix::fs::mkdirat(&*parent, name.as_c_str(), Mode::from_raw_mode(0o700)).map_err(ctx(what))?;
                        }
                    }
                    r => r.map_err(ctx(what))?,
                }
                self.dirs.push(PendingDir { path: meta.path.clone(), meta: meta.clone() });
            }
            Kind::File => {
                Self::clear(&parent, &name, false).map_err(ctx(what))?;
                let fd = rustix::fs::openat(
                    &parent,
                    name.as_c_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(ctx(what))?;
                if meta.sparse.is_some() {
                    rustix::fs::ftruncate(&fd, meta.size).map_err(ctx(what))?;
                }
                let mut write = |off: u64, buf: &[u8]| -> io::Result<()> {
                    let mut done = 0;
                    while done < buf.len() {
                        match rustix::io::pwrite(&fd, &buf[done..], off + done as u64) {
                            Ok(n) => done += n,
                            Err(Errno::INTR) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Ok(())
                };
                data(&mut write)?;
                if meta.data_len() >= 1 << 20 {
                    sys::start_writeback(fd.as_fd());
                }
                self.apply_fd(&fd, meta).map_err(ctx(what))?;
                if meta.flags != 0 {
                    self.flags.push((meta.path.clone(), meta.flags));
                }
            }
            Kind::HardLink => {
                Self::clear(&parent, &name, false).map_err(ctx(what))?;
                let (tp, tn) = parent_and_name(&meta.link);
                let tparent = self.dir(tp).map_err(ctx(what))?;
                let tname = cstr(tn).map_err(ctx(what))?;
                rustix::fs::linkat(&tparent, tname.as_c_str(), &parent, name.as_c_str(), AtFlags::empty())
                    .map_err(ctx(|| format!("{}: linking to {}", what(), crate::entry::display_path(&meta.link))))?;
            }
            Kind::Symlink => {
                let target = cstr(&meta.link).map_err(ctx(what))?;
                Self::create(&parent, &name, || rustix::fs::symlinkat(target.as_c_str(), &*parent, name.as_c_str())).map_err(ctx(what))?;
                self.apply_at(&parent, &name, meta).map_err(ctx(what))?;
            }
            Kind::Fifo | Kind::CharDev | Kind::BlockDev => {
                let ft = match meta.kind {
                    Kind::Fifo => FileType::Fifo,
                    Kind::CharDev => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                let dev: Dev = rustix::fs::makedev(meta.rdev_major, meta.rdev_minor);
                Self::create(&parent, &name, || rustix::fs::mknodat(&*parent, name.as_c_str(), ft, Mode::from_raw_mode(0o600), dev)).map_err(ctx(what))?;
                self.apply_at(&parent, &name, meta).map_err(ctx(what))?;
            }
        }
        Ok(())
    }

    /// Applies what waits for the end: directories' metadata, then flags.
    pub fn finish(mut self) -> Result<Vec<(Vec<u8>, String)>> {
        while let Some(d) = self.dirs.pop() {
            self.finish_dir(d);
        }
        self.cache = None;
        let flags = std::mem::take(&mut self.flags);
        for (path, flags) in flags.into_iter().rev() {
            let r = (|| -> io::Result<()> {
                let (pp, name) = parent_and_name(&path);
                let fd = if path.is_empty() {
                    self.open_beneath(b"")?
                } else {
                    let parent = self.open_beneath(pp)?;
                    rustix::fs::openat(&parent, cstr(name)?.as_c_str(), OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK, Mode::empty())?
                };
                sys::set_flags(fd.as_fd(), flags)
            })();
            if let Err(e) = r {
                self.warnings.push((path, format!("inode flags not restored: {e}")));
            }
        }
        Ok(self.warnings)
    }
}

/// Refuses to restore into a directory that already holds something.
pub fn check_empty(dest: &Path) -> Result<()> {
    let mut rd = std::fs::read_dir(dest).map_err(ctx(|| format!("reading {}", dest.display())))?;
    if rd.next().is_some() {
        return Err(Error::Refused(format!("{} is not empty; restore into an empty directory, or pass --force to write over what is there", dest.display())));
    }
    Ok(())
}
