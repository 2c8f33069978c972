//! The genesis: the chain's identity, validators, initial balances and rules.

use std::collections::BTreeSet;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::types::{amount_string, Address, ChainId, Hash};

/// Consensus and ledger parameters fixed at genesis.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Smallest fee a transaction may pay.
    #[serde(with = "amount_string")]
    pub min_fee: u64,
    /// Most transactions in one block.
    pub max_block_txs: u32,
    /// Most bytes of encoded transactions in one block.
    pub max_block_bytes: u32,
    /// Fewest validators a validator-set change may leave (at least 1).
    #[serde(default = "default_min_validators")]
    pub min_validators: u32,
    /// Blocks a validator-set vote counts for: a vote cast in block `v`
    /// counts at the end of blocks `v` to `v + validator_vote_expiry - 1`.
    #[serde(default = "default_vote_expiry")]
    pub validator_vote_expiry: u64,
}

fn default_min_validators() -> u32 {
    1
}

fn default_vote_expiry() -> u64 {
    10_000
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_fee: 1,
            max_block_txs: 10_000,
            max_block_bytes: 4 * 1024 * 1024,
            min_validators: default_min_validators(),
            validator_vote_expiry: default_vote_expiry(),
        }
    }
}

/// A validator named in the genesis.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// Human name, unique, 1 to 64 bytes.
    pub name: String,
    /// Its ed25519 public key, as an address.
    pub address: Address,
    /// Voting power, at least 1.
    pub power: u64,
}

/// An initial balance.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisBalance {
    /// The account.
    pub address: Address,
    /// Its starting balance.
    #[serde(with = "amount_string")]
    pub amount: u64,
}

/// The genesis document (`genesis.json`). Its hash, blake3 of its canonical
/// borsh encoding, identifies the chain and is part of every signature.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The chain id.
    pub chain_id: ChainId,
    /// Milliseconds since the Unix epoch; no block is older.
    pub genesis_time_ms: u64,
    /// Ledger and consensus parameters.
    pub params: Params,
    /// The validator set, in this order.
    pub validators: Vec<GenesisValidator>,
    /// Initial balances.
    pub balances: Vec<GenesisBalance>,
}

/// Why a genesis was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// Not valid JSON of the right shape.
    #[error("genesis is not valid: {0}")]
    Parse(String),
    /// No validators.
    #[error("genesis has no validators")]
    NoValidators,
    /// More validators than supported.
    #[error("genesis has {0} validators, at most {max} are supported", max = Genesis::MAX_VALIDATORS)]
    TooManyValidators(usize),
    /// Two validators with the same key.
    #[error("validator key {0} appears twice")]
    DuplicateValidator(Address),
    /// Two validators with the same name.
    #[error("validator name {0:?} appears twice")]
    DuplicateName(String),
    /// Bad validator name.
    #[error("validator name {0:?} must be 1 to 64 bytes")]
    BadName(String),
    /// Zero voting power.
    #[error("validator {0:?} has zero voting power")]
    ZeroPower(String),
    /// Total voting power too large.
    #[error("total voting power exceeds {max}", max = Genesis::MAX_TOTAL_POWER)]
    PowerOverflow,
    /// A key that is not an ed25519 point.
    #[error("{0} is not a valid ed25519 public key")]
    BadKey(Address),
    /// The same account twice in balances.
    #[error("account {0} has two initial balances")]
    DuplicateBalance(Address),
    /// Total supply does not fit in u64.
    #[error("initial balances add up to more than 2^64-1")]
    BalanceOverflow,
    /// Unusable parameters.
    #[error("bad parameter: {0}")]
    BadParams(String),
}

impl Genesis {
    /// Most validators a genesis may name.
    pub const MAX_VALIDATORS: usize = 256;
    /// Largest total voting power (keeps quorum arithmetic far from overflow).
    pub const MAX_TOTAL_POWER: u64 = 1 << 60;
    /// Largest `max_block_txs` a genesis may set.
    pub const MAX_BLOCK_TXS: u32 = 100_000;
    /// Largest `max_block_bytes` a genesis may set (keeps every stored block
    /// and message far below the storage and network limits).
    pub const MAX_BLOCK_BYTES: u32 = 32 * 1024 * 1024;
    /// Largest genesis file accepted, in bytes.
    pub const MAX_JSON_BYTES: usize = 64 * 1024 * 1024;
    /// Largest `validator_vote_expiry`, in blocks.
    pub const MAX_VOTE_EXPIRY: u64 = 1_000_000;

