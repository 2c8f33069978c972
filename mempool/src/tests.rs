//! Mempool rules, one test per rule.

use super::*;
use tally_ledger::{devnet_key, ChainId, Keypair, Transaction};

fn key(name: &str) -> Keypair {
    devnet_key(name)
}

fn tx(from: &str, nonce: u64, amount: u64, fee: u64) -> (SignedTransaction, Hash) {
    let signed = Transaction::transfer(
        ChainId::new("pool").unwrap(),
        key(from).address(),
        key("sink").address(),
        amount,
        fee,
        nonce,
    )
    .sign(&key(from), &Hash::ZERO);
    let id = signed.id();
    (signed, id)
}

fn rich() -> Account {
    Account {
        balance: 1_000_000,
        nonce: 0,
    }
}

fn add(
    pool: &mut Mempool,
    from: &str,
    nonce: u64,
    fee: u64,
    account: Account,
) -> Result<Admission, MempoolError> {
    let (t, id) = tx(from, nonce, 10, fee);
    pool.insert(t, id, account, 0)
}

#[test]
fn exact_next_nonce_is_pending() {
    let mut pool = Mempool::new(Config::default());
    let a = add(&mut pool, "alice", 0, 1, rich()).unwrap();
    assert_eq!(a.state, PoolState::Pending);
    assert_eq!(pool.next_nonce(&key("alice").address(), &rich()), 1);
}

#[test]
fn gap_waits_and_becomes_pending_when_filled() {
    let mut pool = Mempool::new(Config::default());
    let (t2, id2) = tx("alice", 2, 10, 1);
    assert_eq!(
        pool.insert(t2, id2, rich(), 0).unwrap().state,
        PoolState::Queued { waiting_for: 0 }
    );
    add(&mut pool, "alice", 0, 1, rich()).unwrap();
    assert_eq!(
        pool.status(&id2),
        Some(PoolState::Queued { waiting_for: 1 })
    );
    assert_eq!(pool.select(100, 1 << 20).len(), 1);
    add(&mut pool, "alice", 1, 1, rich()).unwrap();
    assert_eq!(pool.status(&id2), Some(PoolState::Pending));
    let nonces: Vec<u64> = pool
        .select(100, 1 << 20)
        .iter()
        .map(|t| t.tx.nonce)
        .collect();
    assert_eq!(nonces, vec![0, 1, 2]);
}

#[test]
fn duplicates_are_rejected() {
    let mut pool = Mempool::new(Config::default());
    let (t, id) = tx("alice", 0, 10, 1);
    pool.insert(t.clone(), id, rich(), 0).unwrap();
    assert_eq!(pool.insert(t, id, rich(), 0), Err(MempoolError::Duplicate));
}

#[test]
fn replacement_needs_same_sender_nonce_and_higher_fee() {
    let mut pool = Mempool::new(Config::default());
    let (_, first) = tx("alice", 0, 10, 5);
    add(&mut pool, "alice", 0, 5, rich()).unwrap();
    assert_eq!(
        add(&mut pool, "alice", 0, 5, rich()).unwrap_err(),
        MempoolError::Duplicate
    );
    let (cheaper, cheaper_id) = tx("alice", 0, 11, 5);
    assert_eq!(
        pool.insert(cheaper, cheaper_id, rich(), 0),
        Err(MempoolError::ReplacementUnderpriced { existing_fee: 5 })
    );
    let admitted = add(&mut pool, "alice", 0, 6, rich()).unwrap();
    assert_eq!(admitted.replaced, Some(first));
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.status(&first), None);
}

#[test]
fn nonce_too_low_and_too_far_ahead_are_rejected() {
    let mut pool = Mempool::new(Config {
        max_nonce_gap: 3,
        ..Config::default()
    });
    let account = Account {
        balance: 1_000,
        nonce: 5,
    };
    assert!(matches!(
        add(&mut pool, "alice", 4, 1, account),
        Err(MempoolError::Invalid(TxError::NonceTooLow {
            expected: 5,
            got: 4
        }))
    ));
    assert!(matches!(
        add(&mut pool, "alice", 9, 1, account),
        Err(MempoolError::NonceTooFarAhead {
            expected: 5,
            got: 9,
            max_gap: 3
        })
    ));
    assert!(add(&mut pool, "alice", 8, 1, account).is_ok());
}

