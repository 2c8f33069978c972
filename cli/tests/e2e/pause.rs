//! One silent validator must not stall the other three. Four validators and
//! a full node as real `tally` processes, under a steady load of transfers
//! sent to the full node; each validator in turn is paused with SIGSTOP for
//! 9 s (it keeps its connections but answers nothing, as a hung or swapping
//! machine does), ten times in all. While one is paused, the other three
//! must commit every height within one propose timeout plus a margin, and
//! after the run every transfer the full node accepted is committed once.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use crate::common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::NodeProcess;
use tally_client::{BatchEntry, BlockId, Client};
use tally_ledger::{devnet_key, Keypair, Transaction};

/// Pauses, each of one validator in turn.
const CYCLES: usize = 10;

/// How long each pause lasts.
const PAUSE: Duration = Duration::from_secs(9);

/// The default propose timeout (config.toml leaves it unset).
const PROPOSE_TIMEOUT_MS: u64 = 3_000;

/// The longest a height may take while one validator is silent: a height
/// whose round-0 proposer is the silent one costs the propose timeout, and
/// the next round's proposer is live. The margin covers building, checking
/// and voting on a loaded 2-core machine. (Before the catch-up exchange
/// and the nil-precommit rule, such a height took the propose and the
/// precommit timeout, 4 s, and a validator that missed a decision or a
/// proposal stalled the three for up to the whole pause.)
const LONGEST_GAP_MS: u64 = PROPOSE_TIMEOUT_MS + 1_000;

/// Transfers per 100 ms from each sender.
const BATCH: usize = 7;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn signal(node: &NodeProcess, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Sends transfers from alice, bob and carol to `url` in nonce order, a
/// batch every 100 ms, until `stop`; returns how many of each sender's the
/// node accepted (in order: it stops a sender at its first refusal).
async fn load(
    url: String,
    chain_id: tally_ledger::ChainId,
    genesis_hash: tally_ledger::Hash,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(Keypair, u64)> {
    let client = Client::new(&url).unwrap();
    let senders: Vec<Keypair> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| devnet_key(n))
        .collect();
    let mut accepted = vec![0u64; senders.len()];
    let mut refused = vec![false; senders.len()];
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    while !*stop.borrow() {
        ticker.tick().await;
        for (i, key) in senders.iter().enumerate() {
            if refused[i] {
                continue;
            }
            let to = senders[(i + 1) % senders.len()].address();
            let batch: Vec<Vec<u8>> = (0..BATCH as u64)
                .map(|k| {
                    Transaction::transfer(
                        chain_id.clone(),
                        key.address(),
                        to,
                        1,
                        1,
                        accepted[i] + k,
                    )
                    .sign(key, &genesis_hash)
                    .encode()
                })
                .collect();
            let Ok(entries) = client.submit_batch(&batch).await else {
                continue; // not sent: the same nonces go again next time
            };
            for entry in entries {
                match entry {
                    BatchEntry::Admitted { .. } => accepted[i] += 1,
                    BatchEntry::Refused { error } => {
                        // The mempool is full: this sender stops, and its
                        // accepted transfers must still all commit.
                        println!("{} refused: {}", key.address(), error.message);
                        refused[i] = true;
                        break;
                    }
                }
            }
        }
    }
    senders.into_iter().zip(accepted).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_paused_validator_does_not_stall_the_other_three() {
    let dir = tempfile::tempdir().unwrap();
    let root = match std::env::var("TALLY_TEST_DIR") {
        Ok(kept) => PathBuf::from(kept),
        Err(_) => dir.path().join("devnet"),
    };
    let listed = common::devnet_init(&root);
    let mut nodes: HashMap<String, NodeProcess> = HashMap::new();
    for node in &listed {
        let name = node["name"].as_str().unwrap().to_owned();
        let home = PathBuf::from(node["home"].as_str().unwrap());
        nodes.insert(name, NodeProcess::run_configured(&home));
    }
    let validators: Vec<String> = (0..4).map(|i| format!("validator-{i}")).collect();
    let full = nodes["full-0"].client();
    for v in &validators {
        common::wait_height(&nodes[v].client(), 2).await;
    }
    common::wait_height(&full, 2).await;

    let status = full.status().await.unwrap();
    let chain_id = status.chain_id.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(load(
        nodes["full-0"].url.clone(),
        chain_id,
        status.genesis_hash,
        stop_rx,
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut windows = Vec::new();
    for cycle in 0..CYCLES {
        let name = &validators[cycle % validators.len()];
        let start = now_ms();
        signal(&nodes[name], "STOP");
        tokio::time::sleep(PAUSE).await;
        signal(&nodes[name], "CONT");
        windows.push((name.clone(), start, now_ms()));
        // It catches up, and takes part in two more heights, before the
        // next one goes silent: one fault at a time.
        let tip = full.status().await.unwrap().height;
        common::wait_height(&nodes[name].client(), tip).await;
        let tip = full.status().await.unwrap().height;
        common::wait_height(&nodes[name].client(), tip + 2).await;
    }
    stop_tx.send(true).unwrap();
    let accepted = load.await.unwrap();

    // When each block was built, by the proposer's clock (all on this
    // machine), from a validator that was never paused last.
    let reader = nodes["validator-1"].client();
    let tip = reader.status().await.unwrap().height;
    let mut built = Vec::new();
    for height in 1..=tip {
        let block = reader.block(BlockId::Height(height), false).await.unwrap();
        built.push((height, block.header.timestamp_ms));
    }
    let mut report = Vec::new();
    let mut worst = 0;
    for (name, start, end) in &windows {
        // Every two consecutive blocks whose interval overlaps the pause
        // (and the pause's edges, should no block be built in it): none
        // further apart than the bound.
        let mut points = vec![(0, *start)];
        points.extend(built.iter().copied());
        points.push((0, *end));
        points.sort_by_key(|(_, t)| *t);
        let (gap, at) = points
            .windows(2)
            .filter(|w| w[1].1 > *start && w[0].1 < *end)
            .map(|w| (w[1].1 - w[0].1, w[1].0))
            .max()
            .unwrap();
        worst = worst.max(gap);
        report.push(format!(
            "{name} paused: longest gap {gap} ms (before block {at})"
        ));
    }
    println!("{}", report.join("\n"));
    assert!(
        worst <= LONGEST_GAP_MS,
        "the chain stood still for {worst} ms with one validator paused (bound {LONGEST_GAP_MS} ms):\n{}",
        report.join("\n")
    );

    // Nothing the full node accepted was lost, nothing committed twice:
    // each sender's committed nonce is exactly its accepted count, and
    // every node agrees on the tip.
    let expected: u64 = accepted.iter().map(|(_, n)| n).sum();
    assert!(expected > 1_000, "the load ran: {expected} accepted");
    for (key, count) in &accepted {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let nonce = full.account(&key.address()).await.unwrap().nonce;
            assert!(nonce <= *count, "more committed than accepted");
            if nonce == *count {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} accepted transfers committed",
                nonce
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let tip = full.status().await.unwrap().height;
    let reference = reader
        .block(BlockId::Height(tip), false)
        .await
        .unwrap()
        .hash;
    for v in &validators {
        let client = nodes[v].client();
        common::wait_height(&client, tip).await;
        let hash = client
            .block(BlockId::Height(tip), false)
            .await
            .unwrap()
            .hash;
        assert_eq!(hash, reference, "{v} agrees on block {tip}");
    }
}
