//! Three real nodes on loopback, connected A — B — C: valid consensus
//! messages travel through B; a vote signed by a non-validator and a
//! malformed frame are dropped by B (not delivered, not forwarded) while the
//! honest links stay up; a peer that keeps sending invalid messages is
//! disconnected and banned.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use std::time::Duration;

use tally_gossip::{Config, Handle, Inbound, LedgerValidator, Topic};
use tally_ledger::devnet::devnet_genesis;
use tally_ledger::{devnet_key, ChainContext, ConsensusMessage, Hash, SignedVote, Vote, VoteKind};
use tokio::sync::mpsc::Receiver;
use tokio::time::{timeout, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

fn chain() -> ChainContext {
    ChainContext::new(devnet_genesis(4, "tally-devnet").unwrap())
}

/// A vote by `signer` for round `round`: distinct rounds give distinct messages.
fn vote(chain: &ChainContext, signer: &str, round: u32) -> Vec<u8> {
    let vote = Vote {
        chain_id: chain.genesis.chain_id.clone(),
        height: 1,
        round,
        kind: VoteKind::Prevote,
        block_hash: None,
    };
    let signed = SignedVote::sign(vote, &devnet_key(signer), &chain.genesis_hash);
    borsh::to_vec(&ConsensusMessage::Vote(signed)).unwrap()
}

async fn node(
    name: &str,
    peers: Vec<tally_gossip::Address>,
    max_invalid: u32,
) -> (Handle, Receiver<Inbound>) {
    let chain = chain();
    let config = Config {
        peers,
        max_invalid_messages: max_invalid,
        ..Config::default()
    };
    let seed = Hash::digest(format!("node-key/{name}").as_bytes()).0;
    let validator = LedgerValidator::new(chain.clone(), 8 * 1024 * 1024);
    tally_gossip::start(config, seed, chain.genesis_hash, validator)
        .await
        .unwrap()
}

/// Receives until `want` arrives; returns everything received before it.
async fn receive_until(rx: &mut Receiver<Inbound>, want: &[u8]) -> Vec<Vec<u8>> {
    let mut before = Vec::new();
    let result = timeout(DEADLINE, async {
        while let Some(message) = rx.recv().await {
            if message.data == want {
                return;
            }
            before.push(message.data);
        }
    })
    .await;
    assert!(result.is_ok(), "message did not arrive within {DEADLINE:?}");
    before
}

/// Publishes fresh valid votes from `from` until `to` receives one: the
/// path between them is up (subscriptions exchanged, mesh formed).
async fn wait_for_path(
    chain: &ChainContext,
    from: &Handle,
    to: &mut Receiver<Inbound>,
    first_round: u32,
) {
    let deadline = Instant::now() + DEADLINE;
    for round in first_round.. {
        assert!(Instant::now() < deadline, "no gossip path formed");
        let _ = from
            .publish(Topic::Consensus, vote(chain, "validator-1", round))
            .await;
        if let Ok(Some(_)) = timeout(Duration::from_millis(300), to.recv()).await {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_are_dropped_honest_links_stay_and_offenders_are_banned() {
    let chain = chain();
    let (a, mut a_rx) = node("a", vec![], 10).await;
    let (b, mut b_rx) = node("b", vec![a.address()], 6).await;
    let (c, mut c_rx) = node("c", vec![b.address()], 10).await;
    wait_for_path(&chain, &a, &mut c_rx, 1_000).await;
    wait_for_path(&chain, &c, &mut a_rx, 2_000).await;

    // A valid vote from A reaches B and, forwarded by B, C.
    let v1 = vote(&chain, "validator-1", 1);
    a.publish(Topic::Consensus, v1.clone()).await.unwrap();
    receive_until(&mut b_rx, &v1).await;
    receive_until(&mut c_rx, &v1).await;

    // From C: a vote signed by a non-validator, a malformed frame, then a
    // valid vote. B delivers only the valid one, and so A sees only it.
    let forged = vote(&chain, "mallory", 2);
    let garbage = vec![0xff; 64];
    let v2 = vote(&chain, "validator-2", 3);
    for data in [&forged, &garbage, &v2] {
        c.publish(Topic::Consensus, data.clone()).await.unwrap();
    }
    let at_b = receive_until(&mut b_rx, &v2).await;
    let at_a = receive_until(&mut a_rx, &v2).await;
    for seen in [&at_b, &at_a] {
        assert!(
            !seen.contains(&forged) && !seen.contains(&garbage),
            "an invalid message got through"
        );
    }

    // C keeps sending invalid messages: B bans it after 6 in all, and keeps A.
    for i in 0..4u8 {
        c.publish(Topic::Consensus, vec![i; 32]).await.unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let peers = b.peers().await.unwrap();
        if !peers.contains(&c.peer_id()) {
            assert!(peers.contains(&a.peer_id()), "the honest link must stay");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the offender was not disconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A banned peer that dials again is dropped.
    c.dial(b.address()).await.unwrap();
    let v3 = vote(&chain, "validator-3", 4);
    a.publish(Topic::Consensus, v3.clone()).await.unwrap();
    receive_until(&mut b_rx, &v3).await;
    assert!(
        !b.peers().await.unwrap().contains(&c.peer_id()),
        "banned peers stay out"
    );
}
