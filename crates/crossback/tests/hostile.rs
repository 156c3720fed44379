//! Hostile input, half-done work and mistyped commands, one
//! test per numbered item, named after it. Each asserts the refusal's kind
//! (`error[KIND]`) and that nothing was touched, not only a non-zero exit.
//!
//! The archive tests need no root: they craft archives with the public API.
//! The slot and restore tests need root (loop devices).

mod common;
use common::{crossback, err, ok, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crossback_archive::archive::Layout;
use crossback_archive::container::{FrameTable, SKIPPABLE_MAGIC};
use crossback_testkit::machine::TestMachine;
use crossback_testkit::{require_root, run, LoopDisk, LoopFs};

/// The kind of the refusal in stderr: `error[KIND]`.
fn kind(o: &Output) -> Option<String> {
    let e = err(o);
    let start = e.find("error[")? + 6;
    Some(e[start..start + e[start..].find(']')?].to_string())
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crossback"))
}

/// Runs crossback with its address space limited (an unbounded allocation
/// then fails the run instead of eating the machine).
fn limited(mib: u64, args: &[&str]) -> Output {
    Command::new("prlimit")
        .arg(format!("--as={}", mib << 20))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_crossback"))
        .args(args)
        .env("MALLOC_ARENA_MAX", "2")
        .output()
        .expect("running prlimit")
}

fn no_crash(o: &Output) {
    let e = err(o);
    assert!(o.status.code().is_some(), "killed by a signal: {e}");
    assert!(!e.contains("panicked") && !e.contains("memory allocation") && !e.contains("capacity overflow"), "{e}");
}

/// A small tree and its archive.
fn archive(dir: &Path, extra: impl FnOnce(&Path), args: &[&str]) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), "alpha\n").unwrap();
    std::fs::write(src.join("etc/motd"), "hello\n".repeat(100)).unwrap();
    extra(&src);
    let out = dir.join("a.tar.zst");
    let mut c = bin();
    c.args(["archive", "create"]).arg(&src).arg("-o").arg(&out).args(args);
    ok(&mut c);
    out
}

/// Rewrites an archive's frame table (a valid trailer around it: the
/// index hash and the footer are made to match, so only the table lies).
fn rewrite_table(path: &Path, payload: Vec<u8>) {
    let a = crossback_archive::Archive::open(path).unwrap();
    let Layout::Indexed { footer, .. } = &a.layout else { panic!("not indexed") };
    let bytes = std::fs::read(path).unwrap();
    let mut frame = SKIPPABLE_MAGIC.to_le_bytes().to_vec();
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    let mut h = blake3::Hasher::new();
    h.update(&bytes[footer.index_off as usize..footer.table_off as usize]);
    h.update(&frame);
    let mut f = footer.clone();
    f.table_len = frame.len() as u64;
    f.meta_hash = *h.finalize().as_bytes();
    let mut out = bytes[..footer.table_off as usize].to_vec();
    out.extend_from_slice(&frame);
    out.extend_from_slice(&f.encode());
    std::fs::write(path, out).unwrap();
}

fn table_of(path: &Path) -> FrameTable {
    let a = crossback_archive::Archive::open(path).unwrap();
    let Layout::Indexed { table, .. } = &a.layout else { panic!("not indexed") };
    (**table).clone()
}

fn packed(t: &FrameTable) -> Vec<u8> {
    zstd::bulk::compress(&postcard::to_stdvec(t).unwrap(), 3).unwrap()
}

