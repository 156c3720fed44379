//! Reading an archive back from the disk while it is being written.
//! Each part the writer has waited onto the disk is read again
//! at once — with `O_DIRECT` where the filesystem allows it, else after its
//! pages are dropped from the cache — and hashed, while the next part is
//! written; after the final fsync only the tail is left to read. The hash
//! of what was read is compared with the hash of what was written: a disk
//! (or a cable) that gives back other bytes is caught without reading the
//! whole archive a second time after it is made.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use crossbeam_channel::{unbounded, Sender};

/// Reads are aligned to this (any logical block size up to it).
const ALIGN: u64 = 4096;
const READ: usize = 1 << 20;

/// A thread reading back what is known to be on the disk.
pub struct ReadBack {
    tx: Option<Sender<u64>>,
    handle: Option<std::thread::JoinHandle<io::Result<(u64, blake3::Hasher)>>>,
}

struct Reader {
    file: File,
    /// Opened with `O_DIRECT`: reads bypass the cache.
    direct: bool,
    /// Read and hashed up to here (a multiple of ALIGN until the end).
    pos: u64,
    hash: blake3::Hasher,
    buf: Vec<u8>,
}

impl Reader {
    /// Reads and hashes `[pos, upto)`; at the end of the file, less.
    fn read_to(&mut self, upto: u64) -> io::Result<()> {
        let start = self.buf.as_ptr().align_offset(ALIGN as usize);
        while self.pos < upto {
            let want = ((upto - self.pos).min(READ as u64)).div_ceil(ALIGN) * ALIGN;
            if !self.direct {
                let _ = rustix::fs::fadvise(&self.file, self.pos, std::num::NonZeroU64::new(want), rustix::fs::Advice::DontNeed);
            }
            let buf = &mut self.buf[start..start + want as usize];
            let n = match self.file.read_at(buf, self.pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("the file ends at {} bytes, {upto} were written", self.pos)));
            }
            let n = n.min((upto - self.pos) as usize);
            self.hash.update(&buf[..n]);
            self.pos += n as u64;
        }
        Ok(())
    }
}

impl ReadBack {
    /// Starts reading back `file` (the descriptor being written; it is
    /// opened a second time, for reading).
    pub fn start(file: &File) -> io::Result<ReadBack> {
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let (file, direct) = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path) {
            Ok(f) => (f, true),
            Err(_) => (std::fs::File::open(&path)?, false),
        };
        let mut r = Reader { file, direct, pos: 0, hash: blake3::Hasher::new(), buf: vec![0u8; READ + ALIGN as usize] };
        let (tx, rx) = unbounded::<u64>();
        let handle = std::thread::Builder::new().name("read-back".into()).spawn(move || {
            let mut end = None;
            for upto in rx {
                // u64::MAX marks the end: the last value before it is the length.
                if upto == u64::MAX {
                    break;
                }
                match r.read_to(upto / ALIGN * ALIGN) {
                    Ok(()) => end = Some(upto),
                    Err(e) => return Err(e),
                }
            }
            if let Some(len) = end {
                r.read_to(len)?;
            }
            Ok((r.pos, r.hash))
        })?;
        Ok(ReadBack { tx: Some(tx), handle: Some(handle) })
    }

    /// The first `upto` bytes are on the disk: read them back.
    pub fn durable(&self, upto: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(upto);
        }
    }

    /// All `len` bytes are on the disk (fsynced): reads the rest, and
    /// returns the BLAKE3 of every byte read back.
    pub fn finish(mut self, len: u64) -> io::Result<[u8; 32]> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(len);
            let _ = tx.send(u64::MAX);
        }
        let handle = self.handle.take().expect("finished once");
        let (read, hash) = handle.join().map_err(|_| io::Error::other("the read-back thread panicked"))??;
        if read != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("read back {read} bytes of {len}")));
        }
        Ok(*hash.finalize().as_bytes())
    }
}

impl Drop for ReadBack {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn written(dir: &std::path::Path, n: usize) -> (File, Vec<u8>) {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join("a")).unwrap();
        (f, data)
    }

    /// Where the tests write: a disk filesystem (O_DIRECT) and a tmpfs
    /// (no O_DIRECT: the cache is dropped instead).
    fn dirs() -> Vec<tempfile::TempDir> {
        let shm = std::path::Path::new("/dev/shm");
        let mem = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
        vec![tempfile::tempdir_in("/var/tmp").unwrap(), mem.unwrap()]
    }

    /// Read back part by part while written, and at the end: the same
    /// bytes, whatever the lengths (aligned or not) the writer reports.
    #[test]
    fn what_is_read_back_is_what_was_written() {
        for t in dirs() {
            read_back_in(t.path());
        }
    }

    fn read_back_in(dir: &std::path::Path) {
        for n in [0usize, 1, 4095, 4096, 3 << 20, (5 << 20) + 17] {
            let (mut f, data) = written(dir, n);
            let rb = ReadBack::start(&f).unwrap();
            for (i, part) in data.chunks(1_000_003).enumerate() {
                f.write_all(part).unwrap();
                f.sync_data().unwrap();
                rb.durable(((i + 1) * 1_000_003).min(n) as u64);
            }
            f.sync_all().unwrap();
            assert_eq!(rb.finish(n as u64).unwrap(), *blake3::hash(&data).as_bytes(), "{n} bytes in {}", dir.display());
        }
    }

    /// A disk that gives back other bytes than were written (here: one
    /// changed behind the writer's back) gives another hash; one that gives
    /// back fewer bytes is an error.
    #[test]
    fn other_bytes_or_fewer_are_caught() {
        for t in dirs() {
            caught_in(t.path());
        }
    }

    fn caught_in(dir: &std::path::Path) {
        let (mut f, data) = written(dir, 2 << 20);
        f.write_all(&data).unwrap();
        f.write_all_at(b"X", 12345).unwrap();
        f.sync_all().unwrap();
        let rb = ReadBack::start(&f).unwrap();
        rb.durable(1 << 20);
        assert_ne!(rb.finish(data.len() as u64).unwrap(), *blake3::hash(&data).as_bytes());

        let (mut f, data) = written(dir, 2 << 20);
        f.write_all(&data[..1 << 20]).unwrap();
        f.sync_all().unwrap();
        let rb = ReadBack::start(&f).unwrap();
        assert_eq!(rb.finish(data.len() as u64).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
