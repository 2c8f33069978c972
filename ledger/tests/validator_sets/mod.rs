//! Validator-set changes, last commits and evidence as blocks carry them:
//! built by a proposer, checked by `execute_block`, applied to a state.

use tally_ledger::state_tree::MemoryState;
use tally_ledger::{
    build_block, devnet::devnet_genesis, devnet_key, execute_block, Block, BlockError, BlockInputs,
    BlockMeta, BuiltBlock, ChainContext, ChainHistory, ChangeResult, Commit, CommitSignature,
    DuplicateVoteEvidence, Evidence, SigCheck, SignedTransaction, SignedVote, Transaction, TxError,
    ValidatorChange, ValidatorChangeError, Vote, VoteKind,
};

/// A chain of 4 devnet validators, built block by block.
struct Run {
    chain: ChainContext,
    state: MemoryState,
    parent: BlockMeta,
    last_commit: Option<Commit>,
    /// Next nonce of each validator account.
    nonces: [u64; 8],
}

impl Run {
    fn new() -> Run {
        let chain = ChainContext::new(devnet_genesis(4, "tally-devnet").unwrap());
        Run {
            state: MemoryState::genesis(&chain).unwrap(),
            parent: chain.genesis_meta(),
            last_commit: None,
            nonces: [0; 8],
            chain,
        }
    }

    fn build(&self, txs: Vec<SignedTransaction>, evidence: Vec<Evidence>) -> BuiltBlock {
        let inputs = BlockInputs {
            proposer: self.proposer(),
            now_ms: self.parent.timestamp_ms + 10,
            candidates: txs,
            last_commit: self.last_commit.clone(),
            evidence,
        };
        build_block(&self.state, &self.chain, &self.parent, inputs).unwrap()
    }

    /// A member of the set of the next height.
    fn proposer(&self) -> tally_ledger::Address {
        let state = self.state.validator_state().unwrap();
        state.current.validators()[0].address
    }

    fn execute(&self, block: &Block) -> Result<tally_ledger::ExecutedBlock, BlockError> {
        execute_block(
            &self.state,
            &self.chain,
            &self.parent,
            block,
            SigCheck::Verify,
        )
    }

    /// Checks `built` as another node would, applies it, and certifies it
    /// with the precommits of `signers` (devnet key names).
    fn apply(&mut self, built: BuiltBlock, signers: &[&str]) {
        let executed = self.execute(&built.block).unwrap();
        assert_eq!(executed, built.executed, "proposer and validator agree");
        self.state.apply(&built.block, &executed).unwrap();
        let header = &built.block.header;
        self.last_commit = Some(commit(&self.chain, header.height, executed.hash, signers));
        self.parent = BlockMeta {
            height: header.height,
            hash: executed.hash,
            timestamp_ms: header.timestamp_ms,
        };
    }

    fn vote(&mut self, who: usize, change: &ValidatorChange) -> SignedTransaction {
        let key = devnet_key(&format!("validator-{who}"));
        let nonce = self.nonces[who];
        self.nonces[who] += 1;
        Transaction::validator_vote(
            self.chain.genesis.chain_id.clone(),
            key.address(),
            change.clone(),
            None,
            0,
            nonce,
        )
        .sign(&key, &self.chain.genesis_hash)
    }
}

fn precommit(chain: &ChainContext, height: u64, round: u32, hash: tally_ledger::Hash) -> Vote {
    Vote {
        chain_id: chain.genesis.chain_id.clone(),
        height,
        round,
        kind: VoteKind::Precommit,
        block_hash: Some(hash),
    }
}

fn commit(chain: &ChainContext, height: u64, hash: tally_ledger::Hash, signers: &[&str]) -> Commit {
    let vote = precommit(chain, height, 0, hash);
    Commit {
        height,
        round: 0,
        block_hash: hash,
        signatures: signers
            .iter()
            .map(|name| CommitSignature {
                validator: devnet_key(name).address(),
                signature: vote.sign(&devnet_key(name), &chain.genesis_hash),
            })
            .collect(),
    }
}

const ALL: [&str; 4] = ["validator-0", "validator-1", "validator-2", "validator-3"];

fn add_validator_4() -> ValidatorChange {
    ValidatorChange::Add {
        name: "validator-4".into(),
        address: devnet_key("validator-4").address(),
        power: 1,
        peer: "/ip4/127.0.0.1/tcp/7804/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
            .into(),
    }
}

