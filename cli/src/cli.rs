//! The command line: node commands, keys, genesis, and the wallet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use tally_ledger::{
    devnet_key, Address, ChainId, Genesis, GenesisBalance, GenesisValidator, Keypair, Params,
};

use crate::wallet;
use tally_ledger::devnet::{devnet_genesis, validator_name, DEVNET_GENESIS_TIME_MS};
use tally_node::config::NodeConfig;
use tally_node::home::{self, Home, KeyFile};

/// Tally: a BFT replicated ledger node and its wallet.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a single-validator development chain, ready in seconds. Funds the
    /// devnet accounts alice, bob and carol (keys: `tally key devnet NAME`).
    Dev {
        /// Home directory; created on first use and reused after. Without it
        /// the chain lives in a temporary directory deleted on exit.
        #[arg(long, env = "TALLY_HOME")]
        home: Option<PathBuf>,
        /// Address for the JSON-RPC server (port 0 picks a free port).
        #[arg(long, default_value_t = default_rpc_addr())]
        rpc_addr: SocketAddr,
    },
    /// Lay out a node home: config.toml, genesis.json and a validator key.
    Init {
        /// The home directory to create.
        #[arg(long)]
        home: PathBuf,
        /// The genesis file of the chain to join.
        #[arg(long)]
        genesis: PathBuf,
        /// Use this key file as the validator key instead of generating one.
        #[arg(long, conflicts_with = "devnet_key")]
        key: Option<PathBuf>,
        /// Use the public devnet key NAME (insecure; for devnets only).
        #[arg(long)]
        devnet_key: Option<String>,
        /// Run as a full node: no validator key (follows and serves the
        /// chain, relays transactions, does not vote).
        #[arg(long, conflicts_with_all = ["key", "devnet_key"])]
        full_node: bool,
        /// Address for the JSON-RPC server, written to config.toml.
        #[arg(long, default_value_t = default_rpc_addr())]
        rpc_addr: SocketAddr,
        /// Where to listen for peers (a multiaddress), written to config.toml.
        #[arg(long, default_value_t = default_p2p_listen())]
        p2p_listen: String,
        /// A peer to connect to, `/ip4/HOST/tcp/PORT/p2p/NODE_ID`. Repeat.
        #[arg(long = "peer", value_name = "MULTIADDR")]
        peers: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a local network of validators (and full nodes) as separate
    /// processes on loopback; Ctrl-C stops them all.
    Devnet(crate::devnet::DevnetArgs),
    /// Measure throughput and latency: start a local devnet (or attach to
    /// running nodes), submit pre-signed transfers for a while, and report
    /// (docs/BENCHMARKS.md).
    Bench(crate::bench::BenchArgs),
    /// Run the node whose home was laid out by `tally init`.
    Run {
        /// The node's home directory.
        #[arg(long, env = "TALLY_HOME")]
        home: PathBuf,
        /// Override the config's RPC address.
        #[arg(long)]
        rpc_addr: Option<SocketAddr>,
        /// Override the config's peer-to-peer listen address (a multiaddress).
        #[arg(long)]
        p2p_listen: Option<String>,
        /// Also stop when standard input closes (used by `tally devnet`, so
        /// its nodes stop even if it is killed).
        #[arg(long, hide = true)]
        stop_on_stdin_close: bool,
    },
    /// Create and inspect keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create a genesis file.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Send a transfer.
    Transfer(TransferArgs),
    /// Show an account's balance and nonce.
    Balance {
        /// The account: `tally1…` or `devnet:NAME`.
        address: String,
        #[command(flatten)]
        prove: ProveArgs,
        #[command(flatten)]
        common: RpcArgs,
    },
    /// Show what the node's mempool holds of an account and why its
    /// transactions wait: the pending run, the queued ones with the
    /// missing nonces that hold them and when each expires.
    Pending {
        /// The account: `tally1…` or `devnet:NAME`.
        address: String,
        #[command(flatten)]
        common: RpcArgs,
    },
    /// Show a transaction's status.
    Tx {
        /// The transaction id (0x…).
        hash: String,
        #[command(flatten)]
        prove: ProveArgs,
        #[command(flatten)]
        common: RpcArgs,
    },
    /// Check saved JSON-RPC answers offline against a genesis: blocks with
    /// their certificates (chain_getBlock), validator sets
    /// (chain_getValidators), account proofs (account_getProof) and
    /// transaction proofs (tx_getProof). Exits 0 when every file checks out.
    Verify {
        /// The genesis file of the chain.
        #[arg(long)]
        genesis: PathBuf,
        /// Trust an operator override of the validator set (the chain's
        /// operators publish it; `chain_status` of a node that has it shows
        /// it): HEIGHT:VALIDATORS_HASH. Repeatable.
        #[arg(long = "override", value_name = "HEIGHT:HASH")]
        overrides: Vec<String>,
        /// Files each holding one saved answer (the JSON-RPC response or
        /// its `result`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show a committed block.
    Block {
        /// A height, `latest`, or a block hash (0x…).
        #[arg(default_value = "latest")]
        block: String,
        /// Include the full transactions.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        common: RpcArgs,
    },
    /// Show the node's chain status.
    Status {
        #[command(flatten)]
        common: RpcArgs,
    },
    /// Show the node's node id, the address peers dial, and its peers.
    Peers {
        #[command(flatten)]
        common: RpcArgs,
    },
    /// Propose or vote for validator-set changes, and see the votes.
    #[command(subcommand)]
    Validator(crate::validator::ValidatorCommand),
    /// Ask several nodes (their JSON-RPC URLs) which chain they run and
    /// with which operator overrides of the validator set, and say where
    /// they disagree. Exits 1 when one does not answer or two disagree.
    Doctor {
        /// The nodes' JSON-RPC URLs.
        #[arg(required = true, value_name = "URL")]
        nodes: Vec<String>,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the validator set in force, with power and share.
    Validators {
        /// The height (the tip when omitted; up to two past the tip).
        #[arg(long)]
        height: Option<u64>,
        #[command(flatten)]
        common: RpcArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Generate a new random key into a file (mode 0600).
    New {
        /// The key file to create; must not exist.
        #[arg(long)]
        out: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the address and public key of a key file.
    Show {
        /// The key file.
        file: PathBuf,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a public, deterministic devnet key (INSECURE: anyone can derive it).
    Devnet {
        /// alice, bob, carol, validator-0, validator-1, …
        name: String,
        /// Write it as a key file too.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print as JSON, including the secret key.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum GenesisCommand {
    /// Build a genesis from validators and balances, or a devnet genesis.
    New {
        /// Chain id: 1 to 64 of a-z, 0-9, '-', '_', '.'.
        #[arg(long, default_value = "tally-devnet")]
        chain_id: String,
        /// A validator as NAME:ADDRESS[:POWER] (power defaults to 1). Repeat.
        #[arg(long = "validator", value_name = "NAME:ADDRESS[:POWER]")]
        validators: Vec<String>,
        /// An initial balance as ADDRESS:AMOUNT (or devnet:NAME:AMOUNT). Repeat.
        #[arg(long = "balance", value_name = "ADDRESS:AMOUNT")]
        balances: Vec<String>,
        /// N devnet validators (validator-0 …) and the funded devnet
        /// accounts alice, bob and carol, instead of --validator/--balance.
        #[arg(long, conflicts_with_all = ["validators", "balances"])]
        devnet: Option<usize>,
        /// Genesis time in milliseconds since the Unix epoch.
        #[arg(long, default_value_t = DEVNET_GENESIS_TIME_MS)]
        genesis_time_ms: u64,
        /// Smallest fee a transaction may pay.
        #[arg(long, default_value_t = Params::default().min_fee)]
        min_fee: u64,
        /// Most transactions in a block.
        #[arg(long, default_value_t = Params::default().max_block_txs)]
        max_block_txs: u32,
        /// Most bytes of transactions in a block.
        #[arg(long, default_value_t = Params::default().max_block_bytes)]
        max_block_bytes: u32,
        /// Fewest validators a validator-set change may leave.
        #[arg(long, default_value_t = Params::default().min_validators)]
        min_validators: u32,
        /// Blocks a validator-set vote counts for before it expires.
        #[arg(long, default_value_t = Params::default().validator_vote_expiry)]
        validator_vote_expiry: u64,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Where the node's RPC is and how to print.
#[derive(Debug, Args)]
pub struct RpcArgs {
    /// The node's JSON-RPC URL.
    #[arg(long, env = "TALLY_RPC", default_value_t = format!("http://127.0.0.1:{}", tally_node::DEFAULT_RPC_PORT))]
    pub rpc: String,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--prove` for `tally balance` and `tally tx`.
#[derive(Debug, Args)]
pub struct ProveArgs {
    /// Fetch the Merkle proof with the header and certificate, and verify
    /// them before printing.
    #[arg(long)]
    pub prove: bool,
    /// With --prove: the genesis file to verify against (default: the
    /// genesis the node reports, which proves consistency with that node's
    /// chain only).
    #[arg(long, requires = "prove")]
    pub genesis: Option<PathBuf>,
    /// With --prove: trust an operator override of the validator set,
    /// HEIGHT:VALIDATORS_HASH (as `tally verify --override`). Repeatable.
    #[arg(long = "override", value_name = "HEIGHT:HASH", requires = "prove")]
    pub overrides: Vec<String>,
}

/// `tally transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The sender's key: a key file, or `devnet:NAME`.
    #[arg(long)]
    pub key: String,
    /// The recipient: `tally1…` or `devnet:NAME`.
    #[arg(long)]
    pub to: String,
    /// Units to send.
    #[arg(long)]
    pub amount: u64,
    /// Fee; defaults to the chain's minimum fee.
    #[arg(long)]
    pub fee: Option<u64>,
    /// Nonce; defaults to the sender's next nonce as the node reports it.
    #[arg(long)]
    pub nonce: Option<u64>,
    /// Wait until the transfer is committed.
    #[arg(long)]
    pub wait: bool,
    /// Node URL and output format.
    #[command(flatten)]
    pub common: RpcArgs,
}

fn default_rpc_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], tally_node::DEFAULT_RPC_PORT))
}

fn default_p2p_listen() -> String {
    tally_node::config::NetworkConfig::default().listen
}

/// Parses the command line, runs the command, prints any error as a
/// sentence, and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `tally block 1 --full | head` closes the pipe early, and println!
    // panics on that; a reader that has seen enough is not an error.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            default_hook(info);
        }
    }));
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(payload) if is_broken_pipe(&*payload) => ExitCode::SUCCESS,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied());
    text.is_some_and(|t| t.starts_with("failed printing to stdout") && t.contains("Broken pipe"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,libp2p_kad=error,libp2p_gossipsub=error")
    });
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal, not in log files (node.log).
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev { home, rpc_addr } => run_dev(home, rpc_addr),
        Command::Init {
            home,
            genesis,
            key,
            devnet_key,
            full_node,
            rpc_addr,
            p2p_listen,
            peers,
            json,
        } => {
            let key = match (key, devnet_key, full_node) {
                (_, _, true) => None,
                (Some(path), _, _) => Some(home::read_key_file(&path)?),
                (None, Some(name), _) => Some(tally_ledger::devnet_key(&name)),
                (None, None, false) => Some(new_key()?),
            };
            let mut config = NodeConfig::default();
            config.rpc.listen_addr = rpc_addr;
            config.network.listen = p2p_listen;
            config.network.peers = peers;
            config.validate()?;
            init(&home, &genesis, key, config, json)
        }
        Command::Devnet(args) => crate::devnet::command(args),
        Command::Bench(args) => crate::bench::command(args),
        Command::Run {
            home,
            rpc_addr,
            p2p_listen,
            stop_on_stdin_close,
        } => {
            init_logging();
            let home = Home::new(&home);
            let mut config = home.load_config()?;
            if let Some(listen) = p2p_listen {
                config.network.listen = listen;
                config.validate()?;
            }
            runtime()?.block_on(async move {
                let listener = tally_node::run::bind(&config, rpc_addr).await?;
                let shutdown = async move {
                    tokio::select! {
                        _ = tally_node::run::shutdown_signal() => {}
                        _ = stdin_closed(), if stop_on_stdin_close => {}
                    }
                };
                tally_node::run::run(&home, config, listener, shutdown).await
            })
        }
        Command::Key(command) => key_command(command),
        Command::Genesis(GenesisCommand::New {
            chain_id,
            validators,
            balances,
            devnet,
            genesis_time_ms,
            min_fee,
            max_block_txs,
            max_block_bytes,
            min_validators,
            validator_vote_expiry,
            out,
        }) => {
            let genesis = match devnet {
                Some(n) => devnet_genesis(n, &chain_id)?,
                None => {
                    let params = Params {
                        min_fee,
                        max_block_txs,
                        max_block_bytes,
                        min_validators,
                        validator_vote_expiry,
                    };
                    build_genesis(&chain_id, genesis_time_ms, params, &validators, &balances)?
                }
            };
            let text = genesis.to_json() + "\n";
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "wrote {} (chain {}, genesis hash {})",
                        path.display(),
                        genesis.chain_id,
                        genesis.hash()
                    );
                    Ok(())
                }
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
        Command::Transfer(args) => runtime()?.block_on(wallet::transfer(args)),
        Command::Validator(crate::validator::ValidatorCommand::Propose(args)) => {
            runtime()?.block_on(crate::validator::propose(args))
        }
        Command::Validator(crate::validator::ValidatorCommand::Override {
            drop,
            add,
            height,
            common,
        }) => runtime()?.block_on(crate::validator::override_entry(
            &drop, &add, height, common,
        )),
        Command::Doctor { nodes, json } => runtime()?.block_on(crate::doctor::run(&nodes, json)),
        Command::Validator(crate::validator::ValidatorCommand::Votes { common }) => {
            runtime()?.block_on(crate::validator::votes(common))
        }
        Command::Validator(crate::validator::ValidatorCommand::Evidence { from, common }) => {
            runtime()?.block_on(crate::validator::evidence(from, common))
        }
        Command::Validators { height, common } => {
            runtime()?.block_on(crate::validator::validators(height, common))
        }
        Command::Balance {
            address,
            prove,
            common,
        } => runtime()?.block_on(wallet::balance(&address, &prove, &common)),
        Command::Tx {
            hash,
            prove,
            common,
        } => runtime()?.block_on(wallet::tx(&hash, &prove, &common)),
        Command::Pending { address, common } => {
            runtime()?.block_on(wallet::pending(&address, &common))
        }
        Command::Verify {
            genesis,
            overrides,
            files,
        } => crate::verify::run(&genesis, &overrides, &files),
        Command::Block {
            block,
            full,
            common,
        } => runtime()?.block_on(wallet::block(&block, full, &common)),
        Command::Status { common } => runtime()?.block_on(wallet::status(&common)),
        Command::Peers { common } => runtime()?.block_on(wallet::peers(&common)),
    }
}

