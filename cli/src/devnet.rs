//! `tally devnet`: a local network of validators (and full nodes), each a
//! separate `tally run` process on loopback ports, laid out from the public
//! devnet keys so that `tally key devnet NAME` matches its validators and
//! funded accounts.
//!
//! Layout: one home per node at `DIR/<name>` (`validator-0`, …, `full-0`,
//! …). Node `i` (validators first) serves RPC on `base_port + i` and listens
//! for peers on `base_port + 100 + i`. Validators list every other validator
//! as a persistent peer; a full node knows only `validator-0` and finds the
//! rest by discovery.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;
use tally_ledger::devnet::{devnet_genesis, validator_name};
use tally_ledger::{devnet_key, Genesis};
use tokio::process::{Child, Command};

use tally_node::config::NodeConfig;
use tally_node::home::{self, Home};

/// Chain id of every devnet.
pub const DEVNET_CHAIN_ID: &str = "tally-devnet";

/// Most nodes in one devnet (ports are `base + i` and `base + 100 + i`).
const MAX_NODES: usize = 100;

/// How long a node gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// `tally devnet`.
#[derive(Debug, Args)]
pub struct DevnetArgs {
    #[command(subcommand)]
    action: Option<DevnetAction>,
    #[command(flatten)]
    layout: Layout,
}

#[derive(Debug, Subcommand)]
enum DevnetAction {
    /// Only lay the homes out (one per node at DIR/<name>) and print each
    /// node's name, home and RPC URL; start any node with
    /// `tally run --home DIR/<name>`.
    Init {
        #[command(flatten)]
        layout: Layout,
        /// Print a JSON list of {name, role, home, rpc_url, p2p_address}.
        #[arg(long)]
        json: bool,
    },
}

/// The shape of a devnet.
#[derive(Debug, Clone, Args)]
pub struct Layout {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Number of full nodes (they follow the chain without voting).
    #[arg(long, default_value_t = 0)]
    pub full_nodes: usize,
    /// Directory holding the nodes' homes; reused by later runs.
    #[arg(long, default_value = ".tally/devnet")]
    pub dir: PathBuf,
    /// Node i serves RPC on BASE_PORT + i and peers on BASE_PORT + 100 + i
    /// [default: 7700; an existing devnet keeps the ports it was laid out
    /// with].
    #[arg(long)]
    pub base_port: Option<u16>,
}

/// One node of a devnet.
#[derive(Debug, Clone, Serialize)]
pub struct DevnetNode {
    /// `validator-i` or `full-i`.
    pub name: String,
    /// `validator` or `full`.
    pub role: &'static str,
    /// Its home directory.
    pub home: PathBuf,
    /// Its JSON-RPC URL.
    pub rpc_url: String,
    /// The address its peers dial.
    pub p2p_address: String,
}

impl Layout {
    fn check(&self) -> anyhow::Result<()> {
        if self.validators == 0 {
            bail!("--validators must be at least 1");
        }
        let nodes = self.validators + self.full_nodes;
        if nodes > MAX_NODES {
            bail!("a devnet has at most {MAX_NODES} nodes (validators + full nodes)");
        }
        let base = self.base();
        if base == 0 || usize::from(base) + 100 + nodes > 65_535 {
            bail!("--base-port {base} leaves no room for {nodes} nodes' ports");
        }
        Ok(())
    }

    fn names(&self) -> Vec<(String, bool)> {
        let validators = (0..self.validators).map(|i| (validator_name(i), true));
        let full = (0..self.full_nodes).map(|i| (format!("full-{i}"), false));
        validators.chain(full).collect()
    }

    fn genesis(&self) -> anyhow::Result<Genesis> {
        Ok(devnet_genesis(self.validators, DEVNET_CHAIN_ID)?)
    }

    fn base(&self) -> u16 {
        self.base_port.unwrap_or(tally_node::DEFAULT_RPC_PORT)
    }

    fn rpc_port(&self, i: usize) -> u16 {
        self.base() + i as u16
    }

    fn p2p_port(&self, i: usize) -> u16 {
        self.base() + 100 + i as u16
    }

    /// How many nodes of this layout already have a home.
    fn existing(&self) -> usize {
        self.names()
            .iter()
            .filter(|(name, _)| Home::new(&self.dir.join(name)).is_initialised())
            .count()
    }

    /// Whether any node of this layout already has a home.
    fn exists(&self) -> bool {
        self.existing() > 0
    }

    /// Writes every home: genesis, config, validator key (validators) and
    /// node key. Refuses if any of them exists.
    pub fn init(&self) -> anyhow::Result<Vec<DevnetNode>> {
        self.check()?;
        if self.exists() {
            bail!(
                "{} already holds a devnet; start it with `tally devnet --dir {}`, or delete the \
                 directory to start over",
                self.dir.display(),
                self.dir.display()
            );
        }
        let names = self.names();
        let rpc_ports: Vec<u16> = (0..names.len()).map(|i| self.rpc_port(i)).collect();
        let p2p_ports: Vec<u16> = (0..names.len()).map(|i| self.p2p_port(i)).collect();
        write_homes(
            &self.dir,
            &self.genesis()?,
            &names,
            &rpc_ports,
            &p2p_ports,
            &|_| {},
        )?;
        self.nodes()
    }

