//! The configuration file: the media's two slots and the systems to back
//! up, by filesystem UUID. The same file is valid on every system of the
//! machine: nothing in it says which one is running.
//!
//! Found at `--config FILE`, else `$CROSSBACK_CONFIG`, else
//! `/etc/crossback/config.toml`. Every error names the key and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};

use crate::error::{refuse, Refusal};

pub const DEFAULT_PATH: &str = "/etc/crossback/config.toml";
/// The largest configuration crossback reads.
const CONFIG_CAP: u64 = 1 << 20;

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub media: Option<Media>,
    #[serde(default, rename = "system")]
    pub systems: Vec<SystemConfig>,
    /// Off-site stores the sealed generations are also copied to (`crossback push`).
    #[serde(default, rename = "remote", skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<RemoteConfig>,
}

/// An off-site store (`crossback remote add`). No secret is in here: the
/// credentials stay in the file it names (or the environment), and this
/// configuration, copied to the media, gives nothing away.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    pub name: String,
    /// `s3://BUCKET[/PREFIX]` or `sftp://[USER@]HOST[:PORT]/PATH`.
    pub url: String,
    /// S3: the service's address (`https://s3.eu-central-1.wasabisys.com`); default AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3: a file with `access_key_id = "…"` and `secret_access_key = "…"`
    /// (default: `$AWS_ACCESS_KEY_ID`, `$AWS_SECRET_ACCESS_KEY`); SFTP:
    /// the SSH private key (default: ssh's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// This machine's name in the store: its backups are under `URL/MACHINE/`.
    pub machine: String,
    /// The public key (`age1…`) everything pushed there is encrypted to.
    pub key: String,
    /// Uploads at most this many bytes per second (`push --limit-upload` overrides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_upload: Option<u64>,
    /// Retention: after a push, only the newest this many generations stay
    /// (at least 1); unset, every generation stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    /// Retention deletes nothing pushed fewer than this many days ago (the
    /// provider's minimum storage duration: 30 for S3 Infrequent Access, 90 for Wasabi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age_days: Option<u32>,
    /// S3 Object Lock: every object pushed there is locked (compliance
    /// mode) for this many days; nobody can delete it before then, this
    /// machine included. The bucket must have Object Lock on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_days: Option<u32>,
    /// `"after-backup"`: every `crossback backup` pushes here once its
    /// generation is written (not a backup at reboot: no network then).
    #[serde(default, skip_serializing_if = "PushWhen::is_manual")]
    pub push: PushWhen,
}

/// When a remote is pushed to without being asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PushWhen {
    /// Only by `crossback push` (or its timer, `schedule --push`).
    #[default]
    Manual,
    AfterBackup,
}

impl PushWhen {
    fn is_manual(&self) -> bool {
        *self == PushWhen::Manual
    }
}

impl RemoteConfig {
    /// What retention keeps, when the remote has retention.
    pub fn retention(&self) -> Option<crate::remote::retention::Policy> {
        self.keep.map(|keep| crate::remote::retention::Policy { keep, min_age_days: self.min_age_days.unwrap_or(0), lock_days: self.lock_days.unwrap_or(0) })
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// Written by `crossback media prepare`; also in each slot's `slot.toml`.
    pub id: Spanned<String>,
    pub slot_a: Spanned<String>,
    pub slot_b: Spanned<String>,
    /// An encrypted media's public key (`age1…`), as `media prepare
    /// --encrypt` / `media encrypt` made it: a slot whose marker names
    /// another one was tampered with, and `backup` writes nothing to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_key: Option<Spanned<String>>,
    /// Whether the media is encrypted, as this system knows it: `true`
    /// with `media_key`, `false` for a plain media. Absent in a file an
    /// older crossback wrote: then `backup` refuses until `crossback media
    /// trust` records it (a disk cannot say it for itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
}

/// What a system's configuration says the media is: the one source
/// `backup` and the key commands write by. The slots' markers must agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sealing {
    /// Encrypted to this media key (`age1…`).
    Encrypted(String),
    Plain,
    /// An older configuration that never said.
    Unknown,
}

impl Media {
    pub fn sealing(&self) -> Sealing {
        match (&self.media_key, self.encrypted) {
            (Some(k), _) => Sealing::Encrypted(k.get_ref().clone()),
            (None, Some(false)) => Sealing::Plain,
            (None, _) => Sealing::Unknown,
        }
    }

