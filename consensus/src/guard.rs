//! The durable signing record: what this validator last signed, and its
//! lock. The rule: never sign a message for an earlier (height, round, step)
//! than the record's, and at the record's own (height, round, step) only the
//! very same message again.

use borsh::{BorshDeserialize, BorshSerialize};
use tally_ledger::{decode_strict, DecodeError, Hash};

/// The step a signature belongs to, in protocol order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize)]
pub enum SignStep {
    /// A proposal.
    Propose,
    /// A prevote.
    Prevote,
    /// A precommit.
    Precommit,
}

/// The record a validator persists (and fsyncs) before anything it signed
/// leaves the process.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignState {
    /// Height of the last signature.
    pub height: u64,
    /// Round of the last signature.
    pub round: u32,
    /// Step of the last signature.
    pub step: SignStep,
    /// What was signed: the block hash (none for a nil vote).
    pub block_hash: Option<Hash>,
    /// For a proposal, its valid round: part of what was signed.
    pub valid_round: Option<u32>,
    /// The lock at that time (`lockedRound`, `lockedValue`), if any.
    pub locked: Option<(u32, Hash)>,
    /// The valid value (`validRound`, `validValue`), if any.
    pub valid: Option<(u32, Hash)>,
    /// The prevote signed in this height and round, if any (its value;
    /// `Some(None)` is a nil prevote). A validator restarted after its
    /// precommit sends this prevote again too: peers that lost it may need
    /// it to complete the round.
    pub prevote: Option<Option<Hash>>,
    /// This validator's votes in the latest earlier round of this height
    /// it voted in. A validator restarted in a later round sends them
    /// again too: a peer still in that round may wait for exactly these
    /// votes to reach 2f+1 and time the round out (seeds 34 and 20431).
    pub earlier: Option<OwnVotes>,
}

/// A validator's own votes in one round (values; `Some(None)` is a nil
/// vote, `None` no vote of that kind).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct OwnVotes {
    /// The round.
    pub round: u32,
    /// Its prevote, if it signed one.
    pub prevote: Option<Option<Hash>>,
    /// Its precommit, if it signed one.
    pub precommit: Option<Option<Hash>>,
}

impl SignState {
    /// The votes this record shows in its own round.
    pub fn own_round_votes(&self) -> Option<OwnVotes> {
        let precommit = (self.step == SignStep::Precommit).then_some(self.block_hash);
        if self.prevote.is_none() && precommit.is_none() {
            return None;
        }
        Some(OwnVotes {
            round: self.round,
            prevote: self.prevote,
            precommit,
        })
    }
}

/// The signing record as builds before the `earlier` field wrote it: the
/// last precommit of the height instead.
#[derive(BorshDeserialize)]
struct SignStateV2 {
    height: u64,
    round: u32,
    step: SignStep,
    block_hash: Option<Hash>,
    valid_round: Option<u32>,
    locked: Option<(u32, Hash)>,
    valid: Option<(u32, Hash)>,
    prevote: Option<Option<Hash>>,
    precommit: Option<(u32, Option<Hash>)>,
}

/// The signing record as builds before the `precommit` field wrote it.
#[derive(BorshDeserialize)]
struct SignStateV1 {
    height: u64,
    round: u32,
    step: SignStep,
    block_hash: Option<Hash>,
    valid_round: Option<u32>,
    locked: Option<(u32, Hash)>,
    valid: Option<(u32, Hash)>,
    prevote: Option<Option<Hash>>,
}

/// The signing record as builds before the `prevote` field wrote it.
#[derive(BorshDeserialize)]
struct SignStateV0 {
    height: u64,
    round: u32,
    step: SignStep,
    block_hash: Option<Hash>,
    valid_round: Option<u32>,
    locked: Option<(u32, Hash)>,
    valid: Option<(u32, Hash)>,
}

impl SignState {
    /// Decodes a record strictly, also one written by a build before the
    /// `earlier`, `precommit` or `prevote` field (what an older layout
    /// lacks reads as "not recorded", which only means that vote is not
    /// sent again after a restart). The layouts cannot be confused: strict
    /// decoding refuses missing and trailing bytes.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<SignState, DecodeError> {
        let current = decode_strict::<SignState>(bytes, max_bytes);
        let error = match current {
            Ok(record) => return Ok(record),
            Err(e) => e,
        };
        if let Ok(v2) = decode_strict::<SignStateV2>(bytes, max_bytes) {
            let earlier =
                v2.precommit
                    .filter(|(round, _)| *round < v2.round)
                    .map(|(round, value)| OwnVotes {
                        round,
                        prevote: None,
                        precommit: Some(value),
                    });
            return Ok(SignState {
                height: v2.height,
                round: v2.round,
                step: v2.step,
                block_hash: v2.block_hash,
                valid_round: v2.valid_round,
                locked: v2.locked,
                valid: v2.valid,
                prevote: v2.prevote,
                earlier,
            });
        }
        if let Ok(v1) = decode_strict::<SignStateV1>(bytes, max_bytes) {
            return Ok(SignState {
                height: v1.height,
                round: v1.round,
                step: v1.step,
                block_hash: v1.block_hash,
                valid_round: v1.valid_round,
                locked: v1.locked,
                valid: v1.valid,
                prevote: v1.prevote,
                earlier: None,
            });
        }
        let v0 = decode_strict::<SignStateV0>(bytes, max_bytes).map_err(|_| error)?;
        Ok(SignState {
            height: v0.height,
            round: v0.round,
            step: v0.step,
            block_hash: v0.block_hash,
            valid_round: v0.valid_round,
            locked: v0.locked,
            valid: v0.valid,
            prevote: None,
            earlier: None,
        })
    }
}

