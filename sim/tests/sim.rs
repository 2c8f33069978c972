//! The cluster simulation as part of the test suite: fixed seeds (every seed
//! that ever failed stays here), determinism, proof that the checker
//! catches real bugs, and a time-bounded batch of fresh random seeds.

use std::time::Duration;

use tally_sim::{run, run_batch, FaultSet, Options, Outcome, Sabotage};

/// Seeds that once failed, with what they found. Each must pass forever.
const REGRESSIONS: &[(u64, &str)] = &[
    (
        6,
        "livelock: a valid value re-proposed with its valid round was never \
         accepted by validators that lost that round's prevotes (the polka now \
         travels with the proposal)",
    ),
    (
        9,
        "livelock: an equivocator's prevote for the polka value was not counted \
         where its other prevote arrived first (a validator now counts for each \
         value it signed, up to a bound)",
    ),
    (
        89,
        "livelock: votes lost before a restart were never sent again; a round \
         waited forever for prevotes held only in peers' memory (stuck nodes now \
         relay the votes of the current round)",
    ),
    (
        638_145_886,
        "deadlock: validators restarted after their nil precommits could not \
         send their prevotes again, and a peer still in the prevote step never \
         saw 2f+1 prevotes (the signing record now keeps the round's prevote)",
    ),
    (
        638_145_684,
        "the same deadlock with validators locked in round 0",
    ),
];

fn check(outcome: &Outcome, options: &Options) {
    assert!(
        outcome.violation.is_none(),
        "seed {} failed: {}\nreplay: {}",
        outcome.seed,
        outcome.violation.as_deref().unwrap_or_default(),
        options.replay_command()
    );
}

#[test]
fn every_seed_that_ever_failed_passes() {
    for (seed, found) in REGRESSIONS {
        let options = Options::seed(*seed);
        let outcome = run(&options);
        assert!(
            outcome.violation.is_none(),
            "seed {seed} ({found}) fails again"
        );
    }
}

#[test]
fn fixed_seeds_hold_every_invariant_at_4_7_and_10_validators() {
    for n in [4, 7, 10] {
        for seed in 0..6 {
            let options = Options {
                validators: Some(n),
                ..Options::seed(seed)
            };
            let outcome = run(&options);
            check(&outcome, &options);
            assert!(
                outcome.height >= 2,
                "seed {seed}: the chain grew: {outcome:?}"
            );
        }
    }
}

#[test]
fn a_fault_free_cluster_commits_every_client_transaction_it_admitted() {
    let options = Options {
        validators: Some(4),
        faults: FaultSet::NONE,
        ..Options::seed(42)
    };
    let outcome = run(&options);
    check(&outcome, &options);
    assert_eq!(outcome.stats.crashes + outcome.stats.partitions, 0);
    assert!(outcome.txs > 0, "{outcome:?}");
}

#[test]
fn a_seed_replays_to_the_same_trace_digest() {
    let options = Options::seed(7);
    let (a, b) = (run(&options), run(&options));
    assert_eq!(a.digest, b.digest);
    assert_eq!((a.height, a.txs, a.sim_ms), (b.height, b.txs, b.sim_ms));
    let other = run(&Options::seed(8));
    assert_ne!(
        a.digest, other.digest,
        "different seeds, different histories"
    );
    let traced = run(&Options {
        trace: true,
        ..options
    });
    assert_eq!(traced.digest, a.digest, "tracing does not change the run");
    assert!(traced.trace.iter().any(|l| l.contains("committed first")));
}

/// The invariants are not vacuous: a node that forgets its signing record
/// on restart, or accepts any block, is caught within a few seeds.
#[test]
fn the_checker_catches_a_broken_node() {
    for (sabotage, expect) in [
        (Sabotage::ForgetSignState, "signed two"),
        (Sabotage::AcceptAnyBlock, "invalid"),
    ] {
        let caught = (0..40).find_map(|seed| {
            let faults = match sabotage {
                Sabotage::ForgetSignState => FaultSet::parse("crash").ok()?,
                Sabotage::AcceptAnyBlock => FaultSet::parse("byzantine").ok()?,
            };
            let outcome = run(&Options {
                validators: Some(4),
                faults,
                sabotage: Some(sabotage),
                ..Options::seed(seed)
            });
            outcome.violation
        });
        let violation = caught.unwrap_or_else(|| panic!("{sabotage:?} went unnoticed"));
        assert!(violation.contains(expect), "{sabotage:?}: {violation}");
    }
}

/// Fresh seeds every run (printed, so a failure can be replayed): at least
/// a few hundred, within a time budget.
#[test]
fn a_random_batch_of_seeds_holds_every_invariant() {
    let first = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64 % 1_000_000_000);
    let seeds: u64 = std::env::var("TALLY_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let template = Options::seed(0);
    println!("random batch: seeds {first}..{}", first + seeds);
    let outcomes = run_batch(
        &template,
        first..first + seeds,
        2,
        Some(Duration::from_secs(240)),
        &|_| {},
    );
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.violation.as_ref().map(|v| {
                let replay = Options {
                    seed: o.seed,
                    ..template.clone()
                };
                format!(
                    "seed {}: {v}\n  replay: {}",
                    o.seed,
                    replay.replay_command()
                )
            })
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    println!("{} random seeds passed", outcomes.len());
    assert!(
        outcomes.len() >= 100,
        "too few seeds ran: {}",
        outcomes.len()
    );
}
