#!/usr/bin/env bash
# The program under a memory cap, fed issue 14's hostile inputs: every run must end with
# its documented status (a clear error, status 2, or the run's normal status) and the
# error lines it promises, within its time limit, inside an address-space cap a few
# hundred MiB above the guest's RAM (prlimit --as: an allocation past it fails, so
# memory that grows with the input ends the run instead of the machine's).
#
#   bash scripts/resource-test.sh        (prints one PASS/FAIL line per case; exit 1 on
#                                         any FAIL)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p opsvisor
(cd guests && cargo build --release --quiet)
bin=$PWD/target/release/opsvisor
hello=$PWD/guests/target/x86_64-unknown-none/release/hello
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Guest RAM is 256 MiB unless a case says otherwise; the cap leaves 384 MiB for the
# program itself (code, threads, buffers).
headroom=$((384 << 20))
failures=0

# check NAME TIMEOUT_S RAM_BYTES "EXPECTED STATUSES" STDERR_LINES STDIN -- ARGS...
# STDERR_LINES: the exact number of lines stderr must have ("-" for any).
check() {
    local name=$1 limit=$2 ram=$3 expect=$4 lines=$5 input=$6
    shift 7
    local start status err took
    start=$(date +%s%N)
    set +e
    timeout --kill-after=5 "$limit" prlimit --as=$((ram + headroom)) -- "$bin" "$@" \
        <"$input" >"$work/out" 2>"$work/err"
    status=$?
    set -e
    took=$((($(date +%s%N) - start) / 1000000))
    err=$(grep -c . "$work/err" || true)
    local ok=0
    for e in $expect; do [ "$status" -eq "$e" ] && ok=1; done
    if [ "$ok" -eq 1 ] && { [ "$lines" = "-" ] || [ "$err" -eq "$lines" ]; }; then
        printf 'PASS %-34s status %3d in %6d ms  %s\n' "$name" "$status" "$took" "$(head -c 150 "$work/err" | head -n 1)"
    else
        printf 'FAIL %-34s status %3d (expected %s), %d stderr lines (expected %s), %d ms\n' \
            "$name" "$status" "$expect" "$err" "$lines" "$took"
        sed 's/^/    /' "$work/err" | head -n 5
        failures=$((failures + 1))
    fi
}

M=$((256 << 20))
G=$((1 << 30))
null=/dev/null
printf '\xeb\xfe' >"$work/spin.bin"
printf '\x66\xba\xf8\x03\xb0\x78\xee\xeb\xfd' >"$work/chatter.bin"
printf '\xc7\x06\x80\x00\x0e\x7c\xc7\x06\x82\x00\x00\x00\xcd\x20\xb0\x21\xe6\xf4' >"$work/boot.bin"
printf '\x66\xc7\x05\xfe\xff\x1f\x00\x34\x12\xc7\x05\xfe\xff\x1f\x00\x88\x77\x66\x55\xa1\xfe\xff\x1f\x00\xbf\xf0\xff\x1f\x00\xb9\x40\x00\x00\x00\xf3\xaa\xc1\xe8\x10\x24\x3f\xe6\xf4' >"$work/straddle.bin"
truncate -s 2G "$work/big.bin"
head -c $(((2 << 20) - 4096)) /dev/zero >"$work/fat.bin"
python3 - "$hello" "$work/badsum.elf" <<'PY'
import sys
b = bytearray(open(sys.argv[1], 'rb').read())
i = next(i for i in range(0, min(len(b), 8192), 4) if b[i:i+4] == (0x1BADB002).to_bytes(4, 'little'))
b[i + 8] ^= 1
open(sys.argv[2], 'wb').write(b)
PY

# 1: a region at the top of the 47-bit space (the emulator sized a table by address).
echo '{"mode":64,"code":"90","regs":{"rip":"0x1000"},"memory":[{"address":"0x7ffffffff000","size":16}]}' >"$work/high.json"
check exec-high-region 60 "$M" 0 0 "$work/high.json" -- exec -
# 2: arguments that are not UTF-8.
check non-utf8-kernel 30 "$M" 2 1 $null -- run "$(printf 'k\xff.elf')"
check non-utf8-append 60 "$M" 1 0 $null -- run --timeout 30 --append "$(printf 'caf\xe9')" "$hello"
# 3: endless console input to a guest that never reads it.
set +e
yes | timeout 30 prlimit --as=$((M + headroom)) -- "$bin" run --flat --timeout 5 "$work/spin.bin" >/dev/null 2>"$work/err"
status=$?
set -e
if [ "$status" -eq 8 ]; then
    echo "PASS yes-into-a-guest-that-never-reads    status   8"
else
    echo "FAIL yes-into-a-guest-that-never-reads    status $status (expected 8)"
    failures=$((failures + 1))
