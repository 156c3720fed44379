//! The offline rules (O1–O3 in docs/design-rules.md) applied to one system before any
//! of its filesystems is mounted: each refusal says what was found and
//! what to do.

use crossback_host::offline::{self, FsMount};

use crate::error::Refusal;
use crate::machine::{Filesystem, Machine, System};
use crate::refuse;

/// What the user allowed explicitly.
#[derive(Clone, Copy, Debug, Default)]
pub struct Allow {
    /// Mount a filesystem whose journal needs recovery, or of a hibernated
    /// system, without replaying anything (read-only only).
    pub dirty: bool,
    /// Mount a filesystem that is mounted read-write elsewhere.
    pub mounted: bool,
    /// The command has an option that allows that (named in the refusal).
    pub mounted_option: Option<&'static str>,
    /// Read a filesystem (not the root) that this system has mounted
    /// read-write through a read-only view of that mount (backup, verify).
    pub view: bool,
    /// The running system counts as offline while every filesystem of it
    /// is mounted read-only (the boot of `backup --at-reboot`, which made
    /// them so before anything else started): it is read through
    /// read-only views of its own mounts.
    pub frozen: bool,
}

/// Checks `sys` may be mounted (`rw`: read-write) and returns its filesystems.
pub fn check(m: &Machine, sys: &System, allow: Allow, rw: bool, purpose: &str) -> anyhow::Result<Vec<FsMount>> {
    if sys.running && allow.frozen && !rw {
        return frozen(m, sys);
    }
    if sys.running {
        refuse!(
            Refusal::SystemRunning,
            "{} is the running system (its root is mounted on /): {purpose} it from another system or a live USB; a running system's files come back broken",
            sys.name
        );
    }
    let out = sys.filesystems.iter().map(|f| check_fs(m, sys, f, allow, rw)).collect::<anyhow::Result<Vec<_>>>()?;
    for s in &sys.swap {
        if s.fstype == "swsuspend" && (rw || !allow.dirty) {
            refuse!(
                Refusal::SystemDirty,
                "{} is hibernated: its memory image is in swap {} ({}). Resume it and shut it down{}",
                sys.name,
                s.spec,
                s.device.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
                if rw { "; writing to a hibernated system's filesystems loses data" } else { "; --allow-dirty reads it as it is on disk" }
            );
        }
    }
    Ok(out)
}

/// One filesystem of `sys`: attached, not mounted where it must not be,
/// clean; read through a view of the running system's mount where allowed.
fn check_fs(m: &Machine, sys: &System, f: &Filesystem, allow: Allow, rw: bool) -> anyhow::Result<FsMount> {
    let Some(dev) = &f.device else {
        refuse!(
            Refusal::SystemIncomplete,
            "{}'s {} ({}) is not attached: attach its disk, or leave it out with a [[system.mount]] entry `mountpoint = {:?}` and `skip = true` in the configuration",
            sys.name,
            f.mountpoint,
            f.spec,
            f.mountpoint
        );
    };
    let d = m.devices.iter().find(|d| &d.path == dev).expect("resolved from these devices");
    let rw_at: Vec<String> = m.mounts_of(d).iter().filter(|mm| mm.is_rw()).map(|mm| mm.mountpoint.clone()).collect();
    let mut view_of = None;
    if !rw_at.is_empty() && !allow.mounted {
        // A filesystem other than the root that the running system has
        // mounted read-write (every dual boot's shared ESP at
        // /boot/efi) is read through a read-only view of that mount.
        view_of = if rw || !allow.view { None } else { read_only_view(m, sys, f, d) };
        if view_of.is_none() {
            refuse!(
                Refusal::SystemMounted,
                "{}'s {} ({}) is mounted read-write at {}: something may be writing to it, and a backup of it would come back inconsistent. Unmount it first{}",
                sys.name,
                f.mountpoint,
                dev.display(),
                rw_at.join(", "),
                allow.mounted_option.map(|o| format!(" (or pass {o} to use it as it is)")).unwrap_or_default()
            );
        }
    }
    if let Some(at) = &view_of {
        eprintln!(
            "note: {}'s {} ({}) is mounted read-write at {} by this system: it is read through a read-only view of that mount, and its device stays writable",
            sys.name,
            f.mountpoint,
            dev.display(),
            at.display()
        );
    }
    if rw && !allow.mounted {
        let at: Vec<String> = m.mounts_of(d).iter().map(|mm| mm.mountpoint.clone()).collect();
        if !at.is_empty() {
            refuse!(
                Refusal::SystemMounted,
                "{}'s {} ({}) is mounted at {}: it cannot be mounted read-write while it is; unmount it first",
                sys.name,
                f.mountpoint,
                dev.display(),
                at.join(", ")
            );
        }
    }
    if rw_at.is_empty() {
        if let Some(why) = offline::dirty(dev, &f.fstype)? {
            if rw || !allow.dirty {
                refuse!(
                    Refusal::SystemDirty,
                    "{}'s {} ({}): {why}. Boot {} and shut it down cleanly (or run fsck on it){}",
                    sys.name,
                    f.mountpoint,
                    dev.display(),
                    sys.name,
                    if rw { String::new() } else { "; --allow-dirty reads it without replaying the journal (the last changes may be missing)".to_string() }
                );
            }
        }
    }
    Ok(FsMount {
        mountpoint: f.mountpoint.clone(),
        device: dev.clone(),
        fstype: f.fstype.clone(),
        subvol: f.subvol.clone(),
        options: f.options.clone(),
        view_of,
    })
}

