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
//!
//! One file per stage: `create/walk.rs`, `create/read.rs`,
//! `create/serialize.rs`; this file is the pipeline that joins them (and
//! the compress and write workers, which call `codec` and `container`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crossbeam_channel::{bounded, Receiver, Sender};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::container::{ContainerWriter, Footer, Summary};
use crate::entry::{Kind, Meta, Time, KEPT_FLAGS};
use crate::error::{ctx, Error, Result};
use crate::index::{IndexEntry, IndexWriter};
use crate::readback::ReadBack;
use crate::sys;
use crate::tarw;

mod read;
mod serialize;
mod walk;

use read::{prepare, Budget};
use serialize::{serialize, Serializer};
pub use walk::check_exclude;
use walk::{walk, Excludes, Window};

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
    /// Encrypt the archive to these (age); none: plaintext.
    pub encrypt_to: Vec<age::x25519::Recipient>,
    /// The highest level compression may rise to while the disk, not the
    /// CPU, is the bottleneck (`level` or below: the level stays fixed).
    pub max_level: i32,
    /// Read the archive back from the disk while it is written, and compare
    /// what was read with what was written ([`CreateReport::read_back`]).
    pub read_back: bool,
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
            encrypt_to: Vec::new(),
            read_back: false,
            max_level: 3,
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
    /// With [`CreateOptions::read_back`]: whether the bytes read back from
    /// the disk (after the final fsync) are those written; why not.
    pub read_back: Option<std::result::Result<(), String>>,
    /// How long reading back the tail took, after the final fsync.
    pub read_back_tail: std::time::Duration,
    /// How many data frames were compressed at each zstd level.
    pub levels: BTreeMap<i32, u64>,
}

/// The archive file, written through age when encrypting.
type Sink = crate::crypt::Output<DiskFile>;

/// The archive reaches the disk while it is being made. Every
/// `WRITEBACK_STEP` bytes the part just written is handed to the disk
/// (`sync_file_range`, not waited for), and no more than `DIRTY_MAX` bytes
/// are left unwritten: on a slow disk the writer then waits for the disk
/// (and the compressors for the writer) instead of the page cache filling
/// up and everything being written at the final fsync, after the work.
const WRITEBACK_STEP: u64 = 8 << 20;
const DIRTY_MAX: u64 = 64 << 20;

/// The archive's file, written back as it is written; what reaches it (the
/// ciphertext, when encrypting) is hashed on the way when it is to be read
/// back.
struct DiskFile {
    out: BufWriter<File>,
    hash: Option<blake3::Hasher>,
    /// Reads back each part that reached the disk.
    read_back: Option<ReadBack>,
    /// Bytes written, bytes handed to the disk, bytes known to be on it.
    written: u64,
    started: u64,
    settled: u64,
}

impl DiskFile {
    fn new(out: File, read_back: bool) -> std::io::Result<DiskFile> {
        let read_back = if read_back { Some(ReadBack::start(&out)?) } else { None };
        let hash = read_back.is_some().then(blake3::Hasher::new);
        Ok(DiskFile { out: BufWriter::with_capacity(4 << 20, out), hash, read_back, written: 0, started: 0, settled: 0 })
    }

    /// Flushed: the file, the hash of what was written to it, the read-back.
    fn finish(self) -> std::io::Result<(File, Option<[u8; 32]>, Option<ReadBack>)> {
        let hash = self.hash.map(|h| *h.finalize().as_bytes());
        Ok((self.out.into_inner().map_err(|e| e.into_error())?, hash, self.read_back))
    }

    fn write_back(&mut self) -> std::io::Result<()> {
        if self.written - self.started < WRITEBACK_STEP {
            return Ok(());
        }
        self.out.flush()?;
        let fd = self.out.get_ref().as_fd();
        sys::sync_range(fd, self.started, self.written - self.started, false);
        self.started = self.written;
        if self.started - self.settled > DIRTY_MAX {
            let upto = self.started - DIRTY_MAX / 2;
            sys::sync_range(fd, self.settled, upto - self.settled, true);
            self.settled = upto;
            if let Some(rb) = &self.read_back {
                rb.durable(upto);
            }
        }
        Ok(())
    }
}

