//! `crossback-treediff A B [--except PATH]... [--no-flags]`: the test
//! comparator as a command, for the demo and for people: every difference
//! between two trees that a restore must not have (type, mode, owner, mtime
//! in ns, content, symlink target, device numbers, xattrs, inode flags,
//! hard links, holes). Exit 0 when equal, 1 when they differ, 2 on bad usage.
//! Written apart from crossback's archive crate: an independent oracle.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut except: Vec<Vec<u8>> = Vec::new();
    let mut no_flags = false;
    while let Some(a) = args.next() {
        match a.as_bytes() {
            b"--except" => match args.next() {
                Some(p) => except.push(p.as_bytes().strip_prefix(b"/").unwrap_or(p.as_bytes()).to_vec()),
                None => return usage(),
            },
            b"--no-flags" => no_flags = true,
            _ => roots.push(PathBuf::from(a)),
        }
    }
    let [a, b] = roots.as_slice() else { return usage() };
    for r in [a, b] {
        if !r.is_dir() {
            eprintln!("crossback-treediff: {} is not a directory", r.display());
            return ExitCode::from(2);
        }
    }
    let except: Vec<&[u8]> = except.iter().map(Vec::as_slice).collect();
    let diffs = crossback_testkit::compare::trees_except(a, b, no_flags, &except);
    for d in diffs.iter().take(100) {
        println!("{d}");
    }
    if diffs.len() > 100 {
        println!("… and {} more", diffs.len() - 100);
    }
    println!("crossback-treediff: {} differences", diffs.len());
    if diffs.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: crossback-treediff A B [--except PATH]... [--no-flags]");
    ExitCode::from(2)
}
