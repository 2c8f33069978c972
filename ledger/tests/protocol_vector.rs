//! The worked example of docs/PROTOCOL.md, byte for byte: if this test
//! changes, the document (and every client written from it) must change too.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use tally_ledger::devnet::devnet_genesis;
use tally_ledger::state_tree::{
    account_key, prove_account, verify_account, AccountProof, MemoryState,
};
use tally_ledger::{
    build_block, devnet_key, parse_hex, to_hex, tx_root, validators::rotation_message, Account,
    BlockInputs, ChainContext, ChainId, SignedTransaction, Transaction, ValidatorChange, Vote,
    VoteKind, BLOCK_VERSION,
};

#[test]
fn protocol_md_worked_example() {
    let genesis = devnet_genesis(4, "tally-devnet").unwrap();
    assert_eq!(borsh::to_vec(&genesis).unwrap().len(), 400);
    let genesis_hash = genesis.hash();
    assert_eq!(
        genesis_hash.to_hex(),
        "0x92e5057e82cc5fe5ed84a772a0c1173e1d8943f67af2026f0730d53d366966d3"
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
    let tx = Transaction::transfer(
        ChainId::new("tally-devnet").unwrap(),
        alice.address(),
        bob.address(),
        1000,
        1,
        0,
    );
    assert_eq!(to_hex(&borsh::to_vec(&tx).unwrap()), "0x0c00000074616c6c792d6465766e6574b521c06b5d0c0a09c29ca6937dbacbca9c7573d9bc4feb577583b39cb8da17870000000000000000010000000000000000d29ead3a60a13ca56308124a0c25aed77d5aecf7c65e4b51560e7151740bff61e803000000000000");
    assert_eq!(
        tx.signing_message(&genesis_hash).to_hex(),
        "0x64033a8bf1a2c3c4a65d72a030b396ed8563e2015785a9dae5c147a2aad75e54"
    );
    let signed = tx.sign(&alice, &genesis_hash);
    assert_eq!(to_hex(&signed.signature.0), "0xc4a1b3ca48653b626df92ba9ad4e692439d821876e811c6d5c47e3d1191409ea28cc6f97258ec5fbb7251218379e72c54e4e4d61bb6cc82b74113a4bf5dc7008");
    let bytes = signed.encode();
    assert_eq!(bytes.len(), 169);
    assert_eq!(to_hex(&bytes), "0x0c00000074616c6c792d6465766e6574b521c06b5d0c0a09c29ca6937dbacbca9c7573d9bc4feb577583b39cb8da17870000000000000000010000000000000000d29ead3a60a13ca56308124a0c25aed77d5aecf7c65e4b51560e7151740bff61e803000000000000c4a1b3ca48653b626df92ba9ad4e692439d821876e811c6d5c47e3d1191409ea28cc6f97258ec5fbb7251218379e72c54e4e4d61bb6cc82b74113a4bf5dc7008");
    assert_eq!(
        signed.id().to_hex(),
        "0xdb350280be5195386b1bdf5ce10a46cc3a8d6413514a7c9fbbf8c366d35d077c"
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
        "0x65339bb5b5313f755ebec097fc3b77fe7ae985331c94e6017cc3e08cbb12c7e3"
    );
    let inputs = BlockInputs {
        proposer: devnet_key("validator-0").address(),
        now_ms: genesis.genesis_time_ms + 1000,
        candidates: vec![signed.clone()],
        last_commit: None,
        evidence: Vec::new(),
    };
    let built = build_block(&state, &chain, &chain.genesis_meta(), inputs).unwrap();
    let header = built.block.header.clone();
    assert_eq!(header.version, BLOCK_VERSION);
    assert_eq!(header.tx_root, root);
    assert_eq!(
        header.state_root.to_hex(),
        "0x037a98ccbb71b4c71914e10f90be983ab6fe15695eddd4bc6d8f3a5dcb69c5c4"
    );
    assert_eq!(to_hex(&borsh::to_vec(&header).unwrap()), "0x030000000c00000074616c6c792d6465766e6574010000000000000092e5057e82cc5fe5ed84a772a0c1173e1d8943f67af2026f0730d53d366966d3e8abda769b01000013ea97a87bea43b3129b932224c65525004c06b765f83f0a0a1210863a88023365339bb5b5313f755ebec097fc3b77fe7ae985331c94e6017cc3e08cbb12c7e301000000037a98ccbb71b4c71914e10f90be983ab6fe15695eddd4bc6d8f3a5dcb69c5c47c957b489932066e4f5727f9c2a72b0b7314e89c9cdf3d7ca032630fa33b7af97c957b489932066e4f5727f9c2a72b0b7314e89c9cdf3d7ca032630fa33b7af9ea86417c4b2ab2c246bf1d6b4a00deed5cfa8c6e38299c21571bdec31b0d4a06e9eddfbb07c36d8f85be0beb43118e7bb2ac82c03225ce5fccfea89fda147503");
    assert_eq!(
        header.hash().to_hex(),
        "0x44137af05ef85215f28afe192239f165dbe72027e3f01416b3e9b0e5cd761b6d"
    );
    assert_eq!(
        header.last_commit_hash.to_hex(),
        "0xea86417c4b2ab2c246bf1d6b4a00deed5cfa8c6e38299c21571bdec31b0d4a06"
    );
    assert_eq!(
        header.evidence_hash.to_hex(),
        "0xe9eddfbb07c36d8f85be0beb43118e7bb2ac82c03225ce5fccfea89fda147503"
    );
    state.apply(&built.block, &built.executed).unwrap();
    let vote = Vote {
        chain_id: genesis.chain_id.clone(),
        height: 1,
        round: 0,
        kind: VoteKind::Precommit,
        block_hash: Some(header.hash()),
    };
    assert_eq!(to_hex(&borsh::to_vec(&vote).unwrap()), "0x0c00000074616c6c792d6465766e6574010000000000000000000000010144137af05ef85215f28afe192239f165dbe72027e3f01416b3e9b0e5cd761b6d");
    assert_eq!(
        vote.signing_message(&genesis_hash).to_hex(),
        "0xc3840cc98f17864af2f5fa24f78d7317dddb007ad91a59020052aab71cbd5d17"
    );
    let signature = vote.sign(&devnet_key("validator-0"), &genesis_hash);
    assert_eq!(to_hex(&signature.0), "0xf3abb5401ef0f9a2759b67f4273df1087dc52342f458a737ccb83c907b7d1ec5cf006602ab46cac05b166a72835f4279b98707feed8b737c21a3d033303d2d0d");

    // validator-0 votes to add validator-4; validator-1 opens a rotation
    // to a new key, signed by both keys.
    let add = ValidatorChange::Add {
        name: "validator-4".into(),
        address: devnet_key("validator-4").address(),
        power: 1,
        peer: "/ip4/127.0.0.1/tcp/7804/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
            .into(),
    };
    assert_eq!(
        add.id().to_hex(),
        "0x81ccf39d7314cb6521c245d037daf52f535552537454c720062a356f417962bd"
    );
    let validator = devnet_key("validator-0");
    let vote_tx = Transaction::validator_vote(
        genesis.chain_id.clone(),
        validator.address(),
        add,
        None,
        0,
        0,
    );
    assert_eq!(to_hex(&borsh::to_vec(&vote_tx).unwrap()), "0x0c00000074616c6c792d6465766e657413ea97a87bea43b3129b932224c65525004c06b765f83f0a0a1210863a8802330000000000000000000000000000000001000b00000076616c696461746f722d3409f5cb3f7572e06f6c1c211419f010bd792b296db0eeda8aa832a748295315dc0100000000000000500000002f6970342f3132372e302e302e312f7463702f373830342f7032702f313244334b6f6f57515968544e51646d723341725465554852597a46673934424b79546b6f57424457657a396b5343566532586f00");
    assert_eq!(
        vote_tx.signing_message(&genesis_hash).to_hex(),
        "0xbd9d011cacc390830220762a022f431d82bd93e8c4f572d632a12431d5051b05"
    );
    let signed_vote = vote_tx.sign(&validator, &genesis_hash);
    assert_eq!(to_hex(&signed_vote.encode()), "0x0c00000074616c6c792d6465766e657413ea97a87bea43b3129b932224c65525004c06b765f83f0a0a1210863a8802330000000000000000000000000000000001000b00000076616c696461746f722d3409f5cb3f7572e06f6c1c211419f010bd792b296db0eeda8aa832a748295315dc0100000000000000500000002f6970342f3132372e302e302e312f7463702f373830342f7032702f313244334b6f6f57515968544e51646d723341725465554852597a46673934424b79546b6f57424457657a396b5343566532586f007b2eb234cdd7c70b0df9e2304ed2d71896fdfe6f6e32c96c0cfb0d62a5b2635cc2a2f02f0456a6d4e0a3b3be532c6f0bbee12b42101c00cec6bf936daf8ac809");
    assert_eq!(
        signed_vote.id().to_hex(),
        "0xb43f9f7acf6f6af3908ed24c6dd79ec0870378d527d9cb443ac8e34524b75dc5"
    );
    assert_eq!(
        SignedTransaction::decode(&signed_vote.encode()).unwrap(),
        signed_vote
    );
    let (old, new) = (devnet_key("validator-1"), devnet_key("validator-1-new"));
    assert_eq!(
        rotation_message(&genesis_hash, &old.address(), &new.address()).to_hex(),
        "0x27c165211916299465becd898169a1f3c8033a7c05e826766538d5864231478c"
    );
    let rotate = ValidatorChange::rotate(old.address(), &new, &genesis_hash);
    assert_eq!(to_hex(&borsh::to_vec(&rotate).unwrap()), "0x0333fb2d92d6837274ecb50bbae8e49dece50da6d861ab46b38aae93736fc0bbdc31a87b94ffd501df385f2d1acbe71c94edf50405b1325ecb7320d71c44f9a98aae1b78b700b5f6ae3bb779e385f9218d2a6f68f90a56093497f02427462e35c7f65545970a17b7f79426c0ed1a0699b843e3cce573b19fe2df57985786f8230a");
    assert!(rotate.new_key_signed(&genesis_hash));

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

#[test]
fn protocol_md_overrides_id() {
    let chain = ChainContext::new(devnet_genesis(4, "tally-devnet").unwrap());
    let two: Vec<tally_ledger::GenesisValidator> = ["validator-0", "validator-1"]
        .iter()
        .map(|name| tally_ledger::GenesisValidator {
            name: (*name).to_owned(),
            address: devnet_key(name).address(),
            power: 1,
        })
        .collect();
    // The preimage, as PROTOCOL.md spells it.
    let mut bytes = b"tally/validator-override/v1".to_vec();
    bytes.extend(1u32.to_le_bytes());
    bytes.extend(58u64.to_le_bytes());
    bytes.extend(2u32.to_le_bytes());
    for v in &two {
        bytes.extend((v.name.len() as u32).to_le_bytes());
        bytes.extend(v.name.as_bytes());
        bytes.extend(v.address.0);
        bytes.extend(v.power.to_le_bytes());
    }
    let id = chain
        .with_overrides(vec![(58, two)])
        .unwrap()
        .overrides_id()
        .unwrap();
    assert_eq!(id, tally_ledger::Hash::digest(&bytes));
    assert_eq!(
        id.to_hex(),
        "0x202abd980485db6dc14e61b9e5a835e69c865043c132a7296f2d9ea7660a85e1"
    );
}

/// The worked example's genesis is printed in PROTOCOL.md: that copy is the
/// shipped genesis.json, which is the devnet genesis the example hashes.
#[test]
fn protocol_md_prints_the_shipped_genesis() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shipped = std::fs::read_to_string(root.join("genesis.json")).unwrap();
    let doc = std::fs::read_to_string(root.join("docs/PROTOCOL.md")).unwrap();
    let example = &doc[doc.find("## Worked example").unwrap()..];
    let start = example.find("```json\n").unwrap() + "```json\n".len();
    let printed = &example[start..start + example[start..].find("```").unwrap()];
    assert_eq!(printed.trim_end(), shipped.trim_end());
    assert_eq!(
        tally_ledger::Genesis::from_json(&shipped).unwrap(),
        devnet_genesis(4, "tally-devnet").unwrap()
    );
}
