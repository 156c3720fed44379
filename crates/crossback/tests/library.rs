//! The program's logic reached as a library, without root and without
//! spawning the binary: the slot's reading, its owner check and the
//! configuration's checks, on temporary directories.

use crossback::error::{kind_of, Refusal};
use crossback::layout::{classify, Marker, SlotId, SlotWriter};
use crossback_host::beneath::Dir;

fn prepared(media: &str, slot: SlotId) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let root = Dir::open(t.path()).unwrap();
    SlotWriter::prepare(&root, &Marker::new(media, slot), None).unwrap();
    t
}

#[test]
fn a_prepared_slot_reads_as_its_media_and_letter() {
    let t = prepared("m1", SlotId::A);
    let view = classify(&Dir::open(t.path()).unwrap()).unwrap().expect("a slot");
    view.check_owner(SlotId::A, "m1").unwrap();
    let other = view.check_owner(SlotId::A, "m2").unwrap_err();
    assert_eq!(kind_of(&other), Some(Refusal::SlotOfAnotherMedia), "{other:#}");
    let swapped = view.check_owner(SlotId::B, "m1").unwrap_err();
    assert_eq!(kind_of(&swapped), Some(Refusal::SlotOfAnotherMedia), "{swapped:#}");
}

#[test]
fn files_planted_on_a_slot_are_named_and_refused() {
    let t = prepared("m1", SlotId::B);
    std::fs::write(t.path().join("photos.tar"), "the user's").unwrap();
    let view = classify(&Dir::open(t.path()).unwrap()).unwrap().expect("still a slot");
    let err = view.check_owner(SlotId::B, "m1").unwrap_err();
    assert_eq!(kind_of(&err), Some(Refusal::SlotHoldsForeignFiles), "{err:#}");
    assert!(format!("{err:#}").contains("photos.tar"), "{err:#}");
    assert_eq!(std::fs::read_to_string(t.path().join("photos.tar")).unwrap(), "the user's", "reading it changed nothing");
}

#[test]
fn a_directory_without_a_marker_is_no_slot_and_its_names_are_given() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("home")).unwrap();
    let names = classify(&Dir::open(t.path()).unwrap()).unwrap().expect_err("not a slot");
    assert_eq!(names, ["home"]);
}

#[test]
fn a_configuration_naming_one_root_twice_is_refused_with_its_line() {
    let text = "[[system]]\nname = \"a\"\nroot = \"11111111-2222-3333-4444-555555555555\"\n\n[[system]]\nname = \"b\"\nroot = \"11111111-2222-3333-4444-555555555555\"\n";
    let err = crossback::config::Config::parse(text, std::path::Path::new("/etc/crossback.toml")).unwrap_err();
    assert_eq!(kind_of(&err), Some(Refusal::Config), "{err:#}");
    assert!(format!("{err:#}").contains("line 7"), "{err:#}");
}

#[test]
fn the_rescue_s_crossback_is_replaced_only_when_it_differs_and_its_record_says_so() {
    use crossback::layout::{read_rescue, refresh_rescue_tool};
    let t = tempfile::tempdir().unwrap();
    let part = t.path().join("partition");
    std::fs::create_dir_all(part.join("crossback")).unwrap();
    let old =
        "built = \"2026-01-01T00:00:00Z\"\ncrossback = \"0.0.1\"\ncrossback_hash = \"an older one\"\nkernel = \"6.1.0-test\"\nsecure_boot = true\nbytes = 1\n";
    std::fs::write(part.join("crossback/rescue.toml"), old).unwrap();
    std::fs::write(part.join("crossback/crossback"), "the older crossback").unwrap();
    let exe = t.path().join("crossback-new");
    std::fs::write(&exe, "the newer crossback").unwrap();

    assert_eq!(refresh_rescue_tool(&part, &exe, "9.9.9").unwrap().as_deref(), Some("9.9.9"));
    assert_eq!(std::fs::read_to_string(part.join("crossback/crossback")).unwrap(), "the newer crossback");
    let rec = read_rescue(&Dir::open(&part).unwrap()).unwrap().unwrap();
    assert_eq!((rec.crossback.as_str(), rec.built.as_str(), rec.kernel.as_str()), ("9.9.9", "2026-01-01T00:00:00Z", "6.1.0-test"));
    assert_eq!(rec.crossback_hash, blake3::hash(b"the newer crossback").to_hex().to_string());
    assert!(rec.refreshed.is_some());
    assert!(!part.join("crossback/crossback.partial").exists() && !part.join("crossback/rescue.toml.partial").exists());

    // Current: nothing written.
    std::fs::write(part.join("crossback/crossback"), "left as it is").unwrap();
    assert_eq!(refresh_rescue_tool(&part, &exe, "9.9.9").unwrap(), None);
    assert_eq!(std::fs::read_to_string(part.join("crossback/crossback")).unwrap(), "left as it is");

    // A record that does not read, or none: refused, the binary untouched.
    std::fs::write(part.join("crossback/rescue.toml"), "crossback = [1, 2]\n").unwrap();
    std::fs::write(&exe, "a third crossback").unwrap();
    let err = refresh_rescue_tool(&part, &exe, "9.9.10").unwrap_err();
    assert!(format!("{err:#}").contains("does not read"), "{err:#}");
    std::fs::remove_file(part.join("crossback/rescue.toml")).unwrap();
    let err = refresh_rescue_tool(&part, &exe, "9.9.10").unwrap_err();
    assert!(format!("{err:#}").contains("not a rescue"), "{err:#}");
    assert_eq!(std::fs::read_to_string(part.join("crossback/crossback")).unwrap(), "left as it is");
}
