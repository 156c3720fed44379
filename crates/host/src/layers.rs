//! What sits between a partition and a filesystem on encrypted and LVM
//! systems, as the system itself and the distribution's tools
//! describe it: the system's `/etc/crypttab`, `cryptsetup luksDump
//! --dump-json-metadata` (LUKS2) and lvm2's JSON reports (`pvs`, `vgs`,
//! `lvs --reportformat json --units b --nosuffix`).
//!
//! Reading and parsing lives here; opening and closing containers and
//! volume groups is [`mapping`]'s.

pub mod mapping;

use serde::{Deserialize, Serialize};

use crate::blockdev::Spec;
use crate::error::{Error, Result};

/// One line of `/etc/crypttab`: `NAME SOURCE [KEYFILE [OPTIONS]]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrypttabEntry {
    /// The mapping's name (`/dev/mapper/NAME`).
    pub name: String,
    pub source: Spec,
    /// A key file on the system (`None`: a passphrase, asked at boot).
    pub keyfile: Option<String>,
    pub options: Vec<String>,
    pub line_no: usize,
}

/// What `parse_crypttab` found, and the lines it skipped (with why).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Crypttab {
    pub entries: Vec<CrypttabEntry>,
    pub warnings: Vec<String>,
}

/// Parses a crypttab as systemd-cryptsetup and Debian's cryptsetup read it.
pub fn parse_crypttab(text: &str) -> Crypttab {
    let mut out = Crypttab::default();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 2 {
            out.warnings.push(format!("line {line_no}: no source device: {line:?}"));
            continue;
        }
        let Some(source) = Spec::parse(f[1]) else {
            out.warnings.push(format!("line {line_no}: a source crossback cannot find by itself: {:?}", f[1]));
            continue;
        };
        let keyfile = f.get(2).filter(|k| !matches!(**k, "none" | "-" | "")).map(|k| k.to_string());
        let options = f.get(3).map(|o| o.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()).unwrap_or_default();
        out.entries.push(CrypttabEntry { name: f[0].to_string(), source, keyfile, options, line_no });
    }
    out
}

impl CrypttabEntry {
    /// Not LUKS (plain dm-crypt, TrueCrypt, BitLocker): its header cannot be
    /// saved and restored, so crossback does not handle it.
    pub fn is_luks(&self) -> bool {
        !self.options.iter().any(|o| matches!(o.as_str(), "plain" | "tcrypt" | "bitlk" | "swap" | "tmp") || o.starts_with("tmp="))
    }
}

/// The part of a LUKS2 header's metadata a restore needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LuksInfo {
    /// Where the encrypted data begins: the header (JSON area and key
    /// slots) comes before it and is what `luksHeaderBackup` saves.
    pub data_offset: u64,
    /// The active key slots (their numbers).
    pub keyslots: Vec<u32>,
    /// Each key slot's key derivation (`argon2id`, `pbkdf2`, …).
    pub kdfs: Vec<String>,
    pub cipher: String,
    pub sector_size: u32,
}

fn num(v: &serde_json::Value, what: &str) -> Result<u64> {
    match v {
        serde_json::Value::String(s) => s.parse().map_err(|_| Error::Parse(format!("{what}: {s:?} is not a number"))),
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(|| Error::Parse(format!("{what}: {n} is not a byte count"))),
        _ => Err(Error::Parse(format!("{what}: missing"))),
    }
}

