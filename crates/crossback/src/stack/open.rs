//! Opening what a system sits in: the LUKS containers and LVM
//! volume groups its configuration names (`luks`, `lvm`, written by
//! `init`), read-only for a backup or a look, read-write for a chroot —
//! and nothing else. What crossback opens it closes (the
//! [`Opened`] guard, and after a kill the guard process or the next run);
//! what someone else opened is used only as it is safe to.
//!
//! Keys: `--key-file FILE` (each one tried, its whole content, as
//! cryptsetup reads key files), else the passphrase asked on the terminal.
//! They are never stored.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretBox};
use anyhow::Context;
use crossback_host::blockdev::{self, sys_text, Device};
use crossback_host::layers::mapping::{self, OpenError, Opened};
use crossback_host::layers::{self, DmKind};

use crate::config::SystemConfig;
use crate::error::{refuse, Refusal};
use crate::machine::Machine;
use crate::refuse;
use crate::stack::plan::{LuksRecord, LvRecord, VgRecord};

/// What the command will do with the systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Back up or look: containers opened read-only, volume groups activated
    /// read-only; a container someone else opened read-write is refused.
    Read,
    /// The running system's own backup at reboot (`--frozen`): its open
    /// containers are its own, and were made read-only above them.
    Frozen,
    /// Change (chroot, `mount --rw`): opened read-write.
    Write,
}

/// Key files given with `--key-file` (or `$CROSSBACK_KEY_FILE`).
static KEY_FILES: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();

/// Called once by `main` with the global option.
pub fn set_key_files(files: Vec<PathBuf>) {
    let mut files = files;
    if files.is_empty() {
        if let Some(f) = std::env::var_os("CROSSBACK_KEY_FILE").filter(|f| !f.is_empty()) {
            files.push(PathBuf::from(f));
        }
    }
    let _ = KEY_FILES.set(files);
}

/// The key files given (`--key-file`, `$CROSSBACK_KEY_FILE`).
pub fn key_files() -> &'static [PathBuf] {
    KEY_FILES.get().map(Vec::as_slice).unwrap_or(&[])
}

/// Key files are small: cryptsetup reads at most 8 MiB of one.
const KEY_CAP: u64 = 8 << 20;

/// A key file's whole content; `option` names where it was given.
pub fn read_key(path: &Path, option: &str) -> anyhow::Result<SecretBox<Vec<u8>>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| refuse(Refusal::ContainerKey, format!("{option} {}: cannot be read ({e})", path.display())))?;
    let mut buf = Vec::new();
    f.take(KEY_CAP + 1).read_to_end(&mut buf).with_context(|| format!("reading {}", path.display()))?;
    if buf.len() as u64 > KEY_CAP {
        refuse!(Refusal::ContainerKey, "{option} {}: larger than 8 MiB, not a key file", path.display());
    }
    Ok(SecretBox::new(Box::new(buf)))
}

/// The kernel names of the devices built on `dev` (`/sys/class/block/X/holders`).
pub fn holders(dev: &Device) -> Vec<String> {
    let mut h: Vec<String> = std::fs::read_dir(blockdev::sys_dir(&dev.name).join("holders"))
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    h.sort();
    h
}

/// The LUKS containers below the running system's root (its own, open by it).
fn running_containers(m: &Machine) -> Vec<String> {
    let Some((root, _)) = m.running_root() else { return Vec::new() };
    layers::stack_of(Path::new("/sys"), &root.name)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| match l.kind {
            Some(DmKind::Luks { uuid, .. }) => Some(uuid),
            _ => None,
        })
        .collect()
}

