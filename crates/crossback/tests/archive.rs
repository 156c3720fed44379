//! `crossback archive …` end to end, with the real binary, on file systems
//! made from image files on loop devices (these tests need root; see
//! `crossback_testkit::require_root`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crossback_testkit::{compare, require_root, run, tree, LoopFs};

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
    let script = format!("zstd -dc '{}' | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C '{}'", archive.display(), dest.display());
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

use crossback_testkit::member;

#[test]
fn root_hostile_archives_cannot_write_outside_the_target() {
    if !require_root("root_hostile_archives_cannot_write_outside_the_target") {
        return;
    }
    let fs = LoopFs::new("ext4", 64);
    let outside = fs.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"precious").unwrap();
    let mut t = Vec::new();
    member(&mut t, b"../escape-dotdot", b'0', b"", b"x");
    member(&mut t, b"a/../../escape-inner", b'0', b"", b"x");
    member(&mut t, b"/abs-escape", b'0', b"", b"absolute names land inside");
    // A symlink pointing out, then a file written through it.
    let out_str = outside.to_str().unwrap().as_bytes().to_vec();
    member(&mut t, b"link", b'2', &out_str, b"");
    member(&mut t, b"link/planted", b'0', b"", b"x");
    // A hard link to a file outside (by absolute and by relative name).
    let victim = [out_str.as_slice(), b"/victim"].concat();
    member(&mut t, b"hard-abs", b'1', &victim, b"");
    member(&mut t, b"hard-rel", b'1', b"../outside/victim", b"");
    // A symlink to / named etc, then a directory of the same name and a file in it.
    member(&mut t, b"etc", b'2', b"/", b"");
    member(&mut t, b"etc/", b'5', b"", b"");
    member(&mut t, b"etc/crossback-planted", b'0', b"", b"x");
    // Duplicates: the last one wins, inside.
    member(&mut t, b"dup", b'0', b"", b"first");
    member(&mut t, b"dup", b'0', b"", b"second");
    // A directory turned into a symlink to the outside, then written through.
    member(&mut t, b"dir/", b'5', b"", b"");
    member(&mut t, b"dir", b'2', &out_str, b"");
    member(&mut t, b"dir/through", b'0', b"", b"x");
    t.extend_from_slice(&[0u8; 1024]);
    let archive = fs.path().join("hostile.tar");
    std::fs::write(&archive, &t).unwrap();
    let dest = fs.path().join("dest");
    let out = crossback().args(["archive", "extract"]).arg(&archive).arg("-C").arg(&dest).output().unwrap();
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "refusals make a non-zero exit: {err}");
    // Nothing outside changed.
    let names: Vec<_> = std::fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("victim")], "{err}");
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"precious");
    assert!(!fs.path().join("escape-dotdot").exists() && !fs.path().join("escape-inner").exists());
    assert!(!Path::new("/etc/crossback-planted").exists());
    assert!(!Path::new("/abs-escape").exists());
    // What could be made safely is inside.
    assert_eq!(std::fs::read(dest.join("abs-escape")).unwrap(), b"absolute names land inside");
    assert_eq!(std::fs::read(dest.join("dup")).unwrap(), b"second");
    assert!(std::fs::symlink_metadata(dest.join("link")).unwrap().file_type().is_symlink());
    // Hard links to "outside" names resolve inside the target, where there is no such file.
    assert!(!dest.join("hard-rel").exists() && !dest.join("hard-abs").exists());
    assert!(err.contains("escape-dotdot") && err.contains("leads outside"), "{err}");
    assert!(err.contains("/link/planted"), "{err}");
}

/// The (offset, length) of a member's data in the decompressed stream is
/// not needed: flip bytes in the compressed file at several offsets.
fn flip(path: &Path, offsets: &[u64]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    for &o in offsets {
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, o).unwrap();
        b[0] ^= 0x5a;
        f.write_all_at(&b, o).unwrap();
    }
}