/// The running system, read-only from top to bottom: each of its
/// filesystems through a read-only view of the mount it has, refused if any
/// of them is writable anywhere.
fn frozen(m: &Machine, sys: &System) -> anyhow::Result<Vec<FsMount>> {
    let mut out = Vec::new();
    for f in &sys.filesystems {
        let Some(d) = f.device.as_ref().and_then(|p| m.devices.iter().find(|d| &d.path == p)) else {
            refuse!(Refusal::SystemIncomplete, "{}'s {} ({}) is not attached: the running system cannot be backed up whole", sys.name, f.mountpoint, f.spec);
        };
        let rw_at: Vec<String> = m.mounts_of(d).iter().filter(|mm| mm.is_rw()).map(|mm| mm.mountpoint.clone()).collect();
        if !rw_at.is_empty() {
            refuse!(
                Refusal::SystemRunning,
                "{} is the running system and its {} ({}) is mounted read-write at {}: a running system is backed up only while all of it is read-only, at the next boot (`crossback backup --at-reboot`)",
                sys.name,
                f.mountpoint,
                d.path.display(),
                rw_at.join(", ")
            );
        }
        let Some(at) = whole_mount(m, f, d, |mm| mm.mountpoint == f.mountpoint) else {
            refuse!(
                Refusal::SystemIncomplete,
                "{}'s {} ({}) is not mounted at {} by the running system: it cannot be read as the system has it",
                sys.name,
                f.mountpoint,
                d.path.display(),
                f.mountpoint
            );
        };
        out.push(FsMount {
            mountpoint: f.mountpoint.clone(),
            device: d.path.clone(),
            fstype: f.fstype.clone(),
            subvol: f.subvol.clone(),
            options: f.options.clone(),
            view_of: Some(at),
        });
    }
    Ok(out)
}

/// Where the running system has `f` mounted read-write, whole (the
/// filesystem's own root, or the same btrfs subvolume), in crossback's own
/// mount namespace: a read-only bind of it is a view of exactly `f`. None
/// for a system's root (a system whose root is mounted read-write is in
/// use) and for a filesystem mounted only in another namespace.
fn read_only_view(m: &Machine, sys: &System, f: &crate::machine::Filesystem, d: &crossback_host::blockdev::Device) -> Option<std::path::PathBuf> {
    if f.mountpoint == "/" || sys.running {
        return None;
    }
    whole_mount(m, f, d, |mm| mm.is_rw() && crossback_host::fstab::clean_mountpoint(&mm.mountpoint))
}

