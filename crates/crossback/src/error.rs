//! crossback's refusals, by kind.
//!
//! The rules every error follows (after rustic_core's `error.rs`): it says
//! what was being done, to which thing (system, slot, device, path), why it
//! failed, and what the user can do next; nothing is left half-done looking
//! complete. A refusal also has a [`Refusal`] kind, printed as
//! `crossback: error[KIND]: …`, so that scripts and tests can tell one
//! refusal from another without matching its words.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Options that do not go together, or do not apply to this mode.
    Usage,
    /// The configuration is invalid (named key and line).
    Config,
    /// Another crossback holds the media or the system.
    Locked,
    NotRoot,
    /// A slot's filesystem is not attached.
    SlotMissing,
    /// A slot holds no marker (never prepared).
    SlotNotPrepared,
    SlotOfAnotherMedia,
    SlotHoldsForeignFiles,
    /// Something on a slot leads elsewhere: a symlink, another filesystem.
    SlotHostile,
    /// A slot's metadata does not read or check.
    SlotDamaged,
    /// The slot's filesystem is in use (mounted by something else, EBUSY).
    SlotBusy,
    /// The disk answered with an I/O error.
    SlotIo,
    SlotFull,
    SlotMountedReadWrite,
    SlotOnSystemDisk,
    NewerFormat,
    UnknownSystem,
    SystemRunning,
    SystemMounted,
    SystemDirty,
    SystemIncomplete,
    /// R9: the system lost most of what its previous backup held.
    SystemShrunk,
    NoBackup,
    NotInBackup,
    TargetNotEmpty,
    TargetTooSmall,
    TargetInUse,
    /// Two filesystems would end up with one UUID.
    DuplicateUuid,
    /// An archive on the slot is not the one its manifest records.
    ArchiveMismatch,
    Unsupported,
    NotConfirmed,
    /// The files are restored; repairing the bootloader failed.
    BootRepair,
    /// The system is in the open generation already.
    AlreadyRecorded,
    /// An encrypted media: no key given, or a wrong one.
    Key,
    /// A backup started by plugging the disk in, onto a media that is not
    /// encrypted, without the user's choice (`schedule --unencrypted`).
    NotEncrypted,
    /// Another offline update (`/system-update`) is armed for the next boot.
    UpdatePending,
    /// A LUKS container: no key given, or none that opens it.
    ContainerKey,
    /// A LUKS container is open read-write by someone else.
    ContainerOpen,
    /// A volume group's volume is active read-write and in use.
    VolumeInUse,
    /// A recorded LUKS header or volume group does not match what is there.
    LayerMismatch,
    /// An off-site store did not answer (network, server down, timeouts).
    RemoteUnreachable,
    /// An off-site store refused the credentials or the access.
    RemoteDenied,
    /// An off-site store is full or over its quota.
    RemoteFull,
    /// An off-site store answered with an error of its own (a 5xx, an SFTP
    /// failure): full without saying so, or failing.
    RemoteFailing,
    /// What an off-site store holds does not read or check.
    RemoteDamaged,
    /// An off-site store holds another machine's or another key's backups
    /// than the configuration says.
    RemoteMismatch,
}

impl Refusal {
    /// The kind as printed: kebab-case.
    pub fn name(self) -> String {
        let debug = format!("{self:?}");
        let mut out = String::new();
        for (i, c) in debug.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// A refusal: its kind and its message.
#[derive(Debug)]
pub struct Refused {
    pub kind: Refusal,
    pub message: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

pub fn refuse(kind: Refusal, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Refused { kind, message: message.into() })
}

/// `bail!` for refusals: `refuse!(Refusal::X, "format", args…)`.
#[macro_export]
macro_rules! refuse {
    ($kind:expr, $($arg:tt)*) => {
        return Err($crate::error::refuse($kind, format!($($arg)*)).into())
    };
}

/// The kind of the first refusal in the chain, if any — also of one given
/// as the context of another error (`.with_context(|| refuse(…))`).
pub fn kind_of(err: &anyhow::Error) -> Option<Refusal> {
    if let Some(k) = err.downcast_ref::<anyhow::Error>().and_then(kind_of) {
        return Some(k);
    }
    err.chain().find_map(|e| {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.kind);
        }
        match e.downcast_ref::<crossback_host::Error>() {
            Some(crossback_host::Error::Locked { .. }) => Some(Refusal::Locked),
            _ => None,
        }
    })
}

/// An archive that does not open: a missing or wrong key is the user's
/// to fix (`error[key]`), the rest is what the archive crate says.
pub fn from_archive(e: crossback_archive::Error) -> anyhow::Error {
    match e {
        crossback_archive::Error::Key(m) => refuse(Refusal::Key, m),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_kebab_case() {
        assert_eq!(Refusal::SlotOfAnotherMedia.name(), "slot-of-another-media");
        assert_eq!(Refusal::Usage.name(), "usage");
        let e = refuse(Refusal::SlotBusy, "x").context("mounting slot A");
        assert_eq!(kind_of(&e), Some(Refusal::SlotBusy));
    }

    /// A refusal given as the context of another error, or of a missing
    /// value, keeps its kind (and its words come first).
    #[test]
    fn a_refusal_as_context_keeps_its_kind() {
        use anyhow::Context;
        let io: Result<(), std::io::Error> = Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let e = io.with_context(|| refuse(Refusal::Usage, "--disk /dev/nothing: no such device")).unwrap_err();
        assert_eq!(kind_of(&e), Some(Refusal::Usage));
        assert!(format!("{e:#}").starts_with("--disk /dev/nothing: no such device"), "{e:#}");
        let none: Option<u8> = None;
        let e = none.with_context(|| refuse(Refusal::UnknownSystem, "no system called x")).unwrap_err();
        assert_eq!(kind_of(&e), Some(Refusal::UnknownSystem));
        let e = e.context("restoring x");
        assert_eq!(kind_of(&e), Some(Refusal::UnknownSystem));
        assert_eq!(kind_of(&anyhow::anyhow!("plain").context("more")), None);
    }
}
