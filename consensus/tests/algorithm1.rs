//! One test per rule of Algorithm 1 (arXiv:1807.04938); each names its lines.
//! Four validators of power 1 (f = 1, quorum 3); the proposer of height 1,
//! round r is validator-(1 + r) mod 4.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use tally_consensus::{
    Action, Config, Consensus, Input, OwnVotes, SignState, SignStep, Step, Timeout, TimeoutKind,
};
use tally_ledger::devnet::devnet_genesis;
use tally_ledger::{
    devnet_key, Block, ChainContext, ConsensusMessage, Evidence, Hash, Header, Keypair,
    ProposalCore, SignedProposal, SignedVote, Verified, Vote, VoteKind, BLOCK_VERSION,
};

struct Net {
    chain: ChainContext,
}

impl Net {
    fn new() -> Net {
        Net {
            chain: ChainContext::new(devnet_genesis(4, "tally-devnet").unwrap()),
        }
    }

    fn key(&self, i: usize) -> Keypair {
        devnet_key(&format!("validator-{i}"))
    }

    /// Validator `me` with no past, at the start of height 1.
    fn started(&self, me: usize) -> Consensus {
        let mut node = self.node(Some(me), None);
        node.handle(self.start(1));
        node
    }

    /// The input that starts `height` with the devnet validators.
    fn start(&self, height: u64) -> Input {
        Input::StartHeight {
            height,
            validators: self.chain.validators.clone(),
        }
    }

    fn node(&self, me: Option<usize>, record: Option<SignState>) -> Consensus {
        Consensus::new(
            Config::default(),
            self.chain.genesis.chain_id.clone(),
            self.chain.genesis_hash,
            self.chain.validators.clone(),
            me.map(|i| self.key(i)),
            record,
            None,
        )
    }

    /// A distinct block for height 1 (its contents do not matter here:
    /// validity is the shell's answer).
    fn block(&self, tag: &str) -> Block {
        let header = Header {
            version: BLOCK_VERSION,
            chain_id: self.chain.genesis.chain_id.clone(),
            height: 1,
            parent_hash: self.chain.genesis_hash,
            // Blocks differ by timestamp; the body (none) matches the header.
            timestamp_ms: u64::from_le_bytes(
                Hash::digest(tag.as_bytes()).0[..8].try_into().unwrap(),
            ),
            proposer: self.key(1).address(),
            tx_root: tally_ledger::tx_root(&[]),
            tx_count: 0,
            state_root: Hash::ZERO,
            validators_hash: Hash::ZERO,
            next_validators_hash: Hash::ZERO,
            last_commit_hash: tally_ledger::last_commit_hash(&None),
            evidence_hash: tally_ledger::evidence_hash(&[]),
        };
        Block {
            header,
            txs: vec![],
            last_commit: None,
            evidence: vec![],
        }
    }

    fn proposal(&self, round: u32, block: &Block, valid_round: Option<u32>) -> Input {
        let p = self.signed_proposal(round, block, valid_round);
        self.message(ConsensusMessage::Proposal(Box::new(p)))
    }

    /// The proposal of `round`'s proposer, signed but not verified.
    fn signed_proposal(
        &self,
        round: u32,
        block: &Block,
        valid_round: Option<u32>,
    ) -> SignedProposal {
        let proposer = (1 + round as usize) % 4;
        let core = ProposalCore {
            chain_id: self.chain.genesis.chain_id.clone(),
            height: 1,
            round,
            valid_round,
            block_hash: block.hash(),
        };
        SignedProposal::sign(
            core,
            block.clone(),
            &self.key(proposer),
            &self.chain.genesis_hash,
        )
    }

    /// A message as the host's network edge hands it over: verified.
    fn message(&self, message: ConsensusMessage) -> Input {
        Input::Message(self.verified(message))
    }

    fn verified(&self, message: ConsensusMessage) -> Verified<ConsensusMessage> {
        Verified::<ConsensusMessage>::check(message, &self.chain.signers()).unwrap()
    }

    fn signed_vote(
        &self,
        who: usize,
        round: u32,
        kind: VoteKind,
        value: Option<&Block>,
    ) -> SignedVote {
        let vote = Vote {
            chain_id: self.chain.genesis.chain_id.clone(),
            height: 1,
            round,
            kind,
            block_hash: value.map(Block::hash),
        };
        SignedVote::sign(vote, &self.key(who), &self.chain.genesis_hash)
    }

    fn vote(&self, who: usize, round: u32, kind: VoteKind, value: Option<&Block>) -> Input {
        self.message(ConsensusMessage::Vote(
            self.signed_vote(who, round, kind, value),
        ))
    }

    fn valid(&self, block: &Block, valid: bool) -> Input {
        Input::BlockValidated {
            height: 1,
            block_hash: block.hash(),
            valid,
        }
    }
}

fn feed(node: &mut Consensus, inputs: Vec<Input>) -> Vec<Action> {
    inputs.into_iter().flat_map(|i| node.handle(i)).collect()
}

/// The votes this node broadcast, as (round, kind, value).
fn my_votes(actions: &[Action]) -> Vec<(u32, VoteKind, Option<Hash>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(ConsensusMessage::Vote(v)) => {
                Some((v.vote.round, v.vote.kind, v.vote.block_hash))
            }
            _ => None,
        })
        .collect()
}

fn scheduled(actions: &[Action], kind: TimeoutKind) -> Vec<Timeout> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ScheduleTimeout { timeout, .. } if timeout.kind == kind => Some(*timeout),
            _ => None,
        })
        .collect()
}

/// A fired timeout of height 1.
fn timeout(kind: TimeoutKind, round: u32) -> Input {
    Input::Timeout(Timeout {
        kind,
        height: 1,
        round,
    })
}

