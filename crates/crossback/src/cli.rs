//! What the user typed. The doc comments are the `--help` text, written for
//! a terminal, not for rustdoc.
#![allow(rustdoc::bare_urls, rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Offline, full, verifiable backups of the Linux systems on one machine.
///
/// Exit codes: 0 done; 1 error (nothing half-done is left as if complete);
/// 2 bad usage; 3 partial (some source files could not be read: listed);
/// 4 damaged data found (listed); 5 archive and tree differ (listed).
#[derive(Parser, Debug)]
#[command(
    name = "crossback",
    version,
    about,
    long_about,
    after_help = "Start here (as root, from one system or a live USB, with the backup disk attached):\n  crossback init\n  crossback media prepare /dev/sdb1 /dev/sdb2\n  crossback backup\n  crossback status"
)]
pub struct Cli {
    /// The configuration file (default: $CROSSBACK_CONFIG, else /etc/crossback/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An encrypted media: your age identity file (AGE-SECRET-KEY-1…), one of its recipients' or the media key itself.
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// An encrypted media: read the passphrase from FILE's first line (default: $CROSSBACK_PASSPHRASE_FILE, else asked on the terminal).
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// A LUKS container a system sits in: FILE's whole content is its key
    /// (as cryptsetup reads key files; a passphrase without a newline).
    /// Repeat for several; default: $CROSSBACK_KEY_FILE, else asked on the terminal.
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Vec<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Find the Linux systems and backup slots on this machine and write the configuration.
    ///
    /// Example: crossback init --only debian,fedora
    Init(InitArgs),
    /// Show the configured systems (running or not, their filesystems) and the backup slots.
    ///
    /// Example: crossback status --json
    Status(StatusArgs),
    /// Run a command (default: a shell) inside an offline system, as arch-chroot does.
    ///
    /// The system's filesystems are mounted (read-write unless --read-only), with /proc,
    /// /sys, /dev, /run, /tmp and resolv.conf, in private mount and PID namespaces: nothing
    /// stays mounted afterwards. The command's exit code is crossback's.
    ///
    /// Example: crossback chroot alpha -- grub-install /dev/sda
    Chroot(ChrootArgs),
    /// Mount an offline system's filesystems at /mnt/crossback/SYSTEM (read-only unless --rw).
    ///
    /// Example: crossback mount alpha --rw
    Mount(MountArgs),
    /// Unmount what `crossback mount` mounted, last first; names what keeps it busy.
    ///
    /// Example: crossback umount alpha
    Umount(UmountArgs),
    /// Prepare the backup disk: mark two filesystems as its slots A and B.
    #[command(subcommand)]
    Media(MediaCommand),
    /// Back up every offline system (or the named ones) into the slot the rotation chooses.
    ///
    /// From a live USB that is every configured system; from one system of a dual boot,
    /// the other one. The last system of a generation seals it.
    ///
    /// Example: crossback backup
    Backup(BackupArgs),
    /// Back up by themselves: when the backup disk is plugged in (a udev rule and a
    /// systemd unit), with a desktop notification when a backup starts and ends, and a
    /// daily reminder when the newest complete backup is older than --remind-after days.
    ///
    /// Example: crossback schedule --remind-after 14
    Schedule(ScheduleArgs),
    /// The steps of the boot that `backup --at-reboot` armed (run by its systemd unit).
    #[command(hide = true)]
    AtRebootJob {
        #[arg(value_parser = ["run", "finish"])]
        step: String,
    },
    /// Check the archives of the backup generations byte for byte.
    ///
    /// Example: crossback verify --generation 7
    Verify(VerifyGenArgs),
    /// List a system's backup like a directory (all its filesystems), from the indexes.
    ///
    /// Example: crossback ls alpha /home/ann --generation 7
    Ls(LsSystemArgs),
    /// Every backup on the media as a read-only filesystem, until `umount` or Ctrl-C.
    ///
    /// /gen-NNNNNN/SYSTEM/… holds each generation's systems, each filesystem at
    /// its mount point; /latest/SYSTEM links to a system's newest backup.
    ///
    /// Example: crossback browse /mnt/backups   (then: ls /mnt/backups/latest/alpha/home)
    Browse(BrowseArgs),
    /// Restore files, a whole system into a directory, or a system onto its filesystems.
    ///
    /// Examples:
    ///   crossback restore alpha --to /mnt/rescue /etc/fstab /home/ann/thesis
    ///   crossback restore alpha --bare-metal --device /=/dev/sda2 --device /home=/dev/sda3
    ///   crossback restore --bare-metal --disk /dev/nvme0n1     (a new disk: every system that was on the old one)
    Restore(RestoreArgs),
    /// The guided restore of a dead machine from its backup media: which
    /// media, systems, generation and disk, asked one by one; then the
    /// `restore --disk` command it prints, run. The rescue system on the
    /// backup disk (`media rescue`) starts it on its console.
    ///
    /// Example: crossback recover
    Recover(RecoverArgs),
    /// Off-site copies: the object stores (S3) and SFTP servers sealed generations are copied to.
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Copy every sealed generation a remote does not have yet to it, encrypted.
    ///
    /// Reads the backup disk (read-only) and uploads what is missing, a generation's
    /// manifest last; a push that stopped carries on where it stopped. Without REMOTE,
    /// every configured remote.
    ///
    /// Example: crossback push offsite --limit-upload 5M
    Push(PushArgs),
    /// Work with single archives (one file system tree each).
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Print shell completions.
    ///
    /// Example: crossback completions bash > /etc/bash_completion.d/crossback
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    ///
    /// Example: crossback manpage > /usr/share/man/man1/crossback.1
    Manpage,
}

