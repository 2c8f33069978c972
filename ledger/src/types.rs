//! Hashes, addresses and chain ids, with their text forms.

use std::fmt;
use std::str::FromStr;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A blake3 digest. Text form: `0x` followed by 64 lowercase hex digits.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Hash(pub [u8; 32]);

/// Why a hex string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// No `0x` prefix.
    #[error("hex must start with 0x")]
    MissingPrefix,
    /// Not hex digits, or an odd count.
    #[error("invalid hex: {0}")]
    Invalid(String),
    /// Wrong number of bytes.
    #[error("expected {expected} bytes, got {got}")]
    Length {
        /// Bytes wanted.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// Parses `0x`-prefixed hex (either case) into bytes.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, HexError> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or(HexError::MissingPrefix)?;
    hex::decode(digits).map_err(|e| HexError::Invalid(e.to_string()))
}

/// Formats bytes as `0x`-prefixed lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

impl Hash {
    /// The all-zero hash.
    pub const ZERO: Hash = Hash([0; 32]);

    /// blake3 of `bytes`.
    pub fn digest(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// blake3 of the concatenation of `parts`.
    pub fn digest_parts(parts: &[&[u8]]) -> Hash {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(part);
        }
        Hash(*hasher.finalize().as_bytes())
    }

    /// The `0x` hex text form.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

impl FromStr for Hash {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = parse_hex(s)?;
        let got = bytes.len();
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| HexError::Length { expected: 32, got })?;
        Ok(Hash(array))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An account: the 32-byte ed25519 public key that signs for it.
///
/// Text form: bech32m (BIP-350) with human-readable part `tally`, e.g.
/// `tally1...`. The checksum turns a mistyped address into an error rather
/// than a transfer to nobody.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct Address(pub [u8; 32]);

/// The human-readable part of address text.
pub const ADDRESS_HRP: &str = "tally";

/// Why an address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Bad characters, bad checksum or mixed case.
    #[error(
        "malformed address {0:?}: not bech32m text with a valid checksum (expected tally1...)"
    )]
    Malformed(String),
    /// A valid bech32m string for something else.
    #[error("address has prefix {0:?}, expected \"tally\"")]
    WrongPrefix(String),
    /// Not 32 bytes.
    #[error("address holds {0} bytes, expected 32")]
    Length(usize),
    /// The 32 bytes are not an ed25519 public key.
    #[error(
        "address is not a usable ed25519 public key (not a canonical point, or of small order)"
    )]
    NotAKey,
}

impl Address {
    /// The bech32m text form, `tally1...`.
    pub fn to_text(&self) -> String {
        // The HRP is a valid constant and 32 bytes is far below bech32m's limit.
        let hrp = Hrp::parse_unchecked(ADDRESS_HRP);
        bech32::encode::<Bech32m>(hrp, &self.0).unwrap_or_default()
    }

    /// Whether the bytes are a public key that can sign (a usable key,
    /// docs/PROTOCOL.md): the canonical encoding of a curve point (y < p,
    /// re-encodes to the same bytes) in the prime-order subgroup, other than
    /// the identity. Funds sent to anything else could never be spent,
    /// because no signature by such a key is valid.
    pub fn is_valid_key(&self) -> bool {
        crate::crypto::usable_key(&self.0).is_some()
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let checked = CheckedHrpstring::new::<Bech32m>(s)
            .map_err(|_| AddressError::Malformed(truncate(s)))?;
        if checked.hrp().to_lowercase() != ADDRESS_HRP {
            return Err(AddressError::WrongPrefix(checked.hrp().to_lowercase()));
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        let len = bytes.len();
        let array: [u8; 32] = bytes.try_into().map_err(|_| AddressError::Length(len))?;
        let address = Address(array);
        if !address.is_valid_key() {
            return Err(AddressError::NotAKey);
        }
        Ok(address)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// The name of a chain: 1 to 64 bytes of `a-z`, `0-9`, `-`, `_`, `.`.
///
/// Decoding enforces the same rule, so no transaction or block can carry an
/// oversized or ambiguous chain id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainId(String);

/// Why a chain id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainIdError {
    /// Empty or longer than 64 bytes.
    #[error("chain id must be 1 to {max} bytes, got {0}", max = ChainId::MAX_LEN)]
    Length(usize),
    /// A character outside the allowed set.
    #[error("chain id may hold only a-z, 0-9, '-', '_' and '.'")]
    Charset,
}

impl ChainId {
    /// Longest chain id in bytes.
    pub const MAX_LEN: usize = 64;

    /// Checks and wraps a chain id.
    pub fn new(s: &str) -> Result<ChainId, ChainIdError> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(ChainIdError::Length(s.len()));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
        if !s.chars().all(allowed) {
            return Err(ChainIdError::Charset);
        }
        Ok(ChainId(s.to_owned()))
    }

    /// The chain id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl BorshSerialize for ChainId {
    fn serialize<W: std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
        BorshSerialize::serialize(&self.0, writer)
    }
}

