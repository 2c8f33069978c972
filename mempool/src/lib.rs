//! Tally's mempool: transactions waiting for a block, in per-sender queues
//! ordered by nonce.
//!
//! # Design
//! Pure and synchronous: the caller passes the committed account state and
//! the time (`now_ms`) in, and learns what was admitted, dropped or expired.
//! A sender's transactions with nonces `n, n+1, …` contiguous from its
//! committed nonce `n` are *pending* (ready for a block); a transaction after
//! a gap is *queued*, waiting for the missing nonce, and expires if the gap is
//! not filled within `queued_ttl_ms`.
//!
//! # Guarantees
//! - Every limit holds at all times: total count and bytes, per-sender count,
//!   and how far ahead of the committed nonce a transaction may be.
//! - A sender's pending transactions are always affordable together from its
//!   committed balance.
//! - A pending transaction is replaced only by the same sender and nonce with
//!   a strictly higher fee.
//!
//! # Not guaranteed
//! - Signature checks: the caller admits only verified transactions.
//! - Fairness beyond first-come order across senders.

use std::collections::{BTreeMap, HashMap};

use tally_ledger::{Account, Address, Hash, SignedTransaction, TxError};

/// Limits of the mempool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Most transactions held (pending and queued).
    pub max_txs: usize,
    /// Most bytes of encoded transactions held.
    pub max_bytes: usize,
    /// Most transactions held for one sender.
    pub max_txs_per_sender: usize,
    /// How far past the sender's next nonce (counting its pending run) a
    /// transaction may be queued.
    pub max_nonce_gap: u64,
    /// How long a queued (gapped) transaction waits before it expires.
    pub queued_ttl_ms: u64,
    /// Percent of `max_txs` and of `max_bytes` that transactions from this
    /// node's own clients may fill: past it, clients are refused
    /// ([`Mempool::client_room`]) and the rest is room for transactions
    /// peers relay, which other nodes already acknowledged to their clients.
    pub client_fill_percent: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_txs: 50_000,
            max_bytes: 32 * 1024 * 1024,
            max_txs_per_sender: 1_024,
            max_nonce_gap: 64,
            queued_ttl_ms: 120_000,
            client_fill_percent: 50,
        }
    }
}

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// The same transaction is already waiting.
    #[error("transaction is already in the mempool")]
    Duplicate,
    /// A ledger rule refuses it in the current state (nonce too low,
    /// insufficient funds).
    #[error(transparent)]
    Invalid(#[from] TxError),
    /// The nonce is further ahead than the pool will queue.
    #[error("nonce {got} is more than {max_gap} ahead of the account's next nonce {expected}")]
    NonceTooFarAhead {
        /// The next nonce (counting pending transactions is up to the wallet).
        expected: u64,
        /// The transaction's nonce.
        got: u64,
        /// The limit.
        max_gap: u64,
    },
    /// Same sender and nonce as a waiting transaction, without a higher fee.
    #[error("a transaction with this nonce is waiting with fee {existing_fee}; a replacement must pay more than that")]
    ReplacementUnderpriced {
        /// Fee of the waiting transaction.
        existing_fee: u64,
    },
    /// This sender already has the most transactions allowed.
    #[error("sender has {limit} transactions waiting, the most allowed")]
    SenderFull {
        /// The limit.
        limit: usize,
    },
    /// The pool is at its count or byte limit.
    #[error("mempool full: {0}")]
    Full(String),
    /// The transaction with this sender and nonce is in the block being
    /// committed right now; it can no longer be replaced.
    #[error("the transaction with nonce {nonce} is in the block being committed and can no longer be replaced")]
    InBlock {
        /// The nonce.
        nonce: u64,
    },
}

/// Where an admitted transaction waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    /// Ready for the next block.
    Pending,
    /// Behind a gap: waiting for the transaction with this nonce.
    Queued {
        /// The missing nonce.
        waiting_for: u64,
    },
}

/// The result of an admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Where the transaction waits.
    pub state: PoolState,
    /// The transaction it replaced, if any.
    pub replaced: Option<Hash>,
}

/// One transaction a sender has in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldTx {
    /// Its id.
    pub id: Hash,
    /// Its nonce.
    pub nonce: u64,
    /// Its fee.
    pub fee: u64,
    /// When it arrived (the caller's clock).
    pub arrived_ms: u64,
}

