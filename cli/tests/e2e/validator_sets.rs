//! Validator-set changes by vote on a devnet of real processes, each step
//! as an operator would take it (docs/OPERATIONS.md, "Validator-set
//! changes"):
//! - a fifth validator: a new `tally run` node with a new key, voted in
//!   with `tally validator propose --add`; the set of five is in force two
//!   heights after the vote completes and the new node's signature appears
//!   in certificates;
//! - a key rotation: validator-1 proposes with both keys, the others vote
//!   for the change by id, and validator-1 restarts with the new key, which
//!   then signs;
//! - one of the original four is killed: 4 of 5 equal powers are live and
//!   the chain goes on, and the guard refuses over RPC, with its code and
//!   numbers, a sixth that would make the live validators a minority;
//! - the killed validator double-signs (a test peer gossips two prevotes
//!   signed with its key): the evidence is recorded on chain at one height
//!   on every node, and its removal cites it; from then on its votes are
//!   refused;
//! - a full node started from genesis afterwards syncs through every
//!   change, and `tally verify` follows the set across the changes from
//!   saved answers (and refuses when one is missing).

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use std::sync::Arc;
use std::time::Duration;

use crate::common::{self, edit_config, tally, Devnet, NodeProcess};

use serde_json::json;
use tally_client::BlockId;
use tally_gossip::{Config, Topic};
use tally_ledger::{
    devnet_key, Address, ChainContext, ChangeResult, ConsensusMessage, Hash, Keypair, SignedVote,
    Transaction, ValidatorChange, Vote, VoteKind,
};
use tokio::time::Instant;

/// A well-formed node address for a validator that never runs.
const ABSENT_PEER: &str =
    "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

/// `tally validator propose --key KEY ARGS --wait`: the change id.
fn propose(rpc: &str, key: &str, change: &[&str]) -> Hash {
    let mut args = vec!["validator", "propose", "--key", key];
    args.extend_from_slice(change);
    args.extend_from_slice(&["--wait", "--rpc", rpc]);
    let (ok, out, err) = tally(&args);
    assert!(ok, "vote {args:?}: {err}");
    assert!(out.contains("committed in block"), "{out}");
    out.lines()
        .find_map(|l| l.trim().strip_prefix("change id "))
        .unwrap_or_else(|| panic!("no change id in {out}"))
        .parse()
        .unwrap()
}

/// The height from which the finished change `id` is in force.
async fn in_force_from(net: &Devnet, node: &str, id: Hash) -> u64 {
    let pending = net.client(node).pending_changes().await.unwrap();
    let done = pending
        .recent
        .iter()
        .rev()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("change {id} finished: {pending:?}"));
    match done.result {
        ChangeResult::Completed { effective_height } => {
            assert_eq!(effective_height, done.height + 2, "in force at h + 2");
            effective_height
        }
        ref other => panic!("change {id} did not complete: {other:?}"),
    }
}

