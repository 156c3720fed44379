//! A dead disk replaced by a blank, smaller one: `restore --bare-metal
//! --disk` makes the recorded partition table again (same identifiers,
//! shrunk), the filesystems (same UUIDs), restores both systems that were
//! on it and their shared ESP once; and refuses, touching nothing, a disk
//! that is too small, not blank without confirmation, a partition, or the
//! media's. These tests need root.

mod common;
use common::{crossback, err, kind, ok, text};
use std::path::Path;
use std::process::{Command, Stdio};

use crossback_testkit::machine::make_root;
use crossback_testkit::{require_root, run, LoopDisk, LoopFs};

fn blkid(dev: &str, tag: &str) -> String {
    let out = Command::new("blkid").args(["-p", "-s", tag, "-o", "value", dev]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn table(dev: &str) -> Option<serde_json::Value> {
    let out = Command::new("sfdisk").args(["--json", dev]).output().unwrap();
    out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["partitiontable"].clone())
}

/// Runs `f` with the vfat filesystem on `dev` mounted read-write through fusefat.
fn with_vfat(dev: &str, f: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("fusefat").args(["-f", dev]).arg(dir.path()).args(["-o", "rw+"]).stderr(Stdio::null()).spawn().unwrap();
    let start = std::time::Instant::now();
    while !run(Command::new("sh").arg("-c").arg(format!("grep -c ' {} ' /proc/self/mountinfo || true", dir.path().display()))).trim().starts_with('1') {
        assert!(start.elapsed().as_secs() < 10, "fusefat did not mount {dev}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f(dir.path());
    run(Command::new("fusermount").arg("-u").arg(dir.path()));
    let _ = child.wait();
}

/// alpha's file on the restored disk's second partition and beta's on its
/// third (subvolume @home), each mounted read-only for the read.
fn systems_files(parts: &[String]) -> (String, String) {
    let mnt = tempfile::tempdir().unwrap();
    let read = |dev: &str, opts: &str, file: &str| {
        run(Command::new("mount").args(["-o", opts]).arg(dev).arg(mnt.path()));
        let text = std::fs::read_to_string(mnt.path().join(file));
        run(Command::new("umount").arg(mnt.path()));
        text.unwrap_or_else(|e| panic!("{file} on {dev}: {e}"))
    };
    (read(&parts[1], "ro", "root/alpha.txt"), read(&parts[2], "ro,subvol=@home", "beta.txt"))
}

struct Old {
    disk: LoopDisk,
    esp_uuid: String,
    alpha_uuid: String,
    beta_uuid: String,
}

/// The old disk: GPT with an ESP shared by alpha (ext4) and beta (btrfs, @ and @home).
fn old_disk() -> Old {
    let disk = LoopDisk::partitioned(420, "label: gpt\nsize=40MiB, type=U, name=\"EFI system\"\nsize=140MiB, type=L, name=\"alpha\"\ntype=L, name=\"beta\"\n");
    let (esp, a, b) = (disk.part(1), disk.part(2), disk.part(3));
    run(Command::new("mkfs.vfat").args(["-F", "32", "-n", "ESP", "-i", &crossback_testkit::random_vfat_id(), &esp]));
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "alpha", &a]));
    run(Command::new("mkfs.btrfs").args(["-q", "-f", "-L", "beta", &b]));
    let (esp_uuid, alpha_uuid, beta_uuid) = (blkid(&esp, "UUID"), blkid(&a, "UUID"), blkid(&b, "UUID"));
    let mnt = tempfile::tempdir().unwrap();
    run(Command::new("mount").arg(&a).arg(mnt.path()));
    make_root(mnt.path(), "alphaos", "Alpha OS 1", &format!("UUID={alpha_uuid} / ext4 errors=remount-ro 0 1\nUUID={esp_uuid} /boot/efi vfat umask=0077 0 1\n"));
    std::fs::write(mnt.path().join("root/alpha.txt"), "alpha's file\n").unwrap();
    run(Command::new("umount").arg(mnt.path()));
    run(Command::new("mount").arg(&b).arg(mnt.path()));
    run(Command::new("btrfs").args(["-q", "subvolume", "create"]).arg(mnt.path().join("@")));
    run(Command::new("btrfs").args(["-q", "subvolume", "create"]).arg(mnt.path().join("@home")));
    make_root(
        &mnt.path().join("@"),
        "betaos",
        "Beta OS 2",
        &format!("UUID={beta_uuid} / btrfs subvol=@ 0 0\nUUID={beta_uuid} /home btrfs subvol=@home 0 0\nUUID={esp_uuid} /boot/efi vfat umask=0077 0 1\n"),
    );
    std::fs::write(mnt.path().join("@home/beta.txt"), "beta's home\n").unwrap();
    run(Command::new("umount").arg(mnt.path()));
    // A loader of its own, and no fallback loader (Debian's default).
    with_vfat(&esp, |m| {
        std::fs::create_dir_all(m.join("EFI/alpha")).unwrap();
        std::fs::write(m.join("EFI/alpha/grubx64.efi"), "the first loader\n").unwrap();
        std::fs::write(m.join("EFI/alpha/grub.cfg"), "search.fs_uuid x root\n").unwrap();
    });
    Old { disk, esp_uuid, alpha_uuid, beta_uuid }
}

