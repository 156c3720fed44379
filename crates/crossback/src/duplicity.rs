//! Reading the full backups the old duplicity scripts made, natively (no
//! Python at restore time): a set is `duplicity-full.TIME.manifest`, its
//! volumes `duplicity-full.TIME.volN.difftar[.gz]` and its signatures.
//! Volumes are tar streams; `snapshot/PATH` members are whole entries,
//! `multivol_snapshot/PATH/N` members are the pieces of a file split
//! across members and volumes. The manifest holds each volume's SHA1.

use crossback_host::tool::Tool;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;

use crossback_host::beneath::Dir;

use anyhow::{bail, Context};
use crossback_archive::entry::{normalize_path, Kind, Meta};
use crossback_archive::restore::Restorer;
use crossback_archive::tarr::TarReader;
use sha1::Digest;

/// The largest manifest a set may have.
const MANIFEST_CAP: u64 = 64 << 20;

/// One full duplicity backup in a directory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Set {
    /// The directory holding it, relative to the slot's root ("" for the root).
    pub dir: String,
    /// `20261126T064749Z`.
    pub time: String,
    /// Every file of the set (manifest, volumes, signatures), names relative to `dir`.
    pub files: Vec<String>,
    /// (volume number, file name, SHA1 from the manifest).
    pub volumes: Vec<(u32, String, String)>,
    /// Encrypted with gpg (symmetric, as `duplicity` without --no-encryption
    /// makes it): read through `gpg` with the passphrase in $PASSPHRASE.
    #[serde(default)]
    pub encrypted: bool,
}

impl Set {
    /// What a set read from a slot's manifest must be: plain names, all of
    /// them in the one directory `dir`.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.dir.is_empty() && !crate::layout::clean_relative(&self.dir) {
            bail!("an adopted backup's directory {:?} is not a plain path", crate::output::text(&self.dir));
        }
        let plain = |n: &str| !n.is_empty() && n != "." && n != ".." && !n.contains('/');
        if !self.files.iter().all(|f| plain(f)) || !self.volumes.iter().all(|(_, f, _)| plain(f)) || !plain(&self.time) {
            bail!("an adopted backup names a file that is not a plain name");
        }
        Ok(())
    }
}

/// A file decrypted by `gpg` as it is read. The passphrase comes from
/// $PASSPHRASE, as for duplicity; gpg runs with a throw-away home.
struct Gpg {
    child: std::process::Child,
    out: std::process::ChildStdout,
    path: std::path::PathBuf,
    _home: tempfile::TempDir,
    /// Open until gpg is done with it.
    _file: std::fs::File,
}

impl Read for Gpg {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let st = self.child.wait()?;
            if !st.success() {
                let mut e = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    let _ = err.read_to_string(&mut e);
                }
                return Err(std::io::Error::other(format!("gpg could not decrypt {} (wrong $PASSPHRASE?): {}", self.path.display(), e.trim())));
            }
        }
        Ok(n)
    }
}

/// A file of the set, opened beneath the slot's root (no symlink followed).
fn open(root: &Dir, set_dir: &str, file: &str) -> anyhow::Result<std::fs::File> {
    let rel = if set_dir.is_empty() { file.to_string() } else { format!("{set_dir}/{file}") };
    Ok(root.open_file(&rel)?)
}

/// gpg reads the file crossback opened (through its descriptor), not a path
/// that something could have changed meanwhile.
fn gpg_decrypt(file: std::fs::File, shown: &Path) -> anyhow::Result<Box<dyn Read>> {
    let path = std::path::PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd()));
    let Some(pass) = std::env::var_os("PASSPHRASE") else {
        bail!("{} is encrypted: set PASSPHRASE to the duplicity passphrase (as for duplicity itself) and run again", shown.display());
    };
    let home = tempfile::tempdir().context("creating a home for gpg")?;
    let mut child = Tool::new("gpg")
        .args(["--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback", "--passphrase-fd", "0", "--homedir"])
        .arg(home.path())
        .arg("--decrypt")
        .arg(path)
        .command()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("{} is encrypted and gpg cannot be run ({e}): install gnupg, or decrypt the files first", shown.display()))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("gpg's stdin")?;
        stdin.write_all(std::os::unix::ffi::OsStrExt::as_bytes(pass.as_os_str()))?;
        stdin.write_all(b"\n")?;
    }
    let out = child.stdout.take().context("gpg's stdout")?;
    Ok(Box::new(Gpg { child, out, path: shown.to_path_buf(), _home: home, _file: file }))
}

