//! A consensus message from a peer: strict decoding never panics and
//! round-trips; the network intake (decoding and signature checks, as the
//! node's gossip filter runs it) never panics; and a state machine fed what
//! decodes, signed again by a validator so that it verifies, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_consensus::{Config, Consensus, Input};
use tally_host::edge::{ConsensusIntake, Verdict};
use tally_ledger::{
    decode_strict, devnet::devnet_genesis, devnet_key, ChainContext, ConsensusMessage,
    SignedProposal, SignedVote, Verified,
};

const LIMIT: usize = 8 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(genesis) = devnet_genesis(4, "tally-devnet") else {
        return;
    };
    let chain = ChainContext::new(genesis);
    let intake = ConsensusIntake::new(
        chain.clone(),
        tally_host::ValidatorView::genesis(&chain),
        LIMIT,
    );
    let mut machine = Consensus::new(
        Config::default(),
        chain.genesis.chain_id.clone(),
        chain.genesis_hash,
        chain.validators.clone(),
        Some(devnet_key("validator-0")),
        None,
        None,
    );
    machine.handle(Input::StartHeight {
        height: 1,
        validators: chain.validators.clone(),
    });
    if let Verdict::Accept(message) = intake.check(data, 0) {
        machine.handle(Input::Message(message));
    }
    let Ok(message) = decode_strict::<ConsensusMessage>(data, LIMIT) else {
        return;
    };
    assert_eq!(borsh::to_vec(&message).ok().as_deref(), Some(data));
    // The same content, signed by a validator: it reaches the machine.
    let key = devnet_key("validator-1");
    let signers = chain.signers();
    let verified: Option<Verified<ConsensusMessage>> = match message {
        ConsensusMessage::Vote(SignedVote { vote, .. }) => {
            Verified::<SignedVote>::sign(vote, &key, &signers)
                .ok()
                .map(Into::into)
        }
        ConsensusMessage::Proposal(p) => {
            let SignedProposal { core, block, .. } = *p;
            Verified::<SignedProposal>::sign(core, block, &key, &signers)
                .ok()
                .map(Into::into)
        }
    };
    if let Some(message) = verified {
        machine.handle(Input::Message(message));
    }
});
