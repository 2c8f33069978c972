//! The worked example of docs/PROTOCOL.md, byte for byte: if this test
//! changes, the document (and every client written from it) must change too.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use tally_ledger::devnet::devnet_genesis;
use tally_ledger::state_tree::{
    account_key, prove_account, verify_account, AccountProof, MemoryState,
};
use tally_ledger::{
    build_block, devnet_key, parse_hex, to_hex, tx_root, Account, ChainContext, ChainId,
    SignedTransaction, Transaction, Vote, VoteKind, BLOCK_VERSION,
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

    let chain = ChainContext::new(genesis.clone());
    let mut state = MemoryState::genesis(&chain).unwrap();
    assert_eq!(
        state.root().to_hex(),
        "0x498089db1c90ad0226ddf7390612a0e104b0edff824d8225d9a4d83404405986"
    );
    assert_eq!(
        chain.validators.hash().to_hex(),
        "0x7c957b489932066e4f5727f9c2a72b0b7314e89c9cdf3d7ca032630fa33b7af9"
    );
    let root = tx_root(&[signed.id()]);
    assert_eq!(
        root.to_hex(),
        "0xf89439dfc4dee435973ee7263bb60e1df6ba976eb9dce412df19e615c641de45"
    );
    let built = build_block(
        &state,
        &chain,
        &chain.genesis_meta(),
        devnet_key("validator-0").address(),
        genesis.genesis_time_ms + 1000,
        vec![signed.clone()],
    )
    .unwrap();
    let header = built.block.header.clone();
    assert_eq!(header.version, BLOCK_VERSION);
    assert_eq!(header.tx_root, root);
    assert_eq!(
        header.state_root.to_hex(),
        "0x037a98ccbb71b4c71914e10f90be983ab6fe15695eddd4bc6d8f3a5dcb69c5c4"
    );
    assert_eq!(to_hex(&borsh::to_vec(&header).unwrap()), "0x020000000c00000074616c6c792d6465766e65740100000000000000f33302b3225664d464d78e9c41ba0596be528a47303f75b4af216d2c40012604e8abda769b01000013ea97a87bea43b3129b932224c65525004c06b765f83f0a0a1210863a880233f89439dfc4dee435973ee7263bb60e1df6ba976eb9dce412df19e615c641de4501000000037a98ccbb71b4c71914e10f90be983ab6fe15695eddd4bc6d8f3a5dcb69c5c47c957b489932066e4f5727f9c2a72b0b7314e89c9cdf3d7ca032630fa33b7af97c957b489932066e4f5727f9c2a72b0b7314e89c9cdf3d7ca032630fa33b7af9");
    assert_eq!(
        header.hash().to_hex(),
        "0xbb68a00cad0736e34c2311dc20fbe4c1343e520ab43fa3306cd5586afb42b823"
    );
    state.apply(&built.executed).unwrap();
    let vote = Vote {
        chain_id: genesis.chain_id.clone(),
        height: 1,
        round: 0,
        kind: VoteKind::Precommit,
        block_hash: Some(header.hash()),
    };
    assert_eq!(to_hex(&borsh::to_vec(&vote).unwrap()), "0x0c00000074616c6c792d6465766e65740100000000000000000000000101bb68a00cad0736e34c2311dc20fbe4c1343e520ab43fa3306cd5586afb42b823");
    assert_eq!(
        vote.signing_message(&genesis_hash).to_hex(),
        "0x6c0bf300b7803776297789ada106469bb1e1fc3cc010fbb6c48dde498b46141c"
    );
    let signature = vote.sign(&devnet_key("validator-0"), &genesis_hash);
    assert_eq!(to_hex(&signature.0), "0x216ffa88c028bded899c78e572feccb4cce8f3b500a403b6316ea978a2d07c764ea288658a055026142344425f54224a851e52d4573054b3933ac97647d1b10d");

    // Bob's account after block 1 (inclusion) and validator-1 (absent,
    // exclusion), proven against block 1's state root.
    let cases = [
        ("bob", Account { balance: 1_000_000_001_000, nonce: 0 }, "0x72c90f4c679446cb9c6eb78d18257d1cf808fe1e83f5e727dc80ac0f78a6e31b", "0x0172c90f4c679446cb9c6eb78d18257d1cf808fe1e83f5e727dc80ac0f78a6e31b771767bafbb0e0ed2e03c071c6d5199533578cdc6be7c7060ab1781b75355cd805000000027ea83360adb125467b2af00dcd62abbabf313603bb7336926dd09e5398e2dab7aece05012f30d629c68186b65d4a3b29e09efebb9a9d02d0a0479b6089f5843f000000015350415253455f4d45524b4c455f504c414345484f4c4445525f484153485f5f1d9287a2ee57e7ada929681f5e12507ee3283549136311a3aa698c42c8b3fa1d"),
        ("validator-1", Account::default(), "0xb3b67bc50f59112848c5bb17f81b3f18032cff440d708a3942be554391d67c82", "0x0002000000014e0bd8e7821d295ace46b4ac6f03b98a663681ca4672b90d3581fd01d86d3569271586e9f7d99e3e59159b5fe673e49e4e711551bb8d3b1b4c30128bb7fd45ca015350415253455f4d45524b4c455f504c414345484f4c4445525f484153485f5fd8f450e7c72d82f2e6f459f08fefa099f389352551daf9805baefec1cefc21b4"),
    ];
    for (name, expected, key_hash, proof_hex) in cases {
        let address = devnet_key(name).address();
        assert_eq!(to_hex(&account_key(&address).0), key_hash);
        let (account, proof) = prove_account(&state, 1, &address).unwrap();
        assert_eq!(account, expected);
        assert_eq!(to_hex(&borsh::to_vec(&proof).unwrap()), proof_hex);
        let decoded: AccountProof = borsh::from_slice(&parse_hex(proof_hex).unwrap()).unwrap();
        verify_account(&header.state_root, &address, &account, &decoded).unwrap();
        let other = Account {
            balance: 1,
            ..account
        };
        assert!(verify_account(&header.state_root, &address, &other, &decoded).is_err());
    }
}