/// Parses `cryptsetup luksDump --dump-json-metadata` (LUKS2).
pub fn parse_luks2_json(text: &str) -> Result<LuksInfo> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Parse(format!("LUKS2 metadata: {e}")))?;
    let segments = v.get("segments").and_then(|s| s.as_object()).ok_or_else(|| Error::Parse("LUKS2 metadata: no segments".into()))?;
    // The data segment: a `crypt` one (segment 0 on every container not being re-encrypted).
    let mut crypt: Vec<(&String, &serde_json::Value)> = segments.iter().filter(|(_, s)| s.get("type").and_then(|t| t.as_str()) == Some("crypt")).collect();
    crypt.sort_by_key(|(k, _)| k.parse::<u32>().unwrap_or(u32::MAX));
    if segments.len() != 1 || crypt.len() != 1 {
        return Err(Error::Parse(format!(
            "LUKS2 metadata: {} segments ({} of type crypt): a container in the middle of re-encryption is not handled; let `cryptsetup reencrypt` finish",
            segments.len(),
            crypt.len()
        )));
    }
    let seg = crypt[0].1;
    let data_offset = num(seg.get("offset").unwrap_or(&serde_json::Value::Null), "segment offset")?;
    // Shown to the user only; a container is made again from its header.
    let cipher = seg.get("encryption").and_then(|e| e.as_str()).unwrap_or_default().to_string();
    let sector_size = seg.get("sector_size").and_then(|s| s.as_u64()).unwrap_or(512) as u32;
    let mut slots: Vec<(u32, String)> = v
        .get("keyslots")
        .and_then(|k| k.as_object())
        .map(|k| k.iter().filter_map(|(id, s)| Some((id.parse().ok()?, s.pointer("/kdf/type").and_then(|t| t.as_str()).unwrap_or("").to_string()))).collect())
        .unwrap_or_default();
    slots.sort();
    if slots.is_empty() {
        return Err(Error::Parse("LUKS2 metadata: no key slot: nothing can unlock this container".into()));
    }
    Ok(LuksInfo { data_offset, keyslots: slots.iter().map(|s| s.0).collect(), kdfs: slots.into_iter().map(|s| s.1).collect(), cipher, sector_size })
}

/// One physical volume, from `pvs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pv {
    pub device: String,
    pub uuid: String,
    pub vg: String,
    pub size: u64,
}

/// One volume group, from `vgs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vg {
    pub name: String,
    pub uuid: String,
    pub size: u64,
    pub extent_size: u64,
}

/// One logical volume, from `lvs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lv {
    pub name: String,
    pub vg: String,
    pub uuid: String,
    pub size: u64,
    /// `lv_attr`'s first letter: `-` a plain volume; others (thin pools,
    /// snapshots, mirrors, RAID, cache) are not handled.
    pub kind: char,
    /// `lv_attr` whole (`-wi-ao----`): permission, state and open flags.
    pub attr: String,
}

impl Lv {
    /// Active: its device-mapper device exists.
    pub fn active(&self) -> bool {
        self.attr.chars().nth(4) == Some('a')
    }

    /// Opened by something (mounted, swapped on, held by a process).
    pub fn open(&self) -> bool {
        self.attr.chars().nth(5) == Some('o')
    }
}

/// The field names lvm2 reports, per report.
pub const PVS_FIELDS: &str = "pv_name,pv_uuid,vg_name,pv_size";
pub const VGS_FIELDS: &str = "vg_name,vg_uuid,vg_size,vg_extent_size";
pub const LVS_FIELDS: &str = "lv_name,vg_name,lv_uuid,lv_size,lv_attr";

/// The rows of one report (`pv`, `vg`, `lv`) of lvm2's JSON output.
fn rows<'a>(v: &'a serde_json::Value, report: &str) -> Result<Vec<&'a serde_json::Map<String, serde_json::Value>>> {
    let reports = v.get("report").and_then(|r| r.as_array()).ok_or_else(|| Error::Parse("lvm2 report: no \"report\"".into()))?;
    Ok(reports.iter().filter_map(|r| r.get(report)?.as_array()).flatten().filter_map(|row| row.as_object()).collect())
}

fn field(row: &serde_json::Map<String, serde_json::Value>, name: &str) -> Result<String> {
    row.get(name).and_then(|v| v.as_str()).map(str::to_string).ok_or_else(|| Error::Parse(format!("lvm2 report: no {name}")))
}

fn json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::Parse(format!("lvm2 report: {e}")))
}

