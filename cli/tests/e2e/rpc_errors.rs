//! Each documented error code, produced by a real bad request against a real
//! node; malformed, oversized and mistyped requests are answered with errors
//! while the node keeps committing and serving.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use crate::common;

use common::{call_raw, init_dev_home, post_raw, set_config, NodeProcess};
use serde_json::{json, Value};
use tally_client::{ClientError, TxState, WaitMode};
use tally_ledger::{
    devnet_key, to_hex, Address, ChainId, Hash, Keypair, SignedTransaction, Transaction,
};
use tally_rpc::codes;

struct Ctx {
    node: NodeProcess,
    chain_id: ChainId,
    genesis_hash: Hash,
}

impl Ctx {
    fn tx(
        &self,
        key: &Keypair,
        to: Address,
        amount: u64,
        fee: u64,
        nonce: u64,
    ) -> SignedTransaction {
        Transaction::transfer(self.chain_id.clone(), key.address(), to, amount, fee, nonce)
            .sign(key, &self.genesis_hash)
    }

    async fn submit_hex(&self, hex: &str) -> Value {
        call_raw(
            &self.node.url,
            json!({"jsonrpc": "2.0", "id": 7, "method": "tx_submit", "params": [hex]}),
        )
        .await
    }

    async fn submit(&self, tx: &SignedTransaction) -> Value {
        self.submit_hex(&to_hex(&tx.encode())).await
    }

    async fn next_nonce(&self, key: &Keypair) -> u64 {
        self.node
            .client()
            .account(&key.address())
            .await
            .unwrap()
            .next_nonce
    }
}

/// Asserts a JSON-RPC error with `code` (and `reason` when given).
fn assert_error(response: &Value, code: i32, reason: Option<&str>, what: &str) {
    let error = &response["error"];
    assert_eq!(
        error["code"],
        json!(code),
        "{what}: expected error {code}, got {response}"
    );
    if let Some(reason) = reason {
        assert_eq!(error["data"]["reason"], json!(reason), "{what}: {response}");
    }
    assert!(
        error["message"].as_str().is_some_and(|m| m.len() > 5),
        "{what}: message must say what is wrong: {response}"
    );
}

