//! Making an archive of one file system tree.
//!
//! Four stages, each on its own threads, joined by bounded channels:
//!
//! ```text
//! walk (1 thread, depth first, stays on one file system)
//!   ─► read (N threads: stat, xattrs, flags, holes, small files' data)
//!   ─► serialize (caller's thread, in walk order: tar headers + data, hashes, index)
//!   ─► compress (M threads, one zstd frame per chunk) ─► write (1 thread, in order)
//! ```
//! Reading small files on many threads is what keeps a cold disk busy;
//! the order of the archive stays the walk's. Memory is bounded by the
//! walk window, the inline-data budget and the channel sizes, never by the
//! number of files (the hard-link table aside).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::{bounded, Receiver, Sender};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::container::{ContainerWriter, Footer, Summary};
use crate::entry::{Kind, Meta, Time, KEPT_FLAGS};
use crate::error::{ctx, Error, Result};
use crate::index::{IndexEntry, IndexWriter};
use crate::sys;
use crate::tarw;

/// Files up to this size are read by the reader threads.
const INLINE_MAX: u64 = 1 << 20;
/// Bytes of file data the reader threads may hold at once.
const INLINE_BUDGET: u64 = 64 << 20;
/// How far the walk may run ahead of the serializer, in entries.
const WINDOW: u64 = 4096;

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// zstd level.
    pub level: i32,
    /// Compression threads.
    pub threads: usize,
    /// Reader threads (I/O parallelism for small files).
    pub readers: usize,
    /// Glob patterns: without `/` they match any name, with `/` the path from the root.
    pub excludes: Vec<String>,
    /// Uncompressed bytes per zstd frame.
    pub frame_size: usize,
    /// Where the index is spooled while the archive is written.
    pub spool_dir: Option<PathBuf>,
    pub progress: Option<Arc<Progress>>,
    /// Files never to archive, by (device, inode): the archive being
    /// written, when it lies inside the source tree.
    pub skip_inodes: Vec<(u64, u64)>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        CreateOptions {
            level: 3,
            threads: cores,
            readers: 8,
            excludes: Vec::new(),
            frame_size: 8 << 20,
            spool_dir: None,
            progress: None,
            skip_inodes: Vec::new(),
        }
    }
}

/// A file that could not be archived as it is (skipped, or stored with
/// zeros where reading failed).
#[derive(Clone, Debug)]
pub struct Problem {
    pub path: Vec<u8>,
    pub what: String,
}

#[derive(Debug)]
pub struct CreateReport {
    pub summary: Summary,
    pub footer: Footer,
    pub problems: Vec<Problem>,
}

enum Target {
    /// A directory the walker opened (to descend into it).
    Dir(Arc<OwnedFd>),
    Child {
        parent: Arc<OwnedFd>,
        name: CString,
    },
}

struct Job {
    seq: u64,
    path: Vec<u8>,
    target: Target,
}

enum Content {
    None,
    Inline(Vec<u8>),
    Stream(OwnedFd),
}

enum Outcome {
    Entry {
        meta: Meta,
        dev: u64,
        ino: u64,
        nlink: u64,
        content: Content,
    },
    Socket,
    /// The archive itself, or another file the caller excluded by inode.
    Skipped,
    Vanished,
    Failed(String),
}

struct Prepared {
    seq: u64,
    path: Vec<u8>,
    outcome: Outcome,
}

/// The walk may not run more than `WINDOW` entries ahead of the serializer.
#[derive(Default)]
struct Window {
    done: Mutex<u64>,
    cond: Condvar,
}