#[test]
fn root_damage_is_found_and_named_and_the_rest_restores() {
    if !require_root("root_damage_is_found_and_named_and_the_rest_restores") {
        return;
    }
    let src = LoopFs::new("ext4", 1024);
    let tree = src.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    // 40 files of 1 MiB of noise: several frames of 4 MiB.
    for i in 0..40 {
        std::fs::write(tree.join(format!("f{i:02}")), tree::noise(i + 10, 1 << 20)).unwrap();
    }
    let good = src.path().join("good.tar.zst");
    run_ok(crossback().args(["archive", "create"]).arg(&tree).arg("-o").arg(&good));
    run_ok(crossback().args(["archive", "verify"]).arg(&good));
    let len = std::fs::metadata(&good).unwrap().len();

    // Flipped bytes in two places: the members there are named; the rest restores.
    let bad = src.path().join("flipped.tar.zst");
    std::fs::copy(&good, &bad).unwrap();
    flip(&bad, &[len / 5, len / 2]);
    let out = crossback().args(["archive", "verify"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    let named: Vec<&str> = err.lines().filter(|l| l.starts_with("  /f")).collect();
    assert!(named.len() >= 2 && named.len() < 20, "damaged files named, not everything: {err}");
    let dest = src.path().join("from-flipped");
    let out = crossback().args(["archive", "extract"]).arg(&bad).arg("-C").arg(&dest).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let mut intact = 0;
    for i in 0..40u64 {
        let name = format!("f{i:02}");
        let damaged = stderr(&out).contains(&format!("/{name}:"));
        if !damaged {
            let got = std::fs::read(dest.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}; extract said: {}", stderr(&out)));
            assert!(got == tree::noise(i + 10, 1 << 20), "{name} restored intact");
            intact += 1;
        }
    }
    assert!(intact >= 20, "most files come back: {intact}");

    // Truncated: the end (index) is gone; what is before the cut restores.
    let cut = src.path().join("cut.tar.zst");
    std::fs::copy(&good, &cut).unwrap();
    std::fs::OpenOptions::new().write(true).open(&cut).unwrap().set_len(len * 2 / 3).unwrap();
    let out = crossback().args(["archive", "verify"]).arg(&cut).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
    let dest = src.path().join("from-cut");
    let out = crossback().args(["archive", "extract"]).arg(&cut).arg("-C").arg(&dest).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // The walk order is the directory's, so which files precede the cut varies.
    let mut before_cut = 0;
    for i in 0..40u64 {
        if let Ok(got) = std::fs::read(dest.join(format!("f{i:02}"))) {
            // The last one may be cut short: it is reported, the others are intact.
            if got == tree::noise(i + 10, 1 << 20) {
                before_cut += 1;
            }
        }
    }
    assert!(before_cut >= 15, "files before the cut restore intact: {before_cut}; {}", stderr(&out));

    // Garbage appended: found, reported, and the archive still reads in full.
    let long = src.path().join("appended.tar.zst");
    std::fs::copy(&good, &long).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&long).unwrap();
    std::io::Write::write_all(&mut f, &tree::noise(99, 5000)).unwrap();
    let out = crossback().args(["archive", "verify"]).arg(&long).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("5000 bytes of something else"), "{}", stderr(&out));
    let dest = src.path().join("from-appended");
    let _ = crossback().args(["archive", "extract"]).arg(&long).arg("-C").arg(&dest).output().unwrap();
    assert_same(&tree, &dest);
}

