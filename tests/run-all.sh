#!/usr/bin/env bash
# Runs every test, first installing what the tests use when it is missing (Debian/Ubuntu):
# e2fsprogs (mke2fs -d, e2fsck, dumpe2fs, debugfs, resize2fs), util-linux (losetup, mount),
# partclone, zstd, fdisk (sfdisk), xfsprogs, dosfstools, mtools, nginx (HTTP image sources), the
# compressors Clonezilla uses (xz-utils, bzip2, lz4) and Clonezilla itself (ocs-sr; it brings drbl)
# for the import tests, udpcast and iproute2 (the multicast fleet test), dnsmasq (checks the DHCP
# host files rimage node writes), chromium (loads the rimage serve dashboard), and for the netboot
# test qemu-system-x86, ipxe-qemu, busybox-static, syslinux, extlinux, linux-image-amd64 and the
# static build (musl target, musl-tools), which this script makes before the tests.
# Tests that need root or loop devices say so and skip that part.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/sbin/$1" ] || [ -x "/usr/sbin/$1" ]; }
have mke2fs || need+=(e2fsprogs)
have losetup || need+=(util-linux)
have partclone.ext4 || need+=(partclone)
have zstd || need+=(zstd)
have sfdisk || need+=(fdisk)
have mkfs.xfs || need+=(xfsprogs)
have mkfs.vfat || need+=(dosfstools)
have mcopy || need+=(mtools)
have blkid || need+=(util-linux)
have partx || need+=(util-linux)
have nginx || need+=(nginx-light)
have dnsmasq || need+=(dnsmasq)
have chromium || need+=(chromium)
# The multicast fleet test (tests/fleet.rs): udpcast in network namespaces, tc for shaping.
have udp-sender || need+=(udpcast)
have ip || need+=(iproute2)
have tc || need+=(iproute2)
have script || need+=(bsdutils)
have xz || need+=(xz-utils)
have bzip2 || need+=(bzip2)
have lz4 || need+=(lz4)
have gzip || need+=(gzip)
have ocs-sr || need+=(clonezilla)
# The netboot end-to-end test (tests/netboot.rs): QEMU with its iPXE ROMs, busybox for the
# initramfs, extlinux for the golden disk, a kernel with modules, strip for a smaller initrd.
have qemu-system-x86_64 || need+=(qemu-system-x86)
[ -e /usr/lib/ipxe/qemu/efi-virtio.rom ] || need+=(ipxe-qemu)
[ -x /bin/busybox ] || need+=(busybox-static)
have extlinux || need+=(extlinux)
[ -e /usr/lib/syslinux/mbr/mbr.bin ] || need+=(syslinux)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
have strip || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: missing ${need[*]}; install them (tests that need them will skip)" >&2
  fi
fi
export PATH="$PATH:/sbin:/usr/sbin"
# The netboot end-to-end test boots the static binary: build it (musl target and musl-gcc for
# the C parts), so that the test runs on what is checked out.
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl; then
  rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || true
fi
if ! command -v musl-gcc >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null || true
fi
cargo build --release --target x86_64-unknown-linux-musl --bin rimage ||
  echo "warning: the static (musl) build failed; the netboot test will skip" >&2
exec cargo test --release "$@"