/// Parses `pvs --reportformat json --units b --nosuffix -o PVS_FIELDS`.
pub fn parse_pvs(text: &str) -> Result<Vec<Pv>> {
    let v = json(text)?;
    rows(&v, "pv")?
        .into_iter()
        .map(|r| Ok(Pv { device: field(r, "pv_name")?, uuid: field(r, "pv_uuid")?, vg: field(r, "vg_name")?, size: num(&r["pv_size"], "pv_size")? }))
        .collect()
}

/// Parses `vgs --reportformat json --units b --nosuffix -o VGS_FIELDS`.
pub fn parse_vgs(text: &str) -> Result<Vec<Vg>> {
    let v = json(text)?;
    rows(&v, "vg")?
        .into_iter()
        .map(|r| {
            Ok(Vg {
                name: field(r, "vg_name")?,
                uuid: field(r, "vg_uuid")?,
                size: num(r.get("vg_size").unwrap_or(&serde_json::Value::Null), "vg_size")?,
                extent_size: num(r.get("vg_extent_size").unwrap_or(&serde_json::Value::Null), "vg_extent_size")?,
            })
        })
        .collect()
}

/// Parses `lvs --reportformat json --units b --nosuffix -o LVS_FIELDS`.
pub fn parse_lvs(text: &str) -> Result<Vec<Lv>> {
    let v = json(text)?;
    rows(&v, "lv")?
        .into_iter()
        .map(|r| {
            Ok(Lv {
                name: field(r, "lv_name")?,
                vg: field(r, "vg_name")?,
                uuid: field(r, "lv_uuid")?,
                size: num(r.get("lv_size").unwrap_or(&serde_json::Value::Null), "lv_size")?,
                kind: field(r, "lv_attr")?.chars().next().unwrap_or('?'),
                attr: field(r, "lv_attr")?,
            })
        })
        .collect()
}

/// What a device-mapper device is, from its dm UUID
/// (`/sys/class/block/dm-N/dm/uuid`): cryptsetup names its mappings
/// `CRYPT-LUKS2-<container UUID without dashes>-<name>`, lvm2 its volumes
/// `LVM-<VG UUID><LV UUID>` (32 characters each, without dashes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DmKind {
    Luks {
        version: u8,
        uuid: String,
    },
    Lv {
        vg_uuid: String,
        lv_uuid: String,
    },
    /// Anything else (plain dm-crypt, multipath, dm-raid, a snapshot's parts…).
    Other(String),
}

/// Puts back the dashes of a LUKS UUID (8-4-4-4-12).
fn dashed_uuid(hex: &str) -> Option<String> {
    (hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

/// Puts back the dashes of an LVM UUID (6-4-4-4-4-4-6), as lvm2 shows it.
fn lvm_uuid(raw: &str) -> String {
    let mut out = String::new();
    let mut at = 0;
    for (i, n) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(&raw[at..at + n]);
        at += n;
    }
    out
}

pub fn dm_kind(dm_uuid: &str) -> DmKind {
    let other = || DmKind::Other(dm_uuid.to_string());
    if let Some(rest) = dm_uuid.strip_prefix("CRYPT-LUKS") {
        let Some((version, rest)) = rest.split_once('-') else { return other() };
        let Ok(version) = version.parse::<u8>() else { return other() };
        let hex = rest.split('-').next().unwrap_or("");
        return match dashed_uuid(hex) {
            Some(uuid) => DmKind::Luks { version, uuid },
            None => other(),
        };
    }
    if let Some(rest) = dm_uuid.strip_prefix("LVM-") {
        // A volume's own mapping has exactly the two UUIDs; its parts (`-real`, `-cow`, `-tpool`) have a suffix.
        if rest.len() == 64 && rest.chars().all(|c| c.is_ascii_alphanumeric()) {
            return DmKind::Lv { vg_uuid: lvm_uuid(&rest[..32]), lv_uuid: lvm_uuid(&rest[32..]) };
        }
    }
    other()
}

/// One device on the way from a filesystem's device down to a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The kernel's name (`dm-1`, `vda5`).
    pub name: String,
    /// device-mapper's name (`vgb-root`, `b_crypt`); empty for a partition or disk.
    pub dm_name: String,
    /// None for a partition or disk (the bottom).
    pub kind: Option<DmKind>,
}