/// Opens the containers and volume groups these systems sit in, as `access`
/// needs; returns what it opened (closed when dropped), the machine as it
/// is now, and the systems whose layers could not be opened, with why
/// (their other systems go on). Systems without layers: nothing to do.
pub fn open_for(systems: &[&SystemConfig], access: Access) -> anyhow::Result<Unlocked> {
    let mut opened = Opened::default();
    if systems.iter().all(|s| s.luks.is_empty() && s.lvm.is_empty()) {
        return Ok(Unlocked { opened, machine: Machine::scan(&[])?, failed: Vec::new() });
    }
    // Before anything is opened: a kill from here on is cleaned up.
    crossback_host::ns::start_guard()?;
    let m = Machine::scan(&[])?;
    let running = running_containers(&m);
    let mut failed = Vec::new();
    let mut ours_luks: Vec<PathBuf> = Vec::new();
    let mut done: Vec<String> = Vec::new();
    for s in systems {
        if let Err(e) = open_system(&mut opened, &m, s, access, &running, &mut ours_luks, &mut done) {
            failed.push((s.name.get_ref().clone(), e));
        }
    }
    Ok(Unlocked { opened, machine: Machine::scan(&[])?, failed })
}

/// What [`open_for`] opened (closed when dropped), the machine as it is
/// then, and the systems whose layers could not be opened, with why.
pub struct Unlocked {
    pub opened: Opened,
    pub machine: Machine,
    pub failed: Vec<(String, anyhow::Error)>,
}

/// For the commands on one system (chroot, mount): its layers opened, or
/// why not.
pub fn open_one(cfg: &crate::config::Config, name: &str, access: Access) -> anyhow::Result<(Opened, Machine)> {
    let systems: Vec<&SystemConfig> = cfg.system(name).into_iter().collect();
    let mut u = open_for(&systems, access)?;
    match u.failed.pop() {
        Some((_, e)) => Err(e),
        None => Ok((u.opened, u.machine)),
    }
}

/// One system's containers, then its volume groups, in two passes: a
/// container whose key file the system's own crypttab names is opened with
/// it as soon as the system's root can be read (the root may sit in one of
/// the others); the rest with `--key-file` or the passphrase asked.
fn open_system(
    opened: &mut Opened,
    m: &Machine,
    s: &SystemConfig,
    access: Access,
    running: &[String],
    ours_luks: &mut Vec<PathBuf>,
    done: &mut Vec<String>,
) -> anyhow::Result<()> {
    let name = s.name.get_ref();
    let mut fresh = None;
    for last in [false, true] {
        // The second pass sees what the first opened.
        let m: &Machine = if last { fresh.insert(Machine::scan(&[])?) } else { m };
        for uuid in &s.luks {
            let uuid = uuid.to_ascii_lowercase();
            if done.contains(&uuid) {
                continue;
            }
            let Some(dev) = m.devices.iter().find(|d| d.fstype == "crypto_LUKS" && d.uuid.eq_ignore_ascii_case(&uuid)) else {
                if last {
                    eprintln!("warning: {name} sits in the LUKS container UUID={uuid}, which is not attached");
                }
                continue;
            };
            if let Some(dm) = holders(dev).first() {
                check_open_elsewhere(s, dev, dm, &uuid, access, running)?;
                done.push(uuid);
                continue;
            }
            let rw = access == Access::Write;
            if let Some((path, key)) = crypttab_key(m, s, dev) {
                match opened.open_luks(&dev.path, &mapping::mapping_name(&uuid), key.expose_secret(), !rw) {
                    Ok(p) => {
                        println!(
                            "opened the LUKS container {} (UUID={uuid}){} with the key file {path} that {name}'s crypttab names",
                            dev.path.display(),
                            if rw { "" } else { " read-only" }
                        );
                        ours_luks.push(p);
                        done.push(uuid);
                        continue;
                    }
                    Err(OpenError::WrongKey(_)) => eprintln!("note: the key file {path} that {name}'s crypttab names does not open {}", dev.path.display()),
                    Err(OpenError::Other(e)) => {
                        return Err(
                            anyhow::Error::new(e).context(format!("opening {} with the key file {path} that {name}'s crypttab names", dev.path.display()))
                        )
                    }
                }
            }
            if !last {
                continue;
            }
            let mapped = open_luks(opened, dev, &uuid, name, rw)?;
            ours_luks.push(mapped);
            done.push(uuid);
        }
        if s.lvm.is_empty() {
            continue;
        }
        let pvs = mapping::pvs()?;
        for vg in &s.lvm {
            if done.contains(vg) {
                continue;
            }
            let lvs = lvs_of(vg)?;
            if lvs.is_empty() {
                if last {
                    eprintln!("warning: {name} sits in the volume group {vg}, which was not found (is its disk attached, its container open?)");
                }
                continue;
            }
            done.push(vg.clone());
            // On a container crossback just opened, lvm2's udev rules may have
            // activated it already: then crossback activates it again, as asked.
            let on_ours = pvs.iter().any(|p| &p.vg == vg && ours_luks.iter().any(|o| same_device(&p.device, o)));
            if lvs.iter().any(|l| l.active()) && !on_ours {
                if access == Access::Read {
                    refuse_in_use(name, vg)?;
                }
                // Active and unused: used as it is (each filesystem is set read-only while read).
                continue;
            }
            activate(opened, vg, access != Access::Write).with_context(|| format!("activating the volume group {vg} of {name}"))?;
        }
    }
    if access == Access::Write {
        own_names(opened, s, ours_luks)?;
    }
    Ok(())
}

