//! A system's own `/etc/fstab`, read as its boot would: which local disk
//! filesystems make up the system, and which swap.

use serde::{Deserialize, Serialize};

use crate::blockdev::Spec;

/// One filesystem of a system, as its fstab says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub spec: Spec,
    pub mountpoint: String,
    pub fstype: String,
    pub options: Vec<String>,
    /// The line as written, for bare-metal restore and messages.
    pub line: String,
    pub line_no: usize,
}

impl Entry {
    /// btrfs subvolume from `subvol=` (leading `/` removed).
    pub fn subvol(&self) -> Option<String> {
        self.options.iter().find_map(|o| o.strip_prefix("subvol=")).map(|s| s.trim_start_matches('/').to_string())
    }
}

/// What `parse` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fstab {
    /// Local disk filesystems, in fstab order.
    pub mounts: Vec<Entry>,
    /// Swap partitions (by spec). Swap files are left out: they live on a
    /// filesystem above and are excluded from backups.
    pub swap: Vec<Entry>,
    /// Swap files (paths), to exclude from backups.
    pub swap_files: Vec<String>,
    /// Lines skipped, with the reason (`line N: …`).
    pub warnings: Vec<String>,
}

/// `\040` and the other octal escapes fstab uses in its fields.
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Filesystem types that are not local disks: never part of a backup.
const NOT_LOCAL: &[&str] = &[
    "tmpfs",
    "proc",
    "sysfs",
    "devpts",
    "devtmpfs",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
    "tracefs",
    "configfs",
    "pstore",
    "efivarfs",
    "mqueue",
    "hugetlbfs",
    "binfmt_misc",
    "autofs",
    "fusectl",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "sshfs",
    "fuse.sshfs",
    "9p",
    "overlay",
    "ramfs",
    "none",
    "iso9660",
    "udf",
];

/// A line for a message: control characters escaped (a binary fstab must
/// not write to the terminal).
fn printable(line: &str) -> String {
    line.chars().map(|c| if c.is_control() { format!("\\u{{{:x}}}", c as u32) } else { c.to_string() }).collect()
}

/// An absolute path of plain components: no `..`, `.`, empty parts or
/// control characters, so that joined to a directory it stays beneath it.
pub fn clean_mountpoint(mp: &str) -> bool {
    mp.starts_with('/')
        && mp.len() <= 4096
        && !mp.chars().any(char::is_control)
        && (mp == "/" || mp[1..].split('/').all(|c| !c.is_empty() && c != "." && c != ".."))
}

pub fn parse(text: &str) -> Fstab {
    let mut f = Fstab::default();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || fields.len() > 6 {
            f.warnings.push(format!("line {line_no}: skipped, not an fstab entry: {}", printable(line)));
            continue;
        }
        let (spec_s, mp, fstype) = (fields[0], unescape(fields[1]), fields[2].to_string());
        let options: Vec<String> = fields.get(3).map(|o| o.split(',').map(str::to_string).collect()).unwrap_or_default();
        if fields.get(4).is_some_and(|v| v.parse::<u32>().is_err()) || fields.get(5).is_some_and(|v| v.parse::<u32>().is_err()) {
            f.warnings.push(format!("line {line_no}: skipped, dump and pass fields must be numbers: {}", printable(line)));
            continue;
        }
        if NOT_LOCAL.contains(&fstype.as_str()) || fstype.starts_with("fuse") || fstype.starts_with("nfs") {
            continue;
        }
        if options.iter().any(|o| o == "bind" || o == "rbind") {
            continue;
        }
        let is_swap = fstype == "swap";
        let spec = match Spec::parse(spec_s) {
            Some(s) => s,
            None if is_swap && spec_s.starts_with('/') => {
                f.swap_files.push(unescape(spec_s));
                continue;
            }
            None => {
                f.warnings.push(format!("line {line_no}: skipped, {spec_s:?} names no local device: {}", printable(line)));
                continue;
            }
        };
        if is_swap {
            // A swap file under /dev is unusual but possible; device paths are partitions.
            f.swap.push(Entry { spec, mountpoint: "none".into(), fstype, options, line: raw.to_string(), line_no });
            continue;
        }
        let mp = if mp.len() > 1 { mp.trim_end_matches('/').to_string() } else { mp };
        if !clean_mountpoint(&mp) {
            f.warnings.push(format!("line {line_no}: skipped, mount point {mp:?} is not a plain absolute path: {}", printable(line)));
            continue;
        }
        f.mounts.push(Entry { spec, mountpoint: mp, fstype, options, line: raw.to_string(), line_no });
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mount point that climbs out of the system's root is not
    /// a filesystem of the system; it is skipped with a warning.
    #[test]
    fn mountpoints_with_dotdot_are_skipped() {
        let f = parse("UUID=0a1b2c3d-0000-4000-8000-000000000001 /home/../../../../somewhere ext4 defaults 0 2\nUUID=0a1b2c3d-0000-4000-8000-000000000002 /srv/./x ext4 defaults 0 2\nUUID=0a1b2c3d-0000-4000-8000-000000000003 /data/ ext4 defaults 0 2\n");
        assert_eq!(f.mounts.len(), 1, "{:?}", f.mounts);
        assert_eq!(f.mounts[0].mountpoint, "/data");
        assert_eq!(f.warnings.len(), 2);
        assert!(f.warnings[0].contains("not a plain absolute path"));
    }

    #[test]
    fn control_characters_in_warnings_are_escaped() {
        let f = parse("garbage\x1b[2J here\n");
        assert!(f.warnings[0].contains("\\u{1b}"), "{:?}", f.warnings);
        assert!(!f.warnings[0].contains('\x1b'));
    }

    #[test]
    fn a_real_looking_fstab() {
        let f = parse(
            "# /etc/fstab\n\
             UUID=1111-aaaa / ext4 errors=remount-ro 0 1\n\
             UUID=2222 /home ext4 defaults 0 2\n\
             UUID=ABCD-EF01 /boot/efi vfat umask=0077 0 1\n\
             LABEL=data /srv/my\\040data xfs defaults 0 0\n\
             /dev/disk/by-uuid/3333 none swap sw 0 0\n\
             /swapfile none swap sw 0 0\n\
             tmpfs /tmp tmpfs defaults 0 0\n\
             server:/export /mnt/nfs nfs defaults 0 0\n\
             /srv/a /srv/b none bind 0 0\n\
             proc /proc proc defaults 0 0\n\
             this is garbage\n\
             UUID=4444 /var btrfs subvol=/@var,compress=zstd 0 0\n",
        );
        let mps: Vec<&str> = f.mounts.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(mps, ["/", "/home", "/boot/efi", "/srv/my data", "/var"]);
        assert_eq!(f.mounts[0].spec, Spec::Uuid("1111-aaaa".into()));
        assert_eq!(f.mounts[4].subvol().as_deref(), Some("@var"));
        assert_eq!(f.swap.len(), 1);
        assert_eq!(f.swap_files, ["/swapfile"]);
        assert_eq!(f.warnings.len(), 1);
        assert!(f.warnings[0].starts_with("line 12: skipped"), "{:?}", f.warnings);
    }
}