/// A frame whose recorded compressed length is 2^45 is not
/// allocated: the table is refused and the archive read from its start.
#[test]
fn a_frame_length_of_2_pow_45_is_not_allocated() {
    let t = tempfile::tempdir().unwrap();
    let a = archive(t.path(), |_| {}, &[]);
    let mut table = table_of(&a);
    table.frames[0].c_len = 1 << 45;
    rewrite_table(&a, packed(&table));
    let dest = t.path().join("out");
    let o = limited(512, &["archive", "extract", a.to_str().unwrap(), "-C", dest.to_str().unwrap()]);
    no_crash(&o);
    assert_eq!(o.status.code(), Some(4), "the broken trailer is reported as damage: {}", text(&o));
    assert!(err(&o).contains("frame 0"), "{}", err(&o));
    assert_eq!(std::fs::read_to_string(dest.join("etc/hostname")).unwrap(), "alpha\n", "the data is still restored");
    let o = limited(512, &["archive", "verify", a.to_str().unwrap()]);
    no_crash(&o);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
}

/// Frames that overlap or leave gaps are refused the same way.
#[test]
fn frame_tables_that_do_not_tile_the_data_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let a = archive(t.path(), |_| {}, &[]);
    for (i, change) in [|t: &mut FrameTable| t.frames[0].c_off += 1, |t: &mut FrameTable| t.frames[0].u_len += 1 << 40, |t: &mut FrameTable| t.frames.clear()]
        .into_iter()
        .enumerate()
    {
        let copy = t.path().join(format!("c{i}.tar.zst"));
        std::fs::copy(&a, &copy).unwrap();
        let mut table = table_of(&copy);
        change(&mut table);
        rewrite_table(&copy, packed(&table));
        let o = limited(512, &["archive", "ls", copy.to_str().unwrap()]);
        no_crash(&o);
        let opened = crossback_archive::Archive::open(&copy).unwrap();
        assert!(!opened.is_indexed(), "case {i}: a lying table must not be used");
        assert!(opened.trailer_problem.is_some());
    }
}

/// A frame table that is a zstd bomb (1 GiB of zeros in a few
/// KiB) does not grow past its cap.
#[test]
fn a_frame_table_that_is_a_zstd_bomb_stays_small() {
    let t = tempfile::tempdir().unwrap();
    let a = archive(t.path(), |_| {}, &[]);
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    rewrite_table(&a, bomb);
    let start = std::time::Instant::now();
    let o = limited(512, &["archive", "ls", a.to_str().unwrap()]);
    no_crash(&o);
    assert!(err(&o).contains("frame table"), "{}", err(&o));
    assert!(start.elapsed().as_secs() < 30);
}

/// An honest archive whose data is one frame of 600 MiB: one
/// small file from it is restored in bounded memory (the old reader held
/// the whole frame in memory).
#[test]
fn one_huge_frame_restores_a_small_file_in_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let a = archive(
        t.path(),
        |src| {
            let mut f = std::fs::File::create(src.join("big")).unwrap();
            let block = b"crossback ".repeat(1 << 16);
            for _ in 0..(600 << 20) / block.len() {
                std::io::Write::write_all(&mut f, &block).unwrap();
            }
            std::fs::write(src.join("zz-small"), "after the big one\n").unwrap();
        },
        &["--frame-size", &(1u64 << 30).to_string()],
    );
    assert_eq!(table_of(&a).frames.len(), 1, "one frame holds everything");
    let dest = t.path().join("out");
    let o = limited(256, &["archive", "extract", a.to_str().unwrap(), "-C", dest.to_str().unwrap(), "zz-small"]);
    no_crash(&o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(dest.join("zz-small")).unwrap(), "after the big one\n");
    std::fs::remove_file(t.path().join("src/big")).unwrap();
}

