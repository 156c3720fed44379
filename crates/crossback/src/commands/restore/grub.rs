//! A GRUB EFI system's bootloader repaired after its filesystems got new
//! UUIDs: its own tools in a chroot, each step an argument vector.

use crossback_host::tool::Tool;
use std::path::{Path, PathBuf};

use anyhow::Context;
use crossback_host::beneath::Dir;

use crate::error::Refusal;
use crate::layout::FsRecord;
use crate::output;
use crate::refuse;

/// What a GRUB EFI system needs repaired after its filesystems got new UUIDs.
pub(super) struct GrubRepair {
    /// The ESP's mount point in the system (`/boot/efi`).
    pub(super) esp: String,
    /// The loader directory on the ESP whose grub.cfg named the old root (`debian`).
    pub(super) id: Option<String>,
    /// The initramfs names an old UUID too (crypttab, resume).
    pub(super) initramfs: bool,
}

/// Finds out whether the restored system boots with GRUB EFI, and from which
/// loader directory: the one whose grub.cfg searches for the old root UUID.
pub(super) fn grub_of(dests: &[(String, PathBuf)], records: &[&FsRecord], root_partition: Option<u32>, others: &[String]) -> Option<GrubRepair> {
    let (_, tree) = dests.iter().find(|(mp, _)| mp == "/")?;
    let root = Dir::open(tree).ok()?;
    let has = |dir: &str, name: &str| root.dir(dir).ok().and_then(|d| d.kind(name).ok().flatten()).is_some();
    if !has("usr/sbin", "grub-install") && !has("usr/bin", "grub-install") {
        return None;
    }
    let esp = records.iter().find(|r| r.fstype == "vfat" && matches!(r.mountpoint.as_str(), "/boot/efi" | "/efi" | "/boot"))?;
    let (_, esp_at) = dests.iter().find(|(mp, _)| *mp == esp.mountpoint)?;
    let old_root = records.iter().find(|r| r.mountpoint == "/").map(|r| r.uuid.to_lowercase()).unwrap_or_default();
    // With /boot apart (encrypted installs), GRUB's image names /boot's filesystem.
    let old_boot = records.iter().find(|r| r.mountpoint == "/boot" && r.fstype != "vfat").map(|r| r.uuid.to_lowercase());
    let mut id = None;
    if let Ok(efi) = Dir::open(esp_at).and_then(|d| d.dir("EFI").or_else(|_| d.dir("efi"))) {
        // A directory that does not read holds no GRUB found: the restore
        // then says the boot was not repaired.
        for (name, _) in efi.entries().unwrap_or_default() {
            let Some(name) = name.to_str().map(str::to_string) else { continue };
            let Ok(dir) = efi.dir(&name) else { continue };
            // A signed GRUB (shim) reads grub.cfg on the ESP; an unsigned
            // one carries its search in its image: the root's UUID, or (as
            // Debian 12 installs it) the root's partition, `(,gpt2)/boot/grub`.
            let marks: Vec<String> =
                [Some(old_root.clone()), old_boot.clone(), root_partition.map(|n| format!("(,gpt{n})/")), root_partition.map(|n| format!("(,msdos{n})/"))]
                    .into_iter()
                    .flatten()
                    .filter(|m| !m.is_empty())
                    .collect();
            let names_root = |file: &str| {
                dir.read_capped(file, 16 << 20).is_ok_and(|b| {
                    let text = String::from_utf8_lossy(&b).to_lowercase();
                    marks.iter().any(|m| text.contains(m.as_str()))
                })
            };
            let efi_files: Vec<String> = dir
                .entries()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(n, _)| n.to_str().map(str::to_string))
                .filter(|n| n.to_lowercase().ends_with(".efi") || n == "grub.cfg")
                .collect();
            if !marks.is_empty() && !name.eq_ignore_ascii_case("boot") && efi_files.iter().any(|f| names_root(f)) {
                id = Some(name);
                break;
            }
        }
    }
    let initramfs = others.iter().any(|o| o.starts_with("/etc/crypttab") || o.starts_with("/etc/initramfs-tools"));
    Some(GrubRepair { esp: esp.mountpoint.clone(), id, initramfs })
}

/// Reinstalls GRUB EFI and regenerates its configuration (and the
/// initramfs when it names an old UUID) with the system's own tools, in a
/// chroot of the restored system (`crossback chroot`). Each step is its own
/// argument vector — a name read from the ESP or the restored tree is one
/// argument, never shell text — and the first that fails is said as failed.
pub(super) fn repair_grub(path: &Path, system: &str, g: &GrubRepair, keys: &[PathBuf]) -> anyhow::Result<()> {
    let steps = grub_steps(g);
    let shown: Vec<String> = steps.iter().map(|s| s.iter().map(|a| output::text(a)).collect::<Vec<_>>().join(" ")).collect();
    println!("boot: repairing {system}'s GRUB for its new UUIDs, in a chroot: {}", shown.join(", then "));
    // udev's /dev/disk/by-uuid links for the new filesystems: update-grub
    // names the root by UUID only when its link exists.
    let _ = Tool::new("udevadm").arg("settle").output();
    let exe = std::env::current_exe().context("finding crossback's own binary")?;
    for (step, shown) in steps.iter().zip(&shown) {
        // The chroot opens the system's containers: with the same keys.
        let mut tool = Tool::new(&exe);
        tool.arg("--config").arg(path);
        for k in keys {
            tool.arg("--key-file").arg(k);
        }
        let status = tool.args(["chroot", system, "--"]).args(step).command().status().context("running crossback chroot")?;
        if !status.success() {
            refuse!(
                Refusal::BootRepair,
                "repairing {system}'s bootloader failed: `{shown}` ended with {status}; the files are restored: repair it by hand in `crossback chroot {system}`"
            );
        }
    }
    println!("boot: {system}'s GRUB now finds its new UUIDs{}", g.id.as_ref().map(|i| format!(" (loader EFI/{})", output::text(i))).unwrap_or_default());
    Ok(())
}

