//! The simulated network: links with delay and jitter (reordering), drops,
//! duplicates and partitions; gossip that suppresses duplicates the way
//! gossipsub does; point-to-point requests and answers; bans; and the
//! network intake every node runs on what it receives (the same
//! `tally_host::edge` code as the node's gossip filter).

use std::collections::{BTreeSet, VecDeque};

use rand::Rng;
use tally_host::edge::Verdict;
use tally_host::sync::{decode_request, SyncResponse};
use tally_host::Signature;
use tally_ledger::{ConsensusMessage, Hash, SignedVote};

use crate::byzantine::{self, Liar, To};
use crate::checker::VoteSlot;
use crate::world::{Event, Msg, Sim, Topic, MAX_MESSAGE_BYTES};

/// How long gossip remembers a message's bytes as seen (gossipsub's
/// duplicate cache, as the node configures it).
const DUPLICATE_WINDOW_MS: u64 = 1_000;

/// Gossip drops a message that waited longer than this to be written to a
/// peer that does not read (gossipsub's publish queue duration).
const GOSSIP_QUEUE_MS: u64 = 5_000;

/// Invalid gossip messages after which a node bans the sender (the node's
/// `max_invalid_messages`).
const MAX_INVALID_MESSAGES: u32 = 10;

/// How long a ban lasts (the node's default: longer than any run).
const BAN_MS: u64 = 600_000;

/// Gossipsub's duplicate cache: ids of bytes seen, each for
/// [`DUPLICATE_WINDOW_MS`] — but, as in gossipsub 0.49, expired ids are
/// forgotten only when a new one is inserted, so on a quiet network the
/// same bytes stay refused however long ago they were seen.
#[derive(Default)]
pub(crate) struct SeenCache {
    order: VecDeque<(Hash, u64)>,
    ids: BTreeSet<Hash>,
}

impl SeenCache {
    /// Records `bytes` as seen at `now`; false if they were already.
    pub(crate) fn insert(&mut self, bytes: &[u8], now: u64) -> bool {
        let id = Hash::digest(bytes);
        if self.ids.contains(&id) {
            return false;
        }
        while let Some((old, at)) = self.order.front().copied() {
            if at + DUPLICATE_WINDOW_MS > now {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&old);
        }
        self.ids.insert(id);
        self.order.push_back((id, now));
        true
    }
}

impl Sim {
    pub(crate) fn is_banned(&self, a: usize, b: usize) -> bool {
        let banned = |x: usize, y: usize| {
            self.nodes[x]
                .banned
                .get(&y)
                .is_some_and(|until| *until > self.now)
        };
        banned(a, b) || banned(b, a)
    }

    /// Node `by` bans `peer`: nothing passes between them for a while.
    pub(crate) fn ban(&mut self, by: usize, peer: usize) {
        let until = self.now + BAN_MS;
        self.nodes[by].banned.insert(peer, until);
        self.log(format!("node {by} banned node {peer}"));
    }

    /// Sends `msg` over the link from `from` to `to`, subject to the run's
    /// network faults.
    pub(crate) fn send(&mut self, from: usize, to: usize, msg: Msg) {
        let cut = self
            .partitions
            .values()
            .any(|links| links.contains(&(from, to)));
        if cut || (self.faulty && self.rng.gen_bool(self.profile.drop)) {
            self.stats.dropped += 1;
            return;
        }
        let copies = match self.faulty && self.rng.gen_bool(self.profile.duplicate) {
            true => 2,
            false => 1,
        };
        for _ in 0..copies {
            let delay = self.profile.delay_ms + self.rng.gen_range(0..=self.profile.jitter_ms);
            let sent_at = self.now;
            self.schedule(
                delay,
                Event::Deliver {
                    to,
                    from,
                    msg: msg.clone(),
                    sent_at,
                },
            );
        }
    }

    /// Gossips `bytes` from node `from` to `to` (every peer if none):
    /// refused, as gossipsub refuses it, if `from`'s gossip has seen those
    /// bytes.
    pub(crate) fn gossip(&mut self, from: usize, to: &To, topic: Topic, bytes: Vec<u8>) {
        if !self.nodes[from].gossip_seen.insert(&bytes, self.now) {
            self.stats.refused_republish += 1;
            return;
        }
        let targets: Vec<usize> = match to {
            To::All => (0..self.nodes.len()).filter(|&j| j != from).collect(),
            To::Some(peers) => peers.clone(),
        };
        for peer in targets {
            if !self.is_banned(from, peer) {
                self.send(from, peer, Msg::Gossip(topic, bytes.clone()));
            }
        }
    }

