//! What the integration tests share: running the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `crossback --config CONFIG`.
pub fn crossback(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crossback"));
    c.arg("--config").arg(config);
    c
}

/// Runs it, failing the test with its output unless it succeeds.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running crossback");
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// Both streams, for messages that may go to either.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The kind of a refusal in stderr (`error[KIND]`), or "" when there is none.
#[allow(dead_code)]
pub fn kind(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    e.find("error[").map(|s| e[s + 6..].split(']').next().unwrap_or("").to_string()).unwrap_or_default()
}

/// Everything on the slots, as `path size mtime` lines: a refusal that
/// says "nothing was written" leaves this the same.
pub fn slot_listing(slots: [&mut crossback_testkit::LoopFs; 2]) -> Vec<String> {
    let mut all = Vec::new();
    for s in slots {
        s.mount(&["ro"]);
        all.push(crossback_testkit::run(Command::new("find").arg(s.path()).arg("-printf").arg("%P %s %T@\n")));
        s.unmount();
    }
    all
}

/// A running `crossback browse`, killed (and its mount undone) if the test fails.
pub struct Browsing {
    /// `None` once it ended and its output was taken.
    child: Option<Child>,
    at: PathBuf,
}

impl Browsing {
    /// `CMD browse OPTS… AT`, once the backups are shown.
    pub fn start(cmd: &mut Command, opts: &[&str], at: &Path) -> Browsing {
        let child = cmd.arg("browse").args(opts).arg(at).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut b = Browsing { child: Some(child), at: at.to_path_buf() };
        let t = Instant::now();
        while !mounted(at) {
            if b.child.as_mut().and_then(|c| c.try_wait().unwrap()).is_some() {
                let (code, out) = b.wait();
                panic!("browse ended ({code:?}) before showing anything: {out}");
            }
            assert!(t.elapsed() < Duration::from_secs(60), "browse did not mount within a minute");
            std::thread::sleep(Duration::from_millis(100));
        }
        b
    }

    /// Sends `signal` and waits for the end: (exit code, stdout + stderr).
    pub fn stop(mut self, signal: &str) -> (Option<i32>, String) {
        let pid = self.child.as_ref().expect("browse is running").id();
        crossback_testkit::run(Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()));
        self.wait()
    }

    /// Waits (30 s at most) for it to end: (exit code, stdout + stderr).
    pub fn wait(&mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().expect("browse is running");
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                self.child = Some(child);
                panic!("browse did not end within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code(), text(&out))
    }
}

impl Drop for Browsing {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if mounted(&self.at) {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
    }
}

pub fn mounted(at: &Path) -> bool {
    let at = at.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(at.as_str()))
}