#[test]
fn root_full_output_disk_removes_the_partial_archive() {
    if !require_root("root_full_output_disk_removes_the_partial_archive") {
        return;
    }
    let src = LoopFs::new("ext4", 256);
    let small = LoopFs::new("ext4", 16);
    for i in 0..40 {
        std::fs::write(src.path().join(format!("f{i:02}")), tree::noise(i + 1, 1 << 20)).unwrap();
    }
    let out = crossback().args(["archive", "create"]).arg(src.path()).arg("-o").arg(small.path().join("a.tar.zst")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("full"), "{err}");
    let left: Vec<_> = std::fs::read_dir(small.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(left, vec!["lost+found".to_string()], "nothing left behind");
}

#[test]
fn root_unreadable_files_are_reported_and_the_archive_stays_valid() {
    if !require_root("root_unreadable_files_are_reported_and_the_archive_stays_valid") {
        return;
    }
    // Run as nobody: files only root can read are then unreadable.
    let fs = LoopFs::new("ext4", 64);
    let tree = fs.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("readable"), b"yes").unwrap();
    std::fs::write(tree.join("secret"), b"no").unwrap();
    std::fs::set_permissions(tree.join("secret"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let outdir = fs.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    std::os::unix::fs::chown(&outdir, Some(65534), Some(65534)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_crossback"))
        .args(["archive", "create"])
        .arg(&tree)
        .arg("-o")
        .arg(outdir.join("a.tar.zst"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "partial: {}", stderr(&out));
    assert!(stderr(&out).contains("/secret: cannot be read"), "{}", stderr(&out));
    run_ok(crossback().args(["archive", "verify"]).arg(outdir.join("a.tar.zst")));
    let listing = run_ok(crossback().args(["archive", "ls"]).arg(outdir.join("a.tar.zst")));
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(text.contains("/readable") && !text.contains("/secret"), "{text}");
}

/// `rchar` of a crossback run: bytes its read calls returned (CROSSBACK_REPORT_IO).
fn rchar(out: &Output) -> u64 {
    let e = stderr(out);
    let line = e.lines().find(|l| l.starts_with("crossback-io:")).expect("io report");
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "rchar:").expect("rchar");
    words[i + 1].parse().unwrap()
}

#[test]
fn root_one_file_from_a_big_archive_reads_little_of_it() {
    if !require_root("root_one_file_from_a_big_archive_reads_little_of_it") {
        return;
    }
    let fs = LoopFs::new("ext4", 3 * 1024);
    let tree = fs.path().join("t");
    std::fs::create_dir(&tree).unwrap();
    // 1 GiB of incompressible data around one small file.
    let chunk = tree::noise(7, 16 << 20);
    for i in 0..64u32 {
        let mut data = chunk.clone();
        data[..4].copy_from_slice(&i.to_le_bytes());
        std::fs::write(tree.join(format!("big-{i:02}")), &data).unwrap();
        if i == 40 {
            std::fs::write(tree.join("big-40-needle"), b"the one file we want").unwrap();
        }
    }
    let a = fs.path().join("big.tar.zst");
    run_ok(crossback().args(["archive", "create", "--level", "1"]).arg(&tree).arg("-o").arg(&a));
    assert!(std::fs::metadata(&a).unwrap().len() >= 1 << 30);
    let dest = fs.path().join("one");
    let out = run_ok(crossback().env("CROSSBACK_REPORT_IO", "1").args(["archive", "extract"]).arg(&a).arg("-C").arg(&dest).arg("big-40-needle"));
    assert_eq!(std::fs::read(dest.join("big-40-needle")).unwrap(), b"the one file we want");
    let read = rchar(&out);
    assert!(read < 32 << 20, "read {read} bytes to extract one small file");
    let out = run_ok(crossback().env("CROSSBACK_REPORT_IO", "1").args(["archive", "ls"]).arg(&a));
    assert!(rchar(&out) < 32 << 20, "ls read {} bytes", rchar(&out));

    // The same, encrypted (age): only the chunks of the frames needed are read.
    std::fs::remove_file(&a).unwrap();
    let key = fs.path().join("age.key");
    run(Command::new("age-keygen").arg("-o").arg(&key));
    let recipient = run(Command::new("age-keygen").arg("-y").arg(&key));
    let e = fs.path().join("big.tar.zst.age");
    run_ok(crossback().args(["archive", "create", "--level", "1", "--recipient", recipient.trim()]).arg(&tree).arg("-o").arg(&e));
    assert!(std::fs::metadata(&e).unwrap().len() >= 1 << 30);
    let dest = fs.path().join("one-encrypted");
    let out = run_ok(
        crossback().env("CROSSBACK_REPORT_IO", "1").arg("--identity").arg(&key).args(["archive", "extract"]).arg(&e).arg("-C").arg(&dest).arg("big-40-needle"),
    );
    assert_eq!(std::fs::read(dest.join("big-40-needle")).unwrap(), b"the one file we want");
    let read = rchar(&out);
    assert!(read < 32 << 20, "read {read} bytes of the encrypted archive to extract one small file");
    let out = run_ok(crossback().env("CROSSBACK_REPORT_IO", "1").arg("--identity").arg(&key).args(["archive", "ls"]).arg(&e));
    assert!(rchar(&out) < 32 << 20, "ls read {} bytes of the encrypted archive", rchar(&out));
    let out = crossback().args(["archive", "ls"]).arg(&e).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[key]"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn root_an_archive_inside_its_source_does_not_hold_itself() {
    if !require_root("root_an_archive_inside_its_source_does_not_hold_itself") {
        return;
    }
    let fs = LoopFs::new("ext4", 64);
    std::fs::write(fs.path().join("data"), tree::noise(5, 100_000)).unwrap();
    run_ok(crossback().args(["archive", "create"]).arg(fs.path()).arg("-o").arg(fs.path().join("self.tar.zst")));
    let out = run_ok(crossback().args(["archive", "ls"]).arg(fs.path().join("self.tar.zst")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" /data") && !text.contains("self.tar.zst"), "{text}");
}

/// A disk that takes the restored files into its cache and then cannot
/// write them (a USB disk that dies, a thin volume that runs out): ext4 on
/// a loop device whose image lies on a tmpfs too small for what is
/// restored. The extraction must not end as if the files were safe: it
/// fails, and says the files did not reach the disk.
#[test]
fn root_a_restore_whose_files_cannot_reach_the_disk_fails() {
    if !require_root("root_a_restore_whose_files_cannot_reach_the_disk_fails") {
        return;
    }
    struct Lying {
        dir: tempfile::TempDir,
        device: String,
    }
    impl Drop for Lying {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.dir.path().join("mnt")).status();
            let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
            let _ = Command::new("umount").arg(self.dir.path().join("backing")).status();
        }
    }
    let src = LoopFs::new("ext4", 256);
    let data = src.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for i in 0..4u64 {
        std::fs::write(data.join(format!("part-{i}")), tree::noise(i + 1, 16 << 20)).unwrap();
    }
    let archive = src.path().join("data.tar.zst");
    run_ok(crossback().args(["archive", "create"]).arg(&data).arg("-o").arg(&archive));

    // With a journal, ext4 stops at the first failed write (read-only);
    // without one, only the write-back of the data fails (EIO), which the
    // kernel reports once to each open file of the file system.
    for mkfs in [&["-q", "-F"][..], &["-q", "-F", "-O", "^has_journal", "-e", "continue"][..]] {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("backing");
        std::fs::create_dir(&backing).unwrap();
        run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(&backing));
        let image = backing.join("disk.img");
        std::fs::File::create(&image).unwrap().set_len(256 << 20).unwrap();
        run(Command::new("mkfs.ext4").args(mkfs).arg(&image));
        let device = run(Command::new("losetup").args(["--find", "--show"]).arg(&image)).trim().to_string();
        let lying = Lying { dir, device };
        let mnt = lying.dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        run(Command::new("mount").arg(&lying.device).arg(&mnt));

        let out = crossback().args(["archive", "extract"]).arg(&archive).arg("-C").arg(mnt.join("r")).output().unwrap();
        assert!(!out.status.success(), "mkfs {mkfs:?}: 64 MiB restored onto a disk that holds under 24 MiB, and the extraction said nothing: {}", stderr(&out));
        assert!(stderr(&out).contains("did not all reach the disk"), "mkfs {mkfs:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).matches("(os error").count(), 1, "the cause said once: {}", stderr(&out));
    }
    // The archive is as it was.
    run_ok(crossback().args(["archive", "verify"]).arg(&archive));
}