/// Finds the duplicity sets in `dir` (names relative to `root`). Encrypted
/// and incremental backups are refused with what to do.
pub fn find_sets(root: &Dir, rel: &str) -> anyhow::Result<Vec<Set>> {
    let d = if rel.is_empty() { root.dir(".")? } else { root.dir(rel)? };
    let dir = d.shown().to_path_buf();
    let mut names: Vec<String> = d.entries()?.into_iter().filter_map(|(n, _)| n.into_string().ok()).collect();
    names.sort();
    if names.iter().any(|n| n.starts_with("duplicity-inc.") || n.starts_with("duplicity-new-signatures.")) {
        bail!(
            "{} holds incremental duplicity backups: crossback adopts full backups only; restore the chain with duplicity itself, or keep it elsewhere",
            dir.display()
        );
    }
    let mut sets = Vec::new();
    for n in &names {
        let Some(time) = n.strip_prefix("duplicity-full.").and_then(|r| r.strip_suffix(".manifest").or_else(|| r.strip_suffix(".manifest.gpg"))) else {
            continue;
        };
        let encrypted = n.ends_with(".gpg");
        // Bytes, not text: the manifest names files, and a name may be any bytes.
        let mut raw = Vec::new();
        let reader: Box<dyn Read> = if encrypted { gpg_decrypt(open(root, rel, n)?, &dir.join(n))? } else { Box::new(open(root, rel, n)?) };
        reader.take(MANIFEST_CAP + 1).read_to_end(&mut raw).with_context(|| format!("reading {}/{n}", dir.display()))?;
        if raw.len() as u64 > MANIFEST_CAP {
            bail!("{}/{n} is larger than a duplicity manifest can be ({MANIFEST_CAP} bytes): not adopted", dir.display());
        }
        let text = String::from_utf8_lossy(&raw);
        let mut volumes: Vec<(u32, String, String)> = parse_manifest(&text).into_iter().map(|(v, h)| (v, String::new(), h)).collect();
        let prefix = format!("duplicity-full.{time}.");
        let files: Vec<String> =
            names.iter().filter(|x| x.starts_with(&prefix) || x.starts_with(&format!("duplicity-full-signatures.{time}."))).cloned().collect();
        for (v, file, _) in volumes.iter_mut() {
            let want = format!("{prefix}vol{v}.difftar");
            match files.iter().find(|f| f.starts_with(&want) && matches!(&f[want.len()..], "" | ".gz" | ".gpg" | ".gz.gpg")) {
                Some(f) => *file = f.clone(),
                None => bail!("{}: volume {v} of the duplicity backup of {time} is missing", dir.display()),
            }
        }
        if volumes.is_empty() {
            bail!("{}/{n}: the manifest lists no volumes", dir.display());
        }
        sets.push(Set { dir: rel.to_string(), time: time.to_string(), files, volumes, encrypted });
    }
    Ok(sets)
}

/// The volumes a duplicity manifest lists: (number, SHA1 as hex). Lines it
/// does not know are skipped; a hash that is not 40 hex digits is dropped
/// (that volume is then reported missing its hash).
pub fn parse_manifest(text: &str) -> Vec<(u32, String)> {
    let mut volumes = Vec::new();
    let mut current: Option<u32> = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Volume ").and_then(|v| v.strip_suffix(':')) {
            current = v.parse().ok();
        } else if let (Some(v), Some(h)) = (current, l.strip_prefix("Hash SHA1 ")) {
            let h = h.trim();
            if h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()) && !volumes.iter().any(|(n, _)| *n == v) {
                volumes.push((v, h.to_ascii_lowercase()));
            }
        }
    }
    volumes
}

/// Checks every volume against the SHA1 in the manifest; returns the problems.
pub fn verify(root: &Dir, set: &Set) -> Vec<String> {
    let mut out = Vec::new();
    for (v, file, want) in &set.volumes {
        let mut h = sha1::Sha1::new();
        let hashed = open(root, &set.dir, file).map_err(std::io::Error::other).and_then(|mut f| {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                h.update(&buf[..n]);
            }
        });
        match hashed {
            Ok(()) => {
                let got = crate::output::hex(&h.finalize());
                if got != *want {
                    out.push(format!("volume {v} ({file}) does not match its SHA1 in the manifest: damaged"));
                }
            }
            Err(e) => out.push(format!("volume {v} ({file}) cannot be read: {e}")),
        }
    }
    out
}

/// The tar stream of all volumes, one after the other.
fn volume_reader(root: &Dir, set: &Set, v: usize) -> anyhow::Result<Box<dyn Read>> {
    let (_, file, _) = &set.volumes[v];
    let f = open(root, &set.dir, file)?;
    let (plain, name): (Box<dyn Read>, &str) = match file.strip_suffix(".gpg") {
        Some(inner) => (gpg_decrypt(f, &root.shown().join(&set.dir).join(file))?, inner),
        None => (Box::new(std::io::BufReader::new(f)), file.as_str()),
    };
    Ok(if name.ends_with(".gz") { Box::new(flate2::read::GzDecoder::new(plain)) } else { plain })
}

/// The data of the member being read, as a reader.
struct MemberData<'a, R: Read>(&'a mut TarReader<R>);

impl<R: Read> Read for MemberData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_data(buf).map_err(std::io::Error::other)
    }
}

