//! An encrypted media. A lost backup disk gives nothing away; the
//! passphrase, the user's age key and the `age` tool itself get the data
//! back; a wrong or missing key is refused and nothing is written. These
//! tests need root (and the `age` package for the interoperability check).

mod common;
#[allow(unused_imports)]
use common::{crossback, err, kind, ok, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crossback_testkit::machine::TestMachine;
use crossback_testkit::{compare, require_root, run};

/// A user's age key pair, made by `age-keygen` (the tool the user has).
struct UserKey {
    file: PathBuf,
    recipient: String,
}

fn user_key(dir: &Path, name: &str) -> UserKey {
    let file = dir.join(name);
    run(Command::new("age-keygen").arg("-o").arg(&file));
    let recipient = run(Command::new("age-keygen").arg("-y").arg(&file)).trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    UserKey { file, recipient }
}

/// crossback with no terminal to ask on and no key from the environment,
/// and a cheap scrypt (the tests unlock often).
fn cb(cfg: &Path) -> Command {
    let mut c = crossback(cfg);
    c.stdin(Stdio::null()).env_remove("CROSSBACK_PASSPHRASE_FILE").env("CROSSBACK_SCRYPT_WORK_FACTOR", "12");
    c
}

/// A working directory with a passphrase file, and the configuration
/// `init` writes for the machine: (dir, config, passphrase file).
fn configured(m: &TestMachine, passphrase: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, format!("{passphrase}\n")).unwrap();
    ok(cb(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    (dir, cfg, pass)
}

fn refused(o: &Output, what: &str) {
    assert_eq!(o.status.code(), Some(1), "{what}: {}", text(o));
    assert_eq!(kind(o), "key", "{what}: {}", text(o));
}

/// Every byte of a block device.
fn device_bytes(dev: &str) -> Vec<u8> {
    std::fs::read(dev).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn empty_or_missing(p: &Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[test]
fn root_an_encrypted_media_gives_nothing_away_and_opens_with_each_of_its_keys() {
    if !require_root("root_an_encrypted_media_gives_nothing_away_and_opens_with_each_of_its_keys") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    // Canaries: a name and a content no other byte sequence on the disks has.
    let salt = format!("{:016x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let name = format!("NAMECANARY{salt}");
    let content = format!("CONTENTCANARY{salt}");
    m.alpha_home.mount(&[]);
    std::fs::write(m.alpha_home.path().join("ann").join(&name), format!("{content}\n").repeat(100)).unwrap();
    m.alpha_home.unmount();
    // The edge cases (also what GNU tar cannot restore: paths past PATH_MAX) on the root.
    m.alpha_root.mount(&[]);
    crossback_testkit::tree::build(&m.alpha_root.path().join("srv/edge"));
    m.alpha_root.unmount();
    let (dir, cfg, pass) = configured(&m, "correct horse battery staple");
    // The trees restored below carry immutable and append-only files.
    let _flags = crossback_testkit::tree::FlagsCleared(dir.path().to_path_buf());
    let user = user_key(dir.path(), "user.key");
    let out = ok(cb(&cfg).arg("--passphrase-file").arg(&pass).args([
        "media",
        "prepare",
        &m.slot_a.device,
        &m.slot_b.device,
        "--encrypt",
        "--recipient",
        &user.recipient,
    ]));
    assert!(text(&out).contains("prepared, encrypted"), "{}", text(&out));
    // Backups need no secret: two of them, one per slot, with no key given.
    ok(cb(&cfg).arg("backup"));
    ok(cb(&cfg).arg("backup"));
    let status = text(&ok(cb(&cfg).arg("status")));
    assert!(status.contains("encrypted (age); unlocks with its passphrase, age1"), "{status}");
    let alpha_uuid = m.alpha_root.uuid();
    for slot in [&m.slot_a, &m.slot_b] {
        let raw = device_bytes(&slot.device);
        assert!(!contains(&raw, name.as_bytes()), "the file's name is on {} in the clear", slot.device);
        assert!(!contains(&raw, content.as_bytes()), "the file's content is on {} in the clear", slot.device);
        // The configuration copy (it names alpha's root) and the records of its filesystems.
        assert!(!contains(&raw, format!("root = \"{alpha_uuid}\"").as_bytes()), "the configuration is on {} in the clear", slot.device);
        assert!(!contains(&raw, b"fstab_line"), "mounts.toml is on {} in the clear", slot.device);
        assert!(!contains(&raw, b"Alpha Linux 1"), "alpha's os-release name is on {} in the clear", slot.device);
    }
    // The archives are age files, named so.
    m.slot_a.mount(&["ro"]);
    let gen1 = m.slot_a.path().join("crossback/gen-000001");
    assert!(gen1.join("alpha/home.tar.zst.age").is_file() && gen1.join("alpha/mounts.toml.age").is_file());
    assert!(!gen1.join("alpha/home.tar.zst").exists() && !m.slot_a.path().join("crossback/config.toml").exists());
    assert!(std::fs::read_to_string(m.slot_a.path().join("crossback/README.txt")).unwrap().contains("age -d -i /dev/shm/media-key root.tar.zst.age"));
    let slot_copy = dir.path().join("slot-a");
    run(Command::new("cp").arg("-a").arg(m.slot_a.path()).arg(&slot_copy));
    m.slot_a.unmount();

    // Without crossback: the user's key opens the media key, the media key
    // the archive; zstd and GNU tar do the rest.
    let media_key = dir.path().join("media.key");
    run(Command::new("age").arg("-d").arg("-i").arg(&user.file).arg("-o").arg(&media_key).arg(slot_copy.join("crossback/media-key.recipients.age")));
    let by_tools = dir.path().join("by-tools");
    std::fs::create_dir(&by_tools).unwrap();
    run(Command::new("bash").arg("-c").arg(format!(
        "set -o pipefail; age -d -i '{}' '{}' | zstd -dc | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C '{}'",
        media_key.display(),
        slot_copy.join("crossback/gen-000001/alpha/home.tar.zst.age").display(),
        by_tools.display()
    )));
    m.alpha_home.mount(&["ro"]);
    let d: Vec<String> = compare::trees(m.alpha_home.path(), &by_tools).into_iter().filter(|d| !d.contains("socket")).collect();
    assert!(d.is_empty(), "age + zstd + tar: {}", d.join("\n"));
    m.alpha_home.unmount();

    // A wrong passphrase, a wrong key, no key: refused, nothing written.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not it\n").unwrap();
    let stranger = user_key(dir.path(), "stranger.key");
    let target = dir.path().join("target");
    for (what, args) in [
        ("a wrong passphrase", vec!["--passphrase-file".to_string(), wrong.display().to_string()]),
        ("a wrong key", vec!["--identity".to_string(), stranger.file.display().to_string()]),
        ("no key", vec![]),
    ] {
        let o = cb(&cfg).args(&args).args(["restore", "alpha", "--to"]).arg(&target).output().unwrap();
        refused(&o, what);
        assert!(empty_or_missing(&target), "{what}: something was written");
        refused(&cb(&cfg).args(&args).args(["ls", "alpha", "/home/ann"]).output().unwrap(), what);
    }
    assert!(err(&cb(&cfg).arg("--passphrase-file").arg(&wrong).args(["ls", "alpha"]).output().unwrap()).contains("wrong passphrase"));

    // The passphrase, and the user's key: each restores the whole system.
    for (what, args) in [
        ("passphrase", vec!["--passphrase-file".to_string(), pass.display().to_string()]),
        ("identity", vec!["--identity".to_string(), user.file.display().to_string()]),
        ("media key", vec!["--identity".to_string(), media_key.display().to_string()]),
    ] {
        let to = dir.path().join(format!("by-{what}"));
        ok(cb(&cfg).args(&args).args(["restore", "alpha", "--to"]).arg(&to));
        m.alpha_home.mount(&["ro"]);
        let d: Vec<String> = compare::trees(m.alpha_home.path(), &to.join("home")).into_iter().filter(|d| !d.contains("socket")).collect();
        m.alpha_home.unmount();
        assert!(d.is_empty(), "{what}: {}", d.join("\n"));
        m.alpha_root.mount(&["ro"]);
        let d: Vec<String> = compare::trees(&m.alpha_root.path().join("srv"), &to.join("srv")).into_iter().filter(|d| !d.contains("socket")).collect();
        m.alpha_root.unmount();
        assert!(d.is_empty(), "{what}: {}", d.join("\n"));
        let listed = text(&ok(cb(&cfg).args(&args).args(["ls", "alpha", "/home/ann"])));
        assert!(listed.contains(&name), "{what}: {listed}");
    }
    ok(cb(&cfg).arg("--passphrase-file").arg(&pass).arg("verify"));

    // The configuration comes back from the media only with a key.
    std::fs::remove_file(&cfg).unwrap();
    refused(&cb(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]).output().unwrap(), "init without a key");
    assert!(!cfg.exists(), "no configuration was written");
    let out = ok(cb(&cfg).arg("--identity").arg(&user.file).args(["init", "--yes", "--devices", &m.devices_arg()]));
    assert!(text(&out).contains("took the configuration from the backup media"), "{}", text(&out));

    // Keys change without rewriting the archives.
    let archive = |m: &mut TestMachine| {
        m.slot_a.mount(&["ro"]);
        let md = std::fs::metadata(m.slot_a.path().join("crossback/gen-000003/alpha/home.tar.zst.age").as_path())
            .ok()
            .map(|x| (x.len(), std::os::unix::fs::MetadataExt::ino(&x)));
        m.slot_a.unmount();
        md
    };
    ok(cb(&cfg).arg("backup"));
    let before = archive(&mut m);
    assert!(before.is_some());
    // A wrong passphrase changes nothing.
    let unlocks = |cfg: &Path| text(&ok(cb(cfg).arg("status"))).lines().filter(|l| l.contains("unlocks with")).map(String::from).collect::<Vec<_>>();
    let before_status = unlocks(&cfg);
    assert_eq!(before_status.len(), 2, "{before_status:?}");
    refused(
        &cb(&cfg).arg("--passphrase-file").arg(&wrong).args(["media", "add-key", "--recipient", &stranger.recipient]).output().unwrap(),
        "add-key, wrong passphrase",
    );
    refused(&cb(&cfg).arg("--identity").arg(&stranger.file).args(["media", "remove-key", "--passphrase"]).output().unwrap(), "remove-key, wrong key");
    assert_eq!(unlocks(&cfg), before_status, "nothing changed");
    let pass2 = dir.path().join("pass2");
    std::fs::write(&pass2, "another one\n").unwrap();
    ok(cb(&cfg).arg("--identity").arg(&user.file).args(["media", "add-key", "--passphrase", "--new-passphrase-file"]).arg(&pass2));
    ok(cb(&cfg).arg("--passphrase-file").arg(&pass2).args(["ls", "alpha", "/home/ann"]));
    refused(&cb(&cfg).arg("--passphrase-file").arg(&pass).args(["ls", "alpha"]).output().unwrap(), "the replaced passphrase");
    ok(cb(&cfg).arg("--passphrase-file").arg(&pass2).args(["media", "remove-key", "--recipient", &user.recipient]));
    refused(&cb(&cfg).arg("--identity").arg(&user.file).args(["ls", "alpha"]).output().unwrap(), "a removed recipient");
    // The last way to unlock is not removed.
    let o = cb(&cfg).arg("--passphrase-file").arg(&pass2).args(["media", "remove-key", "--passphrase"]).output().unwrap();
    assert_eq!((o.status.code(), kind(&o).as_str()), (Some(2), "usage"), "{}", text(&o));
    ok(cb(&cfg).arg("--passphrase-file").arg(&pass2).args(["ls", "alpha", "/home/ann"]));
    assert_eq!(archive(&mut m), before, "the archives were not rewritten");
}

#[test]
fn root_a_plain_media_is_encrypted_from_the_next_backup_on() {
    if !require_root("root_a_plain_media_is_encrypted_from_the_next_backup_on") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    let (dir, cfg, pass) = configured(&m, "s3cret");
    ok(cb(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device]));
    ok(cb(&cfg).arg("backup"));
    // A media with no passphrase given and no terminal: refused, nothing changed.
    let o = cb(&cfg).args(["media", "encrypt"]).output().unwrap();
    refused(&o, "media encrypt without a passphrase");
    ok(cb(&cfg).args(["ls", "alpha", "/home/ann"]));
    ok(cb(&cfg).arg("--passphrase-file").arg(&pass).args(["media", "encrypt"]));
    let o = cb(&cfg).arg("--passphrase-file").arg(&pass).args(["media", "encrypt"]).output().unwrap();
    assert_eq!(kind(&o), "usage", "{}", text(&o));
    // The plaintext generation still reads without a key.
    ok(cb(&cfg).args(["ls", "alpha", "/home/ann", "--generation", "1"]));
    ok(cb(&cfg).arg("backup"));
    m.slot_b.mount(&["ro"]);
    let g2 = m.slot_b.path().join("crossback/gen-000002");
    assert!(g2.join("alpha/root.tar.zst.age").is_file() && !g2.join("alpha/root.tar.zst").exists());
    assert!(m.slot_b.path().join("crossback/config.toml.age").is_file() && !m.slot_b.path().join("crossback/config.toml").exists());
    m.slot_b.unmount();
    refused(&cb(&cfg).args(["ls", "alpha"]).output().unwrap(), "the encrypted generation without a key");
    let to = dir.path().join("to");
    ok(cb(&cfg).arg("--passphrase-file").arg(&pass).args(["restore", "alpha", "--to"]).arg(&to).arg("/home/ann/notes.txt"));
    assert_eq!(std::fs::read_to_string(to.join("home/ann/notes.txt")).unwrap(), "alpha's home\n");

    // A planted marker that names someone else's key: backups do not
    // encrypt to it; nothing is written, on either slot.
    let config = std::fs::read_to_string(&cfg).unwrap();
    assert!(config.contains("media_key = \"age1"), "{config}");
    let stranger = user_key(dir.path(), "stranger.key");
    m.slot_a.mount(&[]);
    let marker = m.slot_a.path().join("crossback/slot.toml");
    let marker_text = std::fs::read_to_string(&marker).unwrap();
    let own = marker_text.lines().find_map(|l| l.strip_prefix("media_key = \"")).unwrap().trim_end_matches('"').to_string();
    std::fs::write(&marker, marker_text.replace(&own, &stranger.recipient)).unwrap();
    m.slot_a.unmount();
    let before = listing(&mut m);
    let o = cb(&cfg).arg("backup").output().unwrap();
    assert_eq!((o.status.code(), kind(&o).as_str()), (Some(1), "slot-hostile"), "{}", text(&o));
    assert_eq!(listing(&mut m), before, "nothing was written");
}

#[test]
fn root_a_damaged_encrypted_archive_is_named_file_by_file() {
    if !require_root("root_a_damaged_encrypted_archive_is_named_file_by_file") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    m.alpha_home.mount(&[]);
    // 32 MB of noise: four zstd frames of 8 MiB.
    for i in 0..80 {
        std::fs::write(m.alpha_home.path().join(format!("ann/f{i:02}")), crossback_testkit::tree::noise(i, 400_000)).unwrap();
    }
    m.alpha_home.unmount();
    let (dir, cfg, pass) = configured(&m, "s3cret");
    ok(cb(&cfg).arg("--passphrase-file").arg(&pass).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device, "--encrypt"]));
    ok(cb(&cfg).arg("backup"));
    m.slot_a.mount(&[]);
    let file = m.slot_a.path().join("crossback/gen-000001/alpha/home.tar.zst.age");
    let len = std::fs::metadata(&file).unwrap().len();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&file).unwrap();
        let mut b = [0u8; 16];
        f.read_exact_at(&mut b, len / 3).unwrap();
        for x in b.iter_mut() {
            *x ^= 0xa5;
        }
        f.write_all_at(&b, len / 3).unwrap();
    }
    m.slot_a.unmount();
    let o = cb(&cfg).arg("--passphrase-file").arg(&pass).arg("verify").output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(said.contains("alpha /home") && said.contains("DAMAGED") && said.contains("/ann/f"), "{said}");
    // A damaged chunk costs the zstd frame it lies in (a frame decompresses
    // only as a whole); the files of the other three frames restore.
    let to = dir.path().join("to");
    let o = cb(&cfg).arg("--passphrase-file").arg(&pass).args(["restore", "alpha", "--to"]).arg(&to).arg("/home/ann").output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let restored = (0..80).filter(|i| to.join(format!("home/ann/f{i:02}")).is_file()).count();
    assert!((50..80).contains(&restored), "{restored} of 80 files restored");
}

