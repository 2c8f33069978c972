//! `config.toml`: everything an operator may tune, with units in the names.
//! Every section and field is optional; a missing one takes its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Validator key file, relative to the home directory; a node without one
    /// (or whose key is not in the genesis) serves as a full node.
    pub validator_key_file: Option<PathBuf>,
    /// JSON-RPC server.
    pub rpc: RpcConfig,
    /// Mempool limits.
    pub mempool: MempoolConfig,
    /// Block production.
    pub producer: ProducerConfig,
    /// Consensus timeouts.
    pub consensus: ConsensusConfig,
    /// Storage.
    pub storage: StorageConfig,
    /// Peer-to-peer network and block sync.
    pub network: NetworkConfig,
    /// Operator overrides of the validator set, for a chain halted because
    /// too much voting power is gone (OPERATIONS.md, "When the chain
    /// halts"). Every node of the chain needs the same list, forever.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validator_override: Vec<ValidatorOverride>,
}

/// One `[[validator_override]]`: from `height` on, `validators` sign,
/// whatever the chain's votes made the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorOverride {
    /// The first height the set signs (above the tip when first set).
    pub height: u64,
    /// The set, as in genesis.json: name, address, power.
    pub validators: Vec<tally_ledger::GenesisValidator>,
}

/// JSON-RPC server limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// Address the HTTP server binds.
    pub listen_addr: SocketAddr,
    /// Largest request body.
    pub max_body_bytes: u32,
    /// Largest response body.
    pub max_response_bytes: u32,
    /// Most calls in one batch.
    pub max_batch_len: u32,
    /// Most open TCP connections; further ones wait in the accept backlog.
    pub max_connections: u32,
    /// Most requests processed at once; more are answered 429.
    pub max_concurrent_requests: u32,
    /// Longest `tx_submit` waits with `wait = "committed"`.
    pub wait_timeout_ms: u64,
    /// A connection that sends and receives nothing this long is closed;
    /// must exceed `wait_timeout_ms`.
    pub idle_timeout_ms: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], crate::DEFAULT_RPC_PORT)),
            max_body_bytes: 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            max_batch_len: 100,
            max_connections: 512,
            max_concurrent_requests: 256,
            wait_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
        }
    }
}

/// Mempool limits (see tally-mempool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MempoolConfig {
    /// Most transactions held.
    pub max_txs: usize,
    /// Most bytes held.
    pub max_bytes: usize,
    /// Most transactions held per sender.
    pub max_txs_per_sender: usize,
    /// How far ahead of the next nonce a transaction may be queued.
    pub max_nonce_gap: u64,
    /// How long a queued transaction waits for its gap to fill.
    pub queued_ttl_ms: u64,
    /// Percent of `max_txs`/`max_bytes` this node's clients may fill.
    pub client_fill_percent: u8,
    /// How many rejected or expired transaction ids `tx_get` remembers.
    pub max_remembered_outcomes: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        let pool = tally_mempool::Config::default();
        MempoolConfig {
            max_txs: pool.max_txs,
            max_bytes: pool.max_bytes,
            max_txs_per_sender: pool.max_txs_per_sender,
            max_nonce_gap: pool.max_nonce_gap,
            queued_ttl_ms: pool.queued_ttl_ms,
            client_fill_percent: pool.client_fill_percent,
            max_remembered_outcomes: 100_000,
        }
    }
}

impl MempoolConfig {
    /// The mempool crate's config.
    pub fn pool(&self) -> tally_mempool::Config {
        tally_mempool::Config {
            max_txs: self.max_txs,
            max_bytes: self.max_bytes,
            max_txs_per_sender: self.max_txs_per_sender,
            max_nonce_gap: self.max_nonce_gap,
            queued_ttl_ms: self.queued_ttl_ms,
            client_fill_percent: self.client_fill_percent,
        }
    }
}

/// Block production.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerConfig {
    /// A proposer with no transactions waits this long, then proposes an
    /// empty block (0: it waits for transactions and rounds time out
    /// meanwhile). With transactions, the next block starts as soon as the
    /// last commits. Must be shorter than `consensus.propose_timeout_ms`.
    pub empty_block_interval_ms: u64,
    /// Before building a block that would complete or admit a
    /// validator-set vote while the last commit lacks some validators'
    /// precommits, a proposer waits up to this long after the last block
    /// for them: the liveness guard counts as live only the signers of
    /// the last commit. Must be shorter than `consensus.propose_timeout_ms`.
    pub live_wait_ms: u64,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            empty_block_interval_ms: 1_000,
            live_wait_ms: 500,
        }
    }
}

/// Consensus timeouts (docs/CONSENSUS.md). The timeout of round r is
/// `base + r × timeout_delta_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusConfig {
    /// Wait for a proposal.
    pub propose_timeout_ms: u64,
    /// Wait after 2f+1 prevotes of mixed values.
    pub prevote_timeout_ms: u64,
    /// Wait after 2f+1 precommits of mixed values.
    pub precommit_timeout_ms: u64,
    /// Added per round.
    pub timeout_delta_ms: u64,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        let c = tally_consensus::Config::default();
        ConsensusConfig {
            propose_timeout_ms: c.propose_timeout_ms,
            prevote_timeout_ms: c.prevote_timeout_ms,
            precommit_timeout_ms: c.precommit_timeout_ms,
            timeout_delta_ms: c.timeout_delta_ms,
        }
    }
}