/// What the pool holds of one sender, and what keeps its queued
/// transactions waiting ([`Mempool::sender_view`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderView {
    /// The nonce its next transaction in a block must carry: the committed
    /// nonce.
    pub committed_nonce: u64,
    /// The nonce a new transaction should carry: past the pending run.
    pub next_nonce: u64,
    /// The run of nonces from `committed_nonce` on, ready for a block.
    pub pending: Vec<HeldTx>,
    /// Transactions behind a gap, in nonce order, each with the time left
    /// before it expires.
    pub queued: Vec<(HeldTx, u64)>,
    /// The nonces missing below the highest queued one: the gaps that hold
    /// the queued transactions back (at most `max_nonce_gap` of them).
    pub missing: Vec<u64>,
}

/// Why a transaction left the pool other than by being included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// It was included in the committed block.
    Committed,
    /// It can no longer apply.
    Invalid(TxError),
}

struct Entry {
    tx: SignedTransaction,
    id: Hash,
    size: usize,
    cost: u64,
    arrived_ms: u64,
    seq: u64,
}

struct Sender {
    next_nonce: u64,
    balance: u64,
    txs: BTreeMap<u64, Entry>,
}

impl Sender {
    /// The nonces contiguous from `next_nonce`: the pending run.
    fn pending(&self) -> impl Iterator<Item = &Entry> {
        let mut expected = self.next_nonce;
        self.txs
            .range(self.next_nonce..)
            .map_while(move |(nonce, entry)| {
                (*nonce == expected).then(|| {
                    expected += 1;
                    entry
                })
            })
    }

    fn first_gap(&self) -> u64 {
        self.next_nonce
            .saturating_add(self.pending().count() as u64)
    }

    fn total_cost(&self) -> u64 {
        self.txs
            .values()
            .map(|e| e.cost)
            .fold(0, u64::saturating_add)
    }
}

/// The pool. See the crate docs.
pub struct Mempool {
    config: Config,
    senders: BTreeMap<Address, Sender>,
    index: HashMap<Hash, (Address, u64)>,
    /// Selected for the block being built and committed: not replaceable.
    in_block: std::collections::HashSet<Hash>,
    bytes: usize,
    next_seq: u64,
    /// How many held transactions are validator-set votes.
    validator_votes: usize,
}

fn is_validator_vote(tx: &SignedTransaction) -> bool {
    matches!(tx.tx.action, tally_ledger::Action::Validator { .. })
}

