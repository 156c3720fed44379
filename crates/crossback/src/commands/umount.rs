//! `crossback umount SYSTEM`: what `crossback mount` mounted, unmounted and closed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::mount::{holders, record};
use crate::cli::UmountArgs;
use crate::machine;
use crate::Outcome;

pub fn umount(_config: &Path, a: UmountArgs) -> anyhow::Result<Outcome> {
    machine::require_root("umount")?;
    let rec = record(&a.system);
    let text = match std::fs::read_to_string(&rec) {
        Ok(t) => t,
        Err(_) => bail!("{} is not mounted by crossback (no {})", a.system, rec.display()),
    };
    let mut points: Vec<PathBuf> = text.lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect();
    let mut busy = Vec::new();
    while let Some(p) = points.pop() {
        match rustix::mount::unmount(&p, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => println!("unmounted {}", p.display()),
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => println!("{} was not mounted any more", p.display()),
            Err(e) => {
                busy.push((p.clone(), e));
                // Its parents cannot go while it stays: keep them too.
                points.push(p);
                break;
            }
        }
    }
    if busy.is_empty() {
        let _ = std::fs::remove_file(&rec);
        // The containers and volume groups `mount` opened for it.
        for said in crossback_host::layers::mapping::close_kept(&a.system)? {
            println!("{said}");
        }
        return Ok(Outcome::Ok);
    }
    let text: String = points.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(&rec, text).with_context(|| format!("writing {}", rec.display()))?;
    for (p, e) in &busy {
        eprintln!("{} is busy ({e}):", p.display());
        let h = holders(p);
        if h.is_empty() {
            eprintln!("  no process found holding it (a mount inside it, or a kernel user such as swap or a loop device)");
        }
        for (pid, comm, what) in h {
            eprintln!("  pid {pid} ({comm}): {what}");
        }
    }
    bail!("{} is still mounted at {} place(s); stop the processes above and run `crossback umount {}` again", a.system, points.len(), a.system)
}
