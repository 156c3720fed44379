//! Slots, generations and the A/B rotation, on a machine of loop devices.
//! These tests need root.

mod common;
#[allow(unused_imports)]
use common::{crossback, err, ok, text};
use std::path::PathBuf;
use std::process::Command;

use crossback_testkit::machine::TestMachine;
use crossback_testkit::{require_root, run, LoopFs};

pub struct Setup {
    pub m: TestMachine,
    pub _dir: tempfile::TempDir,
    pub cfg: PathBuf,
}

pub fn setup() -> Setup {
    let m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    ok(crossback(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device]));
    Setup { m, _dir: dir, cfg }
}

/// The generations a slot holds: (dir name, manifest text).
fn generations(slot: &mut LoopFs) -> Vec<(String, String)> {
    slot.mount(&["ro"]);
    let dir = slot.path().join("crossback");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gen-"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path().join("generation.toml")).unwrap_or_default()))
        .collect();
    out.sort();
    slot.unmount();
    out
}

#[test]
fn root_rotation_keeps_the_previous_complete_set() {
    if !require_root("root_rotation_keeps_the_previous_complete_set") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    let c = std::fs::read_to_string(&s.cfg).unwrap();
    assert!(c.contains("[media]") && c.contains(&s.m.slot_a.uuid()), "{c}");
    ok(crossback(&s.cfg).arg("backup"));
    let a = generations(&mut s.m.slot_a);
    assert_eq!(a.len(), 1);
    assert!(a[0].0 == "gen-000001" && a[0].1.contains("state = \"sealed\""), "{a:?}");
    assert!(generations(&mut s.m.slot_b).is_empty());
    ok(crossback(&s.cfg).arg("verify"));
    // Five more rotations, with files changed before each.
    for round in 2..=6u64 {
        s.m.alpha_home.mount(&[]);
        std::fs::write(s.m.alpha_home.path().join("ann/round.txt"), format!("round {round}\n")).unwrap();
        s.m.alpha_home.unmount();
        ok(crossback(&s.cfg).arg("backup"));
        let (new, old) = if round % 2 == 0 { (&mut s.m.slot_b, &mut s.m.slot_a) } else { (&mut s.m.slot_a, &mut s.m.slot_b) };
        let n = generations(new);
        let o = generations(old);
        assert_eq!(n.len(), 1, "round {round}: {n:?}");
        assert_eq!(n[0].0, format!("gen-{round:06}"));
        assert!(n[0].1.contains("state = \"sealed\""));
        assert_eq!(o.len(), 1, "the previous generation stays: {o:?}");
        assert_eq!(o[0].0, format!("gen-{:06}", round - 1));
        // Both complete sets restore what was there at their time.
        for (seq, want) in [(round, format!("round {round}\n")), (round - 1, if round > 2 { format!("round {}\n", round - 1) } else { String::new() })] {
            let dest = s._dir.path().join(format!("r{round}-{seq}"));
            ok(crossback(&s.cfg).args(["restore", "alpha", "--generation", &seq.to_string(), "--to"]).arg(&dest).arg("/home/ann"));
            let got = std::fs::read_to_string(dest.join("home/ann/round.txt")).unwrap_or_default();
            assert_eq!(got, want, "generation {seq}");
        }
    }
    let out = ok(crossback(&s.cfg).args(["status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["slots"][0]["generation"]["seq"], 5);
    assert_eq!(v["slots"][1]["generation"]["seq"], 6);
    assert_eq!(v["slots"][1]["generation"]["state"], "sealed");
    let names: Vec<&str> = v["slots"][1]["generation"]["systems"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    let out = ok(crossback(&s.cfg).arg("verify"));
    assert!(text(&out).contains("10 archives checked, 0 damaged"), "{}", text(&out));
}

#[test]
fn root_an_open_generation_is_completed_from_the_other_system() {
    if !require_root("root_an_open_generation_is_completed_from_the_other_system") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let s = setup();
    ok(crossback(&s.cfg).args(["backup", "beta"]));
    let out = ok(crossback(&s.cfg).arg("status"));
    let t = text(&out);
    assert!(t.contains("generation 1: OPEN") && t.contains("missing alpha"), "{t}");
    assert!(t.contains("to complete generation 1"), "{t}");
    let out = crossback(&s.cfg).args(["backup", "beta"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("beta is in generation 1 already"), "{}", text(&out));
    let out = ok(crossback(&s.cfg).arg("backup"));
    assert!(text(&out).contains("continuing generation 1") && text(&out).contains("sealed: complete"), "{}", text(&out));
    // --new-generation abandons an open one and starts again in the same slot.
    ok(crossback(&s.cfg).args(["backup", "alpha"]));
    let out = ok(crossback(&s.cfg).args(["backup", "--new-generation", "alpha"]));
    assert!(text(&out).contains("generation 3 started in slot B"), "{}", text(&out));
}

#[test]
fn root_foreign_files_and_other_media_are_refused() {
    if !require_root("root_foreign_files_and_other_media_are_refused") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    // A file crossback did not write, in the slot the next backup would wipe.
    s.m.slot_b.mount(&[]);
    std::fs::write(s.m.slot_b.path().join("my-photos.tar"), "mine").unwrap();
    s.m.slot_b.unmount();
    let out = crossback(&s.cfg).arg("backup").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("slot B holds files crossback did not write: my-photos.tar"), "{}", text(&out));
    s.m.slot_b.mount(&[]);
    assert_eq!(std::fs::read_to_string(s.m.slot_b.path().join("my-photos.tar")).unwrap(), "mine");
    std::fs::remove_file(s.m.slot_b.path().join("my-photos.tar")).unwrap();
    // Another media's marker.
    let marker = s.m.slot_b.path().join("crossback/slot.toml");
    let t = std::fs::read_to_string(&marker).unwrap();
    let other =
        t.lines().map(|l| if l.starts_with("media_id") { "media_id = \"0000othermedia\"".to_string() } else { l.to_string() }).collect::<Vec<_>>().join("\n");
    std::fs::write(&marker, other).unwrap();
    s.m.slot_b.unmount();
    let out = crossback(&s.cfg).arg("backup").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("slot B belongs to another backup media"), "{}", text(&out));
    // A missing slot.
    let cfg2 = s.cfg.with_file_name("c2.toml");
    std::fs::write(&cfg2, std::fs::read_to_string(&s.cfg).unwrap().replace(&s.m.slot_b.uuid(), "0a1b2c3d-0000-4000-8000-00000000dead")).unwrap();
    let out = crossback(&cfg2).arg("backup").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("slot B (UUID=0a1b2c3d-0000-4000-8000-00000000dead) is not attached"), "{}", text(&out));
    let _ = run(&mut Command::new("true"));
}

#[test]
fn root_media_prepare_refuses_what_is_not_an_empty_filesystem() {
    if !require_root("root_media_prepare_refuses_what_is_not_an_empty_filesystem") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    // A filesystem of a system.
    let out = crossback(&cfg).args(["media", "prepare", &m.alpha_home.device, &m.slot_b.device]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is part of system alpha"), "{}", text(&out));
    // The same device twice.
    let out = crossback(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_a.device]).output().unwrap();
    assert!(text(&out).contains("are the same device"), "{}", text(&out));
    // A filesystem holding files.
    m.slot_b.mount(&[]);
    std::fs::write(m.slot_b.path().join("vacation.jpg"), "x").unwrap();
    m.slot_b.unmount();
    let out = crossback(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is not empty: it holds vacation.jpg"), "{}", text(&out));
    assert_eq!(common::kind(&out), "slot-holds-foreign-files", "{}", text(&out));
    // Both slots are checked before either is written: slot A, fine on
    // its own, was not made a slot by the refused run.
    let empty_a = |m: &mut TestMachine| {
        m.slot_a.mount(&["ro"]);
        let left: Vec<_> = std::fs::read_dir(m.slot_a.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).filter(|n| n != "lost+found").collect();
        m.slot_a.unmount();
        left
    };
    assert_eq!(empty_a(&mut m), Vec::<std::ffi::OsString>::new(), "slot A untouched");
    // No filesystem at all, without and with --mkfs.
    let raw = LoopFs::new("ext4", 64);
    let mut raw = raw;
    raw.unmount();
    run(Command::new("wipefs").args(["-a", "-q"]).arg(&raw.device));
    let out = crossback(&cfg).args(["media", "prepare", &m.slot_a.device, &raw.device]).output().unwrap();
    assert!(text(&out).contains("holds no filesystem") && text(&out).contains("--mkfs"), "{}", text(&out));
    assert_eq!(common::kind(&out), "unsupported", "{}", text(&out));
    let out = crossback(&cfg).args(["media", "prepare", "--mkfs", &m.slot_a.device, &raw.device]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "--mkfs asks first: {}", text(&out));
    assert_eq!(common::kind(&out), "not-confirmed", "{}", text(&out));
    // The same for an encrypted media: refused before any key is made.
    let out = crossback(&cfg).args(["media", "prepare", "--encrypt", &m.slot_a.device, &raw.device]).output().unwrap();
    assert_eq!(common::kind(&out), "unsupported", "{}", text(&out));
    let out = crossback(&cfg).args(["media", "prepare", "--encrypt", "--mkfs", &m.slot_a.device, &raw.device]).output().unwrap();
    assert_eq!(common::kind(&out), "not-confirmed", "{}", text(&out));
    assert_eq!(empty_a(&mut m), Vec::<std::ffi::OsString>::new(), "slot A untouched");
    let probe = Command::new("blkid").args(["-p", "-o", "value", "-s", "TYPE"]).arg(&raw.device).output().unwrap();
    assert!(String::from_utf8_lossy(&probe.stdout).trim().is_empty(), "--mkfs without a yes formatted nothing");
    assert!(!std::fs::read_to_string(&cfg).unwrap().contains("[media]"), "nothing recorded");
    ok(crossback(&cfg).args(["media", "prepare", "--mkfs", "--yes", "--label", "bk", &m.slot_a.device, &raw.device]));
    assert_eq!(raw.label(), "bk-B");
    // Preparing again is fine (same media), and the config names both slots.
    ok(crossback(&cfg).args(["media", "prepare", &m.slot_a.device, &raw.device]));
    let c = std::fs::read_to_string(&cfg).unwrap();
    assert!(c.contains(&m.slot_a.uuid()) && c.contains(&raw.uuid()), "{c}");
}

#[test]
fn root_unreadable_slots_are_refused_and_nothing_is_written() {
    if !require_root("root_unreadable_slots_are_refused_and_nothing_is_written") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    // Both slots' metadata destroyed: blkid still finds them, the kernel cannot mount them.
    for slot in [&s.m.slot_a, &s.m.slot_b] {
        run(Command::new("dd").args(["if=/dev/zero", "bs=1024", "seek=2", "count=1024", "conv=notrunc", "status=none"]).arg(format!("of={}", slot.device)));
        run(Command::new("blockdev").arg("--flushbufs").arg(&slot.device));
    }
    let sums = |m: &TestMachine| -> Vec<String> { [&m.slot_a.image, &m.slot_b.image].iter().map(|i| run(Command::new("sha256sum").arg(i))).collect() };
    let before = sums(&s.m);
    let out = crossback(&s.cfg).arg("backup").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("error[slot-damaged]") && text(&out).contains("slot A") && text(&out).contains("check it with fsck"), "{}", text(&out));
    let out = crossback(&s.cfg).arg("verify").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("cannot be mounted"), "{}", text(&out));
    assert_eq!(before, sums(&s.m), "nothing was written to the slots");
}

#[test]
fn root_status_warns_about_old_and_long_open_generations() {
    if !require_root("root_status_warns_about_old_and_long_open_generations") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    ok(crossback(&s.cfg).args(["backup", "beta"]));
    // Age both generations by hand: sealed a year ago, open for a month.
    for (slot, from, to) in
        [(&mut s.m.slot_a, "sealed = \"", "sealed = \"2025-01-01T00:00:00Z\"\n#"), (&mut s.m.slot_b, "started = \"", "started = \"2026-10-01T00:00:00Z\"\n#")]
    {
        slot.mount(&[]);
        let gen =
            std::fs::read_dir(slot.path().join("crossback")).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("gen-")).unwrap().path();
        let t = std::fs::read_to_string(gen.join("generation.toml")).unwrap();
        let t: String = t.lines().map(|l| if l.starts_with(from) { to.replace('#', "") } else { format!("{l}\n") }).collect();
        std::fs::write(gen.join("generation.toml"), t).unwrap();
        slot.unmount();
    }
    let out = ok(crossback(&s.cfg).arg("status"));
    let t = text(&out);
    assert!(t.contains("generation 2 has been open for") && t.contains("days"), "{t}");
    assert!(t.contains("the newest complete backup (generation 1) is") && t.contains("days old"), "{t}");
}

