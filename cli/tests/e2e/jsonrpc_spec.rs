//! JSON-RPC 2.0 to the letter: every example of the specification's
//! section 7 (with Tally's method names), and the ids, notifications,
//! bodies and transport limits a client written from RPC.md alone found
//! answered otherwise, replayed against a real node.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use crate::common;

use common::{init_dev_home, post_raw, set_config, NodeProcess};
use serde_json::{json, Value};
use tally_client::{Client, TxState};
use tally_ledger::{devnet_key, to_hex, Hash, Transaction};

struct Node {
    node: NodeProcess,
    client: Client,
}

impl Node {
    /// Posts `body` as JSON; (HTTP status, body text).
    async fn post(&self, body: &str) -> (u16, String) {
        post_raw(&self.node.url, body.to_owned(), "application/json").await
    }

    /// Posts `body`; the answer, which must come with HTTP 200.
    async fn answer(&self, body: &str) -> Value {
        let (status, text) = self.post(body).await;
        assert_eq!(status, 200, "{body} → HTTP {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{body} → not JSON ({e}): {text}"))
    }

    /// Posts `body`, which must get no answer at all.
    async fn silence(&self, body: &str) {
        let (status, text) = self.post(body).await;
        assert_eq!((status, text.as_str()), (204, ""), "{body}: no answer");
    }

    /// A signed transfer of 1 from alice to bob with her next nonce (plus
    /// `ahead`), as hex, and its id.
    async fn transfer(&self, ahead: u64) -> (String, Hash) {
        let alice = devnet_key("alice");
        let status = self.client.status().await.unwrap();
        let nonce = self
            .client
            .account(&alice.address())
            .await
            .unwrap()
            .next_nonce
            + ahead;
        let tx = Transaction::transfer(
            status.chain_id,
            alice.address(),
            devnet_key("bob").address(),
            1,
            1,
            nonce,
        )
        .sign(&alice, &status.genesis_hash);
        (to_hex(&tx.encode()), tx.id())
    }

    async fn known(&self, hash: &Hash) -> bool {
        self.client.tx(hash).await.unwrap().status != TxState::Unknown
    }
}

/// An error answer with `code` and `id`; its message is not empty.
fn assert_error(answer: &Value, code: i32, id: Value, what: &str) {
    assert_eq!(answer["jsonrpc"], "2.0", "{what}: {answer}");
    assert_eq!(answer["error"]["code"], json!(code), "{what}: {answer}");
    assert_eq!(answer["id"], id, "{what}: {answer}");
    assert!(answer.get("result").is_none(), "{what}: {answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {answer}"
    );
}

/// A transport refusal: HTTP `status` with a JSON-RPC error `code`, id null.
fn assert_refused((status, text): (u16, String), http: u16, code: i32, what: &str) {
    assert_eq!(status, http, "{what}: {text}");
    let answer =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    assert_error(&answer, code, Value::Null, what);
}

