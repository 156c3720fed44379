//! Thin wrappers over the system calls the reader and the restorer need,
//! with the quirks handled in one place: buffers that grow on `ERANGE`,
//! file systems without xattrs or inode flags, `l*xattr` through
//! `/proc/self/fd` for objects that cannot be opened (symlinks, devices).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::fs::{IFlags, SeekFrom};
use rustix::io::Errno;

use crate::entry::Segment;

fn no_xattrs(e: Errno) -> bool {
    matches!(e, Errno::OPNOTSUPP | Errno::NODATA | Errno::PERM)
}

/// `/proc/self/fd/DIR/NAME`: names `name` inside an open directory without
/// resolving anything but the directory's own fd.
pub fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> CString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    CString::new(p).unwrap_or_default()
}

fn split_names(list: &[u8]) -> Vec<Vec<u8>> {
    list.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| n.to_vec()).collect()
}

fn grow<F: FnMut(&mut Vec<u8>) -> Result<usize, Errno>>(mut f: F) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => {
                let len = buf.len() * 4;
                if len > 1 << 26 {
                    return Err(Errno::RANGE);
                }
                buf.resize(len, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every xattr, sorted by name, from a `list` and a `get` system call.
fn collect_xattrs(
    list: impl Fn(&mut [u8]) -> Result<usize, Errno>,
    get: impl Fn(&CStr, &mut [u8]) -> Result<usize, Errno>,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match grow(|b| list(&mut b[..])) {
        Ok(l) => l,
        Err(e) if no_xattrs(e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for name in split_names(&names) {
        let cname = CString::new(name.clone()).unwrap_or_default();
        match grow(|b| get(cname.as_c_str(), &mut b[..])) {
            Ok(v) => out.push((name, v)),
            // Removed between the list and the get.
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    out.sort();
    Ok(out)
}

/// Every xattr of an open file, sorted by name.
pub fn xattrs_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    collect_xattrs(|b| rustix::fs::flistxattr(fd, b), |n, b| rustix::fs::fgetxattr(fd, n, b))
}

/// Every xattr of a path, without following a final symlink.
pub fn xattrs_path(path: &CStr) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    collect_xattrs(|b| rustix::fs::llistxattr(path, b), |n, b| rustix::fs::lgetxattr(path, n, b))
}

/// Inode flags, or 0 where the file system has none.
pub fn flags(fd: BorrowedFd<'_>) -> u32 {
    rustix::fs::ioctl_getflags(fd).map(|f| f.bits()).unwrap_or(0)
}

pub fn set_flags(fd: BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    let current = rustix::fs::ioctl_getflags(fd).map(|f| f.bits()).unwrap_or(0);
    let wanted = (current & !crate::entry::KEPT_FLAGS) | flags;
    if wanted == current {
        return Ok(());
    }
    rustix::fs::ioctl_setflags(fd, IFlags::from_bits_retain(wanted)).map_err(Into::into)
}

/// The data segments of a file with holes, or `None` when it has none
/// (a file of zeros that is fully allocated stays dense).
pub fn data_segments(fd: BorrowedFd<'_>, size: u64, blocks: u64) -> io::Result<Option<Vec<Segment>>> {
    if size == 0 || blocks * 512 >= size {
        return Ok(None);
    }
    let mut segs = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(fd, SeekFrom::Hole(data))?.min(size);
        segs.push(Segment { offset: data, len: hole - data });
        pos = hole;
    }
    if segs.len() == 1 && segs[0].offset == 0 && segs[0].len == size {
        return Ok(None);
    }
    // GNU tar ends a map with an empty segment at the end of a file that
    // ends in a hole; it carries the size for readers without realsize.
    if segs.last().is_none_or(|s| s.offset + s.len < size) {
        segs.push(Segment { offset: size, len: 0 });
    }
    Ok(Some(segs))
}

/// Reads exactly `buf.len()` bytes at `offset` unless the file ends first.
pub fn pread_full(fd: impl AsFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match rustix::io::pread(fd.as_fd(), &mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// Resolution that stays inside the starting directory and follows no symlink.
pub const BENEATH: rustix::fs::ResolveFlags =
    rustix::fs::ResolveFlags::BENEATH.union(rustix::fs::ResolveFlags::NO_SYMLINKS).union(rustix::fs::ResolveFlags::NO_MAGICLINKS);

/// Opens the directory `path` (relative, `/`-separated; empty: `root`
/// itself) beneath `root`, never leaving it and following no symlink.
/// Paths longer than the kernel takes at once are walked in pieces.
pub fn open_dir_beneath(root: BorrowedFd<'_>, path: &[u8]) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if path.is_empty() {
        return Ok(rustix::fs::openat2(root, c".", flags, Mode::empty(), BENEATH)?);
    }
    let mut cur: Option<std::os::fd::OwnedFd> = None;
    let mut rest = path;
    while !rest.is_empty() {
        // Cut at a '/' within 2048 bytes (a component is at most 255).
        let cut = if rest.len() <= 2048 { rest.len() } else { rest[..2048].iter().rposition(|&b| b == b'/').unwrap_or(rest.len()) };
        let piece = CString::new(&rest[..cut]).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
        let fd = match &cur {
            Some(c) => rustix::fs::openat2(c, piece.as_c_str(), flags, Mode::empty(), BENEATH)?,
            None => rustix::fs::openat2(root, piece.as_c_str(), flags, Mode::empty(), BENEATH)?,
        };
        cur = Some(fd);
        rest = rest.get(cut + 1..).unwrap_or(&[]);
    }
    Ok(cur.expect("path is not empty"))
}

/// Starts writing a file's dirty pages back now, without waiting, so that
/// a restore's final sync has little left to do. Only a hint: errors are
/// ignored (they show up at fsync/sync time).
pub fn start_writeback(fd: BorrowedFd<'_>) {
    // A length of 0: to the end of the file.
    sync_range(fd, 0, 0, false);
}

/// Writes `len` bytes of a file from `off` back to the disk: started and
/// not waited for, or (`wait`) started and waited for. For keeping the
/// amount of dirty data of a file being written bounded (errors show up at
/// fsync time; they are not lost by ignoring them here).
pub fn sync_range(fd: BorrowedFd<'_>, off: u64, len: u64, wait: bool) {
    let flags =
        if wait { libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER } else { libc::SYNC_FILE_RANGE_WRITE };
    // SAFETY: sync_file_range takes a valid open fd (borrowed for the call)
    // and plain integers; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(fd.as_raw_fd(), off as libc::off64_t, len as libc::off64_t, flags);
    }
}

/// The uid (`user`) or gid of a name in this machine's user database, for
/// ACLs that GNU tar wrote by name. The reentrant calls: extraction runs on
/// several threads, and `getpwnam` shares one static buffer among them.
pub fn lookup_id(user: bool, name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 1 << 16];
    // SAFETY: every pointer is valid for the call: the name is NUL-terminated,
    // the record and the result pointer live on this stack frame, and `buf`
    // is as long as the length passed. The record's strings point into
    // `buf`, and only its numeric id is read, before `buf` is freed.
    unsafe {
        if user {
            let mut rec: libc::passwd = std::mem::zeroed();
            let mut out: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(cname.as_ptr(), &mut rec, buf.as_mut_ptr(), buf.len(), &mut out);
            (rc == 0 && !out.is_null()).then_some(rec.pw_uid)
        } else {
            let mut rec: libc::group = std::mem::zeroed();
            let mut out: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrnam_r(cname.as_ptr(), &mut rec, buf.as_mut_ptr(), buf.len(), &mut out);
            (rc == 0 && !out.is_null()).then_some(rec.gr_gid)
        }
    }
}