impl ConsensusConfig {
    /// The state machine's config.
    pub fn machine(&self) -> tally_consensus::Config {
        tally_consensus::Config {
            propose_timeout_ms: self.propose_timeout_ms,
            prevote_timeout_ms: self.prevote_timeout_ms,
            precommit_timeout_ms: self.precommit_timeout_ms,
            timeout_delta_ms: self.timeout_delta_ms,
            ..tally_consensus::Config::default()
        }
    }
}

/// Storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// RocksDB block cache.
    pub block_cache_bytes: usize,
    /// Memory of RocksDB's write buffers (memtables), all together.
    pub write_buffer_bytes: usize,
    /// Most files RocksDB keeps open.
    pub max_open_files: i32,
    /// Recent versions of the account tree kept (at least 1): state proofs
    /// can be served for this many latest heights; older tree nodes are
    /// deleted.
    pub state_history: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let rocks = tally_store::RocksConfig::default();
        StorageConfig {
            block_cache_bytes: rocks.block_cache_bytes,
            write_buffer_bytes: rocks.write_buffer_bytes,
            max_open_files: rocks.max_open_files,
            state_history: rocks.state_history,
        }
    }
}

/// Peer-to-peer network and block sync (docs/OPERATIONS.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Where to listen for peers, as a multiaddress
    /// (`/ip4/0.0.0.0/tcp/7800` for every interface; port 0 picks one).
    pub listen: String,
    /// Persistent peers, each `/ip4/ADDRESS/tcp/PORT/p2p/NODE_ID` (or
    /// `/ip6/…`; IP addresses, not DNS names): dialled at start and
    /// redialled while disconnected. One is enough; discovery finds the rest.
    pub peers: Vec<String>,
    /// Node key file, relative to the home directory (created on first
    /// start if missing). It is the node's peer-to-peer identity.
    pub node_key_file: PathBuf,
    /// Most connected peers (persistent peers do not count).
    pub max_peers: u32,
    /// Gossip messages per second accepted from one peer.
    pub max_messages_per_sec: u32,
    /// Block-sync requests per second answered for one peer.
    pub max_requests_per_sec: u32,
    /// Invalid messages after which a peer is banned.
    pub max_invalid_messages: u32,
    /// How long a banned peer is refused.
    pub ban_duration_ms: u64,
    /// How often the node compares its tip with its peers'.
    pub sync_interval_ms: u64,
    /// Most blocks asked for in one sync request.
    pub sync_batch_blocks: u32,
    /// How long to wait for a peer's sync answer.
    pub sync_timeout_ms: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        let net = tally_gossip::Config::default();
        NetworkConfig {
            listen: format!("/ip4/127.0.0.1/tcp/{}", crate::DEFAULT_P2P_PORT),
            peers: Vec::new(),
            node_key_file: PathBuf::from("keys/node_key.json"),
            max_peers: net.max_peers,
            max_messages_per_sec: net.max_messages_per_sec,
            max_requests_per_sec: net.max_requests_per_sec,
            max_invalid_messages: net.max_invalid_messages,
            ban_duration_ms: net.ban_duration.as_millis() as u64,
            sync_interval_ms: 1_000,
            sync_batch_blocks: 64,
            sync_timeout_ms: net.request_timeout.as_millis() as u64,
        }
    }
}

impl NetworkConfig {
    /// The listen address, parsed.
    pub fn listen_address(&self) -> anyhow::Result<tally_gossip::PeerAddress> {
        self.listen
            .parse()
            .map_err(|e| anyhow::anyhow!("config: network.listen {:?}: {e}", self.listen))
    }

    /// The peer addresses, parsed; each must name its node id.
    pub fn peer_addresses(&self) -> anyhow::Result<Vec<tally_gossip::PeerAddress>> {
        self.peers
            .iter()
            .map(|p| {
                let address: tally_gossip::PeerAddress = p
                    .parse()
                    .map_err(|e| anyhow::anyhow!("config: network.peers entry {p:?}: {e}"))?;
                anyhow::ensure!(
                    p.starts_with("/ip4/") || p.starts_with("/ip6/"),
                    "config: network.peers entry {p:?} must start with /ip4/ or /ip6/ \
                     (an IP address; DNS names are not resolved)"
                );
                anyhow::ensure!(
                    tally_gossip::peer_id_of(&address).is_some(),
                    "config: network.peers entry {p:?} must end in /p2p/<node id> \
                     (`tally init` printed it; `tally peers --rpc URL` on that node, or \
                     `tally key show HOME/keys/node_key.json`, shows it)"
                );
                Ok(address)
            })
            .collect()
    }
}

