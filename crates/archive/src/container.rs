//! The archive file: independent zstd frames holding the tar stream, then
//! skippable frames holding the index, the frame table and a fixed footer.
//!
//! ```text
//! [skippable: "CRBKHDR1" + format version]   marks the file as crossback's
//! [data frame 0][data frame 1]…   zstd -dc sees only these: a plain tar
//! [skippable: index, zstd-compressed, split in parts of ≤ 16 MiB]…
//! [skippable: frame table + summary, zstd-compressed]
//! [skippable: footer, 136 bytes, fixed]
//! ```
//! Every data frame starts at a known compressed and uncompressed offset,
//! so a member is read by decompressing only the frames it lies in.

use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::crypt::{Source, SourceReader};
use crate::error::{ctx, Error, Result};

/// Skippable frame magic crossback uses (0x184D2A50..=0x184D2A5F are skippable).
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5B;
const FOOTER_MAGIC: &[u8; 8] = b"CRBKFTR1";
const HEADER_MAGIC: &[u8; 8] = b"CRBKHDR1";
/// The header frame: skippable frame header, magic, version.
const HEADER_LEN: u64 = 8 + 12;
pub const FORMAT_VERSION: u32 = 1;
const FOOTER_PAYLOAD: usize = 136;
pub const FOOTER_LEN: u64 = 8 + FOOTER_PAYLOAD as u64;
const INDEX_PART: usize = 16 << 20;
/// The largest frame table (compressed or not) a reader accepts.
pub const TABLE_CAP: u64 = 64 << 20;

/// Where one data frame sits.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FrameInfo {
    /// Offset in the archive file.
    pub c_off: u64,
    pub c_len: u64,
    /// Offset in the tar stream.
    pub u_off: u64,
    pub u_len: u64,
}

/// Counts of what `create` did, kept in the archive for `ls` and `verify`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub specials: u64,
    /// Apparent bytes of regular files.
    pub bytes: u64,
    /// Data bytes stored (holes left out).
    pub data_bytes: u64,
    pub sockets_skipped: u64,
    pub errors: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrameTable {
    pub frames: Vec<FrameInfo>,
    pub summary: Summary,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footer {
    pub data_len: u64,
    pub tar_len: u64,
    pub index_off: u64,
    pub index_len: u64,
    pub table_off: u64,
    pub table_len: u64,
    pub entries: u64,
    pub data_hash: [u8; 32],
    pub meta_hash: [u8; 32],
}

impl Footer {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FOOTER_LEN as usize);
        v.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        v.extend_from_slice(&(FOOTER_PAYLOAD as u32).to_le_bytes());
        v.extend_from_slice(FOOTER_MAGIC);
        v.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        for n in [self.data_len, self.tar_len, self.index_off, self.index_len, self.table_off, self.table_len, self.entries] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        v.extend_from_slice(&self.data_hash);
        v.extend_from_slice(&self.meta_hash);
        debug_assert_eq!(v.len() as u64, FOOTER_LEN);
        v
    }

    fn decode(b: &[u8]) -> Option<Footer> {
        if b.len() != FOOTER_LEN as usize || b[0..4] != SKIPPABLE_MAGIC.to_le_bytes() || &b[8..16] != FOOTER_MAGIC {
            return None;
        }
        if Footer::version_of(b) != Some(FORMAT_VERSION) {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let mut data_hash = [0u8; 32];
        data_hash.copy_from_slice(&b[80..112]);
        let mut meta_hash = [0u8; 32];
        meta_hash.copy_from_slice(&b[112..144]);
        Some(Footer {
            data_len: u64_at(24),
            tar_len: u64_at(32),
            index_off: u64_at(40),
            index_len: u64_at(48),
            table_off: u64_at(56),
            table_len: u64_at(64),
            entries: u64_at(72),
            data_hash,
            meta_hash,
        })
    }

    pub(crate) fn version_of(b: &[u8]) -> Option<u32> {
        (b.len() >= 20 && &b[8..16] == FOOTER_MAGIC).then(|| u32::from_le_bytes([b[16], b[17], b[18], b[19]]))
    }
}

