//! Block sync against a lying peer: a full node starts with two peers, an
//! honest validator and a peer that claims a tip far beyond the chain and
//! answers block requests with a forged block (no valid commit
//! certificate). The full node syncs the real chain from the validator,
//! bans the liar, and never commits the forgery.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{edit_config, init_dev_home, tally, NodeProcess};
use tally_client::BlockId;
use tally_gossip::{Config, NodeId, RequestHandler};
use tally_host::sync::{decode_request, protocol_name, SyncRequest, SyncResponse};
use tally_ledger::{
    devnet_key, evidence_hash, last_commit_hash, tx_root, Block, ChainContext, Commit, Genesis,
    Hash, Header, StoredBlock, BLOCK_VERSION,
};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(60);

/// Claims a tip a million blocks ahead; serves a forged block for any
/// height asked.
struct Liar {
    chain: ChainContext,
}

impl RequestHandler for Liar {
    fn answer(&self, _from: NodeId, request: Vec<u8>) -> Option<Vec<u8>> {
        let answer = match decode_request(&request, 1 << 20).ok()? {
            SyncRequest::Blocks { from, .. } => self.forged(from),
            _ => SyncResponse::Status {
                height: 1_000_000,
                hash: Hash::digest(b"not a block"),
            },
        };
        borsh::to_vec(&answer).ok()
    }
}

impl Liar {
    fn forged(&self, from: u64) -> SyncResponse {
        let block = Block {
            header: Header {
                version: BLOCK_VERSION,
                chain_id: self.chain.genesis.chain_id.clone(),
                height: from,
                parent_hash: Hash::digest(b"made up"),
                timestamp_ms: 1,
                proposer: devnet_key("validator-0").address(),
                tx_root: tx_root(&[]),
                tx_count: 0,
                state_root: Hash::ZERO,
                validators_hash: self.chain.validators.hash(),
                next_validators_hash: self.chain.validators.hash(),
                last_commit_hash: last_commit_hash(&None),
                evidence_hash: evidence_hash(&[]),
            },
            txs: vec![],
            last_commit: None,
            evidence: vec![],
        };
        let commit = Commit {
            height: from,
            round: 0,
            block_hash: block.hash(),
            signatures: vec![],
        };
        SyncResponse::Blocks(vec![StoredBlock { block, commit }])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_syncs_from_honest_peers_and_bans_a_liar() {
    let dir = tempfile::tempdir().unwrap();
    // A single-validator chain that makes a block every 20 ms when idle.
    let validator_home = dir.path().join("validator");
    init_dev_home(&validator_home);
    edit_config(&validator_home, |config| {
        let mut producer = toml::Table::new();
        producer.insert("empty_block_interval_ms".into(), 20.into());
        config.insert("producer".into(), producer.into());
    });
    let validator = NodeProcess::run(&validator_home);
    let genesis_path = validator_home.join("genesis.json");
    let chain = ChainContext::new(
        Genesis::from_json(&std::fs::read_to_string(&genesis_path).unwrap()).unwrap(),
    );
    let deadline = Instant::now() + DEADLINE;
    while validator.client().status().await.unwrap().height < 30 {
        assert!(Instant::now() < deadline, "the validator makes no blocks");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let config = Config {
        request_protocol: protocol_name(&chain.genesis_hash),
        ..Config::default()
    };
    let (liar, _inbound) = tally_gossip::start(
        config,
        Hash::digest(b"liar node key").0,
        chain.genesis_hash,
        common::DeafFilter,
        Arc::new(Liar {
            chain: chain.clone(),
        }),
    )
    .await
    .unwrap();

    let full_home = dir.path().join("full");
    let liar_address = liar.address().to_string();
    let (ok, _, err) = tally(&[
        "init",
        "--home",
        full_home.to_str().unwrap(),
        "--genesis",
        genesis_path.to_str().unwrap(),
        "--full-node",
        "--peer",
        &liar_address,
        "--peer",
        &validator.p2p,
    ]);
    assert!(ok, "init failed: {err}");
    let full = NodeProcess::run(&full_home);
    let client = full.client();

    // It catches up with the validator despite the liar's claims...
    let target = validator.client().status().await.unwrap().height;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = client.status().await.unwrap();
        if status.height >= target {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stuck at {} of {target}",
            status.height
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...holds the validator's blocks, not the forgery...
    let vclient = validator.client();
    for height in [1, target / 2, target] {
        let ours = client.block(BlockId::Height(height), false).await.unwrap();
        let theirs = vclient.block(BlockId::Height(height), false).await.unwrap();
        assert_eq!(ours.hash, theirs.hash, "block {height}");
    }
    // ...and has banned the liar: disconnected, and not let back in
    // although it is a configured peer (redialled every 2 s).
    let full_id = client.peers().await.unwrap().node_id;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = client
            .peers()
            .await
            .unwrap()
            .peers
            .iter()
            .any(|p| p.node_id == liar.peer_id().to_string());
        let connected = liar.peers().iter().any(|p| p.id.to_string() == full_id);
        if !listed && !connected {
            break;
        }
        assert!(Instant::now() < deadline, "the liar is still connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The honest link stays and the node keeps following the chain.
    let peers = client.peers().await.unwrap().peers;
    assert!(
        peers.iter().any(|p| validator.p2p.ends_with(&p.node_id)),
        "{peers:?}"
    );
    let now = client.status().await.unwrap().height;
    let deadline = Instant::now() + DEADLINE;
    while client.status().await.unwrap().height < now + 5 {
        assert!(Instant::now() < deadline, "stopped following the chain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !liar.peers().iter().any(|p| p.id.to_string() == full_id),
        "the banned liar got back in"
    );
}