impl Window {
    fn wait_for(&self, seq: u64, stop: &AtomicBool) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while seq >= *done + WINDOW && !stop.load(Ordering::Relaxed) {
            done = self.cond.wait_timeout(done, std::time::Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn advance(&self, done: u64) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = done;
        self.cond.notify_all();
    }
}

struct Excludes(Option<globset::GlobSet>);

/// Checks one exclude pattern as `create` will read it: the error says
/// what is wrong with it. For configuration files checked before any work.
pub fn check_exclude(pattern: &str) -> Result<()> {
    Excludes::new(&[pattern.to_string()]).map(|_| ())
}

impl Excludes {
    fn new(patterns: &[String]) -> Result<Excludes> {
        if patterns.is_empty() {
            return Ok(Excludes(None));
        }
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            let p = p.trim_end_matches('/');
            let pat = match p.strip_prefix('/') {
                Some(anchored) => anchored.to_string(),
                None if p.contains('/') => p.to_string(),
                None => format!("**/{p}"),
            };
            let g = globset::GlobBuilder::new(&pat)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Refused(format!("bad --exclude pattern {p:?}: {e}")))?;
            b.add(g);
        }
        Ok(Excludes(Some(b.build().map_err(|e| Error::Refused(format!("bad --exclude patterns: {e}")))?)))
    }

    fn matches(&self, path: &[u8]) -> bool {
        match &self.0 {
            Some(set) => set.is_match(Path::new(std::ffi::OsStr::from_bytes(path))),
            None => false,
        }
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if !parent.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn open_dir_at(parent: impl AsFd, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(parent, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

/// Depth first, directories before their contents, one file system only.
fn walk(root: Arc<OwnedFd>, root_dev: u64, excludes: &Excludes, jobs: &Sender<Job>, problems: &Sender<Problem>, window: &Window, stop: &AtomicBool) {
    let mut seq = 0u64;
    let mut emit = |path: Vec<u8>, target: Target| -> bool {
        window.wait_for(seq, stop);
        let ok = jobs.send(Job { seq, path, target }).is_ok();
        seq += 1;
        ok
    };
    if !emit(Vec::new(), Target::Dir(Arc::clone(&root))) {
        return;
    }
    struct Frame {
        dir: rustix::fs::Dir,
        fd: Arc<OwnedFd>,
        path: Vec<u8>,
    }
    let first = match rustix::fs::Dir::read_from(&*root) {
        Ok(d) => d,
        Err(e) => {
            let _ = problems.send(Problem { path: Vec::new(), what: format!("cannot list the directory: {e}") });
            return;
        }
    };
    let mut stack = vec![Frame { dir: first, fd: root, path: Vec::new() }];
    while let Some(top) = stack.last_mut() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let ent = match top.dir.read() {
            None => {
                stack.pop();
                continue;
            }
            Some(Err(e)) => {
                let _ = problems.send(Problem { path: top.path.clone(), what: format!("cannot list the directory: {e}") });
                stack.pop();
                continue;
            }
            Some(Ok(ent)) => ent,
        };
        let name = ent.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let path = join(&top.path, name.to_bytes());
        if excludes.matches(&path) {
            continue;
        }
        let name = name.to_owned();
        let mut ftype = ent.file_type();
        if ftype == FileType::Unknown {
            ftype = match rustix::fs::statat(&*top.fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => FileType::Unknown,
            };
        }
        if ftype == FileType::Directory {
            match open_dir_at(&*top.fd, &name) {
                Ok(fd) => {
                    let dev = rustix::fs::fstat(&fd).map(|s| s.st_dev).unwrap_or(root_dev);
                    let fd = Arc::new(fd);
                    if !emit(path.clone(), Target::Dir(Arc::clone(&fd))) {
                        return;
                    }
                    // A mount point is kept as an empty directory, like tar --one-file-system.
                    if dev == root_dev {
                        match rustix::fs::Dir::read_from(&*fd) {
                            Ok(dir) => stack.push(Frame { dir, fd, path }),
                            Err(e) => {
                                let _ = problems.send(Problem { path, what: format!("cannot list the directory: {e}") });
                            }
                        }
                    }
                }
                Err(_) => {
                    let parent = Arc::clone(&top.fd);
                    if !emit(path, Target::Child { parent, name }) {
                        return;
                    }
                }
            }
        } else {
            let parent = Arc::clone(&top.fd);
            if !emit(path, Target::Child { parent, name }) {
                return;
            }
        }
    }
}

fn meta_from_stat(path: Vec<u8>, kind: Kind, st: &rustix::fs::Stat) -> Meta {
    let mut m = Meta::new(path, kind);
    m.mode = st.st_mode & 0o7777;
    m.uid = u64::from(st.st_uid);
    m.gid = u64::from(st.st_gid);
    m.mtime = Time { sec: st.st_mtime, nsec: st.st_mtime_nsec as u32 };
    if kind == Kind::File {
        m.size = st.st_size as u64;
    }
    if matches!(kind, Kind::CharDev | Kind::BlockDev) {
        m.rdev_major = rustix::fs::major(st.st_rdev);
        m.rdev_minor = rustix::fs::minor(st.st_rdev);
    }
    m
}

fn kind_of(mode: u32) -> Option<Kind> {
    Some(match FileType::from_raw_mode(mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::Fifo => Kind::Fifo,
        FileType::CharacterDevice => Kind::CharDev,
        FileType::BlockDevice => Kind::BlockDev,
        _ => return None,
    })
}

struct Budget(AtomicU64);

impl Budget {
    fn take(&self, n: u64) -> bool {
        self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used + n <= INLINE_BUDGET).then_some(used + n)).is_ok()
    }
    fn give(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::AcqRel);
    }
}

