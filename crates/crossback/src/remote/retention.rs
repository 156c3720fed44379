//! Retention on a remote (`keep`, `min_age_days`): after a push, the
//! generations past the newest `keep` go, oldest first.
//!
//! Only what this machine sealed counts and goes: a generation whose seal
//! does not hold is left where it is (and is no reason to delete a real
//! one). The newest complete generation is never deleted (`keep` is at
//! least 1). Nothing goes before its objects were pushed `min_age_days`
//! ago: providers charge a minimum storage duration (S3 Infrequent Access
//! 30 days, Wasabi 90), and the time is the one `objects.toml` recorded
//! at the upload, under the seal. A generation's manifest is deleted
//! first, so a deletion that stops leaves an incomplete generation, which
//! the next push's retention finishes.
//!
//! With S3 Object Lock (`lock_days`) a generation is not deleted before its
//! lock ends, and then every version of its objects goes: on a versioned
//! bucket a plain deletion only hides an object.

use std::collections::BTreeSet;

use super::{Objects, SealKey, Store};
use crate::layout::{self, GenName};
use crate::output;

/// What retention keeps, from the remote's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub keep: u32,
    pub min_age_days: u32,
    /// S3 Object Lock: each object is locked this many days after it went up.
    pub lock_days: u32,
}

/// A generation on the store, as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Complete, and sealed by this machine's key; `pushed` is when its
    /// newest object went up (seconds since 1970), if recorded.
    Sealed { pushed: Option<i64> },
    /// A manifest is there, but the seal does not hold (or it does not read).
    NotOurs(String),
    /// No manifest: a push did not finish it.
    Incomplete { pushed: Option<i64> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Among the newest `keep`.
    Kept,
    /// Kept for a reason worth saying.
    Stays(String),
    Delete(String),
}

/// What becomes of each generation (newest first). `local` holds the
/// numbers a push still sends (see [`worth_pushing`]): an incomplete
/// generation among them is the next push's to finish.
pub fn plan(found: &[(u64, Found)], policy: Policy, local: &BTreeSet<u64>, now: i64) -> Vec<(u64, Fate)> {
    let mut found: Vec<&(u64, Found)> = found.iter().collect();
    found.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    let newest_sealed = found.iter().find(|(_, f)| matches!(f, Found::Sealed { .. })).map(|(seq, _)| *seq);
    let min_age = i64::from(policy.min_age_days) * 86_400;
    let locked = i64::from(policy.lock_days) * 86_400;
    // Deleted only once old enough and no longer locked; `None` when it is.
    let too_young = |pushed: Option<i64>| match pushed {
        Some(t) if t + locked > now && locked >= min_age => {
            Some(format!("pushed {} ago, locked until at least {} (lock_days = {})", output::age(now - t), output::utc(t + locked), policy.lock_days))
        }
        Some(t) if t + min_age > now => {
            Some(format!("pushed {} ago, kept until {} (min_age_days = {})", output::age(now - t), output::utc(t + min_age), policy.min_age_days))
        }
        _ => None,
    };
    let mut sealed_kept = 0;
    let mut out = Vec::new();
    for (seq, f) in found {
        let fate = match f {
            Found::NotOurs(why) => Fate::Stays(format!("not sealed by this machine's key ({why}); left as it is, see `crossback remote verify`")),
            Found::Sealed { .. } if sealed_kept < policy.keep.max(1) => {
                sealed_kept += 1;
                Fate::Kept
            }
            Found::Sealed { pushed: None } => {
                Fate::Stays("its upload time is not recorded (pushed by an older crossback); delete it in the store if you want it gone".into())
            }
            Found::Sealed { pushed } => match too_young(*pushed) {
                Some(why) => Fate::Stays(why),
                None => Fate::Delete(format!("older than the newest {}", policy.keep)),
            },
            Found::Incomplete { .. } if newest_sealed.is_none_or(|n| *seq > n) => Fate::Stays("incomplete: a push is carrying it".into()),
            Found::Incomplete { .. } if local.contains(seq) => Fate::Stays("incomplete: the next push finishes it".into()),
            Found::Incomplete { pushed } => match too_young(*pushed) {
                Some(why) => Fate::Stays(why),
                None => Fate::Delete("incomplete, and the backup disk no longer has it to finish".into()),
            },
        };
        out.push((*seq, fate));
    }
    out
}

