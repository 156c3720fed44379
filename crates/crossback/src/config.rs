//! The configuration file: the media's two slots and the systems to back
//! up, by filesystem UUID. The same file is valid on every system of the
//! machine: nothing in it says which one is running.
//!
//! Found at `--config FILE`, else `$CROSSBACK_CONFIG`, else
//! `/etc/crossback/config.toml`. Every error names the key and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use toml::Spanned;

pub const DEFAULT_PATH: &str = "/etc/crossback/config.toml";

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub media: Option<Media>,
    #[serde(default, rename = "system")]
    pub systems: Vec<SystemConfig>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// Written by `crossback media prepare`; also in each slot's `slot.toml`.
    pub id: Spanned<String>,
    pub slot_a: Spanned<String>,
    pub slot_b: Spanned<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    pub name: Spanned<String>,
    /// UUID of the root filesystem.
    pub root: Spanned<String>,
    /// btrfs subvolume of the root (`@`), when the root is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subvol: Option<String>,
    /// Paths left out of this system's backups (globs, see `archive create --exclude`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Corrections to what the system's fstab says, by mount point.
    #[serde(default, rename = "mount", skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountOverride>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MountOverride {
    pub mountpoint: String,
    /// Filesystem UUID to use instead of what fstab names.
    #[serde(default)]
    pub uuid: Option<Spanned<String>>,
    #[serde(default)]
    pub fstype: Option<String>,
    #[serde(default)]
    pub options: Option<String>,
    /// Leave this filesystem out of the system's backups.
    #[serde(default)]
    pub skip: bool,
}

/// Where the configuration is read from and written to.
pub fn path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("CROSSBACK_CONFIG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

fn line_of(text: &str, span: std::ops::Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

/// A filesystem UUID as blkid prints them: 8-4-4-4-12 hex digits, vfat's
/// XXXX-XXXX, or NTFS-style 16 hex digits.
pub fn valid_uuid(u: &str) -> bool {
    let groups: Vec<&str> = u.split('-').collect();
    let hex = |g: &str, n: usize| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit());
    match groups.as_slice() {
        [a, b, c, d, e] => hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12),
        [a, b] => hex(a, 4) && hex(b, 4),
        [a] => hex(a, 16),
        _ => false,
    }
}

impl Config {
    /// Parses and checks a configuration; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", origin.display()))?;
        cfg.check(text, origin)?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("no configuration at {}: run `crossback init` to write one", path.display()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text, path)
    }

    fn check(&self, text: &str, origin: &Path) -> anyhow::Result<()> {
        let at = |s: &std::ops::Range<usize>| format!("{} line {}", origin.display(), line_of(text, s.clone()));
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        // Every UUID the file names, with where and as what.
        let mut uuids: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut claim = |u: &Spanned<String>, what: String, key: &str| -> anyhow::Result<()> {
            let v = u.get_ref().to_lowercase();
            if !valid_uuid(&v) {
                bail!("{}: {key} = {:?} is not a filesystem UUID (like 0a1b2c3d-… or ABCD-1234); `blkid` shows them", at(&u.span()), u.get_ref());
            }
            if let Some((prev_what, prev_at)) = uuids.get(&v) {
                bail!("{}: {key} = {:?} is already used for {prev_what} ({prev_at})", at(&u.span()), u.get_ref());
            }
            uuids.insert(v, (what, at(&u.span())));
            Ok(())
        };
        if let Some(m) = &self.media {
            claim(&m.slot_a, "slot A".into(), "media.slot_a")?;
            claim(&m.slot_b, "slot B".into(), "media.slot_b")?;
        }
        for s in &self.systems {
            let name = s.name.get_ref();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') || name.starts_with('.') {
                bail!("{}: system name {name:?} must be letters, digits, '-', '_' or '.'", at(&s.name.span()));
            }
            let line = line_of(text, s.name.span());
            if let Some(prev) = names.insert(name, line) {
                bail!("{}: system name {name:?} is used twice (first on line {prev})", at(&s.name.span()));
            }
            claim(&s.root, format!("the root of system {name:?}"), "system.root")?;
            for m in &s.mounts {
                if let Some(u) = &m.uuid {
                    claim(u, format!("{} of system {name:?}", m.mountpoint), "system.mount.uuid")?;
                }
            }
        }
        Ok(())
    }

    pub fn system(&self, name: &str) -> Option<&SystemConfig> {
        self.systems.iter().find(|s| s.name.get_ref() == name)
    }
}

