//! `crossback ls` and `restore` from real backups, on a machine of loop
//! devices. These tests need root.

mod common;
#[allow(unused_imports)]
use common::{crossback, err, ok, text};
use std::path::{Path, PathBuf};
use std::process::Command;

use crossback_testkit::machine::TestMachine;
use crossback_testkit::{compare, require_root, run, tree, LoopFs};

struct Setup {
    m: TestMachine,
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

/// alpha's /home gets the edge-case tree; then one full backup.
fn setup() -> Setup {
    let mut m = TestMachine::new();
    m.alpha_home.mount(&[]);
    tree::build(&m.alpha_home.path().join("edge"));
    tree::clear_flags(m.alpha_home.path());
    m.alpha_home.unmount();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    ok(crossback(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device]));
    ok(crossback(&cfg).arg("backup"));
    Setup { m, dir, cfg }
}

/// Differences between a filesystem and its restore, outside the given subtrees.
fn diffs(a: &Path, b: &Path, skip: &[&str]) -> Vec<String> {
    compare::trees(a, b)
        .into_iter()
        .filter(|d| {
            !d.contains("dev/socket") && !skip.iter().any(|s| d.contains(&format!(" {s}/")) || d.contains(&format!(" {s}:")) || d.ends_with(&format!(" {s}")))
        })
        .collect()
}

