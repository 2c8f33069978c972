//! Block and commit-certificate rules, one case per rule.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

mod validator_sets;

use tally_ledger::state_tree::MemoryState;
use tally_ledger::{
    build_block, devnet::devnet_genesis, devnet_key, execute_block, verify_commit, Block,
    BlockError, BlockInputs, ChainContext, ChainId, Commit, CommitError, CommitSignature, Hash,
    SigCheck, Transaction, TxError, Vote, VoteKind,
};

fn chain(validators: usize) -> ChainContext {
    ChainContext::new(devnet_genesis(validators, "tally-devnet").unwrap())
}

fn state(chain: &ChainContext) -> MemoryState {
    MemoryState::genesis(chain).unwrap()
}

fn transfer(chain: &ChainContext, nonce: u64) -> tally_ledger::SignedTransaction {
    let alice = devnet_key("alice");
    Transaction::transfer(
        chain.genesis.chain_id.clone(),
        alice.address(),
        devnet_key("bob").address(),
        5,
        1,
        nonce,
    )
    .sign(&alice, &chain.genesis_hash)
}

fn good_block(chain: &ChainContext) -> Block {
    block_of(chain, 2, |_| {})
}

fn check(chain: &ChainContext, block: &Block) -> Result<(), BlockError> {
    execute_block(
        &state(chain),
        chain,
        &chain.genesis_meta(),
        block,
        SigCheck::Verify,
    )
    .map(|_| ())
}

#[test]
fn header_rules() {
    let chain = chain(4);
    let good = good_block(&chain);
    assert_eq!(check(&chain, &good), Ok(()));
    type Mutation = fn(&mut Block);
    let cases: Vec<(&str, Mutation)> = vec![
        ("version must be 3", |b| b.header.version = 2),
        ("chain id must match", |b| {
            b.header.chain_id = ChainId::new("other").unwrap()
        }),
        ("height must follow the parent", |b| b.header.height = 2),
        ("parent hash must be the parent's", |b| {
            b.header.parent_hash = Hash::ZERO
        }),
        ("timestamp not before the parent", |b| {
            b.header.timestamp_ms = 0
        }),
        ("proposer must be a validator", |b| {
            b.header.proposer = devnet_key("mallory").address()
        }),
        ("state root must be the state after the block", |b| {
            b.header.state_root = Hash::digest(b"x")
        }),
        ("state root of the state before the block", |b| {
            b.header.state_root = MemoryState::genesis(&self::chain(4)).unwrap().root()
        }),
        ("validators hash must name the set", |b| {
            b.header.validators_hash = self::chain(3).validators.hash()
        }),
        ("next validators hash must name the set", |b| {
            b.header.next_validators_hash = Hash::ZERO
        }),
        ("tx_count must match", |b| b.header.tx_count = 3),
        ("tx_root must match", |b| b.txs.swap(0, 1)),
    ];
    for (rule, mutate) in cases {
        let mut block = good.clone();
        mutate(&mut block);
        assert!(
            matches!(check(&chain, &block), Err(BlockError::Header(_))),
            "rule: {rule}"
        );
    }
}

