//! The systemd units and the udev rule crossback installs: their text
//! only (what `backup --at-reboot` and `schedule` write, and tests read).
//!
//! Paths in them are quoted for systemd's command lines: the executable
//! and the configuration are the ones the installing command ran with.

use std::path::Path;

use crate::error::Refusal;

pub const AT_REBOOT_SERVICE: &str = "crossback-at-reboot.service";
pub const PLUGGED_SERVICE: &str = "crossback-plugged.service";
pub const REMIND_SERVICE: &str = "crossback-remind.service";
pub const REMIND_TIMER: &str = "crossback-remind.timer";
pub const UDEV_RULE: &str = "90-crossback.rules";
pub const PUSH_SERVICE: &str = "crossback-push.service";
pub const PUSH_TIMER: &str = "crossback-push.timer";

/// A path as one word of a systemd command line, quoted by systemd's
/// rules: in double quotes, `\\` and `"` escaped, `%` (a specifier) as
/// `%%`, `$` (a variable) as `$$`. What no quoting carries — a newline,
/// which would end the line and start a directive, other control bytes,
/// bytes that are not UTF-8 — is refused.
fn word(p: &Path) -> anyhow::Result<String> {
    let Some(s) = p.to_str() else {
        crate::refuse!(Refusal::Usage, "{} is not UTF-8: it cannot be written into a systemd unit; move it", p.to_string_lossy());
    };
    if s.chars().any(char::is_control) {
        crate::refuse!(Refusal::Usage, "{:?} holds a control character (a newline?): it cannot be written into a systemd unit; move it", s);
    }
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c)) {
        return Ok(s.to_string());
    }
    Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%").replace('$', "$$")))
}

fn command(exe: &Path, config: &Path, args: &str) -> anyhow::Result<String> {
    Ok(format!("{} --config {} {args}", word(exe)?, word(config)?))
}

/// The service of the boot into systemd's offline-update mode: it runs
/// before anything else writes (no default dependencies, right after
/// sysinit), and whatever happens it ends in a reboot: `at-reboot-job
/// finish` makes the filesystems writable again, records the result and
/// reboots; if even that fails, systemd reboots (FailureAction).
pub fn at_reboot_service(exe: &Path, config: &Path, state: &Path, time_limit_min: u64) -> anyhow::Result<String> {
    // The state directory goes into a shell pattern: only plain characters.
    let state = state
        .to_str()
        .filter(|s| s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)))
        .ok_or_else(|| crate::error::refuse(Refusal::Usage, format!("the state directory {} is not a plain path", state.display())))?;
    Ok(format!(
        "# Written by `crossback backup --at-reboot`; removed by `crossback backup --at-reboot --cancel`.
[Unit]
Description=crossback: offline backup of this system before it starts
Documentation=man:crossback(1) man:systemd.offline-updates(7)
DefaultDependencies=no
Requires=sysinit.target
After=sysinit.target system-update-pre.target systemd-journald.socket
Before=system-update.target shutdown.target
Conflicts=shutdown.target
FailureAction=reboot

[Service]
Type=oneshot
# The link that made this boot one of offline updates goes first, whatever
# follows (even a crossback that no longer starts): the next boot is normal.
ExecStartPre=-/bin/sh -c 'case $$(readlink /system-update) in {state}) rm -f /system-update; sync -f /;; esac'
ExecStart={run}
ExecStopPost={finish}
TimeoutStartSec={time_limit_min}min
TimeoutStopSec=10min
StandardOutput=journal+console
StandardError=journal+console
",
        run = command(exe, config, "at-reboot-job run")?,
        finish = command(exe, config, "at-reboot-job finish")?,
    ))
}

/// `crossback backup` when the backup disk appears. After the backup at
/// reboot (which reboots; in that boot this one never runs) and after
/// multi-user (a disk attached at boot: the backup starts once the
/// system is up).
pub fn plugged_service(exe: &Path, config: &Path, unencrypted: bool) -> anyhow::Result<String> {
    Ok(format!(
        "# Written by `crossback schedule`; removed by `crossback schedule --off`.
[Unit]
Description=crossback: back up the offline systems onto the backup disk just plugged in
Documentation=man:crossback(1)
After=crossback-at-reboot.service multi-user.target

[Service]
Type=oneshot
ExecStart={cmd}
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
TimeoutStartSec=infinity
",
        cmd = command(exe, config, if unencrypted { "backup --plugged --unencrypted" } else { "backup --plugged" })?,
    ))
}

