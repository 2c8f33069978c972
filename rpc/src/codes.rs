//! Error codes of the Tally API. docs/RPC.md lists them; they never change
//! meaning.
//!
//! Standard JSON-RPC codes are used for malformed requests: -32700 parse
//! error, -32600 invalid request, -32601 method not found, -32602 invalid
//! params (wrong type or count), -32603 internal error; the server adds
//! -32007 request too big, -32008 answer too big, -32009 busy and -32010
//! batch too long (tally-node's `jsonrpc` module).

use jsonrpsee::types::ErrorObjectOwned;
use serde_json::json;
use tally_ledger::{TxError, ValidatorChangeError};

/// The transaction bytes are not a canonical signed transaction.
pub const MALFORMED_TX: i32 = 1001;
/// The transaction is larger than the limit.
pub const TX_TOO_LARGE: i32 = 1002;
/// Signed for another chain id.
pub const WRONG_CHAIN: i32 = 1003;
/// The signature does not verify for this chain and genesis.
pub const INVALID_SIGNATURE: i32 = 1004;
/// The recipient is not an ed25519 public key.
pub const INVALID_RECIPIENT: i32 = 1005;
/// The fee is below the chain's minimum.
pub const FEE_TOO_LOW: i32 = 1006;
/// amount + fee overflows.
pub const AMOUNT_OVERFLOW: i32 = 1007;
/// The nonce was already used.
pub const NONCE_TOO_LOW: i32 = 1008;
/// The nonce is too far ahead of the account's next nonce.
pub const NONCE_GAP: i32 = 1009;
/// The sender cannot pay amount + fee (with its other pending transactions).
pub const INSUFFICIENT_FUNDS: i32 = 1010;
/// The transaction is already pending or committed.
pub const DUPLICATE_TX: i32 = 1011;
/// A replacement must pay a higher fee than the transaction it replaces.
pub const REPLACEMENT_UNDERPRICED: i32 = 1012;
/// The sender has the most pending transactions allowed.
pub const SENDER_QUEUE_FULL: i32 = 1013;
/// The mempool is full; retry later.
pub const MEMPOOL_FULL: i32 = 1014;
/// The sender of a validator-set vote is not in the set in force.
pub const NOT_A_VALIDATOR: i32 = 1101;
/// The change names a validator that is not in the set it applies to.
pub const UNKNOWN_VALIDATOR: i32 = 1102;
/// The change adds (or rotates to) a key that is a validator already.
pub const ALREADY_VALIDATOR: i32 = 1103;
/// The change adds a name that is taken.
pub const DUPLICATE_VALIDATOR_NAME: i32 = 1104;
/// A name, peer address, power or key in the change is malformed.
pub const MALFORMED_CHANGE: i32 = 1105;
/// A power change to the power the validator has.
pub const POWER_UNCHANGED: i32 = 1106;
/// Guard: the change leaves fewer validators than `min_validators`.
pub const BELOW_MIN_VALIDATORS: i32 = 1107;
/// Guard: more validators or power than supported.
pub const TOO_MANY_VALIDATORS: i32 = 1108;
/// Guard: the change moves more than a third of the voting power at once.
pub const TOO_MUCH_POWER: i32 = 1109;
/// Guard: the validators that signed the latest commit would hold two
/// thirds of the new set's power or less.
pub const LIVENESS_LOST: i32 = 1110;
/// No commit is on the chain yet (votes are taken from height 2).
pub const NO_COMMIT_YET: i32 = 1111;
/// The sender voted for this change already.
pub const ALREADY_VOTED: i32 = 1112;
/// The sender has the most open votes allowed.
pub const TOO_MANY_OPEN_VOTES: i32 = 1113;
/// A rotation opened by another key, or without the new key's signature.
pub const BAD_ROTATION: i32 = 1114;
/// Cited evidence is not on the chain, convicts someone else, or is cited
/// by a change that is not a removal.
pub const BAD_EVIDENCE_CITATION: i32 = 1115;
/// An address is not valid `tally1…` text.
pub const MALFORMED_ADDRESS: i32 = 2001;
/// A hash or hex string is malformed.
pub const MALFORMED_HEX: i32 = 2002;
/// No committed block matches.
pub const UNKNOWN_BLOCK: i32 = 2003;
/// The transaction is not in a committed block (yet).
pub const TX_NOT_COMMITTED: i32 = 2004;
/// The state at that height is no longer kept (older than the node's
/// `state_history`).
pub const STATE_PRUNED: i32 = 2005;
/// The node cannot serve the request now (storage failure, shutting down).
pub const UNAVAILABLE: i32 = 3001;

