//! Three real nodes on loopback, connected A — B — C: valid consensus
//! messages travel through B; a vote signed by a non-validator and a
//! malformed frame are dropped by B (not delivered, not forwarded) while the
//! honest links stay up; a peer that keeps sending invalid messages is
//! disconnected and banned.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use std::sync::Arc;
use std::time::Duration;

use tally_gossip::{
    Config, GossipError, Handle, Inbound, MessageFilter, NodeId, PeerAddress, RequestHandler,
    Topic, Verdict,
};
use tally_host::edge::{self, ConsensusIntake};
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

/// The node's consensus intake as the filter, delivering the bytes it
/// accepted.
struct Intake(ConsensusIntake);

impl MessageFilter for Intake {
    type Message = Vec<u8>;
    fn check(&self, _: Topic, data: &[u8]) -> Verdict<Vec<u8>> {
        match self.0.check(data, 0) {
            edge::Verdict::Accept(_) => Verdict::Accept(data.to_vec()),
            edge::Verdict::Reject => Verdict::Reject,
            edge::Verdict::Ignore | edge::Verdict::Known(_) => Verdict::Ignore,
        }
    }
}

/// Answers every request with the same bytes.
struct FixedServer {
    answer: Vec<u8>,
}

impl RequestHandler for FixedServer {
    fn answer(&self, _from: NodeId, _request: Vec<u8>) -> Option<Vec<u8>> {
        Some(self.answer.clone())
    }
}

/// Answers nothing (as a busy, rate-limited or failing peer does).
struct SilentServer;

impl RequestHandler for SilentServer {
    fn answer(&self, _from: NodeId, _request: Vec<u8>) -> Option<Vec<u8>> {
        None
    }
}

fn fixed(answer: &[u8]) -> Arc<dyn RequestHandler> {
    Arc::new(FixedServer {
        answer: answer.to_vec(),
    })
}

async fn node_with(
    name: &str,
    config: Config,
    server: Arc<dyn RequestHandler>,
) -> (Handle, Receiver<Inbound<Vec<u8>>>) {
    let chain = chain();
    let seed = Hash::digest(format!("node-key/{name}").as_bytes()).0;
    let intake = Intake(ConsensusIntake::new(
        chain.clone(),
        tally_host::ValidatorView::genesis(&chain),
        8 * 1024 * 1024,
    ));
    tally_gossip::start(config, seed, chain.genesis_hash, intake, server)
        .await
        .unwrap()
}

async fn node(
    name: &str,
    peers: Vec<PeerAddress>,
    max_invalid: u32,
) -> (Handle, Receiver<Inbound<Vec<u8>>>) {
    let config = Config {
        peers,
        max_invalid_messages: max_invalid,
        ..Config::default()
    };
    node_with(name, config, fixed(b"tip 0")).await
}

