//! The keys of an encrypted media.
//!
//! One **media key** (an age X25519 key pair) per media. Everything crossback
//! writes with a system's data or names in it is encrypted to its public
//! half, which the slot's marker holds: writing a backup needs no secret
//! (unattended backups). The secret half is kept on each slot only wrapped:
//! by the user's passphrase (`media-key.passphrase.age`, scrypt) and/or for
//! the user's own age recipients (`media-key.recipients.age`). Reading —
//! `ls`, `restore`, `verify`, `init` from the media — unwraps it with the
//! passphrase or the user's identity. Adding or removing a way to unlock
//! rewrites those two small files, never the archives.
//!
//! Nothing secret is written anywhere: the passphrase comes from the
//! terminal (no echo), `--passphrase-file` or `$CROSSBACK_PASSPHRASE_FILE`;
//! the unwrapped key lives in this process's memory only.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use age::secrecy::{ExposeSecret, SecretString};
use crossback_archive::crypt::{self, Keys};

use crate::config::Sealing;
use crate::error::{refuse, Refusal};
use crate::layout::{Encryption, KeyFiles, SlotView};

/// How the user unlocks, from the command line.
#[derive(Clone, Debug, Default)]
pub struct Unlock {
    pub identity: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
}

static UNLOCK: OnceLock<Unlock> = OnceLock::new();
/// The unwrapped media key, by its public half: asked for once per run.
static UNLOCKED: Mutex<Option<(String, age::x25519::Identity)>> = Mutex::new(None);

/// Called once by `main` with the global options.
pub fn set_unlock(u: Unlock) {
    let _ = UNLOCK.set(u);
}

fn unlock_options() -> Unlock {
    UNLOCK.get().cloned().unwrap_or_default()
}

/// `--identity`, as given.
pub fn identity_file() -> Option<PathBuf> {
    unlock_options().identity
}

/// The scrypt work factor of a new passphrase wrapping: 18, the age
/// tool's (256 MiB, about a second here), unless
/// `$CROSSBACK_SCRYPT_WORK_FACTOR` says less (tests; the lab's emulated PC
/// takes minutes for 18). A fixed one, not age's own measure of this
/// machine, so that a reader can tell a crafted wrapping by its factor.
fn work_factor() -> u8 {
    std::env::var("CROSSBACK_SCRYPT_WORK_FACTOR").ok().and_then(|v| v.parse().ok()).filter(|n| (10..=WORK_FACTOR).contains(n)).unwrap_or(WORK_FACTOR)
}

const WORK_FACTOR: u8 = 18;
/// The highest factor read: 18 is what crossback writes; earlier versions
/// let age choose by the machine's speed, 19 or 20 on a fast one (1 GiB).
const MAX_WORK_FACTOR: u8 = 20;

/// The scrypt work factor a passphrase wrapping asks for, read from its
/// header (`-> scrypt SALT N`) before anything is computed; a wrapping
/// that is not one passphrase stanza is damage.
fn scrypt_factor(wrapped: &[u8]) -> Option<u8> {
    let head = &wrapped[..wrapped.len().min(512)];
    let mut lines = head.split(|b| *b == b'\n');
    if lines.next()? != b"age-encryption.org/v1" {
        return None;
    }
    let stanza = std::str::from_utf8(lines.next()?).ok()?;
    match stanza.split(' ').collect::<Vec<_>>().as_slice() {
        ["->", "scrypt", _salt, n] if n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0') => n.parse().ok(),
        _ => None,
    }
}

/// The passphrase file given, if any: `--passphrase-file`, else `$CROSSBACK_PASSPHRASE_FILE`.
pub fn passphrase_file() -> Option<PathBuf> {
    unlock_options().passphrase_file.or_else(|| std::env::var_os("CROSSBACK_PASSPHRASE_FILE").map(PathBuf::from))
}

/// True when a passphrase was given other than by typing it.
pub fn passphrase_given() -> bool {
    passphrase_file().is_some()
}

