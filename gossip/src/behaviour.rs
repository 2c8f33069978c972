//! The libp2p stack: transport, the behaviours and their settings, and the
//! names a chain's topics and protocols go by.

use std::time::Duration;

use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    connection_limits, identify, identity, kad, noise, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use tally_ledger::Hash;

use crate::codec::BytesCodec;
use crate::{Config, GossipError, Topic};

/// The behaviours every node runs.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) kademlia: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) requests: request_response::Behaviour<BytesCodec>,
}

/// Requests being answered at once (until the answer is written); more are
/// dropped.
pub(crate) const MAX_SERVING: usize = 16;

/// How long identical gossip bytes count as a duplicate. (Gossipsub forgets
/// an id only when a newer message arrives, so on a quiet network identical
/// bytes stay refused for longer: nothing may rely on publishing the same
/// bytes twice.)
pub const DUPLICATE_WINDOW: Duration = Duration::from_millis(1_000);

/// Incoming connections still in their handshake (TCP accepted, Noise and
/// Yamux not yet agreed) at one time; more are closed at once, so silent or
/// slow connections cannot pile up.
const MAX_PENDING_INCOMING: u32 = 64;

/// Longest a connection may take to finish its handshake before it is
/// closed (a half-open or trickling connection holds a slot no longer).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The version of the peer-to-peer protocol. 2: block sync gained the
/// catch-up exchange (`/sync/2`). 3: protocol version 2 (headers with a
/// state root, a Merkle tx root and validator-set hashes; the ZIP-215
/// signature rule), whose blocks a version-2 node cannot check. 4: protocol
/// version 3 (transactions carry an action: transfers and validator-set
/// votes; blocks carry the last commit and evidence). 5: evidence of
/// equivocation travels on the consensus topic, which version-4 nodes
/// cannot decode (and would count against the sender). A node of another
/// version is dropped when it identifies itself, with a log line that says
/// which side to upgrade.
pub const NETWORK_VERSION: u32 = 5;

/// The topic names of a chain: `/tally/<genesis hash>/<topic>/<version>`.
pub(crate) fn topic_of(genesis_hash: &Hash, topic: Topic) -> IdentTopic {
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

/// The identify protocol version of the chain with `genesis_hash`, and the
/// node's validator-set overrides: `/tally/<network version>/<genesis
/// hash>`, followed by `/override/<overrides id>` when it has any.
pub(crate) fn identify_version(genesis_hash: &Hash, overrides: Option<&Hash>) -> String {
    match overrides {
        None => format!("/tally/{NETWORK_VERSION}/{}", genesis_hash.to_hex()),
        Some(id) => format!(
            "/tally/{NETWORK_VERSION}/{}/override/{}",
            genesis_hash.to_hex(),
            id.to_hex()
        ),
    }
}

/// Fails if a TCP listen address's port is taken. libp2p listens with
/// SO_REUSEPORT, so a second node on the same port would start and silently
/// take a share of the first one's connections; a plain bind refuses.
pub(crate) fn probe_listen(address: &Multiaddr) -> Result<(), GossipError> {
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

pub(crate) fn keypair_from_seed(seed: [u8; 32]) -> Result<identity::Keypair, GossipError> {
    let secret = identity::ed25519::SecretKey::try_from_bytes(seed)
        .map_err(|e| GossipError::Setup(e.to_string()))?;
    Ok(identity::Keypair::from(identity::ed25519::Keypair::from(
        secret,
    )))
}

fn setup(e: &dyn std::fmt::Display) -> GossipError {
    GossipError::Setup(e.to_string())
}

fn gossipsub(config: &Config) -> Result<gossipsub::Behaviour, GossipError> {
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
        // dropped as a duplicate wherever it was seen recently.
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(Hash::digest(&m.data).0.to_vec())
        })
        .duplicate_cache_time(DUPLICATE_WINDOW)
        .build()
        .map_err(|e| setup(&e))?;
    gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossip_config).map_err(|e| setup(&e))
}

fn kademlia(
    local: PeerId,
    genesis_hash: &Hash,
    persistent: &[(PeerId, Multiaddr)],
) -> Result<kad::Behaviour<kad::store::MemoryStore>, GossipError> {
    let protocol =
        StreamProtocol::try_from_owned(format!("/tally/{}/kad/1", genesis_hash.to_hex()))
            .map_err(|e| setup(&e))?;
    let mut kad_config = kad::Config::new(protocol);
    // Lookups run from the redial tick, only while peers are few.
    kad_config.set_periodic_bootstrap_interval(None);
    let mut kademlia =
        kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_config);
    // Answer discovery queries even without a confirmed public address
    // (loopback and private networks never get one).
    kademlia.set_mode(Some(kad::Mode::Server));
    for (id, address) in persistent {
        kademlia.add_address(id, address.clone());
    }
    Ok(kademlia)
}

/// Builds the swarm for the chain with `genesis_hash`, subscribed to its
/// topics.
pub(crate) fn build_swarm(
    config: &Config,
    keypair: identity::Keypair,
    genesis_hash: &Hash,
    persistent: &[(PeerId, Multiaddr)],
) -> Result<Swarm<Behaviour>, GossipError> {
    let local = keypair.public().to_peer_id();
    let gossipsub = gossipsub(config)?;
    // The identify protocol version names the chain: a peer on another
    // genesis is told apart at once and dropped.
    let identify = identify::Behaviour::new(identify::Config::new(
        identify_version(genesis_hash, config.validator_overrides.as_ref()),
        keypair.public(),
    ));
    let kademlia = kademlia(local, genesis_hash, persistent)?;
    let protocol =
        StreamProtocol::try_from_owned(config.request_protocol.clone()).map_err(|e| setup(&e))?;
    let requests = request_response::Behaviour::with_codec(
        BytesCodec {
            max_request_bytes: config.max_request_bytes,
            max_response_bytes: config.max_response_bytes,
        },
        [(protocol, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(MAX_SERVING),
    );
    let mut limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_peers))
            .with_max_established_per_peer(Some(2))
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
    );
    for (id, _) in persistent {
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
            requests,
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .with_connection_timeout(HANDSHAKE_TIMEOUT)
        .build();
    for topic in [Topic::Consensus, Topic::Transactions] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic_of(genesis_hash, topic))
            .map_err(|e| setup(&e))?;
    }
    Ok(swarm)
}