#[test]
fn block_2_on_carries_the_parents_commit_and_block_1_none() {
    let mut run = Run::new();
    let first = run.build(vec![], vec![]);
    assert_eq!(first.block.last_commit, None);
    let mut with_commit = first.block.clone();
    with_commit.last_commit = Some(commit(&run.chain, 0, run.chain.genesis_hash, &ALL));
    with_commit.header.last_commit_hash = tally_ledger::last_commit_hash(&with_commit.last_commit);
    assert!(matches!(
        run.execute(&with_commit),
        Err(BlockError::LastCommit(_))
    ));
    run.apply(first, &ALL[..3]);

    let second = run.build(vec![], vec![]);
    assert_eq!(second.block.last_commit, run.last_commit);
    assert!(run.execute(&second.block).is_ok());
    // Each way of getting it wrong, with the header naming the body.
    let parent = run.parent;
    let cases: Vec<(&str, Option<Commit>)> = vec![
        ("missing", None),
        (
            "short of a quorum",
            Some(commit(&run.chain, 1, parent.hash, &ALL[..2])),
        ),
        (
            "for another block",
            Some(commit(
                &run.chain,
                1,
                tally_ledger::Hash::digest(b"x"),
                &ALL,
            )),
        ),
        (
            "signed by an outsider",
            Some(commit(
                &run.chain,
                1,
                parent.hash,
                &["validator-0", "validator-1", "mallory"],
            )),
        ),
    ];
    for (what, last_commit) in cases {
        let mut block = second.block.clone();
        block.header.last_commit_hash = tally_ledger::last_commit_hash(&last_commit);
        block.last_commit = last_commit;
        assert!(
            matches!(run.execute(&block), Err(BlockError::LastCommit(_))),
            "{what}"
        );
    }
    // A body that the header does not name.
    let mut swapped = second.block.clone();
    swapped.last_commit = Some(commit(&run.chain, 1, parent.hash, &ALL));
    assert!(matches!(run.execute(&swapped), Err(BlockError::Header(_))));
}

#[test]
fn a_voted_change_is_in_force_two_heights_after_the_block_that_completes_it() {
    let mut run = Run::new();
    let first = run.build(vec![], vec![]);
    run.apply(first, &ALL);
    let four = run.chain.validators.clone();
    let change = add_validator_4();
    let votes = vec![
        run.vote(0, &change),
        run.vote(1, &change),
        run.vote(2, &change),
    ];
    let block_2 = run.build(votes, vec![]);
    assert!(block_2.rejected.is_empty(), "{:?}", block_2.rejected);
    assert_eq!(block_2.block.txs.len(), 3);
    assert_eq!(
        block_2.executed.validator_outcomes[0].result,
        ChangeResult::Completed {
            effective_height: 4
        }
    );
    assert!(block_2.executed.validators_changed);
    assert_eq!(block_2.block.header.validators_hash, four.hash());
    assert_eq!(block_2.block.header.next_validators_hash, four.hash());
    run.apply(block_2, &ALL);

    let five = run.state.validator_set_at(4).unwrap().unwrap();
    assert_eq!(five.validators().len(), 5);
    let block_3 = run.build(vec![], vec![]);
    assert_eq!(block_3.block.header.validators_hash, four.hash());
    assert_eq!(
        block_3.block.header.next_validators_hash,
        five.hash(),
        "header 3 announces the set of height 4"
    );
    run.apply(block_3, &ALL);
    let block_4 = run.build(vec![], vec![]);
    assert_eq!(block_4.block.header.validators_hash, five.hash());
    // Block 3 was signed by the old set: its commit is checked against it,
    // so validator-4 cannot sign it.
    let mut foreign = block_4.block.clone();
    foreign.last_commit = Some(commit(
        &run.chain,
        3,
        run.parent.hash,
        &["validator-0", "validator-1", "validator-4"],
    ));
    foreign.header.last_commit_hash = tally_ledger::last_commit_hash(&foreign.last_commit);
    assert!(matches!(
        run.execute(&foreign),
        Err(BlockError::LastCommit(_))
    ));
    // Block 4 is signed by the new set: 4 of 5 is a quorum, 3 is not.
    run.apply(
        block_4,
        &["validator-0", "validator-1", "validator-2", "validator-4"],
    );
    assert!(run.execute(&run.build(vec![], vec![]).block).is_ok());
    let short = commit(&run.chain, 4, run.parent.hash, &ALL[..3]);
    run.last_commit = Some(short);
    assert!(matches!(
        run.execute(&run.build(vec![], vec![]).block),
        Err(BlockError::LastCommit(_))
    ));
}