fn read_inline(fd: &OwnedFd, meta: &Meta) -> std::io::Result<Option<Vec<u8>>> {
    let len = meta.data_len() as usize;
    let mut buf = vec![0u8; len];
    let mut at = 0usize;
    let segs: Vec<(u64, u64)> = match &meta.sparse {
        Some(s) => s.iter().map(|s| (s.offset, s.len)).collect(),
        None => vec![(0, meta.size)],
    };
    for (off, l) in segs {
        let n = sys::pread_full(fd, &mut buf[at..at + l as usize], off)?;
        if n != l as usize {
            return Ok(None);
        }
        at += n;
    }
    // Grown since stat: read it in the serializer, which reports it.
    let mut probe = [0u8; 1];
    if meta.sparse.is_none() && sys::pread_full(fd, &mut probe, meta.size)? != 0 {
        return Ok(None);
    }
    Ok(Some(buf))
}

fn prepare(job: Job, budget: &Budget, skip: &[(u64, u64)]) -> Prepared {
    let Job { seq, path, target } = job;
    let outcome = match prepare_outcome(&path, target, budget, skip) {
        Ok(o) => o,
        Err(e) if e == Errno::NOENT => Outcome::Vanished,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    Prepared { seq, path, outcome }
}

fn prepare_outcome(path: &[u8], target: Target, budget: &Budget, skip: &[(u64, u64)]) -> std::result::Result<Outcome, Errno> {
    let (fd, st, parent_name): (Option<OwnedFd>, rustix::fs::Stat, Option<(Arc<OwnedFd>, CString)>) = match target {
        Target::Dir(fd) => {
            let st = rustix::fs::fstat(&*fd)?;
            let own = rustix::io::fcntl_dupfd_cloexec(&*fd, 0)?;
            (Some(own), st, None)
        }
        Target::Child { parent, name } => {
            let st = rustix::fs::statat(&*parent, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
            let fd = if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
                let fd = rustix::fs::openat(&*parent, name.as_c_str(), flags | OFlags::NOATIME, Mode::empty())
                    .or_else(|_| rustix::fs::openat(&*parent, name.as_c_str(), flags, Mode::empty()))?;
                Some(fd)
            } else {
                None
            };
            (fd, st, Some((parent, name)))
        }
    };
    let Some(kind) = kind_of(st.st_mode) else {
        return Ok(Outcome::Socket);
    };
    if skip.contains(&(st.st_dev, st.st_ino)) {
        return Ok(Outcome::Skipped);
    }
    let st = match &fd {
        Some(fd) => rustix::fs::fstat(fd)?,
        None => st,
    };
    let mut meta = meta_from_stat(path.to_vec(), kind, &st);
    match (&fd, &parent_name) {
        (Some(fd), _) => {
            meta.xattrs = sys::xattrs_fd(fd.as_fd()).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
            meta.flags = sys::flags(fd.as_fd()) & KEPT_FLAGS;
        }
        (None, Some((parent, name))) => {
            let p = sys::proc_path(parent.as_fd(), name);
            meta.xattrs = sys::xattrs_path(&p).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
            if kind == Kind::Symlink {
                meta.link = rustix::fs::readlinkat(&**parent, name.as_c_str(), Vec::new())?.into_bytes();
            }
        }
        (None, None) => {}
    }
    let mut content = Content::None;
    if kind == Kind::File {
        let fd = fd.ok_or(Errno::BADF)?;
        meta.sparse = sys::data_segments(fd.as_fd(), meta.size, st.st_blocks as u64).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
        let len = meta.data_len();
        content = Content::Stream(fd);
        if len <= INLINE_MAX && budget.take(len) {
            if let Content::Stream(fd) = &content {
                match read_inline(fd, &meta) {
                    Ok(Some(data)) => content = Content::Inline(data),
                    Ok(None) => budget.give(len),
                    Err(e) => {
                        budget.give(len);
                        return Err(Errno::from_io_error(&e).unwrap_or(Errno::IO));
                    }
                }
            }
        }
    }
    Ok(Outcome::Entry { meta, dev: st.st_dev, ino: st.st_ino, nlink: st.st_nlink, content })
}

struct Chunk {
    seq: u64,
    data: Vec<u8>,
}

/// Tar bytes in, frames out: cuts the stream into chunks for the compressors.
struct Serializer {
    chunk: Vec<u8>,
    chunk_start: u64,
    frame_size: usize,
    next_chunk: u64,
    out: Sender<Chunk>,
    progress: Option<Arc<Progress>>,
}

impl Serializer {
    fn pos(&self) -> u64 {
        self.chunk_start + self.chunk.len() as u64
    }

    fn flush(&mut self) -> Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.chunk, Vec::with_capacity(self.frame_size + 64 * 1024));
        self.chunk_start += data.len() as u64;
        self.out.send(Chunk { seq: self.next_chunk, data }).map_err(|_| Error::Format("the archive writer stopped".into()))?;
        self.next_chunk += 1;
        Ok(())
    }

    fn put(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = self.frame_size.saturating_sub(self.chunk.len()).max(1);
            let n = room.min(bytes.len());
            self.chunk.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.chunk.len() >= self.frame_size {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Ends a member: pads, and starts a new frame if this one is full.
    fn end_member(&mut self, data_len: u64) -> Result<()> {
        let pad = tarw::padding(data_len);
        self.chunk.resize(self.chunk.len() + pad, 0);
        if self.chunk.len() >= self.frame_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Copies a large file's data; a file that shrank or fails is padded
    /// with zeros so the archive stays valid. Returns what went wrong, if anything.
    fn stream_file(&mut self, fd: &OwnedFd, meta: &Meta, hasher: &mut blake3::Hasher) -> Result<Option<String>> {
        let segs: Vec<(u64, u64)> = match &meta.sparse {
            Some(s) => s.iter().map(|s| (s.offset, s.len)).collect(),
            None => vec![(0, meta.size)],
        };
        let _ = rustix::fs::fadvise(fd, 0, None, rustix::fs::Advice::Sequential);
        let mut buf = vec![0u8; 1 << 20];
        let mut problem = None;
        for (off, len) in segs {
            let mut done = 0u64;
            while done < len {
                let want = (len - done).min(buf.len() as u64) as usize;
                let n = if problem.is_none() {
                    match sys::pread_full(fd, &mut buf[..want], off + done) {
                        Ok(n) if n == want => n,
                        Ok(n) => {
                            problem = Some(format!("shrank while being read ({} of {} bytes); stored with zeros at the end", off + done + n as u64, meta.size));
                            buf[n..want].fill(0);
                            want
                        }
                        Err(e) => {
                            problem = Some(format!("read error at byte {}: {e}; stored with zeros from there", off + done));
                            buf[..want].fill(0);
                            want
                        }
                    }
                } else {
                    buf[..want].fill(0);
                    want
                };
                hasher.update(&buf[..n]);
                self.put(&buf[..n])?;
                if let Some(p) = &self.progress {
                    p.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                }
                done += n as u64;
            }
        }
        Ok(problem)
    }
}

fn compress_worker(level: i32, frame_size: usize, rx: Receiver<Chunk>, tx: Sender<(u64, Vec<u8>, u64)>) -> Result<()> {
    let mut c = zstd::bulk::Compressor::new(level).map_err(ctx(|| "starting the compressor".into()))?;
    // A window as large as the frame: the whole frame can refer back to
    // itself, which wins back what independent frames lose against one
    // long stream (the decompressor needs no more memory than the frame).
    // At most 8 MiB, whatever the frame size: readers accept no more than
    // `container::WINDOW_LOG_MAX`, to keep their memory bounded.
    let window_log = (usize::BITS - frame_size.saturating_sub(1).leading_zeros()).clamp(19, 23);
    c.set_parameter(zstd::zstd_safe::CParameter::WindowLog(window_log)).map_err(ctx(|| "configuring the compressor".into()))?;
    c.include_checksum(true).map_err(ctx(|| "configuring the compressor".into()))?;
    c.include_contentsize(true).map_err(ctx(|| "configuring the compressor".into()))?;
    for chunk in rx {
        let out = c.compress(&chunk.data).map_err(ctx(|| "compressing".into()))?;
        if tx.send((chunk.seq, out, chunk.data.len() as u64)).is_err() {
            break;
        }
    }
    Ok(())
}

fn write_worker(out: File, rx: Receiver<(u64, Vec<u8>, u64)>, progress: Option<Arc<Progress>>) -> Result<ContainerWriter<BufWriter<File>>> {
    let mut w = ContainerWriter::new(BufWriter::with_capacity(4 << 20, out)).map_err(ctx(|| "writing the archive".into()))?;
    let mut pending: BTreeMap<u64, (Vec<u8>, u64)> = BTreeMap::new();
    let mut next = 0u64;
    for (seq, data, u_len) in rx {
        pending.insert(seq, (data, u_len));
        while let Some((data, u_len)) = pending.remove(&next) {
            w.frame(&data, u_len).map_err(ctx(|| "writing the archive".into()))?;
            if let Some(p) = &progress {
                p.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            next += 1;
        }
    }
    if !pending.is_empty() {
        return Err(Error::Format("a compressor stopped early".into()));
    }
    Ok(w)
}

/// Archives the tree at `src` (one file system) into `out`, which must be
/// empty and positioned at 0. The caller names, syncs and renames the file.
pub fn create(src: &Path, out: File, opts: &CreateOptions) -> Result<CreateReport> {
    let root =
        rustix::fs::open(src, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(ctx(|| format!("opening {}", src.display())))?;
    let root_dev = rustix::fs::fstat(&root).map_err(ctx(|| format!("reading {}", src.display())))?.st_dev;
    let root = Arc::new(root);
    let excludes = Excludes::new(&opts.excludes)?;
    let spool = match &opts.spool_dir {
        Some(d) => tempfile::tempfile_in(d),
        None => tempfile::tempfile(),
    }
    .map_err(ctx(|| "creating the index spool file".into()))?;
    let mut index = IndexWriter::new(BufWriter::with_capacity(1 << 20, spool));

    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(Window::default());
    let budget = Arc::new(Budget(AtomicU64::new(0)));
    let (job_tx, job_rx) = bounded::<Job>(1024);
    let (prep_tx, prep_rx) = bounded::<Prepared>(1024);
    let (prob_tx, prob_rx) = crossbeam_channel::unbounded::<Problem>();
    let (chunk_tx, chunk_rx) = bounded::<Chunk>(opts.threads.max(1) * 2);
    let (frame_tx, frame_rx) = bounded::<(u64, Vec<u8>, u64)>(opts.threads.max(1) * 2);

    let result = std::thread::scope(|s| -> Result<(Summary, ContainerWriter<BufWriter<File>>)> {
        {
            let (root, window, stop, prob_tx) = (Arc::clone(&root), Arc::clone(&window), Arc::clone(&stop), prob_tx.clone());
            let excludes = &excludes;
            std::thread::Builder::new()
                .name("walk".into())
                .spawn_scoped(s, move || walk(root, root_dev, excludes, &job_tx, &prob_tx, &window, &stop))
                .map_err(ctx(|| "starting the walker".into()))?;
        }
        for i in 0..opts.readers.max(1) {
            let (rx, tx, budget, skip) = (job_rx.clone(), prep_tx.clone(), Arc::clone(&budget), &opts.skip_inodes);
            std::thread::Builder::new()
                .name(format!("read-{i}"))
                .spawn_scoped(s, move || {
                    for job in rx {
                        if tx.send(prepare(job, &budget, skip)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(ctx(|| "starting a reader".into()))?;
        }
        drop(job_rx);
        drop(prep_tx);
        let mut compressors = Vec::new();
        for i in 0..opts.threads.max(1) {
            let (rx, tx, level, frame_size) = (chunk_rx.clone(), frame_tx.clone(), opts.level, opts.frame_size);
            compressors.push(
                std::thread::Builder::new()
                    .name(format!("zstd-{i}"))
                    .spawn_scoped(s, move || compress_worker(level, frame_size, rx, tx))
                    .map_err(ctx(|| "starting a compressor".into()))?,
            );
        }
        drop(chunk_rx);
        drop(frame_tx);
        let progress = opts.progress.clone();
        let writer = std::thread::Builder::new()
            .name("write".into())
            .spawn_scoped(s, move || write_worker(out, frame_rx, progress))
            .map_err(ctx(|| "starting the writer".into()))?;

        let mut ser = Serializer {
            chunk: Vec::with_capacity(opts.frame_size + 64 * 1024),
            chunk_start: 0,
            frame_size: opts.frame_size.max(64 * 1024),
            next_chunk: 0,
            out: chunk_tx,
            progress: opts.progress.clone(),
        };
        let serialized = serialize(&mut ser, prep_rx, &prob_tx, &mut index, &window, &budget);
        if serialized.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let end = serialized.and_then(|summary| {
            ser.put(&[0u8; 2 * tarw::BLOCK])?;
            ser.flush()?;
            Ok(summary)
        });
        drop(ser);
        let mut first_err = None;
        for c in compressors {
            if let Ok(Err(e)) = c.join() {
                first_err.get_or_insert(e);
            }
        }
        let written = writer.join().map_err(|_| Error::Format("the writer thread panicked".into()))?;
        // The writer's error (a full disk, say) explains the others.
        let w = written?;
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok((end?, w))
    });
    let (mut summary, w) = result?;
    let mut problems: Vec<Problem> = prob_rx.try_iter().collect();
    summary.errors = problems.len() as u64;
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    let count = index.count;
    let mut spool = index.into_inner().into_inner().map_err(|e| Error::Io { what: "writing the index spool".into(), source: e.into_error() })?;
    spool.seek(SeekFrom::Start(0)).map_err(ctx(|| "rewinding the index spool".into()))?;
    summary.entries = count;
    let mut spool = std::io::BufReader::with_capacity(1 << 20, spool);
    let (out, footer) = w.finish(&mut spool, count, summary.clone())?;
    let file = out.into_inner().map_err(|e| Error::Io { what: "writing the archive".into(), source: e.into_error() })?;
    file.sync_all().map_err(ctx(|| "syncing the archive to disk".into()))?;
    Ok(CreateReport { summary, footer, problems })
}

fn serialize(
    ser: &mut Serializer,
    rx: Receiver<Prepared>,
    problems: &Sender<Problem>,
    index: &mut IndexWriter<BufWriter<File>>,
    window: &Window,
    budget: &Budget,
) -> Result<Summary> {
    let mut pending: BTreeMap<u64, Prepared> = BTreeMap::new();
    let mut next = 0u64;
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut summary = Summary::default();
    let mut headers = Vec::with_capacity(8192);
    for p in rx {
        pending.insert(p.seq, p);
        while let Some(p) = pending.remove(&next) {
            next += 1;
            if next % 256 == 0 {
                window.advance(next);
            }
            let (mut meta, dev, ino, nlink, content) = match p.outcome {
                Outcome::Entry { meta, dev, ino, nlink, content } => (meta, dev, ino, nlink, content),
                Outcome::Socket => {
                    summary.sockets_skipped += 1;
                    continue;
                }
                Outcome::Skipped => continue,
                Outcome::Vanished => {
                    let _ = problems.send(Problem { path: p.path, what: "vanished before it could be read; not archived".into() });
                    continue;
                }
                Outcome::Failed(why) => {
                    let _ = problems.send(Problem { path: p.path, what: format!("cannot be read ({why}); not archived") });
                    continue;
                }
            };
            if let Content::Inline(d) = &content {
                budget.give(d.len() as u64);
            }
            let mut content = content;
            if meta.kind != Kind::Dir && nlink > 1 {
                if let Some(first) = links.get(&(dev, ino)) {
                    meta.kind = Kind::HardLink;
                    meta.link = first.clone();
                    meta.size = 0;
                    meta.sparse = None;
                    content = Content::None;
                } else {
                    links.insert((dev, ino), meta.path.clone());
                }
            }
            headers.clear();
            let header_offset = ser.pos();
            let data_len = tarw::write_headers(&mut headers, &meta);
            ser.put(&headers)?;
            // The sparse map is the first part of the member's data.
            let map_len = meta.sparse.as_ref().map_or(0, |s| tarw::sparse_map(s).len() as u64);
            let data_offset = ser.pos() - map_len;
            let mut hasher = blake3::Hasher::new();
            if map_len > 0 {
                hasher.update(&headers[headers.len() - map_len as usize..]);
            }
            let mut ok = true;
            match content {
                Content::Inline(d) => {
                    hasher.update(&d);
                    ser.put(&d)?;
                    if let Some(pr) = &ser.progress {
                        pr.bytes_in.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                Content::Stream(fd) => {
                    if let Some(problem) = ser.stream_file(&fd, &meta, &mut hasher)? {
                        ok = false;
                        let _ = problems.send(Problem { path: meta.path.clone(), what: problem });
                    }
                }
                Content::None => {}
            }
            ser.end_member(data_len + map_len)?;
            match meta.kind {
                Kind::File => {
                    summary.files += 1;
                    summary.bytes += meta.size;
                    summary.data_bytes += data_len;
                }
                Kind::Dir => summary.dirs += 1,
                Kind::Symlink => summary.symlinks += 1,
                Kind::HardLink => summary.hardlinks += 1,
                _ => summary.specials += 1,
            }
            if let Some(pr) = &ser.progress {
                pr.files.fetch_add(1, Ordering::Relaxed);
            }
            let has_data = meta.kind == Kind::File;
            let entry = IndexEntry {
                header_offset,
                data_offset,
                stored_len: if has_data { data_len + map_len } else { 0 },
                hash: (has_data && ok).then(|| *hasher.finalize().as_bytes()),
                ..IndexEntry::of(meta)
            };
            index.push(&entry).map_err(ctx(|| "writing the index spool".into()))?;
        }
    }
    window.advance(u64::MAX / 2);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name the walk saw that is gone when it is read: reported as
    /// vanished (the archive goes on without it), not an error.
    #[test]
    fn a_file_that_vanished_after_the_walk_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("here"), b"x").unwrap();
        let parent = Arc::new(rustix::fs::open(dir.path(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap());
        let budget = Budget(AtomicU64::new(0));
        let job = |name: &str| Job {
            seq: 0,
            path: name.as_bytes().to_vec(),
            target: Target::Child { parent: Arc::clone(&parent), name: CString::new(name).unwrap() },
        };
        assert!(matches!(prepare(job("gone"), &budget, &[]).outcome, Outcome::Vanished));
        match prepare(job("here"), &budget, &[]).outcome {
            Outcome::Entry { meta, content: Content::Inline(d), .. } => {
                assert_eq!(meta.size, 1);
                assert_eq!(d, b"x");
            }
            _ => panic!("a present file is read"),
        }
        // Skipped by inode: the archive being written.
        let st = rustix::fs::stat(dir.path().join("here")).unwrap();
        assert!(matches!(prepare(job("here"), &budget, &[(st.st_dev, st.st_ino)]).outcome, Outcome::Skipped));
    }
}