#[derive(Subcommand, Debug)]
pub enum ArchiveCommand {
    /// Archive one file system tree into a single seekable .tar.zst file.
    ///
    /// Example: crossback archive create /mnt/alpha -o /backup/alpha-root.tar.zst
    Create(CreateArgs),
    /// Restore an archive (or some paths of it) into a directory.
    ///
    /// Example: crossback archive extract root.tar.zst -C /mnt/restore etc/fstab home/ann
    Extract(ExtractArgs),
    /// List an archive's contents from its index, without decompressing it.
    ///
    /// Example: crossback archive ls root.tar.zst etc --json
    Ls(LsArgs),
    /// Check every byte of an archive against its hashes; name damaged files.
    ///
    /// Example: crossback archive verify root.tar.zst --against /mnt/alpha
    Verify(VerifyArgs),
}

/// How archives are compressed (`archive create`, `backup`).
#[derive(Args, Debug)]
pub struct Compression {
    /// zstd compression level (1-19).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Let the level rise up to N while the disk written to, not the CPU,
    /// is the bottleneck (a slow disk: a smaller archive in the same time);
    /// frames that do not compress stay at --level. Default: fixed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=19))]
    pub max_level: Option<i32>,
    /// Compression threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl Compression {
    /// The archive writer's options with these levels and threads.
    pub fn options(&self) -> crossback_archive::CreateOptions {
        let mut opts = crossback_archive::CreateOptions { level: self.level, max_level: self.max_level.unwrap_or(self.level), ..Default::default() };
        if let Some(t) = self.threads {
            opts.threads = t.max(1);
        }
        opts
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The directory to archive (the archive stays on its file system).
    pub src: PathBuf,
    /// The archive file to write.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    #[command(flatten)]
    pub compression: Compression,
    /// Leave out paths matching this glob; without '/' it matches any name,
    /// with a leading '/' the path from SRC. Repeatable.
    /// Example: --exclude '*.tmp' --exclude /var/cache
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Replace ARCHIVE if it exists.
    #[arg(long)]
    pub force: bool,
    /// Encrypt the archive (age) to this public key (age1…); repeatable.
    /// Read it back with --identity FILE, or `age -d -i FILE ARCHIVE | zstd -dc | tar -x`.
    #[arg(long, value_name = "AGE1…")]
    pub recipient: Vec<String>,
    /// Uncompressed bytes per zstd frame (default 8 MiB). For tests: an
    /// archive with huge frames, as another writer could make.
    #[arg(long, hide = true, value_name = "BYTES")]
    pub frame_size: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ExtractArgs {
    /// The archive to read (crossback's, or any .tar.zst / .tar).
    pub archive: PathBuf,
    /// The directory to restore into (created if missing; must be empty).
    #[arg(short = 'C', long = "directory")]
    pub dir: PathBuf,
    /// Only these paths (and what is below them).
    pub paths: Vec<PathBuf>,
    /// Restore into a directory that is not empty, replacing what is in the way.
    #[arg(long)]
    pub force: bool,
    /// Threads writing small files (default: one per core; 1: only the
    /// thread that reads the archive).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    pub archive: PathBuf,
    /// Only this path and what is below it.
    pub path: Option<PathBuf>,
    /// One JSON object per line: path, type, mode, uid, gid, size, mtime, link, flags.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    pub archive: PathBuf,
    /// Also compare the archive with this directory tree and list what differs.
    #[arg(long, value_name = "DIR")]
    pub against: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Write the configuration without asking, also over an existing one.
    #[arg(long)]
    pub yes: bool,
    /// Keep only these systems (names as shown), e.g. when an unrelated Linux is attached.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub only: Vec<String>,
    /// Look at these block devices only (default: every one).
    #[arg(long, value_delimiter = ',', value_name = "DEV,...")]
    pub devices: Vec<PathBuf>,
    /// Make a new configuration from what is found here, even when a backup
    /// media attached holds one (by default, where there is no configuration
    /// yet, the media's copy is taken: the second system and a rescue system
    /// then back up and restore exactly what the first one set up).
    #[arg(long)]
    pub ignore_media: bool,
    /// The backup media whose configuration is taken (its ID, as `status` and
    /// `recover` show it), when the slots of several are attached: without it
    /// init takes none of them and says so.
    #[arg(long, value_name = "ID", conflicts_with = "ignore_media")]
    pub media: Option<String>,
    /// Take the configuration from this remote (as the newest generation pushed
    /// there carries it) instead of looking at this machine: a new machine with
    /// nothing but the remote's credentials and the passphrase can then restore.
    /// Add the remote first (`crossback remote add`).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["only", "devices", "ignore_media", "media"])]
    pub remote: Option<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// One JSON object (keys documented in the README).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ChrootArgs {
    /// The system (a name from the configuration).
    pub system: String,
    /// Mount it read-only (and its devices read-only): look, change nothing.
    #[arg(long)]
    pub read_only: bool,
    /// With --read-only: mount filesystems that were not cleanly unmounted, without replaying their journals.
    #[arg(long)]
    pub allow_dirty: bool,
    /// Mount filesystems that are mounted read-write elsewhere.
    #[arg(long)]
    pub allow_mounted: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    pub system: String,
    /// Mount read-write (default: read-only, journals not replayed).
    #[arg(long)]
    pub rw: bool,
    /// Where to mount it (default: /mnt/crossback/SYSTEM).
    #[arg(long, value_name = "DIR")]
    pub at: Option<PathBuf>,
    /// Read-only: mount filesystems that were not cleanly unmounted, without replaying their journals.
    #[arg(long)]
    pub allow_dirty: bool,
}

#[derive(Args, Debug)]
pub struct UmountArgs {
    pub system: String,
}

#[derive(Subcommand, Debug)]
pub enum MediaCommand {
    /// Mark two empty filesystems (devices or UUIDs) as slots A and B of one backup media.
    ///
    /// Example: crossback media prepare /dev/sdb1 /dev/sdb2 --label backup-my-linux
    Prepare(PrepareArgs),
    /// Take over a backup disk made by the old duplicity scripts, keeping its backups as generation 0.
    ///
    /// Example: crossback media adopt /dev/sdb1 /dev/sdb2 --root-backup debian --hidden-backup fedora
    Adopt(AdoptArgs),
    /// Encrypt what is written to the media from now on (age); the plaintext generations go with rotation.
    ///
    /// Asks for a new passphrase (or --passphrase-file), unless --recipient is given.
    ///
    /// Example: crossback media encrypt --recipient age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
    Encrypt(EncryptArgs),
    /// Let another passphrase or age key unlock the encrypted media (the archives are not rewritten).
    ///
    /// Example: crossback media add-key --recipient age1… --identity ~/my-age-key.txt
    AddKey(KeyArgs),
    /// Stop a passphrase or age key from unlocking the encrypted media.
    ///
    /// Example: crossback media remove-key --passphrase
    RemoveKey(KeyArgs),
    /// Record in this system's configuration what the media is: encrypted (learning its key
    /// with its passphrase) or, with --plain, not encrypted.
    ///
    /// The second system of a dual boot needs this after `media encrypt` ran on the first:
    /// the disk's own word is never taken for it.
    ///
    /// Example: crossback media trust            (asks the media's passphrase)
    Trust(TrustArgs),
    /// Put a rescue system on a FAT partition (the backup disk's own, or a USB stick's)
    /// that boots the machine, under Secure Boot too, into crossback.
    ///
    /// Made of this system's signed shim, GRUB and kernel and an initramfs holding
    /// crossback and the tools a restore runs; no key and nothing of the backups.
    ///
    /// Example: crossback media rescue --device /dev/sdb1
    Rescue(RescueArgs),
}

#[derive(Args, Debug)]
pub struct RescueArgs {
    /// The partition (at least 128 MiB) the rescue goes on; formatted as FAT unless it
    /// holds a rescue already.
    #[arg(long, value_name = "DEV")]
    pub device: PathBuf,
    /// Format the partition although it holds a filesystem.
    #[arg(long)]
    pub yes: bool,
    /// Make it although the kernel is not signed: it then boots only with Secure Boot off.
    #[arg(long)]
    pub no_secure_boot: bool,
    /// Keep the firmware files the kernel's drivers load (Wi-Fi, GPUs, some
    /// disk controllers); without it the rescue holds none.
    #[arg(long)]
    pub firmware: bool,
}

#[derive(Args, Debug)]
pub struct TrustArgs {
    /// The media is not encrypted (its markers must say so too).
    #[arg(long, conflicts_with = "media_key")]
    pub plain: bool,
    /// The media's public key (age1…), as another system's configuration names it:
    /// for a media with no passphrase, learned without unlocking it.
    #[arg(long, value_name = "AGE1…")]
    pub media_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct EncryptArgs {
    /// An age public key (age1…) that may unlock the media; repeatable. Backups need none of the secrets.
    #[arg(long, value_name = "AGE1…")]
    pub recipient: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    /// An age public key (age1…); repeatable.
    #[arg(long, value_name = "AGE1…")]
    pub recipient: Vec<String>,
    /// The passphrase: add-key sets a new one (asked twice, or --new-passphrase-file); remove-key removes it.
    #[arg(long)]
    pub passphrase: bool,
    /// add-key --passphrase: read the new passphrase from FILE's first line.
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AdoptArgs {
    pub slot_a: String,
    pub slot_b: String,
    /// The system whose duplicity backup lies at the root of its partition.
    #[arg(long, value_name = "SYSTEM")]
    pub root_backup: Option<String>,
    /// The system whose duplicity backup lies in the hidden directory.
    #[arg(long, value_name = "SYSTEM")]
    pub hidden_backup: Option<String>,
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    #[arg(required_unless_present = "disk")]
    pub slot_a: Option<String>,
    #[arg(required_unless_present = "disk")]
    pub slot_b: Option<String>,
    /// A whole disk made the backup media: a FAT partition for the rescue
    /// system (then made, when the signed boot chain is installed) and the
    /// two slots, each half of the rest. Asks before erasing a disk that
    /// holds anything (--yes answers for you).
    #[arg(long, value_name = "DEV", conflicts_with_all = ["slot_a", "slot_b", "mkfs"])]
    pub disk: Option<std::path::PathBuf>,
    /// Label the filesystems PREFIX-A and PREFIX-B.
    #[arg(long, value_name = "PREFIX")]
    pub label: Option<String>,
    /// Format both as ext4 first (destroys what is on them; asks, unless --yes).
    #[arg(long)]
    pub mkfs: bool,
    /// With --mkfs or --disk: do not ask.
    #[arg(long)]
    pub yes: bool,
    /// Encrypt everything written to the media (age): asks for a passphrase (or --passphrase-file), unless --recipient is given.
    #[arg(long)]
    pub encrypt: bool,
    /// With --encrypt: an age public key (age1…) that may unlock the media; repeatable.
    #[arg(long, value_name = "AGE1…", requires = "encrypt")]
    pub recipient: Vec<String>,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Systems to back up (default: every one not running and not yet in the open generation).
    pub systems: Vec<String>,
    /// Abandon the open generation and start a new one.
    #[arg(long)]
    pub new_generation: bool,
    /// Let this backup remove a damaged generation (one whose manifest does not read)
    /// from the slot it writes to. Without it such a slot is refused: the damaged
    /// generation may be the newest, and its archives may still hold files.
    #[arg(long)]
    pub discard_damaged: bool,
    /// Skip reading each archive back from the disk (done while it is written).
    #[arg(long)]
    pub no_verify: bool,
    /// Read filesystems that were not cleanly unmounted, without replaying their journals.
    #[arg(long)]
    pub allow_dirty: bool,
    #[command(flatten)]
    pub compression: Compression,
    /// Back up this system, offline: at the next boot, before anything else
    /// starts, its filesystems are made read-only and it is backed up (with the
    /// offline systems not yet in the open generation, or the named ones);
    /// then it boots as usual. Reboots now, unless --no-reboot.
    #[arg(long)]
    pub at_reboot: bool,
    /// With --at-reboot: arm it, and leave the reboot to you.
    #[arg(long, requires = "at_reboot")]
    pub no_reboot: bool,
    /// With --at-reboot: disarm the backup armed for the next boot.
    #[arg(long, requires = "at_reboot")]
    pub cancel: bool,
    /// With --at-reboot: give up after MINUTES and boot as usual.
    #[arg(long, value_name = "MINUTES", default_value_t = 240, value_parser = clap::value_parser!(u64).range(1..=10080), requires = "at_reboot")]
    pub time_limit: u64,
    /// With --at-reboot: how long that boot waits for the backup disk to appear.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, requires = "at_reboot")]
    pub disk_wait: u64,
    /// The boot of --at-reboot: the running system's filesystems are read-only (refused otherwise).
    #[arg(long, hide = true, conflicts_with = "at_reboot")]
    pub frozen: bool,
    /// Started by the backup disk being plugged in (`crossback schedule`): waits for
    /// both slots, and tells the logged-in users.
    #[arg(long, hide = true, conflicts_with_all = ["at_reboot", "frozen"])]
    pub plugged: bool,
    /// With --plugged: a media that is not encrypted is accepted (`crossback schedule --unencrypted` chose it).
    #[arg(long, hide = true, requires = "plugged")]
    pub unencrypted: bool,
    /// Record SYSTEM even though it lost most of its files (or its
    /// os-release or fstab) since its previous backup. Without it, such a
    /// system is refused (exit 1): it looks broken, and sealing it would push
    /// its last good backup out of the rotation.
    #[arg(long, value_name = "SYSTEM")]
    pub accept_shrunk: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// Remind (desktop notification, journal) when the newest complete backup is older than DAYS.
    #[arg(long, value_name = "DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub remind_after: u32,
    /// Remove the schedule: the udev rule, the units, the reminder.
    #[arg(long)]
    pub off: bool,
    /// The reminder's check (run daily by its timer): say what to do if the newest complete backup is too old.
    #[arg(long, conflicts_with = "off")]
    pub check: bool,
    /// Back up when the disk is plugged in also if the media is not encrypted. Without it
    /// such a backup refuses a plain media: a stick given your slots' UUIDs would get your
    /// systems in plaintext. An encrypted media needs no choice.
    #[arg(long, conflicts_with_all = ["off", "check"])]
    pub unencrypted: bool,
    /// Also push to the remotes hourly, once the network is up, while the backup disk
    /// is attached (a timer running `crossback push --if-attached`).
    #[arg(long, conflicts_with_all = ["off", "check"])]
    pub push: bool,
}

#[derive(Args, Debug)]
pub struct VerifyGenArgs {
    /// Only this generation (default: every one present).
    #[arg(long)]
    pub generation: Option<u64>,
    /// Only the generation in this slot.
    #[arg(long, value_parser = ["A", "B"])]
    pub slot: Option<String>,
    /// Only this system's archives.
    #[arg(long)]
    pub system: Option<String>,
    /// Also compare each archive with the offline system itself (read-only) and list what changed since.
    #[arg(long)]
    pub against_source: bool,
    #[command(flatten)]
    pub from: FromRemote,
}

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Add an off-site store; everything pushed there is encrypted.
    ///
    /// A plain media's copies are encrypted to a new key, kept in the store wrapped
    /// by a passphrase (asked now, or --passphrase-file) and/or for --recipient; an
    /// encrypted media's go up as they are, under the media's own key.
    ///
    /// Examples:
    ///   crossback remote add offsite s3://my-bucket/backups --endpoint https://s3.eu-central-1.wasabisys.com --credentials /etc/crossback/offsite.s3
    ///   crossback remote add nas sftp://backup@nas.local/srv/crossback
    Add(RemoteAddArgs),
    /// The configured remotes; with --machines, the machines a remote holds backups of.
    ///
    /// Example: crossback remote list --machines offsite
    List(RemoteListArgs),
    /// Forget a remote (what it holds stays there).
    ///
    /// Example: crossback remote remove offsite
    Remove { name: String },
    /// Read a remote's objects back and check them against the hashes recorded when they went up.
    ///
    /// Example: crossback remote verify offsite --sample 10
    Verify(RemoteVerifyArgs),
}

#[derive(Args, Debug)]
pub struct RemoteAddArgs {
    /// A name for it (letters, digits, '-', '_', '.').
    pub name: String,
    /// s3://BUCKET[/PREFIX] or sftp://[USER@]HOST[:PORT]/PATH
    pub url: String,
    /// S3: the service's address (default: AWS).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3: the region (default: us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// S3: a file (mode 600) with access_key_id = "…" and secret_access_key = "…"
    /// (default: $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY); SFTP: the SSH private key.
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// This machine's name in the store (default: its host name).
    #[arg(long)]
    pub machine: Option<String>,
    /// A plain media: also let this age key unlock the remote's copies (repeat; with
    /// only recipients, no passphrase is asked).
    #[arg(long, value_name = "AGE1…")]
    pub recipient: Vec<String>,
    /// Upload at most this many bytes per second (e.g. 5M, 500K).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_upload: Option<u64>,
    /// Retention: after each push, delete the generations there past the newest N
    /// (default: keep every generation).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// Retention deletes nothing pushed fewer than DAYS days ago (the provider's
    /// minimum storage duration, e.g. 30 for S3 Infrequent Access, 90 for Wasabi).
    #[arg(long, value_name = "DAYS", requires = "keep")]
    pub min_age_days: Option<u32>,
    /// S3 Object Lock: lock every object pushed there for DAYS days (compliance mode:
    /// nobody can delete it before then, this machine included). The bucket must
    /// have been made with Object Lock.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub lock_days: Option<u32>,
    /// Push there at the end of every `crossback backup` (push = "after-backup").
    #[arg(long)]
    pub push_after_backup: bool,
}

#[derive(Args, Debug)]
pub struct RemoteListArgs {
    /// List the machines this remote holds backups of (contacts it).
    #[arg(long, value_name = "REMOTE")]
    pub machines: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RemoteVerifyArgs {
    pub name: String,
    /// Read back only this share of the objects (chosen at random), in percent.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub sample: Option<u8>,
    /// Another machine's backups in the same store.
    #[arg(long)]
    pub machine: Option<String>,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The remote (default: every configured one).
    pub remote: Option<String>,
    /// Upload at most this many bytes per second (e.g. 5M, 500K).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_upload: Option<u64>,
    /// Do nothing, and succeed, when the backup disk is not attached (the timer of
    /// `schedule --push` runs it so).
    #[arg(long)]
    pub if_attached: bool,
}

/// A rate in bytes per second: `5M`, `500K`, `1G`, or a plain number.
fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches("/s").trim_end_matches(['B', 'b']);
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("{text:?}: use K, M or G (bytes per second)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("{text:?} is not a rate like 5M or 500K"))?;
    let bytes = n * mult as f64;
    if !(1.0..=u32::MAX as f64).contains(&bytes) {
        return Err(format!("{text:?}: a rate between 1 byte and 4G per second"));
    }
    Ok(bytes as u64)
}

#[derive(Args, Debug)]
pub struct LsSystemArgs {
    pub system: String,
    /// A path in the system (default: /).
    pub path: Option<String>,
    /// From this generation (default: the newest holding the system).
    #[arg(long)]
    pub generation: Option<u64>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub from: FromRemote,
}

/// Reading the backups from an off-site copy instead of the backup disk.
#[derive(Args, Debug, Default)]
pub struct FromRemote {
    /// Read the backups from this remote (as `push` left them there), not
    /// from the backup disk.
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Another machine's backups in the remote's store (`remote list
    /// --machines NAME` shows them).
    #[arg(long, requires = "remote")]
    pub machine: Option<String>,
    /// Read the remote as it was at TIME (2026-12-01T18:00:00Z, UTC): each object's
    /// version then, on an S3 store that keeps versions (one with Object Lock does),
    /// whatever was deleted or written over since.
    #[arg(long, value_name = "TIME", requires = "remote", value_parser = parse_as_of)]
    pub as_of: Option<i64>,
}

fn parse_as_of(s: &str) -> Result<i64, String> {
    crate::output::parse_time(s).ok_or_else(|| format!("{s:?} is not a time as 2026-12-01T18:00:00Z (UTC, to the second)"))
}

#[derive(Args, Debug)]
pub struct BrowseArgs {
    /// An empty directory to show the backups in.
    pub mountpoint: std::path::PathBuf,
    /// Only this system's backups.
    #[arg(long)]
    pub system: Option<String>,
    /// Let every user look (each as the owners and modes of the backed-up
    /// files allow, as on the original system); default: root only.
    #[arg(long)]
    pub allow_other: bool,
}

#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// Started by the rescue system: ends by restarting the machine.
    #[arg(long, hide = true)]
    pub rescue: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The system (with --bare-metal --disk: default every system that was on the disk).
    #[arg(required_unless_present = "disk")]
    pub system: Option<String>,
    /// Only these paths of the system (with --to).
    pub paths: Vec<String>,
    /// Restore into this directory (each filesystem at its mount point under it).
    #[arg(long, value_name = "DIR", conflicts_with = "bare_metal")]
    pub to: Option<PathBuf>,
    /// Recreate the system's filesystems (type, UUID, label) and restore onto them.
    #[arg(long)]
    pub bare_metal: bool,
    /// With --bare-metal: the device for a mount point (default: the one with the recorded UUID).
    #[arg(long = "device", value_name = "MOUNTPOINT=DEV")]
    pub devices: Vec<String>,
    /// With --bare-metal: make the recorded partition table again on this blank disk (shrunk to fit), and restore every system that was on it.
    #[arg(long, value_name = "DEV")]
    pub disk: Option<PathBuf>,
    /// With --bare-metal: repair nothing of the boot (--disk: the firmware's entries; --new-uuids: GRUB).
    #[arg(long)]
    pub no_boot_repair: bool,
    /// With --bare-metal: give the filesystems new UUIDs and rewrite fstab/crypttab.
    #[arg(long)]
    pub new_uuids: bool,
    /// With --disk: make the LUKS containers with a new master key and a new
    /// passphrase (asked twice, or --new-key-file) instead of their recorded
    /// headers; their UUIDs stay, and the key files their system's crypttab
    /// names are added, so crypttab and the initramfs need no change.
    #[arg(long, requires = "disk")]
    pub new_luks_key: bool,
    /// With --new-luks-key: the new passphrase is FILE's whole content.
    #[arg(long, value_name = "FILE", requires = "new_luks_key")]
    pub new_key_file: Option<PathBuf>,
    /// From this generation (default: the newest holding the system).
    #[arg(long)]
    pub generation: Option<u64>,
    /// With --to: write into a directory that is not empty.
    #[arg(long)]
    pub force: bool,
    /// With --bare-metal: do not ask before wiping the devices.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub from: FromRemote,
}