/// Resolves when standard input reaches its end (or fails). The read runs
/// on a plain thread: a blocking read inside the runtime would keep the
/// runtime from shutting down while stdin stays open.
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => {
            let _ = rx.await;
        }
        // Without the watcher, only signals stop the node.
        Err(_) => std::future::pending::<()>().await,
    }
}

fn run_dev(home: Option<PathBuf>, rpc_addr: SocketAddr) -> anyhow::Result<()> {
    init_logging();
    let temp;
    let root = match home {
        Some(path) => path,
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let home = Home::new(&root);
    if !home.is_initialised() {
        let genesis = devnet_genesis(1, "tally-dev")?;
        let mut config = NodeConfig::default();
        config.rpc.listen_addr = rpc_addr;
        // A single validator needs no peers; any free port will do.
        config.network.listen = "/ip4/127.0.0.1/tcp/0".into();
        home.init(&genesis, &config, Some(&devnet_key(&validator_name(0))))?;
        eprintln!("initialised a dev chain in {}", root.display());
    }
    let config = home.load_config()?;
    println!(
        "Tally dev chain: home {}; funded accounts alice, bob, carol (use --key devnet:alice)",
        root.display()
    );
    runtime()?.block_on(async move {
        let listener = tally_node::run::bind(&config, Some(rpc_addr)).await?;
        tally_node::run::run(&home, config, listener, tally_node::run::shutdown_signal()).await
    })
}

fn init(
    root: &std::path::Path,
    genesis_path: &std::path::Path,
    key: Option<Keypair>,
    config: NodeConfig,
    json: bool,
) -> anyhow::Result<()> {
    let genesis = home::load_genesis(genesis_path)?;
    let home = Home::new(root);
    home.init(&genesis, &config, key.as_ref())?;
    let node_id = home.node_id(&config)?;
    let is_validator = key
        .as_ref()
        .is_some_and(|k| genesis.validators.iter().any(|v| v.address == k.address()));
    if json {
        let mut value = serde_json::json!({
            "home": root.display().to_string(),
            "validator": is_validator,
            "node_id": node_id.to_string(),
            "p2p_listen": config.network.listen,
            "genesis_hash": genesis.hash(),
        });
        if let Some(key) = &key {
            value["address"] = serde_json::json!(key.address());
            value["public_key"] = serde_json::json!(tally_ledger::to_hex(&key.address().0));
        }
        println!("{value}");
    } else {
        println!("initialised {}", root.display());
        println!(
            "node id: {node_id} (peers reach it at {}/p2p/{node_id})",
            config.network.listen
        );
        if config.network.listen.contains("/0.0.0.0/") || config.network.listen.contains("/::/") {
            println!(
                "  (it listens on every interface: in other nodes' peers, write this host's \
                 address in place of 0.0.0.0)"
            );
        }
        match &key {
            Some(key) => {
                println!(
                    "validator key: {} ({})",
                    key.address(),
                    home.validator_key().display()
                );
                if !is_validator {
                    println!(
                        "this key is not in the genesis set: the node follows the chain as a full \
                         node and signs from the height a validator-set change adds it"
                    );
                }
            }
            None => println!("no validator key: the node will run as a full node"),
        }
    }
    Ok(())
}

pub(crate) fn new_key() -> anyhow::Result<Keypair> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(Keypair::from_seed(seed))
}

