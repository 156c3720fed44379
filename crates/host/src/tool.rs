//! The one way crossback runs another program.
//!
//! - Arguments are a vector, never a shell line: a name read from a disk is
//!   one argument whatever bytes it holds.
//! - `LC_ALL=C`: a tool's messages are matched only in its English, and its
//!   numbers are printed without a locale's separators.
//! - Standard input is empty unless bytes are given ([`Tool::input`]); the
//!   output is captured up to a bound (a tool that prints without end does
//!   not take the memory), standard error's last [`STDERR_KEEP`] bytes kept.
//! - A failure is an [`Error::Tool`] that keeps the program, its
//!   arguments, how it ended and what it said.
//!
//! What is started otherwise, and why: a FUSE driver (`offline`: a daemon
//! that lives as long as its mount), `rclone serve s3` for an `rclone:`
//! remote (a server that lives as long as the command's store), crossback's own children (the
//! inspection child and the namespace guard talk over pipes; the backup at
//! reboot and GRUB's repair in a chroot are crossback commands whose output
//! is the user's), gpg decrypting a duplicity volume (a stream read as it
//! comes), `xfs_logprint` (its first lines say the log's state; the rest
//! of a long log is not waited for), and the command a user gives
//! `crossback chroot` (theirs, with their terminal and locale).

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};

use crate::error::{Error, Result};

/// The most of a tool's standard output kept (sfdisk's and lvm2's JSON,
/// blkid's list, a dump of a superblock are far smaller).
pub const STDOUT_CAP: usize = 64 << 20;
/// The end of a tool's standard error kept for the error message.
pub const STDERR_KEEP: usize = 16 << 10;

/// A program to run, with its arguments.
#[derive(Debug)]
pub struct Tool {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    input: Option<Vec<u8>>,
}

/// What a tool said and how it ended, for a caller that decides by the
/// exit status itself ([`Tool::output`]).
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