/// The passphrase: from the passphrase file given (its first line), else
/// typed on the terminal without echo (twice when `confirm`).
pub fn passphrase(why: &str, confirm: bool) -> anyhow::Result<SecretString> {
    passphrase_from(passphrase_file(), why, confirm)
}

/// As [`passphrase`], from `file` if given.
pub fn passphrase_from(file: Option<PathBuf>, why: &str, confirm: bool) -> anyhow::Result<SecretString> {
    if let Some(p) = file {
        let text = user_file(&p, "the passphrase file")?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            crate::refuse!(Refusal::Key, "the passphrase file {} is empty", p.display());
        }
        return Ok(SecretString::from(line));
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        crate::refuse!(
            Refusal::Key,
            "{why} needs the media's passphrase, and there is no terminal to ask on: give --passphrase-file FILE (or $CROSSBACK_PASSPHRASE_FILE), or --identity FILE"
        );
    }
    let first = rpassword::prompt_password(format!("Passphrase for {why}: "))?;
    if first.is_empty() {
        crate::refuse!(Refusal::Key, "an empty passphrase: nothing was done");
    }
    if confirm && rpassword::prompt_password("The same passphrase again: ")? != first {
        crate::refuse!(Refusal::Key, "the two passphrases differ: nothing was done");
    }
    Ok(SecretString::from(first))
}

/// The keys in `--identity FILE`, for a single encrypted archive.
pub fn identity_keys() -> anyhow::Result<Option<Keys>> {
    let Some(path) = unlock_options().identity else { return Ok(None) };
    let text = user_file(&path, "the identity file")?;
    Ok(Some(Keys::parse(&text).map_err(|e| refuse(Refusal::Key, format!("{}: {e}", path.display())))?))
}

/// The largest passphrase or identity file read: both are a few lines.
const USER_FILE_CAP: u64 = 64 << 10;

/// A passphrase or identity file the user gave: a regular file of at most
/// [`USER_FILE_CAP`] bytes of text, opened without blocking (a FIFO or a
/// device given by mistake is refused, not waited on).
fn user_file(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |why: String| refuse(Refusal::Key, format!("{what} {}: {why}", path.display()));
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
    let meta = f.metadata().map_err(|e| bad(format!("cannot be read ({e})")))?;
    if !meta.is_file() || meta.len() > USER_FILE_CAP {
        return Err(bad(format!("not a regular file of at most {} KiB", USER_FILE_CAP >> 10)));
    }
    let mut bytes = Vec::new();
    f.take(USER_FILE_CAP).read_to_end(&mut bytes).map_err(|e| bad(format!("cannot be read ({e})")))?;
    String::from_utf8(bytes).map_err(|_| bad("not text".to_string()))
}

/// X25519 recipients as age prints them (`age1…`).
pub fn parse_recipients(list: &[String]) -> anyhow::Result<Vec<age::x25519::Recipient>> {
    list.iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim())
                .map_err(|e| refuse(Refusal::Usage, format!("{r:?} is not an age X25519 recipient (age1…, as `age-keygen -y` prints it): {e}")))
        })
        .collect()
}

/// A new media key: its public facts and its secret, wrapped.
pub fn new_media(passphrase: Option<&SecretString>, recipients: &[age::x25519::Recipient]) -> anyhow::Result<(Encryption, KeyFiles, age::x25519::Identity)> {
    let key = age::x25519::Identity::generate();
    let enc =
        Encryption { media_key: key.to_public().to_string(), passphrase: passphrase.is_some(), recipients: recipients.iter().map(|r| r.to_string()).collect() };
    let files = wrap(&key, passphrase, recipients)?;
    Ok((enc, files, key))
}

/// The media key wrapped by the passphrase and for the recipients. Refuses
/// to leave no way to unlock.
pub fn wrap(key: &age::x25519::Identity, passphrase: Option<&SecretString>, recipients: &[age::x25519::Recipient]) -> anyhow::Result<KeyFiles> {
    let files = KeyFiles { passphrase: passphrase.map(|p| wrap_by_passphrase(key, p)).transpose()?, recipients: wrap_for(key, recipients)? };
    check_unlockable(&files)?;
    Ok(files)
}

