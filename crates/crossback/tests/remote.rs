//! Off-site copies against real servers on 127.0.0.1: SeaweedFS's S3
//! gateway over two volume servers, and rclone's SFTP server. What goes up
//! is encrypted (a canary's name and content are nowhere in what the store
//! keeps), opens with the `age` tool, checks with `remote verify`, and a
//! push that stopped carries on without sending again what is there.
//! These tests need root (loop devices) and the servers that
//! scripts/install-deps.sh installs.

mod common;
use common::{crossback, err, kind, ok, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crossback_testkit::machine::TestMachine;
use crossback_testkit::servers::{self, SeaweedFs};
use crossback_testkit::{compare, require_root, run};

fn cb(cfg: &Path) -> Command {
    let mut c = crossback(cfg);
    c.stdin(Stdio::null()).env_remove("CROSSBACK_PASSPHRASE_FILE").env_remove("AWS_ACCESS_KEY_ID").env("CROSSBACK_SCRYPT_WORK_FACTOR", "12");
    c
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn refused_as(o: &Output, k: &str, what: &str) {
    assert!(!o.status.success(), "{what}: {}", text(o));
    assert_eq!(kind(o), k, "{what}: {}", text(o));
}

/// A machine with a canary in alpha's home, a plain media and two sealed
/// generations: (machine, dir, config, passphrase file, canary name, canary content).
struct Setup {
    m: TestMachine,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    pass: PathBuf,
    name: String,
    content: String,
}

/// As [`Setup`] says, after `fill` has put more into the machine's
/// filesystems, with `backups` sealed generations.
fn backed_up(backups: usize, fill: impl FnOnce(&mut TestMachine)) -> Setup {
    let mut m = TestMachine::new();
    fill(&mut m);
    let salt = format!("{:016x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let (name, content) = (format!("NAMECANARY{salt}"), format!("CONTENTCANARY{salt}"));
    m.alpha_home.mount(&[]);
    std::fs::write(m.alpha_home.path().join("ann").join(&name), format!("{content}\n").repeat(100)).unwrap();
    m.alpha_home.unmount();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "remote passphrase\n").unwrap();
    ok(cb(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    ok(cb(&cfg).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device]));
    for _ in 0..backups {
        ok(cb(&cfg).arg("backup"));
    }
    Setup { m, dir, cfg, pass, name, content }
}

/// Whether `test` runs: as root, with the servers there (else skipped, and
/// a failure under CI), alone among the tests of this binary.
fn ready(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    (require_root(test) && servers::available(test)).then(crossback_testkit::serial)
}

/// `mib` MiB that do not compress, at `path`.
fn random_file(path: &Path, mib: u32) {
    run(Command::new("dd").arg("if=/dev/urandom").arg(format!("of={}", path.display())).args(["bs=1M", &format!("count={mib}"), "status=none"]));
}

/// `remote add offsite` for SeaweedFS's S3 gateway as machine `desk`, with
/// `credentials`, unlocked by `pass` when given.
fn add_s3(cfg: &Path, pass: Option<&Path>, s3: &SeaweedFs, credentials: &Path) -> Command {
    add_s3_at(cfg, pass, s3, credentials, &format!("s3://{}/backups", s3.bucket))
}

/// As [`add_s3`], for the store's `url` (another bucket, or not S3 at all).
fn add_s3_at(cfg: &Path, pass: Option<&Path>, s3: &SeaweedFs, credentials: &Path, url: &str) -> Command {
    let mut c = cb(cfg);
    if let Some(p) = pass {
        c.arg("--passphrase-file").arg(p);
    }
    c.args(["remote", "add", "offsite", url, "--endpoint", &s3.endpoint(), "--machine", "desk", "--credentials"]).arg(credentials);
    c
}

/// An object as the store serves it (SeaweedFS's filer HTTP API).
fn object_url(s3: &SeaweedFs, rel: &str) -> String {
    format!("http://127.0.0.1:{}/buckets/{}/backups/desk/{rel}", s3.filer_port(), s3.bucket)
}

#[test]
fn root_push_to_s3_is_encrypted_verified_and_opens_with_age() {
    let Some(_serial) = ready("root_push_to_s3_is_encrypted_verified_and_opens_with_age") else { return };
    let mut s = backed_up(2, |_| {});
    let s3 = SeaweedFs::start();
    let creds = s.dir.path().join("offsite.s3");
    s3.credentials_file(&creds);
    let user = s.dir.path().join("user.key");
    run(Command::new("age-keygen").arg("-o").arg(&user));
    let recipient = run(Command::new("age-keygen").arg("-y").arg(&user)).trim().to_string();
    let add = |extra: &[&str]| add_s3(&s.cfg, Some(&s.pass), &s3, &creds).args(extra).output().unwrap();
    // Refused before anything is written: a credentials file others can read, wrong keys.
    let loose = s.dir.path().join("loose.s3");
    s3.credentials_file(&loose);
    run(Command::new("chmod").arg("644").arg(&loose));
    let cfg_before = std::fs::read_to_string(&s.cfg).unwrap();
    let o = add_s3(&s.cfg, None, &s3, &loose).output().unwrap();
    refused_as(&o, "config", "a credentials file others can read");
    let wrong = s.dir.path().join("wrong.s3");
    std::fs::write(&wrong, "access_key_id = \"nobody\"\nsecret_access_key = \"nothing-at-all-0123\"\n").unwrap();
    run(Command::new("chmod").arg("600").arg(&wrong));
    let o = add_s3(&s.cfg, Some(&s.pass), &s3, &wrong).output().unwrap();
    refused_as(&o, "remote-denied", "credentials the store does not know");
    assert_eq!(std::fs::read_to_string(&s.cfg).unwrap(), cfg_before, "a refused remote add changed the configuration");

    let out = add(&["--recipient", &recipient]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = text(&ok(cb(&s.cfg).args(["remote", "list"])));
    assert!(listed.contains("offsite: s3://crossback/backups") && listed.contains("machine desk"), "{listed}");
    refused_as(&add(&[]), "usage", "a second remote of the same name");

    let out = ok(cb(&s.cfg).arg("push"));
    let said = text(&out);
    assert!(said.contains("generation 1 pushed") && said.contains("generation 2 pushed"), "{said}");
    let again = text(&ok(cb(&s.cfg).args(["push", "offsite"])));
    assert!(again.contains("generation 2 is there already") && again.contains("up to date"), "{again}");
    assert_eq!(text(&ok(cb(&s.cfg).args(["remote", "list", "--machines", "offsite"]))).trim(), "desk");

    // Nothing readable left the machine: not the canary's name, nor its content, nor alpha's name.
    let stored = s3.stored_bytes();
    assert!(stored.len() > 100_000, "the store holds only {} bytes", stored.len());
    assert!(!contains(&stored, s.name.as_bytes()), "the canary's name is in the store in the clear");
    assert!(!contains(&stored, s.content.as_bytes()), "the canary's content is in the store in the clear");
    assert!(!contains(&stored, b"Alpha Linux 1"), "alpha's os-release is in the store in the clear");

    // Without crossback: the user's key opens the remote's key, that key the archive.
    let fetch = |rel: &str, to: &Path| run(Command::new("curl").args(["-sSf", "-o"]).arg(to).arg(object_url(&s3, rel)));
    let wrapped = s.dir.path().join("wrapped.age");
    fetch("media-key.recipients.age", &wrapped);
    let remote_key = s.dir.path().join("remote.key");
    run(Command::new("age").arg("-d").arg("-i").arg(&user).arg("-o").arg(&remote_key).arg(&wrapped));
    let archive = s.dir.path().join("home.tar.zst.age");
    fetch("gen-000002/alpha/home.tar.zst.age", &archive);
    let by_tools = s.dir.path().join("by-tools");
    std::fs::create_dir(&by_tools).unwrap();
    run(Command::new("bash").arg("-c").arg(format!(
        "set -o pipefail; age -d -i '{}' '{}' | zstd -dc | tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C '{}'",
        remote_key.display(),
        archive.display(),
        by_tools.display()
    )));
    s.m.alpha_home.mount(&["ro"]);
    let d: Vec<String> = compare::trees(s.m.alpha_home.path(), &by_tools).into_iter().filter(|d| !d.contains("socket")).collect();
    assert!(d.is_empty(), "age + zstd + tar of the remote's copy: {}", d.join("\n"));
    s.m.alpha_home.unmount();

    // Verify reads every object back; one changed on the server is named, and only it.
    let v = text(&ok(cb(&s.cfg).args(["remote", "verify", "offsite"])));
    assert!(v.contains("0 damaged"), "{v}");
    let planted = s.dir.path().join("planted");
    std::fs::write(&planted, vec![7u8; 4096]).unwrap();
    run(Command::new("curl").args(["-sSf", "-X", "PUT", "-T"]).arg(&planted).arg(object_url(&s3, "gen-000001/alpha/home.tar.zst.age")));
    let o = cb(&s.cfg).args(["remote", "verify", "offsite"]).output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let said = text(&o);
    assert!(said.contains("gen-000001/alpha/home.tar.zst.age") && said.contains("1 damaged"), "{said}");

    // A store whose record names another key than the configuration: refused, nothing pushed.
    let record = s.dir.path().join("record.toml");
    fetch("crossback-remote.toml", &record);
    let other =
        run(&mut Command::new("age-keygen")).lines().find(|l| l.starts_with("# public key: ")).unwrap().trim_start_matches("# public key: ").to_string();
    let text0 = std::fs::read_to_string(&record).unwrap();
    let key_line = text0.lines().find(|l| l.starts_with("media_key")).unwrap().to_string();
    std::fs::write(&record, text0.replace(&key_line, &format!("media_key = \"{other}\""))).unwrap();
    run(Command::new("curl").args(["-sSf", "-X", "PUT", "-T"]).arg(&record).arg(object_url(&s3, "crossback-remote.toml")));
    refused_as(&cb(&s.cfg).arg("push").output().unwrap(), "remote-mismatch", "a store record with another key");

    ok(cb(&s.cfg).args(["remote", "remove", "offsite"]));
    assert!(!std::fs::read_to_string(&s.cfg).unwrap().contains("[[remote]]"));
    refused_as(&cb(&s.cfg).args(["push", "offsite"]).output().unwrap(), "usage", "a push to a remote no longer configured");
}

/// The number of objects `objects.toml` lists for generation `seq`, as the store serves it.
fn uploaded(s3: &SeaweedFs, seq: u64) -> usize {
    let out = Command::new("curl").args(["-sSf"]).arg(object_url(s3, &format!("gen-{seq:06}/objects.toml"))).output().unwrap();
    String::from_utf8_lossy(&out.stdout).matches("[[object]]").count()
}

#[test]
fn root_a_push_that_stopped_carries_on_through_a_server_restart_without_sending_again() {
    let test = "root_a_push_that_stopped_carries_on_through_a_server_restart_without_sending_again";
    let Some(_serial) = ready(test) else { return };
    // Two archives of 20 MiB that do not compress, each seconds long at 4
    // MiB/s: whichever goes up first, the other is still to go when the
    // first push is stopped.
    let Setup { m: _m, dir, cfg, pass, .. } = backed_up(1, |m| {
        for fs in [&mut m.alpha_home, &mut m.alpha_root] {
            fs.mount(&[]);
            random_file(&fs.path().join("big"), 20);
            fs.unmount();
        }
    });
    let mut s3 = SeaweedFs::start();
    let creds = dir.path().join("offsite.s3");
    s3.credentials_file(&creds);
    ok(&mut add_s3(&cfg, Some(&pass), &s3, &creds));

    // Killed once some objects are up: nothing looks complete on the store.
    let mut push = cb(&cfg).args(["push", "--limit-upload", "4M"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = std::time::Instant::now();
    while uploaded(&s3, 1) == 0 {
        assert!(start.elapsed().as_secs() < 120, "no object went up within 120 s");
        assert!(push.try_wait().unwrap().is_none(), "the push ended before it could be stopped: {:?}", push.wait_with_output().map(|o| text(&o)));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    push.kill().unwrap();
    push.wait().unwrap();
    let kept = uploaded(&s3, 1);
    assert!(
        Command::new("curl").args(["-sf", "-o", "/dev/null"]).arg(object_url(&s3, "gen-000001/generation.toml")).status().unwrap().code() != Some(0),
        "a stopped push left a manifest"
    );

    // Again, with the S3 gateway restarted in the middle of the big archive.
    let mut push = cb(&cfg).args(["push", "--limit-upload", "4M"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(push.try_wait().unwrap().is_none(), "the push was over before the server restarted");
    s3.stop_filer();
    std::thread::sleep(std::time::Duration::from_secs(3));
    s3.start_filer();
    let out = push.wait_with_output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "the push did not carry on through the restart: {said}");
    assert!(said.contains("generation 1 pushed") && said.contains("were there from an earlier push"), "{kept} objects were up before: {said}");
    eprintln!("{said}");
    let v = text(&ok(cb(&cfg).args(["remote", "verify", "offsite"])));
    assert!(v.contains("0 damaged"), "{v}");
}

/// crossback in a mount namespace of its own where `/root/.ssh` is `ssh_dir`
/// (the test server's host key known there): root's own ssh files are never touched.
fn with_ssh_dir(cfg: &Path, ssh_dir: &Path, args: &[&str]) -> Output {
    let exe = env!("CARGO_BIN_EXE_crossback");
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", "mkdir -p /root/.ssh && mount --bind \"$0\" /root/.ssh && shift && exec \"$@\""]);
    c.arg(ssh_dir).arg("--").arg(exe).arg("--config").arg(cfg).args(args);
    c.stdin(Stdio::null()).env_remove("CROSSBACK_PASSPHRASE_FILE").env("CROSSBACK_SCRYPT_WORK_FACTOR", "12");
    c.output().unwrap()
}

#[test]
fn root_push_over_sftp_is_encrypted_and_verified() {
    let test = "root_push_over_sftp_is_encrypted_and_verified";
    let Some(_serial) = ready(test) else { return };
    let s = backed_up(2, |_| {});
    let sftp = servers::SftpServer::start();
    let ssh_dir = s.dir.path().join("ssh");
    std::fs::create_dir(&ssh_dir).unwrap();
    let scan = run(Command::new("ssh-keyscan").args(["-p", &sftp.port.to_string(), "-t", "ed25519,ecdsa,rsa", "127.0.0.1"]).stderr(Stdio::null()));
    assert!(scan.contains("127.0.0.1"), "ssh-keyscan: {scan}");
    std::fs::write(ssh_dir.join("known_hosts"), scan).unwrap();
    let url = format!("sftp://cb@127.0.0.1:{}/store", sftp.port);
    std::fs::create_dir(sftp.root.join("store")).unwrap();
    let pass = s.pass.display().to_string();
    let key = sftp.key.display().to_string();
    let add = with_ssh_dir(&s.cfg, &ssh_dir, &["--passphrase-file", &pass, "remote", "add", "nas", &url, "--machine", "desk", "--credentials", &key]);
    assert!(add.status.success(), "{}", text(&add));
    let push = with_ssh_dir(&s.cfg, &ssh_dir, &["push", "nas"]);
    let said = text(&push);
    assert!(push.status.success() && said.contains("generation 2 pushed"), "{:?}: {said}", push.status);
    let files = run(Command::new("find").arg(sftp.root.join("store/desk")).args(["-type", "f"]));
    assert!(files.contains("gen-000002/alpha/home.tar.zst.age") && files.contains("gen-000002/generation.toml"), "{files}");
    let stored = run(Command::new("bash").arg("-c").arg(format!("cat $(find '{}' -type f)", sftp.root.display())));
    assert!(!stored.contains(&s.name) && !stored.contains(&s.content), "the canary is on the SFTP server in the clear");
    let v = with_ssh_dir(&s.cfg, &ssh_dir, &["remote", "verify", "nas"]);
    let on_disk = std::fs::read_to_string(sftp.root.join("store/desk/gen-000002/objects.toml")).unwrap_or_default();
    assert!(v.status.success() && text(&v).contains("0 damaged"), "{}\nthe server's own objects.toml of generation 2:\n{on_disk}", text(&v));
    // An unknown host key is refused, not accepted.
    std::fs::write(ssh_dir.join("known_hosts"), "").unwrap();
    let o = with_ssh_dir(&s.cfg, &ssh_dir, &["remote", "verify", "nas"]);
    refused_as(&o, "remote-unreachable", "a server with an unknown host key");
    assert!(text(&o).contains("host key"), "{}", text(&o));
}

/// The byte count a restore or ls says it read from a remote.
fn read_from_remote(said: &str) -> u64 {
    let line = said.lines().find(|l| l.starts_with("read ") && l.contains("from remote")).unwrap_or_else(|| panic!("no 'read … from remote' line: {said}"));
    line.split('(').nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn root_ls_and_restore_read_from_a_remote_only_what_they_need() {
    let test = "root_ls_and_restore_read_from_a_remote_only_what_they_need";
    let Some(_serial) = ready(test) else { return };
    // 34 MiB that does not compress in alpha's home (five frames or more), beside the canary.
    let mut s = backed_up(1, |m| {
        m.alpha_home.mount(&[]);
        for i in 0..4 {
            random_file(&m.alpha_home.path().join(format!("big{i}")), 8);
        }
        // Too large to sit in the index as small files do: it is in the frames.
        random_file(&m.alpha_home.path().join("ann/mid"), 2);
        m.alpha_home.unmount();
    });
    let s3 = SeaweedFs::start();
    let creds = s.dir.path().join("offsite.s3");
    s3.credentials_file(&creds);
    ok(&mut add_s3(&s.cfg, Some(&s.pass), &s3, &creds));
    ok(cb(&s.cfg).arg("push"));
    let with_pass = |args: &[&str]| {
        let mut c = cb(&s.cfg);
        c.arg("--passphrase-file").arg(&s.pass).args(args);
        c.output().unwrap()
    };
    let home_object = {
        let out = Command::new("curl").args(["-sSfI"]).arg(object_url(&s3, "gen-000001/alpha/home.tar.zst.age")).output().unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let len = head.lines().find_map(|l| l.strip_prefix("content-length: ")).map(|v| v.trim().parse::<u64>().unwrap());
        len.unwrap_or_else(|| panic!("no length: {head}"))
    };
    assert!(home_object > 34 << 20, "alpha's home archive on the store is {home_object} bytes");

    // ls reads the index, not the archive.
    let o = with_pass(&["ls", "alpha", "/home/ann", "--remote", "offsite"]);
    assert!(o.status.success() && text(&o).contains(&s.name), "{}", text(&o));
    let n = read_from_remote(&text(&o));
    assert!(n < 2 << 20, "ls read {n} bytes of a {home_object}-byte archive");
    eprintln!("ls: {n} bytes read of a {home_object}-byte archive");

    // One small file: its index and the frame holding it (frames are 8 MiB of tar).
    let one = s.dir.path().join("one");
    let o = with_pass(&["restore", "alpha", &format!("/home/ann/{}", s.name), "--to", one.to_str().unwrap(), "--remote", "offsite"]);
    assert!(o.status.success(), "{}", text(&o));
    let got = std::fs::read_to_string(one.join("home/ann").join(&s.name)).unwrap();
    assert_eq!(got, format!("{}\n", s.content).repeat(100));
    let n = read_from_remote(&text(&o));
    assert!(n < (9 << 20) && n < home_object / 3, "one file read {n} bytes of a {home_object}-byte archive");
    eprintln!("one small file: {n} bytes read of a {home_object}-byte archive");
    // A 2 MiB file: the index and the (at most two) frames of 8 MiB holding it.
    let o = with_pass(&["restore", "alpha", "/home/ann/mid", "--to", one.to_str().unwrap(), "--remote", "offsite", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    s.m.alpha_home.mount(&["ro"]);
    let same = std::fs::read(s.m.alpha_home.path().join("ann/mid")).unwrap() == std::fs::read(one.join("home/ann/mid")).unwrap();
    s.m.alpha_home.unmount();
    assert!(same, "the 2 MiB file restored from the remote differs");
    let n = read_from_remote(&text(&o));
    assert!(n < (17 << 20) && n < home_object / 2, "a 2 MiB file read {n} bytes of a {home_object}-byte archive");
    eprintln!("a 2 MiB file: {n} bytes read of a {home_object}-byte archive");

    // The whole system, each filesystem where it was mounted.
    let all = s.dir.path().join("all");
    let o = with_pass(&["restore", "alpha", "--to", all.to_str().unwrap(), "--remote", "offsite", "--machine", "desk"]);
    assert!(o.status.success(), "{}", text(&o));
    s.m.alpha_home.mount(&["ro"]);
    let d: Vec<String> = compare::trees(s.m.alpha_home.path(), &all.join("home")).into_iter().filter(|d| !d.contains("socket")).collect();
    s.m.alpha_home.unmount();
    assert!(d.is_empty(), "alpha's home restored from the remote: {}", d.join("\n"));
    s.m.alpha_root.mount(&["ro"]);
    let d: Vec<String> =
        compare::trees_except(s.m.alpha_root.path(), &all, false, &[b"home", b"boot/efi"]).into_iter().filter(|d| !d.contains("socket")).collect();
    s.m.alpha_root.unmount();
    assert!(d.is_empty(), "alpha's root restored from the remote: {}", d.join("\n"));

    // verify --remote reads every archive back through the key, as from the slot.
    let o = with_pass(&["verify", "--remote", "offsite"]);
    assert!(o.status.success() && text(&o).contains("generation 1 (remote offsite, sealed):") && text(&o).contains(", 0 damaged"), "{}", text(&o));
    assert!(text(&o).contains("alpha /home"), "{}", text(&o));
    refused_as(&with_pass(&["verify", "--remote", "offsite", "--slot", "A"]), "usage", "--slot with --remote");

    // Bare metal from the remote: alpha's filesystems made again on its own
    // devices and restored from the store; they then hold what the tree
    // restored above holds (itself compared with the source).
    let o = with_pass(&["restore", "alpha", "--bare-metal", "--yes", "--remote", "offsite"]);
    assert!(o.status.success(), "{}", text(&o));
    s.m.alpha_home.mount(&["ro"]);
    let d: Vec<String> = compare::trees(&all.join("home"), s.m.alpha_home.path()).into_iter().filter(|d| !d.contains("socket")).collect();
    s.m.alpha_home.unmount();
    assert!(d.is_empty(), "alpha's home made again from the remote: {}", d.join("\n"));
    s.m.alpha_root.mount(&["ro"]);
    let d: Vec<String> =
        compare::trees_except(&all, s.m.alpha_root.path(), false, &[b"home", b"boot/efi"]).into_iter().filter(|d| !d.contains("socket")).collect();
    s.m.alpha_root.unmount();
    assert!(d.is_empty(), "alpha's root made again from the remote: {}", d.join("\n"));

    // Refusals: a machine the store does not hold, a wrong passphrase; nothing written.
    let none = s.dir.path().join("none");
    refused_as(&with_pass(&["ls", "alpha", "--remote", "offsite", "--machine", "laptop"]), "no-backup", "a machine the store does not hold");
    let wrong = s.dir.path().join("wrong-pass");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let o = cb(&s.cfg).arg("--passphrase-file").arg(&wrong).args(["restore", "alpha", "--to", none.to_str().unwrap(), "--remote", "offsite"]).output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!none.exists(), "a refused restore made its target");
    let o = with_pass(&["ls", "alpha", "--machine", "desk"]);
    assert!(o.status.code() == Some(2) && text(&o).contains("--remote <NAME>"), "--machine without --remote: {}", text(&o));

    // A generation someone else put there (generation 1's files, renumbered) is refused, not read.
    let get = |rel: &str| run(Command::new("curl").args(["-sSf"]).arg(object_url(&s3, rel)));
    let put = |rel: &str, data: &[u8]| {
        let f = s.dir.path().join("upload");
        std::fs::write(&f, data).unwrap();
        run(Command::new("curl").args(["-sSf", "-X", "PUT", "-T"]).arg(&f).arg(object_url(&s3, rel)));
    };
    let (manifest, objects, seal) = (get("gen-000001/generation.toml"), get("gen-000001/objects.toml"), get("gen-000001/seal"));
    assert!(manifest.contains("seq = 1"), "{manifest}");
    put("gen-000009/objects.toml", objects.as_bytes());
    put("gen-000009/seal", seal.as_bytes());
    put("gen-000009/generation.toml", manifest.replace("seq = 1", "seq = 9").as_bytes());
    refused_as(&with_pass(&["ls", "alpha", "--remote", "offsite"]), "remote-damaged", "a generation put on the store by someone else");
    let o = with_pass(&["ls", "alpha", "/home/ann", "--remote", "offsite", "--generation", "1"]);
    assert!(o.status.success() && text(&o).contains(&s.name), "{}", text(&o));
    run(Command::new("curl").args(["-sSf", "-X", "DELETE"]).arg(format!("{}?recursive=true", object_url(&s3, "gen-000009"))));
    // objects.toml changed on the store: refused; so is a manifest changed.
    put("gen-000001/objects.toml", format!("{objects}\n# changed\n").as_bytes());
    refused_as(&with_pass(&["restore", "alpha", "/home/ann", "--to", none.to_str().unwrap(), "--remote", "offsite"]), "remote-damaged", "objects.toml changed");
    put("gen-000001/objects.toml", objects.as_bytes());
    put("gen-000001/generation.toml", manifest.replace("/home", "/home ").as_bytes());
    refused_as(&with_pass(&["ls", "alpha", "--remote", "offsite"]), "remote-damaged", "a manifest changed");
    put("gen-000001/generation.toml", manifest.as_bytes());
    let v = cb(&s.cfg).args(["remote", "verify", "offsite"]).output().unwrap();
    assert!(v.status.success() && text(&v).contains("0 damaged"), "{}", text(&v));
    // The same archive encrypted anew to the store's key (same size, same
    // data hash, another age header): not the object that was pushed. age
    // adds a stanza of random length to a header: encrypted until the new
    // header is as long as the pushed one.
    let public =
        std::fs::read_to_string(&s.cfg).unwrap().lines().find_map(|l| l.trim().strip_prefix("key = \"").map(|k| k.trim_end_matches('"').to_string())).unwrap();
    let public: age::x25519::Recipient = public.parse().unwrap();
    let start = Command::new("curl").args(["-sSf", "-r", "0-65535"]).arg(object_url(&s3, "gen-000001/alpha/home.tar.zst.age")).output().unwrap().stdout;
    let header_len = |b: &[u8]| {
        let mac = b.windows(5).position(|w| w == b"\n--- ").unwrap() + 1;
        mac + b[mac..].iter().position(|&c| c == b'\n').unwrap() + 1
    };
    let want = header_len(&start) as u64;
    let again = s.dir.path().join("again.age");
    let mut made = false;
    for slot in [&mut s.m.slot_a, &mut s.m.slot_b] {
        slot.mount(&["ro"]);
        let f = slot.path().join("crossback/gen-000001/alpha/home.tar.zst");
        for _ in 0..2000 {
            if made || !f.exists() {
                break;
            }
            let out = std::fs::File::create(&again).unwrap();
            let mut w = crossback_archive::crypt::writer(out.try_clone().unwrap(), std::slice::from_ref(&public)).unwrap();
            if header_len(&std::fs::read(&again).unwrap()) as u64 == want {
                std::io::copy(&mut std::fs::File::open(&f).unwrap(), &mut w).unwrap();
                w.finish().unwrap();
                made = true;
            }
        }
        slot.unmount();
    }
    assert!(made, "generation 1's home archive on neither slot, or no header of {want} bytes in 2000 tries");
    assert_ne!(std::fs::read(&again).unwrap()[..want as usize], start[..want as usize], "the same header twice");
    run(Command::new("curl").args(["-sSf", "-X", "PUT", "-T"]).arg(&again).arg(object_url(&s3, "gen-000001/alpha/home.tar.zst.age")));
    let o = with_pass(&["restore", "alpha", "/home/ann/mid", "--to", none.to_str().unwrap(), "--remote", "offsite"]);
    refused_as(&o, "archive-mismatch", "an archive encrypted anew on the store");
    assert!(text(&o).contains("encryption header differs"), "{}", text(&o));
    assert!(!none.exists(), "a refused restore made its target");

    // An archive replaced on the store is refused; the other archive still restores.
    let planted = s.dir.path().join("planted");
    std::fs::write(&planted, vec![7u8; 4096]).unwrap();
    run(Command::new("curl").args(["-sSf", "-X", "PUT", "-T"]).arg(&planted).arg(object_url(&s3, "gen-000001/alpha/home.tar.zst.age")));
    let o = with_pass(&["restore", "alpha", "/home/ann", "--to", none.to_str().unwrap(), "--remote", "offsite"]);
    refused_as(&o, "archive-mismatch", "an archive replaced on the store");
    // verify --remote names it, and only it.
    let o = with_pass(&["verify", "--remote", "offsite", "--generation", "1"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("alpha /home      DAMAGED") && text(&o).contains("alpha /          ok") && text(&o).contains(", 1 damaged"), "{}", text(&o));
    let etc = s.dir.path().join("etc");
    let o = with_pass(&["restore", "alpha", "/usr/lib/os-release", "--to", etc.to_str().unwrap(), "--remote", "offsite"]);
    assert!(o.status.success() && std::fs::read_to_string(etc.join("usr/lib/os-release")).unwrap().contains("Alpha Linux 1"), "{}", text(&o));
}

#[test]
fn root_an_encrypted_media_s_archives_go_as_they_are_and_restore_from_the_remote() {
    let test = "root_an_encrypted_media_s_archives_go_as_they_are_and_restore_from_the_remote";
    let Some(_serial) = ready(test) else { return };
    let mut m = TestMachine::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "media passphrase\n").unwrap();
    ok(cb(&cfg).args(["init", "--yes", "--devices", &m.devices_arg()]));
    ok(cb(&cfg).arg("--passphrase-file").arg(&pass).args(["media", "prepare", &m.slot_a.device, &m.slot_b.device, "--encrypt"]));
    ok(cb(&cfg).arg("backup"));
    let s3 = SeaweedFs::start();
    let creds = dir.path().join("offsite.s3");
    s3.credentials_file(&creds);
    let add = |p: &Path| add_s3(&cfg, Some(p), &s3, &creds).output().unwrap();
    // The seal key comes from the media key: a wrong passphrase adds nothing.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not it\n").unwrap();
    let before = std::fs::read_to_string(&cfg).unwrap();
    assert!(!add(&wrong).status.success());
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before, "a refused remote add changed the configuration");
    let o = add(&pass);
    assert!(o.status.success(), "{}", text(&o));
    let seal_key = dir.path().join("remote-offsite.seal-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&seal_key).unwrap().permissions().mode() & 0o777, 0o600, "the seal key is root's only");
    ok(cb(&cfg).arg("push"));
    // The archive on the store is the slot's, byte for byte.
    let stored = Command::new("curl").args(["-sSf"]).arg(object_url(&s3, "gen-000001/alpha/root.tar.zst.age")).output().unwrap().stdout;
    let mut same = false;
    for slot in [&mut m.slot_a, &mut m.slot_b] {
        slot.mount(&["ro"]);
        let f = slot.path().join("crossback/gen-000001/alpha/root.tar.zst.age");
        same |= f.exists() && std::fs::read(&f).unwrap() == stored;
        slot.unmount();
    }
    assert!(same, "the store's archive is not the slot's ({} bytes)", stored.len());
    let to = dir.path().join("back");
    let o = cb(&cfg)
        .arg("--passphrase-file")
        .arg(&pass)
        .args(["restore", "alpha", "/usr/lib/os-release", "--to", to.to_str().unwrap(), "--remote", "offsite"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read_to_string(to.join("usr/lib/os-release")).unwrap().contains("Alpha Linux 1"));
    // Without the seal key, push refuses: nothing is pushed unsealed.
    std::fs::remove_file(&seal_key).unwrap();
    refused_as(&cb(&cfg).arg("push").output().unwrap(), "config", "a push without the seal key");
}

/// Whether the store serves `rel` (SeaweedFS's filer).
fn stored(s3: &SeaweedFs, rel: &str) -> bool {
    Command::new("curl").args(["-sf", "-o", "/dev/null"]).arg(object_url(s3, rel)).status().unwrap().success()
}

#[test]
fn root_retention_keeps_the_newest_deletes_only_what_is_old_enough_and_never_what_is_not_its_own() {
    let test = "root_retention_keeps_the_newest_deletes_only_what_is_old_enough_and_never_what_is_not_its_own";
    let Some(_serial) = ready(test) else { return };
    let s = backed_up(2, |_| {});
    let s3 = SeaweedFs::start();
    let creds = s.dir.path().join("offsite.s3");
    s3.credentials_file(&creds);
    // keep = 0 would delete everything; a minimum age without retention means nothing.
    let before = std::fs::read_to_string(&s.cfg).unwrap();
    assert_eq!(add_s3(&s.cfg, Some(&s.pass), &s3, &creds).args(["--keep", "0"]).output().unwrap().status.code(), Some(2));
    assert_eq!(add_s3(&s.cfg, Some(&s.pass), &s3, &creds).args(["--min-age-days", "3"]).output().unwrap().status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&s.cfg).unwrap(), before, "a refused remote add changed the configuration");
    ok(add_s3(&s.cfg, Some(&s.pass), &s3, &creds).args(["--keep", "1", "--min-age-days", "30"]));
    assert!(text(&ok(cb(&s.cfg).args(["remote", "list"]))).contains("keeps the newest 1 generations (none deleted before 30 days)"));

    // Only what retention keeps goes up.
    let said = text(&ok(cb(&s.cfg).arg("push")));
    assert!(said.contains("generation 1 is not pushed: the remote keeps the newest 1") && said.contains("generation 2 pushed"), "{said}");
    assert!(!stored(&s3, "gen-000001/objects.toml"), "{said}");
    // Generation 2 is past keep = 1 now, but was pushed fewer than 30 days ago.
    ok(cb(&s.cfg).arg("backup"));
    let said = text(&ok(cb(&s.cfg).arg("push")));
    assert!(said.contains("generation 3 pushed") && said.contains("generation 2 stays: pushed") && said.contains("kept until"), "{said}");
    assert!(stored(&s3, "gen-000002/generation.toml") && stored(&s3, "gen-000003/generation.toml"));

    // A planted "generation 9" (a copy of 2's manifest, no seal of this
    // machine) neither counts as one of the newest nor goes.
    let manifest = s.dir.path().join("manifest");
    run(Command::new("curl").args(["-sSf", "-o"]).arg(&manifest).arg(object_url(&s3, "gen-000002/generation.toml")));
    run(Command::new("curl").args(["-sSf", "-X", "PUT", "-T"]).arg(&manifest).arg(object_url(&s3, "gen-000009/generation.toml")));
    // A deletion stopped after the manifest of 2: an incomplete generation
    // no push will finish (retention keeps only the newest).
    run(Command::new("curl").args(["-sSf", "-X", "DELETE"]).arg(object_url(&s3, "gen-000002/generation.toml")));

    let cfg_text = std::fs::read_to_string(&s.cfg).unwrap().replace("min_age_days = 30", "min_age_days = 0");
    std::fs::write(&s.cfg, cfg_text).unwrap();
    ok(cb(&s.cfg).arg("backup"));
    let said = text(&ok(cb(&s.cfg).arg("push")));
    assert!(said.contains("generation 4 pushed"), "{said}");
    assert!(said.contains("generation 3 deleted: older than the newest 1"), "{said}");
    assert!(said.contains("generation 2 deleted: incomplete, and the backup disk no longer has it"), "{said}");
    assert!(said.contains("generation 9 stays: not sealed by this machine's key"), "{said}");
    for gone in [
        "gen-000002/objects.toml",
        "gen-000002/alpha/home.tar.zst.age",
        "gen-000003/generation.toml",
        "gen-000003/objects.toml",
        "gen-000003/alpha/home.tar.zst.age",
    ] {
        assert!(!stored(&s3, gone), "{gone} is still on the store");
    }
    assert!(stored(&s3, "gen-000004/generation.toml") && stored(&s3, "gen-000004/alpha/home.tar.zst.age") && stored(&s3, "gen-000009/generation.toml"));
    // What stays reads: the newest generation is restorable; verify names the planted one.
    let o = cb(&s.cfg).args(["remote", "verify", "offsite"]).output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("generation 4: ") && text(&o).contains("damaged: generation 9"), "{}", text(&o));
    // The planted generation is the newest: not taken, and not passed over unasked.
    let o = cb(&s.cfg).args(["--passphrase-file"]).arg(&s.pass).args(["ls", "alpha", "/home/ann", "--remote", "offsite"]).output().unwrap();
    refused_as(&o, "remote-damaged", "a planted newest generation");
    assert!(text(&o).contains("`--generation N` reads an older one"), "{}", text(&o));
    let ls = text(&ok(cb(&s.cfg).args(["--passphrase-file"]).arg(&s.pass).args(["ls", "alpha", "/home/ann", "--remote", "offsite", "--generation", "4"])));
    assert!(ls.contains(&s.name), "{ls}");
    // Nothing more goes on a push with nothing new.
    let said = text(&ok(cb(&s.cfg).arg("push")));
    assert!(said.contains("generation 3 is not pushed: the remote keeps the newest 1"), "{said}");
    assert!(said.contains("up to date") && !said.contains("deleted"), "{said}");
    assert!(!stored(&s3, "gen-000003/objects.toml"), "a push sent again what retention deleted");
}

#[test]
fn root_a_backup_pushes_after_itself_and_status_says_how_each_push_ended() {
    let test = "root_a_backup_pushes_after_itself_and_status_says_how_each_push_ended";
    let Some(_serial) = ready(test) else { return };
    let s = backed_up(1, |_| {});
    let s3 = SeaweedFs::start();
    let creds = s.dir.path().join("offsite.s3");
    s3.credentials_file(&creds);
    // What this system keeps (pushes.toml) goes into a directory of the test's.
    let here = s.dir.path().join("system");
    std::fs::create_dir(&here).unwrap();
    let cbh = |cfg: &Path| {
        let mut c = cb(cfg);
        c.env("CROSSBACK_SYSTEM_ROOT", &here);
        c
    };
    ok(add_s3(&s.cfg, Some(&s.pass), &s3, &creds).arg("--push-after-backup"));
    assert!(text(&ok(cbh(&s.cfg).args(["remote", "list"]))).contains("pushed after every backup"));
    let status = text(&ok(cbh(&s.cfg).arg("status")));
    assert!(status.contains("remote offsite (pushed after every backup): never pushed from here"), "{status}");

    let said = text(&ok(cbh(&s.cfg).arg("backup")));
    assert!(
        said.contains("pushing to offsite (push = \"after-backup\")") && said.contains("generation 1 pushed") && said.contains("generation 2 pushed"),
        "{said}"
    );
    let status = text(&ok(cbh(&s.cfg).arg("status")));
    assert!(
        status.contains("remote offsite (pushed after every backup): last push") && status.contains("up to date: generation 2 is the newest there"),
        "{status}"
    );

    // The store refuses the credentials: the backup is done all the same, the failure said and kept.
    std::fs::write(&creds, "access_key_id = \"nobody\"\nsecret_access_key = \"nothing-at-all-0123\"\n").unwrap();
    let o = cbh(&s.cfg).arg("backup").output().unwrap();
    assert!(o.status.success(), "a failed push failed the backup: {}", text(&o));
    assert!(err(&o).contains("the backup is done, the push to offsite is not") && err(&o).contains("crossback push` tries again"), "{}", text(&o));
    let status = text(&ok(cbh(&s.cfg).arg("status")));
    assert!(status.contains("last push FAILED") && status.contains("`crossback push offsite` tries again"), "{status}");
    assert!(!stored(&s3, "gen-000003/generation.toml"));

    // The timer's push: carries on once it can; does nothing without the backup disk.
    s3.credentials_file(&creds);
    let said = text(&ok(cbh(&s.cfg).args(["push", "--if-attached"])));
    assert!(said.contains("generation 3 pushed"), "{said}");
    assert!(text(&ok(cbh(&s.cfg).arg("status"))).contains("up to date: generation 3 is the newest there"));
    let elsewhere = s.dir.path().join("other-disk.toml");
    let text0 = std::fs::read_to_string(&s.cfg).unwrap();
    let slot_a = text0.lines().find(|l| l.starts_with("slot_a")).unwrap();
    std::fs::write(&elsewhere, text0.replace(slot_a, "slot_a = \"0f0f0f0f-0000-4000-8000-00000000abcd\"")).unwrap();
    let said = text(&ok(cbh(&elsewhere).args(["push", "--if-attached"])));
    assert!(said.contains("the backup disk is not attached: nothing to push"), "{said}");
    refused_as(&cbh(&elsewhere).arg("push").output().unwrap(), "slot-missing", "a push without the backup disk");
}

/// The retention date the store holds for `key` (under `locked/backups/desk/`), in seconds since 1970.
fn retained_until(s3: &SeaweedFs, key: &str) -> i64 {
    let (code, body) = s3.s3_request("GET", &format!("/locked/backups/desk/{key}?retention="));
    assert_eq!(code, 200, "{key} has no retention: {body}");
    assert!(body.contains("<Mode>COMPLIANCE</Mode>"), "{body}");
    let date = body.split("<RetainUntilDate>").nth(1).and_then(|r| r.split('<').next()).unwrap();
    let out = run(Command::new("date").args(["-u", "+%s", "-d", date]));
    out.trim().parse().unwrap()
}

#[test]
fn root_object_lock_keeps_what_was_pushed_from_everyone_holding_the_keys() {
    let test = "root_object_lock_keeps_what_was_pushed_from_everyone_holding_the_keys";
    let Some(_serial) = ready(test) else { return };
    let s = backed_up(2, |_| {});
    let s3 = SeaweedFs::start();
    s3.make_bucket("locked", true);
    let creds = s.dir.path().join("offsite.s3");
    s3.credentials_file(&creds);
    let add = |url: &str| add_s3_at(&s.cfg, Some(&s.pass), &s3, &creds, url);
    // Refused, nothing written: a bucket without Object Lock, a store that is not S3, no days.
    let before = std::fs::read_to_string(&s.cfg).unwrap();
    let o = add("s3://crossback/backups").args(["--lock-days", "1"]).output().unwrap();
    refused_as(&o, "config", "a bucket without Object Lock");
    assert!(text(&o).contains("no Object Lock") && text(&o).contains("-withLock"), "{}", text(&o));
    refused_as(&add("sftp://cb@127.0.0.1:22/store").args(["--lock-days", "1"]).output().unwrap(), "usage", "Object Lock over SFTP");
    refused_as(&add("rclone:here:/x/bucket").args(["--lock-days", "1"]).output().unwrap(), "usage", "Object Lock through rclone");
    assert_eq!(add("s3://locked/backups").args(["--lock-days", "0"]).output().unwrap().status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&s.cfg).unwrap(), before, "a refused remote add changed the configuration");

    let said = text(&ok(add("s3://locked/backups").args(["--lock-days", "1", "--keep", "1"])));
    assert!(said.contains("locked for 1 days in compliance mode"), "{said}");
    // A configuration that asks for it where it cannot be is refused.
    let now_cfg = std::fs::read_to_string(&s.cfg).unwrap();
    let key = now_cfg.lines().find(|l| l.starts_with("key = ")).unwrap();
    let bad = s.dir.path().join("bad.toml");
    std::fs::write(&bad, format!("{now_cfg}\n[[remote]]\nname = \"x\"\nurl = \"sftp://h/p\"\nmachine = \"desk\"\n{key}\nlock_days = 3\n")).unwrap();
    let o = cb(&bad).args(["remote", "list"]).output().unwrap();
    refused_as(&o, "config", "lock_days on an SFTP remote");
    assert!(text(&o).contains("lock_days is S3 Object Lock"), "{}", text(&o));
    assert!(text(&ok(cb(&s.cfg).args(["remote", "list"]))).contains("each object locked for 1 days"));
    let said = text(&ok(cb(&s.cfg).arg("push")));
    assert!(said.contains("generation 2 pushed") && said.contains("generation 2 locked until"), "{said}");
    let day = 86_400;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for key in [
        "crossback-remote.toml",
        "media-key.passphrase.age",
        "gen-000002/generation.toml",
        "gen-000002/objects.toml",
        "gen-000002/seal",
        "gen-000002/alpha/home.tar.zst.age",
        "gen-000002/config.toml.age",
    ] {
        let until = retained_until(&s3, key);
        assert!((now + day - 600..=now + day + 60).contains(&until), "{key} is locked until {until}, not a day from {now}");
    }

    // Someone holding the store's keys (this machine, compromised) can
    // neither delete a locked version nor shorten its lock.
    let (code, body) = s3.s3_request("GET", "/locked?prefix=backups%2Fdesk%2Fgen-000002%2Falpha%2Fhome.tar.zst.age&versions=");
    assert_eq!(code, 200, "{body}");
    let version = body.split("<VersionId>").nth(1).and_then(|r| r.split('<').next()).unwrap().to_string();
    let archive = format!("/locked/backups/desk/gen-000002/alpha/home.tar.zst.age?versionId={version}");
    let (code, body) = s3.s3_request("DELETE", &archive);
    assert_eq!(code, 403, "a locked version was deleted: {body}");
    let (code, body) = s3.s3_request("GET", &archive);
    assert_eq!(code, 200, "the locked version is gone: {body}");
    let home_until = retained_until(&s3, "gen-000002/alpha/home.tar.zst.age");

    // Retention waits for the lock: generation 2 is past keep = 1 after the next push.
    ok(cb(&s.cfg).arg("backup"));
    let said = text(&ok(cb(&s.cfg).arg("push")));
    assert!(said.contains("generation 3 pushed") && said.contains("generation 3 locked until"), "{said}");
    assert!(said.contains("generation 2 stays: pushed") && said.contains("locked until at least"), "{said}");
    assert!(!said.contains("generation 2 locked until"), "a locked generation was locked again: {said}");
    assert_eq!(retained_until(&s3, "gen-000002/alpha/home.tar.zst.age"), home_until, "a later push moved generation 2's lock");
    for key in ["gen-000002/alpha/home.tar.zst.age", "gen-000003/generation.toml"] {
        assert_eq!(s3.s3_request("GET", &format!("/locked/backups/desk/{key}")).0, 200, "{key} is not served");
    }
    // What went up there verifies.
    let v = ok(cb(&s.cfg).args(["remote", "verify", "offsite"]));
    assert!(text(&v).contains("0 damaged"), "{}", text(&v));

    // The machine, compromised, hides generation 3 behind delete markers
    // and writes over generation 2's archive: both allowed on a versioned
    // bucket, and the locked versions stay. --as-of reads them.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let then = run(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])).trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for key in ["gen-000003/generation.toml", "gen-000003/alpha/home.tar.zst.age"] {
        let (code, body) = s3.s3_request("DELETE", &format!("/locked/backups/desk/{key}"));
        assert_eq!(code, 204, "{key}: {body}");
    }
    let junk = s.dir.path().join("junk");
    std::fs::write(&junk, "not an archive").unwrap();
    let (code, body) = s3.s3_upload("/locked/backups/desk/gen-000002/alpha/home.tar.zst.age", &junk);
    assert_eq!(code, 200, "{body}");
    let with_pass = |args: &[&str]| cb(&s.cfg).arg("--passphrase-file").arg(&s.pass).args(args).output().unwrap();
    let canary = format!("/home/ann/{}", s.name);
    let o = with_pass(&["ls", "alpha", "/home/ann", "--remote", "offsite"]);
    assert!(!o.status.success() && !text(&o).contains(&s.name), "the store as it is now: {}", text(&o));
    let o = with_pass(&["ls", "alpha", "/home/ann", "--remote", "offsite", "--as-of", &then]);
    assert!(o.status.success() && text(&o).contains(&s.name) && text(&o).contains(&format!("read as it was at {then}")), "{}", text(&o));
    for generation in ["3", "2"] {
        let to = s.dir.path().join(format!("as-of-{generation}"));
        let o = with_pass(&["restore", "alpha", &canary, "--to", to.to_str().unwrap(), "--remote", "offsite", "--as-of", &then, "--generation", generation]);
        assert!(o.status.success(), "generation {generation}: {}", text(&o));
        assert_eq!(std::fs::read_to_string(to.join("home/ann").join(&s.name)).unwrap(), format!("{}\n", s.content).repeat(100));
    }
    let v = with_pass(&["verify", "--remote", "offsite", "--as-of", &then]);
    assert!(v.status.success(), "{}", text(&v));
    // Before anything was pushed there, nothing is read; a time that is not one is refused.
    refused_as(&with_pass(&["ls", "alpha", "/home/ann", "--remote", "offsite", "--as-of", "2001-01-01T00:00:00Z"]), "no-backup", "as of before the first push");
    assert_eq!(with_pass(&["ls", "alpha", "/home/ann", "--remote", "offsite", "--as-of", "yesterday"]).status.code(), Some(2));
}

#[test]
fn root_a_full_store_is_a_clear_error_and_the_newest_complete_generation_stays() {
    let test = "root_a_full_store_is_a_clear_error_and_the_newest_complete_generation_stays";
    let Some(_serial) = ready(test) else { return };
    // 24 MiB that do not compress in alpha's home: one generation fits the
    // store's 48 MiB filesystem, two do not.
    let s = backed_up(1, |m| {
        m.alpha_home.mount(&[]);
        random_file(&m.alpha_home.path().join("big"), 24);
        m.alpha_home.unmount();
    });
    let disk = crossback_testkit::LoopFs::new("ext4", 48);
    let s3 = servers::RcloneS3::start(disk.path());
    let creds = s.dir.path().join("full.s3");
    s3.credentials_file(&creds);
    let url = format!("s3://{}/backups", s3.bucket);
    ok(cb(&s.cfg)
        .arg("--passphrase-file")
        .arg(&s.pass)
        .args(["remote", "add", "full", &url, "--endpoint", &s3.endpoint(), "--machine", "desk", "--credentials"])
        .arg(&creds));
    let said = text(&ok(cb(&s.cfg).arg("push")));
    assert!(said.contains("generation 1 pushed"), "{said}");

    // rclone's S3 server says only "internal error" when its disk is full:
    // crossback says the store failed, and that full is one reason.
    ok(cb(&s.cfg).arg("backup"));
    let started = std::time::Instant::now();
    let o = cb(&s.cfg).arg("push").output().unwrap();
    eprintln!("the full store's push took {:.1} s: {}", started.elapsed().as_secs_f64(), text(&o));
    refused_as(&o, "remote-failing", "a push onto a full store");
    assert!(err(&o).contains("InternalError") && err(&o).contains("it may be full or over its quota without saying so"), "{}", text(&o));
    assert!(!err(&o).contains("x-amz-id-2"), "the error carries the HTTP headers: {}", err(&o));
    // Generation 1 is whole and still the newest complete one; 2 is not complete.
    let v = cb(&s.cfg).args(["remote", "verify", "full"]).output().unwrap();
    assert!(text(&v).contains("generation 1: ") && text(&v).contains("all as uploaded") && text(&v).contains("generation 2: incomplete"), "{}", text(&v));
    let ls = text(&ok(cb(&s.cfg).arg("--passphrase-file").arg(&s.pass).args(["ls", "alpha", "/home/ann", "--remote", "full"])));
    assert!(ls.contains(&s.name), "{ls}");
    drop(s3);
}

#[test]
fn root_limit_upload_holds_the_push_within_ten_percent_of_the_rate() {
    let test = "root_limit_upload_holds_the_push_within_ten_percent_of_the_rate";
    let Some(_serial) = ready(test) else { return };
    // 24 MiB that do not compress: six seconds at 4 MiB/s.
    let s = backed_up(1, |m| {
        m.alpha_home.mount(&[]);
        random_file(&m.alpha_home.path().join("big"), 24);
        m.alpha_home.unmount();
    });
    let s3 = SeaweedFs::start();
    let creds = s.dir.path().join("offsite.s3");
    s3.credentials_file(&creds);
    ok(&mut add_s3(&s.cfg, Some(&s.pass), &s3, &creds));
    let limit = 4.0 * 1048576.0;
    let started = std::time::Instant::now();
    let said = text(&ok(cb(&s.cfg).args(["push", "--limit-upload", "4M"])));
    let wall = started.elapsed().as_secs_f64();
    // What the store holds, by its own objects.toml; how long crossback says it sent.
    let list = run(Command::new("curl").args(["-sSf"]).arg(object_url(&s3, "gen-000001/objects.toml")));
    let bytes: f64 = list.lines().filter_map(|l| l.strip_prefix("bytes = ")).map(|n| n.parse::<f64>().unwrap()).sum();
    let secs: f64 = said.split(" sent in ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{said}"));
    eprintln!(
        "{bytes} bytes; the push took {wall:.2} s in all, {secs:.2} s sending by its own count: {:.3} MiB/s, {:.3} MiB/s",
        bytes / wall / 1048576.0,
        bytes / secs / 1048576.0
    );
    assert!(bytes > 24.0 * 1048576.0, "{list}");
    assert!(bytes / wall <= 1.1 * limit, "the whole push went at {:.2} MiB/s, over 4 MiB/s + 10 %", bytes / wall / 1048576.0);
    assert!(bytes / secs >= 0.9 * limit && bytes / secs <= 1.1 * limit, "sending went at {:.2} MiB/s, not within 10 % of 4 MiB/s", bytes / secs / 1048576.0);
}

#[test]
fn root_an_rclone_remote_is_served_for_the_command_and_stopped() {
    let test = "root_an_rclone_remote_is_served_for_the_command_and_stopped";
    let Some(_serial) = ready(test) else { return };
    let s = backed_up(1, |_| {});
    // rclone's own "local" backend stands for a provider; the rclone on PATH is the test servers'.
    let store = tempfile::Builder::new().prefix("crossback-rclone-store.").tempdir_in("/var/tmp").unwrap();
    let rconf = s.dir.path().join("rclone.conf");
    std::fs::write(&rconf, "[provider]\ntype = local\n").unwrap();
    run(Command::new("chmod").arg("600").arg(&rconf));
    let path = format!("{}:{}", servers::bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let url = format!("rclone:provider:{}/backups", store.path().display());
    let cbr = |extra: &[&str]| {
        let mut c = cb(&s.cfg);
        c.env("PATH", &path).arg("--passphrase-file").arg(&s.pass).args(extra);
        c.output().unwrap()
    };
    // Refused before anything runs: a URL with no bucket, a configuration others can read.
    let before = std::fs::read_to_string(&s.cfg).unwrap();
    refused_as(&cbr(&["remote", "add", "far", "rclone:provider", "--machine", "desk"]), "usage", "an rclone URL without a path");
    run(Command::new("chmod").arg("644").arg(&rconf));
    let o = cbr(&["remote", "add", "far", &url, "--machine", "desk", "--credentials", rconf.to_str().unwrap()]);
    refused_as(&o, "config", "an rclone configuration others can read");
    run(Command::new("chmod").arg("600").arg(&rconf));
    assert_eq!(std::fs::read_to_string(&s.cfg).unwrap(), before);

    let o = cbr(&["remote", "add", "far", &url, "--machine", "desk", "--credentials", rconf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cbr(&["push", "far"]);
    assert!(o.status.success() && text(&o).contains("generation 1 pushed"), "{}", text(&o));
    // In the provider, as on any store: the machine's directory, encrypted objects, the manifest.
    let files = run(Command::new("find").arg(store.path().join("backups/desk")).args(["-type", "f"]));
    assert!(files.contains("gen-000001/alpha/home.tar.zst.age") && files.contains("gen-000001/generation.toml"), "{files}");
    let stored = run(Command::new("bash").arg("-c").arg(format!("cat $(find '{}' -type f)", store.path().display())));
    assert!(!stored.contains(&s.name) && !stored.contains(&s.content), "the canary is in the provider in the clear");
    let o = cbr(&["remote", "verify", "far"]);
    assert!(o.status.success() && text(&o).contains("0 damaged"), "{}", text(&o));
    let back = s.dir.path().join("back");
    let o = cbr(&["restore", "alpha", &format!("/home/ann/{}", s.name), "--to", back.to_str().unwrap(), "--remote", "far"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read_to_string(back.join("home/ann").join(&s.name)).unwrap().contains(&s.content));
    // Each command's rclone is gone once it ends.
    let left = Command::new("pgrep").args(["-f", &format!("serve s3 provider:{}", store.path().display())]).output().unwrap();
    assert!(left.stdout.is_empty(), "an rclone server outlived its command: {}", String::from_utf8_lossy(&left.stdout));
}
