//! `crossback media adopt`: a disk made by the old duplicity scripts, built
//! with the real duplicity, taken over without losing its backups.
//! These tests need root.

mod common;
#[allow(unused_imports)]
use common::{crossback, err, ok, text};
use std::path::{Path, PathBuf};
use std::process::Command;

use std::os::unix::ffi::OsStrExt;

use crossback_testkit::machine::TestMachine;
use crossback_testkit::{compare, require_root, run, tree};

/// A small tree: directories, a file that spans volumes, a symlink, modes, owners, old times.
fn make_tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("docs/deep/er")).unwrap();
    std::fs::write(root.join("big.bin"), tree::noise(seed, 3 << 20)).unwrap();
    std::fs::write(root.join("docs/a.txt"), format!("tree {seed}\n")).unwrap();
    std::fs::write(root.join("docs/deep/er/b.txt"), "deep\n").unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("docs/link")).unwrap();
    // A name that is not UTF-8 (Latin-1 "café"), and one that
    // spans volumes: any byte string is a valid name, in adopted sets too.
    let latin1 = std::ffi::OsStr::from_bytes(b"docs/caf\xe9.txt");
    std::fs::write(root.join(latin1), "latin-1\n").unwrap();
    std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"big-\xff.bin")), tree::noise(seed + 7, 2 << 20)).unwrap();
    run(Command::new("chmod").arg("4750").arg(root.join("docs/a.txt")));
    run(Command::new("chown").arg("1234:5678").arg(root.join("docs/deep/er/b.txt")));
    run(Command::new("touch").args(["-h", "-d", "2001-02-03 04:05:06"]).arg(root.join("docs/deep/er/b.txt")));
}

/// duplicity with its cache under the test's directory; `passphrase`: encrypt (None: --no-encryption).
fn duplicity(args: &[&str], cache: &Path, passphrase: Option<&str>) {
    let mut c = Command::new("duplicity");
    c.args(&args[..1]).arg(format!("--archive-dir={}", cache.display())).env("HOME", "/root");
    match passphrase {
        Some(p) => c.env("PASSPHRASE", p),
        None => c.arg("--no-encryption").env("PASSPHRASE", ""),
    };
    run(c.args(&args[1..]));
}

fn url(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// The old scripts' layout on `slot`: a full backup of one tree at the
/// root, one of another in the hidden directory; returns the two trees.
fn old_layout(slot: &Path, dir: &Path, seeds: (u64, u64), passphrase: Option<&str>) -> (PathBuf, PathBuf) {
    let (ta, tb) = (dir.join("tree-a"), dir.join("tree-b"));
    make_tree(&ta, seeds.0);
    make_tree(&tb, seeds.1);
    std::fs::create_dir(slot.join(".os_b_backups")).unwrap();
    let cache = dir.join("dup-cache");
    duplicity(&["full", "--volsize", "1", ta.to_str().unwrap(), &url(slot)], &cache, passphrase);
    duplicity(&["full", "--volsize", "1", tb.to_str().unwrap(), &url(&slot.join(".os_b_backups"))], &cache, passphrase);
    (ta, tb)
}

#[test]
fn root_adopt_a_duplicity_disk_then_rotate_it_away() {
    if !require_root("root_adopt_a_duplicity_disk_then_rotate_it_away") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    // The old layout on slot B: alpha's backup at the root, beta's in a hidden directory.
    m.slot_b.mount(&[]);
    let sb = m.slot_b.path().to_path_buf();
    old_layout(&sb, dir.path(), (1, 2), None);
    let before: Vec<String> = std::fs::read_dir(&sb).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(before.iter().filter(|n| n.contains(".vol")).count() >= 4, "volumes spanned: {before:?}");
    // What duplicity itself restores, to compare with.
    let dup_a = dir.path().join("dup-restore-a");
    duplicity(&["restore", &url(&sb), dup_a.to_str().unwrap()], &dir.path().join("dup-cache"), None);
    m.slot_b.unmount();

    // Which system is which must be said.
    let out = crossback(&cfg).args(["media", "adopt", &m.slot_a.device, &m.slot_b.device]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--root-backup SYSTEM --hidden-backup SYSTEM"), "{}", text(&out));
    ok(crossback(&cfg).args(["media", "adopt", &m.slot_a.device, &m.slot_b.device, "--root-backup", "alpha", "--hidden-backup", "beta"]));

    // ls lists every file; verify passes.
    let out = ok(crossback(&cfg).args(["ls", "alpha", "--generation", "0"]));
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    for p in [" /big.bin", " /docs/a.txt", " /docs/deep/er/b.txt", " /docs/link -> a.txt", " /docs/caf\\xe9.txt"] {
        assert!(listing.contains(p), "{p} missing: {listing}");
    }
    ok(crossback(&cfg).args(["verify", "--generation", "0"]));
    // restore --to gives what duplicity restore gives.
    let ours = dir.path().join("ours-a");
    ok(crossback(&cfg).args(["restore", "alpha", "--generation", "0", "--to"]).arg(&ours));
    let d: Vec<String> = compare::trees(&dup_a, &ours)
        .into_iter()
        // duplicity does not restore a symlink's time (it takes the restore's); crossback does.
        .filter(|d| !(d.starts_with("mtime differs at docs/link")))
        .collect();
    assert!(d.is_empty(), "{}", d.join("\n"));
    assert_eq!(std::fs::read(ours.join(std::ffi::OsStr::from_bytes(b"docs/caf\xe9.txt"))).unwrap(), b"latin-1\n", "a name that is not UTF-8");
    // browse shows it as duplicity restores it too.
    let at = dir.path().join("view");
    std::fs::create_dir(&at).unwrap();
    let b = common::Browsing::start(&mut crossback(&cfg), &["--system", "alpha"], &at);
    let d: Vec<String> = compare::trees(&dup_a, &at.join("gen-000000/alpha")).into_iter().filter(|d| !(d.starts_with("mtime differs at docs/link"))).collect();
    assert!(d.is_empty(), "browse: {}", d.join("\n"));
    let (code, out) = b.stop("INT");
    assert_eq!(code, Some(0), "{out}");
    let beta = dir.path().join("ours-b");
    ok(crossback(&cfg).args(["restore", "beta", "--generation", "0", "--to"]).arg(&beta).arg("/docs/a.txt"));
    assert_eq!(std::fs::read_to_string(beta.join("docs/a.txt")).unwrap(), "tree 2\n");

    // A flipped byte in a volume is found.
    m.slot_b.mount(&[]);
    let vol = std::fs::read_dir(&sb).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains(".vol2.")).unwrap();
    let mut bytes = std::fs::read(&vol).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&vol, &bytes).unwrap();
    m.slot_b.unmount();
    let out = crossback(&cfg).args(["verify", "--generation", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out).contains("volume 2") && text(&out).contains("damaged"), "{}", text(&out));
    m.slot_b.mount(&[]);
    bytes[mid] ^= 0xff;
    std::fs::write(&vol, &bytes).unwrap();
    m.slot_b.unmount();

    // One full crossback cycle: generation 1 goes to slot A, generation 2 to slot B,
    // which wipes the duplicity files and nothing else.
    let out = ok(crossback(&cfg).arg("backup"));
    assert!(text(&out).contains("generation 1 started in slot A"), "{}", text(&out));
    m.slot_b.mount(&[]);
    assert!(sb.join(".os_b_backups").exists(), "kept while generation 0 is the previous complete set");
    m.slot_b.unmount();
    let out = ok(crossback(&cfg).arg("backup"));
    assert!(text(&out).contains("removing the duplicity backup it adopted"), "{}", text(&out));
    m.slot_b.mount(&[]);
    let mut after: Vec<String> = std::fs::read_dir(&sb).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    after.sort();
    assert_eq!(after, ["crossback", "lost+found"]);
    m.slot_b.unmount();
    ok(crossback(&cfg).arg("verify"));
}