    /// A consensus message node `i`'s host published: the checker sees
    /// what an honest validator signs; a liar's goes out changed.
    pub(crate) fn publish(&mut self, i: usize, message: ConsensusMessage) {
        let sends = match self.nodes[i].lies.clone() {
            None => {
                let address = self.nodes[i].address;
                self.checker.on_signed(i, address, &message);
                vec![(To::All, message)]
            }
            Some(lies) => {
                let peers: Vec<usize> = (0..self.nodes.len()).filter(|&j| j != i).collect();
                let at_change = self.first_height_of_a_set(i, message.height());
                let (sends, garbage) = self.as_liar(i, at_change, |liar| {
                    let sends = byzantine::outgoing(liar, &lies, &peers, message);
                    let garbage = match lies.contains(&crate::profile::Lie::Garbage) {
                        true => byzantine::garbage(liar).map(|bytes| {
                            let topic = match liar.rng.gen_bool(0.5) {
                                true => Topic::Consensus,
                                false => Topic::Transactions,
                            };
                            (topic, bytes)
                        }),
                        false => None,
                    };
                    (sends, garbage)
                });
                if let Some((topic, bytes)) = garbage {
                    self.gossip(i, &To::All, topic, bytes);
                }
                sends
            }
        };
        for (to, message) in sends {
            if let Ok(bytes) = borsh::to_vec(&message) {
                self.gossip(i, &to, Topic::Consensus, bytes);
            }
        }
    }

    /// A message reaches node `to`.
    pub(crate) fn deliver(&mut self, to: usize, from: usize, msg: Msg, sent_at: u64) {
        // Gossip that waited too long for a peer that did not read
        // (paused) was dropped by the sender's queue.
        let stale = matches!(msg, Msg::Gossip(..)) && self.now > sent_at + GOSSIP_QUEUE_MS;
        if stale || !self.nodes[to].up || self.is_banned(to, from) {
            self.stats.dropped += 1;
            return;
        }
        self.stats.delivered += 1;
        match msg {
            Msg::Gossip(topic, bytes) => {
                if !self.nodes[to].gossip_seen.insert(&bytes, self.now) {
                    self.stats.duplicates += 1;
                    return;
                }
                match topic {
                    Topic::Consensus => self.receive_consensus(to, from, &bytes),
                    Topic::Transactions => self.receive_transactions(to, from, &bytes),
                }
            }
            Msg::Request { id, bytes } => self.serve(to, from, id, &bytes),
            Msg::Response { id, bytes } => {
                self.with_host(to, |h| h.on_response(from, id, Ok(bytes)));
            }
        }
    }

    fn strike(&mut self, i: usize, peer: usize) {
        self.stats.undecodable += 1;
        let strikes = self.nodes[i].strikes.entry(peer).or_insert(0);
        *strikes += 1;
        if *strikes >= MAX_INVALID_MESSAGES {
            self.ban(i, peer);
        }
    }

    fn receive_consensus(&mut self, i: usize, from: usize, bytes: &[u8]) {
        let tip = self.nodes[i].chain.tip_height();
        let message = match self.nodes[i].consensus_intake.check(bytes, tip) {
            Verdict::Accept(message) | Verdict::Known(message) => message,
            Verdict::Reject => return self.strike(i, from),
            Verdict::Ignore => return,
        };
        let expect = match &*message {
            ConsensusMessage::Vote(v) if self.honest(i) => self.track_vote(i, v),
            _ => None,
        };
        self.with_host(i, |h| h.on_message(from, message));
        if let Some(slot) = expect {
            if self.nodes[i].up && !self.reported(i, &slot) {
                self.checker.violate(format!(
                    "node {i} counted two different votes of {} at height {} round {} \
                     ({:?}) and recorded no evidence",
                    slot.0, slot.1, slot.2, slot.3
                ));
            }
        }
    }

