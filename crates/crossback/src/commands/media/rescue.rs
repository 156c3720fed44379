//! `crossback media rescue --device DEV`: a rescue system on a FAT
//! partition (the backup disk's own, or a USB stick's) that boots on the
//! machine, under Secure Boot too, into crossback.
//!
//! It is made of the distribution's own signed parts, never of anything
//! crossback signs: the firmware starts the distribution's shim (signed by
//! the firmware's CA), shim its GRUB (signed by the distribution), GRUB the
//! running system's kernel (signed by the distribution, checked by shim),
//! with an initramfs made by the distribution's own tool (initramfs-tools'
//! `mkinitramfs`) that holds crossback and the tools a restore runs. An
//! initramfs is not signed, and need not be; a kernel that is not signed
//! would not boot under Secure Boot, and is refused unless the rescue is
//! asked for machines without it (`--no-secure-boot`).
//!
//! What it holds of the backups: nothing. No key, no configuration; an
//! encrypted media stays locked until its passphrase is typed in the
//! rescue.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use crossback_host::offline::{self, FsMount};
use crossback_host::tool::Tool;

use crate::cli::RescueArgs;
use crate::error::Refusal;
use crate::layout::{RescueRecord, DIR, RESCUE_RECORD, RESCUE_TOOL};
use crate::machine::{self, Machine};
use crate::{output, refuse, Outcome};

/// At most this much on the rescue partition.
pub const LIMIT: u64 = 128 << 20;
/// The FAT label `media rescue` gives the partition.
pub const LABEL: &str = "CB-RESCUE";

/// The signed boot chain, as the distribution installs it (Debian's
/// `shim-signed` and `grub-efi-amd64-signed`).
struct Chain {
    shim: PathBuf,
    /// shim's MOK manager, which shim starts when a key is to be enrolled.
    mok: Option<PathBuf>,
    grub: PathBuf,
}

/// Where the distribution keeps its signed loaders.
const SHIM: &str = "usr/lib/shim/shimx64.efi.signed";
const MOK: &str = "usr/lib/shim/mmx64.efi.signed";
const GRUB: &str = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";

fn chain(root: &Path) -> anyhow::Result<Chain> {
    let (shim, grub) = (root.join(SHIM), root.join(GRUB));
    if !shim.is_file() || !grub.is_file() {
        refuse!(
            Refusal::Unsupported,
            "the rescue boots through the distribution's signed shim and GRUB ({} and {}), which are not installed: `apt install shim-signed grub-efi-amd64-signed` (Debian, Ubuntu); nothing was written",
            shim.display(),
            grub.display()
        );
    }
    // The rescue's shell and small tools: initramfs-tools takes them from busybox.
    if !["usr/bin/busybox", "bin/busybox"].iter().any(|b| root.join(b).is_file()) {
        refuse!(Refusal::Unsupported, "the rescue's shell and tools come from busybox, which is not installed: `apt install busybox`; nothing was written");
    }
    let mok = Some(root.join(MOK)).filter(|p| p.is_file());
    Ok(Chain { shim, mok, grub })
}

/// The running system's kernel: its version and image.
fn kernel(root: &Path) -> anyhow::Result<(String, PathBuf)> {
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    let image = root.join("boot").join(format!("vmlinuz-{release}"));
    if !image.is_file() || !root.join("lib/modules").join(&release).is_dir() {
        refuse!(
            Refusal::Unsupported,
            "the running kernel {release} has no image in /boot or no modules in /lib/modules (the rescue takes the running one); nothing was written"
        );
    }
    Ok((release, image))
}

/// Whether a PE image (a kernel's EFI stub) carries an Authenticode
/// signature: its certificate table is there and not empty. Whose
/// signature it is, only the firmware and shim can tell.
pub fn signed(image: &[u8]) -> anyhow::Result<bool> {
    let pe = object::read::pe::PeFile64::parse(image).context("not a 64-bit PE image (an EFI kernel)")?;
    let security = pe.data_directory(object::pe::IMAGE_DIRECTORY_ENTRY_SECURITY);
    Ok(security.is_some_and(|d| d.size.get(object::LittleEndian) > 0))
}

