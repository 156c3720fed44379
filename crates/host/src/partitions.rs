//! Partition tables (GPT and MBR), read and written by util-linux's
//! `sfdisk`: what a disk held, recorded at backup, and made again on a new
//! disk at restore — the same disk identifier, partition UUIDs, types,
//! names and attributes, so that everything naming a partition by PARTUUID
//! (the firmware's boot entries, an fstab, a kernel command line) still
//! finds it; partitions shrunk to fit a smaller disk when their data fits.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tool::Tool;

/// One disk's partition table.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// `gpt` or `dos`.
    pub label: String,
    /// The disk GUID (GPT) or the disk identifier `0x…` (MBR).
    pub id: String,
    pub sector_size: u64,
    /// The disk's size in sectors.
    pub sectors: u64,
    #[serde(rename = "partition")]
    pub partitions: Vec<Partition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    /// In sectors.
    pub start: u64,
    pub size: u64,
    /// A GPT type GUID, or an MBR type in hex (`83`, `ef`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The PARTUUID as blkid shows it (for MBR: `DISKID-NN`).
    pub uuid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub attrs: String,
    #[serde(default)]
    pub bootable: bool,
}

/// sfdisk's `--json` output.
#[derive(Deserialize)]
struct Json {
    partitiontable: JsonTable,
}

#[derive(Deserialize)]
struct JsonTable {
    label: String,
    id: String,
    #[serde(default = "default_sector_size")]
    sectorsize: u64,
    #[serde(default)]
    partitions: Vec<JsonPartition>,
}

fn default_sector_size() -> u64 {
    512
}

#[derive(Deserialize)]
struct JsonPartition {
    node: String,
    start: u64,
    size: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    attrs: Option<String>,
    #[serde(default)]
    bootable: bool,
}

/// The number at the end of a partition's device name (`sda2`, `nvme0n1p3`).
fn number_of(node: &str) -> Option<u32> {
    let digits: String = node.chars().rev().take_while(char::is_ascii_digit).collect::<Vec<_>>().into_iter().rev().collect();
    digits.parse().ok()
}

