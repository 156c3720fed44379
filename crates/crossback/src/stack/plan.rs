//! How a system's filesystems are stacked on a partition — partition →
//! LUKS → LVM physical volume → volume group → logical volumes →
//! filesystems — and the plan that makes the stack again on a
//! new partition: the volume group's logical volumes with their recorded
//! names and UUIDs, shrunk to fit a smaller partition as long as the data
//! fits. Plain decisions, no I/O: the restore runs the plan with
//! cryptsetup and lvm2.

use serde::{Deserialize, Serialize};

/// A LUKS container below a system's filesystems, as recorded at backup
/// (`[[luks]]` in `mounts.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LuksRecord {
    pub uuid: String,
    /// The partition it fills: its PARTUUID and size.
    pub partuuid: String,
    pub size: u64,
    /// Where the data begins: the header before it is restored as it was.
    pub data_offset: u64,
    /// `cryptsetup luksHeaderBackup`'s file beside the archives
    /// (`luks-UUID.img`, `.img.age` on an encrypted media), its size and
    /// the BLAKE3 of its plain bytes.
    pub header: String,
    pub header_bytes: u64,
    pub header_hash: String,
}

/// A logical volume, as recorded at backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvRecord {
    pub name: String,
    pub uuid: String,
    pub size: u64,
    /// What is on it: a mount point of the system, `swap`, or empty for a
    /// volume crossback does not back up (made again empty).
    #[serde(default)]
    pub mountpoint: String,
    /// Bytes the filesystem on it used.
    #[serde(default)]
    pub used: u64,
}

/// What a volume holds, for the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holds {
    /// A filesystem of the system, with the bytes its backup used on it.
    Filesystem(u64),
    Swap,
    /// Not part of the system's backup (made again empty, at its size if it fits).
    Other,
}

impl LvRecord {
    pub fn holds(&self) -> Holds {
        match self.mountpoint.as_str() {
            "" => Holds::Other,
            "swap" => Holds::Swap,
            _ => Holds::Filesystem(self.used),
        }
    }
}

/// A volume group, as recorded at backup (`[[vg]]` in `mounts.toml`): on
/// one physical volume, which fills a partition or a LUKS container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgRecord {
    pub name: String,
    pub uuid: String,
    pub pv_uuid: String,
    /// `luks:UUID` (in that container) or `partuuid:PARTUUID` (on that partition).
    pub pv_on: String,
    pub extent_size: u64,
    /// Where the PV's first extent begins (lvm2's `pe_start`, 1 MiB by default).
    pub pe_start: u64,
    #[serde(rename = "lv")]
    pub lvs: Vec<LvRecord>,
    /// The metadata as `vgcfgbackup` wrote it: what `vgcfgrestore` takes back.
    pub metadata: String,
}

/// The stack on one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub luks: Option<LuksRecord>,
    pub vg: Option<VgRecord>,
}

/// A volume group or logical volume name as lvm2 allows it.
pub fn valid_lvm_name(n: &str) -> bool {
    crate::config::valid_vg_name(n)
}

impl LuksRecord {
    pub fn check(&self) -> anyhow::Result<()> {
        if !crate::config::valid_uuid(&self.uuid) {
            anyhow::bail!("a LUKS record whose UUID {:?} is not one", crate::output::text(&self.uuid));
        }
        if self.header != format!("luks-{}.img", self.uuid) && self.header != format!("luks-{}.img.age", self.uuid) {
            anyhow::bail!("LUKS {}: header file {:?} is not named after it", self.uuid, crate::output::text(&self.header));
        }
        if self.header_hash.len() != 64 || !self.header_hash.bytes().all(|b| b.is_ascii_hexdigit()) || self.header_bytes == 0 || self.header_bytes > 64 << 20 {
            anyhow::bail!("LUKS {}: no valid header size and hash", self.uuid);
        }
        Ok(())
    }
}

impl VgRecord {
    pub fn check(&self) -> anyhow::Result<()> {
        if !valid_lvm_name(&self.name) || self.lvs.iter().any(|l| !valid_lvm_name(&l.name)) {
            anyhow::bail!("a volume group record with a name lvm2 would not take ({:?})", crate::output::text(&self.name));
        }
        let on_ok = match self.pv_on.split_once(':') {
            Some(("luks", u)) => crate::config::valid_uuid(u),
            Some(("partuuid", u)) => !u.is_empty() && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
            _ => false,
        };
        if !on_ok || self.extent_size == 0 {
            anyhow::bail!("volume group {}: its physical volume's place {:?} or extent size does not read", self.name, crate::output::text(&self.pv_on));
        }
        Ok(())
    }
}