/// At least one way to unlock must stay.
pub fn check_unlockable(files: &KeyFiles) -> anyhow::Result<()> {
    if files.passphrase.is_none() && files.recipients.is_none() {
        crate::refuse!(Refusal::Usage, "that would leave no way to unlock the media: keep a passphrase or at least one recipient; nothing was changed");
    }
    Ok(())
}

fn key_text(key: &age::x25519::Identity) -> String {
    format!("# crossback media key: `age -d -i` this file opens the media's archives\n{}\n", key.to_string().expose_secret())
}

/// The media key as a passphrase-only age file (scrypt).
pub fn wrap_by_passphrase(key: &age::x25519::Identity, p: &SecretString) -> anyhow::Result<Vec<u8>> {
    let mut r = age::scrypt::Recipient::new(p.clone());
    r.set_work_factor(work_factor());
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))?;
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out)?;
    std::io::Write::write_all(&mut w, key_text(key).as_bytes())?;
    w.finish()?;
    Ok(out)
}

/// The media key encrypted to the users' recipients (`None`: there are none).
pub fn wrap_for(key: &age::x25519::Identity, recipients: &[age::x25519::Recipient]) -> anyhow::Result<Option<Vec<u8>>> {
    if recipients.is_empty() {
        return Ok(None);
    }
    Ok(Some(crypt::encrypt_bytes(key_text(key).as_bytes(), recipients)?))
}

/// What a write to the media is encrypted to: what this system's
/// configuration says the media is, which every slot's marker must say
/// too. A marker is on the disk, so it is whoever's can write there: it
/// never decides, it can only disagree, and a disagreement is a refusal.
pub fn write_to(sealing: &Sealing, views: &[&SlotView]) -> anyhow::Result<Option<age::x25519::Recipient>> {
    let said = views.iter().map(|v| (v.marker.slot, v.marker.encryption.as_ref().map(|e| e.media_key.as_str())));
    match sealing {
        Sealing::Encrypted(key) => {
            for (slot, k) in said {
                match k {
                    Some(k) if k == key => {}
                    Some(k) => crate::refuse!(
                        Refusal::SlotHostile,
                        "slot {slot}'s marker names the media key {k}, but this system's configuration names {key}: the marker was changed, or this is not your media; nothing was written"
                    ),
                    None => crate::refuse!(
                        Refusal::SlotHostile,
                        "slot {slot}'s marker says the media is not encrypted, but this system's configuration says it is (media key {key}): the marker was changed, or this is another disk given your slots' UUIDs; nothing was written"
                    ),
                }
            }
            let r = age::x25519::Recipient::from_str(key).map_err(|e| refuse(Refusal::Config, format!("the media key in the configuration does not read: {e}")))?;
            Ok(Some(r))
        }
        Sealing::Plain => {
            if let Some((slot, Some(k))) = said.into_iter().find(|(_, k)| k.is_some()) {
                crate::refuse!(
                    Refusal::SlotHostile,
                    "slot {slot}'s marker says the media is encrypted (media key {k}), but this system's configuration says it is not: if you encrypted it from another system, `crossback media trust` learns its key here with the passphrase; nothing was written"
                );
            }
            Ok(None)
        }
        Sealing::Unknown => crate::refuse!(
            Refusal::Config,
            "this system's configuration does not say whether the backup media is encrypted (an older crossback wrote it), and the disk's own word is not taken for it: run `crossback media trust` (it asks the passphrase of an encrypted media; `--plain` for one that is not); nothing was written"
        ),
    }
}

