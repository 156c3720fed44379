//! What people read — `init`, `backup`, `status`, `ls` — pinned as
//! snapshots (insta), with UUIDs, devices, times and sizes redacted.
//! These tests need root.

use std::path::Path;
use std::process::Command;

use crossback_testkit::machine::TestMachine;
use crossback_testkit::require_root;

fn run(config: &Path, args: &[&str]) -> String {
    // What this system keeps (status's "on this system") beside the configuration, for this test alone.
    let here = config.with_file_name("system-root");
    let out = Command::new(env!("CARGO_BIN_EXE_crossback"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .env("CROSSBACK_SYSTEM_ROOT", here)
        .output()
        .expect("running crossback");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[UUID]"),
        (r"\b[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}\b", "[VFAT-ID]"),
        (r"\b[0-9a-f]{32}\b", "[MEDIA-ID]"),
        (r"/dev/loop\d+", "/dev/loopN"),
        (r"/tmp/\.tmp\w+", "[TMP]"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]"),
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "[TIME]"),
        (r"\d+(\.\d+)? (B|KiB|MiB|GiB)\b", "[SIZE]"),
        (r"\d+\.\ds\b", "[SECS]"),
        (r"\(\d+ (seconds|minutes|hours|days) ago\)", "([AGE] ago)"),
    ]
}

#[test]
fn root_what_people_read() {
    if !require_root("root_what_people_read") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let init = run(&cfg, &["init", "--yes", "--devices", &m.devices_arg()]);
    run(&cfg, &["media", "prepare", &m.slot_a.device, &m.slot_b.device]);
    let backup_beta = run(&cfg, &["backup", "beta"]);
    let status_open = run(&cfg, &["status"]);
    let backup_rest = run(&cfg, &["backup"]);
    let status = run(&cfg, &["status"]);
    // The archive lists in directory order, which depends on each mkfs's hash seed: sort.
    let mut ls_lines: Vec<String> = run(&cfg, &["ls", "alpha", "/home"]).lines().map(str::to_string).collect();
    ls_lines.sort_by(|a, b| a.rsplit(' ').next().cmp(&b.rsplit(' ').next()));
    let ls = ls_lines.join("\n");
    insta::with_settings!({ filters => filters() }, {
        insta::assert_snapshot!("init", init);
        insta::assert_snapshot!("backup_beta", backup_beta);
        insta::assert_snapshot!("status_open", status_open);
        insta::assert_snapshot!("backup_rest", backup_rest);
        insta::assert_snapshot!("status_sealed", status);
        insta::assert_snapshot!("ls", ls);
    });
}
