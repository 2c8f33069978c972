//! `tally verify`: checks saved JSON-RPC answers offline against a genesis
//! — blocks with their certificates, validator sets, account and
//! transaction proofs — trusting nothing but the genesis file.
//!
//! The verifier follows the validator set from the genesis: a header is
//! checked against the latest set it has proven at or below the header's
//! height, and a new set is proven by a `chain_getValidators` answer whose
//! hash a checked header announced (`next_validators_hash` of the block
//! before the change takes effect). Answers are taken in the order given,
//! so a chain that changed its set is verified by giving, for each change,
//! the announcing block and then the new set, before what they certify.
//! The trust is the usual one of a light client: more than two thirds of
//! the power of every set followed signs only the true chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tally_client::{AccountProofInfo, BlockInfo, BlockTxs, TxProofInfo, ValidatorsInfo};
use tally_ledger::state_tree::{genesis_tree, verify_account, AccountProof};
use tally_ledger::{
    decode_strict, parse_hex, tx_root, verify_commit, Account, ChainContext, Commit,
    GenesisValidator, Hash, Header, ValidatorSet, BLOCK_VERSION,
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
        /// The height of the checked header that announced it, if it is a
        /// change (else it is the set followed so far).
        announced_by: Option<u64>,
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
                announced_by,
            } => match announced_by {
                Some(by) => write!(
                    f,
                    "the {count} validators in force from height {height} hash to {hash}, \
                     as block {by} announced"
                ),
                None => write!(
                    f,
                    "the {count} validators in force at height {height} hash to {hash}, \
                     the set followed so far"
                ),
            },
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

/// Checks saved answers against a genesis, following the validator set
/// through the changes the answers prove (module docs).
pub struct Verifier {
    chain: ChainContext,
    /// The sets proven, by the first height each is in force from.
    sets: BTreeMap<u64, ValidatorSet>,
    /// Changes announced by checked headers: the hash of the set in force
    /// from each height.
    announced: BTreeMap<u64, Hash>,
    /// Operator overrides the user trusts (`--override HEIGHT:HASH`): the
    /// hash of the set that signs from each height, whatever the chain
    /// announced before it.
    trusted: BTreeMap<u64, Hash>,
}

/// Parses `--override HEIGHT:HASH`.
pub fn parse_override(text: &str) -> anyhow::Result<(u64, Hash)> {
    let (height, hash) = text
        .split_once(':')
        .context("an override is HEIGHT:VALIDATORS_HASH (chain_status of a node that has it)")?;
    let height: u64 = height
        .parse()
        .with_context(|| format!("override height {height:?} is not a number"))?;
    anyhow::ensure!(height >= 2, "an override takes effect at height 2 or later");
    let hash: Hash = hash
        .parse()
        .map_err(|_| anyhow::anyhow!("{hash:?} is not a 0x hash"))?;
    Ok((height, hash))
}

impl Verifier {
    /// A verifier that knows only the genesis (its set signs block 1).
    pub fn new(chain: ChainContext) -> Verifier {
        let sets = [(1, chain.validators.clone())].into_iter().collect();
        Verifier {
            chain,
            sets,
            announced: BTreeMap::new(),
            trusted: BTreeMap::new(),
        }
    }

    /// Trusts an operator override: from `height`, the set hashing to
    /// `hash` signs (proven by its chain_getValidators answer with `since`
    /// = `height`), although the header before it announced another.
    pub fn trust_override(&mut self, height: u64, hash: Hash) {
        self.trusted.insert(height, hash);
    }

