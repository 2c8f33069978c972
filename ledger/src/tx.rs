//! Transfers: the unsigned body, the signed envelope, and their rules.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::Serialize;

use crate::codec::{decode_strict, DecodeError};
use crate::crypto::{Keypair, Signature};
use crate::types::{amount_string, Address, ChainId, Hash};
use crate::validators::{ValidatorChange, ValidatorChangeError};

/// Largest canonical encoding of a signed transaction, in bytes: nodes
/// refuse anything longer before decoding.
///
/// A transfer is at most 4 + 64 (chain id) + 32 + 2 × 8 + 1 + 32 + 8 + 64 =
/// 221; the largest validator-set vote (an addition with a 64-byte name, a
/// 200-byte peer address and no evidence) about 550.
pub const MAX_TX_BYTES: usize = 1024;

/// A signed action of `from`, paying `fee` to the block proposer, valid
/// only at exactly the sender's next `nonce`.
#[derive(
    Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, serde::Deserialize,
)]
pub struct Transaction {
    /// The chain this transaction is for.
    pub chain_id: ChainId,
    /// The sender, whose key signs.
    pub from: Address,
    /// The sender's transaction count before this one (0 for the first).
    pub nonce: u64,
    /// Units moved from `from` to the proposer of the block.
    #[serde(with = "amount_string")]
    pub fee: u64,
    /// What the transaction does.
    #[serde(flatten)]
    pub action: Action,
}

/// The kinds of transaction.
#[derive(
    Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, serde::Deserialize,
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Moves `amount` from the sender to `to`.
    Transfer {
        /// The recipient.
        to: Address,
        /// Units moved.
        #[serde(with = "amount_string")]
        amount: u64,
    },
    /// A validator of the set in force votes for a change to the set
    /// ([`crate::validators`]); the first vote opens it.
    Validator {
        /// The change voted for.
        change: ValidatorChange,
        /// Equivocation evidence on the chain that a removal cites
        /// ([`crate::Evidence::id`]).
        evidence: Option<Hash>,
    },
}

/// A transaction and the sender's signature over its signing message.
#[derive(
    Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, serde::Deserialize,
)]
pub struct SignedTransaction {
    /// The transfer.
    #[serde(flatten)]
    pub tx: Transaction,
    /// ed25519 signature by `tx.from` over [`Transaction::signing_message`].
    pub signature: Signature,
}

