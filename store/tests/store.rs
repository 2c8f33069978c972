//! The store contract, checked against both implementations and, for
//! RocksDB, across close and reopen.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use tally_ledger::state_tree::{prove_account, tree_root, verify_account};
use tally_ledger::{
    build_block, devnet_key, execute_block, AccountRead, Address, BlockInputs, BlockMeta,
    BlockWrite, ChainContext, ChainId, ChainRead, ChainWrite, Commit, CommitSignature,
    DuplicateVoteEvidence, Evidence, Genesis, GenesisBalance, GenesisValidator, Params, SigCheck,
    SignedVote, StoredBlock, Transaction, Vote, VoteKind,
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
    commit_with_evidence(store, chain, nonce, Vec::new())
}

/// Two different prevotes (or precommits) of validator-0 at `height`.
fn double_vote(chain: &ChainContext, height: u64, kind: VoteKind) -> Evidence {
    let key = devnet_key("validator-0");
    let vote = |tag: &[u8]| {
        let vote = Vote {
            chain_id: chain.genesis.chain_id.clone(),
            height,
            round: 0,
            kind,
            block_hash: Some(tally_ledger::Hash::digest(tag)),
        };
        SignedVote::sign(vote, &key, &chain.genesis_hash)
    };
    Evidence::DuplicateVote(DuplicateVoteEvidence {
        first: vote(b"a"),
        second: vote(b"b"),
    })
}

/// As [`commit_transfer`], the block also recording `evidence`.
fn commit_with_evidence<S: ChainWrite>(
    store: &S,
    chain: &ChainContext,
    nonce: u64,
    evidence: Vec<Evidence>,
) -> StoredBlock {
    let alice = devnet_key("alice");
    let tx = Transaction::transfer(
        chain.genesis.chain_id.clone(),
        alice.address(),
        bob(),
        10,
        1,
        nonce,
    )
    .sign(&alice, &chain.genesis_hash);
    let parent = store.tip().unwrap().unwrap_or(chain.genesis_meta());
    let proposer = devnet_key("validator-0");
    let built = build_block(
        store,
        chain,
        &parent,
        BlockInputs {
            proposer: proposer.address(),
            now_ms: parent.timestamp_ms + 1,
            candidates: vec![tx],
            last_commit: store.block(parent.height).unwrap().map(|b| b.commit),
            evidence: evidence.clone(),
        },
    )
    .unwrap();
    assert!(built.rejected.is_empty());
    assert_eq!(built.block.evidence, evidence, "all of it is valid and new");
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
            tree: &executed.tree,
            validators: &executed.validators,
            validators_changed: executed.validators_changed,
            overridden: executed.overridden,
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
    // Every kept version proves alice's account as it was then, against
    // that block's state root; the genesis version too.
    let alice = devnet_key("alice").address();
    let genesis_root = tree_root(store, 0).unwrap().unwrap();
    let (account, proof) = prove_account(store, 0, &alice).unwrap();
    assert_eq!(account.balance, 1_000);
    verify_account(&genesis_root, &alice, &account, &proof).unwrap();
    for (i, stored) in blocks.iter().enumerate() {
        let height = i as u64 + 1;
        let (account, proof) = prove_account(store, height, &alice).unwrap();
        assert_eq!(
            (account.balance, account.nonce),
            (1_000 - 11 * height, height)
        );
        verify_account(&stored.block.header.state_root, &alice, &account, &proof).unwrap();
        assert_eq!(
            tree_root(store, height).unwrap(),
            Some(stored.block.header.state_root)
        );
    }
}

/// With a history of 2, only the two latest versions of the tree remain.
fn check_pruned<S: ChainWrite>(store: &S, chain: &ChainContext) {
    let blocks: Vec<_> = (0..5).map(|n| commit_transfer(store, chain, n)).collect();
    let alice = devnet_key("alice").address();
    for height in 4..=5 {
        let root = blocks[height as usize - 1].block.header.state_root;
        let (account, proof) = prove_account(store, height, &alice).unwrap();
        verify_account(&root, &alice, &account, &proof).unwrap();
    }
    for height in 0..=3 {
        assert!(
            prove_account(store, height, &alice).is_err(),
            "version {height} should be pruned"
        );
    }
}

#[test]
fn stores_prune_old_versions_of_the_tree() {
    let chain = chain("prune");
    check_pruned(&MemoryStore::new(&chain).with_state_history(2), &chain);
    let dir = tempfile::tempdir().unwrap();
    let config = RocksConfig {
        state_history: 2,
        ..RocksConfig::default()
    };
    check_pruned(
        &RocksStore::open(dir.path(), &chain, &config).unwrap(),
        &chain,
    );
}

