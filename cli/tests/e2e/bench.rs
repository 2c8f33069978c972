//! `tally bench` end to end, short and slow so that it only keeps the tool
//! working (speed is measured by running it, docs/BENCHMARKS.md): against a
//! devnet it starts, and attached to a running `tally dev` node. Every
//! accepted transfer must be committed exactly once, the nodes must agree,
//! and the report must carry every field the docs name.

#![allow(clippy::unwrap_used)] // tests report failure by panicking

use crate::common;

use common::{tally, NodeProcess};
use serde_json::Value;

/// Checks the report of a run that submitted at most `max_submitted`.
fn check_report(report: &Value, nodes: usize, max_submitted: u64) {
    let n = |field: &str| {
        report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} missing: {report}"))
    };
    let submitted = n("submitted");
    assert!(
        submitted > max_submitted / 2 && submitted <= max_submitted,
        "{report}"
    );
    assert_eq!(n("accepted"), submitted, "{report}");
    assert_eq!(n("committed"), submitted, "{report}");
    assert_eq!(
        (n("lost"), n("queued_uncommitted"), n("duplicated")),
        (0, 0, 0),
        "{report}"
    );
    assert_eq!(report["rejected"], serde_json::json!({}), "{report}");
    assert_eq!(report["tips_agree"], Value::Bool(true), "{report}");
    assert!(report["committed_tps"].as_f64().unwrap() > 0.0, "{report}");
    let latency = &report["latency_ms"];
    let p = |q: &str| latency[q].as_f64().unwrap();
    assert!(
        0.0 < p("p50") && p("p50") <= p("p90") && p("p90") <= p("p99") && p("p99") <= p("max"),
        "{report}"
    );
    assert!(n("blocks") >= 1, "{report}");
    let listed = report["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), nodes, "{report}");
    for node in listed {
        assert!(node["rpc_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"));
        assert!(node.get("cpu_seconds").is_some() && node.get("peak_rss_bytes").is_some());
    }
}

#[test]
fn a_short_bench_on_its_own_devnet_commits_every_transfer_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.json");
    let net = dir.path().join("net");
    let (ok, stdout, stderr) = tally(&[
        "bench",
        "--validators",
        "4",
        "--rate",
        "100",
        "--duration",
        "3s",
        "--accounts",
        "8",
        "--batch",
        "20",
        "--dir",
        net.to_str().unwrap(),
        "--json-out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("committed tx/s"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    check_report(&report, 4, 300);
    for node in report["nodes"].as_array().unwrap() {
        assert!(node["cpu_seconds"].as_f64().unwrap() > 0.0, "{node}");
        assert!(
            node["peak_rss_bytes"].as_u64().unwrap() > 1_000_000,
            "{node}"
        );
    }
    assert!(report["disk_bytes_per_tx"].as_f64().unwrap() > 0.0);

    // The directory is the bench's own: a second run may reuse it, but a
    // directory holding something else is refused.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let (ok, _, stderr) = tally(&[
        "bench",
        "--duration",
        "1s",
        "--dir",
        other.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("was not made by `tally bench`"),
        "{stderr}"
    );
    assert!(other.join("notes.txt").exists());
}

#[test]
fn a_short_bench_attached_to_a_running_node_funds_its_senders_first() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::dev(&dir.path().join("home"));
    let out = dir.path().join("bench.json");
    let (ok, stdout, stderr) = tally(&[
        "bench",
        "--rpc",
        &node.url,
        "--rate",
        "100",
        "--duration",
        "2s",
        "--accounts",
        "4",
        "--json-out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "bench failed:\n{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    check_report(&report, 1, 200);
    // Resources of a node it did not start are unknown, not made up.
    assert_eq!(report["nodes"][0]["cpu_seconds"], Value::Null);
}
