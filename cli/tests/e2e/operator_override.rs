//! The operator escape hatch on a devnet of real processes, as operators
//! would use it (docs/OPERATIONS.md, "When the chain halts"):
//! - two of four validators are killed: 2 of 4 is no quorum and the chain
//!   halts (both remaining validators wait at the next height);
//! - `tally validator override --drop … --drop …` writes the
//!   `[[validator_override]]` entry for the next height, the two remaining
//!   operators put it in their config.toml and restart, and the chain goes
//!   on, signed by the two;
//! - a full node without the override is refused by them, and
//!   `tally doctor` says which overrides differ; given the override, it
//!   syncs through the override height;
//! - `tally verify` accepts the history across the override only when told
//!   to trust it (`--override HEIGHT:HASH`);
//! - a node whose override names a height its chain committed otherwise
//!   refuses to start, and so does one whose chain took an override that
//!   its config no longer names.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::common::{save_answer, tally, Devnet, STEP_DEADLINE};

use tally_client::BlockId;
use tokio::time::Instant;

fn append_config(home: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(home.join("config.toml"))
        .unwrap();
    writeln!(file, "\n{text}").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_restart_a_halted_chain_with_an_agreed_override() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::laid_out(dir.path());
    for v in ["validator-0", "validator-1", "validator-2", "validator-3"] {
        net.start(v);
    }
    net.wait_height("validator-0", 3).await;

    // 1. Half the power is gone: the chain halts. Both remaining
    // validators stand at the same tip, prevoted at the next height and
    // waiting for votes that cannot come (2 of 4 is no quorum, and without
    // two thirds of the power no round timeout even starts).
    net.kill9("validator-2");
    net.kill9("validator-3");
    let (v0, v1) = (net.client("validator-0"), net.client("validator-1"));
    let deadline = Instant::now() + STEP_DEADLINE;
    let halted_at = loop {
        let (a, b) = (v0.status().await.unwrap(), v1.status().await.unwrap());
        let waiting = |s: &tally_client::ChainStatus| {
            s.consensus.as_ref().is_some_and(|c| {
                c.height == s.height + 1 && c.step != "propose" && c.step != "commit"
            })
        };
        if a.height == b.height && waiting(&a) && waiting(&b) {
            break a.height;
        }
        assert!(
            Instant::now() < deadline,
            "the chain did not halt: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let height = halted_at + 1;

    // 2. The override entry for the next height, without the two gone.
    let (ok, entry, err) = tally(&[
        "validator",
        "override",
        "--drop",
        "validator-2",
        "--drop",
        "devnet:validator-3",
        "--rpc",
        &net.urls["validator-0"],
    ]);
    assert!(ok, "validator override: {err}");
    assert!(entry.contains("[[validator_override]]"), "{entry}");
    assert!(entry.contains(&format!("height = {height}")), "{entry}");
    assert!(!entry.contains("validator-2"), "{entry}");
    // Its set, as a node with the override will name it.
    let two = tally_ledger::ValidatorSet::new(
        ["validator-0", "validator-1"]
            .iter()
            .map(|n| tally_ledger::GenesisValidator {
                name: (*n).to_owned(),
                address: tally_ledger::devnet_key(n).address(),
                power: 1,
            })
            .collect(),
    );
    assert!(entry.contains(&two.hash().to_string()), "{entry}");

    // 3. The two operators restart with it; the chain goes on.
    for v in ["validator-0", "validator-1"] {
        assert!(net.running.remove(v).unwrap().terminate(), "{v} stops");
        append_config(&net.homes[v], &entry);
    }
    for v in ["validator-0", "validator-1"] {
        net.start(v);
    }
    net.wait_height("validator-0", height + 2).await;
    let v0 = net.client("validator-0");
    let status = v0.status().await.unwrap();
    assert_eq!(status.validator_overrides.len(), 1);
    assert_eq!(status.validator_overrides[0].height, height);
    assert_eq!(status.validator_overrides[0].validators_hash, two.hash());
    let set = v0.validators(Some(height + 1)).await.unwrap();
    assert_eq!((set.since, set.validators_hash), (height, two.hash()));
    let before = v0.validators(Some(halted_at)).await.unwrap();
    assert_eq!(before.validators.len(), 4, "the history keeps the old set");
    let block = v0.block(BlockId::Height(height), false).await.unwrap();
    assert_eq!(block.header.validators_hash, two.hash());
    let signers: Vec<_> = block
        .commit
        .signatures
        .iter()
        .map(|s| s.validator)
        .collect();
    assert_eq!(signers.len(), 2, "both validators of the override sign");

    let (ok, out, err) = tally(&["doctor", &net.urls["validator-0"], &net.urls["validator-1"]]);
    assert!(ok, "doctor on two agreeing nodes: {out}{err}");
    assert!(out.contains("same validator overrides"), "{out}");

    // 4. A full node without the override is refused, and the doctor says
    // why; with it, the node syncs through the override.
    net.start("full-0");
    let full = net.client("full-0");
    let (ok, out, err) = tally(&["doctor", &net.urls["validator-0"], &net.urls["full-0"]]);
    assert!(!ok, "doctor passed nodes with other overrides: {out}");
    assert!(err.contains("has validator overrides none"), "{err}");
    assert!(err.contains("[[validator_override]]"), "{err}");
    // (That its peers refuse it at identify is gossip's
    // `a_node_with_other_validator_overrides_is_dropped_…` test.)
    assert!(net.running.remove("full-0").unwrap().terminate());
    append_config(&net.homes["full-0"], &entry);
    net.start("full-0");
    let tip = net.height("validator-0").await;
    net.wait_height("full-0", tip).await;
    assert_eq!(
        net.hashes("full-0", tip).await,
        net.hashes("validator-0", tip).await
    );

    // 5. Offline, the history verifies across the override only when the
    // override is trusted.
    let answers = dir.path().join("answers");
    std::fs::create_dir(&answers).unwrap();
    let files = [
        save_answer(
            &answers,
            "announcing",
            full.block(BlockId::Height(halted_at), false).await.unwrap(),
        ),
        save_answer(
            &answers,
            "override",
            full.validators(Some(height)).await.unwrap(),
        ),
        save_answer(
            &answers,
            "tip",
            full.block(BlockId::Height(tip), false).await.unwrap(),
        ),
    ];
    let genesis = net.homes["validator-0"].join("genesis.json");
    let verify = |extra: &[String]| {
        let mut args = vec!["verify", "--genesis", genesis.to_str().unwrap()];
        args.extend(extra.iter().map(String::as_str));
        args.extend(files.iter().map(String::as_str));
        tally(&args)
    };
    let (ok, out, err) = verify(&[]);
    assert!(!ok, "an override verified without being trusted: {out}");
    assert!(err.contains("--override"), "{err}");
    let trust = vec!["--override".to_owned(), format!("{height}:{}", two.hash())];
    let (ok, out, err) = verify(&trust);
    assert!(ok, "tally verify --override: {out}{err}");
    assert!(out.contains("all 3 checked"), "{out}");

    // 6. An override at a height this node committed with another set:
    // the node refuses to start and says why.
    let stale = entry.replace(&format!("height = {height}"), "height = 2");
    append_config(&net.homes["validator-2"], &stale);
    let err = refused_start(&net.homes["validator-2"]);
    assert!(err.contains("does not match this node's chain"), "{err}");

    // 7. The override taken out of a node whose chain took it: it refuses
    // to start and says to put it back.
    assert!(net.running.remove("validator-1").unwrap().terminate());
    let config = net.homes["validator-1"].join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(&entry, "")).unwrap();
    let err = refused_start(&net.homes["validator-1"]);
    assert!(err.contains("no longer names"), "{err}");
}

/// Runs `tally run --home HOME`, which must exit with an error within a
/// minute; returns its stderr.
fn refused_start(home: &Path) -> String {
    let mut child = std::process::Command::new(crate::common::tally_bin())
        .args(["run", "--home", home.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a node with a wrong override kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    err
}