#[test]
fn a_vote_the_guard_refuses_is_left_out_by_the_proposer_and_invalidates_a_block() {
    let mut run = Run::new();
    let first = run.build(vec![], vec![]);
    // Only three validators signed block 1: adding a fifth would leave the
    // live ones with 3 of 5.
    run.apply(first, &ALL[..3]);
    let vote = run.vote(0, &add_validator_4());
    let built = run.build(vec![vote.clone()], vec![]);
    assert!(built.block.txs.is_empty());
    assert!(matches!(
        &built.rejected[0].1,
        TxError::Validator(e) if matches!(**e, ValidatorChangeError::LivenessLost { live: 3, total: 5, needed: 4 })
    ));
    // A block that holds it anyway is invalid.
    let mut forced = built.block.clone();
    forced.txs = vec![vote.clone()];
    forced.header.tx_count = 1;
    forced.header.tx_root = tally_ledger::tx_root(&[vote.id()]);
    assert!(matches!(
        run.execute(&forced),
        Err(BlockError::Tx {
            error: TxError::Validator(_),
            ..
        })
    ));
    // An outsider's vote is refused for what it is.
    let mallory = devnet_key("mallory");
    let outsider = Transaction::validator_vote(
        run.chain.genesis.chain_id.clone(),
        mallory.address(),
        add_validator_4(),
        None,
        0,
        0,
    )
    .sign(&mallory, &run.chain.genesis_hash);
    let built = run.build(vec![outsider], vec![]);
    assert!(matches!(
        &built.rejected[0].1,
        TxError::Validator(e) if matches!(**e, ValidatorChangeError::NotAValidator(_))
    ));
}

fn duplicate_vote(run: &Run, who: &str, height: u64) -> Evidence {
    let key = devnet_key(who);
    let vote = |tag: &[u8]| {
        SignedVote::sign(
            Vote {
                chain_id: run.chain.genesis.chain_id.clone(),
                height,
                round: 0,
                kind: VoteKind::Prevote,
                block_hash: Some(tally_ledger::Hash::digest(tag)),
            },
            &key,
            &run.chain.genesis_hash,
        )
    };
    Evidence::DuplicateVote(DuplicateVoteEvidence {
        first: vote(b"a"),
        second: vote(b"b"),
    })
}

#[test]
fn evidence_is_recorded_once_when_valid_and_invalidates_a_block_otherwise() {
    let mut run = Run::new();
    let first = run.build(vec![], vec![]);
    run.apply(first, &ALL);
    let good = duplicate_vote(&run, "validator-3", 1);
    let built = run.build(vec![], vec![good.clone()]);
    assert_eq!(built.block.evidence, vec![good.clone()]);
    // The proposer leaves out what is invalid; a block carrying it is invalid.
    let mut forged = duplicate_vote(&run, "validator-2", 1);
    if let Evidence::DuplicateVote(e) = &mut forged {
        e.second.signature.0[0] ^= 1;
    }
    let cases = [
        ("a forged signature", forged),
        ("an outsider", duplicate_vote(&run, "mallory", 1)),
        ("this height", duplicate_vote(&run, "validator-1", 2)),
        (
            "no conflict",
            match duplicate_vote(&run, "validator-1", 1) {
                Evidence::DuplicateVote(mut e) => {
                    e.second = e.first.clone();
                    Evidence::DuplicateVote(e)
                }
                other => other,
            },
        ),
    ];
    for (what, bad) in cases {
        let left_out = run.build(vec![], vec![bad.clone()]);
        assert!(left_out.block.evidence.is_empty(), "{what}");
        let mut block = left_out.block.clone();
        block.evidence = vec![bad];
        block.header.evidence_hash = tally_ledger::evidence_hash(&block.evidence);
        assert!(
            matches!(
                run.execute(&block),
                Err(BlockError::Evidence { index: 0, .. })
            ),
            "{what}"
        );
    }
    // Twice in one block.
    let mut twice = built.block.clone();
    twice.evidence = vec![good.clone(), good.clone()];
    twice.header.evidence_hash = tally_ledger::evidence_hash(&twice.evidence);
    assert!(matches!(
        run.execute(&twice),
        Err(BlockError::Evidence { index: 1, .. })
    ));
    run.apply(built, &ALL);
    let id = good.id();
    assert_eq!(
        run.state.recorded_offence(&good.offence()).unwrap(),
        Some(id)
    );
    assert_eq!(run.state.recorded_evidence(&id).unwrap().unwrap().height, 2);
    // Recorded once: a later block cannot record the offence again, even
    // with the two votes swapped.
    let swapped = match good {
        Evidence::DuplicateVote(e) => Evidence::DuplicateVote(DuplicateVoteEvidence {
            first: e.second,
            second: e.first,
        }),
        other => other,
    };
    let again = run.build(vec![], vec![swapped.clone()]);
    assert!(again.block.evidence.is_empty());
    let mut block = again.block.clone();
    block.evidence = vec![swapped];
    block.header.evidence_hash = tally_ledger::evidence_hash(&block.evidence);
    assert!(matches!(
        run.execute(&block),
        Err(BlockError::Evidence { .. })
    ));
}

