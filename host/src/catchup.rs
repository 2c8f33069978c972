//! The catch-up exchange: what a node that missed messages does instead of
//! hoping gossip carries the same bytes twice (docs/CONSENSUS.md, "Lost
//! messages").
//!
//! - A node that commits a height by consensus tells every peer
//!   ([`SyncRequest::Decided`]). A peer still deciding that height waits
//!   [`HostConfig::catchup_grace_ms`](crate::HostConfig) for its own
//!   decision, then asks that node, which answers with the block and its
//!   certificate.
//! - A node that has not decided a height `stuck_after_ms` after starting
//!   it sends every peer its votes of the height, with the
//!   hash of the round's proposal it holds ([`SyncRequest::Catchup`]); a
//!   peer answers with its votes and, if the asker lacks it, its proposal,
//!   or with the decided block if it has committed the height.

use tally_consensus::Input;
use tally_ledger::{ConsensusMessage, Hash, Verified};
use tracing::{debug, info, warn};

use crate::chain::CommitFailure;
use crate::host::{Host, Purpose};
use crate::sync::{max_catchup_messages, Catchup, SyncRequest, SyncResponse};
use crate::world::{RequestFailure, Timer, World};

impl<W: World> Host<W> {
    /// The votes of the height being decided that a peer may lack (this
    /// node's own and each validator's first votes of the current and
    /// previous round, and the polka of the valid value), and the proposal
    /// of `round` unless the peer holds that one (`peer_has`).
    ///
    /// While a record write is failing nothing is handed out: the state
    /// machine counts its own vote when it signs it, before the host has
    /// made the record durable, and a signed message must not leave before
    /// its record. A peer gets a given round's proposal once (it costs a
    /// block).
    fn messages_for_peer(
        &mut self,
        peer: W::Peer,
        round: u32,
        peer_has: Option<Hash>,
    ) -> Vec<ConsensusMessage> {
        if self.halted() {
            return Vec::new();
        }
        let mut messages: Vec<ConsensusMessage> = self
            .machine
            .votes_to_relay()
            .into_iter()
            .map(ConsensusMessage::Vote)
            .collect();
        let height = self.machine.height();
        if let Some(proposal) = self.machine.proposal(round) {
            let first_time = self.proposals_sent.insert((peer, height, round));
            if Some(proposal.core.block_hash) != peer_has && first_time {
                messages.push(ConsensusMessage::Proposal(Box::new(proposal)));
            }
        }
        messages
    }

    /// A catch-up request for the height being decided. The asker's own
    /// proposal is not pushed: a peer that lacks it asks, and gets it in
    /// the answer.
    fn catchup_request(&self) -> SyncRequest {
        let round = self.machine.round();
        SyncRequest::Catchup(Catchup {
            height: self.machine.height(),
            round,
            proposal: self.machine.proposal_hash(round),
            messages: self
                .machine
                .votes_to_relay()
                .into_iter()
                .map(ConsensusMessage::Vote)
                .collect(),
        })
    }

    /// Sends `request` to `peer`, or to every connected peer, except those
    /// still answering an earlier one.
    fn ask(&mut self, peer: Option<W::Peer>, request: &SyncRequest, purpose: Purpose) {
        #[cfg(feature = "sabotage")]
        if crate::sabotage::active(crate::Sabotage::NoCatchup) {
            return;
        }
        // A catch-up request carries this node's own votes (see
        // `messages_for_peer`): none while a record write is failing.
        if self.halted() && matches!(request, SyncRequest::Catchup(_)) {
            return;
        }
        let peers = match peer {
            Some(peer) => vec![peer],
            None => self.world.peers(),
        };
        for peer in peers {
            if self.asking.contains(&peer) {
                continue;
            }
            // Refused when this peer (or every peer) has too many requests
            // in flight: the others are still asked.
            if self.request(peer, request, purpose) {
                self.asking.insert(peer);
            }
        }
    }

    /// Sends a catch-up request for the height being decided to every peer.
    pub(crate) fn ask_peers_for_the_height(&mut self) {
        let request = self.catchup_request();
        let height = self.machine.height();
        self.ask(None, &request, Purpose::Catchup { height });
    }

