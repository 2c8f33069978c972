//! The network's settings: addresses and every limit.

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

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
    /// The request-response protocol's name (the application's sync
    /// protocol, e.g. `/tally/<genesis hash>/sync/2`).
    pub request_protocol: String,
    /// Largest request read from a peer.
    pub max_request_bytes: usize,
    /// Largest answer read from a peer.
    pub max_response_bytes: usize,
    /// How long to wait for an answer.
    pub request_timeout: Duration,
    /// Gossip messages per second accepted from one peer; more are dropped.
    pub max_messages_per_sec: u32,
    /// Requests per second answered for one peer; more are dropped.
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
    /// What names the node's operator overrides of the validator set
    /// (`ChainContext::overrides_id`), if it has any: part of the identify
    /// protocol version, so that nodes with other overrides refuse each
    /// other with a message saying so.
    pub validator_overrides: Option<tally_ledger::Hash>,
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
            request_protocol: "/tally/requests/1".to_owned(),
            max_request_bytes: 8 * 1024 * 1024,
            max_response_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            max_messages_per_sec: 20_000,
            max_requests_per_sec: 50,
            max_invalid_messages: 10,
            ban_duration: Duration::from_secs(600),
            inbound_queue: 4_096,
            redial_interval: Duration::from_secs(2),
            validator_overrides: None,
        }
    }
}
