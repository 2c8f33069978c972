//! Equivocation: a second, different proposal or vote for the same slot,
//! the two sent to different halves of the cluster — half of the time, and
//! always at the first height of a new validator set.

use rand::Rng;
use tally_ledger::{ConsensusMessage, Hash, ProposalCore, SignedProposal, SignedVote};

use super::Liar;

/// The other message of the pair, half of the time.
pub(super) fn alternative(
    liar: &mut Liar<'_>,
    message: &ConsensusMessage,
) -> Option<ConsensusMessage> {
    if !liar.at_change && !liar.coin(0.5) {
        return None;
    }
    let gh = liar.chain.genesis_hash;
    Some(match message {
        ConsensusMessage::Vote(v) => {
            let mut vote = v.vote.clone();
            vote.block_hash = match vote.block_hash {
                Some(_) if liar.coin(0.5) => None,
                _ => Some(Hash(liar.rng.gen())),
            };
            ConsensusMessage::Vote(SignedVote::sign(vote, liar.key, &gh))
        }
        ConsensusMessage::Proposal(p) => {
            let mut block = p.block.clone();
            block.header.timestamp_ms += 1;
            let core = ProposalCore {
                block_hash: block.hash(),
                ..p.core.clone()
            };
            ConsensusMessage::Proposal(Box::new(SignedProposal::sign(core, block, liar.key, &gh)))
        }
        ConsensusMessage::Evidence(_) => return None,
    })
}

/// The peers split at random into two halves.
pub(super) fn halves(liar: &mut Liar<'_>, peers: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut peers = peers.to_vec();
    for k in (1..peers.len()).rev() {
        let j = liar.rng.gen_range(0..=k);
        peers.swap(k, j);
    }
    let right = peers.split_off(peers.len() / 2);
    (peers, right)
}
