//! A partition table written to a real disk (a loop device) by sfdisk keeps
//! each partition's number with its place, type and PARTUUID, also when
//! the numbers are not in disk order or have gaps. Needs root.

use std::path::Path;

use crossback_host::partitions::{self, Partition, Table};
use crossback_testkit::{require_root, LoopDisk};

fn part(number: u32, start: u64, size: u64, kind: &str, uuid: &str) -> Partition {
    Partition { number, start, size, kind: kind.into(), uuid: uuid.into(), name: format!("n{number}"), attrs: String::new(), bootable: false }
}

/// The ESP is partition 3 at the start of the disk, the root
/// partition 1 after it, and there is no partition 2.
#[test]
fn root_numbers_out_of_disk_order_stay_paired() {
    if !require_root("root_numbers_out_of_disk_order_stay_paired") {
        return;
    }
    let disk = LoopDisk::blank(64);
    let esp = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    let linux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    let t = Table {
        label: "gpt".into(),
        id: "D0B7A0C5-0000-4000-8000-000000000001".into(),
        sector_size: 512,
        sectors: 131_072,
        partitions: vec![
            part(3, 2048, 20_480, esp, "00000003-0000-4000-8000-000000000000"),
            part(1, 22_528, 40_960, linux, "00000001-0000-4000-8000-000000000000"),
        ],
    };
    partitions::write(Path::new(&disk.device), &t).unwrap();
    let back = partitions::read(Path::new(&disk.device)).unwrap().expect("a table");
    let mut got: Vec<(u32, u64, String, String)> = back.partitions.iter().map(|p| (p.number, p.start, p.kind.to_uppercase(), p.uuid.to_uppercase())).collect();
    got.sort();
    assert_eq!(
        got,
        [
            (1, 22_528, linux.to_string(), "00000001-0000-4000-8000-000000000000".to_string()),
            (3, 2048, esp.to_string(), "00000003-0000-4000-8000-000000000000".to_string())
        ]
    );
}
