//! Test helpers for crossback: file systems in image files on their own
//! loop devices, and trees full of edge cases. Everything a helper makes
//! is torn down in `Drop`, also when the test panics.
//!
//! Tests that need root call [`require_root`]: without root they are
//! skipped with a message, unless `CROSSBACK_REQUIRE_ROOT_TESTS=1` (set by
//! `.ci/run`), where a skip is a failure.

pub mod compare;
pub mod machine;
pub mod servers;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Serializes the tests that run crossback commands with private mount
/// namespaces: such a namespace holds a copy of every mount that existed
/// when it was made (where `/` is private, as on this test machine), so a
/// test running beside it would find its own filesystems "mounted elsewhere".
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// True when the test may go on; false (after a message) when it must skip.
pub fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CROSSBACK_REQUIRE_ROOT_TESTS").is_some_and(|v| v == "1") {
        panic!("{test} needs root, and CROSSBACK_REQUIRE_ROOT_TESTS=1 forbids skipping it");
    }
    eprintln!("SKIPPED {test}: needs root (loop devices, mounts, device nodes)");
    // libtest hides a passing test's stderr: the skip is also written where
    // scripts/test.sh counts it, and says the count at the end.
    if let Some(log) = std::env::var_os("CROSSBACK_SKIPPED_LOG") {
        use std::io::Write;
        let line = format!("{test}\n");
        let _ = std::fs::OpenOptions::new().append(true).create(true).open(log).and_then(|mut f| f.write_all(line.as_bytes()));
    }
    false
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("{cmd:?} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory for test images: `CROSSBACK_TEST_DIR`, or the system's temp dir.
pub fn scratch() -> tempfile::TempDir {
    let base = std::env::var_os("CROSSBACK_TEST_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new().prefix("crossback-test-").tempdir_in(base).expect("creating a scratch directory")
}

/// Waits until a detached loop device is really gone (the kernel finishes a
/// detach when the last opener, a concurrent blkid say, closes it).
pub fn wait_detached(device: &str) {
    let name = Path::new(device).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let size = Path::new("/sys/class/block").join(&name).join("size");
    for _ in 0..200 {
        if std::fs::read_to_string(&size).map(|s| s.trim() == "0").unwrap_or(true) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("{device} was not detached after 5 s");
}

/// A random vfat volume id (mkfs.vfat derives one from the clock, so two
/// made in the same second, by tests running side by side, would collide).
pub fn random_vfat_id() -> String {
    let mut b = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").expect("urandom"), &mut b).expect("urandom");
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// A file system in an image file, on its own loop device, mounted.
pub struct LoopFs {
    pub image: PathBuf,
    pub device: String,
    pub mountpoint: PathBuf,
    mounted: bool,
    attached: bool,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    /// `fstype`: ext4, xfs, btrfs, vfat (vfat is made but cannot be mounted here).
    pub fn new(fstype: &str, size_mib: u64) -> LoopFs {
        Self::with_mkfs_args(fstype, size_mib, &[])
    }

    pub fn with_mkfs_args(fstype: &str, size_mib: u64, args: &[&str]) -> LoopFs {
        let dir = scratch();
        let image = dir.path().join(format!("{fstype}.img"));
        let f = std::fs::File::create(&image).expect("creating the image file");
        f.set_len(size_mib << 20).expect("sizing the image file");
        drop(f);
        let mut mkfs = Command::new(if fstype == "swap" { "mkswap".to_string() } else { format!("mkfs.{fstype}") });
        match fstype {
            "ext4" | "ext3" | "ext2" => mkfs.arg("-q").arg("-F"),
            "xfs" | "btrfs" => mkfs.arg("-q").arg("-f"),
            _ => &mut mkfs,
        };
        mkfs.args(args).arg(&image);
        run(&mut mkfs);
        let device = run(Command::new("losetup").args(["--find", "--show"]).arg(&image)).trim().to_string();
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("creating the mount point");
        let mut fs = LoopFs { image, device, mountpoint, mounted: false, attached: true, _dir: dir };
        if fstype != "vfat" && fstype != "swap" {
            fs.mount(&[]);
        }
        fs
    }

    /// A device of `size_mib` with nothing on it (a new disk's partition).
    pub fn blank(size_mib: u64) -> LoopFs {
        let mut fs = LoopFs::new("ext4", size_mib);
        fs.unmount();
        run(Command::new("wipefs").args(["-a", "-q"]).arg(&fs.device));
        fs
    }

    pub fn mount(&mut self, opts: &[&str]) {
        let mut cmd = Command::new("mount");
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts.join(","));
        }
        run(cmd.arg(&self.device).arg(&self.mountpoint));
        self.mounted = true;
    }

    pub fn unmount(&mut self) {
        if self.mounted {
            run(Command::new("umount").arg(&self.mountpoint));
            self.mounted = false;
        }
    }

    /// Copies the image while the filesystem is mounted read-write (what a
    /// disk holds after a crash: the journal needs recovery), then puts the
    /// copy in the original's place on a new loop device.
    pub fn replace_with_copy_taken_while_mounted(&mut self) {
        assert!(self.mounted, "mount it first");
        let copy = self.image.with_extension("crashed.img");
        run(Command::new("cp").arg("--sparse=always").arg(&self.image).arg(&copy));
        self.unmount();
        let _ = Command::new("blockdev").arg("--setrw").arg(&self.device).status();
        run(Command::new("losetup").arg("-d").arg(&self.device));
        wait_detached(&self.device);
        self.device = run(Command::new("losetup").args(["--find", "--show"]).arg(&copy)).trim().to_string();
        self.image = copy;
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The filesystem UUID, as blkid reads it from the device.
    pub fn uuid(&self) -> String {
        run(Command::new("blkid").args(["-p", "-s", "UUID", "-o", "value"]).arg(&self.device)).trim().to_string()
    }

    /// The filesystem label, as blkid reads it ("" when it has none).
    pub fn label(&self) -> String {
        run(Command::new("blkid").args(["-p", "-s", "LABEL", "-o", "value"]).arg(&self.device)).trim().to_string()
    }

    /// Free bytes on the mounted file system.
    pub fn free(&self) -> u64 {
        let s = rustix::fs::statvfs(&self.mountpoint).expect("statvfs");
        s.f_bavail * s.f_frsize
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy as a last resort, so a busy mount never outlives the test.
            let ok = Command::new("umount").arg(&self.mountpoint).status().is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
            }
        }
        if self.attached {
            // BLKROSET outlives detach on loop devices: clear it first.
            let _ = Command::new("blockdev").arg("--setrw").arg(&self.device).status();
            let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
        }
    }
}

/// A raw tar member, written by hand: what a hostile archive may hold.
pub fn member(out: &mut Vec<u8>, name: &[u8], typeflag: u8, link: &[u8], data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A proptest runner with a fixed number of cases and a fixed seed, so
/// that CI runs the same cases every time; `CROSSBACK_PROPTEST_SEED=N`
/// replays another seed (a failure prints the seed it ran with).
pub fn fuzz_runner(cases: u32) -> proptest::test_runner::TestRunner {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let seed = std::env::var("CROSSBACK_PROPTEST_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0x00c0_ffee);
    eprintln!("proptest: seed {seed} (CROSSBACK_PROPTEST_SEED), {cases} cases");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(Config { cases, failure_persistence: None, ..Config::default() }, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// A whole disk on a loop device, partitioned with an sfdisk script; its
/// partitions added with partx (the kernel here has no partition-table
/// parser). Partitions and device are removed in Drop.
pub struct LoopDisk {
    pub image: PathBuf,
    pub device: String,
    _dir: tempfile::TempDir,
}

impl LoopDisk {
    /// A disk of `size_mib` with nothing on it.
    pub fn blank(size_mib: u64) -> LoopDisk {
        let dir = scratch();
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image).and_then(|f| f.set_len(size_mib << 20)).expect("making the disk image");
        let device = run(Command::new("losetup").args(["--find", "--show"]).arg(&image)).trim().to_string();
        LoopDisk { image, device, _dir: dir }
    }

    /// A disk of `size_mib` partitioned by `script` (sfdisk's input).
    pub fn partitioned(size_mib: u64, script: &str) -> LoopDisk {
        let d = LoopDisk::blank(size_mib);
        let mut child = Command::new("sfdisk").args(["-q", &d.device]).stdin(std::process::Stdio::piped()).spawn().expect("sfdisk");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), script.as_bytes()).expect("sfdisk script");
        assert!(child.wait().expect("sfdisk").success(), "sfdisk failed");
        let _ = Command::new("partx").args(["-a", &d.device]).status();
        d
    }

    /// The device of partition `n`.
    pub fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.device)
    }

    /// The partitions the kernel shows now.
    pub fn parts(&self) -> Vec<String> {
        let name = Path::new(&self.device).file_name().expect("name").to_string_lossy().into_owned();
        let mut out: Vec<String> = std::fs::read_dir(format!("/sys/class/block/{name}"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("{name}p")))
                    .map(|n| format!("/dev/{n}"))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        for p in self.parts() {
            let _ = Command::new("umount").arg(&p).output();
            let _ = Command::new("blockdev").arg("--setrw").arg(&p).status();
        }
        let _ = Command::new("partx").args(["-d", &self.device]).output();
        let _ = Command::new("blockdev").arg("--setrw").arg(&self.device).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// A minimal 64-bit PE image (what an EFI kernel is), with an Authenticode
/// certificate table when `signed` (its contents are not a signature: only
/// its presence is looked at before a firmware looks at it).
pub fn pe64(signed: bool) -> Vec<u8> {
    let mut b = vec![0u8; 0x200];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    b[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    b[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
    b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes()); // optional header: PE32+ and 16 directories
    b[coff + 18..coff + 20].copy_from_slice(&0x0022u16.to_le_bytes());
    let opt = coff + 20;
    b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    b[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes()); // section alignment
    b[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes()); // file alignment
    b[opt + 56..opt + 60].copy_from_slice(&0x200u32.to_le_bytes()); // size of image
    b[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes()); // size of headers
    b[opt + 68..opt + 70].copy_from_slice(&10u16.to_le_bytes()); // EFI application
    b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
    // One section, .text, empty.
    b[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
    let sec = opt + 240;
    b[sec..sec + 5].copy_from_slice(b".text");
    b[sec + 8..sec + 12].copy_from_slice(&0x10u32.to_le_bytes());
    b[sec + 12..sec + 16].copy_from_slice(&0x1000u32.to_le_bytes());
    b[sec + 36..sec + 40].copy_from_slice(&0x6000_0020u32.to_le_bytes());
    if signed {
        let cert = b"\x10\0\0\0\0\x02\x02\0certificate!";
        let at = b.len() as u32;
        b.extend_from_slice(cert);
        let sec = opt + 112 + 4 * 8;
        b[sec..sec + 4].copy_from_slice(&at.to_le_bytes());
        b[sec + 4..sec + 8].copy_from_slice(&(cert.len() as u32).to_le_bytes());
    }
    b
}
