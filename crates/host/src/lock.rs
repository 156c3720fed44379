//! Named locks between processes: a file under `/run/crossback/lock`,
//! `flock`ed for as long as the holder lives (the kernel drops the lock when
//! the process dies, however it dies), with the holder's PID and command
//! written inside so that a refused process can say who holds it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::error::{Error, Result};

pub const DIR: &str = "/run/crossback/lock";

/// A lock held until dropped (or until the process ends).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub name: String,
}

/// How a lock is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Several readers at once, no writer.
    Shared,
    /// One holder.
    Exclusive,
}

/// The process holding a lock, as far as it can be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(p) => write!(f, "process {p} ({})", self.command),
            None => f.write_str("another crossback"),
        }
    }
}

fn path_of(name: &str) -> PathBuf {
    PathBuf::from(DIR).join(format!("{name}.lock"))
}

fn command_of(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = raw.split(|&b| b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
    if words.is_empty() {
        "gone".into()
    } else {
        words.join(" ")
    }
}

/// Takes the lock `name` without waiting; when another process holds it,
/// the error is [`Error::Locked`] naming that process.
pub fn take(name: &str, mode: Mode) -> Result<Lock> {
    std::fs::create_dir_all(DIR).map_err(|e| Error::Io { what: format!("creating {DIR}"), source: e })?;
    let path = path_of(name);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::Io { what: format!("opening the lock {}", path.display()), source: e })?;
    let op = match mode {
        Mode::Shared => FlockOperation::NonBlockingLockShared,
        Mode::Exclusive => FlockOperation::NonBlockingLockExclusive,
    };
    match rustix::fs::flock(file.as_fd(), op) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.split_whitespace().next().and_then(|p| p.parse::<u32>().ok());
            let holder = Holder { pid, command: pid.map(command_of).unwrap_or_default() };
            return Err(Error::Locked { name: name.to_string(), holder: holder.to_string() });
        }
        Err(e) => return Err(Error::Io { what: format!("locking {}", path.display()), source: e.into() }),
    }
    if mode == Mode::Exclusive {
        // Who holds it, for the message of whoever is refused.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{} {}", std::process::id(), command_of(std::process::id()));
    } else if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        let _ = writeln!(file, "{} {}", std::process::id(), command_of(std::process::id()));
    }
    Ok(Lock { _file: file, name: name.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_exclusive_holder_is_refused_with_the_first_ones_pid() {
        if !rustix::process::geteuid().is_root() && std::fs::create_dir_all(DIR).is_err() {
            eprintln!("SKIPPED (not root): cannot create {DIR}");
            return;
        }
        let name = format!("test-{}", std::process::id());
        let a = take(&name, Mode::Exclusive).unwrap();
        // flock is per open file: a second open in this process conflicts too.
        match take(&name, Mode::Exclusive) {
            Err(Error::Locked { holder, .. }) => assert!(holder.contains(&std::process::id().to_string()), "{holder}"),
            other => panic!("expected Locked, got {other:?}"),
        }
        assert!(matches!(take(&name, Mode::Shared), Err(Error::Locked { .. })));
        drop(a);
        let s1 = take(&name, Mode::Shared).unwrap();
        let _s2 = take(&name, Mode::Shared).unwrap();
        assert!(matches!(take(&name, Mode::Exclusive), Err(Error::Locked { .. })));
        drop(s1);
        let _ = std::fs::remove_file(path_of(&name));
    }
}
