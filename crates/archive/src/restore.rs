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

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::{bounded, Sender};
use rustix::fs::{AtFlags, Dev, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::entry::{Kind, Meta, Time};
use crate::error::{ctx, Error, Result};
use crate::sys;

const RESOLVE: rustix::fs::ResolveFlags = sys::BENEATH;

/// Files up to this size are written by the worker threads.
const POOLED_MAX: u64 = 1 << 20;
/// Directories left by the walk whose metadata waits for the workers to
/// finish the files in them; past this many, the restore waits for the
/// workers and applies it (so memory stays bounded).
const LEFT_MAX: usize = 256;

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

/// What a restore notes on the way: problems that did not stop it (an
/// xattr the target file system refuses, say) and inode flags, which are
/// set at the very end.
#[derive(Default)]
struct Notes {
    warnings: Vec<(Vec<u8>, String)>,
    flags: Vec<(Vec<u8>, u32)>,
}

impl Notes {
    /// Takes over what `other` noted.
    fn absorb(&mut self, other: &mut Notes) {
        self.warnings.append(&mut other.warnings);
        self.flags.append(&mut other.flags);
    }

    fn chown_ok(is_root: bool, r: rustix::io::Result<()>) -> io::Result<()> {
        match r {
            Err(Errno::PERM) if !is_root => Ok(()),
            r => r.map_err(Into::into),
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

    fn xattr_failed(&mut self, meta: &Meta, name: &[u8], e: Errno) {
        self.warnings.push((meta.path.clone(), format!("xattr {} not restored: {e}", String::from_utf8_lossy(name))));
    }

    /// Owner, mode, xattrs and times of an open object.
    fn apply_fd(&mut self, is_root: bool, fd: &OwnedFd, meta: &Meta) -> io::Result<()> {
        let r = Self::chown_ok(is_root, rustix::fs::fchown(fd, Some(Uid::from_raw(meta.uid as u32)), Some(Gid::from_raw(meta.gid as u32))));
        self.unsupported_ok(meta, "owner", r.map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
        let r = rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode));
        self.unsupported_ok(meta, "mode", r)?;
        for (name, value) in &meta.xattrs {
            let Ok(n) = cstr(name) else { continue };
            if let Err(e) = rustix::fs::fsetxattr(fd, n.as_c_str(), value, rustix::fs::XattrFlags::empty()) {
                self.xattr_failed(meta, name, e);
            }
        }
        let r = rustix::fs::futimens(fd, &times(meta.mtime));
        self.unsupported_ok(meta, "times", r)
    }

    /// Metadata of an object that cannot be opened (symlink, device, fifo).
    fn apply_at(&mut self, is_root: bool, parent: &OwnedFd, name: &CStr, meta: &Meta) -> io::Result<()> {
        Self::chown_ok(
            is_root,
            rustix::fs::chownat(parent, name, Some(Uid::from_raw(meta.uid as u32)), Some(Gid::from_raw(meta.gid as u32)), AtFlags::SYMLINK_NOFOLLOW),
        )?;
        if meta.kind != Kind::Symlink {
            rustix::fs::chmodat(parent, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())?;
        }
        let p = sys::proc_path(parent.as_fd(), name);
        for (xname, value) in &meta.xattrs {
            let Ok(n) = cstr(xname) else { continue };
            if let Err(e) = rustix::fs::lsetxattr(p.as_c_str(), n.as_c_str(), value, rustix::fs::XattrFlags::empty()) {
                self.xattr_failed(meta, xname, e);
            }
        }
        rustix::fs::utimensat(parent, name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// Makes the regular file `name` in `parent`: created (whatever stood
    /// there removed), filled by `fill`, then its metadata unless `fill`
    /// failed (the file keeps what was written, as far as it was readable).
    fn make_file(&mut self, is_root: bool, parent: &OwnedFd, name: &CStr, meta: &Meta, fill: &mut dyn FnMut(&OwnedFd) -> Result<()>) -> Result<()> {
        let what = || format!("restoring {}", crate::entry::display_path(&meta.path));
        let open = || {
            rustix::fs::openat(parent, name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))
        };
        // Created first, cleared only if something stands there: a restore
        // target is mostly empty, and a lookup per file is not free.
        let fd = match open() {
            Err(Errno::EXIST) => {
                clear(parent, name, false).map_err(ctx(what))?;
                open()
            }
            r => r,
        }
        .map_err(ctx(what))?;
        if meta.sparse.is_some() {
            rustix::fs::ftruncate(&fd, meta.size).map_err(ctx(what))?;
        }
        fill(&fd)?;
        if meta.data_len() >= 1 << 20 {
            sys::start_writeback(fd.as_fd());
        }
        self.apply_fd(is_root, &fd, meta).map_err(ctx(what))?;
        if meta.flags != 0 {
            self.flags.push((meta.path.clone(), meta.flags));
        }
        Ok(())
    }
}

/// Writes all of `buf` at `off`.
fn write_at(fd: &OwnedFd, off: u64, buf: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pwrite(fd, &buf[done..], off + done as u64) {
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Runs `create`; if something stands in the way, removes it and tries
/// once more. (Cheaper than looking first: a restore target is mostly empty.)
fn create(parent: &OwnedFd, name: &CStr, mut create: impl FnMut() -> rustix::io::Result<()>) -> io::Result<()> {
    match create() {
        Err(Errno::EXIST) => {
            clear(parent, name, false)?;
            Ok(create()?)
        }
        r => Ok(r?),
    }
}

/// Removes what stands at `name` unless it is a directory and `keep_dir`.
fn clear(parent: &OwnedFd, name: &CStr, keep_dir: bool) -> io::Result<bool> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            if keep_dir {
                return Ok(true);
            }
            rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(|e| {
                if e == Errno::NOTEMPTY {
                    io::Error::other("a non-empty directory stands there")
                } else {
                    e.into()
                }
            })?;
            Ok(false)
        }
        Ok(_) => {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
            Ok(false)
        }
    }
}

/// A small regular file whose data the walk has read, for a worker to write.
struct FileJob {
    parent: Arc<OwnedFd>,
    name: CString,
    meta: Meta,
    /// The stored bytes, and where each piece goes: (offset in the file, length).
    data: Vec<u8>,
    pieces: Vec<(u64, usize)>,
    /// Reading the data failed: write what there is, no metadata.
    partial: bool,
}

impl FileJob {
    fn run(self, is_root: bool, notes: &mut Notes) -> Result<()> {
        let FileJob { parent, name, meta, data, pieces, partial } = self;
        let mut fill = |fd: &OwnedFd| -> Result<()> {
            let mut at = 0;
            for &(off, len) in &pieces {
                write_at(fd, off, &data[at..at + len])
                    .map_err(|e| Error::Io { what: format!("writing {}", crate::entry::display_path(&meta.path)), source: e })?;
                at += len;
            }
            if partial {
                return Err(Error::Format("the data could not be read completely".into()));
            }
            Ok(())
        };
        match notes.make_file(is_root, &parent, &name, &meta, &mut fill) {
            Err(Error::Format(_)) if partial => Ok(()),
            r => r,
        }
    }
}

/// What the workers report back.
#[derive(Default)]
struct Done {
    /// Jobs finished, in all.
    count: u64,
    notes: Notes,
    /// Files that could not be written: path, data length, why.
    failed: Vec<(Vec<u8>, u64, String)>,
}

/// Threads that write small files (creating a file, writing it and setting
/// its metadata is mostly the kernel's work, and it runs on every core).
struct Pool {
    tx: Option<Sender<FileJob>>,
    handles: Vec<std::thread::JoinHandle<()>>,
    done: Arc<(Mutex<Done>, Condvar)>,
    sent: u64,
}

impl Pool {
    fn new(workers: usize, is_root: bool) -> Result<Pool> {
        let (tx, rx) = bounded::<FileJob>(workers * 16);
        let done: Arc<(Mutex<Done>, Condvar)> = Arc::default();
        let mut handles = Vec::new();
        for i in 0..workers {
            let (rx, done) = (rx.clone(), Arc::clone(&done));
            let h = std::thread::Builder::new()
                .name(format!("restore-{i}"))
                .spawn(move || {
                    for job in rx {
                        let (path, len) = (job.meta.path.clone(), job.meta.data_len());
                        let mut notes = Notes::default();
                        let r = job.run(is_root, &mut notes);
                        let (lock, cv) = &*done;
                        let mut d = lock.lock().unwrap_or_else(|p| p.into_inner());
                        d.notes.absorb(&mut notes);
                        if let Err(e) = r {
                            d.failed.push((path, len, e.to_string()));
                        }
                        d.count += 1;
                        cv.notify_all();
                    }
                })
                .map_err(ctx(|| "starting a restore thread".into()))?;
            handles.push(h);
        }
        Ok(Pool { tx: Some(tx), handles, done, sent: 0 })
    }

    fn send(&mut self, job: FileJob) {
        if let Some(tx) = &self.tx {
            if tx.send(job).is_ok() {
                self.sent += 1;
            }
        }
    }

    /// Waits until every file sent is written; what the workers noted
    /// and what failed since the last wait.
    fn wait(&mut self) -> (Notes, Vec<(Vec<u8>, u64, String)>) {
        let (lock, cv) = &*self.done;
        let mut d = lock.lock().unwrap_or_else(|p| p.into_inner());
        while d.count < self.sent {
            d = cv.wait(d).unwrap_or_else(|p| p.into_inner());
        }
        (std::mem::take(&mut d.notes), std::mem::take(&mut d.failed))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        drop(self.tx.take());
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// What a restore leaves to report at its end.
#[derive(Debug, Default)]
pub struct Finished {
    /// Problems that did not stop the restore.
    pub warnings: Vec<(Vec<u8>, String)>,
    /// Files written by the worker threads that failed after their member
    /// was counted: path, data length, why.
    pub failed: Vec<(Vec<u8>, u64, String)>,
}

impl Finished {
    /// Adds what this says to an extraction's report (a file counted as
    /// restored that then failed is counted out again).
    pub fn report_into(self, report: &mut crate::ExtractReport) {
        report.warnings.extend(self.warnings);
        for (path, len, why) in self.failed {
            report.entries = report.entries.saturating_sub(1);
            report.bytes = report.bytes.saturating_sub(len);
            report.failed.push((path, why));
        }
    }
}

fn parent_and_name(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// Writes a regular file's stored bytes: called with a writer (offset,
/// bytes), it hands it each piece (segments for a sparse file).
pub type WriteData<'a> = dyn FnMut(&mut dyn FnMut(u64, &[u8]) -> io::Result<()>) -> Result<()> + 'a;

/// One restore target. Call [`Restorer::finish`] at the end: it waits for
/// the workers, applies the directories' metadata and the deferred inode
/// flags.
///
/// The walk's thread makes directories, links and special files, and reads
/// every member's data; small regular files are written by a pool of
/// threads. A directory's metadata waits until the files in it are
/// written; a hard link until the file it names is.
pub struct Restorer {
    root: OwnedFd,
    /// Cached fd of the last parent directory used.
    cache: Option<(Vec<u8>, Arc<OwnedFd>)>,
    /// Directories entered and not yet left, outermost first.
    dirs: Vec<PendingDir>,
    /// Directories left whose metadata waits for the workers.
    left: Vec<PendingDir>,
    notes: Notes,
    failed: Vec<(Vec<u8>, u64, String)>,
    is_root: bool,
    pool: Option<Pool>,
    flusher: Option<Flusher>,
}

/// Writes the target's file system back while the restore runs (`syncfs`
/// every `FLUSH_EVERY`, on a thread of its own): the kernel would otherwise
/// keep a restore of many small files in the page cache until its end, and
/// the final sync (or unmount) would write it all while nothing else runs.
/// With it, the disk writes while the files are made, and a restore ends
/// durable in less time.
struct Flusher {
    stop: Option<Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(300);

impl Flusher {
    /// None if no thread could be started (the restore works without).
    /// The directory is opened anew, not duplicated: the kernel reports a
    /// failed write-back once to each open file, and the one it is
    /// reported to must be the final syncfs's.
    fn start(root: &OwnedFd) -> Option<Flusher> {
        let fd = rustix::fs::openat(root, c".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()?;
        let (stop, rx) = bounded::<()>(0);
        let handle = std::thread::Builder::new()
            .name("flush".into())
            .spawn(move || {
                // Errors show at the final syncfs, which reports them.
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(FLUSH_EVERY) {
                    let _ = rustix::fs::syncfs(&fd);
                }
            })
            .ok()?;
        Some(Flusher { stop: Some(stop), handle: Some(handle) })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Restorer {
    /// A restore into `dest`; `threads` above 1: that many threads write
    /// the small files.
    pub fn new(dest: &Path, threads: usize) -> Result<Restorer> {
        let root = rustix::fs::open(dest, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(ctx(|| format!("opening {}", dest.display())))?;
        let is_root = rustix::process::geteuid().is_root();
        let pool = if threads > 1 { Some(Pool::new(threads, is_root)?) } else { None };
        let flusher = Flusher::start(&root);
        Ok(Restorer { root, cache: None, dirs: Vec::new(), left: Vec::new(), notes: Notes::default(), failed: Vec::new(), is_root, pool, flusher })
    }

    fn open_beneath(&self, path: &[u8]) -> io::Result<OwnedFd> {
        sys::open_dir_beneath(self.root.as_fd(), path)
    }

    /// The directory `path` inside the target, created (mode 0700 until
    /// its own member says otherwise) where missing.
    fn dir(&mut self, path: &[u8]) -> io::Result<Arc<OwnedFd>> {
        if let Some((p, fd)) = &self.cache {
            if p == path {
                return Ok(Arc::clone(fd));
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
        let fd = Arc::new(fd);
        self.cache = Some((path.to_vec(), Arc::clone(&fd)));
        Ok(fd)
    }

    /// Waits for the workers to write every file sent so far.
    fn settle(&mut self) {
        if let Some(pool) = &mut self.pool {
            let (mut notes, mut failed) = pool.wait();
            self.notes.absorb(&mut notes);
            self.failed.append(&mut failed);
        }
    }

    /// Marks the directories the stream has left; their metadata is
    /// applied once the files in them are written.
    fn leave_dirs_until(&mut self, path: &[u8]) {
        while let Some(top) = self.dirs.last() {
            if crate::archive::under(path, &top.path) && path != top.path.as_slice() {
                break;
            }
            let d = self.dirs.pop().expect("checked above");
            self.left.push(d);
        }
        if self.pool.is_none() || self.left.len() >= LEFT_MAX {
            self.apply_left();
        }
    }

    fn apply_left(&mut self) {
        if self.left.is_empty() {
            return;
        }
        self.settle();
        for d in std::mem::take(&mut self.left) {
            self.finish_dir(d);
        }
    }

    fn finish_dir(&mut self, d: PendingDir) {
        let fd = match self.open_beneath(&d.path) {
            Ok(fd) => fd,
            Err(e) => {
                self.notes.warnings.push((d.path, format!("directory metadata not applied: {e}")));
                return;
            }
        };
        if let Err(e) = self.notes.apply_fd(self.is_root, &fd, &d.meta) {
            self.notes.warnings.push((d.path.clone(), e.to_string()));
        }
        if d.meta.flags != 0 {
            self.notes.flags.push((d.path, d.meta.flags));
        }
    }

    /// Restores one member. `data` fills a regular file: it is called with
    /// a writer and writes the stored bytes (segments for a sparse file).
    /// A small file is written by a worker after this returns: what fails
    /// there is reported by [`Restorer::finish`].
    pub fn entry(&mut self, meta: &Meta, data: &mut WriteData<'_>) -> Result<()> {
        self.leave_dirs_until(&meta.path);
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
                        // A file a worker has not written yet may stand there.
                        self.settle();
                        if !clear(&parent, &name, true).map_err(ctx(what))? {
                            rustix::fs::mkdirat(&*parent, name.as_c_str(), Mode::from_raw_mode(0o700)).map_err(ctx(what))?;
                        }
                    }
                    r => r.map_err(ctx(what))?,
                }
                self.dirs.push(PendingDir { path: meta.path.clone(), meta: meta.clone() });
            }
            Kind::File if self.pool.is_some() && meta.data_len() <= POOLED_MAX => {
                let mut data_buf = Vec::with_capacity(meta.data_len() as usize);
                let mut pieces = Vec::new();
                let read = data(&mut |off, buf| {
                    data_buf.extend_from_slice(buf);
                    pieces.push((off, buf.len()));
                    Ok(())
                });
                let job = FileJob { parent, name, meta: meta.clone(), data: data_buf, pieces, partial: read.is_err() };
                self.pool.as_mut().expect("checked above").send(job);
                read?;
            }
            Kind::File => {
                let mut fill = |fd: &OwnedFd| data(&mut |off, buf| write_at(fd, off, buf));
                self.notes.make_file(self.is_root, &parent, &name, meta, &mut fill)?;
            }
            Kind::HardLink => {
                // The file it names may still be a worker's to write.
                self.settle();
                clear(&parent, &name, false).map_err(ctx(what))?;
                let (tp, tn) = parent_and_name(&meta.link);
                let tparent = self.dir(tp).map_err(ctx(what))?;
                let tname = cstr(tn).map_err(ctx(what))?;
                rustix::fs::linkat(&*tparent, tname.as_c_str(), &*parent, name.as_c_str(), AtFlags::empty())
                    .map_err(ctx(|| format!("{}: linking to {}", what(), crate::entry::display_path(&meta.link))))?;
            }
            Kind::Symlink => {
                let target = cstr(&meta.link).map_err(ctx(what))?;
                create(&parent, &name, || rustix::fs::symlinkat(target.as_c_str(), &*parent, name.as_c_str())).map_err(ctx(what))?;
                self.notes.apply_at(self.is_root, &parent, &name, meta).map_err(ctx(what))?;
            }
            Kind::Fifo | Kind::CharDev | Kind::BlockDev => {
                let ft = match meta.kind {
                    Kind::Fifo => FileType::Fifo,
                    Kind::CharDev => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                let dev: Dev = rustix::fs::makedev(meta.rdev_major, meta.rdev_minor);
                create(&parent, &name, || rustix::fs::mknodat(&*parent, name.as_c_str(), ft, Mode::from_raw_mode(0o600), dev)).map_err(ctx(what))?;
                self.notes.apply_at(self.is_root, &parent, &name, meta).map_err(ctx(what))?;
            }
        }
        Ok(())
    }

    /// Applies what waits for the end: the workers' files, directories'
    /// metadata, then flags; returns when all of it is on the disk.
    pub fn finish(mut self) -> Result<Finished> {
        self.settle();
        while let Some(d) = self.dirs.pop() {
            self.left.push(d);
        }
        for d in std::mem::take(&mut self.left) {
            self.finish_dir(d);
        }
        self.pool = None;
        self.cache = None;
        let flags = std::mem::take(&mut self.notes.flags);
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
                self.notes.warnings.push((path, format!("inode flags not restored: {e}")));
            }
        }
        // Done means on the disk: what the flusher has not written yet is
        // written now, and a write that failed on the way is said here.
        self.flusher = None;
        rustix::fs::syncfs(&self.root).map_err(ctx(|| "the restored files did not all reach the disk (syncfs; the kernel's log, `dmesg`, says why)".into()))?;
        Ok(Finished { warnings: self.notes.warnings, failed: self.failed })
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
