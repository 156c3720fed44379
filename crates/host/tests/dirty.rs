//! Filesystems that were not cleanly unmounted are recognised before any
//! mount could replay their journals: ext4, xfs, btrfs. Needs root.

use crossback_host::offline::dirty;
use crossback_testkit::{require_root, LoopFs};

/// A filesystem with a file written while mounted, then its image copied
/// while still mounted: what a disk holds after a crash.
fn crashed(fstype: &str, size_mib: u64) -> LoopFs {
    let mut fs = LoopFs::new(fstype, size_mib);
    // fsync'd files: their metadata is in the journal (ext4), the log (xfs)
    // or the log tree (btrfs), not yet checkpointed.
    for i in 0..20 {
        let mut f = std::fs::File::create(fs.path().join(format!("f{i}"))).unwrap();
        std::io::Write::write_all(&mut f, &vec![7u8; 64 << 10]).unwrap();
        f.sync_all().unwrap();
    }
    fs.replace_with_copy_taken_while_mounted();
    fs
}

#[test]
fn root_dirty_filesystems_are_recognised() {
    if !require_root("root_dirty_filesystems_are_recognised") {
        return;
    }
    for (fstype, size) in [("ext4", 64), ("xfs", 320), ("btrfs", 256)] {
        let clean = LoopFs::new(fstype, size);
        let mut clean = clean;
        clean.unmount();
        assert_eq!(dirty(std::path::Path::new(&clean.device), fstype).unwrap(), None, "{fstype}: a clean filesystem");
        let d = crashed(fstype, size);
        let why = dirty(std::path::Path::new(&d.device), fstype).unwrap();
        assert!(why.is_some(), "{fstype}: a copy taken while mounted must need recovery");
    }
}