async fn start() -> (tempfile::TempDir, Ctx) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_dev_home(&home);
    // Small pool limits so that "sender queue full" and "mempool full" can
    // be reached with a handful of transactions; the whole pool for
    // clients (the share kept for peers is the mempool's own test).
    set_config(
        &home,
        "mempool",
        &[
            ("max_txs", 4),
            ("max_txs_per_sender", 2),
            ("client_fill_percent", 100),
        ],
    );
    set_config(
        &home,
        "rpc",
        &[("max_body_bytes", 64 * 1024), ("max_batch_len", 10)],
    );
    let node = NodeProcess::run(&home);
    let status = node.client().status().await.unwrap();
    let ctx = Ctx {
        node,
        chain_id: status.chain_id,
        genesis_hash: status.genesis_hash,
    };
    (dir, ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_error_code_from_a_real_request() {
    let (_dir, ctx) = start().await;
    let (alice, bob, carol) = (devnet_key("alice"), devnet_key("bob"), devnet_key("carol"));
    let to = bob.address();

    assert_error(
        &ctx.submit_hex("not hex").await,
        codes::MALFORMED_HEX,
        Some("malformed_hex"),
        "no 0x",
    );
    assert_error(
        &ctx.submit_hex("0x00").await,
        codes::MALFORMED_TX,
        Some("malformed_tx"),
        "truncated",
    );
    let good = ctx.tx(&alice, to, 1, 1, ctx.next_nonce(&alice).await);
    let mut trailing = good.encode();
    trailing.push(0);
    assert_error(
        &ctx.submit_hex(&to_hex(&trailing)).await,
        codes::MALFORMED_TX,
        None,
        "trailing byte",
    );
    assert_error(
        &ctx.submit_hex(&to_hex(&[0u8; tally_ledger::MAX_TX_BYTES + 1]))
            .await,
        codes::TX_TOO_LARGE,
        Some("tx_too_large"),
        "oversized tx",
    );

    let nonce = ctx.next_nonce(&alice).await;
    let other_chain = Transaction::transfer(
        ChainId::new("other-chain").unwrap(),
        alice.address(),
        to,
        1,
        1,
        nonce,
    )
    .sign(&alice, &ctx.genesis_hash);
    assert_error(
        &ctx.submit(&other_chain).await,
        codes::WRONG_CHAIN,
        Some("wrong_chain"),
        "other chain id",
    );
    let other_genesis =
        Transaction::transfer(ctx.chain_id.clone(), alice.address(), to, 1, 1, nonce)
            .sign(&alice, &Hash::digest(b"another genesis"));
    assert_error(
        &ctx.submit(&other_genesis).await,
        codes::INVALID_SIGNATURE,
        Some("invalid_signature"),
        "other genesis",
    );
    let mut not_a_key = [0u8; 32];
    not_a_key[0] = 2;
    assert_error(
        &ctx.submit(&ctx.tx(&alice, Address(not_a_key), 1, 1, nonce))
            .await,
        codes::INVALID_RECIPIENT,
        Some("invalid_recipient"),
        "recipient",
    );
    let mut identity = [0u8; 32];
    identity[0] = 1; // a canonical point of small order: nobody could spend from it
    assert_error(
        &ctx.submit(&ctx.tx(&alice, Address(identity), 1, 1, nonce))
            .await,
        codes::INVALID_RECIPIENT,
        Some("invalid_recipient"),
        "small-order recipient",
    );
    assert_error(
        &ctx.submit(&ctx.tx(&alice, to, 1, 0, nonce)).await,
        codes::FEE_TOO_LOW,
        Some("fee_too_low"),
        "fee 0",
    );
    assert_error(
        &ctx.submit(&ctx.tx(&alice, to, u64::MAX, 1, nonce)).await,
        codes::AMOUNT_OVERFLOW,
        Some("amount_overflow"),
        "overflow",
    );
    let poor = devnet_key("nobody-funded-this");
    assert_error(
        &ctx.submit(&ctx.tx(&poor, to, 1, 1, 0)).await,
        codes::INSUFFICIENT_FUNDS,
        Some("insufficient_funds"),
        "unfunded",
    );

    // Commit one transfer, then replay its nonce and resubmit it.
    let first = ctx.tx(&alice, to, 5, 1, nonce);
    let committed = ctx
        .node
        .client()
        .submit(&first, WaitMode::Committed)
        .await
        .unwrap();
    assert_eq!(committed.status, TxState::Committed);
    assert_error(
        &ctx.submit(&first).await,
        codes::DUPLICATE_TX,
        Some("already_committed"),
        "committed twice",
    );
    assert_error(
        &ctx.submit(&ctx.tx(&alice, to, 6, 1, nonce)).await,
        codes::NONCE_TOO_LOW,
        Some("nonce_too_low"),
        "replayed nonce",
    );
    assert_error(
        &ctx.submit(&ctx.tx(&alice, to, 6, 1, nonce + 1 + 65)).await,
        codes::NONCE_GAP,
        Some("nonce_gap"),
        "far ahead",
    );

    // Queued transactions (behind a gap) stay put, so the pool rules apply to them.
    let queued = ctx.tx(&alice, to, 7, 1, nonce + 2);
    let answer = ctx.submit(&queued).await;
    assert_eq!(answer["result"]["status"], json!("queued"), "{answer}");
    assert_eq!(
        answer["result"]["waiting_for_nonce"],
        json!(nonce + 1),
        "{answer}"
    );
    assert_error(
        &ctx.submit(&queued).await,
        codes::DUPLICATE_TX,
        Some("duplicate"),
        "pending twice",
    );
    assert_error(
        &ctx.submit(&ctx.tx(&alice, to, 8, 1, nonce + 2)).await,
        codes::REPLACEMENT_UNDERPRICED,
        Some("replacement_underpriced"),
        "same fee",
    );
    let replacement = ctx.tx(&alice, to, 8, 2, nonce + 2);
    assert!(
        ctx.submit(&replacement).await["result"].is_object(),
        "a higher fee replaces"
    );
    assert!(ctx.submit(&ctx.tx(&alice, to, 9, 1, nonce + 3)).await["result"].is_object());
    assert_error(
        &ctx.submit(&ctx.tx(&alice, to, 9, 1, nonce + 4)).await,
        codes::SENDER_QUEUE_FULL,
        Some("sender_queue_full"),
        "per sender",
    );
    let bob_nonce = ctx.next_nonce(&bob).await;
    assert!(ctx.submit(&ctx.tx(&bob, to, 1, 1, bob_nonce + 1)).await["result"].is_object());
    assert!(ctx.submit(&ctx.tx(&bob, to, 1, 1, bob_nonce + 2)).await["result"].is_object());
    let carol_nonce = ctx.next_nonce(&carol).await;
    let full = ctx.submit(&ctx.tx(&carol, to, 1, 1, carol_nonce + 1)).await;
    assert_error(
        &full,
        codes::MEMPOOL_FULL,
        Some("mempool_full"),
        "pool full",
    );
    let retry = full["error"]["data"]["retry_after_ms"].as_u64();
    assert!(
        retry.is_some_and(|ms| (100..=5_000).contains(&ms)),
        "a full pool says when to retry: {full}"
    );

    // The replaced transaction reports why it left.
    let replaced = ctx.node.client().tx(&queued.id()).await.unwrap();
    assert_eq!(replaced.status, TxState::Rejected, "{replaced:?}");

    let url = &ctx.node.url;
    let bad_address = call_raw(
        url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "account_get", "params": ["tally1qqqqqq"]}),
    )
    .await;
    assert_error(
        &bad_address,
        codes::MALFORMED_ADDRESS,
        Some("malformed_address"),
        "address",
    );
    let bad_hash = call_raw(
        url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tx_get", "params": ["0x1234"]}),
    )
    .await;
    assert_error(
        &bad_hash,
        codes::MALFORMED_HEX,
        Some("malformed_hex"),
        "hash",
    );
    let unknown = call_raw(url, json!({"jsonrpc": "2.0", "id": 1, "method": "chain_getBlock", "params": [1_000_000_000u64]})).await;
    assert_error(
        &unknown,
        codes::UNKNOWN_BLOCK,
        Some("unknown_block"),
        "unknown block",
    );
    let unknown_hash = call_raw(url, json!({"jsonrpc": "2.0", "id": 1, "method": "chain_getBlock", "params": [{"hash": Hash::ZERO.to_hex()}]})).await;
    assert_error(
        &unknown_hash,
        codes::UNKNOWN_BLOCK,
        None,
        "unknown block hash",
    );
    let unknown_tx = ctx
        .node
        .client()
        .tx(&Hash::digest(b"never sent"))
        .await
        .unwrap();
    assert_eq!(unknown_tx.status, TxState::Unknown);

    // The SDK surfaces the same codes.
    match ctx.node.client().submit(&first, WaitMode::None).await {
        Err(ClientError::Rpc { code, reason, .. }) => {
            assert_eq!(code, codes::DUPLICATE_TX);
            assert_eq!(reason.as_deref(), Some("already_committed"));
        }
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_errors_and_the_node_keeps_serving() {
    let (_dir, ctx) = start().await;
    let url = &ctx.node.url;
    let alice = devnet_key("alice").address().to_text();

    let (_, body) = post_raw(url, "{not json", "application/json").await;
    assert_error(
        &serde_json::from_str(&body).unwrap(),
        -32700,
        None,
        "parse error",
    );
    let (status, body) = post_raw(url, vec![0xffu8, 0xfe, 0x7b], "application/json").await;
    assert_eq!(status, 400, "a body that is not UTF-8: {body}");
    assert_error(
        &serde_json::from_str(&body).unwrap(),
        -32700,
        None,
        "invalid UTF-8",
    );
    // Deep nesting is refused by the JSON parser's depth limit (128).
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let (_, body) = post_raw(url, deep, "application/json").await;
    assert_error(
        &serde_json::from_str(&body).unwrap(),
        -32700,
        None,
        "deeply nested array",
    );
    let deep = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
    let (_, body) = post_raw(url, deep, "application/json").await;
    assert_error(
        &serde_json::from_str(&body).unwrap(),
        -32700,
        None,
        "deeply nested object",
    );

    let not_a_request = call_raw(url, json!({"jsonrpc": "2.0", "id": 1})).await;
    assert_error(&not_a_request, -32600, None, "no method");
    let unknown_method = call_raw(
        url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tx_launchRockets"}),
    )
    .await;
    assert_error(&unknown_method, -32601, None, "unknown method");
    let wrong_type = call_raw(
        url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "account_get", "params": [42]}),
    )
    .await;
    assert_error(&wrong_type, -32602, None, "number for an address");
    let wrong_wait = call_raw(
        url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tx_submit", "params": ["0x00", "forever"]}),
    )
    .await;
    assert_error(&wrong_wait, -32602, None, "unknown wait mode");
    let bad_block = call_raw(
        url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "chain_getBlock", "params": [-1]}),
    )
    .await;
    assert_error(&bad_block, -32602, None, "negative height");

    let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "account_get", "params": ["x".repeat(100 * 1024)]});
    let (status, body) = post_raw(url, huge.to_string(), "application/json").await;
    assert_eq!(status, 413, "oversized body: {body}");
    assert_error(
        &serde_json::from_str(&body).unwrap(),
        -32007,
        None,
        "oversized body",
    );

    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "account_get", "params": [alice]});
    let batch: Vec<Value> = (0..11).map(|_| call.clone()).collect();
    let answer = call_raw(url, Value::Array(batch)).await;
    assert_error(&answer, -32010, None, "oversized batch");
    let empty = call_raw(url, json!([])).await;
    assert_error(&empty, -32600, None, "empty batch");

    // After all that, the node still answers and still commits.
    let client = ctx.node.client();
    let (_, result) = client
        .transfer(
            &devnet_key("bob"),
            devnet_key("carol").address(),
            3,
            1,
            WaitMode::Committed,
        )
        .await
        .unwrap();
    assert_eq!(result.status, TxState::Committed);
    let health = reqwest::get(format!("{url}/health")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_and_frees_its_slot() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    init_dev_home(&home);
    set_config(
        &home,
        "rpc",
        &[
            ("max_connections", 2),
            ("wait_timeout_ms", 500),
            ("idle_timeout_ms", 1_000),
        ],
    );
    let node = NodeProcess::run(&home);
    let addr = node.url.trim_start_matches("http://").to_owned();
    // Two silent connections take both slots ...
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // ... and are closed by the node (read returns end-of-stream or an error).
    for mut conn in silent {
        let mut buf = [0u8; 16];
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(20), conn.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the node must close an idle connection: {read:?}"
        );
    }
    // The slots are free again.
    let status = node.client().status().await.unwrap();
    assert_eq!(status.chain_id.as_str(), "tally-dev");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_without_peers_refuses_transactions_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // alice's key is not the validator's: this node serves but does not
    // produce, and with no peers it cannot pass a transaction on.
    common::init_dev_home_with_key(&home, "alice");
    let node = NodeProcess::run(&home);
    let client = node.client();
    assert_eq!(client.status().await.unwrap().validator, None);
    match client
        .transfer(
            &devnet_key("alice"),
            devnet_key("bob").address(),
            1,
            1,
            WaitMode::None,
        )
        .await
    {
        Err(ClientError::Rpc {
            code,
            reason,
            message,
        }) => {
            assert_eq!(
                (code, reason.as_deref()),
                (codes::UNAVAILABLE, Some("no_peers"))
            );
            assert!(message.contains("no connected peers"), "{message}");
        }
        other => panic!("expected no_peers, got {other:?}"),
    }
}