/// To change a system (chroot), the containers crossback opened get the
/// names its own crypttab gives them: its tools look for those (Debian's
/// initramfs hook finds the root's container by its mapping's name).
fn own_names(opened: &mut Opened, s: &SystemConfig, ours: &[PathBuf]) -> anyhow::Result<()> {
    let m = Machine::scan(&[])?;
    let Some(root) = m.by_uuid(s.root.get_ref())? else { return Ok(()) };
    let Ok(insp) = m.inspect(root) else { return Ok(()) };
    let Some(found) = insp.roots.into_iter().find(|r| r.subvol == s.subvol.clone().unwrap_or_default()) else { return Ok(()) };
    for e in layers::parse_crypttab(&found.crypttab).entries.iter().filter(|e| e.is_luks()) {
        let Some(dev) = crossback_host::blockdev::find(&m.devices, &e.source)? else { continue };
        let Some(dm) = holders(dev).into_iter().next() else { continue };
        let current = sys_text(&dm, "dm/name");
        let ours = ours.iter().any(|o| o == &Path::new("/dev").join(&dm)) && current.starts_with("crossback-");
        if ours && current != e.name && !Path::new("/dev/mapper").join(&e.name).exists() {
            opened
                .rename_luks(&current, &e.name)
                .with_context(|| format!("naming /dev/mapper/{current} {} as {}'s crypttab does", e.name, s.name.get_ref()))?;
            println!("/dev/mapper/{current} is /dev/mapper/{} now, as {}'s crypttab names it", e.name, s.name.get_ref());
        }
    }
    Ok(())
}

/// A container someone else opened (its mapping `dm`): used as it is,
/// unless it is open read-write and the system is to be read (refused),
/// or open read-only and it is to be changed.
fn check_open_elsewhere(s: &SystemConfig, dev: &Device, dm: &str, uuid: &str, access: Access, running: &[String]) -> anyhow::Result<()> {
    let name = s.name.get_ref();
    let dm_name = sys_text(dm, "dm/name");
    let writable = sys_text(dm, "ro") == "0";
    if access == Access::Read && writable && !dm_name.starts_with("crossback-") && !running.iter().any(|r| r == uuid) {
        // A volume in use on it says more than the open container.
        for vg in &s.lvm {
            refuse_in_use(name, vg)?;
        }
        refuse!(
            Refusal::ContainerOpen,
            "{name} sits in the LUKS container {} (UUID={uuid}), which is open read-write as /dev/mapper/{dm_name}: something may be writing to it. Close it (`vgchange -an` its volume groups, then `cryptsetup close {dm_name}`) and run again: crossback opens it read-only itself. Nothing was opened",
            dev.path.display()
        );
    }
    if access == Access::Write && !writable {
        refuse!(
            Refusal::ContainerOpen,
            "{name} sits in the LUKS container {} (UUID={uuid}), which is open read-only as /dev/mapper/{dm_name}: close it first to change the system",
            dev.path.display()
        );
    }
    Ok(())
}