/// Waits until `node` lists `peer` among its connected peers (or not).
async fn wait_connected(node: &Handle, peer: &Handle, connected: bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let peers = node.peers();
        if peers.iter().any(|p| p.id == peer.peer_id()) == connected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "peer connection state did not become {connected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Receives until `want` arrives; returns everything received before it.
async fn receive_until(rx: &mut Receiver<Inbound<Vec<u8>>>, want: &[u8]) -> Vec<Vec<u8>> {
    let mut before = Vec::new();
    let result = timeout(DEADLINE, async {
        while let Some(inbound) = rx.recv().await {
            if inbound.message == want {
                return;
            }
            before.push(inbound.message);
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
    to: &mut Receiver<Inbound<Vec<u8>>>,
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
    wait_connected(&b, &c, false).await;
    let peers = b.peers();
    assert!(
        peers.iter().any(|p| p.id == a.peer_id()),
        "the honest link must stay"
    );
    // A banned peer that dials again is dropped.
    c.dial(b.address()).await.unwrap();
    let v3 = vote(&chain, "validator-3", 4);
    a.publish(Topic::Consensus, v3.clone()).await.unwrap();
    receive_until(&mut b_rx, &v3).await;
    assert!(
        !b.peers().iter().any(|p| p.id == c.peer_id()),
        "banned peers stay out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_answered_bounded_and_liars_can_be_banned() {
    let (a, _a_rx) = node_with("sync-a", Config::default(), fixed(b"the tip is 7")).await;
    let small = Config {
        peers: vec![a.address()],
        // Smaller than A's answer: reading it must fail, not grow.
        max_response_bytes: 8,
        ..Config::default()
    };
    let (b, _b_rx) = node_with("sync-b", small, fixed(b"tip 0")).await;
    let (c, _c_rx) = node("sync-c", vec![a.address()], 10).await;
    wait_connected(&c, &a, true).await;
    wait_connected(&b, &a, true).await;

    let answer = c.request(a.peer_id(), b"status?".to_vec()).await.unwrap();
    assert_eq!(answer, b"the tip is 7");
    assert!(
        matches!(
            b.request(a.peer_id(), b"status?".to_vec()).await,
            Err(GossipError::BadResponse(_))
        ),
        "an answer over the size limit is refused as invalid"
    );

    // A peer that answers nothing has not lied: a plain failure, which
    // block sync does not punish (unlike an undecodable answer).
    let (silent, _s_rx) = node_with("sync-silent", Config::default(), Arc::new(SilentServer)).await;
    c.dial(silent.address()).await.unwrap();
    wait_connected(&c, &silent, true).await;
    let answer = c.request(silent.peer_id(), b"status?".to_vec()).await;
    assert!(
        matches!(answer, Err(GossipError::Request(_))),
        "no answer is not a bad answer: {answer:?}"
    );

    // A banned peer is disconnected and stays out although it is one of
    // C's persistent peers (redialled every 2 s).
    c.ban(a.peer_id(), "test".into()).await.unwrap();
    wait_connected(&c, &a, false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!c.peers().iter().any(|p| p.id == a.peer_id()));
    assert!(c.request(a.peer_id(), b"status?".to_vec()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_chain_is_dropped_when_it_identifies_itself() {
    let (a, _a_rx) = node("chain-a", vec![], 10).await;
    let other = ChainContext::new(devnet_genesis(4, "another-chain").unwrap());
    let config = Config {
        peers: vec![a.address()],
        ..Config::default()
    };
    let (stranger, _rx) = tally_gossip::start(
        config,
        Hash::digest(b"node-key/stranger").0,
        other.genesis_hash,
        Intake(ConsensusIntake::new(
            other.clone(),
            tally_host::ValidatorView::genesis(&other),
            8 * 1024 * 1024,
        )),
        fixed(b"tip 0"),
    )
    .await
    .unwrap();
    // It connects (TCP, Noise), then identify shows the other genesis and
    // both ends drop the link; the stranger's redials are refused.
    wait_connected(&a, &stranger, false).await;
    let (honest, _h_rx) = node("chain-a-peer", vec![a.address()], 10).await;
    wait_connected(&a, &honest, true).await;
    assert!(
        !a.peers().iter().any(|p| p.id == stranger.peer_id()),
        "the other chain's node stays out"
    );
    assert!(stranger
        .request(a.peer_id(), b"status?".to_vec())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_other_validator_overrides_is_dropped_when_it_identifies_itself() {
    let chain = chain();
    let (a, _a_rx) = node("override-a", vec![], 10).await;
    // Same genesis, but an operator override of the validator set that `a`
    // was not given: it would judge blocks by another set.
    let config = Config {
        peers: vec![a.address()],
        validator_overrides: Some(Hash::digest(b"an override list")),
        ..Config::default()
    };
    let (overridden, _rx) = tally_gossip::start(
        config,
        Hash::digest(b"node-key/overridden").0,
        chain.genesis_hash,
        Intake(ConsensusIntake::new(
            chain.clone(),
            tally_host::ValidatorView::genesis(&chain),
            8 * 1024 * 1024,
        )),
        fixed(b"tip 0"),
    )
    .await
    .unwrap();
    wait_connected(&a, &overridden, false).await;
    let (honest, _h_rx) = node("override-peer", vec![a.address()], 10).await;
    wait_connected(&a, &honest, true).await;
    assert!(
        !a.peers().iter().any(|p| p.id == overridden.peer_id()),
        "the node with other overrides stays out"
    );
    assert!(overridden
        .request(a.peer_id(), b"status?".to_vec())
        .await
        .is_err());
}
