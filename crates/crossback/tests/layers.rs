//! Encrypted and LVM systems, what this machine can check: it
//! has cryptsetup but no device-mapper, so headers and keys are real, and
//! opening a container is the lab's (scripts/lab.sh luks). Refused, with
//! nothing opened and nothing written: a wrong key or none, a header on the
//! slot that does not match its record. These tests need root.

mod common;
use common::{crossback, kind, ok, text};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crossback_testkit::machine::{make_root, TestMachine};
use crossback_testkit::{require_root, run, LoopDisk, LoopFs};

const KEY: &str = "the right passphrase";

fn sha256(path: &str) -> String {
    run(Command::new("sha256sum").arg(path)).split_whitespace().next().unwrap().to_string()
}

fn blkid(dev: &str, tag: &str) -> String {
    let out = Command::new("blkid").args(["-p", "-s", tag, "-o", "value", dev]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A LUKS2 container on `dev` whose key is `key` (a cheap PBKDF); its UUID.
fn luks_format(dev: &str, key: &str) -> String {
    let mut c = Command::new("cryptsetup")
        .args(["luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--iter-time", "100", dev, "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("cryptsetup (install cryptsetup-bin: scripts/install-deps.sh)");
    c.stdin.take().unwrap().write_all(key.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "luksFormat {dev}");
    run(Command::new("cryptsetup").args(["luksUUID", dev])).trim().to_string()
}

fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, key).unwrap();
    p
}

fn records_left() -> Vec<String> {
    std::fs::read_dir("/run/crossback/layers").map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
}

#[test]
fn root_a_locked_container_without_its_key_is_refused_before_anything_is_written() {
    if !require_root("root_a_locked_container_without_its_key_is_refused_before_anything_is_written") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let m = TestMachine::new();
    let luks = LoopFs::blank(32);
    let uuid = luks_format(&luks.device, KEY);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let devices = format!("{},{}", m.devices_arg(), luks.device);
    // init with a key file that does not open it: said, left locked, untouched.
    let wrong = key_file(dir.path(), "wrong", "not it");
    let before = sha256(&luks.device);
    let out = ok(crossback(&cfg).args(["init", "--yes", "--devices", &devices, "--key-file"]).arg(&wrong));
    assert!(text(&out).contains(&format!("no key file given ({}) opens the LUKS container {}", wrong.display(), luks.device)), "{}", text(&out));
    assert!(text(&out).contains("left locked") && text(&out).contains("is an encrypted (LUKS) container, locked"), "{}", text(&out));
    ok(crossback(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device]));
    // beta sits in the container (as init would write it, had it opened it).
    let c = std::fs::read_to_string(&cfg).unwrap().replace("name = \"beta\"", &format!("name = \"beta\"\nluks = [\"{uuid}\"]"));
    std::fs::write(&cfg, c).unwrap();
    let slots = || (sha256(&m.slot_a.device), sha256(&m.slot_b.device));
    let slots_before = slots();

    // A wrong key file; no key and no terminal; a key file that cannot be read.
    for (args, says) in [
        (vec!["--key-file".to_string(), wrong.display().to_string()], "no key file given"),
        (vec![], "there is no terminal to ask for its passphrase"),
        (vec!["--key-file".to_string(), dir.path().join("missing").display().to_string()], "cannot be read"),
    ] {
        let out = crossback(&cfg).args(["backup", "beta"]).args(&args).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert_eq!(kind(&out), "container-key", "{}", text(&out));
        assert!(text(&out).contains(says) && text(&out).contains("nothing was written"), "{}", text(&out));
        assert_eq!(slots(), slots_before, "a refused backup wrote to the media");
        assert_eq!(sha256(&luks.device), before, "the container changed");
        assert!(records_left().is_empty(), "{:?}", records_left());
    }
    // Every system: alpha is backed up, beta is not, and says why.
    let out = crossback(&cfg).arg("backup").arg("--key-file").arg(&wrong).stdin(Stdio::null()).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("beta: not backed up") && text(&out).contains("error[container-key]"), "{}", text(&out));
    assert!(text(&out).contains("alpha") && text(&out).contains("generation 1 started"), "{}", text(&out));
    assert_eq!(sha256(&luks.device), before);
    assert!(records_left().is_empty(), "{:?}", records_left());
}