/// Largest config file accepted.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl NodeConfig {
    /// Reads and checks `config.toml`.
    pub fn load(path: &Path) -> anyhow::Result<NodeConfig> {
        let text = crate::home::read_bounded(path, MAX_CONFIG_BYTES)?;
        let config: NodeConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a valid config: {e}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    /// The TOML text written by `tally init`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The overrides as the chain context takes them.
    pub fn validator_overrides(&self) -> Vec<(u64, Vec<tally_ledger::GenesisValidator>)> {
        self.validator_override
            .iter()
            .map(|o| (o.height, o.validators.clone()))
            .collect()
    }

    /// Rejects limits that would make the node unusable.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("rpc.max_body_bytes", self.rpc.max_body_bytes as u64),
            ("rpc.max_response_bytes", self.rpc.max_response_bytes as u64),
            ("rpc.max_batch_len", self.rpc.max_batch_len as u64),
            ("rpc.max_connections", self.rpc.max_connections as u64),
            (
                "rpc.max_concurrent_requests",
                self.rpc.max_concurrent_requests as u64,
            ),
            ("mempool.max_txs", self.mempool.max_txs as u64),
            ("mempool.max_bytes", self.mempool.max_bytes as u64),
            (
                "mempool.max_txs_per_sender",
                self.mempool.max_txs_per_sender as u64,
            ),
            (
                "mempool.max_remembered_outcomes",
                self.mempool.max_remembered_outcomes as u64,
            ),
            (
                "consensus.propose_timeout_ms",
                self.consensus.propose_timeout_ms,
            ),
            (
                "consensus.prevote_timeout_ms",
                self.consensus.prevote_timeout_ms,
            ),
            (
                "consensus.precommit_timeout_ms",
                self.consensus.precommit_timeout_ms,
            ),
            (
                "storage.max_open_files",
                self.storage.max_open_files.max(0) as u64,
            ),
            ("network.max_peers", self.network.max_peers as u64),
            (
                "network.max_messages_per_sec",
                self.network.max_messages_per_sec as u64,
            ),
            (
                "network.max_requests_per_sec",
                self.network.max_requests_per_sec as u64,
            ),
            (
                "network.max_invalid_messages",
                self.network.max_invalid_messages as u64,
            ),
            ("network.sync_interval_ms", self.network.sync_interval_ms),
            (
                "network.sync_batch_blocks",
                self.network.sync_batch_blocks as u64,
            ),
            ("network.sync_timeout_ms", self.network.sync_timeout_ms),
        ];
        for (name, value) in positive {
            anyhow::ensure!(value > 0, "config: {name} must be at least 1");
        }
        anyhow::ensure!(
            self.producer.empty_block_interval_ms < self.consensus.propose_timeout_ms,
            "config: producer.empty_block_interval_ms ({}) must be shorter than \
             consensus.propose_timeout_ms ({}), or idle rounds would time out",
            self.producer.empty_block_interval_ms,
            self.consensus.propose_timeout_ms
        );
        anyhow::ensure!(
            self.producer.live_wait_ms < self.consensus.propose_timeout_ms,
            "config: producer.live_wait_ms ({}) must be shorter than \
             consensus.propose_timeout_ms ({}), or a waiting proposer's round would time out",
            self.producer.live_wait_ms,
            self.consensus.propose_timeout_ms
        );
        anyhow::ensure!(
            (1..=100).contains(&self.mempool.client_fill_percent),
            "config: mempool.client_fill_percent ({}) must be from 1 to 100",
            self.mempool.client_fill_percent
        );
        self.network.listen_address()?;
        self.network.peer_addresses()?;
        anyhow::ensure!(
            self.rpc.idle_timeout_ms > self.rpc.wait_timeout_ms,
            "config: rpc.idle_timeout_ms ({}) must be longer than rpc.wait_timeout_ms ({}), \
             or waiting clients would be cut off",
            self.rpc.idle_timeout_ms,
            self.rpc.wait_timeout_ms
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ADDRESS: &str = "tally1z04f02rmafpmxy5mjv3zf3j4y5qycp4hvhur7zs2zgggvw5gqges3vf350";

    #[test]
    fn a_validator_override_reads_as_written_by_hand_or_by_the_node() {
        let inline = format!(
            "[[validator_override]]\nheight = 58\nvalidators = [\n    \
             {{ name = \"validator-0\", address = \"{ADDRESS}\", power = 1 }},\n]\n"
        );
        let config: NodeConfig = toml::from_str(&inline).unwrap();
        assert_eq!(config.validator_override.len(), 1);
        assert_eq!(config.validator_overrides()[0].0, 58);
        assert_eq!(config.validator_overrides()[0].1[0].name, "validator-0");
        let written = config.to_toml();
        assert!(written.contains("[[validator_override]]"), "{written}");
        let again: NodeConfig = toml::from_str(&written).unwrap();
        assert_eq!(again, config);
        // A config without overrides writes none.
        assert!(!NodeConfig::default()
            .to_toml()
            .contains("validator_override"));
        // A typo is an error, not an override ignored.
        let typo = inline.replace("height", "heigth");
        assert!(toml::from_str::<NodeConfig>(&typo).is_err());
    }
}
