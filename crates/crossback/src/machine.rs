//! The machine as crossback sees it: its block devices, what is mounted
//! where (in every namespace it can see), which system is running, and the
//! Linux systems and slots on its filesystems.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use crossback_host::blockdev::{self, Device, Spec};
use crossback_host::fstab::{self, Fstab};
use crossback_host::inspect::{self, Inspection};
use crossback_host::mountinfo::{self, Mount};
use serde::Serialize;

use crate::config::{Config, SystemConfig};

pub struct Machine {
    pub devices: Vec<Device>,
    /// Mounts in every namespace crossback can see.
    pub mounts: Vec<Mount>,
    /// Mounts of crossback's own namespace.
    pub own: Vec<Mount>,
}

/// Runs one of the machine's tools (mkfs, e2label, btrfs…); its stderr says why it failed.
pub fn run_tool(tool: &crossback_host::tool::Tool) -> anyhow::Result<()> {
    tool.run()?;
    Ok(())
}

/// As [`run_tool`] for a step whose failure is only a warning (`what` says
/// what the step was for); true if it worked.
pub fn try_tool(tool: &crossback_host::tool::Tool, what: &str) -> bool {
    match run_tool(tool) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("warning: {what}: {e:#}");
            false
        }
    }
}

/// crossback needs root for everything that touches devices: say so first.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        crate::refuse!(
            crate::error::Refusal::NotRoot,
            "`crossback {what}` needs root: it reads block devices and mounts filesystems read-only; run it with sudo"
        );
    }
    // Devices a killed crossback left read-only (its guard died too, say).
    for said in crossback_host::layers::mapping::close_leftovers()? {
        eprintln!("note: {said}");
    }
    for dev in crossback_host::rodev::restore_leftovers()? {
        eprintln!("note: {} was left read-only by an earlier crossback that did not finish; made writable again", dev.display());
    }
    Ok(())
}

/// A btrfs mount shows an anonymous device number (0:N) in mountinfo, not
/// its block device's: take the block device's, from the mount's source,
/// so that a btrfs filesystem mounted (or running as `/`) is seen as such.
fn block_devno(m: &mut Mount) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if m.devno.0 != 0 || m.fstype != "btrfs" {
        return;
    }
    if let Ok(md) = std::fs::metadata(&m.source) {
        if md.file_type().is_block_device() {
            m.devno = (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
        }
    }
}

impl Machine {
    /// Scans the machine; `only`: look at these devices alone.
    pub fn scan(only: &[PathBuf]) -> anyhow::Result<Machine> {
        let mut devices = blockdev::scan()?;
        if !only.is_empty() {
            let wanted: Vec<PathBuf> = only.iter().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect();
            for w in &wanted {
                if !devices.iter().any(|d| &d.path == w) {
                    bail!("{} is not a block device with a filesystem on this machine", w.display());
                }
            }
            devices.retain(|d| wanted.contains(&d.path));
        }
        let mut mounts = mountinfo::everywhere().context("reading what is mounted (/proc/self/mountinfo)")?;
        let mut own = mountinfo::own().context("reading what is mounted (/proc/self/mountinfo)")?;
        for m in mounts.iter_mut().chain(own.iter_mut()) {
            block_devno(m);
        }
        Ok(Machine { devices, mounts, own })
    }

    /// Mounts of this device anywhere (of any device of the same btrfs
    /// filesystem: a mount names only one of them).
    pub fn mounts_of(&self, d: &Device) -> Vec<&Mount> {
        let same_btrfs = |m: &Mount| d.fstype == "btrfs" && self.devices.iter().any(|x| x.devno == m.devno && x.fstype == "btrfs" && x.uuid == d.uuid);
        self.mounts.iter().filter(|m| m.devno == d.devno || same_btrfs(m)).collect()
    }

    /// Where the device is mounted, for a refusal to name; `None` when it is not.
    pub fn mounted_at(&self, d: &Device) -> Option<String> {
        let at: Vec<&str> = self.mounts_of(d).iter().map(|x| x.mountpoint.as_str()).collect();
        (!at.is_empty()).then(|| at.join(", "))
    }

    /// True when the device is mounted writable anywhere crossback can see.
    pub fn mounted_rw(&self, d: &Device) -> bool {
        self.mounts_of(d).iter().any(|m| m.is_rw())
    }

