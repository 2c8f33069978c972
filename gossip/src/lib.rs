//! Tally's peer-to-peer network: transactions and consensus messages gossiped
//! between nodes over authenticated, encrypted links.
//!
//! # Design
//! rust-libp2p: TCP, Noise (each node proves its node key; the peer id is
//! that key), Yamux; gossipsub for two topics named after the chain's genesis
//! hash, so nodes of different chains never mix; identify. Gossipsub runs in
//! validation mode: a message is delivered to the node and forwarded to other
//! peers only after the [`Validator`] accepted it. A peer whose messages are
//! rejected `max_invalid_messages` times is disconnected and banned for
//! `ban_duration`.
//!
//! The swarm lives in its own task; [`Handle`] sends commands to it over a
//! bounded channel and accepted messages come back over another.
//!
//! # Guarantees
//! - Nothing reaches the node or other peers unless the validator accepted
//!   it: consensus messages must be signed by a validator of the genesis,
//!   transactions must carry a valid signature for this chain.
//! - Every message is bounded (`max_message_bytes`) and every queue is bounded.
//!
//! # Not guaranteed
//! - Delivery: gossip is best effort; consensus timeouts and block sync cover
//!   what is lost.

mod validator;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity, ValidationMode};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use tally_ledger::Hash;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

pub use libp2p::{Multiaddr as Address, PeerId as NodeId};
pub use validator::LedgerValidator;

/// What a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Proposals and votes.
    Consensus,
    /// Signed transactions.
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
    /// Peers to dial at start.
    pub peers: Vec<Multiaddr>,
    /// Largest gossip message.
    pub max_message_bytes: usize,
    /// Rejected messages after which a peer is banned.
    pub max_invalid_messages: u32,
    /// How long a banned peer stays banned.
    pub ban_duration: Duration,
    /// Accepted messages waiting for the node before new ones are dropped.
    pub inbound_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "/ip4/127.0.0.1/tcp/0"
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty()),
            peers: Vec::new(),
            max_message_bytes: 8 * 1024 * 1024,
            max_invalid_messages: 10,
            ban_duration: Duration::from_secs(600),
            inbound_queue: 4_096,
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
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
}

enum Command {
    Publish(Topic, Vec<u8>, oneshot::Sender<Result<(), GossipError>>),
    Dial(Multiaddr),
    Peers(oneshot::Sender<Vec<PeerId>>),
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

impl Handle {
    /// This node's peer id (its node key).
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    /// The address this node listens on, with its peer id.
    pub fn address(&self) -> Multiaddr {
        self.listening.clone()
    }

    /// Gossips `data` on `topic`.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<(), GossipError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Publish(topic, data, reply))
            .await
            .map_err(|_| GossipError::Stopped)?;
        answer.await.map_err(|_| GossipError::Stopped)?
    }

    /// Connects to a peer.
    pub async fn dial(&self, address: Multiaddr) -> Result<(), GossipError> {
        self.commands
            .send(Command::Dial(address))
            .await
            .map_err(|_| GossipError::Stopped)
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerId>, GossipError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Peers(reply))
            .await
            .map_err(|_| GossipError::Stopped)?;
        answer.await.map_err(|_| GossipError::Stopped)
    }
}

/// The topic names of a chain: `/tally/<genesis hash>/<topic>/1`.
fn topic_of(genesis_hash: &Hash, topic: Topic) -> IdentTopic {
    let name = match topic {
        Topic::Consensus => "consensus",
        Topic::Transactions => "txs",
    };
    IdentTopic::new(format!("/tally/{}/{name}/1", genesis_hash.to_hex()))
}

/// Starts the network for the chain with `genesis_hash`, with the node key
/// whose secret seed is `node_key_seed`. Returns the handle and the stream
/// of accepted messages.
pub async fn start(
    config: Config,
    node_key_seed: [u8; 32],
    genesis_hash: Hash,
    validator: impl Validator,
) -> Result<(Handle, mpsc::Receiver<Inbound>), GossipError> {
    let setup = |e: &dyn std::fmt::Display| GossipError::Setup(e.to_string());
    let secret =
        identity::ed25519::SecretKey::try_from_bytes(node_key_seed).map_err(|e| setup(&e))?;
    let keypair = identity::Keypair::from(identity::ed25519::Keypair::from(secret));
    let gossip_config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(config.max_message_bytes)
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .heartbeat_interval(Duration::from_millis(500))
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(Hash::digest(&m.data).0.to_vec())
        })
        .build()
        .map_err(|e| setup(&e))?;
    let gossipsub =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(keypair.clone()), gossip_config)
            .map_err(|e| setup(&e))?;
    let identify =
        identify::Behaviour::new(identify::Config::new("/tally/1".into(), keypair.public()));
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_behaviour(|_| Behaviour {
            gossipsub,
            identify,
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
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
    swarm
        .listen_on(config.listen.clone())
        .map_err(|e| setup(&e))?;
    let listening = loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => break address,
            other => debug!(?other, "network event while starting"),
        }
    };
    for peer in &config.peers {
        if let Err(e) = swarm.dial(peer.clone()) {
            warn!(%peer, error = %e, "cannot dial peer");
        }
    }
    let local = *swarm.local_peer_id();
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (inbound_tx, inbound) = mpsc::channel(config.inbound_queue);
    let task = Task {
        swarm,
        config,
        genesis_hash,
        topics,
        validator,
        inbound: inbound_tx,
        strikes: HashMap::new(),
        banned: HashMap::new(),
    };
    tokio::spawn(task.run(command_rx));
    let address = listening.with(libp2p::multiaddr::Protocol::P2p(local));
    Ok((
        Handle {
            commands,
            local,
            listening: address,
        },
        inbound,
    ))
}

struct Task<V: Validator> {
    swarm: Swarm<Behaviour>,
    config: Config,
    genesis_hash: Hash,
    topics: HashMap<gossipsub::TopicHash, Topic>,
    validator: V,
    inbound: mpsc::Sender<Inbound>,
    strikes: HashMap<PeerId, u32>,
    banned: HashMap<PeerId, Instant>,
}

impl<V: Validator> Task<V> {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => return, // every handle is gone
                },
                event = self.swarm.select_next_some() => self.on_event(event),
            }
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
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_message(propagation_source, message_id, message),
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                let banned = self
                    .banned
                    .get(&peer_id)
                    .is_some_and(|until| Instant::now() < *until);
                if banned {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                }
            }
            other => debug!(?other, "network event"),
        }
    }

    fn on_message(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let verdict = match self.topics.get(&message.topic) {
            Some(topic) => (*topic, self.validator.validate(*topic, &message.data)),
            None => (Topic::Consensus, Verdict::Reject),
        };
        let acceptance = match verdict.1 {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        match verdict.1 {
            Verdict::Accept => {
                let inbound = Inbound {
                    topic: verdict.0,
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
        let strikes = self.strikes.entry(peer).or_insert(0);
        *strikes += 1;
        if *strikes >= self.config.max_invalid_messages {
            warn!(%peer, strikes = *strikes, "banning a peer that keeps sending invalid messages");
            self.strikes.remove(&peer);
            self.banned
                .insert(peer, Instant::now() + self.config.ban_duration);
            self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }
}
