//! A block with its certificate, as sync answers carry it: strict decoding
//! never panics and round-trips; the header/body check and the certificate
//! check never panic on what decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_ledger::{decode_strict, devnet::devnet_genesis, ChainContext, StoredBlock};

const LIMIT: usize = 8 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(stored) = decode_strict::<StoredBlock>(data, LIMIT) else {
        return;
    };
    assert_eq!(borsh::to_vec(&stored).ok().as_deref(), Some(data));
    let block = &stored.block;
    let _ = block.body_matches_header();
    let hash = block.hash();
    if let Ok(genesis) = devnet_genesis(4, "tally-devnet") {
        let chain = ChainContext::new(genesis);
        let _ = chain.verify_commit(&stored.commit, block.header.height, &hash);
    }
});
