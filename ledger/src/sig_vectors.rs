//! Signatures that break the rule in every known way, shared by the unit
//! tests and the differential fuzz target (feature `sig-vectors`).

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signer, SigningKey};
use ed25519_zebra::VerificationKey;
use sha2::{Digest, Sha512};

use crate::crypto::{SignatureRejection, FIELD_PRIME, SMALL_ORDER_Y};
use crate::{Address, Hash, Signature};

/// k = SHA-512(R ‖ A ‖ M) mod ℓ.
pub fn challenge(r: &[u8; 32], a: &[u8; 32], message: &[u8]) -> Scalar {
    let mut hash = Sha512::new();
    hash.update(r);
    hash.update(a);
    hash.update(message);
    Scalar::from_bytes_mod_order_wide(&hash.finalize().into())
}

/// The 64 bytes R ‖ S.
pub fn signature(r: &[u8; 32], s: &Scalar) -> [u8; 64] {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(r);
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

/// ed25519-dalek's `verify_strict`, the rule of protocol version 1.
pub fn verify_strict(key: &[u8; 32], sig: &[u8; 64], message: &[u8]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(key).is_ok_and(|k| {
        k.verify_strict(message, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    })
}

/// ZIP-215 as `ed25519-zebra` implements it, with no extra checks.
pub fn zip215(key: &[u8; 32], sig: &[u8; 64], message: &[u8]) -> bool {
    VerificationKey::try_from(*key).is_ok_and(|k| {
        k.verify(&ed25519_zebra::Signature::from_bytes(sig), message)
            .is_ok()
    })
}

/// The fourteen encodings of small-order points that ed25519-zebra's
/// `tests/small_order.rs` signs with: the eight canonical ones, then
/// six non-canonical ones, each with the reason the R rule gives.
pub fn small_order_encodings() -> Vec<([u8; 32], SignatureRejection)> {
    let mut all: Vec<_> = EIGHT_TORSION
        .iter()
        .map(|p| (p.compress().0, SignatureRejection::SmallOrderR))
        .collect();
    let mut one_signed = [0u8; 32];
    one_signed[0] = 1;
    one_signed[31] = 0x80;
    let mut minus_one_signed = SMALL_ORDER_Y[1];
    minus_one_signed[31] |= 0x80;
    let p = FIELD_PRIME;
    let mut p_signed = p;
    p_signed[31] |= 0x80;
    let mut p_plus_one = p;
    p_plus_one[0] += 1;
    let mut p_plus_one_signed = p_plus_one;
    p_plus_one_signed[31] |= 0x80;
    for e in [
        one_signed,
        minus_one_signed,
        p,
        p_signed,
        p_plus_one,
        p_plus_one_signed,
    ] {
        all.push((e, SignatureRejection::NonCanonicalR));
    }
    for (e, _) in &all {
        let point = CompressedEdwardsY(*e).decompress().expect("decodes");
        assert!(point.is_small_order());
    }
    all
}

/// An item that breaks one rule, chosen by `which`.
pub fn adversarial(which: u8, seed: [u8; 32], message: [u8; 32]) -> (Address, Hash, Signature) {
    let key = SigningKey::from_bytes(&seed);
    let a_bytes = key.verifying_key().to_bytes();
    let a = key.to_scalar();
    let good = key.sign(&message).to_bytes();
    let (mut r, mut s_bytes) = ([0u8; 32], [0u8; 32]);
    r.copy_from_slice(&good[..32]);
    s_bytes.copy_from_slice(&good[32..]);
    let encodings = small_order_encodings();
    let (sig, signer) = match which % 5 {
        0 => {
            // Torsioned R: R + T with S unchanged.
            let r = CompressedEdwardsY(r)
                .decompress()
                .expect("an honest R is a point");
            let t = EIGHT_TORSION[1 + (seed[0] as usize % 7)];
            let mut sig = good;
            sig[..32].copy_from_slice(&(r + t).compress().0);
            (sig, a_bytes)
        }
        1 => {
            let (r, _) = encodings[seed[1] as usize % encodings.len()];
            (
                signature(&r, &(challenge(&r, &a_bytes, &message) * a)),
                a_bytes,
            )
        }
        2 => {
            let point = CompressedEdwardsY(a_bytes)
                .decompress()
                .expect("an honest key is a point");
            let mixed = (point + EIGHT_TORSION[1 + (seed[2] as usize % 7)])
                .compress()
                .0;
            // An honest signature under the mixed key: S = r + k'·a.
            let mut sig = good;
            let s = Scalar::from_bytes_mod_order(s_bytes)
                + (challenge(&r, &mixed, &message) - challenge(&r, &a_bytes, &message)) * a;
            sig[32..].copy_from_slice(s.as_bytes());
            (sig, mixed)
        }
        3 => {
            let mut sig = good;
            sig[63] |= 0x10; // S ≥ 2^252 + 2^253 > ℓ
            (sig, a_bytes)
        }
        _ => {
            let mut sig = good;
            sig[seed[3] as usize % 64] ^= 1 << (seed[4] % 8);
            (sig, a_bytes)
        }
    };
    (Address(signer), Hash(message), Signature(sig))
}
