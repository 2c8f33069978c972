//! The node's home directory: `config.toml`, `genesis.json`, keys and data.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tally_ledger::{devnet_key, to_hex, Address, Genesis, Keypair};

use crate::config::NodeConfig;

/// Paths inside a home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `root`.
    pub fn new(root: &Path) -> Home {
        Home {
            root: root.to_path_buf(),
        }
    }
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `genesis.json`.
    pub fn genesis(&self) -> PathBuf {
        self.root.join("genesis.json")
    }
    /// The RocksDB directory.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    /// The consensus signing record (docs/CONSENSUS.md), kept in the slot
    /// files `sign_state.0` and `sign_state.1` (see [`crate::records`]):
    /// never delete them while the validator key is in use.
    pub fn sign_state(&self) -> PathBuf {
        self.root.join("data").join("sign_state")
    }
    /// The consensus valid-block record (docs/CONSENSUS.md), in the slot
    /// files `valid_block.0` and `valid_block.1`.
    pub fn valid_block(&self) -> PathBuf {
        self.root.join("data").join("valid_block")
    }
    /// Default validator key location.
    pub fn validator_key(&self) -> PathBuf {
        self.root.join("keys").join("validator.json")
    }
    /// Whether `tally init` has run here.
    pub fn is_initialised(&self) -> bool {
        self.config().exists()
    }

    /// Lays out a new home: genesis, config, a validator key and a node key
    /// (kept if one is already there). Refuses to
    /// overwrite an initialised home. Each file is written to a temporary
    /// name, synced and renamed, and `config.toml` comes last: a crash leaves
    /// either an initialised home or one that `init` can complete (a key
    /// file already there is kept if it is the same key).
    /// Without `key` the node is a full node (no validator key file).
    pub fn init(
        &self,
        genesis: &Genesis,
        config: &NodeConfig,
        key: Option<&Keypair>,
    ) -> anyhow::Result<()> {
        if self.is_initialised() {
            bail!(
                "{} is already initialised (it has a config.toml); use another --home",
                self.root.display()
            );
        }
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        let key_path = self.validator_key();
        match key {
            Some(key) if key_path.exists() => {
                let existing = read_key_file(&key_path)?;
                if existing.address() != key.address() {
                    bail!(
                        "{} already holds another key ({}); move it away or use another --home",
                        key_path.display(),
                        existing.address()
                    );
                }
            }
            Some(key) => write_key_file(&key_path, key)?,
            None => {}
        }
        self.load_or_create_node_key(config)?;
        write_atomically(&self.genesis(), genesis.to_json().as_bytes())?;
        let mut config = config.clone();
        config.validator_key_file = key.map(|_| PathBuf::from("keys/validator.json"));
        write_atomically(&self.config(), config.to_toml().as_bytes())?;
        Ok(())
    }

    /// Reads the config.
    pub fn load_config(&self) -> anyhow::Result<NodeConfig> {
        if !self.is_initialised() {
            bail!(
                "{} has no config.toml: run `tally init --home {}` first",
                self.root.display(),
                self.root.display()
            );
        }
        NodeConfig::load(&self.config())
    }

    /// Reads the genesis.
    pub fn load_genesis(&self) -> anyhow::Result<Genesis> {
        load_genesis(&self.genesis())
    }

    /// The node key named by the config: the node's peer-to-peer identity.
    /// Created (randomly) on first use.
    pub fn load_or_create_node_key(&self, config: &NodeConfig) -> anyhow::Result<[u8; 32]> {
        let path = self.root.join(&config.network.node_key_file);
        if !path.exists() {
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed)
                .map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
            write_node_key_file(&path, seed)?;
        }
        read_node_key_file(&path)
    }

    /// The node's peer id, from its node key file.
    pub fn node_id(&self, config: &NodeConfig) -> anyhow::Result<tally_gossip::NodeId> {
        let seed = read_node_key_file(&self.root.join(&config.network.node_key_file))?;
        Ok(tally_gossip::peer_id_from_seed(seed)?)
    }

    /// Reads the validator key named by the config, if any.
    pub fn load_validator_key(&self, config: &NodeConfig) -> anyhow::Result<Option<Keypair>> {
        match &config.validator_key_file {
            Some(file) => Ok(Some(read_key_file(&self.root.join(file))?)),
            None => Ok(None),
        }
    }
}

