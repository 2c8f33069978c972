//! The network intake: where gossip's bytes enter the node. Each message is
//! decoded once, strictly and within its size bound, and its signatures are
//! checked here, once: what passes comes out typed — a consensus message as
//! [`Verified`], which nothing else can make — and nothing downstream
//! checks again. The node calls this from its gossip filter (before a
//! message is forwarded to other peers); the simulator from its network.

use std::collections::HashSet;
use std::sync::Arc;

use tally_ledger::{
    decode_strict, decode_tx_batch, ChainContext, ConsensusMessage, Hash, SignedTransaction,
    Verified,
};

use crate::chain::ValidatorView;
use crate::checked::CheckedTxs;

/// The judgement of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Valid: deliver this, and forward the message.
    Accept(T),
    /// Invalid: drop it and count it against the peer that sent it.
    Reject,
    /// Not useful (old, far ahead, a late copy): drop it without blame.
    Ignore,
    /// Valid, and every part of it was checked before on some path (a late
    /// copy, or transactions first seen from a client or in a block): hand
    /// it on without checking it again, but do not forward it.
    Known(T),
}

/// How far past the committed tip a consensus message may be and still be
/// useful: the height being decided, and the next (peers that committed
/// first).
pub const HEIGHTS_AHEAD: u64 = 2;

/// Checks consensus messages from gossip.
pub struct ConsensusIntake {
    chain: ChainContext,
    validators: Arc<ValidatorView>,
    max_bytes: usize,
}

impl ConsensusIntake {
    /// Intake for `chain`, whose validator sets `validators` follows, of
    /// messages up to `max_bytes`.
    pub fn new(chain: ChainContext, validators: Arc<ValidatorView>, max_bytes: usize) -> Self {
        ConsensusIntake {
            chain,
            validators,
            max_bytes,
        }
    }

    /// Judges `bytes` for a node whose committed tip is at height `tip`: a
    /// message for a height below it or more than [`HEIGHTS_AHEAD`] above
    /// is ignored (authentic but useless, or not usable before sync
    /// catches up); anything that does not decode, or is not signed by a
    /// member of the validator set of its height, is rejected.
    pub fn check(&self, bytes: &[u8], tip: u64) -> Verdict<Verified<ConsensusMessage>> {
        let Ok(message) = decode_strict::<ConsensusMessage>(bytes, self.max_bytes) else {
            return Verdict::Reject;
        };
        let height = message.height();
        if height < tip || height > tip.saturating_add(HEIGHTS_AHEAD) {
            return Verdict::Ignore;
        }
        // The view moves with the commits; a height it does not cover is
        // one the tip has just left or not reached.
        let state = self.validators.get();
        let Some(set) = state.set_at(height) else {
            return Verdict::Ignore;
        };
        match Verified::<ConsensusMessage>::check(message, &self.chain.signers_with(set)) {
            Ok(verified) => Verdict::Accept(verified),
            Err(_) => Verdict::Reject,
        }
    }
}

/// Checks gossip messages of transactions against the node's memory of
/// checked signatures ([`CheckedTxs`], shared with RPC admission and block
/// validation): a message whose transactions were all checked before is
/// [`Verdict::Known`] — offered to the mempool without a check (the node
/// may have checked them without keeping them: a proposal that did not
/// commit, a client's that did not fit) but not forwarded, since a late
/// copy of a batch after gossip's duplicate window must not be forwarded
/// again — and in a message with new ones only those are checked, in
/// batches.
pub struct TransactionIntake {
    chain: ChainContext,
    checked: Arc<CheckedTxs>,
}

impl TransactionIntake {
    /// Intake for `chain`, remembering in `checked`.
    pub fn new(chain: ChainContext, checked: Arc<CheckedTxs>) -> Self {
        TransactionIntake { chain, checked }
    }