fn print_key(key: &Keypair, json: bool, with_secret: bool) {
    let file = KeyFile::of(key);
    if json {
        let mut value =
            serde_json::json!({ "address": file.address, "public_key": file.public_key });
        if with_secret {
            value["secret_key"] = serde_json::Value::String(file.secret_key);
        }
        println!("{value}");
    } else {
        println!("address:    {}", file.address);
        println!("public key: {}", file.public_key);
        if with_secret {
            println!(
                "secret key: {} (PUBLIC devnet key: never use it for real funds)",
                file.secret_key
            );
        }
    }
}

fn key_command(command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::New { out, json } => {
            let key = new_key()?;
            home::write_key_file(&out, &key)?;
            print_key(&key, json, false);
        }
        KeyCommand::Show { file, json } => match home::read_key_file(&file) {
            Ok(key) => print_key(&key, json, false),
            // A node key file (keys/node_key.json) shows its node id.
            Err(e) => match home::read_node_key_file(&file) {
                Ok(seed) => {
                    let id = tally_gossip::peer_id_from_seed(seed)?;
                    if json {
                        println!("{}", serde_json::json!({ "node_id": id.to_string() }));
                    } else {
                        println!("node id: {id}");
                    }
                }
                Err(_) => return Err(e),
            },
        },
        KeyCommand::Devnet { name, out, json } => {
            let key = devnet_key(&name);
            if let Some(out) = out {
                home::write_key_file(&out, &key)?;
            }
            print_key(&key, json, true);
        }
    }
    Ok(())
}