fn skippable(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Writes data frames in order, then the trailer. Hashes as it writes.
pub struct ContainerWriter<W: Write> {
    out: W,
    pos: u64,
    u_pos: u64,
    frames: Vec<FrameInfo>,
    data_hash: blake3::Hasher,
}

impl<W: Write> ContainerWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        let mut payload = HEADER_MAGIC.to_vec();
        payload.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        skippable(&mut header, &payload);
        out.write_all(&header)?;
        let mut data_hash = blake3::Hasher::new();
        data_hash.update(&header);
        Ok(ContainerWriter { out, pos: HEADER_LEN, u_pos: 0, frames: Vec::new(), data_hash })
    }

    /// Appends one compressed frame holding `u_len` bytes of the tar stream.
    pub fn frame(&mut self, compressed: &[u8], u_len: u64) -> io::Result<()> {
        self.out.write_all(compressed)?;
        self.data_hash.update(compressed);
        self.frames.push(FrameInfo { c_off: self.pos, c_len: compressed.len() as u64, u_off: self.u_pos, u_len });
        self.pos += compressed.len() as u64;
        self.u_pos += u_len;
        Ok(())
    }

    /// Writes the index (read from `index`, a stream of encoded records),
    /// the frame table and the footer; returns the writer and the footer.
    pub fn finish(mut self, index: &mut dyn Read, entries: u64, summary: Summary) -> Result<(W, Footer)> {
        let data_len = self.pos;
        let mut meta_hash = blake3::Hasher::new();
        // Index: compressed as a stream straight into skippable parts, so
        // memory stays at one part whatever the number of entries.
        let index_off = self.pos;
        let parts = PartWriter { out: &mut self.out, buf: Vec::with_capacity(1 << 20), written: 0, hash: &mut meta_hash };
        let mut enc = codec::metadata_encoder(parts)?;
        io::copy(index, &mut enc).map_err(ctx(|| "writing the index".into()))?;
        let mut parts = enc.finish().map_err(ctx(|| "writing the index".into()))?;
        parts.flush_part().map_err(ctx(|| "writing the index".into()))?;
        self.pos += parts.written;
        let index_len = self.pos - index_off;
        let table = FrameTable { frames: std::mem::take(&mut self.frames), summary };
        let raw = postcard::to_stdvec(&table).map_err(|e| Error::Format(format!("encoding the frame table: {e}")))?;
        let packed = codec::compress_metadata(&raw)?;
        let mut buf = Vec::new();
        skippable(&mut buf, &packed);
        let table_off = self.pos;
        self.out.write_all(&buf).map_err(ctx(|| "writing the frame table".into()))?;
        meta_hash.update(&buf);
        self.pos += buf.len() as u64;
        let footer = Footer {
            data_len,
            tar_len: self.u_pos,
            index_off,
            index_len,
            table_off,
            table_len: buf.len() as u64,
            entries,
            data_hash: *self.data_hash.finalize().as_bytes(),
            meta_hash: *meta_hash.finalize().as_bytes(),
        };
        self.out.write_all(&footer.encode()).map_err(ctx(|| "writing the archive footer".into()))?;
        self.out.flush().map_err(ctx(|| "writing the archive".into()))?;
        Ok((self.out, footer))
    }
}

/// Cuts what is written into skippable frames of at most `INDEX_PART` bytes.
struct PartWriter<'a, W: Write> {
    out: &'a mut W,
    buf: Vec<u8>,
    written: u64,
    hash: &'a mut blake3::Hasher,
}

