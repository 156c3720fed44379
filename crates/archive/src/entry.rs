//! What one archive member is, independent of how tar spells it.

use serde::{Deserialize, Serialize};

/// The type of a file system object, in the words of `stat(2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A further name of a file stored earlier in the same archive.
    HardLink,
    Fifo,
    CharDev,
    BlockDev,
}

impl Kind {
    /// One letter, as `ls -l` shows it.
    pub fn letter(self) -> char {
        match self {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::HardLink => 'h',
            Kind::Fifo => 'p',
            Kind::CharDev => 'c',
            Kind::BlockDev => 'b',
        }
    }
}

/// A point in time with nanoseconds; `sec` may be negative (before 1970),
/// `nsec` is always in `0..1_000_000_000`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// One data segment of a sparse file: `len` bytes at `offset`; the rest is holes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
}

/// Everything crossback keeps about one file system object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Relative path bytes, no leading `./` or `/`, no trailing `/`; the root is empty.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// All 12 permission bits.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Time,
    /// Apparent size of a regular file (0 for everything else).
    pub size: u64,
    /// Symlink target, or for a hard link the path of the first name.
    pub link: Vec<u8>,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// Every extended attribute, ACL blobs (`system.posix_acl_*`) included.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Data segments when the file has holes; `None` for a dense file.
    pub sparse: Option<Vec<Segment>>,
    /// Inode flags (`chattr`), as `FS_IOC_GETFLAGS` returns them, user-settable bits only.
    pub flags: u32,
}

impl Meta {
    pub fn new(path: Vec<u8>, kind: Kind) -> Meta {
        Meta {
            path,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: Time::default(),
            size: 0,
            link: Vec::new(),
            rdev_major: 0,
            rdev_minor: 0,
            xattrs: Vec::new(),
            sparse: None,
            flags: 0,
        }
    }

    /// Bytes of file data as stored (holes left out).
    pub fn data_len(&self) -> u64 {
        match &self.sparse {
            Some(segs) => segs.iter().map(|s| s.len).sum(),
            None => self.size,
        }
    }
}

/// Inode flags a user sets on purpose with `chattr` and that crossback keeps:
/// sync, immutable, append-only, nodump, noatime, dirsync, and no-copy-on-write.
pub const KEPT_FLAGS: u32 = 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x10000 | 0x0080_0000;

/// Normalises a member name from any tar: strips leading `/` and `./`, drops
/// `.` components and empty ones. Returns `None` for a name with a `..`
/// component: such a member is never extracted.
pub fn normalize_path(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return None,
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Some(out)
}

/// Shows a path for people: `/` for the root, invalid UTF-8 escaped.
pub fn display_path(path: &[u8]) -> String {
    let mut s = String::from("/");
    s.push_str(&escape(path));
    s
}

/// Bytes for a terminal: valid UTF-8 as it is, but control characters,
/// backslashes and bytes that are not UTF-8 escaped (`\n`, `\\`, `\xff`),
/// so that a crafted name cannot move the cursor or hide what it is.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_makes_names_safe_to_print() {
        assert_eq!(escape(b"plain/name.txt"), "plain/name.txt");
        assert_eq!(escape("café".as_bytes()), "café");
        assert_eq!(escape(b"a\nb\x1b[2Jc\xff\\"), "a\\nb\\u{1b}[2Jc\\xff\\\\");
    }

    #[test]
    fn normalize_strips_and_refuses_dotdot() {
        assert_eq!(normalize_path(b"./a/b/"), Some(b"a/b".to_vec()));
        assert_eq!(normalize_path(b"/etc//passwd"), Some(b"etc/passwd".to_vec()));
        assert_eq!(normalize_path(b"./"), Some(Vec::new()));
        assert_eq!(normalize_path(b"a/../../etc"), None);
        assert_eq!(normalize_path(b".."), None);
    }
}