impl BorshDeserialize for ChainId {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let len = u32::deserialize_reader(reader)? as usize;
        if len == 0 || len > Self::MAX_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                ChainIdError::Length(len),
            ));
        }
        let mut bytes = vec![0u8; len];
        reader.read_exact(&mut bytes)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, ChainIdError::Charset)
        })?;
        ChainId::new(text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

macro_rules! serde_as_text {
    ($ty:ty, $to:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&$to(self))
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <String as Deserialize>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_text!(Hash, Hash::to_hex);
serde_as_text!(Address, Address::to_text);
serde_as_text!(ChainId, |c: &ChainId| c.0.clone());

impl FromStr for ChainId {
    type Err = ChainIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChainId::new(s)
    }
}

/// Serde helpers for `u64` amounts as decimal strings (JSON numbers lose
/// precision above 2^53 in many clients). Input may be a string or a number.
pub mod amount_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the amount as a decimal string.
    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    /// Reads a decimal string (or a plain number) as `u64`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Number(u64),
        }
        match Either::deserialize(deserializer)? {
            Either::Number(n) => Ok(n),
            Either::Text(s) => s.parse::<u64>().map_err(|_| {
                serde::de::Error::custom(format!(
                    "amount {s:?} is not a decimal integer from 0 to 2^64-1"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::edwards::CompressedEdwardsY;

    #[test]
    fn hash_hex_round_trips_and_rejects_bad_text() {
        let h = Hash::digest(b"abc");
        assert_eq!(h.to_hex().parse::<Hash>().unwrap(), h);
        assert_eq!("abcd".parse::<Hash>(), Err(HexError::MissingPrefix));
        assert!(matches!(
            "0x12".parse::<Hash>(),
            Err(HexError::Length {
                expected: 32,
                got: 1
            })
        ));
        assert!(matches!("0xzz".parse::<Hash>(), Err(HexError::Invalid(_))));
    }

    #[test]
    fn address_checksum_catches_a_typo() {
        let key = crate::devnet_key("alice");
        let text = key.address().to_text();
        assert!(text.starts_with("tally1"));
        assert_eq!(text.parse::<Address>().unwrap(), key.address());
        // Change one character in the data part: the checksum must catch it.
        let mut chars: Vec<char> = text.chars().collect();
        let i = 10;
        chars[i] = if chars[i] == 'q' { 'p' } else { 'q' };
        let typo: String = chars.into_iter().collect();
        assert!(matches!(
            typo.parse::<Address>(),
            Err(AddressError::Malformed(_))
        ));
    }

    #[test]
    fn address_rejects_wrong_prefix_and_non_keys() {
        let other = bech32::encode::<Bech32m>(Hrp::parse("cosmos").unwrap(), &[7u8; 32]).unwrap();
        assert_eq!(
            other.parse::<Address>(),
            Err(AddressError::WrongPrefix("cosmos".into()))
        );
        let short = bech32::encode::<Bech32m>(Hrp::parse("tally").unwrap(), &[7u8; 20]).unwrap();
        assert_eq!(short.parse::<Address>(), Err(AddressError::Length(20)));
        // y = 2 is not on the curve (no x satisfies the equation).
        let mut not_point = [0u8; 32];
        not_point[0] = 2;
        assert!(!Address(not_point).is_valid_key());
        assert_eq!(
            Address(not_point).to_text().parse::<Address>(),
            Err(AddressError::NotAKey)
        );
    }

    #[test]
    fn address_must_be_a_canonical_point_of_large_order() {
        // y + p for a small y (< 19) is a second, non-canonical encoding of
        // the point with that y; find ones whose point is not small-order.
        let mut found = 0;
        for y in 2u8..19 {
            let mut canonical = [0u8; 32];
            canonical[0] = y;
            let Some(point) = CompressedEdwardsY(canonical).decompress() else {
                continue;
            };
            if point.is_small_order() {
                continue;
            }
            let mut plus_p = [0xffu8; 32];
            plus_p[0] = 0xed + y; // p = 2^255 - 19 = 0x7fff…ffed, little-endian
            plus_p[31] = 0x7f;
            assert!(
                CompressedEdwardsY(plus_p).decompress().is_some(),
                "y + p decodes"
            );
            // None of these small y is in the prime-order subgroup.
            assert_eq!(Address(canonical).is_valid_key(), point.is_torsion_free());
            assert!(
                !Address(plus_p).is_valid_key(),
                "non-canonical encoding of y = {y}"
            );
            assert_eq!(
                Address(plus_p).to_text().parse::<Address>(),
                Err(AddressError::NotAKey)
            );
            found += 1;
        }
        assert!(found > 0, "no small y on the curve to test with");
        // The identity (y = 1) is a canonical point of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(!Address(identity).is_valid_key());
        assert!(crate::devnet_key("alice").address().is_valid_key());
    }

    #[test]
    fn address_must_be_in_the_prime_order_subgroup() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let alice = CompressedEdwardsY(crate::devnet_key("alice").address().0)
            .decompress()
            .unwrap();
        for torsion in &EIGHT_TORSION[1..] {
            let mixed = Address((alice + torsion).compress().0);
            assert!(!mixed.is_valid_key(), "mixed-order key accepted");
            assert_eq!(
                mixed.to_text().parse::<Address>(),
                Err(AddressError::NotAKey)
            );
        }
    }

    #[test]
    fn chain_id_rules_hold_when_decoding() {
        assert!(ChainId::new("tally-devnet").is_ok());
        assert_eq!(ChainId::new(""), Err(ChainIdError::Length(0)));
        assert_eq!(ChainId::new("Upper"), Err(ChainIdError::Charset));
        assert!(ChainId::new(&"a".repeat(65)).is_err());
        let bytes = borsh::to_vec(&"Bad Id".to_string()).unwrap();
        assert!(borsh::from_slice::<ChainId>(&bytes).is_err());
        // A length prefix of 4 GiB is refused before any allocation.
        let huge = [0xff, 0xff, 0xff, 0xff, b'a'];
        assert!(borsh::from_slice::<ChainId>(&huge).is_err());
    }
}
