//! The layers of an encrypted or LVM system made again on a new disk,
//! for `restore --bare-metal --disk`. Before anything is
//! written, each recorded container's header is read from the slot,
//! checked against its record, and a key that opens it is found. After the
//! partition table is written, the header is put back (`luksHeaderRestore`:
//! the same UUID, key slots and master key, so the system's passphrases,
//! crypttab and initramfs work unchanged), the container is opened, and the
//! volume group is made again with its recorded names: as recorded (UUIDs
//! and all, `vgcfgrestore`) when its volumes fit, else with smaller volumes.
//! The filesystems then go onto the volumes as onto partitions.

use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretBox};
use anyhow::Context;
use crossback_host::layers::mapping::{self, OpenError, Opened};
use crossback_host::partitions::{self, Table};

use crate::backups::SystemBackup;
use crate::error::Refusal;
use crate::stack::plan::{self as layering, LuksRecord, VgRecord};
use crate::{output, refuse};

/// What was read and checked before anything is written.
pub struct Prepared {
    dir: tempfile::TempDir,
    /// Each container: its record, its header file, a key that opens it
    /// (the new passphrase with `--new-luks-key`).
    luks: Vec<(LuksRecord, PathBuf, SecretBox<Vec<u8>>)>,
    vgs: Vec<VgRecord>,
    /// `--new-luks-key`: containers made with a new master key, not their headers.
    new_key: bool,
}

impl Prepared {
    pub fn is_empty(&self) -> bool {
        self.luks.is_empty() && self.vgs.is_empty()
    }
}

/// `--new-luks-key`: where the new passphrase comes from (None: asked twice).
#[derive(Debug)]
pub struct NewKey {
    pub file: Option<PathBuf>,
}

/// Reads and checks every recorded container's header and finds its key;
/// nothing is written. A header that does not match its record, or no
/// key that opens it, is refused here.
pub fn prepare(backups: &[SystemBackup], new_key: Option<&NewKey>) -> anyhow::Result<Prepared> {
    let dir = tempfile::Builder::new().prefix("crossback-layers-").tempdir_in("/run").context("a private directory under /run for the LUKS headers")?;
    let mut p = Prepared { dir, luks: Vec::new(), vgs: Vec::new(), new_key: new_key.is_some() };
    let has_luks = backups.iter().any(|b| !b.mounts.luks.is_empty());
    let new_pass = match new_key {
        Some(_) if !has_luks => refuse!(Refusal::Usage, "--new-luks-key: no system of this disk sat in a LUKS container"),
        Some(k) => Some(new_passphrase(k)?),
        None => None,
    };
    for b in backups {
        for l in &b.mounts.luks {
            if p.luks.iter().any(|(x, _, _)| x.uuid == l.uuid) {
                continue;
            }
            let bytes = b.luks_header(l)?;
            let file = p.dir.path().join(format!("{}.img", l.uuid));
            std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
            let uuid = mapping::luks_uuid(&file).map_err(|e| {
                crate::error::refuse(
                    Refusal::LayerMismatch,
                    format!("{}'s LUKS header backup for {} does not read as a LUKS header: {e}", b.record.name, l.uuid),
                )
            })?;
            if uuid != l.uuid.to_ascii_lowercase() {
                refuse!(
                    Refusal::LayerMismatch,
                    "{}'s LUKS header backup is of container {uuid}, not of {} as recorded: nothing was written",
                    b.record.name,
                    l.uuid
                );
            }
            let what = format!("{}'s LUKS container {} (its header as backed up)", b.record.name, l.uuid);
            let key = match &new_pass {
                Some(k) => SecretBox::new(Box::new(k.expose_secret().clone())),
                None => {
                    let ((), key) = crate::stack::open::find_key(&what, |k| match mapping::test_key(&file, k) {
                        Ok(()) => Ok(Some(())),
                        Err(OpenError::WrongKey(_)) => Ok(None),
                        Err(OpenError::Other(e)) => Err(anyhow::Error::new(e).context(format!("checking the key of {what}"))),
                    })?;
                    println!("{what}: the key opens it");
                    key
                }
            };
            p.luks.push((l.clone(), file, key));
        }
        for v in &b.mounts.vgs {
            if !p.vgs.iter().any(|x| x.name == v.name) {
                p.vgs.push(v.clone());
            }
        }
    }
    Ok(p)
}

