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

#[test]
fn root_gnu_tar_restores_our_archive() {
    if !require_root("root_gnu_tar_restores_our_archive") {
        return;
    }
    let w = World::new();
    // GNU tar cannot create paths longer than PATH_MAX (it walks by full
    // paths), so the deep part of the tree is left out here.
    let archive = w.out.path().join("no-deep.tar.zst");
    run_ok(crossback().args(["archive", "create", "--exclude", "/deep"]).arg(w.tree()).arg("-o").arg(&archive));
    let dest = w.out.path().join("by-gnu-tar");
    std::fs::create_dir(&dest).unwrap();
    let script = format!(
        "zstd -dc '{}' | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C '{}'",
        archive.display(),
        dest.display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "GNU tar failed: {}", stderr(&out));
    let diffs: Vec<String> = compare::trees_with(&w.tree(), &dest, true).into_iter().filter(|d| !d.contains("dev/socket") && !d.contains(": deep")).collect();
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
}

#[test]
fn root_reads_gnu_tar_archives() {
    if !require_root("root_reads_gnu_tar_archives") {
        return;
    }
    let w = World::new();
    // PAX with xattrs (values holding newlines), ACLs and GNU.sparse 1.0, compressed.
    let pax = w.out.path().join("gnu-pax.tar.zst");
    let script = format!(
        "tar -C '{}' --format=pax --xattrs --xattrs-include='*' --acls --sparse --numeric-owner -cf - . 2>/dev/null | zstd -q -o '{}'",
        w.tree().display(),
        pax.display()
    );
    assert!(Command::new("sh").arg("-c").arg(&script).status().unwrap().success());
    let dest = w.out.path().join("from-pax");
    run_ok(crossback().args(["archive", "extract"]).arg(&pax).arg("-C").arg(&dest));
    let diffs: Vec<String> = compare::trees_with(&w.tree(), &dest, true).into_iter().filter(|d| !d.contains("dev/socket")).collect();
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));

    // GNU's own format: long names, old sparse headers; no xattrs and whole seconds by design.
    let gnu = w.out.path().join("gnu.tar");
    let script = format!("tar -C '{}' --format=gnu --sparse --numeric-owner -cf '{}' . 2>/dev/null", w.tree().display(), gnu.display());
    Command::new("sh").arg("-c").arg(&script).status().unwrap();
    let dest = w.out.path().join("from-gnu");
    run_ok(crossback().args(["archive", "extract"]).arg(&gnu).arg("-C").arg(&dest));
    let diffs: Vec<String> = compare::trees_with(&w.tree(), &dest, true)
        .into_iter()
        .filter(|d| !d.contains("dev/socket") && !d.starts_with("mtime differs") && !d.starts_with("xattrs differs"))
        .collect();
    assert!(diffs.is_empty(), "{} differences:\n{}", diffs.len(), diffs.join("\n"));
}

#[test]
fn root_ls_lists_from_the_index() {
    if !require_root("root_ls_lists_from_the_index") {
        return;
    }
    let w = World::new();
    let out = run_ok(crossback().args(["archive", "ls"]).arg(w.archive()).arg("symlinks"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/symlinks/rel -> ../files/small.txt"), "{text}");
    assert_eq!(text.lines().count(), 6, "the directory and its 5 symlinks: {text}");
    let out = run_ok(crossback().args(["archive", "ls", "--json"]).arg(w.archive()).arg("files/sparse-9g"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["size"], 9u64 * (1 << 30) + 29);
    assert_eq!(v["type"], "file");
    let out = crossback().args(["archive", "ls"]).arg(w.archive()).arg("no/such/path").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/no/such/path is not in"), "{}", stderr(&out));
}

#[test]
fn root_extract_some_paths_and_refuse_non_empty_target() {
    if !require_root("root_extract_some_paths_and_refuse_non_empty_target") {
        return;
    }
    let w = World::new();
    let dest = w.out.path().join("some");
    // A hard link whose first name is not extracted still gets its data.
    run_ok(crossback().args(["archive", "extract"]).arg(w.archive()).arg("-C").arg(&dest).args(["files/small-link", "symlinks"]));
    assert_eq!(std::fs::read(dest.join("files/small-link")).unwrap(), b"hello, crossback\n");
    assert!(!dest.join("files/small.txt").exists());
    assert_eq!(std::fs::read_link(dest.join("symlinks/rel")).unwrap(), Path::new("../files/small.txt"));
    let out = crossback().args(["archive", "extract"]).arg(w.archive()).arg("-C").arg(&dest).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    run_ok(crossback().args(["archive", "extract", "--force"]).arg(w.archive()).arg("-C").arg(&dest).arg("files/small.txt"));
    assert_eq!(std::fs::read(dest.join("files/small.txt")).unwrap(), b"hello, crossback\n");
}

#[test]
fn root_excludes_leave_out_matching_paths() {
    if !require_root("root_excludes_leave_out_matching_paths") {
        return;
    }
    let w = World::new();
    let a = w.out.path().join("ex.tar.zst");
    run_ok(crossback().args(["archive", "create", "--exclude", "*.txt", "--exclude", "/deep"]).arg(w.tree()).arg("-o").arg(&a));
    let out = run_ok(crossback().args(["archive", "ls"]).arg(&a));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.lines().any(|l| l.ends_with(" /files/small.txt")), "{text}");
    assert!(!text.contains(" /deep"), "{text}");
    assert!(text.contains("/files/small-link"), "only the name matching the pattern goes: {text}");
}

#[test]
fn root_verify_against_lists_changes() {
    if !require_root("root_verify_against_lists_changes") {
        return;
    }
    let w = World::new();
    run_ok(crossback().args(["archive", "verify"]).arg(w.archive()).arg("--against").arg(w.tree()));
    std::fs::write(w.tree().join("owners/f0"), b"owneD").unwrap();
    std::fs::write(w.tree().join("files/new"), b"new").unwrap();
    let out = crossback().args(["archive", "verify"]).arg(w.archive()).arg("--against").arg(w.tree()).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("/owners/f0: content differs"), "{e}");
    assert!(e.contains("/owners/f0: mtime differs"), "{e}");
    assert!(e.contains("/files/new: only in the tree"), "{e}");
}
