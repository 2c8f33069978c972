//! Byzantine validators: each runs the honest host, and what it sends is
//! changed on the way out, one file per behaviour (as commonware's
//! `simplex/mocks/`). A liar has a random subset of these (drawn by the
//! seed, [`crate::profile::Lie`]); at most f validators lie.

mod equivocate;
mod garbage;
mod invalid_blocks;
mod unknown_votes;
mod withhold;
mod wrong_heights;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tally_host::sync::SyncResponse;
use tally_ledger::{ChainContext, ConsensusMessage, Keypair};

use crate::profile::Lie;

pub use garbage::garbage;

/// What a liar needs to forge: its key, the chain, and the run's
/// generator.
pub struct Liar<'a> {
    /// The liar's validator key (its signatures verify).
    pub key: &'a Keypair,
    /// The chain.
    pub chain: &'a ChainContext,
    /// The run's generator.
    pub rng: &'a mut ChaCha8Rng,
    /// A funded client key, to sign transfers that make a block invalid.
    pub client: &'a Keypair,
    /// Another client key.
    pub other_client: &'a Keypair,
    /// The message is for the first height of a new validator set: an
    /// equivocator always equivocates there.
    pub at_change: bool,
}

/// Who gets a message: everyone, or these peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// Every peer.
    All,
    /// Only these.
    Some(Vec<usize>),
}

impl Liar<'_> {
    fn coin(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }
}

/// What a liar with `lies` sends instead of its honest `message`, with
/// `peers` its peers.
pub fn outgoing(
    liar: &mut Liar<'_>,
    lies: &[Lie],
    peers: &[usize],
    message: ConsensusMessage,
) -> Vec<(To, ConsensusMessage)> {
    let has = |l: Lie| lies.contains(&l);
    let mut primary = Some(message.clone());
    if has(Lie::UnknownBlockVotes) {
        primary = primary.map(|m| unknown_votes::vote_for_nothing(liar, m));
    }
    if has(Lie::InvalidBlocks) {
        primary = primary.map(|m| invalid_blocks::propose_invalid(liar, m));
    }
    let alternative = match has(Lie::Equivocate) {
        true => equivocate::alternative(liar, &message),
        false => None,
    };
    if has(Lie::Withhold) {
        primary = primary.filter(|_| !withhold::withholds(liar));
    }
    let mut out = match (primary, alternative) {
        (Some(p), Some(a)) => {
            let (left, right) = equivocate::halves(liar, peers);
            vec![(To::Some(left), p), (To::Some(right), a)]
        }
        (Some(p), None) => vec![(To::All, p)],
        (None, Some(a)) => vec![(To::All, a)],
        (None, None) => Vec::new(),
    };
    if has(Lie::WrongHeights) {
        out.extend(
            wrong_heights::votes(liar, message.height())
                .into_iter()
                .map(|m| (To::All, m)),
        );
    }
    out
}

/// What a liar with `lies` answers instead of its honest `answer` to a
/// request.
pub fn answer(liar: &mut Liar<'_>, lies: &[Lie], answer: SyncResponse) -> SyncResponse {
    match lies.contains(&Lie::InvalidBlocks) {
        true => invalid_blocks::forge_answer(liar, answer),
        false => answer,
    }
}
