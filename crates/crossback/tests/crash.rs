//! R5: a crash, kill, full disk or power cut at any instant leaves the
//! newest sealed generation intact, and the next run carries on.
//! These tests need root.

mod common;
#[allow(unused_imports)]
use common::{crossback, err, ok, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crossback_testkit::machine::TestMachine;
use crossback_testkit::{require_root, run, tree, LoopFs};

/// The moments to kill at: a seeded generator, the seed printed so that a
/// failure can be replayed (`CROSSBACK_KILL_SEED=N`; the moments are drawn
/// from the same numbers, scaled to how long this machine's runs take).
struct Moments(u64);

impl Moments {
    fn new(test: &str) -> Moments {
        let seed = std::env::var("CROSSBACK_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            t.as_nanos() as u64
        });
        eprintln!("{test}: seed {seed} (replay with CROSSBACK_KILL_SEED={seed})");
        Moments(seed | 1)
    }

    /// A number below `n` (xorshift64*).
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn with_data(m: &mut TestMachine, mib: usize) {
    m.alpha_home.mount(&[]);
    std::fs::write(m.alpha_home.path().join("ann/big"), tree::noise(1, mib << 20)).unwrap();
    m.alpha_home.unmount();
    m.beta.mount(&[]);
    std::fs::write(m.beta.path().join("@home/big"), tree::noise(2, mib << 20)).unwrap();
    m.beta.unmount();
}

/// The media: plain, or encrypted with a passphrase and a
/// user's age key; `cb` then unlocks with the passphrase.
#[derive(Clone, Copy, PartialEq)]
enum Media {
    Plain,
    Encrypted,
}

fn setup(mib: usize, media: Media) -> (TestMachine, tempfile::TempDir, PathBuf) {
    let mut m = TestMachine::new();
    with_data(&mut m, mib);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    let mut prepare = cb(&cfg);
    prepare.args(["media", "prepare", &m.slot_a.device, &m.slot_b.device]);
    if media == Media::Encrypted {
        std::fs::write(dir.path().join("pass"), "s3cret\n").unwrap();
        run(Command::new("age-keygen").arg("-o").arg(dir.path().join("user.key")));
        let r = run(Command::new("age-keygen").arg("-y").arg(dir.path().join("user.key")));
        prepare.arg("--passphrase-file").arg(dir.path().join("pass")).args(["--encrypt", "--recipient", r.trim()]);
    }
    ok(&mut prepare);
    (m, dir, cfg)
}

/// crossback, with the passphrase file of an encrypted media when there is one.
fn cb(cfg: &Path) -> Command {
    let mut c = crossback(cfg);
    let pass = cfg.with_file_name("pass");
    c.env_remove("CROSSBACK_PASSPHRASE_FILE").env("CROSSBACK_SCRYPT_WORK_FACTOR", "12").stdin(Stdio::null());
    if pass.exists() {
        c.arg("--passphrase-file").arg(pass);
    }
    c
}

/// The newest sealed generation's number, from `status --json`.
fn newest_sealed(cfg: &Path) -> Option<u64> {
    let out = ok(crossback(cfg).args(["status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["slots"].as_array().unwrap().iter().filter(|s| s["generation"]["state"] == "sealed").filter_map(|s| s["generation"]["seq"].as_u64()).max()
}

/// Unmounts the power-cut copies also when an assertion fails (mount -o
/// loop detaches their loop devices with them).
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
    }
}

fn ro_flags_clear(m: &TestMachine) -> bool {
    m.devices().iter().all(|d| std::fs::read_to_string(format!("/sys/class/block/{}/ro", d.file_name().unwrap().to_str().unwrap())).unwrap().trim() == "0")
}

#[test]
fn root_kill_9_at_random_moments_never_loses_the_newest_complete_set() {
    kill_9_at_random_moments("root_kill_9_at_random_moments_never_loses_the_newest_complete_set", Media::Plain);
}

#[test]
fn root_kill_9_at_random_moments_on_an_encrypted_media() {
    kill_9_at_random_moments("root_kill_9_at_random_moments_on_an_encrypted_media", Media::Encrypted);
}

fn kill_9_at_random_moments(test: &str, media: Media) {
    if !require_root(test) {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut moments = Moments::new(test);
    let (m, _dir, cfg) = setup(12, media);
    let start = Instant::now();
    ok(cb(&cfg).arg("backup"));
    let mut full = start.elapsed();
    assert_eq!(newest_sealed(&cfg), Some(1));
    let mut kills = 0;
    for round in 0..100 {
        if kills >= 20 {
            break;
        }
        let started = Instant::now();
        let mut child = cb(&cfg).arg("backup").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // Spread over the whole run: wiping, writing, checking, renaming, recording.
        let at = Duration::from_micros(moments.below(full.as_micros() as u64 * 9 / 10));
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        } else {
            // It finished first: runs are quicker than the first one was.
            full = full.min(started.elapsed());
        }
        child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ro_flags_clear(&m) {
            assert!(
                Instant::now() < deadline,
                "round {round}: devices left read-only: records {:?}; guards: {}",
                std::fs::read_dir("/run/crossback/blkro")
                    .map(|r| r.flatten().map(|e| (e.file_name(), std::fs::read_to_string(e.path()).unwrap_or_default())).collect::<Vec<_>>())
                    .unwrap_or_default(),
                run(Command::new("sh").arg("-c").arg("ps -eo pid,stat,args | grep crossback | grep -v grep || true"))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let sealed = newest_sealed(&cfg).expect("a sealed generation survives");
        ok(cb(&cfg).args(["verify", "--generation", &sealed.to_string()]));
    }
    assert!(kills >= 20, "only {kills} runs were killed mid-way");
    // The next run completes the cycle.
    let before = newest_sealed(&cfg).unwrap();
    ok(cb(&cfg).arg("backup"));
    let after = newest_sealed(&cfg).unwrap();
    assert!(after > before, "a rerun seals a new generation ({before} → {after})");
    ok(cb(&cfg).arg("verify"));
}

#[test]
fn root_power_cut_copies_keep_the_newest_sealed_generation() {
    power_cut_copies("root_power_cut_copies_keep_the_newest_sealed_generation", Media::Plain);
}

#[test]
fn root_power_cut_copies_on_an_encrypted_media() {
    power_cut_copies("root_power_cut_copies_on_an_encrypted_media", Media::Encrypted);
}

fn power_cut_copies(test: &str, media: Media) {
    if !require_root(test) {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut moments = Moments::new(test);
    let (m, dir, cfg) = setup(12, media);
    ok(cb(&cfg).arg("backup"));
    let start = Instant::now();
    ok(cb(&cfg).arg("backup"));
    let full = start.elapsed();
    for round in 0..10 {
        let mut child = cb(&cfg).arg("backup").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_micros(moments.below(full.as_micros() as u64)));
        // What the disks held at this instant: both images, no sync first.
        let copies: Vec<PathBuf> = [&m.slot_a, &m.slot_b]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let c = dir.path().join(format!("cut-{round}-{i}.img"));
                run(Command::new("cp").arg("--sparse=always").arg(&s.image).arg(&c));
                c
            })
            .collect();
        child.wait().unwrap();
        // fsck, mount each copy, find the newest sealed generation, check its archives.
        let mut best: Option<(u64, PathBuf, String)> = None;
        let mut mounts = Unmount(Vec::new());
        for c in &copies {
            let _ = Command::new("e2fsck").args(["-f", "-y", "-q"]).arg(c).stdout(Stdio::null()).stderr(Stdio::null()).status();
            let mnt = c.with_extension("mnt");
            std::fs::create_dir_all(&mnt).unwrap();
            run(Command::new("mount").args(["-o", "loop,ro,noload"]).arg(c).arg(&mnt));
            for e in std::fs::read_dir(mnt.join("crossback")).unwrap().flatten() {
                let Ok(t) = std::fs::read_to_string(e.path().join("generation.toml")) else { continue };
                let Some(seq) = t.lines().find_map(|l| l.strip_prefix("seq = ")).and_then(|s| s.parse::<u64>().ok()) else { continue };
                if t.contains("state = \"sealed\"") && best.as_ref().is_none_or(|b| b.0 < seq) {
                    best = Some((seq, e.path(), t));
                }
            }
            mounts.0.push(mnt);
        }
        let (seq, gdir, manifest) = best.unwrap_or_else(|| panic!("round {round}: no sealed generation on the cut disks"));
        let v: toml::Value = toml::from_str(&manifest).unwrap();
        for sys in v["system"].as_array().unwrap() {
            for ar in sys["archive"].as_array().unwrap() {
                let a = gdir.join(sys["name"].as_str().unwrap()).join(ar["file"].as_str().unwrap());
                let mut verify = crossback(&cfg);
                if media == Media::Encrypted {
                    // The media key, as the user gets it with the age tool and their own key.
                    let key = dir.path().join("media.key");
                    let wrapped = gdir.parent().unwrap().join("media-key.recipients.age");
                    run(Command::new("age").arg("-d").arg("-i").arg(dir.path().join("user.key")).arg("-o").arg(&key).arg(wrapped));
                    verify.arg("--identity").arg(key);
                }
                ok(verify.args(["archive", "verify"]).arg(&a));
            }
        }
        assert!(seq >= 2, "round {round}: generation {seq}");
        drop(mounts);
        // The copies hold the slots' UUIDs: they must be gone before crossback looks again.
        for c in &copies {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !run(Command::new("losetup").arg("-j").arg(c)).trim().is_empty() {
                assert!(Instant::now() < deadline, "the loop device of {} is still there after 60 s", c.display());
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        for c in &copies {
            let _ = std::fs::remove_file(c);
        }
    }
    // Whatever the last run left, status makes sense of it and a run completes.
    ok(cb(&cfg).arg("status"));
    ok(cb(&cfg).arg("backup"));
    ok(cb(&cfg).arg("verify"));
}

#[test]
fn root_a_full_slot_records_nothing_and_the_other_slot_is_untouched() {
    if !require_root("root_a_full_slot_records_nothing_and_the_other_slot_is_untouched") {
        return;
    }
    let _serial = crossback_testkit::serial();
    let mut m = TestMachine::new();
    with_data(&mut m, 30);
    let small = LoopFs::new("ext4", 24);
    let mut small = small;
    small.unmount();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    ok(crossback(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    ok(crossback(&cfg).args(["media", "prepare", &m.slot_a.device, &small.device]));
    ok(crossback(&cfg).arg("backup"));
    let out = crossback(&cfg).arg("backup").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("slot is full") && e.contains("nothing was recorded"), "{e}");
    ok(crossback(&cfg).args(["verify", "--generation", "1"]));
    let out = ok(crossback(&cfg).args(["status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["slots"][0]["generation"]["state"], "sealed");
    assert_eq!(v["slots"][1]["generation"]["systems"].as_array().map(|a| a.len()), Some(0), "{}", v["slots"][1]);
    // With less data the next run cleans up and completes.
    m.alpha_home.mount(&[]);
    std::fs::remove_file(m.alpha_home.path().join("ann/big")).unwrap();
    m.alpha_home.unmount();
    m.beta.mount(&[]);
    std::fs::remove_file(m.beta.path().join("@home/big")).unwrap();
    m.beta.unmount();
    // Both lost most of their bytes since generation 1: R9 asks for a
    // confirmation before they are recorded.
    let o = crossback(&cfg).arg("backup").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(err(&o).contains("error[system-shrunk]"), "{}", err(&o));
    ok(crossback(&cfg).args(["backup", "--accept-shrunk", "alpha", "--accept-shrunk", "beta"]));
    ok(crossback(&cfg).arg("verify"));
}
