//! Block devices and their filesystems, found from `/sys/class/block` and
//! probed with util-linux's `blkid -p` (libblkid, reading the superblocks
//! directly): no `/dev/disk/by-*` links, no udev, no blkid cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::tool::Tool;

/// One block device and what is on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Kernel name: `sda2`, `nvme0n1p3`, `loop4`.
    pub name: String,
    /// `/dev/NAME`.
    pub path: PathBuf,
    /// `major:minor`.
    pub devno: (u32, u32),
    /// The whole disk this is a partition of (its kernel name), or itself.
    pub disk: String,
    pub size: u64,
    pub read_only: bool,
    /// Filesystem type as blkid names it (`ext4`, `btrfs`, `vfat`, `swap`, `swsuspend`…); empty if none.
    pub fstype: String,
    pub uuid: String,
    pub label: String,
    pub partuuid: String,
    pub partlabel: String,
    /// Why blkid could not read it, when it could not (then it is listed
    /// with no type: not "empty", but not known).
    pub unreadable: Option<String>,
}

impl Device {
    /// True for the filesystems a Linux root can live on (the filesystem table's word).
    pub fn is_linux_fs(&self) -> bool {
        crate::fstype::linux(&self.fstype)
    }
}

/// Parses `blkid -o export` output.
pub(crate) fn parse_export(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn read_sys(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok().map(|s| s.trim().to_string())
}

/// Where the kernel lists the block devices, a directory of attributes each.
const SYS_BLOCK: &str = "/sys/class/block";

/// A block device's directory of attributes (`/sys/class/block/NAME`).
pub fn sys_dir(name: &str) -> PathBuf {
    Path::new(SYS_BLOCK).join(name)
}

/// An attribute of a block device (`/sys/class/block/NAME/FILE`), trimmed;
/// empty if it cannot be read.
pub fn sys_text(name: &str, file: &str) -> String {
    read_sys(&sys_dir(name), file).unwrap_or_default()
}

/// The kernel names of the block devices there are (`sda`, `sda1`, `dm-0`, …).
pub fn kernel_names() -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(SYS_BLOCK)?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
}

/// Every block device the kernel lists, with its filesystem probed. Devices
/// without a node in `/dev` (partitions of loop devices without udev) and
/// empty ones are left out; a device blkid cannot read is listed with no type.
pub fn scan() -> Result<Vec<Device>> {
    let mut out = Vec::new();
    let mut names = kernel_names().map_err(crate::error::ctx(|| format!("listing {SYS_BLOCK}")))?;
    names.sort();
    for name in names {
        if let Some(d) = device(&name)? {
            out.push(d);
        }
    }
    Ok(out)
}

/// The device with this kernel name, probed; `None` if it is empty or has no node.
pub fn device(name: &str) -> Result<Option<Device>> {
    let sys = sys_dir(name);
    let size = read_sys(&sys, "size").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 512;
    let path = Path::new("/dev").join(name);
    if size == 0 || !path.exists() {
        return Ok(None);
    }
    let devno = read_sys(&sys, "dev").and_then(|s| s.split_once(':').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))).unwrap_or((0, 0));
    // A partition's sysfs directory sits inside its disk's.
    let disk = if sys.join("partition").exists() {
        std::fs::canonicalize(&sys)
            .ok()
            .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned()))
            .unwrap_or_else(|| name.to_string())
    } else {
        name.to_string()
    };
    let mut d = Device { name: name.to_string(), path, devno, disk, size, read_only: read_sys(&sys, "ro").as_deref() == Some("1"), ..Default::default() };
    let probed = match probe(&d.path) {
        Ok(p) => p,
        Err(e) => {
            d.unreadable = Some(e.to_string());
            BTreeMap::new()
        }
    };
    // What blkid does not report the device does not have (no label, …).
    d.fstype = probed.get("TYPE").cloned().unwrap_or_default();
    d.uuid = probed.get("UUID").cloned().unwrap_or_default();
    d.label = probed.get("LABEL").cloned().unwrap_or_default();
    d.partuuid = probed.get("PART_ENTRY_UUID").cloned().unwrap_or_default();
    d.partlabel = probed.get("PART_ENTRY_NAME").cloned().unwrap_or_default();
    Ok(Some(d))
}

/// `blkid -p -o export DEV`: the superblock read now, not a cached answer.
pub fn probe(dev: &Path) -> Result<BTreeMap<String, String>> {
    let blkid = Tool::new("blkid").args(["-p", "-o", "export"]).arg(dev).output_checked_by(&[0, 2])?;
    // Exit 2: nothing found on the device; other failures are errors (an
    // unreadable device is not an empty one).
    Ok(parse_export(&blkid))
}

