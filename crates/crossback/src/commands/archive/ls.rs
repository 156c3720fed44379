//! `crossback archive ls`: what an archive holds, from its index.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use anyhow::{bail, Context};
use crossback_archive::Archive;

use super::write_entry;
use crate::cli::LsArgs;
use crate::output;
use crate::Outcome;

pub fn ls(a: LsArgs) -> anyhow::Result<Outcome> {
    let archive = Archive::open_with(&a.archive, crate::keys::identity_keys()?.as_ref()).map_err(crate::error::from_archive).context("reading the archive")?;
    let prefix = match &a.path {
        Some(p) => crossback_archive::entry::normalize_path(p.as_os_str().as_bytes()).with_context(|| format!("{} has a '..' component", p.display()))?,
        None => Vec::new(),
    };
    let Some(index) = archive.index()? else {
        bail!(
            "{} has no crossback index ({}); use `crossback archive extract` or `tar -t` to read it",
            a.archive.display(),
            archive.trailer_problem.clone().unwrap_or_else(|| "not made by crossback".into())
        );
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut found = false;
    for e in index {
        let e = e?;
        if !crossback_archive::archive::under(&e.path, &prefix) {
            continue;
        }
        found = true;
        write_entry(&mut out, &e, "", a.json)?;
    }
    out.flush()?;
    if !found {
        bail!("{} is not in {}", output::path(&prefix), a.archive.display());
    }
    Ok(Outcome::Ok)
}