    /// After committing `height` by consensus: once the grace has passed,
    /// tell every peer that has sent nothing of a later height since
    /// ([`Timer::AnnounceDecided`]). Peers that moved on need not hear it;
    /// one that missed the decision does, at once, instead of waiting for
    /// its round to time out.
    pub(crate) fn announce_decided(&mut self, height: u64) {
        self.world
            .schedule(self.config.catchup_grace_ms, Timer::AnnounceDecided(height));
    }

    /// The grace after committing `height` passed: tell the peers that have
    /// shown nothing past it.
    pub(crate) fn announce_now(&mut self, height: u64) {
        let tip = self.chain.tip_height();
        let behind: Vec<W::Peer> = self
            .world
            .peers()
            .into_iter()
            .filter(|p| self.heard.get(p).is_none_or(|h| *h <= height))
            .collect();
        let request = SyncRequest::Decided { height: tip };
        for peer in behind {
            self.ask(Some(peer), &request, Purpose::Decided);
        }
    }

    /// A peer sent a message of `height` (through gossip or catch-up): it
    /// has committed the height before it.
    pub(crate) fn heard_from(&mut self, peer: W::Peer, height: u64) {
        let heard = self.heard.entry(peer).or_insert(0);
        *heard = (*heard).max(height);
    }

    /// On every tick: when the height being decided has not been decided
    /// `stuck_after_ms` after this node started it, send its votes of the
    /// height to every peer, and again each such period until it is. Only
    /// the height counts, not the round or step: rounds that time out one
    /// after another, each missing the same vote, are as stuck as a round
    /// that stands still (seed 271).
    pub(crate) fn check_stuck(&mut self) {
        let height = self.machine.height();
        if height != self.deciding {
            self.deciding = height;
            self.still_ticks = 0;
            return;
        }
        self.still_ticks += 1;
        let every = (self.config.stuck_after_ms / self.config.tick_ms.max(1)).max(1);
        if self.still_ticks.is_multiple_of(every) {
            let request = self.catchup_request();
            self.ask(None, &request, Purpose::Catchup { height });
        }
    }

    /// `peer` committed `height`: if this node is still deciding it, ask
    /// that peer after the grace (it is usually only a message behind and
    /// decides by itself); if it is whole heights behind, sync now.
    ///
    /// Only a claim for the height being decided takes the one catch-up
    /// slot: a claim far ahead (true or not) starts block sync, which
    /// checks what peers say against their blocks.
    pub(crate) fn peer_decided(&mut self, peer: W::Peer, height: u64) {
        let deciding = self.machine.height();
        if height < deciding {
            return;
        }
        if height > deciding {
            self.sync_soon();
            return;
        }
        if self.catchup_due.is_none() {
            self.catchup_due = Some((peer, height));
            self.world
                .schedule(self.config.catchup_grace_ms, Timer::CatchupGrace);
        }
    }

    /// The grace after a peer's decision passed: if this node is still at
    /// or below that height, ask the peer for the height it is deciding.
    pub(crate) fn catch_up_now(&mut self) {
        let Some((peer, decided)) = self.catchup_due.take() else {
            return;
        };
        let height = self.machine.height();
        if height <= decided {
            let request = self.catchup_request();
            self.ask(Some(peer), &request, Purpose::Catchup { height });
        }
    }

    /// A peer's catch-up request (see the module docs).
    pub(crate) fn answer_catchup(
        &mut self,
        from: W::Peer,
        catchup: Catchup,
    ) -> Option<SyncResponse> {
        let tip = self.chain.tip().ok()?;
        if catchup.height <= tip.height {
            // The asker is behind: the decision itself, and what followed
            // (a batch, as block sync would fetch it).
            let blocks = SyncRequest::Blocks {
                from: catchup.height.max(1),
                max: self.config.sync_batch_blocks,
            };
            return crate::sync::serve(&self.chain, &blocks, self.config.max_response_bytes);
        }
        let here = self.machine.height();
        let mine = match catchup.height == here {
            true => self.messages_for_peer(from, catchup.round, catchup.proposal),
            false => Vec::new(),
        };
        if catchup.height > here {
            // It is past the height being decided here.
            self.peer_decided(from, catchup.height - 1);
        }
        // An asker sends votes only: it gets proposals in answers.
        if catchup
            .messages
            .iter()
            .any(|m| matches!(m, ConsensusMessage::Proposal(_)))
        {
            self.ban(from, "sent a proposal in a catch-up request");
            return None;
        }
        // A peer banned for what it sent gets no answer.
        self.feed_from_peer(from, catchup.messages)
            .then_some(SyncResponse::Messages(mine))
    }

