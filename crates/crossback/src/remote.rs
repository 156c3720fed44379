//! An off-site store: an S3-compatible object store or an SFTP server,
//! through OpenDAL, seen as a tree of objects under `URL/MACHINE/`:
//!
//! ```text
//! URL/MACHINE/
//!   crossback-remote.toml     what the store holds: format, machine, the key it is encrypted to
//!   media-key.passphrase.age  that key, wrapped (as on an encrypted media's slots)
//!   media-key.recipients.age
//!   gen-000012/
//!     SYSTEM/mounts.toml.age, root.tar.zst.age, …   every object age-encrypted
//!     objects.toml            each object's size and BLAKE3 as stored (grows as they go up)
//!     generation.toml         the manifest, written last: without it the generation is not there
//! ```
//!
//! Everything a system's data or names are in is encrypted before it
//! leaves the machine: an encrypted media's files go up as they are, a
//! plain media's are encrypted on the way to the remote's own key. What the
//! store says about itself is checked against the configuration, as a
//! slot's marker is.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};
use serde::{Deserialize, Serialize};

use crate::config::RemoteConfig;
use crate::error::{refuse, Refusal};
use crate::layout::{self, GenName, Generation};
use crate::output;

pub mod object_lock;
pub mod rclone;
pub mod retention;

/// The store's own record, at `URL/MACHINE/crossback-remote.toml`.
pub const RECORD: &str = "crossback-remote.toml";
/// A generation's list of objects, with their sizes and hashes as stored.
pub const OBJECTS: &str = "objects.toml";
/// A generation's seal: a keyed hash of its manifest and objects.toml.
pub const SEAL: &str = "seal";
/// Bytes of one upload request (a multipart part; S3's least is 5 MiB):
/// memory is this times the parallel uploads, whatever the archive's size.
/// Six of 6 MiB kept a 1 GiB push within 10 % of `rclone copy` where four
/// of 8 MiB fell 19 % behind, at the same memory (docs/benchmarks.md).
const PART: usize = 6 << 20;
const PARALLEL: usize = 6;
/// How long a write may take to show on the store after it was accepted.
const SETTLE: Duration = Duration::from_secs(30);

/// Where a remote is, from its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    S3 {
        bucket: String,
        prefix: String,
    },
    Sftp {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        path: String,
    },
    /// `rclone:REMOTE:PATH`: served by rclone for the time of a command.
    Rclone(rclone::Target),
}

impl Url {
    pub fn parse(text: &str) -> anyhow::Result<Url> {
        if let Some(rest) = text.strip_prefix("rclone:") {
            return rclone::parse(rest).map(Url::Rclone);
        }
        let u = url::Url::parse(text)
            .map_err(|e| anyhow::anyhow!("{:?} is not a URL ({e}): s3://BUCKET/PREFIX, sftp://USER@HOST/PATH or rclone:REMOTE:PATH", output::text(text)))?;
        let host = u.host_str().filter(|h| !h.is_empty()).map(str::to_string);
        let path = u.path().trim_matches('/').to_string();
        // The parser resolves dot segments itself: they are refused as typed.
        let dots = text.split(['/', '?', '#']).any(|c| c == "." || c == "..") || text.to_ascii_lowercase().contains("%2e");
        if dots || u.query().is_some() || u.fragment().is_some() || u.password().is_some() {
            anyhow::bail!("{:?}: no '..', query, fragment or password in a remote's URL (credentials go in a file: --credentials)", output::text(text));
        }
        match (u.scheme(), host) {
            ("s3", Some(bucket)) if u.username().is_empty() && u.port().is_none() => Ok(Url::S3 { bucket, prefix: path }),
            ("sftp", Some(host)) if !path.is_empty() => {
                Ok(Url::Sftp { user: Some(u.username().to_string()).filter(|s| !s.is_empty()), host, port: u.port(), path: format!("/{path}") })
            }
            ("sftp", Some(_)) => anyhow::bail!("{:?}: give the directory on the server (sftp://HOST/PATH)", output::text(text)),
            _ => anyhow::bail!("{:?} is not an s3://BUCKET[/PREFIX] or sftp://[USER@]HOST[:PORT]/PATH URL", output::text(text)),
        }
    }
}

/// S3 credentials as kept in the file the configuration names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Credentials {
    access_key_id: String,
    secret_access_key: String,
}

/// One remote, open: its objects under `URL/MACHINE/`.
pub struct Store {
    pub name: String,
    op: Operator,
    rt: tokio::runtime::Runtime,
    /// `MACHINE/`, the prefix of every path this store reads or writes.
    base: String,
    sftp: bool,
    /// Bytes read from the store so far (a restore says how much it fetched).
    pub fetched: std::sync::atomic::AtomicU64,
    retried: std::sync::Arc<std::sync::Mutex<Retried>>,
    /// `--limit-upload`: what an upload may send, when.
    pacer: Option<std::sync::Mutex<Pacer>>,
    /// An S3 bucket, for the Object Lock requests OpenDAL does not make.
    bucket: Option<object_lock::Bucket>,
    /// `--as-of`: the version of each object (path, then version and
    /// size) the store held then; reads take those, and nothing is written.
    pinned: Option<BTreeMap<String, (String, u64)>>,
    /// An `rclone:` remote's server (last: stopped once the store is closed).
    _rclone: Option<rclone::Server>,
}

/// `--limit-upload`: a token bucket over what uploads hand to the store,
/// with half a second's worth of burst. The store gets whole parts, so
/// the rate holds over seconds, not within a part.
struct Pacer {
    bps: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl Pacer {
    fn new(bps: u64) -> Pacer {
        Pacer { bps: bps.max(1) as f64, tokens: 0.0, last: std::time::Instant::now() }
    }

    /// How long to wait before `n` more bytes go.
    fn take(&mut self, n: usize, now: std::time::Instant) -> Duration {
        let cap = self.bps / 2.0;
        self.tokens = (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.bps).min(cap);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        // In debt: the wait pays it back (the tokens are counted from then on).
        let wait = Duration::from_secs_f64(-self.tokens / self.bps);
        self.tokens = 0.0;
        self.last = now + wait;
        wait
    }
}

/// An object as stored: its size and the BLAKE3 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    pub path: String,
    pub bytes: u64,
    pub blake3: String,
    /// The BLAKE3 of its age header: with it, every chunk read anywhere in
    /// the object is the one pushed (age authenticates each chunk under
    /// the file key the header holds), without reading the whole object.
    pub head: String,
    /// When it went up (RFC 3339, this machine's clock): retention's
    /// minimum age counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
}

