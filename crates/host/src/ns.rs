//! Private mount namespaces, and the guard that puts block devices back
//! to writable, and closes the containers crossback opened, when it dies.
//!
//! A command that mounts filesystems for its own use (backup, a read-only
//! view, chroot) first calls [`enter_private`]: from then on, every mount
//! it makes is invisible to the rest of the machine and is torn down by
//! the kernel when the last process in the namespace exits — also after
//! `kill -9`. Block devices set read-only (see [`crate::rodev`]) are kernel
//! state that no namespace holds, so [`start_guard`] starts a small
//! process, outside any of this, that waits for crossback to die and then
//! puts back what it recorded.

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::OnceLock;

use rustix::mount::MountPropagationFlags;

use crate::error::{ctx, Result};

/// The hidden first argument that makes the executable act as the guard.
pub const GUARD_ARG: &str = "__crossback-guard";

/// Moves this process into a new mount namespace whose mounts propagate
/// nowhere (slave: unmounts made on the machine still reach it, so it does
/// not keep others' filesystems busy where `/` is shared, as under
/// systemd). Call it before starting any thread.
pub fn enter_private() -> Result<()> {
    // SAFETY: CLONE_NEWNS does not unshare the fd table; the hazard the
    // function is marked unsafe for (CLONE_FILES) does not apply.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.map_err(ctx(|| "creating a private mount namespace".into()))?;
    rustix::mount::mount_change("/", MountPropagationFlags::REC | MountPropagationFlags::DOWNSTREAM)
        .map_err(ctx(|| "making this process's mounts private".into()))?;
    Ok(())
}

static GUARD: OnceLock<Child> = OnceLock::new();

/// Starts the guard (once): it reads its stdin, which only crossback holds,
/// until crossback exits however it exits, then restores the read-only
/// flags crossback recorded.
pub fn start_guard() -> Result<()> {
    if GUARD.get().is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(ctx(|| "finding crossback's own executable".into()))?;
    let child = crate::tool::Tool::new(exe)
        .arg(GUARD_ARG)
        .arg(std::process::id().to_string())
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(ctx(|| "starting the read-only guard".into()))?;
    let _ = GUARD.set(child);
    Ok(())
}

/// The guard's side: called by `main` when `args[1] == GUARD_ARG`.
pub fn serve_guard(args: &[String]) -> i32 {
    // Leave crossback's process group and ignore the terminal's signals:
    // Ctrl-C must not kill the guard before crossback.
    let _ = rustix::process::setsid();
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    // The pipe closes while crossback is still exiting: wait until it is
    // gone (or a zombie), or its records would look like a live run's.
    if let Some(pid) = args.get(2).and_then(|p| p.parse::<u32>().ok()) {
        let start = std::time::Instant::now();
        while crate::rodev::alive(pid) && start.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // Volumes and containers crossback opened, then the read-only flags
    // (a flag may sit on a partition below a container).
    let closed = crate::layers::mapping::close_leftovers();
    let restored = crate::rodev::restore_leftovers();
    match (closed, restored) {
        (Ok(_), Ok(_)) => 0,
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("crossback guard: {e}");
            1
        }
    }
}

/// Makes a write to a closed pipe end the process quietly, as it ends `tar`
/// or `ls` (`crossback ls … | head -1`), instead of an error at every print.
/// Rust ignores SIGPIPE by default. Call it first thing in `main`.
pub fn quiet_on_closed_pipe() {
    // SAFETY: resetting one signal's disposition to its default touches no
    // memory and runs before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Makes a write to a closed pipe an error (EPIPE) again, as Rust has it:
/// for a process that talks to a child over pipes (`ssh`, for an SFTP
/// store), where the signal would end it silently — mid-work when the
/// connection drops, or at its exit while a last close goes out.
pub fn errors_on_closed_pipe() {
    // SAFETY: setting one signal's disposition to "ignore" touches no
    // memory; the disposition is the process's, whichever thread sets it.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}
