//! Random bytes instead of a message, now and then, on any channel.

use rand::Rng;

use super::Liar;

/// Up to 300 random bytes, three times in ten.
pub fn garbage(liar: &mut Liar<'_>) -> Option<Vec<u8>> {
    if !liar.coin(0.3) {
        return None;
    }
    let len = liar.rng.gen_range(0..300);
    Some((0..len).map(|_| liar.rng.gen()).collect())
}
