//! The rescue system's record on its own FAT partition
//! (`crossback/rescue.toml`, written by `media rescue`, its `crossback`
//! field by each backup that refreshes the rescue's crossback). Not a slot:
//! nothing of the backups is there.

use serde::{Deserialize, Serialize};

/// `crossback/rescue.toml` on the rescue partition.
pub const RESCUE_RECORD: &str = "rescue.toml";
/// The crossback the rescue prefers to the one in its initramfs, kept
/// current by every backup.
pub const RESCUE_TOOL: &str = "crossback";
const CAP: u64 = 64 << 10;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RescueRecord {
    /// When `media rescue` built it.
    pub built: String,
    /// The version of the crossback on the partition.
    pub crossback: String,
    /// When a backup last replaced that crossback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed: Option<String>,
    /// The BLAKE3 hash of that crossback: a backup replaces it when its own differs.
    #[serde(default)]
    pub crossback_hash: String,
    pub kernel: String,
    /// Whether every part that Secure Boot checks is signed.
    pub secure_boot: bool,
    pub bytes: u64,
}

/// The record of the rescue partition whose root is `root`, if it is one.
pub fn read_rescue(root: &crossback_host::beneath::Dir) -> Option<Result<RescueRecord, String>> {
    let dir = root.dir(super::DIR).ok()?;
    dir.kind(RESCUE_RECORD).ok().flatten()?;
    Some(super::read_toml(&dir, RESCUE_RECORD, CAP).map_err(|e| format!("{e:#}")))
}
