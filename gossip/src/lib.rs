//! Tally's peer-to-peer network: transactions and consensus messages gossiped
//! between nodes over authenticated, encrypted links, block sync, and peer
//! discovery.
//!
//! # Design
//! rust-libp2p: TCP, Noise (each node proves its node key; the peer id is
//! that key), Yamux. Behaviours:
//! - gossipsub for two topics named after the chain's genesis hash, so nodes
//!   of different chains never mix. It runs in validation mode: a message is
//!   delivered to the node and forwarded to other peers only after the
//!   [`Validator`] accepted it.
//! - request-response for block sync ([`SyncRequest`], [`SyncResponse`]),
//!   answered by the node's [`SyncServer`];
//! - identify, and kademlia for discovery: a node that knows one bootstrap
//!   address learns the others' addresses and dials them;
//! - connection limits (`max_peers`; configured peers bypass it).
//!
//! Configured peers are persistent: they are redialled while disconnected.
//! A peer whose messages are rejected `max_invalid_messages` times, or that
//! the node reports with [`Handle::ban`], is disconnected and refused for
//! `ban_duration`. Each peer's gossip messages and sync requests are rate
//! limited; what exceeds the rate is dropped.
//!
//! The swarm lives in its own task; [`Handle`] sends commands to it over a
//! bounded channel and accepted messages come back over another.
//!
//! # Guarantees
//! - Nothing reaches the node or other peers unless the validator accepted
//!   it: consensus messages must be signed by a validator of the genesis,
//!   transactions must carry a valid signature for this chain.
//! - Every message is bounded (`max_message_bytes`, sync responses
//!   `max_sync_response_bytes`) and every queue is bounded.
//!
//! # Not guaranteed
//! - Delivery: gossip is best effort; consensus timeouts and block sync cover
//!   what is lost.
//! - That a synced block is valid: the node checks what it fetches and bans
//!   the peer that sent something false.

mod sync;
mod validator;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::core::ConnectedPoint;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity, ValidationMode};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{
    self, InboundRequestId, OutboundRequestId, ProtocolSupport, ResponseChannel,
};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, identify, identity, kad, noise, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use tally_ledger::Hash;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

pub use libp2p::{Multiaddr as Address, PeerId as NodeId};
pub use sync::{Catchup, SyncCodec, SyncRequest, SyncResponse, SyncServer};
pub use validator::{is_authentic, LedgerValidator};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it and forward it.
    Accept,
    /// Invalid: drop it and count it against the peer that sent it.
    Reject,
    /// Not useful (e.g. old): drop it without blame.
    Ignore,
}

/// Decides what happens to received messages.
pub trait Validator: Send + 'static {
    /// Judges `data` received on `topic`.
    fn validate(&self, topic: Topic, data: &[u8]) -> Verdict;
}

/// Network limits and addresses.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen, e.g. `/ip4/127.0.0.1/tcp/0`.
    pub listen: Multiaddr,
    /// Persistent peers, each ending in `/p2p/<peer id>`: dialled at start
    /// and redialled while disconnected.
    pub peers: Vec<Multiaddr>,
    /// Most connected peers (configured peers do not count against it).
    pub max_peers: u32,
    /// Largest gossip message.
    pub max_message_bytes: usize,
    /// Largest sync request read from a peer (a catch-up request may carry
    /// a proposal with its block).
    pub max_sync_request_bytes: usize,
    /// Largest sync response read from a peer.
    pub max_sync_response_bytes: usize,
    /// How long to wait for a sync response.
    pub sync_request_timeout: Duration,
    /// Gossip messages per second accepted from one peer; more are dropped.
    pub max_messages_per_sec: u32,
    /// Sync requests per second answered for one peer; more are dropped.
    pub max_requests_per_sec: u32,
    /// Rejected messages after which a peer is banned.
    pub max_invalid_messages: u32,
    /// How long a banned peer stays banned.
    pub ban_duration: Duration,
    /// Accepted messages waiting for the node before new ones are dropped.
    pub inbound_queue: usize,
    /// How often disconnected persistent peers are redialled and discovery
    /// looks for more peers.
    pub redial_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Multiaddr::empty()
                .with(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
                .with(Protocol::Tcp(0)),
            peers: Vec::new(),
            max_peers: 50,
            max_message_bytes: 8 * 1024 * 1024,
            max_sync_request_bytes: 8 * 1024 * 1024,
            max_sync_response_bytes: 8 * 1024 * 1024,
            sync_request_timeout: Duration::from_secs(10),
            max_messages_per_sec: 20_000,
            max_requests_per_sec: 50,
            max_invalid_messages: 10,
            ban_duration: Duration::from_secs(600),
            inbound_queue: 4_096,
            redial_interval: Duration::from_secs(2),
        }
    }
}

