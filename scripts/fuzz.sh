#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a short time each.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Not part of CI: cargo-fuzz needs compiler flags of the nightly channel,
# which RUSTC_BOOTSTRAP=1 unlocks on the stable toolchain. Findings land
# in fuzz/artifacts/<target>/; replay one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> -s none fuzz/artifacts/<target>/<file>
set -euo pipefail
seconds="${1:-30}"
shift || true
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
for target in "${targets[@]}"; do
    echo "== $target: ${seconds}s"
    # No sanitizer: the targets are safe Rust; a panic is what they look for.
    cargo fuzz run "$target" --sanitizer none -- -max_total_time="$seconds" -max_len=65536
done