impl Mempool {
    /// An empty pool with these limits.
    pub fn new(config: Config) -> Mempool {
        Mempool {
            config,
            senders: BTreeMap::new(),
            index: HashMap::new(),
            in_block: std::collections::HashSet::new(),
            bytes: 0,
            next_seq: 0,
            validator_votes: 0,
        }
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of encoded transactions held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the pool takes clients' transactions at all: not once it
    /// holds `max_txs` or `max_bytes` (checked before anything is decoded,
    /// so the excess of an overload costs almost nothing).
    pub fn client_batch_room(&self) -> Result<(), MempoolError> {
        if self.index.len() >= self.config.max_txs {
            return Err(MempoolError::Full(format!(
                "{} transactions held, the limit",
                self.config.max_txs
            )));
        }
        if self.bytes >= self.config.max_bytes {
            return Err(MempoolError::Full(format!(
                "{} bytes held, the limit {}",
                self.bytes, self.config.max_bytes
            )));
        }
        Ok(())
    }

    /// Whether the pool holds less than `client_fill_percent` of `max_txs`
    /// and of `max_bytes`.
    pub fn below_client_share(&self) -> bool {
        let percent = usize::from(self.config.client_fill_percent.min(100));
        let max_txs =
            self.config.max_txs / 100 * percent + self.config.max_txs % 100 * percent / 100;
        let max_bytes = self.config.max_bytes / 100 * percent;
        self.index.len() < max_txs && self.bytes < max_bytes
    }

    /// Whether a client's transaction may be admitted. Below
    /// `client_fill_percent` of `max_txs` and `max_bytes`, any; above it,
    /// only one that fills the gap in front of the sender's queued
    /// transactions (so that waiting transactions cannot hold room that
    /// the transaction they wait for is then refused), and the rest is
    /// room for what peers relay (which other nodes acknowledged to their
    /// clients). Under overload this keeps the backlog, and the wait of
    /// what is admitted, short. `account` as for [`Mempool::insert`].
    pub fn client_room(
        &self,
        tx: &SignedTransaction,
        account: &Account,
    ) -> Result<(), MempoolError> {
        self.client_batch_room()?;
        if self.below_client_share() {
            return Ok(());
        }
        let percent = self.config.client_fill_percent.min(100);
        let sender = self.senders.get(&tx.tx.from);
        let gap = sender.map_or(account.nonce, Sender::first_gap);
        let waiting = sender
            .and_then(|s| s.txs.keys().next_back())
            .is_some_and(|&last| last > gap);
        if waiting && tx.tx.nonce == gap {
            return Ok(());
        }
        Err(MempoolError::Full(format!(
            "{} transactions held, over {percent}% of max_txs {} (the rest is kept for \
             peers' transactions)",
            self.index.len(),
            self.config.max_txs
        )))
    }

    /// Whether [`Mempool::insert`] needs the committed state of `from`: only
    /// when the pool holds nothing from it (otherwise the pool's own view
    /// of the sender, which starts from that state, is used).
    pub fn needs_account(&self, from: &Address) -> bool {
        !self.senders.contains_key(from)
    }

    /// The checks of [`Mempool::insert`] that depend on the nonce alone
    /// (duplicate, nonce used, too far ahead, replacement): cheap, so an
    /// admission runs them before it spends a signature check on a
    /// transaction the pool would refuse anyway. `account` as for `insert`.
    pub fn precheck(
        &self,
        tx: &SignedTransaction,
        id: &Hash,
        account: &Account,
    ) -> Result<(), MempoolError> {
        if self.index.contains_key(id) {
            return Err(MempoolError::Duplicate);
        }
        let (from, nonce) = (tx.tx.from, tx.tx.nonce);
        let sender = self.senders.get(&from);
        let next_nonce = sender.map_or(account.nonce, |s| s.next_nonce);
        if nonce < next_nonce {
            return Err(TxError::NonceTooLow {
                expected: next_nonce,
                got: nonce,
            }
            .into());
        }
        let first_gap = sender.map_or(next_nonce, Sender::first_gap);
        if nonce.saturating_sub(first_gap) > self.config.max_nonce_gap {
            return Err(MempoolError::NonceTooFarAhead {
                expected: first_gap,
                got: nonce,
                max_gap: self.config.max_nonce_gap,
            });
        }
        let existing = sender.and_then(|s| s.txs.get(&nonce));
        if let Some(old) = existing {
            if self.in_block.contains(&old.id) {
                return Err(MempoolError::InBlock { nonce });
            }
            if tx.tx.fee <= old.tx.tx.fee {
                return Err(MempoolError::ReplacementUnderpriced {
                    existing_fee: old.tx.tx.fee,
                });
            }
        }
        Ok(())
    }

    /// Admits a verified transaction. `account` is the sender's committed
    /// state; it is used when the pool holds nothing from this sender
    /// ([`Mempool::needs_account`]).
    pub fn insert(
        &mut self,
        tx: SignedTransaction,
        id: Hash,
        account: Account,
        now_ms: u64,
    ) -> Result<Admission, MempoolError> {
        self.precheck(&tx, &id, &account)?;
        let size = tx.encode().len();
        let cost = tx.tx.total_cost()?;
        let (from, nonce) = (tx.tx.from, tx.tx.nonce);
        let sender = self.senders.get(&from);
        let (next_nonce, balance) = sender.map_or((account.nonce, account.balance), |s| {
            (s.next_nonce, s.balance)
        });
        let existing = sender.and_then(|s| s.txs.get(&nonce));
        let (old_cost, old_size, old_count) = existing.map_or((0, 0, 0), |e| (e.cost, e.size, 1));
        let needed = sender
            .map_or(0, Sender::total_cost)
            .saturating_sub(old_cost)
            .saturating_add(cost);
        if needed > balance {
            return Err(TxError::InsufficientFunds { balance, needed }.into());
        }
        let held_by_sender = sender.map_or(0, |s| s.txs.len()) - old_count;
        if held_by_sender >= self.config.max_txs_per_sender {
            return Err(MempoolError::SenderFull {
                limit: self.config.max_txs_per_sender,
            });
        }
        if self.index.len() - old_count >= self.config.max_txs {
            return Err(MempoolError::Full(format!(
                "{} transactions held, the limit",
                self.config.max_txs
            )));
        }
        if self.bytes - old_size + size > self.config.max_bytes {
            return Err(MempoolError::Full(format!(
                "{} bytes held, limit {}",
                self.bytes, self.config.max_bytes
            )));
        }

        let seq = self.next_seq;
        self.next_seq += 1;
        self.validator_votes += usize::from(is_validator_vote(&tx));
        let entry = Entry {
            tx,
            id,
            size,
            cost,
            arrived_ms: now_ms,
            seq,
        };
        let sender = self.senders.entry(from).or_insert(Sender {
            next_nonce,
            balance,
            txs: BTreeMap::new(),
        });
        let replaced = sender.txs.insert(nonce, entry).map(|old| {
            self.bytes -= old.size;
            self.validator_votes -= usize::from(is_validator_vote(&old.tx));
            self.index.remove(&old.id);
            old.id
        });
        self.bytes += size;
        self.index.insert(id, (from, nonce));
        let state = Self::state_of(sender, nonce);
        Ok(Admission { state, replaced })
    }

    fn state_of(sender: &Sender, nonce: u64) -> PoolState {
        let gap = sender.first_gap();
        if nonce < gap {
            PoolState::Pending
        } else {
            PoolState::Queued { waiting_for: gap }
        }
    }

    /// Where the transaction waits, if the pool holds it.
    pub fn status(&self, id: &Hash) -> Option<PoolState> {
        let (from, nonce) = self.index.get(id)?;
        Some(Self::state_of(self.senders.get(from)?, *nonce))
    }

    /// The transaction, if the pool holds it.
    pub fn get(&self, id: &Hash) -> Option<&SignedTransaction> {
        let (from, nonce) = self.index.get(id)?;
        self.senders.get(from)?.txs.get(nonce).map(|e| &e.tx)
    }

    /// The nonce a wallet should use next: the committed nonce plus this
    /// sender's pending run.
    pub fn next_nonce(&self, address: &Address, account: &Account) -> u64 {
        self.senders
            .get(address)
            .map_or(account.nonce, Sender::first_gap)
    }

    /// The limits the pool was made with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the pool holds of `address`, whose committed state is
    /// `account`, at `now_ms`: its pending run, its queued transactions
    /// with the time each has left, and the missing nonces that hold them.
    pub fn sender_view(&self, address: &Address, account: &Account, now_ms: u64) -> SenderView {
        let held = |entry: &Entry| HeldTx {
            id: entry.id,
            nonce: entry.tx.tx.nonce,
            fee: entry.tx.tx.fee,
            arrived_ms: entry.arrived_ms,
        };
        let Some(sender) = self.senders.get(address) else {
            return SenderView {
                committed_nonce: account.nonce,
                next_nonce: account.nonce,
                pending: Vec::new(),
                queued: Vec::new(),
                missing: Vec::new(),
            };
        };
        let pending: Vec<HeldTx> = sender.pending().map(held).collect();
        let gap = sender.first_gap();
        let ttl = self.config.queued_ttl_ms;
        let queued: Vec<(HeldTx, u64)> = sender
            .txs
            .range(gap..)
            .map(|(_, e)| {
                (
                    held(e),
                    ttl.saturating_sub(now_ms.saturating_sub(e.arrived_ms)),
                )
            })
            .collect();
        let missing = match queued.last() {
            Some((last, _)) => (gap..last.nonce)
                .filter(|n| !sender.txs.contains_key(n))
                .collect(),
            None => Vec::new(),
        };
        SenderView {
            committed_nonce: sender.next_nonce,
            next_nonce: gap,
            pending,
            queued,
            missing,
        }
    }

    /// Whether the pool holds a validator-set vote (pending or queued).
    pub fn holds_validator_votes(&self) -> bool {
        self.validator_votes > 0
    }

    /// Whether any transaction is ready for a block.
    pub fn has_pending(&self) -> bool {
        self.senders.values().any(|s| s.pending().next().is_some())
    }

    /// Pending transactions for the next block, at most `max_txs` and
    /// `max_bytes`: each sender's run in nonce order, senders in the order
    /// their first pending transaction arrived.
    pub fn select(&self, max_txs: usize, max_bytes: usize) -> Vec<SignedTransaction> {
        let mut runs: Vec<(u64, Vec<&Entry>)> = self
            .senders
            .values()
            .map(|s| s.pending().collect::<Vec<_>>())
            .filter(|run| !run.is_empty())
            .map(|run| (run[0].seq, run))
            .collect();
        runs.sort_by_key(|(seq, _)| *seq);
        let mut out = Vec::new();
        let mut bytes = 0;
        'senders: for (_, run) in runs {
            for entry in run {
                if out.len() >= max_txs {
                    break 'senders;
                }
                if bytes + entry.size > max_bytes {
                    // The rest of this sender's run depends on this one.
                    continue 'senders;
                }
                bytes += entry.size;
                out.push(entry.tx.clone());
            }
        }
        out
    }

