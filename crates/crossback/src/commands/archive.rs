//! `crossback archive create|extract|ls|verify`.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossback_archive::Kind;

use crate::output;

mod create;
mod extract;
mod ls;
mod verify;

pub use create::create;
pub use extract::extract;
pub use ls::ls;
pub use verify::verify;

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
