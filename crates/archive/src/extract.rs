//! Extraction: the whole archive or some paths, into a directory, through
//! [`Restorer`]. Damage costs only the members it touches: with an index,
//! each member is found by its offset, so a damaged frame loses the members
//! inside it and nothing after.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::archive::{under, Archive};
use crate::entry::{display_path, normalize_path, Kind, Meta};
use crate::error::{Error, Result};
use crate::index::IndexEntry;
use crate::restore::Restorer;
use crate::tarr::TarReader;
use crate::tarw;
use crate::Progress;

#[derive(Debug, Default)]
pub struct ExtractReport {
    pub entries: u64,
    pub bytes: u64,
    /// Members whose data is damaged in the archive (restored as far as readable, or not at all).
    pub damaged: Vec<(Vec<u8>, String)>,
    /// Members refused (unsafe names) or that could not be written.
    pub failed: Vec<(Vec<u8>, String)>,
    pub warnings: Vec<(Vec<u8>, String)>,
    /// A problem with the archive as a whole (its end, its index).
    pub archive_problem: Option<String>,
}

impl ExtractReport {
    pub fn clean(&self) -> bool {
        self.damaged.is_empty() && self.failed.is_empty() && self.archive_problem.is_none()
    }
}

#[derive(Default)]
pub struct ExtractOptions {
    /// Only these paths (and what is below them); empty: everything.
    pub paths: Vec<Vec<u8>>,
    pub progress: Option<Arc<Progress>>,
}

fn selected(path: &[u8], paths: &[Vec<u8>]) -> bool {
    paths.is_empty() || paths.iter().any(|p| under(path, p))
}

