//! Validator-set changes by vote, and the guard that refuses the changes
//! that would halt the chain.
//!
//! # Design
//! A validator of the set in force votes for one [`ValidatorChange`] with a
//! transaction whose action is [`crate::Action::Validator`] (the first vote
//! opens the change). The votes live in the [`ValidatorState`], which every
//! block carries forward: after its last transaction, votes older than the
//! genesis parameter `validator_vote_expiry` are dropped, and the first open
//! change (in the order they were opened) whose voters hold more than two
//! thirds of the power in force completes, if the guard still allows it. A
//! change completed by block `h` is in force from height `h + 2`; the header
//! of `h + 1` names the new set in its `next_validators_hash`. At most one
//! change completes per block, so at most one takes effect per height.
//!
//! The state holds three sets: the one that signed the last block (its
//! commit, carried by the next block, is checked against it), the one that
//! signs the next block, and the one after. A change applies to the last of
//! these.
//!
//! # Guarantees
//! - The guard ([`ValidatorState::check_vote`], [`apply_change`]) runs when a
//!   vote enters a block and again when the change would complete; a change
//!   it refuses never takes effect. It refuses a set below `min_validators`
//!   (or empty), a change that moves more than a third of the voting power
//!   at once, an unknown validator, a duplicate key or name, and a new set
//!   in which the validators that signed the latest commit hold two thirds
//!   of the power or less (so newly added validators, which have signed
//!   nothing yet, can never make the live ones a minority).
//! - Every function here is deterministic: every node computes the same
//!   state from the same blocks.
//!
//! # Not guaranteed
//! - That a validator added by vote is running: the guard only makes sure
//!   the chain does not depend on it.

use std::collections::BTreeSet;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::crypto::{Keypair, Signature};
use crate::genesis::{Genesis, GenesisValidator, Params, ValidatorSet};
use crate::types::{Address, Hash};

/// Prefix of the message a rotation's new key signs.
pub const ROTATE_DOMAIN: &[u8] = b"tally/rotate/v1";
/// Prefix of a change's id.
pub const CHANGE_DOMAIN: &[u8] = b"tally/validator-change/v1";
/// Longest validator name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest peer address of an added validator, in bytes.
pub const MAX_PEER_LEN: usize = 200;
/// Most changes one validator may have open votes for at once.
pub const MAX_OPEN_VOTES_PER_VALIDATOR: usize = 8;
/// How many finished changes (completed, refused, expired) the state keeps.
pub const MAX_RECENT_OUTCOMES: usize = 32;

/// One change to the validator set.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ValidatorChange {
    /// A new validator, appended to the set.
    Add {
        /// Its name, unique in the set, 1 to 64 bytes.
        name: String,
        /// Its consensus key.
        address: Address,
        /// Its voting power, at least 1.
        power: u64,
        /// Its node's libp2p address with peer id
        /// (`/ip4/…/tcp/…/p2p/12D3KooW…`), so other nodes can dial it.
        peer: String,
    },
    /// A validator leaves the set.
    Remove {
        /// Its consensus key.
        address: Address,
    },
    /// A validator's voting power changes.
    SetPower {
        /// Its consensus key.
        address: Address,
        /// The new power, at least 1 and not the current one.
        power: u64,
    },
    /// A validator's consensus key is replaced, keeping its name, power and
    /// place. Opened only by the old key, and carrying the new key's
    /// signature over [`rotation_message`], so a mistyped key cannot lock the
    /// operator out.
    Rotate {
        /// The current key.
        address: Address,
        /// The key that replaces it.
        new_key: Address,
        /// `new_key`'s signature over [`rotation_message`].
        new_key_signature: Signature,
    },
}

/// The message a rotation's new key signs:
/// blake3("tally/rotate/v1" ‖ genesis_hash ‖ old key ‖ new key).
pub fn rotation_message(genesis_hash: &Hash, old: &Address, new: &Address) -> Hash {
    Hash::digest_parts(&[ROTATE_DOMAIN, &genesis_hash.0, &old.0, &new.0])
}

impl ValidatorChange {
    /// A rotation of `old` to `new`, signed by the new key.
    pub fn rotate(old: Address, new: &Keypair, genesis_hash: &Hash) -> ValidatorChange {
        let new_key = new.address();
        ValidatorChange::Rotate {
            address: old,
            new_key,
            new_key_signature: new.sign(&rotation_message(genesis_hash, &old, &new_key)),
        }
    }

    /// The change's id: blake3("tally/validator-change/v1" ‖ borsh(change)).
    /// Votes for the same id are votes for exactly the same change.
    pub fn id(&self) -> Hash {
        Hash::digest_parts(&[CHANGE_DOMAIN, &borsh::to_vec(self).unwrap_or_default()])
    }