/// How `fstab` names a filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase", tag = "by", content = "value")]
pub enum Spec {
    Uuid(String),
    Label(String),
    PartUuid(String),
    PartLabel(String),
    /// A device path (`/dev/sda2`): not stable across boots, matched as a last resort.
    Path(String),
}

impl Spec {
    /// Parses `UUID=…`, `LABEL=…`, `PARTUUID=…`, `PARTLABEL=…`, `/dev/disk/by-*/…` and `/dev/…`.
    pub fn parse(s: &str) -> Option<Spec> {
        let unq = |v: &str| v.trim_matches('"').to_string();
        if let Some(v) = s.strip_prefix("UUID=") {
            return Some(Spec::Uuid(unq(v)));
        }
        if let Some(v) = s.strip_prefix("LABEL=") {
            return Some(Spec::Label(unq(v)));
        }
        if let Some(v) = s.strip_prefix("PARTUUID=") {
            return Some(Spec::PartUuid(unq(v)));
        }
        if let Some(v) = s.strip_prefix("PARTLABEL=") {
            return Some(Spec::PartLabel(unq(v)));
        }
        for (prefix, make) in [
            ("/dev/disk/by-uuid/", Spec::Uuid as fn(String) -> Spec),
            ("/dev/disk/by-label/", Spec::Label),
            ("/dev/disk/by-partuuid/", Spec::PartUuid),
            ("/dev/disk/by-partlabel/", Spec::PartLabel),
        ] {
            if let Some(v) = s.strip_prefix(prefix) {
                return Some(make(crate::fstab::unescape(v)));
            }
        }
        s.starts_with("/dev/").then(|| Spec::Path(s.to_string()))
    }

    pub fn matches(&self, d: &Device) -> bool {
        match self {
            Spec::Uuid(u) => !d.uuid.is_empty() && d.uuid.eq_ignore_ascii_case(u),
            Spec::Label(l) => !d.label.is_empty() && d.label == *l,
            Spec::PartUuid(u) => !d.partuuid.is_empty() && d.partuuid.eq_ignore_ascii_case(u),
            Spec::PartLabel(l) => !d.partlabel.is_empty() && d.partlabel == *l,
            Spec::Path(p) => d.path == Path::new(p),
        }
    }

    /// As fstab would spell it.
    pub fn to_fstab(&self) -> String {
        match self {
            Spec::Uuid(v) => format!("UUID={v}"),
            Spec::Label(v) => format!("LABEL={v}"),
            Spec::PartUuid(v) => format!("PARTUUID={v}"),
            Spec::PartLabel(v) => format!("PARTLABEL={v}"),
            Spec::Path(v) => v.clone(),
        }
    }
}

/// The one device `spec` names among `devices`: `None` when none does.
/// More than one (cloned filesystems with the same UUID) is an error.
pub fn find<'a>(devices: &'a [Device], spec: &Spec) -> Result<Option<&'a Device>> {
    let found: Vec<&Device> = devices.iter().filter(|d| spec.matches(d)).collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found[0])),
        _ => Err(Error::Refused(format!(
            "{} names {} devices ({}): filesystems were cloned; give one a new UUID (e.g. tune2fs -U random, xfs_admin -U generate, btrfstune -u) before crossback can tell them apart",
            spec.to_fstab(),
            found.len(),
            found.iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(Spec::parse("UUID=ABCD-1234"), Some(Spec::Uuid("ABCD-1234".into())));
        assert!(Spec::parse("UUID=ABCD-1234").unwrap().matches(&Device { uuid: "abcd-1234".into(), ..Default::default() }));
        assert_eq!(Spec::parse("LABEL=\"my root\""), Some(Spec::Label("my root".into())));
        assert_eq!(Spec::parse("/dev/disk/by-label/my\\040root"), Some(Spec::Label("my root".into())));
        assert_eq!(Spec::parse("/dev/disk/by-partuuid/0FC63DAF-8483"), Some(Spec::PartUuid("0FC63DAF-8483".into())));
        assert_eq!(Spec::parse("/dev/sda2"), Some(Spec::Path("/dev/sda2".into())));
        assert_eq!(Spec::parse("tmpfs"), None);
    }

    #[test]
    fn export_format() {
        let m = parse_export("DEVNAME=/dev/loop0\nUUID=2b5e\nTYPE=ext4\n");
        assert_eq!(m["TYPE"], "ext4");
        assert_eq!(m["UUID"], "2b5e");
    }
}
