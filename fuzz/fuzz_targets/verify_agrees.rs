//! Signature verification agrees everywhere. Tally has one rule,
//! ed25519-dalek's `verify_strict` (PROTOCOL.md): the ledger's check must
//! accept exactly what `verify_strict` accepts for the same key, message
//! and signature, for arbitrary (also malformed, small-order, non-canonical)
//! keys and signatures. A batch path, if one is added, must be added here.
#![no_main]

use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use libfuzzer_sys::fuzz_target;
use tally_ledger::{Address, Hash, Signature};

fuzz_target!(|data: &[u8]| {
    if data.len() < 32 + 64 + 32 {
        return;
    }
    let key: [u8; 32] = data[..32].try_into().unwrap_or([0; 32]);
    let sig: [u8; 64] = data[32..96].try_into().unwrap_or([0; 64]);
    let msg: [u8; 32] = data[96..128].try_into().unwrap_or([0; 32]);
    let ours = Signature(sig).verify(&Address(key), &Hash(msg));
    let reference = VerifyingKey::from_bytes(&key).is_ok_and(|k| {
        !k.is_weak()
            && k.verify_strict(&msg, &DalekSignature::from_bytes(&sig))
                .is_ok()
    });
    assert_eq!(ours, reference, "key {key:02x?} sig {sig:02x?}");
});
