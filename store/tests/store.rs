//! The store contract, checked against both implementations and, for
//! RocksDB, across close and reopen.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use tally_ledger::{
    build_block, devnet_key, execute_block, AccountRead, Address, BlockMeta, BlockWrite,
    ChainContext, ChainId, ChainRead, ChainWrite, Commit, CommitSignature, Genesis, GenesisBalance,
    GenesisValidator, Params, SigCheck, StoredBlock, Transaction, Vote, VoteKind,
};
use tally_store::{MemoryStore, OpenError, RocksConfig, RocksStore};

fn chain(chain_id: &str) -> ChainContext {
    ChainContext::new(Genesis {
        chain_id: ChainId::new(chain_id).unwrap(),
        genesis_time_ms: 1_000,
        params: Params::default(),
        validators: vec![GenesisValidator {
            name: "validator-0".into(),
            address: devnet_key("validator-0").address(),
            power: 1,
        }],
        balances: vec![GenesisBalance {
            address: devnet_key("alice").address(),
            amount: 1_000,
        }],
    })
}

fn bob() -> Address {
    devnet_key("bob").address()
}

/// Builds, signs and commits one block moving 10 from alice to bob.
fn commit_transfer<S: ChainWrite>(store: &S, chain: &ChainContext, nonce: u64) -> StoredBlock {
    let alice = devnet_key("alice");
    let tx = Transaction {
        chain_id: chain.genesis.chain_id.clone(),
        from: alice.address(),
        to: bob(),
        amount: 10,
        fee: 1,
        nonce,
    }
    .sign(&alice, &chain.genesis_hash);
    let parent = store.tip().unwrap().unwrap_or(chain.genesis_meta());
    let proposer = devnet_key("validator-0");
    let built = build_block(
        store,
        chain,
        &parent,
        proposer.address(),
        parent.timestamp_ms + 1,
        vec![tx],
    )
    .unwrap();
    assert!(built.rejected.is_empty());
    let executed = execute_block(store, chain, &parent, &built.block, SigCheck::Verify).unwrap();
    let vote = Vote {
        chain_id: chain.genesis.chain_id.clone(),
        height: parent.height + 1,
        round: 0,
        kind: VoteKind::Precommit,
        block_hash: Some(executed.hash),
    };
    let commit = Commit {
        height: parent.height + 1,
        round: 0,
        block_hash: executed.hash,
        signatures: vec![CommitSignature {
            validator: proposer.address(),
            signature: vote.sign(&proposer, &chain.genesis_hash),
        }],
    };
    let stored = StoredBlock {
        block: built.block,
        commit,
    };
    store
        .commit(&BlockWrite {
            stored: &stored,
            hash: executed.hash,
            tx_ids: &executed.tx_ids,
            accounts: &executed.accounts,
        })
        .unwrap();
    stored
}

fn check_contents<S: ChainRead>(store: &S, blocks: &[StoredBlock]) {
    let last = blocks.last().unwrap();
    assert_eq!(
        store.tip().unwrap(),
        Some(BlockMeta {
            height: blocks.len() as u64,
            hash: last.block.hash(),
            timestamp_ms: last.block.header.timestamp_ms
        })
    );
    for (i, stored) in blocks.iter().enumerate() {
        let height = i as u64 + 1;
        assert_eq!(store.block(height).unwrap().as_ref(), Some(stored));
        assert_eq!(store.height_of(&stored.block.hash()).unwrap(), Some(height));
        let id = stored.block.txs[0].id();
        assert_eq!(
            store.tx_location(&id).unwrap().map(|l| (l.height, l.index)),
            Some((height, 0))
        );
    }
    let n = blocks.len() as u64;
    let alice = store.account(&devnet_key("alice").address()).unwrap();
    assert_eq!((alice.balance, alice.nonce), (1_000 - 11 * n, n));
    assert_eq!(store.account(&bob()).unwrap().balance, 10 * n);
    assert_eq!(
        store
            .account(&devnet_key("validator-0").address())
            .unwrap()
            .balance,
        n
    );
    assert_eq!(store.block(n + 1).unwrap(), None);
}

#[test]
fn memory_store_commits_and_reads_back() {
    let chain = chain("mem");
    let store = MemoryStore::new(&chain);
    assert_eq!(store.tip().unwrap(), None);
    let blocks: Vec<_> = (0..3).map(|n| commit_transfer(&store, &chain, n)).collect();
    check_contents(&store, &blocks);
}

#[test]
fn rocks_store_commits_reopens_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain("rocks");
    let blocks: Vec<_> = {
        let store = RocksStore::open(dir.path(), &chain, &RocksConfig::default()).unwrap();
        assert_eq!(store.tip().unwrap(), None);
        assert_eq!(
            store
                .account(&devnet_key("alice").address())
                .unwrap()
                .balance,
            1_000
        );
        (0..3).map(|n| commit_transfer(&store, &chain, n)).collect()
    };
    let store = RocksStore::open(dir.path(), &chain, &RocksConfig::default()).unwrap();
    check_contents(&store, &blocks);
    let mut blocks = blocks;
    blocks.push(commit_transfer(&store, &chain, 3));
    check_contents(&store, &blocks);
}

#[test]
fn rocks_store_refuses_another_genesis() {
    let dir = tempfile::tempdir().unwrap();
    drop(RocksStore::open(dir.path(), &chain("one"), &RocksConfig::default()).unwrap());
    match RocksStore::open(dir.path(), &chain("two"), &RocksConfig::default()) {
        Err(e @ OpenError::GenesisMismatch { .. }) => {
            let message = e.to_string();
            assert!(message.contains("was created for genesis"), "{message}");
        }
        Err(other) => panic!("expected a genesis mismatch, got {other}"),
        Ok(_) => panic!("a store for another genesis opened"),
    }
}
