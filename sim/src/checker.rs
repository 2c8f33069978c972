//! The invariants, checked as the run goes: every commit, every signature
//! an honest validator gives and every vote an honest node counts passes
//! through here.

use std::collections::{BTreeMap, BTreeSet};

use tally_ledger::state_tree::{prove_account, verify_account, MemoryState};
use tally_ledger::{
    execute_block, verify_commit, Address, BlockMeta, ChainContext, ChainHistory, ChainRead,
    ChangeResult, ConsensusMessage, ExecutedBlock, Hash, Header, SigCheck, StoredBlock,
    ValidatorSet, ValidatorState, VoteKind,
};

/// Key of one vote slot: who, height, round, kind.
pub type VoteSlot = (Address, u64, u32, VoteKind);

/// The reference chain, built from the first commit of every height, and
/// what honest validators signed.
pub struct Checker {
    chain: ChainContext,
    supply: u64,
    /// The reference state: the genesis plus every committed block.
    state: MemoryState,
    tip: BlockMeta,
    /// Block hash committed at each height (by anyone honest, first).
    committed: BTreeMap<u64, Hash>,
    /// Every committed transaction id.
    committed_txs: BTreeSet<Hash>,
    /// Transactions built to be invalid; none may ever commit.
    never_valid: BTreeSet<Hash>,
    /// What each honest validator signed in each vote slot.
    votes: BTreeMap<VoteSlot, Option<Hash>>,
    /// What each honest validator proposed in each (height, round).
    proposals: BTreeMap<(Address, u64, u32), Hash>,
    /// Each honest node's own chain: its last committed height and block.
    chains: BTreeMap<usize, (u64, Hash)>,
    /// The validator state after each height of the reference chain, by
    /// hash: every honest node's must be the same.
    validator_states: BTreeMap<u64, Hash>,
    /// Validator-set changes completed on the reference chain.
    completed_changes: u64,
    /// The first violation seen; the run stops there.
    pub violation: Option<String>,
}