/// Why a transaction is invalid. Each variant maps to one stable RPC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The bytes are not a canonical signed transaction.
    #[error("malformed transaction: {0}")]
    Malformed(String),
    /// Larger than [`MAX_TX_BYTES`].
    #[error("transaction is {len} bytes, the limit is {max}")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Signed for another chain id.
    #[error("transaction is for chain {got:?}, this chain is {expected:?}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The transaction's chain id.
        got: String,
    },
    /// The signature does not verify (wrong key, wrong genesis, tampered).
    #[error("invalid signature: not signed by the sender for this chain and genesis")]
    InvalidSignature,
    /// The recipient is not an ed25519 public key.
    #[error("recipient is not a valid ed25519 public key")]
    InvalidRecipient,
    /// The fee is below the chain's minimum.
    #[error("fee {got} is below the minimum fee {min}")]
    FeeTooLow {
        /// The minimum.
        min: u64,
        /// The fee given.
        got: u64,
    },
    /// `amount + fee` does not fit in 64 bits.
    #[error("amount plus fee overflows 64 bits")]
    AmountOverflow,
    /// The nonce was already used.
    #[error("nonce {got} is too low: the account's next nonce is {expected}")]
    NonceTooLow {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The nonce is ahead of the account's next nonce.
    #[error("nonce {got} leaves a gap: the account's next nonce is {expected}")]
    NonceGap {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The sender cannot pay amount + fee.
    #[error("insufficient funds: balance {balance}, needed {needed}")]
    InsufficientFunds {
        /// The sender's balance.
        balance: u64,
        /// amount + fee (plus any pending transactions, where counted).
        needed: u64,
    },
    /// A credit would overflow a balance (impossible while supply fits u64).
    #[error("balance overflow")]
    BalanceOverflow,
    /// A validator-set vote the rules refuse (boxed: it is large and rare).
    #[error(transparent)]
    Validator(Box<ValidatorChangeError>),
}

impl From<ValidatorChangeError> for TxError {
    fn from(e: ValidatorChangeError) -> TxError {
        TxError::Validator(Box::new(e))
    }
}

impl Transaction {
    /// A transfer of `amount` from `from` to `to`.
    pub fn transfer(
        chain_id: ChainId,
        from: Address,
        to: Address,
        amount: u64,
        fee: u64,
        nonce: u64,
    ) -> Transaction {
        Transaction {
            chain_id,
            from,
            nonce,
            fee,
            action: Action::Transfer { to, amount },
        }
    }

    /// A vote of `from` for `change`.
    pub fn validator_vote(
        chain_id: ChainId,
        from: Address,
        change: ValidatorChange,
        evidence: Option<Hash>,
        fee: u64,
        nonce: u64,
    ) -> Transaction {
        Transaction {
            chain_id,
            from,
            nonce,
            fee,
            action: Action::Validator { change, evidence },
        }
    }

    /// The recipient and amount of a transfer.
    pub fn as_transfer(&self) -> Option<(&Address, u64)> {
        match &self.action {
            Action::Transfer { to, amount } => Some((to, *amount)),
            Action::Validator { .. } => None,
        }
    }

    /// Units moved to someone other than the proposer (0 unless a transfer).
    pub fn amount(&self) -> u64 {
        self.as_transfer().map_or(0, |(_, amount)| amount)
    }

    /// The 32-byte message the sender signs:
    /// blake3("tally/tx/v1" ‖ genesis_hash ‖ borsh(tx)).
    pub fn signing_message(&self, genesis_hash: &Hash) -> Hash {
        let body = borsh::to_vec(self).unwrap_or_default();
        Hash::digest_parts(&[crate::domain::TX, &genesis_hash.0, &body])
    }

    /// Signs this transaction for the chain whose genesis hash is given.
    pub fn sign(self, key: &Keypair, genesis_hash: &Hash) -> SignedTransaction {
        let signature = key.sign(&self.signing_message(genesis_hash));
        SignedTransaction {
            tx: self,
            signature,
        }
    }

    /// What the sender pays, `amount + fee`, checked.
    pub fn total_cost(&self) -> Result<u64, TxError> {
        self.amount()
            .checked_add(self.fee)
            .ok_or(TxError::AmountOverflow)
    }
}

impl SignedTransaction {
    /// The canonical encoding (borsh).
    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    /// Decodes exactly one canonical signed transaction.
    pub fn decode(bytes: &[u8]) -> Result<SignedTransaction, TxError> {
        decode_strict(bytes, MAX_TX_BYTES).map_err(|e| match e {
            DecodeError::TooLarge { len, max } => TxError::TooLarge { len, max },
            DecodeError::Malformed(m) => TxError::Malformed(m),
        })
    }

    /// The transaction id: blake3 of the canonical signed encoding.
    pub fn id(&self) -> Hash {
        Hash::digest(&self.encode())
    }

    /// The checks that need no account state: chain, amounts, fee, recipient
    /// and signature. Cheapest first; the signature is checked last.
    pub fn verify_stateless(
        &self,
        chain_id: &ChainId,
        genesis_hash: &Hash,
        min_fee: u64,
    ) -> Result<(), TxError> {
        self.check_fields(chain_id, min_fee)?;
        self.verify_signature(genesis_hash)
    }

    /// The field rules: chain id; for a transfer the minimum fee, amount +
    /// fee fits and the recipient is a public key; for a validator-set vote
    /// the change is well formed and only a removal cites evidence (votes
    /// pay any fee: only validators of the set in force send them).
    pub fn check_fields(&self, chain_id: &ChainId, min_fee: u64) -> Result<(), TxError> {
        let tx = &self.tx;
        if &tx.chain_id != chain_id {
            return Err(TxError::WrongChain {
                expected: chain_id.to_string(),
                got: tx.chain_id.to_string(),
            });
        }
        match &tx.action {
            Action::Transfer { to, .. } => {
                if tx.fee < min_fee {
                    return Err(TxError::FeeTooLow {
                        min: min_fee,
                        got: tx.fee,
                    });
                }
                tx.total_cost()?;
                if !to.is_valid_key() {
                    return Err(TxError::InvalidRecipient);
                }
            }
            Action::Validator { change, evidence } => {
                change.check_shape()?;
                if evidence.is_some() && !matches!(change, ValidatorChange::Remove { .. }) {
                    return Err(ValidatorChangeError::EvidenceNotRemoval.into());
                }
            }
        }
        Ok(())
    }

    /// The sender's signature over the signing message for this genesis.
    pub fn verify_signature(&self, genesis_hash: &Hash) -> Result<(), TxError> {
        if self
            .signature
            .verify(&self.tx.from, &self.tx.signing_message(genesis_hash))
        {
            Ok(())
        } else {
            Err(TxError::InvalidSignature)
        }
    }
}

/// Most signatures in one batch equation of [`verify_signatures`]: past
/// about a hundred a larger batch saves little per signature, and a batch
/// with a bad signature in it is checked again one by one.
pub const SIGNATURE_BATCH: usize = 128;

/// Whether each of `txs` is validly signed for the chain of
/// `genesis_hash`: the same verdict per transaction as
/// [`SignedTransaction::verify_signature`], computed [`SIGNATURE_BATCH`] at
/// a time with [`crate::verify_batch`]; the transactions of a batch that
/// fails are checked one by one to find which. Runs on the calling thread.
pub fn verify_signatures(txs: &[&SignedTransaction], genesis_hash: &Hash) -> Vec<bool> {
    let mut verdicts = Vec::with_capacity(txs.len());
    for chunk in txs.chunks(SIGNATURE_BATCH) {
        let items: Vec<(Address, Hash, Signature)> = chunk
            .iter()
            .map(|stx| {
                (
                    stx.tx.from,
                    stx.tx.signing_message(genesis_hash),
                    stx.signature,
                )
            })
            .collect();
        if chunk.len() > 1 && crate::crypto::verify_batch(&items) {
            verdicts.extend(std::iter::repeat_n(true, chunk.len()));
            continue;
        }
        verdicts.extend(
            items
                .iter()
                .map(|(signer, message, signature)| signature.verify(signer, message)),
        );
    }
    verdicts
}

/// Most transactions in one gossip message (PROTOCOL.md, "Gossip topics").
/// (Checking a full message's signatures in batches takes a receiving
/// node's validation pool about 6 ms of one core.)
pub const MAX_GOSSIP_TXS: usize = 256;

/// A gossip message of transactions, `borsh(Vec<SignedTransaction>)`, made
/// from already encoded transactions (the encoding of a vector is its
/// length as a little-endian u32, then each element's encoding).
pub fn encode_tx_batch(encoded: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + encoded.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    for tx in encoded {
        out.extend_from_slice(tx);
    }
    out
}

/// Decodes a gossip message of transactions strictly: 1 to
/// [`MAX_GOSSIP_TXS`] of them, each canonical.
pub fn decode_tx_batch(bytes: &[u8]) -> Result<Vec<SignedTransaction>, TxError> {
    let max = 4 + MAX_GOSSIP_TXS * MAX_TX_BYTES;
    let txs: Vec<SignedTransaction> = decode_strict(bytes, max).map_err(|e| match e {
        DecodeError::TooLarge { len, max } => TxError::TooLarge { len, max },
        DecodeError::Malformed(m) => TxError::Malformed(m),
    })?;
    if txs.is_empty() || txs.len() > MAX_GOSSIP_TXS {
        return Err(TxError::Malformed(format!(
            "a gossip message holds 1 to {MAX_GOSSIP_TXS} transactions, not {}",
            txs.len()
        )));
    }
    Ok(txs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet_key;

    #[test]
    fn a_gossip_batch_is_the_borsh_vector_and_is_bounded() {
        let key = devnet_key("alice");
        let txs: Vec<SignedTransaction> = (0..3)
            .map(|nonce| {
                Transaction::transfer(
                    ChainId::new("c").unwrap(),
                    key.address(),
                    devnet_key("bob").address(),
                    1,
                    1,
                    nonce,
                )
                .sign(&key, &Hash::ZERO)
            })
            .collect();
        let encoded: Vec<Vec<u8>> = txs.iter().map(SignedTransaction::encode).collect();
        let batch = encode_tx_batch(&encoded);
        assert_eq!(batch, borsh::to_vec(&txs).unwrap());
        assert_eq!(decode_tx_batch(&batch).unwrap(), txs);
        assert!(decode_tx_batch(&encode_tx_batch(&[])).is_err(), "empty");
        assert!(
            decode_tx_batch(&batch[..batch.len() - 1]).is_err(),
            "truncated"
        );
        let mut trailing = batch.clone();
        trailing.push(0);
        assert!(decode_tx_batch(&trailing).is_err(), "trailing byte");
        let too_many = encode_tx_batch(&vec![encoded[0].clone(); MAX_GOSSIP_TXS + 1]);
        assert!(decode_tx_batch(&too_many).is_err(), "over the limit");
        // A length prefix promising billions allocates nothing large.
        assert!(decode_tx_batch(&u32::MAX.to_le_bytes()).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// The batched check gives every transaction the verdict checking
        /// it alone gives, whatever the count (across batch boundaries) and
        /// wherever the bad ones are, and whichever way they are bad.
        #[test]
        fn batched_verdicts_are_single_verdicts(
            count in 1usize..300,
            bad in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 0u8..3), 0..4),
        ) {
            let genesis = Hash::digest(b"genesis");
            let chain = ChainId::new("tally-test").unwrap();
            let keys: Vec<Keypair> = (0..7).map(|i| devnet_key(&format!("k{i}"))).collect();
            let mut txs: Vec<SignedTransaction> = (0..count)
                .map(|i| {
                    let key = &keys[i % keys.len()];
                    Transaction::transfer(
                        chain.clone(),
                        key.address(),
                        keys[0].address(),
                        i as u64,
                        1,
                        i as u64,
                    )
                    .sign(key, &genesis)
                })
                .collect();
            for (at, how) in &bad {
                let tx = &mut txs[at.index(count)];
                match how {
                    0 => tx.tx.fee += 1,
                    1 => tx.signature.0[63] |= 0xf0, // S past the group order
                    _ => tx.tx.from = keys[1].address(),
                }
            }
            let refs: Vec<&SignedTransaction> = txs.iter().collect();
            let single: Vec<bool> = txs.iter().map(|t| t.verify_signature(&genesis).is_ok()).collect();
            proptest::prop_assert_eq!(verify_signatures(&refs, &genesis), single);
        }
    }

    fn sample() -> (SignedTransaction, Hash, ChainId) {
        let chain = ChainId::new("tally-test").unwrap();
        let genesis = Hash::digest(b"genesis");
        let tx = Transaction::transfer(
            chain.clone(),
            devnet_key("alice").address(),
            devnet_key("bob").address(),
            5,
            1,
            0,
        );
        (tx.sign(&devnet_key("alice"), &genesis), genesis, chain)
    }

    #[test]
    fn round_trip_and_strict_decoding() {
        let (stx, _, _) = sample();
        let bytes = stx.encode();
        assert_eq!(SignedTransaction::decode(&bytes).unwrap(), stx);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            SignedTransaction::decode(&trailing),
            Err(TxError::Malformed(_))
        ));
        for cut in 0..bytes.len() {
            assert!(
                SignedTransaction::decode(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let oversized = vec![0u8; MAX_TX_BYTES + 1];
        assert!(matches!(
            SignedTransaction::decode(&oversized),
            Err(TxError::TooLarge { .. })
        ));
    }

    #[test]
    fn signature_binds_chain_and_genesis() {
        let (stx, genesis, chain) = sample();
        assert_eq!(stx.verify_stateless(&chain, &genesis, 1), Ok(()));
        let other_genesis = Hash::digest(b"another genesis");
        assert_eq!(
            stx.verify_stateless(&chain, &other_genesis, 1),
            Err(TxError::InvalidSignature)
        );
        let other_chain = ChainId::new("other").unwrap();
        assert!(matches!(
            stx.verify_stateless(&other_chain, &genesis, 1),
            Err(TxError::WrongChain { .. })
        ));
        let mut tampered = stx.clone();
        tampered.tx.fee += 1;
        assert_eq!(
            tampered.verify_stateless(&chain, &genesis, 1),
            Err(TxError::InvalidSignature)
        );
    }

    #[test]
    fn fee_and_overflow_rules() {
        let (stx, genesis, chain) = sample();
        assert!(matches!(
            stx.verify_stateless(&chain, &genesis, 2),
            Err(TxError::FeeTooLow { min: 2, got: 1 })
        ));
        let mut tx = stx.tx.clone();
        tx.fee = u64::MAX;
        let signed = tx.sign(&devnet_key("alice"), &genesis);
        assert_eq!(
            signed.verify_stateless(&chain, &genesis, 1),
            Err(TxError::AmountOverflow)
        );
    }
}
