//! The asking side of block sync: a node that is behind fetches committed
//! blocks with their certificates from peers and commits them through the
//! one commit path, which checks each certificate against the validator
//! set and executes each block.
//!
//! Every `sync_interval_ms` (and at once when a peer's decision shows this
//! node whole heights behind) the host asks its peers for their tips. When a
//! peer is at least two blocks ahead (or one ahead while this node's tip has
//! not moved for a whole interval, so live consensus is not raced for the
//! block it is deciding), it fetches blocks in batches from peers that claim
//! to be ahead, one batch per peer in turn. A peer that sends a block whose
//! certificate or contents do not verify, blocks it was not asked for, or
//! nothing although it claimed to be ahead, is banned; sync goes on with
//! the others. Storage errors never blame a peer.

use std::collections::VecDeque;

use tally_ledger::StoredBlock;
use tracing::{debug, info, warn};

use crate::chain::{CertifiedBlock, CommitFailure};
use crate::host::{Host, Purpose};
use crate::sync::{SyncRequest, SyncResponse};
use crate::world::{RequestFailure, RequestId, Timer, World};

/// Where block sync is.
pub(crate) struct SyncClient<P> {
    /// Rounds of tip comparison started.
    round: u64,
    phase: Phase<P>,
    /// The tip at the start of the last round: unchanged means stalled.
    last_height: Option<u64>,
    /// Blocks committed through sync.
    pub(crate) synced_blocks: u64,
    /// Block requests sent, to tell a patience timer's from a later one.
    fetch: u64,
}

impl<P> Default for SyncClient<P> {
    fn default() -> Self {
        SyncClient {
            round: 0,
            phase: Phase::Idle,
            last_height: None,
            synced_blocks: 0,
            fetch: 0,
        }
    }
}

enum Phase<P> {
    Idle,
    /// Waiting for tips.
    Asking {
        round: u64,
        waiting: usize,
        ahead: Vec<(P, u64)>,
        tip: u64,
        stalled: bool,
    },
    /// Fetching from peers that claim to be ahead, with the heights they
    /// claim; `current` is the peer being asked, if any.
    Fetching {
        queue: VecDeque<(P, u64)>,
        current: Option<(P, u64)>,
    },
}

/// Why a batch of blocks was not all committed.
enum BatchError {
    /// The peer sent something false.
    Peer(String),
    /// This node cannot commit now (storage).
    Local(String),
}

impl<W: World> Host<W> {
    /// Blocks committed through block sync and catch-up so far.
    pub fn synced_blocks(&self) -> u64 {
        self.sync.synced_blocks
    }

    /// Compares tips now, unless a round is under way.
    pub(crate) fn sync_soon(&mut self) {
        self.start_sync_round();
    }

    /// Asks every peer for its tip.
    pub(crate) fn start_sync_round(&mut self) {
        if !matches!(self.sync.phase, Phase::Idle) {
            return;
        }
        let Ok(tip) = self.chain.tip() else { return };
        let stalled = self.sync.last_height == Some(tip.height);
        self.sync.last_height = Some(tip.height);
        self.sync.round += 1;
        let round = self.sync.round;
        let mut waiting = 0;
        for peer in self.world.peers() {
            // One that has not answered the last round's question is not
            // asked again.
            let asked = self
                .requests
                .values()
                .any(|p| p.peer == peer && matches!(p.purpose, Purpose::SyncStatus { .. }));
            if !asked && self.request(peer, &SyncRequest::Status, Purpose::SyncStatus { round }) {
                waiting += 1;
            }
        }
        if waiting == 0 {
            return;
        }
        self.sync.phase = Phase::Asking {
            round,
            waiting,
            ahead: Vec::new(),
            tip: tip.height,
            stalled,
        };
        self.world.schedule(
            self.config.sync_status_deadline_ms,
            Timer::SyncStatusDeadline(round),
        );
    }

    pub(crate) fn sync_status_answer(
        &mut self,
        round: u64,
        peer: W::Peer,
        _id: RequestId,
        answer: Result<SyncResponse, RequestFailure>,
    ) {
        if let Phase::Fetching { queue, .. } = &mut self.sync.phase {
            // A late answer to the round that started this fetch: one more
            // peer to take turns.
            if let Ok(SyncResponse::Status { height, .. }) = answer {
                queue.push_back((peer, height));
            }
            return;
        }
        let Phase::Asking {
            round: current,
            waiting,
            ahead,
            tip,
            ..
        } = &mut self.sync.phase
        else {
            return;
        };
        if *current != round {
            return;
        }
        *waiting = waiting.saturating_sub(1);
        let (tip, mut done) = (*tip, *waiting == 0);
        match answer {
            Ok(SyncResponse::Status { height, .. }) if height > tip => {
                ahead.push((peer, height));
                // No need to wait for the silent ones: this one is whole
                // heights ahead.
                done |= height >= tip + 2;
            }
            Ok(SyncResponse::Status { .. }) => {}
            Ok(_) => self.ban(peer, "answered a status request with something else"),
            Err(e) => debug!(%peer, error = %e, "status request failed"),
        }
        if done {
            self.finish_status_round();
        }
    }

    pub(crate) fn sync_status_deadline(&mut self, round: u64) {
        if matches!(self.sync.phase, Phase::Asking { round: r, .. } if r == round) {
            self.finish_status_round();
        }
    }

    fn finish_status_round(&mut self) {
        let Phase::Asking {
            ahead,
            tip,
            stalled,
            ..
        } = std::mem::replace(&mut self.sync.phase, Phase::Idle)
        else {
            return;
        };
        let best = ahead.iter().map(|(_, h)| *h).max().unwrap_or(0);
        if best >= tip + 2 || (best > tip && stalled) {
            info!(
                height = tip,
                peers_tip = best,
                "behind the network; fetching blocks"
            );
            self.chain.update_host_status(|s| s.syncing = true);
            self.sync.phase = Phase::Fetching {
                queue: ahead.into(),
                current: None,
            };
            self.next_fetch();
        }
    }

