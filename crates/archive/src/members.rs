//! One walk over an archive's members, feeding a [`Sink`] (after ripgrep's
//! `searcher` and `sink`): extraction, `verify`, `verify --against` and
//! crossback's reader of old duplicity volumes are sinks; the walk is
//! written once.
//!
//! With an index, each member is found by its offset and checked against
//! its index record (path, hash): a damaged frame costs the members in it
//! and nothing after. Without one, the tar stream is read in order and
//! damage ends it. Either way, damage is reported to the sink, member by
//! member, and the walk goes on where it can.

use std::io::Read;

use crate::archive::Archive;
use crate::entry::{display_path, Kind, Meta};
use crate::error::{Error, Result};
use crate::index::IndexEntry;
use crate::tarr::TarReader;
use crate::tarw;

/// Reads a member's data: hands each piece (its offset, its bytes) to its
/// argument and returns the BLAKE3 of what it read.
pub type ReadData<'a> = dyn FnMut(&mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<[u8; 32]> + 'a;

/// A member's data, read on demand by the sink.
pub struct Data<'a> {
    read: &'a mut ReadData<'a>,
    hash: Option<[u8; 32]>,
}

impl<'a> Data<'a> {
    /// Data read by `read` (for sources other than an archive: crossback's
    /// reader of duplicity volumes). `read` hands each piece to its argument
    /// and returns the BLAKE3 of what it read.
    pub fn new(read: &'a mut ReadData<'a>) -> Data<'a> {
        Data { read, hash: None }
    }

    /// Reads the member's stored data to its end, handing each piece to
    /// `each` with its offset in the file (holes are skipped); returns the
    /// BLAKE3 of the stored bytes, as the index records it.
    pub fn read(&mut self, each: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<[u8; 32]> {
        let h = (self.read)(each)?;
        self.hash = Some(h);
        Ok(h)
    }
}

/// What a walk does with the members it reads.
pub trait Sink {
    /// Whether this member is wanted at all (a selection); default: every one.
    fn wants(&mut self, _path: &[u8]) -> bool {
        true
    }

    /// The index entry whose member holds `e`'s data; `None`: skip `e`
    /// (the sink said why). Extraction reads a hard link's data from its
    /// first name when that name is not being extracted. Default: `e` itself.
    fn source(&mut self, e: &IndexEntry) -> Option<IndexEntry> {
        Some(e.clone())
    }

