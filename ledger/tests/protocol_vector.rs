//! The worked example of docs/PROTOCOL.md, byte for byte: if this test
//! changes, the document (and every client written from it) must change too.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use tally_ledger::devnet::devnet_genesis;
use tally_ledger::{
    devnet_key, to_hex, tx_root, ChainId, Hash, Header, SignedTransaction, Transaction, Vote,
    VoteKind, BLOCK_VERSION,
};

#[test]
fn protocol_md_worked_example() {
    let genesis = devnet_genesis(4, "tally-devnet").unwrap();
    assert_eq!(borsh::to_vec(&genesis).unwrap().len(), 388);
    let genesis_hash = genesis.hash();
    assert_eq!(
        genesis_hash.to_hex(),
        "0xf33302b3225664d464d78e9c41ba0596be528a47303f75b4af216d2c40012604"
    );
    let (alice, bob) = (devnet_key("alice"), devnet_key("bob"));
    assert_eq!(
        to_hex(&alice.seed()),
        "0x4d347f987af373287f052f96bea977b37776cbc7fe969c205d967146d9708c73"
    );
    assert_eq!(
        to_hex(&alice.address().0),
        "0xb521c06b5d0c0a09c29ca6937dbacbca9c7573d9bc4feb577583b39cb8da1787"
    );
    assert_eq!(
        alice.address().to_text(),
        "tally1k5suq66aps9qns5u56fhmwkte2w82u7eh387k4m4sweeewx6z7rsuag2u9"
    );
    assert_eq!(
        bob.address().to_text(),
        "tally162026wnq5y722ccgzf9qcfdw6a744m8hce0yk52kpec4zaqtlass75rhpk"
    );
    let tx = Transaction {
        chain_id: ChainId::new("tally-devnet").unwrap(),
        from: alice.address(),
        to: bob.address(),
        amount: 1000,
        fee: 1,
        nonce: 0,
    };
    assert_eq!(to_hex(&borsh::to_vec(&tx).unwrap()), "0x0c00000074616c6c792d6465766e6574b521c06b5d0c0a09c29ca6937dbacbca9c7573d9bc4feb577583b39cb8da1787d29ead3a60a13ca56308124a0c25aed77d5aecf7c65e4b51560e7151740bff61e80300000000000001000000000000000000000000000000");
    assert_eq!(
        tx.signing_message(&genesis_hash).to_hex(),
        "0x658e7071578735db915fd538014ef24f79e4822fed0bc1d81272745360673701"
    );
    let signed = tx.sign(&alice, &genesis_hash);
    assert_eq!(to_hex(&signed.signature.0), "0xdb3f8a2e5197be0d4797e445912061e932a01538d40215c317b7db347d436bc4997531e18dacd33ee52b638379b870501c8b59fdb524138f8bea9be577503e09");
    let bytes = signed.encode();
    assert_eq!(bytes.len(), 168);
    assert_eq!(to_hex(&bytes), "0x0c00000074616c6c792d6465766e6574b521c06b5d0c0a09c29ca6937dbacbca9c7573d9bc4feb577583b39cb8da1787d29ead3a60a13ca56308124a0c25aed77d5aecf7c65e4b51560e7151740bff61e80300000000000001000000000000000000000000000000db3f8a2e5197be0d4797e445912061e932a01538d40215c317b7db347d436bc4997531e18dacd33ee52b638379b870501c8b59fdb524138f8bea9be577503e09");
    assert_eq!(
        signed.id().to_hex(),
        "0x30e69c1546ffc6ae4d1f63529efd9ae816b157f9059a8f0dec356701b17a744c"
    );
    assert_eq!(SignedTransaction::decode(&bytes).unwrap(), signed);
    assert_eq!(
        signed.verify_stateless(&genesis.chain_id, &genesis_hash, 1),
        Ok(())
    );

    let root = tx_root(&[signed.id()]);
    assert_eq!(
        root.to_hex(),
        "0xd26e20ae866b96940e1ae7447383562e46d99dd764755e44b19d02c99ccf68cf"
    );
    let header = Header {
        version: BLOCK_VERSION,
        chain_id: genesis.chain_id.clone(),
        height: 1,
        parent_hash: genesis_hash,
        timestamp_ms: genesis.genesis_time_ms + 1000,
        proposer: devnet_key("validator-0").address(),
        tx_root: root,
        tx_count: 1,
        state_root: Hash::ZERO,
    };
    assert_eq!(to_hex(&borsh::to_vec(&header).unwrap()), "0x010000000c00000074616c6c792d6465766e65740100000000000000f33302b3225664d464d78e9c41ba0596be528a47303f75b4af216d2c40012604e8abda769b01000013ea97a87bea43b3129b932224c65525004c06b765f83f0a0a1210863a880233d26e20ae866b96940e1ae7447383562e46d99dd764755e44b19d02c99ccf68cf010000000000000000000000000000000000000000000000000000000000000000000000");
    assert_eq!(
        header.hash().to_hex(),
        "0xb74a5877a7abba56bb937186dcedad6d0949d18aefd7fd437b398c302bf54417"
    );
    let vote = Vote {
        chain_id: genesis.chain_id.clone(),
        height: 1,
        round: 0,
        kind: VoteKind::Precommit,
        block_hash: Some(header.hash()),
    };
    assert_eq!(to_hex(&borsh::to_vec(&vote).unwrap()), "0x0c00000074616c6c792d6465766e65740100000000000000000000000101b74a5877a7abba56bb937186dcedad6d0949d18aefd7fd437b398c302bf54417");
    assert_eq!(
        vote.signing_message(&genesis_hash).to_hex(),
        "0xd3aad6e83d63b1759596d1fae6bd570f236a3279ec80e61eb7a3acf2b8ab4913"
    );
    let signature = vote.sign(&devnet_key("validator-0"), &genesis_hash);
    assert_eq!(to_hex(&signature.0), "0xe145199604452d8242e2a78f87ca419f50b1848966817338aef11013e62c8fc6c44733bb4cae22607a5ba22129c36b31ee8161b750fa82b49159cd48f1d86207");
}