    /// The media as `sealing` says, with these slots.
    pub fn with_sealing(id: &str, slot_a: &str, slot_b: &str, sealing: &Sealing) -> Media {
        let s = |v: &str| Spanned::new(0..0, v.to_string());
        let (media_key, encrypted) = match sealing {
            Sealing::Encrypted(k) => (Some(s(k)), Some(true)),
            Sealing::Plain => (None, Some(false)),
            Sealing::Unknown => (None, None),
        };
        Media { id: s(id), slot_a: s(slot_a), slot_b: s(slot_b), media_key, encrypted }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    pub name: Spanned<String>,
    /// UUID of the root filesystem.
    pub root: Spanned<String>,
    /// btrfs subvolume of the root (`@`), when the root is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subvol: Option<String>,
    /// Paths left out of this system's backups (globs, see `archive create --exclude`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Corrections to what the system's fstab says, by mount point.
    #[serde(default, rename = "mount", skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountOverride>,
    /// The LUKS containers (their UUIDs) the system's filesystems sit in:
    /// opened (read-only to back up) for the commands that look inside it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub luks: Vec<String>,
    /// The LVM volume groups (their names) the system's filesystems sit in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lvm: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MountOverride {
    pub mountpoint: String,
    /// Filesystem UUID to use instead of what fstab names.
    #[serde(default)]
    pub uuid: Option<Spanned<String>>,
    #[serde(default)]
    pub fstype: Option<String>,
    #[serde(default)]
    pub options: Option<String>,
    /// Leave this filesystem out of the system's backups.
    #[serde(default)]
    pub skip: bool,
}

/// Where the configuration is read from and written to.
pub fn path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("CROSSBACK_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

fn line_of(text: &str, span: std::ops::Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

/// A filesystem UUID as blkid prints them: 8-4-4-4-12 hex digits, vfat's
/// XXXX-XXXX, or NTFS-style 16 hex digits.
pub fn valid_uuid(u: &str) -> bool {
    let groups: Vec<&str> = u.split('-').collect();
    let hex = |g: &str, n: usize| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit());
    match groups.as_slice() {
        [a, b, c, d, e] => hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12),
        [a, b] => hex(a, 4) && hex(b, 4),
        [a] => hex(a, 16),
        _ => false,
    }
}

/// A volume group name as lvm2 allows it: letters, digits and `+_.-`, not
/// starting with `-`, and not `.` or `..`.
pub fn valid_vg_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 127 && !n.starts_with('-') && n != "." && n != ".." && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
}