/// One logical volume to make: its recorded name and UUID, its new size in extents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LvPlan {
    pub name: String,
    pub uuid: String,
    pub extents: u64,
    /// Smaller than it was (the partition is smaller).
    pub shrunk: bool,
}

/// Room a filesystem keeps above its data when shrunk: a tenth of it, at least 256 MiB.
fn headroom(used: u64) -> u64 {
    (used / 10).max(256 << 20)
}

/// A swap volume shrinks down to this.
const MIN_SWAP: u64 = 64 << 20;

fn extents(bytes: u64, extent: u64) -> u64 {
    bytes.div_ceil(extent)
}

/// The fewest extents each volume can have: its data and headroom, a swap
/// 64 MiB, an unknown volume its size; never more than it had.
fn min_extents(vg: &VgRecord) -> Vec<u64> {
    vg.lvs
        .iter()
        .map(|lv| {
            let had = extents(lv.size, vg.extent_size);
            let m = match lv.holds() {
                Holds::Filesystem(used) => extents(used + headroom(used), vg.extent_size),
                Holds::Swap => extents(MIN_SWAP, vg.extent_size),
                Holds::Other => had,
            };
            m.min(had)
        })
        .collect()
}

/// The smallest partition the stack fits in, in bytes (the LUKS header,
/// the PV's metadata area and the volumes at their smallest); `fs_min`
/// is what a filesystem right in the container needs.
pub fn stack_minimum(stack: &Stack, fs_min: u64) -> u64 {
    let luks = stack.luks.as_ref().map_or(0, |l| l.data_offset);
    match &stack.vg {
        Some(vg) => luks + vg.pe_start + min_extents(vg).iter().sum::<u64>() * vg.extent_size,
        None => luks + fs_min,
    }
}

