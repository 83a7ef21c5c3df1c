#!/usr/bin/env bash
# Regenerates the seed corpora in fuzz/corpus/ from small real filesystems and images.
# Seeds are kept small (the fuzzer mutates whole inputs). Needs mke2fs and a built rimage.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rimage=${RIMAGE:-$here/../target/release/rimage}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
c=$here/corpus
mkdir -p "$c/header" "$c/chunk" "$c/image" "$c/ext_scan"

mkdir -p "$work/tree/d"
printf 'hello\n' > "$work/tree/a"
head -c 3000 /dev/urandom > "$work/tree/d/b"
seq 1 500 > "$work/tree/d/c"

# Tiny filesystems for the scanner (the smallest mke2fs makes).
n=0
for opts in "-t ext4 -O ^metadata_csum,^has_journal" "-t ext4 -O ^has_journal" "-t ext2" \
            "-t ext4 -O ^has_journal,meta_bg,^resize_inode,^metadata_csum" "-t ext4 -O ^has_journal,^metadata_csum,uninit_bg,^flex_bg" \
            "-t ext4 -O ^has_journal,^metadata_csum,sparse_super2" "-t ext4 -b 4096 -O ^has_journal,^metadata_csum"; do
  n=$((n + 1))
  size=128K; case "$opts" in *4096*) size=256K ;; esac
  rm -f "$work/fs.img"; truncate -s $size "$work/fs.img"
  # shellcheck disable=SC2086
  mke2fs -q -F -N 32 $opts -d "$work/tree" "$work/fs.img"
  cp "$work/fs.img" "$c/ext_scan/fs$n"
done

# A filesystem whose journal holds a committed transaction (a block bitmap copy), written with
# debugfs: the journal walk runs on it.
rm -f "$work/fs.img"; truncate -s 3M "$work/fs.img"
mke2fs -q -F -N 32 -t ext4 -b 1024 -J size=1 -O ^metadata_csum -d "$work/tree" "$work/fs.img"
bm=$(dumpe2fs "$work/fs.img" 2>/dev/null | sed -n 's/^ *Block bitmap at \([0-9]*\).*/\1/p' | head -1)
dd if="$work/fs.img" of="$work/bm" bs=1024 skip="$bm" count=1 status=none
printf '\377\377\377\377' | dd of="$work/bm" bs=1 seek=200 conv=notrunc status=none
printf 'jo -c\njw -b %s %s\njc\n' "$bm" "$work/bm" > "$work/j.cmds"
debugfs -w -f "$work/j.cmds" "$work/fs.img" >/dev/null 2>&1
cp "$work/fs.img" "$c/ext_scan/journal"

# Images: a tiny ext image with small chunks, and a raw image, in the format this rimage writes
# (version 2). image/*-v1 and header/*-v1 are version 1 seeds kept from an earlier rimage.
rm -f "$work/fs.img"; truncate -s 128K "$work/fs.img"
mke2fs -q -F -N 32 -t ext4 -O ^has_journal -d "$work/tree" "$work/fs.img"
"$rimage" save -q --overwrite --chunk-size 64K "$work/fs.img" "$c/image/ext"
head -c 70000 /dev/urandom > "$work/raw.bin"; head -c 70000 /dev/zero >> "$work/raw.bin"; seq 1 9000 >> "$work/raw.bin"
"$rimage" save -q --overwrite --chunk-size 64K "$work/raw.bin" "$c/image/raw"

# Headers and single chunk records cut from those images (the chunk target's first byte
# selects the block size: 0 → 512, 1 → 1024, 2 → 2048, 3 → 4096).
head -c 512 "$c/image/ext" > "$c/header/ext"
head -c 512 "$c/image/raw" > "$c/header/raw"
python3 - "$c" <<'PY'
import struct, sys
c = sys.argv[1]
for name, sel in (("ext", 1), ("raw", 3)):
    data = open(f"{c}/image/{name}", "rb").read()
    off = 512
    n_ext, raw_len, stored = struct.unpack_from("<III", data, off + 16)
    rec = data[off:off + 32 + 12 * n_ext + stored + 4]
    open(f"{c}/chunk/{name}", "wb").write(bytes([sel]) + rec)
PY
ls -l "$c"/*

# Partition tables (small disks made by sfdisk: GPT; MBR with an extended partition and
# logical ones) and disk manifests.
mkdir -p "$c/table" "$c/manifest"
rm -f "$c/table/gpt" "$c/table/dos"
truncate -s 128K "$c/table/gpt" "$c/table/dos"
printf 'label: gpt\nfirst-lba: 34\nstart=40, size=64, type=L\nstart=104, size=32, type=S\n' | sfdisk -q "$c/table/gpt"
printf 'label: dos\nstart=8, size=40, type=83, bootable\nstart=48, size=120, type=5\nstart=56, size=16, type=83\nstart=80, size=16, type=82\n' | sfdisk -q "$c/table/dos"
for t in gpt dos; do
  cp "$c/table/$t" "$work/disk-$t"
  "$rimage" save-disk -q --overwrite "$work/disk-$t" "$work/saved-$t" || true
  [ -f "$work/saved-$t/manifest.toml" ] && cp "$work/saved-$t/manifest.toml" "$c/manifest/$t.toml"
done

# Kernel command lines for the netboot init (what rimage serve's iPXE script passes, DHCP, quoting,
# a broken line).
mkdir -p "$c/cmdline"
printf 'BOOT_IMAGE=vmlinuz initrd=initrd.img console=ttyS0,115200 console=tty0 rimage.mode=restore rimage.server=http://10.0.2.2:8080 rimage.node=node07 rimage.token=00112233445566778899aabbccddeeff rimage.mac=52:54:00:12:34:56 rimage.ip=10.0.2.15 rimage.netmask=255.255.255.0 rimage.gateway=10.0.2.2 rimage.dns=10.0.2.3\n' > "$c/cmdline/ipxe-restore"
printf 'initrd=initrd.img rimage.mode=save rimage.server=http://head:8080/ rimage.node=n1 rimage.token=ab rimage.mac=52-54-00-12-34-56 rimage.ip= rimage.netmask= rimage.gateway= rimage.dns=\n' > "$c/cmdline/dhcp-save"
printf 'rimage.mode=live rimage.shell=1 rimage.disk=nvme0n1 rimage.node="node 7" quiet' > "$c/cmdline/live-quoted"
printf 'rimage.ip=10.0.0.1 rimage.netmask=20 rimage.disk=/dev/vda' > "$c/cmdline/prefix"
printf 'rimage.node="unterminated' > "$c/cmdline/unterminated"
printf 'rimage.mode=save rimage.mode=restore rimage.x=1 \377\376 rimage.mac=\377' > "$c/cmdline/bad"
printf 'initrd=initrd.img rimage.mode=restore rimage.server=http://head:8080 rimage.node=n rimage.token=t BOOTIF=01-52-54-00-12-34-56' > "$c/cmdline/pxelinux-bootif"
