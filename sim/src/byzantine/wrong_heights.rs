//! Signed votes for heights far ahead and behind, now and then.

use rand::Rng;
use tally_ledger::{ConsensusMessage, Hash, SignedVote, Vote, VoteKind};

use super::Liar;

pub(super) fn votes(liar: &mut Liar<'_>, height: u64) -> Vec<ConsensusMessage> {
    if !liar.coin(0.3) {
        return Vec::new();
    }
    [height.saturating_add(1_000), height.saturating_sub(1)]
        .into_iter()
        .map(|h| {
            let vote = Vote {
                chain_id: liar.chain.genesis.chain_id.clone(),
                height: h,
                round: 0,
                kind: VoteKind::Prevote,
                block_hash: Some(Hash(liar.rng.gen())),
            };
            ConsensusMessage::Vote(SignedVote::sign(vote, liar.key, &liar.chain.genesis_hash))
        })
        .collect()
}
