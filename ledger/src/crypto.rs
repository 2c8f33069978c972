//! Keys and signatures: ed25519 under one rule, ZIP-215 verification with
//! byte checks on the key and on R (docs/PROTOCOL.md, "Signatures").
//!
//! A signature `R ‖ S` over a message `M` by the key `A` is valid when:
//! 1. `A` is a usable key ([`usable_key`]): the canonical encoding of a
//!    point of the prime-order subgroup other than the identity (the
//!    address rule, the same as libsodium's `crypto_core_ed25519_is_valid_point`);
//! 2. `R` is the canonical encoding of a point and not one of the eight
//!    points of small order (a check on the bytes alone);
//! 3. `S` is below the group order ℓ;
//! 4. `[8]([S]B − R − [k]A)` is the identity, `k = SHA-512(R ‖ A ‖ M) mod ℓ`
//!    (the cofactored equation of ZIP-215, computed by `ed25519-zebra`).
//!
//! Single and batch verification ([`verify_batch`]) accept exactly the same
//! signatures, and every signature `verify_strict` accepts from a usable key
//! is accepted.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::Scalar;
use ed25519_dalek::{Signer, SigningKey};
use ed25519_zebra::VerificationKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::types::{parse_hex, to_hex, Address, Hash, HexError};

/// An ed25519 signature (R ‖ S, 64 bytes). Text form: `0x` + 128 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

/// Why a signature is refused: the first rule it breaks, in the order the
/// rules are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRejection {
    /// Rule 1: the signer is no usable key.
    #[error(
        "the signer is not a usable public key (not a canonical point of the prime-order subgroup)"
    )]
    UnusableKey,
    /// Rule 2: R is not the canonical encoding of a point.
    #[error("R is not a canonical point encoding")]
    NonCanonicalR,
    /// Rule 2: R is one of the eight points of small order.
    #[error("R is a point of small order")]
    SmallOrderR,
    /// Rule 3: S is not below the group order.
    #[error("S is not below the group order")]
    NonCanonicalS,
    /// Rule 4: R is no point on the curve, or the equation does not hold.
    #[error("the verification equation does not hold")]
    Equation,
}

impl Signature {
    /// Whether this is a valid signature over `message` by `signer` under
    /// the one rule (module documentation).
    pub fn verify(&self, signer: &Address, message: &Hash) -> bool {
        check_signature(&signer.0, &self.0, &message.0).is_ok()
    }

    /// Like [`Signature::verify`], saying which rule fails.
    pub fn check(&self, signer: &Address, message: &Hash) -> Result<(), SignatureRejection> {
        check_signature(&signer.0, &self.0, &message.0)
    }
}

/// The one rule over raw bytes, for a message of any length (Tally signs
/// only 32-byte digests; the published ZIP-215 vectors sign `"Zcash"`).
pub fn check_signature(
    key: &[u8; 32],
    sig: &[u8; 64],
    message: &[u8],
) -> Result<(), SignatureRejection> {
    let key = precheck(key, sig)?;
    key.zebra
        .verify(&ed25519_zebra::Signature::from_bytes(sig), message)
        .map_err(|_| SignatureRejection::Equation)
}

