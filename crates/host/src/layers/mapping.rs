//! Opening LUKS containers and activating LVM volume groups read-only for
//! crossback's work, and closing them again, with the
//! distribution's tools: `cryptsetup open --readonly`, `vgchange -ay` with
//! the volume group in `read_only_volume_list` and lvm2 forbidden to write
//! metadata.
//!
//! A mapping is kernel state: it outlives a killed process. So, as with the
//! read-only flags ([`crate::rodev`]), each one crossback makes is recorded
//! in `/run/crossback/layers/` first, removed when closed, and what a dead
//! run left is closed by its guard ([`crate::ns`]) or by the next run
//! ([`close_leftovers`]).

use crate::tool::Tool;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::blockdev;
use crate::error::{ctx, Error, Result};
use crate::layers::{self, LuksInfo};

const RECORDS: &str = "/run/crossback/layers";

/// What a record names. Volume groups are closed before the containers
/// they sit in: their records sort first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    Vg,
    Luks,
}

impl What {
    fn prefix(self) -> &'static str {
        match self {
            What::Vg => "1-vg-",
            What::Luks => "2-luks-",
        }
    }
}

fn record_path(what: What, name: &str) -> PathBuf {
    Path::new(RECORDS).join(format!("{}{name}", what.prefix()))
}

/// Why a container did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No key slot opens with the key given (cryptsetup's exit code 2).
    #[error("no key slot of {0} opens with this passphrase or key file")]
    WrongKey(String),
    #[error(transparent)]
    Other(#[from] Error),
}

/// The mapping name crossback gives a container it opens.
pub fn mapping_name(luks_uuid: &str) -> String {
    format!("crossback-luks-{}", luks_uuid.to_ascii_lowercase())
}

/// `cryptsetup` with the key on its stdin, read whole (`--key-file -`),
/// as cryptsetup reads a key file: a passphrase typed at a prompt is the
/// same bytes without the newline.
fn cryptsetup_with_key(args: &[&std::ffi::OsStr], key: &[u8], device: &Path) -> std::result::Result<(), OpenError> {
    let mut cmd = Tool::new("cryptsetup");
    cmd.args(args).arg("--key-file").arg("-").input(key);
    let out = cmd.output()?;
    match out.status.code() {
        Some(0) => Ok(()),
        Some(2) => Err(OpenError::WrongKey(device.display().to_string())),
        _ => Err(cmd.failed(&out).into()),
    }
}

/// Checks a key against a container (or a header backup file) without
/// opening anything.
pub fn test_key(device: &Path, key: &[u8]) -> std::result::Result<(), OpenError> {
    cryptsetup_with_key(&["open".as_ref(), "--test-passphrase".as_ref(), "--type".as_ref(), "luks".as_ref(), device.as_os_str()], key, device)
}

/// The container's LUKS UUID (`cryptsetup luksUUID`), lowercase.
pub fn luks_uuid(device: &Path) -> Result<String> {
    Ok(Tool::new("cryptsetup").arg("luksUUID").arg(device).run()?.trim().to_ascii_lowercase())
}

/// What a restore needs of a LUKS2 container's header.
pub fn luks_info(device: &Path) -> Result<LuksInfo> {
    layers::parse_luks2_json(&Tool::new("cryptsetup").args(["luksDump", "--dump-json-metadata"]).arg(device).run()?)
}

/// `cryptsetup luksHeaderBackup`: the header (everything before the data) into `file`, which must not exist.
pub fn header_backup(device: &Path, file: &Path) -> Result<()> {
    Tool::new("cryptsetup").args(["luksHeaderBackup", "--batch-mode"]).arg(device).arg("--header-backup-file").arg(file).run().map(drop)
}

/// `cryptsetup luksFormat`: a new LUKS2 container on `device` with a new
/// master key, keeping `uuid` and the data offset (in 512-byte sectors).
pub fn luks_format(device: &Path, uuid: &str, offset_sectors: u64, key: &[u8]) -> Result<()> {
    let offset = offset_sectors.to_string();
    let args: [&std::ffi::OsStr; 9] = [
        "luksFormat".as_ref(),
        "--batch-mode".as_ref(),
        "--type".as_ref(),
        "luks2".as_ref(),
        "--uuid".as_ref(),
        uuid.as_ref(),
        "--offset".as_ref(),
        offset.as_ref(),
        device.as_os_str(),
    ];
    cryptsetup_with_key(&args, key, device).map_err(|e| match e {
        OpenError::Other(e) => e,
        w => Error::Command(w.to_string()),
    })
}