#[test]
fn root_adopt_encrypted_duplicity_backups_through_gpg() {
    if !require_root("root_adopt_encrypted_duplicity_backups_through_gpg") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    m.slot_a.mount(&[]);
    let sa = m.slot_a.path().to_path_buf();
    old_layout(&sa, dir.path(), (3, 4), Some("s3cret"));
    assert!(std::fs::read_dir(&sa).unwrap().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".difftar.gpg")));
    m.slot_a.unmount();
    // Without the passphrase: said what to do.
    let out = crossback(&cfg)
        .args(["media", "adopt", &m.slot_a.device, &m.slot_b.device, "--root-backup", "beta", "--hidden-backup", "alpha"])
        .env_remove("PASSPHRASE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is encrypted: set PASSPHRASE"), "{}", text(&out));
    // A wrong one: gpg says so.
    let out = crossback(&cfg)
        .args(["media", "adopt", &m.slot_a.device, &m.slot_b.device, "--root-backup", "beta", "--hidden-backup", "alpha"])
        .env("PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("wrong $PASSPHRASE"), "{}", text(&out));
    ok(crossback(&cfg)
        .args(["media", "adopt", &m.slot_a.device, &m.slot_b.device, "--root-backup", "beta", "--hidden-backup", "alpha"])
        .env("PASSPHRASE", "s3cret"));
    ok(crossback(&cfg).args(["verify", "--generation", "0"]));
    let out = ok(crossback(&cfg).args(["ls", "alpha", "--generation", "0", "/docs"]).env("PASSPHRASE", "s3cret"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(" /docs/deep/er/b.txt"), "{}", String::from_utf8_lossy(&out.stdout));
    let dest = dir.path().join("ours");
    ok(crossback(&cfg).args(["restore", "beta", "--generation", "0", "--to"]).arg(&dest).env("PASSPHRASE", "s3cret"));
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), tree::noise(3, 3 << 20));
    assert_eq!(std::fs::read_to_string(dest.join("docs/a.txt")).unwrap(), "tree 3\n");

    // The user keeps encryption: crossback's own from now on; the
    // duplicity generation stays readable until rotation replaces it.
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "n3w s3cret\n").unwrap();
    let cb = || {
        let mut c = crossback(&cfg);
        c.env("CROSSBACK_SCRYPT_WORK_FACTOR", "12").env_remove("CROSSBACK_PASSPHRASE_FILE").stdin(std::process::Stdio::null());
        c
    };
    ok(cb().arg("--passphrase-file").arg(&pass).args(["media", "encrypt"]));
    ok(cb().arg("backup"));
    ok(cb().args(["ls", "alpha", "--generation", "0", "/docs"]).env("PASSPHRASE", "s3cret"));
    ok(cb().arg("backup"));
    m.slot_a.mount(&["ro"]);
    let left: Vec<String> = std::fs::read_dir(m.slot_a.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!left.iter().any(|n| n.starts_with("duplicity-")), "the duplicity files went with rotation: {left:?}");
    assert!(m.slot_a.path().join("crossback/gen-000002/alpha/root.tar.zst.age").is_file());
    m.slot_a.unmount();
    let o = cb().arg("verify").output().unwrap();
    assert_eq!(common::kind(&o), "key", "{}", text(&o));
    ok(cb().arg("--passphrase-file").arg(&pass).arg("verify"));
}
