//! The peer-to-peer door of the bad-input catalogue (docs/OPERATIONS.md,
//! "Limits"), against a real node that keeps making blocks throughout:
//! silent and trickling connections, bytes that are not a handshake, an
//! authenticated peer sending a message over the size limit, then garbage
//! consensus frames and invalid transactions; and over RPC, a flood of
//! transfers with bad signatures. Each is refused or cut off, an honest
//! transfer commits meanwhile, and the node's memory stays bounded.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{edit_config, init_dev_home, NodeProcess};
use tally_client::WaitMode;
use tally_gossip::{Config, Handle, Topic};
use tally_ledger::{devnet_key, ChainContext, Genesis, Hash, Transaction};
use tally_rpc::codes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// Connections that never say a word.
const SILENT_CONNECTIONS: usize = 100;

/// Transfers with bad signatures sent over RPC.
const RPC_FLOOD: usize = 2_000;

/// Most the node's peak resident memory may grow over the whole catalogue.
const MAX_RSS_GROWTH: u64 = 64 * 1024 * 1024;

/// `/ip4/127.0.0.1/tcp/PORT/p2p/ID` → `127.0.0.1:PORT`.
fn socket_of(p2p: &str) -> SocketAddr {
    let parts: Vec<&str> = p2p.split('/').collect();
    assert_eq!((parts[1], parts[3]), ("ip4", "tcp"), "{p2p}");
    format!("{}:{}", parts[2], parts[4]).parse().unwrap()
}

