//! Offline access: read-only views, chroot, mount/umount and the offline
//! refusals, on a machine of loop devices. These tests need root.

mod common;
#[allow(unused_imports)]
use common::{crossback, err, ok, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crossback_testkit::machine::TestMachine;
use crossback_testkit::{require_root, run};

/// The machine and a configuration for it, written by `crossback init`.
fn setup() -> (TestMachine, tempfile::TempDir, PathBuf) {
    let m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    (m, dir, cfg)
}

fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path)).split_whitespace().next().unwrap().to_string()
}

fn ro_flag(dev: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/block/{}/ro", Path::new(dev).file_name().unwrap().to_str().unwrap())).unwrap().trim().to_string()
}

/// Is the device mounted in any mount namespace of the machine?
fn mounted_anywhere(dev: &str) -> bool {
    let devno = std::fs::read_to_string(format!("/sys/class/block/{}/dev", Path::new(dev).file_name().unwrap().to_str().unwrap())).unwrap().trim().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_to_string(e.path().join("mountinfo")).is_ok_and(|t| t.lines().any(|l| l.split(' ').nth(2) == Some(devno.as_str()))))
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn root_chroot_runs_the_command_returns_its_code_and_leaves_nothing_mounted() {
    if !require_root("root_chroot_runs_the_command_returns_its_code_and_leaves_nothing_mounted") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let (mut m, _dir, cfg) = setup();
    let out = crossback(&cfg).args(["chroot", "alpha", "--", "sh", "-c", "exit 7"]).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", err(&out));
    // /proc of its own PID namespace, /dev/null, /dev/pts; a file written lands on alpha's root.
    let script = "test \"$$\" = 1 && test -r /proc/self/status && echo x > /dev/null && test -d /dev/pts && test -c /dev/pts/ptmx && ls /home/ann/notes.txt && touch /boot/efi/CHROOT.TXT && echo made > /made-in-chroot && cat /etc/resolv.conf > /resolv-seen";
    ok(crossback(&cfg).args(["chroot", "alpha", "--", "sh", "-c", script]));
    for d in m.devices() {
        assert!(!mounted_anywhere(&d.display().to_string()), "{} still mounted somewhere", d.display());
    }
    m.alpha_root.mount(&[]);
    assert_eq!(std::fs::read_to_string(m.alpha_root.path().join("made-in-chroot")).unwrap(), "made\n");
    // The machine's resolv.conf was bound in (and the bind is gone: alpha's own file is empty).
    assert_eq!(std::fs::read_to_string(m.alpha_root.path().join("resolv-seen")).unwrap(), std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    assert_eq!(std::fs::read_to_string(m.alpha_root.path().join("etc/resolv.conf")).unwrap(), "");
    m.alpha_root.unmount();
    // beta: btrfs subvolumes @ and @home as its fstab says; its resolv.conf is
    // systemd-resolved's absolute symlink into /run, which must not be followed out.
    m.beta.mount(&[]);
    std::os::unix::fs::symlink("/run/systemd/resolve/stub-resolv.conf", m.beta.path().join("@/etc/resolv.conf")).unwrap();
    m.beta.unmount();
    let stub = Path::new("/run/systemd/resolve");
    let stub_before = stub.exists();
    let out = ok(crossback(&cfg).args(["chroot", "beta", "--", "cat", "/home/bob.txt", "/etc/resolv.conf"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("beta's home\n{}", std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()));
    assert_eq!(stub.exists(), stub_before, "the machine's own /run was not touched");
}

#[test]
fn root_read_only_views_change_no_byte() {
    if !require_root("root_read_only_views_change_no_byte") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let (m, _dir, cfg) = setup();
    let images = [&m.alpha_root.image, &m.alpha_home.image, &m.alpha_efi.image, &m.beta.image];
    let before: Vec<String> = images.iter().map(|i| sha256(i)).collect();
    // The private read-only view (devices set read-only while it lives): read everything.
    let out = ok(crossback(&cfg).args([
        "chroot",
        "alpha",
        "--read-only",
        "--",
        "sh",
        "-c",
        "find / -xdev -type f -exec cat {} + >/dev/null; find /home /boot -type f -exec cat {} + | sha256sum",
    ]));
    assert!(!String::from_utf8_lossy(&out.stdout).is_empty());
    ok(crossback(&cfg).args(["chroot", "beta", "--read-only", "--", "sh", "-c", "find / -xdev -type f -exec cat {} + >/dev/null"]));
    // The persistent read-only mount, read from the machine's namespace.
    let at = tempfile::tempdir().unwrap();
    ok(crossback(&cfg).args(["mount", "alpha", "--at"]).arg(at.path()));
    run(Command::new("sh").arg("-c").arg(format!("find '{}' -type f -exec cat {{}} + >/dev/null", at.path().display())));
    ok(crossback(&cfg).args(["umount", "alpha"]));
    let after: Vec<String> = images.iter().map(|i| sha256(i)).collect();
    assert_eq!(before, after, "a read-only view changed an image");
    for d in m.devices() {
        assert_eq!(ro_flag(&d.display().to_string()), "0", "{} left read-only", d.display());
    }
}

#[test]
fn root_kill_9_leaves_no_mounts_and_the_devices_writable() {
    if !require_root("root_kill_9_leaves_no_mounts_and_the_devices_writable") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let (m, _dir, cfg) = setup();
    for read_only in [true, false] {
        let mut cmd = crossback(&cfg);
        cmd.args(["chroot", "alpha"]);
        if read_only {
            cmd.arg("--read-only");
        }
        let mut child = cmd.args(["--", "sleep", "1000"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let root = m.alpha_root.device.clone();
        wait_for("alpha's root to be mounted", || mounted_anywhere(&root));
        if read_only {
            wait_for("alpha's root to be set read-only", || ro_flag(&root) == "1");
        }
        std::thread::sleep(Duration::from_millis(300));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for d in m.devices() {
            let d = d.display().to_string();
            wait_for(&format!("{d} to be unmounted everywhere"), || !mounted_anywhere(&d));
            wait_for(&format!("{d} to be writable again"), || ro_flag(&d) == "0");
        }
        // The command inside died with it.
        let sleepers = run(Command::new("sh").arg("-c").arg("ps -eo args | grep -c '^sleep 1000$' || true"));
        assert_eq!(sleepers.trim(), "0", "the chrooted command outlived crossback");
    }
}

#[test]
fn root_offline_refusals() {
    if !require_root("root_offline_refusals") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let (mut m, dir, cfg) = setup();

    // Mounted read-write elsewhere.
    m.alpha_home.mount(&[]);
    let out = crossback(&cfg).args(["mount", "alpha"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("/home") && err(&out).contains("is mounted read-write at"), "{}", err(&out));

    // Mounted read-only elsewhere: reading is fine, a read-write chroot is not.
    m.alpha_home.unmount();
    m.alpha_home.mount(&["ro"]);
    let out = crossback(&cfg).args(["chroot", "alpha", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("cannot be mounted read-write while it is"), "{}", err(&out));
    m.alpha_home.unmount();
    m.alpha_home.mount(&[]);

    // A journal that needs recovery: the image copied while mounted.
    std::fs::write(m.alpha_home.path().join("ann/new.txt"), "written while mounted\n").unwrap();
    run(&mut Command::new("sync"));
    m.alpha_home.replace_with_copy_taken_while_mounted();
    let out = crossback(&cfg).args(["chroot", "alpha", "--read-only", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("journal needs recovery"), "{}", err(&out));
    let before = sha256(&m.alpha_home.image);
    ok(crossback(&cfg).args(["chroot", "alpha", "--read-only", "--allow-dirty", "--", "true"]));
    assert_eq!(before, sha256(&m.alpha_home.image), "--allow-dirty must not replay the journal");
    let out = crossback(&cfg).args(["chroot", "alpha", "--allow-dirty", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "never read-write over a dirty journal: {}", err(&out));

    // Hibernated: a swap partition of beta's holds a hibernation image.
    let swap = crossback_testkit::LoopFs::with_mkfs_args("swap", 16, &[]);
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("printf 'S1SUSPEND' | dd of={} bs=1 seek=4086 conv=notrunc status=none && blockdev --flushbufs {}", swap.device, swap.device)));
    m.beta.mount(&[]);
    let fstab = m.beta.path().join("@/etc/fstab");
    let mut t = std::fs::read_to_string(&fstab).unwrap();
    t.push_str(&format!("UUID={} none swap sw 0 0\n", swap.uuid()));
    std::fs::write(&fstab, t).unwrap();
    m.beta.unmount();
    let out = crossback(&cfg).args(["chroot", "beta", "--read-only", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("beta is hibernated"), "{}", err(&out));

    // A filesystem that is not attached.
    drop(swap);
    let cfg2 = dir.path().join("config2.toml");
    std::fs::write(&cfg2, std::fs::read_to_string(&cfg).unwrap().replace(&m.alpha_root.uuid(), "0a1b2c3d-0000-4000-8000-00000000dead")).unwrap();
    let out = crossback(&cfg2).args(["mount", "alpha"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("is not attached"), "{}", err(&out));
}

#[test]
fn root_the_running_system_is_refused_from_inside_it() {
    if !require_root("root_the_running_system_is_refused_from_inside_it") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let (mut m, dir, cfg) = setup();
    // Run crossback inside a chroot of alpha's root, with the machine's
    // programs and /dev, /proc, /sys bound in: alpha is then "/".
    m.alpha_root.mount(&[]);
    let root = m.alpha_root.path().to_path_buf();
    let mut binds = Vec::new();
    for d in ["usr", "dev", "proc", "sys", "run"] {
        let dst = root.join(format!("host-{d}"));
        std::fs::create_dir_all(&dst).unwrap();
        run(Command::new("mount").arg("--rbind").arg(Path::new("/").join(d)).arg(&dst));
        binds.push(dst);
    }
    // /lib, /lib64, /sbin as the machine has them (usually symlinks into /usr).
    for d in ["lib", "lib64", "sbin"] {
        let src = Path::new("/").join(d);
        let target = match std::fs::read_link(&src) {
            Ok(t) => format!("host-{}", t.display()),
            Err(_) => format!("host-usr/{d}"),
        };
        if src.exists() && !root.join(d).exists() {
            std::os::unix::fs::symlink(target, root.join(d)).unwrap();
        }
    }
    for d in ["dev", "proc", "sys", "run"] {
        run(Command::new("mount").arg("--rbind").arg(root.join(format!("host-{d}"))).arg(root.join(d)));
        binds.push(root.join(d));
    }
    // The binary is bound in (a copy would not fit on the small root).
    std::fs::write(root.join("crossback"), b"").unwrap();
    run(Command::new("mount").arg("--bind").arg(env!("CARGO_BIN_EXE_crossback")).arg(root.join("crossback")));
    binds.push(root.join("crossback"));
    std::fs::copy(&cfg, root.join("config.toml")).unwrap();
    let out = Command::new("/usr/sbin/chroot")
        .arg(&root)
        .args(["/crossback", "--config", "/config.toml", "chroot", "alpha", "--read-only", "--", "true"])
        .env("PATH", "/host-usr/sbin:/host-usr/bin:/bin")
        .output()
        .unwrap();
    for b in binds.iter().rev() {
        let _ = Command::new("umount").arg("-R").arg(b).status();
    }
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert!(err(&out).contains("alpha is the running system"), "{}", err(&out));
    let _ = dir;
}

#[test]
fn root_umount_names_what_keeps_it_busy() {
    if !require_root("root_umount_names_what_keeps_it_busy") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let (_m, _dir, cfg) = setup();
    let at = tempfile::tempdir().unwrap();
    ok(crossback(&cfg).args(["mount", "alpha", "--at"]).arg(at.path()));
    let mut holder = Command::new("sleep").arg("1000").current_dir(at.path().join("home/ann")).spawn().unwrap();
    let out = crossback(&cfg).args(["umount", "alpha"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = err(&out);
    assert!(e.contains("is busy") && e.contains(&format!("pid {} (sleep): cwd", holder.id())), "{e}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    ok(crossback(&cfg).args(["umount", "alpha"]));
    assert!(!crossback_host_is_mounted(at.path()));
}

fn crossback_host_is_mounted(p: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
}

#[test]
fn root_mount_rw_writes_to_the_system_and_umount_undoes_it() {
    if !require_root("root_mount_rw_writes_to_the_system_and_umount_undoes_it") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let (mut m, _dir, cfg) = setup();
    let at = tempfile::tempdir().unwrap();
    let out = ok(crossback(&cfg).args(["mount", "beta", "--rw", "--at"]).arg(at.path()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("read-write"));
    std::fs::write(at.path().join("home/written-through-mount"), "hi\n").unwrap();
    let out = crossback(&cfg).args(["mount", "beta", "--at"]).arg(at.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "mounted already: {}", err(&out));
    ok(crossback(&cfg).args(["umount", "beta"]));
    m.beta.mount(&["ro"]);
    assert_eq!(std::fs::read_to_string(m.beta.path().join("@home/written-through-mount")).unwrap(), "hi\n");
}

/// A separate /boot with the ESP inside it (/boot/efi), as encrypted
/// installs have it: mount and chroot mount the tree with /boot/efi on the
/// /boot filesystem, not refused as "another filesystem in the way".
#[test]
fn root_a_mount_point_inside_another_mounted_filesystem_is_mounted_there() {
    if !require_root("root_a_mount_point_inside_another_mounted_filesystem_is_mounted_there") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut root = crossback_testkit::LoopFs::new("ext4", 64);
    let mut boot = crossback_testkit::LoopFs::new("ext4", 32);
    let mut esp = crossback_testkit::LoopFs::new("ext4", 32);
    std::fs::create_dir_all(boot.path().join("efi")).unwrap();
    std::fs::write(esp.path().join("marker"), "on the ESP\n").unwrap();
    let fstab =
        format!("UUID={} / ext4 defaults 0 1\nUUID={} /boot ext4 defaults 0 2\nUUID={} /boot/efi ext4 defaults 0 2\n", root.uuid(), boot.uuid(), esp.uuid());
    crossback_testkit::machine::make_root(root.path(), "epsilon", "Epsilon 5", &fstab);
    for fs in [&mut root, &mut boot, &mut esp] {
        fs.unmount();
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &[root.device.clone(), boot.device.clone(), esp.device.clone()].join(",")]));
    let at = dir.path().join("m");
    ok(crossback(&cfg).args(["mount", "epsilon", "--at"]).arg(&at));
    let seen = std::fs::read_to_string(at.join("boot/efi/marker"));
    ok(crossback(&cfg).args(["umount", "epsilon"]));
    assert_eq!(seen.unwrap(), "on the ESP\n");
    let out = ok(crossback(&cfg).args(["chroot", "epsilon", "--", "cat", "/boot/efi/marker"]));
    assert_eq!(text(&out), "on the ESP\n");
}