#[test]
fn pending_transactions_must_be_affordable_together() {
    let mut pool = Mempool::new(Config::default());
    let account = Account {
        balance: 25,
        nonce: 0,
    };
    add(&mut pool, "alice", 0, 1, account).unwrap();
    add(&mut pool, "alice", 1, 1, account).unwrap();
    assert!(matches!(
        add(&mut pool, "alice", 2, 1, account),
        Err(MempoolError::Invalid(TxError::InsufficientFunds {
            balance: 25,
            needed: 33
        }))
    ));
}

#[test]
fn limits_on_count_bytes_and_sender() {
    let mut pool = Mempool::new(Config {
        max_txs: 2,
        ..Config::default()
    });
    add(&mut pool, "alice", 0, 1, rich()).unwrap();
    add(&mut pool, "bob", 0, 1, rich()).unwrap();
    assert!(matches!(
        add(&mut pool, "carol", 0, 1, rich()),
        Err(MempoolError::Full(_))
    ));

    let (t, _) = tx("alice", 0, 1, 1);
    let size = t.encode().len();
    let mut pool = Mempool::new(Config {
        max_bytes: size * 2 - 1,
        ..Config::default()
    });
    add(&mut pool, "alice", 0, 1, rich()).unwrap();
    assert!(matches!(
        add(&mut pool, "bob", 0, 1, rich()),
        Err(MempoolError::Full(_))
    ));

    let mut pool = Mempool::new(Config {
        max_txs_per_sender: 2,
        ..Config::default()
    });
    add(&mut pool, "alice", 0, 1, rich()).unwrap();
    add(&mut pool, "alice", 1, 1, rich()).unwrap();
    assert_eq!(
        add(&mut pool, "alice", 2, 1, rich()),
        Err(MempoolError::SenderFull { limit: 2 })
    );
    // A replacement does not count against the sender's limit.
    assert!(add(&mut pool, "alice", 1, 2, rich()).is_ok());
}

#[test]
fn committed_block_removes_included_and_invalidated() {
    let mut pool = Mempool::new(Config::default());
    let (t0, id0) = tx("alice", 0, 10, 1);
    let (t1, id1) = tx("alice", 1, 10, 1);
    let (t2, id2) = tx("alice", 2, 10, 1);
    for (t, id) in [(t0, id0), (t1, id1), (t2, id2)] {
        pool.insert(t, id, rich(), 0).unwrap();
    }
    // Block included nonce 0, and another transaction with nonce 1 that this
    // pool never saw; the balance left only pays for one more transfer.
    let after = Account {
        balance: 11,
        nonce: 2,
    };
    let removed = pool.on_block_committed(&[id0], &[(key("alice").address(), after)]);
    assert_eq!(removed[0], (id0, Removal::Committed));
    assert_eq!(
        removed[1],
        (
            id1,
            Removal::Invalid(TxError::NonceTooLow {
                expected: 2,
                got: 1
            })
        )
    );
    assert_eq!(pool.status(&id2), Some(PoolState::Pending));
    let poorer = Account {
        balance: 5,
        nonce: 2,
    };
    let removed = pool.on_block_committed(&[], &[(key("alice").address(), poorer)]);
    assert_eq!(
        removed,
        vec![(
            id2,
            Removal::Invalid(TxError::InsufficientFunds {
                balance: 5,
                needed: 11
            })
        )]
    );
    assert!(pool.is_empty());
    assert_eq!(pool.bytes(), 0);
}