    /// The answer to this node's catch-up request for `height`.
    pub(crate) fn catchup_answer(
        &mut self,
        peer: W::Peer,
        height: u64,
        answer: Result<SyncResponse, RequestFailure>,
    ) {
        match answer {
            Ok(SyncResponse::Messages(messages)) => {
                self.feed_from_peer(peer, messages);
            }
            // The peer committed the height: the decision itself and what
            // followed, through the commit path like any block from a peer.
            Ok(SyncResponse::Blocks(blocks)) => {
                let first = blocks.first().map(|b| b.block.header.height);
                if first != Some(height) {
                    let reason = format!("answered a catch-up for {height} with other blocks");
                    self.ban(peer, &reason);
                    return;
                }
                let Ok(tip) = self.chain.tip() else { return };
                if height != tip.height + 1 {
                    return; // committed meanwhile
                }
                let count = blocks.len();
                match self.commit_blocks(height, blocks) {
                    Ok(()) => {
                        info!(height, blocks = count, %peer, "caught up: a peer sent the decided blocks");
                        self.follow_tip();
                        self.ask_peers_for_the_height();
                    }
                    Err(CommitFailure::Storage(e)) => {
                        warn!(height, error = %e, "could not store a block a peer sent");
                    }
                    Err(e) => self.ban(peer, &format!("sent block {height} or after: {e}")),
                }
            }
            Ok(SyncResponse::Status { .. }) => {
                self.ban(peer, "answered a catch-up with a status");
            }
            Err(e) => debug!(%peer, error = %e, "catch-up request failed"),
        }
    }