impl Config {
    /// Parses and checks a configuration; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| refuse(Refusal::Config, format!("{}: {e}", origin.display())))?;
        cfg.check(text, origin).map_err(|e| refuse(Refusal::Config, format!("{e:#}")))?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = read(path)?;
        Self::parse(&text, path)
    }

    fn check(&self, text: &str, origin: &Path) -> anyhow::Result<()> {
        let at = |s: &std::ops::Range<usize>| format!("{} line {}", origin.display(), line_of(text, s.clone()));
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        // Every UUID the file names, with where and as what.
        let mut uuids: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut claim = |u: &Spanned<String>, what: String, key: &str| -> anyhow::Result<()> {
            let v = u.get_ref().to_lowercase();
            if !valid_uuid(&v) {
                bail!("{}: {key} = {:?} is not a filesystem UUID (like 0a1b2c3d-… or ABCD-1234); `blkid` shows them", at(&u.span()), u.get_ref());
            }
            if let Some((prev_what, prev_at)) = uuids.get(&v) {
                bail!("{}: {key} = {:?} is already used for {prev_what} ({prev_at})", at(&u.span()), u.get_ref());
            }
            uuids.insert(v, (what, at(&u.span())));
            Ok(())
        };
        if let Some(m) = &self.media {
            claim(&m.slot_a, "slot A".into(), "media.slot_a")?;
            claim(&m.slot_b, "slot B".into(), "media.slot_b")?;
            match (&m.media_key, m.encrypted) {
                (Some(k), Some(false)) => bail!("{}: media.media_key is set but media.encrypted = false: one of them is wrong", at(&k.span())),
                (None, Some(true)) => bail!("{}: media.encrypted = true but no media.media_key: `crossback media trust` learns it", at(&m.id.span())),
                (Some(k), _) if age_recipient(k.get_ref()).is_none() => {
                    bail!("{}: media.media_key = {:?} is not an age public key (age1…)", at(&k.span()), crate::output::text(k.get_ref()))
                }
                _ => {}
            }
        }
        for s in &self.systems {
            let name = s.name.get_ref();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') || name.starts_with('.') {
                bail!("{}: system name {name:?} must be letters, digits, '-', '_' or '.'", at(&s.name.span()));
            }
            let line = line_of(text, s.name.span());
            if let Some(prev) = names.insert(name, line) {
                bail!("{}: system name {name:?} is used twice (first on line {prev})", at(&s.name.span()));
            }
            claim(&s.root, format!("the root of system {name:?}"), "system.root")?;
            // Checked now, as `backup` will read them: a bad pattern found
            // after the older generation was wiped would cost a backup.
            for e in &s.exclude {
                if let Err(err) = crossback_archive::create::check_exclude(e) {
                    bail!("{}: system {name:?}: exclude pattern {:?}: {err}", at(&s.name.span()), crate::output::text(e));
                }
            }
            for u in &s.luks {
                if !valid_uuid(u) {
                    bail!("{}: system {name:?}: luks = {:?} is not a LUKS UUID", at(&s.name.span()), crate::output::text(u));
                }
            }
            for vg in &s.lvm {
                if !valid_vg_name(vg) {
                    bail!("{}: system {name:?}: lvm = {:?} is not a volume group name", at(&s.name.span()), crate::output::text(vg));
                }
            }
            for m in &s.mounts {
                if let Some(u) = &m.uuid {
                    claim(u, format!("{} of system {name:?}", m.mountpoint), "system.mount.uuid")?;
                }
            }
        }
        let mut remotes = std::collections::BTreeSet::new();
        for r in &self.remotes {
            if !crate::layout::valid_system_name(&r.name) || !remotes.insert(r.name.as_str()) {
                bail!(
                    "{}: remote name {:?} is not a plain name (letters, digits, '-', '_', '.'), or is used twice",
                    origin.display(),
                    crate::output::text(&r.name)
                );
            }
            if !crate::layout::valid_system_name(&r.machine) {
                bail!("{}: remote {}: machine = {:?} is not a plain name", origin.display(), r.name, crate::output::text(&r.machine));
            }
            if age_recipient(&r.key).is_none() {
                bail!("{}: remote {}: key = {:?} is not an age public key (age1…)", origin.display(), r.name, crate::output::text(&r.key));
            }
            crate::remote::Url::parse(&r.url).map_err(|e| anyhow::anyhow!("{}: remote {}: {e}", origin.display(), r.name))?;
            if r.keep == Some(0) {
                bail!("{}: remote {}: keep = 0 would delete every generation there; keep at least 1 (or leave keep out to keep all)", origin.display(), r.name);
            }
            if r.min_age_days.is_some() && r.keep.is_none() {
                bail!("{}: remote {}: min_age_days is for retention, which keep = N turns on; without keep nothing is deleted", origin.display(), r.name);
            }
            match r.lock_days {
                Some(0) | Some(36_501..) => bail!("{}: remote {}: lock_days is from 1 to 36500", origin.display(), r.name),
                Some(_) if !r.url.starts_with("s3://") => {
                    bail!("{}: remote {}: lock_days is S3 Object Lock, for an s3:// remote only", origin.display(), r.name)
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn system(&self, name: &str) -> Option<&SystemConfig> {
        self.systems.iter().find(|s| s.name.get_ref() == name)
    }
}

/// The configuration file's text as it is (comments included).
pub fn text(path: &Path) -> anyhow::Result<String> {
    read(path)
}

/// The file's text; one that is not UTF-8 is refused with the line of the
/// first bad byte.
fn read(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, regular, bounded: `--config /dev/zero` or a FIFO is refused, not read forever.
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(Refusal::Config, format!("no configuration at {}: run `crossback init` to write one", path.display())))
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let meta = file.metadata().with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() || meta.len() > CONFIG_CAP {
        return Err(refuse(Refusal::Config, format!("{} is not a configuration file (a regular file of at most {CONFIG_CAP} bytes)", path.display())));
    }
    let mut bytes = Vec::new();
    file.take(CONFIG_CAP).read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        refuse(Refusal::Config, format!("{} line {line}: a byte that is not UTF-8 (at offset {at}); the configuration must be UTF-8 text", path.display()))
    })
}

fn strings(list: &[String]) -> Array {
    list.iter().map(String::as_str).collect()
}

