//! The validator for Tally's own messages.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use tally_ledger::{decode_strict, decode_tx_batch, ChainContext, ConsensusMessage, Hash};

use crate::{Topic, Validator, Verdict};

/// Accepts consensus messages signed by a validator of the genesis and
/// messages of transactions that each carry a valid signature for this
/// chain; rejects the rest.
/// With the node's committed tip ([`LedgerValidator::with_tip`]), consensus
/// messages far from it are ignored (neither delivered nor forwarded, no
/// blame): a replayed old vote is authentic but useless, and one for a
/// height far ahead cannot be used before sync catches up.
///
/// It remembers the ids of the last [`REMEMBERED_TXS`] transactions it
/// accepted: a message whose transactions were all seen before is ignored
/// (a late copy of a batch, after gossip's duplicate window, must not be
/// checked and forwarded again), and in a message with new ones only those
/// are checked. An id hashes the whole signed encoding, so a remembered id
/// stands for exactly the bytes that were checked.
pub struct LedgerValidator {
    chain: ChainContext,
    max_consensus_bytes: usize,
    tip: Option<Box<dyn Fn() -> u64 + Send>>,
    seen: Mutex<SeenTxs>,
}

/// Transaction ids remembered as checked (about 100 bytes each).
pub const REMEMBERED_TXS: usize = 100_000;

/// A bounded set of ids, the oldest forgotten first.
#[derive(Default)]
struct SeenTxs {
    ids: HashSet<Hash>,
    order: VecDeque<Hash>,
}

impl SeenTxs {
    fn insert(&mut self, id: Hash) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > REMEMBERED_TXS {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }
}

/// Whether `message` is for `chain` and signed by a validator of it (a
/// proposal: by a validator, over a block that matches its header).
pub fn is_authentic(chain: &ChainContext, message: &ConsensusMessage) -> bool {
    let validators = &chain.validators;
    match message {
        ConsensusMessage::Vote(v) => {
            v.vote.chain_id == chain.genesis.chain_id && v.verify(validators, &chain.genesis_hash)
        }
        ConsensusMessage::Proposal(p) => {
            p.core.chain_id == chain.genesis.chain_id
                && validators.power_of(&p.proposer).is_some()
                && p.verify(&chain.genesis_hash)
        }
    }
}

/// How far past the tip a consensus message may be and still be useful:
/// the height being decided, and the next (peers that committed first).
const HEIGHTS_AHEAD: u64 = 2;

impl LedgerValidator {
    /// A validator for `chain`; consensus messages up to `max_consensus_bytes`.
    pub fn new(chain: ChainContext, max_consensus_bytes: usize) -> Self {
        LedgerValidator {
            chain,
            max_consensus_bytes,
            tip: None,
            seen: Mutex::new(SeenTxs::default()),
        }
    }

    /// Also ignores consensus messages for heights below the committed
    /// height `tip()` or more than two past it.
    pub fn with_tip(mut self, tip: impl Fn() -> u64 + Send + 'static) -> Self {
        self.tip = Some(Box::new(tip));
        self
    }

    fn consensus(&self, data: &[u8]) -> Verdict {
        let Ok(message) = decode_strict::<ConsensusMessage>(data, self.max_consensus_bytes) else {
            return Verdict::Reject;
        };
        if let Some(tip) = &self.tip {
            let tip = tip();
            let height = message.height();
            if height < tip || height > tip.saturating_add(HEIGHTS_AHEAD) {
                return Verdict::Ignore;
            }
        }
        if is_authentic(&self.chain, &message) {
            Verdict::Accept
        } else {
            Verdict::Reject
        }
    }

