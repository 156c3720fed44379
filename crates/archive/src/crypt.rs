//! Encrypted archives: the whole archive file (header, frames, index,
//! footer) as the payload of an age file (age-encryption.org/v1), so that
//! `age -d -i KEY ARCHIVE | zstd -dc | tar -x` restores it without crossback.
//!
//! age cuts its payload into independently authenticated 64 KiB chunks and
//! its `StreamReader` seeks: a [`Source`] reads any byte range of the
//! plaintext by decrypting only the chunks it lies in, so the index and the
//! frame table keep random access. A chunk that does not authenticate is an
//! I/O error (`InvalidData`) of the read that touched it: the frame reader
//! reports that frame as damaged, as it would a frame that does not
//! decompress.
//!
//! What this is not: it keeps no keys anywhere. Callers hand it identities
//! (to read) or X25519 recipients (to write); where those come from is the
//! caller's business.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use age::stream::{StreamReader, StreamWriter};

use crate::error::{Error, Result};

/// The first bytes of every age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Who can read an encrypted archive: identities (secret keys), tried in turn.
#[derive(Clone)]
pub struct Keys {
    identities: Arc<Vec<Box<dyn age::Identity + Send + Sync>>>,
}

impl Keys {
    pub fn new(identities: Vec<Box<dyn age::Identity + Send + Sync>>) -> Keys {
        Keys { identities: Arc::new(identities) }
    }

    /// The identities of an age identity file's text (`AGE-SECRET-KEY-1…` lines).
    pub fn parse(text: &str) -> Result<Keys> {
        let file = age::IdentityFile::from_buffer(text.as_bytes()).map_err(|e| Error::Key(format!("the identity file does not read: {e}")))?;
        let identities = file.into_identities().map_err(|e| Error::Key(format!("the identity file holds a key crossback cannot use: {e}")))?;
        if identities.is_empty() {
            return Err(Error::Key("the identity file holds no key (AGE-SECRET-KEY-1…)".into()));
        }
        Ok(Keys::new(identities))
    }

    fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.identities.iter().map(|i| i.as_ref() as &dyn age::Identity)
    }

    /// Decrypts a whole (small) age file held in memory, at most `cap` bytes of it.
    pub fn decrypt_bytes(&self, what: &str, data: &[u8], cap: u64) -> Result<Vec<u8>> {
        let mut r = self.reader(what, data)?;
        let mut out = Vec::new();
        (&mut r).take(cap + 1).read_to_end(&mut out).map_err(|e| Error::Format(format!("{what} does not decrypt: {e}")))?;
        if out.len() as u64 > cap {
            return Err(Error::Format(format!("{what} decrypts to more than {cap} bytes")));
        }
        Ok(out)
    }

    fn reader<R: Read>(&self, what: &str, input: R) -> Result<StreamReader<R>> {
        let d = age::Decryptor::new(input).map_err(|e| decrypt_error(what, e))?;
        d.decrypt(self.iter()).map_err(|e| decrypt_error(what, e))
    }
}

/// A wrong key and damage are different answers: the first is the user's
/// to fix (another key), the second the disk's.
fn decrypt_error(what: &str, e: age::DecryptError) -> Error {
    match e {
        age::DecryptError::NoMatchingKeys => Error::Key(format!("{what}: none of the keys given opens it (wrong identity)")),
        age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
            Error::Key(format!("{what}: the key or passphrase given does not open it (wrong passphrase?)"))
        }
        // Not the user's key: the file asks for more work than any wrapping
        // crossback makes (a crafted one must not keep us busy for hours).
        age::DecryptError::ExcessiveWork { required, target } => {
            Error::Format(format!("{what}: its passphrase needs a work factor of {required}, more than this machine allows ({target})"))
        }
        age::DecryptError::Io(e) => Error::Io { what: format!("reading {what}"), source: e },
        other => Error::Format(format!("{what} is not a readable age file: {other}")),
    }
}

/// Encrypts `data` (a small file) to `recipients`.
pub fn encrypt_bytes(data: &[u8], recipients: &[age::x25519::Recipient]) -> Result<Vec<u8>> {
    let mut w = writer(Vec::new(), recipients).map_err(|e| Error::Io { what: "encrypting".into(), source: e })?;
    w.write_all(data).and_then(|_| w.finish()).map_err(|e| Error::Io { what: "encrypting".into(), source: e })
}