    /// Parses and validates genesis JSON.
    pub fn from_json(text: &str) -> Result<Genesis, GenesisError> {
        if text.len() > Self::MAX_JSON_BYTES {
            return Err(GenesisError::Parse(format!(
                "file is {} bytes, more than {}",
                text.len(),
                Self::MAX_JSON_BYTES
            )));
        }
        let genesis: Genesis =
            serde_json::from_str(text).map_err(|e| GenesisError::Parse(e.to_string()))?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// Pretty JSON, as written to `genesis.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The genesis hash: blake3(borsh(genesis)).
    pub fn hash(&self) -> Hash {
        Hash::digest(&borsh::to_vec(self).unwrap_or_default())
    }

    /// Checks every rule a genesis must satisfy.
    pub fn validate(&self) -> Result<(), GenesisError> {
        self.validate_validators()?;
        self.total_supply()?;
        let mut accounts = BTreeSet::new();
        for balance in &self.balances {
            if !balance.address.is_valid_key() {
                return Err(GenesisError::BadKey(balance.address));
            }
            if !accounts.insert(balance.address) {
                return Err(GenesisError::DuplicateBalance(balance.address));
            }
        }
        if self.params.max_block_txs == 0 || self.params.max_block_txs > Self::MAX_BLOCK_TXS {
            return Err(GenesisError::BadParams(format!(
                "max_block_txs must be 1 to {}",
                Self::MAX_BLOCK_TXS
            )));
        }
        if self.params.max_block_bytes > Self::MAX_BLOCK_BYTES {
            return Err(GenesisError::BadParams(format!(
                "max_block_bytes must be at most {}",
                Self::MAX_BLOCK_BYTES
            )));
        }
        if self.params.min_validators == 0
            || self.params.min_validators as usize > self.validators.len()
        {
            return Err(GenesisError::BadParams(format!(
                "min_validators must be 1 to the number of validators ({})",
                self.validators.len()
            )));
        }
        if self.params.validator_vote_expiry == 0
            || self.params.validator_vote_expiry > Self::MAX_VOTE_EXPIRY
        {
            return Err(GenesisError::BadParams(format!(
                "validator_vote_expiry must be 1 to {} blocks",
                Self::MAX_VOTE_EXPIRY
            )));
        }
        if (self.params.max_block_bytes as usize) < crate::tx::MAX_TX_BYTES {
            return Err(GenesisError::BadParams(format!(
                "max_block_bytes must be at least {}",
                crate::tx::MAX_TX_BYTES
            )));
        }
        Ok(())
    }

    fn validate_validators(&self) -> Result<(), GenesisError> {
        if self.validators.is_empty() {
            return Err(GenesisError::NoValidators);
        }
        if self.validators.len() > Self::MAX_VALIDATORS {
            return Err(GenesisError::TooManyValidators(self.validators.len()));
        }
        let mut keys = BTreeSet::new();
        let mut names = BTreeSet::new();
        let mut total: u64 = 0;
        for v in &self.validators {
            if v.name.is_empty() || v.name.len() > 64 {
                return Err(GenesisError::BadName(v.name.clone()));
            }
            if !v.address.is_valid_key() {
                return Err(GenesisError::BadKey(v.address));
            }
            if !keys.insert(v.address) {
                return Err(GenesisError::DuplicateValidator(v.address));
            }
            if !names.insert(v.name.as_str()) {
                return Err(GenesisError::DuplicateName(v.name.clone()));
            }
            if v.power == 0 {
                return Err(GenesisError::ZeroPower(v.name.clone()));
            }
            total = total
                .checked_add(v.power)
                .filter(|t| *t <= Self::MAX_TOTAL_POWER)
                .ok_or(GenesisError::PowerOverflow)?;
        }
        Ok(())
    }

    /// The sum of initial balances.
    pub fn total_supply(&self) -> Result<u64, GenesisError> {
        self.balances.iter().try_fold(0u64, |sum, b| {
            sum.checked_add(b.amount)
                .ok_or(GenesisError::BalanceOverflow)
        })
    }

    /// The validator set.
    pub fn validator_set(&self) -> ValidatorSet {
        ValidatorSet {
            validators: self.validators.clone(),
        }
    }
}

/// The validators and their voting power, in order (the genesis order, then
/// validators added by vote appended).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ValidatorSet {
    validators: Vec<GenesisValidator>,
}

impl ValidatorSet {
    /// A set of these validators, in this order (the caller keeps the rules
    /// of [`ValidatorSet::is_well_formed`]).
    pub fn new(validators: Vec<GenesisValidator>) -> ValidatorSet {
        ValidatorSet { validators }
    }

    /// Whether the set keeps the rules a genesis set keeps: 1 to 256
    /// validators, distinct usable keys and names, names of 1 to 64 bytes,
    /// power at least 1, total power at most 2^60. A set read from disk is
    /// checked with this before it is used.
    pub fn is_well_formed(&self) -> bool {
        let probe = Genesis {
            chain_id: match ChainId::new("probe") {
                Ok(id) => id,
                Err(_) => return false,
            },
            genesis_time_ms: 0,
            params: Params::default(),
            validators: self.validators.clone(),
            balances: Vec::new(),
        };
        probe.validate_validators().is_ok()
    }