    /// Asks the next peer in line for a batch, or ends the fetch when none
    /// claims more than this node has.
    fn next_fetch(&mut self) {
        loop {
            let Phase::Fetching { queue, current } = &mut self.sync.phase else {
                return;
            };
            let Some((peer, claimed)) = queue.pop_front() else {
                self.end_fetch();
                return;
            };
            let Ok(tip) = self.chain.tip() else {
                self.end_fetch();
                return;
            };
            if tip.height >= claimed {
                continue;
            }
            *current = Some((peer, claimed));
            let from = tip.height + 1;
            let request = SyncRequest::Blocks {
                from,
                max: self.config.sync_batch_blocks,
            };
            if self.request(peer, &request, Purpose::SyncBlocks { from }) {
                // A peer that does not answer in time (paused, overloaded)
                // loses its turn; its late answer is dropped.
                self.sync.fetch += 1;
                let fetch = self.sync.fetch;
                self.world.schedule(
                    self.config.sync_status_deadline_ms,
                    Timer::SyncFetchPatience(fetch),
                );
                return;
            }
            self.end_fetch();
            return;
        }
    }

    /// The peer asked for blocks `fetch` has not answered in time: the next
    /// peer's turn.
    pub(crate) fn sync_fetch_patience(&mut self, fetch: u64) {
        if fetch != self.sync.fetch {
            return;
        }
        if let Phase::Fetching { current, .. } = &mut self.sync.phase {
            if current.take().is_some() {
                self.next_fetch();
            }
        }
    }

    fn end_fetch(&mut self) {
        self.sync.phase = Phase::Idle;
        self.sync.last_height = self.chain.tip().ok().map(|t| t.height);
        self.chain.update_host_status(|s| s.syncing = false);
        self.follow_tip();
        // Arrived: the height's round may be well under way; ask the peers
        // for what they hold of it rather than wait to be stuck.
        self.ask_peers_for_the_height();
    }

    pub(crate) fn sync_blocks_answer(
        &mut self,
        peer: W::Peer,
        from: u64,
        answer: Result<SyncResponse, RequestFailure>,
    ) {
        let claimed = match &mut self.sync.phase {
            Phase::Fetching { current, .. } => match current.take() {
                Some((p, claimed)) if p == peer => claimed,
                other => {
                    *current = other;
                    return;
                }
            },
            _ => return,
        };
        match answer {
            Ok(SyncResponse::Blocks(blocks)) if blocks.is_empty() => {
                self.ban(peer, "claimed blocks it does not serve");
            }
            Ok(SyncResponse::Blocks(blocks)) => match self.commit_batch(from, blocks) {
                Ok(()) => {
                    self.follow_tip();
                    // Its turn is over; it goes to the back of the line.
                    if let Phase::Fetching { queue, .. } = &mut self.sync.phase {
                        queue.push_back((peer, claimed));
                    }
                }
                Err(BatchError::Peer(reason)) => self.ban(peer, &reason),
                Err(BatchError::Local(reason)) => {
                    warn!(reason, "block sync paused");
                    self.end_fetch();
                    return;
                }
            },
            Ok(_) => self.ban(peer, "answered a block request with something else"),
            // Timeouts, refusals and disconnects happen to honest peers
            // too: leave it out of this fetch only.
            Err(e) => debug!(%peer, error = %e, "block request failed; trying another peer"),
        }
        self.next_fetch();
    }

    fn commit_batch(&mut self, from: u64, blocks: Vec<StoredBlock>) -> Result<(), BatchError> {
        self.commit_blocks(from, blocks).map_err(|e| match e {
            CommitFailure::Storage(e) => BatchError::Local(e.to_string()),
            e => BatchError::Peer(format!("sent block {from} or after: {e}")),
        })
    }

    /// Commits blocks a peer sent, which must be consecutive from `from`,
    /// each certificate checked; stops at the first that fails.
    pub(crate) fn commit_blocks(
        &mut self,
        from: u64,
        blocks: Vec<StoredBlock>,
    ) -> Result<(), CommitFailure> {
        for (expected, stored) in (from..).zip(blocks) {
            let height = stored.block.header.height;
            if height != expected {
                return Err(CommitFailure::Certificate(
                    tally_ledger::CommitError::WrongBlock {
                        height: expected,
                        hash: stored.block.header.parent_hash,
                        got_height: height,
                        got_hash: stored.block.hash(),
                    },
                ));
            }
            // Each certificate against the set of its height: the state
            // after the tip knows the next ones; a block consensus committed
            // meanwhile has its set in the store (the commit path then
            // answers it as committed, or as a conflict).
            let set = match self.chain.validators().set_at(height) {
                Some(set) => Some(set),
                None => self.chain.store().validator_set_at(height)?,
            };
            let Some(set) = set else {
                return Err(CommitFailure::Storage(tally_ledger::StorageError::Corrupt(
                    format!("the validator state does not know the set of height {height}"),
                )));
            };
            let certified =
                CertifiedBlock::check(stored, &self.chain.context().signers_with(&set))?;
            match self.chain.commit_block(certified) {
                Ok(_) => self.sync.synced_blocks += 1,
                Err(e @ CommitFailure::Conflict { .. }) => {
                    // Two certified blocks at one height: either this node's
                    // or the peer's chain is not the one the honest
                    // validators signed. Never switch; tell the operator.
                    warn!(error = %e, "a peer served a conflicting certified block");
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
