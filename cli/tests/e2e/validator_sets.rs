//! A validator-set change by vote on a devnet of real processes: three of
//! four validators vote with `tally validator propose` to add a fifth; the
//! set of five is in force two heights after the vote completes and the
//! chain goes on with the four that run (4 of 5 equal powers); a further
//! addition that would make the live validators a minority is refused over
//! RPC with its code and numbers; a full node started from genesis
//! afterwards syncs through the change and agrees.

use crate::common::{self, tally, Devnet};

use serde_json::json;
use tally_client::BlockId;
use tally_ledger::devnet_key;

/// A well-formed node address for a validator that is not running.
const ABSENT_PEER: &str =
    "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_vote_a_fifth_in_and_the_guard_refuses_a_sixth() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::laid_out(dir.path());
    for v in ["validator-0", "validator-1", "validator-2", "validator-3"] {
        net.start(v);
    }
    let rpc = net.urls["validator-0"].clone();
    // The guard counts as live the signers of the latest commit: wait until
    // all four sign (the last to start may still be joining).
    let deadline = tokio::time::Instant::now() + common::STEP_DEADLINE;
    loop {
        let latest = net
            .client("validator-0")
            .block(BlockId::Latest, false)
            .await;
        let signers = latest
            .ok()
            .and_then(|b| b.last_commit)
            .map_or(0, |c| c.signatures.len());
        if signers == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the four validators never all signed one commit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Three of four vote; each waits for its vote to be committed.
    for who in 0..3 {
        let key = format!("devnet:validator-{who}");
        let (ok, out, err) = tally(&[
            "validator",
            "propose",
            "--key",
            &key,
            "--add",
            "validator-4:devnet:validator-4:1",
            "--peer",
            ABSENT_PEER,
            "--wait",
            "--rpc",
            &rpc,
        ]);
        assert!(ok, "vote of validator-{who}: {err}");
        assert!(out.contains("committed in block"), "{out}");
    }
    let pending = net.client("validator-1").pending_changes().await.unwrap();
    let done = pending
        .recent
        .iter()
        .find(|c| matches!(c.result, tally_ledger::ChangeResult::Completed { .. }))
        .unwrap_or_else(|| panic!("the addition completed: {pending:?}"));
    let tally_ledger::ChangeResult::Completed { effective_height } = done.result else {
        unreachable!()
    };
    assert_eq!(effective_height, done.height + 2);

    // From its first height on, the set of five signs, and the four running
    // validators keep committing.
    net.wait_height("validator-2", effective_height + 3).await;
    let five = net
        .client("validator-2")
        .validators(Some(effective_height))
        .await
        .unwrap();
    assert_eq!(five.validators.len(), 5);
    assert_eq!(five.quorum_power, 4);
    let before = net
        .client("validator-2")
        .validators(Some(effective_height - 1))
        .await
        .unwrap();
    assert_eq!(before.validators.len(), 4);
    let block = net
        .client("validator-3")
        .block(BlockId::Height(effective_height + 1), false)
        .await
        .unwrap();
    assert_eq!(block.header.validators_hash, five.validators_hash);
    assert!(block.commit.signatures.len() >= 4);
    let (ok, out, err) = tally(&["validators", "--rpc", &rpc]);
    assert!(ok, "{err}");
    assert!(
        out.contains("validator-4") && out.contains("20.0%"),
        "{out}"
    );

    // A sixth now would leave the four live validators 4 of 6: refused,
    // with the numbers.
    let status = net.client("validator-0").status().await.unwrap();
    let key = devnet_key("validator-0");
    let nonce = net
        .client("validator-0")
        .account(&key.address())
        .await
        .unwrap()
        .next_nonce;
    let vote = tally_ledger::Transaction::validator_vote(
        status.chain_id.clone(),
        key.address(),
        tally_ledger::ValidatorChange::Add {
            name: "validator-5".into(),
            address: devnet_key("validator-5").address(),
            power: 1,
            peer: ABSENT_PEER.into(),
        },
        None,
        0,
        nonce,
    )
    .sign(&key, &status.genesis_hash);
    let answer = common::call_raw(
        &rpc,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tx_submit",
               "params": [tally_ledger::to_hex(&vote.encode())]}),
    )
    .await;
    assert_eq!(answer["error"]["code"], json!(1110), "{answer}");
    assert_eq!(answer["error"]["data"]["reason"], json!("liveness_lost"));
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("4 of the 6"), "{message}");

    // A full node from genesis follows the change: every certificate is
    // checked against the set of its height.
    let tip = net.height("validator-0").await;
    net.start("full-0");
    net.wait_height("full-0", tip).await;
    assert_eq!(
        net.hashes("full-0", tip).await,
        net.hashes("validator-0", tip).await
    );
    let synced = net
        .client("full-0")
        .validators(Some(effective_height))
        .await
        .unwrap();
    assert_eq!(synced.validators_hash, five.validators_hash);
}
