//! The backup at reboot and the schedule, on the machine's side
//! that needs no reboot: refusals (with nothing written), the fail-safe
//! steps of the backup's boot, the files `schedule` installs. Everything is
//! written under `$CROSSBACK_SYSTEM_ROOT` (a temporary directory), where
//! crossback starts no unit and reboots nothing. The boots themselves are
//! the lab's (`scripts/lab.sh self`, `plug`). These tests need root.

mod common;
use common::{crossback, err, kind, ok};
use std::path::{Path, PathBuf};
use std::process::Command;

use crossback_testkit::require_root;

const SLOT_A: &str = "0a1b2c3d-0000-4000-8000-00000000aaaa";
const SLOT_B: &str = "0a1b2c3d-0000-4000-8000-00000000bbbb";

/// A configuration naming a media whose slots are not attached, and one
/// system that is not this machine's.
fn world() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("[media]\nid = \"m1\"\nslot_a = \"{SLOT_A}\"\nslot_b = \"{SLOT_B}\"\nencrypted = false\n\n[[system]]\nname = \"alpha\"\nroot = \"0a1b2c3d-0000-4000-8000-000000000001\"\n"),
    )
    .unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    (dir, cfg, root)
}

fn under(root: &Path, cfg: &Path) -> Command {
    let mut c = crossback(cfg);
    c.env("CROSSBACK_SYSTEM_ROOT", root);
    c
}