/// The configuration as text, with comments for people.
pub fn render(cfg: &Config) -> String {
    let mut t = String::from(
        "# crossback configuration: the same file is valid on every system of this machine.\n\
         # Written by `crossback init`; edit freely (see the README for every key).\n",
    );
    if let Some(m) = &cfg.media {
        t.push_str(&format!("\n[media]\nid = {:?}\nslot_a = {:?}\nslot_b = {:?}\n", m.id.get_ref(), m.slot_a.get_ref(), m.slot_b.get_ref()));
    }
    for s in &cfg.systems {
        t.push_str(&format!("\n[[system]]\nname = {:?}\nroot = {:?}\n", s.name.get_ref(), s.root.get_ref()));
        if let Some(sv) = &s.subvol {
            t.push_str(&format!("subvol = {sv:?}\n"));
        }
        if !s.exclude.is_empty() {
            t.push_str(&format!("exclude = [{}]\n", s.exclude.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", ")));
        }
        for m in &s.mounts {
            t.push_str(&format!("\n[[system.mount]]\nmountpoint = {:?}\n", m.mountpoint));
            if let Some(u) = &m.uuid {
                t.push_str(&format!("uuid = {:?}\n", u.get_ref()));
            }
            if let Some(f) = &m.fstype {
                t.push_str(&format!("fstype = {f:?}\n"));
            }
            if let Some(o) = &m.options {
                t.push_str(&format!("options = {o:?}\n"));
            }
            if m.skip {
                t.push_str("skip = true\n");
            }
        }
    }
    t
}

/// Writes the configuration durably.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    crate::durable::write(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "0a1b2c3d-0000-4000-8000-000000000001";
    const U2: &str = "0a1b2c3d-0000-4000-8000-000000000002";

    fn parse(t: &str) -> anyhow::Result<Config> {
        Config::parse(t, Path::new("config.toml"))
    }

    #[test]
    fn good_config_round_trips() {
        let t = format!("[media]\nid = \"m1\"\nslot_a = \"{U1}\"\nslot_b = \"{U2}\"\n\n[[system]]\nname = \"alpha\"\nroot = \"ABCD-1234\"\nexclude = [\"/home/*/.cache\"]\n");
        let c = parse(&t).unwrap();
        let again = parse(&render(&c)).unwrap();
        assert_eq!(render(&again), render(&c));
        assert_eq!(c.systems[0].exclude, ["/home/*/.cache"]);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = parse("[[system]]\nname = \"a\"\nroot = \"ABCD-1234\"\ncolour = 3\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `colour`") && e.contains("line 4"), "{e}");
        let e = parse("[[system]]\nname = \"a\"\nroot = \"ABCD-1234\"\n[[system]]\nname = \"a\"\nroot = \"ABCD-1235\"\n").unwrap_err().to_string();
        assert!(e.contains("line 5") && e.contains("used twice (first on line 2)"), "{e}");
        let e = parse(&format!("[[system]]\nname = \"a\"\nroot = \"{U1}\"\n[[system]]\nname = \"b\"\nroot = \"{U1}\"\n")).unwrap_err().to_string();
        assert!(e.contains("line 6") && e.contains("already used for the root of system \"a\""), "{e}");
        let e =
            parse(&format!("[media]\nid = \"m\"\nslot_a = \"{U1}\"\nslot_b = \"{U2}\"\n[[system]]\nname = \"a\"\nroot = \"{U2}\"\n")).unwrap_err().to_string();
        assert!(e.contains("line 7") && e.contains("already used for slot B"), "{e}");
        let e = parse("[[system]]\nname = \"a\"\nroot = \"not-a-uuid\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("system.root") && e.contains("not a filesystem UUID"), "{e}");
        let e = parse("this is not toml").unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("line 1"), "{e}");
    }
}
