//! What a signature check costs alone and in batches, on this machine:
//! `cargo run --release -p tally-ledger --example verify_cost [KEYS]`.

use std::time::Instant;

use tally_ledger::{verify_batch, Hash, Keypair};

fn main() {
    let keys: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let n = 4096;
    let signers: Vec<Keypair> = (0..keys)
        .map(|i| Keypair::from_seed(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes()))
        .collect();
    let items: Vec<_> = (0..n)
        .map(|i| {
            let key = &signers[i % keys];
            let message = Hash(*blake3::hash(&(i as u64).to_be_bytes()).as_bytes());
            (key.address(), message, key.sign(&message))
        })
        .collect();
    // Warm the key cache as a running node would have it.
    for (a, m, s) in &items {
        assert!(s.verify(a, m));
    }
    for round in 0..3 {
        let start = Instant::now();
        for (a, m, s) in &items {
            assert!(s.verify(a, m));
        }
        let single = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        print!("round {round}: single {single:.1} µs");
        for size in [16, 64, 128, 256, 1024] {
            let start = Instant::now();
            for chunk in items.chunks(size) {
                assert!(verify_batch(chunk));
            }
            let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
            print!(" · batch {size} {per:.1} µs");
        }
        println!();
    }
}