/// The key file the system's own crypttab names for `dev`, read from its
/// root (when the root can be read now): its path and bytes.
fn crypttab_key(m: &Machine, s: &SystemConfig, dev: &Device) -> Option<(String, SecretBox<Vec<u8>>)> {
    let root = m.by_uuid(s.root.get_ref()).ok().flatten()?;
    let insp = crossback_host::inspect::key_files(root, !m.mounts_of(root).is_empty()).ok()?;
    let found = insp.roots.into_iter().find(|r| r.subvol == s.subvol.clone().unwrap_or_default())?;
    let entry = layers::parse_crypttab(&found.crypttab).entries.into_iter().find(|e| {
        e.is_luks() && e.keyfile.is_some() && crossback_host::blockdev::find(&m.devices, &e.source).ok().flatten().is_some_and(|d| d.path == dev.path)
    })?;
    let path = entry.keyfile?;
    let (_, bytes) = found.keys.into_iter().find(|(p, _)| p == &path)?;
    Some((path, SecretBox::new(Box::new(bytes))))
}

/// Activates `vg` as crossback's own. On a container crossback just opened,
/// lvm2's udev rules activate it too, read-write and in the background:
/// what they activated is deactivated first, and once more if they came
/// between (its volumes must be read-only when `read_only`).
fn activate(opened: &mut Opened, vg: &str, read_only: bool) -> anyhow::Result<()> {
    for _ in 0..3 {
        if mapping::lvs(vg)?.iter().any(|l| l.active()) {
            mapping::deactivate(vg).with_context(|| format!("deactivating {vg}, which udev activated when its container was opened"))?;
        }
        opened.activate_vg(vg, read_only)?;
        let lvs = mapping::lvs(vg)?;
        // lv_attr's permission: `r` a read-only volume, `R` one activated read-only.
        if !read_only || lvs.iter().filter(|l| l.active()).all(|l| matches!(l.attr.chars().nth(1), Some('r' | 'R'))) {
            println!("activated volume group {vg}{}", if read_only { " read-only" } else { "" });
            return Ok(());
        }
    }
    refuse!(Refusal::VolumeInUse, "volume group {vg} keeps being activated read-write by something else (lvm2's udev rules?): crossback did not read it")
}

/// The logical volumes of `vg`; none when no physical volume names it
/// (not there, or its container is closed). A report that fails is an error.
fn lvs_of(vg: &str) -> anyhow::Result<Vec<layers::Lv>> {
    if !mapping::pvs()?.iter().any(|p| p.vg == vg) {
        return Ok(Vec::new());
    }
    Ok(mapping::lvs(vg)?)
}

/// Refuses a volume group with a volume active read-write and in use.
fn refuse_in_use(system: &str, vg: &str) -> anyhow::Result<()> {
    let lvs = lvs_of(vg)?;
    if let Some(busy) = lvs.iter().find(|l| l.active() && l.open() && l.attr.chars().nth(1) == Some('w')) {
        refuse!(
            Refusal::VolumeInUse,
            "{system} sits in the volume group {vg}, whose volume {vg}/{} is active read-write and in use (mounted, or held open by a program): stop what uses it and deactivate it (`vgchange -an {vg}`); crossback activates it read-only itself. Nothing was opened",
            busy.name
        );
    }
    Ok(())
}

/// The same block device (by device number: a mapping has two names).
fn same_device(a: &str, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.rdev() == y.rdev(),
        _ => false,
    }
}

/// Opens one container with a key that opens it: each `--key-file`, else
/// the passphrase asked (three tries). Nothing is opened with a wrong key.
fn open_luks(opened: &mut Opened, dev: &Device, uuid: &str, system: &str, rw: bool) -> anyhow::Result<PathBuf> {
    let name = mapping::mapping_name(uuid);
    let what = format!("the LUKS container {} (UUID={uuid}) that {system} sits in", dev.path.display());
    let (path, _) = find_key(&what, |key| match opened.open_luks(&dev.path, &name, key, !rw) {
        Ok(p) => Ok(Some(p)),
        Err(OpenError::WrongKey(_)) => Ok(None),
        Err(OpenError::Other(e)) => Err(anyhow::Error::new(e).context(format!("opening {what}"))),
    })?;
    println!("opened {what}{}", if rw { "" } else { " read-only" });
    Ok(path)
}

