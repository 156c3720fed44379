//! What crossback reads about LUKS and LVM, checked against the
//! real tools' output captured in the lab's encrypted PC (`scripts/lab.sh
//! luks-boot` prints it: `lab-dump:` lines; saved under fixtures/lab-luks):
//! cryptsetup 2.7 and lvm2 2.03 of Debian 13, B in LVM (vgb: root, swap) on
//! LUKS2. Each report is checked against the others, not against itself.

use std::path::Path;

use crossback_host::layers::{self, DmKind};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-luks").join(name)).unwrap()
}

#[test]
fn the_lab_containers_reports_agree_with_each_other() {
    let luks = layers::parse_luks2_json(&fixture("luksdump.json")).unwrap();
    // luksFormat's default LUKS2 header: 16 MiB before the data; slot 0 the
    // passphrase, slot 1 the initramfs's key file, both PBKDF2 (the lab's cheap KDF).
    assert_eq!(luks.data_offset, 16 << 20);
    assert_eq!(luks.keyslots, [0, 1]);
    assert_eq!(luks.kdfs, ["pbkdf2", "pbkdf2"]);
    assert_eq!(luks.cipher, "aes-xts-plain64");

    let pvs = layers::parse_pvs(&fixture("pvs.json")).unwrap();
    let vgs = layers::parse_vgs(&fixture("vgs.json")).unwrap();
    let lvs = layers::parse_lvs(&fixture("lvs.json")).unwrap();
    assert_eq!(pvs.len(), 1);
    assert_eq!((pvs[0].device.as_str(), pvs[0].vg.as_str()), ("/dev/mapper/b_crypt", "vgb"));
    assert_eq!(vgs.len(), 1);
    assert_eq!(vgs[0].extent_size, 4 << 20);
    assert_eq!(lvs.iter().map(|l| (l.name.as_str(), l.kind)).collect::<Vec<_>>(), [("root", '-'), ("swap", '-')]);
    // The volumes fill the group (swap 128 MiB, root the rest).
    assert_eq!(lvs.iter().map(|l| l.size).sum::<u64>(), vgs[0].size);
    assert_eq!(lvs[1].size, 128 << 20);

    // sysfs names each mapping by UUID: the same UUIDs the tools report.
    let luks_uuid = fixture("luks-uuid.txt").trim().to_string();
    let sysfs = fixture("sysfs.txt");
    let mut seen = Vec::new();
    for line in sysfs.lines() {
        let field = |k: &str| line.split_whitespace().find_map(|f| f.strip_prefix(k)).unwrap_or("").to_string();
        match layers::dm_kind(&field("uuid=")) {
            DmKind::Luks { version, uuid } => {
                assert_eq!((version, uuid.as_str(), field("name=").as_str()), (2, luks_uuid.as_str(), "b_crypt"));
                seen.push("b_crypt".to_string());
            }
            DmKind::Lv { vg_uuid, lv_uuid } => {
                assert_eq!(vg_uuid, vgs[0].uuid);
                let lv = lvs.iter().find(|l| l.uuid == lv_uuid).expect("an LV lvs reports");
                assert_eq!(field("name="), format!("vgb-{}", lv.name));
                seen.push(lv.name.clone());
            }
            DmKind::Other(u) => panic!("unexpected mapping {u}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["b_crypt", "root", "swap"]);
}

#[test]
fn the_lab_stack_below_root_from_its_sysfs() {
    // The captured sysfs lines made into a tree.
    let t = tempfile::tempdir().unwrap();
    let b = t.path().join("class/block");
    for line in fixture("sysfs.txt").lines() {
        let mut f = line.split_whitespace();
        let dev = f.next().unwrap();
        let d = b.join(dev);
        std::fs::create_dir_all(d.join("dm")).unwrap();
        std::fs::create_dir_all(d.join("slaves")).unwrap();
        for kv in f {
            match kv.split_once('=') {
                Some(("name", v)) => std::fs::write(d.join("dm/name"), v).unwrap(),
                Some(("uuid", v)) => std::fs::write(d.join("dm/uuid"), v).unwrap(),
                Some(("slaves", v)) => std::fs::create_dir_all(d.join("slaves").join(v)).unwrap(),
                _ => std::fs::create_dir_all(d.join("slaves").join(kv)).unwrap(),
            }
        }
    }
    std::fs::create_dir_all(b.join("vda5")).unwrap();
    let root = layers::stack_of(t.path(), "dm-2").unwrap();
    assert_eq!(root.iter().map(|l| l.dm_name.as_str()).collect::<Vec<_>>(), ["vgb-root", "b_crypt", ""]);
    assert_eq!(root[2].name, "vda5");
}
