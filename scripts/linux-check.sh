#!/usr/bin/env bash
# Boot the Linux guest (scripts/linux-guest.sh) on the emulator and check the boot:
# the bzImage and the PVH vmlinux each reach the initramfs's marker and power off through
# ACPI S5 (status 0), with 6 GiB of RAM the kernel sees the memory above 4 GiB, with
# --cpu max the system features of the model are in /proc/cpuinfo's flags (and Linux,
# told by IA32_ARCH_CAPABILITIES that the processor is not affected, runs without
# page-table isolation) and with
# --cpu qemu64 they are not, with --smp 4 --cpu max it brings up all four CPUs and
# /proc/cpuinfo lists four processors with the model's flags, and the kernel log has
# none of the complaints of a platform that lacks what Linux expects.
#
#   bash scripts/linux-check.sh [TIMEOUT_SECONDS]     (default 300 per boot)
#
# Prints one line per boot with its CPU time; exits non-zero at the first failure, with
# the boot's log kept in a temporary file whose name it prints.
set -euo pipefail
cd "$(dirname "$0")/.."

timeout_s=${1:-300}
bash scripts/setup.sh --linux-guest
cargo build --release --quiet -p opsvisor
dir=target/linux-guest
log=$(mktemp)

# What Linux prints when the platform lacks something it looks for, or breaks.
# (The CPU model's vulnerability notes, such as RETBleed's, are about the model, not the
# platform.)
bad='Unable to calibrate|No reference|ACPI Error|ACPI BIOS Error|ACPI Warning|PCI: No IRQ|IRQ.*routing.*fail|Kernel panic|BUG:|WARNING: CPU|Call Trace|Failed to register legacy timer|timer doesn.t work|MP-BIOS bug|i8042.*fail|atkbd.*fail|rtc.*fail|Unable to read current time'

# boot WHAT KERNEL MEMORY [OPTION...]: the options go to opsvisor run.
boot() {
    local what=$1 kernel=$2 memory=$3
    shift 3
    local start end status
    start=$(date +%s.%N)
    set +e
    /usr/bin/time -f '%U %S' -o "$log.time" target/release/opsvisor run --timeout "$timeout_s" \
        --memory "$memory" --initrd "$dir/initrd.gz" --append "console=ttyS0" "$@" \
        "$dir/$kernel" > "$log" 2>&1
    status=$?
    set -e
    end=$(date +%s.%N)
    local cpu
    cpu=$(awk '{ printf "%.1f", $1 + $2 }' "$log.time")
    if [ "$status" -ne 0 ]; then
        echo "linux-check: $what: status $status, not 0 (the S5 power-off); log in $log" >&2
        tail -n 5 "$log" >&2
        exit 1
    fi
    if ! grep -q "opsvisor-linux-guest: init reached" "$log"; then
        echo "linux-check: $what: powered off without the /init marker; log in $log" >&2
        exit 1
    fi
    if grep -E -q "$bad" "$log"; then
        echo "linux-check: $what: the kernel complained; log in $log:" >&2
        grep -E "$bad" "$log" >&2
        exit 1
    fi
    printf 'linux-check: %s: marker reached, powered off (%s s CPU, %s s wall)\n' \
        "$what" "$cpu" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')"
}

# The flags /init printed, one per line.
flags() {
    sed -n 's/.*opsvisor-linux-guest: cpu flags://p' "$log" | tr -d '\r' | tr ' ' '\n' | grep .
}

# The CPU model's system features as Linux names them in /proc/cpuinfo.
model_flags="smep smap umip fsgsbase pcid invpcid rdtscp rdpid xsave xsaveopt xsavec la57 arch_capabilities"

boot "bzImage, 256M, --cpu max" vmlinuz 256M --cpu max
grep -E "clocksource: Switched|tsc: Detected|IOAPIC\[0\]|ACPI: PM-Timer|Calibrating delay|x86/fpu: Enabled|UMIP" "$log" |
    sed 's/^/    /'
missing=""
for f in $model_flags; do
    flags | grep -qx "$f" || missing="$missing $f"
done
if [ -n "$missing" ]; then
    echo "linux-check: --cpu max: /proc/cpuinfo lacks the model's flags:$missing; log in $log" >&2
    grep "cpu flags" "$log" >&2 || true
    exit 1
fi
echo "linux-check: --cpu max: /proc/cpuinfo has$(for f in $model_flags; do printf ' %s' "$f"; done)"
# IA32_ARCH_CAPABILITIES says RDCL_NO (not affected by Meltdown): no page-table isolation.
if grep -q "page tables isolation: enabled" "$log"; then
    echo "linux-check: --cpu max: Linux enabled page-table isolation despite ARCH_CAPABILITIES.RDCL_NO; log in $log" >&2
    exit 1
fi
boot "bzImage, 256M, --cpu qemu64" vmlinuz 256M --cpu qemu64
present=""
for f in $model_flags; do
    if flags | grep -qx "$f"; then present="$present $f"; fi
done
if [ -n "$present" ] || ! flags | grep -qx lm; then
    echo "linux-check: --cpu qemu64: /proc/cpuinfo has flags the model lacks:${present:- (or no lm)}; log in $log" >&2
    exit 1
fi
echo "linux-check: --cpu qemu64: none of the model's system flags, lm present"
boot "PVH vmlinux, 256M" vmlinux 256M
boot "bzImage, 6G" vmlinuz 6G
memtotal=$(sed -n 's/.*MemTotal \([0-9]*\) kB.*/\1/p' "$log")
if [ -z "$memtotal" ] || [ "$memtotal" -lt 5000000 ]; then
    echo "linux-check: bzImage, 6G: MemTotal ${memtotal:-?} kB does not include the RAM above 4 GiB; log in $log" >&2
    exit 1
fi
echo "linux-check: bzImage, 6G: MemTotal $memtotal kB (RAM above 4 GiB is used)"
boot "bzImage, 256M, --smp 4 --cpu max" vmlinuz 256M --smp 4 --cpu max
if ! grep -q "Brought up 1 node, 4 CPUs" "$log" || ! grep -q "init reached: 4 CPU(s)" "$log"; then
    echo "linux-check: bzImage, --smp 4: Linux did not bring up 4 CPUs, or /proc/cpuinfo lists fewer; log in $log:" >&2
    grep -E "smpboot|Brought up|CPU[0-9]+|init reached" "$log" >&2 || true
    exit 1
fi
missing=""
for f in $model_flags; do
    flags | grep -qx "$f" || missing="$missing $f"
done
if [ -n "$missing" ]; then
    echo "linux-check: --smp 4 --cpu max: /proc/cpuinfo lacks the model's flags:$missing; log in $log" >&2
    exit 1
fi
echo "linux-check: bzImage, --smp 4 --cpu max: $(grep -o "Brought up 1 node, 4 CPUs" "$log"), /proc/cpuinfo lists 4 processors with the model's flags"
rm -f "$log" "$log.time"
