//! Property tests of the state transition: the ledger's invariants hold for
//! any sequence of transfers, valid or not.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use std::collections::BTreeMap;

use proptest::prelude::*;
use tally_ledger::state_tree::MemoryState;
use tally_ledger::{
    apply_transaction, build_block, devnet_key, execute_block, Account, Address, ApplyError,
    BlockInputs, ChainContext, ChainId, Genesis, GenesisBalance, GenesisValidator, Keypair, Params,
    SigCheck, StateOverlay, Transaction,
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
    Transaction::transfer(
        ChainId::new("prop").unwrap(),
        from,
        keys[step.to].address(),
        step.amount,
        step.fee,
        next.saturating_add_signed(step.nonce_offset as i64),
    )
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
                    prop_assert!(tx.amount().checked_add(tx.fee).is_some());
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
        let tree_state = MemoryState::genesis(&chain).unwrap();
        let built = build_block(&tree_state, &chain, &chain.genesis_meta(), BlockInputs { proposer: proposer().address(), now_ms: 2_000, candidates: candidates.clone(), last_commit: None, evidence: Vec::new() }).unwrap();
        prop_assert_eq!(built.block.txs.len() + built.rejected.len(), candidates.len());
        let executed = execute_block(&tree_state, &chain, &chain.genesis_meta(), &built.block, SigCheck::Verify).unwrap();
        prop_assert_eq!(&executed, &built.executed);
        let mut after = state.clone();
        after.extend(executed.accounts);
        prop_assert_eq!(supply(&after), supply(&state));
    }
}

/// A block of transfers among `keys` and to fresh recipients.
#[derive(Debug, Clone)]
struct Transfer {
    from: usize,
    /// Below ACCOUNTS: one of the keys; above: a fresh address.
    to: usize,
    amount: u64,
}

fn transfers() -> impl Strategy<Value = Vec<Vec<Transfer>>> {
    let transfer = (0..ACCOUNTS, 0..ACCOUNTS + 4, 0..50u64)
        .prop_map(|(from, to, amount)| Transfer { from, to, amount });
    proptest::collection::vec(proptest::collection::vec(transfer, 0..6), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The state root after a sequence of blocks is the root of a tree built
    /// from scratch over the resulting accounts; every account proves
    /// against it, absent ones by exclusion; a flipped byte in a proof, a
    /// value or the root fails.
    #[test]
    fn state_root_matches_a_fresh_tree_and_proofs_verify(
        blocks in transfers(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        use tally_ledger::state_tree::{prove_account, update_tree, verify_account, AccountProof, MemoryTree};
        let keys = keys();
        let fresh = |i: usize| devnet_key(&format!("fresh-{i}")).address();
        let genesis = Genesis {
            chain_id: ChainId::new("prop").unwrap(),
            genesis_time_ms: 1_000,
            params: Params { min_fee: 0, ..Params::default() },
            validators: vec![GenesisValidator { name: "v".into(), address: proposer().address(), power: 1 }],
            balances: keys.iter().map(|k| GenesisBalance { address: k.address(), amount: 1_000 }).collect(),
        };
        let chain = ChainContext::new(genesis);
        let mut state = MemoryState::genesis(&chain).unwrap();
        let mut parent = chain.genesis_meta();
        for (height, block) in blocks.iter().enumerate() {
            let mut nonces: BTreeMap<Address, u64> = BTreeMap::new();
            let candidates = block.iter().map(|t| {
                let from = keys[t.from].address();
                let nonce = nonces.entry(from).or_insert_with(|| state.accounts().get(&from).map_or(0, |a| a.nonce));
                let to = if t.to < ACCOUNTS { keys[t.to].address() } else { fresh(t.to) };
                let tx = Transaction::transfer(chain.genesis.chain_id.clone(), from, to, t.amount, 0, *nonce);
                *nonce += 1;
                tx.sign(&keys[t.from], &chain.genesis_hash)
            }).collect();
            let built = build_block(&state, &chain, &parent, BlockInputs { proposer: proposer().address(), now_ms: 2_000, candidates, last_commit: None, evidence: Vec::new() }).unwrap();
            prop_assert_eq!(built.block.header.height, height as u64 + 1);
            state.apply(&built.block, &built.executed).unwrap();
            parent = tally_ledger::BlockMeta { height: built.block.header.height, hash: built.executed.hash, timestamp_ms: 2_000 };
            prop_assert_eq!(state.root(), built.block.header.state_root);
        }
        let all: Vec<(Address, Account)> = state.accounts().iter().map(|(a, b)| (*a, *b)).collect();
        let scratch = update_tree(&MemoryTree::default(), 0, &all).unwrap();
        prop_assert_eq!(scratch.root, state.root());

        let version = state.version();
        let root = state.root();
        let mut addresses: Vec<Address> = all.iter().map(|(a, _)| *a).collect();
        addresses.extend((ACCOUNTS..ACCOUNTS + 8).map(fresh));
        addresses.push(devnet_key("never-seen").address());
        for address in &addresses {
            let (account, proof) = prove_account(&state, version, address).unwrap();
            prop_assert_eq!(account, state.accounts().get(address).copied().unwrap_or_default());
            prop_assert!(verify_account(&root, address, &account, &proof).is_ok());
            // A changed value, another root, a flipped proof byte: refused.
            let more = Account { balance: account.balance ^ 1, ..account };
            prop_assert!(verify_account(&root, address, &more, &proof).is_err());
            let mut other_root = root;
            other_root.0[flip.1 as usize % 32] ^= 1;
            prop_assert!(verify_account(&other_root, address, &account, &proof).is_err());
            let mut bytes = borsh::to_vec(&proof).unwrap();
            let at = flip.0.index(bytes.len());
            bytes[at] ^= 1 << (flip.1 % 8);
            if let Ok(bent) = borsh::from_slice::<AccountProof>(&bytes) {
                prop_assert!(verify_account(&root, address, &account, &bent).is_err(), "flipped byte {} passes", at);
            }
        }
    }
}
