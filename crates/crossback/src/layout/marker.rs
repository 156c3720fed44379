//! `crossback/slot.toml`: the marker that makes a filesystem a slot of one
//! media. Written once by `media prepare` (or `media adopt`).

use serde::{Deserialize, Serialize};

use super::SlotId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub format: u32,
    pub media_id: String,
    pub slot: SlotId,
    pub prepared: String,
    /// Set when the media is encrypted: what is written from then on is
    /// encrypted to its media key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// An encrypted media's public facts (nothing here unlocks anything).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// The media key's public half (`age1…`): archives and records are
    /// encrypted to it, so a backup needs no secret.
    pub media_key: String,
    /// The media key is kept on the slots encrypted with a passphrase.
    #[serde(default)]
    pub passphrase: bool,
    /// The users' own public keys it is kept encrypted to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

/// The media key as kept on each slot: wrapped by the passphrase
/// (`media-key.passphrase.age`) and for the users' recipients
/// (`media-key.recipients.age`). age allows a passphrase only alone in a
/// file: hence two files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFiles {
    #[serde(default)]
    pub passphrase: Option<Vec<u8>>,
    #[serde(default)]
    pub recipients: Option<Vec<u8>>,
}

pub const KEY_BY_PASSPHRASE: &str = "media-key.passphrase.age";
pub const KEY_BY_RECIPIENTS: &str = "media-key.recipients.age";
pub const KEY_CAP: u64 = 64 << 10;

impl KeyFiles {
    pub fn read(dir: &crossback_host::beneath::Dir) -> anyhow::Result<KeyFiles> {
        let one = |name: &str| -> anyhow::Result<Option<Vec<u8>>> {
            match dir.kind(name)? {
                None => Ok(None),
                Some(_) => Ok(Some(dir.read_capped(name, KEY_CAP)?)),
            }
        };
        Ok(KeyFiles { passphrase: one(KEY_BY_PASSPHRASE)?, recipients: one(KEY_BY_RECIPIENTS)? })
    }
}

impl Marker {
    pub fn new(media_id: &str, slot: SlotId) -> Marker {
        Marker { format: super::FORMAT, media_id: media_id.to_string(), slot, prepared: crate::output::now(), encryption: None }
    }
}