/// Everything on both slots: "nothing was written".
fn listing(m: &mut TestMachine) -> Vec<String> {
    common::slot_listing([&mut m.slot_a, &mut m.slot_b])
}

/// Rewrites both slots' markers with `f`.
fn edit_markers(m: &mut TestMachine, f: impl Fn(&str) -> String) {
    for s in [&mut m.slot_a, &mut m.slot_b] {
        s.mount(&[]);
        let marker = s.path().join("crossback/slot.toml");
        let t = std::fs::read_to_string(&marker).unwrap();
        std::fs::write(&marker, f(&t)).unwrap();
        s.unmount();
    }
}

fn refused_as(o: &Output, kind_name: &str, what: &str) {
    assert_eq!((o.status.code(), kind(o).as_str()), (Some(1), kind_name), "{what}: {}", text(o));
}

/// What the media is comes from each system's configuration,
/// never from the disk: markers stripped of their encryption (a tampered or
/// cloned disk), a configuration from before `media encrypt` with a planted
/// key on the disk, one that never said, and a plug-in backup onto a plain
/// media — each refused with nothing written, and no canary in the clear.
#[test]
fn root_an_encrypted_media_cannot_be_made_to_receive_plaintext() {
    if !require_root("root_an_encrypted_media_cannot_be_made_to_receive_plaintext") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    let canary = format!("TRUSTCANARY{:016x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    m.alpha_home.mount(&[]);
    std::fs::write(m.alpha_home.path().join("ann").join("secret.txt"), format!("{canary}\n").repeat(50)).unwrap();
    m.alpha_home.unmount();
    let (dir, cfg, pass) = configured(&m, "correct horse");
    // The second system's configuration, as it was before `media encrypt`.
    ok(cb(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device]));
    let before_encrypt = std::fs::read_to_string(&cfg).unwrap();
    assert!(before_encrypt.contains("encrypted = false"), "{before_encrypt}");
    let second = dir.path().join("second.toml");
    std::fs::write(&second, &before_encrypt).unwrap();
    ok(cb(&cfg).arg("--passphrase-file").arg(&pass).args(["media", "encrypt"]));
    ok(cb(&cfg).arg("backup"));
    let no_canary = |m: &TestMachine, what: &str| {
        for s in [&m.slot_a, &m.slot_b] {
            assert!(!contains(&device_bytes(&s.device), canary.as_bytes()), "{what}: the canary is on {} in the clear", s.device);
        }
    };
    no_canary(&m, "after the encrypted backup");

    // 1. Both markers lose their [encryption] table.
    let mut saved = Vec::new();
    for s in [&mut m.slot_a, &mut m.slot_b] {
        s.mount(&["ro"]);
        saved.push(std::fs::read_to_string(s.path().join("crossback/slot.toml")).unwrap());
        s.unmount();
    }
    edit_markers(&mut m, |t| t.split("\n[encryption]").next().unwrap().to_string() + "\n");
    let stripped = listing(&mut m);
    refused_as(&cb(&cfg).arg("backup").output().unwrap(), "slot-hostile", "markers without encryption");
    assert_eq!(listing(&mut m), stripped, "nothing was written");
    no_canary(&m, "markers without encryption");
    // The same with a plug-in backup (what the udev rule starts).
    refused_as(&cb(&cfg).args(["backup", "--plugged"]).output().unwrap(), "slot-hostile", "plugged, markers without encryption");
    assert_eq!(listing(&mut m), stripped, "nothing was written");

    // 2. The configuration from before `media encrypt`: it says plain; the
    // markers (put back) say encrypted. Refused, not encrypted to the
    // marker's key, and not written in plaintext either.
    for (s, t) in [&mut m.slot_a, &mut m.slot_b].into_iter().zip(&saved) {
        s.mount(&[]);
        std::fs::write(s.path().join("crossback/slot.toml"), t).unwrap();
        s.unmount();
    }
    let now = listing(&mut m);
    refused_as(&cb(&second).arg("backup").output().unwrap(), "slot-hostile", "a configuration from before media encrypt");
    assert_eq!(listing(&mut m), now, "nothing was written");
    // A key planted in the markers (with the attacker's own passphrase
    // wrapping on the slots) is not learned with the user's passphrase.
    let attacker_pass = dir.path().join("attacker-pass");
    std::fs::write(&attacker_pass, "attacker\n").unwrap();
    let o = cb(&second)
        .arg("--passphrase-file")
        .arg(&pass)
        .args(["media", "trust", "--media-key", "age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq5lxkm5"])
        .output()
        .unwrap();
    refused_as(&o, "slot-hostile", "trust with a key the markers do not name");
    // A recipient's key cannot prove which key the media has.
    let user = user_key(dir.path(), "user.key");
    let o = cb(&second).arg("--identity").arg(&user.file).args(["media", "trust"]).output().unwrap();
    refused_as(&o, "key", "trust with a recipient's key");
    let o = cb(&second).arg("--passphrase-file").arg(&attacker_pass).args(["media", "trust"]).output().unwrap();
    refused_as(&o, "key", "trust with a wrong passphrase");
    assert_eq!(std::fs::read_to_string(&second).unwrap(), before_encrypt, "the configuration was not changed");
    // The passphrase teaches it the media's key, once; then it backs up encrypted.
    let out = ok(cb(&second).arg("--passphrase-file").arg(&pass).args(["media", "trust"]));
    assert!(text(&out).contains("the media is encrypted (media key age1"), "{}", text(&out));
    let learned = std::fs::read_to_string(&second).unwrap();
    let key_line = std::fs::read_to_string(&cfg).unwrap().lines().find(|l| l.starts_with("media_key")).unwrap().to_string();
    assert!(learned.contains(&key_line) && learned.contains("encrypted = true"), "{learned}");
    ok(cb(&second).arg("backup"));
    no_canary(&m, "after the second system's backup");

    // 3. A configuration that never said (an older crossback's): refused.
    let legacy = dir.path().join("legacy.toml");
    std::fs::write(&legacy, before_encrypt.replace("encrypted = false\n", "")).unwrap();
    let now = listing(&mut m);
    refused_as(&cb(&legacy).arg("backup").output().unwrap(), "config", "a configuration that never said");
    assert_eq!(listing(&mut m), now, "nothing was written");
    let o = cb(&legacy).args(["media", "trust", "--plain"]).output().unwrap();
    refused_as(&o, "slot-hostile", "trust --plain on an encrypted media");

    // A configuration that knows the media as encrypted is not talked into
    // "plain" by markers stripped of their encryption.
    edit_markers(&mut m, |t| t.split("\n[encryption]").next().unwrap().to_string() + "\n");
    let known = std::fs::read_to_string(&second).unwrap();
    refused_as(&cb(&second).args(["media", "trust", "--plain"]).output().unwrap(), "slot-hostile", "trust --plain over stripped markers");
    assert_eq!(std::fs::read_to_string(&second).unwrap(), known, "the configuration was not changed");

    // 4. Every copy of the configuration crossback writes is root's only.
    use std::os::unix::fs::PermissionsExt;
    for c in [&cfg, &second] {
        assert_eq!(std::fs::metadata(c).unwrap().permissions().mode() & 0o077, 0, "{} is readable by others", c.display());
    }
}

