#!/usr/bin/env bash
# Install what is needed, build opsvisor and a demonstration guest, and boot the guest
# on the emulator backend with its serial console on this terminal.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "demo: building opsvisor and the guest corpus (first build takes a few minutes)"
cargo build --release -p opsvisor
(cd guests && cargo build --release --quiet)
guest=guests/target/x86_64-unknown-none/release/hello
echo "demo: booting $guest on the emulator"
echo "      \$ target/release/opsvisor run --stats --append 'greetings from the README' $guest"
set +e
target/release/opsvisor run --stats --append "greetings from the README" "$guest"
status=$?
set -e
echo "demo: opsvisor exited with status $status (1 = the guest reported PASS through port 0xf4)"
[ "$status" -eq 1 ]