/// An age writer to `recipients` over `out`; [`StreamWriter::finish`] must end it.
pub fn writer<W: Write>(out: W, recipients: &[age::x25519::Recipient]) -> io::Result<StreamWriter<W>> {
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient)).map_err(io::Error::other)?;
    enc.wrap_output(out)
}

/// A writer that encrypts to its recipients, or (none) passes bytes through.
pub enum Output<W: Write> {
    Plain(W),
    Age(StreamWriter<W>),
}

impl<W: Write> Output<W> {
    pub fn new(out: W, recipients: &[age::x25519::Recipient]) -> io::Result<Output<W>> {
        if recipients.is_empty() {
            Ok(Output::Plain(out))
        } else {
            Ok(Output::Age(writer(out, recipients)?))
        }
    }

    /// Ends the age stream (its last chunk); the writer beneath.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Output::Plain(w) => Ok(w),
            Output::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Output::Plain(w) => w.write(data),
            Output::Age(w) => w.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Plain(w) => w.flush(),
            Output::Age(w) => w.flush(),
        }
    }
}

/// Bytes that can be read at any offset: a file on a slot, or an object
/// in an off-site store (each read a range request).
pub trait Bytes: Send + Sync {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize>;
    fn size(&self) -> io::Result<u64>;
    /// A hint: `len` bytes from `off` will be read soon (a file reads them
    /// ahead in the background; others may ignore it).
    fn will_need(&self, _off: u64, _len: u64) {}
}

impl Bytes for File {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, off)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn will_need(&self, off: u64, len: u64) {
        let _ = rustix::fs::fadvise(self, off, std::num::NonZeroU64::new(len), rustix::fs::Advice::WillNeed);
    }
}

/// [`Bytes`] read in order and seeked, as age's reader wants them.
pub struct Cursor {
    bytes: Arc<dyn Bytes>,
    pos: u64,
}

impl Read for Cursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.bytes.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Cursor {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.bytes.size()?.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start"))?;
        Ok(self.pos)
    }
}

