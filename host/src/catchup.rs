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
        self.feed_from_peer(from, catchup.messages);
        Some(SyncResponse::Messages(mine))
    }

    /// The answer to this node's catch-up request for `height`.
    pub(crate) fn catchup_answer(
        &mut self,
        peer: W::Peer,
        height: u64,
        answer: Result<SyncResponse, RequestFailure>,
    ) {
        match answer {
            Ok(SyncResponse::Messages(messages)) => self.feed_from_peer(peer, messages),
            // The peer committed the height: the decision itself and what
            // followed, through the commit path like any block from a peer.
            Ok(SyncResponse::Blocks(blocks)) => {
                let first = blocks.first().map(|b| b.block.header.height);
                #[cfg(feature = "sabotage")]
                let first = match crate::sabotage::active(crate::Sabotage::SyncIgnoresParent) {
                    true => Some(height),
                    false => first,
                };
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
    /// not gets the peer banned and the rest ignored.
    pub(crate) fn feed_from_peer(&mut self, peer: W::Peer, messages: Vec<ConsensusMessage>) {
        let validators = self.chain.context().validators.validators().len();
        let max = max_catchup_messages(validators);
        if messages.len() > max {
            let reason = format!("sent {} catch-up messages (at most {max})", messages.len());
            self.ban(peer, &reason);
            return;
        }
        let chain = self.chain.clone();
        let signers = chain.context().signers();
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
            match Verified::<ConsensusMessage>::check(message, &signers) {
                Ok(verified) => self.feed(Input::Message(verified)),
                Err(e) => {
                    self.ban(
                        peer,
                        &format!("sent a catch-up message that does not verify: {e}"),
                    );
                    return;
                }
            }
        }
    }
}
