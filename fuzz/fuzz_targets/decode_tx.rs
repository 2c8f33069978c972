//! A transaction from RPC or gossip: decoding never panics, and what
//! decodes re-encodes to exactly the input (one encoding per transaction,
//! so its id names it).
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
});