/// True when `bytes` start as an age file does.
fn starts_as_age(bytes: &dyn Bytes) -> bool {
    let mut head = [0u8; 22];
    let mut got = 0;
    while got < head.len() {
        match bytes.read_at(&mut head[got..], got as u64) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    head[..] == AGE_MAGIC[..]
}

/// Where an archive's bytes come from: the bytes themselves, or the
/// plaintext of an age file, read at any offset.
pub enum Source {
    Plain(Arc<dyn Bytes>),
    Age {
        /// The raw (encrypted) bytes.
        raw: Arc<dyn Bytes>,
        reader: Mutex<Box<StreamReader<Cursor>>>,
        len: u64,
        /// To start a new reader after a chunk failed to authenticate: age's
        /// reader does not recover from that by seeking elsewhere.
        keys: Keys,
        what: String,
    },
}

impl Source {
    /// The file as it is, or (age) its plaintext with `keys`; an age file
    /// without keys is refused with what to give.
    pub fn open(file: File, what: &str, keys: Option<&Keys>) -> Result<Source> {
        Self::open_bytes(Arc::new(file), what, keys)
    }

    /// As [`Source::open`], for any [`Bytes`] (an object in a store, say).
    pub(crate) fn open_bytes(raw: Arc<dyn Bytes>, what: &str, keys: Option<&Keys>) -> Result<Source> {
        if !starts_as_age(raw.as_ref()) {
            return Ok(Source::Plain(raw));
        }
        let Some(keys) = keys else {
            return Err(Error::Key(format!("{what} is encrypted (age): give the passphrase or an identity that opens it")));
        };
        let mut reader = Self::age_reader(&raw, what, keys)?;
        let len = reader.seek(SeekFrom::End(0)).map_err(|e| Error::Format(format!("{what}: its encrypted end does not read: {e}")))?;
        Ok(Source::Age { raw, reader: Mutex::new(Box::new(reader)), len, keys: keys.clone(), what: what.to_string() })
    }

    fn age_reader(raw: &Arc<dyn Bytes>, what: &str, keys: &Keys) -> Result<StreamReader<Cursor>> {
        keys.reader(what, Cursor { bytes: Arc::clone(raw), pos: 0 })
    }

    /// Length of the (plaintext) archive.
    pub fn len(&self) -> io::Result<u64> {
        match self {
            Source::Plain(b) => b.size(),
            Source::Age { len, .. } => Ok(*len),
        }
    }

    pub fn is_empty(&self) -> io::Result<bool> {
        self.len().map(|n| n == 0)
    }

    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        match self {
            Source::Plain(b) => b.read_at(buf, off),
            Source::Age { raw, reader, len, keys, what } => {
                if off >= *len || buf.is_empty() {
                    return Ok(0);
                }
                let mut r = reader.lock().map_err(|_| io::Error::other("a reader of this archive panicked"))?;
                let want = buf.len().min((*len - off) as usize);
                let read = r.seek(SeekFrom::Start(off)).and_then(|_| r.read_exact(&mut buf[..want]));
                if let Err(e) = read {
                    if let Ok(fresh) = Self::age_reader(raw, what, keys) {
                        **r = fresh;
                    }
                    return Err(e);
                }
                Ok(want)
            }
        }
    }

    /// Tells the bytes' source that `len` bytes from `off` (of the
    /// plaintext) will be read soon: a slow disk then reads the next frame
    /// while this one is decompressed.
    pub fn will_need(&self, off: u64, len: u64) {
        match self {
            Source::Plain(b) => b.will_need(off, len),
            Source::Age { raw, len: plain, .. } => {
                // age: a header, then chunks of 64 KiB of plaintext and 16 bytes of tag.
                const CHUNK: u64 = 64 << 10;
                let Ok(size) = raw.size() else { return };
                let header = size.saturating_sub(plain + plain.div_ceil(CHUNK).max(1) * 16);
                let at = |p: u64| header + p / CHUNK * (CHUNK + 16) + p % CHUNK;
                raw.will_need(at(off), at(off + len) - at(off) + 16);
            }
        }
    }

    pub fn read_exact_at(&self, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, off) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends early")),
                Ok(n) => {
                    buf = &mut buf[n..];
                    off += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A [`Source`] read in order from an offset.
pub struct SourceReader<S: std::ops::Deref<Target = Source>> {
    pub src: S,
    pub pos: u64,
}

impl<S: std::ops::Deref<Target = Source>> Read for SourceReader<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age_file(data: &[u8], to: &age::x25519::Identity) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&encrypt_bytes(data, &[to.to_public()]).unwrap()).unwrap();
        f
    }

    #[test]
    fn any_range_of_the_plaintext_reads_back() {
        let id = age::x25519::Identity::generate();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let keys = Keys::new(vec![Box::new(id.clone())]);
        let src = Source::open(age_file(&data, &id), "t", Some(&keys)).unwrap();
        assert_eq!(src.len().unwrap(), data.len() as u64);
        for (off, n) in [(0usize, 10usize), (65_530, 20), (131_072, 65_536), (299_990, 10), (200_000, 100_000)] {
            let mut b = vec![0u8; n];
            src.read_exact_at(&mut b, off as u64).unwrap();
            assert_eq!(b, &data[off..off + n], "at {off}");
        }
        let mut b = [0u8; 4];
        assert!(src.read_exact_at(&mut b, 299_998).is_err());
    }

    #[test]
    fn a_wrong_key_or_none_is_a_key_error_and_a_flipped_byte_is_damage() {
        let id = age::x25519::Identity::generate();
        let other = Keys::new(vec![Box::new(age::x25519::Identity::generate())]);
        assert!(matches!(Source::open(age_file(b"x", &id), "t", Some(&other)), Err(Error::Key(m)) if m.contains("wrong identity")));
        assert!(matches!(Source::open(age_file(b"x", &id), "t", None), Err(Error::Key(m)) if m.contains("encrypted")));
        let data = vec![5u8; 200_000];
        let bytes = encrypt_bytes(&data, &[id.to_public()]).unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        // The second chunk: its bytes are bad, the first and third still read.
        let at = bytes.len() as u64 - 200_000 - 4 * 16 + 70_000;
        f.write_all_at(&[0xff], at).unwrap();
        let keys = Keys::new(vec![Box::new(id)]);
        let src = Source::open(f, "t", Some(&keys)).unwrap();
        let mut b = vec![0u8; 1000];
        src.read_exact_at(&mut b, 0).unwrap();
        src.read_exact_at(&mut b, 140_000).unwrap();
        assert_eq!(src.read_exact_at(&mut b, 66_000).unwrap_err().kind(), io::ErrorKind::InvalidData);
        // After the failure, the other chunks still read.
        src.read_exact_at(&mut b, 140_000).unwrap();
        src.read_exact_at(&mut b, 0).unwrap();
    }
}