/// An archive of a newer format version is refused, not read as the
/// current one: by its footer (what an indexed read goes by: a newer
/// crossback writes its version in both the header and the footer), and
/// by its header when it has no footer (a truncated one, read as a stream).
#[test]
fn a_newer_archive_format_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let a = archive(t.path(), |_| {}, &[]);
    let orig = std::fs::read(&a).unwrap();
    // The header frame and the footer frame: magic (4), length (4), "CRBKHDR1"/"CRBKFTR1" (8), version (4).
    let footer = orig.len() - 144;
    assert_eq!(&orig[footer + 8..footer + 16], b"CRBKFTR1");
    let newer = {
        let mut b = orig.clone();
        b[16] = 2;
        b[footer + 16] = 2;
        b
    };
    let newer_cut = {
        let mut b = orig.clone();
        b[16] = 2;
        b.truncate(footer);
        b
    };
    for (what, bytes, cmds) in
        [("both markers", newer, &[&["archive", "ls"][..], &["archive", "extract"]][..]), ("no footer", newer_cut, &[&["archive", "extract"][..]][..])]
    {
        std::fs::write(&a, &bytes).unwrap();
        for cmd in cmds {
            let dest = t.path().join("out");
            let mut c = bin();
            c.args(*cmd).arg(&a);
            if cmd[1] == "extract" {
                c.arg("-C").arg(&dest);
            }
            let o = c.output().unwrap();
            assert_eq!(o.status.code(), Some(1), "{what}, {cmd:?}: {}", text(&o));
            assert!(err(&o).contains("format version 2"), "{what}, {cmd:?}: {}", err(&o));
            assert!(!dest.join("etc").exists(), "{what}: something was restored from an archive it does not understand");
        }
    }
}

// ---- slots, restore, locks: root ----

struct Setup {
    m: TestMachine,
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

fn setup() -> Setup {
    let m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    ok(crossback(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device]));
    Setup { m, dir, cfg }
}

/// What blkid finds on a device ("" for nothing).
fn fs_on(dev: &str) -> String {
    let o = Command::new("blkid").args(["-p", "-s", "TYPE", "-o", "value", dev]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `crossback status --json`.
fn status(cfg: &Path) -> serde_json::Value {
    serde_json::from_slice(&ok(crossback(cfg).args(["status", "--json"])).stdout).unwrap()
}

fn sha(path: impl AsRef<std::ffi::OsStr>) -> String {
    run(Command::new("sha256sum").arg(path))
}

/// A mount point edited into a slot's manifest, or an archive
/// name with `../`, makes the generation unreadable (a leftover), and no
/// restore writes outside `--to DIR`; an archive put in another's place is
/// refused by its recorded size and hash.
#[test]
fn root_restore_stays_inside_its_target() {
    if !require_root("root_restore_stays_inside_its_target") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    let outside = s.dir.path().join("somewhere");
    let manifest = |slot: &mut LoopFs, edit: &dyn Fn(&str) -> String| {
        slot.mount(&[]);
        let p = slot.path().join("crossback/gen-000001/generation.toml");
        let t = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, edit(&t)).unwrap();
        slot.unmount();
        t
    };
    let depth = "../".repeat(12);
    let evil = format!("/home/{depth}{}", outside.display().to_string().trim_start_matches('/'));
    let original = manifest(&mut s.m.slot_a, &|t| t.replace("mountpoint = \"/home\"", &format!("mountpoint = \"{evil}\"")));
    let to = s.dir.path().join("to");
    let o = crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&to).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(kind(&o).as_deref(), Some("no-backup"), "{}", err(&o));
    assert!(!outside.exists(), "nothing written outside the target");
    let st = ok(crossback(&s.cfg).arg("status"));
    assert!(text(&st).contains("gen-000001") && text(&st).contains("does not read"), "status names the leftover: {}", text(&st));
    // An archive file name that leaves the generation.
    manifest(&mut s.m.slot_a, &|_| original.replace("file = \"home.tar.zst\"", "file = \"../../../home.tar.zst\""));
    let o = crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&to).output().unwrap();
    assert_eq!(kind(&o).as_deref(), Some("no-backup"), "{}", err(&o));
    // The manifest back as it was, but home.tar.zst replaced by root.tar.zst.
    manifest(&mut s.m.slot_a, &|_| original.clone());
    s.m.slot_a.mount(&[]);
    let g = s.m.slot_a.path().join("crossback/gen-000001/alpha");
    std::fs::copy(g.join("root.tar.zst"), g.join("home.tar.zst")).unwrap();
    s.m.slot_a.unmount();
    let o = crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&to).arg("/home").output().unwrap();
    assert_eq!(kind(&o).as_deref(), Some("archive-mismatch"), "{}", err(&o));
    assert!(!to.join("home/ann").exists(), "nothing restored from the wrong archive");
}

