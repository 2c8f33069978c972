//! Votes for blocks that were never proposed, half of the time.

use rand::Rng;
use tally_ledger::{ConsensusMessage, Hash, SignedVote};

use super::Liar;

pub(super) fn vote_for_nothing(liar: &mut Liar<'_>, message: ConsensusMessage) -> ConsensusMessage {
    match message {
        ConsensusMessage::Vote(v) if liar.coin(0.5) => {
            let mut vote = v.vote;
            vote.block_hash = Some(Hash(liar.rng.gen()));
            ConsensusMessage::Vote(SignedVote::sign(vote, liar.key, &liar.chain.genesis_hash))
        }
        other => other,
    }
}