impl<W: Write> PartWriter<'_, W> {
    fn flush_part(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut head = Vec::with_capacity(8);
        head.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        head.extend_from_slice(&(self.buf.len() as u32).to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(&self.buf)?;
        self.hash.update(&head);
        self.hash.update(&self.buf);
        self.written += (head.len() + self.buf.len()) as u64;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Write for PartWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(INDEX_PART - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == INDEX_PART {
            self.flush_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the end of an archive file says about it.
// One per archive opened, never in a collection: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Trailer {
    /// A crossback archive.
    Indexed { footer: Footer, table: FrameTable },
    /// No crossback footer: a plain `.tar.zst` or `.tar` (made by GNU tar,
    /// say), or, when `crossback` is set, a crossback archive that lost its end.
    Plain { zstd: bool, crossback: bool },
}

/// Reads the footer and frame table. A damaged trailer is an error; the
/// caller may fall back to reading the archive as a plain stream.
pub fn read_trailer(file: &Source) -> Result<Trailer> {
    let len = file.len().map_err(ctx(|| "reading the archive's size".into()))?;
    read_trailer_at(file, len)
}

/// As [`read_trailer`], for a file that ends at `len`.
pub(crate) fn read_trailer_at(file: &Source, len: u64) -> Result<Trailer> {
    // The file's start says what it is when it has no footer: read only
    // then (the footer says the same and more; from a remote, the start
    // is a request, and a decrypted chunk, of its own).
    let plain = || -> Result<Trailer> {
        let mut head = [0u8; HEADER_LEN as usize];
        let got = file.read_at(&mut head, 0).unwrap_or(0);
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let zstd = got >= 4 && (magic == 0xFD2F_B528 || (0x184D_2A50..=0x184D_2A5F).contains(&magic));
        let crossback = got as u64 == HEADER_LEN && magic == SKIPPABLE_MAGIC && &head[8..16] == HEADER_MAGIC;
        if crossback {
            let v = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
            if v != FORMAT_VERSION {
                return Err(Error::Refused(format!(
                    "archive format version {v} is not the one this crossback understands ({FORMAT_VERSION}); use a newer crossback"
                )));
            }
        }
        Ok(Trailer::Plain { zstd, crossback })
    };
    if len < FOOTER_LEN {
        return plain();
    }
    let mut b = vec![0u8; FOOTER_LEN as usize];
    file.read_exact_at(&mut b, len - FOOTER_LEN).map_err(ctx(|| "reading the archive footer".into()))?;
    let footer = match Footer::decode(&b) {
        Some(f) => f,
        None => {
            if let Some(v) = Footer::version_of(&b) {
                return Err(Error::Refused(format!(
                    "archive format version {v} is not the one this crossback understands ({FORMAT_VERSION}); use a newer crossback"
                )));
            }
            return plain();
        }
    };
    // Every size from the disk is checked against the file before it is used.
    let fits = footer.table_off.checked_add(footer.table_len) == Some(len - FOOTER_LEN)
        && footer.index_off.checked_add(footer.index_len) == Some(footer.table_off)
        && footer.data_len == footer.index_off
        && footer.data_len >= HEADER_LEN;
    if !fits {
        return Err(Error::Format("archive footer does not match the file's layout (truncated or appended to?)".into()));
    }
    if footer.table_len > TABLE_CAP {
        return Err(Error::Format(format!("the frame table is {} bytes, more than a table can be ({TABLE_CAP})", footer.table_len)));
    }
    let mut raw = vec![0u8; footer.table_len as usize];
    file.read_exact_at(&mut raw, footer.table_off).map_err(ctx(|| "reading the frame table".into()))?;
    let mut meta_hash = blake3::Hasher::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut off = footer.index_off;
    while off < footer.table_off {
        let n = (footer.table_off - off).min(chunk.len() as u64) as usize;
        file.read_exact_at(&mut chunk[..n], off).map_err(ctx(|| "reading the index".into()))?;
        meta_hash.update(&chunk[..n]);
        off += n as u64;
    }
    meta_hash.update(&raw);
    if *meta_hash.finalize().as_bytes() != footer.meta_hash {
        return Err(Error::Format("the archive's index is damaged (hash mismatch)".into()));
    }
    let payload = raw.get(8..).ok_or_else(|| Error::Format("frame table too short".into()))?;
    // Decompressed with a cap: a table that is a zstd bomb is damage, not memory.
    let mut unpacked = Vec::new();
    codec::decoder(payload)
        .and_then(|d| d.take(TABLE_CAP + 1).read_to_end(&mut unpacked))
        .map_err(|e| Error::Format(format!("frame table does not decompress: {e}")))?;
    if unpacked.len() as u64 > TABLE_CAP {
        return Err(Error::Format(format!("the frame table decompresses to more than {TABLE_CAP} bytes")));
    }
    let table: FrameTable = postcard::from_bytes(&unpacked).map_err(|e| Error::Format(format!("frame table does not decode: {e}")))?;
    check_frames(&table, &footer)?;
    Ok(Trailer::Indexed { footer, table })
}

/// The frames must tile the data exactly: one after the other from the
/// header to the index, in the file and in the tar stream.
fn check_frames(table: &FrameTable, footer: &Footer) -> Result<()> {
    let (mut c, mut u) = (HEADER_LEN, 0u64);
    for (i, f) in table.frames.iter().enumerate() {
        if f.c_off != c || f.u_off != u || f.c_len == 0 {
            return Err(Error::Format(format!("frame {i} of the frame table is not where the frames before it end")));
        }
        c = c.checked_add(f.c_len).filter(|&e| e <= footer.data_len).ok_or_else(|| Error::Format(format!("frame {i} runs past the archive's data")))?;
        u = u.checked_add(f.u_len).ok_or_else(|| Error::Format(format!("frame {i} is too long")))?;
    }
    if c != footer.data_len || u != footer.tar_len {
        return Err(Error::Format("the frame table does not cover the archive's data".into()));
    }
    Ok(())
}

/// The index's bytes, decompressed as a stream (memory stays small).
pub(crate) fn index_reader<'a>(file: &'a Source, footer: &Footer) -> Result<Box<dyn Read + 'a>> {
    let parts = SkippableParts { file, pos: footer.index_off, end: footer.index_off + footer.index_len, left: 0 };
    let dec = codec::decoder(io::BufReader::with_capacity(1 << 16, parts)).map_err(ctx(|| "starting the index decompressor".into()))?;
    Ok(Box::new(dec))
}

/// Concatenated payloads of consecutive skippable frames.
struct SkippableParts<'a> {
    file: &'a Source,
    pos: u64,
    end: u64,
    left: u64,
}

