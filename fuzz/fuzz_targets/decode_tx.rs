//! A transaction from RPC, or a gossip message of transactions: decoding
//! never panics, and what decodes re-encodes to exactly the input (one
//! encoding per transaction, so its id names it; one per message).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_ledger::SignedTransaction;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTransaction::decode(data) {
        assert_eq!(tx.encode(), data, "a second encoding of one transaction");
        // The checks that follow decoding must not panic either.
        let _ = tx.tx.total_cost();
        let _ = tx.verify_signature(&tally_ledger::Hash::ZERO);
        let _ = tx.id();
    }
    if let Ok(txs) = tally_ledger::decode_tx_batch(data) {
        assert!((1..=tally_ledger::MAX_GOSSIP_TXS).contains(&txs.len()));
        let encoded: Vec<Vec<u8>> = txs.iter().map(SignedTransaction::encode).collect();
        assert_eq!(
            tally_ledger::encode_tx_batch(&encoded),
            data,
            "a second encoding of one gossip message"
        );
    }
});
