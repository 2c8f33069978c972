//! The genesis documents Tally ships: the single-validator dev chain and the
//! devnet (root `genesis.json`), built from the public devnet keys.

use crate::{devnet_key, ChainId, Genesis, GenesisBalance, GenesisError, GenesisValidator, Params};

/// 2026-01-01T00:00:00Z: the fixed genesis time of the dev chain and devnet.
pub const DEVNET_GENESIS_TIME_MS: u64 = 1_767_225_600_000;

/// Accounts funded in every devnet genesis.
pub const DEV_ACCOUNTS: [&str; 3] = ["alice", "bob", "carol"];

/// Starting balance of each dev account.
pub const DEV_ACCOUNT_BALANCE: u64 = 1_000_000_000_000;

/// The name of devnet validator `i`.
pub fn validator_name(i: usize) -> String {
    format!("validator-{i}")
}

/// A genesis with `validators` devnet validators (power 1 each) and the dev
/// accounts funded. Chain `tally-dev` for one validator (`tally dev`),
/// `tally-devnet` otherwise.
pub fn devnet_genesis(validators: usize, chain_id: &str) -> Result<Genesis, GenesisError> {
    let genesis = Genesis {
        chain_id: ChainId::new(chain_id).map_err(|e| GenesisError::Parse(e.to_string()))?,
        genesis_time_ms: DEVNET_GENESIS_TIME_MS,
        params: Params::default(),
        validators: (0..validators)
            .map(|i| GenesisValidator {
                name: validator_name(i),
                address: devnet_key(&validator_name(i)).address(),
                power: 1,
            })
            .collect(),
        balances: DEV_ACCOUNTS
            .iter()
            .map(|name| GenesisBalance {
                address: devnet_key(name).address(),
                amount: DEV_ACCOUNT_BALANCE,
            })
            .collect(),
    };
    genesis.validate()?;
    Ok(genesis)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed root genesis.json is exactly `tally genesis new --devnet 4`.
    #[test]
    fn root_genesis_matches_the_devnet_keys() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../genesis.json"))
            .unwrap();
        let shipped = Genesis::from_json(&text).unwrap();
        assert_eq!(shipped, devnet_genesis(4, "tally-devnet").unwrap());
    }
}
