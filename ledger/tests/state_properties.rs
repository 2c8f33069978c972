//! Property tests of the state transition: the ledger's invariants hold for
//! any sequence of transfers, valid or not.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use std::collections::BTreeMap;

use proptest::prelude::*;
use tally_ledger::{
    apply_transaction, build_block, devnet_key, execute_block, Account, Address, ApplyError,
    ChainContext, ChainId, Genesis, GenesisBalance, GenesisValidator, Keypair, Params, SigCheck,
    StateOverlay, Transaction,
};

const ACCOUNTS: usize = 4;

fn keys() -> Vec<Keypair> {
    (0..ACCOUNTS)
        .map(|i| devnet_key(&format!("prop-{i}")))
        .collect()
}

fn proposer() -> Keypair {
    devnet_key("validator-0")
}

fn supply(state: &BTreeMap<Address, Account>) -> u128 {
    state.values().map(|a| a.balance as u128).sum()
}

/// Amounts that stress the edges: zero, one, the maximum, and random values.
fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        0..1_000u64,
        any::<u64>()
    ]
}

/// A transfer description: sender, recipient (possibly the sender), amount,
/// fee, and how its nonce relates to the sender's next nonce.
#[derive(Debug, Clone)]
struct Step {
    from: usize,
    to: usize,
    amount: u64,
    fee: u64,
    nonce_offset: i8,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..ACCOUNTS,
        0..ACCOUNTS,
        amount(),
        prop_oneof![Just(0u64), Just(1), 0..10u64, Just(u64::MAX)],
        prop_oneof![4 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)],
    )
        .prop_map(|(from, to, amount, fee, nonce_offset)| Step {
            from,
            to,
            amount,
            fee,
            nonce_offset,
        })
}

/// Initial balances whose sum fits in u64, including empty and huge ones.
fn balances() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(
        prop_oneof![Just(0u64), 0..10_000u64, Just(u64::MAX / 8)],
        ACCOUNTS,
    )
}

fn initial_state(balances: &[u64]) -> BTreeMap<Address, Account> {
    keys()
        .iter()
        .zip(balances)
        .map(|(k, b)| {
            (
                k.address(),
                Account {
                    balance: *b,
                    nonce: 0,
                },
            )
        })
        .collect()
}

fn to_tx(state: &BTreeMap<Address, Account>, step: &Step) -> Transaction {
    let keys = keys();
    let from = keys[step.from].address();
    let next = state.get(&from).copied().unwrap_or_default().nonce;
    Transaction {
        chain_id: ChainId::new("prop").unwrap(),
        from,
        to: keys[step.to].address(),
        amount: step.amount,
        fee: step.fee,
        nonce: next.saturating_add_signed(step.nonce_offset as i64),
    }
}

proptest! {
    /// Ledger rule: total supply is conserved by every transfer, and fees
    /// move to the proposer. Rule: a rejected transfer changes nothing.
    /// Rule: nonces are strictly sequential, one per applied transfer.
    #[test]
    fn transfers_conserve_supply_and_nonces(balances in balances(), steps in proptest::collection::vec(step(), 0..40)) {
        let mut state = initial_state(&balances);
        let start_supply = supply(&state);
        let proposer = proposer().address();
        for step in &steps {
            let tx = to_tx(&state, step);
            let before = state.clone();
            let sender_before = before.get(&tx.from).copied().unwrap_or_default();
            let mut overlay = StateOverlay::new(&before);
            let result = apply_transaction(&mut overlay, &tx, &proposer);
            let changes = overlay.into_changes();
            match result {
                Ok(()) => {
                    prop_assert_eq!(tx.nonce, sender_before.nonce);
                    state.extend(changes);
                    let sender_after = state[&tx.from];
                    prop_assert_eq!(sender_after.nonce, sender_before.nonce + 1);
                    prop_assert!(tx.amount.checked_add(tx.fee).is_some());
                }
                Err(ApplyError::Tx(_)) => {
                    prop_assert!(changes.is_empty(), "a rejected transfer changed {:?}", changes);
                }
                Err(ApplyError::Storage(e)) => prop_assert!(false, "in-memory state failed: {e}"),
            }
            prop_assert_eq!(supply(&state), start_supply);
        }
    }

    /// Rule: the block a proposer builds is valid for every other node, and
    /// executing it yields exactly the proposer's state changes; a rejected
    /// candidate in the middle does not stop the ones after it.
    #[test]
    fn built_blocks_execute_identically(balances in balances(), steps in proptest::collection::vec(step(), 0..12)) {
        let keys = keys();
        let genesis = Genesis {
            chain_id: ChainId::new("prop").unwrap(),
            genesis_time_ms: 1_000,
            params: Params { min_fee: 0, ..Params::default() },
            validators: vec![GenesisValidator { name: "v".into(), address: proposer().address(), power: 1 }],
            balances: keys.iter().zip(&balances).map(|(k, b)| GenesisBalance { address: k.address(), amount: *b }).collect(),
        };
        let chain = ChainContext::new(genesis);
        let state = initial_state(&balances);
        // Candidates carry nonces as a wallet would assign them in sequence.
        let mut next: BTreeMap<Address, u64> = BTreeMap::new();
        let candidates: Vec<_> = steps.iter().map(|s| {
            let mut tx = to_tx(&state, s);
            let n = next.entry(tx.from).or_insert(0);
            tx.nonce = n.saturating_add_signed(s.nonce_offset as i64);
            if s.nonce_offset == 0 { *n += 1; }
            tx.sign(&keys[s.from], &chain.genesis_hash)
        }).collect();
        let built = build_block(&state, &chain, &chain.genesis_meta(), proposer().address(), 2_000, candidates.clone()).unwrap();
        prop_assert_eq!(built.block.txs.len() + built.rejected.len(), candidates.len());
        let executed = execute_block(&state, &chain, &chain.genesis_meta(), &built.block, SigCheck::Verify).unwrap();
        prop_assert_eq!(&executed, &built.executed);
        let mut after = state.clone();
        after.extend(executed.accounts);
        prop_assert_eq!(supply(&after), supply(&state));
    }
}
