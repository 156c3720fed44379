//! `crossback recover`: the guided restore that the rescue system starts on
//! its console (`media rescue`), usable from any other system too. It asks,
//! in order: the backup media (none asked when only one is attached, or when
//! the rescue booted from one), its passphrase when encrypted, which
//! systems, which generation, which disk (each with its size and what it
//! holds); it shows a summary to confirm, then runs the crossback commands
//! it prints, so that the user learns the command line from it. At any
//! question `!` opens a shell; nothing is written before the summary's yes.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use crossback_host::blockdev::Device;
use crossback_host::tool::Tool;

use crate::cli::RecoverArgs;
use crate::error::{refuse, Refusal};
use crate::layout::{Generation, SlotView, State};
use crate::machine::{self, Machine};
use crate::{keys, output, refuse, Outcome};

/// One backup media as its slots show it.
struct Media {
    id: String,
    slots: Vec<(Device, SlotView)>,
}

impl Media {
    fn encrypted(&self) -> bool {
        self.slots.iter().any(|(_, v)| v.marker.encryption.is_some())
    }

    fn disks(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self.slots.iter().map(|(d, _)| d.disk.as_str()).collect();
        d.sort_unstable();
        d.dedup();
        d
    }

    /// What tells one machine's media from another's: the systems of its
    /// newest complete generation, and when it was sealed.
    fn summary(&self) -> String {
        match self.sealed().first() {
            Some(g) => format!(
                "{} (newest complete generation {}, sealed {})",
                g.systems.iter().map(|s| output::text(s)).collect::<Vec<_>>().join(", "),
                g.seq,
                output::text(g.sealed.as_deref().unwrap_or(&g.started))
            ),
            None => "no complete generation".into(),
        }
    }

    /// Its sealed generations, newest first.
    fn sealed(&self) -> Vec<&Generation> {
        let mut g: Vec<&Generation> =
            self.slots.iter().flat_map(|(_, v)| v.generations.iter().filter_map(|e| e.valid())).filter(|g| g.state == State::Sealed).collect();
        g.sort_by_key(|g| std::cmp::Reverse(g.seq));
        g
    }
}

pub fn run(path: &Path, a: RecoverArgs) -> anyhow::Result<Outcome> {
    machine::require_root("recover")?;
    println!("crossback recover: the guided restore. At any question, '!' opens a shell (type 'exit' to come back here).");
    let m = Machine::scan(&[])?;
    let (media, media_disks) = choose_media(&m)?;
    let pass = Passphrase::new(&media)?;
    let mut global: Vec<String> = Vec::new();
    if path != crate::config::path(None) {
        global.extend(["--config".into(), path.display().to_string()]);
    }
    if !path.exists() {
        init(&global, &pass, &media.id)?;
    }
    let sealed = media.sealed();
    let Some(newest) = sealed.first() else {
        refuse!(Refusal::NoBackup, "media {} holds no complete generation: nothing to restore from", output::text(&media.id));
    };
    let generation = choose_generation(&sealed)?;
    let systems = choose_systems(sealed.iter().find(|g| g.seq == generation).unwrap_or(newest))?;
    let disk = choose_disk(&m, &media_disks)?;
    let mut args: Vec<String> = vec!["restore".into(), "--bare-metal".into(), "--disk".into(), disk.path.display().to_string()];
    args.extend(systems.clone());
    // The generation chosen, said: without it each system would come from
    // its newest backup, which an open generation may hold.
    args.extend(["--generation".into(), generation.to_string(), "--yes".into()]);
    println!();
    println!("Summary:");
    println!("  from:    backup media {}, generation {generation}", output::text(&media.id));
    println!("  systems: {}", systems.first().map(|s| output::text(s)).unwrap_or_else(|| "all of them".into()));
    println!("  onto:    {} ({}): everything on it is replaced", disk.path.display(), output::bytes(disk.size));
    println!("  command: crossback {}", shown(&global, &args));
    if answer("Start the restore? Type yes")? != "yes" {
        refuse!(Refusal::NotConfirmed, "not confirmed: nothing was written");
    }
    let started = Instant::now();
    crossback(&global, &pass, &args)?;
    println!();
    println!("crossback recover: restored in {}. Remove the backup disk and reboot.", output::age(started.elapsed().as_secs() as i64));
    if a.rescue {
        answer("Press Enter to restart the machine (the backup disk removed)")?;
        let _ = Tool::new("sync").run();
        Tool::new("reboot").arg("-f").run()?;
    }
    Ok(Outcome::Ok)
}