/// A plug-in backup onto a media that is not encrypted is the
/// user's explicit choice (`schedule --unencrypted`); without it refused.
#[test]
fn root_a_plugged_backup_onto_a_plain_media_needs_the_users_choice() {
    if !require_root("root_a_plugged_backup_onto_a_plain_media_needs_the_users_choice") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    let (_dir, cfg, _pass) = configured(&m, "unused");
    ok(cb(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device]));
    let before = listing(&mut m);
    refused_as(&cb(&cfg).args(["backup", "--plugged"]).output().unwrap(), "not-encrypted", "plugged onto a plain media");
    assert_eq!(listing(&mut m), before, "nothing was written");
    ok(cb(&cfg).args(["backup", "--plugged", "--unencrypted"]));
    // Slot contents are root's only: the generation, archives and records.
    use std::os::unix::fs::PermissionsExt;
    m.slot_a.mount(&["ro"]);
    let top = m.slot_a.path().join("crossback");
    assert_eq!(std::fs::metadata(&top).unwrap().permissions().mode() & 0o077, 0, "crossback/ is open to others");
    for e in walk(&top) {
        let mode = std::fs::symlink_metadata(&e).unwrap().permissions().mode();
        if e.file_name().is_some_and(|n| n == "crossback") && e.parent() == Some(top.as_path()) {
            continue; // the carried program: 0700 beneath a 0700 directory
        }
        assert_eq!(mode & 0o077, 0, "{} is mode {:o}", e.display(), mode & 0o7777);
    }
    m.slot_a.unmount();
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let path = e.path();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// A passphrase wrapping on the slot edited to ask for a huge scrypt work
/// factor is damage, refused at once (not gigabytes and seconds spent, and
/// not "wrong passphrase"); nothing on the slots changes.
#[test]
fn root_a_crafted_scrypt_factor_is_damage_refused_before_any_work() {
    if !require_root("root_a_crafted_scrypt_factor_is_damage_refused_before_any_work") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    let (_dir, cfg, pass) = configured(&m, "correct horse");
    ok(cb(&cfg).arg("--passphrase-file").arg(&pass).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device, "--encrypt"]));
    ok(cb(&cfg).arg("backup"));
    for s in [&mut m.slot_a, &mut m.slot_b] {
        s.mount(&[]);
        let f = s.path().join("crossback/media-key.passphrase.age");
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(text.contains(" 12\n"), "the wrapping names the test's work factor");
        // The header is text; the stanza's factor is its last word. Only
        // those two bytes change: the rest (binary) stays as it was.
        let at = text.find(" 12\n").unwrap() + 1;
        let mut crafted = bytes.clone();
        crafted[at..at + 2].copy_from_slice(b"22");
        std::fs::write(&f, crafted).unwrap();
        s.unmount();
    }
    let before = listing(&mut m);
    let t = std::time::Instant::now();
    let o = cb(&cfg).arg("--passphrase-file").arg(&pass).args(["ls", "alpha", "/"]).output().unwrap();
    assert_eq!((o.status.code(), kind(&o).as_str()), (Some(1), "slot-damaged"), "{}", text(&o));
    assert!(text(&o).contains("scrypt work factor 22"), "{}", text(&o));
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "refused at once, not after the work: {:?}", t.elapsed());
    assert_eq!(listing(&mut m), before, "nothing was written");
}
