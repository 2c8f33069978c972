# Tally: the two commands of the quick start, and their helpers.
CARGO ?= cargo
DEV_HOME ?= .tally/dev
DEV_RPC ?= 127.0.0.1:7700
DEVNET_DIR ?= .tally/devnet
VALIDATORS ?= 4

.PHONY: devnet dev test deps build fmt lint unit sim fuzz

## Start a local network of 4 validators (RPC on http://127.0.0.1:7700-7703); Ctrl-C stops it.
devnet: deps
	$(CARGO) run --quiet -p tally-cli --bin tally -- devnet --validators $(VALIDATORS) --dir $(DEVNET_DIR)

## Start a single-validator dev chain (RPC on http://127.0.0.1:7700).
dev: deps
	$(CARGO) run --quiet -p tally-cli --bin tally -- dev --home $(DEV_HOME) --rpc-addr $(DEV_RPC)

## Everything CI checks: formatting, clippy with warnings as errors, all tests.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# The node alone, without the features the simulator turns on for the
	@# workspace: what `make devnet` builds must compile by itself.
	$(CARGO) check --quiet -p tally-cli --bin tally
	$(CARGO) test --workspace

## A batch of 1000 simulated cluster runs (docs/TESTING.md); SEEDS=N for more.
sim:
	$(CARGO) run --release -p tally-sim -- --seeds $(or $(SEEDS),1000)

## Every fuzz target for 30 s (FUZZ_SECONDS=N); needs cargo-fuzz (installed if missing).
fuzz:
	./scripts/fuzz.sh $(or $(FUZZ_SECONDS),30)

## Install libclang/clang (for RocksDB) and rustfmt/clippy when missing.
deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build -p tally-cli --bin tally

fmt:
	$(CARGO) fmt --all

lint: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings
