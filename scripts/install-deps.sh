#!/usr/bin/env bash
# Installs what building Tally needs beyond the Rust toolchain, only when it
# is missing: libclang (RocksDB's bindgen) and clang, plus the rustfmt and
# clippy components used by `make test`.
set -euo pipefail

have_libclang() {
  local candidate
  for candidate in "${LIBCLANG_PATH:-/nonexistent}"/libclang*.so* /usr/lib/llvm-*/lib/libclang*.so* \
      /usr/lib/x86_64-linux-gnu/libclang*.so* /usr/lib/aarch64-linux-gnu/libclang*.so* \
      /usr/lib64/libclang*.so*; do
    [ -e "$candidate" ] && return 0
  done
  return 1
}

if ! have_libclang || ! command -v clang >/dev/null 2>&1; then
  echo "install-deps: libclang/clang missing; installing libclang-dev and clang" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root (or sudo) to apt-get install libclang-dev clang" >&2; exit 1; }
    sudo="sudo"
  fi
  if command -v apt-get >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev clang >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    $sudo dnf install -y clang-devel clang
  else
    echo "install-deps: install libclang and clang with your package manager, then retry" >&2
    exit 1
  fi
fi

if command -v rustup >/dev/null 2>&1; then
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
      rustup component add "$component"
    fi
  done
fi