/// The old disk, the media's two slots (unmounted) and a configuration
/// (`config.toml` in the directory) with one generation of both systems.
fn backed_up() -> (Old, LoopFs, LoopFs, tempfile::TempDir) {
    backed_up_with(None)
}

/// As `backed_up`, the media encrypted with the passphrase in `pass` when given.
fn backed_up_with(pass: Option<&Path>) -> (Old, LoopFs, LoopFs, tempfile::TempDir) {
    let old = old_disk();
    let mut slot_a = LoopFs::new("ext4", 160);
    let mut slot_b = LoopFs::new("ext4", 160);
    slot_a.unmount();
    slot_b.unmount();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let devices = [old.disk.part(1), old.disk.part(2), old.disk.part(3), slot_a.device.clone(), slot_b.device.clone()].join(",");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &devices]));
    let mut prepare = crossback(&cfg);
    prepare.args(["media", "prepare", &slot_a.device, &slot_b.device]);
    if let Some(p) = pass {
        prepare.arg("--encrypt").env("CROSSBACK_PASSPHRASE_FILE", p).env("CROSSBACK_SCRYPT_WORK_FACTOR", "12");
    }
    ok(&mut prepare);
    ok(crossback(&cfg).arg("backup"));
    (old, slot_a, slot_b, dir)
}

