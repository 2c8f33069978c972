//! JSON-RPC parameters as the server reads them: the block selector, the
//! wait mode, and the text forms of addresses, hashes and transactions.
//! Nothing panics; what parses prints back to something that parses to the
//! same value.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use tally_ledger::{parse_hex, Address, SignedTransaction};
use tally_rpc::{BlockId, WaitMode};

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = serde_json::from_slice::<BlockId>(data) {
        let text = serde_json::to_vec(&id).unwrap_or_default();
        assert_eq!(serde_json::from_slice::<BlockId>(&text).ok(), Some(id));
    }
    let _ = serde_json::from_slice::<(String, Option<WaitMode>)>(data);
    let _ = serde_json::from_slice::<(BlockId, Option<bool>)>(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(address) = Address::from_str(text) {
        assert_eq!(Address::from_str(&address.to_text()).ok(), Some(address));
    }
    if let Ok(bytes) = parse_hex(text) {
        let _ = SignedTransaction::decode(&bytes);
    }
});