/// The generations a push should send, of those the backup disk has
/// sealed (`local`): the newest `keep` of them and of the store's own
/// sealed ones. An older one would be deleted again right after.
pub fn worth_pushing(found: &[(u64, Found)], policy: Policy, local: &BTreeSet<u64>) -> BTreeSet<u64> {
    let sealed = found.iter().filter(|(_, f)| matches!(f, Found::Sealed { .. })).map(|(seq, _)| *seq);
    let all: BTreeSet<u64> = sealed.chain(local.iter().copied()).collect();
    all.into_iter().rev().take(policy.keep.max(1) as usize).filter(|seq| local.contains(seq)).collect()
}

/// Every generation on the store, as retention sees it: sealed by this
/// machine's key (read and checked), not, or incomplete.
pub fn survey(store: &Store, seal: &SealKey) -> anyhow::Result<Vec<(u64, Found)>> {
    let mut found = Vec::new();
    for (seq, complete) in super::generations(store)? {
        let f = if complete {
            match super::read_generation(store, seq, Some(seal)) {
                Ok((_, objects)) => Found::Sealed { pushed: pushed(&objects) },
                Err(e) => Found::NotOurs(format!("{e:#}")),
            }
        } else if !store.holds_any(&GenName::dir(seq))? {
            // What a deletion leaves of a directory on some stores: nothing.
            continue;
        } else {
            let list = store.get(&format!("{}/{}", GenName::dir(seq), super::OBJECTS), layout::MANIFEST_CAP)?;
            let objects: Option<Objects> = list.and_then(|b| String::from_utf8(b).ok()).and_then(|t| toml::from_str(&t).ok());
            Found::Incomplete { pushed: objects.as_ref().and_then(pushed) }
        };
        found.push((seq, f));
    }
    Ok(found)
}

