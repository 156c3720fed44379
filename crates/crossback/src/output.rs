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
            return Bar { stop: None };
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