/// The stack below `name` as sysfs (`sys`: normally `/sys`) shows it: the
/// device itself, then what it is built on, down to a device that is not
/// device-mapper's. A device built on several (a volume group on two
/// physical volumes, RAID) is refused: crossback makes one stack per partition.
pub fn stack_of(sys: &std::path::Path, name: &str) -> Result<Vec<Layer>> {
    let mut out = Vec::new();
    let mut cur = name.to_string();
    loop {
        let dir = sys.join("class/block").join(&cur);
        if !dir.exists() {
            return Err(Error::Parse(format!("{cur}: not a block device in {}", sys.display())));
        }
        let dm = dir.join("dm");
        if !dm.is_dir() {
            out.push(Layer { name: cur, dm_name: String::new(), kind: None });
            return Ok(out);
        }
        let read = |f: &str| {
            std::fs::read_to_string(dm.join(f)).map(|s| s.trim().to_string()).map_err(crate::error::ctx(|| format!("reading {}", dm.join(f).display())))
        };
        let slaves_dir = dir.join("slaves");
        let mut slaves: Vec<String> = std::fs::read_dir(&slaves_dir)
            .and_then(|r| r.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect())
            .map_err(crate::error::ctx(|| format!("listing {}", slaves_dir.display())))?;
        slaves.sort();
        let dm_name = read("name")?;
        out.push(Layer { name: cur.clone(), dm_name: dm_name.clone(), kind: Some(dm_kind(&read("uuid")?)) });
        match slaves.as_slice() {
            [one] => cur = one.clone(),
            [] => return Err(Error::Parse(format!("{cur} ({dm_name}) is built on no device"))),
            many => {
                return Err(Error::Parse(format!(
                    "{cur} ({}) is built on {} devices ({}): volume groups over several disks and RAID are not handled",
                    dm_name,
                    many.len(),
                    many.join(", ")
                )))
            }
        }
        if out.len() > 16 {
            return Err(Error::Parse(format!("{name}: more than 16 layers of device-mapper (a loop?)")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypttab_as_the_installers_write_it() {
        let t = "# <target name>\t<source device>\t<key file>\t<options>\n\
                 sda3_crypt UUID=0a1b2c3d-0000-4000-8000-000000000003 none luks,discard\n\
                 \n\
                 data PARTUUID=5e1f0000-01 /etc/keys/data.key luks,initramfs\n\
                 cryptswap /dev/disk/by-uuid/0a1b2c3d-0000-4000-8000-000000000004 /dev/urandom swap,cipher=aes-xts-plain64\n\
                 home-crypt UUID=0a1b2c3d-0000-4000-8000-000000000005\n\
                 lonely\n\
                 odd nfs:/export none\n";
        let c = parse_crypttab(t);
        let names: Vec<&str> = c.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["sda3_crypt", "data", "cryptswap", "home-crypt"]);
        assert_eq!(c.entries[0].source, Spec::Uuid("0a1b2c3d-0000-4000-8000-000000000003".into()));
        assert_eq!(c.entries[0].keyfile, None);
        assert_eq!(c.entries[0].options, ["luks", "discard"]);
        assert_eq!(c.entries[1].source, Spec::PartUuid("5e1f0000-01".into()));
        assert_eq!(c.entries[1].keyfile.as_deref(), Some("/etc/keys/data.key"));
        assert_eq!(c.entries[2].source, Spec::Uuid("0a1b2c3d-0000-4000-8000-000000000004".into()));
        assert!(!c.entries[2].is_luks(), "a swap with a random key is not a LUKS container");
        assert!(c.entries[0].is_luks() && c.entries[3].is_luks());
        assert_eq!(c.entries[3].keyfile, None);
        assert_eq!(c.entries[3].line_no, 6);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("line 7: no source device"));
        assert!(c.warnings[1].starts_with("line 8: a source crossback cannot find"));
    }

    /// As `cryptsetup luksDump --dump-json-metadata` (2.6) prints it for a
    /// container made with `luksFormat --pbkdf pbkdf2` and a second key slot.
    const LUKS2: &str = r#"{
  "keyslots":{
    "1":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},
         "area":{"type":"raw","offset":"290816","size":"258048","encryption":"aes-xts-plain64","key_size":64},
         "kdf":{"type":"argon2id","time":4,"memory":1048576,"cpus":2,"salt":"c2FsdA=="}},
    "0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},
         "area":{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64},
         "kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"c2FsdA=="}}
  },
  "tokens":{},
  "segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":512}},
  "digests":{"0":{"type":"pbkdf2","keyslots":["0","1"],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"c2FsdA==","digest":"ZGlnZXN0"}},
  "config":{"json_size":"12288","keyslots_size":"16744448"}
}"#;

    #[test]
    fn luks2_metadata() {
        let i = parse_luks2_json(LUKS2).unwrap();
        assert_eq!(i.data_offset, 16 << 20);
        assert_eq!(i.keyslots, [0, 1]);
        assert_eq!(i.kdfs, ["pbkdf2", "argon2id"]);
        assert_eq!(i.cipher, "aes-xts-plain64");
        assert_eq!(i.sector_size, 512);
    }

    #[test]
    fn luks2_metadata_that_cannot_be_restored_is_refused() {
        let reencrypting = LUKS2.replace(r#""segments":{"0":"#, r#""segments":{"1":{"type":"linear","offset":"33554432","size":"dynamic"},"0":"#);
        assert!(parse_luks2_json(&reencrypting).unwrap_err().to_string().contains("re-encryption"));
        let no_slots = serde_json::to_string(&{
            let mut v: serde_json::Value = serde_json::from_str(LUKS2).unwrap();
            v["keyslots"] = serde_json::json!({});
            v
        })
        .unwrap();
        assert!(parse_luks2_json(&no_slots).unwrap_err().to_string().contains("no key slot"));
        let bad_offset = LUKS2.replace(r#""offset":"16777216""#, r#""offset":"sixteen""#);
        assert!(parse_luks2_json(&bad_offset).is_err());
        assert!(parse_luks2_json("not json").is_err());
    }

    #[test]
    fn lvm2_reports() {
        let pvs = r#"  {
      "report": [
          {
              "pv": [
                  {"pv_name":"/dev/mapper/sda3_crypt", "pv_uuid":"Xa1b2c-0000-0000-0000-0000-0000-000001", "vg_name":"vg0", "pv_size":"20396900352"}
              ]
          }
      ]
  }"#;
        let pv = parse_pvs(pvs).unwrap();
        assert_eq!(
            pv,
            [Pv { device: "/dev/mapper/sda3_crypt".into(), uuid: "Xa1b2c-0000-0000-0000-0000-0000-000001".into(), vg: "vg0".into(), size: 20_396_900_352 }]
        );
        let vgs = r#"{"report":[{"vg":[{"vg_name":"vg0","vg_uuid":"Vg0000-0000","vg_size":"20392706048","vg_extent_size":"4194304"}]}]}"#;
        assert_eq!(parse_vgs(vgs).unwrap()[0].extent_size, 4 << 20);
        let lvs = r#"{"report":[{"lv":[
            {"lv_name":"root","vg_name":"vg0","lv_uuid":"Lv0000-0001","lv_size":"18249416704","lv_attr":"-wi-a-----"},
            {"lv_name":"swap_1","vg_name":"vg0","lv_uuid":"Lv0000-0002","lv_size":"1023410176","lv_attr":"-wi-a-----"},
            {"lv_name":"pool","vg_name":"vg0","lv_uuid":"Lv0000-0003","lv_size":"1073741824","lv_attr":"twi-a-tz--"}
        ]}],"log":[]}"#;
        let lv = parse_lvs(lvs).unwrap();
        assert_eq!(
            lv.iter().map(|l| (l.name.as_str(), l.size, l.kind)).collect::<Vec<_>>(),
            [("root", 18_249_416_704, '-'), ("swap_1", 1_023_410_176, '-'), ("pool", 1_073_741_824, 't')]
        );
        assert!(parse_lvs(r#"{"report":[{"lv":[{"lv_name":"x"}]}]}"#).is_err());
        assert!(parse_lvs(r#"{"nothing":1}"#).is_err());
        assert_eq!(parse_lvs(r#"{"report":[{"lv":[]}]}"#).unwrap(), []);
    }
    #[test]
    fn dm_uuids_as_cryptsetup_and_lvm2_write_them() {
        assert_eq!(
            dm_kind("CRYPT-LUKS2-ba62cbf43ceb41299b12088c07680dac-b_crypt"),
            DmKind::Luks { version: 2, uuid: "ba62cbf4-3ceb-4129-9b12-088c07680dac".into() }
        );
        assert_eq!(
            dm_kind("CRYPT-LUKS1-0a1b2c3d00004000800000000000000a-sda3_crypt"),
            DmKind::Luks { version: 1, uuid: "0a1b2c3d-0000-4000-8000-00000000000a".into() }
        );
        let vg = "Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56";
        let lv = "Qr78St90Uv12Wx34Yz56Ab78Cd90Ef12";
        assert_eq!(
            dm_kind(&format!("LVM-{vg}{lv}")),
            DmKind::Lv { vg_uuid: "Ab12Cd-34Ef-56Gh-78Ij-90Kl-12Mn-34Op56".into(), lv_uuid: "Qr78St-90Uv-12Wx-34Yz-56Ab-78Cd-90Ef12".into() }
        );
        for other in [format!("LVM-{vg}{lv}-real"), "CRYPT-PLAIN-cryptswap".into(), "CRYPT-LUKS2-nothex-x".into(), "mpath-3600".into(), String::new()] {
            assert!(matches!(dm_kind(&other), DmKind::Other(_)), "{other}");
        }
    }

    /// A sysfs tree as the lab's encrypted PC has it: dm-1 (vgb-root) on dm-0 (b_crypt) on vda5.
    fn fake_sys(extra_slave: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let b = t.path().join("class/block");
        let dm = |name: &str, dm_name: &str, uuid: &str, slaves: &[&str]| {
            let d = b.join(name);
            std::fs::create_dir_all(d.join("dm")).unwrap();
            std::fs::create_dir_all(d.join("slaves")).unwrap();
            std::fs::write(d.join("dm/name"), format!("{dm_name}\n")).unwrap();
            std::fs::write(d.join("dm/uuid"), format!("{uuid}\n")).unwrap();
            for s in slaves {
                std::fs::create_dir_all(d.join("slaves").join(s)).unwrap();
            }
        };
        dm("dm-1", "vgb-root", "LVM-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90Uv12Wx34Yz56Ab78Cd90Ef12", if extra_slave { &["dm-0", "vda6"] } else { &["dm-0"] });
        dm("dm-0", "b_crypt", "CRYPT-LUKS2-ba62cbf43ceb41299b12088c07680dac-b_crypt", &["vda5"]);
        std::fs::create_dir_all(b.join("vda5")).unwrap();
        t
    }

    #[test]
    fn the_stack_below_a_logical_volume() {
        let t = fake_sys(false);
        let s = stack_of(t.path(), "dm-1").unwrap();
        let names: Vec<(&str, &str)> = s.iter().map(|l| (l.name.as_str(), l.dm_name.as_str())).collect();
        assert_eq!(names, [("dm-1", "vgb-root"), ("dm-0", "b_crypt"), ("vda5", "")]);
        assert!(matches!(s[0].kind, Some(DmKind::Lv { .. })));
        assert!(matches!(&s[1].kind, Some(DmKind::Luks { version: 2, uuid }) if uuid == "ba62cbf4-3ceb-4129-9b12-088c07680dac"));
        assert_eq!(s[2].kind, None);
        assert_eq!(stack_of(t.path(), "vda5").unwrap().len(), 1);
        let e = stack_of(fake_sys(true).path(), "dm-1").unwrap_err().to_string();
        assert!(e.contains("is built on 2 devices (dm-0, vda6)"), "{e}");
        assert!(stack_of(t.path(), "sdz").is_err());
    }
}