fn media_table(m: &Media) -> Table {
    let mut t = Table::new();
    t["id"] = value(m.id.get_ref().as_str());
    t["slot_a"] = value(m.slot_a.get_ref().as_str());
    t["slot_b"] = value(m.slot_b.get_ref().as_str());
    if let Some(k) = &m.media_key {
        t["media_key"] = value(k.get_ref().as_str());
    }
    if let Some(e) = m.encrypted {
        t["encrypted"] = value(e);
    }
    t
}

/// An age X25519 public key, or `None`.
fn age_recipient(text: &str) -> Option<age::x25519::Recipient> {
    text.parse().ok()
}

/// The configuration as text (TOML's own escaping), with comments for people.
pub fn render(cfg: &Config) -> String {
    let mut doc = DocumentMut::new();
    doc.decor_mut().set_prefix(
        "# crossback configuration: the same file is valid on every system of this machine.\n\
         # Written by `crossback init`; edit freely (docs/backup.md says what each key means).\n\n",
    );
    if let Some(m) = &cfg.media {
        doc["media"] = Item::Table(media_table(m));
    }
    let mut systems = ArrayOfTables::new();
    for s in &cfg.systems {
        let mut t = Table::new();
        t["name"] = value(s.name.get_ref().as_str());
        t["root"] = value(s.root.get_ref().as_str());
        if let Some(sv) = &s.subvol {
            t["subvol"] = value(sv.as_str());
        }
        if !s.exclude.is_empty() {
            t["exclude"] = value(strings(&s.exclude));
        }
        if !s.luks.is_empty() {
            t["luks"] = value(strings(&s.luks));
        }
        if !s.lvm.is_empty() {
            t["lvm"] = value(strings(&s.lvm));
        }
        let mut mounts = ArrayOfTables::new();
        for m in &s.mounts {
            let mut mt = Table::new();
            mt["mountpoint"] = value(m.mountpoint.as_str());
            if let Some(u) = &m.uuid {
                mt["uuid"] = value(u.get_ref().as_str());
            }
            if let Some(f) = &m.fstype {
                mt["fstype"] = value(f.as_str());
            }
            if let Some(o) = &m.options {
                mt["options"] = value(o.as_str());
            }
            if m.skip {
                mt["skip"] = value(true);
            }
            mounts.push(mt);
        }
        if !mounts.is_empty() {
            t["mount"] = Item::ArrayOfTables(mounts);
        }
        systems.push(t);
    }
    if !systems.is_empty() {
        doc["system"] = Item::ArrayOfTables(systems);
    }
    let remotes: ArrayOfTables = cfg.remotes.iter().map(remote_table).collect();
    if !remotes.is_empty() {
        doc["remote"] = Item::ArrayOfTables(remotes);
    }
    doc.to_string()
}

fn remote_table(r: &RemoteConfig) -> Table {
    let mut t = Table::new();
    t["name"] = value(r.name.as_str());
    t["url"] = value(r.url.as_str());
    for (k, v) in [("endpoint", &r.endpoint), ("region", &r.region)] {
        if let Some(v) = v {
            t[k] = value(v.as_str());
        }
    }
    if let Some(c) = &r.credentials {
        t["credentials"] = value(c.to_string_lossy().as_ref());
    }
    t["machine"] = value(r.machine.as_str());
    t["key"] = value(r.key.as_str());
    if let Some(l) = r.limit_upload {
        t["limit_upload"] = value(i64::try_from(l).unwrap_or(i64::MAX));
    }
    if r.push == PushWhen::AfterBackup {
        t["push"] = value("after-backup");
    }
    for (k, v) in [("keep", r.keep), ("min_age_days", r.min_age_days), ("lock_days", r.lock_days)] {
        if let Some(v) = v {
            t[k] = value(i64::from(v));
        }
    }
    t
}

/// Adds a remote (`remote add`); a name already there is refused.
pub fn add_remote(path: &Path, r: &RemoteConfig) -> anyhow::Result<()> {
    edit(path, |doc| {
        let list = doc.entry("remote").or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
        let list = list.as_array_of_tables_mut().context("`remote` in the configuration is not a list of [[remote]] tables")?;
        if list.iter().any(|t| t.get("name").and_then(Item::as_str) == Some(r.name.as_str())) {
            crate::refuse!(Refusal::Usage, "a remote named {} is already configured (`crossback remote list`); nothing was changed", r.name);
        }
        list.push(remote_table(r));
        Ok(())
    })
}