/// The second system and a rescue system need the same configuration: every
/// backup leaves a copy on the media, and `init` where there is no
/// configuration yet takes it (the user had to dig it out of a backup).
#[test]
fn root_init_takes_the_configuration_from_the_media() {
    if !require_root("root_init_takes_the_configuration_from_the_media") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let s = setup();
    // A comment of the user's, which the copy keeps.
    let mut original = std::fs::read_to_string(&s.cfg).unwrap();
    original.push_str("# kept by the copy\n");
    std::fs::write(&s.cfg, &original).unwrap();
    ok(crossback(&s.cfg).arg("backup"));
    let elsewhere = s._dir.path().join("rescue.toml");
    let out = ok(crossback(&elsewhere).args(["init", "--devices", &s.m.devices_arg()]));
    assert!(text(&out).contains("took the configuration from the backup media"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), original);
    ok(crossback(&elsewhere).args(["ls", "alpha", "/home"]));
    // Opting out makes a fresh one, without the media.
    let fresh = s._dir.path().join("fresh.toml");
    ok(crossback(&fresh).args(["init", "--ignore-media", "--devices", &s.m.devices_arg()]));
    assert!(!std::fs::read_to_string(&fresh).unwrap().contains("[media]"));
}

#[test]
fn root_a_filesystem_this_system_has_mounted_is_read_through_a_view() {
    if !require_root("root_a_filesystem_this_system_has_mounted_is_read_through_a_view") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    // alpha's /home mounted read-write here, as a running system has the
    // ESP it shares with the other one: backed up through a read-only view.
    s.m.alpha_home.mount(&[]);
    std::fs::write(s.m.alpha_home.path().join("ann/live.txt"), "written while mounted\n").unwrap();
    let out = crossback(&s.cfg).args(["backup", "alpha"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("alpha's /home") && e.contains("read-only view of that mount"), "{e}");
    // The writer was not disturbed: still writable, the device not read-only.
    std::fs::write(s.m.alpha_home.path().join("ann/after.txt"), "still writable\n").unwrap();
    let dev = std::path::Path::new(&s.m.alpha_home.device).file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(std::fs::read_to_string(format!("/sys/class/block/{dev}/ro")).unwrap().trim(), "0");
    s.m.alpha_home.unmount();
    let dest = s._dir.path().join("r");
    ok(crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&dest).arg("/home/ann"));
    assert_eq!(std::fs::read_to_string(dest.join("home/ann/live.txt")).unwrap(), "written while mounted\n");
    assert!(!dest.join("home/ann/after.txt").exists());

    // The root of a system mounted read-write is the system in use: refused,
    // and nothing on the slots changes.
    let before = (generations(&mut s.m.slot_a), generations(&mut s.m.slot_b));
    s.m.beta.mount(&[]);
    let out = crossback(&s.cfg).args(["backup", "beta"]).output().unwrap();
    s.m.beta.unmount();
    assert_eq!(out.status.code(), Some(1), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(common::kind(&out), "system-mounted", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(before, (generations(&mut s.m.slot_a), generations(&mut s.m.slot_b)));
}
