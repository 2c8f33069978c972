//! Tally's peer-to-peer network: gossip between nodes over authenticated,
//! encrypted links, a request-response exchange, and peer discovery. It
//! carries bytes; what they mean is the application's (`tally-host`
//! decodes and checks them).
//!
//! # Design
//! rust-libp2p: TCP, Noise (each node proves its node key; the peer id is
//! that key), Yamux. Behaviours ([`behaviour`]):
//! - gossipsub for two topics named after the chain's genesis hash, so nodes
//!   of different chains never mix. It runs in validation mode: a message is
//!   delivered to the node and forwarded to other peers only after the
//!   application's [`MessageFilter`] accepted it — and the filter's typed
//!   output is what is delivered, so each message is decoded once. The
//!   filter runs on a few judging threads, not on the network task
//!   ([`judge`]).
//! - request-response ([`codec`]), each request and answer one bounded byte
//!   string, answered by the application's [`RequestHandler`] off the
//!   network task;
//! - identify, and kademlia for discovery: a node that knows one bootstrap
//!   address learns the others' addresses and dials them;
//! - connection limits (`max_peers`; configured peers bypass it).
//!
//! Configured peers are persistent: they are redialled while disconnected.
//! A peer whose messages are rejected `max_invalid_messages` times, or that
//! the node reports with [`Handle::ban`], is disconnected and refused for
//! `ban_duration`. Each peer's gossip messages and requests are rate
//! limited ([`rate`]); what exceeds the rate is dropped.
//!
//! The swarm lives in its own task ([`swarm`]); [`Handle`] sends commands to
//! it over a bounded channel and accepted messages come back over another.
//!
//! # Guarantees
//! - Nothing reaches the node or other peers unless the filter accepted it.
//! - Every message, request and answer is bounded (`max_message_bytes`,
//!   `max_request_bytes`, `max_response_bytes`), and every queue is bounded.
//!
//! # Not guaranteed
//! - Delivery: gossip is best effort (and refuses the same bytes twice);
//!   the application covers what is lost.

mod behaviour;
mod codec;
mod config;
mod handle;
mod judge;
mod rate;
mod swarm;

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use tally_ledger::Hash;
use tokio::sync::{mpsc, watch};
use tracing::debug;

pub use behaviour::{DUPLICATE_WINDOW, NETWORK_VERSION};
pub use codec::BytesCodec;
pub use config::Config;
pub use handle::Handle;
/// A peer's address: a libp2p multiaddress such as
/// `/ip4/10.0.0.1/tcp/7800/p2p/12D3KooW…` (not a ledger address).
pub use libp2p::Multiaddr as PeerAddress;
/// A peer's identity: the libp2p peer id of its node key.
pub use libp2p::PeerId as NodeId;

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Proposals and votes.
    Consensus,
    /// Signed transactions, several to a message
    /// (`borsh(Vec<SignedTransaction>)`, see `tally_ledger::encode_tx_batch`).
    Transactions,
}

/// The application's judgement of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Valid: deliver this (the message decoded and checked) and forward
    /// the message.
    Accept(T),
    /// Invalid: drop it and count it against the peer that sent it.
    Reject,
    /// Not useful (e.g. old): drop it without blame.
    Ignore,
}

/// Judges gossip as it arrives, before it is delivered or forwarded. (Not
/// a consensus validator: a message filter.) It runs on the network's
/// judging threads, several messages at once, so it may take milliseconds
/// (and block), but not long.
pub trait MessageFilter: Send + Sync + 'static {
    /// What an accepted message is delivered as.
    type Message: Send + 'static;
    /// Judges `data` received on `topic`.
    fn check(&self, topic: Topic, data: &[u8]) -> Verdict<Self::Message>;
}

/// Answers peers' requests; runs off the network task, so it may block.
/// `None` means "no answer" (e.g. a storage error, or a request that does
/// not decode): the peer sees a failed request rather than a false answer.
pub trait RequestHandler: Send + Sync + 'static {
    /// Answers `request` from `from`.
    fn answer(&self, from: PeerId, request: Vec<u8>) -> Option<Vec<u8>>;
}