    /// Like [`Mempool::select`], and marks the chosen transactions as in the
    /// block being committed, so that they cannot be replaced until
    /// [`Mempool::on_block_committed`] or [`Mempool::release_block`].
    pub fn select_for_block(&mut self, max_txs: usize, max_bytes: usize) -> Vec<SignedTransaction> {
        let chosen = self.select(max_txs, max_bytes);
        self.in_block = chosen.iter().map(SignedTransaction::id).collect();
        chosen
    }

    /// The block being committed was abandoned: its transactions may be
    /// replaced again.
    pub fn release_block(&mut self) {
        self.in_block.clear();
    }

    /// Brings the pool up to date after a block: `committed` are the block's
    /// transaction ids, `accounts` the accounts it changed. Returns every
    /// transaction that left the pool and why.
    pub fn on_block_committed(
        &mut self,
        committed: &[Hash],
        accounts: &[(Address, Account)],
    ) -> Vec<(Hash, Removal)> {
        let committed: std::collections::HashSet<&Hash> = committed.iter().collect();
        self.in_block.clear();
        let mut removed = Vec::new();
        for (address, account) in accounts {
            let Some(sender) = self.senders.get_mut(address) else {
                continue;
            };
            sender.next_nonce = account.nonce;
            sender.balance = account.balance;
            let stale: Vec<(u64, Removal)> = sender
                .txs
                .range(..account.nonce)
                .map(|(nonce, entry)| {
                    let reason = if committed.contains(&entry.id) {
                        Removal::Committed
                    } else {
                        Removal::Invalid(TxError::NonceTooLow {
                            expected: account.nonce,
                            got: *nonce,
                        })
                    };
                    (*nonce, reason)
                })
                .collect();
            for (nonce, reason) in stale {
                removed.extend(self.remove_entry(address, nonce).map(|id| (id, reason)));
            }
            removed.extend(self.drop_unaffordable(address));
        }
        removed
    }

