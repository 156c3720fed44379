//! `crossback archive create|extract|ls|verify`.

use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use crossback_archive::extract::ExtractOptions;
use crossback_archive::{Archive, CreateOptions, Kind, Progress};

use crate::cli::{CreateArgs, ExtractArgs, LsArgs, VerifyArgs};
use crate::output::{self, Bar};
use crate::Outcome;

/// Most problems listed one by one; the rest counted.
const LIST_MAX: usize = 50;

fn list(title: &str, items: &[(Vec<u8>, String)]) {
    if items.is_empty() {
        return;
    }
    eprintln!("{title}:");
    for (p, why) in items.iter().take(LIST_MAX) {
        eprintln!("  {}: {why}", output::path(p));
    }
    if items.len() > LIST_MAX {
        eprintln!("  … and {} more", items.len() - LIST_MAX);
    }
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// The bytes `create` will read, for the progress bar: the used bytes of
/// the file system when SRC is its root (instant), otherwise a pre-scan of
/// allocated bytes on another thread (the bar shows no total until it ends).
fn expected_bytes(src: &Path) -> Arc<AtomicU64> {
    let total = Arc::new(AtomicU64::new(0));
    if !std::io::stderr().is_terminal() {
        return total;
    }
    let is_root = |p: &Path| -> Option<bool> {
        let me = std::fs::metadata(p).ok()?;
        let up = std::fs::metadata(p.join("..")).ok()?;
        Some(me.dev() != up.dev() || me.ino() == up.ino())
    };
    if is_root(src) == Some(true) {
        let used = rustix::fs::statvfs(src).map(|s| (s.f_blocks - s.f_bfree) * s.f_frsize).unwrap_or(0);
        total.store(used, Ordering::Relaxed);
        return total;
    }
    let (t, src) = (Arc::clone(&total), src.to_path_buf());
    std::thread::spawn(move || {
        let dev = std::fs::metadata(&src).map(|m| m.dev()).unwrap_or(0);
        let mut sum = 0u64;
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let Ok(m) = e.metadata() else { continue };
                if m.is_dir() && m.dev() == dev {
                    stack.push(e.path());
                } else if m.is_file() {
                    sum += (m.blocks() * 512).min(m.len());
                }
            }
        }
        t.store(sum, Ordering::Relaxed);
    });
    total
}

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

fn mode_string(kind: Kind, mode: u32) -> String {
    let mut s = String::new();
    s.push(kind.letter());
    let bits = [(0o400, 'r'), (0o200, 'w'), (0o100, 'x'), (0o040, 'r'), (0o020, 'w'), (0o010, 'x'), (0o004, 'r'), (0o002, 'w'), (0o001, 'x')];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        s.push(match (set, special, i) {
            (true, true, 8) => 't',
            (false, true, 8) => 'T',
            (true, true, _) => 's',
            (false, true, _) => 'S',
            (true, false, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

/// One listing line (or JSON object) for an index entry; `prefix` is the
/// mount point the archive belongs under ("" for a lone archive).
pub fn write_entry(out: &mut dyn Write, e: &crossback_archive::IndexEntry, prefix: &str, json: bool) -> std::io::Result<()> {
    let shown = |p: &[u8]| {
        let inner = output::path(p);
        if prefix.is_empty() || prefix == "/" {
            inner
        } else if inner == "/" {
            prefix.to_string()
        } else {
            format!("{prefix}{inner}")
        }
    };
    if json {
        let v = serde_json::json!({
            "path": shown(&e.path),
            "type": format!("{:?}", e.kind).to_lowercase(),
            "mode": format!("{:04o}", e.mode),
            "uid": e.uid,
            "gid": e.gid,
            "size": e.size,
            "mtime": crossback_archive::tarw::format_time(e.mtime),
            "link": (!e.link.is_empty()).then(|| if e.kind == Kind::HardLink { shown(&e.link) } else { String::from_utf8_lossy(&e.link).into_owned() }),
            "flags": e.flags,
        });
        writeln!(out, "{v}")
    } else {
        let link = match e.kind {
            Kind::Symlink => format!(" -> {}", String::from_utf8_lossy(&e.link)),
            Kind::HardLink => format!(" link to {}", shown(&e.link)),
            _ => String::new(),
        };
        let size = match e.kind {
            Kind::CharDev | Kind::BlockDev => format!("{},{}", e.rdev.0, e.rdev.1),
            _ => e.size.to_string(),
        };
        writeln!(out, "{} {:>5} {:>5} {:>12} {} {}{}", mode_string(e.kind, e.mode), e.uid, e.gid, size, output::utc(e.mtime.sec), shown(&e.path), link)
    }
}

pub fn ls(a: LsArgs) -> anyhow::Result<Outcome> {
    let archive = Archive::open_with(&a.archive, crate::keys::identity_keys()?.as_ref()).map_err(crate::error::from_archive).context("reading the archive")?;
    let prefix = match &a.path {
        Some(p) => crossback_archive::entry::normalize_path(p.as_os_str().as_bytes()).with_context(|| format!("{} has a '..' component", p.display()))?,
        None => Vec::new(),
    };
    let Some(index) = archive.index()? else {
        bail!(
            "{} has no crossback index ({}); use `crossback archive extract` or `tar -t` to read it",
            a.archive.display(),
            archive.trailer_problem.clone().unwrap_or_else(|| "not made by crossback".into())
        );
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut found = false;
    for e in index {
        let e = e?;
        if !crossback_archive::archive::under(&e.path, &prefix) {
            continue;
        }
        found = true;
        write_entry(&mut out, &e, "", a.json)?;
    }
    out.flush()?;
    if !found {
        bail!("{} is not in {}", output::path(&prefix), a.archive.display());
    }
    Ok(Outcome::Ok)
}

pub fn verify(a: VerifyArgs) -> anyhow::Result<Outcome> {
    let archive = Archive::open_with(&a.archive, crate::keys::identity_keys()?.as_ref()).map_err(crate::error::from_archive).context("reading the archive")?;
    let progress = Arc::new(Progress::default());
    let total = archive.summary().map(|s| s.data_bytes).unwrap_or(0);
    let start = Instant::now();
    let bar = Bar::start(Arc::clone(&progress), total, "verifying");
    let report = crossback_archive::verify::verify(&archive, a.against.as_deref(), Some(progress));
    bar.finish();
    let report = report.context("verifying the archive")?;
    list("damaged", &report.damaged);
    list("differences with the tree", &report.differences);
    eprintln!(
        "checked {} entries, {} of data, {}: {}",
        report.entries,
        output::bytes(report.bytes),
        output::elapsed(start),
        if report.damaged.is_empty() { "no damage" } else { "DAMAGED" }
    );
    Ok(if !report.damaged.is_empty() {
        Outcome::Damaged
    } else if !report.differences.is_empty() {
        Outcome::Differs
    } else {
        Outcome::Ok
    })
}