/// Removes a remote (`remote remove`); the store itself is not touched.
pub fn remove_remote(path: &Path, name: &str) -> anyhow::Result<()> {
    edit(path, |doc| {
        let list = doc.get_mut("remote").and_then(Item::as_array_of_tables_mut);
        let Some(list) = list.filter(|l| l.iter().any(|t| t.get("name").and_then(Item::as_str) == Some(name))) else {
            crate::refuse!(Refusal::Usage, "no remote named {} is configured (`crossback remote list`)", crate::output::text(name));
        };
        list.retain(|t| t.get("name").and_then(Item::as_str) != Some(name));
        if list.is_empty() {
            doc.remove("remote");
        }
        Ok(())
    })
}

/// Changes the file in place (the user's comments and order stay), checks
/// the result as a whole, and writes it durably.
fn edit(path: &Path, change: impl FnOnce(&mut DocumentMut) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let text = if path.exists() { read(path)? } else { String::new() };
    let mut doc: DocumentMut = text.parse().map_err(|e| refuse(Refusal::Config, format!("{}: {e}", path.display())))?;
    change(&mut doc)?;
    let new = doc.to_string();
    Config::parse(&new, path).context("the configuration crossback changed does not check (a bug; the file was not written)")?;
    write(path, &new)
}

/// Sets `key` to a string, keeping the comment around the old value.
fn set_keep(t: &mut Table, key: &str, v: &str) {
    let mut new = toml_edit::Value::from(v);
    if let Some(old) = t.get(key).and_then(Item::as_value) {
        *new.decor_mut() = old.decor().clone();
    }
    t[key] = Item::Value(new);
}

/// Records the media (`media prepare`, `media adopt`).
pub fn set_media(path: &Path, m: &Media) -> anyhow::Result<()> {
    edit(path, |doc| {
        match doc.get_mut("media").and_then(Item::as_table_mut) {
            Some(t) => {
                set_keep(t, "id", m.id.get_ref());
                set_keep(t, "slot_a", m.slot_a.get_ref());
                set_keep(t, "slot_b", m.slot_b.get_ref());
                // What the media is, as a whole: a plain one has no key.
                match &m.media_key {
                    Some(k) => set_keep(t, "media_key", k.get_ref()),
                    None => drop(t.remove("media_key")),
                }
                match m.encrypted {
                    Some(e) => t["encrypted"] = value(e),
                    None => drop(t.remove("encrypted")),
                }
            }
            None => doc["media"] = Item::Table(media_table(m)),
        }
        Ok(())
    })
}

/// Records a system's new root UUID (after a bare-metal restore with new UUIDs).
pub fn set_system_root(path: &Path, name: &str, uuid: &str) -> anyhow::Result<()> {
    edit(path, |doc| {
        let systems = doc.get_mut("system").and_then(Item::as_array_of_tables_mut).context("no [[system]] in the configuration")?;
        let s = systems.iter_mut().find(|t| t.get("name").and_then(Item::as_str) == Some(name)).with_context(|| format!("no system {name:?}"))?;
        set_keep(s, "root", uuid);
        Ok(())
    })
}

/// Sets a system's `luks` list (its containers got new UUIDs).
pub fn set_system_luks(path: &Path, name: &str, uuids: &[String]) -> anyhow::Result<()> {
    edit(path, |doc| {
        let systems = doc.get_mut("system").and_then(Item::as_array_of_tables_mut).context("no [[system]] in the configuration")?;
        let s = systems.iter_mut().find(|t| t.get("name").and_then(Item::as_str) == Some(name)).with_context(|| format!("no system {name:?}"))?;
        s["luks"] = value(strings(uuids));
        Ok(())
    })
}