    /// The running system's root: its device, and its btrfs subvolume ("" for none).
    pub fn running_root(&self) -> Option<(&Device, String)> {
        let root = mountinfo::root_mount(&self.own)?;
        let dev = self.devices.iter().find(|d| d.devno == root.devno)?;
        let subvol = if dev.fstype == "btrfs" { root.root.trim_start_matches('/').to_string() } else { String::new() };
        Some((dev, subvol))
    }

    pub fn by_uuid(&self, uuid: &str) -> anyhow::Result<Option<&Device>> {
        Ok(blockdev::find(&self.devices, &Spec::Uuid(uuid.to_lowercase()))?)
    }

    pub fn inspect(&self, d: &Device) -> anyhow::Result<Inspection> {
        Ok(inspect::inspect(d, !self.mounts_of(d).is_empty())?)
    }
}

/// One filesystem of a system.
#[derive(Clone, Debug, Serialize)]
pub struct Filesystem {
    pub mountpoint: String,
    pub fstype: String,
    /// How the system names it (`UUID=…`, `LABEL=…`).
    pub spec: String,
    pub uuid: Option<String>,
    pub subvol: Option<String>,
    pub options: Vec<String>,
    /// The device holding it, when attached.
    pub device: Option<PathBuf>,
    pub found: bool,
    /// The fstab line it comes from (empty for the root and overrides).
    pub fstab_line: String,
}

/// A configured system, resolved against the machine.
#[derive(Clone, Debug, Serialize)]
pub struct System {
    pub name: String,
    pub pretty_name: String,
    pub root_uuid: String,
    pub subvol: String,
    pub running: bool,
    pub filesystems: Vec<Filesystem>,
    /// Swap files named by fstab: left out of backups.
    pub swap_files: Vec<String>,
    /// Swap partitions named by fstab, with their device and type as found
    /// (`swsuspend` when a hibernation image is in them).
    pub swap: Vec<Filesystem>,
    /// The LUKS containers and volume groups it sits in, as they are now.
    pub layers: Vec<LayerState>,
    pub warnings: Vec<String>,
}

/// A container or volume group a system sits in, as found now.
#[derive(Clone, Debug, Serialize)]
pub struct LayerState {
    /// `luks` or `lvm`.
    pub kind: &'static str,
    /// The container's UUID, the volume group's name.
    pub name: String,
    /// The container's device, when attached.
    pub device: Option<PathBuf>,
    /// `locked`, `open`, `open read-only`, `not attached`; `active`, `inactive` for a volume group.
    pub state: String,
}

impl System {
    /// Whether the device at `path` is one of its filesystems or its swap.
    pub fn uses(&self, path: &Path) -> bool {
        self.filesystems.iter().chain(self.swap.iter()).any(|f| f.device.as_deref() == Some(path))
    }

    /// A container it sits in is locked (or not attached).
    pub fn locked(&self) -> bool {
        self.layers.iter().any(|l| l.kind == "luks" && l.state != "open" && l.state != "open read-only")
    }
}

/// The state of the layers a configured system sits in (no tool run: sysfs).
fn layer_states(m: &Machine, cfg: &SystemConfig) -> Vec<LayerState> {
    let sys = blockdev::sys_text;
    let mut out = Vec::new();
    for u in &cfg.luks {
        let dev = m.devices.iter().find(|d| d.fstype == "crypto_LUKS" && d.uuid.eq_ignore_ascii_case(u));
        let state = match dev.map(crate::stack::open::holders) {
            None => "not attached".to_string(),
            Some(h) if h.is_empty() => "locked".to_string(),
            Some(h) => if sys(&h[0], "ro") == "1" { "open read-only" } else { "open" }.to_string(),
        };
        out.push(LayerState { kind: "luks", name: u.clone(), device: dev.map(|d| d.path.clone()), state });
    }
    let dms = blockdev::kernel_names().map(|n| n.into_iter().filter(|n| n.starts_with("dm-")).collect::<Vec<_>>());
    for vg in &cfg.lvm {
        let state = match &dms {
            Ok(dms) => {
                let active =
                    dms.iter().any(|d| sys(d, "dm/uuid").starts_with("LVM-") && crate::stack::open::vg_of_dm_name(&sys(d, "dm/name")).as_deref() == Some(vg));
                if active { "active" } else { "inactive" }.to_string()
            }
            Err(e) => format!("unknown ({e})"),
        };
        out.push(LayerState { kind: "lvm", name: vg.clone(), device: None, state });
    }
    out
}

