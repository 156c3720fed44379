//! `crossback media encrypt`, `media trust`, `media add-key` and
//! `remove-key`: what the media is encrypted to, and who can open it.

use std::path::Path;

use anyhow::{bail, Context};

use crate::config::{self, Config, Media, Sealing};
use crate::error::Refusal;
use crate::keys;
use crate::layout::{self, SlotWriter};
use crate::{refuse, Outcome};

use super::{both, both_writable, new_encryption, Writable};

/// Writes the key files, then the marker, on both slots; unmounts.
fn write_keys(w: Writable, enc: Option<&layout::Encryption>, files: &layout::KeyFiles) -> anyhow::Result<()> {
    for s in &w.slots {
        let mut marker = s.view.marker.clone();
        marker.encryption = enc.cloned();
        SlotWriter::new(&s.root, None)?.put_keys(files, &marker)?;
    }
    let Writable { slots, mut mounted, .. } = w;
    drop(slots);
    let busy = mounted.unmount();
    if !busy.is_empty() {
        bail!("could not unmount the slots: {busy:?}");
    }
    Ok(())
}

/// `crossback media encrypt`: from now on what is written is encrypted.
pub fn encrypt(path: &Path, a: crate::cli::EncryptArgs) -> anyhow::Result<Outcome> {
    let w = both_writable(path, "media encrypt")?;
    if w.slots.iter().any(|s| s.view.marker.encryption.is_some()) {
        refuse!(Refusal::Usage, "the media is encrypted already: `crossback media add-key` / `remove-key` change who can unlock it");
    }
    let (enc, files) = new_encryption(&a.recipient)?;
    write_keys(w, Some(&enc), &files)?;
    let cfg = Config::load(path)?;
    if let Some(m) = cfg.media {
        config::set_media(path, &Media::with_sealing(m.id.get_ref(), m.slot_a.get_ref(), m.slot_b.get_ref(), &Sealing::Encrypted(enc.media_key.clone())))?;
    }
    println!("the media is encrypted from now on (media key {}); generations written before stay as they are until rotation replaces them", enc.media_key);
    Ok(Outcome::Ok)
}

/// `crossback media trust`: this system's configuration learns what the
/// media is — its key through the passphrase (or the key itself, or its
/// public half typed), or `--plain` — never from the markers alone.
pub fn trust(path: &Path, a: crate::cli::TrustArgs) -> anyhow::Result<Outcome> {
    let w = both(path, "media trust", false)?;
    let views: Vec<&layout::SlotView> = w.slots.iter().map(|s| &s.view).collect();
    let sealing = if a.plain {
        if let Some(v) = views.iter().find(|v| v.marker.encryption.is_some()) {
            refuse!(
                Refusal::SlotHostile,
                "slot {}'s marker says the media is encrypted: `crossback media trust` without --plain learns its key with the passphrase; nothing was recorded",
                v.marker.slot
            );
        }
        Sealing::Plain
    } else {
        Sealing::Encrypted(keys::learn(&views, a.media_key.as_deref())?)
    };
    let Writable { slots, mut mounted, .. } = w;
    drop(slots);
    mounted.unmount();
    let cfg = Config::load(path)?;
    let m = cfg.media.context("the media left the configuration while crossback read it")?;
    let before = m.sealing();
    if let (Sealing::Encrypted(k), Sealing::Plain) = (&before, &sealing) {
        refuse!(
            Refusal::SlotHostile,
            "this system's configuration knows the media as encrypted (media key {k}), and markers that say otherwise do not make it plain: the markers were changed, or this is another disk; nothing was recorded"
        );
    }
    if before != Sealing::Unknown && before != sealing {
        println!("note: the configuration said {}; it now says {}", describe(&before), describe(&sealing));
    }
    config::set_media(path, &Media::with_sealing(m.id.get_ref(), m.slot_a.get_ref(), m.slot_b.get_ref(), &sealing))?;
    println!("recorded in {}: the media is {}", path.display(), describe(&sealing));
    Ok(Outcome::Ok)
}

fn describe(s: &Sealing) -> String {
    match s {
        Sealing::Encrypted(k) => format!("encrypted (media key {k})"),
        Sealing::Plain => "not encrypted".to_string(),
        Sealing::Unknown => "not known".to_string(),
    }
}

/// `crossback media add-key` / `remove-key`: the media key wrapped again,
/// for other recipients or another passphrase; the archives stay as they are.
pub fn change_keys(path: &Path, a: crate::cli::KeyArgs, add: bool) -> anyhow::Result<Outcome> {
    if a.recipient.is_empty() && !a.passphrase {
        refuse!(Refusal::Usage, "say which key: --recipient AGE1… and/or --passphrase");
    }
    let w = both_writable(path, if add { "media add-key" } else { "media remove-key" })?;
    let first = &w.slots[0].view;
    let Some(enc) = first.marker.encryption.clone() else {
        refuse!(Refusal::Usage, "the media is not encrypted: `crossback media encrypt` encrypts it");
    };
    let key = keys::media_key(&enc, &first.keys, "changing who can unlock the media")?;
    let mut recipients = enc.recipients.clone();
    let given: Vec<String> = keys::parse_recipients(&a.recipient)?.iter().map(|r| r.to_string()).collect();
    for r in &given {
        match (add, recipients.contains(r)) {
            (true, false) => recipients.push(r.clone()),
            (false, true) => recipients.retain(|x| x != r),
            (true, true) => println!("{r} unlocks the media already"),
            (false, false) => refuse!(Refusal::Usage, "{r} is not one of the media's recipients ({}); nothing was changed", enc.recipients.join(", ")),
        }
    }
    let new_pass = if add && a.passphrase { Some(keys::passphrase_from(a.new_passphrase_file.clone(), "the media (new)", true)?) } else { None };
    let keep_pass = enc.passphrase && !a.passphrase;
    if !add && a.passphrase && !enc.passphrase {
        refuse!(Refusal::Usage, "the media has no passphrase to remove; nothing was changed");
    }
    let by_passphrase = match new_pass {
        Some(p) => Some(keys::wrap_by_passphrase(&key, &p)?),
        // Kept as it is, not made again: the passphrase is not asked for.
        None if keep_pass => first.keys.passphrase.clone(),
        None => None,
    };
    let files = layout::KeyFiles { passphrase: by_passphrase, recipients: keys::wrap_for(&key, &keys::parse_recipients(&recipients)?)? };
    keys::check_unlockable(&files)?;
    let enc = layout::Encryption { media_key: enc.media_key.clone(), passphrase: files.passphrase.is_some(), recipients };
    write_keys(w, Some(&enc), &files)?;
    println!(
        "the media unlocks with {}{}",
        if enc.passphrase { "its passphrase" } else { "no passphrase" },
        if enc.recipients.is_empty() { String::new() } else { format!(" and {}", enc.recipients.join(", ")) }
    );
    Ok(Outcome::Ok)
}