/// The last signing record among `actions` (what the shell wrote last).
fn last_sign_state(actions: &[Action]) -> SignState {
    actions
        .iter()
        .rev()
        .find_map(|x| match x {
            Action::PersistSignState(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap()
}

/// Validator 0 at height 1 with proposal `a` in round 0 validated and prevoted.
fn prevoted(net: &Net, a: &Block) -> (Consensus, Vec<Action>) {
    let mut node = net.node(Some(0), None);
    let actions = feed(
        &mut node,
        vec![net.start(1), net.proposal(0, a, None), net.valid(a, true)],
    );
    (node, actions)
}

#[test]
fn lines_11_to_19_the_proposer_gets_a_value_and_proposes_it() {
    let net = Net::new();
    let mut node = net.node(Some(1), None);
    let actions = node.handle(net.start(1));
    assert!(
        actions.contains(&Action::BuildProposal {
            height: 1,
            round: 0
        }),
        "{actions:?}"
    );
    let a = net.block("a");
    let actions = node.handle(Input::ProposalBlock {
        height: 1,
        round: 0,
        block: Box::new(a.clone()),
    });
    let persist = actions
        .iter()
        .position(|x| matches!(x, Action::PersistSignState(s) if s.step == SignStep::Propose));
    let send = actions.iter().position(
        |x| matches!(x, Action::Broadcast(ConsensusMessage::Proposal(p)) if p.block == a),
    );
    assert!(
        persist.unwrap() < send.unwrap(),
        "the record is persisted before the proposal leaves"
    );
    // Its own proposal is valid (it built it), so it prevotes it (line 24).
    assert_eq!(
        my_votes(&actions),
        vec![(0, VoteKind::Prevote, Some(a.hash()))]
    );
}

#[test]
fn line_21_a_non_proposer_schedules_the_propose_timeout() {
    let net = Net::new();
    let mut node = net.node(Some(0), None);
    let actions = node.handle(net.start(1));
    assert_eq!(
        scheduled(&actions, TimeoutKind::Propose),
        vec![Timeout {
            kind: TimeoutKind::Propose,
            height: 1,
            round: 0
        }]
    );
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::BuildProposal { .. })));
}

#[test]
fn line_22_a_valid_proposal_is_prevoted_after_validation() {
    let net = Net::new();
    let a = net.block("a");
    let mut node = net.node(Some(0), None);
    let actions = feed(&mut node, vec![net.start(1), net.proposal(0, &a, None)]);
    assert!(actions.contains(&Action::ValidateBlock {
        height: 1,
        block: a.clone()
    }));
    assert!(
        my_votes(&actions).is_empty(),
        "no prevote before valid(v) is known"
    );
    let actions = node.handle(net.valid(&a, true));
    assert_eq!(
        my_votes(&actions),
        vec![(0, VoteKind::Prevote, Some(a.hash()))]
    );
    assert_eq!(node.step(), Step::Prevote);
}

#[test]
fn line_26_an_invalid_proposal_gets_a_nil_prevote() {
    let net = Net::new();
    let a = net.block("a");
    let mut node = net.node(Some(0), None);
    let actions = feed(
        &mut node,
        vec![
            net.start(1),
            net.proposal(0, &a, None),
            net.valid(&a, false),
        ],
    );
    assert_eq!(my_votes(&actions), vec![(0, VoteKind::Prevote, None)]);
}

#[test]
fn line_22_a_proposal_from_the_wrong_proposer_is_ignored() {
    let net = Net::new();
    let a = net.block("a");
    let mut node = net.started(0);
    // Round 1's proposer (validator-2) proposing in round 0.
    let core = ProposalCore {
        chain_id: net.chain.genesis.chain_id.clone(),
        height: 1,
        round: 0,
        valid_round: None,
        block_hash: a.hash(),
    };
    let p = SignedProposal::sign(core, a.clone(), &net.key(2), &net.chain.genesis_hash);
    let actions = node.handle(net.message(ConsensusMessage::Proposal(Box::new(p))));
    assert!(actions.is_empty(), "{actions:?}");
}

/// Locks validator 0 on `a` in round 0 and moves it to round 1.
fn locked_on(net: &Net, a: &Block) -> Consensus {
    let (mut node, _) = prevoted(net, a);
    let actions = feed(
        &mut node,
        vec![
            net.vote(1, 0, VoteKind::Prevote, Some(a)),
            net.vote(2, 0, VoteKind::Prevote, Some(a)),
        ],
    );
    assert_eq!(
        my_votes(&actions),
        vec![(0, VoteKind::Precommit, Some(a.hash()))]
    );
    assert_eq!(node.locked(), Some((0, a.hash())));
    node.handle(timeout(TimeoutKind::Precommit, 0));
    assert_eq!(node.round(), 1);
    node
}

#[test]
fn line_23_a_validator_locked_on_another_value_prevotes_nil() {
    let net = Net::new();
    let (a, b) = (net.block("a"), net.block("b"));
    let mut node = locked_on(&net, &a);
    let actions = feed(
        &mut node,
        vec![net.proposal(1, &b, None), net.valid(&b, true)],
    );
    assert_eq!(my_votes(&actions), vec![(1, VoteKind::Prevote, None)]);
}

#[test]
fn line_23_a_validator_locked_on_the_proposed_value_prevotes_it() {
    let net = Net::new();
    let a = net.block("a");
    let mut node = locked_on(&net, &a);
    let actions = node.handle(net.proposal(1, &a, Some(0)));
    assert_eq!(
        my_votes(&actions),
        vec![(1, VoteKind::Prevote, Some(a.hash()))]
    );
}

#[test]
fn lines_28_to_30_a_later_polka_releases_an_older_lock() {
    let net = Net::new();
    let (a, b) = (net.block("a"), net.block("b"));
    let mut node = locked_on(&net, &a); // locked on a at round 0, now in round 1
                                        // 2f+1 prevoted b in round 1 (this node missed round 1's proposal) ...
    let polka: Vec<Input> = (1..4)
        .map(|v| net.vote(v, 1, VoteKind::Prevote, Some(&b)))
        .collect();
    feed(&mut node, polka);
    // ... and round 2's proposer re-proposes b with valid round 1, with one
    // more validator already in round 2: f+1 senders move this node there.
    let actions = feed(
        &mut node,
        vec![
            net.proposal(2, &b, Some(1)),
            net.vote(1, 2, VoteKind::Prevote, Some(&b)),
            net.valid(&b, true),
        ],
    );
    assert_eq!(node.round(), 2);
    assert!(
        my_votes(&actions).contains(&(2, VoteKind::Prevote, Some(b.hash()))),
        "{actions:?}"
    );
}