/// A message the validator accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Its topic.
    pub topic: Topic,
    /// Its bytes.
    pub data: Vec<u8>,
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
    /// A sync request failed (timeout, disconnect, refusal).
    #[error("sync request failed: {0}")]
    Request(String),
    /// The peer answered with bytes that are not a valid answer (too large,
    /// malformed): honest peers never do.
    #[error("invalid sync answer: {0}")]
    BadResponse(String),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    kademlia: kad::Behaviour<kad::store::MemoryStore>,
    sync: request_response::Behaviour<SyncCodec>,
}

type Reply<T> = oneshot::Sender<Result<T, GossipError>>;

enum Command {
    Publish(Topic, Vec<u8>, Reply<()>),
    Dial(Multiaddr),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Request(PeerId, SyncRequest, Reply<SyncResponse>),
    Ban(PeerId, String),
    Stop,
}

/// Commands to the network task.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    local: PeerId,
    listening: Multiaddr,
}

/// Commands waiting for the network task.
const COMMAND_QUEUE: usize = 1_024;

/// Sync requests being answered at once (until the answer is written);
/// more are dropped.
const MAX_SERVING: usize = 16;

/// Sync requests of one peer being answered at once: a node may ask for
/// blocks, compare tips and exchange catch-up messages at the same time.
const MAX_SERVING_PER_PEER: usize = 4;

/// Most blocks one sync answer holds.
pub const MAX_BLOCKS_PER_ANSWER: u32 = 256;

/// How long identical gossip bytes count as a duplicate. Shorter than the
/// interval at which a node republishes its own consensus messages.
pub const DUPLICATE_WINDOW: Duration = Duration::from_millis(1_000);

/// Most peers whose invalid messages are counted at once.
const MAX_TRACKED_OFFENDERS: usize = 10_000;

/// Incoming connections still in their handshake (TCP accepted, Noise and
/// Yamux not yet agreed) at one time; more are closed at once, so silent or
/// slow connections cannot pile up.
const MAX_PENDING_INCOMING: u32 = 64;

/// Longest a connection may take to finish its handshake before it is
/// closed (a half-open or trickling connection holds a slot no longer).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Handle {
    /// This node's peer id (its node key).
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    /// The address this node listens on, with its peer id.
    pub fn address(&self) -> Multiaddr {
        self.listening.clone()
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, GossipError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| GossipError::Stopped)?;
        answer.await.map_err(|_| GossipError::Stopped)
    }

    /// Gossips `data` on `topic`.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), GossipError> {
        self.ask(|reply| Command::Publish(topic, data, reply))
            .await?
    }

    /// Connects to a peer.
    pub async fn dial(&self, address: Multiaddr) -> Result<(), GossipError> {
        self.commands
            .send(Command::Dial(address))
            .await
            .map_err(|_| GossipError::Stopped)
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, GossipError> {
        self.ask(Command::Peers).await
    }

    /// Asks `peer` a sync question.
    pub async fn request(
        &self,
        peer: PeerId,
        request: SyncRequest,
    ) -> Result<SyncResponse, GossipError> {
        self.ask(|reply| Command::Request(peer, request, reply))
            .await?
    }

    /// Stops the network: every connection closes and the network task
    /// ends (dropping what it holds, such as the sync server).
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop).await;
    }

    /// Disconnects `peer` and refuses it for the ban duration: it sent
    /// something provably false (e.g. a block whose certificate does not
    /// verify).
    pub async fn ban(&self, peer: PeerId, reason: String) -> Result<(), GossipError> {
        self.commands
            .send(Command::Ban(peer, reason))
            .await
            .map_err(|_| GossipError::Stopped)
    }
}