/// A system found on the machine by `init`.
#[derive(Clone, Debug)]
pub struct Found {
    pub id: String,
    /// `VERSION_CODENAME` (or `VERSION_ID`), for names when IDs repeat.
    pub release: String,
    pub name: String,
    pub pretty_name: String,
    pub device: Device,
    pub subvol: String,
    pub running: bool,
    pub fstab: Fstab,
}

/// What `discover` finds: the systems, the other filesystems it looked
/// into, and what it could not read.
pub type Discovered = (Vec<Found>, Vec<(Device, Inspection)>, Vec<String>);

/// Every Linux system on the machine's filesystems, and the devices that
/// are crossback slots already. Names come from `os-release`'s `ID`, made
/// unique in a fixed order (so any system of the machine finds the same).
pub fn discover(m: &Machine) -> anyhow::Result<Discovered> {
    let running = m.running_root().map(|(d, s)| (d.devno, s));
    let mut found = Vec::new();
    let mut slots = Vec::new();
    let mut warnings = Vec::new();
    for d in m.devices.iter().filter(|d| d.is_linux_fs()) {
        let insp = match m.inspect(d) {
            Ok(i) => i,
            Err(e) => {
                warnings.push(format!("{} ({}): {e:#}", d.path.display(), d.fstype));
                continue;
            }
        };
        for r in &insp.roots {
            if !r.has_init {
                warnings.push(format!(
                    "{}{}: has os-release but no init; not a bootable system, left out",
                    d.path.display(),
                    if r.subvol.is_empty() { String::new() } else { format!(" subvolume {}", r.subvol) }
                ));
                continue;
            }
            let id = r.os_release.get("ID").cloned().unwrap_or_else(|| "linux".into());
            let pretty = r.os_release.get("PRETTY_NAME").or(r.os_release.get("NAME")).cloned().unwrap_or_else(|| id.clone());
            let fstab = fstab::parse(&r.fstab);
            let is_running = running.as_ref().is_some_and(|(devno, sv)| *devno == d.devno && *sv == r.subvol);
            let release = r.os_release.get("VERSION_CODENAME").or(r.os_release.get("VERSION_ID")).map(|v| sanitize(v)).unwrap_or_default();
            found.push(Found {
                id: sanitize(&id),
                release,
                name: String::new(),
                pretty_name: pretty,
                device: d.clone(),
                subvol: r.subvol.clone(),
                running: is_running,
                fstab,
            });
        }
        if crate::layout::slot_of(&insp.extra).is_some() {
            slots.push((d.clone(), insp));
        }
    }
    // Encrypted and LVM volumes still closed: a system inside is not found.
    for d in m.devices.iter().filter(|d| matches!(d.fstype.as_str(), "crypto_LUKS" | "LVM2_member")) {
        if !crate::stack::open::holders(d).is_empty() {
            continue;
        }
        warnings.push(if d.fstype == "crypto_LUKS" {
            format!(
                "{} (UUID={}) is an encrypted (LUKS) container, locked: a system inside it is not found; give its passphrase (run `crossback init` on a terminal, or with --key-file FILE)",
                d.path.display(),
                d.uuid
            )
        } else {
            format!(
                "{} (UUID={}) is an LVM physical volume whose volume group is not active: a system inside it is not found; crossback activates volume groups with lvm2's tools (install lvm2)",
                d.path.display(),
                d.uuid
            )
        });
    }
    found.sort_by(|a, b| (&a.id, &a.device.uuid, &a.subvol).cmp(&(&b.id, &b.device.uuid, &b.subvol)));
    let named = names(&found.iter().map(|f| (f.id.as_str(), f.release.as_str())).collect::<Vec<_>>());
    for (f, n) in found.iter_mut().zip(named) {
        f.name = n;
    }
    Ok((found, slots, warnings))
}

/// Names for systems, in a fixed order: the os-release `ID` alone when it
/// is unique; with the release (`debian-bookworm`, `debian-trixie`) when
/// several share it, so that which is which is plain; numbered when even
/// that repeats.
fn names(systems: &[(&str, &str)]) -> Vec<String> {
    let shared = |id: &str| systems.iter().filter(|(i, _)| *i == id).count() > 1;
    let first: Vec<String> = systems.iter().map(|(id, rel)| if shared(id) && !rel.is_empty() { format!("{id}-{rel}") } else { id.to_string() }).collect();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    first
        .iter()
        .map(|n| {
            let k = count.entry(n.clone()).or_default();
            *k += 1;
            if *k == 1 {
                n.clone()
            } else {
                format!("{n}-{k}")
            }
        })
        .collect()
}