/// The media key of an encrypted media, learned by a configuration that
/// does not know it yet: only through what an attacker with the disk
/// cannot forge — the passphrase (its scrypt wrapping authenticates), the
/// media key itself as `--identity`, or its public half typed by the user
/// (`known`, from another system's configuration). A recipient's key does
/// not do: anyone can encrypt a planted key to a public key.
pub fn learn(views: &[&SlotView], known: Option<&str>) -> anyhow::Result<String> {
    let mut named = views.iter().filter_map(|v| v.marker.encryption.as_ref().map(|e| (*v, e)));
    let Some((view, enc)) = named.next() else {
        crate::refuse!(Refusal::Usage, "neither slot's marker says the media is encrypted: if it is not, `crossback media trust --plain` records that");
    };
    if let Some((_, other)) = named.next().filter(|(_, o)| o.media_key != enc.media_key) {
        crate::refuse!(
            Refusal::SlotHostile,
            "the two slots' markers name different media keys ({}, {}): one was changed; nothing was recorded",
            enc.media_key,
            other.media_key
        );
    }
    if let Some(k) = known {
        if k.trim() != enc.media_key {
            crate::refuse!(
                Refusal::SlotHostile,
                "the media's markers name the media key {}, not {}: this is not the media you named; nothing was recorded",
                enc.media_key,
                k.trim()
            );
        }
        return Ok(enc.media_key.clone());
    }
    let key = match unlock_options().identity {
        Some(path) => {
            own_keys(&path)?.into_iter().find(|k| k.to_public().to_string() == enc.media_key).ok_or_else(|| {
                refuse(
                    Refusal::Key,
                    format!(
                        "the key in {} is not this media's key: a recipient's key cannot prove which key the media has (anyone can encrypt to it); use the passphrase, or --media-key with the key another system's configuration names",
                        path.display()
                    ),
                )
            })?
        }
        None => by_passphrase(enc, &view.keys, "learning the media's key")?,
    };
    if key.to_public().to_string() != enc.media_key {
        crate::refuse!(
            Refusal::SlotDamaged,
            "the media key kept on the slot is not the one its marker names: the slot was tampered with; nothing was recorded"
        );
    }
    Ok(enc.media_key.clone())
}

/// The keys that read this slot's encrypted files; `None` for a plain media.
pub fn for_slot(view: &SlotView, why: &str) -> anyhow::Result<Option<Keys>> {
    let Some(enc) = &view.marker.encryption else { return Ok(None) };
    let key = media_key(enc, &view.keys, why)?;
    Ok(Some(Keys::new(vec![Box::new(key)])))
}

/// The media key, unwrapped once per run with what the user gave: an
/// identity (the media key itself, or one of the recipients'), else the
/// passphrase.
pub fn media_key(enc: &Encryption, files: &KeyFiles, why: &str) -> anyhow::Result<age::x25519::Identity> {
    if let Some((public, key)) = UNLOCKED.lock().ok().and_then(|g| g.clone()) {
        if public == enc.media_key {
            return Ok(key);
        }
    }
    let key = match unlock_options().identity {
        Some(path) => by_identity(enc, files, &path)?,
        None => by_passphrase(enc, files, why)?,
    };
    if key.to_public().to_string() != enc.media_key {
        crate::refuse!(Refusal::SlotDamaged, "the media key kept on the slot is not the one its marker names: the slot was tampered with");
    }
    if let Ok(mut g) = UNLOCKED.lock() {
        *g = Some((enc.media_key.clone(), key.clone()));
    }
    Ok(key)
}

/// The age X25519 secret keys in an identity file the user gave: at least one.
fn own_keys(path: &std::path::Path) -> anyhow::Result<Vec<age::x25519::Identity>> {
    let mine = x25519_keys(&user_file(path, "the identity file")?);
    if mine.is_empty() {
        crate::refuse!(Refusal::Key, "{} holds no age X25519 secret key (AGE-SECRET-KEY-1…)", path.display());
    }
    Ok(mine)
}