/// A `generation.toml.new` planted as a symlink is replaced,
/// not written through; a `crossback/` that is a symlink to another
/// filesystem is refused, and nothing is wiped or written there.
#[test]
fn root_planted_symlinks_on_a_slot_are_not_followed() {
    if !require_root("root_planted_symlinks_on_a_slot_are_not_followed") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    ok(crossback(&s.cfg).args(["backup", "alpha"]));
    let victim = s.dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    s.m.slot_a.mount(&[]);
    std::os::unix::fs::symlink(&victim, s.m.slot_a.path().join("crossback/gen-000001/generation.toml.new")).unwrap();
    s.m.slot_a.unmount();
    ok(crossback(&s.cfg).args(["backup", "beta"]));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "the symlink's target is untouched");
    let v = status(&s.cfg);
    assert_eq!(v["slots"][0]["generation"]["state"], "sealed");
    // crossback/ on slot B replaced by a symlink into another filesystem.
    let elsewhere = LoopFs::new("ext4", 64);
    std::fs::create_dir_all(elsewhere.path().join("crossback")).unwrap();
    std::fs::write(elsewhere.path().join("crossback/keep"), "mine\n").unwrap();
    s.m.slot_b.mount(&[]);
    let b = s.m.slot_b.path().join("crossback");
    std::fs::rename(&b, s.m.slot_b.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("crossback"), &b).unwrap();
    s.m.slot_b.unmount();
    let before = sha(&s.m.slot_a.image);
    let o = crossback(&s.cfg).arg("backup").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(kind(&o).as_deref(), Some("slot-not-prepared"), "{}", err(&o));
    assert_eq!(std::fs::read_dir(elsewhere.path().join("crossback")).unwrap().count(), 1, "nothing written through the symlink");
    assert_eq!(sha(&s.m.slot_a.image), before, "the other slot is untouched");
}

/// A FIFO as `generation.toml` hangs nothing; a 2 GiB file
/// there costs no memory.
#[test]
fn root_fifo_and_huge_manifests_neither_hang_nor_eat_memory() {
    if !require_root("root_fifo_and_huge_manifests_neither_hang_nor_eat_memory") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    ok(crossback(&s.cfg).arg("backup"));
    s.m.slot_b.mount(&[]);
    let p = s.m.slot_b.path().join("crossback/gen-000002/generation.toml");
    std::fs::remove_file(&p).unwrap();
    run(Command::new("mkfifo").arg(&p));
    s.m.slot_b.unmount();
    s.m.slot_a.mount(&[]);
    let p = s.m.slot_a.path().join("crossback/gen-000001/generation.toml");
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(2 << 30).unwrap();
    drop(f);
    s.m.slot_a.unmount();
    let cfg = s.cfg.to_str().unwrap().to_string();
    for args in [vec!["status"], vec!["ls", "alpha"], vec!["verify"]] {
        let mut all = vec!["--config", cfg.as_str()];
        all.extend(args.iter());
        let mut child = Command::new("timeout")
            .arg("60")
            .arg("prlimit")
            .arg(format!("--as={}", 1u64 << 30))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_crossback"))
            .args(&all)
            .env("MALLOC_ARENA_MAX", "2")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        let mut e = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut e).unwrap();
        let st = child.wait().unwrap();
        assert_ne!(st.code(), Some(124), "{args:?} hung");
        assert!(st.code().is_some() && !e.contains("memory allocation"), "{args:?}: {e}");
        if args[0] == "status" {
            assert!(out.contains("not a regular file") && out.contains("more than"), "{args:?}: {out}");
            // Damage, said as damage (not leftovers of a run).
            assert!(out.contains("damaged generation: gen-000002") && out.contains("damaged generation: gen-000001"), "{args:?}: {out}");
        } else if args[0] == "ls" {
            // What it reads past is named, as damage.
            assert!(e.contains("gen-000001 is DAMAGED") && e.contains("gen-000002 is DAMAGED"), "{args:?}: {e}");
            assert!(e.contains("error[no-backup]"), "{args:?}: {e}");
        } else if args[0] == "verify" {
            assert_eq!(st.code(), Some(4), "{args:?}: {out}{e}");
            assert!(out.contains("gen-000001 is DAMAGED") && out.contains("gen-000002 is DAMAGED"), "{args:?}: {out}");
        } else {
            assert!(e.contains("error[no-backup]"), "{args:?}: {e}");
        }
    }
    // The next backup does not wipe them; with the user's word it does.
    let before = common::slot_listing([&mut s.m.slot_a, &mut s.m.slot_b]);
    let o = crossback(&s.cfg).arg("backup").output().unwrap();
    assert_eq!(kind(&o).as_deref(), Some("slot-damaged"), "{}", text(&o));
    assert!(err(&o).contains("--discard-damaged"), "{}", err(&o));
    assert_eq!(common::slot_listing([&mut s.m.slot_a, &mut s.m.slot_b]), before, "nothing was written or wiped");
    ok(crossback(&s.cfg).args(["backup", "--discard-damaged"]));
}

