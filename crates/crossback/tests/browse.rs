//! `crossback browse`: every backup as a read-only filesystem, compared
//! with its source by the project's comparator; permissions as on the
//! original system for other users; damage is an I/O error for the files
//! it hits and no other; Ctrl-C and `umount` end it and leave nothing
//! mounted. These tests need root.

mod common;
use common::{crossback, kind, mounted, ok, text, Browsing};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crossback_testkit::machine::TestMachine;
use crossback_testkit::{compare, require_root, run, tree};

/// Runs `sh -c SCRIPT` as user `uid` (no supplementary groups); its exit code and output.
fn as_user(uid: u32, script: &str) -> (i32, String) {
    let o = Command::new("setpriv").args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups", "sh", "-c", script]).output().unwrap();
    (o.status.code().unwrap_or(-1), text(&o))
}

fn differences(a: &Path, b: &Path) -> Vec<String> {
    compare::trees(a, b).into_iter().filter(|d| !d.contains("socket")).collect()
}

/// The machine with files only their owners may read, backed up twice.
fn backed_up(encrypt: Option<&Path>) -> (TestMachine, tempfile::TempDir, PathBuf) {
    let mut m = TestMachine::new();
    m.alpha_home.mount(&[]);
    tree::build(&m.alpha_home.path().join("edge"));
    tree::clear_flags(m.alpha_home.path());
    let ann = m.alpha_home.path().join("ann");
    std::fs::write(ann.join("secret"), "ann's only\n").unwrap();
    std::fs::set_permissions(ann.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(ann.join("public"), "anyone's\n").unwrap();
    // Incompressible bulk: the archive of /home has several frames.
    for i in 0..4 {
        std::fs::write(ann.join(format!("bulk{i}")), tree::noise(i, 5 << 20)).unwrap();
    }
    run(Command::new("chown").args(["-R", "1000:1000"]).arg(&ann));
    m.alpha_home.unmount();
    m.alpha_root.mount(&[]);
    std::fs::write(m.alpha_root.path().join("etc/shadow"), "root:$y$hash:19000:0:99999:7:::\n").unwrap();
    std::fs::set_permissions(m.alpha_root.path().join("etc/shadow"), std::fs::Permissions::from_mode(0o640)).unwrap();
    m.alpha_root.unmount();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    match encrypt {
        None => ok(crossback(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device])),
        Some(pass) => ok(crossback(&cfg).arg("--passphrase-file").arg(pass).env("CROSSBACK_SCRYPT_WORK_FACTOR", "12").args([
            "media",
            "prepare",
            &m.slot_a.device,
            &m.slot_b.device,
            "--encrypt",
        ])),
    };
    ok(crossback(&cfg).arg("backup"));
    ok(crossback(&cfg).arg("backup"));
    (m, dir, cfg)
}

/// The mounted backups equal their sources (alpha's two filesystems at
/// their mount points, beta's btrfs subvolumes).
fn shows_the_sources(m: &mut TestMachine, at: &Path) {
    assert_eq!(std::fs::read_link(at.join("latest/alpha")).unwrap(), Path::new("../gen-000002/alpha"));
    for g in ["gen-000001", "gen-000002"] {
        assert!(at.join(g).join("alpha/etc/fstab").is_file() && at.join(g).join("beta/etc/fstab").is_file(), "{g}");
    }
    m.alpha_home.mount(&["ro"]);
    let d = differences(m.alpha_home.path(), &at.join("latest/alpha/home"));
    // treediff.py cannot walk past PATH_MAX: the edge tree's deep part is left to ours.
    let independent: Vec<_> = ["ann", "edge/files", "edge/symlinks", "edge/xattrs", "edge/dev", "edge/locked", "edge/flags"]
        .iter()
        .filter_map(|sub| treediff(&m.alpha_home.path().join(sub), &at.join("latest/alpha/home").join(sub)).map(|r| (sub, r)))
        .collect();
    m.alpha_home.unmount();
    assert!(d.is_empty(), "alpha's /home: {}", d.join("\n"));
    for (sub, (code, out)) in independent {
        assert_eq!(code, 0, "treediff.py, alpha's /home/{sub}: {out}");
    }
    m.alpha_root.mount(&["ro"]);
    let d = differences(&m.alpha_root.path().join("etc"), &at.join("gen-000001/alpha/etc"));
    m.alpha_root.unmount();
    assert!(d.is_empty(), "alpha's /etc: {}", d.join("\n"));
    m.beta.mount(&["ro"]);
    let d = differences(&m.beta.path().join("@home"), &at.join("latest/beta/home"));
    m.beta.unmount();
    assert!(d.is_empty(), "beta's /home: {}", d.join("\n"));
}