/// The media to restore from: the one the rescue booted from, else the only
/// one attached, else the user's choice — among those on the disk it booted
/// from when that disk holds several (one per machine). With it, the disks
/// of every media found: none is a disk to restore onto.
fn choose_media(m: &Machine) -> anyhow::Result<(Media, Vec<String>)> {
    let (_, found, _) = machine::discover(m)?;
    let mut all: Vec<Media> = Vec::new();
    for (d, i) in found {
        let Some(Ok(view)) = crate::layout::slot_of(&i.extra) else { continue };
        match all.iter_mut().find(|x| x.id == view.marker.media_id) {
            Some(x) => x.slots.push((d, view)),
            None => all.push(Media { id: view.marker.media_id.clone(), slots: vec![(d, view)] }),
        }
    }
    let media_disks: Vec<String> = all.iter().flat_map(|x| x.disks()).map(str::to_string).collect();
    let booted: Vec<&str> = m.devices.iter().filter(|d| d.fstype == "vfat" && d.label == super::media::RESCUE_LABEL).map(|d| d.disk.as_str()).collect();
    let (on_booted, elsewhere): (Vec<Media>, Vec<Media>) = all.into_iter().partition(|x| x.disks().iter().any(|d| booted.contains(d)));
    let (mut choice, question) = match (on_booted.is_empty(), elsewhere.len()) {
        (false, _) => (on_booted, "The backup disk holds the backups of several machines:"),
        (true, 0) => {
            refuse!(Refusal::SlotMissing, "no backup media found: attach the backup disk (both of its slots), wait a moment and run `crossback recover` again")
        }
        (true, _) => (elsewhere, "Backup media attached (one per machine):"),
    };
    if choice.len() == 1 {
        return Ok((choice.remove(0), media_disks));
    }
    println!("{question}");
    for (n, x) in choice.iter().enumerate() {
        let disks: Vec<String> = x.disks().iter().map(|d| format!("/dev/{d}")).collect();
        println!("  {}) media {} on {}: {}", n + 1, output::text(&x.id), disks.join(", "), x.summary());
    }
    let i = pick("Restore from which media (which machine)? Number", choice.len(), None)?;
    Ok((choice.swap_remove(i), media_disks))
}

fn init(global: &[String], pass: &Passphrase, media: &str) -> anyhow::Result<()> {
    println!("No configuration here: crossback takes the one the backup media carries.");
    crossback(global, pass, &["init".to_string(), "--yes".to_string(), "--media".to_string(), media.to_string()])
}

fn choose_generation(sealed: &[&Generation]) -> anyhow::Result<u64> {
    let now = output::now_secs();
    println!();
    println!("Complete generations on the media, newest first:");
    for (n, g) in sealed.iter().enumerate() {
        let when = g.sealed.as_deref().unwrap_or(&g.started);
        let ago = output::parse_time(when).map(|t| format!(" ({} ago)", output::age(now - t))).unwrap_or_default();
        println!(
            "  {}) generation {}, sealed {}{ago}: {}",
            n + 1,
            g.seq,
            output::text(when),
            g.systems.iter().map(|s| output::text(s)).collect::<Vec<_>>().join(", ")
        );
    }
    let i = pick("Restore which generation? Number", sealed.len(), Some(0))?;
    Ok(sealed[i].seq)
}

/// Every system of the generation (none named: `restore --disk` takes them
/// all), or one.
fn choose_systems(g: &Generation) -> anyhow::Result<Vec<String>> {
    if g.systems.len() == 1 {
        return Ok(Vec::new());
    }
    loop {
        let a =
            answer(&format!("Restore which systems? 'all', or one of {}. [all]", g.systems.iter().map(|s| output::text(s)).collect::<Vec<_>>().join(", ")))?;
        match a.as_str() {
            "" | "all" => return Ok(Vec::new()),
            name if g.systems.iter().any(|s| s == name) => return Ok(vec![name.to_string()]),
            other => println!("{} is not a system of generation {}", output::text(other), g.seq),
        }
    }
}

/// The disk to restore onto, from the whole disks that hold no backup
/// media and are not mounted, each shown with what it holds.
fn choose_disk(m: &Machine, skip: &[String]) -> anyhow::Result<Device> {
    let disks: Vec<&Device> = m
        .devices
        .iter()
        .filter(|d| d.disk == d.name && d.size > 0 && !d.read_only && !skip.contains(&d.name))
        .filter(|d| !["ram", "zram", "sr", "fd", "dm-", "md"].iter().any(|p| d.name.starts_with(p)))
        .filter(|d| !m.devices.iter().any(|p| p.disk == d.name && !m.mounts_of(p).is_empty()))
        .collect();
    if disks.is_empty() {
        refuse!(Refusal::TargetInUse, "no disk to restore onto: attach the new disk (the backup media's and mounted ones are not offered)");
    }
    println!();
    println!("Disks (the backup media's and mounted ones left out):");
    for (n, d) in disks.iter().enumerate() {
        println!("  {}) {} {}: {}", n + 1, d.path.display(), output::bytes(d.size), holds(m, d));
    }
    let i = pick("Restore onto which disk? Number (everything on it is replaced)", disks.len(), None)?;
    Ok(disks[i].clone())
}