#[test]
fn queued_transactions_expire_pending_ones_do_not() {
    let mut pool = Mempool::new(Config {
        queued_ttl_ms: 1_000,
        ..Config::default()
    });
    let (p, pid) = tx("alice", 0, 10, 1);
    let (q, qid) = tx("bob", 3, 10, 1);
    pool.insert(p, pid, rich(), 0).unwrap();
    pool.insert(q, qid, rich(), 0).unwrap();
    assert!(pool.expire(999).is_empty());
    assert_eq!(pool.expire(1_000), vec![qid]);
    assert_eq!(pool.status(&pid), Some(PoolState::Pending));
}

#[test]
fn select_respects_limits_and_keeps_nonce_order() {
    let mut pool = Mempool::new(Config::default());
    for n in 0..3 {
        add(&mut pool, "alice", n, 1, rich()).unwrap();
        add(&mut pool, "bob", n, 1, rich()).unwrap();
    }
    assert_eq!(pool.select(4, 1 << 20).len(), 4);
    let (t, _) = tx("alice", 0, 10, 1);
    let picked = pool.select(100, t.encode().len() * 2);
    assert_eq!(picked.len(), 2);
    assert!(picked.iter().all(|t| t.tx.from == key("alice").address()));
}

#[test]
fn a_transaction_in_the_block_being_committed_cannot_be_replaced() {
    let mut pool = Mempool::new(Config::default());
    add(&mut pool, "alice", 0, 1, rich()).unwrap();
    assert_eq!(pool.select_for_block(10, 1 << 20).len(), 1);
    assert_eq!(
        add(&mut pool, "alice", 0, 9, rich()),
        Err(MempoolError::InBlock { nonce: 0 })
    );
    pool.release_block();
    assert!(
        add(&mut pool, "alice", 0, 9, rich()).is_ok(),
        "replaceable again once released"
    );
}

#[test]
fn the_nonce_gap_is_measured_from_the_end_of_the_pending_run() {
    let mut pool = Mempool::new(Config {
        max_nonce_gap: 2,
        ..Config::default()
    });
    for n in 0..10 {
        add(&mut pool, "alice", n, 1, rich()).unwrap();
    }
    // Ten pending in a row is no gap; 12 is two past the next free nonce 10.
    assert!(add(&mut pool, "alice", 12, 1, rich()).is_ok());
    assert!(matches!(
        add(&mut pool, "alice", 13, 1, rich()),
        Err(MempoolError::NonceTooFarAhead {
            expected: 10,
            got: 13,
            max_gap: 2
        })
    ));
}

#[test]
fn clients_may_fill_only_their_share() {
    let config = Config {
        max_txs: 10,
        client_fill_percent: 50,
        ..Config::default()
    };
    let mut pool = Mempool::new(config);
    for nonce in 0..5 {
        let (t, _) = tx("alice", nonce, 10, 1);
        assert!(pool.client_room(&t, &rich()).is_ok(), "{nonce} held");
        add(&mut pool, "alice", nonce, 1, rich()).unwrap();
    }
    // Half full: clients are refused...
    let (next, _) = tx("alice", 5, 10, 1);
    assert!(matches!(
        pool.client_room(&next, &rich()),
        Err(MempoolError::Full(_))
    ));
    let (bob, _) = tx("bob", 0, 10, 1);
    assert!(pool.client_room(&bob, &rich()).is_err());
    // ... except the one that fills the gap in front of queued ones (a
    // peer relayed alice's nonce 6).
    add(&mut pool, "alice", 6, 1, rich()).unwrap();
    assert!(pool.client_room(&next, &rich()).is_ok());
    let (later, _) = tx("alice", 7, 10, 1);
    assert!(pool.client_room(&later, &rich()).is_err());
    // Peers' transactions still fit, up to max_txs; then nothing.
    for nonce in 7..11 {
        add(&mut pool, "alice", nonce, 1, rich()).unwrap();
    }
    assert!(pool.client_batch_room().is_err());
    assert!(pool.client_room(&next, &rich()).is_err());
}