    /// Feeds messages a peer sent directly (not through gossip, so not
    /// checked yet): each must verify as gossip requires; one that does
    /// not gets the peer banned and the rest ignored. False if the peer was
    /// banned.
    pub(crate) fn feed_from_peer(
        &mut self,
        peer: W::Peer,
        messages: Vec<ConsensusMessage>,
    ) -> bool {
        let state = self.chain.validators().get();
        let validators = state
            .current
            .validators()
            .len()
            .max(state.next.validators().len());
        let max = max_catchup_messages(validators);
        if messages.len() > max {
            let reason = format!("sent {} catch-up messages (at most {max})", messages.len());
            self.ban(peer, &reason);
            return false;
        }
        let chain = self.chain.clone();
        let height = self.machine.height();
        for message in messages {
            // Only the height being decided (and the next, which the state
            // machine keeps for later) is of use; the rest is not checked.
            if message.height() != height && message.height() != height + 1 {
                continue;
            }
            self.heard_from(peer, message.height());
            // Most of what a peer sends is known here already: a vote
            // counted before changes nothing and need not be checked.
            if let ConsensusMessage::Vote(v) = &message {
                let counted = v.vote.height == self.machine.height()
                    && self.machine.votes().has_from(&v.validator, &v.vote);
                if counted {
                    continue;
                }
            }
            // The set of the message's height (the state after the tip
            // knows the height being decided and the next).
            let Some(set) = state.set_at(message.height()) else {
                continue;
            };
            match Verified::<ConsensusMessage>::check(message, &chain.context().signers_with(set)) {
                Ok(verified) => match &*verified {
                    ConsensusMessage::Evidence(evidence) => {
                        self.keep_evidence((**evidence).clone(), false)
                    }
                    _ => self.feed(Input::Message(verified)),
                },
                Err(e) => {
                    self.ban(
                        peer,
                        &format!("sent a catch-up message that does not verify: {e}"),
                    );
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests report failure by panicking

    use std::sync::Arc;

    use tally_consensus::{SignState, ValidBlockRecord};
    use tally_ledger::devnet::{devnet_genesis, DEVNET_GENESIS_TIME_MS};
    use tally_ledger::{
        devnet_key, Block, ChainContext, Header, Keypair, ProposalCore, SignedProposal, SignedVote,
        Vote, VoteKind, BLOCK_VERSION,
    };
    use tally_mempool::Mempool;
    use tally_store::MemoryStore;

    use super::*;
    use crate::chain::{Chain, NoEvents};
    use crate::host::{HostConfig, Recovered};
    use crate::world::{Clock, Outbox, RecordError, Records, RequestId, Timers};

    /// What the host did to the world, and a switch for failing record
    /// writes.
    #[derive(Default)]
    struct Recorder {
        published: Vec<ConsensusMessage>,
        requests: Vec<(u8, SyncRequest)>,
        bans: Vec<(u8, String)>,
        records_fail: bool,
    }

    impl Clock for Recorder {
        fn now_ms(&self) -> u64 {
            DEVNET_GENESIS_TIME_MS + 1_000
        }
    }

    impl Timers for Recorder {
        fn schedule(&mut self, _after_ms: u64, _timer: Timer) {}
    }

    impl Outbox for Recorder {
        type Peer = u8;
        fn publish(&mut self, message: &ConsensusMessage) {
            self.published.push(message.clone());
        }
        fn request(&mut self, peer: u8, _id: RequestId, request: &SyncRequest) {
            self.requests.push((peer, request.clone()));
        }
        fn ban(&mut self, peer: u8, reason: &str) {
            self.bans.push((peer, reason.to_owned()));
        }
        fn peers(&self) -> Vec<u8> {
            vec![1, 2, 3]
        }
    }

    impl Recorder {
        fn write(&self) -> Result<(), RecordError> {
            match self.records_fail {
                true => Err(RecordError("No space left on device".into())),
                false => Ok(()),
            }
        }
    }

    impl Records for Recorder {
        fn save_sign_state(&mut self, _record: &SignState) -> Result<(), RecordError> {
            self.write()
        }
        fn save_valid_block(&mut self, _record: &ValidBlockRecord) -> Result<(), RecordError> {
            self.write()
        }
    }

    fn key(i: usize) -> Keypair {
        devnet_key(&format!("validator-{i}"))
    }

    /// Validator 0 of a four-validator devnet chain, started.
    fn host(records_fail: bool) -> (Host<Recorder>, ChainContext) {
        let context = ChainContext::new(devnet_genesis(4, "tally-dev").unwrap());
        let store = Arc::new(MemoryStore::new(&context));
        let pool = Mempool::new(tally_mempool::Config::default());
        let chain = Arc::new(Chain::new(
            context.clone(),
            store,
            pool,
            10,
            Box::new(NoEvents),
        ));
        let world = Recorder {
            records_fail,
            ..Recorder::default()
        };
        let recovered = Recovered {
            sign_state: None,
            valid_block: None,
        };
        let mut host = Host::new(HostConfig::default(), chain, world, Some(key(0)), recovered);
        host.start();
        (host, context)
    }

    fn prevote(context: &ChainContext, signer: usize, round: u32) -> ConsensusMessage {
        let vote = Vote {
            chain_id: context.genesis.chain_id.clone(),
            height: 1,
            round,
            kind: VoteKind::Prevote,
            block_hash: None,
        };
        ConsensusMessage::Vote(SignedVote::sign(vote, &key(signer), &context.genesis_hash))
    }

    fn proposal(context: &ChainContext, signer: usize) -> ConsensusMessage {
        let block = Block {
            header: Header {
                version: BLOCK_VERSION,
                chain_id: context.genesis.chain_id.clone(),
                height: 1,
                parent_hash: context.genesis_hash,
                timestamp_ms: DEVNET_GENESIS_TIME_MS + 1,
                proposer: key(signer).address(),
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
            chain_id: context.genesis.chain_id.clone(),
            height: 1,
            round: 0,
            valid_round: None,
            block_hash: block.hash(),
        };
        let signed = SignedProposal::sign(core, block, &key(signer), &context.genesis_hash);
        ConsensusMessage::Proposal(Box::new(signed))
    }

    fn catchup(messages: Vec<ConsensusMessage>) -> SyncRequest {
        SyncRequest::Catchup(Catchup {
            height: 1,
            round: 0,
            proposal: None,
            messages,
        })
    }

    #[test]
    fn a_catch_up_request_is_answered_with_this_nodes_votes_and_counts_the_askers() {
        let (mut host, context) = host(false);
        let before = host.machine.votes().total(0, VoteKind::Prevote);
        let answer = host.on_request(1, catchup(vec![prevote(&context, 1, 0)]));
        assert!(host.world().bans.is_empty(), "{:?}", host.world().bans);
        assert!(matches!(answer, Some(SyncResponse::Messages(_))));
        assert_eq!(
            host.machine.votes().total(0, VoteKind::Prevote),
            before + 1,
            "the asker's vote is counted"
        );
    }

    #[test]
    fn a_catch_up_request_carrying_a_proposal_gets_the_peer_banned_unanswered() {
        let (mut host, context) = host(false);
        let answer = host.on_request(2, catchup(vec![proposal(&context, 1)]));
        assert_eq!(answer, None);
        assert_eq!(host.world().bans.len(), 1);
        assert_eq!(host.world().bans[0].0, 2);
        assert!(host.world().bans[0].1.contains("proposal"));
    }

    #[test]
    fn more_catch_up_messages_than_the_bound_get_the_peer_banned() {
        let (mut host, context) = host(false);
        let max = max_catchup_messages(4);
        let messages = (0..=max as u32).map(|r| prevote(&context, 1, r)).collect();
        assert_eq!(host.on_request(3, catchup(messages)), None);
        assert_eq!(host.world().bans.len(), 1, "{:?}", host.world().bans);
        assert!(host.world().bans[0].1.contains("catch-up messages"));
    }

    #[test]
    fn a_catch_up_vote_whose_signature_fails_gets_the_peer_banned_and_is_not_counted() {
        let (mut host, context) = host(false);
        let ConsensusMessage::Vote(mut forged) = prevote(&context, 1, 0) else {
            unreachable!("a prevote")
        };
        forged.validator = key(2).address();
        let before = host.machine.votes().total(0, VoteKind::Prevote);
        let answer = host.on_request(1, catchup(vec![ConsensusMessage::Vote(forged)]));
        assert_eq!(answer, None);
        assert_eq!(host.world().bans.len(), 1, "{:?}", host.world().bans);
        assert!(host.world().bans[0].1.contains("does not verify"));
        assert_eq!(host.machine.votes().total(0, VoteKind::Prevote), before);
    }

    #[test]
    fn nothing_signed_leaves_while_the_signing_record_cannot_be_written() {
        // Validator 0's propose timeout fires: it prevotes nil, and its
        // state machine counts that vote before the host has made the
        // record durable, which here fails.
        let (mut host, context) = host(true);
        host.on_request(1, catchup(vec![prevote(&context, 1, 0)]));
        host.on_timer(Timer::Consensus(tally_consensus::Timeout {
            height: 1,
            round: 0,
            kind: tally_consensus::TimeoutKind::Propose,
        }));
        assert!(host.halted(), "the failing record write halts the host");
        let answer = host.on_request(2, catchup(vec![prevote(&context, 2, 0)]));
        let Some(SyncResponse::Messages(handed_out)) = answer else {
            panic!("a catch-up answer")
        };
        let own = key(0).address();
        let signed_here = |m: &ConsensusMessage| match m {
            ConsensusMessage::Vote(v) => v.validator == own,
            ConsensusMessage::Proposal(p) => p.proposer == own,
            ConsensusMessage::Evidence(_) => false,
        };
        assert!(
            !handed_out.iter().any(signed_here),
            "an own message handed out before its record: {handed_out:?}"
        );
        assert!(!host.world().published.iter().any(signed_here));
        // Nor does it ask anyone, since a request carries its own votes.
        host.ask_peers_for_the_height();
        assert!(!host
            .world()
            .requests
            .iter()
            .any(|(_, r)| matches!(r, SyncRequest::Catchup(_))));
    }
}
