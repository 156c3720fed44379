//! The rescue system's record on its own FAT partition
//! (`crossback/rescue.toml`, written by `media rescue`, its `crossback`
//! field by each backup that refreshes the rescue's crossback). Not a slot:
//! nothing of the backups is there.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// `crossback/rescue.toml` on the rescue partition.
pub const RESCUE_RECORD: &str = "rescue.toml";
/// The crossback the rescue prefers to the one in its initramfs, kept
/// current by every backup.
pub const RESCUE_TOOL: &str = "crossback";
const CAP: u64 = 64 << 10;
/// The largest crossback the rescue partition carries beside the rescue.
pub const RESCUE_TOOL_CAP: u64 = 64 << 20;

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

/// The BLAKE3 hash of a file, hex.
pub fn file_hash(p: &Path) -> anyhow::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?)?;
    Ok(h.finalize().to_hex().to_string())
}

/// On the rescue partition mounted at `root`: its crossback replaced by
/// `exe` (of version `version`) when they differ, written beside and
/// renamed, then the record. The version it now runs, or None when it
/// was current.
pub fn refresh_rescue_tool(root: &Path, exe: &Path, version: &str) -> anyhow::Result<Option<String>> {
    let dir = crossback_host::beneath::Dir::open(root)?;
    let mut rec = match read_rescue(&dir) {
        Some(Ok(r)) => r,
        Some(Err(why)) => anyhow::bail!("its record does not read ({why}): `crossback media rescue` makes it again"),
        None => anyhow::bail!("it has no {}/{RESCUE_RECORD}: not a rescue `crossback media rescue` made", super::DIR),
    };
    let hash = file_hash(exe)?;
    if rec.crossback_hash == hash {
        return Ok(None);
    }
    let size = std::fs::metadata(exe)?.len();
    if size > RESCUE_TOOL_CAP {
        anyhow::bail!("this crossback is {} MiB, more than the {} MiB the rescue carries (a debug build?)", size >> 20, RESCUE_TOOL_CAP >> 20);
    }
    let at = root.join(super::DIR);
    replace_file(&at, RESCUE_TOOL, |p| std::fs::copy(exe, p).map(drop))?;
    rec.crossback = version.to_string();
    rec.crossback_hash = hash;
    rec.refreshed = Some(crate::output::now());
    let text = toml::to_string(&rec)?;
    replace_file(&at, RESCUE_RECORD, |p| std::fs::write(p, &text))?;
    rustix::fs::sync();
    Ok(Some(rec.crossback))
}

/// `dir/name` written whole as `name.partial` by `write`, then renamed over
/// it; where renaming is not there (a FUSE FAT driver), copied over it.
pub fn replace_file(dir: &Path, name: &str, write: impl Fn(&Path) -> std::io::Result<()>) -> anyhow::Result<()> {
    let (part, to) = (dir.join(format!("{name}.partial")), dir.join(name));
    write(&part).with_context(|| format!("writing {}", part.display()))?;
    match std::fs::rename(&part, &to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            std::fs::copy(&part, &to).with_context(|| format!("writing {}", to.display()))?;
            std::fs::remove_file(&part).with_context(|| format!("removing {}", part.display()))
        }
        Err(e) => Err(e).with_context(|| format!("renaming {} to {name}", part.display())),
    }
}