/// A generation's objects (`objects.toml`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objects {
    #[serde(default, rename = "object")]
    pub list: Vec<Object>,
}

/// The store's own record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub format: u32,
    pub machine: String,
    /// What unlocks it: the key's public half, and how it is kept wrapped
    /// beside this record (as on an encrypted media's slots).
    pub encryption: crate::layout::Encryption,
}

/// What the retries saw: an error that was retried is not the one
/// returned at the end (a multipart upload whose completion failed on a
/// full disk is "no such upload" when tried again).
#[derive(Default)]
struct Retried {
    full: bool,
    answered: bool,
    last: Option<String>,
}

fn store_error(e: opendal::Error, what: &str, remote: &str, sftp: bool, retried: &Retried) -> anyhow::Error {
    let kind = match e.kind() {
        _ if retried.full || is_full(&e) => Refusal::RemoteFull,
        ErrorKind::PermissionDenied => Refusal::RemoteDenied,
        ErrorKind::ConfigInvalid => Refusal::Config,
        _ if retried.answered || answered(&e) => Refusal::RemoteFailing,
        _ => Refusal::RemoteUnreachable,
    };
    let hint = match kind {
        Refusal::RemoteDenied => "check the credentials (`crossback remote list` shows which file they come from)",
        Refusal::RemoteFull => "the store is full or over its quota: free space there (retention: `remote add --keep`) or raise the quota; what is there is as it was",
        Refusal::RemoteFailing => "the store answered with an error of its own: it may be full or over its quota without saying so, or failing — its own log says which; what is there is as it was; run the command again once it is mended",
        Refusal::Config => "check the remote's URL and endpoint (`crossback remote list`)",
        _ if sftp => "check the network and that the server is up, and that root's ssh knows the server's host key (connect once with `sftp` as root to check and accept it) and its key is in the server's authorized_keys",
        _ => "check the network and that the store is up; run the command again to carry on",
    };
    let before = match &retried.last {
        Some(r) if *r != short(&e) => format!(" (tried again after: {r})"),
        _ => String::new(),
    };
    refuse(kind, format!("remote {remote}: {what}: {}{before}; {hint}", short(&e)))
}

/// An OpenDAL error without its context (the request's headers): its
/// kind, what the store said, and the cause underneath.
fn short(e: &opendal::Error) -> String {
    let source = std::error::Error::source(e).map(|s| format!(": {s}")).unwrap_or_default();
    match e.message() {
        "" => format!("{}{source}", e.kind()),
        m => format!("{}: {m}{source}", e.kind()),
    }
}

/// Whether the store itself answered with the error (an S3 error
/// document, an SFTP status), rather than not at all.
fn answered(e: &opendal::Error) -> bool {
    let m = e.message();
    m.starts_with("S3Error") || m.contains("server reported error")
}

/// A full store, by what stores say: quotas (Ceph RGW's, Wasabi's
/// `QuotaExceeded`), MinIO's `XMinioStorageFull`, Backblaze's "storage cap
/// exceeded", an SFTP server's "no space left on device".
fn is_full(e: &opendal::Error) -> bool {
    let t = e.message().to_lowercase();
    ["quota", "no space", "insufficient storage", "storage full", "storagefull", "cap exceeded", "entitytoolarge", "disk full"].iter().any(|w| t.contains(w))
}

