//! Block production for a chain with a single validator: the next block
//! starts as soon as there is work and the last one is committed. (With more
//! validators, consensus decides blocks instead and drives the same commit
//! path.)

use std::sync::Arc;
use std::time::Duration;

use tally_ledger::Keypair;
use tokio::sync::watch;
use tracing::error;

use crate::node::Node;

/// How long to wait before retrying after a failed commit (disk full, I/O).
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// Produces blocks until `shutdown` turns true: whenever transactions are
/// ready (one block after another while they keep coming), when the
/// heartbeat is due, and until a failed commit has been retried successfully.
pub async fn run(
    node: Arc<Node>,
    key: Keypair,
    empty_block_interval: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let heartbeat = async {
            match empty_block_interval {
                Some(interval) => tokio::time::sleep(interval).await,
                None => std::future::pending().await,
            }
        };
        let mut heartbeat_due = tokio::select! {
            _ = shutdown.changed() => return,
            _ = node.work_arrived() => false,
            _ = heartbeat => true,
        };
        while heartbeat_due || node.has_pending() || node.has_unfinished_block() {
            heartbeat_due = false;
            if *shutdown.borrow() {
                return;
            }
            let (n, k) = (node.clone(), key.clone());
            match tokio::task::spawn_blocking(move || n.produce_block(&k)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    error!(error = %e, "could not produce a block");
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                    }
                }
                Err(e) => {
                    error!(error = %e, "block producer task failed");
                    node.set_failure(format!("the block producer stopped: {e}"));
                    return;
                }
            }
        }
    }
}