    /// The nodes of an existing devnet, checked against its homes.
    pub fn nodes(&self) -> anyhow::Result<Vec<DevnetNode>> {
        self.check()?;
        let genesis_hash = self.genesis()?.hash();
        let mut nodes = Vec::new();
        for (name, is_validator) in self.names() {
            let home = Home::new(&self.dir.join(&name));
            let config = home.load_config().with_context(|| {
                format!(
                    "{} does not hold the devnet of {} validators and {} full nodes that was \
                     asked for; use the same flags as when it was laid out, another --dir, or \
                     delete it",
                    self.dir.display(),
                    self.validators,
                    self.full_nodes
                )
            })?;
            if home.load_genesis()?.hash() != genesis_hash {
                bail!(
                    "{} belongs to a devnet with a different validator set; use the same \
                     --validators as when it was laid out, another --dir, or delete it",
                    home.root().display()
                );
            }
            if let Some(base) = self.base_port {
                let i = nodes.len();
                let port = config.rpc.listen_addr.port();
                if port != self.rpc_port(i) {
                    bail!(
                        "{} was laid out with other ports ({name} serves RPC on {port}, not \
                         {}); leave --base-port out to use them, or use another --dir",
                        self.dir.display(),
                        base as usize + i
                    );
                }
            }
            let node_id = home.node_id(&config)?;
            nodes.push(DevnetNode {
                name,
                role: if is_validator { "validator" } else { "full" },
                home: home.root().to_path_buf(),
                rpc_url: format!("http://{}", config.rpc.listen_addr),
                p2p_address: format!("{}/p2p/{node_id}", config.network.listen),
            });
        }
        Ok(nodes)
    }
}

/// A base port such that a devnet of `nodes` nodes finds its RPC ports
/// (`base + i`) and peer ports (`base + 100 + i`) all free right now.
///
/// Drawn at random below the kernel's ephemeral range: a port inside it
/// can be taken, between this check and the node's bind, by any socket
/// bound to port 0 or by any outgoing connection (another test's, say),
/// and the node would then stop with "address in use".
pub fn free_base_port(nodes: u16) -> anyhow::Result<u16> {
    let (low, high) = unreserved_port_range();
    let span = u64::from(high.saturating_sub(low + 100 + nodes).max(1));
    let mut seed = [0u8; 8];
    getrandom::getrandom(&mut seed).context("no randomness to pick ports with")?;
    let seed = u64::from_le_bytes(seed);
    for attempt in 0..200u64 {
        // Distinct offsets for each attempt (7,919 is prime).
        let base = low + (seed.wrapping_add(attempt * 7_919) % span) as u16;
        let ports = (0..nodes).flat_map(|i| [base + i, base + 100 + i]);
        let bound: Result<Vec<std::net::TcpListener>, _> = ports
            .map(|port| std::net::TcpListener::bind(("127.0.0.1", port)))
            .collect();
        if bound.is_ok() {
            return Ok(base);
        }
    }
    bail!("no free range of {nodes} port pairs found on 127.0.0.1 below {high}")
}

/// Ports from 10000 up to the start of the kernel's ephemeral range (Linux:
/// `/proc/sys/net/ipv4/ip_local_port_range`), or 20000–50000 where that
/// cannot be read or leaves too little room.
fn unreserved_port_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok());
    match ephemeral_low {
        Some(low) if low >= 12_000 => (10_000, low),
        _ => (20_000, 50_000),
    }
}

/// Writes one home per node of `names` (validators first) under `dir`, for
/// `genesis`: node `i` serves RPC on `rpc_ports[i]` and listens for peers on
/// `p2p_ports[i]`, all on 127.0.0.1. Validators take their devnet keys and
/// list every other validator as a persistent peer; a full node knows only
/// the first node and discovers the rest. `tune` adjusts each config.
pub(crate) fn write_homes(
    dir: &Path,
    genesis: &Genesis,
    names: &[(String, bool)],
    rpc_ports: &[u16],
    p2p_ports: &[u16],
    tune: &dyn Fn(&mut NodeConfig),
) -> anyhow::Result<()> {
    let validators = names.iter().filter(|(_, v)| *v).count();
    // Node keys first: every config names its peers by node id.
    let mut addresses = Vec::new();
    for ((name, _), port) in names.iter().zip(p2p_ports) {
        let seed = crate::cli::new_key()?.seed();
        let key_file = dir
            .join(name)
            .join(&NodeConfig::default().network.node_key_file);
        if !key_file.exists() {
            home::write_node_key_file(&key_file, seed)?;
        }
        let id = Home::new(&dir.join(name)).node_id(&NodeConfig::default())?;
        addresses.push(format!("/ip4/127.0.0.1/tcp/{port}/p2p/{id}"));
    }
    for (i, (name, is_validator)) in names.iter().enumerate() {
        let mut config = NodeConfig::default();
        config.rpc.listen_addr = ([127, 0, 0, 1], rpc_ports[i]).into();
        config.network.listen = format!("/ip4/127.0.0.1/tcp/{}", p2p_ports[i]);
        config.network.peers = if *is_validator {
            (0..validators)
                .filter(|j| *j != i)
                .map(|j| addresses[j].clone())
                .collect()
        } else {
            // One bootstrap address; discovery finds the others.
            vec![addresses[0].clone()]
        };
        tune(&mut config);
        config.validate()?;
        let key = is_validator.then(|| devnet_key(name));
        Home::new(&dir.join(name)).init(genesis, &config, key.as_ref())?;
    }
    Ok(())
}

