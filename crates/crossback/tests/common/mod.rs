//! What the integration tests share: running the real binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

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