    /// The validator the change is about.
    pub fn subject(&self) -> &Address {
        match self {
            ValidatorChange::Add { address, .. }
            | ValidatorChange::Remove { address }
            | ValidatorChange::SetPower { address, .. }
            | ValidatorChange::Rotate { address, .. } => address,
        }
    }

    /// The rules that need no state: names, peer addresses, powers and keys
    /// are well formed.
    pub fn check_shape(&self) -> Result<(), ValidatorChangeError> {
        match self {
            ValidatorChange::Add {
                name,
                address,
                power,
                peer,
            } => {
                if name.is_empty() || name.len() > MAX_NAME_LEN {
                    return Err(ValidatorChangeError::BadName(name.clone()));
                }
                if !peer_is_well_formed(peer) {
                    return Err(ValidatorChangeError::BadPeer(truncated(peer)));
                }
                if *power == 0 {
                    return Err(ValidatorChangeError::ZeroPower);
                }
                if !address.is_valid_key() {
                    return Err(ValidatorChangeError::BadKey(*address));
                }
                Ok(())
            }
            ValidatorChange::Remove { .. } => Ok(()),
            ValidatorChange::SetPower { power, .. } => match power {
                0 => Err(ValidatorChangeError::ZeroPower),
                _ => Ok(()),
            },
            ValidatorChange::Rotate { new_key, .. } => match new_key.is_valid_key() {
                true => Ok(()),
                false => Err(ValidatorChangeError::BadKey(*new_key)),
            },
        }
    }

    /// Whether a rotation's new-key signature verifies (true for every other
    /// kind).
    pub fn new_key_signed(&self, genesis_hash: &Hash) -> bool {
        match self {
            ValidatorChange::Rotate {
                address,
                new_key,
                new_key_signature,
            } => {
                new_key_signature.verify(new_key, &rotation_message(genesis_hash, address, new_key))
            }
            _ => true,
        }
    }
}

/// A multiaddress with a peer id, checked by shape only (the node parses it
/// when it dials): printable ASCII without spaces, starting with `/`,
/// holding `/p2p/`, at most [`MAX_PEER_LEN`] bytes.
fn peer_is_well_formed(peer: &str) -> bool {
    peer.len() <= MAX_PEER_LEN
        && peer.starts_with('/')
        && peer.contains("/p2p/")
        && peer.bytes().all(|b| b.is_ascii_graphic())
}

fn truncated(s: &str) -> String {
    s.chars().take(MAX_PEER_LEN + 1).collect()
}

/// Why a validator-set vote or change is refused. Each variant has its own
/// RPC error code (RPC.md); the message carries the numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorChangeError {
    /// The voter is not in the set in force.
    #[error("{0} is not a validator of the set in force; only its validators vote on changes")]
    NotAValidator(Address),
    /// The change names a validator that is not in the set it applies to.
    #[error("{0} is not in the validator set the change applies to")]
    UnknownValidator(Address),
    /// The change adds (or rotates to) a key that is in the set already.
    #[error("{0} is already a validator")]
    AlreadyValidator(Address),
    /// The change adds a name that is taken.
    #[error("validator name {0:?} is taken")]
    DuplicateName(String),
    /// A bad name.
    #[error("validator name {0:?} must be 1 to 64 bytes")]
    BadName(String),
    /// A bad peer address.
    #[error("peer address {0:?} must be a multiaddress with a peer id (/ip4/…/tcp/…/p2p/12D3KooW…) of at most 200 bytes")]
    BadPeer(String),
    /// Power 0.
    #[error("voting power must be at least 1")]
    ZeroPower,
    /// A key that is not usable.
    #[error("{0} is not a usable ed25519 public key")]
    BadKey(Address),
    /// A power change to the power the validator has.
    #[error("validator {address} has power {power} already")]
    PowerUnchanged {
        /// The validator.
        address: Address,
        /// Its power.
        power: u64,
    },
    /// Too few validators would remain.
    #[error("the change leaves {after} validators; the minimum is {min}")]
    BelowMinimum {
        /// Validators after the change.
        after: usize,
        /// The genesis minimum.
        min: u32,
    },
    /// Too many validators.
    #[error("the change makes {after} validators; at most {max} are supported")]
    TooManyValidators {
        /// Validators after the change.
        after: usize,
        /// The limit.
        max: usize,
    },
    /// Total power too large.
    #[error("total voting power after the change would exceed {max}")]
    PowerOverflow {
        /// The limit.
        max: u64,
    },
    /// More than a third of the power at once.
    #[error("the change moves {moved} of the {total} voting power at once; at most a third ({limit}) may move in one change")]
    TooMuchPower {
        /// Power added or removed.
        moved: u64,
        /// Total power before.
        total: u64,
        /// The most that may move.
        limit: u64,
    },
    /// The live validators would not hold a quorum of the new set.
    #[error("after the change the validators that signed the latest commit would hold {live} of the {total} voting power; more than two thirds ({needed}) must be live")]
    LivenessLost {
        /// Their power in the new set.
        live: u64,
        /// The new set's total power.
        total: u64,
        /// Quorum of the new set.
        needed: u64,
    },
    /// Block 1 carries no commit to judge liveness by.
    #[error("no commit is on the chain yet; validator-set votes are taken from height 2")]
    NoCommitYet,
    /// A second vote for the same change.
    #[error("{0} has voted for this change already")]
    AlreadyVoted(Address),
    /// Too many open votes.
    #[error("{voter} has open votes for {open} changes, the most allowed")]
    TooManyOpenVotes {
        /// The voter.
        voter: Address,
        /// Its open votes.
        open: usize,
    },
    /// A rotation opened by another key than the one rotated.
    #[error("a rotation of {address} is opened only by that key, not by {voter}")]
    RotationNotByOwner {
        /// The key rotated.
        address: Address,
        /// Who tried.
        voter: Address,
    },
    /// A rotation the new key did not sign.
    #[error("the new key's signature over the rotation does not verify; a rotation is signed by both the old and the new key")]
    BadRotationSignature,
    /// Cited evidence that is not on the chain.
    #[error("evidence {0} is not on the chain")]
    EvidenceNotFound(Hash),
    /// Cited evidence against someone else.
    #[error("evidence {evidence} is against {offender}, not {removed}")]
    EvidenceMismatch {
        /// The evidence.
        evidence: Hash,
        /// Whom it convicts.
        offender: Address,
        /// Whom the change removes.
        removed: Address,
    },
    /// Evidence cited by a change that is not a removal.
    #[error("only a removal can cite evidence")]
    EvidenceNotRemoval,
}

