//! `tally verify`: checks saved JSON-RPC answers offline against a genesis
//! — blocks with their certificates, validator sets, account and
//! transaction proofs — trusting nothing but the genesis file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tally_client::{AccountProofInfo, BlockInfo, BlockTxs, TxProofInfo, ValidatorsInfo};
use tally_ledger::state_tree::{genesis_tree, verify_account, AccountProof};
use tally_ledger::{
    decode_strict, parse_hex, tx_root, Account, ChainContext, Commit, Hash, Header, BLOCK_VERSION,
};

/// Largest proof accepted: a leaf and 256 inner-node siblings.
const MAX_PROOF_BYTES: usize = 1 + 64 + 4 + 256 * 65;

/// What one answer proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proven {
    /// A block, final under its certificate, whose body matches its header.
    Block {
        /// Height.
        height: u64,
        /// Hash.
        hash: Hash,
        /// Transactions in it.
        txs: usize,
    },
    /// The validator set in force at a height.
    Validators {
        /// Height.
        height: u64,
        /// Its hash.
        hash: Hash,
        /// Validators in it.
        count: usize,
    },
    /// An account's state at a height.
    Account {
        /// Which account.
        address: tally_ledger::Address,
        /// Its balance.
        balance: u64,
        /// Its nonce.
        nonce: u64,
        /// The height.
        height: u64,
    },
    /// A transaction in a final block.
    Tx {
        /// Its id.
        hash: Hash,
        /// The block height.
        height: u64,
        /// Its position in the block.
        index: u32,
    },
}

impl std::fmt::Display for Proven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proven::Block { height, hash, txs } => write!(
                f,
                "block {height} ({hash}) is final under its certificate and holds its {txs} transactions"
            ),
            Proven::Validators {
                height,
                hash,
                count,
            } => write!(
                f,
                "the {count} validators in force at height {height} hash to {hash}"
            ),
            Proven::Account {
                address,
                balance,
                nonce,
                height,
            } => write!(
                f,
                "{address} held balance {balance}, nonce {nonce} after block {height}"
            ),
            Proven::Tx {
                hash,
                height,
                index,
            } => write!(
                f,
                "transaction {hash} is number {index} of final block {height}"
            ),
        }
    }
}

fn parse<T: DeserializeOwned>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value).with_context(|| format!("not a well-formed {what} answer"))
}

/// Checks one saved answer (a JSON-RPC response, or its `result`) of
/// `chain_getBlock`, `chain_getValidators`, `account_getProof` or
/// `tx_getProof` against `chain`.
pub fn verify_answer(chain: &ChainContext, value: Value) -> anyhow::Result<Proven> {
    let value = match value {
        Value::Object(mut map) if map.contains_key("jsonrpc") => {
            if let Some(error) = map.remove("error") {
                anyhow::bail!("the saved answer is an error, not a result: {error}");
            }
            map.remove("result")
                .context("a JSON-RPC response without a result")?
        }
        other => other,
    };
    let has = |key: &str| value.get(key).is_some();
    if has("proof") && has("address") {
        verify_account_answer(chain, parse(value, "account_getProof")?)
    } else if has("proof") && has("hash") {
        verify_tx_answer(chain, parse(value, "tx_getProof")?)
    } else if has("validators") {
        verify_validators(chain, parse(value, "chain_getValidators")?)
    } else if has("header") && has("commit") && has("txs") {
        verify_block(chain, parse(value, "chain_getBlock")?)
    } else {
        anyhow::bail!(
            "not an answer of chain_getBlock, chain_getValidators, account_getProof or tx_getProof"
        )
    }
}

/// The header is of this chain and version, names the validator set that
/// signs it, and `commit` proves it final under that set.
fn check_certified(chain: &ChainContext, header: &Header, commit: &Commit) -> anyhow::Result<Hash> {
    let chain_id = &chain.genesis.chain_id;
    anyhow::ensure!(
        &header.chain_id == chain_id,
        "header {} is of chain {}, the genesis is of {chain_id}",
        header.height,
        header.chain_id
    );
    anyhow::ensure!(
        header.version == BLOCK_VERSION,
        "header {} has version {}; this verifier checks version {BLOCK_VERSION}",
        header.height,
        header.version
    );
    // The set does not change yet: every height is signed by the genesis set.
    let set_hash = chain.validators.hash();
    anyhow::ensure!(
        header.validators_hash == set_hash,
        "header {} names validator set {}, but the genesis set hashes to {set_hash}",
        header.height,
        header.validators_hash
    );
    let hash = header.hash();
    chain
        .verify_commit(commit, header.height, &hash)
        .with_context(|| format!("the certificate of block {} ({hash})", header.height))?;
    Ok(hash)
}

