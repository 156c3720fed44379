//! Property tests for the parsers of a system's own files (fstab,
//! os-release): whatever they hold, parsing never panics, and every mount
//! point that comes out is a plain absolute path (it is joined to a target
//! directory later). Fixed seed and number of cases; no root needed.

use crossback_host::fstab;
use proptest::prelude::*;

#[test]
fn fstab_parsing_never_panics_and_keeps_only_plain_mountpoints() {
    let mut r = crossback_testkit::fuzz_runner(1024);
    let field = prop_oneof![
        Just("UUID=0a1b2c3d-0000-4000-8000-000000000001".to_string()),
        Just("LABEL=x".to_string()),
        Just("/dev/sda1".to_string()),
        Just("/".to_string()),
        Just("/home/../../../../x".to_string()),
        Just("/a//b".to_string()),
        Just("/./c".to_string()),
        Just("ext4".to_string()),
        Just("swap".to_string()),
        Just("subvol=@,ro".to_string()),
        Just("\\040".to_string()),
        "[ -~]{0,12}",
        any::<String>(),
    ];
    let line = proptest::collection::vec(field, 0..8).prop_map(|f| f.join(" "));
    r.run(&proptest::collection::vec(line, 0..12), |lines| {
        let f = fstab::parse(&lines.join("\n"));
        for m in &f.mounts {
            prop_assert!(fstab::clean_mountpoint(&m.mountpoint), "{:?} came out of {:?}", m.mountpoint, lines);
        }
        for w in &f.warnings {
            prop_assert!(!w.chars().any(|c| c.is_control()), "a warning carries a control character: {w:?}");
        }
        Ok(())
    })
    .unwrap();
    r.run(&any::<String>(), |text| {
        let _ = crossback_host::inspect::parse_os_release(&text);
        let _ = fstab::parse(&text);
        Ok(())
    })
    .unwrap();
}