#[test]
fn a_removal_may_cite_evidence_against_the_validator_it_removes_only() {
    let mut run = Run::new();
    let first = run.build(vec![], vec![]);
    run.apply(first, &ALL);
    let evidence = duplicate_vote(&run, "validator-3", 1);
    let built = run.build(vec![], vec![evidence.clone()]);
    run.apply(built, &ALL);
    let cite = |run: &mut Run, who: usize, removed: &str, id| {
        let key = devnet_key(&format!("validator-{who}"));
        let nonce = run.nonces[who];
        run.nonces[who] += 1;
        Transaction::validator_vote(
            run.chain.genesis.chain_id.clone(),
            key.address(),
            ValidatorChange::Remove {
                address: devnet_key(removed).address(),
            },
            Some(id),
            0,
            nonce,
        )
        .sign(&key, &run.chain.genesis_hash)
    };
    let wrong = cite(&mut run, 0, "validator-2", evidence.id());
    let built = run.build(vec![wrong], vec![]);
    assert!(matches!(
        &built.rejected[0].1,
        TxError::Validator(e) if matches!(**e, ValidatorChangeError::EvidenceMismatch { .. })
    ));
    run.nonces[0] -= 1;
    let unknown = cite(
        &mut run,
        0,
        "validator-3",
        tally_ledger::Hash::digest(b"none"),
    );
    assert!(matches!(
        &run.build(vec![unknown], vec![]).rejected[0].1,
        TxError::Validator(e) if matches!(**e, ValidatorChangeError::EvidenceNotFound(_))
    ));
    run.nonces[0] -= 1;
    let right: Vec<_> = (0..3)
        .map(|who| cite(&mut run, who, "validator-3", evidence.id()))
        .collect();
    let built = run.build(right, vec![]);
    assert!(built.rejected.is_empty(), "{:?}", built.rejected);
    assert!(matches!(
        built.executed.validator_outcomes[0].result,
        ChangeResult::Completed { .. }
    ));
}

fn set_of(names: &[&str]) -> Vec<tally_ledger::GenesisValidator> {
    names
        .iter()
        .map(|name| tally_ledger::GenesisValidator {
            name: (*name).to_owned(),
            address: devnet_key(name).address(),
            power: 1,
        })
        .collect()
}