/// Writes `path` so that it holds either its old contents or all of
/// `bytes`, never a part: write a temporary file, sync it, rename it over
/// `path`, sync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))?;
    // Sync the directory too, so that the rename itself survives a power
    // loss. (The consensus records, written at every step, use the cheaper
    // slot files of `crate::records` instead.)
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the directory {}", dir.display()))?;
    Ok(())
}

/// Reads a genesis file and validates it.
pub fn load_genesis(path: &Path) -> anyhow::Result<Genesis> {
    let text = read_bounded(path, Genesis::MAX_JSON_BYTES as u64)?;
    Genesis::from_json(&text).with_context(|| format!("{} is not a usable genesis", path.display()))
}

/// Reads a text file of at most `max_bytes`.
pub fn read_bounded(path: &Path, max_bytes: u64) -> anyhow::Result<String> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = String::new();
    file.take(max_bytes + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    if text.len() as u64 > max_bytes {
        bail!("{} is larger than {max_bytes} bytes", path.display());
    }
    Ok(text)
}

/// A key file: JSON with the address, public key and secret seed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// `tally1…` address.
    pub address: Address,
    /// The ed25519 public key, `0x` hex.
    pub public_key: String,
    /// The 32-byte secret seed, `0x` hex.
    pub secret_key: String,
}

impl KeyFile {
    /// The file contents for `key`.
    pub fn of(key: &Keypair) -> KeyFile {
        KeyFile {
            address: key.address(),
            public_key: to_hex(&key.address().0),
            secret_key: to_hex(&key.seed()),
        }
    }
}

/// Writes a key file readable only by its owner (mode 0600); never overwrites.
pub fn write_key_file(path: &Path, key: &Keypair) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&KeyFile::of(key))?;
    write_secret(path, text.as_bytes())
}

/// Creates `path` readable only by its owner and writes `bytes`, synced.
fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create key file {} (it must not exist yet)",
            path.display()
        )
    })?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// A node key file: the peer id and its secret seed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeKeyFile {
    node_id: String,
    secret_key: String,
}

/// Writes a node key file (mode 0600); never overwrites.
pub fn write_node_key_file(path: &Path, seed: [u8; 32]) -> anyhow::Result<()> {
    let node_id = tally_gossip::peer_id_from_seed(seed)?;
    let text = serde_json::to_string_pretty(&NodeKeyFile {
        node_id: node_id.to_string(),
        secret_key: to_hex(&seed),
    })?;
    write_secret(path, text.as_bytes())
}

/// Reads a node key file and checks that its id matches its secret.
pub fn read_node_key_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = read_bounded(path, 4096)?;
    let file: NodeKeyFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Tally node key file", path.display()))?;
    let seed = parse_seed(&file.secret_key, path)?;
    let id = tally_gossip::peer_id_from_seed(seed)?;
    if id.to_string() != file.node_id {
        bail!(
            "{}: the node_id does not belong to the secret key",
            path.display()
        );
    }
    Ok(seed)
}

fn parse_seed(hex: &str, path: &Path) -> anyhow::Result<[u8; 32]> {
    tally_ledger::parse_hex(hex)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| {
            format!(
                "{}: secret_key must be 0x followed by 64 hex digits",
                path.display()
            )
        })
}

/// Reads a key file and checks that its address matches its secret.
pub fn read_key_file(path: &Path) -> anyhow::Result<Keypair> {
    let text = read_bounded(path, 4096)?;
    let file: KeyFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Tally key file", path.display()))?;
    let seed = parse_seed(&file.secret_key, path)?;
    let key = Keypair::from_seed(seed);
    if key.address() != file.address {
        bail!(
            "{}: the address does not belong to the secret key",
            path.display()
        );
    }
    Ok(key)
}

/// Resolves `--key`: a key file path, or `devnet:NAME` for a devnet key.
pub fn resolve_key(spec: &str) -> anyhow::Result<Keypair> {
    match spec.strip_prefix("devnet:") {
        Some(name) => Ok(devnet_key(name)),
        None => read_key_file(Path::new(spec)),
    }
}

/// Resolves an address argument: `tally1…` text or `devnet:NAME`.
pub fn resolve_address(spec: &str) -> anyhow::Result<Address> {
    match spec.strip_prefix("devnet:") {
        Some(name) => Ok(devnet_key(name).address()),
        None => spec.parse::<Address>().map_err(|e| anyhow::anyhow!("{e}")),
    }
}
