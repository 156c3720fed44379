//! Members read as files are read: at any offset, in any order
//! (`crossback browse`). A [`FrameCache`] keeps the last frames it
//! decompressed, so reading a file, or the headers of the files of one
//! directory, decompresses each frame once; holes of a sparse file read
//! as zeros; a file read in order to its end is checked against the hash
//! its index records.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;

use crate::archive::{Archive, Layout};
use crate::codec;
use crate::container::{DamagedFrame, FrameTable, BYTES_READ};
use crate::crypt::Source;
use crate::entry::{display_path, Meta};
use crate::error::{Error, Result};
use crate::index::IndexEntry;
use crate::tarr::TarReader;
use crate::tarw;

/// The largest frame read whole; crossback writes frames of 8 MiB.
pub const FRAME_MAX: u64 = 64 << 20;

/// The last `cap` frames of one archive, decompressed.
pub struct FrameCache {
    file: Arc<Source>,
    table: Arc<FrameTable>,
    frames: VecDeque<(usize, Arc<Vec<u8>>)>,
    cap: usize,
    dec: zstd::bulk::Decompressor<'static>,
}

impl FrameCache {
    /// A cache of `cap` frames (at least one) of an indexed archive.
    pub fn new(archive: &Archive, cap: usize) -> Result<FrameCache> {
        let Layout::Indexed { table, .. } = &archive.layout else {
            return Err(Error::Format(format!("{}: the archive has no frame table (run `crossback verify`)", archive.path.display())));
        };
        let mut dec = zstd::bulk::Decompressor::new().map_err(|e| Error::Io { what: "starting the decompressor".into(), source: e })?;
        dec.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(codec::WINDOW_LOG_MAX))
            .map_err(|e| Error::Io { what: "starting the decompressor".into(), source: e })?;
        Ok(FrameCache { file: Arc::clone(archive.source()), table: Arc::clone(table), frames: VecDeque::new(), cap: cap.max(1), dec })
    }

    /// Drops every frame kept (the memory goes back).
    pub fn clear(&mut self) {
        self.frames.clear();
    }

    /// Bytes of decompressed frames held.
    pub fn held(&self) -> u64 {
        self.frames.iter().map(|(_, f)| f.len() as u64).sum()
    }

    fn frame(&mut self, i: usize) -> io::Result<Arc<Vec<u8>>> {
        if let Some(at) = self.frames.iter().position(|(n, _)| *n == i) {
            let hit = self.frames.remove(at).expect("the position was just found");
            self.frames.push_front(hit.clone());
            return Ok(hit.1);
        }
        let f = self.table.frames[i];
        let damaged = |why: String| io::Error::new(io::ErrorKind::InvalidData, DamagedFrame { frame: i, u_off: f.u_off, u_end: f.u_off + f.u_len, why });
        if f.u_len > FRAME_MAX || f.c_len > FRAME_MAX {
            return Err(damaged(format!("it is larger ({} bytes) than a frame read at random may be", f.u_len.max(f.c_len))));
        }
        let mut c = vec![0u8; f.c_len as usize];
        self.file.read_exact_at(&mut c, f.c_off).map_err(|e| damaged(format!("cannot read it: {e}")))?;
        BYTES_READ.fetch_add(f.c_len, std::sync::atomic::Ordering::Relaxed);
        let data = self.dec.decompress(&c, f.u_len as usize).map_err(|e| damaged(e.to_string()))?;
        if data.len() as u64 != f.u_len {
            return Err(damaged(format!("holds {} bytes instead of {}", data.len(), f.u_len)));
        }
        let data = Arc::new(data);
        self.frames.push_front((i, Arc::clone(&data)));
        self.frames.truncate(self.cap);
        Ok(data)
    }

    /// Fills `buf` from tar offset `u`; fewer bytes only at the stream's end.
    pub fn read_at(&mut self, mut u: u64, mut buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while !buf.is_empty() {
            let i = self.table.frames.partition_point(|f| f.u_off + f.u_len <= u);
            if i >= self.table.frames.len() {
                break;
            }
            let f = self.table.frames[i];
            let data = self.frame(i)?;
            let at = (u - f.u_off) as usize;
            let n = buf.len().min(data.len() - at);
            buf[..n].copy_from_slice(&data[at..at + n]);
            buf = &mut buf[n..];
            u += n as u64;
            done += n;
        }
        Ok(done)
    }
}

