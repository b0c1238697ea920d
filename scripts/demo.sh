#!/usr/bin/env bash
# Install what is needed, build opsvisor and a demonstration guest, and boot it on the
# emulator backend with its serial console on this terminal: first the corpus guest
# `hello`, then Debian's Linux kernel (fetched by scripts/linux-guest.sh with apt-get
# download) to its initramfs's /init, which powers the machine off.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --linux-guest
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

linux=target/linux-guest
echo "demo: booting Debian's Linux kernel on the emulator"
echo "      \$ target/release/opsvisor run --initrd $linux/initrd.gz --append console=ttyS0 $linux/vmlinuz"
set +e
target/release/opsvisor run --timeout 300 --initrd "$linux/initrd.gz" --append "console=ttyS0" \
    "$linux/vmlinuz" < /dev/null
status=$?
set -e
echo "demo: opsvisor exited with status $status (0 = the guest powered the machine off)"
[ "$status" -eq 0 ]