/// Starts [`PLUGGED_SERVICE`] when a filesystem of the media appears: both
/// slots' UUIDs (a backup needs both; the service runs once for the two).
pub fn udev_rule(slot_a: &str, slot_b: &str) -> String {
    let mut out = String::from("# Written by `crossback schedule`; removed by `crossback schedule --off`.\n");
    for uuid in [slot_a, slot_b] {
        out.push_str(&format!(
            "ACTION==\"add\", SUBSYSTEM==\"block\", ENV{{ID_FS_UUID}}==\"{uuid}\", TAG+=\"systemd\", ENV{{SYSTEMD_WANTS}}+=\"{PLUGGED_SERVICE}\"\n"
        ));
    }
    out
}

/// The daily check that the newest complete backup is not too old.
pub fn remind_service(exe: &Path, config: &Path, days: u32) -> anyhow::Result<String> {
    Ok(format!(
        "# Written by `crossback schedule`; removed by `crossback schedule --off`.
[Unit]
Description=crossback: remind when the newest complete backup is older than {days} days
Documentation=man:crossback(1)

[Service]
Type=oneshot
ExecStart={cmd}
",
        cmd = command(exe, config, &format!("schedule --check --remind-after {days}"))?,
    ))
}

pub fn remind_timer() -> String {
    "# Written by `crossback schedule`; removed by `crossback schedule --off`.
[Unit]
Description=crossback: daily check of the age of the newest complete backup

[Timer]
OnBootSec=15min
OnUnitActiveSec=1d
Persistent=true

[Install]
WantedBy=timers.target
"
    .to_string()
}

/// `crossback push` once the network is up, when the backup disk is
/// attached (else it does nothing): what a push after a backup could not
/// send goes later, in the background.
pub fn push_service(exe: &Path, config: &Path) -> anyhow::Result<String> {
    Ok(format!(
        "# Written by `crossback schedule --push`; removed by `crossback schedule --off`.
[Unit]
Description=crossback: copy the sealed generations to the remotes
Documentation=man:crossback(1)
Wants=network-online.target
After=network-online.target crossback-plugged.service

[Service]
Type=oneshot
ExecStart={cmd}
Nice=10
IOSchedulingClass=idle
TimeoutStartSec=infinity
",
        cmd = command(exe, config, "push --if-attached")?,
    ))
}