fn sanitize(id: &str) -> String {
    let s: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c.to_ascii_lowercase() } else { '-' }).collect();
    if s.is_empty() || s.starts_with('.') {
        format!("linux{s}")
    } else {
        s
    }
}

/// Resolves a configured system: its root, then its own fstab (read from
/// its root, read-only), with the config's overrides applied.
pub fn resolve(m: &Machine, cfg: &SystemConfig) -> anyhow::Result<System> {
    let name = cfg.name.get_ref().clone();
    let root_uuid = cfg.root.get_ref().to_lowercase();
    let subvol = cfg.subvol.clone().unwrap_or_default();
    let mut sys = System {
        name: name.clone(),
        pretty_name: String::new(),
        root_uuid: root_uuid.clone(),
        subvol: subvol.clone(),
        running: false,
        filesystems: Vec::new(),
        swap_files: Vec::new(),
        swap: Vec::new(),
        layers: layer_states(m, cfg),
        warnings: Vec::new(),
    };
    let root_dev = m.by_uuid(&root_uuid)?;
    let running = m.running_root().map(|(d, s)| (d.devno, s));
    let mut fstab = Fstab::default();
    if let Some(d) = root_dev {
        sys.running = running.as_ref().is_some_and(|(devno, sv)| *devno == d.devno && *sv == subvol);
        let insp = m.inspect(d).with_context(|| format!("reading system {name:?} from {}", d.path.display()))?;
        match insp.roots.iter().find(|r| r.subvol == subvol) {
            Some(r) => {
                sys.pretty_name = r.os_release.get("PRETTY_NAME").cloned().unwrap_or_default();
                fstab = fstab::parse(&r.fstab);
            }
            None => sys.warnings.push(format!(
                "{} holds no Linux system (no os-release{}): is root = {root_uuid:?} right?",
                d.path.display(),
                if subvol.is_empty() { String::new() } else { format!(" in subvolume {subvol}") }
            )),
        }
    }
    sys.warnings.extend(fstab.warnings.iter().map(|w| format!("{name}'s /etc/fstab {w}")));
    sys.swap_files = fstab.swap_files.clone();
    sys.swap = swap_of(m, &fstab)?;
    // The root first, as the configuration names it.
    let root_fstype = root_dev.map(|d| d.fstype.clone()).unwrap_or_default();
    let root_entry = fstab.mounts.iter().find(|e| e.mountpoint == "/");
    sys.filesystems.push(Filesystem {
        mountpoint: "/".into(),
        fstype: root_entry.map(|e| e.fstype.clone()).filter(|t| t != "auto").unwrap_or(root_fstype),
        spec: format!("UUID={root_uuid}"),
        uuid: Some(root_uuid.clone()),
        subvol: (!subvol.is_empty()).then(|| subvol.clone()),
        options: root_entry.map(|e| e.options.clone()).unwrap_or_default(),
        device: root_dev.map(|d| d.path.clone()),
        found: root_dev.is_some(),
        fstab_line: root_entry.map(|e| e.line.clone()).unwrap_or_default(),
    });
    sys.filesystems.extend(fstab_filesystems(m, cfg, &fstab)?);
    overridden(m, cfg, &mut sys)?;
    Ok(sys)
}

/// The swap partitions the system's fstab names.
fn swap_of(m: &Machine, fstab: &Fstab) -> anyhow::Result<Vec<Filesystem>> {
    let mut swap = Vec::new();
    for e in &fstab.swap {
        let dev = blockdev::find(&m.devices, &e.spec)?;
        swap.push(Filesystem {
            mountpoint: "swap".into(),
            fstype: dev.map(|d| d.fstype.clone()).unwrap_or_else(|| "swap".into()),
            spec: e.spec.to_fstab(),
            uuid: dev.map(|d| d.uuid.clone()).filter(|u| !u.is_empty()),
            subvol: None,
            options: e.options.clone(),
            device: dev.map(|d| d.path.clone()),
            found: dev.is_some(),
            fstab_line: e.line.clone(),
        });
    }
    Ok(swap)
}