/// A key `accept` takes (`Some`): each `--key-file`, else the passphrase
/// asked on the terminal (three tries); with it, what `accept` gave.
/// `what` names the container in the prompt and the refusals.
pub fn find_key<T>(what: &str, mut accept: impl FnMut(&[u8]) -> anyhow::Result<Option<T>>) -> anyhow::Result<(T, SecretBox<Vec<u8>>)> {
    let files = key_files();
    for f in files {
        let key = read_key(f, "--key-file")?;
        if let Some(t) = accept(key.expose_secret())? {
            return Ok((t, key));
        }
    }
    if !files.is_empty() {
        refuse!(
            Refusal::ContainerKey,
            "no key file given ({}) opens {what}: nothing was opened",
            files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    if !std::io::stdin().is_terminal() {
        refuse!(
            Refusal::ContainerKey,
            "{what} is locked, and there is no terminal to ask for its passphrase: give it with --key-file FILE (the passphrase alone in the file, no newline)"
        );
    }
    for attempt in 1..=3 {
        let p = rpassword::prompt_password(format!("Passphrase for {what}: "))?;
        if p.is_empty() {
            break;
        }
        let key = SecretBox::new(Box::new(p.into_bytes()));
        if let Some(t) = accept(key.expose_secret())? {
            return Ok((t, key));
        }
        if attempt < 3 {
            eprintln!("no key slot opens with that passphrase; again:");
        }
    }
    refuse!(Refusal::ContainerKey, "no passphrase given opens {what}: nothing was opened")
}

/// For `init`: opens every locked LUKS container read-only with a key that
/// opens it (`--key-file`, or asked; an empty answer leaves it locked),
/// and activates read-only the volume groups on them and the inactive ones
/// elsewhere, so that systems inside are found. Nothing to open, or no key
/// and no terminal: the containers stay locked (`discover` says so).
pub fn open_all(m: &Machine) -> anyhow::Result<Opened> {
    let mut opened = Opened::default();
    let locked: Vec<&Device> = m.devices.iter().filter(|d| d.fstype == "crypto_LUKS" && holders(d).is_empty()).collect();
    let plain_pvs = m.devices.iter().any(|d| d.fstype == "LVM2_member");
    if locked.is_empty() && !plain_pvs {
        return Ok(opened);
    }
    crossback_host::ns::start_guard()?;
    if !key_files().is_empty() || std::io::stdin().is_terminal() {
        for d in locked {
            if let Err(e) = open_luks(&mut opened, d, &d.uuid.to_ascii_lowercase(), "a system", false) {
                eprintln!("warning: {e:#}; left locked");
            }
        }
    }
    // Finding systems goes on without the volume groups lvm2 cannot
    // report (not installed, say): said, not hidden.
    let lvm = || -> anyhow::Result<_> {
        let pvs = mapping::pvs()?;
        let mut vgs: Vec<String> = pvs.iter().map(|p| p.vg.clone()).filter(|v| !v.is_empty()).collect();
        vgs.sort();
        vgs.dedup();
        let lvs = vgs.into_iter().map(|vg| mapping::lvs(&vg).map(|l| (vg, l))).collect::<Result<Vec<_>, _>>()?;
        Ok((pvs, lvs))
    };
    let (pvs, lvs) = match lvm() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warning: volume groups not activated, systems in them not found: {e:#}");
            return Ok(opened);
        }
    };
    // Groups on the containers just opened (udev may have activated them
    // already), and groups nobody activated.
    let ours: Vec<String> = pvs.into_iter().filter(|p| opened.mappings().iter().any(|m| same_device(&p.device, &mapping::dm_node(m)))).map(|p| p.vg).collect();
    for (vg, l) in lvs {
        if l.iter().any(|l| l.active()) && !ours.contains(&vg) {
            continue;
        }
        if let Err(e) = activate(&mut opened, &vg, true) {
            eprintln!("warning: volume group {vg} was not activated: {e:#}");
        }
    }
    Ok(opened)
}

/// For `init`: the layers a system found on `dev` sits in, from sysfs
/// (LUKS container UUIDs, volume group names), bottom last.
pub fn layers_of(dev: &Device) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut luks = Vec::new();
    let mut lvm = Vec::new();
    for l in layers::stack_of(Path::new("/sys"), &dev.name).with_context(|| format!("reading what {} sits on", dev.path.display()))? {
        match l.kind {
            Some(DmKind::Luks { uuid, .. }) => luks.push(uuid),
            Some(DmKind::Lv { .. }) => {
                // The VG's name: the dm name is VG-LV with dashes doubled inside each.
                if let Some(vg) = vg_of_dm_name(&l.dm_name) {
                    lvm.push(vg);
                }
            }
            _ => {}
        }
    }
    Ok((luks, lvm))
}