    /// Drops the sender's transactions, from the highest nonce down, until the
    /// rest are affordable together from its committed balance.
    fn drop_unaffordable(&mut self, address: &Address) -> Vec<(Hash, Removal)> {
        let mut removed = Vec::new();
        while let Some(sender) = self.senders.get(address) {
            let total = sender.total_cost();
            let Some((&nonce, _)) = sender.txs.last_key_value() else {
                break;
            };
            if total <= sender.balance {
                break;
            }
            let reason = Removal::Invalid(TxError::InsufficientFunds {
                balance: sender.balance,
                needed: total,
            });
            removed.extend(self.remove_entry(address, nonce).map(|id| (id, reason)));
        }
        removed
    }

    fn remove_entry(&mut self, address: &Address, nonce: u64) -> Option<Hash> {
        let sender = self.senders.get_mut(address)?;
        let entry = sender.txs.remove(&nonce)?;
        if sender.txs.is_empty() {
            self.senders.remove(address);
        }
        self.bytes -= entry.size;
        self.validator_votes -= usize::from(is_validator_vote(&entry.tx));
        self.index.remove(&entry.id);
        Some(entry.id)
    }

    /// Removes one transaction (for instance one a block builder found
    /// invalid). Transactions after it from the same sender become queued.
    pub fn remove(&mut self, id: &Hash) -> bool {
        match self.index.get(id) {
            Some(&(address, nonce)) => self.remove_entry(&address, nonce).is_some(),
            None => false,
        }
    }

    /// Removes queued transactions that have waited `queued_ttl_ms` or more.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Hash> {
        let ttl = self.config.queued_ttl_ms;
        let mut expired = Vec::new();
        for (address, sender) in &self.senders {
            let gap = sender.first_gap();
            for (nonce, entry) in sender.txs.range(gap..) {
                if now_ms.saturating_sub(entry.arrived_ms) >= ttl {
                    expired.push((*address, *nonce));
                }
            }
        }
        expired
            .into_iter()
            .filter_map(|(address, nonce)| self.remove_entry(&address, nonce))
            .collect()
    }
}

#[cfg(test)]
mod tests;