    fn receive_transactions(&mut self, i: usize, from: usize, bytes: &[u8]) {
        let txs = match self.nodes[i].tx_intake.check(bytes) {
            Verdict::Accept(txs) | Verdict::Known(txs) => txs,
            Verdict::Reject => return self.strike(i, from),
            Verdict::Ignore => return,
        };
        let now = self.local_now(i);
        let chain = self.nodes[i].chain.clone();
        let admitted = txs
            .into_iter()
            .filter(|tx| chain.admit(tx.clone(), Signature::Checked, now).is_ok())
            .count();
        if admitted > 0 {
            self.with_host(i, |h| h.on_work());
        }
    }

    /// A request reaches node `i`: its host answers (a liar's answer goes
    /// back changed).
    fn serve(&mut self, i: usize, from: usize, id: tally_host::RequestId, bytes: &[u8]) {
        let Ok(request) = decode_request(bytes, MAX_MESSAGE_BYTES) else {
            return self.strike(i, from);
        };
        let Some(Some(answer)) = self.with_host(i, |h| h.on_request(from, request)) else {
            return;
        };
        if let SyncResponse::Messages(messages) = &answer {
            self.signed_in(i, messages);
        }
        let answer = match self.nodes[i].lies.clone() {
            None => borsh::to_vec(&answer).ok(),
            Some(lies) => self.lie_in_answer(i, &lies, answer),
        };
        if let Some(bytes) = answer {
            self.send(i, from, Msg::Response { id, bytes });
        }
    }

    fn lie_in_answer(
        &mut self,
        i: usize,
        lies: &[crate::profile::Lie],
        answer: SyncResponse,
    ) -> Option<Vec<u8>> {
        self.as_liar(i, false, |liar| {
            if lies.contains(&crate::profile::Lie::Garbage) {
                if let Some(bytes) = byzantine::garbage(liar) {
                    return Some(bytes);
                }
            }
            borsh::to_vec(&byzantine::answer(liar, lies, answer)).ok()
        })
    }

    /// Runs `act` as node `i`'s Byzantine side: its key, the run's
    /// generator and the funded client keys it forges transfers with.
    fn as_liar<T>(&mut self, i: usize, at_change: bool, act: impl FnOnce(&mut Liar<'_>) -> T) -> T {
        let key = self.nodes[i].key.clone();
        let (client, other) = (self.clients[0].clone(), self.clients[1].clone());
        let mut liar = Liar {
            key: &key,
            chain: &self.chain,
            rng: &mut self.rng,
            client: &client,
            other_client: &other,
            at_change,
        };
        act(&mut liar)
    }

    /// Whether, as node `i` knows the sets, `height` is signed by another
    /// set than the height before.
    fn first_height_of_a_set(&self, i: usize, height: u64) -> bool {
        let state = self.nodes[i].chain.validators().get();
        match (state.set_at(height), state.set_at(height.saturating_sub(1))) {
            (Some(now), Some(before)) => now != before,
            _ => false,
        }
    }

    /// For the evidence invariant: a vote node `i`'s state machine is about
    /// to count. Returns the slot if it conflicts with a vote counted
    /// before, so the machine must report it.
    fn track_vote(&mut self, i: usize, v: &SignedVote) -> Option<VoteSlot> {
        let host = self.nodes[i].host.as_ref()?;
        let m = host.consensus();
        let max_ahead = self.config.consensus.max_rounds_ahead;
        let counted = m.height() == v.vote.height
            && m.step() != tally_consensus::Step::Decided
            && v.vote.round <= m.round().saturating_add(max_ahead);
        if !counted {
            return None;
        }
        let slot = (v.validator, v.vote.height, v.vote.round, v.vote.kind);
        match self.nodes[i].seen.get(&slot) {
            None => {
                self.nodes[i].seen.insert(slot, v.clone());
                None
            }
            Some(first) if first.vote != v.vote => Some(slot),
            Some(_) => None,
        }
    }

    /// Whether node `i` holds evidence of `slot`'s equivocation.
    fn reported(&self, i: usize, slot: &VoteSlot) -> bool {
        let offence = tally_ledger::Offence {
            validator: slot.0,
            height: slot.1,
            round: slot.2,
            step: match slot.3 {
                tally_ledger::VoteKind::Prevote => 1,
                tally_ledger::VoteKind::Precommit => 2,
            },
        };
        self.nodes[i].chain.knows_offence(&offence)
    }
}
