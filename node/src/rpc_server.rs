//! The HTTP server: JSON-RPC (jsonrpsee, mounted in axum) at `POST /` and
//! `GET /health`, behind a cap on open connections.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonrpsee::core::{async_trait, RpcResult};
use jsonrpsee::types::{ErrorCode, ErrorObjectOwned};
use serde_json::json;
use tally_ledger::state_tree::{prove_account, tree_root};
use tally_ledger::{Address, Hash, StorageError};
use tally_mempool::{MempoolError, PoolState};
use tally_rpc::codes::{self, error};
use tally_rpc::{
    AccountInfo, AccountProofInfo, BatchEntry, BlockId, BlockInfo, BlockTxs, ChainStatus,
    ChangeVoteInfo, ConsensusInfo, EvidenceInfo, EvidenceList, FinishedChangeInfo, FullTx,
    GenesisInfo, HeldTxInfo, NodeRole, OverrideInfo, PeerEntry, PeersInfo, PendingChangeInfo,
    PendingChangesInfo, PendingInfo, SenderLimits, SubmitResult, TallyApiServer, TxInfo,
    TxProofInfo, TxRejection, TxState, ValidatorInfo, ValidatorsInfo, WaitMode, MAX_EVIDENCE_PAGE,
    MAX_SUBMIT_BATCH,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::config::RpcConfig;
use crate::jsonrpc::{self, Dispatcher};
use crate::node::{Node, SubmitError};
use tally_host::{AdmitError, Rejection, TxStatus};

struct Api {
    node: Arc<Node>,
}

fn unavailable(e: StorageError) -> ErrorObjectOwned {
    error(
        codes::UNAVAILABLE,
        "storage",
        format!("the node cannot read its chain: {e}"),
    )
}

fn submit_error(e: SubmitError, retry_after_ms: u64) -> ErrorObjectOwned {
    let rejection = submit_rejection(e, retry_after_ms);
    match rejection.retry_after_ms {
        Some(retry) => ErrorObjectOwned::owned(
            rejection.code,
            rejection.message,
            Some(json!({ "reason": rejection.reason, "retry_after_ms": retry })),
        ),
        None => error(rejection.code, &rejection.reason, rejection.message),
    }
}

/// The code, reason and sentence of a refused submission; a full mempool
/// also says when to try again.
fn submit_rejection(e: SubmitError, retry_after_ms: u64) -> TxRejection {
    let message = e.to_string();
    let (code, reason) = match &e {
        SubmitError::Decode(e) | SubmitError::Admit(AdmitError::Tx(e)) => {
            tally_rpc::tx_error_code(e)
        }
        SubmitError::Admit(AdmitError::AlreadyCommitted(_)) => {
            (codes::DUPLICATE_TX, "already_committed")
        }
        SubmitError::Admit(AdmitError::Storage(e)) => {
            return TxRejection {
                code: codes::UNAVAILABLE,
                reason: "storage".into(),
                message: format!("the node cannot read its chain: {e}"),
                retry_after_ms: None,
            }
        }
        SubmitError::NotProducing => (codes::UNAVAILABLE, "no_peers"),
        SubmitError::Admit(AdmitError::Pool(p)) => match p {
            MempoolError::Invalid(e) => tally_rpc::tx_error_code(e),
            MempoolError::Duplicate => (codes::DUPLICATE_TX, "duplicate"),
            MempoolError::NonceTooFarAhead { .. } => (codes::NONCE_GAP, "nonce_gap"),
            MempoolError::ReplacementUnderpriced { .. } => {
                (codes::REPLACEMENT_UNDERPRICED, "replacement_underpriced")
            }
            MempoolError::SenderFull { .. } => (codes::SENDER_QUEUE_FULL, "sender_queue_full"),
            MempoolError::Full(_) => (codes::MEMPOOL_FULL, "mempool_full"),
            MempoolError::InBlock { .. } => (codes::NONCE_TOO_LOW, "in_block"),
        },
    };
    TxRejection {
        code,
        reason: reason.to_owned(),
        message,
        retry_after_ms: (code == codes::MEMPOOL_FULL).then_some(retry_after_ms),
    }
}

/// The RPC description of why an admitted transaction was dropped.
fn rejection(rejection: Rejection) -> TxRejection {
    match rejection {
        Rejection::Invalid(e) => {
            let (code, reason) = tally_rpc::tx_error_code(&e);
            TxRejection {
                code,
                reason: reason.to_owned(),
                message: e.to_string(),
                retry_after_ms: None,
            }
        }
        Rejection::Replaced { by } => TxRejection {
            code: codes::REPLACEMENT_UNDERPRICED,
            reason: "replaced".into(),
            message: format!("replaced by {by}, which pays a higher fee"),
            retry_after_ms: None,
        },
    }
}

fn malformed_hex(e: impl std::fmt::Display) -> TxRejection {
    TxRejection {
        code: codes::MALFORMED_HEX,
        reason: "malformed_hex".into(),
        message: format!("tx must be 0x-prefixed hex of the signed transaction: {e}"),
        retry_after_ms: None,
    }
}

fn parse_hash(text: &str) -> RpcResult<Hash> {
    text.parse::<Hash>().map_err(|e| {
        error(
            codes::MALFORMED_HEX,
            "malformed_hex",
            format!("hash {:?}: {e}", truncate(text)),
        )
    })
}

fn parse_address(text: &str) -> RpcResult<Address> {
    text.parse().map_err(|e| {
        error(
            codes::MALFORMED_ADDRESS,
            "malformed_address",
            format!("{e}"),
        )
    })
}

/// `height`, or the tip when `None`; a height above the tip is refused.
fn at_height(store: &dyn tally_ledger::ChainRead, height: Option<u64>) -> RpcResult<u64> {
    let tip = store.tip().map_err(unavailable)?.map_or(0, |t| t.height);
    let height = height.unwrap_or(tip);
    if height > tip {
        return Err(error(
            codes::UNKNOWN_BLOCK,
            "unknown_block",
            format!("no committed block at height {height} (the chain is at height {tip})"),
        ));
    }
    Ok(height)
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn tx_info(hash: Hash, status: TxStatus) -> TxInfo {
    let mut info = TxInfo {
        hash,
        status: TxState::Unknown,
        waiting_for_nonce: None,
        height: None,
        index: None,
        block_hash: None,
        error: None,
        tx: None,
    };
    match status {
        TxStatus::Unknown => {}
        TxStatus::InPool { state, tx } => {
            info.tx = Some(tx);
            match state {
                PoolState::Pending => info.status = TxState::Pending,
                PoolState::Queued { waiting_for } => {
                    info.status = TxState::Queued;
                    info.waiting_for_nonce = Some(waiting_for);
                }
            }
        }
        TxStatus::Committed {
            location,
            block_hash,
            tx,
        } => {
            info.status = TxState::Committed;
            info.height = Some(location.height);
            info.index = Some(location.index);
            info.block_hash = Some(block_hash);
            info.tx = tx;
        }
        TxStatus::Rejected(r) => {
            info.status = TxState::Rejected;
            info.error = Some(rejection(r));
        }
        TxStatus::Expired => info.status = TxState::Expired,
    }
    info
}

#[async_trait]
impl TallyApiServer for Api {
    async fn tx_submit(&self, tx: String, wait: Option<WaitMode>) -> RpcResult<SubmitResult> {
        let bytes = tally_ledger::parse_hex(&tx).map_err(|e| {
            let r = malformed_hex(e);
            error(r.code, &r.reason, r.message)
        })?;
        let retry_after_ms = self.node.chain().retry_after_ms();
        let (tx, hash, state) = self
            .node
            .submit(&bytes)
            .map_err(|e| submit_error(e, retry_after_ms))?;
        let status = match wait.unwrap_or_default() {
            WaitMode::None => TxStatus::InPool { state, tx },
            WaitMode::Committed => self.node.wait_final(&hash).await.map_err(unavailable)?,
        };
        let info = tx_info(hash, status);
        Ok(SubmitResult {
            hash,
            status: info.status,
            height: info.height,
            index: info.index,
            block_hash: info.block_hash,
            waiting_for_nonce: info.waiting_for_nonce,
            error: info.error,
        })
    }

    async fn tx_submit_batch(&self, txs: Vec<String>) -> RpcResult<Vec<BatchEntry>> {
        if txs.len() > MAX_SUBMIT_BATCH {
            return Err(ErrorObjectOwned::owned(
                jsonrpsee::types::error::INVALID_PARAMS_CODE,
                format!(
                    "{} transactions in one tx_submitBatch; at most {MAX_SUBMIT_BATCH}",
                    txs.len()
                ),
                None::<()>,
            ));
        }
        // Checking up to a thousand signatures takes milliseconds even in
        // batches: off the async workers, so consensus and other requests
        // go on.
        let node = self.node.clone();
        let retry_after_ms = node.chain().retry_after_ms();
        let entries = tokio::task::spawn_blocking(move || {
            let parsed: Vec<Result<Vec<u8>, TxRejection>> = txs
                .iter()
                .map(|hex| tally_ledger::parse_hex(hex).map_err(malformed_hex))
                .collect();
            let bytes: Vec<Vec<u8>> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
            let mut submitted = node.submit_batch(&bytes).into_iter();
            parsed
                .into_iter()
                .map(|parsed| {
                    parsed.and_then(|_| match submitted.next() {
                        Some(Ok((_, hash, state))) => Ok((hash, state)),
                        Some(Err(e)) => Err(submit_rejection(e, retry_after_ms)),
                        None => Err(submit_rejection(SubmitError::NotProducing, 0)),
                    })
                })
                .map(|result: Result<_, TxRejection>| match result {
                    Ok((hash, PoolState::Pending)) => BatchEntry::Admitted {
                        hash,
                        status: TxState::Pending,
                        waiting_for_nonce: None,
                    },
                    Ok((hash, PoolState::Queued { waiting_for })) => BatchEntry::Admitted {
                        hash,
                        status: TxState::Queued,
                        waiting_for_nonce: Some(waiting_for),
                    },
                    Err(error) => BatchEntry::Refused { error },
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| {
            ErrorObjectOwned::owned(
                jsonrpsee::types::error::INTERNAL_ERROR_CODE,
                format!("the batch was not finished: {e}"),
                None::<()>,
            )
        })?;
        Ok(entries)
    }

    async fn tx_get(&self, hash: String) -> RpcResult<TxInfo> {
        let hash = parse_hash(&hash)?;
        let status = self.node.tx_status(&hash, true).map_err(unavailable)?;
        Ok(tx_info(hash, status))
    }

    async fn account_get(&self, address: String) -> RpcResult<AccountInfo> {
        let address = parse_address(&address)?;
        let account = self
            .node
            .chain()
            .store()
            .account(&address)
            .map_err(unavailable)?;
        Ok(AccountInfo {
            address,
            balance: account.balance,
            nonce: account.nonce,
            next_nonce: self.node.chain().next_nonce(&address, &account),
        })
    }

    async fn account_get_pending(&self, address: String) -> RpcResult<PendingInfo> {
        let address = parse_address(&address)?;
        let chain = self.node.chain();
        let account = chain.store().account(&address).map_err(unavailable)?;
        let (view, limits) = chain.pending_of(&address, &account, crate::node::now_ms());
        let held = |t: &tally_mempool::HeldTx, queued: Option<u64>| HeldTxInfo {
            hash: t.id,
            nonce: t.nonce,
            fee: t.fee,
            waiting_for_nonce: queued.map(|_| view.next_nonce),
            expires_in_ms: queued,
        };
        Ok(PendingInfo {
            address,
            nonce: view.committed_nonce,
            next_nonce: view.next_nonce,
            pending: view.pending.iter().map(|t| held(t, None)).collect(),
            queued: view
                .queued
                .iter()
                .map(|(t, left)| held(t, Some(*left)))
                .collect(),
            missing_nonces: view.missing.clone(),
            limits: SenderLimits {
                max_txs: limits.max_txs_per_sender as u64,
                max_nonce_gap: limits.max_nonce_gap,
                queued_ttl_ms: limits.queued_ttl_ms,
            },
        })
    }

    async fn account_get_proof(
        &self,
        address: String,
        height: Option<u64>,
    ) -> RpcResult<AccountProofInfo> {
        let address = parse_address(&address)?;
        let chain = self.node.chain();
        let store = chain.store();
        let height = at_height(store, height)?;
        let pruned = || {
            error(
                codes::STATE_PRUNED,
                "state_pruned",
                format!(
                    "the state at height {height} is no longer kept: this node keeps the latest \
                     [storage] state_history heights"
                ),
            )
        };
        let (header, commit, state_root) = match height {
            0 => match tree_root(store, 0).map_err(unavailable)? {
                Some(root) => (None, None, root),
                None => return Err(pruned()),
            },
            _ => {
                let stored = store.block(height).map_err(unavailable)?.ok_or_else(|| {
                    unavailable(StorageError::Corrupt(format!("block {height} is missing")))
                })?;
                let root = stored.block.header.state_root;
                (Some(stored.block.header), Some(stored.commit), root)
            }
        };
        let (account, proof) = match prove_account(store, height, &address) {
            Ok(found) => found,
            Err(e) => {
                return Err(match tree_root(store, height) {
                    Ok(None) => pruned(),
                    _ => unavailable(e),
                })
            }
        };
        let proof = borsh::to_vec(&proof)
            .map_err(|e| unavailable(StorageError::Io(format!("cannot encode the proof: {e}"))))?;
        Ok(AccountProofInfo {
            address,
            balance: account.balance,
            nonce: account.nonce,
            height,
            state_root,
            header,
            commit,
            proof: tally_ledger::to_hex(&proof),
        })
    }

    async fn tx_get_proof(&self, hash: String) -> RpcResult<TxProofInfo> {
        let hash = parse_hash(&hash)?;
        let store = self.node.chain().store();
        let Some(location) = store.tx_location(&hash).map_err(unavailable)? else {
            return Err(error(
                codes::TX_NOT_COMMITTED,
                "tx_not_committed",
                format!("transaction {hash} is not in a committed block (tx_get says where it is)"),
            ));
        };
        let stored = store
            .block(location.height)
            .map_err(unavailable)?
            .ok_or_else(|| {
                unavailable(StorageError::Corrupt(format!(
                    "block {} is missing",
                    location.height
                )))
            })?;
        let ids: Vec<Hash> = stored.block.txs.iter().map(|tx| tx.id()).collect();
        let proof = tally_ledger::merkle::prove(&ids, location.index as usize)
            .filter(|_| ids.get(location.index as usize) == Some(&hash))
            .ok_or_else(|| {
                unavailable(StorageError::Corrupt(format!(
                    "the index says {hash} is transaction {} of block {}, which it is not",
                    location.index, location.height
                )))
            })?;
        Ok(TxProofInfo {
            hash,
            height: location.height,
            header: stored.block.header,
            commit: stored.commit,
            proof,
        })
    }

    async fn chain_get_block(&self, block: BlockId, full: Option<bool>) -> RpcResult<BlockInfo> {
        let store = self.node.chain().store();
        let height = match &block {
            BlockId::Height(h) => Some(*h),
            BlockId::Latest => store.tip().map_err(unavailable)?.map(|t| t.height),
            BlockId::Hash { hash } => store.height_of(&parse_hash(hash)?).map_err(unavailable)?,
        };
        let stored = match height {
            Some(h) => store.block(h).map_err(unavailable)?,
            None => None,
        };
        let Some(stored) = stored else {
            let tip = self.node.chain().tip().map_err(unavailable)?.height;
            return Err(error(
                codes::UNKNOWN_BLOCK,
                "unknown_block",
                format!("no committed block matches {} (the chain is at height {tip}; blocks start at 1)", serde_json::to_string(&block).unwrap_or_default()),
            ));
        };
        let txs = if full.unwrap_or(false) {
            BlockTxs::Full(
                stored
                    .block
                    .txs
                    .iter()
                    .map(|tx| FullTx {
                        hash: tx.id(),
                        tx: tx.clone(),
                    })
                    .collect(),
            )
        } else {
            BlockTxs::Ids(stored.block.txs.iter().map(|tx| tx.id()).collect())
        };
        Ok(BlockInfo {
            hash: stored.block.hash(),
            header: stored.block.header,
            txs,
            last_commit: stored.block.last_commit,
            evidence: stored.block.evidence,
            commit: stored.commit,
        })
    }

    async fn chain_status(&self) -> RpcResult<ChainStatus> {
        let chain = self.node.chain().context();
        let tip = self.node.chain().tip().map_err(unavailable)?;
        let host = self.node.chain().host_status();
        Ok(ChainStatus {
            chain_id: chain.genesis.chain_id.clone(),
            genesis_hash: chain.genesis_hash,
            height: tip.height,
            tip_hash: tip.hash,
            tip_time_ms: tip.timestamp_ms,
            min_fee: chain.genesis.params.min_fee,
            mempool_size: self.node.chain().mempool_len() as u64,
            validator: self.node.validator().map(|k| k.address()),
            role: match self.node.validator() {
                Some(_) => NodeRole::Validator,
                None => NodeRole::Full,
            },
            peers: self.node.peer_count() as u64,
            syncing: host.syncing,
            consensus: host.position.map(|p| ConsensusInfo {
                height: p.height,
                round: p.round,
                step: p.step.to_owned(),
            }),
            node_version: crate::VERSION.to_owned(),
            validator_overrides: chain
                .overrides
                .iter()
                .map(|(height, set)| OverrideInfo {
                    height: *height,
                    validators_hash: set.hash(),
                    validators: set.validators().len() as u32,
                })
                .collect(),
            overrides_id: chain.overrides_id(),
        })
    }

    async fn node_peers(&self) -> RpcResult<PeersInfo> {
        let stopped = || {
            error(
                codes::UNAVAILABLE,
                "no_network",
                "the network is not running",
            )
        };
        let network = self.node.network().ok_or_else(stopped)?;
        let peers = network.peers();
        Ok(PeersInfo {
            node_id: network.peer_id().to_string(),
            listen_address: network.address().to_string(),
            peers: peers
                .into_iter()
                .map(|p| PeerEntry {
                    node_id: p.id.to_string(),
                    address: p.address.to_string(),
                    direction: if p.outbound { "outbound" } else { "inbound" }.to_owned(),
                    persistent: p.persistent,
                })
                .collect(),
        })
    }

    async fn chain_get_validators(&self, height: Option<u64>) -> RpcResult<ValidatorsInfo> {
        let chain = self.node.chain();
        let store = chain.store();
        let tip = store.tip().map_err(unavailable)?.map_or(0, |t| t.height);
        let height = height.unwrap_or(tip);
        // Height 0 is genesis: the set that signs block 1. An override not
        // yet reached is not in the store: it replaces what the store says.
        let pending_override = (height > tip && height <= tip + 2)
            .then(|| {
                chain
                    .context()
                    .overrides
                    .range(tip + 1..=height)
                    .next_back()
            })
            .flatten()
            .map(|(since, set)| (*since, set.clone()));
        let stored = match pending_override {
            Some(found) => Some(found),
            None => store
                .validator_set_since(height.max(1))
                .map_err(unavailable)?,
        };
        let (since, set) = stored.ok_or_else(|| {
                error(
                    codes::UNKNOWN_BLOCK,
                    "unknown_block",
                    format!(
                        "the validator set of height {height} is not known yet (the chain is at height {tip}; sets are known up to {})",
                        tip + 2
                    ),
                )
            })?;
        Ok(ValidatorsInfo {
            height,
            since,
            validators_hash: set.hash(),
            validators: validator_infos(set.validators()),
            total_power: set.total_power(),
            quorum_power: set.quorum_power(),
        })
    }

    async fn validator_pending_changes(&self) -> RpcResult<PendingChangesInfo> {
        let chain = self.node.chain();
        let state = chain.validators().get();
        let expiry = chain.context().genesis.params.validator_vote_expiry;
        let current = &state.current;
        let info = |address: &tally_ledger::Address| {
            current
                .validators()
                .iter()
                .find(|v| &v.address == address)
                .cloned()
        };
        let open = state
            .open
            .iter()
            .map(|c| {
                let voted: std::collections::BTreeSet<_> =
                    c.votes.iter().map(|v| v.validator).collect();
                let details: Vec<ChangeVoteInfo> = c
                    .votes
                    .iter()
                    .map(|v| {
                        let member = info(&v.validator);
                        ChangeVoteInfo {
                            validator: v.validator,
                            name: member.as_ref().map(|m| m.name.clone()),
                            power: member.map_or(0, |m| m.power),
                            height: v.height,
                            counts_through: v.height.saturating_add(expiry).saturating_sub(1),
                        }
                    })
                    .collect();
                let votes: Vec<_> = c.votes.iter().filter_map(|v| info(&v.validator)).collect();
                let missing: Vec<_> = current
                    .validators()
                    .iter()
                    .filter(|v| !voted.contains(&v.address))
                    .cloned()
                    .collect();
                PendingChangeInfo {
                    id: c.id,
                    change: c.change.clone(),
                    opened_at: c.opened_at,
                    votes: validator_infos(&votes),
                    vote_details: details,
                    voted_power: state.power_for(c),
                    quorum_power: current.quorum_power(),
                    missing: validator_infos(&missing),
                }
            })
            .collect();
        let recent = state
            .recent
            .iter()
            .map(|o| FinishedChangeInfo {
                id: o.id,
                change: o.change.clone(),
                height: o.height,
                result: o.result.clone(),
            })
            .collect();
        Ok(PendingChangesInfo {
            height: state.height,
            vote_expiry: expiry,
            open,
            recent,
        })
    }

    async fn chain_get_evidence(
        &self,
        from_height: Option<u64>,
        limit: Option<u32>,
    ) -> RpcResult<EvidenceList> {
        // A page holds at least one block's most, so that a page always
        // ends at a whole block and the next starts at the following one.
        let least = tally_ledger::MAX_BLOCK_EVIDENCE as u32;
        let limit = limit.unwrap_or(MAX_EVIDENCE_PAGE);
        if !(least..=MAX_EVIDENCE_PAGE).contains(&limit) {
            return Err(ErrorObjectOwned::owned(
                jsonrpsee::types::error::INVALID_PARAMS_CODE,
                format!("limit {limit}: ask for {least} to {MAX_EVIDENCE_PAGE}"),
                None::<()>,
            ));
        }
        let chain = self.node.chain();
        // One more than asked for says whether a next page exists.
        let mut records = chain
            .store()
            .evidence_from(from_height.unwrap_or(1), limit as usize + 1)
            .map_err(unavailable)?;
        let next_height = match records.len() > limit as usize {
            true => records.pop().map(|r| r.height),
            false => None,
        };
        // A page ends at a whole block: the next one starts at its height.
        if let Some(next) = next_height {
            records.retain(|r| r.height < next);
        }
        Ok(EvidenceList {
            recorded: records
                .into_iter()
                .map(|r| EvidenceInfo::new(r.evidence, Some((r.height, r.index))))
                .collect(),
            next_height,
            pending: chain
                .pending_evidence()
                .into_iter()
                .map(|e| EvidenceInfo::new(e, None))
                .collect(),
        })
    }

    async fn chain_get_genesis(&self) -> RpcResult<GenesisInfo> {
        let chain = self.node.chain().context();
        Ok(GenesisInfo {
            genesis_hash: chain.genesis_hash,
            genesis: chain.genesis.clone(),
        })
    }
}

/// Serves HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    node: Arc<Node>,
    config: &RpcConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let dispatcher = Dispatcher::new(
        Api { node: node.clone() }.into_rpc(),
        config.max_response_bytes as usize,
        config.max_batch_len as usize,
    );
    let state = Arc::new(HttpRpc {
        dispatcher,
        in_flight: Arc::new(Semaphore::new(config.max_concurrent_requests as usize)),
        max_concurrent: config.max_concurrent_requests,
        max_body_bytes: config.max_body_bytes as usize,
    });
    let rpc = move |headers: HeaderMap, body: axum::body::Body| {
        let state = state.clone();
        async move { state.answer(&headers, body).await }
    };
    let health_node = node.clone();
    let app = Router::new()
        .route("/", post(rpc))
        .route("/health", get(move || health(health_node.clone())));
    let listener = LimitedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(config.max_connections as usize)),
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// `POST /`: the HTTP side of JSON-RPC (transport limits, then
/// [`Dispatcher`]).
struct HttpRpc {
    dispatcher: Dispatcher,
    in_flight: Arc<Semaphore>,
    max_concurrent: u32,
    max_body_bytes: usize,
}

/// A JSON-RPC error answer (id `null`) with its HTTP status.
fn transport_error(status: StatusCode, code: i32, message: &str, data: &str) -> Response {
    json_response(
        status,
        jsonrpc::error_answer("null", code, message, Some(data)),
    )
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

impl HttpRpc {
    async fn answer(&self, headers: &HeaderMap, body: axum::body::Body) -> Response {
        let json = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return transport_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidRequest.code(),
                ErrorCode::InvalidRequest.message(),
                "send the request with Content-Type: application/json",
            );
        }
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return transport_error(
                StatusCode::TOO_MANY_REQUESTS,
                jsonrpc::SERVER_BUSY,
                "Server is busy",
                &format!(
                    "more than {} requests in flight ([rpc] max_concurrent_requests); try again shortly",
                    self.max_concurrent
                ),
            );
        };
        let too_big = || {
            transport_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                jsonrpc::OVERSIZED_REQUEST,
                "Request is too big",
                &format!(
                    "the body exceeds {} bytes ([rpc] max_body_bytes)",
                    self.max_body_bytes
                ),
            )
        };
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            return too_big();
        }
        // Chunked bodies are counted as they arrive and cut at the limit.
        let bytes = match axum::body::to_bytes(body, self.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let limit = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                return match limit {
                    true => too_big(),
                    false => transport_error(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::ParseError.code(),
                        ErrorCode::ParseError.message(),
                        &format!("the body could not be read: {e}"),
                    ),
                };
            }
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return transport_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::ParseError.code(),
                ErrorCode::ParseError.message(),
                "the body is not UTF-8 text",
            );
        };
        match self.dispatcher.handle(text).await {
            Some(answer) => json_response(StatusCode::OK, answer),
            None => StatusCode::NO_CONTENT.into_response(),
        }
    }
}

