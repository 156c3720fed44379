//! `rclone:REMOTE:PATH` remotes: every provider rclone knows (Google
//! Drive, OneDrive, Dropbox, …), as restic reaches them. For the time of a
//! command crossback runs `rclone serve s3` on 127.0.0.1 — a free port, a
//! key pair made for this run, the user's rclone configuration — and
//! talks S3 to it; the server stops with the store.
//!
//! The path's last part is the bucket `rclone serve s3` shows (its
//! top-level directories are buckets): `rclone:gdrive:backups/crossback`
//! serves `gdrive:backups` and keeps the machines under `crossback/`.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};

use crossback_host::tool::Tool;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::{refuse, Refusal};

/// How long rclone may take to listen (it reads its configuration, and
/// some backends check their tokens first).
const START: Duration = Duration::from_secs(30);

/// What an `rclone:` URL names: the directory rclone serves, and the bucket in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub served: String,
    pub bucket: String,
}

/// `REMOTE:PATH` (after `rclone:`): the remote and a path whose last part is a bucket name.
pub fn parse(rest: &str) -> anyhow::Result<Target> {
    let Some((remote, path)) = rest.split_once(':') else {
        anyhow::bail!("rclone:{rest}: give rclone's remote and a path (rclone:REMOTE:PATH, REMOTE as in `rclone listremotes`)");
    };
    if rest.chars().any(char::is_control) || path.split('/').any(|c| c == "..") || remote.is_empty() {
        anyhow::bail!("rclone:{rest}: no control characters or '..' in an rclone remote's path, and a remote name before its ':'");
    }
    let path = path.trim_end_matches('/');
    let (parent, bucket) = match path.rsplit_once('/') {
        Some((parent, bucket)) => (format!("{remote}:{parent}"), bucket),
        None => (format!("{remote}:"), path),
    };
    let ok = (3..=63).contains(&bucket.len()) && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        anyhow::bail!("rclone:{rest}: the path's last part ({bucket:?}) is where the backups go and must be 3 to 63 lowercase letters, digits, '-' or '.'");
    }
    Ok(Target { served: parent, bucket: bucket.to_string() })
}

/// A running `rclone serve s3`; stopped when dropped.
pub struct Server {
    child: Child,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

impl Server {
    /// Starts rclone serving `target` with the rclone configuration `config`
    /// (default: rclone's own), and waits until it listens.
    pub fn start(name: &str, target: &Target, config: Option<&Path>) -> anyhow::Result<Server> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).context("finding a free port for rclone")?.port();
        let (access_key, secret_key) = (crate::keys::random_hex(16)?, crate::keys::random_hex(32)?);
        // The bucket is a directory of the served path: made if it is not there.
        let bucket = if target.served.ends_with(':') { format!("{}{}", target.served, target.bucket) } else { format!("{}/{}", target.served, target.bucket) };
        let mut mkdir = crossback_host::tool::Tool::new("rclone");
        mkdir.args(["mkdir", &bucket]);
        if let Some(c) = config {
            mkdir.arg("--config").arg(c);
        }
        mkdir
            .run()
            .map_err(|e| refuse(Refusal::Config, format!("remote {name}: making {bucket}: {e} (an rclone: remote needs rclone 1.65 or newer installed)")))?;
        let log = tempfile::NamedTempFile::new().context("a file for rclone's messages")?;
        let mut tool = Tool::new("rclone");
        tool.args(["serve", "s3", &target.served, "--addr", &format!("127.0.0.1:{port}"), "--auth-key", &format!("{access_key},{secret_key}")])
            .args(["--log-level", "ERROR"]);
        let mut cmd = tool.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log.reopen().context("a file for rclone's messages")?);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd
            .spawn()
            .map_err(|e| refuse(Refusal::Config, format!("remote {name}: starting rclone: {e} (an rclone: remote needs rclone 1.65 or newer installed)")))?;
        let mut server = Server { child, endpoint: format!("http://127.0.0.1:{port}"), access_key, secret_key };
        let started = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            let said = || std::fs::read_to_string(log.path()).unwrap_or_default().trim().to_string();
            if let Some(status) = server.child.try_wait()? {
                crate::refuse!(
                    Refusal::Config,
                    "remote {name}: rclone serve s3 {} ended ({status}): {} (`serve s3` needs rclone 1.65 or newer; Debian 12 ships 1.60: `rclone version` says which)",
                    target.served,
                    said()
                );
            }
            if started.elapsed() > START {
                crate::refuse!(Refusal::RemoteUnreachable, "remote {name}: rclone did not listen within {} s: {}", START.as_secs(), said());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_part_of_the_path_is_the_bucket() {
        let t = |s: &str| parse(s).map(|t| (t.served, t.bucket)).map_err(|e| e.to_string());
        assert_eq!(t("gdrive:backups/crossback"), Ok(("gdrive:backups".into(), "crossback".into())));
        assert_eq!(t("gdrive:backups"), Ok(("gdrive:".into(), "backups".into())));
        assert_eq!(t("store:/var/tmp/x/backups/"), Ok(("store:/var/tmp/x".into(), "backups".into())));
        assert!(t("nocolon").unwrap_err().contains("rclone:REMOTE:PATH"));
        assert!(t("gdrive:a/../b").is_err());
        assert!(t("gdrive:Backups").unwrap_err().contains("lowercase"));
        assert!(t("gdrive:x").is_err(), "too short for a bucket");
        assert!(t(":backups").is_err(), "no remote name");
    }
}
