//! Prints the worked example of docs/PROTOCOL.md: a devnet key, a transfer,
//! its canonical bytes, signing message, signature and id.
//!
//! `cargo run -p tally-ledger --example protocol_vector`

use tally_ledger::devnet::devnet_genesis;
use tally_ledger::{
    devnet_key, domain, to_hex, tx_root, ChainId, Hash, Header, Transaction, Vote, VoteKind,
    BLOCK_VERSION,
};

fn main() {
    let genesis = devnet_genesis(4, "tally-devnet").expect("the devnet genesis is valid");
    let genesis_bytes = borsh::to_vec(&genesis).expect("encodes");
    let genesis_hash = genesis.hash();
    let alice = devnet_key("alice");
    let bob = devnet_key("bob");
    let seed = Hash::digest_parts(&[domain::DEVNET_KEY, b"alice"]);
    let tx = Transaction {
        chain_id: ChainId::new("tally-devnet").expect("valid"),
        from: alice.address(),
        to: bob.address(),
        amount: 1000,
        fee: 1,
        nonce: 0,
    };
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
    let root = tx_root(&[signed.id()]);
    let validator = devnet_key("validator-0");
    let header = Header {
        version: BLOCK_VERSION,
        chain_id: ChainId::new("tally-devnet").expect("valid"),
        height: 1,
        parent_hash: genesis_hash,
        timestamp_ms: genesis.genesis_time_ms + 1000,
        proposer: validator.address(),
        tx_root: root,
        tx_count: 1,
        state_root: Hash::ZERO,
    };
    let vote = Vote {
        chain_id: header.chain_id.clone(),
        height: 1,
        round: 0,
        kind: VoteKind::Precommit,
        block_hash: Some(header.hash()),
    };
    println!("tx_root            {root}");
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
}
