//! Prints the worked example of docs/PROTOCOL.md: a devnet key, a transfer,
//! its canonical bytes, signing message, signature and id; block 1 holding
//! it, with its state root, and two account proofs against that root.
//!
//! `cargo run -p tally-ledger --example protocol_vector`

use tally_ledger::devnet::devnet_genesis;
use tally_ledger::state_tree::{account_key, prove_account, MemoryState};
use tally_ledger::{
    build_block, devnet_key, domain, last_commit_hash, to_hex, BlockInputs, ChainContext, ChainId,
    Hash, Transaction, ValidatorChange, Vote, VoteKind,
};

/// The peer address of validator-4 in the example.
const PEER: &str =
    "/ip4/127.0.0.1/tcp/7804/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

fn main() {
    let genesis = devnet_genesis(4, "tally-devnet").expect("the devnet genesis is valid");
    let genesis_bytes = borsh::to_vec(&genesis).expect("encodes");
    let genesis_hash = genesis.hash();
    let alice = devnet_key("alice");
    let bob = devnet_key("bob");
    let seed = Hash::digest_parts(&[domain::DEVNET_KEY, b"alice"]);
    let tx = Transaction::transfer(
        ChainId::new("tally-devnet").expect("valid"),
        alice.address(),
        bob.address(),
        1000,
        1,
        0,
    );
    let body = borsh::to_vec(&tx).expect("encodes");
    let message = tx.signing_message(&genesis_hash);
    let signed = tx.sign(&alice, &genesis_hash);
    println!("genesis_borsh_len  {}", genesis_bytes.len());
    println!("genesis_hash       {genesis_hash}");
    println!("alice_seed         {}", to_hex(&seed.0));
    println!("alice_public_key   {}", to_hex(&alice.address().0));
    println!("alice_address      {}", alice.address());
    println!("bob_public_key     {}", to_hex(&bob.address().0));
    println!("bob_address        {}", bob.address());
    println!("tx_borsh           {}", to_hex(&body));
    println!("signing_message    {message}");
    println!("signature          {}", to_hex(&signed.signature.0));
    println!("signed_tx          {}", to_hex(&signed.encode()));
    println!("tx_id              {}", signed.id());

    // Block 1 holding that transaction, proposed by validator-0, and
    // validator-0's precommit for it.
    let chain = ChainContext::new(genesis.clone());
    let mut state = MemoryState::genesis(&chain).expect("the genesis state builds");
    println!("genesis_state_root {}", state.root());
    println!("validators_hash    {}", chain.validators.hash());
    let validator = devnet_key("validator-0");
    let inputs = BlockInputs {
        proposer: validator.address(),
        now_ms: genesis.genesis_time_ms + 1000,
        candidates: vec![signed.clone()],
        last_commit: None,
        evidence: Vec::new(),
    };
    let built = build_block(&state, &chain, &chain.genesis_meta(), inputs).expect("block 1 builds");
    let header = built.block.header.clone();
    state
        .apply(&built.block, &built.executed)
        .expect("block 1 applies");
    let vote = Vote {
        chain_id: header.chain_id.clone(),
        height: 1,
        round: 0,
        kind: VoteKind::Precommit,
        block_hash: Some(header.hash()),
    };
    println!("tx_root            {}", header.tx_root);
    println!("state_root         {}", header.state_root);
    println!(
        "header_borsh       {}",
        to_hex(&borsh::to_vec(&header).expect("encodes"))
    );
    println!("block_hash         {}", header.hash());
    println!(
        "vote_borsh         {}",
        to_hex(&borsh::to_vec(&vote).expect("encodes"))
    );
    println!("vote_message       {}", vote.signing_message(&genesis_hash));
    println!(
        "vote_signature     {}",
        to_hex(&vote.sign(&validator, &genesis_hash).0)
    );
    println!("empty_last_commit  {}", last_commit_hash(&None));
    println!("empty_evidence     {}", tally_ledger::evidence_hash(&[]));

    // validator-0's vote to add validator-4 (power 1), and validator-1's
    // rotation to the key of "validator-1-new", signed by both keys.
    let add = ValidatorChange::Add {
        name: "validator-4".into(),
        address: devnet_key("validator-4").address(),
        power: 1,
        peer: PEER.into(),
    };
    let vote_tx = Transaction::validator_vote(
        genesis.chain_id.clone(),
        validator.address(),
        add.clone(),
        None,
        0,
        0,
    );
    let signed_vote = vote_tx.clone().sign(&validator, &genesis_hash);
    println!("add_change_id      {}", add.id());
    println!(
        "add_vote_borsh     {}",
        to_hex(&borsh::to_vec(&vote_tx).expect("encodes"))
    );
    println!(
        "add_vote_message   {}",
        vote_tx.signing_message(&genesis_hash)
    );
    println!("add_vote_signed    {}", to_hex(&signed_vote.encode()));
    println!("add_vote_id        {}", signed_vote.id());
    let old = devnet_key("validator-1");
    let rotate =
        ValidatorChange::rotate(old.address(), &devnet_key("validator-1-new"), &genesis_hash);
    println!(
        "rotation_message   {}",
        tally_ledger::validators::rotation_message(
            &genesis_hash,
            &old.address(),
            &devnet_key("validator-1-new").address()
        )
    );
    println!(
        "rotate_change      {}",
        to_hex(&borsh::to_vec(&rotate).expect("encodes"))
    );

    // Bob's account after block 1, and the absent validator-1, proven
    // against block 1's state root.
    for name in ["bob", "validator-1"] {
        let address = devnet_key(name).address();
        let (account, proof) = prove_account(&state, 1, &address).expect("version 1 is kept");
        println!("{name}_key_hash {}", to_hex(&account_key(&address).0));
        println!("{name}_account  {} {}", account.balance, account.nonce);
        println!(
            "{name}_proof    {}",
            to_hex(&borsh::to_vec(&proof).expect("encodes"))
        );
    }
}