/// The topic names of a chain: `/tally/<genesis hash>/<topic>/1`.
fn topic_of(genesis_hash: &Hash, topic: Topic) -> IdentTopic {
    let name = match topic {
        Topic::Consensus => "consensus",
        Topic::Transactions => "txs",
    };
    // Version 2 of the transactions topic carries batches; a node of the
    // single-transaction format shares no topic with this one.
    let version = match topic {
        Topic::Consensus => 1,
        Topic::Transactions => 2,
    };
    IdentTopic::new(format!("/tally/{}/{name}/{version}", genesis_hash.to_hex()))
}

/// The version of the peer-to-peer protocol. 2: block sync gained the
/// catch-up exchange (`/sync/2`). A node of another version shares no sync
/// protocol with this one, so it is dropped when it identifies itself.
pub const NETWORK_VERSION: u32 = 2;

/// The identify protocol version of the chain with `genesis_hash`.
fn identify_version(genesis_hash: &Hash) -> String {
    format!("/tally/{NETWORK_VERSION}/{}", genesis_hash.to_hex())
}

/// Fails if a TCP listen address's port is taken. libp2p listens with
/// SO_REUSEPORT, so a second node on the same port would start and silently
/// take a share of the first one's connections; a plain bind refuses.
fn probe_listen(address: &Multiaddr) -> Result<(), GossipError> {
    let mut ip = None;
    let mut port = None;
    for part in address.iter() {
        match part {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) if port != 0 => std::net::TcpListener::bind((ip, port))
            .map(drop)
            .map_err(|e| GossipError::Setup(format!("{ip}:{port}: {e}"))),
        _ => Ok(()),
    }
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
    Ok(keypair_from_seed(seed)?.public().to_peer_id())
}

fn keypair_from_seed(seed: [u8; 32]) -> Result<identity::Keypair, GossipError> {
    let secret = identity::ed25519::SecretKey::try_from_bytes(seed)
        .map_err(|e| GossipError::Setup(e.to_string()))?;
    Ok(identity::Keypair::from(identity::ed25519::Keypair::from(
        secret,
    )))
}

