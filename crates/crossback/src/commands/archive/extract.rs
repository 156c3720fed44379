//! `crossback archive extract`: an archive (crossback's, or any tar) into an empty directory.

use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use crossback_archive::extract::ExtractOptions;
use crossback_archive::{Archive, Progress};

use super::list;
use crate::cli::ExtractArgs;
use crate::output::{self, Bar};
use crate::Outcome;

pub fn extract(a: ExtractArgs) -> anyhow::Result<Outcome> {
    let archive = Archive::open_with(&a.archive, crate::keys::identity_keys()?.as_ref()).map_err(crate::error::from_archive).context("reading the archive")?;
    if !a.dir.exists() {
        std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    } else if !a.force {
        crossback_archive::restore::check_empty(&a.dir)?;
    }
    let progress = Arc::new(Progress::default());
    let total = archive.summary().map(|s| s.data_bytes).unwrap_or(0);
    let opts = ExtractOptions {
        paths: a.paths.iter().map(|p| p.as_os_str().as_bytes().to_vec()).collect(),
        progress: Some(Arc::clone(&progress)),
        threads: a.threads.map_or(0, |t| t.max(1)),
    };
    let start = Instant::now();
    let bar = Bar::start(Arc::clone(&progress), if opts.paths.is_empty() { total } else { 0 }, "restoring");
    let report = crossback_archive::extract(&archive, &a.dir, &opts);
    bar.finish();
    let report = report.with_context(|| format!("restoring {} into {}", a.archive.display(), a.dir.display()))?;
    eprintln!("restored {}, {} of data, {}", output::count(report.entries, "entry", "entries"), output::bytes(report.bytes), output::elapsed(start));
    if let Some(p) = &report.archive_problem {
        eprintln!("archive: {p}");
    }
    list("warnings", &report.warnings);
    list("damaged in the archive (the rest was restored)", &report.damaged);
    list("not restored", &report.failed);
    Ok(if !report.damaged.is_empty() || report.archive_problem.is_some() {
        Outcome::Damaged
    } else if !report.failed.is_empty() {
        Outcome::Partial
    } else {
        Outcome::Ok
    })
}