/// Every option must make sense for its mode; devices must be
/// recorded mount points and distinct; too small is too small. Checked
/// before the first byte is written.
#[test]
fn root_restore_options_are_validated_before_anything_is_written() {
    if !require_root("root_restore_options_are_validated_before_anything_is_written") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    let sums = || [&s.m.alpha_root, &s.m.alpha_home, &s.m.alpha_efi].iter().map(|f| sha(&f.image)).collect::<Vec<_>>();
    let before = sums();
    let fresh = LoopFs::blank(64);
    let fresh2 = LoopFs::blank(64);
    let small = LoopFs::blank(8);
    let cases: Vec<(Vec<String>, &str, i32)> = vec![
        (vec!["--bare-metal".into(), "/etc/fstab".into(), "--yes".into()], "usage", 2),
        (vec!["--bare-metal".into(), "--yes".into(), "--device".into(), format!("/nothere={}", fresh.device)], "usage", 2),
        (
            vec![
                "--bare-metal".into(),
                "--yes".into(),
                "--new-uuids".into(),
                "--device".into(),
                format!("/={}", fresh.device),
                "--device".into(),
                format!("/home={}", fresh.device),
            ],
            "usage",
            2,
        ),
        (vec!["--bare-metal".into(), "--yes".into(), "--device".into(), "/home".into()], "usage", 2),
        (vec!["--bare-metal".into(), "--yes".into(), "--force".into()], "usage", 2),
        (vec!["--to".into(), "/tmp/x".into(), "--new-uuids".into()], "usage", 2),
        (vec!["--to".into(), "/tmp/x".into(), "--device".into(), "/=/dev/null".into()], "usage", 2),
        (vec!["--to".into(), s.dir.path().join("t").display().to_string(), "../etc".into()], "usage", 2),
        (vec![], "usage", 2),
        (
            vec![
                "--bare-metal".into(),
                "--yes".into(),
                "--new-uuids".into(),
                "--device".into(),
                format!("/={}", fresh.device),
                "--device".into(),
                format!("/home={}", small.device),
                "--device".into(),
                format!("/boot/efi={}", fresh2.device),
            ],
            "target-too-small",
            1,
        ),
    ];
    for (args, want, code) in cases {
        let o = crossback(&s.cfg).args(["restore", "alpha"]).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", text(&o));
        assert_eq!(kind(&o).as_deref(), Some(want), "{args:?}: {}", err(&o));
    }
    assert_eq!(sums(), before, "the system's devices are untouched");
    for f in [&fresh, &fresh2, &small] {
        assert_eq!(fs_on(&f.device), "", "{} untouched", f.device);
    }
}

