//! End to end against a real `tally dev` process: transfers, queries, the
//! commit certificate, parameters by position and by name, and batched
//! submission.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use crate::common;

use common::{call_raw, tally, NodeProcess};
use serde_json::json;
use tally_client::{BlockId, BlockTxs, TxState, WaitMode};
use tally_ledger::{devnet_key, to_hex, ChainContext, Genesis, Hash, Transaction};

fn genesis_of(node: &NodeProcess) -> ChainContext {
    let text = std::fs::read_to_string(node.home.join("genesis.json")).unwrap();
    ChainContext::new(Genesis::from_json(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_commits_and_every_query_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::dev(&dir.path().join("home"));
    let client = node.client();
    let chain = genesis_of(&node);
    let (alice, bob) = (devnet_key("alice"), devnet_key("bob"));

    let status = client.status().await.unwrap();
    assert_eq!(status.chain_id.as_str(), "tally-dev");
    assert!(
        {
            let seen = client.evidence(None).await.unwrap();
            seen.recorded.is_empty() && seen.pending.is_empty()
        },
        "an honest validator never equivocates"
    );
    let served = client.genesis().await.unwrap();
    assert_eq!(served.genesis, chain.genesis);
    assert_eq!(served.genesis.hash(), served.genesis_hash);
    assert_eq!(status.genesis_hash, chain.genesis_hash);
    assert_eq!(status.validator, Some(devnet_key("validator-0").address()));

    let before_alice = client.account(&alice.address()).await.unwrap();
    let before_bob = client.account(&bob.address()).await.unwrap();
    let (tx, result) = client
        .transfer(&alice, bob.address(), 1_234, 2, WaitMode::Committed)
        .await
        .unwrap();
    assert_eq!(result.status, TxState::Committed, "{result:?}");
    let height = result.height.unwrap();
    assert_eq!(result.hash, tx.id());

    let after_alice = client.account(&alice.address()).await.unwrap();
    let after_bob = client.account(&bob.address()).await.unwrap();
    assert_eq!(after_alice.balance, before_alice.balance - 1_236);
    assert_eq!(after_alice.nonce, before_alice.nonce + 1);
    assert_eq!(after_bob.balance, before_bob.balance + 1_234);

    let info = client.tx(&tx.id()).await.unwrap();
    assert_eq!(info.status, TxState::Committed);
    assert_eq!(info.height, Some(height));
    assert_eq!(info.tx.as_ref(), Some(&tx));

    // The same block by height, by hash and (possibly) as latest; its
    // certificate proves finality against the genesis validator set.
    let by_height = client.block(BlockId::Height(height), true).await.unwrap();
    let by_hash = client
        .block(
            BlockId::Hash {
                hash: by_height.hash.to_hex(),
            },
            true,
        )
        .await
        .unwrap();
    assert_eq!(by_height, by_hash);
    assert_eq!(Some(by_height.hash), info.block_hash);
    match &by_height.txs {
        BlockTxs::Full(txs) => assert!(txs.iter().any(|t| t.hash == tx.id() && t.tx == tx)),
        other => panic!("expected full transactions, got {other:?}"),
    }
    chain
        .verify_commit(&by_height.commit, height, &by_height.hash)
        .unwrap();
    let latest = client.block(BlockId::latest(), false).await.unwrap();
    assert!(latest.header.height >= height);
    let ids = client.block(BlockId::Height(height), false).await.unwrap();
    assert!(matches!(ids.txs, BlockTxs::Ids(ref ids) if ids.contains(&tx.id())));
    assert!(node.terminate(), "clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_can_send_several_in_a_row_using_next_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::dev(&dir.path().join("home"));
    let client = node.client();
    let status = client.status().await.unwrap();
    let carol = devnet_key("carol");
    let start = client.account(&carol.address()).await.unwrap();
    let mut last = None;
    for i in 0..5u64 {
        // next_nonce counts pending transactions, so no waiting is needed.
        let next = client.account(&carol.address()).await.unwrap().next_nonce;
        let tx = Transaction::transfer(
            status.chain_id.clone(),
            carol.address(),
            devnet_key("alice").address(),
            10 + i,
            1,
            next,
        )
        .sign(&carol, &status.genesis_hash);
        client.submit(&tx, WaitMode::None).await.unwrap();
        last = Some(tx);
    }
    let last = last.unwrap();
    assert_eq!(last.tx.nonce, start.nonce + 4);
    // Waiting on the already-submitted last one: resubmitting it is a
    // duplicate, so poll its status through the waiting submit of a marker.
    let (_, marker) = client
        .transfer(&carol, carol.address(), 0, 1, WaitMode::Committed)
        .await
        .unwrap();
    assert_eq!(marker.status, TxState::Committed);
    let info = client.tx(&last.id()).await.unwrap();
    assert_eq!(info.status, TxState::Committed);
    let end = client.account(&carol.address()).await.unwrap();
    assert_eq!(end.nonce, start.nonce + 6);
    assert_eq!(end.balance, start.balance - (10 + 11 + 12 + 13 + 14) - 6);
    assert!(node.terminate(), "clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_by_position_and_by_name_give_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::dev(&dir.path().join("home"));
    let alice = devnet_key("alice").address().to_text();
    let by_position = call_raw(
        &node.url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "account_get", "params": [alice]}),
    )
    .await;
    let by_name = call_raw(
        &node.url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "account_get", "params": {"address": alice}}),
    )
    .await;
    assert_eq!(by_position["result"], by_name["result"]);
    assert_eq!(by_position["result"]["balance"], json!("1000000000000"));

    let status = call_raw(
        &node.url,
        json!({"jsonrpc": "2.0", "id": 2, "method": "chain_status"}),
    )
    .await;
    assert!(status["result"]["height"].is_u64(), "{status}");
    let validators = call_raw(
        &node.url,
        json!({"jsonrpc": "2.0", "id": 3, "method": "chain_getValidators", "params": []}),
    )
    .await;
    assert_eq!(validators["result"]["quorum_power"], json!(1));
    assert_eq!(
        validators["result"]["validators"][0]["name"],
        json!("validator-0")
    );

    // A batch of two calls answers both.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "chain_status"},
        {"jsonrpc": "2.0", "id": 2, "method": "chain_getBlock", "params": {"block": "latest", "full": false}},
    ]);
    let answer = call_raw(&node.url, batch).await;
    assert_eq!(answer.as_array().map(Vec::len), Some(2), "{answer}");

    let (status, body) = common::post_raw(&format!("{}/health", node.url), "", "text/plain").await;
    assert_eq!(status, 405, "health is GET only: {body}");
    let health = reqwest::get(format!("{}/health", node.url)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(node.terminate(), "clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_batch_is_answered_per_transaction_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::dev(&dir.path().join("home"));
    let client = node.client();
    let status = client.status().await.unwrap();
    let (alice, bob) = (devnet_key("alice"), devnet_key("bob"));
    let tx = |nonce: u64, genesis: &Hash| {
        let signed = Transaction::transfer(
            status.chain_id.clone(),
            alice.address(),
            bob.address(),
            5,
            1,
            nonce,
        )
        .sign(&alice, genesis);
        to_hex(&signed.encode())
    };
    let good = [tx(0, &status.genesis_hash), tx(1, &status.genesis_hash)];
    let forged = tx(2, &Hash::digest(b"another genesis"));
    let ahead = tx(5, &status.genesis_hash);
    let answer = call_raw(
        &node.url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tx_submitBatch",
               "params": [[good[0], "0xzz", good[1], forged, ahead, good[0]]]}),
    )
    .await;
    let entries = answer["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(entries.len(), 6, "{answer}");
    assert_eq!(entries[0]["status"], json!("pending"), "{answer}");
    assert_eq!(entries[1]["error"]["code"], json!(2002), "{answer}");
    assert_eq!(entries[2]["status"], json!("pending"), "{answer}");
    assert_eq!(entries[3]["error"]["code"], json!(1004), "{answer}");
    assert_eq!(entries[3]["error"]["reason"], json!("invalid_signature"));
    assert_eq!(entries[4]["status"], json!("queued"), "{answer}");
    assert_eq!(entries[4]["waiting_for_nonce"], json!(2), "{answer}");
    assert_eq!(
        entries[5]["error"]["reason"],
        json!("duplicate"),
        "{answer}"
    );
    // Both admitted transfers commit.
    let second: Hash = serde_json::from_value(entries[2]["hash"].clone()).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.tx(&second).await.unwrap().status != TxState::Committed {
        assert!(tokio::time::Instant::now() < deadline, "not committed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(client.account(&alice.address()).await.unwrap().nonce, 2);

    // Over the limit: refused whole, nothing admitted.
    let too_many: Vec<String> = (0..1_001)
        .map(|n| tx(100 + n, &status.genesis_hash))
        .collect();
    let answer = call_raw(
        &node.url,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tx_submitBatch", "params": [too_many]}),
    )
    .await;
    assert_eq!(answer["error"]["code"], json!(-32602), "{answer}");
    assert_eq!(
        client.status().await.unwrap().mempool_size,
        1,
        "only the queued one"
    );
    // An empty batch is an empty answer.
    let answer = call_raw(
        &node.url,
        json!({"jsonrpc": "2.0", "id": 3, "method": "tx_submitBatch", "params": [[]]}),
    )
    .await;
    assert_eq!(answer["result"], json!([]), "{answer}");
}

/// The nonce-gap inspector: transactions behind a gap are listed with the
/// nonce they wait for (as `tx_get` says) and the time each has left, by
/// `account_getPending` and `tally pending`; the missing one releases them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_inspector_names_the_missing_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::dev(&dir.path().join("home"));
    let client = node.client();
    let status = client.status().await.unwrap();
    let bob = devnet_key("bob");
    let nonce = client.account(&bob.address()).await.unwrap().nonce;
    let sign = |n: u64| {
        Transaction::transfer(
            status.chain_id.clone(),
            bob.address(),
            devnet_key("alice").address(),
            5,
            1,
            n,
        )
        .sign(&bob, &status.genesis_hash)
    };
    let (second, third) = (sign(nonce + 1), sign(nonce + 2));
    for tx in [&second, &third] {
        let answer = client.submit(tx, WaitMode::None).await.unwrap();
        assert_eq!(answer.status, TxState::Queued);
    }
    let info = client.pending(&bob.address()).await.unwrap();
    assert_eq!((info.nonce, info.next_nonce), (nonce, nonce));
    assert!(info.pending.is_empty());
    assert_eq!(info.missing_nonces, [nonce]);
    let queued: Vec<u64> = info.queued.iter().map(|t| t.nonce).collect();
    assert_eq!(queued, [nonce + 1, nonce + 2]);
    assert_eq!(info.queued[0].hash, second.id());
    let ttl = info.limits.queued_ttl_ms;
    for t in &info.queued {
        assert_eq!(t.waiting_for_nonce, Some(nonce));
        let left = t.expires_in_ms.unwrap();
        assert!(left > 0 && left <= ttl, "{left} of {ttl}");
    }
    let by_tx_get = client.tx(&third.id()).await.unwrap();
    assert_eq!(by_tx_get.waiting_for_nonce, Some(nonce), "tx_get agrees");

    let (ok, out, err) = tally(&["pending", "devnet:bob", "--rpc", &node.url]);
    assert!(ok, "tally pending: {err}");
    assert!(
        out.contains(&format!(
            "waiting for nonce {nonce}; {} and {} are queued;",
            nonce + 1,
            nonce + 2
        )),
        "{out}"
    );
    assert!(out.contains("queued"), "{out}");

    // The missing transaction releases the queue: all three commit.
    let first = sign(nonce);
    let answer = client.submit(&first, WaitMode::Committed).await.unwrap();
    assert_eq!(answer.status, TxState::Committed);
    let deadline = tokio::time::Instant::now() + common::STEP_DEADLINE;
    while client.tx(&third.id()).await.unwrap().status != TxState::Committed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue was not released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let after = client.pending(&bob.address()).await.unwrap();
    assert!(
        after.queued.is_empty() && after.missing_nonces.is_empty(),
        "{after:?}"
    );
    let (ok, out, _) = tally(&["pending", "devnet:bob", "--rpc", &node.url]);
    assert!(ok);
    assert!(out.contains("nothing held"), "{out}");
    assert!(node.terminate(), "clean shutdown");
}
