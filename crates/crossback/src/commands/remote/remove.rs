//! `crossback remote remove`: a remote out of the configuration (the store is left as it is).

use crate::config;
use crate::remote;
use crate::Outcome;

pub fn remove(path: &std::path::Path, name: &str) -> anyhow::Result<Outcome> {
    config::remove_remote(path, name)?;
    crate::local::remove(&remote::SealKey::path(path, name))?;
    println!("removed remote {name} from the configuration; what it holds is still there (delete it in the store if you want it gone)");
    Ok(Outcome::Ok)
}
