//! The format, tested without root (temporary directories only): a tree
//! goes in and comes back, the container's parts (header, frames, index,
//! frame table, footer) are where the footer says, the frame stream seeks,
//! one file is read without reading the rest, and a hostile tar cannot
//! write outside the target. `cargo test -p crossback-archive` as a normal
//! user covers the format.

use std::io::Read;
use std::path::Path;

use crossback_archive::archive::Layout;
use crossback_archive::container::{read_trailer, Trailer, FOOTER_LEN};
use crossback_archive::extract::ExtractOptions;
use crossback_archive::{Archive, CreateOptions, Kind};

/// The tests of this file one at a time: one of them counts bytes read.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    for i in 0..200 {
        // Incompressible: frames have their real size.
        std::fs::write(root.join(format!("a/f{i:03}")), crossback_testkit::tree::noise(i as u64, 2000 + 37 * i)).unwrap();
    }
    std::fs::write(root.join("a/b/c/deep.txt"), "deep\n").unwrap();
    std::os::unix::fs::symlink("../f001", root.join("a/b/link")).unwrap();
    std::fs::hard_link(root.join("a/f002"), root.join("a/b/hard")).unwrap();
    // Sparse: a hole, then data.
    let f = std::fs::File::create(root.join("sparse")).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"tail", 8 << 20).unwrap();
}

fn make(dir: &Path, frame_size: usize) -> std::path::PathBuf {
    make_to(dir, frame_size, Vec::new())
}

fn make_to(dir: &Path, frame_size: usize, encrypt_to: Vec<age::x25519::Recipient>) -> std::path::PathBuf {
    let src = dir.join("src");
    tree(&src);
    let out = dir.join("a.tar.zst");
    let opts = CreateOptions { frame_size, encrypt_to, ..Default::default() };
    let r = crossback_archive::create(&src, std::fs::File::create(&out).unwrap(), &opts).unwrap();
    assert_eq!(r.summary.errors, 0);
    out
}

/// Extracts all of `archive` into `dir/out`, which must then equal `dir/src`.
fn extracts_whole(archive: &Archive, dir: &Path) -> std::path::PathBuf {
    let dest = dir.join("out");
    std::fs::create_dir(&dest).unwrap();
    let r = crossback_archive::extract(archive, &dest, &ExtractOptions::default()).unwrap();
    assert!(r.damaged.is_empty() && r.archive_problem.is_none(), "{:?}", r.damaged);
    // Ownership may not be settable as a normal user; everything else must be equal.
    let diffs: Vec<String> = crossback_testkit::compare::trees(&dir.join("src"), &dest).into_iter().filter(|d| !d.starts_with("owner")).collect();
    assert!(diffs.is_empty(), "{diffs:#?}");
    dest
}

#[test]
fn a_tree_goes_in_and_comes_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let a = make(t.path(), 64 << 10);
    let archive = Archive::open(&a).unwrap();
    let dest = extracts_whole(&archive, t.path());
    let v = crossback_archive::verify::verify(&archive, Some(&dest), None).unwrap();
    assert!(v.damaged.is_empty(), "{:?}", v.damaged);
}