#[test]
fn rocks_store_refuses_a_version_1_directory() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain("old");
    drop(RocksStore::open(dir.path(), &chain, &RocksConfig::default()).unwrap());
    {
        // What a version-1 node left: the same layout without the format key.
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), &cfs).unwrap();
        db.delete_cf(db.cf_handle("meta").unwrap(), b"format")
            .unwrap();
    }
    match RocksStore::open(dir.path(), &chain, &RocksConfig::default()) {
        Err(e @ OpenError::OldFormat { found: 1, .. }) => {
            let message = e.to_string();
            assert!(message.contains("protocol version 1"), "{message}");
            assert!(message.contains("aside"), "{message}");
        }
        Err(other) => panic!("expected an old-format refusal, got {other}"),
        Ok(_) => panic!("a version-1 directory opened"),
    }
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

/// Evidence is read back by id, by offence and in chain order from a
/// height, with the height and position of the block that records it.
fn check_evidence<S: ChainWrite>(store: &S, chain: &ChainContext) -> Vec<Evidence> {
    commit_transfer(store, chain, 0);
    let first = double_vote(chain, 1, VoteKind::Prevote);
    commit_with_evidence(store, chain, 1, vec![first.clone()]);
    let (second, third) = (
        double_vote(chain, 2, VoteKind::Prevote),
        double_vote(chain, 2, VoteKind::Precommit),
    );
    commit_with_evidence(store, chain, 2, vec![second.clone(), third.clone()]);
    commit_transfer(store, chain, 3);
    let all = vec![first, second, third];
    read_evidence_back(store, &all);
    all
}

fn read_evidence_back<S: ChainRead>(store: &S, all: &[Evidence]) {
    let placed = |from, limit| -> Vec<(u64, u32, Evidence)> {
        store
            .evidence_from(from, limit)
            .unwrap()
            .into_iter()
            .map(|r| (r.height, r.index, r.evidence))
            .collect()
    };
    let expected = vec![
        (2, 0, all[0].clone()),
        (3, 0, all[1].clone()),
        (3, 1, all[2].clone()),
    ];
    assert_eq!(placed(1, 10), expected);
    assert_eq!(placed(3, 10), expected[1..].to_vec());
    assert_eq!(placed(1, 2), expected[..2].to_vec());
    assert_eq!(placed(4, 10), vec![]);
    for (height, index, evidence) in expected {
        let record = store.recorded_evidence(&evidence.id()).unwrap().unwrap();
        assert_eq!((record.height, record.index), (height, index));
        assert_eq!(
            store.recorded_offence(&evidence.offence()).unwrap(),
            Some(evidence.id())
        );
    }
}

#[test]
fn stores_record_evidence_in_chain_order() {
    let chain = chain("evidence");
    check_evidence(&MemoryStore::new(&chain), &chain);
    let dir = tempfile::tempdir().unwrap();
    let all = {
        let store = RocksStore::open(dir.path(), &chain, &RocksConfig::default()).unwrap();
        check_evidence(&store, &chain)
    };
    let store = RocksStore::open(dir.path(), &chain, &RocksConfig::default()).unwrap();
    read_evidence_back(&store, &all);
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

/// The newest write-ahead log file of a closed store, with its length.
fn newest_wal(dir: &std::path::Path) -> (std::path::PathBuf, u64) {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    logs.sort();
    let newest = logs.pop().expect("the store keeps a write-ahead log");
    let len = std::fs::metadata(&newest).unwrap().len();
    (newest, len)
}

/// Three committed blocks, left in the write-ahead log (a store closed
/// without flushing keeps its recent writes only there).
fn store_with_blocks_in_wal(dir: &std::path::Path, chain: &ChainContext) -> Vec<StoredBlock> {
    let store = RocksStore::open(dir, chain, &RocksConfig::default()).unwrap();
    (0..3).map(|n| commit_transfer(&store, chain, n)).collect()
}

#[test]
fn rocks_store_refuses_a_damaged_log_tail() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain("damaged");
    store_with_blocks_in_wal(dir.path(), &chain);
    let (wal, len) = newest_wal(dir.path());
    assert!(len > 200, "the commits are in the log ({len} bytes)");
    // Flip one byte inside the last record: the bytes are all there, but
    // they are not what was written.
    let mut bytes = std::fs::read(&wal).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x5a;
    std::fs::write(&wal, bytes).unwrap();
    match RocksStore::open(dir.path(), &chain, &RocksConfig::default()) {
        Err(e @ OpenError::Damaged { .. }) => {
            let message = e.to_string();
            assert!(message.contains("is damaged"), "{message}");
            assert!(message.contains("checksum mismatch"), "{message}");
        }
        Err(other) => panic!("expected the directory to be called damaged, got {other}"),
        Ok(store) => panic!(
            "a damaged log opened silently at tip {:?}",
            store.tip().unwrap().map(|tip| tip.height)
        ),
    }
}

#[test]
fn rocks_store_drops_only_an_unfinished_last_write() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain("torn");
    let blocks = store_with_blocks_in_wal(dir.path(), &chain);
    let (wal, len) = newest_wal(dir.path());
    // Cut the last record short, as a crash in the middle of writing it
    // would: that write was never acknowledged, so it is the only loss.
    let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.set_len(len - 40).unwrap();
    drop(file);
    let store = RocksStore::open(dir.path(), &chain, &RocksConfig::default()).unwrap();
    check_contents(&store, &blocks[..2]);
}