#[test]
fn line_32_a_lock_newer_than_the_valid_round_holds() {
    let net = Net::new();
    let (a, b) = (net.block("a"), net.block("b"));
    let mut node = locked_on(&net, &a); // locked at round 0
                                        // A proposal of b claiming valid round 0, where there is no polka for b.
    let actions = feed(
        &mut node,
        vec![net.proposal(1, &b, Some(0)), net.valid(&b, true)],
    );
    assert!(
        my_votes(&actions).is_empty(),
        "no polka in the valid round: line 28 does not apply"
    );
    // Timeout: line 59 prevotes nil.
    let actions = node.handle(timeout(TimeoutKind::Propose, 1));
    assert_eq!(my_votes(&actions), vec![(1, VoteKind::Prevote, None)]);
}

#[test]
fn line_34_mixed_prevotes_schedule_the_prevote_timeout_once() {
    let net = Net::new();
    let a = net.block("a");
    let (mut node, _) = prevoted(&net, &a);
    let actions = feed(
        &mut node,
        vec![
            net.vote(1, 0, VoteKind::Prevote, None),
            net.vote(2, 0, VoteKind::Prevote, Some(&net.block("c"))),
        ],
    );
    assert_eq!(scheduled(&actions, TimeoutKind::Prevote).len(), 1);
    let actions = node.handle(net.vote(3, 0, VoteKind::Prevote, None));
    assert!(
        scheduled(&actions, TimeoutKind::Prevote).is_empty(),
        "only the first time"
    );
}

#[test]
fn line_36_a_polka_for_the_proposal_locks_and_precommits() {
    let net = Net::new();
    let a = net.block("a");
    let (mut node, _) = prevoted(&net, &a);
    let actions = feed(
        &mut node,
        vec![
            net.vote(1, 0, VoteKind::Prevote, Some(&a)),
            net.vote(3, 0, VoteKind::Prevote, Some(&a)),
        ],
    );
    assert_eq!(
        my_votes(&actions),
        vec![(0, VoteKind::Precommit, Some(a.hash()))]
    );
    assert_eq!(node.locked(), Some((0, a.hash())));
    // The record persisted before that precommit carries the new lock.
    let record = last_sign_state(&actions);
    assert_eq!(
        (record.step, record.locked),
        (SignStep::Precommit, Some((0, a.hash())))
    );
}

#[test]
fn line_44_a_polka_for_nil_precommits_nil() {
    let net = Net::new();
    let mut node = net.started(0);
    let actions = node.handle(timeout(TimeoutKind::Propose, 0));
    assert_eq!(my_votes(&actions), vec![(0, VoteKind::Prevote, None)]);
    let actions = feed(
        &mut node,
        vec![
            net.vote(1, 0, VoteKind::Prevote, None),
            net.vote(2, 0, VoteKind::Prevote, None),
        ],
    );
    assert_eq!(my_votes(&actions), vec![(0, VoteKind::Precommit, None)]);
    assert_eq!(node.step(), Step::Precommit);
}

#[test]
fn line_47_mixed_precommits_schedule_the_precommit_timeout() {
    let net = Net::new();
    let a = net.block("a");
    let mut node = net.started(0);
    let actions = feed(
        &mut node,
        vec![
            net.vote(1, 0, VoteKind::Precommit, None),
            net.vote(2, 0, VoteKind::Precommit, Some(&a)),
            net.vote(3, 0, VoteKind::Precommit, None),
        ],
    );
    assert_eq!(
        scheduled(&actions, TimeoutKind::Precommit),
        vec![Timeout {
            kind: TimeoutKind::Precommit,
            height: 1,
            round: 0
        }]
    );
}

#[test]
fn after_line_47_2f1_nil_precommits_start_the_next_round_at_once() {
    let net = Net::new();
    let mut node = net.started(0);
    node.handle(timeout(TimeoutKind::Propose, 0));
    let actions = feed(
        &mut node,
        vec![
            net.vote(1, 0, VoteKind::Prevote, None),
            net.vote(2, 0, VoteKind::Prevote, None),
        ],
    );
    assert_eq!(my_votes(&actions), vec![(0, VoteKind::Precommit, None)]);
    let one = node.handle(net.vote(1, 0, VoteKind::Precommit, None));
    assert_eq!(node.round(), 0, "two nil precommits are not a quorum");
    assert!(scheduled(&one, TimeoutKind::Precommit).is_empty());
    let actions = node.handle(net.vote(2, 0, VoteKind::Precommit, None));
    assert_eq!(
        (node.round(), node.step()),
        (1, Step::Propose),
        "no value can be decided in round 0: no need to wait for timeoutPrecommit"
    );
    assert_eq!(
        scheduled(&actions, TimeoutKind::Propose),
        vec![Timeout {
            kind: TimeoutKind::Propose,
            height: 1,
            round: 1
        }],
        "round 1 started (line 21)"
    );
}

#[test]
fn line_49_a_proposal_and_2f1_precommits_commit_with_a_certificate() {
    let net = Net::new();
    let a = net.block("a");
    // A full node (no key) follows and commits without signing anything.
    let mut node = net.node(None, None);
    let mut inputs = vec![net.start(1)];
    inputs.extend((1..4).map(|v| net.vote(v, 0, VoteKind::Precommit, Some(&a))));
    inputs.push(net.proposal(0, &a, None));
    let actions = feed(&mut node, inputs);
    assert!(
        !actions.iter().any(|x| matches!(x, Action::Commit { .. })),
        "not before valid(v)"
    );
    let actions = node.handle(net.valid(&a, true));
    let Some(Action::Commit { block, commit }) =
        actions.iter().find(|x| matches!(x, Action::Commit { .. }))
    else {
        panic!("expected a commit: {actions:?}")
    };
    assert_eq!(block, &a);
    let c = &net.chain;
    c.verify_commit(commit, 1, &a.hash()).unwrap();
    assert_eq!(node.step(), Step::Decided);
    assert!(!actions
        .iter()
        .any(|x| matches!(x, Action::PersistSignState(_) | Action::Broadcast(_))));
}

