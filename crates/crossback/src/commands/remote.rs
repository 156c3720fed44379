//! `crossback remote add|list|remove|verify`: the off-site stores.

use std::collections::BTreeMap;

use anyhow::Context;

use crate::cli::{RemoteAddArgs, RemoteListArgs, RemoteVerifyArgs};
use crate::config::{self, Config, RemoteConfig, Sealing};
use crate::error::{refuse, Refusal};
use crate::layout::{self, GenName, KeyFiles};
use crate::remote::{self, Record, Store};
use crate::{keys, output, refuse, Outcome};

pub fn add(path: &std::path::Path, mut a: RemoteAddArgs) -> anyhow::Result<Outcome> {
    // A new machine has no configuration yet: it adds the remote that holds
    // its backups, then takes the configuration from there (`init --remote`).
    let cfg = if path.exists() { Config::load(path)? } else { Config::default() };
    let recipients = std::mem::take(&mut a.recipient);
    let mut r = new_remote(&cfg, a)?;
    let store = Store::open(&r, None, None)?;
    if let Some(days) = r.lock_days {
        check_lock(&store, days)?;
    }
    let found = read_record(&store, &r.machine)?;
    // The secret key the copies are encrypted to, unlocked once here: the
    // seal key is derived from it (push holds no secret).
    let sealing = cfg.media.as_ref().map(|m| m.sealing());
    let (key, seal) = match (sealing, found) {
        (None, None) => refuse!(
            Refusal::NoBackup,
            "no backup media in {} and remote {} holds no backups of machine {}: on a new machine, add the remote that holds them (--machine names whose); else run `crossback media prepare` first; nothing was changed",
            path.display(),
            r.name,
            r.machine
        ),
        (Some(Sealing::Unknown), _) => refuse!(
            Refusal::Config,
            "this system's configuration does not say whether the backup media is encrypted: run `crossback media trust` first; nothing was changed"
        ),
        // The store already holds this machine's backups: its key is taken
        // only when what unlocks it here opens it (a store, like a disk,
        // is not believed on its word).
        (sealing, Some((record, files))) => {
            let key = keys::media_key(&record.encryption, &files, &format!("the backups of {} on remote {}", r.machine, r.name))?;
            if let Some(Sealing::Encrypted(k)) = &sealing {
                if *k != record.encryption.media_key {
                    refuse!(
                        Refusal::RemoteMismatch,
                        "remote {} already holds backups of machine {} under another key ({}) than this media's ({k}): give another --machine; nothing was changed",
                        r.name,
                        r.machine,
                        record.encryption.media_key
                    );
                }
            }
            println!("remote {} already holds backups of machine {}: they are unlocked by what you gave, and pushes carry on there", r.name, r.machine);
            (key.to_public().to_string(), remote::SealKey::of(&key))
        }
        // An encrypted media's copies are its own archives: the key and its
        // wrappings go up from the slots with the first push.
        (Some(Sealing::Encrypted(k)), None) => {
            let view = crate::slots::open_read_only(path, "remote-add")?;
            let s = &view.slots.first().context("a prepared media has slots")?.view;
            let enc = s
                .marker
                .encryption
                .as_ref()
                .with_context(|| refuse(Refusal::SlotDamaged, "the media is encrypted, but its slot's marker says nothing of it"))?;
            if enc.media_key != k {
                refuse!(
                    Refusal::SlotDamaged,
                    "the slot's marker names the media key {}, this system knows {k}: not this system's media; nothing was changed",
                    enc.media_key
                );
            }
            let key = keys::media_key(enc, &s.keys, &format!("sealing the copies on remote {}", r.name))?;
            (k, remote::SealKey::of(&key))
        }
        (Some(Sealing::Plain), None) => {
            let recipients = keys::parse_recipients(&recipients)?;
            let passphrase = if recipients.is_empty() || keys::passphrase_given() {
                Some(keys::passphrase(&format!("the copies on remote {} (a new passphrase)", r.name), true)?)
            } else {
                None
            };
            let (enc, files, key) = keys::new_media(passphrase.as_ref(), &recipients)?;
            put_record(&store, &r.machine, &enc, &files)?;
            (enc.media_key, remote::SealKey::of(&key))
        }
    };
    r.key = key;
    seal.save(path, &r.name)?;
    config::add_remote(path, &r)?;
    println!(
        "added remote {}: {} (machine {}); everything pushed there is encrypted to {}. `crossback push {}` copies the sealed generations",
        r.name, r.url, r.machine, r.key, r.name
    );
    Ok(Outcome::Ok)
}

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

