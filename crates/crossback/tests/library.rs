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
