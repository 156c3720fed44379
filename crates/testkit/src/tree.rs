//! A tree of edge cases for archive round trips, made in Rust so the tests
//! need nothing outside the repo. Needs root (devices, owners, trusted.*
//! and security.* xattrs, inode flags).

use std::ffi::OsStr;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, IFlags, Mode, Timespec, Timestamps, CWD};

fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

fn set_time(path: &Path, sec: i64, nsec: i64) {
    let t = Timestamps { last_access: Timespec { tv_sec: sec, tv_nsec: nsec }, last_modification: Timespec { tv_sec: sec, tv_nsec: nsec } };
    rustix::fs::utimensat(CWD, path, &t, AtFlags::SYMLINK_NOFOLLOW).expect("utimensat");
}

fn own(path: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(CWD, path, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)), AtFlags::SYMLINK_NOFOLLOW).expect("chown");
}

fn xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn write(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn flags(path: &Path, f: IFlags) {
    let fd =
        rustix::fs::open(path, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC, Mode::empty()).expect("open for flags");
    let cur = rustix::fs::ioctl_getflags(&fd).unwrap_or(IFlags::empty());
    rustix::fs::ioctl_setflags(&fd, cur | f).expect("setting inode flags");
}

/// An ACL blob: (tag, perm, id) entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(t, p, id) in entries {
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Pseudo-random bytes (xorshift), so content is not all alike.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Builds the tree under `root` (which must exist, on ext4 for the flags).
/// Sets inode flags (immutable and others) last: the tree cannot be
/// removed until [`clear_flags`] runs.
pub fn build(root: &Path) {
    let d = |rel: &str, mode: u32| {
        let path = root.join(rel);
        fs::create_dir_all(&path).expect("mkdir");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod dir");
    };
    d("files", 0o755);
    write(&root.join("files/empty"), b"", 0o644);
    write(&root.join("files/small.txt"), b"hello, crossback\n", 0o644);
    write(&root.join("files/random-3M"), &noise(1, 3 << 20 | 17), 0o600);
    write(&root.join("files/dense-zeros"), &vec![0u8; 1 << 20], 0o644);
    for (i, m) in [0o4755, 0o2755, 0o1777, 0o7777, 0o0000, 0o0001].iter().enumerate() {
        write(&root.join(format!("files/mode-{i}")), b"m", *m);
    }
    // Sparse: data, hole, data, trailing hole; and a 9 GiB one (size beyond tar's octal field).
    {
        let mut f = fs::File::create(root.join("files/sparse")).expect("create");
        f.write_all(&noise(2, 10000)).expect("write");
        f.seek(SeekFrom::Start(5 << 20)).expect("seek");
        f.write_all(&noise(3, 70000)).expect("write");
        f.set_len(20 << 20).expect("truncate");
        let mut g = fs::File::create(root.join("files/sparse-9g")).expect("create");
        g.seek(SeekFrom::Start(9 << 30)).expect("seek");
        g.write_all(b"end of a very big sparse file").expect("write");
        let h = fs::File::create(root.join("files/all-hole")).expect("create");
        h.set_len(1 << 20).expect("truncate");
    }
    // Hard links, one with a long name.
    fs::hard_link(root.join("files/small.txt"), root.join("files/small-link")).expect("link");
    let long_dir = format!("links/{}", "d".repeat(120));
    d(&long_dir, 0o755);
    fs::hard_link(root.join("files/random-3M"), root.join(format!("{long_dir}/{}", "h".repeat(200)))).expect("link");
    // Symlinks: relative, absolute, dangling, long target, with xattrs.
    d("symlinks", 0o755);
    symlink("../files/small.txt", root.join("symlinks/rel")).expect("symlink");
    symlink("/etc/passwd", root.join("symlinks/abs")).expect("symlink");
    symlink("nowhere", root.join("symlinks/dangling")).expect("symlink");
    symlink("t".repeat(300), root.join("symlinks/long-target")).expect("symlink");
    symlink("rel", root.join("symlinks/labelled")).expect("symlink");
    xattr(&root.join("symlinks/labelled"), "security.selinux", b"system_u:object_r:bin_t:s0\0");
    xattr(&root.join("symlinks/labelled"), "trusted.note", b"on a symlink");
    // Names: any bytes but '/' and NUL; long components; deep paths past 4096 bytes.
    d("names", 0o755);
    for name in
        [&b"new\nline"[..], b"tab\there", b"\xff\xfe not utf-8", b"back\\slash", b" leading space", b"-dash", b"=equals", b"%percent", "ünïcødé ✓".as_bytes()]
    {
        write(&p(root, &[&b"names/"[..], name].concat()), name, 0o644);
    }
    write(&root.join(format!("names/{}", "n".repeat(255))), b"max name", 0o644);
    // 20 levels of 250-byte names: past PATH_MAX, so made with *at calls.
    fs::create_dir(root.join("deep")).expect("mkdir deep");
    let mut cur = rustix::fs::open(root.join("deep"), rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC, Mode::empty())
        .expect("open deep");
    for i in 0..20 {
        let name = format!("{i:02}-{}", "x".repeat(250));
        rustix::fs::mkdirat(&cur, name.as_str(), Mode::from_raw_mode(0o755)).expect("mkdirat");
        cur = rustix::fs::openat(&cur, name.as_str(), rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC, Mode::empty())
            .expect("openat");
    }
    let fd =
        rustix::fs::openat(&cur, "bottom", rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::CLOEXEC, Mode::from_raw_mode(0o644))
            .expect("create bottom");
    rustix::io::write(&fd, b"deep").expect("write bottom");
    // Owners and times.
    d("owners", 0o755);
    for (i, (uid, gid)) in [(1000u32, 1000u32), (4_000_000, 4_000_001), (65534, 65534), (4_294_967_294, 12345)].iter().enumerate() {
        let f = root.join(format!("owners/f{i}"));
        write(&f, b"owned", 0o640);
        own(&f, *uid, *gid);
    }
    d("times", 0o755);
    for (i, (s, ns)) in [(0i64, 0i64), (-1, 999_999_999), (-86400 * 365 * 10, 123_456_789), (4_102_444_800, 999_999_999), (1_700_000_000, 1)].iter().enumerate()
    {
        let f = root.join(format!("times/t{i}"));
        write(&f, b"t", 0o644);
        set_time(&f, *s, *ns);
    }
    // Xattrs of every namespace, ACLs, capabilities.
    d("xattrs", 0o755);
    let f = root.join("xattrs/all");
    write(&f, b"x", 0o755);
    xattr(&f, "user.plain", b"value");
    xattr(&f, "user.newline", b"line1\nline2\n");
    xattr(&f, "user.binary", &[0, 1, 2, 10, 255, 0]);
    xattr(&f, "user.empty", b"");
    xattr(&f, "trusted.overlay.opaque", b"y");
    xattr(&f, "security.selinux", b"system_u:object_r:etc_t:s0\0");
    // cap_net_raw+ep, VFS_CAP_REVISION_2; the bytes hold 0x0a (a newline) on purpose.
    let cap: Vec<u8> = [0x02000001u32, 0x2000, 0x2000, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let capf = root.join("xattrs/ping");
    write(&capf, b"#!/bin/true\n", 0o755);
    xattr(&capf, "security.capability", &cap);
    let newline_acl = acl(&[(1, 6, u32::MAX), (2, 4, 10), (4, 4, u32::MAX), (8, 6, 0x0a0a), (0x10, 6, u32::MAX), (0x20, 4, u32::MAX)]);
    let af = root.join("xattrs/acl");
    write(&af, b"acl", 0o664);
    xattr(&af, "system.posix_acl_access", &newline_acl);
    d("xattrs/default-acl", 0o775);
    xattr(
        &root.join("xattrs/default-acl"),
        "system.posix_acl_default",
        &acl(&[(1, 7, u32::MAX), (2, 7, 1000), (4, 5, u32::MAX), (0x10, 7, u32::MAX), (0x20, 5, u32::MAX)]),
    );
    xattr(&root.join("xattrs/default-acl"), "user.on-dir", b"dir");
    // Special files.
    d("dev", 0o755);
    rustix::fs::mknodat(CWD, root.join("dev/null"), FileType::CharacterDevice, Mode::from_raw_mode(0o666), rustix::fs::makedev(1, 3)).expect("mknod");
    rustix::fs::mknodat(CWD, root.join("dev/loop-big"), FileType::BlockDevice, Mode::from_raw_mode(0o660), rustix::fs::makedev(259, 1_048_575)).expect("mknod");
    rustix::fs::mknodat(CWD, root.join("dev/fifo"), FileType::Fifo, Mode::from_raw_mode(0o640), 0).expect("mkfifo");
    let _sock = std::os::unix::net::UnixListener::bind(root.join("dev/socket")).expect("socket");
    xattr(&root.join("dev/fifo"), "trusted.fifo", b"f");
    // Directories that forbid writing into them, with contents.
    d("locked/inner", 0o755);
    write(&root.join("locked/inner/file"), b"inside a 0555 dir", 0o444);
    fs::set_permissions(root.join("locked/inner"), fs::Permissions::from_mode(0o555)).expect("chmod");
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).expect("chmod");
    // Inode flags, last.
    d("flags/immutable-dir", 0o755);
    write(&root.join("flags/immutable-dir/inside"), b"i", 0o644);
    write(&root.join("flags/immutable"), b"cannot change", 0o644);
    fs::hard_link(root.join("flags/immutable"), root.join("flags/immutable-link")).expect("link");
    write(&root.join("flags/append"), b"append only", 0o644);
    write(&root.join("flags/nodump"), b"nodump", 0o644);
    flags(&root.join("flags/immutable"), IFlags::IMMUTABLE);
    flags(&root.join("flags/append"), IFlags::APPEND);
    flags(&root.join("flags/nodump"), IFlags::NODUMP | IFlags::NOATIME);
    flags(&root.join("flags/immutable-dir"), IFlags::IMMUTABLE);
    // Directory times last of all (creating entries changes them).
    set_time(&root.join("files"), 1_600_000_000, 42);
    set_time(&root.join("locked"), -5, 5);
}

/// Removes immutable and append-only flags under `root`, so it can be deleted.
pub fn clear_flags(root: &Path) {
    let _ = std::process::Command::new("chattr").args(["-R", "-i", "-a"]).arg(root).stderr(std::process::Stdio::null()).status();
}

/// Clears the flags under its directory when dropped: declared after the
/// directory, it goes first, and the directory can then be deleted — also
/// when the test fails.
pub struct FlagsCleared(pub PathBuf);

impl Drop for FlagsCleared {
    fn drop(&mut self) {
        clear_flags(&self.0);
    }
}
