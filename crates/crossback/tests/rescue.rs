//! `media rescue`'s refusals, on loop devices and a system root of the
//! test's (CROSSBACK_SYSTEM_ROOT): each by its kind, the partition as it
//! was. Building the rescue and booting it under Secure Boot is the lab's
//! (`scripts/lab.sh rescue`), where the distribution's signed parts and
//! initramfs-tools are.

mod common;
use common::{crossback, kind, text};
use std::path::Path;
use std::process::{Command, Output};

use crossback_testkit::{pe64, require_root, run, scratch, LoopDisk};

/// A system root with the signed chain (when `chain`) and the running
/// kernel's image (signed or not) and modules directory.
fn system_root(at: &Path, chain: bool, signed: bool) {
    let release = run(Command::new("uname").arg("-r")).trim().to_string();
    if chain {
        for f in ["usr/lib/shim/shimx64.efi.signed", "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed", "usr/bin/busybox"] {
            std::fs::create_dir_all(at.join(f).parent().unwrap()).unwrap();
            std::fs::write(at.join(f), pe64(true)).unwrap();
        }
    }
    std::fs::create_dir_all(at.join("boot")).unwrap();
    std::fs::create_dir_all(at.join("lib/modules").join(&release)).unwrap();
    std::fs::write(at.join("boot").join(format!("vmlinuz-{release}")), pe64(signed)).unwrap();
}

fn rescue(root: &Path, cfg: &Path, args: &[&str]) -> Output {
    crossback(cfg).env("CROSSBACK_SYSTEM_ROOT", root).args(["media", "rescue"]).args(args).output().unwrap()
}

fn refused(o: &Output, k: &str, what: &str) {
    assert!(!o.status.success(), "{what}: {}", text(o));
    assert_eq!(kind(o), k, "{what}: {}", text(o));
    assert!(text(o).contains("nothing was written"), "{what}: {}", text(o));
}

/// The filesystem type and label blkid reads on `dev` (empty when none).
fn on(dev: &str) -> String {
    let o = Command::new("blkid").args(["-p", "-s", "TYPE", "-s", "LABEL", "-o", "value", dev]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn root_media_rescue_refuses_by_kind_and_writes_nothing() {
    if !require_root("root_media_rescue_refuses_by_kind_and_writes_nothing") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let dir = scratch();
    let cfg = dir.path().join("config.toml");
    let (good, no_chain, unsigned) = (dir.path().join("good"), dir.path().join("no-chain"), dir.path().join("unsigned"));
    system_root(&good, true, true);
    system_root(&no_chain, false, true);
    system_root(&unsigned, true, false);
    let no_busybox = dir.path().join("no-busybox");
    system_root(&no_busybox, true, true);
    std::fs::remove_file(no_busybox.join("usr/bin/busybox")).unwrap();
    let disk = LoopDisk::partitioned(400, "label: gpt\nsize=160MiB, type=U\nsize=64MiB, type=U\ntype=L\n");
    let (free, small, used) = (disk.part(1), disk.part(2), disk.part(3));
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "photos", &used]));

    refused(&rescue(&good, &cfg, &["--device", &disk.device]), "usage", "a whole disk");
    let o = rescue(&good, &cfg, &["--device", &used]);
    refused(&o, "target-not-empty", "a partition holding ext4");
    assert!(text(&o).contains("--yes"), "{}", text(&o));
    refused(&rescue(&good, &cfg, &["--device", &small]), "target-too-small", "a 64 MiB partition");
    let o = rescue(&no_chain, &cfg, &["--device", &free]);
    refused(&o, "unsupported", "no signed shim and GRUB");
    assert!(text(&o).contains("apt install shim-signed grub-efi-amd64-signed"), "{}", text(&o));
    let o = rescue(&no_busybox, &cfg, &["--device", &free]);
    refused(&o, "unsupported", "no busybox");
    assert!(text(&o).contains("apt install busybox"), "{}", text(&o));
    let o = rescue(&unsigned, &cfg, &["--device", &free]);
    refused(&o, "unsupported", "an unsigned kernel");
    assert!(text(&o).contains("--no-secure-boot"), "{}", text(&o));
    // Mounted: in use, even with --yes.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(Command::new("mount").arg(&used).arg(&mnt));
    let o = rescue(&good, &cfg, &["--device", &used, "--yes"]);
    run(Command::new("umount").arg(&mnt));
    refused(&o, "target-in-use", "a mounted partition");

    assert_eq!(on(&used), "photos ext4", "a refused rescue touched the ext4 partition");
    assert_eq!(on(&free), "", "a refused rescue wrote onto the free partition");
    assert_eq!(on(&small), "");
}

#[test]
fn root_media_prepare_disk_lays_out_a_whole_disk_or_refuses_touching_nothing() {
    if !require_root("root_media_prepare_disk_lays_out_a_whole_disk_or_refuses_touching_nothing") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let dir = scratch();
    let cfg = dir.path().join("config.toml");
    // No signed boot chain here: the media is made, its rescue partition left empty.
    let root = dir.path().join("no-chain");
    system_root(&root, false, true);
    let prepare = |args: &[&str]| {
        crossback(&cfg).env("CROSSBACK_SYSTEM_ROOT", &root).args(["media", "prepare"]).args(args).stdin(std::process::Stdio::null()).output().unwrap()
    };

    // Refused, nothing written: a partition, a disk too small, a disk holding
    // something without --yes (no terminal to ask on).
    let parted = LoopDisk::partitioned(1400, "label: gpt\ntype=L\n");
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "precious"]).arg(parted.part(1)));
    refused(&prepare(&["--disk", &parted.part(1)]), "usage", "a partition");
    refused(&prepare(&["--disk", &parted.device]), "target-not-empty", "a disk holding ext4");
    assert_eq!(on(&parted.part(1)), "precious ext4");
    let small = LoopDisk::blank(900);
    refused(&prepare(&["--disk", &small.device]), "target-too-small", "900 MiB");
    assert!(
        run(Command::new("sh").arg("-c").arg(format!("sfdisk -d {} 2>/dev/null || true", small.device))).trim().is_empty(),
        "a refused prepare wrote a table"
    );
    assert!(!cfg.exists(), "a refused prepare wrote the configuration");

    // Mounted, even with --yes.
    let at = scratch();
    run(Command::new("mount").arg(parted.part(1)).arg(at.path()));
    let out = prepare(&["--disk", &parted.device, "--yes"]);
    run(Command::new("umount").arg(at.path()));
    refused(&out, "target-in-use", "a disk with a mounted partition");
    assert_eq!(on(&parted.part(1)), "precious ext4");

    // With --yes: the rescue partition and two slots, prepared and recorded.
    let out = prepare(&["--disk", &parted.device, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let parts = parted.parts();
    assert_eq!(parts.len(), 3, "{parts:?}");
    assert_eq!(on(&parts[0]), "CB-RESCUE vfat");
    assert_eq!(on(&parts[1]), "crossback-A ext4");
    assert_eq!(on(&parts[2]), "crossback-B ext4");
    assert!(text(&out).contains("stays empty") && text(&out).contains("media rescue --device"), "{}", text(&out));
    let config = std::fs::read_to_string(&cfg).unwrap();
    for p in &parts[1..] {
        let uuid = run(Command::new("blkid").args(["-p", "-s", "UUID", "-o", "value", p])).trim().to_string();
        assert!(config.contains(&uuid), "slot {p} ({uuid}) not in the configuration:\n{config}");
    }
}
