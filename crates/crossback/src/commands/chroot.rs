//! `crossback chroot SYSTEM [-- COMMAND...]`: the system's filesystems and
//! arch-chroot's API mounts, in new mount and PID namespaces, so nothing
//! outlives the command and nothing it started keeps a mount busy.

use crossback_host::tool::Tool;
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use crossback_host::ns;
use crossback_host::offline::{self, Mounted};
use rustix::mount::{MountFlags, UnmountFlags};

use crate::cli::ChrootArgs;
use crate::config::Config;
use crate::machine;
use crate::offline_rules::Allow;
use crate::Outcome;

/// arch-chroot's set: (source, where, type, flags, data). Mounted after the
/// system's own filesystems; /proc is mounted by the child itself, inside
/// its PID namespace.
fn api_mounts() -> Vec<(&'static str, &'static str, &'static str, MountFlags, &'static str)> {
    let mut v = vec![("sys", "sys", "sysfs", MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV | MountFlags::RDONLY, "")];
    // grub-install and efibootmgr need efivarfs, writable.
    if Path::new("/sys/firmware/efi/efivars").is_dir() {
        v.push(("efivarfs", "sys/firmware/efi/efivars", "efivarfs", MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV, ""));
    }
    v.extend([
        ("udev", "dev", "devtmpfs", MountFlags::NOSUID, "mode=0755"),
        ("devpts", "dev/pts", "devpts", MountFlags::NOSUID | MountFlags::NOEXEC, "mode=0620,gid=5,newinstance,ptmxmode=0666"),
        ("shm", "dev/shm", "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, "mode=1777"),
        ("run", "run", "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, "mode=0755"),
        ("tmp", "tmp", "tmpfs", MountFlags::NOSUID | MountFlags::NODEV | MountFlags::STRICTATIME, "mode=1777"),
    ]);
    v
}

/// Binds the machine's resolv.conf over the system's, resolving the
/// system's symlink inside its root (never out of it).
fn bind_resolv_conf(root: &Path, mounted: &mut Vec<PathBuf>) {
    let host = Path::new("/etc/resolv.conf");
    if !host.exists() {
        return;
    }
    let Ok(rootfd) =
        rustix::fs::open(root, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())
    else {
        return;
    };
    let resolve = rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS;
    // openat2 wants a mode only with O_CREAT.
    let open = |flags: rustix::fs::OFlags| {
        let mode = if flags.contains(rustix::fs::OFlags::CREATE) { rustix::fs::Mode::from_raw_mode(0o644) } else { rustix::fs::Mode::empty() };
        rustix::fs::openat2(&rootfd, "etc/resolv.conf", flags, mode, resolve)
    };
    // A dangling symlink into the fresh /run (systemd-resolved's stub): create its target there.
    let fd = match open(rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC) {
        Ok(fd) => fd,
        Err(_) => {
            let Ok(link) = rustix::fs::readlinkat(&rootfd, "etc/resolv.conf", Vec::new()) else {
                // No resolv.conf at all: an empty one to bind over, as arch-chroot makes.
                match open(rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::EXCL | rustix::fs::OFlags::CLOEXEC)
                    .and_then(|_| open(rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC))
                {
                    Ok(fd) => return bind_over(host, &fd, mounted),
                    Err(_) => return,
                }
            };
            let link = PathBuf::from(std::ffi::OsStr::new(&*link.to_string_lossy()));
            let in_run = if link.is_absolute() { link.starts_with("/run") } else { root.join("etc").join(&link).starts_with(root.join("run")) };
            if !in_run {
                return;
            }
            let rel = if link.is_absolute() { link.strip_prefix("/").unwrap_or(&link).to_path_buf() } else { PathBuf::from("etc").join(&link) };
            // /run is the tmpfs mounted a moment ago, empty and ours: making
            // directories in it by path cannot reach outside the target.
            if let Some(parent) = rel.parent() {
                if std::fs::create_dir_all(root.join(parent)).is_err() {
                    return;
                }
            }
            match open(rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CREATE | rustix::fs::OFlags::CLOEXEC) {
                Ok(_) => match open(rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC) {
                    Ok(fd) => fd,
                    Err(_) => return,
                },
                Err(_) => return,
            }
        }
    };
    bind_over(host, &fd, mounted);
}

/// Binds `host` over the file `fd` names (resolved inside the target already).
fn bind_over(host: &Path, fd: &rustix::fd::OwnedFd, mounted: &mut Vec<PathBuf>) {
    let at = PathBuf::from(format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(fd)));
    // Where it lands, for the unmount: the path the fd names.
    let real = std::fs::read_link(&at);
    match rustix::mount::mount_bind(host, &at) {
        Ok(()) => {
            if let Ok(real) = real {
                mounted.push(real);
            }
        }
        Err(e) => eprintln!("note: the machine's resolv.conf was not bound into the chroot: {e}"),
    }
}

/// The kernel's filesystems a system's tools expect (/proc, /sys, /dev,
/// /run…), where the system has the directory; the mount points, to unmount.
fn mount_api(target: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut api: Vec<PathBuf> = Vec::new();
    for (src, rel, fstype, flags, data) in api_mounts() {
        let at = target.join(rel);
        if !at.is_dir() {
            eprintln!("note: {name} has no /{rel}; not mounted in the chroot");
            continue;
        }
        let data = std::ffi::CString::new(data).context("a mount's options")?;
        rustix::mount::mount(src, &at, fstype, flags, Some(data.as_c_str())).with_context(|| format!("mounting {fstype} at /{rel} in the chroot"))?;
        api.push(at);
    }
    Ok(api)
}

pub fn run(config: &Path, a: ChrootArgs) -> anyhow::Result<Outcome> {
    machine::require_root("chroot")?;
    let cfg = Config::load(config)?;
    let _lock = crate::slots::lock_configured(&cfg, &a.system)?;
    let rw = !a.read_only;
    let access = if rw { crate::stack::open::Access::Write } else { crate::stack::open::Access::Read };
    let (_opened, m) = crate::stack::open::open_one(&cfg, &a.system, access)?;
    let sys = machine::system(&m, &cfg, &a.system)?;
    let fs = crate::offline_rules::check(
        &m,
        &sys,
        Allow { dirty: a.allow_dirty, mounted: a.allow_mounted, mounted_option: Some("--allow-mounted"), view: false, frozen: false },
        rw,
        "chroot into",
    )?;
    if !rw {
        ns::start_guard()?;
    }
    ns::enter_private()?;
    let target = crossback_host::inspect::scratch_dir(&format!("crossback-chroot-{}", sys.name))?;
    let mut tree: Mounted = offline::mount_tree(&target, &fs, rw, !rw, false).with_context(|| format!("mounting {}", sys.name))?;
    let mut api = mount_api(&target, &sys.name)?;
    if rw {
        bind_resolv_conf(&target, &mut api);
    }

    let mut argv: Vec<OsString> = a.command.iter().map(OsString::from).collect();
    if argv.is_empty() {
        let shell =
            ["bin/bash", "usr/bin/bash", "bin/sh"].iter().find(|s| target.join(s).exists()).map(|s| format!("/{s}")).unwrap_or_else(|| "/bin/sh".into());
        argv.push(shell.into());
    }
    // New PID namespace for the children: the command is its PID 1, and when
    // it ends (or crossback is killed: PDEATHSIG) every process in it goes.
    // Once the command, that namespace's PID 1, ends, no process can be
    // started in it: crossback's own PID namespace is taken back for its
    // children afterwards (closing the containers it opened runs tools).
    let own_pid_ns = std::fs::File::open("/proc/self/ns/pid").context("opening this process's PID namespace")?;
    // SAFETY: CLONE_NEWPID does not unshare the fd table.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWPID) }.context("creating a PID namespace")?;
    let proc_at = target.join("proc");
    let has_proc = proc_at.is_dir();
    // Paths crossback made: a NUL in them would be a bug.
    let root_c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).context("the chroot's path")?;
    let proc_c = std::ffi::CString::new(proc_at.as_os_str().as_encoded_bytes()).context("the chroot's /proc")?;
    // The user's command, with their terminal and locale: nothing of
    // crossback's environment but what is set here.
    let mut cmd = Tool::new(&argv[0]).args(&argv[1..]).command();
    cmd.env_clear().env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").env("HOME", "/root").env("SHELL", "/bin/sh");
    for k in ["TERM", "LANG", "LC_ALL"] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes system calls (prctl, mount, chroot, chdir) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if has_proc {
                rustix::mount::mount(
                    c"proc",
                    proc_c.as_c_str(),
                    c"proc",
                    MountFlags::NOSUID | MountFlags::NOEXEC | MountFlags::NODEV,
                    None::<&std::ffi::CStr>,
                )?;
            }
            rustix::process::chroot(root_c.as_c_str())?;
            rustix::process::chdir(c"/")?;
            Ok(())
        });
    }
    let status = cmd.status().with_context(|| format!("starting {:?} in {}", argv[0], sys.name));
    // SAFETY: setns with a descriptor of this process's own PID namespace,
    // kept open above; it changes where later children are born, nothing else.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&own_pid_ns), libc::CLONE_NEWPID) } != 0 {
        eprintln!("warning: could not return to crossback's PID namespace ({}): what it opened is closed when it exits", std::io::Error::last_os_error());
    }
    if has_proc {
        let _ = rustix::mount::unmount(&proc_at, UnmountFlags::DETACH);
    }
    while let Some(p) = api.pop() {
        let _ = rustix::mount::unmount(&p, UnmountFlags::DETACH);
    }
    let busy = tree.unmount();
    for (p, why) in &busy {
        eprintln!("warning: could not unmount {}: {why} (it goes away when crossback exits)", p.display());
    }
    let status = status?;
    // Killed by a signal: 128 + its number, as shells report it.
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(Outcome::Child(u8::try_from(code).unwrap_or(u8::MAX)))
}
