//! The world as one simulated node's host sees it: what the host does is
//! recorded as effects, in order, and the simulation carries them out
//! after each call (sending messages over the simulated network, scheduling
//! timers on the simulated clock, keeping records in memory that survives
//! crashes). A crash can be set to strike at the n-th effect of a call:
//! everything before it happens, nothing after — the records no longer
//! write, the store no longer commits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tally_consensus::{SignState, ValidBlockRecord};
use tally_host::sync::SyncRequest;
use tally_host::{ChainEvents, Clock, Outbox, RecordError, Records, RequestId, Timer, Timers};
use tally_ledger::{ChainContext, ConsensusMessage, ExecutedBlock, StoredBlock};
use tally_store::MemoryStore;

/// One thing a host did.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Gossiped its message.
    Publish(ConsensusMessage),
    /// Asked a peer.
    Request {
        /// The peer.
        to: usize,
        /// The request's id.
        id: RequestId,
        /// The request.
        request: SyncRequest,
    },
    /// Banned a peer.
    Ban {
        /// The peer.
        peer: usize,
    },
    /// Scheduled a timer.
    Timer {
        /// After how long (by the node's own clock).
        after_ms: u64,
        /// Which.
        timer: Timer,
    },
    /// Wrote its signing record.
    SignState(SignState),
    /// Wrote its valid-block record.
    ValidBlock(Box<ValidBlockRecord>),
}

/// A node's world.
pub struct NodeWorld {
    /// The node's own clock (simulated time plus its offset).
    pub now_ms: u64,
    /// The peers it is connected to (up, not banned either way).
    pub peers: Vec<usize>,
    /// What it did since the simulation last looked.
    pub effects: Vec<Effect>,
    /// Effects left before a crash strikes, if one is due.
    pub crash_after: Option<usize>,
    /// Set once the crash struck: the process is dead.
    pub dead: Arc<AtomicBool>,
    /// While set, records fail to write (the process lives on).
    pub disk_failing: Arc<AtomicBool>,
}

impl NodeWorld {
    /// A world whose process is alive.
    pub fn new(dead: Arc<AtomicBool>, disk_failing: Arc<AtomicBool>) -> NodeWorld {
        NodeWorld {
            now_ms: 0,
            peers: Vec::new(),
            effects: Vec::new(),
            crash_after: None,
            dead,
            disk_failing,
        }
    }

    fn disk_fails(&self) -> bool {
        self.disk_failing.load(Ordering::Relaxed)
    }

    /// Whether the effect about to happen happens (false once dead).
    fn happens(&mut self) -> bool {
        if self.dead.load(Ordering::Relaxed) {
            return false;
        }
        match &mut self.crash_after {
            Some(0) => {
                self.dead.store(true, Ordering::Relaxed);
                false
            }
            Some(n) => {
                *n -= 1;
                true
            }
            None => true,
        }
    }

    fn record(&mut self, effect: Effect) {
        if self.happens() {
            self.effects.push(effect);
        }
    }

    /// Whether the crash struck.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }
}

impl Clock for NodeWorld {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

impl Timers for NodeWorld {
    fn schedule(&mut self, after_ms: u64, timer: Timer) {
        self.record(Effect::Timer { after_ms, timer });
    }
}

impl Outbox for NodeWorld {
    type Peer = usize;

    fn publish(&mut self, message: &ConsensusMessage) {
        self.record(Effect::Publish(message.clone()));
    }

    fn request(&mut self, peer: usize, id: RequestId, request: &SyncRequest) {
        self.record(Effect::Request {
            to: peer,
            id,
            request: request.clone(),
        });
    }

    fn ban(&mut self, peer: usize, _reason: &str) {
        self.record(Effect::Ban { peer });
    }

    fn peers(&self) -> Vec<usize> {
        self.peers.clone()
    }
}

impl Records for NodeWorld {
    fn save_sign_state(&mut self, record: &SignState) -> Result<(), RecordError> {
        if self.disk_fails() {
            return Err(RecordError("no space left on device".into()));
        }
        match self.happens() {
            true => {
                self.effects.push(Effect::SignState(record.clone()));
                Ok(())
            }
            false => Err(RecordError("the process is dead".into())),
        }
    }

    fn save_valid_block(&mut self, record: &ValidBlockRecord) -> Result<(), RecordError> {
        if self.disk_fails() {
            return Err(RecordError("no space left on device".into()));
        }
        match self.happens() {
            true => {
                self.effects
                    .push(Effect::ValidBlock(Box::new(record.clone())));
                Ok(())
            }
            false => Err(RecordError("the process is dead".into())),
        }
    }
}

/// A node's store: durable across its crashes, and refusing every commit
/// once its process is dead or while its disk fails.
pub fn node_store(
    chain: &ChainContext,
    dead: Arc<AtomicBool>,
    disk_failing: Arc<AtomicBool>,
) -> MemoryStore {
    MemoryStore::with_commit_fault(chain, move || {
        if dead.load(Ordering::Relaxed) {
            return Some("the process is dead".to_owned());
        }
        disk_failing
            .load(Ordering::Relaxed)
            .then(|| "no space left on device".to_owned())
    })
}

/// What a node's chain tells the simulation: its commits, for the checker.
#[derive(Default)]
pub struct Commits {
    /// Commits not looked at yet.
    pub pending: Mutex<Vec<(StoredBlock, ExecutedBlock)>>,
}

/// Forwards a chain's commits to [`Commits`].
pub struct CommitEvents(pub Arc<Commits>);

impl ChainEvents for CommitEvents {
    fn committed(&self, stored: &StoredBlock, executed: &ExecutedBlock) {
        if let Ok(mut pending) = self.0.pending.lock() {
            pending.push((stored.clone(), executed.clone()));
        }
    }
    fn statuses_changed(&self) {}
    fn work_arrived(&self) {}
}
