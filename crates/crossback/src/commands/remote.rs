//! `crossback remote add|list|remove|verify`: the off-site stores.

use crate::cli::RemoteAddArgs;
use crate::config::{self, Config, RemoteConfig};
use crate::error::{refuse, Refusal};
use crate::layout::{self, KeyFiles};
use crate::remote::{self, Record, Store};
use crate::{keys, output, refuse};

mod add;
mod list;
mod remove;
mod verify;

pub use add::add;
pub use list::list;
pub use remove::remove;
pub use verify::verify;

/// The remote `remote add` was given, checked as far as it can be
/// without the store; its key is set once the store was asked.
fn new_remote(cfg: &Config, a: RemoteAddArgs) -> anyhow::Result<RemoteConfig> {
    if !layout::valid_system_name(&a.name) {
        refuse!(Refusal::Usage, "{:?} is not a remote name (letters, digits, '-', '_', '.')", output::text(&a.name));
    }
    if cfg.remotes.iter().any(|r| r.name == a.name) {
        refuse!(Refusal::Usage, "a remote named {} is already configured (`crossback remote list`); nothing was changed", a.name);
    }
    remote::Url::parse(&a.url).map_err(|e| refuse(Refusal::Usage, format!("{e:#}")))?;
    if a.lock_days.is_some() && !a.url.starts_with("s3://") {
        refuse!(Refusal::Usage, "--lock-days is S3 Object Lock, for an s3:// remote; {} is not one; nothing was changed", a.url);
    }
    let machine = match a.machine {
        Some(m) => m,
        None => host_name()?,
    };
    Ok(RemoteConfig {
        name: a.name,
        url: a.url,
        endpoint: a.endpoint,
        region: a.region,
        credentials: a.credentials,
        machine,
        key: String::new(),
        limit_upload: a.limit_upload,
        keep: a.keep,
        min_age_days: a.min_age_days,
        lock_days: a.lock_days,
        push: if a.push_after_backup { config::PushWhen::AfterBackup } else { config::PushWhen::Manual },
    })
}

/// `--lock-days`: the bucket must have Object Lock; what it means is said.
fn check_lock(store: &Store, days: u32) -> anyhow::Result<()> {
    if !store.lock_enabled()? {
        refuse!(
            Refusal::Config,
            "remote {}: the bucket has no Object Lock, which S3 turns on only when a bucket is made (`aws s3api create-bucket --object-lock-enabled-for-bucket`, SeaweedFS `s3.bucket.create -withLock`): make one with it, or leave out --lock-days; nothing was changed",
            store.name
        );
    }
    println!(
        "remote {}: every object pushed there is locked for {days} days in compliance mode: nobody can delete it before then, this machine and the store's owner included, and the store bills it for that time",
        store.name
    );
    Ok(())
}

/// The store's record and key files for `machine`, when it has them; a
/// record that does not read, or names another machine, is refused.
pub fn read_record(store: &Store, machine: &str) -> anyhow::Result<Option<(Record, KeyFiles)>> {
    let Some(bytes) = store.get(remote::RECORD, layout::MARKER_CAP)? else { return Ok(None) };
    let text = String::from_utf8(bytes).map_err(|_| refuse(Refusal::RemoteDamaged, format!("remote {}: {} is not text", store.name, remote::RECORD)))?;
    let record: Record =
        toml::from_str(&text).map_err(|e| refuse(Refusal::RemoteDamaged, format!("remote {}: {}: {}", store.name, remote::RECORD, e.message())))?;
    if record.format > layout::FORMAT {
        refuse!(Refusal::NewerFormat, "remote {} was written by a newer crossback (format {}); upgrade crossback", store.name, record.format);
    }
    if record.machine != machine {
        refuse!(
            Refusal::RemoteMismatch,
            "remote {}: the record under {machine}/ names machine {:?}: it was moved or tampered with",
            store.name,
            output::text(&record.machine)
        );
    }
    let files =
        KeyFiles { passphrase: store.get(layout::KEY_BY_PASSPHRASE, layout::KEY_CAP)?, recipients: store.get(layout::KEY_BY_RECIPIENTS, layout::KEY_CAP)? };
    Ok(Some((record, files)))
}

/// Writes the key's wrappings, then the record that names them.
pub fn put_record(store: &Store, machine: &str, enc: &layout::Encryption, files: &KeyFiles) -> anyhow::Result<()> {
    for (name, data) in [(layout::KEY_BY_PASSPHRASE, &files.passphrase), (layout::KEY_BY_RECIPIENTS, &files.recipients)] {
        match data {
            Some(d) => store.put(name, d)?,
            None => store.delete(name)?,
        }
    }
    let record = Record { format: layout::FORMAT, machine: machine.to_string(), encryption: enc.clone() };
    store.put(remote::RECORD, toml::to_string(&record)?.as_bytes())
}

/// A remote opened to read `machine`'s backups (default: this machine's):
/// the store's record checked against the configuration for this
/// machine's own, its key unlocked with what the user gives (`purpose`
/// says what for when a passphrase is asked).
pub fn open_read(
    cfg: &Config,
    name: &str,
    machine: Option<&str>,
    as_of: Option<i64>,
    purpose: &str,
) -> anyhow::Result<(std::sync::Arc<Store>, age::x25519::Identity)> {
    let r = configured(cfg, name)?;
    let mut store = Store::open(r, machine, None)?;
    if let Some(when) = as_of {
        store.as_of(when)?;
        println!("remote {name}: read as it was at {}", output::stamp(when));
    }
    let store = std::sync::Arc::new(store);
    let Some((record, files)) = read_record(&store, store.machine())? else {
        refuse!(
            Refusal::NoBackup,
            "remote {name} holds no backups of machine {} (no {}): `crossback remote list --machines {name}` shows whose it holds",
            store.machine(),
            remote::RECORD
        );
    };
    if machine.is_none() && record.encryption.media_key != r.key {
        refuse!(
            Refusal::RemoteMismatch,
            "remote {name} holds machine {}'s backups under the key {}, but the configuration says {}: another machine uses the name, or the store was tampered with; nothing was read",
            store.machine(),
            record.encryption.media_key,
            r.key
        );
    }
    let key = keys::media_key(&record.encryption, &files, purpose)?;
    Ok((store, key))
}

/// This machine's host name, as a remote's machine name.
fn host_name() -> anyhow::Result<String> {
    let name = rustix::system::uname().nodename().to_string_lossy().split('.').next().unwrap_or("").to_string();
    if !layout::valid_system_name(&name) {
        refuse!(Refusal::Usage, "this machine's host name {:?} is not a plain name: give --machine NAME", output::text(&name));
    }
    Ok(name)
}

/// The configured remote `name`, or a refusal that lists them.
pub fn configured<'a>(cfg: &'a Config, name: &str) -> anyhow::Result<&'a RemoteConfig> {
    cfg.remotes.iter().find(|r| r.name == name).ok_or_else(|| {
        let names: Vec<&str> = cfg.remotes.iter().map(|r| r.name.as_str()).collect();
        refuse(
            Refusal::Usage,
            format!(
                "no remote named {} is configured{}",
                output::text(name),
                if names.is_empty() { " (none is: `crossback remote add`)".to_string() } else { format!(" (there are: {})", names.join(", ")) }
            ),
        )
    })
}

/// Whether an object is in a `percent` sample: random per run, so that
/// runs together read everything.
fn sampled(path: &str, seq: u64, percent: u8) -> bool {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one((path, seq)) % 100 < u64::from(percent)
}
