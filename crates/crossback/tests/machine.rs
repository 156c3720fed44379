//! `crossback init` and `status` on a machine made of loop devices (see
//! `crossback_testkit::machine`). These tests need root.

mod common;
#[allow(unused_imports)]
use common::{crossback, err, ok, text};

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
use std::process::Command;

use crossback_testkit::machine::TestMachine;
use crossback_testkit::require_root;

#[test]
fn root_init_writes_exactly_the_expected_config_and_status_describes_it() {
    if !require_root("root_init_writes_exactly_the_expected_config_and_status_describes_it") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let out = ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    let said = utf8(&out.stdout);
    eprintln!("{said}");
    assert!(said.contains("alpha") && said.contains("Alpha Linux 1") && said.contains("Beta OS 2"), "{said}");
    let expected = format!(
        "# crossback configuration: the same file is valid on every system of this machine.\n\
         # Written by `crossback init`; edit freely (docs/backup.md says what each key means).\n\
         \n[[system]]\nname = \"alpha\"\nroot = \"{}\"\n\
         \n[[system]]\nname = \"beta\"\nroot = \"{}\"\nsubvol = \"@\"\n",
        m.alpha_root.uuid(),
        m.beta.uuid()
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), expected);
    // Nothing stays mounted, and the devices are writable again.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for d in m.devices() {
        let name = d.display().to_string();
        assert!(!mounts.contains(&format!(" {name} ")), "{name} left mounted");
        assert_eq!(std::fs::read_to_string(format!("/sys/class/block/{}/ro", d.file_name().unwrap().to_str().unwrap())).unwrap().trim(), "0");
    }
    // Running it again finds the same.
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), expected);

    // Slots in the config (as `media prepare` will write them), then status.
    let with_media = expected.replace(
        "\n[[system]]\nname = \"alpha\"",
        &format!("\n[media]\nid = \"test-media\"\nslot_a = \"{}\"\nslot_b = \"{}\"\n\n[[system]]\nname = \"alpha\"", m.slot_a.uuid(), m.slot_b.uuid()),
    );
    std::fs::write(&cfg, &with_media).unwrap();
    let out = ok(crossback(&cfg).args(["status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sys = v["systems"].as_array().unwrap();
    assert_eq!(sys.len(), 2);
    assert_eq!(sys[0]["name"], "alpha");
    assert_eq!(sys[0]["pretty_name"], "Alpha Linux 1");
    assert_eq!(sys[0]["running"], false);
    let fs: Vec<(String, String, bool)> = sys[0]["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["mountpoint"].as_str().unwrap().to_string(), f["fstype"].as_str().unwrap().to_string(), f["found"].as_bool().unwrap()))
        .collect();
    assert_eq!(fs, vec![("/".into(), "ext4".into(), true), ("/home".into(), "ext4".into(), true), ("/boot/efi".into(), "vfat".into(), true)]);
    assert_eq!(sys[0]["filesystems"][2]["uuid"], m.alpha_efi.uuid());
    assert_eq!(sys[1]["name"], "beta");
    let subvols: Vec<String> = sys[1]["filesystems"].as_array().unwrap().iter().map(|f| f["subvol"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(subvols, ["@", "@home"]);
    assert_eq!(sys[1]["swap_files"][0], "/swapfile");
    let slots = v["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2);
    assert_eq!(slots[0]["letter"], "A");
    assert_eq!(slots[0]["found"], true);
    assert_eq!(slots[0]["mounted"], false);
    assert!(slots[1]["free"].as_u64().unwrap() > 100 << 20);
    // The human view says the same.
    let out = ok(crossback(&cfg).args(["status"]));
    let s = utf8(&out.stdout);
    eprintln!("{s}");
    assert!(s.contains("alpha") && s.contains("offline") && s.contains("/boot/efi"), "{s}");
}

#[test]
fn root_init_only_keeps_the_named_systems() {
    if !require_root("root_init_only_keeps_the_named_systems") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--only", "beta", "--devices", &m.devices_arg()]));
    let c = std::fs::read_to_string(&cfg).unwrap();
    assert!(c.contains("name = \"beta\"") && !c.contains("alpha"), "{c}");
    let out = crossback(&cfg).args(["init", "--yes", "--only", "gamma", "--devices", &m.devices_arg()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(utf8(&out.stderr).contains("--only gamma: no system of that name was found (found: alpha, beta)"), "{}", utf8(&out.stderr));
    // Without --yes and without a terminal, an existing config is not replaced.
    std::fs::write(&cfg, "# mine\n").unwrap();
    let out = crossback(&cfg).args(["init", "--devices", &m.devices_arg()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(utf8(&out.stderr).contains("pass --yes"), "{}", utf8(&out.stderr));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "# mine\n");
}

#[test]
fn root_status_marks_what_is_missing_and_warns_about_bad_fstab_lines() {
    if !require_root("root_status_marks_what_is_missing_and_warns_about_bad_fstab_lines") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    // alpha's fstab gets a garbage line and names a filesystem that is not attached.
    m.alpha_root.mount(&[]);
    let fstab = m.alpha_root.path().join("etc/fstab");
    let mut f = std::fs::read_to_string(&fstab).unwrap();
    f.push_str("garbage here\nUUID=0a1b2c3d-0000-4000-8000-00000000dead /srv ext4 defaults 0 2\n");
    std::fs::write(&fstab, f).unwrap();
    m.alpha_root.unmount();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let gone = "0a1b2c3d-0000-4000-8000-00000000beef";
    std::fs::write(
        &cfg,
        format!("[[system]]\nname = \"alpha\"\nroot = \"{}\"\n\n[[system]]\nname = \"gone\"\nroot = \"{gone}\"\n\n[[system]]\nname = \"notasystem\"\nroot = \"{}\"\n", m.alpha_root.uuid(), m.slot_a.uuid()),
    )
    .unwrap();
    let out = ok(crossback(&cfg).args(["status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let alpha = &v["systems"][0];
    let srv = alpha["filesystems"].as_array().unwrap().iter().find(|f| f["mountpoint"] == "/srv").unwrap();
    assert_eq!(srv["found"], false);
    let warnings = alpha["warnings"].to_string();
    assert!(warnings.contains("line 6: skipped, not an fstab entry: garbage here"), "{warnings}");
    assert_eq!(v["systems"][1]["filesystems"][0]["found"], false);
    assert!(v["systems"][2]["warnings"].to_string().contains("holds no Linux system"), "{}", v["systems"][2]);
    let out = ok(crossback(&cfg).arg("status"));
    assert!(utf8(&out.stdout).contains("MISSING"), "{}", utf8(&out.stdout));
}

#[test]
fn root_bad_configs_and_no_root_are_clear_errors() {
    if !require_root("root_bad_configs_and_no_root_are_clear_errors") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "this is = not [toml").unwrap();
    let out = crossback(&cfg).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(utf8(&out.stderr).contains("config.toml") && utf8(&out.stderr).contains("line 1"), "{}", utf8(&out.stderr));
    let out = crossback(&dir.path().join("none.toml")).arg("status").output().unwrap();
    assert!(utf8(&out.stderr).contains("run `crossback init`"), "{}", utf8(&out.stderr));
    // Not root: said before anything is tried.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_crossback"))
        .args(["init", "--yes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(utf8(&out.stderr).contains("needs root"), "{}", utf8(&out.stderr));
}

#[test]
fn root_config_overrides_change_what_fstab_says() {
    if !require_root("root_config_overrides_change_what_fstab_says") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    // Leave alpha's EFI partition out; name its /home by another filesystem (slot B's, for the test).
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("root = \"{}\"\n", m.alpha_root.uuid()),
        &format!("root = \"{}\"\nexclude = [\"*.tmp\"]\n\n[[system.mount]]\nmountpoint = \"/boot/efi\"\nskip = true\n\n[[system.mount]]\nmountpoint = \"/home\"\nuuid = \"{}\"\n", m.alpha_root.uuid(), m.slot_b.uuid()),
    );
    std::fs::write(&cfg, &text).unwrap();
    let out = ok(crossback(&cfg).args(["status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fs: Vec<(String, String)> = v["systems"][0]["filesystems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["mountpoint"].as_str().unwrap().to_string(), f["uuid"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(fs, vec![("/".to_string(), m.alpha_root.uuid()), ("/home".to_string(), m.slot_b.uuid())]);
    // A skip without a mount point fstab has, or an unknown key, are told apart.
    std::fs::write(&cfg, text.replace("skip = true", "skip = true\ncolour = 1")).unwrap();
    let out = crossback(&cfg).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(utf8(&out.stderr).contains("unknown field `colour`"), "{}", utf8(&out.stderr));
}

/// A LUKS1 header as `cryptsetup luksFormat --type luks1` begins it: what
/// blkid needs to call a device `crypto_LUKS` (magic, version, UUID).
fn luks1_header(uuid: &str) -> Vec<u8> {
    let mut h = vec![0u8; 4096];
    h[..6].copy_from_slice(b"LUKS\xba\xbe");
    h[6..8].copy_from_slice(&1u16.to_be_bytes());
    h[8..14].copy_from_slice(b"aes\0\0\0");
    h[168..168 + uuid.len()].copy_from_slice(uuid.as_bytes());
    h
}

#[test]
fn root_init_names_an_encrypted_container_it_cannot_look_into_and_leaves_it_alone() {
    if !require_root("root_init_names_an_encrypted_container_it_cannot_look_into_and_leaves_it_alone") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let m = TestMachine::new();
    let luks = crossback_testkit::LoopFs::blank(8);
    let uuid = "0a1b2c3d-0000-4000-8000-00000000c0de";
    std::fs::write(&luks.device, luks1_header(uuid)).unwrap();
    let fingerprint = || crossback_testkit::run(std::process::Command::new("sha256sum").arg(&luks.device));
    let before = fingerprint();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let out = ok(crossback(&cfg).args(["init", "--yes", "--devices", &format!("{},{}", m.devices_arg(), luks.device)]));
    let e = utf8(&out.stderr);
    assert!(
        e.contains(&format!(
            "{} (UUID={uuid}) is an encrypted (LUKS) container, locked: a system inside it is not found; give its passphrase (run `crossback init` on a terminal, or with --key-file FILE)",
            luks.device
        )),
        "{e}"
    );
    // The systems beside it are found as before; the container is not touched.
    let c = std::fs::read_to_string(&cfg).unwrap();
    assert!(c.contains("name = \"alpha\"") && c.contains("name = \"beta\""), "{c}");
    assert_eq!(fingerprint(), before);
}