#[test]
fn one_invalid_transaction_invalidates_the_block() {
    let chain = chain(1);
    let mut block = good_block(&chain);
    block.txs[1].tx.fee += 1; // breaks its signature
    let ids: Vec<Hash> = block.txs.iter().map(|t| t.id()).collect();
    block.header.tx_root = tally_ledger::tx_root(&ids);
    match check(&chain, &block) {
        Err(BlockError::Tx {
            index: 1,
            error: TxError::InvalidSignature,
            ..
        }) => {}
        other => panic!("expected transaction 1 to be invalid, got {other:?}"),
    }
    // With signatures already checked (a block this node built from its
    // mempool), the stateful rules still apply: a replayed nonce fails.
    let mut replay = good_block(&chain);
    replay.txs[1] = transfer(&chain, 0);
    let ids: Vec<Hash> = replay.txs.iter().map(|t| t.id()).collect();
    replay.header.tx_root = tally_ledger::tx_root(&ids);
    let result = execute_block(
        &state(&chain),
        &chain,
        &chain.genesis_meta(),
        &replay,
        SigCheck::AlreadyVerified,
    );
    assert!(
        matches!(
            result,
            Err(BlockError::Tx {
                index: 1,
                error: TxError::NonceTooLow { .. },
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn block_size_limits() {
    let mut genesis = devnet_genesis(1, "tally-devnet").unwrap();
    genesis.params.max_block_txs = 1;
    let chain = ChainContext::new(genesis);
    let built = build_block(
        &state(&chain),
        &chain,
        &chain.genesis_meta(),
        BlockInputs {
            proposer: devnet_key("validator-0").address(),
            now_ms: chain.genesis.genesis_time_ms,
            candidates: vec![transfer(&chain, 0), transfer(&chain, 1)],
            last_commit: None,
            evidence: Vec::new(),
        },
    )
    .unwrap();
    assert_eq!(built.block.txs.len(), 1, "the builder stops at the limit");
    let mut over = built.block.clone();
    over.txs.push(transfer(&chain, 1));
    over.header.tx_count = 2;
    let ids: Vec<Hash> = over.txs.iter().map(|t| t.id()).collect();
    over.header.tx_root = tally_ledger::tx_root(&ids);
    assert!(matches!(check(&chain, &over), Err(BlockError::TooLarge(_))));
}

fn precommit(chain: &ChainContext, height: u64, hash: Hash, signer: &str) -> CommitSignature {
    let vote = Vote {
        chain_id: chain.genesis.chain_id.clone(),
        height,
        round: 0,
        kind: VoteKind::Precommit,
        block_hash: Some(hash),
    };
    let key = devnet_key(signer);
    CommitSignature {
        validator: key.address(),
        signature: vote.sign(&key, &chain.genesis_hash),
    }
}

#[test]
fn commit_certificate_rules() {
    let chain = chain(4);
    let hash = Hash::digest(b"block");
    let verify = |signatures: Vec<CommitSignature>| {
        let commit = Commit {
            height: 1,
            round: 0,
            block_hash: hash,
            signatures,
        };
        verify_commit(
            &commit,
            1,
            &hash,
            &chain.validators,
            &chain.genesis.chain_id,
            &chain.genesis_hash,
        )
    };
    let sig = |name: &str| precommit(&chain, 1, hash, name);
    assert_eq!(
        verify(vec![
            sig("validator-0"),
            sig("validator-1"),
            sig("validator-2")
        ]),
        Ok(())
    );
    assert_eq!(
        verify(vec![sig("validator-0"), sig("validator-1")]),
        Err(CommitError::NoQuorum { got: 2, needed: 3 })
    );
    assert!(matches!(
        verify(vec![
            sig("validator-0"),
            sig("validator-0"),
            sig("validator-1")
        ]),
        Err(CommitError::Duplicate(_))
    ));
    assert!(matches!(
        verify(vec![sig("validator-0"), sig("validator-1"), sig("mallory")]),
        Err(CommitError::UnknownValidator(_))
    ));
    // A precommit for another block, or a prevote, is not a precommit for this one.
    let mut wrong = precommit(&chain, 1, Hash::digest(b"other"), "validator-2");
    assert!(matches!(
        verify(vec![sig("validator-0"), sig("validator-1"), wrong.clone()]),
        Err(CommitError::BadSignature(_))
    ));
    let prevote = Vote {
        chain_id: chain.genesis.chain_id.clone(),
        height: 1,
        round: 0,
        kind: VoteKind::Prevote,
        block_hash: Some(hash),
    };
    wrong.signature = prevote.sign(&devnet_key("validator-2"), &chain.genesis_hash);
    assert!(matches!(
        verify(vec![sig("validator-0"), sig("validator-1"), wrong]),
        Err(CommitError::BadSignature(_))
    ));
    let commit = Commit {
        height: 2,
        round: 0,
        block_hash: hash,
        signatures: vec![],
    };
    assert!(matches!(
        verify_commit(
            &commit,
            1,
            &hash,
            &chain.validators,
            &chain.genesis.chain_id,
            &chain.genesis_hash
        ),
        Err(CommitError::WrongBlock { .. })
    ));
}

/// A block of `n` transfers from alice (nonces 0..n), with the header
/// recomputed after `edit` changes its transactions.
fn block_of(chain: &ChainContext, n: u64, edit: impl FnOnce(&mut Block)) -> Block {
    let proposer = devnet_key("validator-0").address();
    let txs = (0..n).map(|nonce| transfer(chain, nonce)).collect();
    let mut block = build_block(
        &state(chain),
        chain,
        &chain.genesis_meta(),
        BlockInputs {
            proposer,
            now_ms: chain.genesis.genesis_time_ms + 10,
            candidates: txs,
            last_commit: None,
            evidence: Vec::new(),
        },
    )
    .unwrap()
    .block;
    assert_eq!(block.txs.len() as u64, n);
    edit(&mut block);
    let ids: Vec<Hash> = block.txs.iter().map(|t| t.id()).collect();
    block.header.tx_root = tally_ledger::tx_root(&ids);
    block
}

fn failing_index(chain: &ChainContext, block: &Block, sig_check: SigCheck<'_>) -> (usize, TxError) {
    match execute_block(
        &state(chain),
        chain,
        &chain.genesis_meta(),
        block,
        sig_check,
    ) {
        Err(BlockError::Tx { index, error, .. }) => (index, error),
        other => panic!("expected an invalid transaction, got {other:?}"),
    }
}

#[test]
fn a_large_block_reports_the_first_invalid_transaction_as_a_small_one_would() {
    // 300 signatures to check: spread over the cores, with the same answer.
    let chain = chain(1);
    let bad_signature_then_bad_field = block_of(&chain, 300, |b| {
        b.txs[5].tx.fee += 1; // breaks its signature
        b.txs[200].tx.fee = 0; // below the minimum fee (and its signature)
    });
    assert_eq!(
        failing_index(&chain, &bad_signature_then_bad_field, SigCheck::Verify),
        (5, TxError::InvalidSignature)
    );
    let bad_field_then_bad_signature = block_of(&chain, 300, |b| {
        b.txs[5].tx.fee = 0;
        b.txs[200].tx.fee += 1;
    });
    let (index, error) = failing_index(&chain, &bad_field_then_bad_signature, SigCheck::Verify);
    assert_eq!(index, 5);
    assert!(matches!(error, TxError::FeeTooLow { .. }), "{error:?}");
    // Two bad signatures in different shares: the lower one.
    let two = block_of(&chain, 300, |b| {
        b.txs[290].tx.fee += 1;
        b.txs[120].tx.fee += 1;
    });
    assert_eq!(
        failing_index(&chain, &two, SigCheck::Verify),
        (120, TxError::InvalidSignature)
    );
}

#[test]
fn only_the_listed_verified_ids_skip_their_signature_check() {
    let chain = chain(1);
    let block = block_of(&chain, 300, |b| b.txs[7].tx.fee += 1);
    let bad_id = block.txs[7].id();
    let good_ids: std::collections::HashSet<Hash> = block
        .txs
        .iter()
        .map(|t| t.id())
        .filter(|id| *id != bad_id)
        .collect();
    // Every other transaction known as checked: the bad one is still caught.
    assert_eq!(
        failing_index(&chain, &block, SigCheck::SkipVerified(&good_ids)),
        (7, TxError::InvalidSignature)
    );
    // The same block of good transfers passes with all, some or none known.
    let good = block_of(&chain, 300, |_| {});
    let all: std::collections::HashSet<Hash> = good.txs.iter().map(|t| t.id()).collect();
    let some: std::collections::HashSet<Hash> = all.iter().copied().take(100).collect();
    for known in [&all, &some, &Default::default()] {
        execute_block(
            &state(&chain),
            &chain,
            &chain.genesis_meta(),
            &good,
            SigCheck::SkipVerified(known),
        )
        .unwrap();
    }
}