/// An error object with `data = {"reason": reason}`.
pub fn error(code: i32, reason: &str, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, message, Some(json!({ "reason": reason })))
}

/// The code and reason name of a transaction rule.
pub fn tx_error_code(e: &TxError) -> (i32, &'static str) {
    match e {
        TxError::Malformed(_) => (MALFORMED_TX, "malformed_tx"),
        TxError::TooLarge { .. } => (TX_TOO_LARGE, "tx_too_large"),
        TxError::WrongChain { .. } => (WRONG_CHAIN, "wrong_chain"),
        TxError::InvalidSignature => (INVALID_SIGNATURE, "invalid_signature"),
        TxError::InvalidRecipient => (INVALID_RECIPIENT, "invalid_recipient"),
        TxError::FeeTooLow { .. } => (FEE_TOO_LOW, "fee_too_low"),
        TxError::AmountOverflow | TxError::BalanceOverflow => (AMOUNT_OVERFLOW, "amount_overflow"),
        TxError::NonceTooLow { .. } => (NONCE_TOO_LOW, "nonce_too_low"),
        TxError::NonceGap { .. } => (NONCE_GAP, "nonce_gap"),
        TxError::InsufficientFunds { .. } => (INSUFFICIENT_FUNDS, "insufficient_funds"),
        TxError::Validator(e) => validator_error_code(e.as_ref()),
    }
}

/// The code and reason name of a validator-set vote rule.
pub fn validator_error_code(e: &ValidatorChangeError) -> (i32, &'static str) {
    use ValidatorChangeError as E;
    match e {
        E::NotAValidator(_) => (NOT_A_VALIDATOR, "not_a_validator"),
        E::UnknownValidator(_) => (UNKNOWN_VALIDATOR, "unknown_validator"),
        E::AlreadyValidator(_) => (ALREADY_VALIDATOR, "already_validator"),
        E::DuplicateName(_) => (DUPLICATE_VALIDATOR_NAME, "duplicate_validator_name"),
        E::BadName(_) | E::BadPeer(_) | E::ZeroPower | E::BadKey(_) => {
            (MALFORMED_CHANGE, "malformed_change")
        }
        E::PowerUnchanged { .. } => (POWER_UNCHANGED, "power_unchanged"),
        E::BelowMinimum { .. } => (BELOW_MIN_VALIDATORS, "below_min_validators"),
        E::TooManyValidators { .. } | E::PowerOverflow { .. } => {
            (TOO_MANY_VALIDATORS, "too_many_validators")
        }
        E::TooMuchPower { .. } => (TOO_MUCH_POWER, "too_much_power"),
        E::LivenessLost { .. } => (LIVENESS_LOST, "liveness_lost"),
        E::NoCommitYet => (NO_COMMIT_YET, "no_commit_yet"),
        E::AlreadyVoted(_) => (ALREADY_VOTED, "already_voted"),
        E::TooManyOpenVotes { .. } => (TOO_MANY_OPEN_VOTES, "too_many_open_votes"),
        E::RotationNotByOwner { .. } | E::BadRotationSignature => (BAD_ROTATION, "bad_rotation"),
        E::EvidenceNotFound(_) | E::EvidenceMismatch { .. } | E::EvidenceNotRemoval => {
            (BAD_EVIDENCE_CITATION, "bad_evidence_citation")
        }
    }
}

/// The error object for a transaction rule.
pub fn tx_error(e: &TxError) -> ErrorObjectOwned {
    let (code, reason) = tx_error_code(e);
    error(code, reason, e.to_string())
}
