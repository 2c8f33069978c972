//! `tally-sim`: runs many seeds, or replays one with its trace.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tally_sim::{run, run_batch, FaultSet, Options, Outcome};

/// Deterministic simulation of Tally clusters under faults.
#[derive(Parser)]
#[command(name = "tally-sim", version)]
struct Args {
    /// Run this many seeds.
    #[arg(long, default_value_t = 100, conflicts_with = "seed")]
    seeds: u64,
    /// First seed of the batch (default: drawn from the clock, and printed).
    #[arg(long)]
    first: Option<u64>,
    /// Replay one seed and print its trace.
    #[arg(long)]
    seed: Option<u64>,
    /// Validators per cluster (default: the seed chooses 4, 7 or 10).
    #[arg(long)]
    validators: Option<usize>,
    /// Fault classes: all, none, or a list of network,crash,pause,skew,byzantine,clients,changes.
    #[arg(long, default_value = "all", value_parser = FaultSet::parse)]
    faults: FaultSet,
    /// Threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Stop starting new seeds after this many seconds.
    #[arg(long)]
    max_seconds: Option<u64>,
    /// With --seed: also print the host's own log lines, each under the
    /// node and simulated time it came from (a tracing filter, e.g.
    /// `tally_host=debug,tally_consensus=debug`).
    #[arg(long, requires = "seed")]
    log: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(n) = args.validators {
        if !(1..=100).contains(&n) {
            eprintln!("--validators must be between 1 and 100");
            return ExitCode::from(2);
        }
    }
    let template = Options {
        seed: 0,
        validators: args.validators,
        faults: args.faults,
        trace: args.seed.is_some(),
        sabotage: None,
        scenario: None,
    };
    if let Some(filter) = &args.log {
        // The span naming the node and time is the simulator's own.
        match tracing_subscriber::EnvFilter::try_new(format!("tally_sim=info,{filter}")) {
            Ok(filter) => tracing_subscriber::fmt()
                .with_env_filter(filter)
                .without_time()
                .with_ansi(false)
                .with_target(false)
                .init(),
            Err(e) => {
                eprintln!("--log {filter}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match args.seed {
        Some(seed) => replay(Options { seed, ..template }),
        None => batch(&args, &template),
    }
}

fn replay(options: Options) -> ExitCode {
    let outcome = run(&options);
    for line in &outcome.trace {
        println!("{line}");
    }
    println!();
    print_table(std::slice::from_ref(&outcome));
    println!("trace digest {}", outcome.digest);
    match &outcome.violation {
        None => ExitCode::SUCCESS,
        Some(v) => {
            println!("seed {} FAILED: {v}", outcome.seed);
            ExitCode::FAILURE
        }
    }
}

fn batch(args: &Args, template: &Options) -> ExitCode {
    let first = args.first.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos % 1_000_000_000
    });
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    println!(
        "seeds {first}..{} on {jobs} threads, faults {}",
        first + args.seeds,
        template.faults.to_arg()
    );
    let bar = ProgressBar::new(args.seeds);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} seeds  {msg}  [{elapsed_precise} / ~{eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let failures = Mutex::new(0u64);
    let started = Instant::now();
    let outcomes = run_batch(
        template,
        first..first + args.seeds,
        jobs,
        args.max_seconds.map(Duration::from_secs),
        &|o: &Outcome| {
            bar.inc(1);
            if let Some(v) = &o.violation {
                let replay = Options {
                    seed: o.seed,
                    ..template.clone()
                };
                let line = format!(
                    "seed {} FAILED: {v}\n  replay: {}",
                    o.seed,
                    replay.replay_command()
                );
                // A hidden bar (output is not a terminal) prints nothing.
                match bar.is_hidden() {
                    true => println!("{line}"),
                    false => bar.println(line),
                }
                if let Ok(mut f) = failures.lock() {
                    *f += 1;
                }
            }
            let failed = failures.lock().map_or(0, |f| *f);
            bar.set_message(format!("{failed} failed"));
        },
    );
    bar.finish_and_clear();
    print_table(&outcomes);
    let total = |f: &dyn Fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    if template.faults.changes {
        println!(
            "validator-set changes: {} voted for, {} completed, {} rotated nodes restarted",
            total(&|o| o.stats.changes_proposed),
            total(&|o| o.stats.changes_completed),
            total(&|o| o.stats.rotations_applied)
        );
    }
    let failed: Vec<u64> = outcomes
        .iter()
        .filter(|o| o.violation.is_some())
        .map(|o| o.seed)
        .collect();
    println!(
        "{} seeds in {:.1} s, {} failed{}",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        failed.len(),
        match failed.is_empty() {
            true => String::new(),
            false => format!(": {failed:?}"),
        }
    );
    match failed.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

/// One row per cluster size: runs, failures, and what the runs went through.
fn print_table(outcomes: &[Outcome]) {
    println!(
        "{:>10} {:>6} {:>6} {:>9} {:>8} {:>9} {:>8} {:>7} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "validators",
        "runs",
        "failed",
        "byzantine",
        "heights",
        "txs",
        "crashes",
        "splits",
        "dropped",
        "evidence",
        "recorded",
        "changes",
        "synced",
        "sim s"
    );
    let mut sizes: Vec<usize> = outcomes.iter().map(|o| o.validators).collect();
    sizes.sort();
    sizes.dedup();
    for n in sizes {
        let rows: Vec<&Outcome> = outcomes.iter().filter(|o| o.validators == n).collect();
        let sum = |f: &dyn Fn(&Outcome) -> u64| rows.iter().map(|o| f(o)).sum::<u64>();
        println!(
            "{:>10} {:>6} {:>6} {:>9} {:>8} {:>9} {:>8} {:>7} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8}",
            n,
            rows.len(),
            rows.iter().filter(|o| o.violation.is_some()).count(),
            sum(&|o| o.byzantine as u64),
            sum(&|o| o.height),
            sum(&|o| o.txs as u64),
            sum(&|o| o.stats.crashes),
            sum(&|o| o.stats.partitions),
            sum(&|o| o.stats.dropped),
            sum(&|o| o.stats.evidence),
            sum(&|o| o.stats.evidence_on_chain),
            sum(&|o| o.stats.changes_completed),
            sum(&|o| o.stats.synced_blocks),
            sum(&|o| o.sim_ms) / 1_000,
        );
    }
}
