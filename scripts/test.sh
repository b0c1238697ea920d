#!/usr/bin/env bash
# Run every test: install what is needed, then the whole workspace's test suite, which
# builds the guest corpus and boots every guest on the emulator. Ends with one summary
# line adding up every test binary's result.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i) ~ /^passed;?$/) passed += $(i - 1)
            if ($(i) ~ /^failed;?$/) failed += $(i - 1)
        }
    }
    END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