    /// The validators in genesis order.
    pub fn validators(&self) -> &[GenesisValidator] {
        &self.validators
    }

    /// The power of `address`, if it is a validator.
    pub fn power_of(&self, address: &Address) -> Option<u64> {
        self.validators
            .iter()
            .find(|v| &v.address == address)
            .map(|v| v.power)
    }

    /// Sum of all voting power (validated to fit).
    pub fn total_power(&self) -> u64 {
        self.validators.iter().map(|v| v.power).sum()
    }

    /// blake3("tally/validators/v2" ‖ u32 count ‖ (address ‖ u64 power)…),
    /// in genesis order: what a header's `validators_hash` names.
    pub fn hash(&self) -> Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(crate::domain::VALIDATORS);
        hasher.update(&(self.validators.len() as u32).to_le_bytes());
        for v in &self.validators {
            hasher.update(&v.address.0);
            hasher.update(&v.power.to_le_bytes());
        }
        Hash(*hasher.finalize().as_bytes())
    }

    /// The smallest power that is more than two thirds of the total: the
    /// weight of 2f+1 of 3f+1 equal validators.
    pub fn quorum_power(&self) -> u64 {
        self.total_power() * 2 / 3 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet_key;

    fn genesis() -> Genesis {
        Genesis {
            chain_id: ChainId::new("t").unwrap(),
            genesis_time_ms: 0,
            params: Params::default(),
            validators: vec![GenesisValidator {
                name: "v0".into(),
                address: devnet_key("validator-0").address(),
                power: 1,
            }],
            balances: vec![GenesisBalance {
                address: devnet_key("alice").address(),
                amount: 10,
            }],
        }
    }

    #[test]
    fn json_round_trip_keeps_the_hash() {
        let g = genesis();
        let parsed = Genesis::from_json(&g.to_json()).unwrap();
        assert_eq!(parsed.hash(), g.hash());
    }

    #[test]
    fn each_rule_has_a_clear_error() {
        let mut g = genesis();
        g.validators.push(g.validators[0].clone());
        g.validators[1].name = "v1".into();
        assert!(matches!(
            g.validate(),
            Err(GenesisError::DuplicateValidator(_))
        ));

        let mut g = genesis();
        g.validators[0].power = 0;
        assert_eq!(g.validate(), Err(GenesisError::ZeroPower("v0".into())));

        let mut g = genesis();
        g.balances.push(GenesisBalance {
            address: devnet_key("bob").address(),
            amount: u64::MAX,
        });
        assert_eq!(g.validate(), Err(GenesisError::BalanceOverflow));

        let mut g = genesis();
        g.validators.clear();
        assert_eq!(g.validate(), Err(GenesisError::NoValidators));

        let mut g = genesis();
        g.params.max_block_bytes = Genesis::MAX_BLOCK_BYTES + 1;
        assert!(matches!(g.validate(), Err(GenesisError::BadParams(_))));
        let mut g = genesis();
        g.params.max_block_txs = 0;
        assert!(matches!(g.validate(), Err(GenesisError::BadParams(_))));

        let mut g = genesis();
        g.balances.push(g.balances[0].clone());
        assert!(matches!(
            g.validate(),
            Err(GenesisError::DuplicateBalance(_))
        ));

        let text = genesis()
            .to_json()
            .replace(&devnet_key("validator-0").address().to_text(), "tally1qqqq");
        assert!(matches!(
            Genesis::from_json(&text),
            Err(GenesisError::Parse(_))
        ));
    }

    #[test]
    fn quorum_is_more_than_two_thirds() {
        let mut g = genesis();
        for i in 1..4 {
            g.validators.push(GenesisValidator {
                name: format!("v{i}"),
                address: devnet_key(&format!("validator-{i}")).address(),
                power: 1,
            });
        }
        assert_eq!(g.validator_set().quorum_power(), 3);
        g.validators.truncate(1);
        assert_eq!(g.validator_set().quorum_power(), 1);
    }
}

/// A genesis with what is derived from it, computed once.
#[derive(Debug, Clone)]
pub struct ChainContext {
    /// The genesis.
    pub genesis: Genesis,
    /// Its hash.
    pub genesis_hash: Hash,
    /// Its validator set.
    pub validators: ValidatorSet,
    /// Operator overrides of the validator set, by the first height each
    /// set signs ([`ChainContext::with_overrides`]).
    pub overrides: std::collections::BTreeMap<u64, ValidatorSet>,
}

