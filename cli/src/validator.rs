//! `tally validator propose|votes` and `tally validators`: validator-set
//! changes by vote (PROTOCOL.md, "Validator-set changes").

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tally_client::{Client, WaitMode};
use tally_ledger::{Address, Hash, Transaction, ValidatorChange};
use tally_node::home::{resolve_address, resolve_key};

use crate::cli::RpcArgs;
use crate::wallet::describe;

/// `tally validator …`.
// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ValidatorCommand {
    /// Propose a change to the validator set, or vote for one already
    /// proposed (the same change): it completes when validators holding
    /// more than two thirds of the power have voted, and is in force two
    /// heights after the block that completes it.
    Propose(ProposeArgs),
    /// Show the open changes: who voted, what is missing, when votes
    /// expire; and the latest finished ones.
    Votes {
        #[command(flatten)]
        common: RpcArgs,
    },
    /// Show equivocation evidence: recorded on chain (with the block that
    /// records it) and held by the node, not yet recorded. A removal vote
    /// cites an id with `propose --remove ADDRESS --evidence ID`.
    Evidence {
        /// Recorded evidence from this height on.
        #[arg(long, value_name = "HEIGHT")]
        from: Option<u64>,
        #[command(flatten)]
        common: RpcArgs,
    },
    /// Write the `[[validator_override]]` entry that replaces the set of a
    /// halted chain (OPERATIONS.md, "When the chain halts"): the set in
    /// force at the node's next height, without the `--drop`ped
    /// validators and with the `--add`ed ones. Prints TOML for every
    /// node's config.toml; it changes nothing itself.
    Override {
        /// Leave out this validator (its name, `tally1…` address or
        /// `devnet:NAME`). Repeatable.
        #[arg(long, value_name = "VALIDATOR")]
        drop: Vec<String>,
        /// Add a validator: `NAME:ADDRESS:POWER`. Repeatable.
        #[arg(long, value_name = "NAME:ADDRESS:POWER")]
        add: Vec<String>,
        /// The first height the new set signs (default: the node's tip +
        /// 1, the height the chain halted at). Must be above every tip.
        #[arg(long)]
        height: Option<u64>,
        #[command(flatten)]
        common: RpcArgs,
    },
}

/// `tally validator propose`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).args(["add", "remove", "power", "rotate", "change_id"])))]
pub struct ProposeArgs {
    /// The voting validator's consensus key: a key file, or `devnet:NAME`.
    #[arg(long)]
    pub key: String,
    /// Add a validator: `NAME:ADDRESS:POWER` (ADDRESS `tally1…` or
    /// `devnet:NAME`); needs `--peer`.
    #[arg(long, value_name = "NAME:ADDRESS:POWER", requires = "peer")]
    pub add: Option<String>,
    /// The added validator's node address with its node id,
    /// `/ip4/HOST/tcp/PORT/p2p/NODE_ID` (`tally init` prints it).
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Option<String>,
    /// Remove the validator with this address.
    #[arg(long, value_name = "ADDRESS")]
    pub remove: Option<String>,
    /// With `--remove`: cite equivocation evidence on the chain against it
    /// (its id, `chain_getEvidence`).
    #[arg(long, value_name = "EVIDENCE_ID", requires = "remove")]
    pub evidence: Option<String>,
    /// Change a validator's power: `ADDRESS:POWER`.
    #[arg(long, value_name = "ADDRESS:POWER")]
    pub power: Option<String>,
    /// Rotate this validator's own key (`--key`) to the key in this file
    /// (or `devnet:NAME`): both keys sign. Restart the node with the new
    /// key once the change is in force.
    #[arg(long, value_name = "NEW_KEY")]
    pub rotate: Option<String>,
    /// Vote for an open change by its id (`tally validator votes` lists
    /// them): how the other validators vote for a key rotation, whose
    /// change carries the rotating validator's signatures.
    #[arg(long = "change", value_name = "CHANGE_ID")]
    pub change_id: Option<String>,
    /// Fee (votes may pay 0).
    #[arg(long, default_value_t = 0)]
    pub fee: u64,
    /// Nonce; defaults to the validator account's next nonce.
    #[arg(long)]
    pub nonce: Option<u64>,
    /// Wait until the vote is committed.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub common: RpcArgs,
}

fn parse_power(text: &str) -> anyhow::Result<u64> {
    let power: u64 = text
        .parse()
        .with_context(|| format!("power {text:?} is not a whole number"))?;
    if power == 0 {
        bail!("power must be at least 1");
    }
    Ok(power)
}

/// `ADDRESS:POWER`, splitting at the last colon (`devnet:NAME` has one).
fn address_and_power(text: &str) -> anyhow::Result<(Address, u64)> {
    let (address, power) = text
        .rsplit_once(':')
        .with_context(|| format!("{text:?} is not ADDRESS:POWER"))?;
    Ok((resolve_address(address)?, parse_power(power)?))
}