/// The independent comparator (`../shared/bench/treediff.py`, or under
/// `$CROSSBACK_SHARED`) where it is: (exit code, output); `None` when it
/// is not there (said).
fn treediff(a: &Path, b: &Path) -> Option<(i32, String)> {
    let shared = std::env::var_os("CROSSBACK_SHARED").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let script = shared.join("bench/treediff.py");
    if !script.is_file() {
        eprintln!("note: {} not found: the independent comparison is not made", script.display());
        return None;
    }
    let o = Command::new("python3").arg(&script).arg(a).arg(b).args(["--ignore-atime", "--ignore-sockets"]).output().unwrap();
    Some((o.status.code().unwrap_or(-1), text(&o)))
}

#[test]
fn root_every_backup_is_a_read_only_filesystem_with_the_original_permissions() {
    if !require_root("root_every_backup_is_a_read_only_filesystem_with_the_original_permissions") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let (mut m, dir, cfg) = backed_up(None);
    let at = dir.path().join("backups");
    std::fs::create_dir(&at).unwrap();

    // Refused before anything is mounted, each by its kind: a mount point
    // that is missing, a file, or not empty (what is in it stays), and a
    // system with no backup.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "kept\n").unwrap();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("mine"), "kept\n").unwrap();
    for (what, target, opts, code, want) in [
        ("a missing directory", dir.path().join("nowhere"), vec![], 2, "usage"),
        ("a file", file.clone(), vec![], 2, "usage"),
        ("a directory that is not empty", full.clone(), vec![], 1, "target-not-empty"),
        ("an unknown system", at.clone(), vec!["--system", "gamma"], 1, "no-backup"),
    ] {
        let o = crossback(&cfg).arg("browse").args(&opts).arg(&target).stdin(Stdio::null()).output().unwrap();
        assert_eq!((o.status.code(), kind(&o).as_str()), (Some(code), want), "{what}: {}", text(&o));
        assert!(!mounted(&target), "{what}: mounted");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept\n");
    assert_eq!(std::fs::read_to_string(full.join("mine")).unwrap(), "kept\n");
    assert!(!dir.path().join("nowhere").exists());

    // Root only, by default: another user cannot even look.
    let b = Browsing::start(&mut crossback(&cfg), &[], &at);
    shows_the_sources(&mut m, &at);
    let (code, out) = as_user(1000, &format!("cat '{}'", at.join("latest/alpha/home/ann/public").display()));
    assert_ne!(code, 0, "a user read through a root-only mount: {out}");
    // Nothing can be written, by root neither.
    let e = std::fs::write(at.join("latest/alpha/home/ann/new"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert!(std::fs::remove_file(at.join("latest/alpha/home/ann/public")).is_err());
    // Ctrl-C ends it: unmounted, the slots' devices writable again.
    let (code, out) = b.stop("INT");
    assert_eq!(code, Some(0), "{out}");
    assert!(!mounted(&at), "still mounted after Ctrl-C");
    for slot in [&m.slot_a, &m.slot_b] {
        assert_eq!(run(Command::new("blockdev").arg("--getro").arg(&slot.device)).trim(), "0", "{} left read-only", slot.device);
    }

    // --allow-other: each user as the files' owners and modes allow.
    let mut b = Browsing::start(&mut crossback(&cfg), &["--allow-other", "--system", "alpha"], &at);
    let home = at.join("latest/alpha/home/ann");
    assert_eq!(as_user(1000, &format!("cat '{}'", home.join("secret").display())), (0, "ann's only\n".into()));
    let (code, out) = as_user(1001, &format!("cat '{}'", home.join("secret").display()));
    assert!(code != 0 && out.contains("Permission denied"), "another user read ann's secret: {out}");
    assert_eq!(as_user(1001, &format!("cat '{}'", home.join("public").display())), (0, "anyone's\n".into()));
    let (code, out) = as_user(1000, &format!("cat '{}'", at.join("latest/alpha/etc/shadow").display()));
    assert!(code != 0 && out.contains("Permission denied"), "a user read /etc/shadow: {out}");
    assert!(!at.join("latest/beta").exists(), "--system alpha shows only alpha");
    // `umount` by the user ends it too.
    run(Command::new("umount").arg(&at));
    let (code, out) = b.wait();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("unmounted"), "{out}");

    // The backup disk unplugged (its device node gone, as udev removes it):
    // browse unmounts and ends with exit 3, saying why.
    let mut b = Browsing::start(&mut crossback(&cfg), &[], &at);
    let away = format!("{}.unplugged", m.slot_a.device);
    std::fs::rename(&m.slot_a.device, &away).unwrap();
    // The node comes back even when the wait fails: later steps and the
    // teardown need it.
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.wait()));
    std::fs::rename(&away, &m.slot_a.device).unwrap();
    let ended = ended.unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert_eq!(ended.0, Some(3), "{}", ended.1);
    assert!(ended.1.contains("the backup disk is gone"), "{}", ended.1);
    assert!(!mounted(&at));

    // Slot A failing under a live mount (its device shrunk to 1 MiB: every
    // read past that fails): its files give EIO, nothing hangs, slot B's
    // generation still reads, and Ctrl-C still ends it.
    let b = Browsing::start(&mut crossback(&cfg), &[], &at);
    assert!(at.join("gen-000001/alpha/home/ann").is_dir() && at.join("gen-000002/alpha/home/ann").is_dir());
    std::fs::OpenOptions::new().write(true).open(&m.slot_a.image).unwrap().set_len(1 << 20).unwrap();
    run(Command::new("losetup").arg("-c").arg(&m.slot_a.device));
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let read = |p: PathBuf| Command::new("timeout").arg("30").arg("cat").arg(p).stdout(Stdio::null()).stderr(Stdio::piped()).output().unwrap();
    let failed = read(at.join("gen-000001/alpha/home/ann/bulk3"));
    assert_eq!(failed.status.code(), Some(1), "not an error, or it hung (124): {}", text(&failed));
    assert!(text(&failed).contains("Input/output error"), "{}", text(&failed));
    let fine = read(at.join("gen-000002/alpha/home/ann/bulk3"));
    assert!(fine.status.success(), "slot B's generation: {}", text(&fine));
    let (code, out) = b.stop("INT");
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn root_an_encrypted_media_is_browsed_with_its_passphrase_and_damage_costs_only_the_files_in_it() {
    if !require_root("root_an_encrypted_media_is_browsed_with_its_passphrase_and_damage_costs_only_the_files_in_it") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let pass_dir = tempfile::tempdir().unwrap();
    let pass = pass_dir.path().join("pass");
    std::fs::write(&pass, "browse me\n").unwrap();
    let (mut m, dir, cfg) = backed_up(Some(&pass));
    let at = dir.path().join("backups");
    std::fs::create_dir(&at).unwrap();
    // Without the passphrase: refused, nothing mounted.
    let o = crossback(&cfg).stdin(Stdio::null()).args(["browse"]).arg(&at).output().unwrap();
    assert_eq!((o.status.code(), kind(&o).as_str()), (Some(1), "key"), "{}", text(&o));
    assert!(!mounted(&at));
    let b = Browsing::start(crossback(&cfg).arg("--passphrase-file").arg(&pass), &[], &at);
    shows_the_sources(&mut m, &at);
    let (code, out) = b.stop("TERM");
    assert_eq!(code, Some(0), "{out}");

    // A frame in the middle of alpha's /home archive of generation 1 damaged.
    m.slot_a.mount(&[]);
    let archive = m.slot_a.path().join("crossback/gen-000001/alpha/home.tar.zst.age");
    let len = std::fs::metadata(&archive).unwrap().len();
    let mut bytes = std::fs::read(&archive).unwrap();
    // age's payload is in chunks of 64 KiB: one changed byte fails its chunk.
    let at_byte = (len / 2) as usize;
    bytes[at_byte] ^= 0xff;
    std::fs::write(&archive, &bytes).unwrap();
    m.slot_a.unmount();
    let b = Browsing::start(crossback(&cfg).arg("--passphrase-file").arg(&pass), &[], &at);
    let g1 = at.join("gen-000001/alpha/home");
    m.alpha_home.mount(&["ro"]);
    let (mut good, mut bad) = (0, 0);
    for e in walk(m.alpha_home.path()) {
        let rel = e.strip_prefix(m.alpha_home.path()).unwrap();
        if !std::fs::symlink_metadata(&e).is_ok_and(|m| m.is_file()) {
            continue;
        }
        match std::fs::read(g1.join(rel)) {
            Ok(got) => {
                assert_eq!(got, std::fs::read(&e).unwrap(), "{} reads wrong bytes", rel.display());
                good += 1;
            }
            Err(err) => {
                assert_eq!(err.raw_os_error(), Some(libc::EIO), "{}: {err}", rel.display());
                bad += 1;
            }
        }
    }
    m.alpha_home.unmount();
    assert!(bad > 0, "no file was hit by the damage");
    assert!(good > 0, "the damage cost every file");
    // Generation 2 is whole.
    m.alpha_home.mount(&["ro"]);
    let d = differences(m.alpha_home.path(), &at.join("gen-000002/alpha/home"));
    m.alpha_home.unmount();
    assert!(d.is_empty(), "{}", d.join("\n"));
    let (code, out) = b.stop("INT");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("gen-000001/alpha/home/"), "the damaged files are named: {out}");
}

/// Every path under `root` that a path can name (the edge tree goes past PATH_MAX).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(list) = std::fs::read_dir(&d) else { continue };
        for e in list.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
            if meta.is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
