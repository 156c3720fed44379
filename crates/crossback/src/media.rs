//! The backup media: two slots, each a filesystem with a `crossback/`
//! directory holding its marker and generations, and the rules (R1–R6)
//! that choose where a backup goes and what may be wiped.
//!
//! The decisions are plain functions of what the slots hold ([`plan`]),
//! so the safety rules are tested without disks.

use anyhow::Context;

use crate::error::Refusal;
use crate::layout::{GenEntry, Generation, SlotId, State};

/// Where a backup goes, and what must go first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub target: SlotId,
    /// Generation directories to wipe in the target slot.
    pub wipe: Vec<String>,
    /// The open generation to continue, if any.
    pub resume: Option<u64>,
    /// The number of a new generation, if one starts.
    pub start: Option<u64>,
    /// The newest sealed generation: (slot, seq). Never touched.
    pub protected: Option<(SlotId, u64)>,
}

/// R1–R2: the target is the slot with the open generation, if any;
/// otherwise the slot without the newest sealed generation, wiped first.
/// The newest sealed generation is never in the target. A damaged
/// generation in the target is wiped only with `discard_damaged` (the
/// user's word); otherwise refused. Fails too when the generation numbers
/// are used up.
pub fn plan(slots: [&[GenEntry]; 2], new_generation: bool, discard_damaged: bool) -> anyhow::Result<Plan> {
    let all: Vec<(SlotId, &Generation)> =
        SlotId::BOTH.iter().flat_map(|&id| slots[id.index()].iter().filter_map(move |g| g.valid().map(|g| (id, g)))).collect();
    let protected = all.iter().filter(|(_, g)| g.state == State::Sealed).max_by_key(|(_, g)| g.seq).map(|(i, g)| (*i, g.seq));
    let max_seq = slots.iter().flat_map(|s| s.iter()).map(GenEntry::seq).max().unwrap_or(0);
    let open = all
        .iter()
        .filter(|(i, g)| g.state == State::Open && protected.is_none_or(|(pi, ps)| g.seq > ps && *i != pi))
        .max_by_key(|(_, g)| g.seq)
        .map(|(i, g)| (*i, g.seq));
    let target = match (open, protected) {
        (Some((i, _)), _) => i,
        (None, Some((pi, _))) => pi.other(),
        (None, None) => SlotId::A,
    };
    let resume = open.filter(|_| !new_generation).map(|(_, s)| s);
    let wipe = slots[target.index()]
        .iter()
        .filter(|g| Some(g.seq()) != resume || g.valid().is_none())
        .filter(|g| protected.is_none_or(|(pi, ps)| pi != target || g.seq() != ps || g.valid().is_none()))
        .map(|g| g.dir().to_string())
        .collect();
    let damaged: Vec<String> = slots[target.index()]
        .iter()
        .filter_map(|g| match g {
            GenEntry::Leftover { dir, why: crate::layout::classify::Leftover::Damaged(why), .. } => Some(format!("{dir} ({why})")),
            _ => None,
        })
        .collect();
    if !damaged.is_empty() && !discard_damaged {
        crate::refuse!(
            Refusal::SlotDamaged,
            "slot {target} holds a damaged generation, which this backup would replace: {}. Its archives may still hold files (`crossback verify` says which); copy what you need, then let the next backup remove it with `crossback backup --discard-damaged`. Nothing was written",
            damaged.join("; ")
        );
    }
    let start = match resume {
        Some(_) => None,
        None => Some(max_seq.checked_add(1).filter(|n| *n < u64::MAX / 2).context("the generation numbers are used up on this media: prepare a new media")?),
    };
    Ok(Plan { target, wipe, resume, start, protected })
}

