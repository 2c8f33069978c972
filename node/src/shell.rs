//! The node's shell of the host: a thread of its own that owns the
//! [`tally_host::Host`] and feeds it events, and the host's world in
//! production — the system clock, a timer heap, libp2p for the outbox and
//! files for the signing records.
//!
//! The host blocks on disk (fsync of records and blocks) and on block
//! execution, never on the network: publishing and banning are queued to
//! the network task without waiting, a request is awaited by a tokio task
//! that hands the answer back as an event. Events arrive over one bounded
//! channel; when it is full, gossip and answers are dropped (gossip is best
//! effort, and every request has the host's own deadline).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_consensus::{SignState, ValidBlockRecord};
use tally_gossip::{GossipError, NodeId, Topic};
use tally_host::sync::{SyncRequest, SyncResponse};
use tally_host::{
    Clock, Host, Outbox, RecordError, Records, RequestFailure, RequestId, Timer, Timers,
};
use tally_ledger::{ConsensusMessage, Verified};
use tracing::{debug, error};

use crate::node::now_ms;
use crate::records::RecordSlots;

/// Events waiting for the host thread.
pub const HOST_QUEUE: usize = 8_192;

/// What the host thread is told.
pub enum HostEvent {
    /// A verified proposal or vote from gossip, and the peer that
    /// delivered it.
    Message(NodeId, Verified<ConsensusMessage>),
    /// The mempool has pending transactions.
    Work,
    /// An answer to one of the host's requests.
    Response {
        /// Who answered.
        peer: NodeId,
        /// Which request.
        id: RequestId,
        /// The answer's bytes, or why there is none.
        answer: Result<Vec<u8>, RequestFailure>,
    },
    /// A peer's request the host answers itself (the catch-up exchange).
    Request {
        /// Who asks.
        from: NodeId,
        /// What.
        request: SyncRequest,
        /// Where the answer goes.
        reply: SyncSender<Option<SyncResponse>>,
        /// When it was asked: an answer nobody waits for any more is not
        /// worked out.
        asked_at: Instant,
    },
    /// Stop.
    Stop,
}

/// A handle to send the host thread events.
#[derive(Clone)]
pub struct HostSender {
    events: SyncSender<HostEvent>,
    /// Set while a `Work` event is queued, so a burst of transactions
    /// sends one.
    work_queued: Arc<AtomicBool>,
    /// Set while the host waits for transactions to propose
    /// ([`Host::waits_for_work`]); otherwise new transactions do not wake
    /// it (under load they arrive hundreds of times a second, and the
    /// host takes what the mempool holds when it builds anyway).
    work_wanted: Arc<AtomicBool>,
    /// Set to stop the host thread (checked on every turn of its loop, so
    /// a full queue cannot lose it).
    stop: Arc<AtomicBool>,
}

/// How long a peer's request may wait for the host thread before the
/// asker is taken to have given up.
pub const HOST_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Longest the host thread waits for an event before it looks at the stop
/// flag again.
const STOP_CHECK: Duration = Duration::from_millis(100);

impl HostSender {
    /// A sender and the host thread's end of the channel.
    pub fn new() -> (HostSender, Receiver<HostEvent>) {
        let (events, receiver) = std::sync::mpsc::sync_channel(HOST_QUEUE);
        let sender = HostSender {
            events,
            work_queued: Arc::new(AtomicBool::new(false)),
            work_wanted: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        (sender, receiver)
    }

    /// Sends `event` unless the queue is full (then `false`).
    pub fn send(&self, event: HostEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Stops the host thread (after the event it is handling).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.events.try_send(HostEvent::Stop);
    }

    /// Tells the host there is work, once per burst, if it waits for any.
    pub fn work(&self) {
        if !self.work_wanted.load(Ordering::Acquire) {
            return;
        }
        if !self.work_queued.swap(true, Ordering::AcqRel) && !self.send(HostEvent::Work) {
            self.work_queued.store(false, Ordering::Release);
        }
    }
}

/// The host's world in the node.
pub struct NodeWorld {
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    next_timer: u64,
    network: tally_gossip::Handle,
    runtime: tokio::runtime::Handle,
    events: HostSender,
    sign_state: RecordSlots,
    valid_block: RecordSlots,
}

impl NodeWorld {
    /// The world over `network`, answering through `events`, keeping the
    /// two records in these slot files.
    pub fn new(
        network: tally_gossip::Handle,
        runtime: tokio::runtime::Handle,
        events: HostSender,
        sign_state: RecordSlots,
        valid_block: RecordSlots,
    ) -> NodeWorld {
        NodeWorld {
            timers: BinaryHeap::new(),
            next_timer: 0,
            network,
            runtime,
            events,
            sign_state,
            valid_block,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.timers.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.timers.pop().map(|Reverse(t)| t.2),
            _ => None,
        }
    }