/// A header file on the slot for a container: (record's fields, bytes).
fn header_of(dev: &str) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("h");
    run(Command::new("cryptsetup").args(["luksHeaderBackup", "--batch-mode", dev, "--header-backup-file"]).arg(&f));
    std::fs::read(&f).unwrap()
}

#[test]
fn root_a_restore_whose_recorded_header_does_not_match_or_open_writes_nothing() {
    if !require_root("root_a_restore_whose_recorded_header_does_not_match_or_open_writes_nothing") {
        return;
    }
    let _serial = crossback_testkit::serial();
    // A disk with one system, backed up.
    let disk = LoopDisk::partitioned(200, "label: gpt\ntype=L, name=\"gamma\"\n");
    let part = disk.part(1);
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "gamma", &part]));
    let root_uuid = blkid(&part, "UUID");
    let mnt = tempfile::tempdir().unwrap();
    run(Command::new("mount").arg(&part).arg(mnt.path()));
    make_root(mnt.path(), "gamma", "Gamma 3", &format!("UUID={root_uuid} / ext4 defaults 0 1\n"));
    run(Command::new("umount").arg(mnt.path()));
    let mut slot_a = LoopFs::new("ext4", 96);
    let mut slot_b = LoopFs::new("ext4", 96);
    slot_a.unmount();
    slot_b.unmount();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &[part.clone(), slot_a.device.clone(), slot_b.device.clone()].join(",")]));
    ok(crossback(&cfg).args(["media", "prepare", &slot_a.device, &slot_b.device]));
    ok(crossback(&cfg).arg("backup"));
    // Two real containers: the one the record names, and another.
    let (c1, c2) = (LoopFs::blank(20), LoopFs::blank(20));
    let (u1, u2) = (luks_format(&c1.device, KEY), luks_format(&c2.device, KEY));
    let (h1, h2) = (header_of(&c1.device), header_of(&c2.device));
    let partuuid = blkid(&part, "PART_ENTRY_UUID");
    let right = key_file(dir.path(), "right", KEY);
    let wrong = key_file(dir.path(), "wrong", "not it");
    let blank = LoopDisk::blank(200);
    // (header bytes on the slot, the hash recorded, key file, the refusal, what it says)
    let cases: [(&[u8], String, &Path, &str, &str); 3] = [
        (&h2[..], blake3::hash(&h1).to_hex().to_string(), &right, "layer-mismatch", "its size or hash differs"),
        (&h2[..], blake3::hash(&h2).to_hex().to_string(), &right, "layer-mismatch", &format!("is of container {u2}, not of {u1}")),
        (&h1[..], blake3::hash(&h1).to_hex().to_string(), &wrong, "container-key", "no key file given"),
    ];
    for (bytes, hash, key, want, says) in cases {
        slot_a.mount(&[]);
        let sys = std::fs::read_dir(slot_a.path().join("crossback"))
            .unwrap()
            .flatten()
            .find(|g| g.file_name().to_string_lossy().starts_with("gen-"))
            .map(|g| g.path().join("gamma"))
            .unwrap();
        let mounts = sys.join("mounts.toml");
        let text0 = std::fs::read_to_string(&mounts).unwrap();
        let base = text0.split("\n[[luks]]").next().unwrap().to_string();
        std::fs::write(
            &mounts,
            format!(
                "{base}\n[[luks]]\nuuid = \"{u1}\"\npartuuid = \"{partuuid}\"\nsize = 208666624\ndata_offset = {}\nheader = \"luks-{u1}.img\"\nheader_bytes = {}\nheader_hash = \"{hash}\"\n",
                h1.len(),
                h1.len()
            ),
        )
        .unwrap();
        std::fs::write(sys.join(format!("luks-{u1}.img")), bytes).unwrap();
        slot_a.unmount();
        let out =
            crossback(&cfg).args(["restore", "--bare-metal", "--disk", &blank.device, "--yes", "--key-file"]).arg(key).stdin(Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert_eq!(kind(&out), want, "{}", text(&out));
        assert!(text(&out).contains(says), "{}", text(&out));
        let t = Command::new("sfdisk").args(["--dump", &blank.device]).output().unwrap();
        assert!(!t.status.success(), "a refused restore wrote a partition table: {}", String::from_utf8_lossy(&t.stdout));
        assert!(records_left().is_empty(), "{:?}", records_left());
    }
    // A new master key asked for with no terminal and no --new-key-file; an
    // empty one: refused, the disk untouched.
    let empty = key_file(dir.path(), "empty", "");
    for (extra, says) in [(vec![], "no terminal to ask on"), (vec!["--new-key-file".to_string(), empty.display().to_string()], "is empty")] {
        let out = crossback(&cfg)
            .args(["restore", "--bare-metal", "--disk", &blank.device, "--yes", "--new-luks-key"])
            .args(&extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(kind(&out), "container-key", "{}", text(&out));
        assert!(text(&out).contains(says), "{}", text(&out));
        assert!(!Command::new("sfdisk").args(["--dump", &blank.device]).output().unwrap().status.success(), "a refused restore wrote a partition table");
    }
    // The old disk gone, but the container the record names still attached:
    // restoring its header would give two containers one UUID. Refused
    // before anything is written.
    drop(disk);
    let out =
        crossback(&cfg).args(["restore", "--bare-metal", "--disk", &blank.device, "--yes", "--key-file"]).arg(&right).stdin(Stdio::null()).output().unwrap();
    assert_eq!(kind(&out), "duplicate-uuid", "{}", text(&out));
    assert!(text(&out).contains(&format!("the LUKS container {u1} is still attached at {}", c1.device)), "{}", text(&out));
    assert!(!Command::new("sfdisk").args(["--dump", &blank.device]).output().unwrap().status.success(), "a refused restore wrote a partition table");
    assert!(records_left().is_empty(), "{:?}", records_left());
}

/// A container whose key file the system's own crypttab names (a data
/// disk unlocked from the root, as systemd-cryptsetup does at boot): the
/// key is taken from there, no passphrase asked; a key file there that does
/// not open it is said, and the refusal is the usual one.
#[test]
fn root_the_key_file_a_systems_crypttab_names_is_tried_first() {
    if !require_root("root_the_key_file_a_systems_crypttab_names_is_tried_first") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut root = LoopFs::new("ext4", 64);
    let luks = LoopFs::blank(32);
    let uuid = luks_format(&luks.device, KEY);
    make_root(root.path(), "delta", "Delta 4", &format!("UUID={} / ext4 defaults 0 1\n", root.uuid()));
    std::fs::create_dir_all(root.path().join("etc/keys")).unwrap();
    std::fs::write(root.path().join("etc/crypttab"), format!("data UUID={uuid} /etc/keys/data.key luks\n")).unwrap();
    std::fs::write(root.path().join("etc/keys/data.key"), KEY).unwrap();
    root.unmount();
    let mut slot_a = LoopFs::new("ext4", 64);
    let mut slot_b = LoopFs::new("ext4", 64);
    slot_a.unmount();
    slot_b.unmount();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args([
        "init",
        "--yes",
        "--devices",
        &[root.device.clone(), luks.device.clone(), slot_a.device.clone(), slot_b.device.clone()].join(","),
    ]));
    ok(crossback(&cfg).args(["media", "prepare", &slot_a.device, &slot_b.device]));
    let c = std::fs::read_to_string(&cfg).unwrap().replace("name = \"delta\"", &format!("name = \"delta\"\nluks = [\"{uuid}\"]"));
    std::fs::write(&cfg, c).unwrap();
    let before = sha256(&luks.device);
    // The right key file: taken (and the open then fails here, where there is no device-mapper).
    let out = crossback(&cfg).args(["backup", "delta"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("with the key file /etc/keys/data.key that delta's crypttab names"), "{}", text(&out));
    assert_ne!(kind(&out), "container-key", "{}", text(&out));
    // A key file there that does not open it.
    root.mount(&[]);
    std::fs::write(root.path().join("etc/keys/data.key"), "stale").unwrap();
    root.unmount();
    let out = crossback(&cfg).args(["backup", "delta"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(kind(&out), "container-key", "{}", text(&out));
    assert!(text(&out).contains("the key file /etc/keys/data.key that delta's crypttab names does not open"), "{}", text(&out));
    assert_eq!(sha256(&luks.device), before, "the container changed");
    assert!(records_left().is_empty(), "{:?}", records_left());
}