/// Walks the backup's entries in order: `each(meta, data)`, where data
/// reads the whole content of a regular file. Nothing is held in memory:
/// a file split across members and volumes is joined in a temporary file.
pub fn walk(root: &Dir, set: &Set, mut each: impl FnMut(Meta, &mut dyn Read) -> anyhow::Result<()>) -> anyhow::Result<()> {
    // A file split into pieces: its metadata (from piece 1) and data so far.
    let mut pending: Option<(Meta, std::fs::File)> = None;
    for v in 0..set.volumes.len() {
        let mut tr = TarReader::new(volume_reader(root, set, v)?);
        while let Some(m) = tr.next_member().with_context(|| format!("reading volume {} of the backup of {}", set.volumes[v].0, set.time))? {
            // Names are bytes: any byte string is a valid name.
            let raw = m.raw_path.clone();
            if let Some(rest) = raw.strip_prefix(b"multivol_snapshot/") {
                let rest = rest.strip_suffix(b"/").unwrap_or(rest);
                let Some(cut) = rest.iter().rposition(|&b| b == b'/') else { continue };
                let path = normalize_path(&rest[..cut]).context("a '..' in a duplicity path")?;
                if pending.as_ref().is_none_or(|(pm, _)| pm.path != path) {
                    if let Some((pm, pd)) = pending.take() {
                        finish(pm, pd, &mut each)?;
                    }
                    let mut meta = m.meta.clone();
                    meta.path = path;
                    pending = Some((meta, tempfile::tempfile().context("creating a temporary file to join a file's pieces")?));
                }
                if let Some((_, pd)) = pending.as_mut() {
                    std::io::copy(&mut MemberData(&mut tr), pd).context("joining a file's pieces")?;
                }
                continue;
            }
            if let Some((pm, pd)) = pending.take() {
                finish(pm, pd, &mut each)?;
            }
            let Some(_) = raw.strip_prefix(b"snapshot/") else { continue };
            if !m.path_ok {
                bail!("{}: a '..' in a duplicity path", crate::output::path(&raw));
            }
            let mut meta = m.meta;
            let inside = |p: &[u8], prefix: &[u8]| {
                normalize_path(p.strip_prefix(prefix).unwrap_or(p)).with_context(|| format!("{}: not a path inside the backup", crate::output::path(p)))
            };
            meta.path = inside(&meta.path, b"snapshot")?;
            if meta.kind == Kind::HardLink {
                meta.link = inside(&meta.link, b"snapshot/")?;
            }
            each(meta, &mut MemberData(&mut tr))?;
        }
    }
    if let Some((pm, pd)) = pending.take() {
        finish(pm, pd, &mut each)?;
    }
    Ok(())
}

fn finish(mut meta: Meta, mut data: std::fs::File, each: &mut impl FnMut(Meta, &mut dyn Read) -> anyhow::Result<()>) -> anyhow::Result<()> {
    use std::io::Seek;
    meta.kind = Kind::File;
    meta.size = data.stream_position()?;
    data.rewind()?;
    each(meta, &mut data)
}

/// Restores the set (or the entries under `paths`) into `dest`, confined
/// like any restore, through the archive crate's restoring sink. Returns
/// (entries, problems).
pub fn restore(root: &Dir, set: &Set, dest: &Path, paths: &[Vec<u8>]) -> anyhow::Result<(u64, Vec<String>)> {
    use crossback_archive::members::{is_damage, Data, Sink};
    let mut r = Restorer::new(dest, crossback_archive::extract::default_threads())?;
    let mut report = crossback_archive::ExtractReport::default();
    let no_progress = None;
    let mut sink = crossback_archive::extract::Extractor::new(&mut r, paths, &no_progress, &mut report);
    walk(root, set, |meta, data| {
        if !sink.wants(&meta.path) {
            return Ok(());
        }
        let path = meta.path.clone();
        // duplicity keeps no hash per file (its volumes' SHA1 are checked by
        // `verify`): nothing compares the hash this returns.
        let mut read = |each: &mut dyn FnMut(u64, &[u8]) -> crossback_archive::Result<()>| -> crossback_archive::Result<[u8; 32]> {
            let mut buf = vec![0u8; 1 << 20];
            let mut at = 0u64;
            loop {
                let n = data.read(&mut buf).map_err(|e| crossback_archive::Error::Io { what: "reading the backup".into(), source: e })?;
                if n == 0 {
                    return Ok([0; 32]);
                }
                each(at, &buf[..n])?;
                at += n as u64;
            }
        };
        match sink.member(meta, None, &mut Data::new(&mut read)) {
            Ok(()) => {}
            Err(e) if is_damage(&e) => sink.damaged(&path, e.to_string()),
            Err(e) => sink.refused(&path, e.to_string()),
        }
        Ok(())
    })?;
    sink.finish();
    r.finish()?.report_into(&mut report);
    let problems = report.failed.iter().chain(&report.damaged).chain(&report.warnings).map(|(p, w)| format!("{}: {w}", crate::output::path(p))).collect();
    Ok((report.entries, problems))
}