/// Runs `tally devnet [init]`.
pub fn command(args: DevnetArgs) -> anyhow::Result<()> {
    match args.action {
        Some(DevnetAction::Init { layout, json }) => {
            let nodes = layout.init()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                print_nodes(&layout, &nodes);
                println!(
                    "start each node with `tally run --home {}/<name>`",
                    layout.dir.display()
                );
            }
            Ok(())
        }
        None => run(&args.layout),
    }
}

fn print_nodes(layout: &Layout, nodes: &[DevnetNode]) {
    println!(
        "Tally devnet in {}: {} validators, {} full nodes, chain {DEVNET_CHAIN_ID}",
        layout.dir.display(),
        layout.validators,
        layout.full_nodes
    );
    for node in nodes {
        println!(
            "  {:<14} {:<9} {:<24} home {}",
            node.name,
            node.role,
            node.rpc_url,
            node.home.display()
        );
    }
}

fn run(layout: &Layout) -> anyhow::Result<()> {
    layout.check()?;
    let extra = [
        format!("full-{}", layout.full_nodes),
        validator_name(layout.validators),
    ];
    if let Some(name) = extra.iter().find(|n| layout.dir.join(n).exists()) {
        bail!(
            "{} holds more nodes than asked for (it has {name}); pass the --validators and \
             --full-nodes it was laid out with, or use another --dir",
            layout.dir.display()
        );
    }
    let nodes = match layout.existing() {
        0 => layout.init()?,
        n if n == layout.names().len() => layout.nodes()?,
        n => bail!(
            "{} holds {n} of the {} node homes asked for (an interrupted init, or other \
             --validators/--full-nodes than it was laid out with); use the original flags, \
             another --dir, or delete it",
            layout.dir.display(),
            layout.names().len()
        ),
    };
    let exe = std::env::current_exe().context("cannot find the tally executable")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut children = Vec::new();
        for node in &nodes {
            match spawn(&exe, &node.home).await {
                Ok(child) => children.push((node.name.clone(), Some(child))),
                Err(e) => {
                    stop_all(&mut children).await;
                    return Err(e.context(format!("cannot start {}", node.name)));
                }
            }
        }
        print_nodes(layout, &nodes);
        println!(
            "Logs: {}/<name>/node.log. Funded accounts: alice, bob, carol. Try:",
            layout.dir.display()
        );
        println!(
            "  tally transfer --key devnet:alice --to devnet:bob --amount 100 --wait --rpc {}",
            nodes[0].rpc_url
        );
        println!("Ctrl-C stops every node.");
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        let shutdown = tally_node::run::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => report_exits(&mut children),
            }
        }
        println!("stopping {} nodes…", children.len());
        stop_all(&mut children).await;
        println!("stopped");
        Ok(())
    })
}

pub(crate) async fn spawn(exe: &Path, home: &Path) -> anyhow::Result<Child> {
    let log_path = home.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let err = log.try_clone()?;
    // Each node reads a pipe from this process and stops when it closes:
    // if `tally devnet` dies, even by SIGKILL, its nodes stop with it.
    Command::new(exe)
        .arg("run")
        .arg("--home")
        .arg(home)
        .arg("--stop-on-stdin-close")
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a node process")
}

/// Tells about nodes that stopped on their own (once each).
pub(crate) fn report_exits(children: &mut [(String, Option<Child>)]) {
    for (name, slot) in children.iter_mut() {
        let Some(child) = slot else { continue };
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("{name} stopped ({status}); see its node.log");
            *slot = None;
        }
    }
}

/// SIGTERM to every node, then wait; kill what has not stopped in time.
pub(crate) async fn stop_all(children: &mut [(String, Option<Child>)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.as_ref().and_then(Child::id) {
            terminate(pid);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for (name, slot) in children.iter_mut() {
        let Some(child) = slot else { continue };
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!("{name} did not stop within {STOP_GRACE:?}; killing it");
                let _ = child.kill().await;
            }
        }
        *slot = None;
    }
}

/// Asks a node to stop (SIGTERM). With the `kill` command: this crate
/// forbids `unsafe`, which `libc::kill` needs. A node that already exited
/// makes it fail, which is fine.
fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