impl Write for DiskFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(data)?;
        if let Some(h) = &mut self.hash {
            h.update(&data[..n]);
        }
        self.written += n as u64;
        self.write_back()?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Where the index waits while the archive is written. When the archive is
/// encrypted, so is the spool (to a key that lives only in memory): it may
/// lie on the backup disk, and file names must not reach it in the clear.
struct Spool {
    out: crate::crypt::Output<File>,
    /// The key the spool is encrypted to, in memory only.
    key: Option<age::x25519::Identity>,
}

impl Spool {
    fn new(dir: Option<&Path>, encrypted: bool) -> std::io::Result<Spool> {
        let f = match dir {
            Some(d) => tempfile::tempfile_in(d)?,
            None => tempfile::tempfile()?,
        };
        let key = encrypted.then(age::x25519::Identity::generate);
        let to: Vec<age::x25519::Recipient> = key.iter().map(|k| k.to_public()).collect();
        Ok(Spool { out: crate::crypt::Output::new(f, &to)?, key })
    }

    /// What was written, from the start.
    fn into_reader(self) -> Result<Box<dyn std::io::Read + Send>> {
        let mut f = self.out.finish().map_err(ctx(|| "writing the index spool".into()))?;
        f.seek(SeekFrom::Start(0)).map_err(ctx(|| "rewinding the index spool".into()))?;
        match self.key {
            None => Ok(Box::new(f)),
            Some(key) => {
                let keys = crate::crypt::Keys::new(vec![Box::new(key)]);
                let src = crate::crypt::Source::open(f, "the index spool", Some(&keys))?;
                Ok(Box::new(crate::crypt::SourceReader { src: Box::new(src), pos: 0 }))
            }
        }
    }
}

impl Write for Spool {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.out.write(data)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
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

enum Found {
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
    outcome: Found,
}

struct Chunk {
    seq: u64,
    data: Vec<u8>,
}

/// A compressed frame on its way to the writer: sequence, bytes, the tar
/// bytes it holds, the level it was made at.
type Frame = (u64, Vec<u8>, u64, i32);

/// Compresses chunks at the level the writer asks for (`level`), or at
/// `base` when a chunk looks incompressible.
fn compress_worker(level: &AtomicI32, base: i32, frame_size: usize, rx: Receiver<Chunk>, tx: Sender<Frame>) -> Result<()> {
    let mut c = crate::codec::FrameEncoder::new(base, frame_size)?;
    for chunk in rx {
        let wanted = level.load(Ordering::Relaxed);
        let level = if wanted > base && c.incompressible(&chunk.data) { base } else { wanted };
        c.set_level(level)?;
        let out = c.frame(&chunk.data)?;
        if tx.send((chunk.seq, out, chunk.data.len() as u64, c.level())).is_err() {
            break;
        }
    }
    Ok(())
}

/// The compression level follows the bottleneck. The writer
/// looks at how it spent its time over the last frames: waiting for the
/// compressors (the CPU, or the source, is the bottleneck: one level down,
/// never below the level asked for) or writing while frames wait (the disk
/// is: one level up, to at most `max`, so that cores that would idle make
/// the archive smaller instead).
struct Adapt<'a> {
    level: &'a AtomicI32,
    min: i32,
    max: i32,
    waited: std::time::Duration,
    busy: std::time::Duration,
    frames: u32,
}

impl Adapt<'_> {
    const WINDOW: u32 = 4;

    fn account(&mut self, waited: std::time::Duration, busy: std::time::Duration) {
        self.waited += waited;
        self.busy += busy;
        self.frames += 1;
        if self.frames < Self::WINDOW || self.min >= self.max {
            return;
        }
        let starving = self.waited.as_secs_f64() / (self.waited + self.busy).as_secs_f64().max(1e-9);
        let level = self.level.load(Ordering::Relaxed);
        if starving < 0.05 && level < self.max {
            self.level.store(level + 1, Ordering::Relaxed);
        } else if starving > 0.25 && level > self.min {
            self.level.store(level - 1, Ordering::Relaxed);
        }
        (self.waited, self.busy, self.frames) = Default::default();
    }
}