#[test]
fn line_49_commits_in_an_earlier_round_too() {
    let net = Net::new();
    let a = net.block("a");
    let (mut node, _) = prevoted(&net, &a);
    node.handle(timeout(TimeoutKind::Precommit, 0));
    assert_eq!(node.round(), 1);
    let actions = feed(
        &mut node,
        (1..4)
            .map(|v| net.vote(v, 0, VoteKind::Precommit, Some(&a)))
            .collect(),
    );
    assert!(actions
        .iter()
        .any(|x| matches!(x, Action::Commit { commit, .. } if commit.round == 0)));
}

#[test]
fn line_55_f_plus_one_in_a_later_round_moves_there() {
    let net = Net::new();
    let mut node = net.started(0);
    node.handle(net.vote(1, 5, VoteKind::Prevote, None));
    assert_eq!(node.round(), 0, "one validator (f) is not enough");
    node.handle(net.vote(2, 5, VoteKind::Precommit, None));
    assert_eq!((node.round(), node.step()), (5, Step::Propose));
}

#[test]
fn lines_57_61_65_timeouts_act_only_in_their_round_and_step() {
    let net = Net::new();
    let mut node = net.started(0);
    let stale = node.handle(timeout(TimeoutKind::Propose, 3));
    assert!(my_votes(&stale).is_empty());
    let early = node.handle(timeout(TimeoutKind::Prevote, 0));
    assert!(my_votes(&early).is_empty(), "line 61 needs step prevote");
    let a = node.handle(timeout(TimeoutKind::Propose, 0));
    assert_eq!(my_votes(&a), vec![(0, VoteKind::Prevote, None)]);
    let b = node.handle(timeout(TimeoutKind::Prevote, 0));
    assert_eq!(my_votes(&b), vec![(0, VoteKind::Precommit, None)]);
    let c = node.handle(timeout(TimeoutKind::Precommit, 0));
    assert_eq!((node.round(), node.step()), (1, Step::Propose));
    // Round 1's timeout is longer: timeouts grow with the round.
    let after = c.iter().find_map(|x| match x {
        Action::ScheduleTimeout { after_ms, .. } => Some(*after_ms),
        _ => None,
    });
    assert_eq!(
        after,
        Some(Config::default().propose_timeout_ms + Config::default().timeout_delta_ms)
    );
}