    /// A message of transactions is accepted only if every one of them is
    /// valid on its own (fields and signature) and none appears twice: an
    /// honest node relays nothing else, so one bad transaction condemns the
    /// message. The cheap field checks come first; every signature found
    /// valid is remembered even when the message is rejected, so resending
    /// the good part of a rejected message with another bad one costs the
    /// receiver nothing again. The transactions are delivered with their
    /// signatures checked ([`crate::chain::Signature::Checked`]).
    pub fn check(&self, bytes: &[u8]) -> Verdict<Vec<SignedTransaction>> {
        let genesis = &self.chain.genesis;
        let Ok(txs) = decode_tx_batch(bytes) else {
            return Verdict::Reject;
        };
        let ids: Vec<Hash> = txs.iter().map(|tx| tx.id()).collect();
        if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
            return Verdict::Reject;
        }
        let fields_ok = txs.iter().all(|tx| {
            tx.check_fields(&genesis.chain_id, genesis.params.min_fee)
                .is_ok()
        });
        if !fields_ok {
            return Verdict::Reject;
        }
        if self.checked.known(&ids).iter().all(|known| *known) {
            return Verdict::Known(txs);
        }
        let refs: Vec<&SignedTransaction> = txs.iter().collect();
        let verdicts = self.checked.verify(&refs, &ids, &self.chain.genesis_hash);
        match verdicts.iter().all(|ok| *ok) {
            true => Verdict::Accept(txs),
            false => Verdict::Reject,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tally_ledger::devnet::devnet_genesis;
    use tally_ledger::{
        devnet_key, Block, ChainId, Header, ProposalCore, SignedProposal, SignedVote, Transaction,
        Vote, VoteKind, BLOCK_VERSION,
    };

    fn chain() -> ChainContext {
        ChainContext::new(devnet_genesis(4, "tally-devnet").unwrap())
    }

    fn transfer(chain: &ChainContext, chain_id: &str, fee: u64) -> Vec<u8> {
        let alice = devnet_key("alice");
        Transaction::transfer(
            ChainId::new(chain_id).unwrap(),
            alice.address(),
            devnet_key("bob").address(),
            1,
            fee,
            0,
        )
        .sign(&alice, &chain.genesis_hash)
        .encode()
    }

    fn accepted<T>(verdict: Verdict<T>) -> bool {
        matches!(verdict, Verdict::Accept(_))
    }

    #[test]
    fn transactions_must_be_valid_for_this_chain() {
        let chain = chain();
        let checked = Arc::new(CheckedTxs::default());
        let intake = TransactionIntake::new(chain.clone(), checked.clone());
        let check = |txs: &[Vec<u8>]| intake.check(&tally_ledger::encode_tx_batch(txs));
        let good = transfer(&chain, "tally-devnet", 1);
        let other_chain = transfer(&chain, "other", 1);
        let no_fee = transfer(&chain, "tally-devnet", 0);
        let other_good = transfer(&chain, "tally-devnet", 2);
        assert_eq!(check(&[other_chain]), Verdict::Reject);
        assert_eq!(
            check(&[good.clone(), no_fee.clone()]),
            Verdict::Reject,
            "one bad one"
        );
        assert_eq!(
            check(&[good.clone(), good.clone()]),
            Verdict::Reject,
            "twice"
        );
        assert!(accepted(check(std::slice::from_ref(&good))));
        // Seen before: a late copy is handed on unchecked, not forwarded.
        assert!(matches!(
            check(std::slice::from_ref(&good)),
            Verdict::Known(_)
        ));
        // A seen one beside new ones: the new ones decide.
        assert_eq!(check(&[good.clone(), no_fee]), Verdict::Reject);
        assert!(accepted(check(&[good.clone(), other_good])));
        // A bad signature after a good new one: rejected, but the good one
        // is remembered as checked, so a resend costs nothing.
        let third = transfer(&chain, "tally-devnet", 3);
        let alice = devnet_key("alice");
        let forged = Transaction::transfer(
            chain.genesis.chain_id.clone(),
            alice.address(),
            devnet_key("bob").address(),
            1,
            4,
            0,
        )
        .sign(&alice, &Hash::digest(b"another genesis"))
        .encode();
        assert_eq!(check(&[third.clone(), forged.clone()]), Verdict::Reject);
        assert!(matches!(check(&[third]), Verdict::Known(_)));
        assert_eq!(
            check(&[forged]),
            Verdict::Reject,
            "a bad one is not remembered"
        );
        assert_eq!(check(&[]), Verdict::Reject, "empty");
        // Checked on another path first (a client, a block): its gossip
        // copy is a late copy too.
        let fifth = transfer(&chain, "tally-devnet", 5);
        checked.remember([&SignedTransaction::decode(&fifth).unwrap().id()]);
        assert!(matches!(check(&[fifth]), Verdict::Known(_)));
        // A bare transaction is not a gossip message.
        assert_eq!(intake.check(&good), Verdict::Reject);
        assert_eq!(intake.check(&[1, 2, 3]), Verdict::Reject);
    }

    #[test]
    fn consensus_messages_must_come_from_validators() {
        let chain = chain();
        let intake = ConsensusIntake::new(
            chain.clone(),
            crate::ValidatorView::genesis(&chain),
            1 << 20,
        );
        let vote = Vote {
            chain_id: chain.genesis.chain_id.clone(),
            height: 1,
            round: 0,
            kind: VoteKind::Precommit,
            block_hash: None,
        };
        let by = |name: &str| {
            let signed = SignedVote::sign(vote.clone(), &devnet_key(name), &chain.genesis_hash);
            borsh::to_vec(&ConsensusMessage::Vote(signed)).unwrap()
        };
        assert!(accepted(intake.check(&by("validator-3"), 0)));
        assert_eq!(intake.check(&by("mallory"), 0), Verdict::Reject);
        let mut trailing = by("validator-3");
        trailing.push(0);
        assert_eq!(
            intake.check(&trailing, 0),
            Verdict::Reject,
            "strict decoding"
        );

        let block = Block {
            header: Header {
                version: BLOCK_VERSION,
                chain_id: chain.genesis.chain_id.clone(),
                height: 1,
                parent_hash: chain.genesis_hash,
                timestamp_ms: 0,
                proposer: devnet_key("validator-1").address(),
                tx_root: tally_ledger::tx_root(&[]),
                tx_count: 0,
                state_root: Hash::ZERO,
                validators_hash: Hash::ZERO,
                next_validators_hash: Hash::ZERO,
                last_commit_hash: tally_ledger::last_commit_hash(&None),
                evidence_hash: tally_ledger::evidence_hash(&[]),
            },
            txs: vec![],
            last_commit: None,
            evidence: vec![],
        };
        let core = ProposalCore {
            chain_id: chain.genesis.chain_id.clone(),
            height: 1,
            round: 0,
            valid_round: None,
            block_hash: block.hash(),
        };
        let propose = |name: &str| {
            let p = SignedProposal::sign(
                core.clone(),
                block.clone(),
                &devnet_key(name),
                &chain.genesis_hash,
            );
            borsh::to_vec(&ConsensusMessage::Proposal(Box::new(p))).unwrap()
        };
        assert!(accepted(intake.check(&propose("validator-1"), 0)));
        assert_eq!(intake.check(&propose("mallory"), 0), Verdict::Reject);
    }

    #[test]
    fn consensus_messages_far_from_the_tip_are_ignored() {
        let chain = chain();
        // A node whose tip is 5: its validator state knows heights 5 to 7.
        let at_five = tally_ledger::ValidatorState::genesis(chain.validators.clone()).advanced(5);
        let intake = ConsensusIntake::new(
            chain.clone(),
            std::sync::Arc::new(crate::ValidatorView::new(at_five)),
            1 << 20,
        );
        let at = |height: u64| {
            let vote = Vote {
                chain_id: chain.genesis.chain_id.clone(),
                height,
                round: 0,
                kind: VoteKind::Prevote,
                block_hash: None,
            };
            let signed = SignedVote::sign(vote, &devnet_key("validator-0"), &chain.genesis_hash);
            borsh::to_vec(&ConsensusMessage::Vote(signed)).unwrap()
        };
        for (height, accept) in [(4, false), (5, true), (6, true), (7, true), (8, false)] {
            let verdict = intake.check(&at(height), 5);
            assert_eq!(
                accepted(verdict.clone()),
                accept,
                "height {height}: {verdict:?}"
            );
            if !accept {
                assert_eq!(verdict, Verdict::Ignore, "no blame for height {height}");
            }
        }
        // The window moves with the tip (and the validator state with it).
        let at_seven = tally_ledger::ValidatorState::genesis(chain.validators.clone()).advanced(7);
        let moved = ConsensusIntake::new(
            chain.clone(),
            std::sync::Arc::new(crate::ValidatorView::new(at_seven)),
            1 << 20,
        );
        assert!(accepted(moved.check(&at(8), 7)));
    }
}