/// One validator's vote for an open change.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CastVote {
    /// The voter.
    pub validator: Address,
    /// The height of the block that holds the vote.
    pub height: u64,
}

/// A change with votes that has not completed.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct OpenChange {
    /// [`ValidatorChange::id`].
    pub id: Hash,
    /// The change.
    pub change: ValidatorChange,
    /// Height of the block with its first vote.
    pub opened_at: u64,
    /// Its votes, in block order.
    pub votes: Vec<CastVote>,
}

/// How a change ended.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ChangeResult {
    /// It completed; the new set is in force from `effective_height`.
    Completed {
        /// First height signed by the new set.
        effective_height: u64,
    },
    /// It had the votes but the guard refused it when it would complete.
    Refused {
        /// The guard's message.
        reason: String,
    },
    /// Its votes expired.
    Expired,
}

/// A finished change.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ChangeOutcome {
    /// [`ValidatorChange::id`].
    pub id: Hash,
    /// The change.
    pub change: ValidatorChange,
    /// The block whose end finished it.
    pub height: u64,
    /// How.
    pub result: ChangeResult,
}

/// The validator sets around the tip and the open votes: what every block
/// carries forward (stored with each block that changes it).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ValidatorState {
    /// The height of the last block applied (0 at genesis).
    pub height: u64,
    /// The set that signed that block (the genesis set at height 0).
    pub last: ValidatorSet,
    /// The set that signs the next block, `height + 1`.
    pub current: ValidatorSet,
    /// The set that signs block `height + 2`.
    pub next: ValidatorSet,
    /// Open changes in the order they were opened.
    pub open: Vec<OpenChange>,
    /// Peer addresses of validators added by vote, sorted by key.
    pub peers: Vec<(Address, String)>,
    /// The latest finished changes, oldest first (at most
    /// [`MAX_RECENT_OUTCOMES`]).
    pub recent: Vec<ChangeOutcome>,
}

/// The signers of a block's last commit, when it has one.
pub type LiveSigners = Option<BTreeSet<Address>>;

impl ValidatorState {
    /// The state before block 1: every set is the genesis set.
    pub fn genesis(set: ValidatorSet) -> ValidatorState {
        ValidatorState {
            height: 0,
            last: set.clone(),
            current: set.clone(),
            next: set,
            open: Vec::new(),
            peers: Vec::new(),
            recent: Vec::new(),
        }
    }

    /// The set that signs block `height`, if this state knows it (the last
    /// applied height and the two after it).
    pub fn set_at(&self, height: u64) -> Option<&ValidatorSet> {
        match height.checked_sub(self.height)? {
            0 => Some(&self.last),
            1 => Some(&self.current),
            2 => Some(&self.next),
            _ => None,
        }
    }

