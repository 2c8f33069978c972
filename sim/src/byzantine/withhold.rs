//! Withholding: most of its own messages never leave.

use super::Liar;

pub(super) fn withholds(liar: &mut Liar<'_>) -> bool {
    liar.coin(0.7)
}
