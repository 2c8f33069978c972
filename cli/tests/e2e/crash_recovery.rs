//! A real `tally dev` process killed with SIGKILL while committing under load
//! reopens at a consistent tip: every transaction acknowledged as committed
//! is still committed at the same place, and the account state equals the
//! replay of the stored blocks from genesis.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::NodeProcess;
use tally_client::{BlockId, BlockTxs, Client, TxState, WaitMode};
use tally_ledger::state_tree::MemoryState;
use tally_ledger::{
    devnet_key, execute_block, Block, BlockMeta, ChainContext, Genesis, Hash, SigCheck,
};

/// A transaction the node acknowledged as committed, and where.
#[derive(Debug, Clone, Copy)]
struct Ack {
    id: Hash,
    height: u64,
    index: u32,
}

/// Kill cycles (`TALLY_CRASH_CYCLES` for a longer run).
const KILL_CYCLES: usize = 20;

/// How many acknowledgements cycle `cycle` waits for before the kill: 1 to
/// 24, scattered, so that the kill lands at different points of the commit
/// cycle (building, signing, writing, answering).
fn kill_after(cycle: usize) -> usize {
    let mixed = (cycle as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59;
    1 + (mixed as usize % 24)
}
/// Bound on how long one cycle may take to reach its acknowledgements.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One sender's load: bursts of transfers, the last of each waited on.
async fn load(client: Client, sender: &'static str, acks: Arc<Mutex<Vec<Ack>>>) {
    let key = devnet_key(sender);
    let to = devnet_key("carol").address();
    let Ok(status) = client.status().await else {
        return;
    };
    let Ok(account) = client.account(&key.address()).await else {
        return;
    };
    let mut nonce = account.next_nonce;
    loop {
        for i in 0..4u64 {
            let tx = tally_ledger::Transaction::transfer(
                status.chain_id.clone(),
                key.address(),
                to,
                1 + i,
                1,
                nonce,
            )
            .sign(&key, &status.genesis_hash);
            let wait = if i == 3 {
                WaitMode::Committed
            } else {
                WaitMode::None
            };
            match client.submit(&tx, wait).await {
                Ok(result) => {
                    nonce += 1;
                    if let (TxState::Committed, Some(height), Some(index)) =
                        (result.status, result.height, result.index)
                    {
                        acks.lock().unwrap().push(Ack {
                            id: result.hash,
                            height,
                            index,
                        });
                    }
                }
                Err(_) => return, // the node is gone
            }
        }
    }
}

async fn check_acks(client: &Client, acks: &[Ack]) {
    for ack in acks {
        let info = client.tx(&ack.id).await.unwrap();
        assert_eq!(
            info.status,
            TxState::Committed,
            "acknowledged transaction {} was lost",
            ack.id
        );
        assert_eq!(
            (info.height, info.index),
            (Some(ack.height), Some(ack.index)),
            "{} moved",
            ack.id
        );
    }
}

/// Replays every stored block from genesis, checking certificates and
/// execution, and compares the result with the node's account state.
async fn check_replay(client: &Client, chain: &ChainContext) {
    let tip = client.status().await.unwrap().height;
    let mut state = MemoryState::genesis(chain).unwrap();
    let mut parent = chain.genesis_meta();
    for height in 1..=tip {
        let info = client.block(BlockId::Height(height), true).await.unwrap();
        let BlockTxs::Full(txs) = info.txs else {
            panic!("asked for full transactions")
        };
        let block = Block {
            header: info.header,
            txs: txs.into_iter().map(|t| t.tx).collect(),
            last_commit: info.last_commit,
            evidence: info.evidence,
        };
        assert_eq!(block.hash(), info.hash);
        chain
            .verify_commit(&info.commit, height, &info.hash)
            .unwrap();
        let executed = execute_block(&state, chain, &parent, &block, SigCheck::Verify)
            .unwrap_or_else(|e| panic!("stored block {height} does not replay: {e}"));
        state.apply(&block, &executed).unwrap();
        parent = BlockMeta {
            height,
            hash: info.hash,
            timestamp_ms: block.header.timestamp_ms,
        };
    }
    let supply: u128 = state.accounts().values().map(|a| a.balance as u128).sum();
    assert_eq!(
        supply,
        chain.genesis.total_supply().unwrap() as u128,
        "supply changed"
    );
    for (address, account) in state.accounts() {
        let live = client.account(address).await.unwrap();
        assert_eq!(
            (live.balance, live.nonce),
            (account.balance, account.nonce),
            "state of {address} differs from the replay"
        );
    }
}

/// One transfer from alice to bob, which must commit.
async fn transfer_committed(client: &Client) {
    let (_, result) = client
        .transfer(
            &devnet_key("alice"),
            devnet_key("bob").address(),
            1,
            1,
            WaitMode::Committed,
        )
        .await
        .unwrap();
    assert_eq!(result.status, TxState::Committed, "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_committed_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let mut all_acks: Vec<Ack> = Vec::new();
    let cycles = std::env::var("TALLY_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(KILL_CYCLES);
    for cycle in 0..cycles {
        let kill_after = &kill_after(cycle);
        let node = NodeProcess::dev(&home);
        let client = node.client();
        check_acks(&client, &all_acks).await;
        let acks = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = ["alice", "bob"]
            .into_iter()
            .map(|sender| tokio::spawn(load(client.clone(), sender, acks.clone())))
            .collect();
        let deadline = Instant::now() + CYCLE_TIMEOUT;
        while acks.lock().unwrap().len() < *kill_after {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: only {} acknowledgements",
                acks.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Kill while the load is still running: blocks are being committed.
        node.kill9();
        for task in tasks {
            let _ = task.await;
        }
        let acks = acks.lock().unwrap();
        eprintln!(
            "cycle {cycle}: killed after {} acknowledgements, last at height {:?}",
            acks.len(),
            acks.iter().map(|a| a.height).max()
        );
        all_acks.extend(acks.iter().copied());
    }
    let node = NodeProcess::dev(&home);
    let client = node.client();
    check_acks(&client, &all_acks).await;
    let genesis =
        Genesis::from_json(&std::fs::read_to_string(home.join("genesis.json")).unwrap()).unwrap();
    check_replay(&client, &ChainContext::new(genesis)).await;
    let status = client.status().await.unwrap();
    eprintln!(
        "replayed {} blocks; {} acknowledged transactions all present",
        status.height,
        all_acks.len()
    );
    // The chain goes on after all the crashes.
    transfer_committed(&client).await;
    assert!(node.terminate(), "clean shutdown after recovery");
}

/// Runs `tally ARGS`, expecting it to refuse to start: returns its stderr.
/// A node that starts anyway is killed and the test fails.
fn refused(args: &[&str]) -> String {
    let mut child = std::process::Command::new(common::tally_bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "{args:?} exited successfully");
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} started although its data directory is not its own");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_genesis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let node = NodeProcess::dev(&home);
    transfer_committed(&node.client()).await;
    assert!(node.terminate());
    // Someone points the home at another chain's genesis.
    let path = home.join("genesis.json");
    let mut genesis = Genesis::from_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    genesis.genesis_time_ms += 1;
    std::fs::write(&path, genesis.to_json()).unwrap();
    let home_arg = home.to_str().unwrap();
    let err = refused(&["dev", "--home", home_arg, "--rpc-addr", "127.0.0.1:0"]);
    assert!(
        err.contains("was created for genesis") && err.contains("fresh data directory"),
        "{err}"
    );
}