    /// This state carried to `height` by blocks that change nothing: the
    /// sets move on, votes stay. A store keeps the state only when a block
    /// changes it otherwise, and gives it back carried to its tip.
    pub fn advanced(&self, height: u64) -> ValidatorState {
        let mut state = self.clone();
        // Two steps make all three sets the last one; more change nothing.
        for _ in 0..height.saturating_sub(state.height).min(2) {
            state.last = std::mem::replace(&mut state.current, state.next.clone());
        }
        state.height = state.height.max(height);
        state
    }

    /// This state with `set` signing the next block and the one after it,
    /// by an operator override: the open votes (cast for changes to the
    /// sets it replaces) are dropped, and so are the peer addresses of
    /// validators not in `set`. The set that signed the last block stays:
    /// the next block's last commit is still its.
    pub fn overridden(&self, set: &ValidatorSet) -> ValidatorState {
        let mut state = self.clone();
        state.current = set.clone();
        state.next = set.clone();
        state.open.clear();
        state.peers.retain(|(a, _)| set.power_of(a).is_some());
        state
    }

    /// The open change with this id.
    pub fn open_change(&self, id: &Hash) -> Option<&OpenChange> {
        self.open.iter().find(|c| &c.id == id)
    }

    /// The power of the set in force that voted for `change`.
    pub fn power_for(&self, change: &OpenChange) -> u64 {
        change
            .votes
            .iter()
            .filter_map(|v| self.current.power_of(&v.validator))
            .sum()
    }

    /// Whether `voter` may vote for `change` in the block after this state
    /// (whose last commit `live` signed), without changing anything: the
    /// voter is in the set in force and has not voted for it, a rotation is
    /// opened by its own key with both signatures, the voter has room for
    /// another open vote, and the guard allows the change.
    pub fn check_vote(
        &self,
        voter: &Address,
        change: &ValidatorChange,
        live: &LiveSigners,
        params: &Params,
        genesis_hash: &Hash,
    ) -> Result<(), ValidatorChangeError> {
        change.check_shape()?;
        if self.current.power_of(voter).is_none() {
            return Err(ValidatorChangeError::NotAValidator(*voter));
        }
        let id = change.id();
        match self.open_change(&id) {
            Some(open) => {
                if open.votes.iter().any(|v| &v.validator == voter) {
                    return Err(ValidatorChangeError::AlreadyVoted(*voter));
                }
            }
            None => {
                if let ValidatorChange::Rotate { address, .. } = change {
                    if address != voter {
                        return Err(ValidatorChangeError::RotationNotByOwner {
                            address: *address,
                            voter: *voter,
                        });
                    }
                }
                if !change.new_key_signed(genesis_hash) {
                    return Err(ValidatorChangeError::BadRotationSignature);
                }
            }
        }
        let open = self
            .open
            .iter()
            .filter(|c| c.votes.iter().any(|v| &v.validator == voter))
            .count();
        if open >= MAX_OPEN_VOTES_PER_VALIDATOR {
            return Err(ValidatorChangeError::TooManyOpenVotes {
                voter: *voter,
                open,
            });
        }
        apply_change(&self.next, change, live, params).map(|_| ())
    }

    /// Records `voter`'s vote for `change` in block `height` (the block after
    /// this state), after [`ValidatorState::check_vote`].
    pub fn record_vote(
        &mut self,
        voter: &Address,
        change: &ValidatorChange,
        height: u64,
        live: &LiveSigners,
        params: &Params,
        genesis_hash: &Hash,
    ) -> Result<(), ValidatorChangeError> {
        self.check_vote(voter, change, live, params, genesis_hash)?;
        let vote = CastVote {
            validator: *voter,
            height,
        };
        let id = change.id();
        match self.open.iter_mut().find(|c| c.id == id) {
            Some(open) => open.votes.push(vote),
            None => self.open.push(OpenChange {
                id,
                change: change.clone(),
                opened_at: height,
                votes: vec![vote],
            }),
        }
        Ok(())
    }

