//! Who proposes: a deterministic rotation weighted by voting power.

use tally_ledger::{Address, ValidatorSet};

/// The proposer of `(height, round)`: position `(height + round) mod
/// total_power` on the line of validators laid end to end, each as long as
/// its power, in genesis order. Every validator proposes in proportion to
/// its power, and consecutive rounds move to the next slot, so a crashed
/// proposer delays a height by one round only.
pub fn proposer(validators: &ValidatorSet, height: u64, round: u32) -> Address {
    let total = validators.total_power().max(1);
    let slot = ((height as u128 + round as u128) % total as u128) as u64;
    let mut end = 0u64;
    for v in validators.validators() {
        end += v.power;
        if slot < end {
            return v.address;
        }
    }
    // Unreachable with a validated genesis (power sums to `total`).
    validators.validators()[0].address
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_ledger::devnet::devnet_genesis;

    #[test]
    fn rotates_through_equal_validators() {
        let set = devnet_genesis(4, "t").unwrap().validator_set();
        let order: Vec<Address> = (0..4).map(|r| proposer(&set, 1, r)).collect();
        let distinct: std::collections::BTreeSet<_> = order.iter().collect();
        assert_eq!(distinct.len(), 4, "four rounds, four proposers");
        assert_eq!(
            proposer(&set, 1, 1),
            proposer(&set, 2, 0),
            "next round = next slot"
        );
    }

    #[test]
    fn weighted_by_power() {
        let mut genesis = devnet_genesis(2, "t").unwrap();
        genesis.validators[0].power = 3;
        let set = genesis.validator_set();
        let heavy = genesis.validators[0].address;
        let count = (0..400).filter(|h| proposer(&set, *h, 0) == heavy).count();
        assert_eq!(count, 300);
    }
}