/// The change `args` describe, signed where it must be (a rotation).
fn change_of(
    args: &ProposeArgs,
    voter: Address,
    genesis_hash: &Hash,
) -> anyhow::Result<ValidatorChange> {
    if let Some(add) = &args.add {
        let (name, rest) = add
            .split_once(':')
            .with_context(|| format!("--add {add:?} is not NAME:ADDRESS:POWER"))?;
        let (address, power) = address_and_power(rest).context("--add")?;
        let peer = args.peer.clone().context("--add needs --peer")?;
        return Ok(ValidatorChange::Add {
            name: name.to_owned(),
            address,
            power,
            peer,
        });
    }
    if let Some(remove) = &args.remove {
        return Ok(ValidatorChange::Remove {
            address: resolve_address(remove).context("--remove")?,
        });
    }
    if let Some(power) = &args.power {
        let (address, power) = address_and_power(power).context("--power")?;
        return Ok(ValidatorChange::SetPower { address, power });
    }
    if let Some(rotate) = &args.rotate {
        let new = resolve_key(rotate).context("--rotate")?;
        return Ok(ValidatorChange::rotate(voter, &new, genesis_hash));
    }
    bail!("give one of --add, --remove, --power, --rotate")
}

/// `tally validator propose`.
pub async fn propose(args: ProposeArgs) -> anyhow::Result<()> {
    let key = resolve_key(&args.key).context("--key")?;
    let client = Client::new(&args.common.rpc)?;
    let status = client.status().await?;
    let change = match &args.change_id {
        Some(text) => {
            let id: Hash = text.parse().map_err(|e| anyhow::anyhow!("--change: {e}"))?;
            let pending = client.pending_changes().await?;
            match pending.open.into_iter().find(|c| c.id == id) {
                Some(open) => open.change,
                None => bail!(
                    "no open change has id {id} (`tally validator votes` lists the open ones)"
                ),
            }
        }
        None => change_of(&args, key.address(), &status.genesis_hash)?,
    };
    change
        .check_shape()
        .map_err(|e| anyhow::anyhow!("the change is malformed: {e}"))?;
    let evidence = match &args.evidence {
        Some(text) => Some(
            text.parse::<Hash>()
                .map_err(|e| anyhow::anyhow!("--evidence: {e}"))?,
        ),
        None => None,
    };
    let nonce = match args.nonce {
        Some(n) => n,
        None => client.account(&key.address()).await?.next_nonce,
    };
    let tx = Transaction::validator_vote(
        status.chain_id,
        key.address(),
        change.clone(),
        evidence,
        args.fee,
        nonce,
    )
    .sign(&key, &status.genesis_hash);
    let wait = match args.wait {
        true => WaitMode::Committed,
        false => WaitMode::None,
    };
    let result = client.submit(&tx, wait).await?;
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    println!("vote {}", result.hash);
    println!("  {} {}", key.address(), describe(&tx.tx.action));
    println!("  change id {}", change.id());
    match (result.height, result.index) {
        (Some(height), Some(index)) => {
            println!("  committed in block {height} at index {index}");
            // Where the change stands now that the vote is in.
            let pending = client.pending_changes().await?;
            match pending.open.iter().find(|c| c.id == change.id()) {
                Some(open) => println!(
                    "  open: {} of the {} power needed has voted",
                    open.voted_power, open.quorum_power
                ),
                None => match pending.recent.iter().rev().find(|c| c.id == change.id()) {
                    Some(done) => println!(
                        "  finished at block {}: {}",
                        done.height,
                        result_text(&done.result)
                    ),
                    None => println!("  no longer open"),
                },
            }
        }
        _ => println!(
            "  status: {}",
            serde_json::to_value(result.status)?.as_str().unwrap_or("?")
        ),
    }
    Ok(())
}

fn result_text(result: &tally_ledger::ChangeResult) -> String {
    match result {
        tally_ledger::ChangeResult::Completed { effective_height } => {
            format!("completed, in force from height {effective_height}")
        }
        tally_ledger::ChangeResult::Refused { reason } => format!("refused: {reason}"),
        tally_ledger::ChangeResult::Expired => "expired".into(),
    }
}

/// `tally validator votes`.
pub async fn votes(common: RpcArgs) -> anyhow::Result<()> {
    let client = Client::new(&common.rpc)?;
    let pending = client.pending_changes().await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&pending)?);
        return Ok(());
    }
    println!(
        "validator-set changes at height {} (votes count for {} blocks)",
        pending.height, pending.vote_expiry
    );
    if pending.open.is_empty() {
        println!("  no open change");
    }
    for open in &pending.open {
        let action = tally_ledger::Action::Validator {
            change: open.change.clone(),
            evidence: None,
        };
        println!("\n{} (opened at {})", open.id, open.opened_at);
        println!("  {}", describe(&action));
        println!(
            "  voted power {} of {} needed",
            open.voted_power, open.quorum_power
        );
        for v in &open.vote_details {
            println!(
                "  voted   {} {} (power {}) at {}, counts through block {}",
                v.name.as_deref().unwrap_or("(left the set)"),
                v.validator,
                v.power,
                v.height,
                v.counts_through
            );
        }
        for v in &open.missing {
            println!("  missing {} {} (power {})", v.name, v.address, v.power);
        }
    }
    if !pending.recent.is_empty() {
        println!("\nfinished:");
    }
    for done in &pending.recent {
        println!(
            "  {} at block {}: {}",
            done.id,
            done.height,
            result_text(&done.result)
        );
    }
    Ok(())
}

