//! Wallet commands: talk to a node over JSON-RPC and print for people or,
//! with `--json`, for programs.

use anyhow::Context;
use serde::Serialize;
use tally_client::{BlockId, BlockTxs, Client, WaitMode};
use tally_ledger::{Action, ChainContext, Hash, Transaction, ValidatorChange};

use crate::cli::{ProveArgs, RpcArgs, TransferArgs};
use tally_node::home::{resolve_address, resolve_key};

fn client(args: &RpcArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&args.rpc)?)
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn transfer(args: TransferArgs) -> anyhow::Result<()> {
    let key = resolve_key(&args.key)?;
    let to = resolve_address(&args.to).context("--to")?;
    let client = client(&args.common)?;
    let status = client.status().await?;
    let nonce = match args.nonce {
        Some(n) => n,
        None => client.account(&key.address()).await?.next_nonce,
    };
    let tx = Transaction::transfer(
        status.chain_id,
        key.address(),
        to,
        args.amount,
        args.fee.unwrap_or(status.min_fee),
        nonce,
    )
    .sign(&key, &status.genesis_hash);
    let wait = if args.wait {
        WaitMode::Committed
    } else {
        WaitMode::None
    };
    let result = client.submit(&tx, wait).await?;
    if args.common.json {
        return print_json(&result);
    }
    println!("transaction {}", result.hash);
    println!(
        "  from {} nonce {} {} fee {}",
        tx.tx.from,
        tx.tx.nonce,
        describe(&tx.tx.action),
        tx.tx.fee
    );
    match (result.height, result.index) {
        (Some(height), Some(index)) => println!("  committed in block {height} at index {index}"),
        _ => println!(
            "  status: {}",
            serde_json::to_value(result.status)?.as_str().unwrap_or("?")
        ),
    }
    Ok(())
}

/// The chain to verify proofs against: `--genesis`, or the node's.
async fn proving_chain(
    client: &Client,
    prove: &ProveArgs,
) -> anyhow::Result<(ChainContext, String)> {
    match &prove.genesis {
        Some(path) => {
            let chain = ChainContext::new(tally_node::home::load_genesis(path)?);
            let source = format!("genesis {} ({})", chain.genesis_hash, path.display());
            Ok((chain, source))
        }
        None => {
            let chain = ChainContext::new(client.genesis().await?.genesis);
            let source = format!(
                "genesis {} as the node reports it (--genesis FILE checks against your own)",
                chain.genesis_hash
            );
            Ok((chain, source))
        }
    }
}

/// Most validator-set changes followed back from a proof's height.
const MAX_FOLLOWED_CHANGES: usize = 10_000;

/// Feeds `verifier` the node's answers that prove every validator-set
/// change up to `height`: for each change, the block before it took effect
/// (whose header announces the new set) and the new set. The node's
/// `since` of each set says where the previous change was.
async fn follow_sets(
    client: &Client,
    verifier: &mut crate::verify::Verifier,
    height: u64,
) -> anyhow::Result<()> {
    let mut changes = Vec::new();
    let mut at = height.max(1);
    loop {
        let since = client.validators(Some(at)).await?.since;
        if since <= 1 {
            break;
        }
        anyhow::ensure!(
            since <= at && changes.len() < MAX_FOLLOWED_CHANGES,
            "the node says the set at height {at} is in force since height {since}"
        );
        changes.push(since);
        at = since - 1;
    }
    for since in changes.into_iter().rev() {
        let block = client.block(BlockId::Height(since - 1), false).await?;
        verifier.verify(serde_json::to_value(block)?)?;
        let set = client.validators(Some(since)).await?;
        verifier.verify(serde_json::to_value(set)?)?;
    }
    Ok(())
}

