//! Invalid blocks: proposals whose block holds a transfer signed by the
//! wrong key (the header matches the body, so only execution tells) or
//! whose header names a state root other than the state after the block
//! (a well-formed block with one wrong hash), and
//! sync answers with a forged block under a real certificate, or that skip
//! a height.

use tally_host::sync::SyncResponse;
use tally_ledger::{
    tx_root, Block, ConsensusMessage, Hash, ProposalCore, SignedProposal, SignedTransaction,
    Transaction,
};

use super::Liar;

pub(super) fn propose_invalid(liar: &mut Liar<'_>, message: ConsensusMessage) -> ConsensusMessage {
    match message {
        ConsensusMessage::Proposal(p) if liar.coin(0.5) => {
            let block = match liar.coin(0.5) {
                true => invalid_block(liar, &p.block),
                false => wrong_state_root(&p.block),
            };
            let core = ProposalCore {
                block_hash: block.hash(),
                ..p.core.clone()
            };
            let proposal = SignedProposal::sign(core, block, liar.key, &liar.chain.genesis_hash);
            ConsensusMessage::Proposal(Box::new(proposal))
        }
        other => other,
    }
}

/// `block` plus a transfer signed by the wrong key.
fn invalid_block(liar: &Liar<'_>, block: &Block) -> Block {
    let tx = Transaction::transfer(
        liar.chain.genesis.chain_id.clone(),
        liar.client.address(),
        liar.other_client.address(),
        1,
        1,
        u64::MAX / 2,
    );
    let mut block = block.clone();
    block
        .txs
        .push(tx.sign(liar.other_client, &liar.chain.genesis_hash));
    let ids: Vec<Hash> = block.txs.iter().map(SignedTransaction::id).collect();
    block.header.tx_root = tx_root(&ids);
    block.header.tx_count = block.txs.len() as u32;
    block
}

/// `block` with a state root one bit off the state after it.
fn wrong_state_root(block: &Block) -> Block {
    let mut block = block.clone();
    block.header.state_root.0[0] ^= 1;
    block
}

/// Half of the sync answers with blocks are lies: a forged first block
/// under its real certificate (the hash no longer matches, so the
/// certificate must not vouch for it), or the first block left out (the
/// rest do not follow this node's tip).
pub(super) fn forge_answer(liar: &mut Liar<'_>, answer: SyncResponse) -> SyncResponse {
    let SyncResponse::Blocks(mut blocks) = answer else {
        return answer;
    };
    if blocks.len() > 1 && liar.coin(0.5) {
        blocks.remove(0);
    } else if liar.coin(0.5) {
        if let Some(first) = blocks.first_mut() {
            first.block.header.timestamp_ms += 1;
        }
    }
    SyncResponse::Blocks(blocks)
}
