#!/usr/bin/env bash
# Run one cargo-fuzz target for a while and print its speed.
#
#   bash scripts/fuzz.sh TARGET SECONDS     (e.g. emu_differential 60)
#
# Targets (fuzz/fuzz_targets/): the emulator's emu_robustness, emu_differential and
# emu_modes and snapshot_uart; the parsers of outside input loader_multiboot, loader_elf,
# bzimage_load, pvh_load, exec_state, cli_args and snapshot_load. The seeds
# are fuzz/corpus/TARGET (checked in, read only); the inputs a run discovers go to a
# temporary directory (FUZZ_CORPUS=DIR keeps them), crashes to fuzz/artifacts/TARGET. Exits non-zero if the fuzzer found a failure. The last line is
# "TARGET: N exec/s over SECONDS s". The mutation seed is fixed (FUZZ_SEED, default 1)
# so a CI run is reproducible; set FUZZ_SEED to explore elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target=${1:?usage: fuzz.sh TARGET SECONDS}
seconds=${2:?usage: fuzz.sh TARGET SECONDS}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p "corpus/$target" "artifacts/$target"
log=$(mktemp)
found=${FUZZ_CORPUS:-$(mktemp -d)}
mkdir -p "$found"
trap 'rm -f "$log"; [ -n "${FUZZ_CORPUS:-}" ] || rm -rf "$found"' EXIT
status=0
# The differential target runs snippets natively in-process: ASan's shadow memory would
# make most addresses valid on the host side (see the target's documentation).
sanitizer=()
[ "$target" = emu_differential ] && sanitizer=(-s none)
# Memory: an input that makes the target allocate more than this fails (libFuzzer's
# -rss_limit_mb for the whole process, -malloc_limit_mb for any one allocation), so an
# allocation sized by a field of the input is a finding. The parsers get 1 GiB; the
# emulator targets hold guest RAM and decoded blocks, 4 GiB.
case "$target" in
    emu_*) memory_mb=${FUZZ_MEMORY_MB:-4096} ;;
    *) memory_mb=${FUZZ_MEMORY_MB:-1024} ;;
esac
# RUSTC_BOOTSTRAP lets the stable toolchain take the sanitizer flags cargo-fuzz passes.
# The differential target runs snippets natively and catches their signals itself, so
# libFuzzer must leave SIGSEGV/SIGBUS/SIGFPE/SIGILL to it.
RUSTC_BOOTSTRAP=1 cargo fuzz run "${sanitizer[@]}" "$target" --fuzz-dir . -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb="$memory_mb" \
    -malloc_limit_mb="$memory_mb" -seed="${FUZZ_SEED:-1}" \
    -handle_segv=0 -handle_bus=0 -handle_fpe=0 -handle_ill=0 \
    "$found" "corpus/$target" 2>&1 | tee "$log" || status=$?
rate=$(grep -o 'exec/s: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || true)
runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -n 1 | grep -o '[0-9]*' || true)
echo "$target: ${rate:-?} exec/s over $seconds s (${runs:-?} runs)"
exit "$status"