/// Every file and link below `root`, with a link's target: what a refusal must leave as it was.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if md.is_symlink() {
                out.push(format!("{rel} -> {}", std::fs::read_link(&p).unwrap().display()));
            } else if md.is_dir() {
                out.push(format!("{rel}/"));
                todo.push(p);
            } else {
                out.push(format!("{rel} {}", std::fs::read_to_string(&p).unwrap_or_default().len()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn root_at_reboot_refusals_change_nothing() {
    if !require_root("root_at_reboot_refusals_change_nothing") {
        return;
    }
    let (_dir, cfg, root) = world();
    // Another tool's offline update is armed: refused, its link kept.
    std::os::unix::fs::symlink("/var/cache/PackageKit", root.join("system-update")).unwrap();
    let before = listing(&root);
    let out = under(&root, &cfg).args(["backup", "--at-reboot", "--no-reboot"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert_eq!(kind(&out), "update-pending", "{}", err(&out));
    assert!(err(&out).contains("/var/cache/PackageKit"), "{}", err(&out));
    assert_eq!(listing(&root), before);

    // The running system is not a configured one: refused, nothing written.
    std::fs::remove_file(root.join("system-update")).unwrap();
    let before = listing(&root);
    let out = under(&root, &cfg).args(["backup", "--at-reboot", "--no-reboot"]).output().unwrap();
    assert_eq!(kind(&out), "unknown-system", "{}", err(&out));
    assert!(err(&out).contains("the running system is not one of the systems"), "{}", err(&out));
    assert_eq!(listing(&root), before);

    // A system that is not in the configuration.
    let out = under(&root, &cfg).args(["backup", "--at-reboot", "--no-reboot", "gamma"]).output().unwrap();
    assert_eq!(kind(&out), "unknown-system", "{}", err(&out));
    assert_eq!(listing(&root), before);

    // No media configured.
    let bare = cfg.with_file_name("bare.toml");
    std::fs::write(&bare, "[[system]]\nname = \"alpha\"\nroot = \"0a1b2c3d-0000-4000-8000-000000000001\"\n").unwrap();
    for args in [&["backup", "--at-reboot"][..], &["schedule"][..]] {
        let out = under(&root, &bare).args(args).output().unwrap();
        assert_eq!(kind(&out), "config", "{args:?}: {}", err(&out));
    }
    assert_eq!(listing(&root), before);

    // --cancel with nothing armed, and with another tool's link: it stays.
    std::os::unix::fs::symlink("/var/cache/PackageKit", root.join("system-update")).unwrap();
    let before = listing(&root);
    let out = ok(under(&root, &cfg).args(["backup", "--at-reboot", "--cancel"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no backup at reboot was armed"));
    assert_eq!(listing(&root), before);
}

/// An armed job as `backup --at-reboot` leaves it (its writing is the lab's:
/// it needs the running system configured).
fn arm(root: &Path, disk_wait: u64) {
    let state = root.join("var/lib/crossback");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("at-reboot.toml"),
        format!("armed = \"2026-11-27T10:00:00Z\"\nsystems = []\ntime_limit_min = 30\ndisk_wait_secs = {disk_wait}\n"),
    )
    .unwrap();
    let wants = root.join("etc/systemd/system/system-update.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink("../crossback-at-reboot.service", wants.join("crossback-at-reboot.service")).unwrap();
    std::os::unix::fs::symlink("/var/lib/crossback", root.join("system-update")).unwrap();
}

#[test]
fn root_the_backup_boot_without_the_disk_removes_its_trigger_and_records_why() {
    if !require_root("root_the_backup_boot_without_the_disk_removes_its_trigger_and_records_why") {
        return;
    }
    let (_dir, cfg, root) = world();
    arm(&root, 1);
    let out = under(&root, &cfg).args(["at-reboot-job", "run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", err(&out));
    assert_eq!(kind(&out), "slot-missing", "{}", err(&out));
    // The next boot is a normal one: the link and the unit's wants-link are gone; the job too.
    assert!(std::fs::symlink_metadata(root.join("system-update")).is_err());
    assert!(std::fs::symlink_metadata(root.join("etc/systemd/system/system-update.target.wants/crossback-at-reboot.service")).is_err());
    assert!(!root.join("var/lib/crossback/at-reboot.toml").exists());
    let result = std::fs::read_to_string(root.join("var/lib/crossback/at-reboot-result.toml")).unwrap();
    assert!(result.contains("ok = false") && result.contains("the backup disk did not appear within 1 s"), "{result}");
    // finish: nothing left to thaw or record; says how it ended.
    let out = ok(under(&root, &cfg).args(["at-reboot-job", "finish"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backup at reboot FAILED: the backup disk did not appear"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // status shows it.
    let out = under(&root, &cfg).args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", err(&out)));
    assert_eq!(v["here"]["at_reboot_last"]["ok"], false);
    assert!(v["here"]["at_reboot_armed"].is_null());

    // Another tool's link in place of crossback's: the run leaves it alone.
    arm(&root, 1);
    std::fs::remove_file(root.join("system-update")).unwrap();
    std::os::unix::fs::symlink("/var/cache/PackageKit", root.join("system-update")).unwrap();
    let _ = under(&root, &cfg).args(["at-reboot-job", "run"]).output().unwrap();
    assert_eq!(std::fs::read_link(root.join("system-update")).unwrap(), Path::new("/var/cache/PackageKit"));
}

#[test]
fn root_a_backup_boot_stopped_by_its_time_limit_is_recorded_by_finish() {
    if !require_root("root_a_backup_boot_stopped_by_its_time_limit_is_recorded_by_finish") {
        return;
    }
    let (_dir, cfg, root) = world();
    arm(&root, 1);
    // `run` was killed after it started: only its start note is there.
    let run = root.join("run/crossback/at-reboot");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("started"), "2026-11-27T10:01:00Z").unwrap();
    let out = ok(under(&root, &cfg).args(["at-reboot-job", "finish"]).env("SERVICE_RESULT", "timeout"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED: stopped: the time limit of 30 minutes passed"), "{}", String::from_utf8_lossy(&out.stdout));
    let result = std::fs::read_to_string(root.join("var/lib/crossback/at-reboot-result.toml")).unwrap();
    assert!(result.contains("ok = false") && result.contains("started = \"2026-11-27T10:01:00Z\""), "{result}");
    assert!(!root.join("var/lib/crossback/at-reboot.toml").exists(), "the job is done with");
    assert!(!run.join("started").exists());
}

#[test]
fn root_at_reboot_job_without_a_job_does_nothing() {
    if !require_root("root_at_reboot_job_without_a_job_does_nothing") {
        return;
    }
    let (_dir, cfg, root) = world();
    let out = ok(under(&root, &cfg).args(["at-reboot-job", "run"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no backup at reboot is armed"));
    assert!(listing(&root).is_empty(), "{:?}", listing(&root));
}

#[test]
fn schedule_check_reminds_from_what_this_system_last_saw() {
    let (_dir, cfg, root) = world();
    // Nothing seen yet.
    let out = ok(under(&root, &cfg).args(["schedule", "--check"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Backup reminder: no backup of this machine is known here"));
    // A generation sealed long ago.
    let state = root.join("var/lib/crossback");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("history.toml"), "seen = \"2020-01-02T00:00:00Z\"\nsealed_seq = 3\nsealed = \"2020-01-01T00:00:00Z\"\nopen_missing = []\n")
        .unwrap();
    let out = ok(under(&root, &cfg).args(["schedule", "--check", "--remind-after", "10"]));
    let o = String::from_utf8_lossy(&out.stdout);
    assert!(o.contains("Backup reminder: the newest complete backup (generation 3) is ") && o.contains("plug in the backup disk"), "{o}");
    // A damaged state file: said, with what to do.
    std::fs::write(state.join("history.toml"), "sealed = [").unwrap();
    let out = under(&root, &cfg).args(["schedule", "--check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("remove it if it is damaged"), "{}", err(&out));
}

#[test]
fn root_schedule_installs_the_rule_and_units_and_off_removes_them() {
    if !require_root("root_schedule_installs_the_rule_and_units_and_off_removes_them") {
        return;
    }
    let (dir, cfg, root) = world();
    // A plain media is scheduled for plug-in backups only by
    // the user's choice; refused, nothing installed, without it.
    let out = under(&root, Path::new("config.toml")).current_dir(dir.path()).args(["schedule", "--remind-after", "14"]).output().unwrap();
    assert_eq!((out.status.code(), kind(&out).as_str()), (Some(1), "not-encrypted"), "{}", err(&out));
    assert!(!root.join("etc/udev/rules.d/90-crossback.rules").exists() && !root.join("etc/systemd/system/crossback-plugged.service").exists());
    // Given relatively, the configuration is named by its whole path in the units.
    let out = ok(under(&root, Path::new("config.toml")).current_dir(dir.path()).args(["schedule", "--unencrypted", "--remind-after", "14"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a reminder when the newest complete backup is older than 14 days"));
    let rule = std::fs::read_to_string(root.join("etc/udev/rules.d/90-crossback.rules")).unwrap();
    for uuid in [SLOT_A, SLOT_B] {
        assert!(rule.contains(&format!("ENV{{ID_FS_UUID}}==\"{uuid}\"")), "{rule}");
    }
    let units = root.join("etc/systemd/system");
    let plugged = std::fs::read_to_string(units.join("crossback-plugged.service")).unwrap();
    assert!(plugged.contains(&format!("--config {} backup --plugged --unencrypted\n", cfg.display())), "{plugged}");
    let remind = std::fs::read_to_string(units.join("crossback-remind.service")).unwrap();
    assert!(remind.contains("schedule --check --remind-after 14"), "{remind}");
    assert!(units.join("crossback-remind.timer").exists());
    let out = under(&root, &cfg).args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", err(&out)));
    assert_eq!(v["here"]["schedule"]["remind_after_days"], 14);
    assert_eq!(v["here"]["schedule"]["slot_a"], SLOT_A);

    // --push needs a remote; refused without one, nothing changed.
    let before = listing(&root);
    let out = under(&root, &cfg).args(["schedule", "--unencrypted", "--push"]).output().unwrap();
    assert_eq!((out.status.code(), kind(&out).as_str()), (Some(2), "usage"), "{}", err(&out));
    assert_eq!(
        listing(&root).into_iter().filter(|l| !l.contains("schedule.toml")).collect::<Vec<_>>(),
        before.into_iter().filter(|l| !l.contains("schedule.toml")).collect::<Vec<_>>()
    );
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[[remote]]\nname = \"offsite\"\nurl = \"s3://bucket/backups\"\nmachine = \"desk\"\nkey = \"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"\n");
    std::fs::write(&cfg, text).unwrap();
    let out = ok(under(&root, &cfg).args(["schedule", "--unencrypted", "--push"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("every hour, once the network is up and while the backup disk is attached: `crossback push` to offsite")
    );
    let push = std::fs::read_to_string(units.join("crossback-push.service")).unwrap();
    assert!(push.contains(&format!("--config {} push --if-attached\n", cfg.display())) && push.contains("After=network-online.target"), "{push}");
    assert!(units.join("crossback-push.timer").exists());
    let out = under(&root, &cfg).args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", err(&out)));
    assert_eq!(v["here"]["schedule"]["push"], true);
    // Scheduled again without --push: the timer goes.
    ok(under(&root, &cfg).args(["schedule", "--unencrypted"]));
    assert!(!units.join("crossback-push.timer").exists() && !units.join("crossback-push.service").exists());
    ok(under(&root, &cfg).args(["schedule", "--unencrypted", "--push"]));

    let out = ok(under(&root, &cfg).args(["schedule", "--off"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("schedule removed"));
    let left: Vec<String> = listing(&root).into_iter().filter(|l| !l.ends_with('/')).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let out = ok(under(&root, &cfg).args(["schedule", "--off"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing was scheduled"));
}
