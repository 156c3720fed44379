//! `crossback/gen-NNNNNN/generation.toml`: one generation's manifest — its
//! state, the systems it needs, and for each system recorded, its archives
//! with their sizes and hashes. Also the names of generation directories.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::mounts::check_mountpoint;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Open,
    Sealed,
}

/// One archive of one filesystem, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRecord {
    pub mountpoint: String,
    pub file: String,
    /// Size of the archive file, and the BLAKE3 of its data (hex), as in its footer.
    pub bytes: u64,
    pub hash: String,
    pub entries: u64,
    /// Bytes of file data archived.
    pub data_bytes: u64,
    /// Source files that could not be read completely (listed when backed up).
    #[serde(default)]
    pub unreadable: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemRecord {
    pub name: String,
    #[serde(default)]
    pub pretty_name: String,
    pub finished: String,
    #[serde(rename = "archive", default)]
    pub archives: Vec<ArchiveRecord>,
    /// A full backup made by the old duplicity scripts (generation 0), adopted as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<crate::duplicity::Set>,
    /// Which of the files that make a root a system (`etc/os-release`,
    /// `etc/fstab`) it had: a later backup without them is a broken system (R9).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub essentials: Vec<String>,
}

impl SystemRecord {
    pub fn entries(&self) -> u64 {
        self.archives.iter().map(|a| a.entries).sum()
    }

    pub fn data_bytes(&self) -> u64 {
        self.archives.iter().map(|a| a.data_bytes).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    pub format: u32,
    pub media_id: String,
    pub seq: u64,
    pub state: State,
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
    /// The systems this generation needs before it is sealed.
    pub systems: Vec<String>,
    #[serde(default, rename = "system")]
    pub recorded: Vec<SystemRecord>,
    /// Generation 0 only: the paths (from the slot's root) that the adopted
    /// duplicity backups consist of; wiping the generation removes exactly these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_files: Vec<String>,
}

impl Generation {
    pub fn missing(&self) -> Vec<&str> {
        self.systems.iter().filter(|s| !self.recorded.iter().any(|r| &r.name == *s)).map(String::as_str).collect()
    }

    pub fn system(&self, name: &str) -> Option<&SystemRecord> {
        self.recorded.iter().find(|r| r.name == name)
    }

    /// Everything a manifest read from a slot must be before it is used:
    /// plain system names, clean mount points, archive files named after
    /// them, legacy paths that stay on the slot. Says what is wrong.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.format > super::FORMAT {
            bail!("written by a newer crossback (layout format {}); upgrade crossback", self.format);
        }
        for s in &self.systems {
            if !super::valid_system_name(s) {
                bail!("names a system {:?} that is not a plain name", crate::output::text(s));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.recorded {
            if !super::valid_system_name(&r.name) || !seen.insert(r.name.as_str()) {
                bail!("records a system {:?} that is not a plain name, or twice", crate::output::text(&r.name));
            }
            let mut files = std::collections::BTreeSet::new();
            for a in &r.archives {
                check_mountpoint(&a.mountpoint).map_err(|e| anyhow::anyhow!("{}'s archive {:?}: {e}", r.name, crate::output::text(&a.file)))?;
                if !is_archive_file(&a.file, &a.mountpoint) || !files.insert(a.file.as_str()) {
                    bail!("{}'s archive of {} is called {:?}, not {:?}", r.name, a.mountpoint, crate::output::text(&a.file), archive_file(&a.mountpoint));
                }
                if a.hash.len() != 64 || !a.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("{}'s archive {} has no valid hash", r.name, a.file);
                }
            }
            if let Some(set) = &r.legacy {
                set.check()?;
            }
        }
        for f in &self.legacy_files {
            if !clean_relative(f) {
                bail!("lists a legacy file {:?} that is not a plain path on the slot", crate::output::text(f));
            }
        }
        Ok(())
    }
}

/// A relative path of plain components (no `..`, `.`, empty or absolute).
pub fn clean_relative(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The archive's file name for a mount point: `/` → root.tar.zst, `/boot/efi` → boot-efi.tar.zst.
pub fn archive_file(mountpoint: &str) -> String {
    let t = mountpoint.trim_matches('/');
    if t.is_empty() {
        "root.tar.zst".into()
    } else {
        format!("{}.tar.zst", t.replace('/', "-"))
    }
}

/// The name an encrypted archive of a mount point has: `root.tar.zst.age`.
pub fn encrypted_archive_file(mountpoint: &str) -> String {
    format!("{}.age", archive_file(mountpoint))
}

/// True when `file` is the archive's name for `mountpoint`, plain or encrypted.
pub fn is_archive_file(file: &str, mountpoint: &str) -> bool {
    file == archive_file(mountpoint) || file == encrypted_archive_file(mountpoint)
}

/// The name of a generation directory: `gen-` and at least six digits,
/// or the same with `.wiping` while it is being removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenName {
    pub seq: u64,
    pub wiping: bool,
}

impl GenName {
    pub fn dir(seq: u64) -> String {
        format!("gen-{seq:06}")
    }

    pub fn wiping_dir(seq: u64) -> String {
        format!("gen-{seq:06}.wiping")
    }

    /// Only the names crossback writes: the number in its canonical form
    /// (no sign, no extra leading zeros), so that one number has one name.
    pub fn parse(name: &str) -> Option<GenName> {
        let (base, wiping) = match name.strip_suffix(".wiping") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let digits = base.strip_prefix("gen-")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seq: u64 = digits.parse().ok()?;
        (GenName::dir(seq) == base).then_some(GenName { seq, wiping })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_past_six_digits() {
        assert_eq!(GenName::parse("gen-000001"), Some(GenName { seq: 1, wiping: false }));
        assert_eq!(GenName::parse("gen-999999"), Some(GenName { seq: 999_999, wiping: false }));
        assert_eq!(GenName::parse("gen-1000000"), Some(GenName { seq: 1_000_000, wiping: false }));
        assert_eq!(GenName::parse("gen-1000000.wiping"), Some(GenName { seq: 1_000_000, wiping: true }));
        assert_eq!(GenName::dir(1_000_000), "gen-1000000");
        for bad in ["gen-00001", "gen-0000001", "gen-+00001", "gen-000001x", "gen-", "gen-000001.wipe", "gen-99999999999999999999999"] {
            assert_eq!(GenName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn archive_names() {
        assert_eq!(archive_file("/"), "root.tar.zst");
        assert_eq!(archive_file("/boot/efi"), "boot-efi.tar.zst");
        assert!(is_archive_file("home.tar.zst.age", "/home") && !is_archive_file("home.tar.zst.age.age", "/home"));
    }
}