fn verify_block(chain: &ChainContext, block: BlockInfo) -> anyhow::Result<Proven> {
    let hash = check_certified(chain, &block.header, &block.commit)?;
    anyhow::ensure!(
        hash == block.hash,
        "block {} claims hash {}, its header hashes to {hash}",
        block.header.height,
        block.hash
    );
    let ids: Vec<Hash> = match &block.txs {
        BlockTxs::Ids(ids) => ids.clone(),
        BlockTxs::Full(txs) => txs
            .iter()
            .map(|t| {
                let id = t.tx.id();
                anyhow::ensure!(
                    id == t.hash,
                    "transaction {} of block {} hashes to {id}",
                    t.hash,
                    block.header.height
                );
                Ok(id)
            })
            .collect::<anyhow::Result<_>>()?,
    };
    anyhow::ensure!(
        ids.len() == block.header.tx_count as usize && tx_root(&ids) == block.header.tx_root,
        "the transactions of block {} are not the ones its header commits to",
        block.header.height
    );
    Ok(Proven::Block {
        height: block.header.height,
        hash,
        txs: ids.len(),
    })
}

fn verify_validators(chain: &ChainContext, info: ValidatorsInfo) -> anyhow::Result<Proven> {
    let genesis = chain.validators.validators();
    let matches = info.validators.len() == genesis.len()
        && info
            .validators
            .iter()
            .zip(genesis)
            .all(|(got, want)| got.address == want.address && got.power == want.power);
    anyhow::ensure!(
        matches,
        "the validator set at height {} is not the genesis set (the set does not change yet)",
        info.height
    );
    let hash = chain.validators.hash();
    anyhow::ensure!(
        info.validators_hash == hash,
        "the answer names validators_hash {}, the set hashes to {hash}",
        info.validators_hash
    );
    Ok(Proven::Validators {
        height: info.height,
        hash,
        count: genesis.len(),
    })
}

fn verify_account_answer(chain: &ChainContext, info: AccountProofInfo) -> anyhow::Result<Proven> {
    let root = match (&info.header, &info.commit) {
        (Some(header), Some(commit)) => {
            check_certified(chain, header, commit)?;
            anyhow::ensure!(
                header.height == info.height,
                "the proof is for height {}, the header is of {}",
                info.height,
                header.height
            );
            header.state_root
        }
        (None, None) => {
            anyhow::ensure!(
                info.height == 0,
                "a proof at height {} comes without the header and certificate that certify it",
                info.height
            );
            genesis_tree(chain)?.root
        }
        _ => anyhow::bail!("a proof with a header but no certificate, or the other way round"),
    };
    anyhow::ensure!(
        info.state_root == root,
        "the answer names state root {}, the certified one is {root}",
        info.state_root
    );
    anyhow::ensure!(
        info.proof.len() <= 2 + 2 * MAX_PROOF_BYTES,
        "the proof is {} hex digits, longer than any account proof ({MAX_PROOF_BYTES} bytes)",
        info.proof.len()
    );
    let bytes = parse_hex(&info.proof).context("the proof is not 0x hex")?;
    let proof: AccountProof = decode_strict(&bytes, MAX_PROOF_BYTES)
        .map_err(|e| anyhow::anyhow!("the proof does not decode: {e}"))?;
    let account = Account {
        balance: info.balance,
        nonce: info.nonce,
    };
    verify_account(&root, &info.address, &account, &proof)
        .with_context(|| format!("{} at height {}", info.address, info.height))?;
    Ok(Proven::Account {
        address: info.address,
        balance: info.balance,
        nonce: info.nonce,
        height: info.height,
    })
}

fn verify_tx_answer(chain: &ChainContext, info: TxProofInfo) -> anyhow::Result<Proven> {
    check_certified(chain, &info.header, &info.commit)?;
    anyhow::ensure!(
        info.header.height == info.height,
        "the proof is for height {}, the header is of {}",
        info.height,
        info.header.height
    );
    info.proof
        .verify(&info.hash, &info.header.tx_root, info.header.tx_count)
        .with_context(|| {
            format!(
                "transaction {} against block {}'s tx_root",
                info.hash, info.height
            )
        })?;
    Ok(Proven::Tx {
        hash: info.hash,
        height: info.height,
        index: info.proof.index,
    })
}

/// Largest answer file read.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// `tally verify --genesis G FILE...`: prints what each file proves;
/// fails at the first that does not check out, naming it.
pub fn run(genesis: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let chain = ChainContext::new(tally_node::home::load_genesis(genesis)?);
    println!(
        "genesis {} (chain {}, hash {})",
        genesis.display(),
        chain.genesis.chain_id,
        chain.genesis_hash
    );
    for file in files {
        let size = std::fs::metadata(file)
            .with_context(|| format!("cannot read {}", file.display()))?
            .len();
        anyhow::ensure!(
            size <= MAX_FILE_BYTES,
            "{} is {size} bytes, more than the {MAX_FILE_BYTES} a saved answer can be",
            file.display()
        );
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
        let proven = verify_answer(&chain, value)
            .with_context(|| format!("{} does not check out", file.display()))?;
        println!("{}: {proven}", file.display());
    }
    println!("all {} checked against the genesis", files.len());
    Ok(())
}
