//! `crossback remote verify`: the store's copies read back and checked against their seals.

use std::collections::BTreeMap;

use super::{configured, sampled};
use crate::cli::RemoteVerifyArgs;
use crate::config::Config;
use crate::error::Refusal;
use crate::layout::GenName;
use crate::remote::{self, Store};
use crate::{output, refuse, Outcome};

pub fn verify(path: &std::path::Path, a: RemoteVerifyArgs) -> anyhow::Result<Outcome> {
    let cfg = Config::load(path)?;
    let r = configured(&cfg, &a.name)?;
    let store = Store::open(r, a.machine.as_deref(), None)?;
    // This machine's generations are checked against its seal; another's
    // are sealed by a key only their key's holder derives.
    let seal = match a.machine.as_deref() {
        Some(m) if m != r.machine => {
            println!(
                "note: machine {m}'s seals are not checked here (its key makes them): `crossback restore … --remote {} --machine {m}` checks them",
                r.name
            );
            None
        }
        _ => Some(remote::SealKey::load(path, &r.name)?),
    };
    let started = std::time::Instant::now();
    let (mut checked, mut bytes, mut damaged) = (0u64, 0u64, Vec::new());
    let gens = remote::generations(&store)?;
    if gens.is_empty() {
        refuse!(
            Refusal::NoBackup,
            "remote {} holds no generation of machine {} yet: `crossback push {}` copies them",
            r.name,
            a.machine.as_deref().unwrap_or(&r.machine),
            r.name
        );
    }
    for (&seq, &complete) in &gens {
        if !complete {
            println!("generation {seq}: incomplete (a push did not finish; the next one carries on)");
            continue;
        }
        let (g, objects) = match remote::read_generation(&store, seq, seal.as_ref()) {
            Ok(x) => x,
            Err(e) => {
                damaged.push(format!("generation {seq}: {e:#}"));
                continue;
            }
        };
        let listed: BTreeMap<&str, &remote::Object> = objects.list.iter().map(|o| (o.path.as_str(), o)).collect();
        // Every archive the manifest names must have gone up.
        for s in &g.recorded {
            for ar in &s.archives {
                let rel = format!("{}/{}", s.name, ar.file);
                if !listed.contains_key(rel.as_str()) {
                    damaged.push(format!("generation {seq}: {rel} is in the manifest but was never uploaded"));
                }
            }
        }
        let mut gen_damaged = 0;
        for o in &objects.list {
            if a.sample.is_some_and(|p| !sampled(&o.path, seq, p)) {
                continue;
            }
            let rel = format!("{}/{}", GenName::dir(seq), o.path);
            let problem = match store.size(&rel)? {
                None => Some("missing".to_string()),
                Some(n) if n != o.bytes => Some(format!("{n} bytes, {} were uploaded", o.bytes)),
                Some(n) => match store.hash(&rel, n)? {
                    (_, h) if h != o.blake3 => Some("its bytes differ from what was uploaded (BLAKE3)".to_string()),
                    _ => None,
                },
            };
            checked += 1;
            bytes += o.bytes;
            if let Some(p) = problem {
                gen_damaged += 1;
                damaged.push(format!("generation {seq}: {rel}: {p}"));
            }
        }
        println!(
            "generation {seq}: {} objects{}",
            objects.list.len(),
            if gen_damaged == 0 { ", all as uploaded".to_string() } else { format!(", {gen_damaged} damaged") }
        );
    }
    for d in &damaged {
        println!("damaged: {d}");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "remote {}: {checked} objects read back ({}) in {secs:.1} s; {} damaged{}",
        r.name,
        output::bytes(bytes),
        damaged.len(),
        a.sample.map(|p| format!(" (a {p} % sample)")).unwrap_or_default()
    );
    Ok(if damaged.is_empty() { Outcome::Ok } else { Outcome::Damaged })
}
