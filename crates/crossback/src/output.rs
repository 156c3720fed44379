//! What people read: sizes, progress, listings.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossback_archive::Progress;

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn path(p: &[u8]) -> String {
    crossback_archive::entry::display_path(p)
}

/// A whole message for a terminal: control characters other than line
/// breaks and tabs escaped, whatever part of it came from a disk.
pub fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { format!("\\u{{{:x}}}", c as u32) } else { c.to_string() }).collect()
}

/// An error and its causes, outermost first, joined by ": " (as `{:#}`),
/// each said once: an error whose message already ends with its cause's
/// (the archive's and host's I/O errors show their `io::Error`) does not
/// get it twice.
pub fn chain(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in err.chain() {
        let s = e.to_string();
        if !parts.last().is_some_and(|p| p.ends_with(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Text from a disk or a user (fstab lines, labels, names) for a terminal:
/// control characters escaped.
pub fn text(s: &str) -> String {
    crossback_archive::entry::escape(s.as_bytes())
}

/// A progress bar on a terminal (stderr), nothing otherwise.
pub struct Bar {
    stop: Option<(Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl Bar {
    /// `total` bytes expected (0: unknown).
    pub fn start(progress: Arc<Progress>, total: u64, verb: &'static str) -> Bar {
        Self::start_with(progress, Arc::new(std::sync::atomic::AtomicU64::new(total)), verb)
    }

    /// As [`Bar::start`], with a total that may be filled in later (by a pre-scan).
    pub fn start_with(progress: Arc<Progress>, total: Arc<std::sync::atomic::AtomicU64>, verb: &'static str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar::lines(progress, total, verb);
        }
        let bar = indicatif::ProgressBar::new(total.load(Ordering::Relaxed));
        let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(verb);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let h = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                bar.set_length(total.load(Ordering::Relaxed));
                bar.set_position(progress.bytes_in.load(Ordering::Relaxed));
                bar.set_message(format!("{} files", progress.files.load(Ordering::Relaxed)));
                std::thread::sleep(Duration::from_millis(200));
            }
            bar.finish_and_clear();
        });
        Bar { stop: Some((stop, h)) }
    }

    /// Without a terminal (a log, a service's journal): a line every
    /// `CROSSBACK_PROGRESS_SECS` seconds (default 30), so that a long run
    /// is never silent.
    fn lines(progress: Arc<Progress>, total: Arc<std::sync::atomic::AtomicU64>, verb: &'static str) -> Bar {
        let every = std::env::var("CROSSBACK_PROGRESS_SECS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(30).max(1);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let start = Instant::now();
        let h = std::thread::spawn(move || {
            let mut next = Duration::from_secs(every);
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if start.elapsed() >= next {
                    next += Duration::from_secs(every);
                    let (done, of) = (progress.bytes_in.load(Ordering::Relaxed), total.load(Ordering::Relaxed));
                    let of = if of >= done && of > 0 { format!(" of about {}", bytes(of)) } else { String::new() };
                    eprintln!("  {verb}: {}{of}, {} files, {:.0}s", bytes(done), progress.files.load(Ordering::Relaxed), start.elapsed().as_secs_f64());
                }
            }
        });
        Bar { stop: Some((stop, h)) }
    }

    pub fn finish(mut self) {
        if let Some((s, h)) = self.stop.take() {
            s.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
    }
}

pub fn elapsed(start: Instant) -> String {
    format!("{:.1}s", start.elapsed().as_secs_f64())
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn utc(sec: i64) -> String {
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let days = sec.div_euclid(86400);
    let secs = sec.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Bytes as lowercase hexadecimal (hashes as the manifests and stores write them).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Now, in RFC 3339 (UTC, seconds).
pub fn now() -> String {
    stamp(now_secs())
}

/// Seconds since 1970, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A time (seconds since 1970) in RFC 3339, UTC: what [`parse_time`] reads.
pub fn stamp(secs: i64) -> String {
    utc(secs).replacen(' ', "T", 1) + "Z"
}

/// Seconds since 1970 from [`now`]'s format; `None` if it is not that.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d, hh, mm, ss) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// "3 days", "5 hours": how long ago, for people.
pub fn age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s} seconds"),
        120..=7199 => format!("{} minutes", s / 60),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

/// "1 entry", "2 entries".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The one confirmation prompt: on a terminal, asks `question` and returns
/// true only for the answer `yes`; without a terminal, never asks and
/// returns false (the caller then names the option that confirms).
pub fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    print!("{question} [type yes] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// The zstd levels an archive's frames were made at, when more than one
/// (adaptive compression): "3 (12 frames), 4 (30 frames)".
pub fn levels(levels: &std::collections::BTreeMap<i32, u64>) -> Option<String> {
    (levels.len() > 1).then(|| levels.iter().map(|(l, n)| format!("{l} ({})", count(*n, "frame", "frames"))).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that shows its cause in its own message (as the archive's
    /// I/O errors do) and also gives it as its source.
    #[derive(Debug)]
    struct Shows(std::io::Error);

    impl std::fmt::Display for Shows {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "writing the restored files to the disk: {}", self.0)
        }
    }

    impl std::error::Error for Shows {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_is_said_once() {
        let io = std::io::Error::from_raw_os_error(libc::EROFS);
        let err = anyhow::Error::new(Shows(io)).context("restoring a.tar.zst into /mnt");
        let said = chain(&err);
        assert_eq!(said.matches("Read-only file system").count(), 1, "{said}");
        assert!(said.starts_with("restoring a.tar.zst into /mnt: writing the restored files to the disk: Read-only"), "{said}");
        // Causes that are not repeated all stay.
        let err = anyhow::anyhow!("the inner cause").context("the middle").context("the outer");
        assert_eq!(chain(&err), "the outer: the middle: the inner cause");
    }
}