/// A message the filter accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound<M> {
    /// Its topic.
    pub topic: Topic,
    /// What the filter made of it.
    pub message: M,
    /// The peer it came from.
    pub from: PeerId,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its peer id (node key).
    pub id: PeerId,
    /// Its address on the connection.
    pub address: Multiaddr,
    /// Whether this node dialled it.
    pub outbound: bool,
    /// Whether it is one of the configured persistent peers.
    pub persistent: bool,
}

/// Why the network could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// Setting up the transport or behaviour failed.
    #[error("cannot start the network: {0}")]
    Setup(String),
    /// The network task has stopped.
    #[error("the network task has stopped")]
    Stopped,
    /// Publishing failed (e.g. no peer subscribed yet).
    #[error("cannot publish: {0}")]
    Publish(String),
    /// A request failed (timeout, disconnect, refusal).
    #[error("request failed: {0}")]
    Request(String),
    /// The peer answered with more bytes than an answer may have: honest
    /// peers never do.
    #[error("invalid answer: {0}")]
    BadResponse(String),
}

/// The peer id at the end of `address` (`.../p2p/<id>`), if any.
pub fn peer_id_of(address: &Multiaddr) -> Option<PeerId> {
    match address.iter().last() {
        Some(Protocol::P2p(id)) => Some(id),
        _ => None,
    }
}

/// The peer id of the node key whose secret seed is `seed`.
pub fn peer_id_from_seed(seed: [u8; 32]) -> Result<PeerId, GossipError> {
    Ok(behaviour::keypair_from_seed(seed)?.public().to_peer_id())
}

/// Starts the network for the chain with `genesis_hash`, with the node key
/// whose secret seed is `node_key_seed`; `filter` judges gossip and
/// `handler` answers peers' requests. Returns the handle and the stream of
/// accepted messages.
pub async fn start<F: MessageFilter>(
    config: Config,
    node_key_seed: [u8; 32],
    genesis_hash: Hash,
    filter: F,
    handler: Arc<dyn RequestHandler>,
) -> Result<(Handle, mpsc::Receiver<Inbound<F::Message>>), GossipError> {
    let keypair = behaviour::keypair_from_seed(node_key_seed)?;
    let local = keypair.public().to_peer_id();
    let mut persistent = Vec::new();
    for address in &config.peers {
        let id = peer_id_of(address).ok_or_else(|| {
            GossipError::Setup(format!("peer address {address} must end in /p2p/<peer id>"))
        })?;
        if id != local {
            persistent.push((id, address.clone()));
        }
    }
    let mut swarm = behaviour::build_swarm(&config, keypair, &genesis_hash, &persistent)?;
    let topics = [Topic::Consensus, Topic::Transactions]
        .into_iter()
        .map(|t| (behaviour::topic_of(&genesis_hash, t).hash(), t))
        .collect();
    behaviour::probe_listen(&config.listen)?;
    swarm
        .listen_on(config.listen.clone())
        .map_err(|e| GossipError::Setup(format!("{e:?}")))?;
    let listening = loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => break address,
            SwarmEvent::ListenerError { error, .. } => {
                return Err(GossipError::Setup(format!("{error:?}")))
            }
            SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => return Err(GossipError::Setup(format!("{error:?}"))),
            other => debug!(?other, "network event while starting"),
        }
    };
    let (commands, command_rx) = mpsc::channel(handle::COMMAND_QUEUE);
    let (inbound_tx, inbound) = mpsc::channel(config.inbound_queue);
    let (served_tx, served_rx) = mpsc::channel(behaviour::MAX_SERVING);
    let (judged_tx, judged_rx) = mpsc::channel(judge::Judges::capacity());
    let (peers_tx, peers_rx) = watch::channel(Vec::new());
    let mut task = swarm::Task {
        swarm,
        config,
        genesis_hash,
        topics,
        judges: judge::Judges::start(Arc::new(filter), judged_tx),
        handler,
        inbound: inbound_tx,
        served: served_tx,
        serving: HashMap::new(),
        persistent,
        strikes: HashMap::new(),
        banned: HashMap::new(),
        buckets: HashMap::new(),
        requests: HashMap::new(),
        connections: HashMap::new(),
        peers: peers_tx,
    };
    task.redial();
    tokio::spawn(task.run(command_rx, served_rx, judged_rx));
    let address = listening.with(Protocol::P2p(local));
    Ok((
        Handle {
            commands,
            local,
            listening: address,
            peers: peers_rx,
        },
        inbound,
    ))
}
