//! Validator-set changes, made the way operators make them: from time to
//! time during the faults, validators holding a quorum of the set in force
//! vote (with their keys, as transactions to a random node) for one change
//! — add a spare node's key, remove a validator, change one's power, or
//! rotate one's key — and a rotated validator's node is restarted with its
//! new key once the rotation is in force. A validator removed while
//! Byzantine keeps sending votes signed with its key.
//!
//! Changes draw from a generator of their own (seeded from the run's seed),
//! so a run without them is the run it was before they existed.
//!
//! A change is only proposed when, after it, the Byzantine validators hold
//! less than a third of the power (the simulation keeps to at most f
//! Byzantine validators of the set in force); whether it completes is the
//! chain's business (votes are refused by the guard, expire, or lose
//! their quorum to crashes).

use rand::seq::SliceRandom;
use rand::Rng;
use tally_ledger::{
    devnet_key, Hash, Keypair, SignedVote, Transaction, ValidatorChange, ValidatorSet, Vote,
    VoteKind,
};

use crate::byzantine::To;
use crate::world::{Sim, Topic};

/// Spare nodes: full nodes at the start, with keys a change may add.
pub(crate) const SPARES: usize = 2;

/// A key rotation voted for: which node, its new key, the change, and
/// whether the other validators voted yet (they can only once the
/// rotated validator's own vote has opened the change on chain).
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    pub(crate) node: usize,
    pub(crate) new_key: Keypair,
    pub(crate) change: ValidatorChange,
    pub(crate) others_voted: bool,
    /// The reference height when it was proposed.
    pub(crate) proposed_at: u64,
}

impl Sim {
    /// Maybe proposes a change and has a quorum vote for it.
    pub(crate) fn propose_change(&mut self) {
        let Some(state) = self.checker.validator_state() else {
            return;
        };
        // One change at a time, and none while a rotated node awaits its
        // restart: operators do not pile changes up.
        if !state.open.is_empty() || state.current != state.next || !self.rotations.is_empty() {
            return;
        }
        let set = state.current.clone();
        let Some(change) = self.draw_change(&set) else {
            return;
        };
        let Some(after) = preview(&set, &change) else {
            return;
        };
        let liar_power: u64 = after
            .validators()
            .iter()
            .filter(|v| self.node_of(&v.address).is_some_and(|i| !self.honest(i)))
            .map(|v| v.power)
            .sum();
        if liar_power * 3 >= after.total_power() {
            return;
        }
        // Voters of the set in force, in random order until they hold a
        // quorum; a rotation is opened by the rotated validator itself.
        let mut voters: Vec<usize> = set
            .validators()
            .iter()
            .filter_map(|v| self.node_of(&v.address))
            .collect();
        voters.shuffle(&mut self.change_rng);
        if let ValidatorChange::Rotate { address, .. } = &change {
            if let Some(at) = voters
                .iter()
                .position(|i| self.nodes[*i].address == *address)
            {
                let rotated = voters.remove(at);
                voters.insert(0, rotated);
            }
        }
        self.log(format!("operators vote for {change:?}"));
        self.stats.changes_proposed += 1;
        if let ValidatorChange::Rotate { new_key, .. } = &change {
            // The rotated validator opens it; the others vote once it is
            // open on chain (`tend_validators`).
            voters.truncate(1);
            let node = self.node_of_change(&change);
            if let (Some(node), Some(key)) = (node, self.rotation_keys.remove(new_key)) {
                self.rotations.push(Rotation {
                    node,
                    new_key: key,
                    change: change.clone(),
                    others_voted: false,
                    proposed_at: state.height,
                });
            }
        }
        self.vote(&set, &change, &voters);
    }

