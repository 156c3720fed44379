//! `/proc/<pid>/mountinfo`: what is mounted where, in one mount namespace.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub id: u32,
    pub parent: u32,
    pub devno: (u32, u32),
    /// The path inside the filesystem that is mounted (`/@` for a btrfs subvolume).
    pub root: String,
    pub mountpoint: String,
    /// Per-mount options (`rw`/`ro` first).
    pub options: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_options: Vec<String>,
}

impl Mount {
    /// Writable through this mount (per-mount and superblock both rw).
    pub fn is_rw(&self) -> bool {
        self.options.iter().any(|o| o == "rw") && !self.super_options.iter().any(|o| o == "ro")
    }
}

fn unescape(s: &str) -> String {
    crate::fstab::unescape(s)
}

pub fn parse(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        let devno = l[2].split_once(':').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?))).unwrap_or((0, 0));
        out.push(Mount {
            id: l[0].parse().unwrap_or(0),
            parent: l[1].parse().unwrap_or(0),
            devno,
            root: unescape(l[3]),
            mountpoint: unescape(l[4]),
            options: l[5].split(',').map(str::to_string).collect(),
            fstype: r[0].to_string(),
            source: unescape(r[1]),
            super_options: r[2].split(',').map(str::to_string).collect(),
        });
    }
    out
}

/// Mounts of this process's namespace. A read that fails is an error,
/// not "nothing mounted".
pub fn own() -> std::io::Result<Vec<Mount>> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse(&t))
}

/// Mounts seen in every mount namespace this process can look into (its
/// own, init's, and every other process's), without duplicates. Another
/// process's that does not read (it ended) is left out; this process's
/// own not reading is an error.
pub fn everywhere() -> std::io::Result<Vec<Mount>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let mut add = |text: String| {
        for m in parse(&text) {
            if seen.insert((m.devno, m.root.clone(), m.mountpoint.clone(), m.options.clone())) {
                out.push(m);
            }
        }
    };
    let mut namespaces = std::collections::BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else { continue };
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
            if let Some(ns) = ns {
                if !namespaces.insert(ns) {
                    continue;
                }
            }
            if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) {
                add(t);
            }
        }
    }
    add(std::fs::read_to_string("/proc/self/mountinfo")?);
    Ok(out)
}

/// The mount on `/` in this namespace (inside a chroot: the chroot's root).
pub fn root_mount(mounts: &[Mount]) -> Option<&Mount> {
    mounts.iter().rev().find(|m| m.mountpoint == "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let m = parse("22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n35 22 0:45 /@home /home rw,noatime - btrfs /dev/loop3 rw,space_cache=v2,subvolid=257,subvol=/@home\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].devno, (254, 0));
        assert!(m[0].is_rw());
        assert_eq!(m[1].root, "/@home");
        assert_eq!(root_mount(&m).unwrap().fstype, "ext4");
    }
}