    fn write(slots: &mut RecordSlots, bytes: std::io::Result<Vec<u8>>) -> Result<(), RecordError> {
        let bytes = bytes.map_err(|e| RecordError(e.to_string()))?;
        slots.write(&bytes).map_err(|e| RecordError(e.to_string()))
    }
}

impl Clock for NodeWorld {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

impl Timers for NodeWorld {
    fn schedule(&mut self, after_ms: u64, timer: Timer) {
        let at = Instant::now() + Duration::from_millis(after_ms);
        self.next_timer += 1;
        self.timers.push(Reverse((at, self.next_timer, timer)));
    }
}

impl Outbox for NodeWorld {
    type Peer = NodeId;

    fn publish(&mut self, message: &ConsensusMessage) {
        match borsh::to_vec(message) {
            // Best effort: with no peers (a single validator, or all others
            // down) there is no one to tell, and timeouts and the catch-up
            // exchange cover lost messages.
            Ok(bytes) => {
                if let Err(e) = self.network.try_publish(Topic::Consensus, bytes) {
                    debug!(error = %e, "consensus message not published");
                }
            }
            Err(e) => error!(error = %e, "cannot encode a consensus message"),
        }
    }

    fn request(&mut self, peer: NodeId, id: RequestId, request: &SyncRequest) {
        let Ok(bytes) = borsh::to_vec(request) else {
            return;
        };
        let network = self.network.clone();
        let events = self.events.clone();
        self.runtime.spawn(async move {
            let answer = network.request(peer, bytes).await.map_err(|e| match e {
                GossipError::BadResponse(e) => RequestFailure::TooLarge(e),
                other => RequestFailure::NoAnswer(other.to_string()),
            });
            // A full queue loses the answer; the host's deadline covers it.
            events.send(HostEvent::Response { peer, id, answer });
        });
    }

    fn ban(&mut self, peer: NodeId, reason: &str) {
        self.network.try_ban(peer, reason.to_owned());
    }

    fn peers(&self) -> Vec<NodeId> {
        self.network.peers().into_iter().map(|p| p.id).collect()
    }
}

impl Records for NodeWorld {
    fn save_sign_state(&mut self, record: &SignState) -> Result<(), RecordError> {
        Self::write(&mut self.sign_state, borsh::to_vec(record))
    }

    fn save_valid_block(&mut self, record: &ValidBlockRecord) -> Result<(), RecordError> {
        Self::write(&mut self.valid_block, borsh::to_vec(record))
    }
}

/// Runs `host` on a thread of its own until a [`HostEvent::Stop`] (or every
/// sender is gone).
pub fn spawn(
    mut host: Host<NodeWorld>,
    events: Receiver<HostEvent>,
    work_queued: HostSender,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tally-host".into())
        .spawn(move || {
            host.start();
            while !work_queued.stop.load(Ordering::Acquire) {
                while let Some(timer) = host.world_mut().pop_due(Instant::now()) {
                    host.on_timer(timer);
                }
                // Wake for new transactions only while they would be used.
                // When that starts, take what came while they did not wake
                // the host (no transaction waits for the next event).
                let wanted = host.waits_for_work();
                if !wanted {
                    work_queued.work_wanted.store(false, Ordering::Release);
                } else if !work_queued.work_wanted.swap(true, Ordering::AcqRel) {
                    host.on_work();
                    continue;
                }
                let wait = host
                    .world()
                    .next_deadline()
                    .map_or(STOP_CHECK, |at| {
                        at.saturating_duration_since(Instant::now())
                    })
                    .min(STOP_CHECK);
                match events.recv_timeout(wait) {
                    Ok(HostEvent::Message(from, message)) => host.on_message(from, message),
                    Ok(HostEvent::Work) => {
                        work_queued.work_queued.store(false, Ordering::Release);
                        host.on_work();
                    }
                    Ok(HostEvent::Response { peer, id, answer }) => {
                        host.on_response(peer, id, answer)
                    }
                    Ok(HostEvent::Request {
                        from,
                        request,
                        reply,
                        asked_at,
                    }) => {
                        if asked_at.elapsed() < HOST_ANSWER_WAIT {
                            let answer = host.on_request(from, request);
                            let _ = reply.try_send(answer);
                        }
                    }
                    Ok(HostEvent::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
        })
}
