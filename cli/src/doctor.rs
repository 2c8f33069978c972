//! `tally doctor`: asks several nodes what chain they run and with which
//! operator overrides of the validator set, and says where they disagree —
//! the check that every node was given the same `[[validator_override]]`
//! entries (OPERATIONS.md, "When the chain halts").

use tally_client::{ChainStatus, Client};

/// What one node said, or why it said nothing.
struct Seen {
    url: String,
    status: Result<ChainStatus, String>,
}

fn overrides_of(status: &ChainStatus) -> String {
    match &status.overrides_id {
        None => "none".to_owned(),
        Some(id) => {
            let heights: Vec<String> = status
                .validator_overrides
                .iter()
                .map(|o| {
                    format!(
                        "{} ({} validators, {})",
                        o.height, o.validators, o.validators_hash
                    )
                })
                .collect();
            format!("{id} at height {}", heights.join(", "))
        }
    }
}

/// Prints each node's chain, height and overrides; fails when a node
/// cannot be asked or two disagree on the genesis or the overrides.
pub async fn run(urls: &[String], json: bool) -> anyhow::Result<()> {
    let mut seen = Vec::new();
    for url in urls {
        let status = match Client::new(url) {
            Ok(client) => client.status().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        seen.push(Seen {
            url: url.clone(),
            status,
        });
    }
    let mut problems = Vec::new();
    let answered: Vec<(&str, &ChainStatus)> = seen
        .iter()
        .filter_map(|s| s.status.as_ref().ok().map(|st| (s.url.as_str(), st)))
        .collect();
    for s in &seen {
        if let Err(e) = &s.status {
            problems.push(format!("{} did not answer chain_status: {e}", s.url));
        }
    }
    if let Some((first_url, first)) = answered.first() {
        for (url, status) in &answered[1..] {
            if status.genesis_hash != first.genesis_hash {
                problems.push(format!(
                    "{url} runs chain {} (genesis {}), {first_url} runs {} (genesis {}): they \
                     are different chains",
                    status.chain_id, status.genesis_hash, first.chain_id, first.genesis_hash
                ));
            } else if status.overrides_id != first.overrides_id {
                problems.push(format!(
                    "{url} has validator overrides {}, {first_url} has {}: give every node the \
                     same [[validator_override]] entries and restart it",
                    overrides_of(status),
                    overrides_of(first)
                ));
            }
        }
    }
    if json {
        let nodes: Vec<serde_json::Value> = seen
            .iter()
            .map(|s| match &s.status {
                Ok(st) => serde_json::json!({ "url": s.url, "status": st }),
                Err(e) => serde_json::json!({ "url": s.url, "error": e }),
            })
            .collect();
        let report = serde_json::json!({ "nodes": nodes, "problems": problems });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (url, st) in &answered {
            println!(
                "{url}: chain {} (genesis {}), height {}, {}, {} peers, overrides {}",
                st.chain_id,
                st.genesis_hash,
                st.height,
                match st.role {
                    tally_client::NodeRole::Validator => "validator",
                    tally_client::NodeRole::Full => "full node",
                },
                st.peers,
                overrides_of(st)
            );
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("the nodes disagree:\n  {}", problems.join("\n  "));
    }
    if !json {
        println!(
            "all {} nodes run the same chain with the same validator overrides",
            answered.len()
        );
    }
    Ok(())
}