/// Verifies a proof `answer` against the `--prove` genesis, then prints what
/// it proves (or, with `--json`, the answer itself).
async fn print_proven<T: Serialize>(
    client: &Client,
    prove: &ProveArgs,
    args: &RpcArgs,
    answer: &T,
    root: &str,
) -> anyhow::Result<()> {
    let (chain, source) = proving_chain(client, prove).await?;
    let answer_value = serde_json::to_value(answer)?;
    let mut verifier = crate::verify::Verifier::new(chain);
    for text in &prove.overrides {
        let (height, hash) = crate::verify::parse_override(text)?;
        verifier.trust_override(height, hash);
    }
    let height = answer_value["height"].as_u64().unwrap_or(0);
    follow_sets(client, &mut verifier, height)
        .await
        .context("the node's validator-set history does not check out")?;
    let proven = verifier
        .verify(answer_value)
        .context("the node's proof does not check out")?;
    if args.json {
        return print_json(answer);
    }
    println!("{proven}");
    println!("  proven against {root}, certified under {source}");
    Ok(())
}

pub async fn balance(address: &str, prove: &ProveArgs, args: &RpcArgs) -> anyhow::Result<()> {
    let address = resolve_address(address)?;
    if prove.prove {
        let client = client(args)?;
        let answer = client.account_proof(&address, None).await?;
        // A certified proof of another account would verify too.
        anyhow::ensure!(
            answer.address == address,
            "the node answered with a proof for {}, not {address}",
            answer.address
        );
        let root = format!("block {}'s state root", answer.height);
        return print_proven(&client, prove, args, &answer, &root).await;
    }
    let info = client(args)?.account(&address).await?;
    if args.json {
        return print_json(&info);
    }
    println!(
        "{}: balance {}, nonce {}, next nonce {}",
        info.address, info.balance, info.nonce, info.next_nonce
    );
    Ok(())
}

pub async fn tx(hash: &str, prove: &ProveArgs, args: &RpcArgs) -> anyhow::Result<()> {
    let hash: Hash = hash
        .parse()
        .map_err(|e| anyhow::anyhow!("transaction id {hash:?}: {e}"))?;
    if prove.prove {
        let client = client(args)?;
        let answer = client.tx_proof(&hash).await?;
        anyhow::ensure!(
            answer.hash == hash,
            "the node answered with a proof for transaction {}, not {hash}",
            answer.hash
        );
        let root = format!("block {}'s tx_root", answer.height);
        return print_proven(&client, prove, args, &answer, &root).await;
    }
    let info = client(args)?.tx(&hash).await?;
    if args.json {
        return print_json(&info);
    }
    println!("transaction {}", info.hash);
    println!(
        "  status: {}",
        serde_json::to_value(info.status)?.as_str().unwrap_or("?")
    );
    if let (Some(height), Some(index), Some(block)) = (info.height, info.index, info.block_hash) {
        println!("  block {height} ({block}) index {index}");
    }
    if let Some(n) = info.waiting_for_nonce {
        println!("  waiting for nonce {n}");
    }
    if let Some(e) = info.error {
        println!("  rejected: {} (error {}, {})", e.message, e.code, e.reason);
    }
    if let Some(t) = info.tx {
        println!("  from {} nonce {}", t.tx.from, t.tx.nonce);
        println!("  {} fee {}", describe(&t.tx.action), t.tx.fee);
    }
    Ok(())
}

fn parse_block_id(text: &str) -> anyhow::Result<BlockId> {
    if text == "latest" {
        return Ok(BlockId::latest());
    }
    if text.starts_with("0x") {
        return Ok(BlockId::Hash {
            hash: text.to_owned(),
        });
    }
    text.parse::<u64>()
        .map(BlockId::Height)
        .map_err(|_| anyhow::anyhow!("block {text:?}: expected a height, `latest` or a 0x… hash"))
}