/// A whole disk holding a partition table (with data on its
/// partitions), or a device a loop device reads from, is not "empty":
/// `--device` onto it is refused and nothing is written.
#[test]
fn root_a_device_that_holds_or_is_held_is_not_empty() {
    if !require_root("root_a_device_that_holds_or_is_held_is_not_empty") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    let disk = LoopDisk::partitioned(96, "label: gpt\ntype=L\n");
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "precious"]).arg(disk.part(1)));
    let disk_sum = sha(&disk.image);
    let held = LoopFs::blank(64);
    let reader = run(Command::new("losetup").args(["--find", "--show", "--read-only"]).arg(&held.device)).trim().to_string();
    let cases = [(disk.device.clone(), "target-not-empty"), (held.device.clone(), "target-in-use")];
    for (dev, want) in cases {
        let o = crossback(&s.cfg).args(["restore", "alpha", "--bare-metal", "--yes", "--new-uuids", "--device"]).arg(format!("/home={dev}")).output().unwrap();
        assert_eq!((o.status.code(), kind(&o).as_deref()), (Some(1), Some(want)), "{dev}: {}", text(&o));
        assert!(err(&o).contains("nothing was written"), "{dev}: {}", err(&o));
    }
    let _ = Command::new("losetup").arg("-d").arg(&reader).status();
    assert_eq!(sha(&disk.image), disk_sum, "the partitioned disk is untouched");
    assert_eq!(fs_on(&held.device), "", "{} untouched", held.device);
}

/// A slot whose marker does not read (damage, or a disk that
/// answers with errors) does not block reading the other: restore takes the
/// good slot's generation with a warning; verify counts the slot as damage.
#[test]
fn root_a_damaged_slot_does_not_block_the_other() {
    if !require_root("root_a_damaged_slot_does_not_block_the_other") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    ok(crossback(&s.cfg).arg("backup"));
    s.m.slot_b.mount(&[]);
    std::fs::write(s.m.slot_b.path().join("crossback/slot.toml"), "\u{0}garbage = [").unwrap();
    s.m.slot_b.unmount();
    let to = s.dir.path().join("to");
    let o = crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(&to).arg("/home/ann").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(err(&o).contains("warning: slot B") && err(&o).contains("the other slot is read alone"), "{}", err(&o));
    assert!(to.join("home/ann").is_dir(), "restored from slot A's generation 1");
    let o = crossback(&s.cfg).arg("verify").output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    // Both slots damaged: refused, by the first slot's kind.
    s.m.slot_a.mount(&[]);
    std::fs::write(s.m.slot_a.path().join("crossback/slot.toml"), "garbage = [").unwrap();
    s.m.slot_a.unmount();
    let o = crossback(&s.cfg).args(["restore", "alpha", "--to"]).arg(s.dir.path().join("to2")).output().unwrap();
    assert_eq!(kind(&o).as_deref(), Some("slot-damaged"), "{}", text(&o));
    assert!(!s.dir.path().join("to2").exists(), "nothing restored");
}

/// Restoring onto a new device while the old one (same UUID)
/// is attached is refused before formatting, saying why.
#[test]
fn root_a_second_filesystem_with_the_same_uuid_is_refused() {
    if !require_root("root_a_second_filesystem_with_the_same_uuid_is_refused") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    let fresh = LoopFs::blank(64);
    let o = crossback(&s.cfg).args(["restore", "alpha", "--bare-metal", "--yes", "--device"]).arg(format!("/home={}", fresh.device)).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(kind(&o).as_deref(), Some("duplicate-uuid"), "{}", err(&o));
    assert!(err(&o).contains(&s.m.alpha_home.device) && err(&o).contains("--new-uuids"), "{}", err(&o));
    assert_eq!(fs_on(&fresh.device), "");
    // status and backup still work: no clone was made.
    ok(crossback(&s.cfg).arg("status"));
}

