//! The catch-up exchange: what a node that missed messages does instead of
//! hoping gossip carries the same bytes twice (docs/CONSENSUS.md, "Lost
//! messages").
//!
//! - A node that commits a height by consensus tells every peer
//!   ([`SyncRequest::Decided`]). A peer still deciding that height waits
//!   [`HostConfig::catchup_grace_ms`](crate::HostConfig) for its own
//!   decision, then asks that node, which answers with the block and its
//!   certificate.
//! - A node whose consensus position has not moved for
//!   `stuck_after_ms` sends every peer its votes of the height, with the
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
    fn messages_for_peer(&self, round: u32, peer_has: Option<Hash>) -> Vec<ConsensusMessage> {
        let mut messages: Vec<ConsensusMessage> = self
            .machine
            .votes_to_relay()
            .into_iter()
            .map(ConsensusMessage::Vote)
            .collect();
        if let Some(proposal) = self.machine.proposal(round) {
            if Some(proposal.core.block_hash) != peer_has {
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
        let peers = match peer {
            Some(peer) => vec![peer],
            None => self.world.peers(),
        };
        for peer in peers {
            if self.asking.contains(&peer) {
                continue;
            }
            if !self.request(peer, request, purpose) {
                return;
            }
            self.asking.insert(peer);
        }
    }

    /// Sends a catch-up request for the height being decided to every peer.
    pub(crate) fn ask_peers_for_the_height(&mut self) {
        let request = self.catchup_request();
        let height = self.machine.height();
        self.ask(None, &request, Purpose::Catchup { height });
    }

    /// Tells every peer that `height` is committed.
    pub(crate) fn announce_decided(&mut self, height: u64) {
        let request = SyncRequest::Decided { height };
        self.ask(None, &request, Purpose::Decided);
    }

    /// On every tick: when consensus has not moved for `stuck_after_ms`,
    /// send its votes of the height to every peer, and again each such
    /// period while it stays put.
    pub(crate) fn check_stuck(&mut self) {
        let m = &self.machine;
        let position = (m.height(), m.round(), m.step());
        if position != self.position {
            self.position = position;
            self.still_ticks = 0;
            return;
        }
        self.still_ticks += 1;
        let every = (self.config.stuck_after_ms / self.config.tick_ms.max(1)).max(1);
        if self.still_ticks.is_multiple_of(every) {
            let request = self.catchup_request();
            let height = position.0;
            self.ask(None, &request, Purpose::Catchup { height });
        }
    }

    /// `peer` committed `height`: if this node is still deciding it, ask
    /// that peer after the grace (it is usually only a message behind and
    /// decides by itself); if it is whole heights behind, sync now.
    pub(crate) fn peer_decided(&mut self, peer: W::Peer, height: u64) {
        let deciding = self.machine.height();
        if height < deciding {
            return;
        }
        if height > deciding {
            self.sync_soon();
        }
        match &mut self.catchup_due {
            Some((due_peer, due_height)) if *due_height < height => {
                (*due_peer, *due_height) = (peer, height);
            }
            Some(_) => {}
            None => {
                self.catchup_due = Some((peer, height));
                self.world
                    .schedule(self.config.catchup_grace_ms, Timer::CatchupGrace);
            }
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
            true => self.messages_for_peer(catchup.round, catchup.proposal),
            false => Vec::new(),
        };
        if catchup.height > here {
            // It is past the height being decided here.
            self.peer_decided(from, catchup.height - 1);
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
        for message in messages {
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
