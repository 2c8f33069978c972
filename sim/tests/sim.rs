//! The cluster simulation as part of the test suite: fixed seeds (every seed
//! that ever failed stays here), determinism, proof that the simulation
//! finds bugs planted in the production host, the one-silent-validator
//! scenario, and a time-bounded batch of fresh random seeds.

use std::time::Duration;

use tally_sim::{run, run_batch, FaultSet, Options, Outcome, Sabotage, Scenario};

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
    (
        34,
        "deadlock: a validator restarted in a later round never sent its \
         earlier round's precommit again, and the peers still in that round \
         waited for it (the signing record keeps it)",
    ),
    (
        9_187,
        "evidence lost: a node whose disk was failing held back the evidence \
         of a double vote with its other actions (evidence is kept at once)",
    ),
    (
        20_431,
        "deadlock: as seed 34, but the peers still in the earlier round also \
         lacked the restarted validator's prevote of it (the signing record \
         keeps both votes of the earlier round)",
    ),
];

/// Seeds that once failed with a given validator count and fault set.
const REGRESSIONS_WITH: &[(u64, usize, &str, &str)] = &[(
    271,
    7,
    "byzantine,pause",
    "livelock: validators that got an equivocator's other prevote first \
     lacked its prevote of the polka, and the value re-proposed in every \
     round never gathered 2f+1 prevotes; rounds timed out one after another, \
     so no position stood still long enough to count as stuck (a height not \
     decided in time now counts as stuck, and the whole polka is relayed)",
)];

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
        // Found before validator-set changes: their fault classes.
        let options = Options {
            faults: FaultSet::BEFORE_CHANGES,
            ..Options::seed(*seed)
        };
        let outcome = run(&options);
        assert!(
            outcome.violation.is_none(),
            "seed {seed} ({found}) fails again: {:?}",
            outcome.violation
        );
    }
    for (seed, validators, faults, found) in REGRESSIONS_WITH {
        let options = Options {
            validators: Some(*validators),
            faults: FaultSet::parse(faults).unwrap_or_else(|e| panic!("{e}")),
            ..Options::seed(*seed)
        };
        let outcome = run(&options);
        assert!(
            outcome.violation.is_none(),
            "seed {seed} at {validators} validators, faults {faults} ({found}) fails again: {:?}",
            outcome.violation
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

/// How the checker words a double signature: of a vote, or of a proposal.
const DOUBLE_SIGNING: &[&str] = &["signed two", "proposed two"];

/// Most seeds a planted bug may take to be found.
const SEEDS_TO_FIND_A_BUG: u64 = 80;

/// The invariants are not vacuous, and the simulation runs the code that
/// ships: each bug planted inside the host (`tally_host::Sabotage`) is
/// found within a bounded number of seeds, by the invariant it breaks.
#[test]
fn the_simulator_finds_each_bug_planted_in_the_host() {
    for (sabotage, faults, validators, expect) in [
        (Sabotage::SkipSignRecord, "crash", 4, DOUBLE_SIGNING),
        (Sabotage::VoteBeforeRecord, "crash", 4, DOUBLE_SIGNING),
        (Sabotage::AcceptAnyBlock, "byzantine", 4, &["invalid"]),
        (
            Sabotage::GenesisSetForever,
            "changes",
            4,
            // Nodes that count votes by the genesis set either certify a
            // block the set of its height did not sign, or stall once the
            // genesis set has no quorum left among the live validators.
            &["certificate for the set", "liveness"],
        ),
        (
            Sabotage::CommitUncheckedCertificate,
            "byzantine,crash",
            4,
            &["certificate"],
        ),
    ] {
        let faults = FaultSet::parse(faults).unwrap_or_else(|e| panic!("{e}"));
        let caught = (0..SEEDS_TO_FIND_A_BUG).find_map(|seed| {
            let outcome = run(&Options {
                validators: Some(validators),
                faults,
                sabotage: Some(sabotage),
                ..Options::seed(seed)
            });
            outcome.violation.map(|v| (seed, v))
        });
        let (seed, violation) = caught.unwrap_or_else(|| {
            panic!("{sabotage:?} went unnoticed for {SEEDS_TO_FIND_A_BUG} seeds")
        });
        println!("{sabotage:?} found at seed {seed}: {violation}");
        assert!(
            expect.iter().any(|e| violation.contains(e)),
            "{sabotage:?} (seed {seed}): {violation}"
        );
    }
}

/// The longest a height may take in the simulation while one validator of
/// four is silent: the propose timeout (1 s here) and the time to vote.
const LONGEST_GAP_WHILE_PAUSED_MS: u64 = 1_500;

fn pause_each(seed: u64, sabotage: Option<Sabotage>) -> Outcome {
    let options = Options {
        validators: Some(4),
        faults: FaultSet::NONE,
        scenario: Some(Scenario {
            pause_ms: 9_000,
            between_ms: 1_000,
            rounds: 2,
        }),
        sabotage,
        ..Options::seed(seed)
    };
    let outcome = run(&options);
    check(&outcome, &options);
    outcome
}

/// Each validator of four in turn is paused for 9 s (twice), the next one
/// a second after the last resumed, on a network that suppresses duplicate
/// gossip and drops what waits too long for a peer that does not read, as
/// gossipsub does: the other three commit every height within the propose
/// timeout plus the time to vote. Without the catch-up exchange
/// (`Sabotage::NoCatchup`) the same scenario stalls, so the simulation does
/// see this class of bug.
#[test]
fn one_silent_validator_does_not_stall_the_other_three() {
    let mut worst = 0;
    for seed in 0..8 {
        let gap = pause_each(seed, None)
            .longest_gap_while_paused_ms
            .unwrap_or(u64::MAX);
        assert!(
            gap <= LONGEST_GAP_WHILE_PAUSED_MS,
            "seed {seed}: the chain stood still {gap} ms with one validator paused"
        );
        worst = worst.max(gap);
    }
    println!("longest gap while one validator is paused: {worst} ms");
    let without = (0..8)
        .map(|seed| {
            pause_each(seed, Some(Sabotage::NoCatchup))
                .longest_gap_while_paused_ms
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    println!("the same without the catch-up exchange: {without} ms");
    assert!(
        without > LONGEST_GAP_WHILE_PAUSED_MS,
        "without the catch-up exchange the longest gap was {without} ms: the scenario does not \
         exercise it"
    );
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

/// Byzantine validators that equivocate send each half of the cluster one
/// of the two messages: the evidence reaches a block only because honest
/// nodes pass on what they caught. Runs of such clusters record it on chain.
#[test]
fn equivocation_evidence_reaches_the_chain() {
    let faults = FaultSet::parse("byzantine").unwrap_or_else(|e| panic!("{e}"));
    let (mut caught, mut recorded) = (0, 0);
    for seed in 0..12 {
        let options = Options {
            validators: Some(4),
            faults,
            ..Options::seed(seed)
        };
        let outcome = run(&options);
        check(&outcome, &options);
        caught += outcome.stats.evidence;
        recorded += outcome.stats.evidence_on_chain;
    }
    assert!(caught > 0, "no equivocation was caught in 12 runs");
    assert!(
        recorded > 0,
        "{caught} pieces of evidence caught, none recorded on chain"
    );
}

/// Validator-set changes by vote: operators vote adds of spare nodes,
/// removals, power changes and key rotations (restarting the rotated
/// node with its new key). With crashes and Byzantine validators of the
/// set in force (a removed one keeps sending, an equivocator always
/// equivocates at the first height of a new set) every run holds every
/// invariant — certificates valid for the set of their height, the same
/// validator state on every honest node, the guard kept by every completed
/// change, liveness after the faults — and the runs complete changes,
/// rotations included. (The random batch draws changes too, with
/// partitions and pauses besides.)
#[test]
fn validator_set_changes_hold_every_invariant() {
    let faults = FaultSet::parse("changes,crash,byzantine").unwrap_or_else(|e| panic!("{e}"));
    let (mut completed, mut rotations) = (0, 0);
    for seed in 0..24 {
        let options = Options {
            faults,
            ..Options::seed(seed)
        };
        let outcome = run(&options);
        check(&outcome, &options);
        completed += outcome.stats.changes_completed;
        rotations += outcome.stats.rotations_applied;
    }
    assert!(
        completed >= 10,
        "only {completed} changes completed in 24 runs"
    );
    assert!(
        rotations >= 3,
        "only {rotations} rotated validators restarted in 24 runs"
    );
}
