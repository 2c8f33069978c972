//! A consensus message from a peer: strict decoding never panics and
//! round-trips, and feeding what decodes to a running state machine never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_consensus::{Config, Consensus, Input};
use tally_ledger::{
    decode_strict, devnet::devnet_genesis, devnet_key, ChainContext, ConsensusMessage,
};

const LIMIT: usize = 8 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode_strict::<ConsensusMessage>(data, LIMIT) else {
        return;
    };
    assert_eq!(borsh::to_vec(&message).ok().as_deref(), Some(data));
    let Ok(genesis) = devnet_genesis(4, "tally-devnet") else {
        return;
    };
    let chain = ChainContext::new(genesis);
    let mut machine = Consensus::new(
        Config::default(),
        chain.genesis.chain_id.clone(),
        chain.genesis_hash,
        chain.validators.clone(),
        Some(devnet_key("validator-0")),
        None,
        None,
    );
    machine.handle(Input::StartHeight(1));
    machine.handle(Input::Message(message));
});