/// `cryptsetup luksAddKey`: `new_key` (a key file's bytes) opens the
/// container too; `key` is one that opens it now.
pub fn add_key(device: &Path, key: &[u8], new_key: &[u8]) -> Result<()> {
    let dir = tempdir()?;
    let file = dir.join("key");
    let written = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file).and_then(|mut f| f.write_all(new_key))
    };
    let r = written.map_err(ctx(|| format!("writing {}", file.display()))).and_then(|()| {
        cryptsetup_with_key(&["luksAddKey".as_ref(), "--batch-mode".as_ref(), device.as_os_str(), file.as_os_str()], key, device).map_err(|e| match e {
            OpenError::Other(e) => e,
            w => Error::Command(w.to_string()),
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// `cryptsetup luksUUID --uuid`: gives the container a new UUID (its keys stay).
pub fn set_luks_uuid(device: &Path, uuid: &str) -> Result<()> {
    Tool::new("cryptsetup").args(["luksUUID", "--batch-mode", "--uuid", uuid]).arg(device).run().map(drop)
}

/// A new random UUID, from the kernel.
pub fn new_uuid() -> Result<String> {
    let u = std::fs::read_to_string("/proc/sys/kernel/random/uuid").map_err(ctx(|| "reading /proc/sys/kernel/random/uuid".into()))?;
    Ok(u.trim().to_string())
}

/// `cryptsetup luksHeaderRestore`: writes the header from `file` onto `device`.
pub fn header_restore(file: &Path, device: &Path) -> Result<()> {
    Tool::new("cryptsetup").args(["luksHeaderRestore", "--batch-mode"]).arg(device).arg("--header-backup-file").arg(file).run().map(drop)
}

/// An lvm2 command, quiet about descriptors it inherits.
fn lvm(cmd: &str) -> Tool {
    let mut c = Tool::new(cmd);
    c.env("LVM_SUPPRESS_FD_WARNINGS", "1");
    c
}

fn lvm_report(cmd: &str, fields: &str, vg: Option<&str>) -> Result<String> {
    let mut c = lvm(cmd);
    c.args(["--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields]);
    c.args(vg);
    c.run()
}

pub fn pvs() -> Result<Vec<layers::Pv>> {
    layers::parse_pvs(&lvm_report("pvs", layers::PVS_FIELDS, None)?)
}

pub fn vgs(vg: Option<&str>) -> Result<Vec<layers::Vg>> {
    layers::parse_vgs(&lvm_report("vgs", layers::VGS_FIELDS, vg)?)
}

pub fn lvs(vg: &str) -> Result<Vec<layers::Lv>> {
    layers::parse_lvs(&lvm_report("lvs", layers::LVS_FIELDS, Some(vg))?)
}

/// Where the first extent begins on each PV (`pe_start`), by PV UUID.
pub fn pe_starts() -> Result<Vec<(String, u64)>> {
    let text = lvm_report("pvs", "pv_uuid,pe_start", None)?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Parse(format!("lvm2 report: {e}")))?;
    let rows = v.pointer("/report/0/pv").and_then(|r| r.as_array()).ok_or_else(|| Error::Parse("lvm2 report: no physical volumes' rows".into()))?;
    rows.iter()
        .map(|r| {
            let field = |k: &str| r.get(k).and_then(|v| v.as_str()).ok_or_else(|| Error::Parse(format!("lvm2 report: a row without {k}")));
            let start = field("pe_start")?.parse().map_err(|_| Error::Parse("lvm2 report: pe_start is not a number".into()))?;
            Ok((field("pv_uuid")?.to_string(), start))
        })
        .collect()
}

/// The volume group's metadata as lvm2 writes it (`vgcfgbackup`), read
/// without writing anything on the machine.
pub fn vg_metadata(vg: &str) -> Result<String> {
    let dir = tempdir()?;
    let file = dir.join("vg");
    let r = lvm("vgcfgbackup")
        .arg("-f")
        .arg(&file)
        .arg(vg)
        .run()
        .and_then(|_| std::fs::read_to_string(&file).map_err(ctx(|| format!("reading {}", file.display()))));
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn tempdir() -> Result<PathBuf> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = Path::new("/run/crossback").join(format!("tmp-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(ctx(|| format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Makes the physical volume on `dev` again with its recorded UUID and the
/// metadata area `metadata` (a `vgcfgbackup` file) describes.
pub fn pv_restore(dev: &Path, pv_uuid: &str, metadata: &Path) -> Result<()> {
    lvm("pvcreate").args(["-ff", "-y", "--uuid", pv_uuid, "--restorefile"]).arg(metadata).arg(dev).run().map(drop)
}

/// `vgcfgrestore`: the volume group as `metadata` records it, UUIDs and all.
pub fn vg_restore(vg: &str, metadata: &Path) -> Result<()> {
    lvm("vgcfgrestore").arg("-f").arg(metadata).arg(vg).run().map(drop)
}

/// A new physical volume on `dev` with the recorded UUID, and a new
/// volume group `vg` on it (its own new UUID).
pub fn vg_create(vg: &str, pv_uuid: &str, extent_size: u64, dev: &Path) -> Result<()> {
    lvm("pvcreate").args(["-ff", "-y", "--uuid", pv_uuid, "--norestorefile"]).arg(dev).run()?;
    lvm("vgcreate").args(["-y", "-s", &format!("{extent_size}b"), vg]).arg(dev).run().map(drop)
}

/// A new volume of `extents` extents, not activated (and so not zeroed:
/// a filesystem is made on it next).
pub fn lv_create(vg: &str, name: &str, extents: u64) -> Result<()> {
    lvm("lvcreate").args(["-y", "-an", "-Zn", "-Wn", "-l", &extents.to_string(), "-n", name, vg]).run().map(drop)
}

/// A volume's device (see [`dm_node`]); its mapping is `VG-LV`, dashes inside the names doubled.
pub fn lv_device(vg: &str, lv: &str) -> PathBuf {
    dm_node(&format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--")))
}

/// The kernel's name (`dm-N`) of the mapping `name`, if there is one.
fn dm_kernel_name(name: &str) -> Option<String> {
    blockdev::kernel_names().ok()?.into_iter().find(|n| n.starts_with("dm-") && blockdev::sys_text(n, "dm/name") == name)
}

/// The kernel's node of the mapping `name` (`/dev/dm-N`, as the machine's
/// scan names devices), else `/dev/mapper/NAME`.
pub fn dm_node(name: &str) -> PathBuf {
    match dm_kernel_name(name) {
        Some(n) => Path::new("/dev").join(n),
        None => Path::new("/dev/mapper").join(name),
    }
}

/// Whether a mapping's device-mapper UUID is one crossback's opening makes:
/// cryptsetup names it `CRYPT-LUKS2-<uuid>-<name at open>`, and crossback
/// opens as [`mapping_name`]; a rename (chroot) keeps the UUID.
fn made_by_crossback(dm_uuid: &str) -> bool {
    dm_uuid.starts_with("CRYPT-LUKS") && dm_uuid.contains("-crossback-luks-")
}

/// The device-mapper UUID of the container mapping a record names, when a
/// mapping of that name is there and is not one crossback opened: someone
/// opened their own under that name since (a record of a renamed mapping
/// names the system's crypttab name).
fn not_ours(what: What, name: &str) -> Option<String> {
    if what != What::Luks {
        return None;
    }
    let uuid = blockdev::sys_text(&dm_kernel_name(name)?, "dm/uuid");
    (!made_by_crossback(&uuid)).then_some(uuid)
}

/// Waits for udev to have seen a new device (where there is a udev).
fn settle() {
    let _ = Tool::new("udevadm").args(["settle", "--timeout=10"]).output();
}

/// The `--config` that activates a volume group read-only and keeps lvm2
/// from writing its metadata.
fn read_only_config(vg: &str) -> String {
    format!("activation {{ read_only_volume_list = [ \"{vg}\" ] monitoring = 0 }} global {{ metadata_read_only = 1 }}")
}

/// Containers opened and volume groups activated by this process: closed
/// (volume groups first) by [`Opened::close`] or on drop.
#[derive(Debug, Default)]
pub struct Opened {
    items: Vec<(What, String)>,
}

impl Opened {
    /// Opens the container on `device` as `/dev/mapper/NAME`, read-only unless not `read_only`.
    pub fn open_luks(&mut self, device: &Path, name: &str, key: &[u8], read_only: bool) -> std::result::Result<PathBuf, OpenError> {
        write_record(What::Luks, name)?;
        let mut args: Vec<&std::ffi::OsStr> = vec!["open".as_ref(), "--type".as_ref(), "luks".as_ref()];
        if read_only {
            args.push("--readonly".as_ref());
        }
        args.extend([device.as_os_str(), name.as_ref()]);
        let mut r = cryptsetup_with_key(&args, key, device);
        // Without device-mapper, cryptsetup fails before it looks at the key: tell a wrong key apart.
        if matches!(r, Err(OpenError::Other(_))) {
            if let Err(OpenError::WrongKey(w)) = test_key(device, key) {
                r = Err(OpenError::WrongKey(w));
            }
        }
        if let Err(e) = r {
            let _ = std::fs::remove_file(record_path(What::Luks, name));
            return Err(e);
        }
        self.items.push((What::Luks, name.to_string()));
        settle();
        Ok(dm_node(name))
    }

    /// Activates every logical volume of `vg`, read-only unless not `read_only`.
    pub fn activate_vg(&mut self, vg: &str, read_only: bool) -> Result<()> {
        write_record(What::Vg, vg)?;
        let config = if read_only { read_only_config(vg) } else { "activation { monitoring = 0 }".to_string() };
        if let Err(e) = lvm("vgchange").args(["-ay", "--config", &config, vg]).run() {
            // Half activated: put it back.
            let _ = deactivate(vg);
            let _ = std::fs::remove_file(record_path(What::Vg, vg));
            return Err(e);
        }
        self.items.push((What::Vg, vg.to_string()));
        settle();
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Renames a container's mapping it opened (`dmsetup rename`): a
    /// system's own tools inside a chroot (its initramfs hook) look for the
    /// name its crypttab gives. The record follows.
    pub fn rename_luks(&mut self, from: &str, to: &str) -> Result<()> {
        let Some(item) = self.items.iter_mut().find(|(w, n)| *w == What::Luks && n == from) else {
            return Err(Error::Refused(format!("{from} is not a mapping this crossback opened")));
        };
        write_record(What::Luks, to)?;
        if let Err(e) = Tool::new("dmsetup").args(["rename", from, to]).run() {
            let _ = std::fs::remove_file(record_path(What::Luks, to));
            return Err(e);
        }
        let _ = std::fs::remove_file(record_path(What::Luks, from));
        item.1 = to.to_string();
        settle();
        Ok(())
    }

    /// The names of the containers it opened.
    pub fn mappings(&self) -> Vec<String> {
        self.items.iter().filter(|(w, _)| *w == What::Luks).map(|(_, n)| n.clone()).collect()
    }

    /// Leaves everything open past this process (`crossback mount`): the
    /// records name `tag` instead of a pid, and [`close_kept`] closes them.
    pub fn keep(mut self, tag: &str) -> Result<()> {
        for (what, name) in std::mem::take(&mut self.items) {
            let rec = record_path(what, &name);
            std::fs::write(&rec, format!("kept {tag}\n")).map_err(ctx(|| format!("writing {}", rec.display())))?;
        }
        Ok(())
    }

    /// Closes everything, last opened first; says what would not close.
    pub fn close(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some((what, name)) = self.items.pop() {
            match close_one(what, &name) {
                Ok(()) => {
                    let _ = std::fs::remove_file(record_path(what, &name));
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        failed
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        for f in self.close() {
            eprintln!("warning: {f}");
        }
    }
}

fn write_record(what: What, name: &str) -> Result<()> {
    std::fs::create_dir_all(RECORDS).map_err(ctx(|| format!("creating {RECORDS}")))?;
    let rec = record_path(what, name);
    std::fs::write(&rec, format!("{}\n", std::process::id())).map_err(ctx(|| format!("writing {}", rec.display())))
}

/// Deactivates every volume of `vg` (none may be in use).
pub fn deactivate(vg: &str) -> Result<()> {
    lvm("vgchange").args(["-an", "--config", "activation { monitoring = 0 }", vg]).run().map(drop)
}

/// Closes one; a mapping still busy (a mount namespace of crossback's that
/// the kernel is still tearing down) is tried again for ten seconds.
fn close_one(what: What, name: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        let r = match what {
            What::Vg => deactivate(name),
            What::Luks if !Path::new("/dev/mapper").join(name).exists() => Ok(()),
            What::Luks => Tool::new("cryptsetup").arg("close").arg(name).run().map(drop),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                let what = if what == What::Vg { format!("deactivating volume group {name}") } else { format!("closing /dev/mapper/{name}") };
                return Err(Error::Command(format!("{what} (opened by crossback): {e}; do it by hand once nothing uses it")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// The records, in closing order: (record, what, name, its text).
fn records() -> Vec<(PathBuf, What, String, String)> {
    let Ok(rd) = std::fs::read_dir(RECORDS) else { return Vec::new() };
    let mut recs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    recs.sort();
    recs.into_iter()
        .filter_map(|rec| {
            let file = rec.file_name()?.to_string_lossy().into_owned();
            let (what, name) = match (file.strip_prefix(What::Vg.prefix()), file.strip_prefix(What::Luks.prefix())) {
                (Some(n), _) => (What::Vg, n.to_string()),
                (_, Some(n)) => (What::Luks, n.to_string()),
                _ => return None,
            };
            // A record that does not read names no device: what is closed by name is closed all the same.
            let text = std::fs::read_to_string(&rec).unwrap_or_default().trim().to_string();
            Some((rec, what, name, text))
        })
        .collect()
}

fn shown(what: What, name: &str) -> String {
    if what == What::Vg {
        format!("volume group {name}")
    } else {
        format!("/dev/mapper/{name}")
    }
}

/// Closes what a record names, unless it is a container mapping that is
/// not crossback's (then only the record goes). Says which, as a sentence
/// that ends with `whose`.
fn close_recorded(rec: &Path, what: What, name: &str, whose: &str) -> Result<String> {
    let said = match not_ours(what, name) {
        Some(uuid) => format!(
            "left {} open: it is not the mapping {whose} (its device-mapper UUID is {uuid}, not one crossback makes); the record is removed",
            shown(what, name)
        ),
        None => {
            close_one(what, name)?;
            format!("closed {}, {whose}", shown(what, name))
        }
    };
    let _ = std::fs::remove_file(rec);
    Ok(said)
}

/// Closes what [`Opened::keep`] left open for `tag`. Says what it did.
pub fn close_kept(tag: &str) -> Result<Vec<String>> {
    let mut said = Vec::new();
    for (rec, what, name, text) in records() {
        if text == format!("kept {tag}") {
            said.push(close_recorded(&rec, what, &name, "which `crossback mount` opened")?);
        }
    }
    Ok(said)
}

/// Closes what a crossback that died left open. Says what it did.
pub fn close_leftovers() -> Result<Vec<String>> {
    let mut said = Vec::new();
    for (rec, what, name, text) in records() {
        if text.starts_with("kept ") {
            continue;
        }
        let pid: u32 = text.parse().unwrap_or(0);
        if pid != 0 && pid != std::process::id() && crate::rodev::alive(pid) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "crossback" {
                continue;
            }
        }
        said.push(close_recorded(&rec, what, &name, "which an earlier crossback that did not finish left open")?);
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The volume group is named in the read-only list, and lvm2 may not
    /// write metadata: activation changes nothing on the disk.
    #[test]
    fn activation_is_read_only_and_writes_no_metadata() {
        let c = read_only_config("vgb");
        assert!(c.contains("read_only_volume_list = [ \"vgb\" ]"), "{c}");
        assert!(c.contains("metadata_read_only = 1"), "{c}");
    }

    /// Volume groups close before the containers they sit in.
    #[test]
    fn volume_groups_close_before_containers() {
        let mut names = [record_path(What::Luks, "crossback-luks-x"), record_path(What::Vg, "vgb")];
        names.sort();
        assert!(names[0].to_string_lossy().contains("1-vg-vgb"));
        assert_eq!(mapping_name("0A1B-C"), "crossback-luks-0a1b-c");
    }

    /// A leftover record of a renamed mapping names the system's crypttab
    /// name: only a mapping crossback opened (by its device-mapper UUID,
    /// which a rename keeps) is closed, not one the user opened since.
    #[test]
    fn only_mappings_crossback_opened_are_closed_for_a_record() {
        let uuid = "0a1b2c3d-0000-4000-8000-00000000000e";
        let ours = format!("CRYPT-LUKS2-0a1b2c3d000040008000000000000000e-{}", mapping_name(uuid));
        assert!(made_by_crossback(&ours));
        assert!(!made_by_crossback("CRYPT-LUKS2-0a1b2c3d000040008000000000000000e-b_crypt"));
        assert!(!made_by_crossback("CRYPT-PLAIN-crossback-luks-x"));
        assert!(!made_by_crossback("LVM-abcdef"));
        assert!(!made_by_crossback(""));
        assert_eq!(not_ours(What::Vg, "vgb"), None);
    }
}
