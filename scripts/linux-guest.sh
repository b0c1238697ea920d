#!/usr/bin/env bash
# Fetch a Linux guest from Debian's packages and build its initramfs. Nothing is
# installed: the packages are downloaded with `apt-get download` and unpacked with
# `dpkg -x` into a cache directory.
#
#   bash scripts/linux-guest.sh [OUT_DIR]      (default OUT_DIR: target/linux-guest)
#
# Writes into OUT_DIR:
#   vmlinuz      Debian's linux-image-*-cloud-amd64 bzImage (the version the
#                linux-image-cloud-amd64 metapackage names today)
#   vmlinux      the same kernel as an ELF image (decompressed from the bzImage's
#                payload), which boots through its PVH entry note
#   initrd.gz    a gzip'd newc cpio with busybox-static and an /init that mounts proc and
#                sysfs, prints the marker below with the CPU count and memory size and
#                the flags line of /proc/cpuinfo (what Linux makes of the CPU model), and
#                powers the machine off with `poweroff -f`; with `opsvisor.shell` on the
#                kernel command line it starts an interactive shell on the console
#                instead (leave it with `poweroff -f`)
#   version      the kernel package's name and version
#
# The marker /init prints: "opsvisor-linux-guest: init reached".
# Needs: apt-get, dpkg, cpio, gzip, lz4 (scripts/setup.sh --linux-guest installs the last
# three). Idempotent: an existing OUT_DIR with the same kernel version is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/linux-guest}
mkdir -p "$out"
out=$(cd "$out" && pwd)

for tool in apt-get dpkg cpio gzip lz4 python3; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "linux-guest: $tool is missing (run: bash scripts/setup.sh --linux-guest)" >&2
        exit 1
    }
done

kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$kernel_pkg" ]; then
    echo "linux-guest: apt-cache does not know linux-image-cloud-amd64 (run apt-get update)" >&2
    exit 1
fi
kernel_ver=$(apt-cache policy "$kernel_pkg" | awk '/Candidate:/ { print $2 }')
# The initramfs's revision: a new /init makes the guest be built again.
want="$kernel_pkg $kernel_ver, init 2"
if [ -f "$out/version" ] && [ "$(cat "$out/version")" = "$want" ] &&
    [ -f "$out/vmlinuz" ] && [ -f "$out/vmlinux" ] && [ -f "$out/initrd.gz" ]; then
    echo "linux-guest: $want already in $out"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "linux-guest: downloading $want and busybox-static"
(cd "$work" && apt-get download -q "$kernel_pkg" busybox-static >/dev/null 2>&1) || {
    echo "linux-guest: apt-get download failed (is the package index current? apt-get update)" >&2
    exit 1
}
dpkg -x "$work"/linux-image-*.deb "$work/kernel"
dpkg -x "$work"/busybox-static_*.deb "$work/busybox"
cp "$work"/kernel/boot/vmlinuz-* "$out/vmlinuz"

# The ELF kernel: the bzImage's payload (setup header fields payload_offset and
# payload_length, boot protocol 2.08+) is the compressed vmlinux.
python3 - "$out/vmlinuz" "$work/payload" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
if data[0x202:0x206] != b'HdrS':
    sys.exit("linux-guest: vmlinuz has no Linux boot protocol header")
setup_sects = data[0x1f1] or 4
offset, length = struct.unpack_from('<II', data, 0x248)
start = (setup_sects + 1) * 512 + offset
open(sys.argv[2], 'wb').write(data[start:start + length])
PY
# The build appends the decompressed size (le32) to the compressed data, which the
# decompressors see as trailing garbage and report with a non-zero status: the size
# check below is what says the result is whole.
magic=$(head -c 4 "$work/payload" | od -An -tx1 | tr -d ' \n')
case "$magic" in
    02214c18) lz4 -dc "$work/payload" > "$out/vmlinux" 2>/dev/null || true ;;
    1f8b*) gzip -dc "$work/payload" > "$out/vmlinux" 2>/dev/null || true ;;
    *) echo "linux-guest: unknown payload compression (magic $magic)" >&2; exit 1 ;;
esac
want_size=$(tail -c 4 "$work/payload" | od -An -tu4 | tr -d ' ')
got_size=$(stat -c %s "$out/vmlinux")
[ "$got_size" = "$want_size" ] && head -c 4 "$out/vmlinux" | grep -q ELF || {
    echo "linux-guest: decompressing the payload gave $got_size bytes, not an ELF image of $want_size" >&2
    exit 1
}

root="$work/root"
mkdir -p "$root"/{bin,sbin,proc,sys,dev,etc,tmp}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cat > "$root/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
cpus=$(grep -c '^processor' /proc/cpuinfo)
mem=$(awk '/^MemTotal:/ { print $2 " " $3 }' /proc/meminfo)
echo "opsvisor-linux-guest: init reached: $cpus CPU(s), MemTotal $mem"
echo "opsvisor-linux-guest: cpu flags:$(awk -F: '/^flags/ { print $2; exit }' /proc/cpuinfo)"
if grep -qw opsvisor.shell /proc/cmdline; then
    echo "opsvisor-linux-guest: interactive shell; leave with 'poweroff -f'"
    setsid cttyhack sh
fi
poweroff -f
INIT
chmod 755 "$root/init"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet --owner=0:0) | gzip -9 > "$out/initrd.gz"
echo "$want" > "$out/version"
echo "linux-guest: $want -> $out/{vmlinuz,vmlinux,initrd.gz}"