/// Starts the network for the chain with `genesis_hash`, with the node key
/// whose secret seed is `node_key_seed`; `validator` judges gossip and
/// `server` answers peers' sync requests. Returns the handle and the stream
/// of accepted messages.
pub async fn start(
    config: Config,
    node_key_seed: [u8; 32],
    genesis_hash: Hash,
    validator: impl Validator,
    server: Arc<dyn SyncServer>,
) -> Result<(Handle, mpsc::Receiver<Inbound>), GossipError> {
    let setup = |e: &dyn std::fmt::Display| GossipError::Setup(e.to_string());
    let keypair = keypair_from_seed(node_key_seed)?;
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
    let gossip_config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(config.max_message_bytes)
        // Every payload is signed by its own author (a validator, a
        // sender), and blame goes to the peer that delivered a message, which
        // Noise authenticates: a libp2p signature per message would add a
        // signing and a check per hop for nothing.
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .heartbeat_interval(Duration::from_millis(500))
        // Messages are told apart by content, so a replayed message is
        // dropped as a duplicate wherever it was seen in the last
        // `DUPLICATE_WINDOW`; after that the same bytes may travel again,
        // which is how a node republishes its votes for peers that missed
        // them.
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(Hash::digest(&m.data).0.to_vec())
        })
        .duplicate_cache_time(DUPLICATE_WINDOW)
        .build()
        .map_err(|e| setup(&e))?;
    let gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossip_config)
        .map_err(|e| setup(&e))?;
    // The identify protocol version names the chain: a peer on another
    // genesis is told apart at once and dropped.
    let identify = identify::Behaviour::new(identify::Config::new(
        identify_version(&genesis_hash),
        keypair.public(),
    ));
    let kad_protocol =
        StreamProtocol::try_from_owned(format!("/tally/{}/kad/1", genesis_hash.to_hex()))
            .map_err(|e| setup(&e))?;
    let mut kad_config = kad::Config::new(kad_protocol);
    // Lookups run from the redial tick, only while peers are few.
    kad_config.set_periodic_bootstrap_interval(None);
    let mut kademlia =
        kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_config);
    // Answer discovery queries even without a confirmed public address
    // (loopback and private networks never get one).
    kademlia.set_mode(Some(kad::Mode::Server));
    for (id, address) in &persistent {
        kademlia.add_address(id, address.clone());
    }
    let sync = request_response::Behaviour::with_codec(
        SyncCodec {
            max_request_bytes: config.max_sync_request_bytes,
            max_response_bytes: config.max_sync_response_bytes,
        },
        [(
            SyncCodec::protocol(&genesis_hash).map_err(|e| setup(&e))?,
            ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(config.sync_request_timeout)
            .with_max_concurrent_streams(MAX_SERVING),
    );
    let mut limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_peers))
            .with_max_established_per_peer(Some(2))
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
    );
    for (id, _) in &persistent {
        limits.bypass_peer_id(id);
    }
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_behaviour(|_| Behaviour {
            limits,
            gossipsub,
            identify,
            kademlia,
            sync,
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .with_connection_timeout(HANDSHAKE_TIMEOUT)
        .build();
    let topics: HashMap<gossipsub::TopicHash, Topic> = [Topic::Consensus, Topic::Transactions]
        .into_iter()
        .map(|t| (topic_of(&genesis_hash, t).hash(), t))
        .collect();
    for topic in [Topic::Consensus, Topic::Transactions] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic_of(&genesis_hash, topic))
            .map_err(|e| setup(&e))?;
    }
    probe_listen(&config.listen)?;
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
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (inbound_tx, inbound) = mpsc::channel(config.inbound_queue);
    let (served_tx, served_rx) = mpsc::channel(MAX_SERVING);
    let mut task = Task {
        swarm,
        config,
        genesis_hash,
        topics,
        validator,
        server,
        inbound: inbound_tx,
        served: served_tx,
        serving: HashMap::new(),
        persistent,
        strikes: HashMap::new(),
        banned: HashMap::new(),
        buckets: HashMap::new(),
        requests: HashMap::new(),
        connections: HashMap::new(),
    };
    task.redial();
    tokio::spawn(task.run(command_rx, served_rx));
    let address = listening.with(Protocol::P2p(local));
    Ok((
        Handle {
            commands,
            local,
            listening: address,
        },
        inbound,
    ))
}

/// A token bucket: `rate` events per second, bursts up to `rate`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
struct PeerBuckets {
    messages: Option<Bucket>,
    requests: Option<Bucket>,
}

fn take(bucket: &mut Option<Bucket>, rate: u32, now: Instant) -> bool {
    bucket
        .get_or_insert(Bucket {
            tokens: f64::from(rate),
            at: now,
        })
        .take(rate, now)
}

type Served = (
    InboundRequestId,
    ResponseChannel<SyncResponse>,
    Option<SyncResponse>,
);

struct Task<V: Validator> {
    swarm: Swarm<Behaviour>,
    config: Config,
    genesis_hash: Hash,
    topics: HashMap<gossipsub::TopicHash, Topic>,
    validator: V,
    server: Arc<dyn SyncServer>,
    inbound: mpsc::Sender<Inbound>,
    /// Answers computed off the swarm task, on their way back.
    served: mpsc::Sender<Served>,
    /// Requests being answered, until their answer is written.
    serving: HashMap<InboundRequestId, PeerId>,
    persistent: Vec<(PeerId, Multiaddr)>,
    strikes: HashMap<PeerId, u32>,
    banned: HashMap<PeerId, Instant>,
    buckets: HashMap<PeerId, PeerBuckets>,
    requests: HashMap<OutboundRequestId, Reply<SyncResponse>>,
    connections: HashMap<ConnectionId, PeerInfo>,
}

