//! The `tally` command line as a person uses it: keys, genesis, init, run,
//! and the wallet commands with and without `--json`.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use crate::common;

use common::{tally, NodeProcess};
use serde_json::Value;

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn keys_are_created_shown_and_protected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("me.json");
    let path = file.to_str().unwrap();
    let (ok, out, err) = tally(&["key", "new", "--out", path, "--json"]);
    assert!(ok, "{err}");
    let created = json_of(&out);
    assert!(created["address"].as_str().unwrap().starts_with("tally1"));
    assert!(created["public_key"].as_str().unwrap().starts_with("0x"));
    assert!(
        created.get("secret_key").is_none(),
        "a new key's secret is not printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key files are private");
    }
    let (ok, out, _) = tally(&["key", "show", path, "--json"]);
    assert!(ok);
    assert_eq!(json_of(&out)["address"], created["address"]);
    let (ok, _, err) = tally(&["key", "new", "--out", path]);
    assert!(!ok, "an existing key file is never overwritten");
    assert!(
        err.starts_with("error: ") && err.contains("must not exist"),
        "{err}"
    );

    let (ok, out, _) = tally(&["key", "devnet", "alice", "--json"]);
    assert!(ok);
    let alice = json_of(&out);
    assert_eq!(
        alice["address"].as_str().unwrap(),
        tally_ledger::devnet_key("alice").address().to_text()
    );
}

#[test]
fn devnet_genesis_is_the_shipped_one_and_bad_genesis_is_explained() {
    let (ok, out, err) = tally(&["genesis", "new", "--devnet", "4"]);
    assert!(ok, "{err}");
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../genesis.json")).unwrap();
    assert_eq!(out, shipped);

    let v = tally_ledger::devnet_key("validator-0").address().to_text();
    let (ok, _, err) = tally(&[
        "genesis",
        "new",
        "--validator",
        &format!("a:{v}"),
        "--validator",
        &format!("b:{v}"),
    ]);
    assert!(!ok);
    assert!(err.contains("appears twice"), "{err}");
    let (ok, _, err) = tally(&["genesis", "new", "--validator", "a:tally1notanaddress"]);
    assert!(!ok);
    assert!(err.contains("address"), "{err}");
}

#[test]
fn a_person_can_set_up_a_chain_and_use_the_wallet() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (ok, out, err) = tally(&["key", "new", "--out", &d("validator.json"), "--json"]);
    assert!(ok, "{err}");
    let validator = json_of(&out)["address"].as_str().unwrap().to_owned();
    let (ok, _, err) = tally(&[
        "genesis",
        "new",
        "--chain-id",
        "my-chain",
        "--validator",
        &format!("solo:{validator}"),
        "--balance",
        "devnet:alice:5000",
        "--out",
        &d("genesis.json"),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = tally(&[
        "init",
        "--home",
        &d("home"),
        "--genesis",
        &d("genesis.json"),
        "--key",
        &d("validator.json"),
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(json_of(&out)["validator"], Value::Bool(true));
    let (ok, _, err) = tally(&[
        "init",
        "--home",
        &d("home"),
        "--genesis",
        &d("genesis.json"),
    ]);
    assert!(!ok && err.contains("already initialised"), "{err}");

    let node = NodeProcess::run(&dir.path().join("home"));
    let rpc = node.url.clone();
    let (ok, out, err) = tally(&["status", "--rpc", &rpc, "--json"]);
    assert!(ok, "{err}");
    assert_eq!(json_of(&out)["chain_id"], "my-chain");
    let (ok, out, _) = tally(&["status", "--rpc", &rpc]);
    assert!(ok && out.contains("my-chain"), "{out}");

    let (ok, out, err) = tally(&[
        "transfer",
        "--rpc",
        &rpc,
        "--key",
        "devnet:alice",
        "--to",
        "devnet:bob",
        "--amount",
        "700",
        "--fee",
        "3",
        "--wait",
        "--json",
    ]);
    assert!(ok, "{err}");
    let sent = json_of(&out);
    assert_eq!(sent["status"], "committed", "{sent}");
    let hash = sent["hash"].as_str().unwrap().to_owned();

    let (ok, out, _) = tally(&["balance", "--rpc", &rpc, "devnet:bob", "--json"]);
    assert!(ok);
    assert_eq!(json_of(&out)["balance"], "700");
    let (ok, out, _) = tally(&["balance", "--rpc", &rpc, "devnet:alice"]);
    assert!(ok && out.contains("balance 4297"), "{out}");
    let (ok, out, _) = tally(&["tx", "--rpc", &rpc, &hash, "--json"]);
    assert!(ok);
    let info = json_of(&out);
    assert_eq!(info["status"], "committed");
    assert_eq!(info["tx"]["amount"], "700");
    let height = info["height"].as_u64().unwrap().to_string();
    let (ok, out, _) = tally(&["block", "--rpc", &rpc, &height, "--full", "--json"]);
    assert!(ok);
    let block = json_of(&out);
    assert_eq!(block["txs"][0]["hash"].as_str(), Some(hash.as_str()));
    assert_eq!(
        block["commit"]["signatures"][0]["validator"].as_str(),
        Some(validator.as_str())
    );
    let (ok, out, _) = tally(&["block", "--rpc", &rpc, "latest"]);
    assert!(ok && out.starts_with("block "), "{out}");

    // Errors are sentences on stderr with a non-zero exit.
    let (ok, _, err) = tally(&["balance", "--rpc", &rpc, "tally1qqqqqqqqqq"]);
    assert!(
        !ok && err.starts_with("error: ") && err.contains("address"),
        "{err}"
    );
    let (ok, _, err) = tally(&[
        "transfer",
        "--rpc",
        &rpc,
        "--key",
        "devnet:alice",
        "--to",
        "devnet:bob",
        "--amount",
        "999999999",
    ]);
    assert!(!ok && err.contains("insufficient funds"), "{err}");
    let (ok, _, err) = tally(&["tx", "--rpc", &rpc, "0x12"]);
    assert!(!ok && err.contains("expected 32 bytes"), "{err}");
    drop(node);
    let (ok, _, err) = tally(&["status", "--rpc", &rpc]);
    assert!(!ok && err.contains("cannot talk to the node"), "{err}");
}
