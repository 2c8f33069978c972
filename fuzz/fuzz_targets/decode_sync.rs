//! Block-sync and catch-up requests and answers from peers (the bytes the
//! request-response transport carries): strict decoding never panics and
//! round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_host::sync::{decode_request, decode_response};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data, 8 * 1024 * 1024) {
        assert_eq!(borsh::to_vec(&request).ok().as_deref(), Some(data));
    }
    if let Ok(response) = decode_response(data, 8 * 1024 * 1024) {
        assert_eq!(borsh::to_vec(&response).ok().as_deref(), Some(data));
    }
});
