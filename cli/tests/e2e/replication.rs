//! Four validators and a full node as real `tally` processes on loopback,
//! laid out by `tally devnet init`, through the faults BFT consensus must
//! survive: one validator killed (the chain goes on), restarted (it catches
//! up and votes again), two killed (nothing is committed and nobody
//! diverges), one back (the chain resumes), a full node started late (it
//! syncs the whole chain, follows it and relays transactions). At the end
//! every node has the same block at every height and the same balances, no
//! evidence of double signing exists, and the supply is unchanged; the full
//! node's account and transaction proofs check out offline with `tally
//! verify`, and a tampered one does not.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use crate::common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::Devnet;
use tally_client::{BlockId, TxState, WaitMode};
use tally_ledger::devnet::{DEV_ACCOUNTS, DEV_ACCOUNT_BALANCE};
use tally_ledger::{devnet_key, Address, ChainContext, Genesis, Hash, Keypair};

async fn transfer_via(net: &Devnet, node: &str, from: &Keypair, to: Address) -> (Hash, u64) {
    let (tx, result) = net
        .client(node)
        .transfer(from, to, 7, 1, WaitMode::Committed)
        .await
        .unwrap();
    assert_eq!(result.status, TxState::Committed, "submitted to {node}");
    (tx.id(), result.height.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_survive_crashes_and_a_late_full_node_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("devnet");
    let listed = common::devnet_init(&root);
    let mut net = Devnet {
        homes: HashMap::new(),
        urls: HashMap::new(),
        running: HashMap::new(),
    };
    for node in &listed {
        let name = node["name"].as_str().unwrap().to_owned();
        net.homes
            .insert(name.clone(), PathBuf::from(node["home"].as_str().unwrap()));
        net.urls
            .insert(name, node["rpc_url"].as_str().unwrap().to_owned());
    }
    let names: Vec<&str> = listed.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "validator-0",
            "validator-1",
            "validator-2",
            "validator-3",
            "full-0"
        ]
    );
    assert_eq!(net.homes["validator-2"], root.join("validator-2"));
    let genesis_text = std::fs::read_to_string(root.join("validator-0/genesis.json")).unwrap();
    let chain = ChainContext::new(Genesis::from_json(&genesis_text).unwrap());

    for v in ["validator-0", "validator-1", "validator-2", "validator-3"] {
        net.start(v);
    }
    for v in ["validator-0", "validator-1", "validator-2", "validator-3"] {
        net.wait_height(v, 2).await;
        let status = net.client(v).status().await.unwrap();
        assert_eq!(status.role, tally_client::NodeRole::Validator);
    }

    // Transfers submitted to different nodes are each committed once, at
    // the same place on every node.
    let (alice, bob, carol) = (devnet_key("alice"), devnet_key("bob"), devnet_key("carol"));
    let mut committed = Vec::new();
    committed.push(transfer_via(&net, "validator-0", &alice, bob.address()).await);
    committed.push(transfer_via(&net, "validator-1", &bob, carol.address()).await);
    committed.push(transfer_via(&net, "validator-2", &carol, alice.address()).await);
    committed.push(transfer_via(&net, "validator-3", &alice, carol.address()).await);
    let top = committed.iter().map(|(_, h)| *h).max().unwrap();
    for v in ["validator-0", "validator-1", "validator-2", "validator-3"] {
        net.wait_height(v, top).await;
        for (id, height) in &committed {
            let info = net.client(v).tx(id).await.unwrap();
            assert_eq!(info.status, TxState::Committed);
            assert_eq!(info.height, Some(*height), "{v} agrees on {id}");
        }
    }

    // One validator down: the chain keeps committing.
    net.kill9("validator-3");
    let h = net.height("validator-0").await;
    net.wait_height("validator-0", h + 3).await;
    transfer_via(&net, "validator-1", &bob, alice.address()).await;

    // Back up: it catches up, and votes again — proved by taking another
    // validator down, after which no quorum exists without it.
    net.start("validator-3");
    let h = net.height("validator-0").await;
    net.wait_height("validator-3", h).await;
    net.kill9("validator-0");
    let h = net.height("validator-1").await;
    net.wait_height("validator-1", h + 2).await;
    let latest = net
        .client("validator-1")
        .block(BlockId::Latest, false)
        .await
        .unwrap();
    let v3 = devnet_key("validator-3").address();
    assert!(
        latest.commit.signatures.iter().any(|s| s.validator == v3),
        "with validator-0 down every certificate needs validator-3"
    );

    // Two down: no block is committed and the two left do not diverge.
    net.kill9("validator-1");
    // Whatever was in flight settles within a few rounds' timeouts; after
    // that the heights must stay put while consensus keeps trying.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stuck = net.height("validator-2").await;
    let before = [
        net.client("validator-2").status().await.unwrap(),
        net.client("validator-3").status().await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (name, earlier) in ["validator-2", "validator-3"].iter().zip(&before) {
        let now = net.client(name).status().await.unwrap();
        assert_eq!(
            now.height, earlier.height,
            "{name} committed without a quorum"
        );
        assert_eq!(now.height, stuck, "the two survivors agree on the height");
        assert_eq!(now.tip_hash, before[0].tip_hash, "{name} did not diverge");
    }

    // One comes back: three of four again, and the chain resumes.
    net.start("validator-0");
    net.wait_height("validator-2", stuck + 2).await;
    net.wait_height("validator-0", stuck + 2).await;

    // A full node started late syncs everything, then follows.
    net.start("full-0");
    let target = net.height("validator-2").await;
    net.wait_height("full-0", target).await;
    let status = net.client("full-0").status().await.unwrap();
    assert_eq!(status.role, tally_client::NodeRole::Full);
    assert!(status.validator.is_none());
    net.wait_height("full-0", target + 2).await;
    // Transactions submitted to the full node reach the proposer.
    let (id, at) = transfer_via(&net, "full-0", &carol, bob.address()).await;
    net.wait_height("validator-2", at).await;
    let seen = net.client("validator-2").tx(&id).await.unwrap();
    assert_eq!(seen.height, Some(at));

    // The last one returns and catches up too.
    net.start("validator-1");
    let tip = net.height("validator-2").await;
    net.wait_height("validator-1", tip).await;

    // Every node: the same block at every height, each with a valid
    // certificate; the same balances; no evidence; the same supply.
    let everyone = [
        "validator-0",
        "validator-1",
        "validator-2",
        "validator-3",
        "full-0",
    ];
    let mut common_tip = u64::MAX;
    for name in everyone {
        common_tip = common_tip.min(net.height(name).await);
    }
    let reference = net.hashes("validator-2", common_tip).await;
    for name in everyone {
        assert_eq!(
            net.hashes(name, common_tip).await,
            reference,
            "{name} diverged"
        );
    }
    let client = net.client("full-0");
    for height in 1..=common_tip {
        let block = client.block(BlockId::Height(height), false).await.unwrap();
        chain
            .verify_commit(&block.commit, height, &block.hash)
            .unwrap_or_else(|e| panic!("certificate of block {height}: {e}"));
    }
    let mut holders: Vec<Address> = DEV_ACCOUNTS
        .iter()
        .map(|n| devnet_key(n).address())
        .collect();
    holders.extend((0..4).map(|i| devnet_key(&format!("validator-{i}")).address()));
    // Balances are compared at one height: wait until all reach the same tip.
    for name in everyone {
        assert!(
            {
                let seen = net.client(name).evidence(None).await.unwrap();
                seen.recorded.is_empty() && seen.pending.is_empty()
            },
            "{name} saw double signing"
        );
    }
    let tip = net.height("validator-2").await;
    for name in everyone {
        net.wait_height(name, tip).await;
    }
    let mut balances = Vec::new();
    for name in everyone {
        let client = net.client(name);
        let mut of_node = Vec::new();
        for holder in &holders {
            of_node.push(client.account(holder).await.unwrap().balance);
        }
        balances.push(of_node);
    }
    assert!(
        balances.iter().all(|b| *b == balances[0]),
        "nodes disagree on balances: {balances:?}"
    );
    let supply: u128 = balances[0].iter().map(|b| u128::from(*b)).sum();
    let expected = u128::from(DEV_ACCOUNT_BALANCE) * DEV_ACCOUNTS.len() as u128;
    assert_eq!(supply, expected, "total supply changed");

    // Proofs from the full node, saved as a client would save the raw
    // answers, check out offline against the genesis alone.
    let url = &net.urls["full-0"];
    let genesis_path = root.join("validator-0/genesis.json");
    let call = |method: &str, params: serde_json::Value| serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let never_funded = devnet_key("never-funded").address();
    let answers = [
        (
            "alice.json",
            call(
                "account_getProof",
                serde_json::json!([alice.address().to_text()]),
            ),
        ),
        (
            "absent.json",
            call(
                "account_getProof",
                serde_json::json!([never_funded.to_text()]),
            ),
        ),
        (
            "alice-at-genesis.json",
            call(
                "account_getProof",
                serde_json::json!([alice.address().to_text(), 0]),
            ),
        ),
        (
            "tx.json",
            call("tx_getProof", serde_json::json!([id.to_hex()])),
        ),
        (
            "block.json",
            call("chain_getBlock", serde_json::json!([at, true])),
        ),
        (
            "validators.json",
            call("chain_getValidators", serde_json::json!([at])),
        ),
    ];
    let saved = dir.path().join("answers");
    std::fs::create_dir_all(&saved).unwrap();
    let mut files = Vec::new();
    for (name, request) in answers {
        let answer = common::call_raw(url, request).await;
        assert!(answer.get("result").is_some(), "{name}: {answer}");
        let path = saved.join(name);
        std::fs::write(&path, answer.to_string()).unwrap();
        files.push(path.to_str().unwrap().to_owned());
    }
    let mut args = vec!["verify", "--genesis", genesis_path.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let (ok, out, err) = common::tally(&args);
    assert!(ok, "tally verify refused honest answers: {out}{err}");
    assert!(out.contains("all 6 checked"), "{out}");
    assert!(
        out.contains(&format!("{} held balance", alice.address())),
        "{out}"
    );
    assert!(
        out.contains(&format!("{never_funded} held balance 0, nonce 0")),
        "{out}"
    );
    assert!(
        out.contains(&format!("transaction {id} is number")),
        "{out}"
    );

    // A tampered answer (one more unit for alice) is refused, by name.
    let mut tampered: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let balance: u64 = tampered["result"]["balance"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    tampered["result"]["balance"] = serde_json::json!((balance + 1).to_string());
    let bad = saved.join("tampered.json");
    std::fs::write(&bad, tampered.to_string()).unwrap();
    let (ok, out, err) = common::tally(&[
        "verify",
        "--genesis",
        genesis_path.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert!(!ok, "a tampered balance passed: {out}");
    assert!(err.contains("tampered.json does not check out"), "{err}");
    assert!(err.contains("proof does not verify"), "{err}");

    // The wallet commands prove before they print.
    let (ok, out, err) = common::tally(&[
        "balance",
        &alice.address().to_text(),
        "--prove",
        "--genesis",
        genesis_path.to_str().unwrap(),
        "--rpc",
        url,
    ]);
    assert!(ok, "tally balance --prove: {err}");
    assert!(out.contains("proven against block"), "{out}");
    let (ok, out, err) = common::tally(&["tx", &id.to_hex(), "--prove", "--rpc", url]);
    assert!(ok, "tally tx --prove: {err}");
    assert!(
        out.contains(&format!("transaction {id} is number")),
        "{out}"
    );
}
