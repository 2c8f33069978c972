//! Who proposes: a deterministic rotation weighted by voting power.

use tally_ledger::{Address, ValidatorSet};

/// The proposer of `(height, round)`. Round 0: the validator at position
/// `height mod total_power` on the line of validators laid end to end, each
/// as long as its power, in genesis order — so each validator proposes
/// heights in proportion to its power. Round r: the r-th next validator in
/// genesis order after that one — so every round moves to a different
/// validator and a crashed proposer costs one round, whatever its power.
pub fn proposer(validators: &ValidatorSet, height: u64, round: u32) -> Address {
    let list = validators.validators();
    if list.is_empty() {
        // Unreachable: a validated genesis has at least one validator.
        return Address([0; 32]);
    }
    let total = validators.total_power().max(1);
    let slot = height % total;
    let mut end = 0u64;
    let mut first = 0usize;
    for (i, v) in list.iter().enumerate() {
        end += v.power;
        if slot < end {
            first = i;
            break;
        }
    }
    list[(first + round as usize % list.len()) % list.len()].address
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

    #[test]
    fn a_heavy_validator_does_not_propose_consecutive_rounds() {
        let mut genesis = devnet_genesis(4, "t").unwrap();
        genesis.validators[0].power = 97;
        let set = genesis.validator_set();
        let heavy = genesis.validators[0].address;
        assert_eq!(proposer(&set, 0, 0), heavy);
        for round in 1..4 {
            assert_ne!(proposer(&set, 0, round), heavy, "round {round}");
        }
        assert_eq!(proposer(&set, 0, 4), heavy, "back after the other three");
    }
}
