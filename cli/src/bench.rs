//! `tally bench`: a load generator and reporter.
//!
//! Starts a local devnet (or attaches to running nodes), gives K sender
//! accounts funds (in the devnet's genesis, or by transfers from the devnet
//! account `alice` that are not counted), signs the whole load beforehand so
//! that signing is not measured, then submits it with `tx_submitBatch`,
//! spread over every node's RPC: open loop at `--rate`, or closed loop with
//! `--max` (as fast as the cluster commits, with at most `--window`
//! transfers accepted and not yet committed). A tracker follows the chain on
//! the first node and times each transfer from the moment its batch was sent
//! to the moment its block was seen committed. At the end it checks that
//! every accepted transfer was committed exactly once and that the nodes
//! agree on the chain, and reports throughput, latency, rejections, and each
//! started node's CPU time, peak memory and disk use (docs/BENCHMARKS.md).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Args;
use serde::Serialize;
use tally_client::{BatchEntry, BlockId, BlockTxs, Client, TxState};
use tally_ledger::devnet::{devnet_genesis, validator_name};
use tally_ledger::{devnet_key, GenesisBalance, Hash, Keypair, Transaction};
use tokio::process::Child;
use tokio::sync::Semaphore;

/// Chain id of the devnet `tally bench` starts.
pub const BENCH_CHAIN_ID: &str = "tally-bench";

/// Marks a directory as made by `tally bench`, so a later run may empty it.
const MARKER: &str = "tally-bench.json";

/// Most transfers signed for one run (about 250 bytes of memory each).
const MAX_TRANSFERS: u64 = 5_000_000;

/// How often the tracker asks the first node for its height.
const POLL: Duration = Duration::from_millis(5);

/// Longest the end of a run waits for accepted transfers to commit once
/// commits stop coming.
const DRAIN_QUIET: Duration = Duration::from_secs(10);

/// Recent latencies kept for the live median.
const LIVE_WINDOW: usize = 20_000;

/// `tally bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Validators of the devnet to start (ignored with --rpc).
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Submit this many transfers per second, whether or not the cluster
    /// keeps up (open loop) [default: 1000 unless --max].
    #[arg(long, conflicts_with = "max")]
    rate: Option<u64>,
    /// Submit as fast as the cluster commits (closed loop, at most --window
    /// transfers accepted and not yet committed).
    #[arg(long)]
    max: bool,
    /// How long to submit: 60s, 500ms, 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Where the started devnet lives; emptied first (it must be empty,
    /// missing, or an earlier benchmark's).
    #[arg(long, default_value = ".tally/bench")]
    dir: PathBuf,
    /// Attach to running nodes instead: their RPC URLs, comma separated.
    /// Their chain must fund the devnet account alice, which funds the
    /// senders.
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    rpc: Vec<String>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Sender accounts (each sends its transfers in nonce order, always to
    /// the same node).
    #[arg(long, default_value_t = 256)]
    accounts: usize,
    /// Transfers per `tx_submitBatch` call.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// With --max: most transfers accepted and not yet committed.
    #[arg(long, default_value_t = 20_000)]
    window: u64,
    /// With --max: transfers signed beforehand per second of --duration
    /// (the most the run can submit).
    #[arg(long, default_value_t = 25_000)]
    presign_rate: u64,
    /// Clients reading `account_get` from the first node in a closed loop
    /// during the load (0: none).
    #[arg(long, default_value_t = 0)]
    readers: usize,
    /// Kill the last validator (SIGKILL) as the load starts, restart it
    /// when the load is over, and time how fast it catches up (needs at
    /// least 4 validators, and not --rpc).
    #[arg(long)]
    catch_up: bool,
}

/// Parses `60s`, `500ms`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 60s, 500ms or 2m"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?} is not a duration like 60s, 500ms or 2m"))?;
    Ok(Duration::from_millis(ms))
}

/// A node under load.
struct Target {
    name: String,
    url: String,
    client: Client,
    /// Set for nodes this run started.
    pid: Option<u32>,
    data_dir: Option<PathBuf>,
}

/// What happened to each transfer, shared by the submitters and the
/// tracker. Times are microseconds since the run's start; 0 is "not yet".
struct Ledger {
    start: Instant,
    sent_us: Vec<AtomicU64>,
    committed_us: Vec<AtomicU64>,
    accepted: Vec<AtomicBool>,
    /// Admitted as `queued` (behind a missing nonce) rather than `pending`.
    queued: Vec<AtomicBool>,
    index: HashMap<Hash, u32>,
    submitted: AtomicU64,
    accepted_count: AtomicU64,
    committed_count: AtomicU64,
    duplicated: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
    blocks: AtomicU64,
    block_txs: AtomicU64,
    recent: Mutex<VecDeque<u64>>,
}

impl Ledger {
    fn now_us(&self) -> u64 {
        (self.start.elapsed().as_micros() as u64).max(1)
    }

    fn refuse(&self, reason: &str, count: u64) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason.to_owned())
            .or_default() += count;
    }

    fn rejected(&self) -> u64 {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }

    fn in_flight(&self) -> u64 {
        self.accepted_count
            .load(Ordering::Relaxed)
            .saturating_sub(self.committed_count.load(Ordering::Relaxed))
    }
}

