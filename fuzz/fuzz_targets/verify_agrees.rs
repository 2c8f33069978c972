//! Signature verification agrees everywhere. Tally has one rule (ZIP-215
//! with byte checks on the key and on R, docs/PROTOCOL.md "Signatures"):
//! - batch verification accepts a batch exactly when single verification
//!   accepts every item, whatever the items and wherever a bad one sits;
//! - every signature `verify_strict` (the version-1 rule) accepts from a
//!   usable key is accepted;
//! - nothing is accepted that plain ZIP-215 refuses.
//!
//! Each 35-byte chunk of the input makes one item: a 32-byte key seed, a
//! kind (honest, torsioned R, small-order R, mixed-order key, S ≥ ℓ, one
//! flipped bit, or raw bytes) and a byte that picks the variant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_ledger::sig_vectors::{adversarial, verify_strict, zip215};
use tally_ledger::{verify_batch, Address, Hash, Keypair, Signature};

/// Most items in one batch.
const MAX_ITEMS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let items: Vec<(Address, Hash, Signature)> = data
        .chunks_exact(35)
        .take(MAX_ITEMS)
        .map(|chunk| {
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&chunk[..32]);
            let (kind, variant) = (chunk[32], chunk[33]);
            let message = Hash::digest(&chunk[..34]);
            match kind % 8 {
                0 | 1 => {
                    let key = Keypair::from_seed(seed);
                    (key.address(), message, key.sign(&message))
                }
                2 => {
                    // Raw bytes: the seed as a key, a signature spun from it.
                    let mut sig = [0u8; 64];
                    sig[..32].copy_from_slice(&Hash::digest(&seed).0);
                    sig[32..].copy_from_slice(&seed);
                    sig[63] &= variant & 0x1f;
                    (Address(seed), message, Signature(sig))
                }
                _ => adversarial(variant, seed, message.0),
            }
        })
        .collect();
    let mut all_single = true;
    for (signer, message, sig) in &items {
        let ours = sig.verify(signer, message);
        all_single &= ours;
        if verify_strict(&signer.0, &sig.0, &message.0) && signer.is_valid_key() {
            assert!(ours, "verify_strict accepts {signer:?} {sig:?}, we refuse");
        }
        if ours {
            assert!(zip215(&signer.0, &sig.0, &message.0), "accepted beyond ZIP-215");
        }
    }
    assert_eq!(verify_batch(&items), all_single, "batch and single disagree");
});