/// A new media id: 128 random bits, hex.
pub fn new_media_id() -> anyhow::Result<String> {
    crate::keys::random_hex(16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::classify::Leftover;
    use crate::layout::GenName;

    fn gen(seq: u64, state: State) -> GenEntry {
        GenEntry::Valid {
            dir: GenName::dir(seq),
            generation: Generation {
                format: 1,
                media_id: "m".into(),
                seq,
                state,
                started: String::new(),
                sealed: None,
                systems: vec![],
                recorded: vec![],
                legacy_files: vec![],
            },
        }
    }

    fn left(seq: u64, why: Leftover) -> GenEntry {
        let dir = if why == Leftover::Wiping { GenName::wiping_dir(seq) } else { GenName::dir(seq) };
        GenEntry::Leftover { dir, seq, why }
    }

    fn plan2(a: &[GenEntry], b: &[GenEntry], new: bool) -> Plan {
        plan([a, b], new, false).unwrap()
    }

    /// A generation whose manifest does not read is damage, not
    /// a leftover: never wiped without the user's word, and its number is
    /// never reused.
    #[test]
    fn a_damaged_generation_is_not_wiped_without_the_users_word() {
        let bad = || left(7, Leftover::Damaged("Bad message".into()));
        let e = plan([&[gen(6, State::Sealed)], &[bad()]], false, false).unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Some(Refusal::SlotDamaged));
        assert!(e.to_string().contains("gen-000007") && e.to_string().contains("--discard-damaged"), "{e}");
        let p = plan([&[gen(6, State::Sealed)], &[bad()]], false, true).unwrap();
        assert_eq!((p.target, p.wipe.clone(), p.start), (B, vec![GenName::dir(7)], Some(8)));
        // In the slot that is not the target it is left alone.
        let p = plan([&[gen(6, State::Sealed), bad()], &[gen(5, State::Sealed)]], false, false).unwrap();
        assert_eq!((p.target, p.wipe.clone(), p.start), (B, vec![GenName::dir(5)], Some(8)));
    }

    use SlotId::{A, B};

    #[test]
    fn first_backup_goes_to_slot_a() {
        let p = plan2(&[], &[], false);
        assert_eq!(p, Plan { target: A, wipe: vec![], resume: None, start: Some(1), protected: None });
    }

    #[test]
    fn r1_never_the_slot_with_the_newest_sealed() {
        let p = plan2(&[gen(1, State::Sealed)], &[], false);
        assert_eq!((p.target, p.start, p.protected), (B, Some(2), Some((A, 1))));
        let p = plan2(&[gen(3, State::Sealed)], &[gen(2, State::Sealed)], false);
        assert_eq!((p.target, p.wipe.clone(), p.start), (B, vec![GenName::dir(2)], Some(4)));
    }

    #[test]
    fn r2_an_open_generation_is_continued_or_restarted() {
        let p = plan2(&[gen(3, State::Sealed)], &[gen(4, State::Open)], false);
        assert_eq!((p.target, p.resume, p.start, p.wipe.clone()), (B, Some(4), None, vec![]));
        let p = plan2(&[gen(3, State::Sealed)], &[gen(4, State::Open)], true);
        assert_eq!((p.target, p.resume, p.start, p.wipe.clone()), (B, None, Some(5), vec![GenName::dir(4)]));
    }

    #[test]
    fn r5_leftovers_are_wiped_and_numbers_never_reused() {
        let p = plan2(&[gen(5, State::Sealed)], &[left(7, Leftover::Wiping), gen(6, State::Sealed)], false);
        // gen 6 is the newest sealed: the target is A, which holds gen 5.
        assert_eq!((p.target, p.wipe.clone(), p.start), (A, vec![GenName::dir(5)], Some(8)));
        let p = plan2(&[gen(8, State::Sealed)], &[left(9, Leftover::NoManifest)], false);
        assert_eq!((p.target, p.wipe.clone(), p.start), (B, vec![GenName::dir(9)], Some(10)));
    }

    #[test]
    fn an_open_generation_in_the_protected_slot_is_left_alone() {
        let p = plan2(&[gen(2, State::Sealed), gen(3, State::Open)], &[gen(1, State::Sealed)], false);
        assert_eq!(p.target, B);
        assert_eq!(p.wipe, vec![GenName::dir(1)]);
    }

    /// Past gen-999999 the next generation is gen-1000000, a
    /// generation like any other: sealed, protected, never taken for a leftover.
    #[test]
    fn sequence_numbers_past_six_digits() {
        let p = plan2(&[gen(999_999, State::Sealed)], &[gen(999_998, State::Sealed)], false);
        assert_eq!((p.target, p.start), (B, Some(1_000_000)));
        let p = plan2(&[gen(999_999, State::Sealed)], &[gen(1_000_000, State::Sealed)], false);
        assert_eq!((p.target, p.wipe.clone(), p.protected), (A, vec![GenName::dir(999_999)], Some((B, 1_000_000))));
        // A wiping leftover with the protected number is not the protected generation.
        let p = plan2(&[gen(10, State::Sealed)], &[left(9, Leftover::Wiping)], false);
        assert_eq!((p.target, p.protected), (B, Some((A, 10))));
        assert!(plan([&[gen(u64::MAX - 1, State::Sealed)], &[]], false, false).is_err());
    }
}
