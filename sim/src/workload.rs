//! The clients: funded accounts sending transfers to random nodes, asking
//! the node for the next nonce as a wallet does; a share of them invalid on
//! purpose (bad signatures, other chains and genesis, nonce gaps, replays,
//! overspending, overflow, fees below the minimum).

use rand::Rng;
use tally_host::Signature;
use tally_ledger::{ChainId, Hash, SignedTransaction, Transaction};

use crate::byzantine::To;
use crate::world::{Sim, Topic, CLIENTS};

impl Sim {
    pub(crate) fn client(&mut self) {
        let c = self.rng.gen_range(0..CLIENTS);
        let i = self.rng.gen_range(0..self.nodes.len());
        if !self.nodes[i].up {
            self.stats.unavailable += 1;
            return;
        }
        let key = self.clients[c].clone();
        let from = key.address();
        let to = self.clients[(c + self.rng.gen_range(1..CLIENTS)) % CLIENTS].address();
        let chain = self.nodes[i].chain.clone();
        let account = chain.store().account(&from).unwrap_or_default();
        let nonce = chain.next_nonce(&from, &account);
        let mut tx = Transaction::transfer(
            self.chain.genesis.chain_id.clone(),
            from,
            to,
            self.rng.gen_range(1..=1_000),
            self.rng.gen_range(1..=5),
            nonce,
        );
        let genesis_hash = self.chain.genesis_hash;
        let bad = self.rng.gen_bool(self.profile.invalid_share);
        let (signed, never_valid) = if !bad {
            (tx.sign(&key, &genesis_hash), false)
        } else {
            match self.rng.gen_range(0..8) {
                0 => {
                    let mut s = tx.sign(&key, &genesis_hash);
                    s.signature.0[self.rng.gen_range(0..64)] ^= 1 << self.rng.gen_range(0..8);
                    (s, true)
                }
                1 => (tx.sign(&key, &Hash::digest(b"another genesis")), true),
                2 => {
                    tx.chain_id = ChainId::new("another-chain").unwrap_or_else(|_| unreachable!());
                    (tx.sign(&key, &genesis_hash), true)
                }
                3 => {
                    tx.nonce += self.rng.gen_range(1..20);
                    (tx.sign(&key, &genesis_hash), false)
                }
                4 => match self.recent.front().cloned() {
                    Some(bytes) => {
                        self.stats.submitted += 1;
                        self.submit(i, &bytes);
                        return;
                    }
                    None => (tx.sign(&key, &genesis_hash), false),
                },
                5 => {
                    // More than any balance can be: the whole supply.
                    set_amount(&mut tx, self.checker.supply());
                    (tx.sign(&key, &genesis_hash), true)
                }
                6 => {
                    set_amount(&mut tx, u64::MAX);
                    (tx.sign(&key, &genesis_hash), true)
                }
                _ => {
                    tx.fee = 0;
                    (tx.sign(&key, &genesis_hash), true)
                }
            }
        };
        let bytes = signed.encode();
        if never_valid {
            self.checker.never_valid(signed.id());
        } else {
            if self.recent.len() >= 64 {
                self.recent.pop_back();
            }
            self.recent.push_front(bytes.clone());
        }
        self.stats.submitted += 1;
        self.submit(i, &bytes);
    }

    /// What `tx_submit` does: decode, check, admit, gossip, and tell the
    /// host there is work.
    /// Returns why the node refused it, if it did.
    pub(crate) fn submit(&mut self, i: usize, bytes: &[u8]) -> Option<String> {
        let Ok(tx) = SignedTransaction::decode(bytes) else {
            return Some("does not decode".into());
        };
        let now = self.local_now(i);
        if let Err(e) = self.nodes[i].chain.admit(tx, Signature::Check, now) {
            return Some(format!("{e:?}"));
        }
        self.stats.admitted += 1;
        let batch = tally_ledger::encode_tx_batch(&[bytes.to_vec()]);
        self.gossip(i, &To::All, Topic::Transactions, batch);
        self.with_host(i, |h| h.on_work());
        None
    }
}

fn set_amount(tx: &mut tally_ledger::Transaction, to_send: u64) {
    if let tally_ledger::Action::Transfer { amount, .. } = &mut tx.action {
        *amount = to_send;
    }
}