async fn health(node: Arc<Node>) -> Response {
    let height = node.chain().tip().map(|t| t.height);
    match (node.chain().failure(), height) {
        (None, Ok(height)) => Json(json!({ "status": "ok", "height": height })).into_response(),
        (Some(failure), _)
        | (
            None,
            Err(
                tally_ledger::StorageError::Io(failure)
                | tally_ledger::StorageError::Corrupt(failure),
            ),
        ) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unhealthy", "error": failure })),
        )
            .into_response(),
    }
}

/// A TCP listener that holds at most `permits` connections open; the next
/// accept waits until one closes (the kernel backlog queues the rest). A
/// connection that neither sends nor receives a byte for `idle_timeout` is
/// closed, so silent clients cannot hold the slots forever.
struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
}

/// A connection holding one of the listener's permits until it is dropped.
struct LimitedStream {
    stream: TcpStream,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    _permit: Option<OwnedSemaphorePermit>,
}

impl LimitedStream {
    fn touch(&mut self) {
        self.idle.as_mut().reset(Instant::now() + self.idle_timeout);
    }

    /// After the inner stream said "not ready": has the idle limit passed?
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.idle.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self.permits.clone().acquire_owned().await.ok();
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let _ = stream.set_nodelay(true);
        let idle = Box::pin(tokio::time::sleep(self.idle_timeout));
        let io = LimitedStream {
            stream,
            idle,
            idle_timeout: self.idle_timeout,
            _permit: permit,
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.touch();
                Poll::Ready(result)
            }
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.touch();
                Poll::Ready(result)
            }
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

fn validator_infos(validators: &[tally_ledger::GenesisValidator]) -> Vec<ValidatorInfo> {
    validators
        .iter()
        .map(|v| ValidatorInfo {
            name: v.name.clone(),
            address: v.address,
            power: v.power,
        })
        .collect()
}