#[test]
fn the_pool_knows_when_it_holds_a_validator_set_vote() {
    let mut pool = Mempool::new(Config::default());
    assert!(!pool.holds_validator_votes());
    let voter = key("voter");
    let change = tally_ledger::ValidatorChange::Remove {
        address: key("leaving").address(),
    };
    let vote = Transaction::validator_vote(
        ChainId::new("pool").unwrap(),
        voter.address(),
        change,
        None,
        1,
        0,
    )
    .sign(&voter, &Hash::ZERO);
    let id = vote.id();
    pool.insert(vote, id, rich(), 0).unwrap();
    assert!(pool.holds_validator_votes());
    // A transfer with a higher fee replaces the vote.
    let replacement = Transaction::transfer(
        ChainId::new("pool").unwrap(),
        voter.address(),
        key("sink").address(),
        10,
        5,
        0,
    )
    .sign(&voter, &Hash::ZERO);
    let replacement_id = replacement.id();
    pool.insert(replacement, replacement_id, rich(), 0).unwrap();
    assert!(!pool.holds_validator_votes());
    // A vote that leaves the pool with its block leaves the count too.
    let vote = Transaction::validator_vote(
        ChainId::new("pool").unwrap(),
        voter.address(),
        tally_ledger::ValidatorChange::Remove {
            address: key("leaving").address(),
        },
        None,
        1,
        1,
    )
    .sign(&voter, &Hash::ZERO);
    let id = vote.id();
    pool.insert(vote, id, rich(), 0).unwrap();
    assert!(pool.holds_validator_votes());
    let account = Account {
        balance: 1_000_000,
        nonce: 2,
    };
    pool.on_block_committed(&[replacement_id, id], &[(voter.address(), account)]);
    assert!(!pool.holds_validator_votes());
    assert!(pool.is_empty());
}

#[test]
fn a_senders_view_names_the_nonces_its_queued_transactions_wait_for() {
    let mut pool = Mempool::new(Config::default());
    let empty = pool.sender_view(&key("alice").address(), &rich(), 0);
    assert_eq!((empty.committed_nonce, empty.next_nonce), (0, 0));
    assert!(empty.pending.is_empty() && empty.queued.is_empty() && empty.missing.is_empty());
    // Nonces 0 and 1 pending; 3, 4 and 7 queued at different times.
    for (nonce, at) in [(0, 0), (1, 0), (3, 1_000), (4, 2_000), (7, 5_000)] {
        let (t, id) = tx("alice", nonce, 10, 1);
        pool.insert(t, id, rich(), at).unwrap();
    }
    let view = pool.sender_view(&key("alice").address(), &rich(), 10_000);
    assert_eq!(view.committed_nonce, 0);
    assert_eq!(view.next_nonce, 2, "a wallet fills the first gap");
    let nonces = |txs: &[HeldTx]| txs.iter().map(|t| t.nonce).collect::<Vec<_>>();
    assert_eq!(nonces(&view.pending), [0, 1]);
    let queued: Vec<(u64, u64)> = view
        .queued
        .iter()
        .map(|(t, left)| (t.nonce, *left))
        .collect();
    let ttl = Config::default().queued_ttl_ms;
    assert_eq!(
        queued,
        [(3, ttl - 9_000), (4, ttl - 8_000), (7, ttl - 5_000)]
    );
    assert_eq!(view.missing, [2, 5, 6]);
    // Nonce 2 arrives: 3 and 4 join the run, 7 still waits for 5 and 6.
    let (t, id) = tx("alice", 2, 10, 1);
    pool.insert(t, id, rich(), 10_000).unwrap();
    let view = pool.sender_view(&key("alice").address(), &rich(), 10_000);
    assert_eq!(nonces(&view.pending), [0, 1, 2, 3, 4]);
    assert_eq!(view.next_nonce, 5);
    assert_eq!(view.missing, [5, 6]);
    assert_eq!(
        pool.status(&view.queued[0].0.id),
        Some(PoolState::Queued { waiting_for: 5 })
    );
}