impl Store {
    /// Opens the remote `r` for the backups of `machine` (default: this
    /// machine's, as configured). Contacts nothing yet.
    pub fn open(r: &RemoteConfig, machine: Option<&str>, limit_upload: Option<u64>) -> anyhow::Result<Store> {
        let bad_config = |e: opendal::Error| refuse(Refusal::Config, format!("remote {}: {e}", r.name));
        opendal::install_default();
        let url = Url::parse(&r.url).map_err(|e| refuse(Refusal::Config, format!("remote {}: {e}", r.name)))?;
        let sftp = matches!(url, Url::Sftp { .. });
        let mut server = None;
        let mut bucket_api = None;
        let op = match url {
            Url::Rclone(target) => {
                if r.endpoint.is_some() || r.region.is_some() {
                    crate::refuse!(Refusal::Config, "remote {}: an rclone: remote takes no endpoint or region (rclone's configuration has them)", r.name);
                }
                if let Some(c) = &r.credentials {
                    read_private(c).with_context(|| refuse(Refusal::Config, format!("remote {}: the rclone configuration {}", r.name, c.display())))?;
                }
                let s = rclone::Server::start(&r.name, &target, r.credentials.as_deref())?;
                let b = opendal::services::S3::default()
                    .bucket(&target.bucket)
                    .root("/")
                    .region("us-east-1")
                    .endpoint(&s.endpoint)
                    .disable_config_load()
                    .disable_ec2_metadata()
                    .access_key_id(&s.access_key)
                    .secret_access_key(&s.secret_key);
                server = Some(s);
                Operator::new(b).map_err(bad_config)?
            }
            Url::S3 { bucket, prefix } => {
                let region = r.region.as_deref().unwrap_or("us-east-1");
                let mut b = opendal::services::S3::default()
                    .bucket(&bucket)
                    .root(&format!("/{prefix}"))
                    .region(region)
                    // Only what the configuration says: no ~/.aws, no instance metadata service.
                    .disable_config_load()
                    .disable_ec2_metadata();
                if let Some(e) = &r.endpoint {
                    b = b.endpoint(e);
                }
                let (id, secret) = s3_credentials(r)?;
                let endpoint = r.endpoint.clone().unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
                bucket_api = Some(object_lock::Bucket::new(&endpoint, region, &bucket, &prefix, &id, &secret)?);
                Operator::new(b.access_key_id(&id).secret_access_key(&secret)).map_err(bad_config)?
            }
            Url::Sftp { user, host, port, path } => {
                // ssh is a child on pipes: a closed one must be an error, not a silent end.
                crossback_host::ns::errors_on_closed_pipe();
                let endpoint = format!("ssh://{host}{}", port.map(|p| format!(":{p}")).unwrap_or_default());
                let mut b = opendal::services::Sftp::default().endpoint(&endpoint).root(&path);
                if let Some(u) = &user {
                    b = b.user(u);
                }
                if let Some(k) = &r.credentials {
                    b = b.key(&k.to_string_lossy());
                }
                Operator::new(b).map_err(bad_config)?
            }
        };
        // OpenDAL's default I/O timeout (10 s) is too short for a part on a
        // slow line; a request that stalls for a minute is retried.
        let retried = std::sync::Arc::new(std::sync::Mutex::new(Retried::default()));
        let op = op.layer(TimeoutLayer::new().with_timeout(Duration::from_secs(120)).with_io_timeout(Duration::from_secs(60))).layer(
            RetryLayer::new().with_max_times(10).with_jitter().with_min_delay(Duration::from_millis(500)).with_max_delay(Duration::from_secs(30)).with_notify(
                {
                    let retried = std::sync::Arc::clone(&retried);
                    move |ev: opendal::layers::RetryEvent<'_>| {
                        let mut r = retried.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        r.full |= is_full(ev.err);
                        r.answered |= answered(ev.err);
                        r.last = Some(short(ev.err));
                    }
                },
            ),
        );
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the network runtime")?;
        let machine = machine.unwrap_or(&r.machine);
        if !crate::layout::valid_system_name(machine) {
            crate::refuse!(Refusal::Usage, "{:?} is not a machine name (letters, digits, '-', '_', '.')", output::text(machine));
        }
        let pacer = limit_upload.or(r.limit_upload).map(|bps| std::sync::Mutex::new(Pacer::new(bps)));
        Ok(Store {
            name: r.name.clone(),
            op,
            rt,
            base: format!("{machine}/"),
            sftp,
            fetched: Default::default(),
            retried,
            pacer,
            bucket: bucket_api,
            pinned: None,
            _rclone: server,
        })
    }

    /// How much was read from the store, in a line.
    pub fn said_fetched(&self) -> String {
        let n = self.fetched.load(std::sync::atomic::Ordering::Relaxed);
        format!("read {} ({n} bytes) from remote {}", output::bytes(n), self.name)
    }

    /// The machine whose backups this store is opened on.
    pub fn machine(&self) -> &str {
        self.base.trim_end_matches('/')
    }

    fn at(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    fn fail(&self, e: opendal::Error, what: impl std::fmt::Display) -> anyhow::Error {
        let retried = self.retried.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        store_error(e, &what.to_string(), &self.name, self.sftp, &retried)
    }

    /// The size of an object, `None` when it is not there.
    pub fn size(&self, rel: &str) -> anyhow::Result<Option<u64>> {
        if let Some(pinned) = &self.pinned {
            return Ok(pinned.get(&self.at(rel)).map(|(_, len)| *len));
        }
        match self.rt.block_on(self.op.stat(&self.at(rel))) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.fail(e, format_args!("looking for {rel}"))),
        }
    }

    /// A small object, whole: at most `cap` bytes, else it is refused as
    /// damaged. Its size is asked first: OpenDAL refuses a range that runs
    /// past an object's end, and the cap must hold before anything is read.
    pub fn get(&self, rel: &str, cap: u64) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(len) = self.size(rel)? else { return Ok(None) };
        if len > cap {
            crate::refuse!(Refusal::RemoteDamaged, "remote {}: {rel} is {len} bytes, more than such a file ever is ({cap}): it is not crossback's", self.name);
        }
        self.first(rel, len).map(Some)
    }

    /// The first `len` bytes of an object.
    pub fn first(&self, rel: &str, len: u64) -> anyhow::Result<Vec<u8>> {
        self.range(rel, 0, len).map_err(|e| self.fail(e, format_args!("reading {rel}")))
    }

    /// Bytes `off..end` of an object, in one request.
    fn range(&self, rel: &str, off: u64, end: u64) -> Result<Vec<u8>, opendal::Error> {
        let path = self.at(rel);
        let data = match self.pinned.as_ref().map(|p| p.get(&path)) {
            None => self.rt.block_on(async { self.op.read_with(&path).range(off..end).await })?,
            Some(Some((version, _))) => self.rt.block_on(async { self.op.read_with(&path).version(version).range(off..end).await })?,
            Some(None) => return Err(opendal::Error::new(ErrorKind::NotFound, format!("{rel} was not on the store then (--as-of)"))),
        }
        .to_vec();
        self.fetched.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(data)
    }

    /// Bytes `off..off + buf.len()` of an object (fewer at its end).
    pub fn read_at(&self, rel: &str, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        let data = self.range(rel, off, off + buf.len() as u64).map_err(std::io::Error::other)?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }

    /// Writes a small object whole (records, keys, manifests), and returns
    /// once the store gives it back as written.
    pub fn put(&self, rel: &str, data: &[u8]) -> anyhow::Result<()> {
        self.writable()?;
        self.rt.block_on(self.op.write(&self.at(rel), data.to_vec())).map_err(|e| self.fail(e, format_args!("writing {rel}")))?;
        let len = data.len() as u64;
        settled(&self.name, rel, SETTLE, || Ok(self.size(rel)? == Some(len) && self.first(rel, len)? == data))
    }

    pub fn delete(&self, rel: &str) -> anyhow::Result<()> {
        self.writable()?;
        self.rt.block_on(self.op.delete(&self.at(rel))).map_err(|e| self.fail(e, format_args!("deleting {rel}")))
    }

    /// Deletes `rel` and everything under it.
    pub fn delete_all(&self, rel: &str) -> anyhow::Result<()> {
        self.writable()?;
        let dir = self.at(&format!("{}/", rel.trim_end_matches('/')));
        self.rt.block_on(async { self.op.delete_with(&dir).recursive(true).await }).map_err(|e| self.fail(e, format_args!("deleting {rel}")))
    }

    /// The bucket's Object Lock requests: an S3 remote's only.
    fn bucket(&self) -> anyhow::Result<&object_lock::Bucket> {
        self.bucket.as_ref().with_context(|| refuse(Refusal::Config, format!("remote {}: Object Lock is S3's, and this is not an s3:// remote", self.name)))
    }

    /// Whether the bucket has S3 Object Lock on.
    pub fn lock_enabled(&self) -> anyhow::Result<bool> {
        let b = self.bucket()?;
        self.rt.block_on(b.enabled()).with_context(|| format!("remote {}", self.name))
    }

    /// Locks the current version of `rel` until `until` (seconds since 1970).
    pub fn lock(&self, rel: &str, until: i64) -> anyhow::Result<()> {
        self.writable()?;
        let b = self.bucket()?;
        self.rt.block_on(b.lock(&self.at(rel), &output::stamp(until))).with_context(|| format!("remote {}", self.name))
    }

    /// Until when the current version of `rel` is locked (`None`: it is not).
    pub fn locked_until(&self, rel: &str) -> anyhow::Result<Option<i64>> {
        let b = self.bucket()?;
        let until = self.rt.block_on(b.locked_until(&self.at(rel))).with_context(|| format!("remote {}", self.name))?;
        until
            .map(|u| object_lock::parse_date(&u).with_context(|| format!("remote {}: {rel} is locked until {u:?}, which is not a date", self.name)))
            .transpose()
    }

    /// Deletes every version of every object under `rel` (a directory),
    /// delete markers too, those named `first` before the others: on a
    /// versioned bucket a plain deletion only hides an object. `Ok(false)`
    /// when the store refused a deletion (a version still locked).
    pub fn delete_versions(&self, rel: &str, first: &str) -> anyhow::Result<bool> {
        self.writable()?;
        let dir = self.at(&format!("{}/", rel.trim_end_matches('/')));
        let listed = self.rt.block_on(async { self.op.list_with(&dir).recursive(true).versions(true).deleted(true).await });
        let mut versions: Vec<(String, String)> = match listed {
            Ok(entries) => entries
                .into_iter()
                .filter(|e| !e.metadata().is_dir())
                .filter_map(|e| Some((e.path().to_string(), e.metadata().version()?.to_string())))
                .collect(),
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.fail(e, format_args!("listing the versions under {rel}"))),
        };
        versions.sort_by_key(|(path, _)| !path.ends_with(&format!("/{first}")));
        for (path, version) in versions {
            match self.rt.block_on(async { self.op.delete_with(&path).version(&version).await }) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::PermissionDenied => return Ok(false),
                Err(e) => return Err(self.fail(e, format_args!("deleting {path} (version {version})"))),
            }
        }
        Ok(true)
    }

    /// Reads the store as it was at `when` (seconds since 1970; `--as-of`):
    /// each object's newest version then, none where that was a deletion.
    /// S3 keeps older versions on a versioned bucket (Object Lock's are);
    /// a store that keeps none is refused.
    pub fn as_of(&mut self, when: i64) -> anyhow::Result<()> {
        let base = self.base.clone();
        let listed = self.rt.block_on(async { self.op.list_with(&base).recursive(true).versions(true).deleted(true).await });
        let entries = match listed {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                crate::refuse!(Refusal::Usage, "remote {}: --as-of reads the versions an S3 store keeps; this one keeps none", self.name)
            }
            Err(e) => return Err(self.fail(e, "listing the store's versions")),
        };
        // Per object, the newest version then: (time, deleted, version, size).
        // Times are to the second. Of two in the same second the later is
        // the current one, else the first listed (S3 lists a key's
        // versions newest first; OpenDAL its delete markers after them).
        let mut newest: BTreeMap<String, (std::time::SystemTime, bool, String, u64)> = BTreeMap::new();
        // A time before 1970 (a year 0001 typed) is 1970: nothing was there then either.
        let then = std::time::UNIX_EPOCH + Duration::from_secs(when.max(0).unsigned_abs());
        for e in entries.iter().filter(|e| !e.metadata().is_dir()) {
            let m = e.metadata();
            let (Some(version), Some(at)) = (m.version(), m.last_modified().map(std::time::SystemTime::from)) else { continue };
            let later = |t: &std::time::SystemTime| *t > at || (*t == at && m.is_current() != Some(true));
            if at > then || newest.get(e.path()).is_some_and(|(t, ..)| later(t)) {
                continue;
            }
            newest.insert(e.path().to_string(), (at, m.is_deleted(), version.to_string(), m.content_length()));
        }
        let pinned: BTreeMap<String, (String, u64)> =
            newest.into_iter().filter(|(_, (_, deleted, ..))| !deleted).map(|(p, (_, _, v, len))| (p, (v, len))).collect();
        if pinned.is_empty() {
            crate::refuse!(
                Refusal::NoBackup,
                "remote {}: nothing of machine {} was on the store at {} (--as-of)",
                self.name,
                self.machine(),
                output::stamp(when)
            );
        }
        self.pinned = Some(pinned);
        Ok(())
    }

    fn writable(&self) -> anyhow::Result<()> {
        if self.pinned.is_some() {
            crate::refuse!(Refusal::Usage, "remote {}: read as it was (--as-of), it is not written to", self.name);
        }
        Ok(())
    }

    /// Whether any object is under `rel` (empty directories are nothing).
    pub fn holds_any(&self, rel: &str) -> anyhow::Result<bool> {
        let dir = self.at(&format!("{}/", rel.trim_end_matches('/')));
        if let Some(pinned) = &self.pinned {
            return Ok(pinned.range(dir.clone()..).next().is_some_and(|(p, _)| p.starts_with(&dir)));
        }
        match self.rt.block_on(async { self.op.list_with(&dir).recursive(true).await }) {
            Ok(entries) => Ok(entries.iter().any(|e| !e.metadata().is_dir())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.fail(e, format_args!("listing {rel}"))),
        }
    }

    /// The names directly under `rel` (a directory; `""` for the machine's
    /// own), directories with a trailing `/`.
    pub fn list(&self, rel: &str) -> anyhow::Result<Vec<String>> {
        let dir = if rel.is_empty() { self.base.clone() } else { self.at(&format!("{}/", rel.trim_end_matches('/'))) };
        if let Some(pinned) = &self.pinned {
            // The names under `dir`, a directory once for all it holds.
            let mut names: Vec<String> = pinned
                .keys()
                .filter_map(|p| p.strip_prefix(&dir))
                .map(|rest| match rest.split_once('/') {
                    Some((d, _)) => format!("{d}/"),
                    None => rest.to_string(),
                })
                .collect();
            names.dedup();
            return Ok(names);
        }
        let entries = match self.rt.block_on(self.op.list(&dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.fail(e, format_args!("listing {}", if rel.is_empty() { "the machine's directory" } else { rel }))),
        };
        Ok(entries.into_iter().map(|e| e.path().strip_prefix(&dir).unwrap_or(e.path()).to_string()).filter(|n| !n.is_empty()).collect())
    }

    /// The machines that have backups in this store (`remote list --machines`).
    pub fn machines(&self) -> anyhow::Result<Vec<String>> {
        let entries = self.rt.block_on(self.op.list("/")).map_err(|e| self.fail(e, "listing the store's machines"))?;
        let mut out: Vec<String> = entries
            .into_iter()
            .filter(|e| e.metadata().is_dir())
            .map(|e| e.path().trim_matches('/').to_string())
            .filter(|n| crate::layout::valid_system_name(n))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Uploads `src` as `rel`, encrypted to `encrypt_to` on the way (or as
    /// it is), in parts of [`PART`] bytes, [`PARALLEL`] at a time; the
    /// object appears only once whole. Returns what was stored.
    pub fn upload(&self, rel: &str, src: &mut dyn Read, encrypt_to: Option<&age::x25519::Recipient>, progress: &dyn Fn(u64)) -> anyhow::Result<Object> {
        self.writable()?;
        let path = self.at(rel);
        let writer = self
            .rt
            .block_on(async { self.op.writer_with(&path).chunk(PART).concurrent(PARALLEL).await })
            .map_err(|e| self.fail(e, format_args!("starting the upload of {rel}")))?;
        let mut sink =
            Sink { store: self, writer, buf: Vec::with_capacity(PART), hash: blake3::Hasher::new(), head: None, bytes: 0, sent: 0, progress, what: rel };
        let copied = match encrypt_to {
            Some(to) => (|| -> anyhow::Result<()> {
                let mut w = crossback_archive::crypt::writer(&mut sink, std::slice::from_ref(to))?;
                std::io::copy(src, &mut w)?;
                w.finish()?;
                Ok(())
            })(),
            None => std::io::copy(src, &mut sink).map(drop).map_err(Into::into),
        };
        if let Err(e) = copied.and_then(|()| sink.flush_part()) {
            let _ = self.rt.block_on(sink.writer.abort());
            return Err(unwrap_io(e).context(format!("remote {}: uploading {rel}", self.name)));
        }
        let (hash, bytes, head) = (sink.hash.finalize().to_hex().to_string(), sink.bytes, sink.head.take().unwrap_or_default());
        let mut writer = sink.writer;
        let meta = self.rt.block_on(writer.close()).map_err(|e| self.fail(e, format_args!("finishing the upload of {rel}")))?;
        // The store's own count of what it holds, when it says one.
        if meta.content_length() != 0 && meta.content_length() != bytes {
            crate::refuse!(Refusal::RemoteDamaged, "remote {}: {rel} was sent as {bytes} bytes, the store says it holds {}", self.name, meta.content_length());
        }
        settled(&self.name, rel, SETTLE, || Ok(self.size(rel)? == Some(bytes)))?;
        Ok(Object { path: rel.to_string(), bytes, blake3: hash, head, pushed: Some(output::now()) })
    }

    /// Reads an object through and hashes it (`remote verify`).
    pub fn hash(&self, rel: &str, len: u64) -> anyhow::Result<(u64, String)> {
        let mut h = blake3::Hasher::new();
        let mut off = 0;
        let mut buf = vec![0u8; PART];
        while off < len {
            let want = ((len - off) as usize).min(buf.len());
            let n = self
                .read_at(rel, &mut buf[..want], off)
                .map_err(|e| refuse(Refusal::RemoteUnreachable, format!("remote {}: reading {rel}: {e}", self.name)))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        Ok((off, h.finalize().to_hex().to_string()))
    }
}

/// The generations a store holds: by number, whether complete (its manifest is there).
pub fn generations(store: &Store) -> anyhow::Result<BTreeMap<u64, bool>> {
    let mut out = BTreeMap::new();
    for name in store.list("")? {
        let Some(g) = name.strip_suffix('/').and_then(GenName::parse).filter(|g| !g.wiping) else { continue };
        let complete = store.size(&format!("{}/{}", GenName::dir(g.seq), layout::MANIFEST))?.is_some();
        out.insert(g.seq, complete);
    }
    Ok(out)
}

/// The first of the store's complete generations, newest first (or
/// generation `wanted` alone), for which `take` says yes, read under
/// `seal`. A generation whose seal does not hold is refused, not passed
/// over for an older one; unasked, the refusal says how to read an older one.
pub fn newest_sealed(
    store: &Store,
    seal: &SealKey,
    wanted: Option<u64>,
    mut take: impl FnMut(&Generation, &Objects) -> bool,
) -> anyhow::Result<Option<(Generation, Objects)>> {
    for (seq, _) in generations(store)?.into_iter().rev().filter(|(n, complete)| *complete && wanted.is_none_or(|w| w == *n)) {
        let (g, objects) = read_generation(store, seq, Some(seal)).map_err(|e| match wanted {
            Some(_) => e,
            None => e.context(format!(
                "the newest generation on remote {} ({seq}) does not hold up, and an older one is not taken in its place unasked: \
                 `crossback remote verify {}` shows what is there, `--generation N` reads an older one",
                store.name, store.name
            )),
        })?;
        if take(&g, &objects) {
            return Ok(Some((g, objects)));
        }
    }
    Ok(None)
}

/// A complete generation's manifest and objects, as the store has them;
/// with `seal`, refused unless its seal is the one `seal` makes of them.
pub fn read_generation(store: &Store, seq: u64, seal: Option<&SealKey>) -> anyhow::Result<(Generation, Objects)> {
    let dir = GenName::dir(seq);
    let damaged = |what: &str, e: String| refuse(Refusal::RemoteDamaged, format!("remote {}: {dir}/{what}: {e}", store.name));
    let text = |what: &str, cap: u64| -> anyhow::Result<String> {
        let bytes = store.get(&format!("{dir}/{what}"), cap)?.ok_or_else(|| damaged(what, "missing".into()))?;
        String::from_utf8(bytes).map_err(|_| damaged(what, "not text".into()))
    };
    let (manifest, list) = (text(layout::MANIFEST, layout::MANIFEST_CAP)?, text(OBJECTS, layout::MANIFEST_CAP)?);
    if let Some(key) = seal {
        let want = key.seal(store.machine(), seq, manifest.as_bytes(), list.as_bytes());
        if text(SEAL, 256)?.trim() != want {
            return Err(damaged(
                SEAL,
                "the generation is not sealed by this machine's key: its manifest or objects.toml was changed on the store, or someone else put it there; nothing of it is believed".into(),
            ));
        }
    }
    let g: Generation = toml::from_str(&manifest).map_err(|e| damaged(layout::MANIFEST, e.message().to_string()))?;
    g.check().map_err(|e| damaged(layout::MANIFEST, format!("{e:#}")))?;
    if g.seq != seq {
        return Err(damaged(layout::MANIFEST, format!("it says it is generation {}", g.seq)));
    }
    let objects: Objects = toml::from_str(&list).map_err(|e| damaged(OBJECTS, e.message().to_string()))?;
    Ok((g, objects))
}

/// The configuration carried by the newest sealed generation that has one
/// (`init --remote`), decrypted with `key`, and that generation's number.
/// The newest generation not sealed by `key` is refused, not passed over.
pub fn read_config(store: &Store, key: &age::x25519::Identity) -> anyhow::Result<(String, u64)> {
    let seal = SealKey::of(key);
    let keys = crossback_archive::crypt::Keys::new(vec![Box::new(key.clone())]);
    let carries = |_: &Generation, o: &Objects| o.list.iter().any(|o| o.path == layout::CONFIG_AGE);
    if let Some((g, objects)) = newest_sealed(store, &seal, None, carries)? {
        let (seq, listed) = (g.seq, objects.list.iter().find(|o| o.path == layout::CONFIG_AGE).context("found above")?);
        let rel = format!("{}/{}", GenName::dir(seq), layout::CONFIG_AGE);
        let shown = format!("remote {}: {rel}", store.name);
        let bytes = store.get(&rel, layout::CONFIG_CAP + (1 << 16))?.with_context(|| refuse(Refusal::RemoteDamaged, format!("{shown} is missing")))?;
        if bytes.len() as u64 != listed.bytes || blake3::hash(&bytes).to_hex().as_str() != listed.blake3 {
            crate::refuse!(Refusal::RemoteDamaged, "{shown} is not the file that was pushed (its size or hash differs): replaced or damaged on the store");
        }
        return Ok((crate::keys::open_text(&keys, &shown, &bytes, layout::CONFIG_CAP)?, seq));
    }
    crate::refuse!(
        Refusal::NoBackup,
        "no generation on remote {} carries the configuration of machine {} (pushed by an older crossback? `crossback push` from that machine adds it to the next generation)",
        store.name,
        store.machine()
    )
}

/// An object of a store read at any offset, as an archive is read: each
/// miss is one range request. What a request fetches is what the reader
/// said it will need (a frame, from the archive's table), else what it
/// asked for; reads that follow each other fetch more each time (up to
/// [`AHEAD_MAX`]), so a whole archive streams in large requests while one
/// file of it costs its index and its frames.
pub struct RemoteBytes {
    store: std::sync::Arc<Store>,
    rel: String,
    size: u64,
    state: std::sync::Mutex<Window>,
}

/// The last range fetched, and what comes next.
#[derive(Default)]
struct Window {
    start: u64,
    data: Vec<u8>,
    /// A range the reader said it will need.
    hint: Option<(u64, u64)>,
    /// The size of the next fetch when reads follow each other.
    ahead: u64,
}

const AHEAD_MAX: u64 = 16 << 20;

impl RemoteBytes {
    pub fn new(store: std::sync::Arc<Store>, rel: String, size: u64) -> RemoteBytes {
        RemoteBytes { store, rel, size, state: Default::default() }
    }
}

impl crossback_archive::crypt::Bytes for RemoteBytes {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        if off >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let mut w = self.state.lock().map_err(|_| std::io::Error::other("a reader of this object failed"))?;
        let end = w.start + w.data.len() as u64;
        if off < w.start || off >= end {
            let want = buf.len() as u64;
            let fetch = match w.hint {
                // The reader's chunk may start before the hinted bytes (age).
                Some((h, len)) if off < h + len && off + want > h => {
                    // What follows a hinted range is not a stream yet: asked for, not more.
                    w.ahead = 0;
                    (h + len - off).clamp(want, AHEAD_MAX.max(want))
                }
                // Reads that follow each other: each fetch twice the last (from
                // what is asked, up to AHEAD_MAX), so a stream soon reads in
                // large requests and the rest of a chunk costs only itself.
                _ if off == end && !w.data.is_empty() => {
                    w.ahead = (w.ahead * 2).max(want).min(AHEAD_MAX.max(want));
                    w.ahead
                }
                _ => {
                    w.ahead = want;
                    want
                }
            };
            let to = (off + fetch).min(self.size);
            w.data = self.store.range(&self.rel, off, to).map_err(std::io::Error::other)?;
            w.start = off;
            if w.data.is_empty() {
                return Ok(0);
            }
        }
        let at = (off - w.start) as usize;
        let n = buf.len().min(w.data.len() - at);
        buf[..n].copy_from_slice(&w.data[at..at + n]);
        Ok(n)
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.size)
    }

    fn will_need(&self, off: u64, len: u64) {
        if let Ok(mut w) = self.state.lock() {
            w.hint = Some((off, len.min(self.size.saturating_sub(off))));
        }
    }
}

