//! The one memory of checked signatures. A transaction can reach a node
//! three ways — from a client over RPC, from a peer by gossip, inside a
//! proposal or a synced block — and usually by more than one. Whichever
//! comes first checks its signature; the others find its id here and skip
//! the check. An id is the blake3 hash of the whole signed encoding and the
//! signing message covers the chain, so a remembered id stands for exactly
//! the bytes that were found valid on this chain.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use tally_ledger::{verify_signatures, Hash, SignedTransaction};

/// Transaction ids remembered as checked (about 100 bytes each): several
/// full mempools' worth, so a transaction admitted from a client is still
/// known when the block carrying it arrives.
pub const REMEMBERED_TXS: usize = 200_000;

/// A bounded set of ids, the oldest forgotten first.
#[derive(Default)]
struct Ids {
    set: HashSet<Hash>,
    order: VecDeque<Hash>,
}

/// Ids of transactions whose signatures this node found valid, the last
/// [`REMEMBERED_TXS`] of them. Shared by RPC admission, the gossip intake
/// and block validation.
#[derive(Default)]
pub struct CheckedTxs {
    ids: Mutex<Ids>,
}

impl CheckedTxs {
    /// Whether `id`'s signature was found valid.
    pub fn contains(&self, id: &Hash) -> bool {
        self.lock().set.contains(id)
    }

    /// Which of `ids` are known as checked.
    pub fn known(&self, ids: &[Hash]) -> Vec<bool> {
        let ids_now = self.lock();
        ids.iter().map(|id| ids_now.set.contains(id)).collect()
    }

    /// Remembers `ids` as checked.
    pub fn remember<'a>(&self, ids: impl IntoIterator<Item = &'a Hash>) {
        let mut known = self.lock();
        for id in ids {
            if known.set.insert(*id) {
                known.order.push_back(*id);
                if known.order.len() > REMEMBERED_TXS {
                    if let Some(old) = known.order.pop_front() {
                        known.set.remove(&old);
                    }
                }
            }
        }
    }

    /// Whether each of `txs` (with their `ids`) is validly signed for the
    /// chain of `genesis_hash`: the known ones without a check, the others
    /// checked in batches ([`verify_signatures`]) on the calling thread and
    /// remembered when valid. The same verdicts as checking each alone.
    pub fn verify(
        &self,
        txs: &[&SignedTransaction],
        ids: &[Hash],
        genesis_hash: &Hash,
    ) -> Vec<bool> {
        let mut verdicts = self.known(ids);
        let todo: Vec<usize> = (0..txs.len()).filter(|&i| !verdicts[i]).collect();
        if todo.is_empty() {
            return verdicts;
        }
        let fresh: Vec<&SignedTransaction> = todo.iter().map(|&i| txs[i]).collect();
        let checked = verify_signatures(&fresh, genesis_hash);
        for (&i, ok) in todo.iter().zip(checked) {
            verdicts[i] = ok;
        }
        self.remember(todo.iter().filter(|&&i| verdicts[i]).map(|&i| &ids[i]));
        verdicts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tally_ledger::{devnet_key, ChainId, Transaction};

    fn transfer(nonce: u64, genesis: &Hash) -> SignedTransaction {
        let alice = devnet_key("alice");
        Transaction::transfer(
            ChainId::new("c").unwrap(),
            alice.address(),
            devnet_key("bob").address(),
            1,
            1,
            nonce,
        )
        .sign(&alice, genesis)
    }

    #[test]
    fn valid_ones_are_remembered_and_invalid_ones_are_not() {
        let genesis = Hash::digest(b"g");
        let good = transfer(0, &genesis);
        let mut bad = transfer(1, &genesis);
        bad.tx.fee += 1;
        let checked = CheckedTxs::default();
        let (good_id, bad_id) = (good.id(), bad.id());
        assert_eq!(
            checked.verify(&[&good, &bad], &[good_id, bad_id], &genesis),
            [true, false]
        );
        assert!(checked.contains(&good_id));
        assert!(!checked.contains(&bad_id));
        // Asked again, the bad one is checked again and still refused.
        assert_eq!(checked.verify(&[&bad], &[bad_id], &genesis), [false]);
    }

    #[test]
    fn the_oldest_are_forgotten_first() {
        let checked = CheckedTxs::default();
        let ids: Vec<Hash> = (0..REMEMBERED_TXS as u64 + 10)
            .map(|i| Hash::digest(&i.to_le_bytes()))
            .collect();
        checked.remember(&ids);
        assert!(!checked.contains(&ids[9]));
        assert!(checked.contains(&ids[10]));
        assert!(checked.contains(ids.last().unwrap()));
        assert_eq!(checked.lock().set.len(), REMEMBERED_TXS);
    }
}
