//! The worked example of docs/PROTOCOL.md, byte for byte: if this test
//! changes, the document (and every client written from it) must change too.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use tally_ledger::devnet::devnet_genesis;
use tally_ledger::{devnet_key, to_hex, ChainId, SignedTransaction, Transaction};

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
}