/// The filesystems below the root the system's fstab mounts, with the
/// configuration's overrides (skip, another UUID, type or options).
fn fstab_filesystems(m: &Machine, cfg: &SystemConfig, fstab: &Fstab) -> anyhow::Result<Vec<Filesystem>> {
    let mut out = Vec::new();
    for e in fstab.mounts.iter().filter(|e| e.mountpoint != "/") {
        let ov = cfg.mounts.iter().find(|o| o.mountpoint == e.mountpoint);
        if ov.is_some_and(|o| o.skip) {
            continue;
        }
        let spec = match ov.and_then(|o| o.uuid.as_ref()) {
            Some(u) => Spec::Uuid(u.get_ref().clone()),
            None => e.spec.clone(),
        };
        let dev = blockdev::find(&m.devices, &spec)?;
        let fstype = ov.and_then(|o| o.fstype.clone()).unwrap_or_else(|| {
            if e.fstype == "auto" {
                dev.map(|d| d.fstype.clone()).unwrap_or_default()
            } else {
                e.fstype.clone()
            }
        });
        let options = ov.and_then(|o| o.options.as_ref()).map(|o| o.split(',').map(str::to_string).collect()).unwrap_or_else(|| e.options.clone());
        let uuid = match &spec {
            Spec::Uuid(u) => Some(u.clone()),
            _ => dev.map(|d| d.uuid.clone()).filter(|u| !u.is_empty()),
        };
        out.push(Filesystem {
            mountpoint: e.mountpoint.clone(),
            fstype,
            spec: spec.to_fstab(),
            uuid,
            subvol: e.subvol(),
            options,
            device: dev.map(|d| d.path.clone()),
            found: dev.is_some(),
            fstab_line: e.line.clone(),
        });
    }
    Ok(out)
}

/// Overrides for mount points the fstab does not have: filesystems added.
fn overridden(m: &Machine, cfg: &SystemConfig, sys: &mut System) -> anyhow::Result<()> {
    let known: Vec<String> = sys.filesystems.iter().map(|f| f.mountpoint.clone()).collect();
    for o in cfg.mounts.iter().filter(|o| !o.skip && !known.contains(&o.mountpoint)) {
        let Some(u) = &o.uuid else {
            sys.warnings.push(format!("mount override {} names no uuid and fstab has no such mount point; ignored", o.mountpoint));
            continue;
        };
        let dev = m.by_uuid(u.get_ref())?;
        sys.filesystems.push(Filesystem {
            mountpoint: o.mountpoint.clone(),
            fstype: o.fstype.clone().or_else(|| dev.map(|d| d.fstype.clone())).unwrap_or_default(),
            spec: format!("UUID={}", u.get_ref().to_lowercase()),
            uuid: Some(u.get_ref().to_lowercase()),
            subvol: None,
            options: o.options.as_ref().map(|o| o.split(',').map(str::to_string).collect()).unwrap_or_default(),
            device: dev.map(|d| d.path.clone()),
            found: dev.is_some(),
            fstab_line: String::new(),
        });
    }
    Ok(())
}

/// The configured system called `name`, resolved.
pub fn system(m: &Machine, cfg: &Config, name: &str) -> anyhow::Result<System> {
    match cfg.system(name) {
        Some(s) => resolve(m, s),
        None => bail!(
            "no system called {name:?} in the configuration (configured: {})",
            cfg.systems.iter().map(|s| s.name.get_ref().as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Every configured system, resolved.
pub fn systems(m: &Machine, cfg: &Config) -> anyhow::Result<Vec<System>> {
    cfg.systems.iter().map(|s| resolve(m, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Debian systems are `debian-bookworm` and `debian-trixie`, not
    /// `debian` and `debian-2` (which was which was not obvious).
    #[test]
    fn systems_sharing_an_id_are_named_by_release() {
        assert_eq!(names(&[("alpha", "1"), ("beta", "2")]), ["alpha", "beta"]);
        assert_eq!(names(&[("debian", "bookworm"), ("debian", "trixie"), ("fedora", "41")]), ["debian-bookworm", "debian-trixie", "fedora"]);
        assert_eq!(names(&[("debian", "bookworm"), ("debian", "bookworm"), ("debian", "")]), ["debian-bookworm", "debian-bookworm-2", "debian"]);
    }
}