pub async fn block(id: &str, full: bool, args: &RpcArgs) -> anyhow::Result<()> {
    let info = client(args)?.block(parse_block_id(id)?, full).await?;
    if args.json {
        return print_json(&info);
    }
    let h = &info.header;
    println!("block {} {}", h.height, info.hash);
    println!("  parent    {}", h.parent_hash);
    println!("  time      {} ms", h.timestamp_ms);
    println!("  proposer  {}", h.proposer);
    println!("  txs       {}", h.tx_count);
    println!(
        "  commit    round {} with {} signature(s)",
        info.commit.round,
        info.commit.signatures.len()
    );
    match &info.txs {
        BlockTxs::Ids(ids) => ids.iter().for_each(|id| println!("  tx {id}")),
        BlockTxs::Full(txs) => txs.iter().for_each(|t| {
            println!(
                "  tx {}: {} {} fee {} nonce {}",
                t.hash,
                t.tx.tx.from,
                describe(&t.tx.tx.action),
                t.tx.tx.fee,
                t.tx.tx.nonce
            )
        }),
    }
    Ok(())
}

/// `tally peers`.
pub async fn peers(args: &RpcArgs) -> anyhow::Result<()> {
    let info = client(args)?.peers().await?;
    if args.json {
        return print_json(&info);
    }
    println!("node id   {}", info.node_id);
    println!("listening {}", info.listen_address);
    println!("peers     {}", info.peers.len());
    for peer in &info.peers {
        let persistent = if peer.persistent { ", configured" } else { "" };
        println!("  {} ({}{persistent})", peer.address, peer.direction);
    }
    Ok(())
}

/// `2 min 5 s`, `4 s`, `800 ms`.
fn duration_text(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{} s", ms / 1_000),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1_000),
    }
}

/// `7`, `7 and 8`, `7, 8 and 9`.
fn list_text(items: &[u64]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => {
            let rest: Vec<String> = rest.iter().map(u64::to_string).collect();
            format!("{} and {last}", rest.join(", "))
        }
    }
}

/// One sentence on why an account's transactions wait, e.g. "waiting for
/// nonce 7; 8 and 9 are queued; 9 expires in 2 min 0 s".
pub(crate) fn pending_summary(info: &tally_client::PendingInfo) -> String {
    if info.queued.is_empty() {
        return match info.pending.len() {
            0 => format!(
                "nothing held; the next transaction takes nonce {}",
                info.next_nonce
            ),
            n => format!(
                "{n} pending, ready for the next block; the next transaction takes nonce {}",
                info.next_nonce
            ),
        };
    }
    let missing = &info.missing_nonces;
    let queued: Vec<u64> = info.queued.iter().map(|t| t.nonce).collect();
    let verb = if queued.len() == 1 { "is" } else { "are" };
    let soonest = info
        .queued
        .iter()
        .min_by_key(|t| t.expires_in_ms.unwrap_or(u64::MAX))
        .map(|t| {
            format!(
                "{} expires in {}",
                t.nonce,
                duration_text(t.expires_in_ms.unwrap_or(0))
            )
        })
        .unwrap_or_default();
    format!(
        "waiting for nonce {}; {} {verb} queued; {soonest}",
        list_text(missing),
        list_text(&queued)
    )
}

pub async fn pending(address: &str, args: &RpcArgs) -> anyhow::Result<()> {
    let address = resolve_address(address)?;
    let info = client(args)?.pending(&address).await?;
    if args.json {
        return print_json(&info);
    }
    println!(
        "{address}: committed nonce {}, next nonce {}",
        info.nonce, info.next_nonce
    );
    println!("{}", pending_summary(&info));
    if !info.pending.is_empty() || !info.queued.is_empty() {
        println!(
            "{:>8}  {:<8}  {:>10}  {:<22}  hash",
            "nonce", "state", "fee", "waits"
        );
    }
    for t in &info.pending {
        println!(
            "{:>8}  {:<8}  {:>10}  {:<22}  {}",
            t.nonce, "pending", t.fee, "", t.hash
        );
    }
    for t in &info.queued {
        let waits = format!(
            "nonce {}, expires {}",
            t.waiting_for_nonce.unwrap_or(info.next_nonce),
            duration_text(t.expires_in_ms.unwrap_or(0))
        );
        println!(
            "{:>8}  {:<8}  {:>10}  {:<22}  {}",
            t.nonce, "queued", t.fee, waits, t.hash
        );
    }
    let l = &info.limits;
    println!(
        "limits: {} transactions per sender, nonces up to {} past the next one, queued ones expire after {}",
        l.max_txs,
        l.max_nonce_gap,
        duration_text(l.queued_ttl_ms)
    );
    Ok(())
}