/// The results, as written to `--json-out`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command line that produced this.
    pub command: String,
    /// What it ran on.
    pub machine: Machine,
    /// `rate` or `max`.
    pub mode: &'static str,
    /// Target rate (open loop).
    pub target_rate: Option<u64>,
    /// Sender accounts.
    pub accounts: usize,
    /// Transfers per call.
    pub batch: usize,
    /// Seconds of submission.
    pub duration_s: f64,
    /// Transfers sent.
    pub submitted: u64,
    /// Transfers a node admitted.
    pub accepted: u64,
    /// Accepted transfers seen committed.
    pub committed: u64,
    /// Committed transfers per second, from the first send to the last
    /// commit.
    pub committed_tps: f64,
    /// Transfers sent per second of submission.
    pub offered_tps: f64,
    /// Submit → commit latency of the committed transfers.
    pub latency_ms: Latency,
    /// Transfers refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Acknowledged as `pending` but never committed: the node broke its
    /// word (must be 0).
    pub lost: u64,
    /// Acknowledged as `queued` (waiting for a missing nonce) and never
    /// committed: the nonce they waited for was refused (this bench does
    /// not resubmit), so they wait until `[mempool] queued_ttl_ms` and then
    /// expire, as `tx_get` reports — what the acknowledgement said could
    /// happen.
    pub queued_uncommitted: u64,
    /// Committed in more than one block.
    pub duplicated: u64,
    /// Blocks committed during the run.
    pub blocks: u64,
    /// Average transactions per block.
    pub avg_txs_per_block: f64,
    /// Whether every node holds the same block at the lowest tip.
    pub tips_agree: bool,
    /// That height.
    pub agreed_height: u64,
    /// `account_get` reads, when `--readers` was given.
    pub reads: Option<Reads>,
    /// How the validator stopped for the load caught up, with --catch-up.
    pub catch_up: Option<CatchUp>,
    /// Per node.
    pub nodes: Vec<NodeReport>,
    /// Growth of the data directories per committed transfer, averaged over
    /// the started nodes.
    pub disk_bytes_per_tx: Option<f64>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize, Default)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// A restarted validator catching up.
#[derive(Debug, Serialize)]
pub struct CatchUp {
    /// Blocks it fetched.
    pub blocks: u64,
    /// Transactions in them.
    pub transfers: u64,
    /// From its restart to holding the tip it was restarted behind.
    pub seconds: f64,
    /// Transactions caught up per second.
    pub tps: f64,
    /// `tps` over the live `committed_tps`.
    pub times_live: f64,
}

/// Read throughput.
#[derive(Debug, Serialize)]
pub struct Reads {
    /// Concurrent readers.
    pub readers: usize,
    /// Answered requests per second.
    pub per_sec: f64,
    /// Failed requests.
    pub errors: u64,
    /// Latency of answered requests.
    pub latency_ms: Latency,
}

/// One node's resources.
#[derive(Debug, Serialize)]
pub struct NodeReport {
    /// Its name.
    pub name: String,
    /// Its RPC URL.
    pub rpc_url: String,
    /// CPU time (user + system) it used from the start of the load to the
    /// end of the run; `null` for nodes not started by this run.
    pub cpu_seconds: Option<f64>,
    /// Its peak resident memory.
    pub peak_rss_bytes: Option<u64>,
    /// Its data directory's size at the end.
    pub disk_bytes: Option<u64>,
}

/// The machine a report was made on.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory.
    pub memory_bytes: u64,
    /// Operating system.
    pub os: &'static str,
}

