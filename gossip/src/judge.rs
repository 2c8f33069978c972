//! The judges: a few threads that run the application's [`MessageFilter`]
//! off the network task. Checking a message of transactions takes
//! milliseconds of signature arithmetic; on the task it would hold up every
//! other peer's bytes, consensus messages among them. The task hands each
//! message here and goes on moving bytes; the verdict comes back over a
//! channel and the task reports it to gossipsub (which forwards only what
//! was accepted).
//!
//! Bounded: at most [`MAX_QUEUED_CONSENSUS`] consensus messages and
//! [`MAX_QUEUED_TRANSACTIONS`] transaction messages wait at once; one more
//! is not judged and is dropped without blame ([`Verdict::Ignore`]), which
//! is what an overloaded node should do with gossip. Consensus messages are
//! judged first: they are small, and the chain waits for them.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use libp2p::gossipsub::MessageId;
use libp2p::PeerId;
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::{MessageFilter, Topic, Verdict};

/// Consensus messages waiting to be judged, at most.
pub const MAX_QUEUED_CONSENSUS: usize = 1_024;

/// Transaction messages waiting to be judged, at most (each up to
/// `MAX_GOSSIP_TXS` transactions, so about a second of one core's checks).
pub const MAX_QUEUED_TRANSACTIONS: usize = 64;

/// Judging threads at most, whatever the core count.
const MAX_JUDGES: usize = 8;

/// A message to judge.
pub(crate) struct Case {
    pub(crate) id: MessageId,
    pub(crate) source: PeerId,
    pub(crate) topic: Topic,
    pub(crate) data: Vec<u8>,
}

/// A judged message, on its way back to the task.
pub(crate) type Judged<M> = (Case, Verdict<M>);

#[derive(Default)]
struct Queues {
    consensus: VecDeque<Case>,
    transactions: VecDeque<Case>,
    closed: bool,
}

struct Shared {
    queues: Mutex<Queues>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pool. Dropping it stops the threads (after the message each is
/// judging) and waits for them, so that nothing of the filter outlives the
/// network.
pub(crate) struct Judges {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Judges {
    /// One judge per core (at least one, at most [`MAX_JUDGES`]), sending
    /// verdicts to `judged` (of capacity [`Judges::capacity`]; a judge
    /// whose verdict finds it full waits for the task to take one, and
    /// stops when the task drops the receiver).
    pub(crate) fn start<F: MessageFilter>(
        filter: Arc<F>,
        judged: mpsc::Sender<Judged<F::Message>>,
    ) -> Judges {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
        });
        let count = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_JUDGES);
        let threads = (0..count)
            .filter_map(|i| {
                let (shared, filter, judged) = (shared.clone(), filter.clone(), judged.clone());
                std::thread::Builder::new()
                    .name(format!("gossip-judge-{i}"))
                    .spawn(move || judge(&shared, &*filter, &judged))
                    .inspect_err(|e| warn!(error = %e, "cannot start a gossip judge"))
                    .ok()
            })
            .collect();
        Judges { shared, threads }
    }

    /// The room for verdicts on their way back: as many as can be queued
    /// and judged at once.
    pub(crate) const fn capacity() -> usize {
        MAX_QUEUED_CONSENSUS + MAX_QUEUED_TRANSACTIONS + MAX_JUDGES
    }

    /// Queues `case`; gives it back if its queue is full (or no judge runs).
    pub(crate) fn submit(&self, case: Case) -> Option<Case> {
        if self.threads.is_empty() {
            return Some(case);
        }
        let mut queues = self.shared.lock();
        let (queue, max) = match case.topic {
            Topic::Consensus => (&mut queues.consensus, MAX_QUEUED_CONSENSUS),
            Topic::Transactions => (&mut queues.transactions, MAX_QUEUED_TRANSACTIONS),
        };
        if queue.len() >= max {
            return Some(case);
        }
        queue.push_back(case);
        drop(queues);
        self.shared.ready.notify_one();
        None
    }
}

impl Drop for Judges {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn judge<F: MessageFilter>(shared: &Shared, filter: &F, judged: &mpsc::Sender<Judged<F::Message>>) {
    loop {
        let case = {
            let mut queues = shared.lock();
            loop {
                if queues.closed {
                    return;
                }
                if let Some(case) = queues.consensus.pop_front() {
                    break case;
                }
                if let Some(case) = queues.transactions.pop_front() {
                    break case;
                }
                queues = shared.ready.wait(queues).unwrap_or_else(|p| p.into_inner());
            }
        };
        // A filter that panics on some input is a bug in this node, not the
        // peer's: the message is dropped without blame and the judge goes
        // on (a dead judge would leave its queue unjudged for good).
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            filter.check(case.topic, &case.data)
        }));
        let verdict = checked.unwrap_or_else(|_| {
            error!(topic = ?case.topic, "the message filter panicked; dropping the message");
            Verdict::Ignore
        });
        if judged.blocking_send((case, verdict)).is_err() {
            return; // the task is gone
        }
    }
}