/// A tree whose modes come from mount options (FAT) is compared
/// without owners and modes when asked; contents and the rest still count.
#[test]
fn a_comparison_can_leave_out_owners_and_modes() {
    use crossback_archive::verify::{verify_with, Compare};
    use std::os::unix::fs::PermissionsExt;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("loader.efi"), "loader\n").unwrap();
    std::fs::set_permissions(src.join("loader.efi"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = t.path().join("a.tar.zst");
    crossback_archive::create(&src, std::fs::File::create(&out).unwrap(), &CreateOptions::default()).unwrap();
    let archive = Archive::open(&out).unwrap();
    std::fs::set_permissions(src.join("loader.efi"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let all = verify_with(&archive, Some(&src), None, Compare::default()).unwrap();
    assert!(all.differences.iter().any(|(_, w)| w.starts_with("mode differs")), "{:?}", all.differences);
    let like = verify_with(&archive, Some(&src), None, Compare { owners_and_modes: false }).unwrap();
    assert!(like.differences.is_empty(), "{:?}", like.differences);
    std::fs::write(src.join("loader.efi"), "changed\n").unwrap();
    let changed = verify_with(&archive, Some(&src), None, Compare { owners_and_modes: false }).unwrap();
    assert!(!changed.differences.is_empty(), "contents still count");
}

#[test]
fn the_footer_describes_the_file() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let a = make(t.path(), 64 << 10);
    let f = crossback_archive::crypt::Source::Plain(std::sync::Arc::new(std::fs::File::open(&a).unwrap()));
    let len = f.len().unwrap();
    let Trailer::Indexed { footer, table } = read_trailer(&f).unwrap() else { panic!("no trailer") };
    assert_eq!(footer.table_off + footer.table_len + FOOTER_LEN, len);
    assert_eq!(footer.index_off + footer.index_len, footer.table_off);
    assert_eq!(footer.data_len, footer.index_off);
    assert!(table.frames.len() > 3, "small frames: several of them");
    assert_eq!(table.frames.last().map(|f| f.u_off + f.u_len), Some(footer.tar_len));
    assert_eq!(table.summary.entries, footer.entries);
    // `zstd -dc` semantics: the data frames alone are the whole tar stream.
    let mut all = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(&a).unwrap()).unwrap().read_to_end(&mut all).unwrap();
    assert_eq!(all.len() as u64, footer.tar_len);
}

#[test]
fn the_frame_stream_seeks_and_one_file_reads_little() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let a = make(t.path(), 64 << 10);
    let archive = Archive::open(&a).unwrap();
    let Layout::Indexed { footer, table } = &archive.layout else { panic!() };
    assert!(table.frames.len() >= 4, "{} frames", table.frames.len());
    let mut whole = Vec::new();
    archive.frames().unwrap().unwrap().read_to_end(&mut whole).unwrap();
    assert_eq!(whole.len() as u64, footer.tar_len);
    // Every member's header is where the index says, whatever order we seek in.
    let entries: Vec<_> = archive.index().unwrap().unwrap().map(|e| e.unwrap()).collect();
    let mut s = archive.frames().unwrap().unwrap();
    for e in entries.iter().rev().chain(entries.iter()) {
        s.seek_to(e.header_offset);
        let mut h = [0u8; 512];
        s.read_exact(&mut h).unwrap();
        assert_eq!(&h[..], &whole[e.header_offset as usize..e.header_offset as usize + 512]);
    }
    // One small file: only the frames it lies in are read (none ahead).
    let deep = entries.iter().find(|e| e.path == b"a/b/c/deep.txt").unwrap();
    let end = (deep.data_offset + deep.stored_len).next_multiple_of(512);
    let holding: u64 = table.frames.iter().filter(|f| f.u_off < end && f.u_off + f.u_len > deep.header_offset).map(|f| f.c_len).sum();
    assert!(table.frames.last().unwrap().u_off >= end, "the file is not in the last frame: frames after it could be read ahead");
    let before = crossback_archive::container::BYTES_READ.load(std::sync::atomic::Ordering::Relaxed);
    let dest = t.path().join("one");
    std::fs::create_dir(&dest).unwrap();
    let opts = ExtractOptions { paths: vec![b"a/b/c/deep.txt".to_vec()], ..Default::default() };
    let r = crossback_archive::extract(&archive, &dest, &opts).unwrap();
    assert!(r.failed.is_empty() && r.damaged.is_empty());
    assert_eq!(std::fs::read_to_string(dest.join("a/b/c/deep.txt")).unwrap(), "deep\n");
    let read = crossback_archive::container::BYTES_READ.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(read <= holding, "read {read} bytes of frames; the file lies in {holding}");
    assert!(entries.iter().any(|e| e.kind == Kind::HardLink));
}