/// Why a list of validator-set overrides is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// Height 0 or 1 (the genesis set signs block 1: change genesis.json
    /// before the chain starts instead).
    #[error("validator override at height {0}: an override takes effect at height 2 or later")]
    TooLow(u64),
    /// Two overrides at one height, or at consecutive heights.
    #[error("validator overrides at heights {0} and {1}: they must be at least 2 heights apart")]
    TooClose(u64, u64),
    /// A set that breaks the set rules.
    #[error("validator override at height {height}: {reason}")]
    BadSet {
        /// Its height.
        height: u64,
        /// What rule it breaks.
        reason: String,
    },
}

impl ChainContext {
    /// Derives the context of a validated genesis.
    pub fn new(genesis: Genesis) -> ChainContext {
        ChainContext {
            genesis_hash: genesis.hash(),
            validators: genesis.validator_set(),
            genesis,
            overrides: std::collections::BTreeMap::new(),
        }
    }

    /// This context with operator overrides: from each `height`, the set
    /// made of `validators` signs, whatever the chain's votes made it
    /// (docs/CONSENSUS.md, "Operator override"). Each set keeps the
    /// genesis set rules; the heights are at least 2 and at least 2 apart
    /// (so the set an override names is the next one its block announces).
    pub fn with_overrides(
        mut self,
        overrides: Vec<(u64, Vec<GenesisValidator>)>,
    ) -> Result<ChainContext, OverrideError> {
        for (height, validators) in overrides {
            if height < 2 {
                return Err(OverrideError::TooLow(height));
            }
            let probe = Genesis {
                validators: validators.clone(),
                ..self.genesis.clone()
            };
            if let Err(e) = probe.validate_validators() {
                return Err(OverrideError::BadSet {
                    height,
                    reason: e.to_string(),
                });
            }
            let min = self.genesis.params.min_validators;
            if validators.len() < min as usize {
                return Err(OverrideError::BadSet {
                    height,
                    reason: format!(
                        "{} validators, fewer than the genesis minimum {min} (votes could never \
                         change such a set; add validators to the override)",
                        validators.len()
                    ),
                });
            }
            let near = self
                .overrides
                .range(height.saturating_sub(1)..=height.saturating_add(1))
                .next()
                .map(|(h, _)| *h);
            if let Some(other) = near {
                return Err(OverrideError::TooClose(
                    other.min(height),
                    other.max(height),
                ));
            }
            self.overrides.insert(height, ValidatorSet::new(validators));
        }
        Ok(self)
    }

    /// The set an operator override puts in force at `height`, if any.
    pub fn override_at(&self, height: u64) -> Option<&ValidatorSet> {
        self.overrides.get(&height)
    }

    /// What names this context's overrides, for nodes to compare:
    /// blake3("tally/validator-override/v1" ‖ borsh(overrides as a list of
    /// (height, validators) in height order)); `None` without overrides.
    pub fn overrides_id(&self) -> Option<Hash> {
        if self.overrides.is_empty() {
            return None;
        }
        let list: Vec<(u64, &[GenesisValidator])> = self
            .overrides
            .iter()
            .map(|(h, set)| (*h, set.validators()))
            .collect();
        let mut bytes = crate::domain::VALIDATOR_OVERRIDE.to_vec();
        bytes.extend(borsh::to_vec(&list).unwrap_or_default());
        Some(Hash::digest(&bytes))
    }

    /// The validator state after a block, as the next block sees it: with
    /// the override of the next height applied, if there is one.
    pub fn state_after(&self, state: crate::ValidatorState) -> crate::ValidatorState {
        match self.override_at(state.height + 1) {
            Some(set) => state.overridden(set),
            None => state,
        }
    }

    /// Checks that `commit` proves block `(height, block_hash)` of this
    /// chain final ([`crate::verify_commit`] with this chain's validators,
    /// chain id and genesis hash).
    pub fn verify_commit(
        &self,
        commit: &crate::Commit,
        height: u64,
        block_hash: &Hash,
    ) -> Result<(), crate::CommitError> {
        crate::verify_commit(
            commit,
            height,
            block_hash,
            &self.validators,
            &self.genesis.chain_id,
            &self.genesis_hash,
        )
    }

    /// The account state before block 1: the genesis balances, nonce 0.
    pub fn genesis_accounts(&self) -> std::collections::BTreeMap<Address, crate::state::Account> {
        self.genesis
            .balances
            .iter()
            .map(|b| {
                (
                    b.address,
                    crate::state::Account {
                        balance: b.amount,
                        nonce: 0,
                    },
                )
            })
            .collect()
    }

    /// The parent of block 1: height 0 with the genesis hash and time.
    pub fn genesis_meta(&self) -> crate::chain::BlockMeta {
        crate::chain::BlockMeta {
            height: 0,
            hash: self.genesis_hash,
            timestamp_ms: self.genesis.genesis_time_ms,
        }
    }
}