/// lvm2's device-mapper name `VG-LV`, where a dash inside either name is
/// doubled: the VG is what comes before the first single dash.
pub fn vg_of_dm_name(dm: &str) -> Option<String> {
    let b = dm.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            return Some(dm[..i].replace("--", "-"));
        }
        i += 1;
    }
    None
}

/// What a restore needs of the layers below a system's filesystems:
/// each LUKS container's header, each volume group's metadata
/// and volumes, and for each device what it is on.
#[derive(Debug, Default)]
pub struct Layering {
    pub luks: Vec<LuksRecord>,
    /// Each container's `luksHeaderBackup` (plain bytes), by LUKS UUID.
    pub headers: Vec<(String, Vec<u8>)>,
    pub vgs: Vec<VgRecord>,
    /// For each device given: its `on` (empty for a partition), and the
    /// partition at the bottom of its stack (itself for a partition).
    pub on: Vec<(String, PathBuf)>,
}

/// Reads the layers below `devices` (each with its mount point, `swap`,
/// and the bytes used on it). `sealed`: header files get `.age`. A stack
/// crossback cannot make again (a volume group over several disks, a
/// container on something other than a partition) is refused.
pub fn record(m: &Machine, devices: &[(&Path, &str, u64)], sealed: bool) -> anyhow::Result<Layering> {
    let mut out = Layering::default();
    let unsupported = |why: String| refuse(Refusal::Unsupported, why);
    for (path, mountpoint, used) in devices {
        let Some(dev) = m.devices.iter().find(|d| d.path == *path) else {
            out.on.push((String::new(), path.to_path_buf()));
            continue;
        };
        let stack = layers::stack_of(Path::new("/sys"), &dev.name).map_err(|e| unsupported(format!("{mountpoint} on {}: {e}", path.display())))?;
        let bottom = stack.last().map(|l| Path::new("/dev").join(&l.name)).unwrap_or_else(|| path.to_path_buf());
        let mut on = String::new();
        for (i, layer) in stack.iter().enumerate() {
            let below = stack.get(i + 1);
            match &layer.kind {
                None => {}
                Some(DmKind::Luks { uuid, .. }) => {
                    if below.is_none_or(|b| b.kind.is_some()) {
                        return Err(unsupported(format!(
                            "{mountpoint}: the LUKS container {uuid} is not on a partition: crossback makes containers again on partitions only"
                        )));
                    }
                    if i == 0 {
                        on = format!("luks:{uuid}");
                    }
                    if !out.luks.iter().any(|l| &l.uuid == uuid) {
                        let part = &bottom;
                        let pdev = m.devices.iter().find(|d| &d.path == part);
                        let header = header_bytes(part)?;
                        // LUKS1 has no JSON metadata: its header ends where its data starts.
                        let data_offset = match header.get(6..8) {
                            Some([0, 1]) => header.len() as u64,
                            _ => mapping::luks_info(part)?.data_offset,
                        };
                        let pdev = pdev.with_context(|| format!("{} is not among the machine's devices", part.display()))?;
                        out.luks.push(LuksRecord {
                            uuid: uuid.clone(),
                            partuuid: pdev.partuuid.clone(),
                            size: pdev.size,
                            data_offset,
                            header: format!("luks-{uuid}.img{}", if sealed { ".age" } else { "" }),
                            header_bytes: header.len() as u64,
                            header_hash: blake3::hash(&header).to_hex().to_string(),
                        });
                        out.headers.push((uuid.clone(), header));
                    }
                }
                Some(DmKind::Lv { lv_uuid, .. }) => {
                    let vg = vg_of_dm_name(&layer.dm_name)
                        .ok_or_else(|| unsupported(format!("{mountpoint}: {} is not named as lvm2 names volumes", layer.dm_name)))?;
                    let lvs = mapping::lvs(&vg)?;
                    let lv = lvs
                        .iter()
                        .find(|l| &l.uuid == lv_uuid)
                        .ok_or_else(|| unsupported(format!("{mountpoint}: volume {lv_uuid} is not in {vg}'s report")))?;
                    if lv.kind != '-' {
                        return Err(unsupported(format!(
                            "{mountpoint}: {vg}/{} is not a plain volume (lv_attr {}): thin, snapshot, mirror, RAID and cache volumes are not handled",
                            lv.name, lv.attr
                        )));
                    }
                    if i == 0 {
                        on = format!("lv:{vg}/{}", lv.name);
                    }
                    if !out.vgs.iter().any(|v| v.name == vg) {
                        let pv_on = match below.map(|b| &b.kind) {
                            Some(Some(DmKind::Luks { uuid, .. })) => format!("luks:{uuid}"),
                            Some(None) => format!("partuuid:{}", m.devices.iter().find(|d| d.path == bottom).map(|d| d.partuuid.clone()).unwrap_or_default()),
                            _ => return Err(unsupported(format!("{mountpoint}: volume group {vg} is not on a partition or a LUKS container"))),
                        };
                        out.vgs.push(vg_record(&vg, pv_on, lvs)?);
                    }
                    if let Some(v) = out.vgs.iter_mut().find(|v| v.name == vg) {
                        if let Some(l) = v.lvs.iter_mut().find(|l| &l.uuid == lv_uuid) {
                            l.mountpoint = mountpoint.to_string();
                            l.used = *used;
                        }
                    }
                }
                Some(DmKind::Other(u)) => {
                    return Err(unsupported(format!(
                        "{mountpoint} sits on a device-mapper device crossback does not know ({u}): plain dm-crypt, RAID and multipath are not handled"
                    )))
                }
            }
        }
        out.on.push((on, bottom));
    }
    Ok(out)
}