    /// `voters` (in order, until they hold a quorum of `set`) vote for
    /// `change` through one random node that is up.
    fn vote(&mut self, set: &ValidatorSet, change: &ValidatorChange, voters: &[usize]) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up)
            .collect();
        let Some(&via) = up.get(self.change_rng.gen_range(0..up.len().max(1))) else {
            return;
        };
        let mut power = 0;
        for &voter in voters {
            if power >= set.quorum_power() {
                break;
            }
            power += set.power_of(&self.nodes[voter].address).unwrap_or(0);
            let key = self.nodes[voter].key.clone();
            let chain = self.nodes[via].chain.clone();
            let account = chain.store().account(&key.address()).unwrap_or_default();
            let nonce = chain.next_nonce(&key.address(), &account);
            let vote = Transaction::validator_vote(
                self.chain.genesis.chain_id.clone(),
                key.address(),
                change.clone(),
                None,
                0,
                nonce,
            )
            .sign(&key, &self.chain.genesis_hash);
            if let Some(why) = self.submit(via, &vote.encode()) {
                self.log(format!(
                    "node {via} refused the vote of node {voter}: {why}"
                ));
            }
        }
    }

    /// One change to the set, drawn at random, or none that makes sense.
    fn draw_change(&mut self, set: &ValidatorSet) -> Option<ValidatorChange> {
        let members: Vec<usize> = set
            .validators()
            .iter()
            .filter_map(|v| self.node_of(&v.address))
            .collect();
        let outsiders: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.honest(*i) && !members.contains(i))
            .collect();
        let pick = |rng: &mut rand_chacha::ChaCha8Rng, of: &[usize]| of.choose(rng).copied();
        match self.change_rng.gen_range(0..4) {
            0 => {
                let i = pick(&mut self.change_rng, &outsiders)?;
                let name = format!("node-{i}");
                if set.validators().iter().any(|v| v.name == name) {
                    return None;
                }
                Some(ValidatorChange::Add {
                    name,
                    address: self.nodes[i].address,
                    power: 1,
                    peer: format!("/ip4/127.0.0.1/tcp/{}/p2p/sim-node-{i}", 7800 + i),
                })
            }
            1 => {
                let i = pick(&mut self.change_rng, &members)?;
                Some(ValidatorChange::Remove {
                    address: self.nodes[i].address,
                })
            }
            2 => {
                let i = pick(&mut self.change_rng, &members)?;
                // One step up or down, within 1 to 3.
                let old = set.power_of(&self.nodes[i].address)?;
                let power = match self.change_rng.gen_bool(0.5) {
                    true => old + 1,
                    false => old.saturating_sub(1),
                };
                (1..=3).contains(&power).then(|| ValidatorChange::SetPower {
                    address: self.nodes[i].address,
                    power,
                })
            }
            _ => {
                let honest: Vec<usize> = members
                    .iter()
                    .copied()
                    .filter(|i| self.honest(*i))
                    .collect();
                let i = pick(&mut self.change_rng, &honest)?;
                self.next_rotation += 1;
                let new_key = devnet_key(&format!("sim-rotated-{}", self.next_rotation));
                let change = ValidatorChange::rotate(
                    self.nodes[i].address,
                    &new_key,
                    &self.chain.genesis_hash,
                );
                if let ValidatorChange::Rotate { new_key: addr, .. } = &change {
                    self.rotation_keys.insert(*addr, new_key);
                }
                Some(change)
            }
        }
    }

    /// What operators do between changes: restart a rotated validator's
    /// node with its new key once the rotation is in force (or forget it if
    /// it failed), and let removed Byzantine validators keep talking.
    pub(crate) fn tend_validators(&mut self) {
        let Some(state) = self.checker.validator_state() else {
            return;
        };
        let tip = self.checker.height();
        let mut still = Vec::new();
        for mut rotation in std::mem::take(&mut self.rotations) {
            let id = rotation.change.id();
            let finished = state.recent.iter().find(|o| o.id == id);
            let open = state.open.iter().any(|c| c.id == id);
            match finished.map(|o| &o.result) {
                Some(tally_ledger::ChangeResult::Completed { effective_height })
                    if tip + 1 >= *effective_height =>
                {
                    self.restart_with(rotation.node, rotation.new_key);
                }
                Some(tally_ledger::ChangeResult::Completed { .. }) => still.push(rotation),
                Some(_) => {}
                None if open && !rotation.others_voted => {
                    let set = state.current.clone();
                    let mut voters: Vec<usize> = set
                        .validators()
                        .iter()
                        .filter_map(|v| self.node_of(&v.address))
                        .filter(|i| *i != rotation.node)
                        .collect();
                    voters.shuffle(&mut self.change_rng);
                    self.vote(&set, &rotation.change, &voters);
                    rotation.others_voted = true;
                    still.push(rotation);
                }
                None if open => still.push(rotation),
                // Not opened yet: its vote may still be on its way.
                None if !rotation.others_voted && state.height < rotation.proposed_at + 20 => {
                    still.push(rotation)
                }
                // Lost (its votes were dropped with a crashed mempool, say).
                None => {}
            }
        }
        self.rotations = still;
        let Some(set) = self.checker.set_at(tip + 1) else {
            return;
        };
        for i in 0..self.nodes.len() {
            let removed_liar = !self.honest(i)
                && self.nodes[i].up
                && i < self.profile.validators
                && set.power_of(&self.nodes[i].address).is_none();
            if removed_liar {
                let vote = Vote {
                    chain_id: self.chain.genesis.chain_id.clone(),
                    height: tip + 1,
                    round: 0,
                    kind: VoteKind::Prevote,
                    block_hash: Some(Hash(self.change_rng.gen())),
                };
                let signed = SignedVote::sign(vote, &self.nodes[i].key, &self.chain.genesis_hash);
                let message = tally_ledger::ConsensusMessage::Vote(signed);
                if let Ok(bytes) = borsh::to_vec(&message) {
                    self.gossip(i, &To::All, Topic::Consensus, bytes);
                }
            }
        }
    }

    /// The operator stops node `i` and starts it again with `key`.
    fn restart_with(&mut self, i: usize, key: Keypair) {
        self.log(format!(
            "node {i} restarts with its rotated key {}",
            key.address()
        ));
        self.stats.rotations_applied += 1;
        // A node that is down starts with the new key when it restarts.
        if self.nodes[i].up {
            self.crash(i);
        }
        self.nodes[i].address = key.address();
        self.nodes[i].key = key;
    }

    /// The node whose key is `address`.
    fn node_of(&self, address: &tally_ledger::Address) -> Option<usize> {
        self.nodes.iter().position(|n| &n.address == address)
    }

    fn node_of_change(&self, change: &ValidatorChange) -> Option<usize> {
        self.node_of(change.subject())
    }
}

/// The set after `change`, by the plain rules (the guard is the chain's).
fn preview(set: &ValidatorSet, change: &ValidatorChange) -> Option<ValidatorSet> {
    let mut validators = set.validators().to_vec();
    match change {
        ValidatorChange::Add {
            name,
            address,
            power,
            ..
        } => validators.push(tally_ledger::GenesisValidator {
            name: name.clone(),
            address: *address,
            power: *power,
        }),
        ValidatorChange::Remove { address } => validators.retain(|v| &v.address != address),
        ValidatorChange::SetPower { address, power } => {
            validators.iter_mut().find(|v| &v.address == address)?.power = *power
        }
        ValidatorChange::Rotate {
            address, new_key, ..
        } => {
            validators
                .iter_mut()
                .find(|v| &v.address == address)?
                .address = *new_key
        }
    }
    (!validators.is_empty()).then(|| ValidatorSet::new(validators))
}