/// Deletes what [`plan`] says of the store's generations and says what
/// it did. Returns how many went.
pub fn prune(store: &Store, seal: &SealKey, policy: Policy, local: &BTreeSet<u64>) -> anyhow::Result<usize> {
    let found = survey(store, seal)?;
    let now = output::now_secs();
    let mut deleted = 0;
    for (seq, fate) in plan(&found, policy, local, now) {
        match fate {
            Fate::Kept => {}
            Fate::Stays(why) => println!("remote {}: generation {seq} stays: {why}", store.name),
            Fate::Delete(why) => {
                let dir = GenName::dir(seq);
                if policy.lock_days > 0 {
                    // Every version, the manifest's first; the store refuses while a lock holds.
                    if !store.delete_versions(&dir, layout::MANIFEST)? {
                        println!("remote {}: generation {seq} stays: the store refuses to delete it yet (a version of it is still locked)", store.name);
                        continue;
                    }
                } else {
                    // The manifest first: from then on it is an incomplete generation.
                    store.delete(&format!("{dir}/{}", layout::MANIFEST))?;
                    store.delete_all(&dir)?;
                }
                println!("remote {}: generation {seq} deleted: {why}", store.name);
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// When a generation's newest object went up, as `objects.toml` records it.
fn pushed(objects: &Objects) -> Option<i64> {
    objects.list.iter().map(|o| o.pushed.as_deref().and_then(output::parse_time)).collect::<Option<Vec<i64>>>()?.into_iter().max()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn sealed(days_ago: i64) -> Found {
        Found::Sealed { pushed: Some(NOW - days_ago * DAY) }
    }

    fn deleted(plan: &[(u64, Fate)]) -> Vec<u64> {
        plan.iter().filter(|(_, f)| matches!(f, Fate::Delete(_))).map(|(s, _)| *s).collect()
    }

    #[test]
    fn the_newest_are_kept_and_the_older_go_once_old_enough() {
        let found = [(1, sealed(40)), (2, sealed(31)), (3, sealed(20)), (4, sealed(10)), (5, sealed(1))];
        let p = |keep, min_age_days| plan(&found, Policy { keep, min_age_days, lock_days: 0 }, &BTreeSet::new(), NOW);
        assert_eq!(deleted(&p(2, 0)), [3, 2, 1]);
        assert_eq!(deleted(&p(2, 30)), [2, 1], "3 was pushed 20 days ago");
        assert_eq!(deleted(&p(2, 90)), Vec::<u64>::new());
        assert_eq!(deleted(&p(10, 0)), Vec::<u64>::new());
    }

    #[test]
    fn the_newest_complete_generation_is_never_deleted() {
        // keep = 0 is refused by the configuration; here it still keeps one.
        let found = [(1, sealed(40)), (2, sealed(40)), (3, Found::Incomplete { pushed: Some(NOW - 40 * DAY) })];
        let p = plan(&found, Policy { keep: 0, min_age_days: 0, lock_days: 0 }, &BTreeSet::new(), NOW);
        assert_eq!(deleted(&p), [1]);
        assert!(matches!(p[0], (3, Fate::Stays(_))), "the incomplete one is newer: a push is carrying it");
    }

    #[test]
    fn what_is_not_sealed_by_this_machine_neither_counts_nor_goes() {
        // A planted "generation 9" must not push the real ones out.
        let found = [(1, sealed(40)), (2, sealed(40)), (9, Found::NotOurs("seal differs".into()))];
        let p = plan(&found, Policy { keep: 2, min_age_days: 0, lock_days: 0 }, &BTreeSet::new(), NOW);
        assert_eq!(deleted(&p), Vec::<u64>::new());
        assert!(matches!(&p[0], (9, Fate::Stays(why)) if why.contains("not sealed")));
    }

    #[test]
    fn an_incomplete_generation_goes_only_when_no_push_can_finish_it() {
        let found = [(1, Found::Incomplete { pushed: None }), (2, Found::Incomplete { pushed: Some(NOW - DAY) }), (3, sealed(5)), (4, sealed(1))];
        let local: BTreeSet<u64> = [2, 3, 4].into();
        assert_eq!(deleted(&plan(&found, Policy { keep: 2, min_age_days: 0, lock_days: 0 }, &local, NOW)), [1]);
        let local: BTreeSet<u64> = [3, 4].into();
        assert_eq!(deleted(&plan(&found, Policy { keep: 2, min_age_days: 0, lock_days: 0 }, &local, NOW)), [2, 1]);
        assert_eq!(deleted(&plan(&found, Policy { keep: 2, min_age_days: 3, lock_days: 0 }, &local, NOW)), [1], "2's objects went up a day ago");
    }

    #[test]
    fn a_push_sends_only_what_retention_would_keep() {
        let p = Policy { keep: 2, min_age_days: 0, lock_days: 0 };
        let local: BTreeSet<u64> = [2, 3].into();
        // The store has 1 and 4 (a newer backup disk's generation pushed before a rotation).
        let found = [(1, sealed(9)), (4, sealed(1))];
        assert_eq!(worth_pushing(&found, p, &local), [3].into());
        // A planted generation does not push the real ones out.
        let found = [(8, Found::NotOurs("seal".into())), (9, Found::NotOurs("seal".into()))];
        assert_eq!(worth_pushing(&found, p, &local), [2, 3].into());
        assert_eq!(worth_pushing(&[], Policy { keep: 1, min_age_days: 0, lock_days: 0 }, &local), [3].into());
    }

    #[test]
    fn nothing_goes_before_its_lock_ends() {
        let found = [(1, sealed(40)), (2, sealed(20)), (3, sealed(10)), (4, sealed(1))];
        let p = |min_age_days, lock_days| plan(&found, Policy { keep: 1, min_age_days, lock_days }, &BTreeSet::new(), NOW);
        assert_eq!(deleted(&p(0, 30)), [1]);
        assert_eq!(deleted(&p(30, 15)), [1], "the longer of the two holds");
        assert_eq!(deleted(&p(0, 15)), [2, 1]);
        assert!(matches!(&p(0, 30)[1], (3, Fate::Stays(why)) if why.contains("locked until")), "{:?}", p(0, 30));
    }

    #[test]
    fn a_generation_without_upload_times_is_kept() {
        let found = [(1, Found::Sealed { pushed: None }), (2, sealed(1))];
        assert_eq!(deleted(&plan(&found, Policy { keep: 1, min_age_days: 0, lock_days: 0 }, &BTreeSet::new(), NOW)), Vec::<u64>::new());
    }
}
