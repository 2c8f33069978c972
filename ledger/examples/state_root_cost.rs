//! What computing the state root costs per block, in memory: a tree of
//! ACCOUNTS accounts, then blocks that each change CHANGES accounts (a
//! transfer changes its sender, its recipient and the proposer). Prints the
//! median time of `update_tree` per block and per changed account. The
//! node's tree lives in RocksDB, whose reads add to this; docs/BENCHMARKS.md
//! gives both.
//!
//! `cargo run --release -p tally-ledger --example state_root_cost [ACCOUNTS] [CHANGES]`

use std::time::Instant;

use tally_ledger::state_tree::{update_tree, MemoryTree};
use tally_ledger::{Account, Address, Hash};

fn address(i: u64) -> Address {
    Address(Hash::digest(&i.to_le_bytes()).0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let accounts: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let changes: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3_000);
    let blocks = 20u64;

    let genesis: Vec<(Address, Account)> = (0..accounts)
        .map(|i| {
            let account = Account {
                balance: 1_000_000,
                nonce: 0,
            };
            (address(i), account)
        })
        .collect();
    let mut tree = MemoryTree::default();
    let start = Instant::now();
    let update = update_tree(&tree, 0, &genesis).expect("the genesis tree builds");
    tree.apply(&update, 0).expect("applies");
    println!(
        "genesis tree of {accounts} accounts: {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );

    let mut times = Vec::new();
    for version in 1..=blocks {
        let mut changed: Vec<(Address, Account)> = (0..changes)
            .map(|i| {
                let which = (i * 7_919 + version * 104_729) % accounts;
                let account = Account {
                    balance: 1_000_000 - version,
                    nonce: version,
                };
                (address(which), account)
            })
            .collect();
        changed.sort_by_key(|(a, _)| *a);
        changed.dedup_by_key(|(a, _)| *a);
        let start = Instant::now();
        let update = update_tree(&tree, version, &changed).expect("the tree updates");
        times.push(start.elapsed().as_secs_f64());
        tree.apply(&update, version.saturating_sub(10))
            .expect("applies");
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{changes} changed accounts per block: median {:.1} ms per block, {:.2} µs per account ({blocks} blocks)",
        median * 1e3,
        median * 1e6 / changes as f64
    );
}