#[test]
fn an_equivocating_validator_is_caught_with_both_signed_votes() {
    let net = Net::new();
    let (a, b) = (net.block("a"), net.block("b"));
    let mut node = net.started(0);
    node.handle(net.vote(2, 0, VoteKind::Prevote, Some(&a)));
    let actions = node.handle(net.vote(2, 0, VoteKind::Prevote, Some(&b)));
    let evidence = actions
        .iter()
        .find_map(|x| match x {
            Action::Evidence(e @ Evidence::DuplicateVote(_)) => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    let chain = &net.chain;
    assert_eq!(
        evidence.check(
            &chain.validators,
            &chain.genesis.chain_id,
            &chain.genesis_hash
        ),
        Ok(())
    );
    assert_eq!(evidence.offence().validator, net.key(2).address());
    assert_eq!(
        node.votes().total(0, VoteKind::Prevote),
        1,
        "the second vote is not counted"
    );
    let again = node.handle(net.vote(2, 0, VoteKind::Prevote, None));
    assert!(
        !again.iter().any(|x| matches!(x, Action::Evidence(_))),
        "reported once"
    );
}

#[test]
fn a_proposer_that_proposes_two_blocks_in_a_round_is_caught() {
    let net = Net::new();
    let (a, b, c) = (net.block("a"), net.block("b"), net.block("c"));
    let mut node = net.started(0);
    node.handle(net.proposal(0, &a, None));
    let actions = node.handle(net.proposal(0, &b, None));
    let evidence: Vec<&Evidence> = actions
        .iter()
        .filter_map(|x| match x {
            Action::Evidence(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(evidence.len(), 1, "{actions:?}");
    let chain = &net.chain;
    assert_eq!(
        evidence[0].check(
            &chain.validators,
            &chain.genesis.chain_id,
            &chain.genesis_hash
        ),
        Ok(())
    );
    let offence = evidence[0].offence();
    assert_eq!((offence.height, offence.round, offence.step), (1, 0, 0));
    assert_eq!(
        offence.validator,
        net.key(1).address(),
        "round 0's proposer"
    );
    let again = node.handle(net.proposal(0, &c, None));
    assert!(
        !again.iter().any(|x| matches!(x, Action::Evidence(_))),
        "reported once a round"
    );
    // The same proposal again is no offence.
    let same = node.handle(net.proposal(0, &a, None));
    assert!(!same.iter().any(|x| matches!(x, Action::Evidence(_))));
}

/// The state machine takes only `Verified` messages, and a message from an
/// outsider, with a forged signature, or signed over another genesis cannot
/// be made into one: it cannot reach the state machine at all.
#[test]
fn votes_from_outsiders_or_with_bad_signatures_cannot_reach_the_machine() {
    let net = Net::new();
    let a = net.block("a");
    let signers = net.chain.signers();
    let vote = Vote {
        chain_id: net.chain.genesis.chain_id.clone(),
        height: 1,
        round: 0,
        kind: VoteKind::Prevote,
        block_hash: Some(a.hash()),
    };
    let outsider = SignedVote::sign(
        vote.clone(),
        &devnet_key("mallory"),
        &net.chain.genesis_hash,
    );
    let mut forged = net.signed_vote(1, 0, VoteKind::Prevote, Some(&a));
    forged.validator = net.key(2).address();
    let other_genesis =
        SignedVote::sign(vote.clone(), &net.key(3), &Hash::digest(b"another genesis"));
    let mut other_chain = vote;
    other_chain.chain_id = tally_ledger::ChainId::new("another-chain").unwrap();
    let other_chain = SignedVote::sign(other_chain, &net.key(3), &net.chain.genesis_hash);
    for bad in [outsider, forged, other_genesis, other_chain] {
        let who = bad.validator;
        let message = ConsensusMessage::Vote(bad);
        assert!(
            Verified::<ConsensusMessage>::check(message, &signers).is_err(),
            "a bad vote by {who} verified"
        );
    }
    let mut proposal = net.signed_proposal(0, &a, None);
    proposal.signature.0[5] ^= 1;
    assert!(Verified::<SignedProposal>::check(proposal, &signers).is_err());
    // The good one does verify, and counts.
    let mut node = net.started(0);
    node.handle(net.vote(1, 0, VoteKind::Prevote, Some(&a)));
    assert_eq!(node.votes().total(0, VoteKind::Prevote), 1);
}

#[test]
fn a_validator_killed_between_persisting_and_sending_never_signs_a_conflicting_vote() {
    let net = Net::new();
    let (a, b) = (net.block("a"), net.block("b"));
    let (mut node, _) = prevoted(&net, &a);
    let actions = feed(
        &mut node,
        vec![
            net.vote(1, 0, VoteKind::Prevote, Some(&a)),
            net.vote(2, 0, VoteKind::Prevote, Some(&a)),
        ],
    );
    // The shell persisted this record, then the process died before the
    // precommit it covers left the machine.
    let record = last_sign_state(&actions);
    assert_eq!(record.step, SignStep::Precommit);

    let mut restarted = net.node(Some(0), Some(record));
    let actions = restarted.handle(net.start(1));
    assert_eq!(restarted.round(), 0, "resumes in the round it signed in");
    assert_eq!(restarted.step(), Step::Precommit, "at the recorded step");
    assert_eq!(
        restarted.locked(),
        Some((0, a.hash())),
        "and keeps its lock"
    );
    // It sends the recorded prevote and precommit (the same messages) and
    // nothing else.
    assert_eq!(
        my_votes(&actions),
        vec![
            (0, VoteKind::Prevote, Some(a.hash())),
            (0, VoteKind::Precommit, Some(a.hash()))
        ]
    );
    // Round 0's messages still arrive: they must not make it sign anything
    // else for round 0 (a fresh node would prevote and precommit nil).
    let actions = feed(
        &mut restarted,
        vec![
            net.proposal(0, &a, None),
            net.valid(&a, true),
            net.vote(1, 0, VoteKind::Prevote, None),
            net.vote(2, 0, VoteKind::Prevote, None),
            net.vote(3, 0, VoteKind::Prevote, None),
        ],
    );
    assert!(
        my_votes(&actions).is_empty(),
        "signed nothing else in round 0: {:?}",
        my_votes(&actions)
    );
    // The round fails (nil precommits), and in round 1, with a different
    // proposal, the restored lock still says nil.
    feed(
        &mut restarted,
        vec![
            net.vote(1, 0, VoteKind::Precommit, None),
            net.vote(2, 0, VoteKind::Precommit, None),
            timeout(TimeoutKind::Precommit, 0),
        ],
    );
    assert_eq!(restarted.round(), 1);
    let actions = feed(
        &mut restarted,
        vec![net.proposal(1, &b, None), net.valid(&b, true)],
    );
    assert_eq!(my_votes(&actions), vec![(1, VoteKind::Prevote, None)]);
}

#[test]
fn a_validator_restarted_mid_round_completes_it_with_exactly_a_quorum_up() {
    // Validator 0 prevoted a in round 0 and was killed; validator 3 is down
    // for good. Validators 1 and 2 are still in round 0: the round needs
    // validator 0's prevote and precommit, which it must send again.
    let net = Net::new();
    let a = net.block("a");
    let (_, actions) = prevoted(&net, &a);
    let record = last_sign_state(&actions);
    assert_eq!(record.step, SignStep::Prevote);
    let mut restarted = net.node(Some(0), Some(record));
    let actions = restarted.handle(net.start(1));
    assert_eq!(
        my_votes(&actions),
        vec![(0, VoteKind::Prevote, Some(a.hash()))],
        "the recorded prevote goes out again"
    );
    // The proposal and the others' prevotes arrive again (rebroadcast):
    // with its own, a polka for a, so it locks and precommits a.
    let actions = feed(
        &mut restarted,
        vec![
            net.proposal(0, &a, None),
            net.valid(&a, true),
            net.vote(1, 0, VoteKind::Prevote, Some(&a)),
            net.vote(2, 0, VoteKind::Prevote, Some(&a)),
        ],
    );
    assert_eq!(
        my_votes(&actions),
        vec![(0, VoteKind::Precommit, Some(a.hash()))]
    );
    let actions = feed(
        &mut restarted,
        vec![
            net.vote(1, 0, VoteKind::Precommit, Some(&a)),
            net.vote(2, 0, VoteKind::Precommit, Some(&a)),
        ],
    );
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, Action::Commit { block, .. } if block.hash() == a.hash())),
        "decided in the round it was restarted in: {actions:?}"
    );
}

#[test]
fn messages_for_the_next_height_wait_until_it_starts() {
    let net = Net::new();
    let a = net.block("a");
    let mut node = net.started(0);
    node.handle(net.proposal(0, &a, None));
    node.handle(net.valid(&a, true));
    let mut early = Vote {
        chain_id: net.chain.genesis.chain_id.clone(),
        height: 2,
        round: 0,
        kind: VoteKind::Prevote,
        block_hash: None,
    };
    let v = SignedVote::sign(early.clone(), &net.key(1), &net.chain.genesis_hash);
    node.handle(net.message(ConsensusMessage::Vote(v)));
    early.height = 9;
    let far = SignedVote::sign(early, &net.key(2), &net.chain.genesis_hash);
    node.handle(net.message(ConsensusMessage::Vote(far)));
    node.handle(net.start(2));
    assert_eq!(
        node.votes().total(0, VoteKind::Prevote),
        1,
        "the height-2 vote was kept, the far one dropped"
    );
}

#[test]
fn line_22_a_proposal_whose_body_does_not_match_its_header_cannot_be_verified() {
    let net = Net::new();
    let mut a = net.block("a");
    // A transaction the header does not commit to (the block hash, which
    // covers only the header, is unchanged).
    let alice = devnet_key("alice");
    let tx = tally_ledger::Transaction::transfer(
        net.chain.genesis.chain_id.clone(),
        alice.address(),
        devnet_key("bob").address(),
        1,
        1,
        0,
    );
    a.txs.push(tx.sign(&alice, &net.chain.genesis_hash));
    let proposal = net.signed_proposal(0, &a, None);
    assert_eq!(
        Verified::<SignedProposal>::check(proposal, &net.chain.signers()),
        Err(tally_ledger::SignatureError::WrongBlock),
        "the edge refuses it, so it never reaches the state machine"
    );
}

#[test]
fn line_49_a_restarted_single_validator_decides_its_recorded_block_again() {
    // One validator (quorum 1) decides block b in round 0 and dies after
    // persisting its records but before the node committed b.
    let chain = ChainContext::new(devnet_genesis(1, "tally-devnet").unwrap());
    let key = devnet_key("validator-0");
    let new_node = |record, valid| {
        Consensus::new(
            Config::default(),
            chain.genesis.chain_id.clone(),
            chain.genesis_hash,
            chain.validators.clone(),
            Some(key.clone()),
            record,
            valid,
        )
    };
    let b = Block {
        header: Header {
            version: BLOCK_VERSION,
            chain_id: chain.genesis.chain_id.clone(),
            height: 1,
            parent_hash: chain.genesis_hash,
            timestamp_ms: 7,
            proposer: key.address(),
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
    let mut node = new_node(None, None);
    node.handle(Input::StartHeight {
        height: 1,
        validators: chain.validators.clone(),
    });
    let actions = node.handle(Input::ProposalBlock {
        height: 1,
        round: 0,
        block: Box::new(b.clone()),
    });
    let record = last_sign_state(&actions);
    let valid = actions
        .iter()
        .find_map(|a| match a {
            Action::PersistValidBlock(v) => Some(v.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (valid.round, valid.polka.len()),
        (0, 1),
        "the valid block is persisted with its polka"
    );
    let persisted_valid = actions
        .iter()
        .position(|a| matches!(a, Action::PersistValidBlock(_)))
        .unwrap();
    let precommit = actions.iter().position(|a| matches!(a, Action::Broadcast(ConsensusMessage::Vote(v)) if v.vote.kind == VoteKind::Precommit)).unwrap();
    assert!(
        persisted_valid < precommit,
        "the valid block is durable before the precommit leaves"
    );
    assert!(actions.iter().any(|a| matches!(a, Action::Commit { .. })));

    // Killed after the valid-block record but before the precommit's
    // record: it resumes at its prevote, sends it again, and the polka
    // (its own prevote, in the record) with the held block locks and
    // precommits b (line 36), and decides it (line 49), all in round 0.
    let persisted_prevote = last_sign_state(&actions[..persisted_valid]);
    assert_eq!(persisted_prevote.step, SignStep::Prevote);
    let mut restarted = new_node(Some(persisted_prevote), Some(valid.clone()));
    let actions = restarted.handle(Input::StartHeight {
        height: 1,
        validators: chain.validators.clone(),
    });
    assert_eq!(
        my_votes(&actions),
        vec![
            (0, VoteKind::Prevote, Some(b.hash())),
            (0, VoteKind::Precommit, Some(b.hash()))
        ]
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Commit { commit, .. } if commit.round == 0)),
        "{actions:?}"
    );

    // Restart: it resumes in round 0 at its recorded precommit and sends
    // it (and its prevote) again; that is 2f+1 precommits for b, whose block the valid-block
    // record holds, so it decides b in round 0 at once (line 49), signing
    // nothing new.
    let mut restarted = new_node(Some(record), Some(valid));
    let actions = restarted.handle(Input::StartHeight {
        height: 1,
        validators: chain.validators.clone(),
    });
    assert_eq!(
        my_votes(&actions),
        vec![
            (0, VoteKind::Prevote, Some(b.hash())),
            (0, VoteKind::Precommit, Some(b.hash()))
        ],
        "only the recorded prevote and precommit, again"
    );
    let decided = actions.iter().find_map(|a| match a {
        Action::Commit { block, commit } => Some((block.clone(), commit.round)),
        _ => None,
    });
    assert_eq!(decided, Some((b, 0)), "{actions:?}");
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Broadcast(ConsensusMessage::Proposal(_)) | Action::BuildProposal { .. }
        )),
        "the round-0 proposer proposes nothing new in the round it signed in: {actions:?}"
    );
}

/// Validator 2 (the proposer of round 1) sees a polka for `a` in round 0,
/// so `a` becomes its valid value; round 0 fails on nil precommits. Returns
/// what it does when round 1 starts.
fn round_1_with_valid_value(net: &Net, a: &Block) -> Vec<Action> {
    let mut node = net.started(2);
    feed(
        &mut node,
        vec![
            net.proposal(0, a, None),
            net.valid(a, true),
            net.vote(0, 0, VoteKind::Prevote, Some(a)),
            net.vote(1, 0, VoteKind::Prevote, Some(a)),
            net.vote(0, 0, VoteKind::Precommit, None),
            net.vote(1, 0, VoteKind::Precommit, None),
        ],
    );
    node.handle(timeout(TimeoutKind::Precommit, 0))
}

#[test]
fn lines_14_15_a_proposer_with_a_valid_value_proposes_it_again() {
    let net = Net::new();
    let a = net.block("a");
    let actions = round_1_with_valid_value(&net, &a);
    let proposal = actions.iter().find_map(|x| match x {
        Action::Broadcast(ConsensusMessage::Proposal(p)) => Some(p.core.clone()),
        _ => None,
    });
    assert_eq!(
        proposal.map(|p| (p.round, p.valid_round, p.block_hash)),
        Some((1, Some(0), a.hash())),
        "round 1 proposes a again with valid round 0, not a new block: {actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|x| matches!(x, Action::BuildProposal { .. })),
        "no getValue() when a valid value exists"
    );
}

#[test]
fn line_49_a_node_that_first_saw_another_proposal_still_decides_the_one_committed() {
    // The round-0 proposer (validator-1) equivocates: this node receives P1
    // first, while the others prevote and precommit P2.
    let net = Net::new();
    let (p1, p2) = (net.block("p1"), net.block("p2"));
    let mut node = net.node(Some(0), None);
    feed(
        &mut node,
        vec![
            net.start(1),
            net.proposal(0, &p1, None),
            net.valid(&p1, true),
        ],
    );
    let mut inputs = vec![net.proposal(0, &p2, None), net.valid(&p2, true)];
    inputs.extend((1..4).map(|v| net.vote(v, 0, VoteKind::Precommit, Some(&p2))));
    let actions = feed(&mut node, inputs);
    let decided = actions.iter().find_map(|a| match a {
        Action::Commit { block, .. } => Some(block.clone()),
        _ => None,
    });
    assert_eq!(decided, Some(p2));
}

#[test]
fn proposals_for_far_rounds_are_not_kept_or_executed() {
    let net = Net::new();
    let far = net.block("far");
    let mut node = net.started(0);
    let actions = node.handle(net.proposal(9, &far, None));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::ValidateBlock { .. })),
        "{actions:?}"
    );
    // It still counts as its proposer's (validator-2's) message for line
    // 55: with one more validator in round 9, the node moves there.
    node.handle(net.vote(3, 9, VoteKind::Prevote, None));
    assert_eq!(node.round(), 9);
}

