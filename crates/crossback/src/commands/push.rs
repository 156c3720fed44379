//! `crossback push [REMOTE]`: every sealed generation on the backup disk
//! that a remote does not have yet goes there, object by object, encrypted.
//!
//! The slots are read read-only, under the media's shared lock: a push
//! never holds up a backup's choice of slot, and a backup never waits on
//! the network. On the remote a generation's objects go up first, each
//! whole or not at all, and `objects.toml` grows as they do; its manifest
//! goes last. A push that stops — killed, the network gone, the server
//! restarted — leaves no generation that looks complete, and the next one
//! carries on: an object `objects.toml` lists, at its recorded size, is not
//! sent again.

use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;

use crate::cli::PushArgs;
use crate::config::{Config, PushWhen, RemoteConfig, Sealing};
use crate::error::{refuse, Refusal};
use crate::layout::{self, GenName, Generation, State};
use crate::remote::{self, retention, Object, Objects, Store};
use crate::slots::{self, Slot};
use crate::{machine, output, refuse, Outcome};

use super::remote::{configured, put_record, read_record};

pub fn run(path: &std::path::Path, a: PushArgs) -> anyhow::Result<Outcome> {
    machine::require_root("push")?;
    let cfg = Config::load(path)?;
    let remotes: Vec<&RemoteConfig> = match &a.remote {
        Some(name) => vec![configured(&cfg, name)?],
        None if cfg.remotes.is_empty() => refuse!(Refusal::Usage, "no remote is configured: `crossback remote add NAME URL` adds one"),
        None => cfg.remotes.iter().collect(),
    };
    match push(path, &cfg, &remotes, a.limit_upload) {
        Err(e) if a.if_attached && crate::error::kind_of(&e) == Some(Refusal::SlotMissing) => {
            println!("the backup disk is not attached: nothing to push (--if-attached)");
            Ok(Outcome::Ok)
        }
        other => other,
    }
}

/// After a backup (its locks released): the remotes configured with
/// `push = "after-backup"` get the new generation. A failed push does not
/// make the backup fail: it is said, and kept for `status`.
pub fn after_backup(path: &std::path::Path) {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return eprintln!("warning: the backup is done; no push after it: {e:#}"),
    };
    let remotes: Vec<&RemoteConfig> = cfg.remotes.iter().filter(|r| r.push == PushWhen::AfterBackup).collect();
    if remotes.is_empty() {
        return;
    }
    let names: Vec<&str> = remotes.iter().map(|r| r.name.as_str()).collect();
    println!("pushing to {} (push = \"after-backup\")", names.join(", "));
    if let Err(e) = push(path, &cfg, &remotes, None) {
        eprintln!(
            "warning: the backup is done, the push to {} is not: {e:#}; `crossback push` tries again (`crossback status` shows how each push ended)",
            names.join(", ")
        );
    }
}

