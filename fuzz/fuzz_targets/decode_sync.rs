//! Block-sync requests and answers from peers (the bytes the sync codec
//! reads): strict decoding never panics and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_gossip::{SyncRequest, SyncResponse};
use tally_ledger::decode_strict;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_strict::<SyncRequest>(data, 8 * 1024 * 1024) {
        assert_eq!(borsh::to_vec(&request).ok().as_deref(), Some(data));
    }
    if let Ok(response) = decode_strict::<SyncResponse>(data, 8 * 1024 * 1024) {
        assert_eq!(borsh::to_vec(&response).ok().as_deref(), Some(data));
    }
});