#[test]
fn proposals_for_the_next_height_from_the_wrong_proposer_are_not_buffered() {
    let net = Net::new();
    let mut node = net.started(0);
    // Height 2, round 0 is validator-2's; validator-1 signs one anyway.
    let block = net.block("next");
    let core = ProposalCore {
        chain_id: net.chain.genesis.chain_id.clone(),
        height: 2,
        round: 0,
        valid_round: None,
        block_hash: block.hash(),
    };
    let wrong = SignedProposal::sign(core, block, &net.key(1), &net.chain.genesis_hash);
    node.handle(net.message(ConsensusMessage::Proposal(Box::new(wrong))));
    node.handle(net.start(2));
    assert_eq!(node.proposal_hash(0), None);
}

#[test]
fn timeouts_stop_growing_at_the_cap() {
    let net = Net::new();
    let mut node = net.started(0);
    // Far rounds: f+1 validators there move the node to round 10 000.
    let actions = feed(
        &mut node,
        vec![
            net.vote(1, 1_000, VoteKind::Prevote, None),
            net.vote(2, 1_000, VoteKind::Prevote, None),
        ],
    );
    let after = actions.iter().find_map(|a| match a {
        Action::ScheduleTimeout { after_ms, .. } => Some(*after_ms),
        _ => None,
    });
    assert_eq!(node.round(), 1_000);
    assert_eq!(after, Some(Config::default().max_timeout_ms));
}

