//! `crossback/gen-NNNNNN/SYSTEM/mounts.toml`: what a bare-metal restore
//! needs to recreate each of the system's filesystems.

use anyhow::bail;
use crossback_host::efi::BootEntry;
use crossback_host::partitions::Table;
use serde::{Deserialize, Serialize};

use crate::stack::plan::{LuksRecord, VgRecord};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MountsFile {
    #[serde(rename = "filesystem")]
    pub filesystems: Vec<FsRecord>,
    /// The partition tables of the disks holding these filesystems, for
    /// `restore --bare-metal --disk`.
    #[serde(rename = "disk", default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Table>,
    /// The firmware's boot entries that start a loader from one of these
    /// disks' partitions, in boot order.
    #[serde(rename = "boot_entry", default, skip_serializing_if = "Vec::is_empty")]
    pub boot_entries: Vec<BootEntry>,
    /// The LUKS containers these filesystems sit in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub luks: Vec<LuksRecord>,
    /// The LVM volume groups they sit in.
    #[serde(rename = "vg", default, skip_serializing_if = "Vec::is_empty")]
    pub vgs: Vec<VgRecord>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FsRecord {
    /// The mount point, or `swap` for a swap partition.
    pub mountpoint: String,
    pub fstype: String,
    pub uuid: String,
    pub label: String,
    pub partuuid: String,
    pub subvol: Option<String>,
    /// Size of the filesystem's device, and bytes used on it.
    pub size: u64,
    pub used: u64,
    pub options: Vec<String>,
    pub fstab_line: String,
    /// The archive's file name (empty for swap).
    pub archive: String,
    /// What makes the filesystem what it is beyond UUID and label, as
    /// `key=value` (FAT type and cluster size; ext4 features, inode and
    /// block size), so that it is made again the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// What its device is, when not a partition: `lv:VG/LV` (a logical
    /// volume) or `luks:UUID` (a LUKS container's mapping).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub on: String,
}

impl FsRecord {
    /// The volume group and volume it sits on, if on one.
    pub fn lv(&self) -> Option<(&str, &str)> {
        self.on.strip_prefix("lv:").and_then(|v| v.split_once('/'))
    }

    /// The LUKS container whose mapping holds it directly, if one does.
    pub fn luks(&self) -> Option<&str> {
        self.on.strip_prefix("luks:")
    }
}

impl MountsFile {
    /// The PARTUUID of the partition at the bottom of a filesystem's stack
    /// (its own for a filesystem on a partition).
    pub fn partuuid_of<'a>(&'a self, r: &'a FsRecord) -> &'a str {
        let luks = |u: &str| self.luks.iter().find(|l| l.uuid == u).map_or("", |l| l.partuuid.as_str());
        let pv = |vg: &str| match self.vgs.iter().find(|v| v.name == vg).and_then(|v| v.pv_on.split_once(':')) {
            Some(("luks", u)) => luks(u),
            Some(("partuuid", p)) => p,
            _ => "",
        };
        match (r.lv(), r.luks()) {
            (Some((vg, _)), _) => pv(vg),
            (_, Some(u)) => luks(u),
            _ => r.partuuid.as_str(),
        }
    }

    /// What is stacked on the partition with this PARTUUID: its container
    /// and volume group.
    pub fn stack_on(&self, partuuid: &str) -> crate::stack::plan::Stack {
        let luks = self.luks.iter().find(|l| l.partuuid.eq_ignore_ascii_case(partuuid)).cloned();
        let vg = self
            .vgs
            .iter()
            .find(|v| match v.pv_on.split_once(':') {
                Some(("luks", u)) => luks.as_ref().is_some_and(|l| l.uuid == u),
                Some(("partuuid", p)) => p.eq_ignore_ascii_case(partuuid),
                _ => false,
            })
            .cloned();
        crate::stack::plan::Stack { luks, vg }
    }

    /// Checks what was read from a slot before anything is made from it.
    pub fn check(&self) -> anyhow::Result<()> {
        for f in &self.filesystems {
            if f.fstype == "swap" {
                if f.mountpoint != "swap" || !f.archive.is_empty() {
                    bail!("a swap record with mount point {:?}", crate::output::text(&f.mountpoint));
                }
            } else {
                check_mountpoint(&f.mountpoint)?;
                if !super::is_archive_file(&f.archive, &f.mountpoint) {
                    bail!("{}: archive {:?} is not named after its mount point", f.mountpoint, crate::output::text(&f.archive));
                }
            }
            if !f.uuid.is_empty() && !crate::config::valid_uuid(&f.uuid) {
                bail!("{}: {:?} is not a filesystem UUID", f.mountpoint, crate::output::text(&f.uuid));
            }
            if let Some(sv) = &f.subvol {
                if !super::generation::clean_relative(sv.trim_start_matches('/')) {
                    bail!("{}: subvolume {:?} is not a plain path", f.mountpoint, crate::output::text(sv));
                }
            }
            if !f.params.iter().all(|p| p.contains('=') && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_,=".contains(&b))) {
                bail!("{}: a filesystem parameter that is not a plain key=value", f.mountpoint);
            }
            if f.label.chars().any(char::is_control) {
                bail!("{}: the label holds control characters", f.mountpoint);
            }
        }
        for l in &self.luks {
            l.check()?;
        }
        for v in &self.vgs {
            v.check()?;
            if let Some(u) = v.pv_on.strip_prefix("luks:") {
                if !self.luks.iter().any(|l| l.uuid == u) {
                    bail!("volume group {} sits in a LUKS container that is not recorded", v.name);
                }
            }
        }
        for f in &self.filesystems {
            let known = match (f.lv(), f.luks()) {
                (Some((vg, lv)), _) => self.vgs.iter().any(|v| v.name == vg && v.lvs.iter().any(|l| l.name == lv)),
                (_, Some(u)) => self.luks.iter().any(|l| l.uuid == u),
                _ => f.on.is_empty(),
            };
            if !known {
                bail!("{}: sits on {:?}, which is not recorded", f.mountpoint, crate::output::text(&f.on));
            }
        }
        for d in &self.disks {
            d.check().map_err(|e| anyhow::anyhow!("disk {}: {e}", crate::output::text(&d.id)))?;
        }
        for e in &self.boot_entries {
            let plain = e.loader.starts_with('\\')
                && e.loader.len() < 256
                && e.loader.chars().all(|c| c.is_ascii_alphanumeric() || "\\._-".contains(c))
                && !e.label.is_empty()
                && e.label.len() < 128
                && !e.label.chars().any(char::is_control);
            if !plain {
                bail!("boot entry {:?}: a label or loader path that is not plain", crate::output::text(&e.label));
            }
        }
        Ok(())
    }
}

/// A mount point crossback will join to a target directory: absolute, and
/// made of plain components (no `..`, `.`, empty parts or control bytes), so
/// that it names a place beneath the target and nowhere else.
pub fn check_mountpoint(mp: &str) -> anyhow::Result<()> {
    if !mp.starts_with('/') || mp.len() > 4096 || mp.chars().any(char::is_control) {
        bail!("mount point {:?} is not an absolute path", crate::output::text(mp));
    }
    if mp == "/" {
        return Ok(());
    }
    if mp[1..].split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        bail!("mount point {:?} is not a plain path (it holds '..', '.' or '//')", crate::output::text(mp));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_that_leave_the_target_are_refused() {
        for ok in ["/", "/home", "/boot/efi", "/srv/data.d"] {
            check_mountpoint(ok).unwrap();
        }
        for bad in ["/home/../../../../somewhere", "home", "/home/", "/a//b", "/./x", "/..", "", "/a\nb"] {
            assert!(check_mountpoint(bad).is_err(), "{bad:?}");
        }
    }
}