pub fn list(path: &std::path::Path, a: RemoteListArgs) -> anyhow::Result<Outcome> {
    let cfg = Config::load(path)?;
    if let Some(name) = &a.machines {
        let store = Store::open(configured(&cfg, name)?, None, None)?;
        for m in store.machines()? {
            if a.json {
                println!("{}", serde_json::json!({ "remote": name, "machine": m }));
            } else {
                println!("{m}");
            }
        }
        return Ok(Outcome::Ok);
    }
    if cfg.remotes.is_empty() && !a.json {
        println!("no remote is configured: `crossback remote add NAME URL` adds one");
    }
    for r in &cfg.remotes {
        if a.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            let creds = r.credentials.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "from the environment".into());
            let endpoint = r.endpoint.as_ref().map(|e| format!(" at {e}")).unwrap_or_default();
            let keep = match r.retention() {
                Some(p) => format!(", keeps the newest {} generations (none deleted before {} days)", p.keep, p.min_age_days),
                None => ", keeps every generation".into(),
            };
            let keep = if r.push == config::PushWhen::AfterBackup { format!("{keep}, pushed after every backup") } else { keep };
            let keep = match r.lock_days {
                Some(d) => format!("{keep}, each object locked for {d} days (S3 Object Lock)"),
                None => keep,
            };
            println!("{}: {}{endpoint}, machine {}, credentials {creds}, encrypted to {}{keep}", r.name, r.url, r.machine, r.key);
        }
    }
    Ok(Outcome::Ok)
}

pub fn remove(path: &std::path::Path, name: &str) -> anyhow::Result<Outcome> {
    config::remove_remote(path, name)?;
    crate::local::remove(&remote::SealKey::path(path, name))?;
    println!("removed remote {name} from the configuration; what it holds is still there (delete it in the store if you want it gone)");
    Ok(Outcome::Ok)
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

pub fn verify(path: &std::path::Path, a: RemoteVerifyArgs) -> anyhow::Result<Outcome> {
    let cfg = Config::load(path)?;
    let r = configured(&cfg, &a.name)?;
    let store = Store::open(r, a.machine.as_deref(), None)?;
    // This machine's generations are checked against its seal; another's
    // are sealed by a key only their key's holder derives.
    let seal = match a.machine.as_deref() {
        Some(m) if m != r.machine => {
            println!(
                "note: machine {m}'s seals are not checked here (its key makes them): `crossback restore … --remote {} --machine {m}` checks them",
                r.name
            );
            None
        }
        _ => Some(remote::SealKey::load(path, &r.name)?),
    };
    let started = std::time::Instant::now();
    let (mut checked, mut bytes, mut damaged) = (0u64, 0u64, Vec::new());
    let gens = remote::generations(&store)?;
    if gens.is_empty() {
        refuse!(
            Refusal::NoBackup,
            "remote {} holds no generation of machine {} yet: `crossback push {}` copies them",
            r.name,
            a.machine.as_deref().unwrap_or(&r.machine),
            r.name
        );
    }
    for (&seq, &complete) in &gens {
        if !complete {
            println!("generation {seq}: incomplete (a push did not finish; the next one carries on)");
            continue;
        }
        let (g, objects) = match remote::read_generation(&store, seq, seal.as_ref()) {
            Ok(x) => x,
            Err(e) => {
                damaged.push(format!("generation {seq}: {e:#}"));
                continue;
            }
        };
        let listed: BTreeMap<&str, &remote::Object> = objects.list.iter().map(|o| (o.path.as_str(), o)).collect();
        // Every archive the manifest names must have gone up.
        for s in &g.recorded {
            for ar in &s.archives {
                let rel = format!("{}/{}", s.name, ar.file);
                if !listed.contains_key(rel.as_str()) {
                    damaged.push(format!("generation {seq}: {rel} is in the manifest but was never uploaded"));
                }
            }
        }
        let mut gen_damaged = 0;
        for o in &objects.list {
            if a.sample.is_some_and(|p| !sampled(&o.path, seq, p)) {
                continue;
            }
            let rel = format!("{}/{}", GenName::dir(seq), o.path);
            let problem = match store.size(&rel)? {
                None => Some("missing".to_string()),
                Some(n) if n != o.bytes => Some(format!("{n} bytes, {} were uploaded", o.bytes)),
                Some(n) => match store.hash(&rel, n)? {
                    (_, h) if h != o.blake3 => Some("its bytes differ from what was uploaded (BLAKE3)".to_string()),
                    _ => None,
                },
            };
            checked += 1;
            bytes += o.bytes;
            if let Some(p) = problem {
                gen_damaged += 1;
                damaged.push(format!("generation {seq}: {rel}: {p}"));
            }
        }
        println!(
            "generation {seq}: {} objects{}",
            objects.list.len(),
            if gen_damaged == 0 { ", all as uploaded".to_string() } else { format!(", {gen_damaged} damaged") }
        );
    }
    for d in &damaged {
        println!("damaged: {d}");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "remote {}: {checked} objects read back ({}) in {secs:.1} s; {} damaged{}",
        r.name,
        output::bytes(bytes),
        damaged.len(),
        a.sample.map(|p| format!(" (a {p} % sample)")).unwrap_or_default()
    );
    Ok(if damaged.is_empty() { Outcome::Ok } else { Outcome::Damaged })
}

/// Whether an object is in a `percent` sample: random per run, so that
/// runs together read everything.
fn sampled(path: &str, seq: u64, percent: u8) -> bool {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one((path, seq)) % 100 < u64::from(percent)
}