/// Runs `tally bench`.
pub fn command(args: BenchArgs) -> anyhow::Result<()> {
    check(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

fn check(args: &BenchArgs) -> anyhow::Result<()> {
    ensure!(
        (1..=16).contains(&args.validators),
        "--validators must be 1 to 16"
    );
    ensure!(
        (1..=100_000).contains(&args.accounts),
        "--accounts must be 1 to 100000"
    );
    ensure!(
        (1..=tally_rpc::MAX_SUBMIT_BATCH).contains(&args.batch),
        "--batch must be 1 to {}",
        tally_rpc::MAX_SUBMIT_BATCH
    );
    ensure!(
        args.duration >= Duration::from_millis(100) && args.duration <= Duration::from_secs(3_600),
        "--duration must be 100ms to 1h"
    );
    ensure!(args.window >= 1, "--window must be at least 1");
    ensure!(
        !args.catch_up || (args.rpc.is_empty() && args.validators >= 4),
        "--catch-up needs a devnet this run starts (no --rpc) of at least 4 validators"
    );
    if let Some(rate) = args.rate {
        ensure!(rate >= 1, "--rate must be at least 1");
    }
    let total = transfers_to_sign(args);
    ensure!(
        total <= MAX_TRANSFERS,
        "the run would sign {total} transfers, more than {MAX_TRANSFERS}; lower --rate, \
         --presign-rate or --duration"
    );
    Ok(())
}

fn transfers_to_sign(args: &BenchArgs) -> u64 {
    let per_sec = match (args.max, args.rate) {
        (true, _) => args.presign_rate,
        (false, rate) => rate.unwrap_or(1_000),
    };
    (per_sec as u128 * args.duration.as_millis() / 1_000).max(1) as u64
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let started_here = args.rpc.is_empty();
    let mut children: Vec<(String, Option<Child>)> = Vec::new();
    let result = async {
        let (targets, funded_in_genesis) = if started_here {
            (start_devnet(&args, &mut children).await?, true)
        } else {
            (attach(&args.rpc).await?, false)
        };
        bench(&args, targets, funded_in_genesis, &mut children).await
    }
    .await;
    if !children.is_empty() {
        eprintln!("stopping {} nodes…", children.len());
        crate::devnet::stop_all(&mut children).await;
    }
    let report = result?;
    print_report(&report);
    if let Some(path) = &args.json_out {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

/// The sender keys of a run; `run` tells runs on one chain apart.
fn sender_keys(run: &str, count: usize) -> Vec<Keypair> {
    (0..count)
        .map(|i| devnet_key(&format!("bench/{run}/{i}")))
        .collect()
}

/// Most balance given to each sender in a started devnet.
const SENDER_BALANCE: u64 = 1 << 50;

/// Each sender's balance in a started devnet: [`SENDER_BALANCE`], or less
/// when that many senders would together exceed the supply limit (2^64 − 1;
/// half of it is left for the devnet's own accounts).
fn sender_balance(accounts: usize) -> u64 {
    SENDER_BALANCE.min((u64::MAX / 2) / accounts.max(1) as u64)
}

async fn start_devnet(
    args: &BenchArgs,
    children: &mut Vec<(String, Option<Child>)>,
) -> anyhow::Result<Vec<Target>> {
    prepare_dir(&args.dir)?;
    let mut genesis = devnet_genesis(args.validators, BENCH_CHAIN_ID)?;
    genesis
        .balances
        .extend(
            sender_keys("genesis", args.accounts)
                .iter()
                .map(|key| GenesisBalance {
                    address: key.address(),
                    amount: sender_balance(args.accounts),
                }),
        );
    genesis.validate()?;
    let names: Vec<(String, bool)> = (0..args.validators)
        .map(|i| (validator_name(i), true))
        .collect();
    let base = crate::devnet::free_base_port(names.len() as u16)?;
    let rpc_ports: Vec<u16> = (0..names.len() as u16).map(|i| base + i).collect();
    let p2p_ports: Vec<u16> = (0..names.len() as u16).map(|i| base + 100 + i).collect();
    crate::devnet::write_homes(
        &args.dir,
        &genesis,
        &names,
        &rpc_ports,
        &p2p_ports,
        &|config| {
            // Room for the whole window of accepted transfers per sender.
            config.mempool.max_txs_per_sender = 4_096;
        },
    )?;
    let exe = std::env::current_exe().context("cannot find the tally executable")?;
    let mut targets = Vec::new();
    for ((name, _), port) in names.iter().zip(&rpc_ports) {
        let home = args.dir.join(name);
        let child = crate::devnet::spawn(&exe, &home)
            .await
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id();
        children.push((name.clone(), Some(child)));
        let url = format!("http://127.0.0.1:{port}");
        targets.push(Target {
            name: name.clone(),
            client: Client::new(&url)?,
            url,
            pid,
            data_dir: Some(home.join("data")),
        });
    }
    eprintln!(
        "started {} validators in {} (logs: <name>/node.log)",
        targets.len(),
        args.dir.display()
    );
    if let Err(e) = wait_ready(&targets).await {
        // Say why: a node that stopped, and the end of its log.
        crate::devnet::report_exits(children);
        let logs: Vec<String> = names
            .iter()
            .map(|(name, _)| {
                let log = args.dir.join(name).join("node.log");
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("{}:\n  {}", log.display(), tail.join("\n  "))
            })
            .collect();
        bail!("{e}\nthe nodes' last log lines:\n{}", logs.join("\n"));
    }
    Ok(targets)
}

/// Empties `dir` if it is missing, empty, or an earlier benchmark's.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} is not empty and was not made by `tally bench`; pass another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "{\"made_by\": \"tally bench\", \"note\": \"emptied by the next tally bench run\"}\n",
    )?;
    Ok(())
}

async fn attach(urls: &[String]) -> anyhow::Result<Vec<Target>> {
    let targets: Vec<Target> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            Ok(Target {
                name: format!("node-{i}"),
                client: Client::new(url)?,
                url: url.clone(),
                pid: None,
                data_dir: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    wait_ready(&targets).await?;
    let genesis = targets[0].client.status().await?.genesis_hash;
    for target in &targets[1..] {
        let other = target.client.status().await?.genesis_hash;
        ensure!(
            other == genesis,
            "{} follows another chain (genesis {other}) than {} ({genesis})",
            target.url,
            targets[0].url
        );
    }
    Ok(targets)
}

/// Waits until every node answers and the chain makes blocks.
async fn wait_ready(targets: &[Target]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for target in targets {
        loop {
            match target.client.status().await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    bail!("{} ({}) does not answer: {e}", target.name, target.url)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    let first = targets[0].client.status().await?.height;
    while targets[0].client.status().await?.height < first + 2 {
        ensure!(
            Instant::now() < deadline,
            "the chain makes no blocks (are the validators connected? see their logs)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Gives each sender funds by transfers from the devnet account alice.
async fn fund(targets: &[Target], senders: &[Keypair], per_sender: u64) -> anyhow::Result<()> {
    let client = &targets[0].client;
    let status = client.status().await?;
    let alice = devnet_key("alice");
    let mut nonce = client.account(&alice.address()).await?.next_nonce;
    let fee = status.min_fee;
    // Below the mempool's nonce gap limit, in order, waiting for each chunk.
    for chunk in senders.chunks(32) {
        let txs: Vec<Vec<u8>> = chunk
            .iter()
            .map(|key| {
                let tx = Transaction::transfer(
                    status.chain_id.clone(),
                    alice.address(),
                    key.address(),
                    per_sender,
                    fee,
                    nonce,
                )
                .sign(&alice, &status.genesis_hash);
                nonce += 1;
                tx.encode()
            })
            .collect();
        let answers = client.submit_batch(&txs).await?;
        let mut last = None;
        for answer in answers {
            match answer {
                BatchEntry::Admitted { hash, .. } => last = Some(hash),
                BatchEntry::Refused { error } => bail!(
                    "funding the senders from alice failed: {} ({})",
                    error.message,
                    error.reason
                ),
            }
        }
        if let Some(hash) = last {
            let deadline = Instant::now() + Duration::from_secs(60);
            while client.tx(&hash).await?.status != TxState::Committed {
                ensure!(
                    Instant::now() < deadline,
                    "funding transfer {hash} not committed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(())
}

/// Signs `per_sender` transfers for every sender, on every core; returns
/// each node's queue in submission order (sender `s` always goes to node
/// `s % nodes`, nonce by nonce).
fn presign(
    senders: &[Keypair],
    per_sender: u64,
    nodes: usize,
    chain_id: &tally_ledger::ChainId,
    genesis_hash: &Hash,
    fee: u64,
) -> Vec<Vec<Vec<u8>>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = senders.len().div_ceil(threads);
    // signed[s][n]: sender s's transfer with nonce n.
    let signed: Vec<Vec<Vec<u8>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = senders
            .chunks(chunk.max(1))
            .enumerate()
            .map(|(c, keys)| {
                scope.spawn(move || {
                    keys.iter()
                        .enumerate()
                        .map(|(i, key)| {
                            let s = c * chunk + i;
                            let to = senders[(s + 1) % senders.len()].address();
                            (0..per_sender)
                                .map(|nonce| {
                                    Transaction::transfer(
                                        chain_id.clone(),
                                        key.address(),
                                        to,
                                        1,
                                        fee,
                                        nonce,
                                    )
                                    .sign(key, genesis_hash)
                                    .encode()
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut queues: Vec<Vec<Vec<u8>>> = (0..nodes).map(|_| Vec::new()).collect();
    let mut signed: Vec<std::vec::IntoIter<Vec<u8>>> =
        signed.into_iter().map(Vec::into_iter).collect();
    for _ in 0..per_sender {
        for (s, txs) in signed.iter_mut().enumerate() {
            if let Some(encoded) = txs.next() {
                queues[s % nodes].push(encoded);
            }
        }
    }
    queues
}

async fn bench(
    args: &BenchArgs,
    targets: Vec<Target>,
    funded_in_genesis: bool,
    children: &mut [(String, Option<Child>)],
) -> anyhow::Result<Report> {
    let status = targets[0].client.status().await?;
    let total = transfers_to_sign(args);
    let per_sender = total.div_ceil(args.accounts as u64);
    let senders = if funded_in_genesis {
        sender_keys("genesis", args.accounts)
    } else {
        let run = format!("{:x}", rand_run_id());
        let senders = sender_keys(&run, args.accounts);
        eprintln!("funding {} senders from alice…", senders.len());
        fund(&targets, &senders, per_sender * (1 + status.min_fee) + 1).await?;
        senders
    };
    eprintln!(
        "signing {} transfers from {} senders…",
        per_sender * args.accounts as u64,
        args.accounts
    );
    let queues = {
        let (chain_id, genesis_hash, fee) =
            (status.chain_id.clone(), status.genesis_hash, status.min_fee);
        // The validator that will be stopped gets no transfers.
        let nodes = targets.len() - usize::from(args.catch_up);
        tokio::task::spawn_blocking(move || {
            presign(&senders, per_sender, nodes, &chain_id, &genesis_hash, fee)
        })
        .await?
    };
    // Global indexes: node i's queue starts at offsets[i].
    let mut offsets = Vec::new();
    let mut index = HashMap::new();
    let mut next = 0u32;
    for queue in &queues {
        offsets.push(next);
        for tx in queue {
            index.insert(Hash::digest(tx), next);
            next += 1;
        }
    }
    let count = next as usize;
    let ledger = Arc::new(Ledger {
        start: Instant::now(),
        sent_us: (0..count).map(|_| AtomicU64::new(0)).collect(),
        committed_us: (0..count).map(|_| AtomicU64::new(0)).collect(),
        accepted: (0..count).map(|_| AtomicBool::new(false)).collect(),
        queued: (0..count).map(|_| AtomicBool::new(false)).collect(),
        index,
        submitted: AtomicU64::new(0),
        accepted_count: AtomicU64::new(0),
        committed_count: AtomicU64::new(0),
        duplicated: AtomicU64::new(0),
        refused: Mutex::new(BTreeMap::new()),
        blocks: AtomicU64::new(0),
        block_txs: AtomicU64::new(0),
        recent: Mutex::new(VecDeque::new()),
    });
    let targets = Arc::new(targets);
    // The validator stopped for --catch-up is another process by the end:
    // its CPU time is not reported.
    let lagging = args.catch_up.then(|| targets.len() - 1);
    let cpu_before: Vec<Option<f64>> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| match Some(i) == lagging {
            true => None,
            false => t.pid.and_then(cpu_seconds),
        })
        .collect();
    let disk_before: Vec<Option<u64>> = targets
        .iter()
        .map(|t| t.data_dir.as_deref().map(dir_size))
        .collect();

    let stop_tracking = Arc::new(AtomicBool::new(false));
    let tracker = tokio::spawn(track(
        targets[0].client.clone(),
        ledger.clone(),
        stop_tracking.clone(),
    ));
    let stop_reading = Arc::new(AtomicBool::new(false));
    let readers = start_readers(args, &targets, &stop_reading);

    if args.catch_up {
        if let Some((name, Some(child))) = children.last_mut() {
            eprintln!("killing {name} (it catches up after the load)");
            child.kill().await?;
        }
    }
    let load_start = Instant::now();
    let progress = Progress::new(args.duration);
    let submit = submit_all(args, &targets, queues, &offsets, &ledger);
    tokio::pin!(submit);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            result = &mut submit => { result?; break; }
            _ = tick.tick() => {
                last = progress.update(&ledger, load_start, last);
            }
        }
    }
    let submit_elapsed = load_start.elapsed();
    stop_reading.store(true, Ordering::Relaxed);
    let reads = collect_readers(readers, submit_elapsed).await;

    // Drain: wait for the accepted transfers to commit.
    progress.draining();
    let mut last_progress = (
        Instant::now(),
        ledger.committed_count.load(Ordering::Relaxed),
    );
    while ledger.in_flight() > 0 && last_progress.0.elapsed() < DRAIN_QUIET {
        tick.tick().await;
        last = progress.update(&ledger, load_start, last);
        let committed = ledger.committed_count.load(Ordering::Relaxed);
        if committed != last_progress.1 {
            last_progress = (Instant::now(), committed);
        }
    }
    stop_tracking.store(true, Ordering::Relaxed);
    tracker.await??;
    progress.finish();

    let catch_up = match args.catch_up {
        true => Some(catch_up(&targets, children, &ledger).await?),
        false => None,
    };
    let (tips_agree, agreed_height) = compare_tips(&targets).await?;
    let nodes: Vec<NodeReport> = targets
        .iter()
        .zip(&cpu_before)
        .map(|(t, before)| NodeReport {
            name: t.name.clone(),
            rpc_url: t.url.clone(),
            cpu_seconds: match (before, t.pid.and_then(cpu_seconds)) {
                (Some(b), Some(a)) => Some(round2(a - b)),
                _ => None,
            },
            peak_rss_bytes: t.pid.and_then(|pid| proc_status_bytes(pid, "VmHWM:")),
            disk_bytes: t.data_dir.as_deref().map(dir_size),
        })
        .collect();
    let mut report = summarise(
        args,
        &ledger,
        submit_elapsed,
        nodes,
        &disk_before,
        reads,
        (tips_agree, agreed_height),
    );
    report.catch_up = catch_up.map(|(blocks, transfers, seconds)| CatchUp {
        blocks,
        transfers,
        seconds: round2(seconds),
        tps: round2(transfers as f64 / seconds),
        times_live: round2(transfers as f64 / seconds / report.committed_tps.max(1e-9)),
    });
    Ok(report)
}

fn rand_run_id() -> u64 {
    let mut bytes = [0u8; 8];
    // A clock-derived id is enough if the OS has no randomness to give.
    if getrandom::getrandom(&mut bytes).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(bytes)
}

/// Refusals a client is expected to retry: the node said "not now"
/// (`mempool_full`, with a `retry_after_ms` hint) or the transfer waits for
/// an earlier nonce of its sender that was refused so (`nonce_gap`).
const TRANSIENT: [&str; 2] = ["mempool_full", "nonce_gap"];

/// How long to wait before resending a `nonce_gap` refusal when the node
/// gave no hint in the same answer (its earlier nonce is resent after the
/// node's hint, about a block interval).
const NONCE_GAP_RETRY: Duration = Duration::from_millis(1_000);

/// Transfers to send, each with its global index.
type Batch = Vec<(u32, Vec<u8>)>;

/// Refused transfers waiting to be sent again, per node: when, and which.
type Retries = Vec<Mutex<VecDeque<(Instant, Batch)>>>;

/// Sends every node's queue: open loop at the target rate, or closed loop
/// within the window. Like a real client, transfers refused as transient
/// ([`TRANSIENT`]) are sent again after the node's `retry_after_ms` hint,
/// ahead of new ones and within the same rate; their latency counts from
/// their first send.
async fn submit_all(
    args: &BenchArgs,
    targets: &Arc<Vec<Target>>,
    queues: Vec<Vec<Vec<u8>>>,
    offsets: &[u32],
    ledger: &Arc<Ledger>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.duration;
    let nodes = queues.len();
    // Batches in order, per node.
    let mut batches: Vec<VecDeque<Batch>> = Vec::new();
    for (queue, offset) in queues.into_iter().zip(offsets) {
        let mut node_batches = VecDeque::new();
        let mut queue = (*offset..).zip(queue).peekable();
        while queue.peek().is_some() {
            node_batches.push_back(queue.by_ref().take(args.batch).collect());
        }
        batches.push(node_batches);
    }
    let retries: Arc<Retries> = Arc::new((0..nodes).map(|_| Mutex::default()).collect());
    // A few requests in flight per node keep each node's RPC busy without
    // reordering a sender's transfers by more than the nonce gap allows.
    let in_flight: Vec<Arc<Semaphore>> = (0..nodes).map(|_| Arc::new(Semaphore::new(4))).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut node = 0usize;
    let due = |node: usize, now: Instant| {
        let retries = retries[node].lock().unwrap_or_else(|p| p.into_inner());
        retries.front().is_some_and(|(at, _)| *at <= now)
    };
    while Instant::now() < deadline {
        // What may be sent now.
        let allowed = match (args.max, args.rate) {
            (true, _) => sent + args.window.saturating_sub(ledger.in_flight()),
            (false, rate) => {
                let rate = rate.unwrap_or(1_000);
                (rate as u128 * start.elapsed().as_micros() / 1_000_000) as u64
            }
        };
        let now = Instant::now();
        let work = |node: usize| !batches[node].is_empty() || due(node, now);
        let waiting_retries = retries
            .iter()
            .any(|r| !r.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
        if sent >= allowed || !(0..nodes).any(work) {
            if !(0..nodes).any(work) && !waiting_retries && tasks.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            while tasks.try_join_next().is_some() {}
            continue;
        }
        // The next node with work, round robin.
        let mut tries = 0;
        while !work(node) && tries < nodes {
            node = (node + 1) % nodes;
            tries += 1;
        }
        let permit = tokio::select! {
            permit = in_flight[node].clone().acquire_owned() => permit?,
            _ = tokio::time::sleep_until(deadline.into()) => break,
        };
        // Retries first: they hold the senders' earlier nonces.
        let retry = due(node, Instant::now())
            .then(|| {
                let mut retries = retries[node].lock().unwrap_or_else(|p| p.into_inner());
                retries.pop_front().map(|(_, batch)| batch)
            })
            .flatten();
        let Some(mut batch) = retry.or_else(|| batches[node].pop_front()) else {
            continue;
        };
        // Never more than allowed: the rest goes back to the front.
        let room = (allowed - sent) as usize;
        if batch.len() > room {
            let rest = batch.split_off(room);
            batches[node].push_front(rest);
        }
        sent += batch.len() as u64;
        let client = targets[node].client.clone();
        let ledger = ledger.clone();
        let retries = retries.clone();
        tasks.spawn(async move {
            let again = send_batch(&client, &ledger, batch).await;
            if let Some((after, batch)) = again {
                if Instant::now() + after < deadline {
                    let mut retries = retries[node].lock().unwrap_or_else(|p| p.into_inner());
                    retries.push_back((Instant::now() + after, batch));
                }
            }
            drop(permit);
        });
        node = (node + 1) % nodes;
        // Reap finished sends so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Sends one batch and records the answers; returns the transfers refused
/// as transient, and when to send them again.
async fn send_batch(client: &Client, ledger: &Ledger, batch: Batch) -> Option<(Duration, Batch)> {
    let now = ledger.now_us();
    for (i, _) in &batch {
        // Latency counts from the first send.
        let _ = ledger.sent_us[*i as usize].compare_exchange(
            0,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    ledger
        .submitted
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let bytes: Vec<Vec<u8>> = batch.iter().map(|(_, tx)| tx.clone()).collect();
    let mut again = Vec::new();
    let mut after = NONCE_GAP_RETRY;
    match client.submit_batch(&bytes).await {
        Ok(entries) => {
            for ((i, tx), entry) in batch.into_iter().zip(entries) {
                match entry {
                    BatchEntry::Admitted { status, .. } => {
                        ledger.accepted[i as usize].store(true, Ordering::Relaxed);
                        if status == TxState::Queued {
                            ledger.queued[i as usize].store(true, Ordering::Relaxed);
                        }
                        ledger.accepted_count.fetch_add(1, Ordering::Relaxed);
                    }
                    BatchEntry::Refused { error } => {
                        ledger.refuse(&error.reason, 1);
                        if TRANSIENT.contains(&error.reason.as_str()) {
                            // A nonce_gap waits as long as the refused
                            // nonce it follows.
                            if let Some(ms) = error.retry_after_ms {
                                after = after.max(Duration::from_millis(ms));
                            }
                            again.push((i, tx));
                        }
                    }
                }
            }
        }
        Err(e) => {
            let reason = match e.code() {
                Some(code) => format!("rpc error {code}"),
                None => "transport".to_owned(),
            };
            ledger.refuse(&reason, batch.len() as u64);
        }
    }
    // In send order (each sender's nonces in order), after the hint.
    again.sort_by_key(|(i, _)| *i);
    (!again.is_empty()).then_some((after, again))
}

/// Follows the chain on one node and marks each bench transfer committed
/// when its block is seen.
async fn track(client: Client, ledger: Arc<Ledger>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut seen = client.status().await?.height;
    while !stop.load(Ordering::Relaxed) {
        let height = client.status().await?.height;
        if height == seen {
            tokio::time::sleep(POLL).await;
            continue;
        }
        for h in seen + 1..=height {
            let block = client.block(BlockId::Height(h), false).await?;
            let now = ledger.now_us();
            // (An empty list reads as either form.)
            let ids: Vec<Hash> = match block.txs {
                BlockTxs::Ids(ids) => ids,
                BlockTxs::Full(txs) => txs.iter().map(|tx| tx.hash).collect(),
            };
            ledger.blocks.fetch_add(1, Ordering::Relaxed);
            ledger
                .block_txs
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            let mut recent = Vec::new();
            for id in ids {
                let Some(&i) = ledger.index.get(&id) else {
                    continue;
                };
                let i = i as usize;
                if ledger.committed_us[i].swap(now, Ordering::Relaxed) != 0 {
                    ledger.duplicated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // (It may be seen committed before its batch's answer
                // arrives; `summarise` counts from the final marks.)
                ledger.committed_count.fetch_add(1, Ordering::Relaxed);
                let sent = ledger.sent_us[i].load(Ordering::Relaxed);
                recent.push(now.saturating_sub(sent));
            }
            let mut window = ledger.recent.lock().unwrap_or_else(|p| p.into_inner());
            window.extend(recent);
            while window.len() > LIVE_WINDOW {
                window.pop_front();
            }
        }
        seen = height;
    }
    Ok(())
}

type ReaderHandle = tokio::task::JoinHandle<(u64, u64, Vec<u64>)>;

fn start_readers(
    args: &BenchArgs,
    targets: &Arc<Vec<Target>>,
    stop: &Arc<AtomicBool>,
) -> Vec<ReaderHandle> {
    let addresses: Arc<Vec<_>> = Arc::new(
        sender_keys("genesis", args.accounts.min(1_000))
            .iter()
            .map(Keypair::address)
            .collect(),
    );
    (0..args.readers)
        .map(|r| {
            let client = targets[0].client.clone();
            let stop = stop.clone();
            let addresses = addresses.clone();
            tokio::spawn(async move {
                let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match client.account(&addresses[i % addresses.len()]).await {
                        Ok(_) => {
                            ok += 1;
                            latencies.push(started.elapsed().as_micros() as u64);
                        }
                        Err(_) => errors += 1,
                    }
                    i += 7;
                }
                (ok, errors, latencies)
            })
        })
        .collect()
}

async fn collect_readers(readers: Vec<ReaderHandle>, elapsed: Duration) -> Option<Reads> {
    if readers.is_empty() {
        return None;
    }
    let count = readers.len();
    let (mut ok, mut errors, mut latencies) = (0, 0, Vec::new());
    for reader in readers {
        if let Ok((o, e, l)) = reader.await {
            ok += o;
            errors += e;
            latencies.extend(l);
        }
    }
    Some(Reads {
        readers: count,
        per_sec: round2(ok as f64 / elapsed.as_secs_f64()),
        errors,
        latency_ms: percentiles(&mut latencies),
    })
}

/// Percentiles of microsecond samples, in milliseconds.
fn percentiles(samples: &mut [u64]) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        round2(samples[i] as f64 / 1_000.0)
    };
    Latency {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Restarts the stopped (last) validator and waits until it holds the tip
/// the others have now; returns the blocks and transactions it fetched and
/// the seconds it took, counted from the restart.
async fn catch_up(
    targets: &[Target],
    children: &mut [(String, Option<Child>)],
    ledger: &Ledger,
) -> anyhow::Result<(u64, u64, f64)> {
    let lagging = &targets[targets.len() - 1];
    let tip = targets[0].client.status().await?.height;
    let home = lagging
        .data_dir
        .as_deref()
        .and_then(Path::parent)
        .context("the stopped validator's home is unknown")?;
    let exe = std::env::current_exe().context("cannot find the tally executable")?;
    eprintln!("restarting {} to catch up to height {tip}…", lagging.name);
    let started = Instant::now();
    let child = crate::devnet::spawn(&exe, home).await?;
    if let Some(slot) = children.last_mut() {
        slot.1 = Some(child);
    }
    let deadline = started + Duration::from_secs(600);
    loop {
        if let Ok(status) = lagging.client.status().await {
            if status.height >= tip {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "{} did not catch up within 10 minutes",
            lagging.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Everything committed during the run was missed; the tracker counted it.
    Ok((
        ledger.blocks.load(Ordering::Relaxed),
        ledger.block_txs.load(Ordering::Relaxed),
        seconds,
    ))
}

/// Whether every node holds the same block at the lowest of their tips.
async fn compare_tips(targets: &[Target]) -> anyhow::Result<(bool, u64)> {
    let mut lowest = u64::MAX;
    for target in targets {
        lowest = lowest.min(target.client.status().await?.height);
    }
    let mut hashes = Vec::new();
    for target in targets {
        hashes.push(
            target
                .client
                .block(BlockId::Height(lowest), false)
                .await?
                .hash,
        );
    }
    Ok((hashes.windows(2).all(|w| w[0] == w[1]), lowest))
}

fn summarise(
    args: &BenchArgs,
    ledger: &Ledger,
    submit_elapsed: Duration,
    nodes: Vec<NodeReport>,
    disk_before: &[Option<u64>],
    reads: Option<Reads>,
    (tips_agree, agreed_height): (bool, u64),
) -> Report {
    let mut latencies = Vec::new();
    let (mut first_sent, mut last_commit) = (u64::MAX, 0u64);
    let (mut accepted, mut committed, mut lost, mut queued_uncommitted) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..ledger.sent_us.len() {
        let sent = ledger.sent_us[i].load(Ordering::Relaxed);
        if sent == 0 {
            continue;
        }
        first_sent = first_sent.min(sent);
        let done = ledger.committed_us[i].load(Ordering::Relaxed);
        if ledger.accepted[i].load(Ordering::Relaxed) {
            accepted += 1;
            if done == 0 {
                match ledger.queued[i].load(Ordering::Relaxed) {
                    true => queued_uncommitted += 1,
                    false => lost += 1,
                }
            }
        }
        if done != 0 {
            committed += 1;
            last_commit = last_commit.max(done);
            latencies.push(done.saturating_sub(sent));
        }
    }
    let span = last_commit.saturating_sub(first_sent) as f64 / 1e6;
    let blocks = ledger.blocks.load(Ordering::Relaxed);
    let disk_growth: Vec<f64> = nodes
        .iter()
        .zip(disk_before)
        .filter_map(|(n, before)| Some(n.disk_bytes?.saturating_sub((*before)?) as f64))
        .collect();
    let submitted = ledger.submitted.load(Ordering::Relaxed);
    Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: machine(),
        mode: if args.max { "max" } else { "rate" },
        target_rate: (!args.max).then(|| args.rate.unwrap_or(1_000)),
        accounts: args.accounts,
        batch: args.batch,
        duration_s: round2(submit_elapsed.as_secs_f64()),
        submitted,
        accepted,
        committed,
        committed_tps: if span > 0.0 {
            round2(committed as f64 / span)
        } else {
            0.0
        },
        offered_tps: round2(submitted as f64 / submit_elapsed.as_secs_f64()),
        latency_ms: percentiles(&mut latencies),
        rejected: ledger
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        lost,
        queued_uncommitted,
        duplicated: ledger.duplicated.load(Ordering::Relaxed),
        blocks,
        avg_txs_per_block: if blocks > 0 {
            round2(ledger.block_txs.load(Ordering::Relaxed) as f64 / blocks as f64)
        } else {
            0.0
        },
        tips_agree,
        agreed_height,
        reads,
        catch_up: None,
        disk_bytes_per_tx: (!disk_growth.is_empty() && committed > 0).then(|| {
            round2(disk_growth.iter().sum::<f64>() / disk_growth.len() as f64 / committed as f64)
        }),
        nodes,
    }
}

fn print_report(r: &Report) {
    println!();
    println!(
        "tally bench: {} nodes, {} senders, {} mode{}, {:.1} s of load",
        r.nodes.len(),
        r.accounts,
        r.mode,
        r.target_rate
            .map(|rate| format!(" at {rate} tx/s"))
            .unwrap_or_default(),
        r.duration_s
    );
    println!("  submitted        {:>12}", r.submitted);
    println!("  accepted         {:>12}", r.accepted);
    println!("  committed        {:>12}", r.committed);
    println!("  committed tx/s   {:>12.0}", r.committed_tps);
    println!(
        "  latency ms       p50 {:.0} · p90 {:.0} · p99 {:.0} · max {:.0}",
        r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99, r.latency_ms.max
    );
    let rejected: u64 = r.rejected.values().sum();
    println!("  rejected         {rejected:>12}");
    for (reason, count) in &r.rejected {
        println!("    {reason:<22} {count}");
    }
    println!(
        "  lost             {:>12}  (acknowledged pending, never committed)",
        r.lost
    );
    println!(
        "  queued, stranded {:>12}  (acknowledged queued behind a nonce that was refused)",
        r.queued_uncommitted
    );
    println!("  duplicated       {:>12}", r.duplicated);
    println!(
        "  blocks           {:>12}  ({:.0} transactions each on average)",
        r.blocks, r.avg_txs_per_block
    );
    println!(
        "  nodes agree      {:>12}  (at height {})",
        if r.tips_agree { "yes" } else { "NO" },
        r.agreed_height
    );
    if let Some(reads) = &r.reads {
        println!(
            "  account_get/s    {:>12.0}  ({} readers, p50 {:.2} ms, p99 {:.2} ms, {} errors)",
            reads.per_sec, reads.readers, reads.latency_ms.p50, reads.latency_ms.p99, reads.errors
        );
    }
    if let Some(c) = &r.catch_up {
        println!(
            "  catch-up         {:>12.0}  tx/s ({:.1}× live: {} blocks, {} transactions in {:.1} s)",
            c.tps, c.times_live, c.blocks, c.transfers, c.seconds
        );
    }
    if let Some(disk) = r.disk_bytes_per_tx {
        println!("  disk bytes/tx    {disk:>12.0}");
    }
    println!(
        "  {:<14} {:>10} {:>14} {:>14}",
        "node", "cpu s", "peak RSS MB", "disk MB"
    );
    let mb = |b: Option<u64>| b.map_or("-".to_owned(), |b| format!("{:.1}", b as f64 / 1e6));
    for n in &r.nodes {
        println!(
            "  {:<14} {:>10} {:>14} {:>14}",
            n.name,
            n.cpu_seconds.map_or("-".to_owned(), |c| format!("{c:.1}")),
            mb(n.peak_rss_bytes),
            mb(n.disk_bytes)
        );
    }
}

/// The live progress line.
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn new(duration: Duration) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(duration.as_millis() as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix}{elapsed:>4} [{bar:24}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Progress { bar }
    }

    /// Redraws; returns the (time, committed) pair for the next rate.
    fn update(&self, ledger: &Ledger, start: Instant, last: (Instant, u64)) -> (Instant, u64) {
        let committed = ledger.committed_count.load(Ordering::Relaxed);
        let now = Instant::now();
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let rate = committed.saturating_sub(last.1) as f64 / secs;
        let p50 = {
            let recent = ledger.recent.lock().unwrap_or_else(|p| p.into_inner());
            let mut sample: Vec<u64> = recent.iter().copied().collect();
            percentiles(&mut sample).p50
        };
        self.bar.set_position(start.elapsed().as_millis() as u64);
        self.bar.set_message(format!(
            "submitted {} · committed {} · rejected {} · {:.0} tx/s · p50 {:.0} ms",
            ledger.submitted.load(Ordering::Relaxed),
            committed,
            ledger.rejected(),
            rate,
            p50
        ));
        (now, committed)
    }

    fn draining(&self) {
        self.bar.set_prefix("draining ");
    }

    fn finish(&self) {
        self.bar.finish();
    }
}

/// User plus system CPU seconds of a process, from /proc (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here,
    // in clock ticks of 1/100 s (USER_HZ is 100 on Linux).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A `/proc/PID/status` memory field in bytes (Linux), e.g. `VmRSS:`
/// (resident now) or `VmHWM:` (peak resident).
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Total size of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_size(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".to_owned(), |m| m.trim().to_owned());
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024);
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_bytes,
        os: std::env::consts::OS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_sender_count_makes_a_valid_genesis() {
        for accounts in [1, 256, 16_384, 100_000] {
            let mut genesis = devnet_genesis(4, BENCH_CHAIN_ID).unwrap();
            genesis
                .balances
                .extend(
                    sender_keys("genesis", accounts)
                        .iter()
                        .map(|key| GenesisBalance {
                            address: key.address(),
                            amount: sender_balance(accounts),
                        }),
                );
            assert!(genesis.validate().is_ok(), "{accounts} senders");
            // Enough for every transfer a run signs (amount 1 plus the fee).
            assert!(sender_balance(accounts) > 1_000_000_000);
        }
    }

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "1.5s", "10x", "-1s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1_000).collect();
        let p = percentiles(&mut samples);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(percentiles(&mut []).max, 0.0);
    }
}
