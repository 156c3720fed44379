//! `crossback remote add`: a store checked, its record made or matched, then configured.

use anyhow::Context;

use super::{check_lock, new_remote, put_record, read_record};
use crate::cli::RemoteAddArgs;
use crate::config::{self, Config, Sealing};
use crate::error::{refuse, Refusal};
use crate::remote::{self, Store};
use crate::{keys, refuse, Outcome};

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
