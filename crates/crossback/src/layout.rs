//! The slot's on-disk layout, and nothing else: every file crossback keeps
//! on a slot has its type here, one file per type (after rustic_core's
//! `repofile/`); [`classify()`] is the one reading of what a slot holds
//! that `status`, `backup`, `ls`, `restore` and `verify` all use, and
//! [`SlotWriter`] the one writer (nothing else writes to a slot).
//!
//! ```text
//! <slot>/crossback/slot.toml                   Marker
//! <slot>/crossback/README.txt
//! <slot>/crossback/config.toml                 the configuration, as last used by `backup`
//! <slot>/crossback/crossback, crossback.version the binary that wrote it (a restore tool)
//! <slot>/crossback/gen-NNNNNN/generation.toml  Generation (with SystemRecord, ArchiveRecord)
//! <slot>/crossback/gen-NNNNNN/SYSTEM/mounts.toml  MountsFile (FsRecord)
//! <slot>/crossback/gen-NNNNNN/SYSTEM/root.tar.zst …
//! ```
//! On an encrypted media (the marker says so) the archives are
//! `root.tar.zst.age`, the records `mounts.toml.age` and `config.toml.age`,
//! and `media-key.passphrase.age` / `media-key.recipients.age` keep the
//! media key, wrapped (see `crate::keys`).
//!
//! Everything here is read from a disk anyone can write to (R7): files are
//! read beneath the slot's root by descriptor, only when regular and no
//! larger than their cap, and every value is checked before it is used
//! (names are plain names, mount points are clean absolute paths, archive
//! files are named after their mount point).

pub mod classify;
mod generation;
mod marker;
mod mounts;
mod readme;
mod rescue;
mod slot_id;
mod writer;

pub use classify::{classify, GenEntry, SlotView};
pub use generation::{archive_file, clean_relative, encrypted_archive_file, is_archive_file, ArchiveRecord, GenName, Generation, State, SystemRecord};
pub use marker::{Encryption, KeyFiles, Marker, KEY_BY_PASSPHRASE, KEY_BY_RECIPIENTS, KEY_CAP};
pub use mounts::{FsRecord, MountsFile};
pub use rescue::{file_hash, read_rescue, refresh_rescue_tool, replace_file, RescueRecord, RESCUE_RECORD, RESCUE_TOOL, RESCUE_TOOL_CAP};
pub use slot_id::SlotId;
pub use writer::{GenWriter, SlotWriter, SystemWriter};

/// The slot's own directory; nothing outside it is ever written or wiped.
pub const DIR: &str = "crossback";
pub const MARKER: &str = "slot.toml";
pub const README: &str = "README.txt";
pub const MANIFEST: &str = "generation.toml";
pub const MOUNTS: &str = "mounts.toml";
/// A copy of the configuration, for the other systems and a rescue system.
pub const CONFIG: &str = "config.toml";
/// The configuration on an encrypted media.
pub const CONFIG_AGE: &str = "config.toml.age";
/// A system's filesystems on an encrypted media.
pub const MOUNTS_AGE: &str = "mounts.toml.age";
pub const CONFIG_CAP: u64 = 1 << 20;
/// The crossback binary that last wrote the slot, and its version: the
/// backup disk carries its own restore tool.
pub const TOOL: &str = "crossback";
pub const TOOL_VERSION: &str = "crossback.version";
/// The layout version this crossback writes and understands.
pub const FORMAT: u32 = 1;

/// Caps on what a metadata file may weigh: a bigger one is not ours.
pub const MARKER_CAP: u64 = 64 << 10;
pub const MANIFEST_CAP: u64 = 16 << 20;
pub const MOUNTS_CAP: u64 = 1 << 20;