/// Whether every signature of `items` is valid; the same answer as checking
/// each one with [`Signature::verify`], computed with one multi-scalar
/// multiplication. Its random coefficients come from the thread's RNG; a
/// batch holding an invalid signature passes with probability below 2^-128.
///
/// The equation is ZIP-215's batch equation, the cofactored sum
/// `[8](−(Σ zᵢsᵢ)B + Σ zᵢRᵢ + Σ (zᵢkᵢ)Aᵢ) = 0` with random 128-bit `zᵢ`,
/// terms of one key summed (ed25519-zebra's `batch::Verifier` computes the
/// same sum). It is built here, on curve25519-dalek, rather than with
/// zebra's verifier because that verifier decompresses every key again,
/// which costs more than half a check when the signers are many and
/// distinct; here the keys come decompressed from the cache of usable keys.
/// Every valid signature satisfies its own cofactored equation, so a batch
/// of valid ones passes exactly; the tests and the `verify_agrees` fuzz
/// target hold it to single verification and to zebra's batch.
pub fn verify_batch(items: &[(Address, Hash, Signature)]) -> bool {
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    use rand::RngCore;
    use sha2::{Digest, Sha512};

    let mut rng = rand::thread_rng();
    let mut b_coefficient = Scalar::ZERO;
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    let mut points = Vec::with_capacity(2 * items.len() + 1);
    // Index into `scalars` of each key's summed coefficient.
    let mut key_terms: HashMap<[u8; 32], usize> = HashMap::with_capacity(items.len());
    for (signer, message, signature) in items {
        let Ok(key) = precheck(&signer.0, &signature.0) else {
            return false;
        };
        let mut r_bytes = [0u8; 32];
        r_bytes.copy_from_slice(&signature.0[..32]);
        let Some(r) = CompressedEdwardsY(r_bytes).decompress() else {
            return false;
        };
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&signature.0[32..]);
        // Rule 3 (checked by `precheck`) makes S canonical.
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(r_bytes)
                .chain_update(signer.0)
                .chain_update(message.0)
                .finalize()
                .into(),
        );
        let mut z_bytes = [0u8; 32];
        rng.fill_bytes(&mut z_bytes[..16]);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        b_coefficient -= z * s;
        scalars.push(z);
        points.push(r);
        match key_terms.get(&signer.0) {
            Some(&at) => scalars[at] += z * k,
            None => {
                key_terms.insert(signer.0, scalars.len());
                scalars.push(z * k);
                points.push(key.point);
            }
        }
    }
    scalars.push(b_coefficient);
    points.push(curve25519_dalek::constants::ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

/// Rules 1 to 3: everything but the equation.
fn precheck(key: &[u8; 32], sig: &[u8; 64]) -> Result<UsableKey, SignatureRejection> {
    let key = usable_key(key).ok_or(SignatureRejection::UnusableKey)?;
    let mut r = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    check_r(&r)?;
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig[32..]);
    if !is_below_group_order(&s) {
        return Err(SignatureRejection::NonCanonicalS);
    }
    Ok(key)
}

/// Rule 2 on the bytes alone. With `y` the 255 low bits of `r`: `y ≥ p` is
/// a non-canonical encoding; the eight points of small order have `y` in
/// {0, 1, p − 1, ±y8}, and the two of them with x = 0 (y = 1 and
/// y = p − 1) have a canonical encoding only with the sign bit clear, so any
/// `r` whose `y` is one of those five values is refused.
fn check_r(r: &[u8; 32]) -> Result<(), SignatureRejection> {
    let mut y = *r;
    y[31] &= 0x7f;
    if !is_below_field_prime(&y) {
        return Err(SignatureRejection::NonCanonicalR);
    }
    if SMALL_ORDER_Y.contains(&y) {
        let identity_or_minus_one = y == SMALL_ORDER_Y[0] || y == SMALL_ORDER_Y[1];
        return Err(if identity_or_minus_one && r[31] & 0x80 != 0 {
            SignatureRejection::NonCanonicalR
        } else {
            SignatureRejection::SmallOrderR
        });
    }
    Ok(())
}

/// The y coordinates of the eight points of small order, little-endian:
/// 1 (the identity), p − 1 (order 2), 0 (order 4) and ±y8 (order 8).
pub(crate) const SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [
        0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [0; 32],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
];

/// p = 2^255 − 19, little-endian.
pub(crate) const FIELD_PRIME: [u8; 32] = [
    0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
];

/// ℓ = 2^252 + 27742317777372353535851937790883648493, little-endian.
pub(crate) const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Little-endian `a < b`.
fn less_than(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().rev().cmp(b.iter().rev()) == std::cmp::Ordering::Less
}

fn is_below_field_prime(y: &[u8; 32]) -> bool {
    less_than(y, &FIELD_PRIME)
}

fn is_below_group_order(s: &[u8; 32]) -> bool {
    less_than(s, &GROUP_ORDER)
}

