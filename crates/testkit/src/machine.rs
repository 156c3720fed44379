//! A dual-boot machine made of loop devices, for the tests of `init`,
//! `status` and everything after them:
//!
//! - **alpha**: ext4 root; its fstab mounts an ext4 `/home` and a vfat
//!   `/boot/efi` by UUID (vfat cannot be mounted here, but it is probed);
//! - **beta**: one btrfs with subvolumes `@` (root) and `@home`, fstab with `subvol=`;
//! - two empty ext4 filesystems for the backup slots.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run, LoopFs};

pub struct TestMachine {
    pub alpha_root: LoopFs,
    pub alpha_home: LoopFs,
    pub alpha_efi: LoopFs,
    pub beta: LoopFs,
    pub slot_a: LoopFs,
    pub slot_b: LoopFs,
}

/// A minimal root: os-release, an init, an fstab.
pub fn make_root(root: &Path, id: &str, pretty: &str, fstab: &str) {
    fs::create_dir_all(root.join("etc")).expect("mkdir etc");
    fs::create_dir_all(root.join("sbin")).expect("mkdir sbin");
    fs::create_dir_all(root.join("usr/lib")).expect("mkdir usr/lib");
    fs::write(root.join("usr/lib/os-release"), format!("ID={id}\nPRETTY_NAME=\"{pretty}\"\nNAME=\"{pretty}\"\n")).expect("os-release");
    // The usual absolute symlink: it must be resolved inside the root.
    std::os::unix::fs::symlink("/usr/lib/os-release", root.join("etc/os-release")).expect("symlink os-release");
    fs::write(root.join("sbin/init"), "#!/bin/sh\n").expect("init");
    fs::set_permissions(root.join("sbin/init"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(root.join("etc/fstab"), fstab).expect("fstab");
    for d in ["home", "boot/efi", "proc", "sys", "dev", "run", "tmp", "root", "bin"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    // A shell and the usual tools: Debian's static busybox.
    if Path::new("/bin/busybox").exists() {
        fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
        for tool in ["sh", "cat", "echo", "ls", "sleep", "find", "test", "touch", "true", "sha256sum", "mount", "grep"] {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(tool));
        }
    }
}

impl TestMachine {
    pub fn new() -> TestMachine {
        let alpha_home = LoopFs::new("ext4", 64);
        fs::create_dir_all(alpha_home.path().join("ann")).expect("home");
        fs::write(alpha_home.path().join("ann/notes.txt"), "alpha's home\n").expect("write");
        let alpha_efi = LoopFs::with_mkfs_args("vfat", 64, &["-n", "ALPHA-EFI", "-i", &crate::random_vfat_id()]);
        let alpha_root = LoopFs::new("ext4", 64);
        let fstab = format!(
            "# /etc/fstab of alpha\nUUID={} / ext4 errors=remount-ro 0 1\nUUID={} /home ext4 defaults 0 2\nUUID={} /boot/efi vfat umask=0077 0 1\ntmpfs /tmp tmpfs defaults 0 0\n",
            alpha_root.uuid(),
            alpha_home.uuid(),
            alpha_efi.uuid()
        );
        make_root(alpha_root.path(), "alpha", "Alpha Linux 1", &fstab);
        let beta = LoopFs::new("btrfs", 256);
        for sv in ["@", "@home"] {
            run(Command::new("btrfs").args(["-q", "subvolume", "create"]).arg(beta.path().join(sv)));
        }
        let u = beta.uuid();
        let fstab = format!("UUID={u} / btrfs subvol=@,compress=zstd 0 0\nUUID={u} /home btrfs subvol=/@home 0 0\n/swapfile none swap sw 0 0\n");
        make_root(&beta.path().join("@"), "beta", "Beta OS 2", &fstab);
        fs::write(beta.path().join("@home/bob.txt"), "beta's home\n").expect("write");
        let slot_a = LoopFs::new("ext4", 256);
        let slot_b = LoopFs::new("ext4", 256);
        let mut m = TestMachine { alpha_root, alpha_home, alpha_efi, beta, slot_a, slot_b };
        // Offline, as from a live USB: nothing of the systems stays mounted.
        for fs in [&mut m.alpha_root, &mut m.alpha_home, &mut m.beta, &mut m.slot_a, &mut m.slot_b] {
            fs.unmount();
        }
        m
    }

    /// The devices, for `--devices`.
    pub fn devices(&self) -> Vec<PathBuf> {
        [&self.alpha_root, &self.alpha_home, &self.alpha_efi, &self.beta, &self.slot_a, &self.slot_b].iter().map(|f| PathBuf::from(&f.device)).collect()
    }

    pub fn devices_arg(&self) -> String {
        self.devices().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
    }
}

impl Default for TestMachine {
    fn default() -> Self {
        Self::new()
    }
}
