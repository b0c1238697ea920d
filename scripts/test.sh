#!/usr/bin/env bash
# Run every test: install what is needed, then the whole workspace's test suite, which
# builds the guest corpus and boots every guest on the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo test --workspace
