//! Faults: partitions (a random split, the next proposer cut off, or a
//! one-way cut), crashes (at once, or partway through a call's effects),
//! pauses, and the scenario's scheduled pauses; and their end.

use std::sync::atomic::Ordering;

use rand::Rng;

use crate::world::{Event, Sim, LIVENESS_BLOCKS, LIVENESS_MS};

impl Sim {
    pub(crate) fn inject_fault(&mut self) {
        let f = self.opts.faults;
        let mut kinds = Vec::new();
        if f.network {
            kinds.push(0);
        }
        if f.crash {
            kinds.push(1);
        }
        if f.pause {
            kinds.push(2);
        }
        if kinds.is_empty() {
            return;
        }
        let n = self.nodes.len();
        match kinds[self.rng.gen_range(0..kinds.len())] {
            0 => self.partition(),
            1 => {
                let i = self.rng.gen_range(0..n);
                if self.nodes[i].up {
                    match self.rng.gen_range(0..4) {
                        0 | 1 => self.crash(i),
                        2 => {
                            self.log(format!(
                                "node {i} will crash in the middle of its next step"
                            ));
                            self.nodes[i].crash_pending = true;
                        }
                        _ => {
                            // The process lives on, but its records and
                            // blocks cannot be written for a while.
                            let ms = self.rng.gen_range(200..=3_000);
                            self.nodes[i].disk_failing.store(true, Ordering::Relaxed);
                            self.stats.disk_failures += 1;
                            self.log(format!("node {i}: disk failing for {ms} ms"));
                            self.schedule(ms, Event::DiskRecovers { node: i });
                        }
                    }
                }
            }
            _ => {
                let i = self.rng.gen_range(0..n);
                let ms = match self.rng.gen_bool(0.2) {
                    // Long enough for gossip to give up on the paused peer.
                    true => self.rng.gen_range(4_000..=10_000),
                    false => self.rng.gen_range(100..=4_000),
                };
                self.nodes[i].paused_until = self.now + ms;
                self.stats.pauses += 1;
                self.log(format!("node {i} paused for {ms} ms"));
            }
        }
    }

    fn partition(&mut self) {
        let n = self.nodes.len();
        let (group, kind): (Vec<usize>, &str) = match self.rng.gen_range(0..3) {
            0 => {
                // The proposer of the next height's first round, alone.
                let height = self.checker.height() + 1;
                let round = self.nodes[0]
                    .host
                    .as_ref()
                    .map_or(0, |h| h.consensus().round());
                let set = self
                    .checker
                    .set_at(height)
                    .unwrap_or_else(|| self.chain.validators.clone());
                let proposer = tally_consensus::proposer(&set, height, round);
                let i = self.nodes.iter().position(|nd| nd.address == proposer);
                (i.into_iter().collect(), "proposer isolated")
            }
            1 => {
                let size = self.rng.gen_range(1..n);
                let mut all: Vec<usize> = (0..n).collect();
                for k in 0..size {
                    let j = self.rng.gen_range(k..n);
                    all.swap(k, j);
                }
                all.truncate(size);
                all.sort();
                (all, "split")
            }
            _ => {
                let i = self.rng.gen_range(0..n);
                (vec![i], "one-way (cannot send)")
            }
        };
        let one_way = kind.starts_with("one-way");
        let mut links = Vec::new();
        for a in 0..n {
            for b in 0..n {
                let (ina, inb) = (group.contains(&a), group.contains(&b));
                if a != b && ina && !inb {
                    links.push((a, b));
                    if !one_way {
                        links.push((b, a));
                    }
                }
            }
        }
        let id = self.next_partition;
        self.next_partition += 1;
        self.partitions.insert(id, links);
        let ms = self.rng.gen_range(500..=6_000);
        self.schedule(ms, Event::Heal { partition: id });
        self.stats.partitions += 1;
        self.log(format!("partition {id}: {kind} {group:?} for {ms} ms"));
    }

    /// The process dies: memory (consensus state, mempool, timers) is lost;
    /// the store and the signing records survive.
    pub(crate) fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(host) = node.host.take() {
            node.synced_before += host.synced_blocks();
        }
        node.evidence_before += node.chain.evidence_kept();
        node.up = false;
        node.crash_pending = false;
        node.epoch += 1;
        self.stats.crashes += 1;
        let down = self.rng.gen_range(200..=5_000);
        self.log(format!("node {i} crashed, down for {down} ms"));
        self.schedule(down, Event::Restart { node: i });
    }

    pub(crate) fn end_faults(&mut self) {
        self.faulty = false;
        self.partitions.clear();
        for i in 0..self.nodes.len() {
            self.nodes[i].crash_pending = false;
            self.nodes[i].disk_failing.store(false, Ordering::Relaxed);
            self.nodes[i].paused_until = self.nodes[i].paused_until.min(self.now);
            if !self.nodes[i].up {
                self.boot(i);
            }
        }
        let target = self.checker.height() + LIVENESS_BLOCKS;
        self.target = Some(target);
        self.log(format!(
            "faults stopped; every honest node must reach height {target} within {LIVENESS_MS} ms"
        ));
        self.schedule(LIVENESS_MS, Event::Deadline);
    }

    /// The scenario's pause number `index`: one validator after another
    /// stops for the scenario's length, one at a time, with the network
    /// otherwise healthy.
    pub(crate) fn scenario_pause(&mut self, index: u64) {
        let Some(scenario) = self.opts.scenario else {
            return;
        };
        let n = self.nodes.len();
        if index >= scenario.pauses(n) {
            return;
        }
        let i = (index as usize) % n;
        self.nodes[i].paused_until = self.now + scenario.pause_ms;
        self.pause_windows
            .push((i, self.now, self.now + scenario.pause_ms));
        self.stats.pauses += 1;
        self.log(format!(
            "scenario: node {i} paused for {} ms",
            scenario.pause_ms
        ));
        self.schedule(
            scenario.every_ms(),
            Event::ScenarioPause { index: index + 1 },
        );
    }

    // ----- clients -----
}