impl Read for SkippableParts<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            if self.pos >= self.end {
                return Ok(0);
            }
            let mut h = [0u8; 8];
            self.file.read_exact_at(&mut h, self.pos)?;
            if h[0..4] != SKIPPABLE_MAGIC.to_le_bytes() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "index part has a bad header"));
            }
            self.left = u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]]));
            self.pos += 8;
        }
        let n = (buf.len() as u64).min(self.left) as usize;
        let n = self.file.read_at(&mut buf[..n], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "index ends early"));
        }
        self.pos += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Error for a frame that does not decompress: the data it holds is lost,
/// the frames after it are not.
#[derive(Debug)]
pub struct DamagedFrame {
    pub frame: usize,
    pub u_off: u64,
    pub u_end: u64,
    pub why: String,
}

impl std::fmt::Display for DamagedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "frame {} (tar bytes {}..{}) is damaged: {}", self.frame, self.u_off, self.u_end, self.why)
    }
}
impl std::error::Error for DamagedFrame {}

/// Counts the compressed bytes it reads (for the random-access test and stats).
pub static BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Decompressed data moves between threads in blocks of this size.
const BLOCK: usize = 1 << 20;
/// Blocks decompressed ahead of the reader.
const AHEAD: usize = 2;
/// Frames up to this size (compressed and not) are decompressed in one
/// piece; larger ones as a stream.
const BULK_MAX: u64 = 16 << 20;

/// A byte range of the file, read in order.
struct Range {
    file: Arc<Source>,
    pos: u64,
    end: u64,
}

impl Read for Range {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.end - self.pos) as usize;
        if n == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..n], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file ends inside a frame"));
        }
        self.pos += n as u64;
        BYTES_READ.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Decompressed bytes of the tar stream, from tar offset `start`.
struct Block {
    start: u64,
    data: Vec<u8>,
}

type Msg = Result<Block, DamagedFrame>;