async fn start(dir: &std::path::Path) -> Node {
    let home = dir.join("home");
    init_dev_home(&home);
    set_config(
        &home,
        "rpc",
        &[
            ("max_body_bytes", 64 * 1024),
            ("max_response_bytes", 8 * 1024),
            ("max_batch_len", 20),
        ],
    );
    let node = NodeProcess::run(&home);
    let client = node.client();
    client.status().await.unwrap();
    Node { node, client }
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no length up front),
/// by hand over TCP; (HTTP status, body text).
async fn post_chunked(url: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(4096) {
        request.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        request.extend(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    // The node may answer and close before it has read everything.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    // The answer may itself be chunked: keep the JSON object.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => body[a..=b].to_owned(),
        _ => body.to_owned(),
    };
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_specification_examples_get_the_specified_answers() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path()).await;
    let alice = devnet_key("alice").address().to_text();
    let balance = n
        .client
        .account(&devnet_key("alice").address())
        .await
        .unwrap()
        .balance
        .to_string();

    // Calls by position and by name.
    let by_position = n
        .answer(&format!(
            r#"{{"jsonrpc":"2.0","method":"account_get","params":["{alice}"],"id":1}}"#
        ))
        .await;
    assert_eq!(by_position["result"]["balance"], json!(balance));
    assert_eq!(by_position["id"], 1);
    let by_name = n
        .answer(&format!(
            r#"{{"jsonrpc":"2.0","method":"account_get","params":{{"address":"{alice}"}},"id":3}}"#
        ))
        .await;
    assert_eq!(by_name["result"], by_position["result"]);
    assert_eq!(by_name["id"], 3);

    // Notifications run and get nothing back, known method or not.
    let (tx, hash) = n.transfer(0).await;
    n.silence(&format!(
        r#"{{"jsonrpc":"2.0","method":"tx_submit","params":["{tx}"]}}"#
    ))
    .await;
    assert!(
        n.known(&hash).await,
        "a notified tx_submit reaches the mempool"
    );
    n.silence(r#"{"jsonrpc":"2.0","method":"foobar"}"#).await;

    // A method that does not exist.
    let answer = n
        .answer(r#"{"jsonrpc":"2.0","method":"foobar","id":"1"}"#)
        .await;
    assert_error(&answer, -32601, json!("1"), "unknown method");

    // Invalid JSON, and an invalid request object.
    let answer = n
        .answer(r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#)
        .await;
    assert_error(&answer, -32700, Value::Null, "invalid JSON");
    let answer = n
        .answer(r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#)
        .await;
    assert_error(&answer, -32600, Value::Null, "method 1");

    // Batches: invalid JSON, empty, invalid but not empty, invalid members.
    let answer = n
        .answer(r#"[{"jsonrpc": "2.0", "method": "chain_status", "id": "1"},{"jsonrpc": "2.0", "method"]"#)
        .await;
    assert_error(&answer, -32700, Value::Null, "batch of invalid JSON");
    let answer = n.answer("[]").await;
    assert_error(&answer, -32600, Value::Null, "empty batch");
    let answer = n.answer("[1]").await;
    assert_eq!(answer.as_array().map(Vec::len), Some(1), "{answer}");
    assert_error(&answer[0], -32600, Value::Null, "[1]");
    let answer = n.answer("[1,2,3]").await;
    assert_eq!(answer.as_array().map(Vec::len), Some(3), "{answer}");
    for member in answer.as_array().unwrap() {
        assert_error(member, -32600, Value::Null, "[1,2,3]");
    }

    // A mixed batch: calls, a notification that runs, an invalid member,
    // an unknown method; answers in the batch's order, none for the
    // notification.
    let (tx, hash) = n.transfer(1).await;
    let answer = n
        .answer(&format!(
            r#"[
            {{"jsonrpc": "2.0", "method": "account_get", "params": ["{alice}"], "id": "1"}},
            {{"jsonrpc": "2.0", "method": "tx_submit", "params": ["{tx}"]}},
            {{"jsonrpc": "2.0", "method": "chain_status", "id": "2"}},
            {{"foo": "boo"}},
            {{"jsonrpc": "2.0", "method": "foo.get", "params": {{"name": "myself"}}, "id": "5"}},
            {{"jsonrpc": "2.0", "method": "chain_getGenesis", "id": "9"}}
        ]"#
        ))
        .await;
    let members = answer.as_array().unwrap();
    assert_eq!(members.len(), 5, "{answer}");
    assert_eq!(members[0]["id"], "1");
    assert!(members[0]["result"]["balance"].is_string(), "{answer}");
    assert_eq!(members[1]["id"], "2");
    assert!(members[1]["result"]["height"].is_u64(), "{answer}");
    assert_error(&members[2], -32600, Value::Null, "{\"foo\": \"boo\"}");
    assert_error(&members[3], -32601, json!("5"), "foo.get");
    assert_eq!(members[4]["id"], "9");
    assert!(members[4]["result"]["genesis_hash"].is_string(), "{answer}");
    assert!(n.known(&hash).await, "the batch's notification ran");

    // A batch of notifications only: no answer at all.
    n.silence(
        r#"[{"jsonrpc": "2.0", "method": "chain_status"},{"jsonrpc": "2.0", "method": "account_get", "params": ["x"]}]"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_bodies_and_limits_follow_the_specification_and_rpc_md() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(dir.path()).await;

    // Every number is a valid id and comes back as sent; the call runs.
    for id in [
        "-1",
        "1.5",
        "1e3",
        "-0",
        "18446744073709551616",
        "\"é\\n\"",
        "null",
    ] {
        let (tx, hash) = n.transfer(0).await;
        let (status, text) = n
            .post(&format!(
                r#"{{"jsonrpc":"2.0","method":"tx_submit","params":["{tx}"],"id":{id}}}"#
            ))
            .await;
        assert_eq!(status, 200, "id {id}: {text}");
        assert!(
            text.ends_with(&format!(r#""id":{id}}}"#)),
            "id {id} echoed as sent: {text}"
        );
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["result"]["hash"], json!(hash), "id {id}: {text}");
        assert!(n.known(&hash).await, "id {id}: the call ran");
    }
    // Other JSON values are not ids.
    for id in ["true", "[1]", "{}"] {
        let answer = n
            .answer(&format!(
                r#"{{"jsonrpc":"2.0","method":"chain_status","id":{id}}}"#
            ))
            .await;
        assert_error(&answer, -32600, Value::Null, id);
    }
    // A missing or wrong version, and params that are not structured.
    let answer = n.answer(r#"{"method":"chain_status","id":4}"#).await;
    assert_error(&answer, -32600, json!(4), "no jsonrpc member");
    let answer = n
        .answer(r#"{"jsonrpc":"1.0","method":"chain_status","id":4}"#)
        .await;
    assert_error(&answer, -32600, json!(4), "jsonrpc 1.0");
    let answer = n
        .answer(r#"{"jsonrpc":"2.0","method":"chain_status","params":null,"id":4}"#)
        .await;
    assert_error(&answer, -32600, json!(4), "params null");

    // Not JSON text at all: -32700; JSON that is not a request: -32600.
    for body in ["", "  \n\t"] {
        let answer = n.answer(body).await;
        assert_error(&answer, -32700, Value::Null, "empty body");
    }
    for body in [r#""hello""#, "5", "null", "true"] {
        let answer = n.answer(body).await;
        assert_error(&answer, -32600, Value::Null, body);
    }

    // A lone surrogate escape is one answer wherever it is: -32700.
    for body in [
        r#"{"jsonrpc":"2.0","method":"chain_\ud800","id":1}"#,
        r#"{"jsonrpc":"2.0","method":"account_get","params":["\ud800"],"id":1}"#,
        r#"{"jsonrpc":"2.0","method":"chain_status","id":"\ud800"}"#,
        r#"{"jsonrpc":"2.0","method":"chain_status","id":1,"note":"\udc00"}"#,
    ] {
        let answer = n.answer(body).await;
        assert_error(&answer, -32700, Value::Null, body);
    }

    // Transport: the media type, and bodies over the limit however sent.
    assert_refused(
        post_raw(&n.node.url, "{}".to_owned(), "text/plain").await,
        415,
        -32600,
        "text/plain",
    );
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"chain_status","params":["{}"],"id":1}}"#,
        "x".repeat(100 * 1024)
    );
    assert_refused(n.post(&big).await, 413, -32007, "big body");
    assert_refused(
        post_chunked(&n.node.url, big.as_bytes()).await,
        413,
        -32007,
        "chunked",
    );

    // A batch whose answers pass max_response_bytes (8 KiB here): -32008,
    // and its calls ran.
    let (tx, hash) = n.transfer(0).await;
    let mut batch = vec![json!({"jsonrpc":"2.0","method":"tx_submit","params":[tx],"id":0})];
    batch.extend((1..20).map(|i| json!({"jsonrpc":"2.0","method":"chain_getGenesis","id":i})));
    let answer = n.answer(&Value::Array(batch).to_string()).await;
    assert_error(&answer, -32008, Value::Null, "answers too big");
    assert!(n.known(&hash).await, "the oversized batch's transfer ran");
    // Too long a batch runs nothing.
    let batch: Vec<Value> = (0..21)
        .map(|i| json!({"jsonrpc":"2.0","method":"chain_status","id":i}))
        .collect();
    let answer = n.answer(&Value::Array(batch).to_string()).await;
    assert_error(&answer, -32010, Value::Null, "batch too long");
}