/// `luksHeaderBackup` of the container on `part`, read into memory.
fn header_bytes(part: &Path) -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::Builder::new().prefix("crossback-luks-").tempdir_in("/run").context("a private directory under /run for the LUKS header")?;
    let file = dir.path().join("header");
    mapping::header_backup(part, &file)?;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    Ok(bytes)
}

fn vg_record(vg: &str, pv_on: String, lvs: Vec<layers::Lv>) -> anyhow::Result<VgRecord> {
    let pvs: Vec<layers::Pv> = mapping::pvs()?.into_iter().filter(|p| p.vg == vg).collect();
    let [pv] = pvs.as_slice() else {
        refuse!(Refusal::Unsupported, "volume group {vg} is on {} physical volumes: crossback makes volume groups on one only", pvs.len());
    };
    let info = mapping::vgs(Some(vg))?.into_iter().next().with_context(|| format!("volume group {vg} is not in vgs's report"))?;
    let pe_start = mapping::pe_starts()?
        .into_iter()
        .find(|(u, _)| u == &pv.uuid)
        .map(|(_, s)| s)
        .with_context(|| format!("lvm2 reports no data start for {vg}'s physical volume"))?;
    Ok(VgRecord {
        name: vg.to_string(),
        uuid: info.uuid,
        pv_uuid: pv.uuid.clone(),
        pv_on,
        extent_size: info.extent_size,
        pe_start,
        lvs: lvs.into_iter().map(|l| LvRecord { name: l.name, uuid: l.uuid, size: l.size, mountpoint: String::new(), used: 0 }).collect(),
        metadata: mapping::vg_metadata(vg)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_group_names_from_device_mapper_names() {
        assert_eq!(vg_of_dm_name("vgb-root").as_deref(), Some("vgb"));
        assert_eq!(vg_of_dm_name("ubuntu--vg-ubuntu--lv").as_deref(), Some("ubuntu-vg"));
        assert_eq!(vg_of_dm_name("a--b--c-d").as_deref(), Some("a-b-c"));
        assert_eq!(vg_of_dm_name("plain"), None);
    }
}