/// Decompresses frames `first..=last` (both in the table) on another
/// thread, as blocks; the first `skip` bytes of the first frame are
/// decompressed but not sent.
/// Stops at the first damaged frame (after saying so) or when the reader goes.
fn decode_frames(file: Arc<Source>, table: Arc<FrameTable>, first: usize, last: usize, skip: u64, tx: crossbeam_channel::Sender<Msg>) {
    let mut skip = skip;
    let mut bulk = zstd::bulk::Decompressor::new().ok();
    if let Some(b) = bulk.as_mut() {
        let _ = b.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(codec::WINDOW_LOG_MAX));
    }
    for i in first..=last {
        let f = table.frames[i];
        let damaged = |why: String| DamagedFrame { frame: i, u_off: f.u_off, u_end: f.u_off + f.u_len, why };
        if i == first {
            file.will_need(f.c_off, f.c_len);
        }
        // The next frame is read from the disk while this one is decompressed.
        if let Some(next) = table.frames.get(i + 1).filter(|_| i < last) {
            file.will_need(next.c_off, next.c_len);
        }
        // A frame of the usual size is decompressed in one piece (the fast
        // path); a larger one as a stream, so memory stays bounded.
        if let (Some(dec), true) = (bulk.as_mut(), f.u_len <= BULK_MAX && f.c_len <= BULK_MAX) {
            let mut c = vec![0u8; f.c_len as usize];
            if let Err(e) = file.read_exact_at(&mut c, f.c_off) {
                let _ = tx.send(Err(damaged(format!("cannot read it: {e}"))));
                return;
            }
            BYTES_READ.fetch_add(f.c_len, std::sync::atomic::Ordering::Relaxed);
            let mut data = match dec.decompress(&c, f.u_len as usize) {
                Ok(d) => d,
                Err(e) => {
                    let _ = tx.send(Err(damaged(e.to_string())));
                    return;
                }
            };
            if data.len() as u64 != f.u_len {
                let _ = tx.send(Err(damaged(format!("holds {} bytes instead of {}", data.len(), f.u_len))));
                return;
            }
            let s = skip.min(f.u_len) as usize;
            skip -= s as u64;
            if s < data.len() {
                data.drain(..s);
                if tx.send(Ok(Block { start: f.u_off + s as u64, data })).is_err() {
                    return;
                }
            }
            continue;
        }
        let range = Range { file: Arc::clone(&file), pos: f.c_off, end: f.c_off + f.c_len };
        let mut dec = match codec::decoder(io::BufReader::with_capacity(1 << 16, range)) {
            Ok(d) => d.single_frame(),
            Err(e) => {
                let _ = tx.send(Err(damaged(e.to_string())));
                return;
            }
        };
        let mut done: u64 = 0;
        loop {
            let mut data = vec![0u8; BLOCK];
            let mut n = 0;
            // Fill a whole block (or reach the frame's end).
            while n < BLOCK {
                match dec.read(&mut data[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.send(Err(damaged(e.to_string())));
                        return;
                    }
                }
            }
            if done + n as u64 > f.u_len {
                let _ = tx.send(Err(damaged(format!("holds more than the {} bytes recorded", f.u_len))));
                return;
            }
            data.truncate(n);
            let start = f.u_off + done;
            done += n as u64;
            if n == 0 {
                break;
            }
            let s = skip.min(n as u64) as usize;
            skip -= s as u64;
            if s < n {
                if s > 0 {
                    data.drain(..s);
                }
                if tx.send(Ok(Block { start: start + s as u64, data })).is_err() {
                    return;
                }
            }
        }
        if done != f.u_len {
            let _ = tx.send(Err(damaged(format!("holds {done} bytes instead of {}", f.u_len))));
            return;
        }
    }
}

/// The decompressing thread and its channel; dropping it stops the thread.
struct Pipeline {
    rx: Option<crossbeam_channel::Receiver<Msg>>,
    handle: Option<std::thread::JoinHandle<()>>,
    /// The last frame it decompresses.
    last: usize,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Closing the channel makes the thread's next send fail: it ends.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The tar stream of an indexed archive from any offset, decompressing
/// frame by frame on another thread as a stream: memory stays at a few
/// blocks and one zstd window, whatever the size of a frame. A damaged
/// frame gives an `InvalidData` error wrapping [`DamagedFrame`];
/// [`FrameStream::seek_to`] resumes after it.
pub struct FrameStream {
    file: Arc<Source>,
    table: Arc<FrameTable>,
    pipeline: Option<Pipeline>,
    cur: Option<Block>,
    /// The current tar offset.
    pos: u64,
    end: u64,
    /// Where the reader says it will stop (the end of the member it wants):
    /// a pipeline started after a jump decompresses no frame past it, so
    /// one file out of a large archive costs the frames that hold it and
    /// no more. Reading on past it lifts the limit until the next jump.
    stop_hint: Option<u64>,
    sequential: bool,
}

impl FrameStream {
    pub fn new(file: Arc<Source>, table: Arc<FrameTable>) -> Result<Self> {
        let end = table.frames.last().map(|f| f.u_off + f.u_len).unwrap_or(0);
        Ok(FrameStream { file, table, pipeline: None, cur: None, pos: 0, end, stop_hint: None, sequential: false })
    }

