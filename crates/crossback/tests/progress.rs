//! Long work is never silent: without a terminal (a log, a service's
//! journal), crossback prints a progress line at intervals
//! (`CROSSBACK_PROGRESS_SECS`, 30 s by default). No root needed.

mod common;
use common::{err, text};

#[test]
fn without_a_terminal_progress_comes_as_lines() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Text-like data: slow to compress at a high level, unlike noise (which
    // zstd recognises and stores at once).
    let mut text_like = String::new();
    for i in 0u64..250_000 {
        text_like.push_str(&format!("line {i} of {} words {}\n", i.wrapping_mul(7919) % 100_003, i % 97));
    }
    std::fs::write(src.join("log.txt"), &text_like).unwrap();
    let out = t.path().join("a.tar.zst");
    let start = std::time::Instant::now();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_crossback"))
        .args(["archive", "create"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .args(["--threads", "1", "--level", "15"])
        .env("CROSSBACK_PROGRESS_SECS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let took = start.elapsed().as_secs_f64();
    eprintln!("archive create took {took:.1}s");
    assert!(took >= 2.0, "the run took {took:.1}s: too short to show progress lines; give it more data");
    let lines = err(&o).lines().filter(|l| l.trim_start().starts_with("archiving: ")).count();
    // One line a second, give or take the first and the last.
    assert!(lines as f64 >= took - 2.0, "{lines} progress lines in {took:.1}s: {}", err(&o));
    assert!(err(&o).contains(" files, "), "{}", err(&o));
}