/// A system's name is a plain name: it becomes a directory on the slot.
pub fn valid_system_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Reads and parses a TOML metadata file beneath `dir`, bounded by `cap`.
pub fn read_toml<T: serde::de::DeserializeOwned>(dir: &crossback_host::beneath::Dir, name: &str, cap: u64) -> anyhow::Result<T> {
    let bytes = dir.read_capped(name, cap)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| anyhow::anyhow!("{}/{name} is not UTF-8 text (byte {})", dir.shown().display(), e.valid_up_to()))?;
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{}/{name} does not read: {}", dir.shown().display(), e.message()))
}

/// For the inspection child (see `crossback_host::inspect::serve`): a
/// slot's classification, when the filesystem at `root` holds `crossback/`.
pub fn inspect_slot(root: &std::path::Path) -> Option<serde_json::Value> {
    let dir = crossback_host::beneath::Dir::open(root).ok()?;
    // A rescue partition holds crossback/ too, and no marker: not a slot.
    if let Some(r) = read_rescue(&dir) {
        return Some(serde_json::json!({ "rescue": r }));
    }
    let found: Result<SlotView, String> = match classify(&dir) {
        Ok(Ok(view)) => Ok(view),
        Ok(Err(_)) if dir.kind(DIR).ok().flatten().is_none() => return None,
        Ok(Err(_)) => Err(format!("{DIR}/ holds no marker")),
        Err(e) => Err(format!("{e:#}")),
    };
    serde_json::to_value(found).ok()
}

/// What [`inspect_slot`] found, read back from an inspection.
pub fn slot_of(extra: &Option<serde_json::Value>) -> Option<Result<SlotView, String>> {
    extra.as_ref().filter(|v| v.get("rescue").is_none()).and_then(|v| serde::Deserialize::deserialize(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whatever a slot's metadata files hold, reading them never panics, and
    /// what passes `check` names only plain paths beneath the slot.
    #[test]
    fn slot_metadata_parsers_never_panic_and_check_what_they_pass() {
        let mut r = crossback_testkit::fuzz_runner(512);
        r.run(&any::<String>(), |text| {
            let _ = toml::from_str::<Marker>(&text);
            let _ = toml::from_str::<MountsFile>(&text).map(|m| m.check());
            let _ = toml::from_str::<Generation>(&text).map(|g| g.check());
            let _ = crate::config::Config::parse(&text, std::path::Path::new("c.toml"));
            let _ = crate::duplicity::parse_manifest(&text);
            Ok(())
        })
        .unwrap();
        let path = prop_oneof![
            Just("/".to_string()),
            Just("/home".to_string()),
            Just("/home/../../x".to_string()),
            Just("/a//b".to_string()),
            Just("..".to_string()),
            "(/[a-z.]{0,4}){0,4}",
            any::<String>()
        ];
        let file = prop_oneof![Just("root.tar.zst".to_string()), Just("home.tar.zst".to_string()), Just("../../home.tar.zst".to_string()), any::<String>()];
        let name = prop_oneof![Just("alpha".to_string()), Just("..".to_string()), Just("a/b".to_string()), any::<String>()];
        r.run(&(proptest::collection::vec((path, file), 0..4), name), |(archives, name)| {
            let mut t = format!("format = 1\nmedia_id = \"m\"\nseq = 1\nstate = \"open\"\nstarted = \"x\"\nsystems = [{name:?}]\n[[system]]\nname = {name:?}\nfinished = \"x\"\n");
            for (mp, f) in &archives {
                t.push_str(&format!("[[system.archive]]\nmountpoint = {mp:?}\nfile = {f:?}\nbytes = 1\nhash = \"{}\"\nentries = 1\ndata_bytes = 1\n", "0".repeat(64)));
            }
            if let Ok(g) = toml::from_str::<Generation>(&t) {
                if g.check().is_ok() {
                    for s in &g.recorded {
                        prop_assert!(valid_system_name(&s.name));
                        for a in &s.archives {
                            prop_assert!(crossback_host::fstab::clean_mountpoint(&a.mountpoint), "{:?}", a.mountpoint);
                            prop_assert!(!a.file.contains('/') && a.file != ".." && is_archive_file(&a.file, &a.mountpoint));
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    }
}