    /// Ends block `height` (the block after this state, whose last commit
    /// `live` signed): drops the votes that no longer count (a vote cast in
    /// block `v` counts at the end of blocks `v` to
    /// `v + validator_vote_expiry - 1`, while its voter is in the set in
    /// force), completes the first open change whose
    /// voters in the set in force hold a quorum of it and that the guard
    /// still allows, and moves the sets on by one height. Returns the
    /// changes that finished.
    pub fn end_block(
        &mut self,
        height: u64,
        live: &LiveSigners,
        params: &Params,
    ) -> Vec<ChangeOutcome> {
        let mut finished = Vec::new();
        let expiry = params.validator_vote_expiry;
        let current = &self.current;
        for change in &mut self.open {
            // A vote counts in the blocks v .. v + expiry - 1, and only while
            // its voter is in the set in force.
            change.votes.retain(|v| {
                v.height.saturating_add(expiry) > height && current.power_of(&v.validator).is_some()
            });
        }
        let mut kept = Vec::with_capacity(self.open.len());
        let mut new_next = None;
        for change in std::mem::take(&mut self.open) {
            if change.votes.is_empty() {
                finished.push(outcome(&change, height, ChangeResult::Expired));
                continue;
            }
            let quorum = self.power_for(&change) >= self.current.quorum_power();
            if !quorum || new_next.is_some() {
                kept.push(change);
                continue;
            }
            match apply_change(&self.next, &change.change, live, params) {
                Ok(set) => {
                    new_next = Some(set);
                    let result = ChangeResult::Completed {
                        effective_height: height + 2,
                    };
                    self.note_peer(&change.change);
                    finished.push(outcome(&change, height, result));
                }
                Err(e) => {
                    let result = ChangeResult::Refused {
                        reason: e.to_string(),
                    };
                    finished.push(outcome(&change, height, result));
                }
            }
        }
        self.open = kept;
        let next = new_next.unwrap_or_else(|| self.next.clone());
        self.last = std::mem::replace(&mut self.current, std::mem::replace(&mut self.next, next));
        self.height = height;
        self.recent.extend(finished.iter().cloned());
        let excess = self.recent.len().saturating_sub(MAX_RECENT_OUTCOMES);
        self.recent.drain(..excess);
        finished
    }

    fn note_peer(&mut self, change: &ValidatorChange) {
        match change {
            ValidatorChange::Add { address, peer, .. } => {
                self.peers.retain(|(a, _)| a != address);
                self.peers.push((*address, peer.clone()));
            }
            ValidatorChange::Remove { address } => self.peers.retain(|(a, _)| a != address),
            ValidatorChange::Rotate {
                address, new_key, ..
            } => {
                for entry in &mut self.peers {
                    if &entry.0 == address {
                        entry.0 = *new_key;
                    }
                }
            }
            ValidatorChange::SetPower { .. } => {}
        }
        self.peers.sort_by_key(|(a, _)| *a);
    }

    /// Whether a stored state is one this code could have made: every set
    /// valid, the height matching, and the bounds kept.
    pub fn is_well_formed(&self, height: u64) -> bool {
        self.height == height
            && [&self.last, &self.current, &self.next]
                .iter()
                .all(|s| s.is_well_formed())
            && self.recent.len() <= MAX_RECENT_OUTCOMES
            && self
                .open
                .iter()
                .all(|c| !c.votes.is_empty() && c.id == c.change.id())
    }
}

fn outcome(change: &OpenChange, height: u64, result: ChangeResult) -> ChangeOutcome {
    ChangeOutcome {
        id: change.id,
        change: change.change.clone(),
        height,
        result,
    }
}