#[test]
fn an_operator_override_replaces_the_set_at_its_height_and_drops_what_votes_scheduled() {
    let mut run = Run::new();
    let first = run.build(vec![], vec![]);
    run.apply(first, &ALL);
    // Block 2 completes the addition of validator-4 (in force at 4) and
    // opens a removal with one vote.
    let change = add_validator_4();
    let removal = ValidatorChange::Remove {
        address: devnet_key("validator-3").address(),
    };
    let votes = vec![
        run.vote(0, &change),
        run.vote(1, &change),
        run.vote(2, &change),
        run.vote(0, &removal),
    ];
    let block_2 = run.build(votes, vec![]);
    assert_eq!(block_2.block.txs.len(), 4);
    run.apply(block_2, &ALL);
    assert_eq!(
        run.state
            .validator_set_at(4)
            .unwrap()
            .unwrap()
            .validators()
            .len(),
        5
    );

    // The chain halts at 2; its operators override the set from height 3.
    let plain = run.chain.clone();
    let two = set_of(&["validator-0", "validator-1"]);
    run.chain = plain
        .clone()
        .with_overrides(vec![(3, two.clone())])
        .unwrap();
    let two = tally_ledger::ValidatorSet::new(two);
    let block_3 = run.build(vec![], vec![]);
    assert_eq!(block_3.block.header.validators_hash, two.hash());
    assert_eq!(
        block_3.block.header.next_validators_hash,
        two.hash(),
        "the set a vote scheduled for height 4 never takes effect"
    );
    assert!(block_3.executed.overridden);
    assert!(block_3.executed.validators_changed);
    assert!(
        block_3.executed.validators.open.is_empty(),
        "open votes are dropped"
    );
    // A node without the override refuses the block: it names another set.
    let refused = execute_block(
        &run.state,
        &plain,
        &run.parent,
        &block_3.block,
        SigCheck::Verify,
    );
    assert!(matches!(refused, Err(BlockError::Header(_))), "{refused:?}");
    // Block 3 carries block 2's commit by the old set, and is signed by the
    // new one: both of its validators make its quorum.
    run.apply(block_3, &["validator-0", "validator-1"]);
    assert_eq!(
        run.state.validator_set_since(3).unwrap(),
        Some((3, two.clone()))
    );
    assert_eq!(
        run.state.validator_set_since(4).unwrap(),
        Some((3, two.clone())),
        "the set announced for height 4 is forgotten"
    );
    let block_4 = run.build(vec![], vec![]);
    assert!(!block_4.executed.overridden);
    assert_eq!(block_4.block.header.validators_hash, two.hash());
    let mut foreign = block_4.block.clone();
    foreign.last_commit = Some(commit(
        &run.chain,
        3,
        run.parent.hash,
        &["validator-2", "validator-3"],
    ));
    foreign.header.last_commit_hash = tally_ledger::last_commit_hash(&foreign.last_commit);
    assert!(matches!(
        run.execute(&foreign),
        Err(BlockError::LastCommit(_))
    ));
    run.apply(block_4, &["validator-0", "validator-1"]);
    // A validator outside the override set no longer votes on changes.
    let late = run.vote(2, &removal);
    let block_5 = run.build(vec![late], vec![]);
    assert!(
        matches!(
            &block_5.rejected[0].1,
            TxError::Validator(e) if matches!(**e, ValidatorChangeError::NotAValidator(_))
        ),
        "{:?}",
        block_5.rejected
    );
}

#[test]
fn overrides_are_checked_and_named_by_their_content() {
    let plain = ChainContext::new(devnet_genesis(4, "tally-devnet").unwrap());
    assert_eq!(plain.overrides_id(), None);
    let two = set_of(&["validator-0", "validator-1"]);
    assert_eq!(
        plain
            .clone()
            .with_overrides(vec![(1, two.clone())])
            .unwrap_err(),
        tally_ledger::OverrideError::TooLow(1)
    );
    assert_eq!(
        plain
            .clone()
            .with_overrides(vec![(5, two.clone()), (5, two.clone())])
            .unwrap_err(),
        tally_ledger::OverrideError::TooClose(5, 5)
    );
    assert_eq!(
        plain
            .clone()
            .with_overrides(vec![(6, two.clone()), (5, two.clone())])
            .unwrap_err(),
        tally_ledger::OverrideError::TooClose(5, 6)
    );
    assert!(plain
        .clone()
        .with_overrides(vec![(5, two.clone()), (7, two.clone())])
        .is_ok());
    assert!(matches!(
        plain.clone().with_overrides(vec![(5, Vec::new())]),
        Err(tally_ledger::OverrideError::BadSet { height: 5, .. })
    ));
    let mut strict = devnet_genesis(4, "tally-devnet").unwrap();
    strict.params.min_validators = 3;
    let strict = ChainContext::new(strict);
    assert!(matches!(
        strict.with_overrides(vec![(5, two.clone())]),
        Err(tally_ledger::OverrideError::BadSet { height: 5, ref reason }) if reason.contains("minimum 3")
    ));
    let twice = set_of(&["validator-0", "validator-0"]);
    assert!(matches!(
        plain.clone().with_overrides(vec![(5, twice)]),
        Err(tally_ledger::OverrideError::BadSet { height: 5, .. })
    ));
    let a = plain
        .clone()
        .with_overrides(vec![(5, two.clone())])
        .unwrap();
    let same = plain
        .clone()
        .with_overrides(vec![(5, two.clone())])
        .unwrap();
    let other_height = plain
        .clone()
        .with_overrides(vec![(6, two.clone())])
        .unwrap();
    let three = set_of(&["validator-0", "validator-1", "validator-2"]);
    let other_set = plain.clone().with_overrides(vec![(5, three)]).unwrap();
    assert!(a.overrides_id().is_some());
    assert_eq!(a.overrides_id(), same.overrides_id());
    assert_ne!(a.overrides_id(), other_height.overrides_id());
    assert_ne!(a.overrides_id(), other_set.overrides_id());
}