/// `tally validator evidence [--from H]`.
pub async fn evidence(from: Option<u64>, common: RpcArgs) -> anyhow::Result<()> {
    let client = Client::new(&common.rpc)?;
    let list = client.evidence(from).await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    const STEPS: [&str; 3] = ["proposal", "prevote", "precommit"];
    let line = |e: &tally_rpc::EvidenceInfo| {
        let step = STEPS.get(e.step as usize).copied().unwrap_or("?");
        format!(
            "{} {} signed two {step}s at height {} round {}",
            e.id, e.validator, e.height, e.round
        )
    };
    if list.recorded.is_empty() && list.pending.is_empty() {
        println!("no evidence");
    }
    for e in &list.recorded {
        let at = e.included_height.unwrap_or_default();
        println!("{}, recorded in block {at}", line(e));
    }
    if let Some(next) = list.next_height {
        println!("(more: --from {next})");
    }
    for e in &list.pending {
        println!("{}, not recorded yet", line(e));
    }
    Ok(())
}

/// `tally validators [--height H]`.
pub async fn validators(height: Option<u64>, common: RpcArgs) -> anyhow::Result<()> {
    let client = Client::new(&common.rpc)?;
    let set = client.validators(height).await?;
    if common.json {
        println!("{}", serde_json::to_string_pretty(&set)?);
        return Ok(());
    }
    println!(
        "validators at height {} (hash {}): total power {}, quorum {}",
        set.height, set.validators_hash, set.total_power, set.quorum_power
    );
    for v in &set.validators {
        let share = v.power as f64 * 100.0 / set.total_power.max(1) as f64;
        println!(
            "  {:<20} {} power {} ({share:.1}%)",
            v.name, v.address, v.power
        );
    }
    Ok(())
}

/// `tally validator override`: the TOML of an override entry built from
/// the node's set in force.
pub async fn override_entry(
    drop: &[String],
    add: &[String],
    height: Option<u64>,
    common: RpcArgs,
) -> anyhow::Result<()> {
    let client = Client::new(&common.rpc)?;
    let status = client.status().await?;
    let height = height.unwrap_or(status.height + 1);
    anyhow::ensure!(
        height > status.height,
        "height {height} is committed already (the node is at {}): an override takes effect \
         above the tip",
        status.height
    );
    let base = client.validators(Some(status.height + 1)).await?;
    let mut validators: Vec<tally_ledger::GenesisValidator> = base
        .validators
        .iter()
        .map(|v| tally_ledger::GenesisValidator {
            name: v.name.clone(),
            address: v.address,
            power: v.power,
        })
        .collect();
    for gone in drop {
        let by_address = resolve_address(gone).ok();
        let before = validators.len();
        validators.retain(|v| &v.name != gone && Some(v.address) != by_address);
        anyhow::ensure!(
            validators.len() < before,
            "--drop {gone:?}: no validator of the set in force has that name or address"
        );
    }
    for entry in add {
        let (name, rest) = entry
            .split_once(':')
            .with_context(|| format!("--add {entry:?} is not NAME:ADDRESS:POWER"))?;
        let (address, power) = address_and_power(rest).context("--add")?;
        validators.push(tally_ledger::GenesisValidator {
            name: name.to_owned(),
            address,
            power,
        });
    }
    let set = tally_ledger::ValidatorSet::new(validators);
    anyhow::ensure!(
        set.is_well_formed(),
        "the new set breaks the set rules (1 to 256 validators, distinct keys and names of 1 to \
         64 bytes, power at least 1)"
    );
    let entry = ValidatorOverrideToml {
        validator_override: vec![tally_node::config::ValidatorOverride {
            height,
            validators: set.validators().to_vec(),
        }],
    };
    if common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entry.validator_override[0])?
        );
        return Ok(());
    }
    let power: u64 = set.total_power();
    println!(
        "# Operator override: from height {height} the validator set below signs ({} validators, \
         total power {power}, validators_hash {}).",
        set.validators().len(),
        set.hash()
    );
    println!(
        "# Add it to config.toml of EVERY node of the chain (validators and full nodes; keep any \
         earlier [[validator_override]]), restart them, and compare with `tally doctor`."
    );
    print!("{}", toml::to_string(&entry)?);
    Ok(())
}

#[derive(serde::Serialize)]
struct ValidatorOverrideToml {
    validator_override: Vec<tally_node::config::ValidatorOverride>,
}