fn push(path: &std::path::Path, cfg: &Config, remotes: &[&RemoteConfig], limit_upload: Option<u64>) -> anyhow::Result<Outcome> {
    let Some(media) = cfg.media.as_ref() else {
        refuse!(Refusal::Config, "no backup media in {}: push copies the media's sealed generations (`crossback media prepare` first)", path.display());
    };
    let sealing = media.sealing();
    let view = match slots::open_read_only(path, "push") {
        Ok(v) => v,
        Err(e) => {
            // A backup disk that is not attached is no push, not a failed one.
            if crate::error::kind_of(&e) != Some(Refusal::SlotMissing) {
                remotes.iter().for_each(|r| record(&r.name, Err(&e)));
            }
            return Err(e);
        }
    };
    view.say_damaged();
    // What this system knows the media is, checked against both markers.
    let views: Vec<&layout::SlotView> = view.slots.iter().map(|s| &s.view).collect();
    let media_key = crate::keys::write_to(&sealing, &views)?;
    let sealed = sealed_generations(&view.slots);
    if sealed.is_empty() {
        refuse!(Refusal::NoBackup, "the backup disk holds no complete generation yet: `crossback backup` first; nothing was pushed");
    }
    let mut failed = None;
    for r in remotes {
        let one = remote::SealKey::load(path, &r.name)
            .and_then(|seal| Ok((seal, Store::open(r, None, limit_upload)?)))
            .and_then(|(seal, store)| push_to(&store, &seal, r, &sealing, media_key.as_ref(), &view.slots, &sealed));
        match one {
            Ok(newest) => record(&r.name, Ok(newest)),
            Err(e) => {
                // With several remotes, each one's failure is said as it happens; the first is the exit's.
                if remotes.len() > 1 {
                    eprintln!("error: {e:#}");
                }
                record(&r.name, Err(&e));
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(Outcome::Ok),
    }
}

/// Keeps how a push to `remote` ended, for `status` (a failure to keep it is only said).
fn record(remote: &str, ended: Result<Option<u64>, &anyhow::Error>) {
    let dir = crate::local::Paths::new().state_dir();
    let result = crate::local::PushResult {
        finished: output::now(),
        ok: ended.is_ok(),
        newest: ended.as_ref().ok().copied().flatten(),
        what: match ended {
            Ok(Some(n)) => format!("up to date: generation {n} is the newest there"),
            Ok(None) => "nothing this backup disk holds is there".into(),
            Err(e) => format!("{e:#}"),
        },
    };
    let kept = crate::local::read::<crate::local::Pushes>(&dir, crate::local::PUSHES).map(Option::unwrap_or_default).and_then(|mut p| {
        p.remote.insert(remote.to_string(), result);
        crate::local::write(&dir, crate::local::PUSHES, &p)
    });
    if let Err(e) = kept {
        eprintln!("warning: how the push to {remote} ended is not kept for `crossback status`: {e:#}");
    }
}

/// Every sealed generation on the slots, oldest first, with its slot.
fn sealed_generations(slots: &[Slot]) -> Vec<(&Slot, &Generation)> {
    let mut out: Vec<(&Slot, &Generation)> =
        slots.iter().flat_map(|s| s.view.generations.iter().filter_map(|g| g.valid()).filter(|g| g.state == State::Sealed).map(move |g| (s, g))).collect();
    out.sort_by_key(|(_, g)| g.seq);
    out
}

fn push_to(
    store: &Store,
    seal: &remote::SealKey,
    r: &RemoteConfig,
    sealing: &Sealing,
    media_key: Option<&age::x25519::Recipient>,
    slots: &[Slot],
    sealed: &[(&Slot, &Generation)],
) -> anyhow::Result<Option<u64>> {
    // The remote's key: the configuration's word, checked against the store's record.
    let encrypt_to = match (sealing, media_key) {
        (Sealing::Encrypted(k), Some(_)) if *k != r.key => refuse!(
            Refusal::Config,
            "remote {}: its key {} is not the media's ({k}): the media was encrypted after the remote was added; add the remote again under another name",
            r.name,
            r.key
        ),
        (Sealing::Encrypted(_), Some(_)) => None,
        _ => Some(age::x25519::Recipient::from_str(&r.key).map_err(|e| refuse(Refusal::Config, format!("remote {}: key: {e}", r.name)))?),
    };
    match read_record(store, &r.machine)? {
        Some((record, _)) if record.encryption.media_key != r.key => refuse!(
            Refusal::RemoteMismatch,
            "remote {} holds machine {}'s backups under the key {}, but the configuration says {}: another machine uses the name, or the store was tampered with; nothing was pushed",
            r.name,
            r.machine,
            record.encryption.media_key,
            r.key
        ),
        Some(_) => {}
        None if encrypt_to.is_none() => {
            // An encrypted media's key and its wrappings, from a slot.
            let s = &slots[0].view;
            let enc = s.marker.encryption.as_ref().context("the media is encrypted, its marker says so (checked)")?;
            put_record(store, &r.machine, enc, &s.keys)?;
        }
        None => refuse!(
            Refusal::RemoteDamaged,
            "remote {} has no record of machine {}'s key (crossback-remote.toml), which `remote add` wrote: the store was emptied or the URL changed; `crossback remote remove {}` and add it again; nothing was pushed",
            r.name,
            r.machine,
            r.name
        ),
    }
    let there = remote::generations(store)?;
    let local = sealed.iter().map(|(_, g)| g.seq).collect();
    // With retention, only what it would keep goes up.
    let worth = match r.retention() {
        Some(policy) => Some((policy, retention::worth_pushing(&retention::survey(store, seal)?, policy, &local))),
        None => None,
    };
    let mut pushed = 0;
    // The newest of this disk's generations there (not the store's word on its own).
    let mut newest = None;
    // This disk's generations complete there.
    let mut complete = Vec::new();
    for (slot, g) in sealed {
        if there.get(&g.seq) == Some(&true) {
            println!("remote {}: generation {} is there already", r.name, g.seq);
            newest = newest.max(Some(g.seq));
            complete.push(g.seq);
            continue;
        }
        if let Some((policy, worth)) = &worth {
            if !worth.contains(&g.seq) {
                println!("remote {}: generation {} is not pushed: the remote keeps the newest {} (keep), and it is older", r.name, g.seq, policy.keep);
                continue;
            }
        }
        if g.recorded.iter().any(|s| s.legacy.is_some()) {
            println!("remote {}: generation {} (the old duplicity backups) is not pushed: it is not crossback's format", r.name, g.seq);
            continue;
        }
        push_generation(store, seal, slot, g, encrypt_to.as_ref())?;
        newest = newest.max(Some(g.seq));
        complete.push(g.seq);
        pushed += 1;
    }
    if pushed == 0 {
        println!("remote {}: up to date", r.name);
    }
    if let Some(days) = r.lock_days {
        for seq in complete {
            lock_generation(store, seal, seq, days)?;
        }
    }
    if let Some((policy, worth)) = worth {
        retention::prune(store, seal, policy, &worth)?;
    }
    Ok(newest)
}

/// S3 Object Lock: every object of generation `seq` (checked against its
/// seal), its manifest last, and the machine's record and key files, are
/// locked for `days` days from now — unless the manifest is locked
/// already, which it is only once everything else is.
fn lock_generation(store: &Store, seal: &remote::SealKey, seq: u64, days: u32) -> anyhow::Result<()> {
    let dir = GenName::dir(seq);
    if store.locked_until(&format!("{dir}/{}", layout::MANIFEST))?.is_some() {
        return Ok(());
    }
    let (_, objects) = remote::read_generation(store, seq, Some(seal))?;
    let until = output::now_secs() + i64::from(days) * 86_400;
    // A date earlier than one there would be refused (a lock pass cut short
    // before lock_days was made shorter): what is locked longer stays so.
    let extend = |rel: &str| -> anyhow::Result<()> {
        match store.locked_until(rel)? {
            Some(u) if u >= until => Ok(()),
            _ => store.lock(rel, until),
        }
    };
    for rel in [remote::RECORD, layout::KEY_BY_PASSPHRASE, layout::KEY_BY_RECIPIENTS] {
        if store.size(rel)?.is_some() {
            extend(rel)?;
        }
    }
    let files = objects.list.iter().map(|o| o.path.as_str()).chain([remote::OBJECTS, remote::SEAL, layout::MANIFEST]);
    let mut n = 0;
    for rel in files {
        extend(&format!("{dir}/{rel}"))?;
        n += 1;
    }
    println!("remote {}: generation {seq} locked until {} ({n} objects, S3 Object Lock)", store.name, output::utc(until));
    Ok(())
}

/// What a file of the slot is called on the remote: a plain media's
/// archives and records take the names of encrypted ones.
fn remote_name(file: &str, encrypting: bool) -> String {
    if !encrypting || file.ends_with(".age") {
        return file.to_string();
    }
    match file {
        layout::MOUNTS => layout::MOUNTS_AGE.to_string(),
        f if f.ends_with(".tar.zst") => format!("{f}.age"),
        f => f.to_string(),
    }
}

fn push_generation(store: &Store, seal: &remote::SealKey, slot: &Slot, g: &Generation, encrypt_to: Option<&age::x25519::Recipient>) -> anyhow::Result<()> {
    let dir = GenName::dir(g.seq);
    let started = Instant::now();
    let objects_at = format!("{dir}/{}", remote::OBJECTS);
    // What an earlier push of this generation finished, as the store has it.
    let stored = store.get(&objects_at, layout::MANIFEST_CAP)?.and_then(|b| String::from_utf8(b).ok());
    // One that does not read is written anew: every object is sent again.
    let mut objects: Objects = stored.as_deref().and_then(|t| toml::from_str(t).ok()).unwrap_or_default();
    // objects.toml as the store holds it: sealed as it is, written again only when it changed.
    let mut written = stored.unwrap_or_default();
    let gendir = slot.dir()?.dir(&dir).map_err(|e| refuse(Refusal::SlotHostile, format!("{e}")))?;
    let (mut sent, mut kept) = (0u64, 0u64);
    for s in &g.recorded {
        let sysdir = gendir.dir(&s.name).map_err(|e| refuse(Refusal::SlotHostile, format!("{e}")))?;
        for (name, kind) in sysdir.entries()? {
            let name = name
                .to_str()
                .filter(|n| !n.ends_with(".partial"))
                .with_context(|| refuse(Refusal::SlotHostile, format!("{}/{:?} is not a name crossback writes", sysdir.shown().display(), name)))?;
            if kind != crossback_host::beneath::Kind::File {
                refuse!(Refusal::SlotHostile, "{}/{name} is not a regular file: nothing crossback writes; nothing was pushed of it", sysdir.shown().display());
            }
            let file = sysdir.open_file(name).map_err(|e| refuse(Refusal::SlotHostile, format!("{e}")))?;
            let len = file.metadata()?.len();
            // An archive must be the one the manifest records.
            if let Some(ar) = s.archives.iter().find(|a| a.file == name) {
                if ar.bytes != len {
                    refuse!(
                        Refusal::ArchiveMismatch,
                        "{}/{name} is {len} bytes, generation {} records {}: it is not the archive that was written; run `crossback verify`; nothing more was pushed",
                        sysdir.shown().display(),
                        g.seq,
                        ar.bytes
                    );
                }
            }
            let rel = format!("{}/{}", s.name, remote_name(name, encrypt_to.is_some()));
            let at = format!("{dir}/{rel}");
            if let Some(o) = objects.list.iter().find(|o| o.path == rel) {
                if store.size(&at)? == Some(o.bytes) {
                    kept += o.bytes;
                    continue;
                }
            }
            let progress = std::sync::Arc::new(crossback_archive::create::Progress::default());
            let bar = output::Bar::start(std::sync::Arc::clone(&progress), len, "pushing");
            let mut src = std::io::BufReader::with_capacity(1 << 20, file);
            let o = store.upload(&at, &mut src, encrypt_to, &|n| progress.bytes_in.store(n, std::sync::atomic::Ordering::Relaxed));
            bar.finish();
            let o = o?;
            sent += o.bytes;
            objects.list.retain(|x| x.path != rel);
            objects.list.push(Object { path: rel, ..o });
            written = toml::to_string(&objects)?;
            store.put(&objects_at, written.as_bytes())?;
        }
    }
    // The configuration the backup disk carries, encrypted and sealed with
    // the generation: a new machine takes it from there (`init --remote`).
    let carried = match (&slot.view.config_age, &slot.view.config) {
        (Some(sealed), _) if encrypt_to.is_none() => Some(sealed.clone()),
        (_, Some(text)) if encrypt_to.is_some() => Some(text.clone().into_bytes()),
        _ => None,
    };
    if let Some(bytes) = carried.filter(|_| !objects.list.iter().any(|o| o.path == layout::CONFIG_AGE)) {
        let o = store.upload(&format!("{dir}/{}", layout::CONFIG_AGE), &mut bytes.as_slice(), encrypt_to, &|_| {})?;
        sent += o.bytes;
        objects.list.push(Object { path: layout::CONFIG_AGE.to_string(), ..o });
    }
    // The manifest, last: as the store holds the archives (a plain media's
    // renamed), after the seal of it and of the objects' list as stored.
    let mut manifest = g.clone();
    for s in &mut manifest.recorded {
        for a in &mut s.archives {
            a.file = remote_name(&a.file, encrypt_to.is_some());
        }
    }
    let (manifest, list) = (toml::to_string(&manifest)?, toml::to_string(&objects)?);
    if list != written {
        store.put(&objects_at, list.as_bytes())?;
    }
    store.put(&format!("{dir}/{}", remote::SEAL), format!("{}\n", seal.seal(store.machine(), g.seq, manifest.as_bytes(), list.as_bytes())).as_bytes())?;
    store.put(&format!("{dir}/{}", layout::MANIFEST), manifest.as_bytes())?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "remote {}: generation {} pushed ({} systems): {} sent in {secs:.1} s ({}/s){}",
        store.name,
        g.seq,
        g.recorded.len(),
        output::bytes(sent),
        output::bytes((sent as f64 / secs.max(0.001)) as u64),
        if kept > 0 { format!(", {} were there from an earlier push", output::bytes(kept)) } else { String::new() }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_media_s_files_take_encrypted_names() {
        assert_eq!(remote_name("root.tar.zst", true), "root.tar.zst.age");
        assert_eq!(remote_name("root.tar.zst.age", true), "root.tar.zst.age");
        assert_eq!(remote_name("mounts.toml", true), "mounts.toml.age");
        assert_eq!(remote_name("root.tar.zst", false), "root.tar.zst");
        assert_eq!(remote_name("luks-0a1b.header", true), "luks-0a1b.header");
    }
}