/// Writes the configuration durably.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    // The configuration's directory is the user's (it may be a symlink); the
    // file is written as everything on a slot is: new file, fsync, rename, fsync.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).with_context(|| format!("{} is not a file name crossback can write", path.display()))?;
    Ok(crossback_host::beneath::Dir::open(&dir)?.write_durable(name, text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "0a1b2c3d-0000-4000-8000-000000000001";
    const U2: &str = "0a1b2c3d-0000-4000-8000-000000000002";

    fn parse(t: &str) -> anyhow::Result<Config> {
        Config::parse(t, Path::new("config.toml"))
    }

    #[test]
    fn good_config_round_trips() {
        let t = format!("[media]\nid = \"m1\"\nslot_a = \"{U1}\"\nslot_b = \"{U2}\"\n\n[[system]]\nname = \"alpha\"\nroot = \"ABCD-1234\"\nexclude = [\"/home/*/.cache\"]\n");
        let c = parse(&t).unwrap();
        let again = parse(&render(&c)).unwrap();
        assert_eq!(render(&again), render(&c));
        assert_eq!(c.systems[0].exclude, ["/home/*/.cache"]);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = parse("[[system]]\nname = \"a\"\nroot = \"ABCD-1234\"\ncolour = 3\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `colour`") && e.contains("line 4"), "{e}");
        let e = parse("[[system]]\nname = \"a\"\nroot = \"ABCD-1234\"\n[[system]]\nname = \"a\"\nroot = \"ABCD-1235\"\n").unwrap_err().to_string();
        assert!(e.contains("line 5") && e.contains("used twice (first on line 2)"), "{e}");
        let e = parse(&format!("[[system]]\nname = \"a\"\nroot = \"{U1}\"\n[[system]]\nname = \"b\"\nroot = \"{U1}\"\n")).unwrap_err().to_string();
        assert!(e.contains("line 6") && e.contains("already used for the root of system \"a\""), "{e}");
        let e =
            parse(&format!("[media]\nid = \"m\"\nslot_a = \"{U1}\"\nslot_b = \"{U2}\"\n[[system]]\nname = \"a\"\nroot = \"{U2}\"\n")).unwrap_err().to_string();
        assert!(e.contains("line 7") && e.contains("already used for slot B"), "{e}");
        let e = parse("[[system]]\nname = \"a\"\nroot = \"not-a-uuid\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("system.root") && e.contains("not a filesystem UUID"), "{e}");
        let e = parse("this is not toml").unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("line 1"), "{e}");
    }

    /// A bad exclude pattern is found when the file is read.
    #[test]
    fn exclude_patterns_are_checked_when_read() {
        let e = parse("[[system]]\nname = \"a\"\nroot = \"ABCD-1234\"\nexclude = [\"/home/[unclosed\"]\n").unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Some(Refusal::Config));
        let e = format!("{e:#}");
        assert!(e.contains("line 2") && e.contains("exclude pattern") && e.contains("[unclosed"), "{e}");
    }

    /// A byte that is not UTF-8 is named with its line.
    #[test]
    fn non_utf8_config_names_the_line() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.toml");
        std::fs::write(&p, b"[[system]]\nname = \"a\"\nroot = \"AB\xffD-1234\"\n").unwrap();
        let e = Config::load(&p).unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Some(Refusal::Config));
        assert!(e.to_string().contains("line 3") && e.to_string().contains("not UTF-8"), "{e}");
    }

    /// TOML's escaping, not Rust's; the user's comments survive an update.
    #[test]
    fn config_is_written_with_toml_escaping_and_keeps_comments() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.toml");
        let text = format!("# my machine\n[[system]]\nname = \"alpha\"\nroot = \"{U1}\"  # the SSD\nexclude = [\"/home/*/caf\u{e9}\\\\x\", \"\\u0007bell\"]\n");
        std::fs::write(&p, &text).unwrap();
        let cfg = Config::load(&p).unwrap();
        assert_eq!(cfg.systems[0].exclude, ["/home/*/caf\u{e9}\\x", "\u{7}bell"]);
        // Rendered, it reads back the same (Rust's {:?} would write \u{7}, which TOML rejects).
        let again = parse(&render(&cfg)).unwrap();
        assert_eq!(again.systems[0].exclude, cfg.systems[0].exclude);
        set_system_root(&p, "alpha", U2).unwrap();
        let after = std::fs::read_to_string(&p).unwrap();
        assert!(after.contains("# my machine") && after.contains("# the SSD") && after.contains(U2), "{after}");
        set_media(
            &p,
            &Media {
                id: Spanned::new(0..0, "m1".into()),
                slot_a: Spanned::new(0..0, "ABCD-0001".into()),
                slot_b: Spanned::new(0..0, "ABCD-0002".into()),
                media_key: None,
                encrypted: Some(false),
            },
        )
        .unwrap();
        let after = std::fs::read_to_string(&p).unwrap();
        assert!(after.contains("# my machine") && after.contains("slot_b = \"ABCD-0002\""), "{after}");
        Config::load(&p).unwrap();
    }
}