#[test]
fn root_a_dead_disk_comes_back_on_a_smaller_blank_one() {
    if !require_root("root_a_dead_disk_comes_back_on_a_smaller_blank_one") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let (old, mut slot_a, mut slot_b, dir) = backed_up();
    let cfg = dir.path().join("config.toml");
    // A generation made as from a dual boot, one system at a time; the ESP
    // changes between the two backups: the newest backup of it wins.
    let names: Vec<String> =
        std::fs::read_to_string(&cfg).unwrap().lines().filter_map(|l| l.strip_prefix("name = ").map(|n| n.trim_matches('"').to_string())).collect();
    let alpha = names.iter().find(|n| n.contains("alpha")).expect("alpha's name").clone();
    let beta = names.iter().find(|n| n.contains("beta")).expect("beta's name").clone();
    ok(crossback(&cfg).args(["backup", "--new-generation", &alpha]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    with_vfat(&old.disk.part(1), |m| std::fs::write(m.join("EFI/alpha/grubx64.efi"), "the newer loader\n").unwrap());
    ok(crossback(&cfg).args(["backup", &beta]));
    // A newest generation that is open (beta not yet in it)
    // does not hide beta's sealed backup: each system from its newest.
    ok(crossback(&cfg).args(["backup", "--new-generation", &alpha]));
    let before = table(&old.disk.device).unwrap();
    // With the old disk still attached, the duplicate identities
    // are known before anything is written: refused, the target untouched.
    let twin = LoopDisk::blank(340);
    let out = crossback(&cfg).args(["restore", "--bare-metal", "--disk", &twin.device, "--yes"]).output().unwrap();
    assert_eq!(kind(&out), "duplicate-uuid", "{}", text(&out));
    assert!(text(&out).contains("nothing was written"), "{}", text(&out));
    assert!(table(&twin.device).is_none(), "a refused restore wrote a table");
    drop(twin);
    drop(old.disk);

    let slots_before = (blkid(&slot_a.device, "UUID"), blkid(&slot_b.device, "UUID"));
    // Refused, nothing written: a disk too small for the data.
    let tiny = LoopDisk::blank(120);
    let out = crossback(&cfg).args(["restore", "--bare-metal", "--disk", &tiny.device, "--yes"]).output().unwrap();
    assert_eq!(kind(&out), "target-too-small", "{}", text(&out));
    assert!(table(&tiny.device).is_none(), "a refused restore wrote a table");
    // The media's disk.
    let out = crossback(&cfg).args(["restore", "--bare-metal", "--disk", &slot_a.device, "--yes"]).output().unwrap();
    assert_eq!(kind(&out), "target-in-use", "{}", text(&out));
    // A partition.
    let parted = LoopDisk::partitioned(64, "label: gpt\ntype=L\n");
    let out = crossback(&cfg).args(["restore", "--bare-metal", "--disk", &parted.part(1), "--yes"]).output().unwrap();
    assert_eq!(kind(&out), "usage", "{}", text(&out));
    assert_eq!(slots_before, (blkid(&slot_a.device, "UUID"), blkid(&slot_b.device, "UUID")));
    // A disk that holds something, without --yes: listed, and not touched.
    let new = precious_disk();
    let out = crossback(&cfg).args(["restore", "--bare-metal", "--disk", &new.device]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(kind(&out), "not-confirmed", "{}", text(&out));
    assert!(text(&out).contains("NOT blank") && text(&out).contains("precious"), "{}", text(&out));
    assert_eq!(blkid(&new.device, "LABEL"), "precious");

    // A partition table on the slot made by someone else: a name that would
    // change sfdisk's script, or partitions that overlap. Refused as damage,
    // the disk untouched (it holds "precious" still).
    for (from, to) in [("name = \"beta\"", "name = \"beta\\\", type=83\""), ("start = 2048", "start = 4096")] {
        let mut changed = Vec::new();
        for slot in [&mut slot_a, &mut slot_b] {
            slot.mount(&[]);
            for g in std::fs::read_dir(slot.path().join("crossback")).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("gen-")) {
                for sys in std::fs::read_dir(g.path()).unwrap().flatten().filter(|e| e.path().join("mounts.toml").is_file()) {
                    let p = sys.path().join("mounts.toml");
                    let t = std::fs::read_to_string(&p).unwrap();
                    if t.contains(from) {
                        std::fs::write(&p, t.replacen(from, to, 1)).unwrap();
                        changed.push((p, t));
                    }
                }
            }
            slot.unmount();
        }
        let out = crossback(&cfg).args(["restore", "--bare-metal", "--disk", &new.device, "--yes"]).output().unwrap();
        for slot in [&mut slot_a, &mut slot_b] {
            slot.mount(&[]);
            for (p, t) in changed.iter().filter(|(p, _)| p.starts_with(slot.path())) {
                std::fs::write(p, t).unwrap();
            }
            slot.unmount();
        }
        assert!(!changed.is_empty(), "{from}: nothing to change");
        assert_eq!(kind(&out), "slot-damaged", "{from}: {}", text(&out));
        assert_eq!(blkid(&new.device, "LABEL"), "precious");
    }

    // Restored: the table with its identifiers, shrunk; the filesystems with theirs.
    let out = crossback(&cfg).args(["restore", "--bare-metal", "--disk", &new.device, "--yes"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("shrunk to fit"), "{}", text(&out));
    assert!(text(&out).contains(&format!("{alpha} (generation 3")) && text(&out).contains(&format!("{beta} (generation 2")), "{}", text(&out));
    assert!(!text(&out).contains("no backup: made empty"), "{}", text(&out));
    let after = table(&new.device).unwrap();
    assert_eq!(after["id"], before["id"]);
    let (bp, ap) = (before["partitions"].as_array().unwrap(), after["partitions"].as_array().unwrap());
    assert_eq!(bp.len(), ap.len());
    for (b, a) in bp.iter().zip(ap) {
        for k in ["uuid", "type", "name"] {
            assert_eq!(a[k], b[k], "{k}: {a} vs {b}");
        }
    }
    assert_eq!(ap[0]["size"], bp[0]["size"], "the ESP keeps its size");
    let end = ap.last().unwrap()["start"].as_u64().unwrap() + ap.last().unwrap()["size"].as_u64().unwrap();
    assert!(end <= 340 * 2048 - 33, "{after}");
    let parts = new.parts();
    assert_eq!(parts.len(), 3, "{parts:?}");
    assert_eq!(blkid(&parts[0], "UUID"), old.esp_uuid);
    assert_eq!(blkid(&parts[1], "UUID"), old.alpha_uuid);
    assert_eq!(blkid(&parts[2], "UUID"), old.beta_uuid);
    assert_eq!(systems_files(&parts), ("alpha's file\n".to_string(), "beta's home\n".to_string()));
    let mnt = tempfile::tempdir().unwrap();
    let mut loaders = Vec::new();
    with_vfat(&parts[0], |m| {
        for f in ["EFI/alpha/grubx64.efi", "EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grub.cfg"] {
            loaders.push(std::fs::read_to_string(m.join(f)).unwrap_or_default());
        }
    });
    assert_eq!(loaders[0], "the newer loader\n", "the shared ESP comes from its newest backup");
    // No fallback loader was there: the system's own is copied to the fallback path.
    assert_eq!(loaders[1], "the newer loader\n", "{}", text(&out));
    assert_eq!(loaders[2], "search.fs_uuid x root\n");
    assert!(text(&out).contains("copied EFI/alpha/grubx64.efi to EFI/BOOT/BOOTX64.EFI"), "{}", text(&out));

    // Once more with new UUIDs: the same table (PARTUUIDs), new filesystem
    // UUIDs; each system's fstab names its own and the shared ESP's new ones
    // (the ESP is restored with one system, named by both); the
    // configuration names the new roots.
    drop(new);
    let other = LoopDisk::blank(340);
    let out = crossback(&cfg).args(["restore", "--bare-metal", "--disk", &other.device, "--yes", "--new-uuids"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let parts = other.parts();
    let (esp, alpha_root, beta_root) = (blkid(&parts[0], "UUID"), blkid(&parts[1], "UUID"), blkid(&parts[2], "UUID"));
    assert!(esp != old.esp_uuid && alpha_root != old.alpha_uuid && beta_root != old.beta_uuid, "{}", text(&out));
    let after2 = table(&other.device).unwrap();
    for (b, a) in bp.iter().zip(after2["partitions"].as_array().unwrap()) {
        assert_eq!(a["uuid"], b["uuid"], "the PARTUUIDs stay");
    }
    run(Command::new("mount").args(["-o", "ro"]).arg(&parts[1]).arg(mnt.path()));
    let alpha_fstab = std::fs::read_to_string(mnt.path().join("etc/fstab"));
    run(Command::new("umount").arg(mnt.path()));
    run(Command::new("mount").args(["-o", "ro,subvol=@"]).arg(&parts[2]).arg(mnt.path()));
    let beta_fstab = std::fs::read_to_string(mnt.path().join("etc/fstab"));
    run(Command::new("umount").arg(mnt.path()));
    let (alpha_fstab, beta_fstab) = (alpha_fstab.unwrap(), beta_fstab.unwrap());
    assert!(alpha_fstab.contains(&format!("UUID={alpha_root} /")) && alpha_fstab.contains(&format!("UUID={esp} /boot/efi")), "{alpha_fstab}");
    assert!(beta_fstab.contains(&format!("UUID={beta_root} /home")) && beta_fstab.contains(&format!("UUID={esp} /boot/efi")), "{beta_fstab}");
    assert!(!alpha_fstab.contains(&old.esp_uuid) && !beta_fstab.contains(&old.esp_uuid));
    let c = std::fs::read_to_string(&cfg).unwrap();
    assert!(c.contains(&format!("root = \"{alpha_root}\"")) && c.contains(&format!("root = \"{beta_root}\"")), "{c}");

    // One system of the dual boot alone with new UUIDs: the ESP
    // it shares with beta gets a new one, which beta's fstab does not name;
    // said before the restore and after it, with the new UUID.
    drop(other);
    let (alpha, beta) = (names.iter().find(|n| n.contains("alpha")).unwrap(), names.iter().find(|n| n.contains("beta")).unwrap());
    let (esp2, root2) = (LoopFs::blank(64), LoopFs::blank(160));
    let out = crossback(&cfg)
        .args(["restore", alpha, "--bare-metal", "--new-uuids", "--yes", "--no-boot-repair", "--device"])
        .arg(format!("/boot/efi={}", esp2.device))
        .arg("--device")
        .arg(format!("/={}", root2.device))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let new_esp = blkid(&esp2.device, "UUID");
    assert!(new_esp != old.esp_uuid, "{}", text(&out));
    assert!(text(&out).contains(&format!("is also {beta}'s /boot/efi")), "{}", text(&out));
    assert!(
        err(&out).contains(&format!("warning: {beta}'s /etc/fstab names its /boot/efi as UUID={}; the restored filesystem is UUID={new_esp}", old.esp_uuid)),
        "{}",
        text(&out)
    );
}

/// The machine and the backup disk gone (a fire): on a new machine with
/// only the store's credentials and the passphrase, `remote add` and `init
/// --remote` take the configuration from the store, and a blank disk gets
/// both systems back from it; an archive replaced on the store is refused
/// before the disk is touched.
#[test]
fn root_a_dead_disk_comes_back_from_the_remote_alone() {
    let test = "root_a_dead_disk_comes_back_from_the_remote_alone";
    if !require_root(test) || !crossback_testkit::servers::available(test) {
        return;
    }
    let _serial = crossback_testkit::serial();
    let Old { disk: dead, esp_uuid, alpha_uuid, beta_uuid } = old_disk();
    let (mut slot_a, mut slot_b) = (LoopFs::new("ext4", 160), LoopFs::new("ext4", 160));
    slot_a.unmount();
    slot_b.unmount();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "remote passphrase\n").unwrap();
    let cb = |cfg: &Path| {
        let mut c = crossback(cfg);
        c.arg("--passphrase-file").arg(&pass).env("CROSSBACK_SCRYPT_WORK_FACTOR", "12").stdin(Stdio::null());
        c
    };
    let devices = [dead.part(1), dead.part(2), dead.part(3), slot_a.device.clone(), slot_b.device.clone()].join(",");
    ok(cb(&cfg).args(["init", "--yes", "--devices", &devices]));
    ok(cb(&cfg).args(["media", "prepare", &slot_a.device, &slot_b.device]));
    ok(cb(&cfg).arg("backup"));
    let s3 = crossback_testkit::servers::SeaweedFs::start();
    let creds = dir.path().join("offsite.s3");
    s3.credentials_file(&creds);
    let url = format!("s3://{}/backups", s3.bucket);
    ok(cb(&cfg).args(["remote", "add", "offsite", &url, "--endpoint", &s3.endpoint(), "--machine", "desk", "--credentials"]).arg(&creds));
    ok(cb(&cfg).arg("push"));
    let before = table(&dead.device).unwrap();
    // Gone: the old disk and the backup disk.
    drop(dead);
    drop((slot_a, slot_b));
    let new = LoopDisk::blank(420);

    // One archive replaced on the store: refused, the blank disk left blank.
    let names: Vec<String> =
        std::fs::read_to_string(&cfg).unwrap().lines().filter_map(|l| l.strip_prefix("name = ").map(|n| n.trim_matches('"').to_string())).collect();
    let beta = names.iter().find(|n| n.contains("beta")).expect("beta's name").clone();
    let object = format!("http://127.0.0.1:{}/buckets/{}/backups/desk/gen-000001/{beta}/home.tar.zst.age", s3.filer_port(), s3.bucket);
    let kept = dir.path().join("kept");
    run(Command::new("curl").args(["-sSf", "-o"]).arg(&kept).arg(&object));
    let planted = dir.path().join("planted");
    std::fs::write(&planted, vec![7u8; 4096]).unwrap();
    run(Command::new("curl").args(["-sSf", "-X", "PUT", "-T"]).arg(&planted).arg(&object));
    // A new machine: nothing but the store's credentials and the passphrase.
    let cfg_old = cfg.clone();
    let cfg = dir.path().join("new-machine.toml");
    let o =
        cb(&cfg).args(["remote", "add", "offsite", &url, "--endpoint", &s3.endpoint(), "--machine", "laptop", "--credentials"]).arg(&creds).output().unwrap();
    assert_eq!(kind(&o), "no-backup", "a machine the store has no backups of: {}", text(&o));
    assert!(!cfg.exists(), "a refused remote add wrote a configuration");
    ok(cb(&cfg).args(["remote", "add", "offsite", &url, "--endpoint", &s3.endpoint(), "--machine", "desk", "--credentials"]).arg(&creds));
    let said = text(&ok(cb(&cfg).args(["init", "--remote", "offsite"])));
    assert!(said.contains("took the configuration from remote offsite (machine desk, generation 1)"), "{said}");
    let (old_text, new_text) = (std::fs::read_to_string(&cfg_old).unwrap(), std::fs::read_to_string(&cfg).unwrap());
    for line in old_text.lines().filter(|l| l.starts_with("name = ") || l.starts_with("root = ") || l.starts_with("slot_a = ")) {
        assert!(new_text.contains(line), "{line} is not in the configuration taken from the remote:\n{new_text}");
    }
    let o = cb(&cfg).args(["init", "--remote", "offsite"]).output().unwrap();
    assert_eq!(kind(&o), "not-confirmed", "{}", text(&o));

    let out = cb(&cfg).args(["restore", "--bare-metal", "--disk", &new.device, "--yes", "--remote", "offsite"]).output().unwrap();
    assert_eq!(kind(&out), "archive-mismatch", "{}", text(&out));
    assert!(table(&new.device).is_none(), "a refused restore wrote a partition table: {}", text(&out));
    run(Command::new("curl").args(["-sSf", "-X", "PUT", "-T"]).arg(&kept).arg(&object));

    let out = cb(&cfg).args(["restore", "--bare-metal", "--disk", &new.device, "--yes", "--remote", "offsite"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let after = table(&new.device).unwrap();
    assert_eq!(after["id"], before["id"]);
    let parts = new.parts();
    assert_eq!([blkid(&parts[0], "UUID"), blkid(&parts[1], "UUID"), blkid(&parts[2], "UUID")], [esp_uuid, alpha_uuid, beta_uuid]);
    assert_eq!(systems_files(&parts), ("alpha's file\n".to_string(), "beta's home\n".to_string()));
    let mut loader = String::new();
    with_vfat(&parts[0], |m| loader = std::fs::read_to_string(m.join("EFI/alpha/grubx64.efi")).unwrap_or_default());
    assert_eq!(loader, "the first loader\n");
}

/// A `crossback recover` session: its output read as it comes, each
/// question (a line ending in " > ") answered by `reply`.
fn recover_session(cfg: &Path, reply: impl FnMut(&str, &str) -> Option<String>) -> (std::process::ExitStatus, String) {
    // The shell '!' opens: one that ends at once (a person types `exit`).
    recover_in(crossback(cfg).arg("recover").env("SHELL", "true"), reply)
}

/// As `recover_session`, for the command `cmd` (one that runs recover on a
/// terminal, too: the passphrase prompt counts as a question).
fn recover_in(cmd: &mut Command, mut reply: impl FnMut(&str, &str) -> Option<String>) -> (std::process::ExitStatus, String) {
    use std::io::{Read, Write};
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (mut said, mut asked_at) = (String::new(), 0);
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).unwrap() == 1 {
        said.push(byte[0] as char);
        if said.ends_with(" > ") || said.ends_with("Its passphrase: ") {
            let question = said[asked_at..].rsplit('\n').next().unwrap().to_string();
            match (reply(&question, &said), stdin.as_mut()) {
                (Some(a), Some(i)) => i.write_all(format!("{a}\n").as_bytes()).unwrap(),
                _ => drop(stdin.take()),
            }
            asked_at = said.len();
        }
    }
    let status = child.wait().unwrap();
    (status, said + &err.join().unwrap())
}

/// The media's ID, as the configuration names it.
fn media_id(cfg: &Path) -> String {
    std::fs::read_to_string(cfg).unwrap().lines().find_map(|l| l.strip_prefix("id = \"").map(|v| v.trim_end_matches('"').to_string())).unwrap()
}

/// A disk to restore onto, holding a filesystem labelled "precious": a
/// refusal that wrote nothing leaves the label.
fn precious_disk() -> LoopDisk {
    let new = LoopDisk::blank(340);
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "precious", &new.device]));
    new
}

/// The number `recover` gives the line naming `what` ("  3) /dev/loop7 …").
fn number_of(listing: &str, what: &str) -> String {
    let line = listing.lines().rev().find(|l| l.contains(&format!(") {what} "))).unwrap_or_else(|| panic!("{what} not listed:\n{listing}"));
    line.trim().split(')').next().unwrap().to_string()
}

#[test]
fn root_recover_asks_then_restores_onto_the_disk_chosen() {
    if !require_root("root_recover_asks_then_restores_onto_the_disk_chosen") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let (old, slot_a, _slot_b, dir) = backed_up();
    let cfg = dir.path().join("config.toml");
    let media = media_id(&cfg);
    drop(old.disk);
    let new = precious_disk();
    let media_answer = |said: &str| number_of(said, &format!("media {media} on"));

    // Every question answered but the last: "no". Refused, nothing written;
    // a wrong number and a shell ('!') on the way ask again.
    let mut asked = Vec::new();
    let (status, said) = recover_session(&cfg, |q, said| {
        asked.push(q.to_string());
        Some(match q {
            q if q.starts_with("Restore from which media") => media_answer(said),
            q if q.starts_with("Restore which generation?") && !asked.iter().any(|a| a == "shell") => {
                asked.push("shell".into());
                "!".into()
            }
            q if q.starts_with("Restore which generation?") => String::new(),
            q if q.starts_with("Restore which systems?") => "all".into(),
            q if q.starts_with("Restore onto which disk?") && !asked.iter().any(|a| a == "99") => {
                asked.push("99".into());
                "99".into()
            }
            q if q.starts_with("Restore onto which disk?") => number_of(said, &new.device),
            q if q.starts_with("Start the restore?") => "no".into(),
            other => panic!("unexpected question {other:?}\n{said}"),
        })
    });
    assert!(!status.success(), "{said}");
    assert!(said.contains("error[not-confirmed]") && said.contains("nothing was written"), "{said}");
    assert!(said.contains("answer with a number from 1 to"), "{said}");
    assert!(said.contains("A shell: crossback's commands are in it"), "{said}");
    assert!(said.contains(&format!("{} 340.0 MiB: a filesystem on the whole disk (ext4)", new.device)), "{said}");
    assert!(said.contains(&format!("command: crossback --config {} restore --bare-metal --disk {} --generation ", cfg.display(), new.device)), "{said}");
    assert!(!said.contains(&format!(") {} ", slot_a.device)), "the media's own disk is offered:\n{said}");
    assert_eq!(blkid(&new.device, "LABEL"), "precious", "a refused recover touched the disk");

    // The input ends at a question: refused, nothing written.
    let (status, said) = recover_session(&cfg, |q, said| q.starts_with("Restore from which media").then(|| media_answer(said)));
    assert!(!status.success() && said.contains("error[not-confirmed]"), "{said}");
    assert_eq!(blkid(&new.device, "LABEL"), "precious");

    // Yes: the command it printed runs, both systems come back.
    let (status, said) = recover_session(&cfg, |q, said| {
        Some(match q {
            q if q.starts_with("Restore from which media") => media_answer(said),
            q if q.starts_with("Restore onto which disk?") => number_of(said, &new.device),
            q if q.starts_with("Start the restore?") => "yes".into(),
            _ => String::new(),
        })
    });
    assert!(status.success(), "{said}");
    assert!(said.contains(&format!("$ crossback --config {} restore --bare-metal --disk {} --generation ", cfg.display(), new.device)), "{said}");
    assert!(said.contains("Remove the backup disk and reboot."), "{said}");
    assert_eq!(systems_files(&new.parts()), ("alpha's file\n".to_string(), "beta's home\n".to_string()));
}

#[test]
fn root_recover_asks_which_machine_when_the_disk_it_booted_from_holds_several() {
    if !require_root("root_recover_asks_which_machine_when_the_disk_it_booted_from_holds_several") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let old = old_disk();
    // The backup disk: a rescue partition and two machines' slots; a
    // second backup disk with a third machine's, not booted from.
    let backup =
        LoopDisk::partitioned(760, "label: gpt\nsize=40MiB, type=U, name=\"rescue\"\nsize=170MiB, type=L\nsize=170MiB, type=L\nsize=170MiB, type=L\ntype=L\n");
    run(Command::new("mkfs.vfat").args(["-F", "32", "-n", "CB-RESCUE", &backup.part(1)]));
    let other = LoopDisk::partitioned(360, "label: gpt\nsize=170MiB, type=L\ntype=L\n");
    for p in backup.parts().iter().skip(1).chain(other.parts().iter()) {
        run(Command::new("mkfs.ext4").args(["-q", "-F", p]));
    }
    let dir = tempfile::tempdir().unwrap();
    // A machine's media on slots a and b (encrypted with `pass` when given), no backup yet.
    let machine = |name: &str, a: String, b: String, pass: Option<&Path>| {
        let cfg = dir.path().join(format!("{name}.toml"));
        let devices = [old.disk.part(1), old.disk.part(2), old.disk.part(3), a.clone(), b.clone()].join(",");
        ok(crossback(&cfg).args(["init", "--yes", "--devices", &devices]));
        let mut prepare = crossback(&cfg);
        prepare.args(["media", "prepare", &a, &b]);
        if let Some(p) = pass {
            prepare.arg("--encrypt").env("CROSSBACK_PASSPHRASE_FILE", p).env("CROSSBACK_SCRYPT_WORK_FACTOR", "12");
        }
        ok(&mut prepare);
        (media_id(&cfg), cfg)
    };
    let pass = dir.path().join("three's passphrase");
    std::fs::write(&pass, "three's passphrase\n").unwrap();
    let (one, cfg) = machine("one", backup.part(2), backup.part(3), None);
    let (two, cfg_two) = machine("two", backup.part(4), backup.part(5), None);
    let (three, cfg_three) = machine("three", other.part(1), other.part(2), Some(&pass));
    // --media naming a media that carries no configuration yet: refused.
    let fresh = dir.path().join("fresh.toml");
    let o = crossback(&fresh).args(["init", "--yes", "--media", &three]).output().unwrap();
    assert_eq!(kind(&o), "no-backup", "{}", text(&o));
    assert!(!fresh.exists(), "a refused init wrote a configuration");
    for c in [&cfg, &cfg_two, &cfg_three] {
        ok(crossback(c).arg("backup"));
    }
    // init with no configuration yet takes no machine's by guess (three's
    // copy is encrypted: it counts all the same).
    let o = crossback(&fresh).args(["init", "--yes"]).output().unwrap();
    assert_eq!(kind(&o), "usage", "{}", text(&o));
    assert!(text(&o).contains("give --media ID") && text(&o).contains(&one) && text(&o).contains(&three), "{}", text(&o));
    assert!(!fresh.exists(), "a refused init wrote a configuration");
    // --media names no attached media, or a configuration is there already: refused.
    let o = crossback(&fresh).args(["init", "--yes", "--media", "0123456789abcdef0123456789abcdef"]).output().unwrap();
    assert_eq!(kind(&o), "slot-missing", "{}", text(&o));
    assert!(!fresh.exists(), "a refused init wrote a configuration");
    let before = std::fs::read_to_string(&cfg).unwrap();
    let o = crossback(&cfg).args(["init", "--yes", "--media", &two]).output().unwrap();
    assert_eq!(kind(&o), "usage", "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before, "a refused init changed the configuration");
    drop(old.disk);
    let new = precious_disk();

    // Machine two chosen, the new disk, and "no" at the end.
    let choose_two = |cfg: &Path| {
        let (status, said) = recover_session(cfg, |q, said| {
            Some(match q {
                q if q.starts_with("Restore from which media (which machine)?") => number_of(said, &format!("media {two} on")),
                q if q.starts_with("Restore onto which disk?") => number_of(said, &new.device),
                q if q.starts_with("Start the restore?") => "no".into(),
                _ => String::new(),
            })
        });
        assert!(!status.success() && said.contains("error[not-confirmed]"), "{said}");
        said
    };
    let said = choose_two(&cfg);
    assert!(said.contains("The backup disk holds the backups of several machines:"), "{said}");
    for id in [&one, &two] {
        assert!(
            said.contains(&format!(") media {id} on {}: alphaos, betaos (newest complete generation 1, sealed ", backup.device)),
            "{id} not listed:\n{said}"
        );
    }
    assert!(!said.contains(&format!("media {three}")), "a media on a disk it did not boot from is offered:\n{said}");
    assert!(said.contains(&format!("from:    backup media {two}, generation 1")), "{said}");
    for media_disk in [&backup.device, &other.device] {
        assert!(!said.contains(&format!(") {media_disk} ")), "a backup disk is offered to restore onto:\n{said}");
    }
    // A rescue with no configuration: the one of the machine chosen is taken.
    let said = choose_two(&fresh);
    assert!(said.contains(&format!("$ crossback --config {} init --yes --media {two}", fresh.display())), "{said}");
    assert!(std::fs::read_to_string(&fresh).unwrap().contains(&format!("id = \"{two}\"")), "{said}");
    assert_eq!(blkid(&new.device, "LABEL"), "precious", "a refused recover touched the disk");
}

#[test]
fn root_recover_checks_the_passphrase_before_any_question_and_asks_again_when_typed_wrong() {
    if !require_root("root_recover_checks_the_passphrase_before_any_question_and_asks_again_when_typed_wrong") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let keys = tempfile::tempdir().unwrap();
    let (right, wrong) = (keys.path().join("right"), keys.path().join("wrong"));
    std::fs::write(&right, "the media's passphrase\n").unwrap();
    std::fs::write(&wrong, "not the media's passphrase\n").unwrap();
    let (old, _slot_a, _slot_b, dir) = backed_up_with(Some(&right));
    let cfg = dir.path().join("config.toml");
    let media = media_id(&cfg);
    drop(old.disk);
    let new = precious_disk();
    let media_answer = |said: &str| number_of(said, &format!("media {media} on"));

    // A passphrase file that does not open the media: refused before any
    // other question, nothing written.
    let (status, said) = recover_in(crossback(&cfg).arg("recover").env("CROSSBACK_PASSPHRASE_FILE", &wrong), |q, said| {
        q.starts_with("Restore from which media").then(|| media_answer(said))
    });
    assert!(!status.success() && said.contains("error[key]"), "{said}");
    assert!(said.contains(&format!("the passphrase in {} does not open media {media}", wrong.display())), "{said}");
    assert!(!said.contains("Restore which generation?"), "asked on with a passphrase that does not open the media:\n{said}");
    assert_eq!(blkid(&new.device, "LABEL"), "precious", "a refused recover touched the disk");

    // No file and no terminal to ask on: refused, said how to give it.
    let (status, said) = recover_in(crossback(&cfg).arg("recover"), |q, said| q.starts_with("Restore from which media").then(|| media_answer(said)));
    assert!(!status.success() && said.contains("error[key]") && said.contains("--passphrase-file"), "{said}");

    // Typed on a terminal (script(1)'s): a wrong one is said and asked
    // again, the right one goes on; "no" at the end writes nothing.
    let line = format!("exec {} --config {} recover", env!("CARGO_BIN_EXE_crossback"), cfg.display());
    let mut typed = Vec::new();
    let (status, said) = recover_in(Command::new("script").args(["-qfec", &line, "/dev/null"]).env("SHELL", "sh"), |q, said| {
        Some(match q {
            q if q.ends_with("Its passphrase: ") => {
                // Typed as a person does, once the prompt turned echo off.
                std::thread::sleep(std::time::Duration::from_millis(300));
                typed.push(q.to_string());
                if typed.len() == 1 { "not the media's passphrase" } else { "the media's passphrase" }.to_string()
            }
            q if q.starts_with("Restore from which media") => media_answer(said),
            q if q.starts_with("Restore onto which disk?") => number_of(said, &new.device),
            q if q.starts_with("Start the restore?") => "no".into(),
            _ => String::new(),
        })
    });
    assert_eq!(typed.len(), 2, "{said}");
    assert!(said.contains("That passphrase does not open this media; again."), "{said}");
    assert!(said.contains("Restore which generation?") && said.contains("error[not-confirmed]"), "{said}");
    assert!(!status.success(), "{said}");
    assert_eq!(blkid(&new.device, "LABEL"), "precious", "a refused recover touched the disk");
}

#[test]
fn root_a_backup_refreshes_the_rescue_s_crossback_only_when_it_fits_and_status_shows_it() {
    if !require_root("root_a_backup_keeps_the_rescue_s_crossback_current_and_status_shows_it") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let old = old_disk();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let devices = [old.disk.part(1), old.disk.part(2), old.disk.part(3)].join(",");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &devices]));
    // A whole backup disk; no signed boot chain here (an empty system root):
    // its rescue partition is left empty, and given a rescue's record by hand.
    let backup = LoopDisk::blank(1400);
    let empty_root = tempfile::tempdir().unwrap();
    let out = ok(crossback(&cfg).env("CROSSBACK_SYSTEM_ROOT", empty_root.path()).args(["media", "prepare", "--disk", &backup.device, "--yes"]));
    assert!(text(&out).contains("stays empty"), "{}", text(&out));
    let rescue = backup.part(1);
    let record =
        "built = \"2026-01-01T00:00:00Z\"\ncrossback = \"0.0.1\"\ncrossback_hash = \"an older one\"\nkernel = \"6.1.0-test\"\nsecure_boot = true\nbytes = 1\n";
    with_vfat(&rescue, |m| {
        std::fs::create_dir_all(m.join("crossback")).unwrap();
        std::fs::write(m.join("crossback/rescue.toml"), record).unwrap();
    });
    // This test's crossback is a debug build, larger than the rescue
    // carries: said, the backup stands, the partition as it was (the
    // replacing itself: tests/library.rs; with a release build: the lab).
    let out = ok(crossback(&cfg).arg("backup"));
    assert!(text(&out).contains(&format!("warning: the rescue system on {rescue} keeps its crossback")), "{}", text(&out));
    assert!(text(&out).contains("more than the 64 MiB the rescue carries"), "{}", text(&out));
    let mut now = String::new();
    with_vfat(&rescue, |m| {
        assert!(!m.join("crossback/crossback").exists() && !m.join("crossback/crossback.partial").exists());
        now = std::fs::read_to_string(m.join("crossback/rescue.toml")).unwrap();
    });
    assert_eq!(now, record);
    let out = ok(crossback(&cfg).arg("status"));
    assert!(text(&out).contains(&format!("rescue system: {rescue}, built 2026-01-01T00:00:00Z")), "{}", text(&out));
    assert!(text(&out).contains("runs crossback 0.0.1") && text(&out).contains("boots under Secure Boot"), "{}", text(&out));
    // A record planted with junk: said, and the backup stands.
    with_vfat(&rescue, |m| std::fs::write(m.join("crossback/rescue.toml"), "crossback = [\"not\", \"a\", \"record\"]\n").unwrap());
    let out = ok(crossback(&cfg).args(["backup", "--new-generation"]));
    assert!(text(&out).contains("keeps its crossback") && text(&out).contains("does not read"), "{}", text(&out));
    let out = ok(crossback(&cfg).arg("status"));
    assert!(text(&out).contains(&format!("rescue system: {rescue}: ")) && text(&out).contains("media rescue --device"), "{}", text(&out));
}
