//! Signature and encoding edge cases, rejected at every door: admission to
//! the mempool (what `tx_submit` goes through), the network intake (what
//! transactions and consensus messages from peers go through before
//! anything else sees them), block validation (`valid(v)` for proposals
//! and synced blocks), and the consensus state machine, which takes only
//! messages the intake verified. Each vector is a small change to something
//! valid, and each door is first shown to accept the valid original, so a
//! rejection can only come from the change.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use std::sync::Arc;

use tally_consensus::{Config, Consensus, Input};
use tally_host::edge::{ConsensusIntake, TransactionIntake, Verdict};
use tally_host::{AdmitError, Chain, NoEvents, ValidatorView};
use tally_ledger::devnet::devnet_genesis;
use tally_ledger::{
    devnet_key, tx_root, Address, ChainContext, ChainId, ConsensusMessage, Hash, Signature,
    SignedTransaction, SignedVote, Transaction, Verified, Vote, VoteKind,
};
use tally_mempool::{Mempool, PoolState};
use tally_store::MemoryStore;

/// The group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The identity point's encoding (y = 1): order 1.
fn identity() -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = 1;
    p
}

/// A point of order 8 (a standard encoding from the small-order list).
fn order_eight() -> [u8; 32] {
    let mut p = [0u8; 32];
    let hex = "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a";
    for (i, byte) in p.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    p
}

/// y = p (2^255 - 19): a non-canonical encoding of y = 0.
fn non_canonical_point() -> [u8; 32] {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
}

/// S + L: the same scalar modulo L, but not the canonical encoding.
fn with_non_canonical_s(signature: &Signature) -> Signature {
    let mut sig = signature.0;
    let mut carry = 0u16;
    for (byte, l) in sig[32..].iter_mut().zip(L) {
        let sum = *byte as u16 + l as u16 + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    Signature(sig)
}

fn chain() -> ChainContext {
    ChainContext::new(devnet_genesis(1, "tally-dev").unwrap())
}

/// A validator's chain: a fresh store and mempool.
fn node(chain: &ChainContext) -> Arc<Chain> {
    Arc::new(Chain::new(
        chain.clone(),
        Arc::new(MemoryStore::new(chain)),
        Mempool::new(tally_mempool::Config::default()),
        100,
        Box::new(NoEvents),
    ))
}

/// What `tx_submit` does with the bytes: decode, check, admit.
fn submit(node: &Chain, bytes: &[u8]) -> Result<PoolState, AdmitError> {
    let tx = SignedTransaction::decode(bytes)?;
    let (_, _, state) = node.admit(tx, tally_host::Signature::Check, NOW_MS)?;
    Ok(state)
}

/// A clock reading after the devnet genesis.
const NOW_MS: u64 = tally_ledger::devnet::DEVNET_GENESIS_TIME_MS + 1_000;

fn transfer(chain: &ChainContext) -> Transaction {
    Transaction::transfer(
        chain.genesis.chain_id.clone(),
        devnet_key("alice").address(),
        devnet_key("bob").address(),
        5,
        1,
        0,
    )
}

/// The ways a valid signed transfer is turned invalid, by name.
fn bad_transactions(chain: &ChainContext) -> Vec<(&'static str, SignedTransaction)> {
    let alice = devnet_key("alice");
    let good = transfer(chain).sign(&alice, &chain.genesis_hash);
    let mut out = Vec::new();

    let mut t = good.clone();
    t.signature = with_non_canonical_s(&good.signature);
    out.push(("non-canonical S", t));

    let mut t = good.clone();
    let mut sig = good.signature.0;
    sig[..32].copy_from_slice(&identity());
    t.signature = Signature(sig);
    out.push(("small-order R (identity)", t));

    let mut t = good.clone();
    let mut sig = good.signature.0;
    sig[..32].copy_from_slice(&order_eight());
    t.signature = Signature(sig);
    out.push(("small-order R (order 8)", t));

    // A sender key of small order with the signature that satisfies the
    // cofactored equation for any message (R = identity, S = 0).
    for (name, key) in [
        ("small-order sender key (identity)", identity()),
        ("small-order sender key (order 8)", order_eight()),
        ("non-canonical sender key encoding", non_canonical_point()),
    ] {
        let mut tx = transfer(chain);
        tx.from = Address(key);
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity());
        out.push((
            name,
            SignedTransaction {
                tx,
                signature: Signature(sig),
            },
        ));
    }

    // A valid signature, but over another genesis (same chain id).
    out.push((
        "signed for another genesis",
        transfer(chain).sign(&alice, &Hash::digest(b"another genesis")),
    ));
    // A valid signature for another chain id.
    let mut other = transfer(chain);
    other.chain_id = ChainId::new("another-chain").unwrap();
    out.push((
        "signed for another chain id",
        other.sign(&alice, &chain.genesis_hash),
    ));
    out
}