#[test]
fn a_proposer_restarted_after_proposing_proposes_nothing_new_in_that_round() {
    // Validator 1, the round-0 proposer, signed a proposal for a and died;
    // the block is gone with the process. After the restart it must not
    // build another block for round 0 (it would conflict), and the round
    // goes on by timeout like any round without a proposal.
    let net = Net::new();
    let a = net.block("a");
    let record = SignState {
        height: 1,
        round: 0,
        step: SignStep::Propose,
        block_hash: Some(a.hash()),
        valid_round: None,
        locked: None,
        valid: None,
        prevote: None,
        earlier: None,
    };
    let mut node = net.node(Some(1), Some(record));
    let actions = node.handle(net.start(1));
    assert!(
        !actions.iter().any(|x| matches!(
            x,
            Action::BuildProposal { .. } | Action::Broadcast(ConsensusMessage::Proposal(_))
        )),
        "{actions:?}"
    );
    assert_eq!(scheduled(&actions, TimeoutKind::Propose).len(), 1);
    let actions = node.handle(timeout(TimeoutKind::Propose, 0));
    assert_eq!(my_votes(&actions), vec![(0, VoteKind::Prevote, None)]);
}

#[test]
fn a_re_proposed_valid_value_carries_its_polka() {
    // Validator 2 proposes its valid value a in round 1 with valid round 0:
    // a peer that lost the prevotes of round 0 can only accept it (line 28)
    // if the polka comes along.
    let net = Net::new();
    let a = net.block("a");
    let actions = round_1_with_valid_value(&net, &a);
    let mut relayed: Vec<(tally_ledger::Address, u32, Option<Hash>)> = actions
        .iter()
        .filter_map(|x| match x {
            Action::Broadcast(ConsensusMessage::Vote(v)) if v.vote.kind == VoteKind::Prevote => {
                Some((v.validator, v.vote.round, v.vote.block_hash))
            }
            _ => None,
        })
        .filter(|(_, round, _)| *round == 0)
        .collect();
    relayed.sort();
    let mut expected: Vec<(tally_ledger::Address, u32, Option<Hash>)> = (0..3)
        .map(|i| (net.key(i).address(), 0, Some(a.hash())))
        .collect();
    expected.sort();
    assert_eq!(
        relayed, expected,
        "the 2f+1 prevotes of round 0 for a: {actions:?}"
    );

    // A validator that never saw round 0 takes the proposal with its polka.
    let mut late = net.node(Some(3), None);
    late.handle(net.start(1));
    late.handle(timeout(TimeoutKind::Propose, 0));
    late.handle(net.vote(0, 0, VoteKind::Precommit, None));
    late.handle(net.vote(1, 0, VoteKind::Precommit, None));
    late.handle(net.vote(2, 0, VoteKind::Precommit, None));
    late.handle(timeout(TimeoutKind::Precommit, 0));
    let mut seen = Vec::new();
    for action in &actions {
        if let Action::Broadcast(message) = action {
            seen.extend(late.handle(net.message(message.clone())));
        }
    }
    seen.extend(late.handle(net.valid(&a, true)));
    assert!(
        my_votes(&seen).contains(&(1, VoteKind::Prevote, Some(a.hash()))),
        "line 28: prevote a in round 1: {seen:?}"
    );
}