/// A process's resident (`VmRSS:`) or peak resident (`VmHWM:`) memory.
fn memory(pid: u32, field: &str) -> u64 {
    tally_cli::bench::proc_status_bytes(pid, field)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Waits until the node's chain has grown by `blocks`.
async fn grows(node: &NodeProcess, blocks: u64, what: &str) {
    let client = node.client();
    let start = client.status().await.unwrap().height;
    let deadline = Instant::now() + DEADLINE;
    while client.status().await.unwrap().height < start + blocks {
        assert!(Instant::now() < deadline, "no new blocks {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until the other side closes the connection (end of stream or a
/// reset); fails if it is still open at the deadline.
async fn closed_by_node(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    let result = timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(result.is_ok(), "the node left {what} open for {DEADLINE:?}");
}

/// Whether `attacker` is connected to the node with id `node_id`.
async fn connected(attacker: &Handle, node_id: &str) -> bool {
    attacker.peers().iter().any(|p| p.id.to_string() == node_id)
}

/// A peer of the chain whose own limits let it send 16 MiB messages,
/// connected to the node and able to publish to it.
async fn hostile_peer(
    chain: &ChainContext,
    node_p2p: &str,
    key: &str,
) -> (
    Handle,
    tokio::sync::mpsc::Receiver<tally_gossip::Inbound<()>>,
) {
    let config = Config {
        peers: vec![node_p2p.parse().unwrap()],
        max_message_bytes: 16 * 1024 * 1024,
        redial_interval: Duration::from_millis(200),
        ..Config::default()
    };
    let (peer, inbound) = tally_gossip::start(
        config,
        Hash::digest(key.as_bytes()).0,
        chain.genesis_hash,
        common::DeafFilter,
        Arc::new(common::Mute),
    )
    .await
    .unwrap();
    // Publishing works once the node's subscriptions are known.
    let deadline = Instant::now() + DEADLINE;
    let mut seq = 0u32;
    while peer
        .publish(Topic::Consensus, seq.to_le_bytes().repeat(8))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the peer never got a path");
        seq += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (peer, inbound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_cut_off_while_the_node_keeps_committing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("node");
    init_dev_home(&home);
    edit_config(&home, |config| {
        let mut producer = toml::Table::new();
        producer.insert("empty_block_interval_ms".into(), 20.into());
        config.insert("producer".into(), producer.into());
    });
    let node = NodeProcess::run(&home);
    let client = node.client();
    let chain = ChainContext::new(
        Genesis::from_json(&std::fs::read_to_string(home.join("genesis.json")).unwrap()).unwrap(),
    );
    let node_id = node.p2p.rsplit('/').next().unwrap().to_owned();
    let socket = socket_of(&node.p2p);
    grows(&node, 3, "at start").await;
    let rss_at_start = memory(node.pid(), "VmRSS:");

    // Silent connections, and one that trickles a handshake a byte at a
    // time: each holds a slot only until the handshake timeout.
    let mut silent = Vec::new();
    for _ in 0..SILENT_CONNECTIONS {
        silent.push(TcpStream::connect(socket).await.unwrap());
    }
    let trickle = tokio::spawn(async move {
        let mut stream = TcpStream::connect(socket).await.unwrap();
        let started = Instant::now();
        let header = b"\x13/multistream/1.0.0\n".repeat(100);
        for byte in header {
            if stream.write_all(&[byte]).await.is_err() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("a trickling handshake was kept open for 200 s");
    });
    grows(&node, 5, "with silent connections open").await;

    // Bytes that are no handshake at all: the connection is dropped.
    let mut noise = TcpStream::connect(socket).await.unwrap();
    let junk: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7919 % 251) as u8).collect();
    let _ = noise.write_all(&junk).await; // the node may hang up midway
    closed_by_node(&mut noise, "a connection sending junk").await;

    // An authenticated peer of the same chain, whose own limits let it send
    // what the node refuses.
    let (attacker, _inbound) = hostile_peer(&chain, &node.p2p, "hostile peer key").await;

    // Transactions with bad signatures and garbage consensus frames: the
    // node bans the peer after 10 (`max_invalid_messages`).
    let alice = devnet_key("alice");
    let forged = |nonce: u64| {
        Transaction::transfer(
            chain.genesis.chain_id.clone(),
            alice.address(),
            devnet_key("bob").address(),
            1,
            1_000,
            nonce,
        )
        .sign(&alice, &Hash::digest(b"some other genesis"))
    };
    for i in 0..200u64 {
        let (topic, data) = if i % 2 == 0 {
            (
                Topic::Transactions,
                tally_ledger::encode_tx_batch(&[forged(i).encode()]),
            )
        } else {
            (Topic::Consensus, [0xee; 40].repeat(1 + i as usize % 5))
        };
        if attacker.publish(topic, data).await.is_err() {
            break; // no path left: it was cut off
        }
    }
    let deadline = Instant::now() + DEADLINE;
    while connected(&attacker, &node_id).await {
        assert!(
            Instant::now() < deadline,
            "the hostile peer stayed connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A second peer sends a message over the node's limit (largest block +
    // 64 KiB = 4.06 MiB): the node reads its length prefix and closes the
    // gossip stream without buffering it.
    let (oversized, _inbound2) = hostile_peer(&chain, &node.p2p, "oversized peer key").await;
    let _ = oversized
        .publish(Topic::Transactions, vec![0x42; 5 * 1024 * 1024])
        .await;
    grows(&node, 5, "after an oversized gossip message").await;

    // A flood of bad transfers over RPC, 16 at a time, while an honest
    // transfer commits. (Nonces within alice's window: the cheap nonce
    // checks come before the signature, so far-ahead ones would be refused
    // as nonce_gap without a signature check.)
    let url = node.url.clone();
    let floods: Vec<_> = (0..16u64)
        .map(|lane| {
            let client = tally_client::Client::new(&url).unwrap();
            let txs: Vec<_> = (0..(RPC_FLOOD / 16) as u64)
                .map(|i| forged((lane * 1_000 + i) % 60))
                .collect();
            tokio::spawn(async move {
                for tx in txs {
                    let err = client.submit(&tx, WaitMode::None).await.unwrap_err();
                    assert_eq!(err.code(), Some(codes::INVALID_SIGNATURE), "{err}");
                }
            })
        })
        .collect();
    let (_, honest) = client
        .transfer(
            &devnet_key("carol"),
            devnet_key("bob").address(),
            5,
            1_000,
            WaitMode::Committed,
        )
        .await
        .unwrap();
    assert!(
        honest.height.is_some(),
        "the honest transfer was not committed"
    );
    for flood in floods {
        flood.await.unwrap();
    }

    // The banned peer, redialling every 200 ms, stays out while the node
    // makes more blocks.
    grows(&node, 20, "after the floods").await;
    assert!(
        !connected(&attacker, &node_id).await,
        "a banned peer got back in"
    );
    let listed = client.peers().await.unwrap().peers;
    assert!(
        !listed
            .iter()
            .any(|p| p.node_id == attacker.peer_id().to_string()),
        "{listed:?}"
    );

    // Every silent and trickling connection was closed by the node.
    for (i, stream) in silent.iter_mut().enumerate() {
        closed_by_node(stream, &format!("silent connection {i}")).await;
    }
    let trickled = timeout(DEADLINE, trickle).await.unwrap().unwrap();
    assert!(trickled < DEADLINE, "trickled for {trickled:?}");

    let peak = memory(node.pid(), "VmHWM:");
    eprintln!("resident memory: {rss_at_start} bytes at start, peak {peak}");
    assert!(
        peak < rss_at_start + MAX_RSS_GROWTH,
        "peak memory {peak} grew more than {MAX_RSS_GROWTH} over {rss_at_start}"
    );
    grows(&node, 3, "at the end").await;
    attacker.stop().await;
    oversized.stop().await;
}