#[test]
fn bad_signatures_are_refused_by_the_mempool_and_gossip() {
    let chain = chain();
    let gossip = TransactionIntake::new(chain.clone(), Default::default());
    let good = transfer(&chain).sign(&devnet_key("alice"), &chain.genesis_hash);
    let message = |txs: &[&SignedTransaction]| {
        let encoded: Vec<Vec<u8>> = txs.iter().map(|tx| tx.encode()).collect();
        tally_ledger::encode_tx_batch(&encoded)
    };
    assert!(matches!(
        gossip.check(&message(&[&good])),
        Verdict::Accept(_)
    ));
    assert!(submit(&node(&chain), &good.encode()).is_ok());
    for (name, bad) in bad_transactions(&chain) {
        let bytes = bad.encode();
        // Alone or beside a good one: a peer's transactions reach the
        // mempool only through this check (the node does not repeat it).
        // (A fresh validator each time, so the good one is checked too.)
        for txs in [vec![&bad], vec![&good, &bad]] {
            let gossip = TransactionIntake::new(chain.clone(), Default::default());
            assert_eq!(
                gossip.check(&message(&txs)),
                Verdict::Reject,
                "gossip accepted: {name}"
            );
        }
        let node = node(&chain);
        // A ledger rule refuses it (not a pool limit or a balance check).
        let refused = submit(&node, &bytes);
        assert!(
            matches!(refused, Err(AdmitError::Tx(_))),
            "mempool: {name}: {refused:?}"
        );
        assert_eq!(node.mempool_len(), 0, "{name}");
    }
}

#[test]
fn a_block_with_a_bad_signature_is_invalid() {
    let chain = chain();
    let proposer = devnet_key("validator-0").address();
    let alice = devnet_key("alice").address();
    // Vectors from alice (funded), so only the signature can make it fail.
    let from_alice = bad_transactions(&chain)
        .into_iter()
        .filter(|(_, t)| t.tx.from == alice);
    for (name, bad) in from_alice {
        // A fresh node builds a valid block with the good transfer...
        let node = node(&chain);
        let good = transfer(&chain).sign(&devnet_key("alice"), &chain.genesis_hash);
        submit(&node, &good.encode()).unwrap();
        let block = node.build_proposal(proposer, 1, NOW_MS).unwrap().unwrap();
        // ...which another node validates...
        let validator = node_without_cache(&chain);
        assert!(validator.validate_block(&block).unwrap(), "control: {name}");
        // ...but not with the transfer swapped for its bad twin (header
        // updated to match, so only the signature can be wrong).
        let mut tampered = block.clone();
        tampered.txs = vec![bad];
        tampered.header.tx_root = tx_root(&tampered.txs.iter().map(|t| t.id()).collect::<Vec<_>>());
        let validator = node_without_cache(&chain);
        assert!(
            !validator.validate_block(&tampered).unwrap(),
            "block accepted: {name}"
        );
        // A node holding the good twin in its mempool skips checking that
        // one (its id covers the signature), but not the bad twin.
        let validator = node_without_cache(&chain);
        submit(&validator, &good.encode()).unwrap();
        assert!(
            !validator.validate_block(&tampered).unwrap(),
            "block accepted by a node holding the good twin: {name}"
        );
    }
}

/// A node that never saw the block (nothing cached from building it).
fn node_without_cache(chain: &ChainContext) -> Arc<Chain> {
    node(chain)
}

#[test]
fn bad_consensus_signatures_are_refused_by_gossip_and_cannot_reach_the_state_machine() {
    let chain = ChainContext::new(devnet_genesis(4, "tally-devnet").unwrap());
    let gossip = ConsensusIntake::new(chain.clone(), ValidatorView::genesis(&chain), 1 << 20);
    let vote = Vote {
        chain_id: chain.genesis.chain_id.clone(),
        height: 1,
        round: 0,
        kind: VoteKind::Prevote,
        block_hash: None,
    };
    let signer = devnet_key("validator-1");
    let good = SignedVote::sign(vote.clone(), &signer, &chain.genesis_hash);
    let mut cases = Vec::new();
    let mut v = good.clone();
    v.signature = with_non_canonical_s(&good.signature);
    cases.push(("non-canonical S", v));
    let mut v = good.clone();
    let mut sig = good.signature.0;
    sig[..32].copy_from_slice(&identity());
    v.signature = Signature(sig);
    cases.push(("small-order R", v));
    cases.push((
        "signed for another genesis",
        SignedVote::sign(vote.clone(), &signer, &Hash::digest(b"another genesis")),
    ));
    let mut other_chain = vote.clone();
    other_chain.chain_id = ChainId::new("another-chain").unwrap();
    cases.push((
        "signed for another chain id",
        SignedVote::sign(other_chain, &signer, &chain.genesis_hash),
    ));

    let machine = || {
        let mut m = Consensus::new(
            Config::default(),
            chain.genesis.chain_id.clone(),
            chain.genesis_hash,
            chain.validators.clone(),
            Some(devnet_key("validator-0")),
            None,
            None,
        );
        m.handle(Input::StartHeight {
            height: 1,
            validators: chain.validators.clone(),
        });
        m
    };
    let encode = |v: &SignedVote| borsh::to_vec(&ConsensusMessage::Vote(v.clone())).unwrap();
    // Control: the good vote passes the intake, and the state machine
    // counts what the intake delivers.
    let Verdict::Accept(verified) = gossip.check(&encode(&good), 0) else {
        panic!("the intake refused the good vote")
    };
    let mut m = machine();
    m.handle(Input::Message(verified));
    assert_eq!(m.votes().total(0, VoteKind::Prevote), 1);
    for (name, bad) in cases {
        assert_eq!(
            gossip.check(&encode(&bad), 0),
            Verdict::Reject,
            "gossip accepted: {name}"
        );
        // The state machine takes only `Verified` messages, and this one
        // cannot be made into one by any door.
        let message = ConsensusMessage::Vote(bad);
        assert!(
            Verified::<ConsensusMessage>::check(message, &chain.signers()).is_err(),
            "verified: {name}"
        );
    }
}
