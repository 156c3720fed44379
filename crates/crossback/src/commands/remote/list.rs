//! `crossback remote list`: the remotes configured, and what each holds when asked.

use super::configured;
use crate::cli::RemoteListArgs;
use crate::config::{self, Config};
use crate::remote::Store;
use crate::Outcome;

pub fn list(path: &std::path::Path, a: RemoteListArgs) -> anyhow::Result<Outcome> {
    let cfg = Config::load(path)?;
    if let Some(name) = &a.machines {
        let store = Store::open(configured(&cfg, name)?, None, None)?;
        for m in store.machines()? {
            if a.json {
                println!("{}", serde_json::json!({ "remote": name, "machine": m }));
            } else {
                println!("{m}");
            }
        }
        return Ok(Outcome::Ok);
    }
    if cfg.remotes.is_empty() && !a.json {
        println!("no remote is configured: `crossback remote add NAME URL` adds one");
    }
    for r in &cfg.remotes {
        if a.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            let creds = r.credentials.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "from the environment".into());
            let endpoint = r.endpoint.as_ref().map(|e| format!(" at {e}")).unwrap_or_default();
            let keep = match r.retention() {
                Some(p) => format!(", keeps the newest {} generations (none deleted before {} days)", p.keep, p.min_age_days),
                None => ", keeps every generation".into(),
            };
            let keep = if r.push == config::PushWhen::AfterBackup { format!("{keep}, pushed after every backup") } else { keep };
            let keep = match r.lock_days {
                Some(d) => format!("{keep}, each object locked for {d} days (S3 Object Lock)"),
                None => keep,
            };
            println!("{}: {}{endpoint}, machine {}, credentials {creds}, encrypted to {}{keep}", r.name, r.url, r.machine, r.key);
        }
    }
    Ok(Outcome::Ok)
}