impl Checker {
    /// A checker at genesis.
    pub fn new(chain: &ChainContext) -> Checker {
        let supply = chain.genesis.total_supply().unwrap_or(0);
        Checker {
            chain: chain.clone(),
            supply,
            state: MemoryState::genesis(chain).expect("the genesis state builds"),
            tip: chain.genesis_meta(),
            committed: BTreeMap::new(),
            committed_txs: BTreeSet::new(),
            never_valid: BTreeSet::new(),
            votes: BTreeMap::new(),
            proposals: BTreeMap::new(),
            chains: BTreeMap::new(),
            validator_states: BTreeMap::new(),
            completed_changes: 0,
            violation: None,
        }
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(what);
        }
    }

    /// Height of the reference chain.
    pub fn height(&self) -> u64 {
        self.tip.height
    }

    /// The genesis supply, which every block conserves.
    pub fn supply(&self) -> u64 {
        self.supply
    }

    /// Transactions committed so far.
    pub fn committed_txs(&self) -> usize {
        self.committed_txs.len()
    }

    /// The validator state after the reference tip.
    pub fn validator_state(&self) -> Option<ValidatorState> {
        self.state.validator_state().ok()
    }

    /// The set that signs `height` on the reference chain (known up to two
    /// past its tip).
    pub fn set_at(&self, height: u64) -> Option<ValidatorSet> {
        self.state.validator_set_at(height).ok().flatten()
    }

    /// Validator-set changes completed on the reference chain.
    pub fn completed_changes(&self) -> u64 {
        self.completed_changes
    }

    /// A client built `id` to be invalid.
    pub fn never_valid(&mut self, id: Hash) {
        self.never_valid.insert(id);
    }

    /// Honest `node` committed `stored` (executed as `executed`).
    pub fn on_commit(&mut self, node: usize, stored: &StoredBlock, executed: &ExecutedBlock) {
        let header = &stored.block.header;
        let (height, hash) = (header.height, executed.hash);
        // Each node's chain is one chain: every block the child of the one
        // it committed before.
        let (last_height, last_hash) = self
            .chains
            .get(&node)
            .copied()
            .unwrap_or((0, self.chain.genesis_hash));
        if height != last_height + 1 || header.parent_hash != last_hash {
            self.fail(format!(
                "node {node} committed block {height} (parent {}) on its block {last_height} \
                 ({last_hash})",
                header.parent_hash
            ));
        }
        self.chains.insert(node, (height, hash));
        if executed.tree.root != header.state_root || executed.tree.version != height {
            self.fail(format!(
                "node {node} committed block {height} with state root {}, but its execution \
                 gave {} (version {})",
                header.state_root, executed.tree.root, executed.tree.version
            ));
        }
        // Against the set of its height on the reference chain (known up to
        // two past the reference tip; a commit further ahead fails below).
        match self.set_at(height) {
            Some(set) => {
                let genesis = &self.chain.genesis;
                let checked = verify_commit(
                    &stored.commit,
                    height,
                    &hash,
                    &set,
                    &genesis.chain_id,
                    &self.chain.genesis_hash,
                );
                if let Err(e) = checked {
                    self.fail(format!(
                        "node {node} committed block {height} without a valid certificate \
                         for the set of that height: {e}"
                    ));
                }
            }
            None if height <= self.tip.height + 1 => {
                self.fail(format!(
                    "the reference chain knows no set for height {height}"
                ));
            }
            None => {}
        }
        if let Some(first) = self.committed.get(&height) {
            if *first != hash {
                self.fail(format!(
                    "agreement: node {node} committed {hash} at height {height}, \
                     another honest node committed {first}"
                ));
            }
            let state = state_hash(&executed.validators);
            if let Some(reference) = self.validator_states.get(&height) {
                if *reference != state {
                    self.fail(format!(
                        "node {node}'s validator state after block {height} differs from the \
                         reference chain's: {:?}",
                        executed.validators
                    ));
                }
            }
            return;
        }
        if height != self.tip.height + 1 {
            self.fail(format!(
                "node {node} committed height {height} before height {} was committed by anyone",
                self.tip.height + 1
            ));
            return;
        }
        self.extend(node, stored);
    }

    /// Applies the first commit of a height to the reference chain.
    fn extend(&mut self, node: usize, stored: &StoredBlock) {
        let block = &stored.block;
        let height = block.header.height;
        let executed =
            match execute_block(&self.state, &self.chain, &self.tip, block, SigCheck::Verify) {
                Ok(executed) => executed,
                Err(e) => {
                    return self.fail(format!(
                        "node {node} committed block {height}, which is invalid: {e}"
                    ))
                }
            };
        let mut next_nonce: BTreeMap<Address, u64> = BTreeMap::new();
        for (stx, id) in block.txs.iter().zip(&executed.tx_ids) {
            if !self.committed_txs.insert(*id) {
                return self.fail(format!(
                    "transaction {id} committed twice (again at {height})"
                ));
            }
            if self.never_valid.contains(id) {
                return self.fail(format!("invalid transaction {id} committed at {height}"));
            }
            let from = stx.tx.from;
            let expected = *next_nonce
                .entry(from)
                .or_insert_with(|| self.state.accounts().get(&from).map_or(0, |a| a.nonce));
            if stx.tx.nonce != expected {
                return self.fail(format!(
                    "sender {from} skipped from nonce {expected} to {} at {height}",
                    stx.tx.nonce
                ));
            }
            next_nonce.insert(from, expected + 1);
        }
        let before = self.validator_state();
        for outcome in &executed.validator_outcomes {
            if let ChangeResult::Completed { .. } = outcome.result {
                self.completed_changes += 1;
                if let Some(before) = &before {
                    let live: BTreeSet<Address> = block
                        .last_commit
                        .iter()
                        .flat_map(|c| c.signatures.iter().map(|s| s.validator))
                        .collect();
                    let min = self.chain.genesis.params.min_validators.max(1) as usize;
                    if let Err(why) =
                        guard_holds(&before.next, &executed.validators.next, &live, min)
                    {
                        return self.fail(format!(
                            "block {height} completed change {} breaking the guard: {why}",
                            outcome.id
                        ));
                    }
                }
            }
        }
        self.validator_states
            .insert(height, state_hash(&executed.validators));
        if let Err(e) = self.state.apply(block, &executed) {
            return self.fail(format!(
                "the reference state cannot take block {height}: {e}"
            ));
        }
        let total = self
            .state
            .accounts()
            .values()
            .try_fold(0u64, |sum, a| sum.checked_add(a.balance));
        if total != Some(self.supply) {
            return self.fail(format!(
                "supply not conserved at height {height}: {total:?}, genesis {}",
                self.supply
            ));
        }
        self.committed.insert(height, executed.hash);
        self.tip = BlockMeta {
            height,
            hash: executed.hash,
            timestamp_ms: block.header.timestamp_ms,
        };
    }

    /// Checks that an account's proof from `store` (an honest node's) at
    /// `header`'s height verifies against the certified header's state
    /// root and says what the reference state says. The account is picked
    /// by height, so the check draws nothing from the run's randomness.
    pub fn check_proof(&mut self, node: usize, store: &dyn ChainRead, header: &Header) {
        let height = header.height;
        let accounts = self.state.accounts();
        if accounts.is_empty() || height > self.tip.height {
            return;
        }
        let index = (height as usize).wrapping_mul(7919) % accounts.len();
        let Some(address) = accounts.keys().nth(index).copied() else {
            return;
        };
        let expected = match prove_account(&self.state, height, &address) {
            Ok((account, _)) => account,
            Err(e) => return self.fail(format!("reference proof at {height}: {e}")),
        };
        match prove_account(store, height, &address) {
            Ok((account, proof)) => {
                if account != expected {
                    self.fail(format!(
                        "node {node} proves {address} holds {account:?} at {height}, \
                         the reference state says {expected:?}"
                    ));
                } else if let Err(e) =
                    verify_account(&header.state_root, &address, &account, &proof)
                {
                    self.fail(format!("node {node}'s proof of {address} at {height}: {e}"));
                }
            }
            Err(e) => self.fail(format!(
                "node {node} cannot prove {address} at {height}: {e}"
            )),
        }
    }

    /// Honest validator `signer` sent `message`: what it signed itself must
    /// never conflict with anything it signed before, restarts included.
    /// (It also relays others' votes, which are theirs.)
    pub fn on_signed(&mut self, node: usize, signer: Address, message: &ConsensusMessage) {
        match message {
            ConsensusMessage::Vote(v) if v.validator != signer => {}
            ConsensusMessage::Proposal(p) if p.proposer != signer => {}
            ConsensusMessage::Evidence(_) => {}
            ConsensusMessage::Vote(v) => {
                let slot = (signer, v.vote.height, v.vote.round, v.vote.kind);
                let value = v.vote.block_hash;
                if let Some(before) = self.votes.insert(slot, value) {
                    if before != value {
                        self.fail(format!(
                            "honest node {node} signed two {:?}s at height {} round {}: \
                             {before:?} and {value:?}",
                            v.vote.kind, v.vote.height, v.vote.round
                        ));
                    }
                }
            }
            ConsensusMessage::Proposal(p) => {
                let slot = (signer, p.core.height, p.core.round);
                let hash = p.core.block_hash;
                if let Some(before) = self.proposals.insert(slot, hash) {
                    if before != hash {
                        self.fail(format!(
                            "honest node {node} proposed two blocks at height {} round {}",
                            p.core.height, p.core.round
                        ));
                    }
                }
            }
        }
    }

    /// Records a violation found elsewhere (evidence, liveness, a refused
    /// decided block).
    pub fn violate(&mut self, what: String) {
        self.fail(what);
    }
}