fn write_worker(out: Sink, rx: Receiver<Frame>, progress: Option<Arc<Progress>>, mut adapt: Adapt<'_>) -> Result<(ContainerWriter<Sink>, BTreeMap<i32, u64>)> {
    let mut w = ContainerWriter::new(out).map_err(ctx(|| "writing the archive".into()))?;
    let mut pending: BTreeMap<u64, (Vec<u8>, u64, i32)> = BTreeMap::new();
    let mut levels: BTreeMap<i32, u64> = BTreeMap::new();
    let mut next = 0u64;
    loop {
        let asked = std::time::Instant::now();
        let Ok((seq, data, u_len, level)) = rx.recv() else { break };
        let waited = asked.elapsed();
        pending.insert(seq, (data, u_len, level));
        let started = std::time::Instant::now();
        while let Some((data, u_len, level)) = pending.remove(&next) {
            w.frame(&data, u_len).map_err(ctx(|| "writing the archive".into()))?;
            *levels.entry(level).or_default() += 1;
            if let Some(p) = &progress {
                p.bytes_out.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            next += 1;
        }
        adapt.account(waited, started.elapsed());
    }
    if !pending.is_empty() {
        return Err(Error::Format("a compressor stopped early".into()));
    }
    Ok((w, levels))
}

/// The threads that read the files' data the walker found, in order.
fn spawn_readers<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    opts: &'scope CreateOptions,
    jobs: Receiver<Job>,
    prepared: Sender<Prepared>,
    budget: &Arc<Budget>,
) -> Result<()> {
    for i in 0..opts.readers.max(1) {
        let (rx, tx, budget, skip) = (jobs.clone(), prepared.clone(), Arc::clone(budget), &opts.skip_inodes);
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
    Ok(())
}

/// What the writer thread hands back: the container, and the bytes written
/// at each compression level.
type Written<W> = (ContainerWriter<W>, BTreeMap<i32, u64>);

/// Archives the tree at `src` (one file system) into `out`, which must be
/// empty and positioned at 0. The caller names, syncs and renames the file.
pub fn create(src: &Path, out: File, opts: &CreateOptions) -> Result<CreateReport> {
    let root =
        rustix::fs::open(src, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(ctx(|| format!("opening {}", src.display())))?;
    let root_dev = rustix::fs::fstat(&root).map_err(ctx(|| format!("reading {}", src.display())))?.st_dev;
    let root = Arc::new(root);
    let excludes = Excludes::new(&opts.excludes)?;
    let spool = Spool::new(opts.spool_dir.as_deref(), !opts.encrypt_to.is_empty()).map_err(ctx(|| "creating the index spool file".into()))?;
    let mut index = IndexWriter::new(BufWriter::with_capacity(1 << 20, spool));
    let disk = DiskFile::new(out, opts.read_back).map_err(ctx(|| "opening the archive to read it back".into()))?;
    let out = Sink::new(disk, &opts.encrypt_to).map_err(ctx(|| "writing the archive".into()))?;

    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(Window::default());
    let budget = Arc::new(Budget(AtomicU64::new(0)));
    let (job_tx, job_rx) = bounded::<Job>(1024);
    let (prep_tx, prep_rx) = bounded::<Prepared>(1024);
    let (prob_tx, prob_rx) = crossbeam_channel::unbounded::<Problem>();
    let (chunk_tx, chunk_rx) = bounded::<Chunk>(opts.threads.max(1) * 2);
    let (frame_tx, frame_rx) = bounded::<Frame>(opts.threads.max(1) * 2);
    let level = AtomicI32::new(opts.level);
    let level = &level;

    let result = std::thread::scope(|s| -> Result<(Summary, Written<Sink>)> {
        {
            let (root, window, stop, prob_tx) = (Arc::clone(&root), Arc::clone(&window), Arc::clone(&stop), prob_tx.clone());
            let excludes = &excludes;
            std::thread::Builder::new()
                .name("walk".into())
                .spawn_scoped(s, move || walk(root, root_dev, excludes, &job_tx, &prob_tx, &window, &stop))
                .map_err(ctx(|| "starting the walker".into()))?;
        }
        spawn_readers(s, opts, job_rx, prep_tx, &budget)?;
        let mut compressors = Vec::new();
        for i in 0..opts.threads.max(1) {
            let (rx, tx, base, frame_size) = (chunk_rx.clone(), frame_tx.clone(), opts.level, opts.frame_size);
            compressors.push(
                std::thread::Builder::new()
                    .name(format!("zstd-{i}"))
                    .spawn_scoped(s, move || compress_worker(level, base, frame_size, rx, tx))
                    .map_err(ctx(|| "starting a compressor".into()))?,
            );
        }
        drop(chunk_rx);
        drop(frame_tx);
        let progress = opts.progress.clone();
        let writer = std::thread::Builder::new()
            .name("write".into())
            .spawn_scoped(s, move || {
                let adapt = Adapt { level, min: opts.level, max: opts.max_level, waited: Default::default(), busy: Default::default(), frames: 0 };
                write_worker(out, frame_rx, progress, adapt)
            })
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
    let (summary, written) = result?;
    conclude(summary, written, prob_rx.try_iter().collect(), index)
}

/// After the last member: the index and footer written, the archive synced,
/// and what reading it back found.
fn conclude(mut summary: Summary, (w, levels): Written<Sink>, mut problems: Vec<Problem>, index: IndexWriter<BufWriter<Spool>>) -> Result<CreateReport> {
    summary.errors = problems.len() as u64;
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    let count = index.count;
    let spool = index.into_inner().into_inner().map_err(|e| Error::Io { what: "writing the index spool".into(), source: e.into_error() })?;
    summary.entries = count;
    let mut spool = std::io::BufReader::with_capacity(1 << 20, spool.into_reader()?);
    let (out, footer) = w.finish(&mut spool, count, summary.clone())?;
    let (file, file_hash, read_back) = out.finish().and_then(DiskFile::finish).map_err(ctx(|| "writing the archive".into()))?;
    file.sync_all().map_err(ctx(|| "syncing the archive to disk".into()))?;
    let tail = std::time::Instant::now();
    let read_back = read_back.map(|rb| {
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        match rb.finish(len) {
            Ok(h) if Some(h) == file_hash => Ok(()),
            Ok(_) => Err("the bytes read back differ from those written".to_string()),
            Err(e) => Err(format!("reading it back: {e}")),
        }
    });
    Ok(CreateReport { summary, footer, problems, read_back, read_back_tail: tail.elapsed(), levels })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A writer that never waits for the compressors (the disk is
    /// the bottleneck) raises the level step by step to the maximum; one
    /// that mostly waits (the CPU is) lowers it to the level asked for; a
    /// fixed level (max = min) never moves.
    #[test]
    fn the_level_follows_the_bottleneck() {
        let level = AtomicI32::new(3);
        let mut a = Adapt { level: &level, min: 3, max: 9, waited: Duration::ZERO, busy: Duration::ZERO, frames: 0 };
        for _ in 0..Adapt::WINDOW * 20 {
            a.account(Duration::from_micros(10), Duration::from_millis(100));
        }
        assert_eq!(level.load(Ordering::Relaxed), 9);
        for _ in 0..Adapt::WINDOW * 20 {
            a.account(Duration::from_millis(100), Duration::from_millis(10));
        }
        assert_eq!(level.load(Ordering::Relaxed), 3);
        // In between (10-25 % waiting): it stays where it is.
        level.store(5, Ordering::Relaxed);
        for _ in 0..Adapt::WINDOW * 20 {
            a.account(Duration::from_millis(15), Duration::from_millis(85));
        }
        assert_eq!(level.load(Ordering::Relaxed), 5);
        let fixed = AtomicI32::new(3);
        let mut f = Adapt { level: &fixed, min: 3, max: 3, waited: Duration::ZERO, busy: Duration::ZERO, frames: 0 };
        for _ in 0..Adapt::WINDOW * 20 {
            f.account(Duration::ZERO, Duration::from_millis(100));
        }
        assert_eq!(fixed.load(Ordering::Relaxed), 3);
    }
}