/// A system restored onto its own, still intact devices (btrfs
/// included: mkfs.btrfs used to see its old superblock) comes back.
#[test]
fn root_restore_onto_the_systems_own_devices() {
    if !require_root("root_restore_onto_the_systems_own_devices") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    for sys in ["beta", "alpha"] {
        ok(crossback(&s.cfg).args(["restore", sys, "--bare-metal", "--yes"]));
    }
    s.m.beta.mount(&["ro"]);
    assert_eq!(std::fs::read_to_string(s.m.beta.path().join("@home/bob.txt")).unwrap(), "beta's home\n");
    s.m.beta.unmount();
    s.m.alpha_home.mount(&["ro"]);
    assert_eq!(std::fs::read_to_string(s.m.alpha_home.path().join("ann/notes.txt")).unwrap(), "alpha's home\n");
    s.m.alpha_home.unmount();
    ok(crossback(&s.cfg).arg("status"));
}

/// One crossback per media and per system; the refusal names
/// the process holding the lock, and nothing is read or written.
#[test]
fn root_a_second_run_is_refused_and_names_the_holder() {
    if !require_root("root_a_second_run_is_refused_and_names_the_holder") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    let cfg = std::fs::read_to_string(&s.cfg).unwrap();
    let media = cfg.lines().find_map(|l| l.strip_prefix("id = \"")).unwrap().trim_end_matches('"').to_string();
    let lock = format!("/run/crossback/lock/media-{media}.lock");
    std::fs::create_dir_all("/run/crossback/lock").unwrap();
    let mut holder = Command::new("flock").args(["-x", "-F", &lock, "sleep", "60"]).spawn().unwrap();
    // Until flock holds it: a try of our own fails.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while Command::new("flock").args(["-n", "-x", &lock, "true"]).status().unwrap().success() {
        assert!(std::time::Instant::now() < deadline, "flock did not take {lock} within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::write(&lock, format!("{} backup\n", holder.id())).unwrap();
    let _ = std::fs::remove_dir("/tmp/crossback-never");
    let before = sha(&s.m.slot_b.image);
    for args in [vec!["backup"], vec!["restore", "alpha", "--to", "/tmp/crossback-never"], vec!["verify"], vec!["ls", "alpha"]] {
        let o = crossback(&s.cfg).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert_eq!(kind(&o).as_deref(), Some("locked"), "{args:?}: {}", err(&o));
        assert!(err(&o).contains(&holder.id().to_string()), "{args:?} names the holder: {}", err(&o));
    }
    assert!(!Path::new("/tmp/crossback-never").exists());
    assert_eq!(sha(&s.m.slot_b.image), before);
    let _ = holder.kill();
    let _ = holder.wait();
    // Two backups started together: exactly one runs.
    let spawn = || crossback(&s.cfg).args(["backup", "--new-generation"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    assert!(codes.contains(&Some(0)) && codes.contains(&Some(1)), "{codes:?}: {} / {}", text(&a), text(&b));
    let loser = if a.status.code() == Some(1) { &a } else { &b };
    assert_eq!(kind(loser).as_deref(), Some("locked"), "{}", err(loser));
    ok(crossback(&s.cfg).arg("verify"));
}

/// A system that lost its fstab (a restore killed early) is not
/// recorded, the generation is not sealed over it, and the last good
/// generation stays; with `--accept-shrunk SYSTEM` it is recorded.
#[test]
fn root_a_broken_system_does_not_replace_the_good_backups() {
    if !require_root("root_a_broken_system_does_not_replace_the_good_backups") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    s.m.alpha_root.mount(&[]);
    std::fs::remove_file(s.m.alpha_root.path().join("etc/fstab")).unwrap();
    s.m.alpha_root.unmount();
    let o = crossback(&s.cfg).arg("backup").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(kind(&o).as_deref(), Some("system-shrunk"), "{}", err(&o));
    assert!(err(&o).contains("no /etc/fstab") && err(&o).contains("--accept-shrunk alpha"), "{}", err(&o));
    let v = status(&s.cfg);
    assert_eq!(v["slots"][0]["generation"]["state"], "sealed", "generation 1 stays the newest complete set");
    assert_eq!(v["slots"][1]["generation"]["state"], "open");
    assert_eq!(v["slots"][1]["generation"]["missing"], serde_json::json!(["alpha"]));
    // Rotation again: generation 1 must still not be wiped.
    let o = crossback(&s.cfg).arg("backup").output().unwrap();
    assert_eq!(kind(&o).as_deref(), Some("system-shrunk"));
    let v = status(&s.cfg);
    assert_eq!(v["slots"][0]["generation"]["seq"], 1);
    ok(crossback(&s.cfg).args(["backup", "--accept-shrunk", "alpha"]));
    let v = status(&s.cfg);
    assert_eq!(v["slots"][1]["generation"]["state"], "sealed");
}

/// `ls | head -1` ends quietly; a binary fstab prints no raw
/// control bytes.
#[test]
fn root_closed_pipes_and_control_bytes() {
    if !require_root("root_closed_pipes_and_control_bytes") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    ok(crossback(&s.cfg).arg("backup"));
    for args in [vec!["ls", "alpha", "/"], vec!["status"], vec!["archive", "ls", "/dev/null"]] {
        let mut child = crossback(&s.cfg).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut first = [0u8; 1];
        let _ = std::io::Read::read(child.stdout.as_mut().unwrap(), &mut first);
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        assert!(!err(&o).contains("panicked") && !err(&o).contains("Broken pipe"), "{args:?}: {}", err(&o));
    }
    s.m.alpha_root.mount(&[]);
    let fstab = s.m.alpha_root.path().join("etc/fstab");
    let mut t = std::fs::read(&fstab).unwrap();
    t.extend_from_slice(b"\x1b[2J\x1b]0;owned\x07 garbage \x00\xff\n");
    std::fs::write(&fstab, t).unwrap();
    s.m.alpha_root.unmount();
    let o = crossback(&s.cfg).args(["init", "--yes", "--devices", &s.m.devices_arg()]).output().unwrap();
    let o2 = crossback(&s.cfg).arg("status").output().unwrap();
    for out in [&o, &o2] {
        let all = [out.stdout.clone(), out.stderr.clone()].concat();
        assert!(!all.iter().any(|&b| b == 0x1b || b == 0x07 || b == 0), "raw control bytes printed: {}", text(out));
    }
}

/// Files that could not be read make `backup` exit 3 (the
/// README's "partial"), after recording what it could.
#[test]
fn root_unreadable_files_make_backup_exit_3() {
    if !require_root("root_unreadable_files_make_backup_exit_3") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut s = setup();
    s.m.alpha_home.mount(&[]);
    std::fs::write(s.m.alpha_home.path().join("ann/broken.txt"), "x".repeat(8192)).unwrap();
    s.m.alpha_home.unmount();
    // Its extent tree destroyed: the kernel refuses to read it (EFSCORRUPTED).
    run(Command::new("debugfs").args(["-w", "-R", "sif /ann/broken.txt block[0] 0"]).arg(&s.m.alpha_home.image));
    run(Command::new("blockdev").arg("--flushbufs").arg(&s.m.alpha_home.device));
    let o = crossback(&s.cfg).arg("backup").output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(err(&o).contains("broken.txt") && err(&o).contains("could not be read"), "{}", err(&o));
    let v = status(&s.cfg);
    assert_eq!(v["slots"][0]["generation"]["state"], "sealed", "the rest is recorded");
}