/// The device of partition `n` of `disk`: `sda` → `sda2`, `nvme0n1`/`loop3` → `nvme0n1p2`.
pub fn partition_device(disk: &Path, n: u32) -> PathBuf {
    let s = disk.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

/// Size of a block device in 512-byte sectors, from sysfs.
pub fn sectors_512(disk: &Path) -> Result<u64> {
    let name = disk.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = std::fs::read_to_string(crate::blockdev::sys_dir(&name).join("size"))
        .map_err(|e| Error::Io { what: format!("reading the size of {}", disk.display()), source: e })?;
    text.trim().parse().map_err(|_| Error::Command(format!("{}: size {:?} in sysfs", disk.display(), text.trim())))
}

/// The partition table of `disk`, or None when it has none.
pub fn read(disk: &Path) -> Result<Option<Table>> {
    // English, matched under LC_ALL=C (the runner's): no table is no error.
    let mut sfdisk = Tool::new("sfdisk");
    sfdisk.arg("--json").arg(disk);
    let out = sfdisk.output()?;
    if !out.status.success() {
        if out.stderr_text().contains("does not contain a recognized partition table") {
            return Ok(None);
        }
        return Err(sfdisk.failed(&out));
    }
    let j: Json = serde_json::from_slice(&out.stdout).map_err(|e| Error::Command(format!("sfdisk --json {}: {e}", disk.display())))?;
    let t = j.partitiontable;
    let sectors = sectors_512(disk)? * 512 / t.sectorsize.max(512);
    let mut partitions = Vec::new();
    for p in t.partitions {
        let number = number_of(&p.node).ok_or_else(|| Error::Command(format!("sfdisk: partition {:?} has no number", p.node)))?;
        let uuid = match (&p.uuid, t.label.as_str()) {
            (Some(u), _) => u.to_lowercase(),
            (None, "dos") => format!("{}-{number:02}", t.id.trim_start_matches("0x")),
            (None, _) => String::new(),
        };
        partitions.push(Partition {
            number,
            start: p.start,
            size: p.size,
            kind: p.kind.to_lowercase(),
            uuid,
            name: p.name.unwrap_or_default(),
            attrs: p.attrs.unwrap_or_default(),
            bootable: p.bootable,
        });
    }
    Ok(Some(Table { label: t.label, id: t.id.to_lowercase(), sector_size: t.sectorsize, sectors, partitions }))
}

impl Table {
    /// The last sector a partition may use on a disk of `sectors`.
    pub(crate) fn last_usable(&self, sectors: u64) -> u64 {
        // GPT keeps its backup header and entries (33 sectors) at the end.
        if self.label == "gpt" {
            sectors.saturating_sub(34)
        } else {
            sectors.saturating_sub(1)
        }
    }

    /// What sfdisk reads to make this table again.
    /// Each partition is named by its device on `disk` (`/dev/sdb3 : …`), so
    /// that sfdisk gives it its recorded number: numbered in script order,
    /// a table whose numbers are not in disk order (or have gaps) would pair
    /// one partition's type and PARTUUID with another's place.
    pub fn script(&self, disk: &Path) -> String {
        let mut s = format!("label: {}\nlabel-id: {}\nunit: sectors\nsector-size: {}\n", self.label, self.id, self.sector_size);
        for p in &self.partitions {
            s.push_str(&format!("{} : start={}, size={}, type={}", partition_device(disk, p.number).display(), p.start, p.size, p.kind));
            if self.label == "gpt" {
                s.push_str(&format!(", uuid={}", p.uuid));
                if !p.name.is_empty() {
                    s.push_str(&format!(", name=\"{}\"", p.name));
                }
                if !p.attrs.is_empty() {
                    s.push_str(&format!(", attrs=\"{}\"", p.attrs));
                }
            } else if p.bootable {
                s.push_str(", bootable");
            }
            s.push('\n');
        }
        s
    }

    /// Checks what was read from a slot before it is written to a disk:
    /// values sfdisk's script syntax could misread, overlaps, sizes.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !matches!(self.label.as_str(), "gpt" | "dos") {
            return Err(format!("partition table type {:?}", self.label));
        }
        let plain = |s: &str, extra: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
        if !plain(&self.id, "-x") || !matches!(self.sector_size, 512 | 1024 | 2048 | 4096) {
            return Err("the disk identifier or sector size is not plain".into());
        }
        let mut sorted: Vec<&Partition> = self.partitions.iter().collect();
        sorted.sort_by_key(|p| p.start);
        let mut end = 0;
        for p in sorted {
            if !plain(&p.kind, "-") || !plain(&p.uuid, "-") || !plain(&p.attrs, " :,=") || p.name.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
                return Err(format!("partition {} holds a value that is not plain", p.number));
            }
            if p.number == 0 || p.number > 128 || p.size == 0 || p.start < end || p.start.checked_add(p.size).is_none_or(|e| e > self.sectors) {
                return Err(format!("partition {} does not fit its disk or overlaps another", p.number));
            }
            end = p.start + p.size;
        }
        Ok(())
    }

    /// The table made to fit a disk of `sectors`: as it was when it fits;
    /// otherwise the partitions are laid out one after the other from the
    /// first one's start, 1 MiB aligned, each given at least `min(p)`
    /// sectors (None: its size as it was, e.g. a partition whose content
    /// is not backed up) and the rest shared in proportion to what each
    /// had beyond its minimum. An error says what does not fit.
    pub fn fit(&self, sectors: u64, min: &dyn Fn(&Partition) -> Option<u64>) -> std::result::Result<Table, String> {
        let mut t = self.clone();
        t.sectors = sectors;
        let last = self.last_usable(sectors);
        if self.partitions.iter().all(|p| p.start + p.size - 1 <= last) {
            return Ok(t);
        }
        if self.label == "dos" && self.partitions.iter().any(|p| matches!(p.kind.as_str(), "5" | "f" | "85") || p.number > 4) {
            return Err("an MBR table with extended or logical partitions is only made again on a disk at least as large".into());
        }
        let align = (1 << 20) / self.sector_size;
        let up = |x: u64| x.div_ceil(align) * align;
        let down = |x: u64| x / align * align;
        t.partitions.sort_by_key(|p| p.start);
        let first = t.partitions.first().map_or(align, |p| p.start);
        let mins: Vec<u64> = t.partitions.iter().map(|p| min(p).map_or(p.size, |m| up(m.max(1)))).collect();
        let need: u64 = mins.iter().map(|&m| up(m)).sum();
        let avail = last + 1 - first.min(last + 1);
        if need > avail {
            let mb = |s: u64| (s * self.sector_size) >> 20;
            return Err(format!(
                "the partitions need at least {} MiB from sector {first} on (their data, and what their filesystems take), and the disk has {} MiB there",
                mb(need),
                mb(avail)
            ));
        }
        let slack: Vec<u64> = t.partitions.iter().zip(&mins).map(|(p, &m)| p.size.saturating_sub(m)).collect();
        let total_slack: u64 = slack.iter().sum();
        let spare = avail - need;
        let mut start = first;
        for (i, p) in t.partitions.iter_mut().enumerate() {
            let extra = if total_slack == 0 { 0 } else { (u128::from(slack[i]) * u128::from(spare) / u128::from(total_slack)) as u64 };
            p.start = up(start);
            p.size = down(mins[i] + extra).max(mins[i]).min(last + 1 - p.start);
            start = p.start + p.size;
        }
        Ok(t)
    }
}