/// Reads the current member's stored data to its end, handing each piece
/// to `each` with its offset in the file; returns the BLAKE3 of the stored
/// bytes (a sparse file's map included), as the index hashes them.
pub(crate) fn read_member_data<R: Read>(tr: &mut TarReader<R>, meta: &Meta, mut each: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let segs: Vec<(u64, u64)> = match &meta.sparse {
        Some(s) => {
            hasher.update(&tarw::sparse_map(s));
            s.iter().map(|s| (s.offset, s.len)).collect()
        }
        None => vec![(0, meta.size)],
    };
    let mut buf = vec![0u8; 256 * 1024];
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

/// Restores a member's data through `write`; returns its hash.
fn copy_data<R: Read>(
    tr: &mut TarReader<R>,
    meta: &Meta,
    write: &mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>,
    progress: &Option<Arc<Progress>>,
) -> Result<[u8; 32]> {
    read_member_data(tr, meta, |off, buf| {
        write(off, buf).map_err(|e| Error::Io { what: format!("writing {}", display_path(&meta.path)), source: e })?;
        if let Some(p) = progress {
            p.bytes_in.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    })
}

/// Data or metadata lost, as opposed to a target that refused a write.
fn is_damage(e: &Error) -> bool {
    match e {
        Error::Format(_) => true,
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::InvalidData || source.kind() == std::io::ErrorKind::UnexpectedEof,
        Error::Refused(_) => false,
    }
}

pub fn extract(archive: &Archive, dest: &Path, opts: &ExtractOptions) -> Result<ExtractReport> {
    let mut report = ExtractReport { archive_problem: archive.trailer_problem.clone(), ..Default::default() };
    let mut restorer = Restorer::new(dest)?;
    let paths: Vec<Vec<u8>> = opts
        .paths
        .iter()
        .map(|p| normalize_path(p).ok_or_else(|| Error::Refused(format!("{} has a '..' component", String::from_utf8_lossy(p)))))
        .collect::<Result<_>>()?;
    if archive.is_indexed() {
        extract_indexed(archive, &mut restorer, &paths, opts, &mut report)?;
    } else {
        extract_plain(archive, &mut restorer, &paths, opts, &mut report)?;
    }
    report.warnings.extend(restorer.finish()?);
    Ok(report)
}

fn extract_indexed(archive: &Archive, restorer: &mut Restorer, paths: &[Vec<u8>], opts: &ExtractOptions, report: &mut ExtractReport) -> Result<()> {
    let mut stream = archive.frames()?.ok_or_else(|| Error::Format("archive has no frame table".into()))?;
    // Hard links whose first name is not being extracted get that name's data.
    let mut outside: HashMap<Vec<u8>, Option<IndexEntry>> = HashMap::new();
    if !paths.is_empty() {
        for e in archive.index()?.into_iter().flatten() {
            let e = e?;
            if e.kind == Kind::HardLink && selected(&e.path, paths) && !selected(&e.link, paths) {
                outside.insert(e.link.clone(), None);
            }
        }
        if !outside.is_empty() {
            for e in archive.index()?.into_iter().flatten() {
                let e = e?;
                if let Some(slot) = outside.get_mut(&e.path) {
                    slot.get_or_insert(e);
                }
            }
        }
    }
    let mut redirect: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut matched = vec![false; paths.len()];
    for e in archive.index()?.into_iter().flatten() {
        let e = e?;
        if !selected(&e.path, paths) {
            continue;
        }
        for (i, p) in paths.iter().enumerate() {
            matched[i] |= under(&e.path, p);
        }
        // A hard link to a file outside the selection: restore that file's data here.
        let (source, mut link_target) = (e.clone(), None);
        let source = if e.kind == Kind::HardLink && !selected(&e.link, paths) {
            match redirect.get(&e.link) {
                Some(first) => {
                    link_target = Some(first.clone());
                    source
                }
                None => match outside.get(&e.link).cloned().flatten() {
                    Some(t) => {
                        redirect.insert(e.link.clone(), e.path.clone());
                        t
                    }
                    None => {
                        report.failed.push((e.path.clone(), format!("hard link to {}, which is not in the archive", display_path(&e.link))));
                        continue;
                    }
                },
            }
        } else {
            source
        };
        stream.seek_to(source.header_offset);
        let mut tr = TarReader::at_offset(&mut stream, source.header_offset);
        let member = match tr.next_member() {
            Ok(Some(m)) => m,
            Ok(None) => {
                report.damaged.push((e.path.clone(), "not found at its offset in the archive".into()));
                continue;
            }
            Err(err) => {
                report.damaged.push((e.path.clone(), err.to_string()));
                continue;
            }
        };
        if member.meta.path != source.path {
            report.damaged.push((e.path.clone(), format!("the index and the archive disagree at this offset (found {})", display_path(&member.meta.path))));
            continue;
        }
        let mut meta = member.meta;
        meta.flags = source.flags;
        meta.path = e.path.clone();
        if let Some(first) = link_target {
            meta.kind = Kind::HardLink;
            meta.link = first;
        }
        let mut hash = None;
        let progress = &opts.progress;
        let r = restorer.entry(&meta, &mut |write| {
            hash = Some(copy_data(&mut tr, &meta, write, progress)?);
            Ok(())
        });
        match r {
            Ok(()) => {
                report.entries += 1;
                report.bytes += meta.data_len();
                if let (Some(got), Some(want)) = (hash, source.hash) {
                    if got != want {
                        report.damaged.push((e.path.clone(), "content does not match its hash (restored as read)".into()));
                    }
                }
                if meta.kind == Kind::File && source.hash.is_none() {
                    report.warnings.push((e.path.clone(), "was not read completely when the archive was made".into()));
                }
            }
            Err(err) if is_damage(&err) => report.damaged.push((e.path.clone(), err.to_string())),
            Err(err) => report.failed.push((e.path.clone(), err.to_string())),
        }
        if let Some(p) = &opts.progress {
            p.files.fetch_add(1, Ordering::Relaxed);
        }
    }
    for (p, m) in paths.iter().zip(matched) {
        if !m {
            report.failed.push((p.clone(), "not in the archive".into()));
        }
    }
    Ok(())
}

fn extract_plain(archive: &Archive, restorer: &mut Restorer, paths: &[Vec<u8>], opts: &ExtractOptions, report: &mut ExtractReport) -> Result<()> {
    let mut tr = TarReader::new(archive.plain_stream()?);
    let mut matched = vec![false; paths.len()];
    loop {
        let member = match tr.next_member() {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(err) => {
                report.damaged.push((Vec::new(), format!("the archive cannot be read past byte {}: {err}; members after that point are lost", tr.position())));
                break;
            }
        };
        if !member.path_ok {
            report.failed.push((member.raw_path.clone(), "refused: the name (or its link target) leads outside the target directory".into()));
            continue;
        }
        let meta = member.meta;
        if !selected(&meta.path, paths) {
            continue;
        }
        for (i, p) in paths.iter().enumerate() {
            matched[i] |= under(&meta.path, p);
        }
        let progress = &opts.progress;
        let r = restorer.entry(&meta, &mut |write| copy_data(&mut tr, &meta, write, progress).map(|_| ()));
        match r {
            Ok(()) => {
                report.entries += 1;
                report.bytes += meta.data_len();
            }
            Err(err) if is_damage(&err) => {
                report.damaged.push((meta.path.clone(), err.to_string()));
                break;
            }
            Err(err) => report.failed.push((meta.path.clone(), err.to_string())),
        }
    }
    for (p, m) in paths.iter().zip(matched) {
        if !m {
            report.failed.push((p.clone(), "not in the archive".into()));
        }
    }
    Ok(())
}