/// The commands of a GRUB repair, each an argument vector.
pub(super) fn grub_steps(g: &GrubRepair) -> Vec<Vec<String>> {
    let mut install = vec!["grub-install".to_string(), "--target=x86_64-efi".to_string(), format!("--efi-directory={}", g.esp)];
    if let Some(id) = &g.id {
        install.push(format!("--bootloader-id={id}"));
    }
    let mut steps = vec![install, vec!["update-grub".to_string()]];
    if g.initramfs {
        steps.push(["update-initramfs", "-u", "-k", "all"].map(String::from).to_vec());
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mountpoint: &str, fstype: &str, uuid: &str) -> FsRecord {
        FsRecord {
            mountpoint: mountpoint.into(),
            fstype: fstype.into(),
            uuid: uuid.into(),
            label: String::new(),
            partuuid: String::new(),
            subvol: None,
            size: 0,
            used: 0,
            options: vec![],
            fstab_line: String::new(),
            archive: String::new(),
            params: vec![],
            on: String::new(),
        }
    }

    /// A loader directory named like a shell command stays one
    /// argument of grub-install; every step runs, as its own vector.
    #[test]
    fn grub_repair_runs_argument_vectors_not_shell_text() {
        for id in ["x;touch${IFS}INJECTED;#", "a b", "$(reboot)", "`id`", "x'\"y"] {
            let g = GrubRepair { esp: "/boot/efi".into(), id: Some(id.into()), initramfs: true };
            let steps = grub_steps(&g);
            assert_eq!(steps.len(), 3, "{id}");
            assert_eq!(steps[0], ["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi", &format!("--bootloader-id={id}")]);
            assert_eq!(steps[1], ["update-grub"]);
            assert_eq!(steps[2], ["update-initramfs", "-u", "-k", "all"]);
        }
        let g = GrubRepair { esp: "/efi".into(), id: None, initramfs: false };
        assert_eq!(grub_steps(&g), [vec!["grub-install", "--target=x86_64-efi", "--efi-directory=/efi"], vec!["update-grub"]]);
    }

    #[test]
    fn grub_is_repaired_from_the_loader_directory_that_named_the_old_root() {
        let t = tempfile::tempdir().unwrap();
        let (root, esp) = (t.path().join("root"), t.path().join("esp"));
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::create_dir_all(esp.join("EFI/other")).unwrap();
        std::fs::create_dir_all(esp.join("EFI/debian-a")).unwrap();
        std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
        let old = "0a1b2c3d-0000-4000-8000-00000000abcd";
        std::fs::write(esp.join("EFI/other/grub.cfg"), "search.fs_uuid 11111111-0000-4000-8000-000000000000 root\n").unwrap();
        std::fs::write(esp.join("EFI/BOOT/grub.cfg"), format!("search.fs_uuid {} root\n", old.to_uppercase())).unwrap();
        std::fs::write(esp.join("EFI/debian-a/grub.cfg"), format!("search.fs_uuid {old} root hd0,gpt2\n")).unwrap();
        let dests = vec![("/".to_string(), root.clone()), ("/boot/efi".to_string(), esp.clone())];
        let (r, e) = (record("/", "ext4", old), record("/boot/efi", "vfat", "ABCD-1234"));
        let records = vec![&r, &e];
        // No grub-install in the system: nothing crossback knows to repair.
        assert!(grub_of(&dests, &records, None, &[]).is_none());
        std::fs::write(root.join("usr/sbin/grub-install"), "").unwrap();
        let g = grub_of(&dests, &records, None, &["/etc/crypttab".to_string()]).unwrap();
        assert_eq!((g.esp.as_str(), g.id.as_deref(), g.initramfs), ("/boot/efi", Some("debian-a"), true));
        let g = grub_of(&dests, &records, None, &["/boot/grub/grub.cfg".to_string()]).unwrap();
        assert!(!g.initramfs);
        // An unsigned GRUB: the search is embedded in its image, no grub.cfg.
        std::fs::remove_file(esp.join("EFI/debian-a/grub.cfg")).unwrap();
        assert_eq!(grub_of(&dests, &records, None, &[]).unwrap().id, None);
        std::fs::write(esp.join("EFI/debian-a/grubx64.efi"), format!("\x7fMZ...search.fs_uuid {old} root...")).unwrap();
        assert_eq!(grub_of(&dests, &records, None, &[]).unwrap().id.as_deref(), Some("debian-a"));
        // Debian 12's unsigned GRUB names the root's partition, not its UUID.
        std::fs::write(esp.join("EFI/debian-a/grubx64.efi"), "\x7fMZ...prefix...(,gpt2)/boot/grub...").unwrap();
        std::fs::write(esp.join("EFI/other/grubx64.efi"), "\x7fMZ...prefix...(,gpt4)/@/boot/grub...").unwrap();
        assert_eq!(grub_of(&dests, &records, None, &[]).unwrap().id, None);
        assert_eq!(grub_of(&dests, &records, Some(2), &[]).unwrap().id.as_deref(), Some("debian-a"));
        assert_eq!(grub_of(&dests, &records, Some(4), &[]).unwrap().id.as_deref(), Some("other"));
    }
}