/// Sizes the volume group's logical volumes for a partition of
/// `partition_size` bytes: as recorded when they fit; otherwise each
/// shrinks towards its minimum (its data and headroom; a swap to 64 MiB;
/// an unknown one keeps its size), sharing what is left in proportion to
/// what each had above its minimum. `Err` says why it does not fit.
pub fn plan_lvs(stack: &Stack, partition_size: u64) -> Result<Vec<LvPlan>, String> {
    let Some(vg) = &stack.vg else { return Ok(Vec::new()) };
    if vg.extent_size == 0 {
        return Err(format!("volume group {}: its recorded extent size is 0", vg.name));
    }
    let luks = stack.luks.as_ref().map_or(0, |l| l.data_offset);
    let usable = partition_size.saturating_sub(luks).saturating_sub(vg.pe_start) / vg.extent_size;
    let want: Vec<u64> = vg.lvs.iter().map(|lv| extents(lv.size, vg.extent_size)).collect();
    if want.iter().sum::<u64>() <= usable {
        return Ok(vg.lvs.iter().zip(want).map(|(lv, e)| LvPlan { name: lv.name.clone(), uuid: lv.uuid.clone(), extents: e, shrunk: false }).collect());
    }
    let min = min_extents(vg);
    let need: u64 = min.iter().sum();
    if need > usable {
        let what: Vec<String> = vg.lvs.iter().zip(&min).map(|(lv, m)| format!("{} {} MiB", lv.name, (m * vg.extent_size) >> 20)).collect();
        return Err(format!(
            "volume group {} needs at least {} MiB ({}) and the new partition holds {} MiB of extents{}",
            vg.name,
            (need * vg.extent_size) >> 20,
            what.join(", "),
            (usable * vg.extent_size) >> 20,
            if luks > 0 { " after the LUKS header" } else { "" }
        ));
    }
    // What is left above the minimums goes to each in proportion to what it had above its own.
    let spare = usable - need;
    let above: Vec<u64> = want.iter().zip(&min).map(|(w, m)| w - m).collect();
    let total_above: u64 = above.iter().sum();
    let mut sizes: Vec<u64> = min
        .iter()
        .zip(&above)
        .map(|(m, a)| m + if total_above == 0 { 0 } else { ((u128::from(spare) * u128::from(*a)) / u128::from(total_above)) as u64 })
        .collect();
    // Rounding leaves a few extents: to the first that can take them.
    let mut left = usable - sizes.iter().sum::<u64>();
    for (s, w) in sizes.iter_mut().zip(&want) {
        let take = left.min(w - *s);
        *s += take;
        left -= take;
    }
    Ok(vg.lvs.iter().zip(sizes).zip(want).map(|((lv, e), w)| LvPlan { name: lv.name.clone(), uuid: lv.uuid.clone(), extents: e, shrunk: e < w }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// Debian's "guided - use entire disk and set up encrypted LVM": root and swap_1 in vg0 on LUKS2.
    fn debian(root_used: u64) -> Stack {
        Stack {
            luks: Some(LuksRecord {
                uuid: "0a1b2c3d-0000-4000-8000-000000000003".into(),
                partuuid: "p3".into(),
                size: 20 * GIB,
                data_offset: 16 * MIB,
                header: "luks-0a1b2c3d-0000-4000-8000-000000000003.img".into(),
                header_bytes: 16 * MIB,
                header_hash: "0".repeat(64),
            }),
            vg: Some(VgRecord {
                name: "vg0".into(),
                uuid: "Vg0".into(),
                pv_uuid: "Pv0".into(),
                pv_on: "luks:0a1b2c3d-0000-4000-8000-000000000003".into(),
                extent_size: 4 * MIB,
                pe_start: MIB,
                lvs: vec![
                    LvRecord { name: "root".into(), uuid: "Lv1".into(), size: 18 * GIB, mountpoint: "/".into(), used: root_used },
                    LvRecord { name: "swap_1".into(), uuid: "Lv2".into(), size: GIB, mountpoint: "swap".into(), used: 0 },
                ],
                metadata: String::new(),
            }),
        }
    }

    fn total(p: &[LvPlan]) -> u64 {
        p.iter().map(|l| l.extents).sum()
    }

    #[test]
    fn as_recorded_when_it_fits() {
        let p = plan_lvs(&debian(2 * GIB), 20 * GIB).unwrap();
        assert_eq!(
            p.iter().map(|l| (l.name.as_str(), l.uuid.as_str(), l.extents, l.shrunk)).collect::<Vec<_>>(),
            [("root", "Lv1", 4608, false), ("swap_1", "Lv2", 256, false)]
        );
    }

    #[test]
    fn shrunk_to_fit_a_smaller_partition_keeping_data_and_headroom() {
        let part = 8 * GIB;
        let p = plan_lvs(&debian(2 * GIB), part).unwrap();
        let usable = (part - 16 * MIB - MIB) / (4 * MIB);
        assert_eq!(total(&p), usable, "every extent of the new partition is used");
        assert!(p.iter().all(|l| l.shrunk));
        // root keeps its data and 256 MiB at least; swap keeps 64 MiB at least.
        assert!(p[0].extents * 4 * MIB >= 2 * GIB + 256 * MIB);
        assert!(p[1].extents * 4 * MIB >= 64 * MIB);
        // In proportion: root had far more above its minimum than swap.
        assert!(p[0].extents > 10 * p[1].extents, "{p:?}");
    }

    /// The smallest partition `plan_lvs` accepts is what `stack_minimum` says.
    #[test]
    fn the_minimum_is_the_smallest_partition_the_plan_takes() {
        let s = debian(2 * GIB);
        let min = stack_minimum(&s, 0);
        assert!(plan_lvs(&s, min).is_ok());
        assert!(plan_lvs(&s, min - 4 * MIB).is_err());
        let luks_only = Stack { luks: s.luks.clone(), vg: None };
        assert_eq!(stack_minimum(&luks_only, GIB), 16 * MIB + GIB);
    }

    #[test]
    fn too_small_says_what_it_needs() {
        let e = plan_lvs(&debian(6 * GIB), 6 * GIB).unwrap_err();
        assert!(
            e.contains("volume group vg0 needs at least") && e.contains("root 6760 MiB") && e.contains("swap_1 64 MiB") && e.contains("after the LUKS header"),
            "{e}"
        );
    }

    #[test]
    fn a_volume_crossback_does_not_back_up_keeps_its_size() {
        let mut s = debian(GIB);
        s.vg.as_mut().unwrap().lvs.push(LvRecord { name: "vms".into(), uuid: "Lv3".into(), size: 2 * GIB, mountpoint: String::new(), used: 0 });
        let p = plan_lvs(&s, 6 * GIB).unwrap();
        assert_eq!(p[2].extents, 512);
        assert!(!p[2].shrunk);
        assert!(p[0].shrunk);
    }

    #[test]
    fn no_lvm_no_volumes_and_rounding_never_overfills() {
        assert!(plan_lvs(&Stack { luks: None, vg: None }, GIB).unwrap().is_empty());
        for part in [5 * GIB + 3 * MIB, 7 * GIB + 777 * MIB, 12 * GIB + 1] {
            let p = plan_lvs(&debian(GIB), part).unwrap();
            assert!(total(&p) <= (part - 17 * MIB) / (4 * MIB), "{part}: {p:?}");
        }
    }
}