fn by_identity(enc: &Encryption, files: &KeyFiles, path: &std::path::Path) -> anyhow::Result<age::x25519::Identity> {
    let mine = own_keys(path)?;
    if let Some(k) = mine.iter().find(|k| k.to_public().to_string() == enc.media_key) {
        return Ok(k.clone());
    }
    let Some(wrapped) = &files.recipients else {
        crate::refuse!(
            Refusal::Key,
            "the key in {} does not open this media: it is not the media key, and the media is kept for no recipient (unlock it with its passphrase)",
            path.display()
        );
    };
    let keys = Keys::new(mine.into_iter().map(|k| Box::new(k) as Box<dyn age::Identity + Send + Sync>).collect());
    unwrap_key(&keys, wrapped, format!("the key in {} does not open this media: it is none of its recipients", path.display()))
}

/// Whether `p` opens the media key `view`'s slot keeps: a `key` refusal
/// when it does not.
pub fn passphrase_opens(view: &SlotView, p: &SecretString) -> anyhow::Result<()> {
    let Some(enc) = &view.marker.encryption else { return Ok(()) };
    let key = by_passphrase_with(enc, &view.keys, "the backup media", || Ok(p.clone()))?;
    if key.to_public().to_string() != enc.media_key {
        crate::refuse!(Refusal::SlotDamaged, "the media key kept on the slot is not the one its marker names: the slot was tampered with");
    }
    Ok(())
}

fn by_passphrase(enc: &Encryption, files: &KeyFiles, why: &str) -> anyhow::Result<age::x25519::Identity> {
    by_passphrase_with(enc, files, why, || passphrase(why, false))
}

fn by_passphrase_with(
    enc: &Encryption,
    files: &KeyFiles,
    why: &str,
    ask: impl FnOnce() -> anyhow::Result<SecretString>,
) -> anyhow::Result<age::x25519::Identity> {
    let Some(wrapped) = files.passphrase.as_ref().filter(|_| enc.passphrase) else {
        crate::refuse!(Refusal::Key, "{why}: this media has no passphrase; give --identity FILE with your age key (one of {})", enc.recipients.join(", "));
    };
    // A crafted wrapping must not cost gigabytes and minutes, nor pass for
    // a wrong passphrase: its factor is read before the passphrase is asked.
    match scrypt_factor(wrapped) {
        Some(n) if n <= MAX_WORK_FACTOR => {}
        Some(n) => crate::refuse!(
            Refusal::SlotDamaged,
            "the media key's passphrase wrapping ({}) asks for scrypt work factor {n}, more than crossback ever writes ({MAX_WORK_FACTOR} at most): it was changed; nothing was read or written",
            crate::layout::KEY_BY_PASSPHRASE
        ),
        None => crate::refuse!(
            Refusal::SlotDamaged,
            "the media key's passphrase wrapping ({}) is not one age passphrase stanza: it is damaged or was changed; nothing was read or written",
            crate::layout::KEY_BY_PASSPHRASE
        ),
    }
    let mut id = age::scrypt::Identity::new(ask()?);
    id.set_max_work_factor(MAX_WORK_FACTOR);
    unwrap_key(&Keys::new(vec![Box::new(id)]), wrapped, "wrong passphrase: it does not open this media's key (nothing was read or written)".to_string())
}

/// The media key from one of its wrappings; `wrong`: what it means when
/// the keys given do not open it.
fn unwrap_key(keys: &Keys, wrapped: &[u8], wrong: String) -> anyhow::Result<age::x25519::Identity> {
    let text = keys.decrypt_bytes("the media key", wrapped, crate::layout::KEY_CAP).map_err(|e| match e {
        crossback_archive::Error::Key(_) => refuse(Refusal::Key, wrong),
        other => refuse(Refusal::SlotDamaged, format!("the media key on the slot does not read: {other}")),
    })?;
    one_key(&text)
}

fn x25519_keys(text: &str) -> Vec<age::x25519::Identity> {
    text.lines().filter_map(|l| age::x25519::Identity::from_str(l.trim()).ok()).collect()
}