fn build_genesis(
    chain_id: &str,
    genesis_time_ms: u64,
    params: Params,
    validators: &[String],
    balances: &[String],
) -> anyhow::Result<Genesis> {
    if validators.is_empty() {
        bail!("give at least one --validator NAME:ADDRESS[:POWER], or use --devnet N");
    }
    let validators = validators
        .iter()
        .map(|v| parse_validator(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let balances = balances
        .iter()
        .map(|b| parse_balance(b))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let genesis = Genesis {
        chain_id: ChainId::new(chain_id)?,
        genesis_time_ms,
        params,
        validators,
        balances,
    };
    genesis.validate()?;
    Ok(genesis)
}

fn parse_validator(spec: &str) -> anyhow::Result<GenesisValidator> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (name, address, power) = match parts.as_slice() {
        [name, address] => (*name, *address, "1"),
        [name, address, power] => (*name, *address, *power),
        _ => bail!("--validator {spec:?}: expected NAME:ADDRESS[:POWER]"),
    };
    let address: Address = address
        .parse()
        .with_context(|| format!("--validator {spec:?}"))?;
    let power = power
        .parse()
        .with_context(|| format!("--validator {spec:?}: power must be a whole number"))?;
    Ok(GenesisValidator {
        name: name.to_owned(),
        address,
        power,
    })
}

fn parse_balance(spec: &str) -> anyhow::Result<GenesisBalance> {
    let (who, amount) = spec
        .rsplit_once(':')
        .with_context(|| format!("--balance {spec:?}: expected ADDRESS:AMOUNT"))?;
    let address = home::resolve_address(who).with_context(|| format!("--balance {spec:?}"))?;
    let amount = amount
        .parse()
        .with_context(|| format!("--balance {spec:?}: amount must be a whole number"))?;
    Ok(GenesisBalance { address, amount })
}