impl<V: Validator> Task<V> {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut served: mpsc::Receiver<Served>,
    ) {
        let mut redial = tokio::time::interval(self.config.redial_interval);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stop) | None => return, // stopped, or every handle is gone
                    Some(command) => self.on_command(command),
                },
                Some((id, channel, response)) = served.recv() => match response {
                    Some(response) => {
                        // Fails only if the peer went away meanwhile.
                        if self.swarm.behaviour_mut().sync.send_response(channel, response).is_err() {
                            self.serving.remove(&id);
                        }
                    }
                    // Dropping the channel fails the peer's request (and
                    // reports an InboundFailure that frees the slot).
                    None => drop(channel),
                },
                _ = redial.tick() => self.redial(),
                event = self.swarm.select_next_some() => self.on_event(event),
            }
        }
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned
            .get(peer)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Dials persistent peers that are not connected, and asks discovery
    /// for more peers while there are few.
    fn redial(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .banned
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            self.banned.remove(&peer);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .remove_blacklisted_peer(&peer);
        }
        for (id, address) in self.persistent.clone() {
            if self.swarm.is_connected(&id) || self.is_banned(&id) {
                continue;
            }
            let opts = DialOpts::peer_id(id)
                .addresses(vec![address])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(peer = %id, error = %e, "cannot dial persistent peer");
            }
        }
        let connected = self.swarm.connected_peers().count();
        if connected > 0 && connected < self.config.max_peers as usize / 2 {
            self.swarm
                .behaviour_mut()
                .kademlia
                .get_closest_peers(PeerId::random());
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish(topic, data, reply) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic_of(&self.genesis_hash, topic), data)
                    .map(|_| ())
                    .map_err(|e| GossipError::Publish(e.to_string()));
                let _ = reply.send(result);
            }
            Command::Dial(address) => {
                if let Err(e) = self.swarm.dial(address.clone()) {
                    warn!(%address, error = %e, "cannot dial peer");
                }
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.peer_infos());
            }
            Command::Request(peer, request, reply) => {
                if !self.swarm.is_connected(&peer) {
                    let _ = reply.send(Err(GossipError::Request(format!(
                        "peer {peer} is not connected"
                    ))));
                    return;
                }
                let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
                self.requests.insert(id, reply);
            }
            Command::Ban(peer, reason) => self.ban(peer, &reason),
            Command::Stop => {}
        }
    }

    fn peer_infos(&mut self) -> Vec<PeerInfo> {
        let persistent: Vec<PeerId> = self.persistent.iter().map(|(id, _)| *id).collect();
        let mut infos: Vec<PeerInfo> = self.connections.values().cloned().collect();
        for info in &mut infos {
            info.persistent = persistent.contains(&info.id);
            if peer_id_of(&info.address).is_none() {
                info.address = info.address.clone().with(Protocol::P2p(info.id));
            }
        }
        infos.sort_by_key(|i| i.id.to_string());
        infos.dedup_by_key(|i| i.id);
        infos
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_message(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let ours = identify_version(&self.genesis_hash);
                if info.protocol_version != ours {
                    let reason = format!(
                        "it is on another chain or version ({}; this node: {ours}): check that \
                         both use the same genesis.json and run the same tally release",
                        info.protocol_version
                    );
                    self.ban(peer_id, &reason);
                    return;
                }
                // What the peer says it listens on feeds discovery.
                for address in info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kademlia
                        .add_address(&peer_id, address);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kademlia(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) => {
                let connected = self.swarm.connected_peers().count();
                if !self.swarm.is_connected(&peer)
                    && !self.is_banned(&peer)
                    && connected < self.config.max_peers as usize
                {
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addresses.into_vec())
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        debug!(%peer, error = %e, "cannot dial discovered peer");
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                if self.is_banned(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let (address, outbound) = match endpoint {
                    ConnectedPoint::Dialer { address, .. } => (address, true),
                    ConnectedPoint::Listener { send_back_addr, .. } => (send_back_addr, false),
                };
                debug!(peer = %peer_id, %address, outbound, "peer connected");
                self.connections.insert(
                    connection_id,
                    PeerInfo {
                        id: peer_id,
                        address,
                        outbound,
                        persistent: false,
                    },
                );
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.connections.remove(&connection_id);
                if num_established == 0 {
                    self.buckets.remove(&peer_id);
                }
            }
            other => debug!(?other, "network event"),
        }
    }

    fn on_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => {
                let rate = self.config.max_requests_per_sec;
                let allowed = take(
                    &mut self.buckets.entry(peer).or_default().requests,
                    rate,
                    Instant::now(),
                );
                // A few requests per peer at a time, and a bounded number
                // in all, each holding its slot until its answer is written:
                // answers waiting for slow readers are what costs memory.
                let busy =
                    self.serving.values().filter(|p| **p == peer).count() >= MAX_SERVING_PER_PEER;
                if !allowed || busy || self.serving.len() >= MAX_SERVING {
                    debug!(%peer, "dropping a sync request over the limits");
                    return; // dropping the channel tells the peer
                }
                self.serving.insert(request_id, peer);
                let server = self.server.clone();
                let served = self.served.clone();
                let max_bytes = self.config.max_sync_response_bytes;
                tokio::task::spawn_blocking(move || {
                    let response = match request {
                        SyncRequest::Status => server.status(),
                        SyncRequest::Blocks { from, max } => {
                            server.blocks(from, max.min(MAX_BLOCKS_PER_ANSWER), max_bytes)
                        }
                        SyncRequest::Decided { height } => server.decided(peer, height),
                        SyncRequest::Catchup {
                            height,
                            round,
                            proposal,
                            messages,
                        } => {
                            let request = sync::Catchup {
                                height,
                                round,
                                proposal,
                                messages,
                            };
                            server.catchup(peer, request)
                        }
                    };
                    let _ = served.blocking_send((request_id, channel, response));
                });
            }
            request_response::Event::ResponseSent { request_id, .. }
            | request_response::Event::InboundFailure { request_id, .. } => {
                self.serving.remove(&request_id);
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.requests.remove(&request_id) {
                    let error = match error {
                        request_response::OutboundFailure::Io(e)
                            if e.kind() == std::io::ErrorKind::InvalidData =>
                        {
                            GossipError::BadResponse(format!("{peer}: {e}"))
                        }
                        other => GossipError::Request(format!("{peer}: {other}")),
                    };
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    fn on_message(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let rate = self.config.max_messages_per_sec;
        let within_rate = take(
            &mut self.buckets.entry(source).or_default().messages,
            rate,
            Instant::now(),
        );
        let (topic, verdict) = match self.topics.get(&message.topic) {
            Some(topic) if within_rate => (*topic, self.validator.validate(*topic, &message.data)),
            Some(topic) => (*topic, Verdict::Ignore),
            None => (Topic::Consensus, Verdict::Reject),
        };
        let acceptance = match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        match verdict {
            Verdict::Accept => {
                let inbound = Inbound {
                    topic,
                    data: message.data,
                    from: source,
                };
                if self.inbound.try_send(inbound).is_err() {
                    warn!("the node is not keeping up with the network; dropping a message");
                }
            }
            Verdict::Reject => self.strike(source),
            Verdict::Ignore => {}
        }
    }

    /// Counts an invalid message against `peer`; bans repeat offenders.
    fn strike(&mut self, peer: PeerId) {
        if self.strikes.len() >= MAX_TRACKED_OFFENDERS && !self.strikes.contains_key(&peer) {
            // Identities are free: forget old counts rather than grow.
            self.strikes.clear();
        }
        let strikes = self.strikes.entry(peer).or_insert(0);
        *strikes += 1;
        if *strikes >= self.config.max_invalid_messages {
            self.ban(peer, "it keeps sending invalid messages");
        }
    }

    fn ban(&mut self, peer: PeerId, reason: &str) {
        warn!(%peer, reason, ban_secs = self.config.ban_duration.as_secs(), "banning a peer");
        self.strikes.remove(&peer);
        self.banned
            .insert(peer, Instant::now() + self.config.ban_duration);
        self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
        self.swarm.behaviour_mut().kademlia.remove_peer(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }
}
