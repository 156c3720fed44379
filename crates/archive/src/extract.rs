//! Extraction: the whole archive or some paths, into a directory, through
//! [`Restorer`]. Damage costs only the members it touches: with an index,
//! each member is found by its offset, so a damaged frame loses the members
//! inside it and nothing after.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::archive::{under, Archive};
use crate::entry::{display_path, normalize_path, Kind, Meta};
use crate::error::{Error, Result};
use crate::index::IndexEntry;
use crate::members::{self, Data, Sink};
use crate::restore::Restorer;
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
    /// Threads writing small files; 0: one per core, 1: none besides the
    /// one reading the archive.
    pub threads: usize,
}

/// Threads for writing small files when the caller does not say.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

fn selected(path: &[u8], paths: &[Vec<u8>]) -> bool {
    paths.is_empty() || paths.iter().any(|p| under(path, p))
}

/// Extracts `archive` (or `opts.paths`) under `dest`.
pub fn extract(archive: &Archive, dest: &Path, opts: &ExtractOptions) -> Result<ExtractReport> {
    let mut report = ExtractReport { archive_problem: archive.trailer_problem.clone(), ..Default::default() };
    let threads = if opts.threads == 0 { default_threads() } else { opts.threads };
    let mut restorer = Restorer::new(dest, threads)?;
    let paths: Vec<Vec<u8>> = opts
        .paths
        .iter()
        .map(|p| normalize_path(p).ok_or_else(|| Error::Refused(format!("{} has a '..' component", String::from_utf8_lossy(p)))))
        .collect::<Result<_>>()?;
    let mut sink = Extractor::new(&mut restorer, &paths, &opts.progress, &mut report);
    if archive.is_indexed() {
        sink.outside = outside_links(archive, &paths)?;
    }
    members::walk(archive, &mut sink)?;
    sink.finish();
    restorer.finish()?.report_into(&mut report);
    Ok(report)
}

/// Hard links being extracted whose first name is not: that name's index
/// entry, whose data they get.
fn outside_links(archive: &Archive, paths: &[Vec<u8>]) -> Result<HashMap<Vec<u8>, Option<IndexEntry>>> {
    let mut outside: HashMap<Vec<u8>, Option<IndexEntry>> = HashMap::new();
    if paths.is_empty() {
        return Ok(outside);
    }
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
    Ok(outside)
}

/// The sink that restores members through a [`Restorer`] (what `extract`
/// uses; crossback's reader of duplicity volumes too).
pub struct Extractor<'a> {
    restorer: &'a mut Restorer,
    paths: &'a [Vec<u8>],
    matched: Vec<bool>,
    outside: HashMap<Vec<u8>, Option<IndexEntry>>,
    /// A hard link's first name outside the selection → where its data went.
    redirect: HashMap<Vec<u8>, Vec<u8>>,
    /// For the member being read: restore it as a hard link to this path.
    link_to: Option<Vec<u8>>,
    progress: &'a Option<Arc<Progress>>,
    report: &'a mut ExtractReport,
}

impl<'a> Extractor<'a> {
    /// Restores the members under `paths` (empty: all), reporting into `report`.
    pub fn new(restorer: &'a mut Restorer, paths: &'a [Vec<u8>], progress: &'a Option<Arc<Progress>>, report: &'a mut ExtractReport) -> Extractor<'a> {
        Extractor { restorer, paths, matched: vec![false; paths.len()], outside: HashMap::new(), redirect: HashMap::new(), link_to: None, progress, report }
    }

    /// Reports the paths asked for that were not found.
    pub fn finish(self) {
        for (p, m) in self.paths.iter().zip(self.matched) {
            if !m {
                self.report.failed.push((p.clone(), "not in the archive".into()));
            }
        }
    }
}

impl Sink for Extractor<'_> {
    fn wants(&mut self, path: &[u8]) -> bool {
        if !selected(path, self.paths) {
            return false;
        }
        for (i, p) in self.paths.iter().enumerate() {
            self.matched[i] |= under(path, p);
        }
        true
    }

    fn source(&mut self, e: &IndexEntry) -> Option<IndexEntry> {
        self.link_to = None;
        if e.kind != Kind::HardLink || selected(&e.link, self.paths) {
            return Some(e.clone());
        }
        // A hard link to a file outside the selection: that file's data, here.
        if let Some(first) = self.redirect.get(&e.link) {
            self.link_to = Some(first.clone());
            return Some(e.clone());
        }
        match self.outside.get(&e.link).cloned().flatten() {
            Some(t) => {
                self.redirect.insert(e.link.clone(), e.path.clone());
                Some(t)
            }
            None => {
                self.report.failed.push((e.path.clone(), format!("hard link to {}, which is not in the archive", display_path(&e.link))));
                None
            }
        }
    }

    fn member(&mut self, mut meta: Meta, entry: Option<&IndexEntry>, data: &mut Data<'_>) -> Result<()> {
        if let Some(e) = entry {
            meta.path = e.path.clone();
        }
        if let Some(first) = self.link_to.take() {
            meta.kind = Kind::HardLink;
            meta.link = first;
        }
        let progress = self.progress;
        let r = self.restorer.entry(&meta, &mut |write| {
            data.read(&mut |off, buf| {
                write(off, buf).map_err(|e| Error::Io { what: format!("writing {}", display_path(&meta.path)), source: e })?;
                if let Some(p) = progress {
                    p.bytes_in.fetch_add(buf.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            })
            .map(|_| ())
        });
        if let Some(p) = progress {
            p.files.fetch_add(1, Ordering::Relaxed);
        }
        r?;
        self.report.entries += 1;
        self.report.bytes += meta.data_len();
        if members::incomplete(&meta, entry) {
            self.report.warnings.push((meta.path.clone(), "was not read completely when the archive was made".into()));
        }
        Ok(())
    }

    fn damaged(&mut self, path: &[u8], why: String) {
        self.report.damaged.push((path.to_vec(), why));
    }

    fn refused(&mut self, raw_path: &[u8], why: String) {
        self.report.failed.push((raw_path.to_vec(), why));
    }
}