fn one_key(text: &[u8]) -> anyhow::Result<age::x25519::Identity> {
    let text = String::from_utf8_lossy(text);
    x25519_keys(&text).into_iter().next().ok_or_else(|| refuse(Refusal::SlotDamaged, "the media key on the slot holds no key".to_string()))
}

/// A small record's text: decrypted with `keys` (`sealed` bytes read from
/// a slot), at most `cap` bytes; damage and a wrong key each say so.
/// `n` random bytes (the kernel's), in hex.
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| anyhow::anyhow!("reading /dev/urandom: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub fn open_text(keys: &Keys, what: &str, sealed: &[u8], cap: u64) -> anyhow::Result<String> {
    let bytes = keys.decrypt_bytes(what, sealed, cap).map_err(|e| match e {
        crossback_archive::Error::Key(m) => refuse(Refusal::Key, m),
        other => refuse(Refusal::SlotDamaged, other.to_string()),
    })?;
    String::from_utf8(bytes).map_err(|_| refuse(Refusal::SlotDamaged, format!("{what} is not text")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_key_unwraps_with_the_passphrase_or_a_recipient_and_not_otherwise() {
        std::env::set_var("CROSSBACK_SCRYPT_WORK_FACTOR", "10");
        let user = age::x25519::Identity::generate();
        let pass = SecretString::from("correct horse".to_string());
        let (enc, files, key) = new_media(Some(&pass), &[user.to_public()]).unwrap();
        assert_eq!(enc.media_key, key.to_public().to_string());
        assert!(enc.passphrase && enc.recipients == [user.to_public().to_string()]);
        // The recipients' wrapping opens with the user's key, through age itself.
        let keys = Keys::new(vec![Box::new(user)]);
        let text = keys.decrypt_bytes("k", files.recipients.as_ref().unwrap(), 4096).unwrap();
        assert_eq!(one_key(&text).unwrap().to_public().to_string(), enc.media_key);
        let other = Keys::new(vec![Box::new(age::x25519::Identity::generate())]);
        assert!(matches!(other.decrypt_bytes("k", files.recipients.as_ref().unwrap(), 4096), Err(crossback_archive::Error::Key(_))));
        // The passphrase's wrapping is a passphrase-only age file.
        let d = age::Decryptor::new(&files.passphrase.as_ref().unwrap()[..]).unwrap();
        assert!(d.is_scrypt());
        let wrong = age::scrypt::Identity::new(SecretString::from("wrong".to_string()));
        assert!(d.decrypt(std::iter::once(&wrong as &dyn age::Identity)).is_err());
        // Nothing left to unlock with: refused.
        let none = wrap(&key, None, &[]).unwrap_err();
        assert_eq!(crate::error::kind_of(&none), Some(Refusal::Usage));
    }

    #[test]
    fn a_passphrase_wrapping_is_judged_by_its_header_before_any_work() {
        std::env::set_var("CROSSBACK_SCRYPT_WORK_FACTOR", "10");
        let pass = SecretString::from("pw".to_string());
        let key = age::x25519::Identity::generate();
        let w = wrap_by_passphrase(&key, &pass).unwrap();
        assert_eq!(scrypt_factor(&w), Some(10));
        let text = String::from_utf8_lossy(&w).into_owned();
        let crafted = text.replacen(" 10\n", " 22\n", 1).into_bytes();
        assert_eq!(scrypt_factor(&crafted), Some(22));
        assert_eq!(scrypt_factor(b"age-encryption.org/v1\n-> X25519 abc\n"), None);
        assert_eq!(scrypt_factor(b"garbage"), None);
        assert_eq!(scrypt_factor(b"age-encryption.org/v1\n-> scrypt s 022\n"), None);
    }

    #[test]
    fn recipients_are_checked() {
        let ok = age::x25519::Identity::generate().to_public().to_string();
        assert_eq!(parse_recipients(&[ok]).unwrap().len(), 1);
        let bad = parse_recipients(&["age1nothing".to_string()]).unwrap_err();
        assert_eq!(crate::error::kind_of(&bad), Some(Refusal::Usage));
    }
}