/// Writes `t` to `disk` (which must hold no table the caller has not
/// agreed to lose) and waits for the kernel to show its partitions.
pub fn write(disk: &Path, t: &Table) -> Result<()> {
    write_script(disk, &t.script(disk), &t.partitions.iter().map(|p| p.number).collect::<Vec<_>>())
}

/// Writes the table sfdisk's `script` describes to `disk` (which must hold
/// no table the caller has not agreed to lose) and waits for the kernel to
/// show the partitions `numbers`.
pub fn write_script(disk: &Path, script: &str, numbers: &[u32]) -> Result<()> {
    Tool::new("sfdisk").args(["--quiet", "--wipe", "always", "--wipe-partitions", "always"]).arg(disk).input(script.as_bytes()).run()?;
    // sfdisk asked the kernel to read the new table; a kernel without the
    // parser (or a loop device) needs partx to add the partitions.
    let all_there = || numbers.iter().all(|n| partition_device(disk, *n).exists());
    let start = std::time::Instant::now();
    let mut tried_partx = false;
    while !all_there() {
        if start.elapsed() > std::time::Duration::from_secs(1) && !tried_partx {
            tried_partx = true;
            // Best effort: what counts is whether the partitions appear.
            let _ = Tool::new("partx").arg("-u").arg(disk).output();
            let _ = Tool::new("partx").arg("-a").arg(disk).output();
        }
        if start.elapsed() > std::time::Duration::from_secs(15) {
            return Err(Error::Command(format!("the kernel does not show the new partitions of {} (tried partx)", disk.display())));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let p = |number, start, size, kind: &str| Partition {
            number,
            start,
            size,
            kind: kind.into(),
            uuid: format!("0000000{number}-0000-4000-8000-000000000000"),
            name: format!("p{number}"),
            attrs: String::new(),
            bootable: false,
        };
        Table {
            label: "gpt".into(),
            id: "d0b7a0c5-0000-4000-8000-000000000001".into(),
            sector_size: 512,
            sectors: 12_582_912,
            partitions: vec![
                p(1, 2048, 524_288, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
                p(2, 526_336, 5_242_880, "0fc63daf-8483-4772-8e79-3d69e47d7de4"),
                p(3, 5_769_216, 6_811_648, "0fc63daf-8483-4772-8e79-3d69e47d7de4"),
            ],
        }
    }

    #[test]
    fn a_table_that_fits_stays_as_it_was() {
        let t = table();
        assert_eq!(t.fit(t.sectors, &|_| Some(2048)).unwrap().partitions, t.partitions);
        assert_eq!(t.fit(t.sectors * 2, &|_| None).unwrap().partitions, t.partitions);
        assert!(t.check().is_ok());
        let s = t.script(Path::new("/dev/sdb"));
        assert!(s.starts_with("label: gpt\nlabel-id: d0b7a0c5-0000-4000-8000-000000000001\n"), "{s}");
        assert!(
            s.contains(
                "/dev/sdb1 : start=2048, size=524288, type=c12a7328-f81f-11d2-ba4b-00a0c93ec93b, uuid=00000001-0000-4000-8000-000000000000, name=\"p1\""
            ),
            "{s}"
        );
    }

    /// Numbers not in disk order (the ESP is partition 3, at
    /// the start) stay with their partitions through shrinking and the
    /// script, whatever order the script lists them in.
    #[test]
    fn partition_numbers_stay_paired_with_their_partitions() {
        let mut t = table();
        t.partitions[0].number = 3;
        t.partitions[2].number = 1;
        t.partitions.reverse();
        let f = t.fit(t.sectors * 8 / 10, &|p: &Partition| if p.number == 3 { None } else { Some(2_097_152) }).unwrap();
        let esp = f.partitions.iter().find(|p| p.kind.starts_with("c12a7328")).unwrap();
        assert_eq!((esp.number, esp.start), (3, 2048));
        let s = f.script(Path::new("/dev/nvme0n1"));
        let esp_line = s.lines().find(|l| l.contains("c12a7328")).unwrap();
        assert!(esp_line.starts_with("/dev/nvme0n1p3 : start=2048,"), "{s}");
        assert!(esp_line.contains("uuid=00000001-"), "the ESP keeps its PARTUUID: {s}");
        let root_line = s.lines().find(|l| l.contains("uuid=00000003-")).unwrap();
        assert!(root_line.starts_with("/dev/nvme0n1p1 : "), "{s}");
    }

    #[test]
    fn partitions_shrink_to_a_smaller_disk_as_far_as_their_data_allows() {
        let t = table();
        let small = t.sectors * 8 / 10;
        // The ESP keeps its size (None); the others need 1 GiB each.
        let min = |p: &Partition| if p.number == 1 { None } else { Some(2_097_152) };
        let f = t.fit(small, &min).unwrap();
        assert!(f.check().is_ok(), "{f:?}");
        assert_eq!(f.partitions[0].size, 524_288);
        assert_eq!(f.partitions[0].start, 2048);
        for (a, b) in f.partitions.iter().zip(f.partitions.iter().skip(1)) {
            assert!(a.start + a.size <= b.start);
        }
        let last = f.partitions.last().unwrap();
        assert!(last.start + last.size - 1 <= f.last_usable(small));
        assert!(f.partitions.iter().skip(1).all(|p| p.size >= 2_097_152 && p.start % 2048 == 0));
        // Identities kept.
        assert!(f.partitions.iter().zip(&t.partitions).all(|(a, b)| a.uuid == b.uuid && a.kind == b.kind && a.number == b.number));
        // Too small for the data: an error that says so.
        let e = t.fit(3_000_000, &min).unwrap_err();
        assert!(e.contains("need at least"), "{e}");
    }

    #[test]
    fn crafted_values_are_refused() {
        let mut t = table();
        t.partitions[1].name = "x\", type=83".into();
        assert!(t.check().is_err());
        let mut t = table();
        t.partitions[2].start = 600_000;
        assert!(t.check().is_err(), "overlap");
        let mut t = table();
        t.partitions[2].size = u64::MAX;
        assert!(t.check().is_err());
        let mut t = table();
        t.id = "x\nlabel: dos".into();
        assert!(t.check().is_err());
    }

    #[test]
    fn partition_devices_are_named_as_the_kernel_names_them() {
        assert_eq!(partition_device(Path::new("/dev/sda"), 2), PathBuf::from("/dev/sda2"));
        assert_eq!(partition_device(Path::new("/dev/nvme0n1"), 3), PathBuf::from("/dev/nvme0n1p3"));
        assert_eq!(partition_device(Path::new("/dev/loop7"), 1), PathBuf::from("/dev/loop7p1"));
        assert_eq!(number_of("/dev/loop7p12"), Some(12));
    }
}
