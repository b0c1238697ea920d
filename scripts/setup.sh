#!/usr/bin/env bash
# Install what opsvisor needs on a fresh machine. Idempotent: safe to run every time.
#
#   bash scripts/setup.sh           the Rust target the guest corpus (guests/) is built for,
#                                   x86_64-unknown-none: all that the build and tests need
#   bash scripts/setup.sh --test-machines
#                                   also the machines the hardware backends and the corpus
#                                   cross-checks run on, from Debian's packages: QEMU
#                                   (qemu-system-x86), Bochs with its BIOS images (bochs,
#                                   bochsbios, vgabios), what makes a GRUB ISO
#                                   (grub-pc-bin, grub-common, xorriso, mtools), and ACPICA's
#                                   iasl and acpiexec (acpica-tools), which check the ACPI
#                                   tables in core/tests/acpi_tables.rs
#   bash scripts/setup.sh --fuzz    also cargo-fuzz (the fuzz targets in fuzz/, scripts/fuzz.sh)
#   bash scripts/setup.sh --linux-guest
#                                   also what scripts/linux-guest.sh needs to build the Linux
#                                   guest from Debian's packages (cpio, lz4) and
#                                   scripts/linux-check.sh to time its boots (time), then
#                                   runs linux-guest.sh
#
# Nothing is ever installed by hand: whatever a test needs is added here.
set -euo pipefail

want_machines=0
want_fuzz=0
want_linux=0
for arg in "$@"; do
    case "$arg" in
        --test-machines) want_machines=1 ;;
        --fuzz) want_fuzz=1 ;;
        --linux-guest) want_linux=1 ;;
        *) echo "setup: unknown option $arg (known: --test-machines, --fuzz, --linux-guest)" >&2; exit 2 ;;
    esac
done

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is missing: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi

if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none; then
    echo "setup: adding the Rust target x86_64-unknown-none (for the guest corpus)"
    rustup target add x86_64-unknown-none
fi

# Debian packages, installed only when missing (apt needs root: sudo is used if present).
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "setup: installing ${missing[*]} from Debian's packages"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

if [ "$want_machines" -eq 1 ]; then
    apt_install qemu-system-x86 bochs bochsbios vgabios grub-pc-bin grub-common xorriso mtools acpica-tools
fi

if [ "$want_fuzz" -eq 1 ] && ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "setup: installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked
fi

if [ "$want_linux" -eq 1 ]; then
    apt_install cpio lz4 gzip time
    bash "$(dirname "$0")/linux-guest.sh"
fi
