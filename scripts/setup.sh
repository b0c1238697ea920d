#!/usr/bin/env bash
# Install what opsvisor needs on a fresh machine. Idempotent: safe to run every time.
#
# - the Rust target the guest corpus (guests/) is built for: x86_64-unknown-none
#
# The hardware backends' test machines (Bochs, QEMU, GRUB) arrive with their issues and
# will be added here, so that nothing is ever installed by hand.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is missing: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi

if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none; then
    echo "setup: adding the Rust target x86_64-unknown-none (for the guest corpus)"
    rustup target add x86_64-unknown-none
fi