    /// Checks one saved answer (a JSON-RPC response, or its `result`) of
    /// `chain_getBlock`, `chain_getValidators`, `account_getProof` or
    /// `tx_getProof`.
    pub fn verify(&mut self, value: Value) -> anyhow::Result<Proven> {
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
            self.verify_account_answer(parse(value, "account_getProof")?)
        } else if has("proof") && has("hash") {
            self.verify_tx_answer(parse(value, "tx_getProof")?)
        } else if has("validators") {
            self.verify_validators(parse(value, "chain_getValidators")?)
        } else if has("header") && has("commit") && has("txs") {
            self.verify_block(parse(value, "chain_getBlock")?)
        } else {
            anyhow::bail!(
                "not an answer of chain_getBlock, chain_getValidators, account_getProof or tx_getProof"
            )
        }
    }

    /// The latest set proven at or below `height`, with the height it is in
    /// force from.
    fn set_for(&self, height: u64) -> (u64, &ValidatorSet) {
        let (from, set) = self
            .sets
            .range(..=height.max(1))
            .next_back()
            .expect("the genesis set is in force from height 1");
        (*from, set)
    }

    /// The header is of this chain and version, names the set followed to
    /// its height, and `commit` proves it final under that set; a change
    /// it announces is noted.
    fn check_certified(&mut self, header: &Header, commit: &Commit) -> anyhow::Result<Hash> {
        let chain_id = &self.chain.genesis.chain_id;
        let height = header.height;
        anyhow::ensure!(
            &header.chain_id == chain_id,
            "header {height} is of chain {}, the genesis is of {chain_id}",
            header.chain_id
        );
        anyhow::ensure!(
            header.version == BLOCK_VERSION,
            "header {height} has version {}; this verifier checks version {BLOCK_VERSION}",
            header.version
        );
        anyhow::ensure!(height >= 1, "a header at height 0: the chain starts at 1");
        let (from, set) = self.set_for(height);
        let set_hash = set.hash();
        // A change announced for a height in (from, height] and not proven
        // yet: the followed set said itself that it leaves there.
        let announced = match from < height {
            true => self
                .announced
                .range(from + 1..=height)
                .next_back()
                .map(|(at, hash)| (*at, *hash)),
            false => None,
        };
        if let Some((at, hash)) = announced {
            anyhow::bail!(
                "header {height} is past height {at}, where block {} announced validator set \
                 {hash}: give the chain_getValidators answer of height {at} before this one",
                at - 1
            );
        }
        if header.validators_hash != set_hash {
            anyhow::bail!(
                "header {height} names validator set {}, but the set followed to height {height} \
                 (in force from height {from}) hashes to {set_hash}; if the set changed, give \
                 first the chain_getBlock answer of the block before the change took effect, \
                 then the chain_getValidators answer of the height it took effect (after an \
                 operator override, pass --override HEIGHT:HASH and that height's answer)",
                header.validators_hash
            );
        }
        let hash = header.hash();
        verify_commit(
            commit,
            height,
            &hash,
            set,
            chain_id,
            &self.chain.genesis_hash,
        )
        .with_context(|| format!("the certificate of block {height} ({hash})"))?;
        let next = height + 1;
        let known_next = self.sets.get(&next).map(|s| s.hash());
        if self.trusted.contains_key(&next) {
            // An override replaces whatever this header announced.
            return Ok(hash);
        }
        match known_next {
            Some(known) if known != header.next_validators_hash => anyhow::bail!(
                "header {height} announces set {} for height {next}, but set {known} was proven for it",
                header.next_validators_hash
            ),
            Some(_) => {}
            None if header.next_validators_hash != set_hash => {
                self.announced.insert(next, header.next_validators_hash);
            }
            None => {}
        }
        Ok(hash)
    }

    fn verify_block(&mut self, block: BlockInfo) -> anyhow::Result<Proven> {
        let hash = self.check_certified(&block.header, &block.commit)?;
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

    /// A set answer is proven when a checked header announced its hash for
    /// its height, or when it is the set followed to its height.
    fn verify_validators(&mut self, info: ValidatorsInfo) -> anyhow::Result<Proven> {
        let height = info.height.max(1);
        let set = ValidatorSet::new(
            info.validators
                .iter()
                .map(|v| GenesisValidator {
                    name: v.name.clone(),
                    address: v.address,
                    power: v.power,
                })
                .collect(),
        );
        anyhow::ensure!(
            set.is_well_formed(),
            "the validator set at height {height} breaks the set rules (1 to 256 validators, \
             distinct keys and names, power at least 1)"
        );
        let hash = set.hash();
        anyhow::ensure!(
            info.validators_hash == hash,
            "the answer names validators_hash {}, the set hashes to {hash}",
            info.validators_hash
        );
        let count = set.validators().len();
        // The change that made the set: announced for `since` (the answer
        // says which height that is; the announcement proves it).
        let since = info.since.clamp(1, height);
        if self.trusted.get(&since) == Some(&hash) {
            self.announced.remove(&since);
            // What was proven past the override no longer holds.
            self.sets.retain(|from, _| *from < since);
            self.announced.retain(|at, _| *at < since);
            self.sets.insert(since, set);
            return Ok(Proven::Validators {
                height: since,
                hash,
                count,
                announced_by: None,
            });
        }
        if self.announced.get(&since) == Some(&hash) {
            self.announced.remove(&since);
            self.sets.insert(since, set);
            return Ok(Proven::Validators {
                height: since,
                hash,
                count,
                announced_by: Some(since - 1),
            });
        }
        let (from, followed) = self.set_for(height);
        if from < height {
            if let Some((at, announced)) = self.announced.range(from + 1..=height).next_back() {
                anyhow::bail!(
                    "the validator set at height {height} hashes to {hash}, but block {} announced \
                     set {announced} from height {at} (if the chain's operators overrode the set \
                     there, pass --override {at}:{hash} to trust it)",
                    at - 1
                );
            }
        }
        anyhow::ensure!(
            followed.hash() == hash,
            "the validator set at height {height} hashes to {hash}, but no checked header announces \
             it and the set followed to height {height} (in force from height {from}) hashes to {}: \
             give first the chain_getBlock answer of height {} (the answer's `since` minus 1), \
             whose header announces the change (or, if the chain's operators overrode the set \
             there, pass --override {}:{hash} to trust it)",
            followed.hash(),
            info.since.max(2) - 1,
            info.since.max(2)
        );
        Ok(Proven::Validators {
            height,
            hash,
            count,
            announced_by: None,
        })
    }

    fn verify_account_answer(&mut self, info: AccountProofInfo) -> anyhow::Result<Proven> {
        let root = match (&info.header, &info.commit) {
            (Some(header), Some(commit)) => {
                self.check_certified(header, commit)?;
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
                genesis_tree(&self.chain)?.root
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

    fn verify_tx_answer(&mut self, info: TxProofInfo) -> anyhow::Result<Proven> {
        self.check_certified(&info.header, &info.commit)?;
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
}

/// Largest answer file read.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// `tally verify --genesis G FILE...`: prints what each file proves;
/// fails at the first that does not check out, naming it.
pub fn run(genesis: &Path, overrides: &[String], files: &[PathBuf]) -> anyhow::Result<()> {
    let chain = ChainContext::new(tally_node::home::load_genesis(genesis)?);
    let mut verifier = Verifier::new(chain.clone());
    for text in overrides {
        let (height, hash) = parse_override(text)?;
        println!("trusting the operator override at height {height}: validator set {hash}");
        verifier.trust_override(height, hash);
    }
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
        let proven = verifier
            .verify(value)
            .with_context(|| format!("{} does not check out", file.display()))?;
        println!("{}: {proven}", file.display());
    }
    println!("all {} checked against the genesis", files.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tally_ledger::devnet::devnet_genesis;

    fn header(chain: &ChainContext, height: u64, validators_hash: Hash) -> Header {
        Header {
            version: BLOCK_VERSION,
            chain_id: chain.genesis.chain_id.clone(),
            height,
            parent_hash: chain.genesis_hash,
            timestamp_ms: 1,
            proposer: chain.validators.validators()[0].address,
            tx_root: tx_root(&[]),
            tx_count: 0,
            state_root: Hash::ZERO,
            validators_hash,
            next_validators_hash: validators_hash,
            last_commit_hash: tally_ledger::last_commit_hash(&None),
            evidence_hash: tally_ledger::evidence_hash(&[]),
        }
    }

    fn unsigned(header: &Header) -> Commit {
        Commit {
            height: header.height,
            round: 0,
            block_hash: header.hash(),
            signatures: vec![],
        }
    }

    /// Crafted answers (a header at or below a proven set's first height,
    /// after an announcement) are refused with a reason, not a panic.
    #[test]
    fn crafted_headers_are_refused_without_a_panic() {
        let chain = ChainContext::new(devnet_genesis(4, "tally-devnet").unwrap());
        let mut verifier = Verifier::new(chain.clone());
        verifier.announced.insert(100, Hash::digest(b"a later set"));
        for height in [0, 1] {
            let h = header(&chain, height, Hash::digest(b"another set"));
            assert!(verifier.check_certified(&h, &unsigned(&h)).is_err());
        }
        // Past an announced change whose set was not shown: refused even
        // under the old set's hash.
        let h = header(&chain, 150, chain.validators.hash());
        let e = verifier.check_certified(&h, &unsigned(&h)).unwrap_err();
        assert!(e.to_string().contains("announced validator set"), "{e}");
        // Below it, the old set still signs (here: no signatures, refused
        // for that).
        let h = header(&chain, 50, chain.validators.hash());
        let e = verifier.check_certified(&h, &unsigned(&h)).unwrap_err();
        assert!(format!("{e:#}").contains("certificate"), "{e:#}");
    }
}
