//! The index: one record per tar member, in stream order, with where it
//! starts, what it is, and the BLAKE3 hash of its data. `ls` and
//! single-file extraction read only this and the frames they need.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::entry::{Kind, Time};
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Time,
    /// Apparent size (regular files).
    pub size: u64,
    pub link: Vec<u8>,
    pub rdev: (u32, u32),
    /// Inode flags (`chattr`): tar has no field for them, so they live here.
    pub flags: u32,
    /// Tar offset of the member's first header block (PAX header included).
    pub header_offset: u64,
    /// Tar offset of the member's data, and its length as stored (a sparse
    /// file's map included).
    pub data_offset: u64,
    pub stored_len: u64,
    /// BLAKE3 of the stored data; `None` when the source could not be read
    /// completely (the member then holds zeros where reading failed).
    pub hash: Option<[u8; 32]>,
}

impl IndexEntry {
    /// The entry for a member's metadata; where it lies in the tar stream
    /// and its hash are filled in by the writer (zero / `None` otherwise).
    pub fn of(meta: crate::entry::Meta) -> IndexEntry {
        IndexEntry {
            path: meta.path,
            kind: meta.kind,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            size: meta.size,
            link: meta.link,
            rdev: (meta.rdev_major, meta.rdev_minor),
            flags: meta.flags,
            header_offset: 0,
            data_offset: 0,
            stored_len: 0,
            hash: None,
        }
    }
}

/// Appends encoded records to a writer (a spool file while creating).
pub struct IndexWriter<W: Write> {
    out: W,
    pub count: u64,
    buf: Vec<u8>,
}

impl<W: Write> IndexWriter<W> {
    pub fn new(out: W) -> Self {
        IndexWriter { out, count: 0, buf: Vec::new() }
    }

    pub fn push(&mut self, e: &IndexEntry) -> io::Result<()> {
        self.buf.clear();
        let body = postcard::to_stdvec(e).map_err(io::Error::other)?;
        self.buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&body);
        self.out.write_all(&self.buf)?;
        self.count += 1;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads records one by one from the decompressed index.
pub struct IndexReader<R: Read> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> IndexReader<R> {
    pub fn new(inner: R) -> Self {
        IndexReader { inner, buf: Vec::new() }
    }
}

impl<R: Read> Iterator for IndexReader<R> {
    type Item = Result<IndexEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut len = [0u8; 4];
        match self.inner.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(Error::Format(format!("the archive's index is damaged: {e}")))),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > 16 << 20 {
            return Some(Err(Error::Format("the archive's index is damaged: record too large".into())));
        }
        self.buf.resize(len, 0);
        if let Err(e) = self.inner.read_exact(&mut self.buf) {
            return Some(Err(Error::Format(format!("the archive's index is damaged: {e}"))));
        }
        Some(postcard::from_bytes(&self.buf).map_err(|e| Error::Format(format!("the archive's index is damaged: {e}"))))
    }
}