/// The start of an encrypted object read through `bytes`: its age header,
/// kept in the reader's window for the archive to read it from again; a
/// header of many recipients, longer, read on up to [`HEAD_MAX`].
pub fn start_of(bytes: &RemoteBytes, len: u64) -> std::io::Result<Vec<u8>> {
    use crossback_archive::crypt::Bytes as _;
    // A header of a few recipients and the stream's nonce.
    const FIRST: u64 = 2048;
    let mut out = Vec::new();
    for want in [FIRST, HEAD_MAX as u64 + FIRST] {
        let want = want.min(len);
        let mut buf = vec![0u8; (want - out.len() as u64) as usize];
        let mut at = 0;
        while at < buf.len() {
            match bytes.read_at(&mut buf[at..], out.len() as u64 + at as u64)? {
                0 => break,
                n => at += n,
            }
        }
        out.extend_from_slice(&buf[..at]);
        if age_header_len(&out).is_some() || out.len() as u64 >= len {
            break;
        }
    }
    Ok(out)
}

/// Waits until the store shows a write done. OpenDAL's SFTP writer
/// returns before the server has closed the file (the close goes out when
/// the handle is dropped, its answer unread), and a server that puts a file
/// in place at its close may still show the old one, or finish an earlier
/// close of the same name after a later one (seen in CI against rclone's
/// SFTP server: objects.toml ended two versions back; and here, read back
/// at once: "no such file", or fewer bytes than its size). Nothing
/// further is written until this one is there: `objects.toml` is rewritten
/// as objects go up, and the manifest must never be there before what it
/// names. An S3 store shows a write at once.
fn settled(store: &str, rel: &str, wait: Duration, mut there: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        // A read that fails is a "not yet" too: until the close is done, a
        // server may not open the file, or give fewer bytes than it says.
        let last = match there() {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        if started.elapsed() > wait {
            let why = last.map(|e| format!(" (reading it back: {e:#})")).unwrap_or_default();
            crate::refuse!(
                Refusal::RemoteDamaged,
                "remote {store}: {rel} was written and the store accepted it, but {:.0} s later it does not give it back as written{why}: the server loses or reorders writes; nothing more was written",
                wait.as_secs_f64()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The length of the age header `bytes` start with (through its MAC
/// line), when they start as an age file and hold the whole header.
pub fn age_header_len(bytes: &[u8]) -> Option<usize> {
    const MAGIC: &[u8] = b"age-encryption.org/v1\n";
    if !bytes.starts_with(MAGIC) {
        return None;
    }
    let search = &bytes[..bytes.len().min(HEAD_MAX)];
    let mac = search.windows(5).position(|w| w == b"\n--- ")? + 1;
    let end = search[mac..].iter().position(|&b| b == b'\n')?;
    Some(mac + end + 1)
}

/// An age header is never longer than this (a few recipients' stanzas).
pub const HEAD_MAX: usize = 64 << 10;

/// The key that seals a generation on a store: derived from the secret key
/// the store's copies are encrypted to, so that the reader, who unlocks
/// that key, can check it, and kept beside the configuration (root's
/// only), so that `push`, which holds no secret, can seal. Someone who can
/// write to the store but holds neither cannot make a generation that
/// passes for one of this machine's.
pub struct SealKey([u8; 32]);

impl SealKey {
    pub fn of(key: &age::x25519::Identity) -> SealKey {
        use age::secrecy::ExposeSecret;
        SealKey(blake3::derive_key("crossback 2026-12-06 remote generation seal", key.to_string().expose_secret().as_bytes()))
    }

    /// Where remote `name`'s seal key is kept: beside the configuration.
    pub fn path(config: &Path, name: &str) -> std::path::PathBuf {
        config.with_file_name(format!("remote-{name}.seal-key"))
    }

    pub fn save(&self, config: &Path, name: &str) -> anyhow::Result<()> {
        let p = Self::path(config, name);
        let dir = p.parent().context("the configuration is in a directory")?;
        let file = p.file_name().and_then(|f| f.to_str()).context("a remote's name is plain")?;
        let hex = blake3::Hash::from_bytes(self.0).to_hex();
        crossback_host::beneath::Dir::open(dir)?.write_durable_mode(file, format!("{hex}\n").as_bytes(), 0o600)?;
        Ok(())
    }

    pub fn load(config: &Path, name: &str) -> anyhow::Result<SealKey> {
        let p = Self::path(config, name);
        let text = read_private(&p).with_context(|| {
            refuse(Refusal::Config, format!("remote {name}: its seal key {} (written by `remote add`): remove the remote and add it again", p.display()))
        })?;
        let k = blake3::Hash::from_hex(text.trim())
            .map_err(|_| refuse(Refusal::Config, format!("remote {name}: {} is not a seal key (64 hex digits)", p.display())))?;
        Ok(SealKey(*k.as_bytes()))
    }

    /// The seal of generation `seq` of `machine`: its manifest and its
    /// objects' list, as stored.
    pub fn seal(&self, machine: &str, seq: u64, manifest: &[u8], objects: &[u8]) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        for part in [machine.as_bytes(), &seq.to_le_bytes(), blake3::hash(manifest).as_bytes(), blake3::hash(objects).as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.finalize().to_hex().to_string()
    }
}

/// The error a failed part carries through `io::copy`: the store's own, when it was one.
fn unwrap_io(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<std::io::Error>() {
        Ok(io) => match io.into_inner().map(|inner| inner.downcast::<Carried>()) {
            Some(Ok(c)) => c.0,
            Some(Err(other)) => anyhow::Error::from_boxed(other),
            None => anyhow::anyhow!("an I/O error without detail"),
        },
        Err(e) => e,
    }
}

/// A store error carried through `std::io::Write` (the age writer's sink).
#[derive(Debug)]
struct Carried(anyhow::Error);

impl std::fmt::Display for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Carried {}

/// The upload's end of the pipe: counts and hashes what is stored, and
/// hands it to the store a part at a time.
struct Sink<'a> {
    store: &'a Store,
    writer: opendal::Writer,
    buf: Vec<u8>,
    hash: blake3::Hasher,
    /// The BLAKE3 of the age header, from the first part.
    head: Option<String>,
    bytes: u64,
    /// Parts handed to the store.
    sent: u64,
    progress: &'a dyn Fn(u64),
    what: &'a str,
}

impl Sink<'_> {
    fn flush_part(&mut self) -> anyhow::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.sent == 0 {
            // Nothing leaves the machine that is not an age file.
            let Some(len) = age_header_len(&self.buf) else {
                crate::refuse!(
                    Refusal::SlotHostile,
                    "{} is not encrypted (it does not start as an age file does), though everything pushed must be: nothing of it was sent",
                    self.what
                );
            };
            self.head = Some(blake3::hash(&self.buf[..len]).to_hex().to_string());
        }
        self.sent += 1;
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(PART));
        self.store.rt.block_on(self.writer.write(part)).map_err(|e| self.store.fail(e, format_args!("uploading {}", self.what)))?;
        (self.progress)(self.bytes);
        Ok(())
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(PART - self.buf.len());
        if let Some(p) = &self.store.pacer {
            let wait = p.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take(n, std::time::Instant::now());
            std::thread::sleep(wait);
        }
        self.buf.extend_from_slice(&data[..n]);
        self.hash.update(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() == PART {
            self.flush_part().map_err(|e| std::io::Error::other(Carried(e)))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The S3 key pair: from the file the configuration names, else the
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
fn s3_credentials(r: &RemoteConfig) -> anyhow::Result<(String, String)> {
    if let Some(path) = &r.credentials {
        let text = read_private(path).with_context(|| refuse(Refusal::Config, format!("remote {}: the credentials file {}", r.name, path.display())))?;
        let c: S3Credentials = toml::from_str(&text).map_err(|e| {
            refuse(
                Refusal::Config,
                format!("remote {}: {} does not read as `access_key_id = \"…\"` and `secret_access_key = \"…\"`: {}", r.name, path.display(), e.message()),
            )
        })?;
        return Ok((c.access_key_id, c.secret_access_key));
    }
    match (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY")) {
        (Ok(id), Ok(secret)) if !id.is_empty() && !secret.is_empty() => Ok((id, secret)),
        _ => crate::refuse!(
            Refusal::Config,
            "remote {}: no credentials: give them in a file (`crossback remote add … --credentials FILE`) or in $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY",
            r.name
        ),
    }
}

/// A secret file: root's own and nobody else's to read.
fn read_private(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.len() > 64 << 10 {
        anyhow::bail!("is not a small regular file");
    }
    if meta.mode() & 0o077 != 0 {
        anyhow::bail!("can be read by others (mode {:o}): `chmod 600 {}` first", meta.mode() & 0o777, path.display());
    }
    Ok(std::fs::read_to_string(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_holds_the_rate_with_half_a_second_of_burst() {
        let t0 = std::time::Instant::now();
        let mut p = Pacer::new(1000);
        // 10 000 bytes at 1000 B/s, in pieces: 10 s of waiting, whatever the pieces.
        let mut now = t0;
        for _ in 0..100 {
            now += p.take(100, now);
        }
        assert!((now - t0).as_secs_f64() > 9.99 && (now - t0).as_secs_f64() < 10.01, "{:?}", now - t0);
        // Idle for a minute: only half a second's worth goes without waiting.
        let later = now + Duration::from_secs(60);
        assert_eq!(p.take(500, later), Duration::ZERO);
        assert_eq!(p.take(500, later), Duration::from_millis(500));
    }

    /// What stores answer, as OpenDAL hands it on, by kind.
    #[test]
    fn a_store_s_answer_says_whether_it_is_full_failing_or_unreachable() {
        let kind = |k: ErrorKind, message: &str, retried: &Retried| {
            crate::error::kind_of(&store_error(opendal::Error::new(k, message), "uploading x", "offsite", false, retried)).unwrap()
        };
        let none = Retried::default();
        let s3 = |code: &str, message: &str| format!("S3Error {{ code: \"{code}\", message: \"{message}\", resource: \"\", request_id: \"\" }}");
        // MinIO, Ceph RGW / Wasabi, Backblaze B2, an SFTP server.
        assert_eq!(
            kind(ErrorKind::Unexpected, &s3("XMinioStorageFull", "Storage backend has reached its minimum free drive threshold."), &none),
            Refusal::RemoteFull
        );
        assert_eq!(kind(ErrorKind::PermissionDenied, &s3("QuotaExceeded", ""), &none), Refusal::RemoteFull);
        assert_eq!(kind(ErrorKind::PermissionDenied, &s3("AccessDenied", "Storage cap exceeded."), &none), Refusal::RemoteFull);
        assert_eq!(kind(ErrorKind::Unexpected, "Sftp server reported error kind Failure, msg: no space left on device", &none), Refusal::RemoteFull);
        // A store that says nothing more than "internal error": failing, maybe full.
        assert_eq!(kind(ErrorKind::Unexpected, &s3("InternalError", "We encountered an internal error, please try again."), &none), Refusal::RemoteFailing);
        // What the retries saw counts: a completion retried after an internal error finds no upload.
        let after = Retried { full: false, answered: true, last: Some("Unexpected: S3Error InternalError".into()) };
        let e = store_error(opendal::Error::new(ErrorKind::NotFound, s3("NoSuchUpload", "NoSuchUpload")), "finishing x", "offsite", false, &after);
        assert_eq!(crate::error::kind_of(&e), Some(Refusal::RemoteFailing));
        assert!(e.to_string().contains("tried again after: Unexpected: S3Error InternalError") && e.to_string().contains("may be full"), "{e}");
        let full = Retried { full: true, answered: true, last: None };
        assert_eq!(kind(ErrorKind::NotFound, &s3("NoSuchUpload", "NoSuchUpload"), &full), Refusal::RemoteFull);
        // No answer at all; credentials the store does not know.
        assert_eq!(kind(ErrorKind::Unexpected, "error sending request", &none), Refusal::RemoteUnreachable);
        assert_eq!(
            kind(ErrorKind::PermissionDenied, &s3("InvalidAccessKeyId", "The access key ID you provided does not exist."), &none),
            Refusal::RemoteDenied
        );
    }

    #[test]
    fn an_age_header_is_found_and_a_seal_covers_every_part() {
        let key = age::x25519::Identity::generate();
        let mut out = Vec::new();
        let mut w = crossback_archive::crypt::writer(&mut out, &[key.to_public()]).unwrap();
        w.write_all(&[7u8; 100_000]).unwrap();
        w.finish().unwrap();
        let n = age_header_len(&out).expect("an age file's header");
        assert!(out[..n].ends_with(b"\n") && out[..n].windows(4).any(|w| w == b"--- ") && n < 400, "{n}: {:?}", String::from_utf8_lossy(&out[..n]));
        assert_eq!(age_header_len(&out[..n - 1]), None, "a header cut short");
        assert_eq!(age_header_len(b"root.tar.zst in the clear"), None);
        let seal = SealKey::of(&key);
        let s = seal.seal("desk", 3, b"manifest", b"objects");
        assert_eq!(s, SealKey::of(&key).seal("desk", 3, b"manifest", b"objects"), "the same key seals alike");
        for other in [
            seal.seal("laptop", 3, b"manifest", b"objects"),
            seal.seal("desk", 4, b"manifest", b"objects"),
            seal.seal("desk", 3, b"manifest ", b"objects"),
            seal.seal("desk", 3, b"manifest", b"objects "),
            SealKey::of(&age::x25519::Identity::generate()).seal("desk", 3, b"manifest", b"objects"),
        ] {
            assert_ne!(s, other);
        }
    }

    #[test]
    fn a_write_counts_once_the_store_gives_it_back() {
        let mut asked = 0;
        settled("nas", "gen-000001/objects.toml", Duration::from_secs(5), || {
            asked += 1;
            Ok(asked == 3)
        })
        .unwrap();
        assert_eq!(asked, 3, "asked again until it was there, not after");
        let e = settled("nas", "gen-000001/objects.toml", Duration::from_millis(50), || Ok(false)).unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Some(Refusal::RemoteDamaged), "{e:#}");
        assert!(format!("{e:#}").contains("gen-000001/objects.toml"), "{e:#}");
        let mut asked = 0;
        settled("nas", "x", Duration::from_secs(5), || {
            asked += 1;
            if asked < 3 {
                anyhow::bail!("file does not exist")
            }
            Ok(true)
        })
        .unwrap();
        let e = settled("nas", "x", Duration::from_millis(50), || anyhow::bail!("connection reset")).unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Some(Refusal::RemoteDamaged), "{e:#}");
        assert!(format!("{e:#}").contains("connection reset"), "the last error is said: {e:#}");
    }

    #[test]
    fn urls_say_where_or_are_refused() {
        assert_eq!(Url::parse("s3://bucket").unwrap(), Url::S3 { bucket: "bucket".into(), prefix: String::new() });
        assert_eq!(Url::parse("s3://bucket/a/b/").unwrap(), Url::S3 { bucket: "bucket".into(), prefix: "a/b".into() });
        assert_eq!(
            Url::parse("sftp://ann@backup.example:2222/srv/cb").unwrap(),
            Url::Sftp { user: Some("ann".into()), host: "backup.example".into(), port: Some(2222), path: "/srv/cb".into() }
        );
        for bad in ["s3://", "http://x/y", "sftp://host", "sftp://u:pw@host/p", "s3://b/../x", "s3://b/x?y=1", "bucket/x", "s3://u@b/x"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}