/// The tar stream from an offset, through a cache.
struct Cursor<'a> {
    cache: &'a mut FrameCache,
    pos: u64,
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.cache.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A member's full metadata (extended attributes, ACLs, the sparse map:
/// what the index does not hold), read from its headers and checked
/// against the index; and the tar offset of its packed data.
pub fn read_meta(cache: &mut FrameCache, e: &IndexEntry) -> Result<(Meta, u64)> {
    let mut tr = TarReader::at_offset(Cursor { cache, pos: e.header_offset }, e.header_offset);
    let Some(member) = tr.next_member()? else {
        return Err(Error::Format(format!("{}: not found at its offset in the archive", display_path(&e.path))));
    };
    if member.meta.path != e.path {
        return Err(Error::Format(format!(
            "{}: the index and the archive disagree at this offset (found {})",
            display_path(&e.path),
            display_path(&member.meta.path)
        )));
    }
    let mut meta = member.meta;
    meta.flags = e.flags;
    // A sparse map (PAX 1.0) is the data's first blocks, read with the
    // headers: what follows is the packed segments.
    Ok((meta, tr.position()))
}

/// A stored segment: `len` bytes of the file at `offset`, at `packed` in
/// the member's data (after the sparse map).
#[derive(Clone, Copy, Debug)]
struct Piece {
    offset: u64,
    len: u64,
    packed: u64,
}

/// A regular file of an archive, opened: where its bytes are.
pub struct MemberFile {
    meta: Meta,
    /// Tar offset of the first packed byte.
    start: u64,
    pieces: Vec<Piece>,
    packed_len: u64,
    /// The index's hash of the stored data, checked when the file has been
    /// read in order from its start; `None` once reading skipped ahead.
    check: Option<([u8; 32], blake3::Hasher)>,
    /// Packed bytes fed to the hash so far.
    hashed: u64,
}

impl MemberFile {
    /// Opens the regular file `e` (its headers are read and checked
    /// against the index).
    pub fn open(cache: &mut FrameCache, e: &IndexEntry) -> Result<MemberFile> {
        let (meta, start) = read_meta(cache, e)?;
        let pieces: Vec<Piece> = match &meta.sparse {
            Some(segs) => {
                let mut packed = 0;
                segs.iter()
                    .map(|s| {
                        let p = Piece { offset: s.offset, len: s.len, packed };
                        packed += s.len;
                        p
                    })
                    .collect()
            }
            None => vec![Piece { offset: 0, len: meta.size, packed: 0 }],
        };
        let packed_len = pieces.iter().map(|p| p.len).sum();
        let check = e.hash.map(|h| {
            let mut hasher = blake3::Hasher::new();
            if let Some(s) = &meta.sparse {
                hasher.update(&tarw::sparse_map(s));
            }
            (h, hasher)
        });
        Ok(MemberFile { meta, start, pieces, packed_len, check, hashed: 0 })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Fills `buf` from file offset `off` (reading through `cache`, the
    /// cache of this file's archive); returns how many bytes, fewer only
    /// at the end of the file.
    pub fn read_at(&mut self, cache: &mut FrameCache, off: u64, buf: &mut [u8]) -> Result<usize> {
        let size = self.meta.size;
        if off >= size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(size - off) as usize;
        let buf = &mut buf[..n];
        buf.fill(0);
        let end = off + n as u64;
        let first = self.pieces.partition_point(|p| p.offset + p.len <= off);
        for i in first..self.pieces.len() {
            let p = self.pieces[i];
            if p.offset >= end {
                break;
            }
            let (from, to) = (off.max(p.offset), end.min(p.offset + p.len));
            if from < to {
                let dst = &mut buf[(from - off) as usize..(to - off) as usize];
                self.read_packed(cache, p.packed + (from - p.offset), dst)?;
            }
        }
        Ok(n)
    }

    fn read_packed(&mut self, cache: &mut FrameCache, packed: u64, dst: &mut [u8]) -> Result<()> {
        let what = || format!("reading {}", display_path(&self.meta.path));
        let got = cache.read_at(self.start + packed, dst).map_err(|e| Error::Io { what: what(), source: e })?;
        if got != dst.len() {
            return Err(Error::Format(format!("{}: the archive ends inside it", display_path(&self.meta.path))));
        }
        if packed > self.hashed {
            // Read out of order: the whole-file check no longer applies.
            self.check = None;
        }
        if packed != self.hashed {
            return Ok(());
        }
        if let Some((want, h)) = self.check.as_mut() {
            h.update(dst);
            self.hashed += dst.len() as u64;
            if self.hashed == self.packed_len {
                let same = h.finalize().as_bytes() == want;
                self.check = None;
                if !same {
                    return Err(Error::Format(format!("{}: its content does not match its hash", display_path(&self.meta.path))));
                }
            }
        }
        Ok(())
    }
}