/// What a disk holds, as its partitions' types and labels show it.
fn holds(m: &Machine, disk: &Device) -> String {
    let parts: Vec<String> = m
        .devices
        .iter()
        .filter(|p| p.disk == disk.name && p.name != disk.name)
        .map(|p| {
            let what = if p.fstype.is_empty() { "no filesystem".to_string() } else { output::text(&p.fstype) };
            let label = if p.label.is_empty() { String::new() } else { format!(" \"{}\"", output::text(&p.label)) };
            format!("{} {what}{label} {}", p.name, output::bytes(p.size))
        })
        .collect();
    match (parts.is_empty(), disk.fstype.is_empty()) {
        (true, true) if disk.unreadable.is_none() => "empty".into(),
        (true, true) => "not readable".into(),
        (true, false) => format!("a filesystem on the whole disk ({})", output::text(&disk.fstype)),
        (false, _) => parts.join(", "),
    }
}

/// The media's passphrase, asked (until it opens the media's key) once and
/// handed to each command in a file only root can read, in memory (`/run`),
/// removed at the end.
struct Passphrase {
    file: Option<PathBuf>,
    /// Asked here (not given with --passphrase-file): the file is ours.
    asked: bool,
}

impl Passphrase {
    fn new(media: &Media) -> anyhow::Result<Passphrase> {
        let keyed = media.slots.iter().map(|(_, v)| v).find(|v| v.marker.encryption.as_ref().is_some_and(|e| e.passphrase));
        if let Some(f) = keys::passphrase_file() {
            // Given in a file: checked now, not after the questions.
            if let Some(view) = keyed {
                keys::passphrase_opens(view, &keys::passphrase_from(Some(f.clone()), "the backup media", false)?)
                    .with_context(|| format!("the passphrase in {} does not open media {}: nothing was written", f.display(), output::text(&media.id)))?;
            }
            return Ok(Passphrase { file: Some(f), asked: false });
        }
        let Some(view) = keyed else {
            if media.encrypted() {
                println!("The media is encrypted for age keys only: give yours with --identity FILE.");
            }
            return Ok(Passphrase { file: None, asked: false });
        };
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            refuse!(
                Refusal::Key,
                "media {} is encrypted and there is no terminal to ask its passphrase on: give --passphrase-file FILE (or $CROSSBACK_PASSPHRASE_FILE); nothing was written",
                output::text(&media.id)
            );
        }
        let secret = loop {
            let p = age::secrecy::SecretString::from(rpassword::prompt_password("The backup media is encrypted. Its passphrase: ")?);
            match keys::passphrase_opens(view, &p) {
                Ok(()) => break p,
                Err(e) if crate::error::kind_of(&e) == Some(Refusal::Key) => println!("That passphrase does not open this media; again."),
                Err(e) => return Err(e),
            }
        };
        let dir = Path::new("/run/crossback");
        std::fs::create_dir_all(dir)?;
        let f = dir.join(format!("recover-{}", std::process::id()));
        let mut out = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&f)?;
        out.write_all(age::secrecy::ExposeSecret::expose_secret(&secret).as_bytes())?;
        Ok(Passphrase { file: Some(f), asked: true })
    }
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        if let (Some(f), true) = (&self.file, self.asked) {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The command line as the user would type it (the passphrase file and
/// the identity the guide hands on are not shown).
fn shown(global: &[String], args: &[String]) -> String {
    global.iter().chain(args).map(|a| output::text(a)).collect::<Vec<_>>().join(" ")
}

/// Prints the command, runs this crossback with it on the same terminal,
/// and fails with its exit status.
fn crossback(global: &[String], pass: &Passphrase, args: &[String]) -> anyhow::Result<()> {
    println!();
    println!("$ crossback {}", shown(global, args));
    let mut t = Tool::new(std::env::current_exe()?);
    t.args(global);
    if let Some(f) = &pass.file {
        t.arg("--passphrase-file").arg(f);
    }
    if let Some(i) = keys::identity_file() {
        t.arg("--identity").arg(i);
    }
    let status = t.args(args).command().status()?;
    if !status.success() {
        anyhow::bail!("`crossback {}` ended with {status}", shown(global, args));
    }
    Ok(())
}

/// One answer, trimmed; `!` opens a shell and asks again. The input ending
/// is a refusal: nothing was written.
fn answer(question: &str) -> anyhow::Result<String> {
    loop {
        print!("{question} > ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            return Err(refuse(Refusal::NotConfirmed, "the input ended before an answer: nothing was written"));
        }
        match line.trim() {
            "!" => {
                println!("A shell: crossback's commands are in it; 'exit' comes back to the question.");
                let shell = std::env::var_os("SHELL").unwrap_or_else(|| "sh".into());
                let _ = Tool::new(shell).command().status();
            }
            a => return Ok(a.to_string()),
        }
    }
}

/// A number from 1 to `n`, as an index; `default` (an index) on Enter.
fn pick(question: &str, n: usize, default: Option<usize>) -> anyhow::Result<usize> {
    loop {
        let q = match default {
            Some(d) => format!("{question} [{}]", d + 1),
            None => question.to_string(),
        };
        let a = answer(&q)?;
        if a.is_empty() {
            if let Some(d) = default {
                return Ok(d);
            }
        }
        match a.parse::<usize>() {
            Ok(k) if (1..=n).contains(&k) => return Ok(k - 1),
            _ => println!("answer with a number from 1 to {n}"),
        }
    }
}