/// The guard: `base` with `change` applied, if the result keeps the chain
/// live. `live` are the signers of the latest commit (none before block 2,
/// when every change is refused).
pub fn apply_change(
    base: &ValidatorSet,
    change: &ValidatorChange,
    live: &LiveSigners,
    params: &Params,
) -> Result<ValidatorSet, ValidatorChangeError> {
    use ValidatorChangeError as E;
    change.check_shape()?;
    let live = live.as_ref().ok_or(E::NoCommitYet)?;
    let mut validators: Vec<GenesisValidator> = base.validators().to_vec();
    let position = |address: &Address| validators.iter().position(|v| &v.address == address);
    let total = base.total_power();
    let moved = match change {
        ValidatorChange::Add {
            name,
            address,
            power,
            ..
        } => {
            if position(address).is_some() {
                return Err(E::AlreadyValidator(*address));
            }
            if validators.iter().any(|v| &v.name == name) {
                return Err(E::DuplicateName(name.clone()));
            }
            validators.push(GenesisValidator {
                name: name.clone(),
                address: *address,
                power: *power,
            });
            *power
        }
        ValidatorChange::Remove { address } => {
            let at = position(address).ok_or(E::UnknownValidator(*address))?;
            validators.remove(at).power
        }
        ValidatorChange::SetPower { address, power } => {
            let at = position(address).ok_or(E::UnknownValidator(*address))?;
            let old = validators[at].power;
            if old == *power {
                return Err(E::PowerUnchanged {
                    address: *address,
                    power: old,
                });
            }
            validators[at].power = *power;
            old.abs_diff(*power)
        }
        ValidatorChange::Rotate {
            address, new_key, ..
        } => {
            let at = position(address).ok_or(E::UnknownValidator(*address))?;
            if position(new_key).is_some() {
                return Err(E::AlreadyValidator(*new_key));
            }
            validators[at].address = *new_key;
            0
        }
    };
    let min = params.min_validators.max(1);
    if validators.len() < min as usize {
        return Err(E::BelowMinimum {
            after: validators.len(),
            min,
        });
    }
    if validators.len() > Genesis::MAX_VALIDATORS {
        return Err(E::TooManyValidators {
            after: validators.len(),
            max: Genesis::MAX_VALIDATORS,
        });
    }
    let new_total = validators
        .iter()
        .try_fold(0u64, |sum, v| sum.checked_add(v.power))
        .filter(|t| *t <= Genesis::MAX_TOTAL_POWER)
        .ok_or(E::PowerOverflow {
            max: Genesis::MAX_TOTAL_POWER,
        })?;
    if moved.saturating_mul(3) > total {
        return Err(E::TooMuchPower {
            moved,
            total,
            limit: total / 3,
        });
    }
    let set = ValidatorSet::new(validators);
    let live_power: u64 = set
        .validators()
        .iter()
        .filter(|v| live.contains(&v.address))
        .map(|v| v.power)
        .sum();
    // More than two thirds: 3 × live > 2 × total, the quorum's definition.
    if live_power.saturating_mul(3) <= new_total.saturating_mul(2) {
        return Err(E::LivenessLost {
            live: live_power,
            total: new_total,
            needed: set.quorum_power(),
        });
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet::devnet_genesis;
    use crate::devnet_key;

    fn key(name: &str) -> Address {
        devnet_key(name).address()
    }

    fn four() -> ValidatorSet {
        devnet_genesis(4, "tally-devnet").unwrap().validator_set()
    }

    fn live(names: &[&str]) -> LiveSigners {
        Some(names.iter().map(|n| key(n)).collect())
    }

    fn all_live() -> LiveSigners {
        live(&["validator-0", "validator-1", "validator-2", "validator-3"])
    }

    fn add(name: &str, power: u64) -> ValidatorChange {
        ValidatorChange::Add {
            name: name.into(),
            address: key(name),
            power,
            peer:
                "/ip4/127.0.0.1/tcp/7805/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
                    .into(),
        }
    }

    fn params() -> Params {
        Params::default()
    }

    #[test]
    fn adding_a_fifth_validator_passes_the_guard_when_all_four_are_live() {
        let set = apply_change(&four(), &add("validator-4", 1), &all_live(), &params()).unwrap();
        assert_eq!(set.validators().len(), 5);
        assert_eq!(set.validators()[4].name, "validator-4");
        assert_eq!(set.quorum_power(), 4);
    }

    #[test]
    fn each_guard_refusal_carries_its_numbers() {
        use ValidatorChangeError as E;
        let p = params();
        // One of four down: the live three would hold 3 of 5, not more than 2/3.
        let three = live(&["validator-0", "validator-1", "validator-2"]);
        assert_eq!(
            apply_change(&four(), &add("validator-4", 1), &three, &p),
            Err(E::LivenessLost {
                live: 3,
                total: 5,
                needed: 4
            })
        );
        // Adding more than a third of the power at once.
        assert_eq!(
            apply_change(&four(), &add("validator-4", 2), &all_live(), &p),
            Err(E::TooMuchPower {
                moved: 2,
                total: 4,
                limit: 1
            })
        );
        // Below the minimum size.
        let mut strict = p.clone();
        strict.min_validators = 4;
        let remove = ValidatorChange::Remove {
            address: key("validator-3"),
        };
        assert_eq!(
            apply_change(&four(), &remove, &all_live(), &strict),
            Err(E::BelowMinimum { after: 3, min: 4 })
        );
        // Unknown validator, duplicate key, duplicate name.
        let stranger = ValidatorChange::Remove {
            address: key("mallory"),
        };
        assert_eq!(
            apply_change(&four(), &stranger, &all_live(), &p),
            Err(E::UnknownValidator(key("mallory")))
        );
        let mut twice = add("validator-4", 1);
        if let ValidatorChange::Add { address, .. } = &mut twice {
            *address = key("validator-1");
        }
        assert_eq!(
            apply_change(&four(), &twice, &all_live(), &p),
            Err(E::AlreadyValidator(key("validator-1")))
        );
        let mut same_name = add("validator-4", 1);
        if let ValidatorChange::Add { name, .. } = &mut same_name {
            *name = "validator-2".into();
        }
        assert_eq!(
            apply_change(&four(), &same_name, &all_live(), &p),
            Err(E::DuplicateName("validator-2".into()))
        );
        // No commit before block 2.
        assert_eq!(
            apply_change(&four(), &add("validator-4", 1), &None, &p),
            Err(E::NoCommitYet)
        );
        // Power unchanged; zero power.
        let same = ValidatorChange::SetPower {
            address: key("validator-0"),
            power: 1,
        };
        assert_eq!(
            apply_change(&four(), &same, &all_live(), &p),
            Err(E::PowerUnchanged {
                address: key("validator-0"),
                power: 1
            })
        );
        let zero = ValidatorChange::SetPower {
            address: key("validator-0"),
            power: 0,
        };
        assert_eq!(
            apply_change(&four(), &zero, &all_live(), &p),
            Err(E::ZeroPower)
        );
    }

    #[test]
    fn removing_the_last_validators_is_refused() {
        let one = devnet_genesis(1, "tally-dev").unwrap().validator_set();
        let remove = ValidatorChange::Remove {
            address: key("validator-0"),
        };
        assert_eq!(
            apply_change(&one, &remove, &live(&["validator-0"]), &params()),
            Err(ValidatorChangeError::BelowMinimum { after: 0, min: 1 })
        );
    }

    #[test]
    fn removing_a_live_validator_keeps_a_quorum_only_if_the_rest_are_live() {
        let remove = ValidatorChange::Remove {
            address: key("validator-3"),
        };
        // Four live: three remain, all live.
        assert!(apply_change(&four(), &remove, &all_live(), &params()).is_ok());
        // validator-2 down: the remaining three hold 2 live of 3, not more than 2/3.
        let without_2 = live(&["validator-0", "validator-1", "validator-3"]);
        assert_eq!(
            apply_change(&four(), &remove, &without_2, &params()),
            Err(ValidatorChangeError::LivenessLost {
                live: 2,
                total: 3,
                needed: 3
            })
        );
    }

    #[test]
    fn a_rotated_key_counts_as_not_live_until_it_signs() {
        let genesis = Hash::digest(b"g");
        let rotate = ValidatorChange::rotate(key("validator-1"), &devnet_key("new-1"), &genesis);
        let set = apply_change(&four(), &rotate, &all_live(), &params()).unwrap();
        assert_eq!(set.validators()[1].address, key("new-1"));
        assert_eq!(set.validators()[1].name, "validator-1");
        // With validator-3 down too, only two of four would be live.
        let three = live(&["validator-0", "validator-1", "validator-2"]);
        assert!(matches!(
            apply_change(&four(), &rotate, &three, &params()),
            Err(ValidatorChangeError::LivenessLost { live: 2, .. })
        ));
    }

    fn state() -> ValidatorState {
        ValidatorState::genesis(four())
    }

    fn vote(
        s: &mut ValidatorState,
        who: &str,
        change: &ValidatorChange,
        height: u64,
    ) -> Result<(), ValidatorChangeError> {
        s.record_vote(
            &key(who),
            change,
            height,
            &all_live(),
            &params(),
            &Hash::ZERO,
        )
    }

    #[test]
    fn a_change_completes_at_a_quorum_and_takes_effect_two_heights_later() {
        let mut s = state();
        let change = add("validator-4", 1);
        s.end_block(1, &None, &params());
        vote(&mut s, "validator-0", &change, 2).unwrap();
        vote(&mut s, "validator-1", &change, 2).unwrap();
        assert!(s.end_block(2, &all_live(), &params()).is_empty(), "2 of 4");
        vote(&mut s, "validator-2", &change, 3).unwrap();
        let done = s.end_block(3, &all_live(), &params());
        assert_eq!(
            done[0].result,
            ChangeResult::Completed {
                effective_height: 5
            }
        );
        assert!(s.open.is_empty());
        // Heights 3 and 4 are signed by the old set, 5 by the new one.
        assert_eq!(s.set_at(3).unwrap(), &four());
        assert_eq!(s.set_at(4).unwrap(), &four());
        assert_eq!(s.set_at(5).unwrap().validators().len(), 5);
        assert_eq!(s.peers.len(), 1);
        s.end_block(4, &all_live(), &params());
        assert_eq!(s.current.validators().len(), 5, "in force at 5");
    }

    #[test]
    fn votes_are_checked_for_membership_duplicates_and_rotation_signatures() {
        use ValidatorChangeError as E;
        let mut s = state();
        s.end_block(1, &None, &params());
        let change = add("validator-4", 1);
        assert_eq!(
            vote(&mut s, "mallory", &change, 2),
            Err(E::NotAValidator(key("mallory")))
        );
        vote(&mut s, "validator-0", &change, 2).unwrap();
        assert_eq!(
            vote(&mut s, "validator-0", &change, 2),
            Err(E::AlreadyVoted(key("validator-0")))
        );
        // A rotation opened by another validator, or signed by another new key.
        let rotate = ValidatorChange::rotate(key("validator-1"), &devnet_key("new-1"), &Hash::ZERO);
        assert_eq!(
            vote(&mut s, "validator-2", &rotate, 2),
            Err(E::RotationNotByOwner {
                address: key("validator-1"),
                voter: key("validator-2")
            })
        );
        let forged =
            match ValidatorChange::rotate(key("validator-1"), &devnet_key("x"), &Hash::ZERO) {
                ValidatorChange::Rotate {
                    address,
                    new_key_signature,
                    ..
                } => ValidatorChange::Rotate {
                    address,
                    new_key: key("new-1"),
                    new_key_signature,
                },
                _ => unreachable!(),
            };
        assert_eq!(
            vote(&mut s, "validator-1", &forged, 2),
            Err(E::BadRotationSignature)
        );
        vote(&mut s, "validator-1", &rotate, 2).unwrap();
        // Once open, the others vote for it.
        vote(&mut s, "validator-2", &rotate, 2).unwrap();
    }

    #[test]
    fn votes_expire_after_the_configured_number_of_blocks() {
        let mut p = params();
        p.validator_vote_expiry = 3;
        let mut s = state();
        s.end_block(1, &None, &p);
        let change = add("validator-4", 1);
        s.record_vote(
            &key("validator-0"),
            &change,
            2,
            &all_live(),
            &p,
            &Hash::ZERO,
        )
        .unwrap();
        s.record_vote(
            &key("validator-1"),
            &change,
            2,
            &all_live(),
            &p,
            &Hash::ZERO,
        )
        .unwrap();
        for height in 2..=4 {
            s.end_block(height, &all_live(), &p);
            assert_eq!(
                s.open.len(),
                1,
                "cast at 2, counts at the end of 2, 3 and 4"
            );
        }
        let done = s.end_block(5, &all_live(), &p);
        assert_eq!(done[0].result, ChangeResult::Expired);
        assert!(s.open.is_empty());
        assert_eq!(s.recent.last().unwrap().result, ChangeResult::Expired);
        // A third vote now opens the change afresh: one vote, no quorum.
        s.record_vote(
            &key("validator-2"),
            &change,
            6,
            &all_live(),
            &p,
            &Hash::ZERO,
        )
        .unwrap();
        assert!(s.end_block(6, &all_live(), &p).is_empty());
    }

    #[test]
    fn two_changes_completing_in_one_block_take_effect_one_height_apart() {
        let mut s = state();
        s.end_block(1, &None, &params());
        let a = add("validator-4", 1);
        let b = ValidatorChange::SetPower {
            address: key("validator-0"),
            power: 2,
        };
        for who in ["validator-0", "validator-1", "validator-2"] {
            vote(&mut s, who, &a, 2).unwrap();
            vote(&mut s, who, &b, 2).unwrap();
        }
        let done = s.end_block(2, &all_live(), &params());
        assert_eq!(done.len(), 1, "one change per block");
        assert_eq!(done[0].id, a.id(), "the one opened first");
        let done = s.end_block(3, &all_live(), &params());
        assert_eq!(
            done[0].result,
            ChangeResult::Completed {
                effective_height: 5
            }
        );
        assert_eq!(s.set_at(4).unwrap().validators().len(), 5);
        assert_eq!(s.set_at(5).unwrap().power_of(&key("validator-0")), Some(2));
    }

    #[test]
    fn removing_a_validator_already_leaving_is_refused_not_a_panic() {
        // poa#245: the second removal meets a set without the validator.
        let mut s = state();
        s.end_block(1, &None, &params());
        let remove = ValidatorChange::Remove {
            address: key("validator-3"),
        };
        for who in ["validator-0", "validator-1", "validator-2"] {
            vote(&mut s, who, &remove, 2).unwrap();
        }
        s.end_block(2, &all_live(), &params());
        // Removed from height 4; at height 3 a new removal applies to the set of 4.
        assert_eq!(
            vote(&mut s, "validator-0", &remove, 3),
            Err(ValidatorChangeError::UnknownValidator(key("validator-3")))
        );
    }

    #[test]
    fn a_change_that_would_break_liveness_when_it_completes_is_refused_then() {
        let mut s = state();
        s.end_block(1, &None, &params());
        let change = add("validator-4", 1);
        for who in ["validator-0", "validator-1"] {
            vote(&mut s, who, &change, 2).unwrap();
        }
        s.end_block(2, &all_live(), &params());
        vote(&mut s, "validator-2", &change, 3).unwrap();
        // By the end of block 3 validator-3 stopped signing.
        let three = live(&["validator-0", "validator-1", "validator-2"]);
        let done = s.end_block(3, &three, &params());
        assert!(
            matches!(&done[0].result, ChangeResult::Refused { reason } if reason.contains("3 of the 5"))
        );
        assert_eq!(s.next, four());
    }
}
