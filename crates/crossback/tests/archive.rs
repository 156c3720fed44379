//! `crossback archive …` end to end, with the real binary, on file systems
//! made from image files on loop devices (these tests need root; see
//! `crossback_testkit::require_root`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crossback_testkit::{compare, require_root, tree, LoopFs};

fn crossback() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crossback"))
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running crossback");
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A source file system with the edge-case tree, and an output one.
struct World {
    src: LoopFs,
    out: LoopFs,
}

impl World {
    fn new() -> World {
        let src = LoopFs::new("ext4", 512);
        tree::build(&src.path().join("tree"));
        World { src, out: LoopFs::new("ext4", 512) }
    }
    fn tree(&self) -> PathBuf {
        self.src.path().join("tree")
    }
    fn archive(&self) -> PathBuf {
        let a = self.out.path().join("tree.tar.zst");
        if !a.exists() {
            run_ok(crossback().args(["archive", "create"]).arg(self.tree()).arg("-o").arg(&a));
        }
        a
    }
}

impl Drop for World {
    fn drop(&mut self) {
        tree::clear_flags(self.src.path());
        tree::clear_flags(self.out.path());
    }
}

fn assert_same(a: &Path, b: &Path) {
    let diffs = compare::trees(a, b);
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
}

#[test]
fn root_round_trip_keeps_everything() {
    if !require_root("root_round_trip_keeps_everything") {
        return;
    }
    let w = World::new();
    let out = run_ok(crossback().args(["archive", "create"]).arg(w.tree()).arg("-o").arg(w.out.path().join("a.tar.zst")));
    assert!(stderr(&out).contains("1 sockets"), "summary counts the skipped socket: {}", stderr(&out));
    let dest = w.out.path().join("restored");
    run_ok(crossback().args(["archive", "extract"]).arg(w.out.path().join("a.tar.zst")).arg("-C").arg(&dest));
    let diffs: Vec<String> = compare::trees(&w.tree(), &dest).into_iter().filter(|d| !d.contains("dev/socket")).collect();
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
}