/// Makes the layers on `disk`, whose new partition table is `new` (the
/// partitions keep their PARTUUIDs): containers, then volume groups, all
/// left open in `opened`. Returns the device made for each `on`
/// (`luks:UUID`, `lv:VG/LV`).
pub fn make(p: &Prepared, disk: &Path, new: &Table, opened: &mut Opened, new_uuids: bool) -> anyhow::Result<Made> {
    let part = |partuuid: &str| new.partitions.iter().find(|x| x.uuid.eq_ignore_ascii_case(partuuid));
    let mut made = Vec::new();
    let mut luks_uuids = Vec::new();
    for (l, file, key) in &p.luks {
        let Some(x) = part(&l.partuuid) else {
            refuse!(Refusal::Unsupported, "LUKS container {}: its partition {} is not on the recorded disk", l.uuid, l.partuuid);
        };
        let dev = partitions::partition_device(disk, x.number);
        let want = if new_uuids { mapping::new_uuid()? } else { l.uuid.to_ascii_lowercase() };
        if p.new_key {
            mapping::luks_format(&dev, &want, l.data_offset / 512, key.expose_secret())
                .with_context(|| format!("making the LUKS container {} on {}", l.uuid, dev.display()))?;
        } else {
            mapping::header_restore(file, &dev).with_context(|| format!("restoring the LUKS header of {} onto {}", l.uuid, dev.display()))?;
            if new_uuids {
                mapping::set_luks_uuid(&dev, &want)?;
            }
        }
        let uuid = mapping::luks_uuid(&dev)?;
        if uuid != want {
            refuse!(Refusal::LayerMismatch, "{} reads as container {uuid} after its header was made, not {want}", dev.display());
        }
        if new_uuids {
            println!("LUKS container {} on {}: new UUID {uuid}", l.uuid, dev.display());
            luks_uuids.push((l.uuid.clone(), uuid.clone()));
        }
        let mapped = opened
            .open_luks(&dev, &mapping::mapping_name(&l.uuid), key.expose_secret(), false)
            .map_err(|e| anyhow::anyhow!("opening the restored container {}: {e}", l.uuid))?;
        if p.new_key {
            println!("LUKS container {} on {}: made with a new master key and the new passphrase (its UUID as before), opened", l.uuid, dev.display());
        } else {
            println!("LUKS container {} on {}: header restored (its passphrases and key slots as before), opened", l.uuid, dev.display());
        }
        made.push((format!("luks:{}", l.uuid), mapped));
    }
    for v in &p.vgs {
        let (dev, size) = match v.pv_on.split_once(':') {
            Some(("luks", u)) => {
                let (l, _, _) = p.luks.iter().find(|(l, _, _)| l.uuid == u).context("the container of a recorded volume group")?;
                let x = part(&l.partuuid).context("the partition of a recorded container")?;
                (made.iter().find(|(on, _)| on == &format!("luks:{u}")).map(|(_, d)| d.clone()).context("an opened container")?, x.size * new.sector_size)
            }
            Some(("partuuid", pu)) => {
                let Some(x) = part(pu) else { refuse!(Refusal::Unsupported, "volume group {}: its partition {pu} is not on the recorded disk", v.name) };
                (partitions::partition_device(disk, x.number), x.size * new.sector_size)
            }
            _ => refuse!(Refusal::Unsupported, "volume group {}: its physical volume's place {:?} does not read", v.name, output::text(&v.pv_on)),
        };
        let stack =
            layering::Stack { luks: p.luks.iter().find(|(l, _, _)| v.pv_on == format!("luks:{}", l.uuid)).map(|(l, _, _)| l.clone()), vg: Some(v.clone()) };
        let plan = layering::plan_lvs(&stack, size).map_err(|why| crate::error::refuse(Refusal::TargetTooSmall, why))?;
        if plan.iter().all(|lv| !lv.shrunk) {
            let meta = p.dir.path().join(format!("{}.vg", v.name));
            std::fs::write(&meta, &v.metadata).with_context(|| format!("writing {}", meta.display()))?;
            mapping::pv_restore(&dev, &v.pv_uuid, &meta)?;
            mapping::vg_restore(&v.name, &meta)?;
            println!("volume group {} on {}: made again as recorded (names, UUIDs, sizes)", v.name, dev.display());
        } else {
            mapping::vg_create(&v.name, &v.pv_uuid, v.extent_size, &dev)?;
            for lv in &plan {
                mapping::lv_create(&v.name, &lv.name, lv.extents)?;
            }
            let sizes: Vec<String> = plan
                .iter()
                .zip(&v.lvs)
                .map(|(lv, r)| format!("{} {} → {}", lv.name, output::bytes(r.size), output::bytes(lv.extents * v.extent_size)))
                .collect();
            println!(
                "volume group {} on {}: made again smaller ({}); its names and the PV's UUID are kept, the group's and volumes' UUIDs are new (the system names them by name: fstab, crypttab and the boot do not change)",
                v.name,
                dev.display(),
                sizes.join(", ")
            );
        }
        opened.activate_vg(&v.name, false).with_context(|| format!("activating the restored volume group {}", v.name))?;
        for lv in &v.lvs {
            made.push((format!("lv:{}/{}", v.name, lv.name), mapping::lv_device(&v.name, &lv.name)));
        }
    }
    Ok(Made { devices: made, luks_uuids })
}

