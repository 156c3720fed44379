//! `crossback archive verify`: every byte of an archive against its hashes, or against a tree.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use crossback_archive::{Archive, Progress};

use super::list;
use crate::cli::VerifyArgs;
use crate::output::{self, Bar};
use crate::Outcome;

pub fn verify(a: VerifyArgs) -> anyhow::Result<Outcome> {
    let archive = Archive::open_with(&a.archive, crate::keys::identity_keys()?.as_ref()).map_err(crate::error::from_archive).context("reading the archive")?;
    let progress = Arc::new(Progress::default());
    let total = archive.summary().map(|s| s.data_bytes).unwrap_or(0);
    let start = Instant::now();
    let bar = Bar::start(Arc::clone(&progress), total, "verifying");
    let report = crossback_archive::verify::verify(&archive, a.against.as_deref(), Some(progress));
    bar.finish();
    let report = report.context("verifying the archive")?;
    list("damaged", &report.damaged);
    list("differences with the tree", &report.differences);
    eprintln!(
        "checked {} entries, {} of data, {}: {}",
        report.entries,
        output::bytes(report.bytes),
        output::elapsed(start),
        if report.damaged.is_empty() { "no damage" } else { "DAMAGED" }
    );
    Ok(if !report.damaged.is_empty() {
        Outcome::Damaged
    } else if !report.differences.is_empty() {
        Outcome::Differs
    } else {
        Outcome::Ok
    })
}
