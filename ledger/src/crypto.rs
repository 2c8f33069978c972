//! Keys and signatures: ed25519 with `verify_strict` as the one rule.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::types::{parse_hex, to_hex, Address, Hash, HexError};

/// An ed25519 signature (R ‖ S, 64 bytes). Text form: `0x` + 128 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// Checks this signature over `message` by `signer` with `verify_strict`:
    /// rejects non-canonical S, small-order R and small-order public keys.
    pub fn verify(&self, signer: &Address, message: &Hash) -> bool {
        let Some(key) = verifying_key(signer) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&self.0);
        key.verify_strict(&message.0, &signature).is_ok()
    }
}

/// Most decompressed public keys kept (about 200 bytes each).
const KEY_CACHE_ENTRIES: usize = 65_536;

/// Decompressed public keys of recent signers. Decompressing a key (a
/// square root in the field) is about a sixth of a signature check, and the
/// same senders sign again and again; the cache only memoises a pure
/// function of the address bytes, so every answer is what
/// `VerifyingKey::from_bytes` would give. When full it starts over.
static KEY_CACHE: std::sync::LazyLock<std::sync::Mutex<HashMap<Address, VerifyingKey>>> =
    std::sync::LazyLock::new(Default::default);

/// The public key `address` names, or `None` if its bytes are no valid
/// point.
fn verifying_key(address: &Address) -> Option<VerifyingKey> {
    let cache = || KEY_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(key) = cache().get(address) {
        return Some(*key);
    }
    let key = VerifyingKey::from_bytes(&address.0).ok()?;
    let mut cache = cache();
    if cache.len() >= KEY_CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(*address, key);
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

    #[test]
    fn sign_and_verify_strict() {
        let key = devnet_key("bob");
        let msg = Hash::digest(b"message");
        let sig = key.sign(&msg);
        assert!(sig.verify(&key.address(), &msg));
        assert!(!sig.verify(&key.address(), &Hash::digest(b"other")));
        assert!(!sig.verify(&devnet_key("carol").address(), &msg));
    }

    #[test]
    fn non_canonical_s_is_rejected() {
        // S + L (the group order) is the same scalar mod L but not canonical.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let key = devnet_key("alice");
        let msg = Hash::digest(b"m");
        let mut sig = key.sign(&msg);
        let mut carry = 0u16;
        for (byte, l) in sig.0[32..].iter_mut().zip(L) {
            let sum = *byte as u16 + l as u16 + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        assert!(!sig.verify(&key.address(), &msg));
    }

    #[test]
    fn small_order_key_and_r_are_rejected() {
        // The identity point (y = 1) has order 1: with R = identity and S = 0
        // the cofactored equation holds for any message, verify_strict must say no.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity);
        let msg = Hash::digest(b"anything");
        assert!(!Signature(sig).verify(&Address(identity), &msg));
    }

    #[test]
    fn devnet_keys_are_stable() {
        assert_eq!(devnet_key("alice").address(), devnet_key("alice").address());
        assert_ne!(devnet_key("alice").address(), devnet_key("bob").address());
    }
}