    /// A gossip message of transactions is accepted only if every one of
    /// them is valid on its own (fields and signature) and none appears
    /// twice: an honest node relays nothing else, so one bad transaction
    /// condemns the message. The cheap field checks come first; every
    /// signature found valid is remembered even when the message is
    /// rejected, so resending the good part of a rejected message with
    /// another bad one costs the receiver nothing again.
    fn transaction(&self, data: &[u8]) -> Verdict {
        let genesis = &self.chain.genesis;
        let Ok(txs) = decode_tx_batch(data) else {
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
        let fresh: Vec<bool> = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            ids.iter().map(|id| !seen.ids.contains(id)).collect()
        };
        if !fresh.contains(&true) {
            return Verdict::Ignore;
        }
        let mut verified = Vec::new();
        let mut valid = true;
        for ((tx, id), fresh) in txs.iter().zip(&ids).zip(&fresh) {
            if !fresh {
                continue;
            }
            if tx.verify_signature(&self.chain.genesis_hash).is_err() {
                valid = false;
                break;
            }
            verified.push(*id);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for id in verified {
            seen.insert(id);
        }
        if valid {
            Verdict::Accept
        } else {
            Verdict::Reject
        }
    }
}

impl Validator for LedgerValidator {
    fn validate(&self, topic: Topic, data: &[u8]) -> Verdict {
        match topic {
            Topic::Consensus => self.consensus(data),
            Topic::Transactions => self.transaction(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tally_ledger::devnet::devnet_genesis;
    use tally_ledger::{
        devnet_key, Block, ChainId, Hash, Header, ProposalCore, SignedProposal, SignedVote,
        Transaction, Vote, VoteKind, BLOCK_VERSION,
    };

    fn setup() -> (LedgerValidator, ChainContext) {
        let chain = ChainContext::new(devnet_genesis(4, "tally-devnet").unwrap());
        (LedgerValidator::new(chain.clone(), 1 << 20), chain)
    }

    fn transfer(chain: &ChainContext, chain_id: &str, fee: u64) -> Vec<u8> {
        let alice = devnet_key("alice");
        Transaction {
            chain_id: ChainId::new(chain_id).unwrap(),
            from: alice.address(),
            to: devnet_key("bob").address(),
            amount: 1,
            fee,
            nonce: 0,
        }
        .sign(&alice, &chain.genesis_hash)
        .encode()
    }

    /// A gossip message holding these transactions.
    fn batch(txs: &[Vec<u8>]) -> Vec<u8> {
        tally_ledger::encode_tx_batch(txs)
    }

    #[test]
    fn transactions_must_be_valid_for_this_chain() {
        let (v, chain) = setup();
        let good = transfer(&chain, "tally-devnet", 1);
        let other_chain = transfer(&chain, "other", 1);
        let no_fee = transfer(&chain, "tally-devnet", 0);
        let accept = |txs: &[Vec<u8>]| v.validate(Topic::Transactions, &batch(txs));
        let other_good = transfer(&chain, "tally-devnet", 2);
        assert_eq!(accept(&[other_chain]), Verdict::Reject);
        assert_eq!(
            accept(&[good.clone(), no_fee.clone()]),
            Verdict::Reject,
            "one bad one"
        );
        assert_eq!(
            accept(&[good.clone(), good.clone()]),
            Verdict::Reject,
            "twice"
        );
        assert_eq!(accept(std::slice::from_ref(&good)), Verdict::Accept);
        // Seen before: a late copy is neither checked nor forwarded again.
        assert_eq!(accept(std::slice::from_ref(&good)), Verdict::Ignore);
        // A seen one beside new ones: the new ones decide.
        assert_eq!(accept(&[good.clone(), no_fee]), Verdict::Reject);
        assert_eq!(accept(&[good.clone(), other_good]), Verdict::Accept);
        // A bad signature after a good new one: rejected, but the good one
        // is remembered as checked, so a resend costs nothing.
        let third = transfer(&chain, "tally-devnet", 3);
        let alice = devnet_key("alice");
        let forged = Transaction {
            chain_id: chain.genesis.chain_id.clone(),
            from: alice.address(),
            to: devnet_key("bob").address(),
            amount: 1,
            fee: 4,
            nonce: 0,
        }
        .sign(&alice, &Hash::digest(b"another genesis"))
        .encode();
        assert_eq!(accept(&[third.clone(), forged.clone()]), Verdict::Reject);
        assert_eq!(accept(&[third]), Verdict::Ignore);
        assert_eq!(
            accept(&[forged]),
            Verdict::Reject,
            "a bad one is not remembered"
        );
        assert_eq!(accept(&[]), Verdict::Reject, "empty");
        // A bare transaction is not a gossip message.
        assert_eq!(v.validate(Topic::Transactions, &good), Verdict::Reject);
        assert_eq!(v.validate(Topic::Transactions, &[1, 2, 3]), Verdict::Reject);
    }

    #[test]
    fn consensus_messages_must_come_from_validators() {
        let (v, chain) = setup();
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
        assert_eq!(
            v.validate(Topic::Consensus, &by("validator-3")),
            Verdict::Accept
        );
        assert_eq!(
            v.validate(Topic::Consensus, &by("mallory")),
            Verdict::Reject
        );
        let mut trailing = by("validator-3");
        trailing.push(0);
        assert_eq!(
            v.validate(Topic::Consensus, &trailing),
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
            },
            txs: vec![],
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
        assert_eq!(
            v.validate(Topic::Consensus, &propose("validator-1")),
            Verdict::Accept
        );
        assert_eq!(
            v.validate(Topic::Consensus, &propose("mallory")),
            Verdict::Reject
        );
    }

    #[test]
    fn consensus_messages_far_from_the_tip_are_ignored() {
        let (v, chain) = setup();
        let tip = Arc::new(AtomicU64::new(5));
        let reader = tip.clone();
        let v = v.with_tip(move || reader.load(Ordering::Relaxed));
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
        for (height, verdict) in [
            (4, Verdict::Ignore),
            (5, Verdict::Accept),
            (6, Verdict::Accept),
            (7, Verdict::Accept),
            (8, Verdict::Ignore),
        ] {
            assert_eq!(
                v.validate(Topic::Consensus, &at(height)),
                verdict,
                "height {height}"
            );
        }
        tip.store(7, Ordering::Relaxed);
        assert_eq!(v.validate(Topic::Consensus, &at(8)), Verdict::Accept);
    }
}