fi
# 4: a trace of a million steps (streamed).
echo '{"mode":64,"regs":{"rip":"0x1000"},"code":"48ffc0 ebfb"}' >"$work/loop.json"
check exec-trace-1M-steps 300 "$M" 0 0 "$work/loop.json" -- exec --trace -
# 5: input files that are devices, too large, or pipes without end.
check module-dev-zero 30 "$M" 2 1 $null -- run --module /dev/zero "$hello"
check kernel-dev-urandom 30 "$M" 2 1 $null -- run /dev/urandom
check module-2GiB-sparse 30 "$M" 2 1 $null -- run --module "$work/big.bin" "$hello"
check kernel-from-endless-pipe 60 $((2 << 20)) 2 1 $null -- run --memory 2M --flat <(yes)
# 6: the largest exec region, written once.
echo '{"mode":64,"regs":{"rip":"0x1000","rax":"0x5a"},"code":"880425 00001000","memory":[{"address":"0x100000","size":"0x3fffff00"}]}' >"$work/gib.json"
check exec-1GiB-region 120 "$G" 0 0 "$work/gib.json" -- exec -
# 7: --timeout with a stdout nobody reads.
set +e
{
    start=$(date +%s)
    timeout 60 prlimit --as=$((M + headroom)) -- "$bin" run --flat --timeout 3 "$work/chatter.bin" 2>"$work/err"
    echo "$? $(($(date +%s) - start))" >"$work/blocked"
} | sleep 20
set -e
read -r status took <"$work/blocked"
if [ "$status" -eq 8 ] && [ "$took" -le 8 ] && [ "$(grep -c . "$work/err")" -eq 1 ]; then
    echo "PASS timeout-with-blocked-stdout          status   8 in $took s  $(head -c 150 "$work/err")"
else
    echo "FAIL timeout-with-blocked-stdout          status $status in $took s (expected 8 within 8 s, one line)"
    failures=$((failures + 1))
fi
# 8: thousands of regions, each needing page tables of its own.
python3 -c '
import json
print(json.dumps({"mode": 64, "regs": {"rip": "0x1000"}, "code": "90",
                  "memory": [{"address": hex(i << 30), "size": 16} for i in range(1, 4001)]}))' >"$work/scattered.json"
check exec-4000-scattered-regions 120 "$M" 0 0 "$work/scattered.json" -- exec -
# 9: a real-mode flat binary with an INT, no --load-addr.
check real-mode-boot-sector 30 "$M" 67 0 $null -- run --mode real "$work/boot.bin"
# 10: accesses straddling the end of RAM.
check straddle-end-of-ram 30 $((2 << 20)) 127 0 $null -- run --memory 2M --flat "$work/straddle.bin"
# 12: messages.
check bad-multiboot-checksum 30 "$M" 2 1 $null -- run "$work/badsum.elf"
check module-past-the-kernel 30 $((2 << 20)) 2 1 $null -- run --memory 2M --module "$work/fat.bin" "$hello"
check flat-on-multiboot 30 "$M" 2 1 $null -- run --flat "$hello"
check stats-with-a-value 30 "$M" 2 1 $null -- run --stats=yes "$hello"
check repeated-option 30 "$M" 2 1 $null -- run --memory 64M --memory 128M "$hello"
check backend-vmx 30 "$M" 2 1 $null -- run --backend vmx "$hello"
# 13: a fault part-way through REP STOSB keeps the bytes it stored.
echo '{"mode":32,"regs":{"eip":"0x1000","eax":"0xaa","ecx":"0x20","edi":"0x20000fe8","esp":"0x20000ff0"},"code":"f3aa","memory":[{"address":"0x20000000","size":4096}]}' >"$work/stos.json"
check exec-rep-stos-fault 30 "$M" 0 0 "$work/stos.json" -- exec -
grep -q '"bytes": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"' "$work/out" || {
    echo "FAIL exec-rep-stos-fault: the stored bytes are not in the output"
    failures=$((failures + 1))
}

# Issue 15: the exit trace and --stats' tables in bounded memory, a guest exiting as fast
# as it can (every COM1 write traced, its output going nowhere); a trace FIFO nobody
# opens holds the run only until the timeout.
check trace-every-exit 60 "$M" 8 - $null -- run --flat --timeout 5 --serial none --stats --trace-exits /dev/null "$work/chatter.bin"
mkfifo "$work/trace.fifo"
check trace-to-a-fifo-nobody-reads 30 "$M" 8 1 $null -- run --flat --timeout 2 --serial none --trace-exits "$work/trace.fifo" "$work/chatter.bin"

if [ "$failures" -ne 0 ]; then
    echo "resource test: $failures case(s) failed" >&2
    exit 1
fi
echo "resource test: every case ended as documented, within its time and memory"