    /// One member, with its index record if the archive has one.
    /// An error is this member's: reported, and the walk goes on.
    fn member(&mut self, meta: Meta, entry: Option<&IndexEntry>, data: &mut Data<'_>) -> Result<()>;

    /// A member (empty path: the archive as a whole) is damaged.
    fn damaged(&mut self, path: &[u8], why: String);

    /// A member the walk refuses: its name (or link) leads outside the tree.
    fn refused(&mut self, raw_path: &[u8], why: String);
}

/// Reads a member's stored data to its end (see [`Data::read`]).
pub(crate) fn read_member_data<R: Read>(tr: &mut TarReader<R>, meta: &Meta, each: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let segs: Vec<(u64, u64)> = match &meta.sparse {
        Some(s) => {
            hasher.update(&tarw::sparse_map(s));
            s.iter().map(|s| (s.offset, s.len)).collect()
        }
        None => vec![(0, meta.size)],
    };
    // As large as the member's data, up to 256 KiB: most members are small,
    // and zeroing a large buffer for each of them is not free.
    let total: u64 = segs.iter().map(|s| s.1).sum();
    let mut buf = vec![0u8; total.clamp(1, 256 * 1024) as usize];
    for (off, len) in segs {
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(buf.len() as u64) as usize;
            let n = tr.read_data(&mut buf[..want])?;
            if n == 0 {
                return Err(Error::Format("member data ends early".into()));
            }
            hasher.update(&buf[..n]);
            each(off + done, &buf[..n])?;
            done += n as u64;
        }
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Data or metadata lost, as opposed to a target that refused a write.
pub fn is_damage(e: &Error) -> bool {
    match e {
        Error::Format(_) => true,
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::InvalidData || source.kind() == std::io::ErrorKind::UnexpectedEof,
        Error::Refused(_) | Error::Key(_) => false,
    }
}

/// Walks every member of `archive` into `sink`.
/// (A problem with the archive's end, `archive.trailer_problem`, is the
/// caller's to report: extract and verify report it differently.)
pub fn walk(archive: &Archive, sink: &mut dyn Sink) -> Result<()> {
    if archive.is_indexed() {
        walk_indexed(archive, sink)
    } else {
        walk_plain(archive, sink)
    }
}

fn walk_indexed(archive: &Archive, sink: &mut dyn Sink) -> Result<()> {
    let mut stream = archive.frames()?.ok_or_else(|| Error::Format("archive has no frame table".into()))?;
    let Some(index) = archive.index()? else { return Ok(()) };
    for e in index {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                sink.damaged(&[], err.to_string());
                break;
            }
        };
        if !sink.wants(&e.path) {
            continue;
        }
        let Some(source) = sink.source(&e) else { continue };
        stream.seek_to(source.header_offset);
        stream.stop_hint((source.data_offset + source.stored_len).next_multiple_of(512));
        let mut tr = TarReader::at_offset(&mut stream, source.header_offset);
        let member = match tr.next_member() {
            Ok(Some(m)) => m,
            Ok(None) => {
                sink.damaged(&e.path, "not found at its offset in the archive".into());
                continue;
            }
            Err(err) => {
                sink.damaged(&e.path, err.to_string());
                continue;
            }
        };
        if member.meta.path != source.path {
            sink.damaged(&e.path, format!("the index and the archive disagree at this offset (found {})", display_path(&member.meta.path)));
            continue;
        }
        let mut meta = member.meta;
        meta.flags = source.flags;
        let read_meta = meta.clone();
        let mut read = |each: &mut dyn FnMut(u64, &[u8]) -> Result<()>| read_member_data(&mut tr, &read_meta, each);
        let mut data = Data { read: &mut read, hash: None };
        let r = sink.member(meta, Some(&e), &mut data);
        let got = data.hash;
        match r {
            Ok(()) => {
                if let (Some(got), Some(want)) = (got, source.hash) {
                    if got != want {
                        sink.damaged(&e.path, "content does not match its hash".into());
                    }
                }
            }
            Err(err) if is_damage(&err) => sink.damaged(&e.path, err.to_string()),
            Err(err) => sink.refused(&e.path, err.to_string()),
        }
    }
    Ok(())
}

fn walk_plain(archive: &Archive, sink: &mut dyn Sink) -> Result<()> {
    let mut tr = TarReader::new(archive.plain_stream()?);
    loop {
        let member = match tr.next_member() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(err) => {
                sink.damaged(&[], format!("the archive cannot be read past byte {}: {err}; members after that point are lost", tr.position()));
                break;
            }
        };
        if !member.path_ok {
            sink.refused(&member.raw_path, "refused: the name (or its link target) leads outside the target directory".into());
            continue;
        }
        let meta = member.meta;
        if !sink.wants(&meta.path) {
            continue;
        }
        let path = meta.path.clone();
        let read_meta = meta.clone();
        let mut read = |each: &mut dyn FnMut(u64, &[u8]) -> Result<()>| read_member_data(&mut tr, &read_meta, each);
        let mut data = Data { read: &mut read, hash: None };
        match sink.member(meta, None, &mut data) {
            Ok(()) => {}
            Err(err) if is_damage(&err) => {
                sink.damaged(&path, err.to_string());
                break;
            }
            Err(err) => sink.refused(&path, err.to_string()),
        }
    }
    Ok(())
}

/// Whether a member is a regular file whose data the archive did not hold
/// completely (it could not be read when the archive was made).
pub fn incomplete(meta: &Meta, entry: Option<&IndexEntry>) -> bool {
    meta.kind == Kind::File && entry.is_some_and(|e| e.hash.is_none())
}