#[test]
fn an_equivocators_vote_counts_for_each_value_it_signed() {
    // Validator 2 prevotes b to this node and a to others. Its signed
    // prevote for a still belongs to the polka for a: otherwise a polka
    // that locked an honest validator elsewhere can never be shown here.
    let net = Net::new();
    let (a, b) = (net.block("a"), net.block("b"));
    let (mut node, _) = prevoted(&net, &a);
    node.handle(net.vote(2, 0, VoteKind::Prevote, Some(&b)));
    let evidence = node.handle(net.vote(2, 0, VoteKind::Prevote, Some(&a)));
    assert!(evidence.iter().any(|x| matches!(x, Action::Evidence(_))));
    assert_eq!(
        node.votes().total(0, VoteKind::Prevote),
        2,
        "distinct voters"
    );
    let actions = node.handle(net.vote(1, 0, VoteKind::Prevote, Some(&a)));
    assert_eq!(
        my_votes(&actions),
        vec![(0, VoteKind::Precommit, Some(a.hash()))],
        "0, 1 and 2 signed a: a polka"
    );

    // Memory stays bounded: one validator counts for a few values at most.
    let mut node = net.started(0);
    for i in 0..10 {
        node.handle(net.vote(3, 0, VoteKind::Prevote, Some(&net.block(&format!("v{i}")))));
    }
    let counted = (0..10)
        .filter(|i| {
            let value = Some(net.block(&format!("v{i}")).hash());
            node.votes().power_for(0, VoteKind::Prevote, &value) > 0
        })
        .count();
    assert_eq!(counted, tally_consensus::MAX_VALUES_PER_VALIDATOR);
}

#[test]
fn a_validator_restarted_after_its_precommit_sends_its_prevote_again() {
    // Its prevote may be lost everywhere (peers restarted too): without it
    // a peer still in the prevote step never gets 2f+1 prevotes.
    let net = Net::new();
    let a = net.block("a");
    let (mut node, _) = prevoted(&net, &a);
    let actions = feed(
        &mut node,
        vec![
            net.vote(1, 0, VoteKind::Prevote, Some(&a)),
            net.vote(2, 0, VoteKind::Prevote, Some(&a)),
        ],
    );
    assert_eq!(
        my_votes(&actions),
        vec![(0, VoteKind::Precommit, Some(a.hash()))]
    );
    let record = last_sign_state(&actions);
    assert_eq!(record.prevote, Some(Some(a.hash())));

    let mut restarted = net.node(Some(0), Some(record));
    let again = restarted.handle(net.start(1));
    assert_eq!(
        my_votes(&again),
        vec![
            (0, VoteKind::Prevote, Some(a.hash())),
            (0, VoteKind::Precommit, Some(a.hash()))
        ],
        "the identical prevote and precommit: {again:?}"
    );
}

/// Seed 34: validator 2 precommitted nil in round 0, moved on to round 1
/// and died; the others stayed in round 0 with two precommits each, and the
/// third — validator 2's — was gone with its process. Restarted in round 1,
/// it sends its round-0 precommit again (the identical message, from its
/// record), so the others reach 2f+1 precommits and time round 0 out.
/// Seed 20431: the same, but a peer still in round 0's prevote step lacked
/// its round-0 prevote: both go out again.
#[test]
fn a_validator_restarted_in_a_later_round_sends_its_earlier_precommit_again() {
    let net = Net::new();
    let mut node = net.started(2);
    node.handle(timeout(TimeoutKind::Propose, 0));
    feed(
        &mut node,
        vec![
            net.vote(0, 0, VoteKind::Prevote, None),
            net.vote(1, 0, VoteKind::Prevote, None),
        ],
    );
    let actions = feed(
        &mut node,
        vec![
            net.vote(0, 0, VoteKind::Precommit, None),
            net.vote(1, 0, VoteKind::Precommit, None),
            timeout(TimeoutKind::Propose, 1),
        ],
    );
    let record = last_sign_state(&actions);
    assert_eq!((record.round, record.step), (1, SignStep::Prevote));
    assert_eq!(
        record.earlier,
        Some(OwnVotes {
            round: 0,
            prevote: Some(None),
            precommit: Some(None)
        }),
        "the round-0 votes are recorded"
    );
    let mut restarted = net.node(Some(2), Some(record));
    let actions = restarted.handle(net.start(1));
    let sent = my_votes(&actions);
    assert!(
        sent.contains(&(0, VoteKind::Precommit, None)),
        "the round-0 precommit goes out again: {sent:?}"
    );
    assert!(
        sent.contains(&(0, VoteKind::Prevote, None)),
        "and the round-0 prevote (seed 20431: it was lost everywhere): {sent:?}"
    );
    assert!(
        sent.contains(&(1, VoteKind::Prevote, None)),
        "and the recorded round-1 prevote: {sent:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::PersistSignState(r) if r.round == 0)),
        "nothing new is signed for round 0"
    );
}

/// A validator restarted with its rotated key before the rotation takes
/// effect holds its old key's record of this height: the new key, not in
/// this height's set, sends nothing (the recorded vote is the old key's to
/// send).
#[test]
fn a_key_outside_the_set_sends_no_recorded_vote_after_a_restart() {
    let net = Net::new();
    let a = net.block("a");
    let record = SignState {
        height: 1,
        round: 0,
        step: SignStep::Prevote,
        block_hash: Some(a.hash()),
        valid_round: None,
        locked: None,
        valid: None,
        prevote: None,
        earlier: None,
    };
    let rotated = devnet_key("rotated-key");
    let mut node = Consensus::new(
        Config::default(),
        net.chain.genesis.chain_id.clone(),
        net.chain.genesis_hash,
        net.chain.validators.clone(),
        Some(rotated),
        Some(record),
        None,
    );
    let actions = node.handle(net.start(1));
    assert!(
        !actions
            .iter()
            .any(|x| matches!(x, Action::Broadcast(ConsensusMessage::Vote(_)))),
        "{actions:?}"
    );
}