fn state_hash(state: &ValidatorState) -> Hash {
    Hash::digest(&borsh::to_vec(state).unwrap_or_default())
}

/// The liveness guard, computed here on its own from the sets before and
/// after a completed change: at least `min` validators; at most a third of
/// the old power moved (by name, so a key rotation moves nothing); and the
/// validators that signed the block's last commit hold more than two
/// thirds of the new set's power (a new key has signed nothing yet).
fn guard_holds(
    old: &ValidatorSet,
    new: &ValidatorSet,
    live: &BTreeSet<Address>,
    min: usize,
) -> Result<(), String> {
    if new.validators().len() < min {
        return Err(format!(
            "{} validators, fewer than {min}",
            new.validators().len()
        ));
    }
    let by_name = |set: &ValidatorSet| -> BTreeMap<String, u64> {
        set.validators()
            .iter()
            .map(|v| (v.name.clone(), v.power))
            .collect()
    };
    let (before, after) = (by_name(old), by_name(new));
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let moved: u64 = names
        .iter()
        .map(|n| {
            let (a, b) = (before.get(*n).copied(), after.get(*n).copied());
            a.unwrap_or(0).abs_diff(b.unwrap_or(0))
        })
        .sum();
    if moved * 3 > old.total_power() {
        return Err(format!(
            "moved {moved} of {} voting power",
            old.total_power()
        ));
    }
    let live_power: u64 = new
        .validators()
        .iter()
        .filter(|v| live.contains(&v.address))
        .map(|v| v.power)
        .sum();
    if live_power * 3 <= new.total_power() * 2 {
        return Err(format!(
            "the live validators hold {live_power} of the new {} voting power",
            new.total_power()
        ));
    }
    Ok(())
}