/// What [`make`] made: the device for each `on` (`luks:UUID`, `lv:VG/LV`),
/// and with new UUIDs, each container's (recorded, new).
pub struct Made {
    pub devices: Vec<(String, PathBuf)>,
    pub luks_uuids: Vec<(String, String)>,
}

/// The new passphrase of `--new-luks-key`: `--new-key-file`'s whole
/// content, or asked twice on the terminal.
fn new_passphrase(k: &NewKey) -> anyhow::Result<SecretBox<Vec<u8>>> {
    if let Some(f) = &k.file {
        let key = crate::stack::open::read_key(f, "--new-key-file")?;
        if key.expose_secret().is_empty() {
            refuse!(Refusal::ContainerKey, "--new-key-file {} is empty", f.display());
        }
        return Ok(key);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        refuse!(Refusal::ContainerKey, "--new-luks-key needs the new passphrase, and there is no terminal to ask on: give it with --new-key-file FILE");
    }
    let first = rpassword::prompt_password("New passphrase for the restored LUKS containers: ")?;
    if first.is_empty() || rpassword::prompt_password("The same passphrase again: ")? != first {
        refuse!(Refusal::ContainerKey, "the two passphrases differ (or are empty): nothing was written");
    }
    Ok(SecretBox::new(Box::new(first.into_bytes())))
}

/// After the data is back, with `--new-luks-key`: each key file a restored
/// system's own crypttab names for a container made anew is added to it,
/// so that what unlocks it at boot (its initramfs's copy) still does.
pub fn add_system_keys(p: &Prepared, backups: &[SystemBackup], disk: &Path, new: &Table, fs_uuids: &[(String, String)]) -> anyhow::Result<()> {
    if !p.new_key {
        return Ok(());
    }
    let m = crate::machine::Machine::scan(&[])?;
    for b in backups {
        let Some(root) = b.mounts.filesystems.iter().find(|r| r.mountpoint == "/") else { continue };
        let root_uuid = fs_uuids.iter().find(|(old, _)| old.eq_ignore_ascii_case(&root.uuid)).map_or(root.uuid.as_str(), |(_, new)| new.as_str());
        let Some(dev) = m.by_uuid(root_uuid)? else { continue };
        let insp = crossback_host::inspect::key_files(dev, !m.mounts_of(dev).is_empty())?;
        let Some(found) = insp.roots.into_iter().find(|r| r.subvol == root.subvol.clone().unwrap_or_default().trim_start_matches('/')) else { continue };
        let crypttab = crossback_host::layers::parse_crypttab(&found.crypttab);
        for (l, _, key) in p.luks.iter().filter(|(l, _, _)| b.mounts.luks.iter().any(|x| x.uuid == l.uuid)) {
            let Some(x) = new.partitions.iter().find(|x| x.uuid.eq_ignore_ascii_case(&l.partuuid)) else { continue };
            let part = partitions::partition_device(disk, x.number);
            // Its crypttab names it by its recorded UUID, or its new one (--new-uuids).
            let now = fs_uuids.iter().find(|(old, _)| old == &l.uuid).map_or(l.uuid.as_str(), |(_, new)| new.as_str());
            let named = crypttab
                .entries
                .iter()
                .filter(|e| matches!(&e.source, crossback_host::blockdev::Spec::Uuid(u) if u.eq_ignore_ascii_case(&l.uuid) || u.eq_ignore_ascii_case(now)));
            let mut added = false;
            for e in named {
                let Some(path) = &e.keyfile else { continue };
                let Some((_, bytes)) = found.keys.iter().find(|(k, _)| k == path) else { continue };
                mapping::add_key(&part, key.expose_secret(), bytes).with_context(|| format!("adding the key file {path} to the new container {}", l.uuid))?;
                println!(
                    "LUKS container {}: the key file {path} that {}'s crypttab names opens it too (its initramfs unlocks it as before)",
                    l.uuid, b.record.name
                );
                added = true;
            }
            if !added {
                println!("LUKS container {}: {} will ask for the new passphrase at boot", l.uuid, b.record.name);
            }
        }
    }
    Ok(())
}

/// What a partition holding a stack must hold at least, in sectors.
pub fn minimum(stack: &layering::Stack, fs_min: u64, sector_size: u64) -> u64 {
    layering::stack_minimum(stack, fs_min).div_ceil(sector_size)
}
