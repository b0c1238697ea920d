#!/usr/bin/env bash
# Host instructions per guest instruction of the emulator on the peer benchmark's
# workloads, counted by callgrind (repeatable on a busy machine, unlike time).
#
#   bash scripts/bench-callgrind.sh [OPSVISOR] [WORKLOAD...]    (default: all four)
#
# For each workload the guest `bench` runs under `valgrind --tool=callgrind` twice, with
# a small and a larger iteration count; the difference of the two runs' host instruction
# totals (Ir) over the difference of their guest instruction counts (opsvisor --stats-counts)
# cancels the boot. OPSVISOR defaults to target/release/opsvisor (built if missing); the
# profiles stay in $CALLGRIND_DIR (default: a temporary directory, removed) for
# callgrind_annotate. Needs valgrind (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
opsvisor=${1:-target/release/opsvisor}
shift || true
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(int mem exit cpuid)
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
[ -x "$opsvisor" ] || cargo build --release --quiet -p opsvisor
(cd guests && cargo build --release --quiet --bin bench)
guest=guests/target/x86_64-unknown-none/release/bench
dir=${CALLGRIND_DIR:-$(mktemp -d)}
[ -n "${CALLGRIND_DIR:-}" ] || trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"

# The iteration counts of the two runs: small enough for callgrind, far enough apart.
counts() {
    case $1 in
        int) echo "2 6" ;;
        mem) echo "1 3" ;;
        exit | cpuid) echo "20 80" ;;
        *) echo "unknown workload '$1' (int, mem, exit, cpuid)" >&2; exit 2 ;;
    esac
}

# One run: prints "host_Ir guest_instructions".
measure() {
    local w=$1 n=$2 out="$dir/callgrind.$1.$2"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$opsvisor" run --stats-counts --memory 256M --append "bench=$w n=$n" "$guest" \
        >"$out.stdout" 2>"$out.stderr" || true
    grep -q "^PASS" "$out.stdout" || { echo "bench=$w n=$n did not pass:" >&2; cat "$out.stdout" "$out.stderr" >&2; exit 1; }
    local ir guest_n
    ir=$(grep -m1 '^summary:' "$out" | awk '{print $2}')
    guest_n=$(awk '$1 == "instructions" {print $2; exit}' "$out.stderr")
    echo "$ir $guest_n"
}

printf '%-8s %16s %16s %14s\n' workload "host Ir" "guest instr" "Ir per instr"
for w in "${workloads[@]}"; do
    read -r a b <<<"$(counts "$w")"
    read -r ir1 g1 <<<"$(measure "$w" "$a")"
    read -r ir2 g2 <<<"$(measure "$w" "$b")"
    dir_ir=$((ir2 - ir1))
    dg=$((g2 - g1))
    printf '%-8s %16d %16d %14.1f\n' "$w" "$dir_ir" "$dg" "$(echo "$dir_ir / $dg" | bc -l)"
done