    /// The reader means to stop at tar offset `end` (see `stop_hint`).
    pub(crate) fn stop_hint(&mut self, end: u64) {
        self.stop_hint = Some(end);
    }

    /// The frame holding tar offset `u`, or `None` past the end.
    pub(crate) fn frame_of(&self, u: u64) -> Option<usize> {
        let i = self.table.frames.partition_point(|f| f.u_off + f.u_len <= u);
        (i < self.table.frames.len()).then_some(i)
    }

    /// Current tar offset.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Moves to tar offset `u`. Forward within the frame being decompressed
    /// (or the next one) the stream carries on; elsewhere it starts again at
    /// the frame holding `u`.
    pub fn seek_to(&mut self, u: u64) {
        let u = u.min(self.end);
        let near = u >= self.pos
            && self.pipeline.is_some()
            && match (self.frame_of(self.pos), self.frame_of(u)) {
                (Some(a), Some(b)) => b <= a + 1,
                _ => false,
            };
        if !near {
            self.pipeline = None;
            self.cur = None;
            self.sequential = false;
        }
        self.pos = u;
    }

    fn start(&mut self) {
        let Some(i) = self.frame_of(self.pos) else { return };
        let skip = self.pos - self.table.frames[i].u_off;
        let all = self.table.frames.len() - 1;
        let last = match self.stop_hint {
            Some(h) if !self.sequential && h > self.pos => self.frame_of(h - 1).unwrap_or(all),
            _ => all,
        };
        let (tx, rx) = crossbeam_channel::bounded(AHEAD);
        let (file, table) = (Arc::clone(&self.file), Arc::clone(&self.table));
        let handle = std::thread::spawn(move || decode_frames(file, table, i, last, skip, tx));
        self.pipeline = Some(Pipeline { rx: Some(rx), handle: Some(handle), last });
    }
}

impl Read for FrameStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.end || out.is_empty() {
                return Ok(0);
            }
            if let Some(b) = &self.cur {
                if self.pos >= b.start && self.pos < b.start + b.data.len() as u64 {
                    let at = (self.pos - b.start) as usize;
                    let n = out.len().min(b.data.len() - at);
                    out[..n].copy_from_slice(&b.data[at..at + n]);
                    self.pos += n as u64;
                    return Ok(n);
                }
            }
            if self.pipeline.is_none() {
                self.start();
            }
            let got = self.pipeline.as_ref().and_then(|p| p.rx.as_ref()).map(|rx| rx.recv());
            match got {
                Some(Ok(Ok(b))) => {
                    if b.start > self.pos {
                        // A gap: the stream is not where we are; start again.
                        self.pipeline = None;
                        self.cur = None;
                        continue;
                    }
                    self.cur = Some(b);
                }
                Some(Ok(Err(d))) => {
                    self.pipeline = None;
                    self.cur = None;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, d));
                }
                _ => {
                    let last = self.pipeline.take().map(|p| p.last);
                    // Stopped at the hint, and the reading goes on: no limit from here.
                    if last.and_then(|l| self.table.frames.get(l)).is_some_and(|f| self.pos >= f.u_off + f.u_len) {
                        self.sequential = true;
                        continue;
                    }
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("the frames end at tar byte {} before the recorded end", self.pos)));
                }
            }
        }
    }
}

/// Opens any archive as a plain tar stream (zstd or not), for archives
/// without a usable index.
pub(crate) fn plain_stream(file: Arc<Source>, zstd: bool) -> Result<Box<dyn Read>> {
    let bytes = SourceReader { src: file, pos: 0 };
    if zstd {
        let d = codec::decoder(io::BufReader::with_capacity(1 << 20, bytes)).map_err(ctx(|| "starting the decompressor".into()))?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, bytes)))
    }
}