#[test]
fn a_hostile_tar_cannot_write_outside_the_target() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut tar = Vec::new();
    let up = format!("../{}", "../".repeat(8));
    crossback_testkit::member(&mut tar, format!("{up}tmp/escaped").as_bytes(), b'0', b"", b"x");
    crossback_testkit::member(&mut tar, b"link", b'2', outside.to_str().unwrap().as_bytes(), b"");
    crossback_testkit::member(&mut tar, b"link/through", b'0', b"", b"y");
    crossback_testkit::member(&mut tar, b"hard", b'1', b"../../../etc/passwd", b"");
    crossback_testkit::member(&mut tar, b"ok.txt", b'0', b"", b"fine");
    tar.extend_from_slice(&[0u8; 1024]);
    let path = t.path().join("evil.tar");
    std::fs::write(&path, &tar).unwrap();
    let dest = t.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let archive = Archive::open(&path).unwrap();
    let r = crossback_archive::extract(&archive, &dest, &ExtractOptions::default()).unwrap();
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written through the symlink");
    assert!(!t.path().join("tmp/escaped").exists() && !Path::new("/tmp/escaped").exists());
    assert_eq!(std::fs::read_to_string(dest.join("ok.txt")).unwrap(), "fine");
    assert!(r.failed.len() >= 2, "the hostile members are listed as not restored: {:?}", r.failed);
}

/// An encrypted archive keeps what a plain one has — the tree
/// comes back, one file is read without reading the rest, the index names
/// the damaged member when a byte of the ciphertext is changed — and gives
/// nothing to a wrong key or none.
#[test]
fn an_encrypted_archive_reads_like_a_plain_one_and_only_with_its_key() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let key = age::x25519::Identity::generate();
    let a = make_to(t.path(), 64 << 10, vec![key.to_public()]);
    let raw = std::fs::read(&a).unwrap();
    assert!(raw.starts_with(b"age-encryption.org/v1\n"));
    assert!(!raw.windows(8).any(|w| w == b"deep.txt"), "no name in the clear");
    let keys = crossback_archive::crypt::Keys::new(vec![Box::new(key.clone())]);
    let wrong = crossback_archive::crypt::Keys::new(vec![Box::new(age::x25519::Identity::generate())]);
    assert!(matches!(Archive::open_with(&a, Some(&wrong)), Err(crossback_archive::Error::Key(_))));
    assert!(matches!(Archive::open(&a), Err(crossback_archive::Error::Key(_))));

    let archive = Archive::open_with(&a, Some(&keys)).unwrap();
    let Layout::Indexed { footer, .. } = &archive.layout else { panic!("the index is read through the encryption") };
    extracts_whole(&archive, t.path());

    let before = crossback_archive::container::BYTES_READ.load(std::sync::atomic::Ordering::Relaxed);
    let one = t.path().join("one");
    std::fs::create_dir(&one).unwrap();
    let opts = ExtractOptions { paths: vec![b"a/b/c/deep.txt".to_vec()], ..Default::default() };
    crossback_archive::extract(&archive, &one, &opts).unwrap();
    assert_eq!(std::fs::read_to_string(one.join("a/b/c/deep.txt")).unwrap(), "deep\n");
    let read = crossback_archive::container::BYTES_READ.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(read < footer.data_len / 2, "read {read} of {} bytes of frames", footer.data_len);

    // A byte in the middle of the data: one chunk fails to authenticate, and
    // verify names the member(s) it held; the archive still opens.
    let entries: Vec<_> = archive.index().unwrap().unwrap().map(|e| e.unwrap()).collect();
    drop(archive);
    let victim = entries.iter().find(|e| e.path == b"a/f150").unwrap();
    // age: header, then chunks of 64 KiB of plaintext + 16 bytes of tag each.
    let plain_len = plain_len(&keys, &a);
    let header = raw.len() as u64 - (plain_len + plain_len.div_ceil(65536).max(1) * 16);
    let frame_file_off = frame_offset_of(&keys, &a, victim.header_offset + 1024);
    let cipher_at = header + frame_file_off / 65536 * (65536 + 16) + frame_file_off % 65536;
    let f = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[raw[cipher_at as usize] ^ 0x55], cipher_at).unwrap();
    let archive = Archive::open_with(&a, Some(&keys)).unwrap();
    let v = crossback_archive::verify::verify(&archive, None, None).unwrap();
    assert!(v.damaged.iter().any(|(p, _)| p == b"a/f150"), "{:?}", v.damaged);
    assert!(!v.damaged.iter().any(|(p, _)| p == b"a/b/c/deep.txt"), "{:?}", v.damaged);
}

fn plain_len(keys: &crossback_archive::crypt::Keys, a: &Path) -> u64 {
    crossback_archive::crypt::Source::open(std::fs::File::open(a).unwrap(), "a", Some(keys)).unwrap().len().unwrap()
}