/// A mount in crossback's own namespace of all of `f` (the filesystem's
/// root, or the same btrfs subvolume) that its path leads to, and that
/// `also` accepts.
fn whole_mount(
    m: &Machine,
    f: &crate::machine::Filesystem,
    d: &crossback_host::blockdev::Device,
    also: impl Fn(&crossback_host::mountinfo::Mount) -> bool,
) -> Option<std::path::PathBuf> {
    let want = f.subvol.as_deref().map_or("/".to_string(), |sv| format!("/{}", sv.trim_start_matches('/')));
    // The last mount at a path is the one the path leads to.
    let on_top = |i: usize, at: &str| !m.own[i + 1..].iter().any(|later| later.mountpoint == at);
    m.own
        .iter()
        .enumerate()
        .find(|(i, mm)| mm.devno == d.devno && mm.root == want && also(mm) && on_top(*i, &mm.mountpoint))
        .map(|(_, mm)| std::path::PathBuf::from(&mm.mountpoint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Filesystem;
    use crossback_host::blockdev::Device;
    use crossback_host::mountinfo::Mount;

    fn dev(name: &str, minor: u32) -> Device {
        Device { name: name.into(), path: format!("/dev/{name}").into(), devno: (8, minor), disk: "sda".into(), fstype: "ext4".into(), ..Default::default() }
    }

    fn mount(minor: u32, at: &str, rw: bool) -> Mount {
        Mount {
            id: minor,
            parent: 1,
            devno: (8, minor),
            root: "/".into(),
            mountpoint: at.into(),
            options: vec![if rw { "rw" } else { "ro" }.into()],
            fstype: "ext4".into(),
            source: String::new(),
            super_options: vec![if rw { "rw" } else { "ro" }.into()],
        }
    }

    fn fs(at: &str, name: &str) -> Filesystem {
        Filesystem {
            mountpoint: at.into(),
            fstype: "ext4".into(),
            spec: String::new(),
            uuid: None,
            subvol: None,
            options: Vec::new(),
            device: Some(format!("/dev/{name}").into()),
            found: true,
            fstab_line: String::new(),
        }
    }

    /// The running system `alpha` (/ on sda2, /home on sda3), mounted as `rw` says.
    fn running(root_rw: bool, home_rw: bool) -> (Machine, System) {
        let own = vec![mount(2, "/", root_rw), mount(3, "/home", home_rw)];
        let m = Machine { devices: vec![dev("sda2", 2), dev("sda3", 3)], mounts: own.clone(), own };
        let sys = System {
            name: "alpha".into(),
            pretty_name: String::new(),
            root_uuid: String::new(),
            subvol: String::new(),
            running: true,
            filesystems: vec![fs("/", "sda2"), fs("/home", "sda3")],
            swap_files: Vec::new(),
            swap: Vec::new(),
            layers: Vec::new(),
            warnings: Vec::new(),
        };
        (m, sys)
    }

    fn refusal(r: anyhow::Result<Vec<FsMount>>) -> (Refusal, String) {
        let e = r.expect_err("refused");
        (crate::error::kind_of(&e).expect("a refusal"), format!("{e:#}"))
    }

    #[test]
    fn the_running_system_is_refused_unless_all_of_it_is_read_only() {
        let frozen = Allow { frozen: true, view: true, ..Default::default() };
        // Without the at-reboot boot's permission: refused, read-only or not.
        let (m, sys) = running(false, false);
        assert_eq!(refusal(check(&m, &sys, Allow { view: true, ..Default::default() }, false, "back up")).0, Refusal::SystemRunning);
        // Frozen, but /home (or /) still writable: refused, naming it.
        for (root_rw, home_rw, what) in [(false, true, "/home"), (true, false, "its / "), (true, true, "its / ")] {
            let (m, sys) = running(root_rw, home_rw);
            let (kind, msg) = refusal(check(&m, &sys, frozen, false, "back up"));
            assert_eq!(kind, Refusal::SystemRunning, "{msg}");
            assert!(msg.contains(what) && msg.contains("mounted read-write"), "{msg}");
        }
        // Frozen for a read-write use: refused as any running system.
        let (m, sys) = running(false, false);
        assert_eq!(refusal(check(&m, &sys, frozen, true, "mount")).0, Refusal::SystemRunning);
        // All of it read-only: read through views of its own mounts.
        let fs = check(&m, &sys, frozen, false, "back up").unwrap();
        let views: Vec<_> = fs.iter().map(|f| (f.mountpoint.as_str(), f.view_of.clone())).collect();
        assert_eq!(views, [("/", Some("/".into())), ("/home", Some("/home".into()))]);
    }

    #[test]
    fn a_frozen_system_whose_filesystem_is_not_mounted_where_it_says_is_refused() {
        let (mut m, sys) = running(false, false);
        m.own[1].mountpoint = "/elsewhere".into();
        let (kind, msg) = refusal(check(&m, &sys, Allow { frozen: true, view: true, ..Default::default() }, false, "back up"));
        assert_eq!(kind, Refusal::SystemIncomplete, "{msg}");
        assert!(msg.contains("not mounted at /home"), "{msg}");
    }
}