/// Most usable keys remembered (about 200 bytes each).
const KEY_CACHE_ENTRIES: usize = 65_536;

/// Recently seen usable keys, decompressed. Deciding that bytes are a usable
/// key (a square root for the point, a scalar multiplication by ℓ for the
/// subgroup) costs about as much as a signature check, and the same senders
/// and recipients come again and again; the cache only memoises a pure
/// function of the key bytes. When full it starts over.
static KEY_CACHE: std::sync::LazyLock<std::sync::Mutex<HashMap<[u8; 32], UsableKey>>> =
    std::sync::LazyLock::new(Default::default);

/// A usable key, decompressed: for ed25519-zebra's single check and as a
/// point for the batch equation.
#[derive(Clone, Copy)]
pub(crate) struct UsableKey {
    zebra: VerificationKey,
    point: EdwardsPoint,
}

/// The key `bytes` names if they are a usable key: the canonical encoding
/// (y < p, and the sign bit clear when x = 0) of a point that is in the
/// prime-order subgroup and is not the identity. Mixed-order points (a
/// subgroup point plus a small-order one) are refused: honest key generation
/// never makes them, and libsodium refuses them too.
pub(crate) fn usable_key(bytes: &[u8; 32]) -> Option<UsableKey> {
    let cache = || KEY_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(key) = cache().get(bytes) {
        return Some(*key);
    }
    let point = CompressedEdwardsY(*bytes).decompress()?;
    if point.compress().0 != *bytes || point.is_small_order() || !point.is_torsion_free() {
        return None;
    }
    let key = UsableKey {
        zebra: VerificationKey::try_from(*bytes).ok()?,
        point,
    };
    let mut cache = cache();
    if cache.len() >= KEY_CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(*bytes, key);
    Some(key)
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl FromStr for Signature {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = parse_hex(s)?;
        let got = bytes.len();
        let array: [u8; 64] = bytes
            .try_into()
            .map_err(|_| HexError::Length { expected: 64, got })?;
        Ok(Signature(array))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&to_hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <String as Deserialize>::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A signing key and its address. The secret is zeroized on drop.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// The key whose 32-byte secret seed is `seed` (RFC 8032 private key).
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        Keypair {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte secret seed. Handle with care.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public key as an address.
    pub fn address(&self) -> Address {
        Address(self.signing.verifying_key().to_bytes())
    }

    /// Signs a 32-byte message digest.
    pub fn sign(&self, message: &Hash) -> Signature {
        Signature(self.signing.sign(&message.0).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.address())
    }
}

/// The deterministic, publicly known key named `name` (`alice`, `bob`,
/// `carol`, `validator-0`, ...): seed = blake3("tally/devnet-key/v1" ‖ name).
///
/// INSECURE BY DESIGN: anyone can derive these keys. They exist so that a
/// devnet and its funded accounts can be used without key management.
pub fn devnet_key(name: &str) -> Keypair {
    let seed = Hash::digest_parts(&[crate::domain::DEVNET_KEY, name.as_bytes()]);
    Keypair::from_seed(seed.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sig_vectors::*;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::scalar::Scalar;
    use proptest::prelude::*;

    fn alice() -> (SigningKey, [u8; 32], Scalar) {
        let key = SigningKey::from_bytes(&devnet_key("alice").seed());
        let a = key.to_scalar();
        (key.clone(), key.verifying_key().to_bytes(), a)
    }

    #[test]
    fn small_order_y_table_is_the_eight_torsion_points() {
        let mut from_curve: Vec<[u8; 32]> = EIGHT_TORSION
            .iter()
            .map(|p| {
                let mut y = p.compress().0;
                y[31] &= 0x7f;
                y
            })
            .collect();
        from_curve.sort();
        from_curve.dedup();
        let mut table = SMALL_ORDER_Y.to_vec();
        table.sort();
        assert_eq!(from_curve, table);
        assert_eq!(
            SMALL_ORDER_Y[0],
            EIGHT_TORSION[0].compress().0,
            "identity first"
        );
    }

    #[test]
    fn sign_and_verify() {
        let key = devnet_key("bob");
        let msg = Hash::digest(b"message");
        let sig = key.sign(&msg);
        assert!(sig.verify(&key.address(), &msg));
        assert_eq!(
            sig.check(&key.address(), &Hash::digest(b"other")),
            Err(SignatureRejection::Equation)
        );
        assert!(!sig.verify(&devnet_key("carol").address(), &msg));
    }

    /// The published ZIP-215 vectors: every combination of the fourteen
    /// small-order encodings as A and as R, S = 0, message "Zcash". ZIP-215
    /// accepts all 196; Tally refuses all of them, because no such A is a
    /// usable key, and would refuse each R on its own too.
    #[test]
    fn zip215_small_order_vectors() {
        let encodings = small_order_encodings();
        assert_eq!(encodings.len(), 14);
        for (a, _) in &encodings {
            for (r, r_reason) in &encodings {
                let sig = signature(r, &Scalar::ZERO);
                assert!(zip215(a, &sig, b"Zcash"), "ZIP-215 accepts every vector");
                assert_eq!(
                    check_signature(a, &sig, b"Zcash"),
                    Err(SignatureRejection::UnusableKey)
                );
                assert_eq!(check_r(r), Err(*r_reason));
            }
        }
    }

    /// One key signing many items of a batch has its terms summed; a bad
    /// signature among them still fails the batch, wherever it is.
    #[test]
    fn batch_with_a_repeated_key() {
        let alice = Keypair::from_seed([7; 32]);
        let bob = Keypair::from_seed([8; 32]);
        let items: Vec<(Address, Hash, Signature)> = (0..12u8)
            .map(|i| {
                let key = if i % 3 == 0 { &bob } else { &alice };
                let message = Hash([i; 32]);
                (key.address(), message, key.sign(&message))
            })
            .collect();
        assert!(verify_batch(&items));
        for at in 0..items.len() {
            let mut bad = items.clone();
            bad[at].1 = Hash([99; 32]);
            assert!(!verify_batch(&bad), "a wrong message at {at} passed");
            let mut swapped = items.clone();
            swapped[at].2 = items[(at + 1) % items.len()].2;
            assert!(
                !verify_batch(&swapped),
                "a swapped signature at {at} passed"
            );
        }
    }

    /// A signer who knows its secret `a` can make ZIP-215 accept any
    /// small-order R: with S = k·a, [S]B − [k]A is the identity and [8]R
    /// vanishes. The R rule is what refuses these, as `verify_strict` did.
    #[test]
    fn small_order_r_is_refused_under_a_usable_key() {
        let (_, a_bytes, a) = alice();
        let message = Hash::digest(b"small-order R").0;
        for (r, reason) in small_order_encodings() {
            let s = challenge(&r, &a_bytes, &message) * a;
            let sig = signature(&r, &s);
            assert!(zip215(&a_bytes, &sig, &message));
            assert!(!verify_strict(&a_bytes, &sig, &message));
            assert_eq!(check_signature(&a_bytes, &sig, &message), Err(reason));
            assert!(!verify_batch(&[(
                Address(a_bytes),
                Hash(message),
                Signature(sig)
            )]));
        }
    }

    /// A key plus a point of small order (a mixed-order key) is refused,
    /// although ZIP-215 accepts an honest signature under it (and
    /// `verify_strict` one in eight of them).
    #[test]
    fn mixed_order_keys_are_refused() {
        let (_, a_bytes, a) = alice();
        let a_point = CompressedEdwardsY(a_bytes).decompress().unwrap();
        let message = Hash::digest(b"mixed-order key").0;
        let nonce = Scalar::from(7u64);
        let r = (ED25519_BASEPOINT_POINT * nonce).compress().0;
        for torsion in &EIGHT_TORSION[1..] {
            let mixed: EdwardsPoint = a_point + torsion;
            let mixed = mixed.compress().0;
            let s = nonce + challenge(&r, &mixed, &message) * a;
            let sig = signature(&r, &s);
            assert!(zip215(&mixed, &sig, &message));
            assert_eq!(
                check_signature(&mixed, &sig, &message),
                Err(SignatureRejection::UnusableKey)
            );
        }
    }

    #[test]
    fn non_canonical_s_is_rejected() {
        let key = devnet_key("alice");
        let msg = Hash::digest(b"m");
        let mut sig = key.sign(&msg);
        // S + ℓ is the same scalar mod ℓ but not canonical.
        let mut carry = 0u16;
        for (byte, l) in sig.0[32..].iter_mut().zip(GROUP_ORDER) {
            let sum = *byte as u16 + l as u16 + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(
            sig.check(&key.address(), &msg),
            Err(SignatureRejection::NonCanonicalS)
        );
    }

    #[test]
    fn devnet_keys_are_stable() {
        assert_eq!(devnet_key("alice").address(), devnet_key("alice").address());
        assert_ne!(devnet_key("alice").address(), devnet_key("bob").address());
    }

    /// ed25519-zebra's own batch verifier behind the same byte checks: the
    /// reference the hand-assembled equation of [`verify_batch`] is held to.
    fn zebra_batch(items: &[(Address, Hash, Signature)]) -> bool {
        let mut verifier = ed25519_zebra::batch::Verifier::new();
        for (signer, message, signature) in items {
            if precheck(&signer.0, &signature.0).is_err() {
                return false;
            }
            let key = ed25519_zebra::VerificationKeyBytes::from(signer.0);
            let signature = ed25519_zebra::Signature::from_bytes(&signature.0);
            verifier.queue((key, signature, &message.0[..]));
        }
        verifier.verify(rand::thread_rng()).is_ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every signature `verify_strict` accepts from a usable key is
        /// accepted, and everything accepted is accepted by ZIP-215.
        #[test]
        fn accepts_what_verify_strict_accepts(seed in any::<[u8; 32]>(), message in any::<[u8; 32]>(), which in any::<u8>()) {
            let key = Keypair::from_seed(seed);
            let sig = key.sign(&Hash(message));
            prop_assert!(verify_strict(&key.address().0, &sig.0, &message));
            prop_assert!(sig.verify(&key.address(), &Hash(message)));
            let (signer, message, bad) = adversarial(which, seed, message);
            let ours = bad.verify(&signer, &message);
            if verify_strict(&signer.0, &bad.0, &message.0) && signer.is_valid_key() {
                prop_assert!(ours);
            }
            if ours {
                prop_assert!(zip215(&signer.0, &bad.0, &message.0));
            }
        }

        /// Batch and single verification agree on every batch: all good, or
        /// one bad item (of any kind) at a random position.
        #[test]
        fn batch_agrees_with_single(
            seeds in proptest::collection::vec(any::<[u8; 32]>(), 1..6),
            message in any::<[u8; 32]>(),
            bad in proptest::option::of((any::<u8>(), any::<prop::sample::Index>())),
        ) {
            let mut items: Vec<(Address, Hash, Signature)> = seeds
                .iter()
                .map(|seed| {
                    let key = Keypair::from_seed(*seed);
                    (key.address(), Hash(message), key.sign(&Hash(message)))
                })
                .collect();
            if let Some((which, at)) = bad {
                let item = adversarial(which, seeds[0], message);
                let at = at.index(items.len() + 1);
                items.insert(at, item);
            }
            let single = items.iter().all(|(a, m, s)| s.verify(a, m));
            prop_assert_eq!(verify_batch(&items), single);
            prop_assert_eq!(zebra_batch(&items), single);
            if bad.is_some() {
                prop_assert!(!single, "every adversarial item is invalid");
            }
        }

        /// The R rule on bytes is the definition on points: for bytes that
        /// decode, accepted exactly when canonical and not of small order.
        #[test]
        fn r_rule_matches_its_definition(mut r in any::<[u8; 32]>(), top in any::<bool>()) {
            if top {
                r[1..31].fill(0xff);
                r[31] |= 0x7f;
            }
            if let Some(point) = CompressedEdwardsY(r).decompress() {
                let defined = point.compress().0 == r && !point.is_small_order();
                prop_assert_eq!(check_r(&r).is_ok(), defined);
            }
        }
    }
}