/// Where in the (plaintext) archive file the frame holding tar offset `u` starts.
fn frame_offset_of(keys: &crossback_archive::crypt::Keys, a: &Path, u: u64) -> u64 {
    let src = crossback_archive::crypt::Source::open(std::fs::File::open(a).unwrap(), "a", Some(keys)).unwrap();
    let Trailer::Indexed { table, .. } = read_trailer(&src).unwrap() else { panic!() };
    let f = table.frames.iter().find(|f| f.u_off <= u && u < f.u_off + f.u_len).unwrap();
    f.c_off + f.c_len / 2
}

/// Small files are written by worker threads. Whatever the
/// number of threads, the tree comes back the same: directories keep the
/// mtime and mode they had (read-only ones too, though files were written
/// into them after the walk left them), hard links find files that a worker
/// may still be writing, and more directories are left than the restore
/// keeps waiting (so their metadata is applied on the way, not only at the end).
#[test]
fn any_number_of_restore_threads_gives_the_same_tree() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    for d in 0..300 {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..12 {
            std::fs::write(dir.join(format!("f{f:02}")), format!("{d} {f}\n").repeat(f * 7)).unwrap();
        }
        if d % 10 == 3 {
            std::fs::hard_link(src.join(format!("d{:03}/f05", d - 1)), dir.join("hard")).unwrap();
            std::fs::hard_link(dir.join("f11"), dir.join("hard-same-dir")).unwrap();
        }
    }
    // Directories with one file each: the walk leaves each one right after
    // handing its file to a worker.
    for d in 0..1000 {
        let dir = src.join(format!("e/{d:04}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("only"), format!("{d}\n").repeat(50)).unwrap();
        rustix::fs::utimensat(rustix::fs::CWD, &dir, &filetime_secs(1_600_000_000 + d), rustix::fs::AtFlags::empty()).unwrap();
    }
    // Big enough for the walk's own thread, between small ones.
    std::fs::write(src.join("d100/big"), crossback_testkit::tree::noise(7, 3 << 20)).unwrap();
    for d in 0..300 {
        let dir = src.join(format!("d{d:03}"));
        let when = filetime_secs(1_500_000_000 + d * 1000);
        rustix::fs::utimensat(rustix::fs::CWD, &dir, &when, rustix::fs::AtFlags::empty()).unwrap();
        if d % 7 == 0 {
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
        }
    }
    let a = t.path().join("a.tar.zst");
    let opts = CreateOptions { frame_size: 256 << 10, ..Default::default() };
    crossback_archive::create(&src, std::fs::File::create(&a).unwrap(), &opts).unwrap();
    let archive = Archive::open(&a).unwrap();
    for threads in [1, 2, 5] {
        let dest = t.path().join(format!("out-{threads}"));
        std::fs::create_dir(&dest).unwrap();
        let r = crossback_archive::extract(&archive, &dest, &ExtractOptions { threads, ..Default::default() }).unwrap();
        assert!(r.clean(), "{threads} threads: {:?} {:?}", r.failed, r.damaged);
        assert_eq!(r.entries, 1 + 300 + 300 * 12 + 60 + 1 + 1 + 2000, "{threads} threads");
        let diffs: Vec<String> = crossback_testkit::compare::trees(&src, &dest).into_iter().filter(|d| !d.starts_with("owner")).collect();
        assert!(diffs.is_empty(), "{threads} threads: {diffs:#?}");
        // Writable again, for the temporary directory to go.
        for d in (0..300).step_by(7) {
            std::fs::set_permissions(dest.join(format!("d{d:03}")), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
    }
    for d in (0..300).step_by(7) {
        std::fs::set_permissions(src.join(format!("d{d:03}")), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
}

fn filetime_secs(sec: i64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec { tv_sec: sec, tv_nsec: 0 };
    rustix::fs::Timestamps { last_access: t, last_modification: t }
}

/// A file a worker thread cannot write (a non-empty directory stands at its
/// name) is reported as not restored, not counted as restored, and what
/// stands there is not touched, whatever the number of threads.
#[test]
fn a_file_a_worker_cannot_write_is_reported() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let mut tar = Vec::new();
    crossback_testkit::member(&mut tar, b"x/", b'5', b"", b"");
    crossback_testkit::member(&mut tar, b"x/keep", b'0', b"", b"kept");
    crossback_testkit::member(&mut tar, b"x", b'0', b"", b"a file where a directory is");
    crossback_testkit::member(&mut tar, b"ok", b'0', b"", b"fine");
    tar.extend_from_slice(&[0u8; 1024]);
    let path = t.path().join("clash.tar");
    std::fs::write(&path, &tar).unwrap();
    let archive = Archive::open(&path).unwrap();
    for threads in [1, 3] {
        let dest = t.path().join(format!("dest-{threads}"));
        std::fs::create_dir(&dest).unwrap();
        let r = crossback_archive::extract(&archive, &dest, &ExtractOptions { threads, ..Default::default() }).unwrap();
        assert_eq!(r.failed.iter().map(|f| f.0.as_slice()).collect::<Vec<_>>(), vec![b"x".as_slice()], "{threads} threads: {:?}", r.failed);
        assert!(r.damaged.is_empty());
        assert_eq!(r.entries, 3, "{threads} threads: x/, x/keep and ok");
        assert_eq!(std::fs::read_to_string(dest.join("x/keep")).unwrap(), "kept");
        assert_eq!(std::fs::read_to_string(dest.join("ok")).unwrap(), "fine");
    }
}

/// A member read as a file: any offset, in any order, holes as zeros; a
/// file read whole in order is checked against its hash.
#[test]
fn a_member_reads_at_any_offset_like_the_file() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    let a = make(t.path(), 64 << 10);
    let archive = Archive::open(&a).unwrap();
    let entries: Vec<_> = archive.index().unwrap().unwrap().map(|e| e.unwrap()).collect();
    // Two frames kept: reading backwards decompresses again, and stays right.
    let mut cache = crossback_archive::member_file::FrameCache::new(&archive, 2).unwrap();
    for name in ["a/f150", "sparse", "a/b/c/deep.txt"] {
        let want = std::fs::read(t.path().join("src").join(name)).unwrap();
        let e = entries.iter().find(|e| e.path == name.as_bytes()).unwrap();
        let mut f = crossback_archive::member_file::MemberFile::open(&mut cache, e).unwrap();
        assert_eq!(f.meta().size, want.len() as u64);
        // In order, in pieces of an odd size, to the end (the hash is checked there).
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4093];
        loop {
            let n = f.read_at(&mut cache, got.len() as u64, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == want, "{name}: read in order differs");
        // Backwards and across holes.
        let len = want.len() as u64;
        for off in [len.saturating_sub(3), len / 2, 1, 0, len.saturating_sub(5000), len / 3] {
            let n = f.read_at(&mut cache, off, &mut buf).unwrap();
            assert_eq!(&buf[..n], &want[off as usize..(off as usize + n)], "{name} at {off}");
            assert_eq!(n as u64, (len - off).min(buf.len() as u64));
        }
    }
    let sparse = entries.iter().find(|e| e.path == b"sparse").unwrap();
    let (meta, _) = crossback_archive::member_file::read_meta(&mut cache, sparse).unwrap();
    assert!(cache.held() <= 2 * (64 << 10) + 4096, "{} bytes held", cache.held());
    assert!(meta.sparse.is_some(), "the sparse file's map comes from its header");
}

/// A member whose stored bytes were changed (and its frame still
/// decompresses) fails at its end, read in order.
#[test]
fn a_member_read_whole_is_checked_against_its_hash() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t = tempfile::tempdir().unwrap();
    // The recorded hash changed stands for bytes changed behind a valid frame.
    let a = make(t.path(), 64 << 10);
    let archive = Archive::open(&a).unwrap();
    let mut e = archive.index().unwrap().unwrap().map(|e| e.unwrap()).find(|e| e.path == b"a/f150").unwrap();
    e.hash = Some([7u8; 32]);
    let mut cache = crossback_archive::member_file::FrameCache::new(&archive, 2).unwrap();
    let mut f = crossback_archive::member_file::MemberFile::open(&mut cache, &e).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let err = f.read_at(&mut cache, 0, &mut buf).unwrap_err();
    assert!(err.to_string().contains("does not match its hash"), "{err}");
}
