//! Opening an archive for reading: crossback's own (with index), or any
//! `.tar.zst`/`.tar` (GNU tar's, say), read as a plain stream.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::container::{self, Footer, FrameStream, FrameTable, Trailer, FOOTER_LEN, SKIPPABLE_MAGIC};
use crate::crypt::{Keys, Source};
use crate::error::{ctx, Error, Result};
use crate::index::{IndexEntry, IndexReader};

pub enum Layout {
    Indexed {
        footer: Footer,
        table: Arc<FrameTable>,
    },
    /// No usable index: read from the start, in order.
    Plain {
        zstd: bool,
    },
}

pub struct Archive {
    pub path: PathBuf,
    file: Arc<Source>,
    pub layout: Layout,
    /// What is wrong with the file's end, when the archive was opened anyway.
    pub trailer_problem: Option<String>,
}

/// How far back from the end to look for a footer when garbage was appended.
const FOOTER_SEARCH: u64 = 1 << 20;

impl Archive {
    pub fn open(path: &Path) -> Result<Archive> {
        Self::open_with(path, None)
    }

    /// As [`Archive::open`]; an encrypted archive is read with `keys`.
    pub fn open_with(path: &Path, keys: Option<&Keys>) -> Result<Archive> {
        let file = File::open(path).map_err(ctx(|| format!("opening archive {}", path.display())))?;
        Self::from_file_with(file, path, keys)
    }

    /// An archive already open as `file` (named `path` in messages); an
    /// encrypted one is read with `keys` (without them it is refused with
    /// [`Error::Key`]).
    pub fn from_file_with(file: File, path: &Path, keys: Option<&Keys>) -> Result<Archive> {
        let meta = file.metadata().map_err(ctx(|| format!("reading archive {}", path.display())))?;
        if !meta.is_file() {
            return Err(Error::Refused(format!("{} is not a regular file", path.display())));
        }
        Self::from_bytes(Arc::new(file), path, keys)
    }

    /// An archive in any [`crate::crypt::Bytes`] (an object in an off-site
    /// store, read by ranges); `path` names it in messages.
    pub fn from_bytes(raw: Arc<dyn crate::crypt::Bytes>, path: &Path, keys: Option<&Keys>) -> Result<Archive> {
        let file = Arc::new(Source::open_bytes(raw, &path.display().to_string(), keys)?);
        let len = file.len().map_err(ctx(|| format!("reading archive {}", path.display())))?;
        let (layout, trailer_problem) = match container::read_trailer(&file) {
            Ok(Trailer::Indexed { footer, table }) => (Layout::Indexed { footer, table: Arc::new(table) }, None),
            Ok(Trailer::Plain { zstd, crossback }) => match crossback.then(|| find_moved_footer(&file, len)).flatten() {
                Some((layout, extra)) => (layout, Some(format!("{extra} bytes of something else follow the archive's end"))),
                None => {
                    let problem =
                        crossback.then(|| "the archive's end (index and footer) is missing: the file was truncated; reading it from the start".to_string());
                    (Layout::Plain { zstd }, problem)
                }
            },
            // A format this crossback does not know is not read as something else.
            Err(e @ (Error::Refused(_) | Error::Key(_))) => return Err(e),
            Err(e) => (Layout::Plain { zstd: true }, Some(format!("{e}; reading it without the index"))),
        };
        Ok(Archive { path: path.to_path_buf(), file, layout, trailer_problem })
    }

    /// The archive's bytes (the plaintext of an encrypted archive).
    pub fn source(&self) -> &Arc<Source> {
        &self.file
    }

    pub fn is_indexed(&self) -> bool {
        matches!(self.layout, Layout::Indexed { .. })
    }

    /// The index, entry by entry; `None` when the archive has none.
    pub fn index(&self) -> Result<Option<IndexReader<Box<dyn Read + '_>>>> {
        match &self.layout {
            Layout::Indexed { footer, .. } => Ok(Some(IndexReader::new(container::index_reader(&self.file, footer)?))),
            Layout::Plain { .. } => Ok(None),
        }
    }

    /// The tar stream with random access (indexed archives only).
    pub fn frames(&self) -> Result<Option<FrameStream>> {
        match &self.layout {
            Layout::Indexed { table, .. } => Ok(Some(FrameStream::new(Arc::clone(&self.file), Arc::clone(table))?)),
            Layout::Plain { .. } => Ok(None),
        }
    }

    /// The whole tar stream from the start.
    pub(crate) fn plain_stream(&self) -> Result<Box<dyn Read>> {
        let zstd = match &self.layout {
            Layout::Plain { zstd } => *zstd,
            Layout::Indexed { .. } => true,
        };
        container::plain_stream(Arc::clone(&self.file), zstd)
    }

    pub fn summary(&self) -> Option<&crate::container::Summary> {
        match &self.layout {
            Layout::Indexed { table, .. } => Some(&table.summary),
            Layout::Plain { .. } => None,
        }
    }

    /// Index entries under `prefix` (the entry itself and what is below it).
    pub fn find(&self, prefix: &[u8]) -> Result<Vec<IndexEntry>> {
        let Some(idx) = self.index()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in idx {
            let e = e?;
            if under(&e.path, prefix) {
                out.push(e);
            }
        }
        Ok(out)
    }
}

/// True when `path` is `prefix` or inside it (`prefix` empty: everything).
pub fn under(path: &[u8], prefix: &[u8]) -> bool {
    prefix.is_empty() || (path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/'))
}

/// Looks for a valid footer before the end (garbage appended to an archive).
fn find_moved_footer(file: &Source, len: u64) -> Option<(Layout, u64)> {
    let start = len.saturating_sub(FOOTER_SEARCH);
    let mut buf = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut buf, start).ok()?;
    let magic = SKIPPABLE_MAGIC.to_le_bytes();
    let mut i = buf.len().checked_sub(FOOTER_LEN as usize)?;
    loop {
        if buf[i..i + 4] == magic && &buf[i + 8..i + 16] == b"CRBKFTR1" {
            let end = start + i as u64 + FOOTER_LEN;
            // Re-read the trailer as if the file ended there.
            if let Ok(Trailer::Indexed { footer, table }) = container::read_trailer_at(file, end) {
                return Some((Layout::Indexed { footer, table: Arc::new(table) }, len - end));
            }
        }
        if i == 0 {
            return None;
        }
        i -= 1;
    }
}