impl Tool {
    pub fn new(program: impl AsRef<OsStr>) -> Tool {
        Tool { program: program.as_ref().to_os_string(), args: Vec::new(), env: Vec::new(), input: None }
    }

    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Tool {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, list: I) -> &mut Tool {
        self.args.extend(list.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// An environment variable for the tool (`LC_ALL` stays `C`).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Tool {
        self.env.push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Bytes for the tool's standard input (a key, a script).
    pub fn input(&mut self, bytes: &[u8]) -> &mut Tool {
        self.input = Some(bytes.to_vec());
        self
    }

    /// The arguments, as given.
    #[cfg(test)]
    pub(crate) fn get_args(&self) -> impl Iterator<Item = &OsStr> {
        self.args.iter().map(OsString::as_os_str)
    }

    /// The program's name as the user would type it.
    pub fn program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// The command line, for messages (each argument as Rust quotes it).
    pub fn shown(&self) -> String {
        std::iter::once(&self.program).chain(&self.args).map(|a| format!("{a:?}")).collect::<Vec<_>>().join(" ")
    }

    /// Runs it; its standard output as text when it exits 0, else an
    /// [`Error::Tool`] with what it said.
    pub fn run(&self) -> Result<String> {
        let out = self.output()?;
        if !out.status.success() {
            return Err(self.failed(&out));
        }
        Ok(out.stdout_text())
    }

    /// As [`Tool::run`], where any of the exit codes `ok` is success (blkid's
    /// 2: nothing found).
    pub(crate) fn output_checked_by(&self, ok: &[i32]) -> Result<String> {
        let out = self.output()?;
        if !out.status.code().is_some_and(|c| ok.contains(&c)) {
            return Err(self.failed(&out));
        }
        Ok(out.stdout_text())
    }

    /// The error of this tool having ended as `out` says.
    pub fn failed(&self, out: &Output) -> Error {
        Error::Tool { program: self.program(), args: shown_args(&self.args), status: out.status.code(), stderr: out.stderr_text() }
    }

    /// The process to start, for what is not run to completion here (the
    /// module's list above): the arguments, the environment given and
    /// `LC_ALL=C`; the caller sets its streams, starts it and waits for it.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).envs(self.env.iter().map(|(k, v)| (k, v))).env("LC_ALL", "C");
        cmd
    }

    /// Runs it and returns how it ended, whatever that was; only a
    /// program that cannot be started is an error.
    pub fn output(&self) -> Result<Output> {
        let mut cmd = self.command();
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if self.input.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.spawn().map_err(|e| Error::Tool {
            program: self.program(),
            args: shown_args(&self.args),
            status: None,
            stderr: format!("cannot be started: {e} (is it installed?)"),
        })?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let err_reader = std::thread::spawn(move || tail(&mut stderr, STDERR_KEEP));
        let out_reader = std::thread::spawn(move || capped(&mut stdout, STDOUT_CAP));
        if let (Some(bytes), Some(mut stdin)) = (self.input.as_deref(), child.stdin.take()) {
            // A tool that stopped reading (a bad argument) makes this fail:
            // its exit status and standard error say why.
            let _ = stdin.write_all(bytes);
        }
        let status = child.wait().map_err(|e| Error::Io { what: format!("waiting for {}", self.program()), source: e })?;
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        Ok(Output { status, stdout, stderr })
    }
}

fn shown_args(args: &[OsString]) -> Vec<String> {
    args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
}

/// At most `cap` bytes of `r`; the rest is read and dropped, so that the
/// tool is never blocked on a full pipe.
fn capped(r: &mut impl Read, cap: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = r.by_ref().take(cap as u64).read_to_end(&mut buf);
    let _ = std::io::copy(r, &mut std::io::sink());
    buf
}

/// The last `keep` bytes of `r`.
fn tail(r: &mut impl Read, keep: usize) -> Vec<u8> {
    let mut kept: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => return kept.split_off(kept.len().saturating_sub(keep)),
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * keep {
                    kept.drain(..kept.len() - keep);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_the_program_its_arguments_status_and_stderr() {
        let e = Tool::new("sh").args(["-c", "echo out; echo 'the reason' >&2; exit 3"]).run().unwrap_err();
        match e {
            Error::Tool { program, args, status, stderr } => {
                assert_eq!((program.as_str(), status, stderr.as_str()), ("sh", Some(3), "the reason"));
                assert_eq!(args[0], "-c");
            }
            other => panic!("{other:?}"),
        }
        let e = Tool::new("/nonexistent/tool").run().unwrap_err();
        assert!(matches!(&e, Error::Tool { status: None, .. }), "{e:?}");
        assert!(e.to_string().contains("/nonexistent/tool") && e.to_string().contains("cannot be started"), "{e}");
    }

    #[test]
    fn the_locale_is_c_and_input_is_given_or_empty() {
        let out = Tool::new("sh").args(["-c", "echo $LC_ALL; cat"]).run().unwrap();
        assert_eq!(out, "C\n", "stdin is empty, not the test's terminal");
        let out = Tool::new("cat").input(b"key bytes").run().unwrap();
        assert_eq!(out, "key bytes");
    }

    #[test]
    fn output_is_bounded_and_a_chatty_tool_is_not_blocked() {
        // 80 MiB on stdout, 1 MiB on stderr: both drained, both kept bounded.
        let out = Tool::new("sh").args(["-c", "head -c 83886080 /dev/zero; head -c 1048576 /dev/zero | tr '\\0' e >&2"]).output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), STDOUT_CAP);
        assert_eq!(out.stderr.len(), STDERR_KEEP);
    }

    #[test]
    fn an_argument_is_one_word_whatever_it_holds() {
        let out = Tool::new("printf").args(["[%s]\n", "x;touch${IFS}INJECTED;#", "$(id)"]).run().unwrap();
        assert_eq!(out, "[x;touch${IFS}INJECTED;#]\n[$(id)]\n");
    }
}
