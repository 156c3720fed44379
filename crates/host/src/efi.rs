//! The firmware's boot entries (UEFI NVRAM), read and made with
//! `efibootmgr`: which loader on which partition each entry starts, so that
//! after a disk is replaced the entries can be made again for the
//! partitions restored with the same PARTUUIDs.

use crate::tool::Tool;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One boot entry that starts a loader from a disk partition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BootEntry {
    pub label: String,
    /// The PARTUUID of the partition holding the loader.
    pub partuuid: String,
    /// The loader's path on that partition, as the firmware writes it (`\EFI\debian\shimx64.efi`).
    pub loader: String,
    /// Its place in the boot order (0 first), if it has one.
    pub order: Option<u32>,
}

/// True when this machine was booted by UEFI and shows its variables.
pub fn available() -> bool {
    Path::new("/sys/firmware/efi/efivars").is_dir()
}

/// Parses `efibootmgr -v`: entries with a `HD(…)` device path and a file.
pub fn parse(text: &str) -> Vec<BootEntry> {
    let order: Vec<String> =
        // No BootOrder variable: the firmware has no order set.
        text.lines().find_map(|l| l.strip_prefix("BootOrder:")).map(|o| o.trim().split(',').map(|s| s.trim().to_uppercase()).collect()).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("Boot") else { continue };
        let Some((num, rest)) = rest.split_once(['*', ' ']) else { continue };
        if num.len() != 4 || !num.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let rest = rest.trim_start_matches('*').trim_start();
        let Some(hd) = rest.find("HD(") else { continue };
        let label = rest[..hd].trim().to_string();
        let after = &rest[hd + 3..];
        let Some(close) = after.find(')') else { continue };
        let fields: Vec<&str> = after[..close].split(',').collect();
        if fields.len() < 3 {
            continue;
        }
        let partuuid = fields[2].trim().to_lowercase();
        let tail = after[close + 1..].trim_start_matches('/');
        let file = tail
            .strip_prefix("File(")
            .map(|f| f.split(')').next().unwrap_or(""))
            .unwrap_or_else(|| tail.split(|c: char| c.is_whitespace()).next().unwrap_or(""));
        if !file.starts_with('\\') || partuuid.is_empty() {
            continue;
        }
        let loader = file.split(|c: char| c == ')' || c.is_control()).next().unwrap_or("").to_string();
        out.push(BootEntry { label, partuuid, loader, order: order.iter().position(|o| o.eq_ignore_ascii_case(num)).map(|p| p as u32) });
    }
    out
}

/// The firmware's boot entries that start a loader from a partition.
pub fn entries() -> Result<Vec<BootEntry>> {
    if !available() {
        return Ok(Vec::new());
    }
    Ok(parse(&Tool::new("efibootmgr").arg("-v").run()?))
}

/// Sets the firmware's next boot (BootNext) to the entry this boot was
/// started from (BootCurrent); returns its number, None without UEFI.
pub fn boot_next_to_current() -> Result<Option<String>> {
    if !available() {
        return Ok(None);
    }
    let text = Tool::new("efibootmgr").run()?;
    let Some(current) = text.lines().find_map(|l| l.strip_prefix("BootCurrent:")).map(|c| c.trim().to_string()) else {
        return Err(Error::Command("efibootmgr shows no BootCurrent".into()));
    };
    Tool::new("efibootmgr").args(["--bootnext", &current]).run()?;
    Ok(Some(current))
}

/// Makes an entry for `loader` on partition `part` of `disk` (efibootmgr
/// puts it first in the boot order).
pub fn create(disk: &Path, part: u32, label: &str, loader: &str) -> Result<()> {
    Tool::new("efibootmgr").args(["--create", "--disk"]).arg(disk).args(["--part", &part.to_string(), "--label", label, "--loader", loader]).run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_efibootmgr_are_read() {
        // efibootmgr 17 (Debian 12) and 18 (Debian 13).
        let v17 = "BootCurrent: 0004\nTimeout: 0 seconds\nBootOrder: 0004,0005,0001\nBoot0001* UEFI Misc Device\tPciRoot(0x0)/Pci(0x3,0x0){auto_created_boot_option}\nBoot0004* debian-a\tHD(1,GPT,4C1C1B3E-2D67-4E4B-9F0B-0E0D6B0F1A11,0x800,0x80000)/File(\\EFI\\debian-a\\shimx64.efi)\nBoot0005* debian-b\tHD(1,GPT,4c1c1b3e-2d67-4e4b-9f0b-0e0d6b0f1a11,0x800,0x80000)/File(\\EFI\\debian-b\\grubx64.efi)..BO\n";
        let e = parse(v17);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0],
            BootEntry {
                label: "debian-a".into(),
                partuuid: "4c1c1b3e-2d67-4e4b-9f0b-0e0d6b0f1a11".into(),
                loader: "\\EFI\\debian-a\\shimx64.efi".into(),
                order: Some(0)
            }
        );
        assert_eq!(e[1].loader, "\\EFI\\debian-b\\grubx64.efi");
        assert_eq!(e[1].order, Some(1));
        let v18 = "BootOrder: 0002,0001\nBoot0001* UEFI Misc Device\tPciRoot(0x0)/Pci(0x3,0x0)\nBoot0002* debian\tHD(1,GPT,4c1c1b3e-2d67-4e4b-9f0b-0e0d6b0f1a11,0x800,0x80000)/\\EFI\\debian\\shimx64.efi\n";
        let e = parse(v18);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].label.as_str(), e[0].loader.as_str(), e[0].order), ("debian", "\\EFI\\debian\\shimx64.efi", Some(0)));
        assert!(parse("Boot0003* weird\tHD(1,GPT\nBootXYZ* x\n").is_empty());
    }
}
