//! `crossback archive create`: one directory tree into an archive file.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use crossback_archive::{CreateOptions, Progress};

use super::{expected_bytes, list, partial_path};
use crate::cli::CreateArgs;
use crate::output::{self, Bar};
use crate::Outcome;

pub fn create(a: CreateArgs) -> anyhow::Result<Outcome> {
    let meta = std::fs::metadata(&a.src).with_context(|| format!("reading {}", a.src.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory; give the root of the tree to archive", a.src.display());
    }
    if a.output.exists() && !a.force {
        bail!("{} already exists; choose another name or pass --force to replace it", a.output.display());
    }
    let dir = a.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let partial = partial_path(&a.output);
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let progress = Arc::new(Progress::default());
    let me = file.metadata().with_context(|| format!("reading {}", partial.display()))?;
    let mut opts = CreateOptions {
        excludes: a.excludes.clone(),
        spool_dir: Some(dir.to_path_buf()),
        progress: Some(Arc::clone(&progress)),
        encrypt_to: crate::keys::parse_recipients(&a.recipient)?,
        ..a.compression.options()
    };
    if let Some(f) = a.frame_size {
        opts.frame_size = f.max(64 << 10);
    }
    // The archive may be written inside the tree it archives: never into itself.
    opts.skip_inodes.push((me.dev(), me.ino()));
    let start = Instant::now();
    let bar = Bar::start_with(Arc::clone(&progress), expected_bytes(&a.src), "archiving");
    let result = crossback_archive::create(&a.src, file, &opts);
    bar.finish();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            let hint = if e.is_disk_full() {
                "; the output disk is full: free space or write elsewhere (the partial archive was removed)"
            } else {
                "; the partial archive was removed"
            };
            return Err(anyhow::Error::new(e).context(format!("archiving {} into {}{hint}", a.src.display(), a.output.display())));
        }
    };
    std::fs::rename(&partial, &a.output).with_context(|| format!("renaming {} to {}", partial.display(), a.output.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let s = &report.summary;
    let out_len = std::fs::metadata(&a.output).map(|m| m.len()).unwrap_or(0);
    let ratio = if out_len > 0 { s.data_bytes as f64 / out_len as f64 } else { 0.0 };
    eprintln!(
        "archived {} entries ({} files, {} dirs, {} symlinks, {} hard links, {} special), {} in, {} out (ratio {:.2}), {}; skipped: {} sockets, {} unreadable",
        s.entries,
        s.files,
        s.dirs,
        s.symlinks,
        s.hardlinks,
        s.specials,
        output::bytes(s.data_bytes),
        output::bytes(out_len),
        ratio,
        output::elapsed(start),
        s.sockets_skipped,
        s.errors
    );
    if let Some(l) = output::levels(&report.levels) {
        eprintln!("zstd levels: {l}");
    }
    let problems: Vec<(Vec<u8>, String)> = report.problems.iter().map(|p| (p.path.clone(), p.what.clone())).collect();
    list("not archived as they are", &problems);
    Ok(if problems.is_empty() { Outcome::Ok } else { Outcome::Partial })
}