pub fn push_timer() -> String {
    "# Written by `crossback schedule --push`; removed by `crossback schedule --off`.
[Unit]
Description=crossback: hourly push of the sealed generations to the remotes

[Timer]
OnBootSec=20min
OnUnitInactiveSec=1h
RandomizedDelaySec=10min

[Install]
WantedBy=timers.target
"
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of<'a>(unit: &'a str, section: &str) -> Vec<&'a str> {
        unit.split("\n[").find(|s| s.starts_with(section)).map(|s| s.lines().skip(1).filter(|l| !l.is_empty()).collect()).unwrap_or_default()
    }

    #[test]
    fn the_push_waits_for_the_network_and_does_nothing_without_the_disk() {
        let u = push_service(Path::new("/usr/bin/crossback"), Path::new("/etc/crossback/config.toml")).unwrap();
        let unit = lines_of(&u, "Unit]");
        assert!(unit.contains(&"Wants=network-online.target") && unit.contains(&"After=network-online.target crossback-plugged.service"), "{u}");
        assert!(lines_of(&u, "Service]").contains(&"ExecStart=/usr/bin/crossback --config /etc/crossback/config.toml push --if-attached"), "{u}");
        assert!(lines_of(&push_timer(), "Timer]").contains(&"OnUnitInactiveSec=1h"));
    }

    #[test]
    fn at_reboot_runs_before_everything_and_always_reboots() {
        let u = at_reboot_service(Path::new("/usr/bin/crossback"), Path::new("/etc/crossback/config.toml"), Path::new("/var/lib/crossback"), 90).unwrap();
        let unit = lines_of(&u, "Unit]");
        assert!(unit.contains(&"DefaultDependencies=no"));
        assert!(unit.contains(&"After=sysinit.target system-update-pre.target systemd-journald.socket"));
        assert!(unit.contains(&"Before=system-update.target shutdown.target"));
        assert!(unit.contains(&"FailureAction=reboot"));
        let svc = lines_of(&u, "Service]");
        assert!(svc.contains(&"ExecStart=/usr/bin/crossback --config /etc/crossback/config.toml at-reboot-job run"));
        assert!(svc.contains(&"ExecStopPost=/usr/bin/crossback --config /etc/crossback/config.toml at-reboot-job finish"));
        assert!(svc.contains(&"TimeoutStartSec=90min"));
        assert!(
            svc.contains(&"ExecStartPre=-/bin/sh -c 'case $$(readlink /system-update) in /var/lib/crossback) rm -f /system-update; sync -f /;; esac'"),
            "{svc:?}"
        );
        assert!(svc.contains(&"StandardOutput=journal+console"));
        // No [Install]: only the link `backup --at-reboot` makes pulls it in.
        assert!(!u.contains("[Install]"));
    }

    #[test]
    fn paths_with_spaces_and_percent_are_one_word() {
        let u = plugged_service(Path::new("/opt/my tools/crossback"), Path::new("/etc/cb/100%.toml"), false).unwrap();
        assert!(u.contains("ExecStart=\"/opt/my tools/crossback\" --config \"/etc/cb/100%%.toml\" backup --plugged\n"), "{u}");
        let u = plugged_service(Path::new("/usr/bin/crossback"), Path::new("/etc/cb.toml"), true).unwrap();
        assert!(u.contains("ExecStart=/usr/bin/crossback --config /etc/cb.toml backup --plugged --unencrypted\n"), "{u}");
    }

    /// A path that would add a directive (a newline) or be expanded by
    /// systemd (`${VAR}`, `$VAR`, `%h`) stays one literal word, or is refused.
    #[test]
    fn nothing_in_a_path_becomes_a_directive_or_an_expansion() {
        for bad in ["/etc/x\nExecStartPre=/bin/touch /INJECTED.toml", "/etc/a\rb.toml", "/etc/tab\there.toml", "/etc/nul\u{1}.toml"] {
            let e = plugged_service(Path::new("/usr/bin/crossback"), Path::new(bad), false).unwrap_err();
            assert_eq!(crate::error::kind_of(&e), Some(Refusal::Usage), "{bad:?}");
            let e = remind_service(Path::new(bad), Path::new("/etc/c.toml"), 7).unwrap_err();
            assert_eq!(crate::error::kind_of(&e), Some(Refusal::Usage), "{bad:?}");
        }
        let non_utf8 = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"/etc/\xff.toml");
        assert!(plugged_service(Path::new("/usr/bin/crossback"), Path::new(non_utf8), false).is_err());
        let u = plugged_service(Path::new("/usr/bin/crossback"), Path::new("/etc/${HOME}/$USER/%h/a\"b\\c.toml"), false).unwrap();
        let exec = u.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
        assert_eq!(exec, "ExecStart=/usr/bin/crossback --config \"/etc/$${HOME}/$$USER/%%h/a\\\"b\\\\c.toml\" backup --plugged");
        assert_eq!(u.lines().filter(|l| l.starts_with("Exec")).count(), 1);
        assert!(at_reboot_service(Path::new("/usr/bin/crossback"), Path::new("/etc/c.toml"), Path::new("/var/lib/x) rm -rf /;; *"), 9).is_err());
    }

    #[test]
    fn udev_rule_matches_both_slots_and_wants_one_service() {
        let r = udev_rule("0a1b2c3d-0000-4000-8000-000000000001", "ABCD-1234");
        let rules: Vec<&str> = r.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(rules.len(), 2);
        assert!(rules[0].contains("ENV{ID_FS_UUID}==\"0a1b2c3d-0000-4000-8000-000000000001\""));
        assert!(rules[1].contains("ENV{ID_FS_UUID}==\"ABCD-1234\""));
        for l in rules {
            assert!(l.starts_with("ACTION==\"add\", SUBSYSTEM==\"block\""));
            assert!(l.ends_with("TAG+=\"systemd\", ENV{SYSTEMD_WANTS}+=\"crossback-plugged.service\""));
        }
    }

    #[test]
    fn reminder_timer_and_service() {
        let s = remind_service(Path::new("/usr/bin/crossback"), Path::new("/etc/crossback/config.toml"), 14).unwrap();
        assert!(lines_of(&s, "Service]").contains(&"ExecStart=/usr/bin/crossback --config /etc/crossback/config.toml schedule --check --remind-after 14"));
        let t = remind_timer();
        assert!(lines_of(&t, "Timer]").contains(&"Persistent=true"));
        assert!(lines_of(&t, "Install]").contains(&"WantedBy=timers.target"));
    }
}