/// The first height from `from` on whose certificate `signer` signed.
async fn first_signed_by(net: &Devnet, node: &str, signer: Address, from: u64) -> u64 {
    let client = net.client(node);
    let deadline = Instant::now() + common::STEP_DEADLINE;
    let mut height = from;
    loop {
        match client.block(BlockId::Height(height), false).await {
            Ok(block)
                if block
                    .commit
                    .signatures
                    .iter()
                    .any(|s| s.validator == signer) =>
            {
                return height;
            }
            Ok(_) => height += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        assert!(
            Instant::now() < deadline,
            "{signer} signed no certificate from height {from} to {height}"
        );
    }
}

/// Submits a validator-set vote signed by `key` and returns the JSON-RPC
/// answer (an error, here).
async fn raw_vote(net: &Devnet, key: &Keypair, change: ValidatorChange) -> serde_json::Value {
    let client = net.client("validator-0");
    let status = client.status().await.unwrap();
    let nonce = client.account(&key.address()).await.unwrap().next_nonce;
    let vote = Transaction::validator_vote(status.chain_id, key.address(), change, None, 0, nonce)
        .sign(key, &status.genesis_hash);
    common::call_raw(
        &net.urls["validator-0"],
        json!({"jsonrpc": "2.0", "id": 1, "method": "tx_submit",
               "params": [tally_ledger::to_hex(&vote.encode())]}),
    )
    .await
}

/// Gossips, from a test peer connected to `peer`, two different prevotes
/// signed with `key` for each of the next two heights: a double vote.
async fn double_sign(chain: &ChainContext, key: &Keypair, peer: &str, next: u64) {
    let config = Config {
        peers: vec![peer.parse().unwrap()],
        redial_interval: Duration::from_millis(200),
        ..Config::default()
    };
    let (gossip, _inbound) = tally_gossip::start(
        config,
        Hash::digest(b"double signer").0,
        chain.genesis_hash,
        common::DeafFilter,
        Arc::new(common::Mute),
    )
    .await
    .unwrap();
    for height in [next, next + 1] {
        for tag in [b"first", b"other"] {
            let vote = Vote {
                chain_id: chain.genesis.chain_id.clone(),
                height,
                round: 0,
                kind: VoteKind::Prevote,
                block_hash: Some(Hash::digest_parts(&[tag.as_slice(), &height.to_le_bytes()])),
            };
            let bytes = borsh::to_vec(&ConsensusMessage::Vote(SignedVote::sign(
                vote,
                key,
                &chain.genesis_hash,
            )))
            .unwrap();
            // Publishing works once the node's subscriptions are known.
            let deadline = Instant::now() + common::STEP_DEADLINE;
            while gossip
                .publish(Topic::Consensus, bytes.clone())
                .await
                .is_err()
            {
                assert!(Instant::now() < deadline, "the test peer never got a path");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The messages are on their way; the peer may go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gossip.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_join_rotate_and_leave_by_vote() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::laid_out(dir.path());
    for v in ["validator-0", "validator-1", "validator-2", "validator-3"] {
        net.start(v);
    }
    let rpc = net.urls["validator-0"].clone();
    let genesis_path = net.homes["validator-0"].join("genesis.json");
    let chain = ChainContext::new(tally_node::home::load_genesis(&genesis_path).unwrap());
    // The guard counts as live the signers of the latest commit: wait until
    // all four sign (the last to start may still be joining).
    let from = net.height("validator-0").await + 1;
    for v in 1..4 {
        let address = devnet_key(&format!("validator-{v}")).address();
        first_signed_by(&net, "validator-0", address, from).await;
    }

    // 1. A fifth validator: its node first (it follows as a full node),
    // then three of four vote it in with its node's address.
    let v4_home = dir.path().join("validator-4");
    let v0_p2p = net.running["validator-0"].p2p.clone();
    let (ok, _, err) = tally(&[
        "init",
        "--home",
        v4_home.to_str().unwrap(),
        "--genesis",
        genesis_path.to_str().unwrap(),
        "--devnet-key",
        "validator-4",
        "--peer",
        &v0_p2p,
    ]);
    assert!(ok, "init of validator-4: {err}");
    let v4 = NodeProcess::run(&v4_home);
    net.urls.insert("validator-4".into(), v4.url.clone());
    let mut add = None;
    for who in 0..3 {
        add = Some(propose(
            &rpc,
            &format!("devnet:validator-{who}"),
            &[
                "--add",
                "validator-4:devnet:validator-4:1",
                "--peer",
                &v4.p2p,
            ],
        ));
    }
    let added_at = in_force_from(&net, "validator-1", add.unwrap()).await;
    let five = net
        .client("validator-2")
        .validators(Some(added_at))
        .await
        .unwrap();
    assert_eq!((five.validators.len(), five.quorum_power), (5, 4));
    assert_eq!(five.since, added_at);
    let before = net
        .client("validator-2")
        .validators(Some(added_at - 1))
        .await
        .unwrap();
    assert_eq!(before.validators.len(), 4);
    // The new node signs from its first height on.
    let v4_address = devnet_key("validator-4").address();
    let signed = first_signed_by(&net, "validator-3", v4_address, added_at).await;
    let block = net
        .client("validator-3")
        .block(BlockId::Height(signed), false)
        .await
        .unwrap();
    assert_eq!(block.header.validators_hash, five.validators_hash);
    let (ok, out, err) = tally(&["validators", "--rpc", &rpc]);
    assert!(ok, "{err}");
    assert!(
        out.contains("validator-4") && out.contains("20.0%"),
        "{out}"
    );

    // 2. Rotate validator-1's key: it proposes with both keys, three
    // others vote for the change by its id; then it restarts with the new
    // key.
    let new_key_file = dir.path().join("new-1.json");
    let (ok, _, err) = tally(&["key", "new", "--out", new_key_file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let new_key = tally_node::home::read_key_file(&new_key_file).unwrap();
    // Every live validator signs the latest commit before a rotation (the
    // rotated key counts as not live).
    let from = net.height("validator-0").await + 1;
    first_signed_by(&net, "validator-0", v4_address, from).await;
    let rotation = propose(
        &rpc,
        "devnet:validator-1",
        &["--rotate", new_key_file.to_str().unwrap()],
    );
    for voter in [
        "devnet:validator-0",
        "devnet:validator-2",
        "devnet:validator-4",
    ] {
        let id = propose(&rpc, voter, &["--change", &rotation.to_hex()]);
        assert_eq!(id, rotation);
    }
    let rotated_at = in_force_from(&net, "validator-0", rotation).await;
    net.wait_height("validator-0", rotated_at).await;
    net.kill9("validator-1");
    let v1_home = net.homes["validator-1"].clone();
    edit_config(&v1_home, |config| {
        config.insert(
            "validator_key_file".into(),
            toml::Value::String(new_key_file.to_str().unwrap().into()),
        );
    });
    net.start("validator-1");
    first_signed_by(&net, "validator-0", new_key.address(), rotated_at).await;
    // The old key is no validator any more.
    let answer = raw_vote(
        &net,
        &devnet_key("validator-1"),
        ValidatorChange::Remove {
            address: devnet_key("validator-3").address(),
        },
    )
    .await;
    assert_eq!(answer["error"]["code"], json!(1101), "{answer}");

    // 3. One of the original four dies: 4 of 5 are live and the chain goes
    // on. A sixth now would leave the four live validators 4 of 6: refused.
    net.kill9("validator-3");
    let height = net.height("validator-0").await;
    net.wait_height("validator-2", height + 3).await;
    let answer = raw_vote(
        &net,
        &devnet_key("validator-0"),
        ValidatorChange::Add {
            name: "validator-5".into(),
            address: devnet_key("validator-5").address(),
            power: 1,
            peer: ABSENT_PEER.into(),
        },
    )
    .await;
    assert_eq!(answer["error"]["code"], json!(1110), "{answer}");
    assert_eq!(answer["error"]["data"]["reason"], json!("liveness_lost"));
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("4 of the 6"), "{message}");

    // 4. validator-3's key signs two prevotes a height: every node records
    // the evidence, in the same block.
    let v3 = devnet_key("validator-3");
    let next = net.height("validator-0").await + 1;
    double_sign(&chain, &v3, &v0_p2p, next).await;
    let deadline = Instant::now() + common::STEP_DEADLINE;
    let recorded = loop {
        let list = net.client("validator-2").evidence(None).await.unwrap();
        if let Some(first) = list.recorded.first() {
            break first.clone();
        }
        assert!(Instant::now() < deadline, "no evidence recorded: {list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(recorded.validator, v3.address());
    assert_eq!((recorded.round, recorded.step), (0, 1));
    let included = recorded.included_height.unwrap();
    for node in ["validator-0", "validator-4"] {
        net.wait_height(node, included).await;
        let list = net.client(node).evidence(None).await.unwrap();
        assert!(
            list.recorded
                .iter()
                .any(|e| e.id == recorded.id && e.included_height == Some(included)),
            "{node}: {list:?}"
        );
    }
    let (ok, out, err) = tally(&["validator", "evidence", "--rpc", &rpc]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&recorded.id.to_hex())
            && out.contains(&format!("recorded in block {included}")),
        "{out}"
    );

    // 5. Its removal cites the evidence; from then on its votes are
    // refused.
    let remove_args = [
        "--remove",
        "devnet:validator-3",
        "--evidence",
        &recorded.id.to_hex(),
    ];
    let mut removal = None;
    for voter in [
        "devnet:validator-0",
        new_key_file.to_str().unwrap(),
        "devnet:validator-2",
        "devnet:validator-4",
    ] {
        removal = Some(propose(&rpc, voter, &remove_args));
    }
    let removed_at = in_force_from(&net, "validator-2", removal.unwrap()).await;
    net.wait_height("validator-0", removed_at).await;
    let four = net
        .client("validator-0")
        .validators(Some(removed_at))
        .await
        .unwrap();
    assert_eq!(four.validators.len(), 4);
    assert!(four.validators.iter().all(|v| v.address != v3.address()));
    let answer = raw_vote(
        &net,
        &v3,
        ValidatorChange::SetPower {
            address: v3.address(),
            power: 2,
        },
    )
    .await;
    assert_eq!(answer["error"]["code"], json!(1101), "{answer}");
    net.wait_height("validator-0", removed_at + 2).await;

    // 6. A full node from genesis follows every change: each certificate is
    // checked against the set of its height.
    let tip = net.height("validator-0").await;
    net.start("full-0");
    net.wait_height("full-0", tip).await;
    assert_eq!(
        net.hashes("full-0", tip).await,
        net.hashes("validator-0", tip).await
    );
    for at in [added_at, rotated_at, removed_at] {
        let synced = net.client("full-0").validators(Some(at)).await.unwrap();
        let served = net
            .client("validator-0")
            .validators(Some(at))
            .await
            .unwrap();
        assert_eq!(synced, served, "the set of height {at}");
    }

    // 7. `tally verify` follows the set from the genesis through each
    // change: the block before it (whose header announces it), then the
    // new set.
    let answers = dir.path().join("answers");
    std::fs::create_dir(&answers).unwrap();
    let full = net.client("full-0");
    let mut files = Vec::new();
    for at in [added_at, rotated_at, removed_at] {
        let announcing = full.block(BlockId::Height(at - 1), false).await.unwrap();
        files.push(common::save_answer(
            &answers,
            &format!("block-{}", at - 1),
            announcing,
        ));
        let set = full.validators(Some(at)).await.unwrap();
        files.push(common::save_answer(
            &answers,
            &format!("validators-{at}"),
            set,
        ));
    }
    let last = full.block(BlockId::Height(tip), false).await.unwrap();
    files.push(common::save_answer(&answers, "tip", last));
    let verify = |files: &[String]| {
        let mut args = vec!["verify", "--genesis", genesis_path.to_str().unwrap()];
        args.extend(files.iter().map(String::as_str));
        tally(&args)
    };
    let (ok, out, err) = verify(&files);
    assert!(ok, "tally verify refused the honest history: {out}{err}");
    assert!(out.contains("all 7 checked"), "{out}");
    assert!(
        out.contains(&format!("in force from height {rotated_at}")),
        "{out}"
    );
    // Without the rotation, the tip names a set the verifier has not been
    // shown.
    let skipped: Vec<String> = files
        .iter()
        .filter(|f| {
            !f.ends_with(&format!("block-{}.json", rotated_at - 1))
                && !f.ends_with(&format!("validators-{rotated_at}.json"))
        })
        .cloned()
        .collect();
    let (ok, out, err) = verify(&skipped);
    assert!(!ok, "a history without the rotation verified: {out}");
    assert!(err.contains("names validator set"), "{err}");
    // `--prove` follows the sets through the node's answers.
    let (ok, out, err) = tally(&[
        "balance",
        "devnet:alice",
        "--prove",
        "--genesis",
        genesis_path.to_str().unwrap(),
        "--rpc",
        &rpc,
    ]);
    assert!(ok, "balance --prove after three changes: {out}{err}");
    drop(v4);
}