#[test]
fn root_ls_and_restore_files_and_whole_systems() {
    if !require_root("root_ls_and_restore_files_and_whole_systems") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    let out = ok(crossback(&s.cfg).args(["ls", "alpha", "/home/ann"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" /home/ann/notes.txt"), "{text}");
    let out = ok(crossback(&s.cfg).args(["ls", "alpha", "--json"]));
    let all = String::from_utf8_lossy(&out.stdout);
    for p in ["\"/\"", "\"/etc/fstab\"", "\"/home/ann/notes.txt\"", "\"/home/edge/files/sparse-9g\""] {
        assert!(all.contains(&format!("\"path\":{p}")), "{p} missing from ls");
    }
    // Devices that do not exist: refused by kind (usage, exit 2), before
    // anything is written, whether named by --disk or --device.
    let listing = common::slot_listing([&mut s.m.slot_a, &mut s.m.slot_b]);
    for args in [
        &["restore", "--bare-metal", "--disk", "/dev/crossback-no-such-disk", "--yes"][..],
        &["restore", "alpha", "--bare-metal", "--device", "/=/dev/crossback-no-such-part", "--yes"][..],
    ] {
        let out = crossback(&s.cfg).args(args).output().unwrap();
        assert_eq!((out.status.code(), common::kind(&out).as_str()), (Some(2), "usage"), "{args:?}: {}", common::text(&out));
        assert!(common::err(&out).contains("no such device"), "{}", common::text(&out));
    }
    assert_eq!(common::slot_listing([&mut s.m.slot_a, &mut s.m.slot_b]), listing);
    // One file.
    let one = s.dir.path().join("one");
    ok(crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&one).arg("/home/ann/notes.txt"));
    assert_eq!(std::fs::read_to_string(one.join("home/ann/notes.txt")).unwrap(), "alpha's home\n");
    assert!(!one.join("etc").exists());
    // Non-empty target refused.
    let out = crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&one).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    // Whole systems, compared with their filesystems.
    let whole = s.dir.path().join("alpha");
    ok(crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&whole));
    s.m.alpha_home.mount(&["ro"]);
    let d = diffs(s.m.alpha_home.path(), &whole.join("home"), &[]);
    assert!(d.is_empty(), "{}", d.join("\n"));
    s.m.alpha_home.unmount();
    s.m.alpha_root.mount(&["ro"]);
    let d = diffs(s.m.alpha_root.path(), &whole, &["home", "boot/efi", "lost+found"]);
    assert!(d.is_empty(), "{}", d.join("\n"));
    s.m.alpha_root.unmount();
    assert!(whole.join("boot/efi").is_dir());
    // What changed on the system since its backup.
    ok(crossback(&s.cfg).args(["verify", "--against-source", "--system", "beta"]));
    // With two generations, the system is compared with its
    // newest backup only, and the output says which.
    ok(crossback(&s.cfg).arg("backup"));
    let out = ok(crossback(&s.cfg).args(["verify", "--against-source", "--system", "beta"]));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("beta: compared with the system as it is now (generation 2)"), "{said}");
    assert!(said.contains("beta: not compared with the system (its newest backup is generation 2; --generation 1 compares this one)"), "{said}");
    assert_eq!(said.matches("same as the system").count(), 2, "beta's two filesystems, once: {said}");
    // A system that cannot be compared (its root is mounted read-write: it
    // is in use) is not reported as the same: exit 3, "NOT COMPARED".
    s.m.alpha_root.mount(&[]);
    let out = crossback(&s.cfg).args(["verify", "--against-source", "--system", "alpha"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", common::text(&out));
    assert!(common::text(&out).contains("NOT COMPARED") && common::text(&out).contains("0 differ from their system"), "{}", common::text(&out));
    s.m.alpha_root.unmount();
    // Its /home mounted read-write here (as a running system has the shared
    // ESP) is compared through a read-only view of that mount, and what
    // changed is seen; the device is not set read-only under the writer.
    s.m.alpha_home.mount(&[]);
    std::fs::write(s.m.alpha_home.path().join("ann/notes.txt"), "changed\n").unwrap();
    let out = crossback(&s.cfg).args(["verify", "--against-source", "--system", "alpha"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", common::text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/home/ann/notes.txt: size differs"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(common::text(&out).contains("read-only view of that mount"), "{}", common::text(&out));
    std::fs::write(s.m.alpha_home.path().join("ann/after.txt"), "still writable\n").unwrap();
    s.m.alpha_home.unmount();
    let beta = s.dir.path().join("beta");
    ok(crossback(&s.cfg).args(["restore", "beta", "--to"]).arg(&beta));
    assert_eq!(std::fs::read_to_string(beta.join("home/bob.txt")).unwrap(), "beta's home\n");
    assert!(beta.join("etc/fstab").exists() && !beta.join("@").exists());
}

#[test]
fn root_bare_metal_restore_recreates_the_filesystems() {
    if !require_root("root_bare_metal_restore_recreates_the_filesystems") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    let reference = s.dir.path().join("reference");
    ok(crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&reference));
    let ids: Vec<(String, String)> = [&s.m.alpha_root, &s.m.alpha_home, &s.m.alpha_efi].iter().map(|f| (f.uuid(), f.label())).collect();
    // The mount point directories on the root filesystem, under the mounts.
    let mount_points = |root: &mut LoopFs| -> Vec<(String, i64, i64, u32)> {
        use std::os::unix::fs::MetadataExt;
        root.mount(&["ro"]);
        let v = ["home", "boot/efi"]
            .iter()
            .map(|d| std::fs::metadata(root.path().join(d)).unwrap())
            .map(|m| (format!("{:o}", m.mode()), m.mtime(), m.mtime_nsec(), m.uid()))
            .collect();
        root.unmount();
        v
    };
    let before = mount_points(&mut s.m.alpha_root);
    // The disk "fails": every filesystem of alpha is gone.
    for f in [&s.m.alpha_root, &s.m.alpha_home, &s.m.alpha_efi] {
        run(Command::new("wipefs").args(["-a", "-q"]).arg(&f.device));
    }
    let out = crossback(&s.cfg).args(["restore", "alpha", "--bare-metal"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "asks first");
    let out = ok(crossback(&s.cfg).args([
        "restore",
        "alpha",
        "--bare-metal",
        "--yes",
        "--device",
        &format!("/={}", s.m.alpha_root.device),
        "--device",
        &format!("/home={}", s.m.alpha_home.device),
        "--device",
        &format!("/boot/efi={}", s.m.alpha_efi.device),
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("crossback chroot alpha"), "{}", String::from_utf8_lossy(&out.stdout));
    let now: Vec<(String, String)> = [&s.m.alpha_root, &s.m.alpha_home, &s.m.alpha_efi].iter().map(|f| (f.uuid(), f.label())).collect();
    assert_eq!(ids, now, "same UUIDs and labels");
    assert_eq!(mount_points(&mut s.m.alpha_root), before, "mount point directories keep their recorded mode and times");
    s.m.alpha_home.mount(&["ro"]);
    let d = diffs(&reference.join("home"), s.m.alpha_home.path(), &[]);
    assert!(d.is_empty(), "{}", d.join("\n"));
    s.m.alpha_home.unmount();
    // The restored system works at once: chroot into it.
    let out = ok(crossback(&s.cfg).args(["chroot", "alpha", "--", "cat", "/home/ann/notes.txt"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alpha's home\n");

    // Onto new filesystems with new UUIDs: fstab follows.
    let new_root = LoopFs::new("ext4", 64);
    let new_home = LoopFs::new("ext4", 128);
    let new_efi = LoopFs::with_mkfs_args("vfat", 64, &["-i", &crossback_testkit::random_vfat_id()]);
    let mut fresh = [new_root, new_home, new_efi];
    for f in fresh.iter_mut() {
        f.unmount();
    }
    let out = ok(crossback(&s.cfg).args([
        "restore",
        "alpha",
        "--bare-metal",
        "--yes",
        "--new-uuids",
        "--device",
        &format!("/={}", fresh[0].device),
        "--device",
        &format!("/home={}", fresh[1].device),
        "--device",
        &format!("/boot/efi={}", fresh[2].device),
    ]));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("rewrote etc/fstab"), "{said}");
    fresh[0].mount(&["ro"]);
    let fstab = std::fs::read_to_string(fresh[0].path().join("etc/fstab")).unwrap();
    fresh[0].unmount();
    assert!(fstab.contains(&fresh[1].uuid()) && !fstab.contains(&ids[1].0), "{fstab}");
    assert!(fstab.contains(&fresh[0].uuid()), "{fstab}");
}

#[test]
fn root_a_damaged_archive_in_a_slot_is_named_and_the_rest_restores() {
    if !require_root("root_a_damaged_archive_in_a_slot_is_named_and_the_rest_restores") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    // Flip bytes in the middle of alpha's /home archive, on the slot itself.
    s.m.slot_a.mount(&[]);
    let file = s.m.slot_a.path().join("crossback/gen-000001/alpha/home.tar.zst");
    let len = std::fs::metadata(&file).unwrap().len();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&file).unwrap();
        let mut b = [0u8; 64];
        f.read_exact_at(&mut b, len / 3).unwrap();
        for x in b.iter_mut() {
            *x ^= 0xa5;
        }
        f.write_all_at(&b, len / 3).unwrap();
    }
    s.m.slot_a.unmount();
    let out = crossback(&s.cfg).arg("verify").output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("alpha /home      DAMAGED") && said.contains("alpha /          ok"), "{said}");
    let dest = s.dir.path().join("after-damage");
    let out = crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&dest).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged in the backup"));
    assert!(dest.join("etc/fstab").exists(), "the undamaged root archive is restored");
}

#[test]
fn root_bare_metal_round_trip_of_both_systems_onto_smaller_devices() {
    if !require_root("root_bare_metal_round_trip_of_both_systems_onto_smaller_devices") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    // A bootloader file that names alpha's root UUID: reported after --new-uuids.
    s.m.alpha_root.mount(&[]);
    std::fs::create_dir_all(s.m.alpha_root.path().join("boot/grub")).unwrap();
    std::fs::write(s.m.alpha_root.path().join("boot/grub/grub.cfg"), format!("linux /vmlinuz root=UUID={}\n", s.m.alpha_root.uuid())).unwrap();
    s.m.alpha_root.unmount();
    s.m.alpha_home.mount(&[]);
    std::fs::write(s.m.alpha_home.path().join("ann/big"), tree::noise(3, 12 << 20)).unwrap();
    s.m.alpha_home.unmount();
    // beta swaps on a partition of its own, with a label.
    let swap = LoopFs::with_mkfs_args("swap", 16, &["-L", "beta-swap"]);
    s.m.beta.mount(&[]);
    let fstab = s.m.beta.path().join("@/etc/fstab");
    let t = std::fs::read_to_string(&fstab).unwrap() + &format!("UUID={} none swap sw 0 0\n", swap.uuid());
    std::fs::write(&fstab, t).unwrap();
    s.m.beta.unmount();
    ok(crossback(&s.cfg).args(["backup", "--new-generation"]));
    // Copies of every filesystem as backed up, to compare with.
    let copy = s.dir.path().join("copy");
    ok(crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(copy.join("alpha")));
    ok(crossback(&s.cfg).args(["restore", "beta", "--to"]).arg(copy.join("beta")));
    let ids = |fs: &[&LoopFs]| -> Vec<(String, String)> { fs.iter().map(|f| (f.uuid(), f.label())).collect() };
    let before = ids(&[&s.m.alpha_root, &s.m.alpha_home, &s.m.beta, &swap]);
    for f in [&s.m.alpha_root, &s.m.alpha_home, &s.m.beta, &swap] {
        run(Command::new("wipefs").args(["-a", "-q"]).arg(&f.device));
    }
    // Wiped: their UUIDs are gone, so the devices are named.
    ok(crossback(&s.cfg).args([
        "restore",
        "alpha",
        "--bare-metal",
        "--yes",
        "--device",
        &format!("/={}", s.m.alpha_root.device),
        "--device",
        &format!("/home={}", s.m.alpha_home.device),
    ]));
    ok(crossback(&s.cfg).args([
        "restore",
        "beta",
        "--bare-metal",
        "--yes",
        "--device",
        &format!("/={}", s.m.beta.device),
        "--device",
        &format!("/home={}", s.m.beta.device),
        "--device",
        &format!("swap={}", swap.device),
    ]));
    assert_eq!(before, ids(&[&s.m.alpha_root, &s.m.alpha_home, &s.m.beta, &swap]), "recorded UUIDs and labels (swap too)");
    assert_eq!(run(Command::new("blkid").args(["-p", "-s", "TYPE", "-o", "value"]).arg(&swap.device)).trim(), "swap");
    s.m.alpha_home.mount(&["ro"]);
    let d = diffs(&copy.join("alpha/home"), s.m.alpha_home.path(), &[]);
    assert!(d.is_empty(), "{}", d.join("\n"));
    s.m.alpha_home.unmount();
    // beta: a btrfs with subvolumes @ and @home again, its fstab resolving.
    let out = ok(crossback(&s.cfg).args(["chroot", "beta", "--read-only", "--", "cat", "/home/bob.txt", "/etc/fstab"]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("beta's home\n"));
    s.m.beta.mount(&["ro"]);
    let d = diffs(&copy.join("beta/home"), &s.m.beta.path().join("@home"), &[]);
    assert!(d.is_empty(), "{}", d.join("\n"));
    s.m.beta.unmount();

    // Smaller devices are fine while the data fits; too small is refused with the sizes.
    let small_root = LoopFs::new("ext4", 40);
    let tiny_home = LoopFs::new("ext4", 8);
    let mut fresh = [small_root, tiny_home];
    for f in fresh.iter_mut() {
        f.unmount();
    }
    let out = crossback(&s.cfg)
        .args([
            "restore",
            "alpha",
            "--bare-metal",
            "--yes",
            "--new-uuids",
            "--device",
            &format!("/={}", fresh[0].device),
            "--device",
            &format!("/home={}", fresh[1].device),
            "--device",
            &format!("/boot/efi={}", s.m.alpha_efi.device),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("is too small for /home") && e.contains("needed") && e.contains("available"), "{e}");
    let bigger_home = LoopFs::new("ext4", 48);
    let mut bigger_home = bigger_home;
    bigger_home.unmount();
    let out = ok(crossback(&s.cfg).args([
        "restore",
        "alpha",
        "--bare-metal",
        "--yes",
        "--new-uuids",
        "--device",
        &format!("/={}", fresh[0].device),
        "--device",
        &format!("/home={}", bigger_home.device),
        "--device",
        &format!("/boot/efi={}", s.m.alpha_efi.device),
    ]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("still name an old UUID") && said.contains("/boot/grub/grub.cfg"), "{said}");
}

#[test]
fn root_a_hostile_archive_in_a_slot_cannot_write_outside_the_target() {
    if !require_root("root_a_hostile_archive_in_a_slot_cannot_write_outside_the_target") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    let outside = s.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // Replace alpha's root archive with a tar that tries to escape.
    let mut t = Vec::new();
    let out_str = outside.to_str().unwrap().as_bytes().to_vec();
    crossback_testkit::member(&mut t, b"link", b'2', &out_str, b"");
    crossback_testkit::member(&mut t, b"link/planted", b'0', b"", b"pwned");
    crossback_testkit::member(&mut t, b"../../escaped", b'0', b"", b"x");
    crossback_testkit::member(&mut t, b"hard", b'1', &[out_str.as_slice(), b"/x"].concat(), b"");
    t.extend_from_slice(&[0u8; 1024]);
    let tar = s.dir.path().join("evil.tar");
    std::fs::write(&tar, &t).unwrap();
    s.m.slot_a.mount(&[]);
    let target = s.m.slot_a.path().join("crossback/gen-000001/alpha/root.tar.zst");
    run(Command::new("zstd").arg("-q").arg("-f").arg(&tar).arg("-o").arg(&target));
    s.m.slot_a.unmount();
    let dest = s.dir.path().join("restored");
    let out = crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&dest).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "nothing written outside: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!s.dir.path().join("escaped").exists() && !Path::new("/escaped").exists());
}

#[test]
fn root_an_xfs_system_is_recreated_with_its_identity() {
    if !require_root("root_an_xfs_system_is_recreated_with_its_identity") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut root = LoopFs::with_mkfs_args("xfs", 320, &["-L", "gamma-root"]);
    let fstab = format!("UUID={} / xfs defaults 0 1\n", root.uuid());
    crossback_testkit::machine::make_root(root.path(), "gamma", "Gamma on XFS", &fstab);
    std::fs::write(root.path().join("etc/motd"), "welcome to gamma\n").unwrap();
    root.unmount();
    let mut slots = [LoopFs::new("ext4", 128), LoopFs::new("ext4", 128)];
    for s in slots.iter_mut() {
        s.unmount();
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &format!("{},{},{}", root.device, slots[0].device, slots[1].device)]));
    ok(crossback(&cfg).args(["media", "prepare", &slots[0].device, &slots[1].device]));
    ok(crossback(&cfg).arg("backup"));
    let id = (root.uuid(), root.label());
    run(Command::new("wipefs").args(["-a", "-q"]).arg(&root.device));
    ok(crossback(&cfg).args(["restore", "gamma", "--bare-metal", "--yes", "--device", &format!("/={}", root.device)]));
    assert_eq!(id, (root.uuid(), root.label()));
    assert_eq!(run(Command::new("blkid").args(["-p", "-s", "TYPE", "-o", "value"]).arg(&root.device)).trim(), "xfs");
    root.mount(&["ro"]);
    assert_eq!(std::fs::read_to_string(root.path().join("etc/motd")).unwrap(), "welcome to gamma\n");
}

/// The rescue path as the slot's README gives it — the user
/// mounts the slot (read-write, as `mount` or an automounter does) and runs
/// crossback — reads the backups through that mount: ls, a single-file
/// restore and verify work, and nothing on the slot changes; a backup still
/// refuses a slot mounted elsewhere, saying why.
#[test]
fn root_a_slot_the_user_mounted_is_read_as_it_is() {
    if !require_root("root_a_slot_the_user_mounted_is_read_as_it_is") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    s.m.slot_a.mount(&[]);
    let before = run(Command::new("find").arg(s.m.slot_a.path()).arg("-printf").arg("%P %s %T@\n"));
    let out = ok(crossback(&s.cfg).args(["ls", "alpha", "/home"]));
    assert!(text(&out).contains("edge"), "{}", text(&out));
    let to = s.dir.path().join("to");
    ok(crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&to).arg("/etc/fstab"));
    assert!(to.join("etc/fstab").is_file());
    ok(crossback(&s.cfg).arg("verify"));
    let o = crossback(&s.cfg).arg("backup").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(run(Command::new("find").arg(s.m.slot_a.path()).arg("-printf").arg("%P %s %T@\n")), before, "nothing on the mounted slot changed");
    assert!(err(&o).contains("error[slot-mounted-read-write]"), "{}", err(&o));
    s.m.slot_a.unmount();
}
