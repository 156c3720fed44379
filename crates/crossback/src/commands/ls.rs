//! `crossback ls SYSTEM [PATH]`: what a system's backup holds, listed
//! like a directory.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

use crate::cli::LsSystemArgs;
use crate::error::{refuse, Refusal};
use crate::machine;
use crate::output;
use crate::{refuse, Outcome};

use super::restore::{open, Opened};

pub fn run(path: &Path, a: LsSystemArgs) -> anyhow::Result<Outcome> {
    machine::require_root("ls")?;
    let Opened { mut mounts, backup: b, .. } = open(path, &a.system, a.generation, false, &a.from)?;
    let want = a.path.clone().unwrap_or_else(|| "/".into());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut found = false;
    if let Some(set) = &b.record.legacy {
        let prefix = crossback_archive::entry::normalize_path(want.as_bytes()).context("a '..' in the path")?;
        crate::duplicity::walk(b.slot_root()?, set, |meta, _| {
            if crossback_archive::archive::under(&meta.path, &prefix) {
                found = true;
                let e = crossback_archive::IndexEntry::of(meta);
                crate::commands::archive::write_entry(&mut out, &e, "", a.json)?;
            }
            Ok(())
        })?;
        out.flush()?;
        drop(out);
        let _ = mounts.unmount();
        if !found {
            refuse!(Refusal::NotInBackup, "{} is not in {}'s backup in generation {}", output::text(&want), a.system, b.generation.seq);
        }
        return Ok(Outcome::Ok);
    }
    // The archive holding the path, and those of mount points below it.
    let (_, rest) = b.locate(&want).with_context(|| refuse(Refusal::NotInBackup, format!("no archive of {} holds {}", a.system, output::text(&want))))?;
    let norm = format!("/{}", want.trim_matches('/'));
    for ar in &b.record.archives {
        let mp = ar.mountpoint.trim_end_matches('/');
        let prefix_in: Vec<u8> = if b.locate(&want).is_some_and(|(x, _)| x.file == ar.file) {
            rest.as_bytes().to_vec()
        } else if norm == "/" || mp.starts_with(&format!("{}/", norm.trim_end_matches('/'))) {
            Vec::new()
        } else {
            continue;
        };
        let archive = b.open_archive(ar)?;
        let Some(index) = archive.index()? else { bail!("{} has no index: it is damaged; run `crossback verify`", ar.file) };
        for e in index {
            let e = e?;
            if crossback_archive::archive::under(&e.path, &prefix_in) {
                found = true;
                crate::commands::archive::write_entry(&mut out, &e, mp, a.json)?;
            }
        }
    }
    out.flush()?;
    drop(out);
    let _ = mounts.unmount();
    if let Some(said) = b.fetched() {
        eprintln!("{said}");
    }
    if !found {
        refuse!(Refusal::NotInBackup, "{} is not in {}'s backup in generation {}", output::text(&want), a.system, b.generation.seq);
    }
    Ok(Outcome::Ok)
}