/// The initramfs-tools configuration the rescue's initramfs is made with:
/// every storage and filesystem module (the rescue boots on other
/// hardware than it was made on), crossback and the restore's tools.
fn initramfs_config(dir: &Path, crossback: &Path, firmware: bool) -> anyhow::Result<()> {
    for sub in ["hooks", "scripts/init-premount", "conf.d"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(dir.join("initramfs.conf"), "MODULES=most\nBUSYBOX=y\nCOMPRESS=zstd\nFSTYPE=vfat,ext4,xfs,btrfs\nRESUME=none\n")?;
    std::fs::write(dir.join("modules"), "vfat\nnls_cp437\nnls_ascii\nnls_utf8\next4\nxfs\nbtrfs\ndm_crypt\ndm_mod\nefivarfs\nusb_storage\nuas\n")?;
    std::fs::copy(crossback, dir.join("crossback")).context("copying crossback into the rescue")?;
    if firmware {
        std::fs::write(dir.join("keep-firmware"), "")?;
    }
    write_script(&dir.join("hooks/crossback"), include_str!("rescue/hook.sh"))?;
    write_script(&dir.join("scripts/init-premount/crossback"), include_str!("rescue/premount.sh"))?;
    Ok(())
}

fn write_script(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// GRUB's menu on the rescue: one entry, on the screen and the serial console.
fn grub_cfg(kernel: &str) -> String {
    format!(
        "# Written by crossback media rescue.\n\
         set timeout=3\n\
         serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         menuentry 'crossback rescue ({kernel})' {{\n\
         \tlinux /crossback/vmlinuz crossback.rescue console=tty0 console=ttyS0,115200 panic=0\n\
         \tinitrd /crossback/initrd.img\n\
         }}\n"
    )
}

/// What goes on the partition, by path on it.
fn tree(chain: &Chain, kernel: &Path, initrd: &Path, release: &str) -> Vec<(String, Source)> {
    let mut files = vec![
        // The firmware's fallback path: no boot entry is needed.
        ("EFI/BOOT/BOOTX64.EFI".to_string(), Source::File(chain.shim.clone())),
        ("EFI/BOOT/grubx64.efi".into(), Source::File(chain.grub.clone())),
        // Debian's signed GRUB reads its configuration from /EFI/debian.
        ("EFI/debian/grub.cfg".into(), Source::Text(grub_cfg(release))),
        ("EFI/BOOT/grub.cfg".into(), Source::Text(grub_cfg(release))),
        ("crossback/vmlinuz".into(), Source::File(kernel.to_path_buf())),
        ("crossback/initrd.img".into(), Source::File(initrd.to_path_buf())),
    ];
    if let Some(m) = &chain.mok {
        files.push(("EFI/BOOT/mmx64.efi".into(), Source::File(m.clone())));
    }
    files
}

enum Source {
    File(PathBuf),
    Text(String),
}

/// The partition must be none of this machine's: not the running system,
/// not a configured system's or the media's slots, not mounted.
fn check_target(config: &Path, m: &Machine, dev: &crossback_host::blockdev::Device) -> anyhow::Result<()> {
    let cfg = if config.exists() { Some(crate::config::Config::load(config)?) } else { None };
    let systems = match &cfg {
        Some(c) => machine::systems(m, c)?,
        None => Vec::new(),
    };
    super::refuse_if_in_use(m, &systems, dev)?;
    if let Some(cfg) = &cfg {
        if let Some(media) = &cfg.media {
            if [media.slot_a.get_ref(), media.slot_b.get_ref()].contains(&&dev.uuid) {
                refuse!(
                    Refusal::TargetInUse,
                    "{} is a slot of the backup media; the rescue goes on a partition of its own; nothing was written",
                    dev.path.display()
                );
            }
        }
    }
    Ok(())
}

pub fn rescue(config: &Path, a: RescueArgs) -> anyhow::Result<Outcome> {
    machine::require_root("media rescue")?;
    let m = Machine::scan(&[])?;
    let dev = super::device_for(&m, &a.device.to_string_lossy())?;
    let ours = check_device(config, &m, &dev, a.yes)?;
    tools_for(config, &m)?;
    let built = build(crate::local::Paths::new().root(), a.no_secure_boot, a.firmware, &dev.path)?;
    write_onto(&dev.path, ours, &built)?;
    made(&dev.path, &built);
    Ok(Outcome::Ok)
}

fn made(dev: &Path, built: &Built) {
    println!(
        "the rescue system is on {}: {} (kernel {}{}), built in {:.1} s; boot the machine from this disk (the firmware's boot menu) to restore",
        dev.display(),
        output::bytes(built.record.bytes),
        built.record.kernel,
        if built.record.secure_boot { ", signed: boots under Secure Boot" } else { ", not signed: only without Secure Boot" },
        built.secs
    );
}

/// `media prepare --disk`: the rescue made on the FAT partition just laid
/// out. When this system cannot make one (no signed boot chain, no
/// busybox, an unsigned kernel) that is said with what to do, and the
/// media stands.
pub fn onto_new_partition(config: &Path, part: &Path) -> anyhow::Result<()> {
    let built = match tools_for(config, &Machine::scan(&[])?).and_then(|()| build(crate::local::Paths::new().root(), false, false, part)) {
        Ok(b) => b,
        Err(e) if crate::error::kind_of(&e) == Some(Refusal::Unsupported) => {
            println!("note: the rescue partition {} stays empty: {e:#}. Then: `crossback media rescue --device {}`", part.display(), part.display());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    write_onto(part, true, &built)?;
    made(part, &built);
    Ok(())
}

/// The partition the rescue may go on; `true` when it holds a rescue
/// already (made again there without a question).
fn check_device(config: &Path, m: &Machine, dev: &crossback_host::blockdev::Device, yes: bool) -> anyhow::Result<bool> {
    if dev.disk == dev.name {
        refuse!(
            Refusal::Usage,
            "{} is a whole disk: give the partition the rescue goes on (a FAT partition of at least 128 MiB); nothing was written",
            dev.path.display()
        );
    }
    let ours = dev.fstype == "vfat" && dev.label == LABEL;
    if !ours && !yes && !dev.fstype.is_empty() {
        refuse!(
            Refusal::TargetNotEmpty,
            "{} holds a filesystem ({}{}): `--yes` makes the rescue there, erasing it; nothing was written",
            dev.path.display(),
            dev.fstype,
            if dev.label.is_empty() { String::new() } else { format!(", labelled {:?}", output::text(&dev.label)) }
        );
    }
    if let Some(why) = dev.unreadable.as_ref().filter(|_| !yes) {
        refuse!(Refusal::TargetNotEmpty, "{} could not be read ({why}): `--yes` makes the rescue there anyway; nothing was written", dev.path.display());
    }
    if dev.size < LIMIT {
        refuse!(
            Refusal::TargetTooSmall,
            "{} is {}; the rescue needs a partition of at least {}; nothing was written",
            dev.path.display(),
            output::bytes(dev.size),
            output::bytes(LIMIT)
        );
    }
    check_target(config, m, dev)?;
    Ok(ours)
}

/// The rescue's files, made in a work directory (kept while this lives).
struct Built {
    work: tempfile::TempDir,
    files: Vec<(String, Source)>,
    record: RescueRecord,
    secs: f64,
}

/// Finds the signed chain and the kernel under `root`, makes the
/// initramfs; refused when it would not fit. `target` is only named.
fn build(root: &Path, no_secure_boot: bool, firmware: bool, target: &Path) -> anyhow::Result<Built> {
    let chain = chain(root)?;
    let (release, kernel) = kernel(root)?;
    let secure_boot =
        signed(&std::fs::read(&kernel).with_context(|| format!("reading {}", kernel.display()))?).with_context(|| format!("{}", kernel.display()))?;
    if !secure_boot && !no_secure_boot {
        refuse!(
            Refusal::Unsupported,
            "the kernel {} is not signed: the rescue would not boot under Secure Boot; install the distribution's signed kernel, or give --no-secure-boot for machines without it; nothing was written",
            kernel.display()
        );
    }
    println!("building the rescue system from this system's kernel {release} and its signed boot loaders");
    let started = Instant::now();
    let work = tempfile::Builder::new().prefix("crossback-rescue.").tempdir_in("/var/tmp").context("a work directory in /var/tmp")?;
    let conf = work.path().join("initramfs-tools");
    initramfs_config(&conf, &std::env::current_exe().context("finding crossback's own binary")?, firmware)?;
    let initrd = work.path().join("initrd.img");
    machine::run_tool(Tool::new("mkinitramfs").arg("-d").arg(&conf).arg("-o").arg(&initrd).arg(&release))
        .context("making the rescue's initramfs with initramfs-tools (`apt install initramfs-tools` if it is missing)")?;
    let exe = std::env::current_exe().context("finding crossback's own binary")?;
    let mut files = tree(&chain, &kernel, &initrd, &release);
    // Beside the initramfs's own: the one the rescue runs, kept current by every backup.
    files.push((format!("{DIR}/{RESCUE_TOOL}"), Source::File(exe.clone())));
    let mut bytes = 0;
    for (_, s) in &files {
        bytes += match s {
            Source::File(p) => std::fs::metadata(p)?.len(),
            Source::Text(t) => t.len() as u64,
        };
    }
    if bytes > LIMIT {
        refuse!(
            Refusal::TargetTooSmall,
            "the rescue came to {}, more than the {} it may take; nothing was written to {}",
            output::bytes(bytes),
            output::bytes(LIMIT),
            target.display()
        );
    }
    let record = RescueRecord {
        built: output::now(),
        crossback: env!("CARGO_PKG_VERSION").into(),
        refreshed: None,
        crossback_hash: crate::layout::file_hash(&exe)?,
        kernel: release,
        secure_boot,
        bytes,
    };
    Ok(Built { work, files, record, secs: started.elapsed().as_secs_f64() })
}

/// Formats `dev` as the rescue's FAT (unless it is one already) and
/// writes the files onto it, each beside its old one and renamed: a
/// rescue made again and cut short keeps its old files whole.
fn write_onto(dev: &Path, ours: bool, built: &Built) -> anyhow::Result<()> {
    if !ours {
        machine::run_tool(Tool::new("mkfs.vfat").args(["-F", "32", "-n", LABEL]).arg(dev))?;
    }
    crossback_host::ns::enter_private()?;
    let at = built.work.path().join("partition");
    std::fs::create_dir(&at)?;
    let mut mounted = offline::Mounted::default();
    let fs = FsMount { mountpoint: "rescue".into(), device: dev.to_path_buf(), fstype: "vfat".into(), subvol: None, options: vec![], view_of: None };
    offline::mount_one(&fs, &at, true, false, &mut mounted).with_context(|| format!("mounting {}", dev.display()))?;
    let written = (|| -> anyhow::Result<()> {
        for (rel, s) in &built.files {
            std::fs::create_dir_all(at.join(rel).parent().context("a file's directory")?)?;
            crate::layout::replace_file(&at, rel, |part| match s {
                Source::File(p) => std::fs::copy(p, part).map(drop),
                Source::Text(t) => std::fs::write(part, t),
            })?;
        }
        std::fs::write(at.join(DIR).join(RESCUE_RECORD), toml::to_string(&built.record)?)?;
        rustix::fs::sync();
        Ok(())
    })();
    let left = mounted.unmount();
    written.with_context(|| format!("writing the rescue onto {}", dev.display()))?;
    if let Some((p, e)) = left.first() {
        anyhow::bail!("{} could not be unmounted: {e}", p.display());
    }
    Ok(())
}

/// The programs a restore of the configured systems runs to make their
/// filesystems and layers again must be here: the rescue takes them from
/// this system. Refused, naming what is missing, when one is not.
fn tools_for(config: &Path, m: &Machine) -> anyhow::Result<()> {
    if !config.exists() {
        return Ok(());
    }
    let cfg = crate::config::Config::load(config)?;
    let mut needed: Vec<(String, String)> = Vec::new();
    for s in machine::systems(m, &cfg)? {
        for f in s.filesystems.iter().chain(&s.swap) {
            let program = match f.fstype.as_str() {
                "swap" => Some("mkswap".to_string()),
                t => crossback_host::fstype::of(t).and_then(|ty| ty.mkfs(Path::new("/dev/null"), None, "", &[])).map(|tool| tool.program()),
            };
            needed.extend(program.map(|p| (p, format!("{}'s {}", s.name, f.mountpoint))));
        }
        for l in &s.layers {
            let program = if l.kind == "luks" { "cryptsetup" } else { "lvm" };
            needed.push((program.into(), format!("{}'s {}", s.name, output::text(&l.name))));
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    let missing: Vec<String> =
        needed.iter().filter(|(p, _)| !std::env::split_paths(&path).any(|d| d.join(p).is_file())).map(|(p, what)| format!("{p} (for {what})")).collect();
    if !missing.is_empty() {
        refuse!(
            Refusal::Unsupported,
            "the rescue takes the tools a restore runs from this system, and {} not installed here: install them first; nothing was written",
            if missing.len() == 1 { format!("{} is", missing[0]) } else { format!("{} are", missing.join(", ")) }
        );
    }
    Ok(())
}

/// After a backup: the crossback on each rescue partition of the media's
/// disks (`disks`: kernel names) replaced by this one when they differ.
/// What fails is said, and the backup stands.
pub fn refresh(m: &Machine, disks: &[String]) {
    for dev in m.devices.iter().filter(|d| d.fstype == "vfat" && d.label == LABEL && disks.contains(&d.disk)) {
        match refresh_on(dev) {
            Ok(Some(v)) => println!("rescue: the rescue system on {} now runs crossback {v}", dev.path.display()),
            Ok(None) => {}
            Err(e) => eprintln!("warning: the rescue system on {} keeps its crossback: {e:#}", dev.path.display()),
        }
    }
}

fn refresh_on(dev: &crossback_host::blockdev::Device) -> anyhow::Result<Option<String>> {
    let exe = std::env::current_exe().context("finding crossback's own binary")?;
    on_rescue(&dev.path, true, |at| crate::layout::refresh_rescue_tool(at, &exe, env!("CARGO_PKG_VERSION")))
}

/// The record of the rescue partition `dev`, for `status`.
pub fn record_on(dev: &Path) -> Result<RescueRecord, String> {
    let read = on_rescue(dev, false, |at| Ok(crossback_host::beneath::Dir::open(at).map(|d| crate::layout::read_rescue(&d))?));
    match read {
        Ok(Some(r)) => r,
        Ok(None) => Err(format!("no {DIR}/{RESCUE_RECORD} on it")),
        Err(e) => Err(format!("cannot be read: {e:#}")),
    }
}

/// Runs `f` on the FAT partition `dev` mounted (read-write with `rw`) in
/// this process's private mount namespace, through FUSE where the kernel
/// has no FAT driver; unmounted after.
fn on_rescue<T>(dev: &Path, rw: bool, f: impl FnOnce(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    crossback_host::ns::enter_private()?;
    let at = tempfile::Builder::new().prefix("crossback-rescue.").tempdir_in("/run").context("a mount point in /run")?;
    let mut mounted = offline::Mounted::default();
    let fs = FsMount { mountpoint: "rescue".into(), device: dev.to_path_buf(), fstype: "vfat".into(), subvol: None, options: vec![], view_of: None };
    offline::mount_one(&fs, at.path(), rw, false, &mut mounted).with_context(|| format!("mounting {}", dev.display()))?;
    let done = f(at.path());
    let left = mounted.unmount();
    if let Some((p, e)) = left.first() {
        anyhow::bail!("{} could not be unmounted: {e}", p.display());
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_is_signed_when_its_certificate_table_is_there() {
        assert!(signed(&crossback_testkit::pe64(true)).unwrap());
        assert!(!signed(&crossback_testkit::pe64(false)).unwrap());
        assert!(signed(b"not a PE image at all").is_err());
    }

    #[test]
    fn the_rescue_boots_from_the_firmware_s_fallback_path_through_shim() {
        let chain = Chain { shim: "/s".into(), mok: None, grub: "/g".into() };
        let files = tree(&chain, Path::new("/k"), Path::new("/i"), "6.1.0-1");
        let at = |p: &str| files.iter().find(|(n, _)| n == p).map(|(_, s)| s);
        assert!(matches!(at("EFI/BOOT/BOOTX64.EFI"), Some(Source::File(p)) if p == Path::new("/s")));
        assert!(matches!(at("EFI/BOOT/grubx64.efi"), Some(Source::File(p)) if p == Path::new("/g")));
        // No fallback loader (fbx64.efi): shim would make boot entries from it.
        assert!(at("EFI/BOOT/fbx64.efi").is_none());
        let Some(Source::Text(cfg)) = at("EFI/debian/grub.cfg") else { panic!("no grub.cfg where Debian's signed GRUB reads it") };
        assert!(cfg.contains("linux /crossback/vmlinuz crossback.rescue") && cfg.contains("initrd /crossback/initrd.img"), "{cfg}");
    }
}