/// The valid value (`validValue`, `validRound`) with the 2f+1 prevotes that
/// made it valid: what a restarted validator needs to propose it again and
/// to prevote it (line 28) without the messages it lost. Persisted whenever
/// the valid value changes, before the precommit that follows.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ValidBlockRecord {
    /// The block.
    pub block: tally_ledger::Block,
    /// The round of its polka.
    pub round: u32,
    /// The 2f+1 signed prevotes for it in that round.
    pub polka: Vec<tally_ledger::SignedVote>,
}

/// A signature the record forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to sign {step:?} at height {height} round {round}: already signed at height {signed_height} round {signed_round} step {signed_step:?}")]
pub struct SignConflict {
    /// Requested height.
    pub height: u64,
    /// Requested round.
    pub round: u32,
    /// Requested step.
    pub step: SignStep,
    /// Recorded height.
    pub signed_height: u64,
    /// Recorded round.
    pub signed_round: u32,
    /// Recorded step.
    pub signed_step: SignStep,
}

impl SignState {
    /// Whether signing `(height, round, step, block_hash, valid_round)` is
    /// allowed after this record: strictly later, or exactly the recorded
    /// message again.
    pub fn check(
        &self,
        height: u64,
        round: u32,
        step: SignStep,
        block_hash: Option<Hash>,
        valid_round: Option<u32>,
    ) -> Result<(), SignConflict> {
        let requested = (height, round, step);
        let recorded = (self.height, self.round, self.step);
        let same_message = block_hash == self.block_hash && valid_round == self.valid_round;
        if requested > recorded || (requested == recorded && same_message) {
            return Ok(());
        }
        Err(SignConflict {
            height,
            round,
            step,
            signed_height: self.height,
            signed_round: self.round,
            signed_step: self.step,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SignState {
        SignState {
            height: 5,
            round: 2,
            step: SignStep::Prevote,
            block_hash: Some(Hash::digest(b"b")),
            valid_round: None,
            locked: None,
            valid: None,
            prevote: None,
            earlier: None,
        }
    }

    #[test]
    fn a_record_written_before_the_earlier_prevote_or_precommit_field_still_loads() {
        let r = record();
        let mut v2 = borsh::to_vec(&r).unwrap_or_default();
        v2.pop(); // the newest trailing field (None)
        v2.extend([1, 1, 0, 0, 0, 0]); // precommit: Some((1, None))
        let with_precommit = SignState {
            earlier: Some(OwnVotes {
                round: 1,
                prevote: None,
                precommit: Some(None),
            }),
            ..r.clone()
        };
        assert_eq!(SignState::decode(&v2, 4096), Ok(with_precommit));
        let mut v1 = borsh::to_vec(&r).unwrap_or_default();
        v1.pop();
        assert_eq!(SignState::decode(&v1, 4096), Ok(r.clone()));
        let mut old = v1.clone();
        old.pop(); // the prevote field (None)
        assert_eq!(SignState::decode(&old, 4096), Ok(r.clone()));
        let new = borsh::to_vec(&r).unwrap_or_default();
        assert_eq!(SignState::decode(&new, 4096), Ok(r));
        assert!(SignState::decode(&old[..old.len() - 1], 4096).is_err());
    }

    #[test]
    fn earlier_votes_round_trip() {
        let r = SignState {
            earlier: Some(OwnVotes {
                round: 1,
                prevote: Some(Some(Hash::digest(b"a"))),
                precommit: Some(None),
            }),
            ..record()
        };
        let bytes = borsh::to_vec(&r).unwrap_or_default();
        assert_eq!(SignState::decode(&bytes, 4096), Ok(r));
    }

    #[test]
    fn later_messages_are_allowed() {
        let r = record();
        assert!(r.check(5, 2, SignStep::Precommit, None, None).is_ok());
        assert!(r
            .check(5, 3, SignStep::Propose, Some(Hash::ZERO), None)
            .is_ok());
        assert!(r
            .check(6, 0, SignStep::Propose, Some(Hash::ZERO), None)
            .is_ok());
    }

    #[test]
    fn the_same_message_may_be_signed_again() {
        assert!(record()
            .check(5, 2, SignStep::Prevote, Some(Hash::digest(b"b")), None)
            .is_ok());
    }

    #[test]
    fn conflicting_or_earlier_messages_are_refused() {
        let r = record();
        assert!(r
            .check(5, 2, SignStep::Prevote, Some(Hash::digest(b"other")), None)
            .is_err());
        assert!(r.check(5, 2, SignStep::Prevote, None, None).is_err());
        assert!(r
            .check(5, 2, SignStep::Propose, Some(Hash::digest(b"b")), None)
            .is_err());
        assert!(r.check(5, 1, SignStep::Precommit, None, None).is_err());
        assert!(r.check(4, 9, SignStep::Precommit, None, None).is_err());
    }
}
