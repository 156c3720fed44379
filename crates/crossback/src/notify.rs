//! Telling the people at the machine: a desktop notification to every
//! logged-in user's session (org.freedesktop.Notifications on their
//! session bus, called with systemd's `busctl` as that user). Everything
//! said this way is also printed: a service's output is its journal.

use std::os::unix::fs::MetadataExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    Normal,
    Critical,
}

/// The `busctl` arguments of one notification (after `busctl --user`).
pub fn busctl_args(summary: &str, body: &str, urgency: Urgency) -> Vec<String> {
    let u = match urgency {
        Urgency::Normal => "1",
        Urgency::Critical => "2",
    };
    [
        "--timeout=5s",
        "call",
        "org.freedesktop.Notifications",
        "/org/freedesktop/Notifications",
        "org.freedesktop.Notifications",
        "Notify",
        "susssasa{sv}i",
        "crossback",
        "0",
        "drive-harddisk",
        summary,
        body,
        "0",
        "1",
        "urgency",
        "y",
        u,
        "-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The logged-in users' session buses: `/run/user/UID/bus`, with the
/// owner's uid and gid.
fn sessions() -> Vec<(u32, u32, std::path::PathBuf)> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir("/run/user") else { return out };
    for d in dirs.flatten() {
        let bus = d.path().join("bus");
        if let Ok(md) = std::fs::symlink_metadata(&bus) {
            if md.uid() != 0 {
                out.push((md.uid(), md.gid(), d.path()));
            }
        }
    }
    out
}

/// Prints the message and shows it on every logged-in desktop (best
/// effort: no desktop, no notification daemon, no `busctl` — the printed
/// line, in the journal, is the record).
pub fn users(summary: &str, body: &str, urgency: Urgency) {
    println!("{summary}: {body}");
    for (uid, gid, runtime) in sessions() {
        let shown = crossback_host::tool::Tool::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg("env")
            .arg("-i")
            .arg(format!("XDG_RUNTIME_DIR={}", runtime.display()))
            .arg(format!("DBUS_SESSION_BUS_ADDRESS=unix:path={}/bus", runtime.display()))
            .args(["busctl", "--user"])
            .args(busctl_args(summary, body, urgency))
            .run()
            .is_ok();
        println!("  {} to user {uid}'s desktop", if shown { "shown" } else { "could not be shown" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_call_has_the_signature_and_its_arguments() {
        let a = busctl_args("Backup started", "B → slot A", Urgency::Critical);
        assert_eq!(a[6], "susssasa{sv}i");
        // app, replaces id, icon, summary, body, actions (none), hints (urgency), timeout.
        assert_eq!(&a[7..], ["crossback", "0", "drive-harddisk", "Backup started", "B → slot A", "0", "1", "urgency", "y", "2", "-1"]);
    }
}