pub async fn status(args: &RpcArgs) -> anyhow::Result<()> {
    let status = client(args)?.status().await?;
    if args.json {
        return print_json(&status);
    }
    println!(
        "chain     {} (genesis {})",
        status.chain_id, status.genesis_hash
    );
    println!("height    {} ({})", status.height, status.tip_hash);
    if let Some(c) = &status.consensus {
        println!(
            "consensus height {} round {} step {}",
            c.height, c.round, c.step
        );
    }
    let role = match status.role {
        tally_client::NodeRole::Validator => "validator",
        tally_client::NodeRole::Full => "full node",
    };
    let syncing = if status.syncing { ", syncing" } else { "" };
    println!("role      {role}, {} peer(s){syncing}", status.peers);
    println!("mempool   {} transaction(s)", status.mempool_size);
    if let Some(v) = status.validator {
        println!("validator {v}");
    }
    println!("version   {}", status.node_version);
    for o in &status.validator_overrides {
        println!(
            "override  OPERATOR OVERRIDE from height {}: {} validator(s), validators_hash {}",
            o.height, o.validators, o.validators_hash
        );
    }
    if let Some(id) = &status.overrides_id {
        println!("overrides id {id} (every node must show the same: tally doctor)");
    }
    Ok(())
}

/// One line for what a transaction does.
pub(crate) fn describe(action: &Action) -> String {
    match action {
        Action::Transfer { to, amount } => format!("to {to} amount {amount}"),
        Action::Validator { change, evidence } => {
            let what = match change {
                ValidatorChange::Add {
                    name,
                    address,
                    power,
                    ..
                } => format!("add validator {name} {address} power {power}"),
                ValidatorChange::Remove { address } => format!("remove validator {address}"),
                ValidatorChange::SetPower { address, power } => {
                    format!("set power of {address} to {power}")
                }
                ValidatorChange::Rotate {
                    address, new_key, ..
                } => format!("rotate validator {address} to {new_key}"),
            };
            match evidence {
                Some(id) => format!("votes to {what}, citing evidence {id}"),
                None => format!("votes to {what}"),
            }
        }
    }
}

#[cfg(test)]
mod pending_tests {
    use super::*;
    use tally_client::{HeldTxInfo, PendingInfo, SenderLimits};
    use tally_ledger::Hash;

    fn held(nonce: u64, expires_in_ms: Option<u64>) -> HeldTxInfo {
        HeldTxInfo {
            hash: Hash::ZERO,
            nonce,
            fee: 1,
            waiting_for_nonce: expires_in_ms.map(|_| 7),
            expires_in_ms,
        }
    }

    #[test]
    fn the_pending_summary_says_what_waits_for_what() {
        let mut info = PendingInfo {
            address: tally_ledger::devnet_key("alice").address(),
            nonce: 6,
            next_nonce: 7,
            pending: vec![held(6, None)],
            queued: vec![held(8, Some(240_000)), held(9, Some(231_000))],
            missing_nonces: vec![7],
            limits: SenderLimits {
                max_txs: 1024,
                max_nonce_gap: 64,
                queued_ttl_ms: 300_000,
            },
        };
        assert_eq!(
            pending_summary(&info),
            "waiting for nonce 7; 8 and 9 are queued; 9 expires in 3 min 51 s"
        );
        info.queued = vec![held(12, Some(240_000))];
        info.missing_nonces = vec![7, 8, 9, 10, 11];
        assert_eq!(
            pending_summary(&info),
            "waiting for nonce 7, 8, 9, 10 and 11; 12 is queued; 12 expires in 4 min 0 s"
        );
        info.queued.clear();
        assert_eq!(
            pending_summary(&info),
            "1 pending, ready for the next block; the next transaction takes nonce 7"
        );
        assert_eq!(duration_text(800), "800 ms");
        assert_eq!(duration_text(4_500), "4 s");
    }
}
