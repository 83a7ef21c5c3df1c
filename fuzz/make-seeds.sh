#!/usr/bin/env bash
# Regenerates the seed corpora in fuzz/corpus/ from small real filesystems and images.
# Seeds are kept small (the fuzzer mutates whole inputs). Needs mke2fs, xfsprogs, dosfstools,
# mtools, a built rimage, and root (the XFS seeds are filled through a loop mount).
# Seeds are kept small (the fuzzer mutates whole inputs). Needs mke2fs and a built rimage.
# corpus/serve_request/ is written by hand, not here: each seed is a first line naming the
# parser (mac, path, range, host, name, bearer) and its input, or a report body.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rimage=${RIMAGE:-$here/../target/release/rimage}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
c=$here/corpus
mkdir -p "$c/header" "$c/chunk" "$c/image" "$c/ext_scan" "$c/xfs_scan" "$c/fat_scan"

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

# XFS: one-AG filesystems (an AG is at least 16 MiB; the scanner's metadata and the log sit at
# the start of it), cut after their last non-zero byte: the fuzz target reads the rest as zeros.
cut() { # file: truncate after the last non-zero 4 KiB block
  python3 - "$1" <<'PY'
import sys
p = sys.argv[1]
data = open(p, "rb").read()
end = len(data)
while end > 0 and not any(data[max(0, end - 4096):end]):
    end -= 4096
open(p, "wb").write(data[:end])
PY
}
export TEST_DIR=/tmp TEST_DEV=/dev/null QA_CHECK_FS=1
mkdir -p "$work/mnt"
xfs_seed() { # name mount(yes/no) mkfs-options...
  local name=$1 mount=$2; shift 2
  rm -f "$work/x.img"; truncate -s 16M "$work/x.img"
  mkfs.xfs -q -f -d agcount=1 "$@" "$work/x.img"
  if [ "$mount" != no ]; then
    mount -o loop "$work/x.img" "$work/mnt"
    cp -r "$work/tree/." "$work/mnt/"
    if [ "$mount" = fragment ]; then
      # Every other one of 700 one-block files deleted: a two-level free-space btree.
      mkdir "$work/mnt/f"
      for i in $(seq 1 700); do head -c 1024 /dev/zero | tr '\0' x > "$work/mnt/f/$i"; done
      sync; rm -f "$work"/mnt/f/*[02468]
    fi
    if [ "$mount" = dirty ]; then
      sync; xfs_io -x -c "shutdown -f" "$work/mnt"
    fi
    umount "$work/mnt"
  fi
  cut "$work/x.img"
  cp "$work/x.img" "$c/xfs_scan/$name"
}
xfs_seed v5-1k-fragmented fragment -b size=1024
xfs_seed v5-4k yes -b size=4096
xfs_seed v5-dirty-log dirty -b size=1024
xfs_seed v4-512 no -m crc=0 -b size=512
xfs_seed v5-4k-sectors yes -b size=4096 -s size=4096

# FAT: small volumes of each width, filled with mtools; one with its dirty bit set.
fat_seed() { # name size mkfs-options...
  local name=$1 size=$2; shift 2
  rm -f "$work/f.img"; truncate -s "$size" "$work/f.img"
  mkfs.fat "$@" "$work/f.img" >/dev/null 2>&1
  mcopy -s -i "$work/f.img" "$work/tree/a" "$work/tree/d" :: 2>/dev/null || true
  cut "$work/f.img"
  cp "$work/f.img" "$c/fat_scan/$name"
}
fat_seed fat12 256K -F 12
fat_seed fat16 2200K -F 16 -s 1
fat_seed fat32 33M -F 32 -s 1
fat_seed fat32-few-clusters 2M -F 32 -s 1
cp "$c/fat_scan/fat16" "$work/dirty"
printf '\001' | dd of="$work/dirty" bs=1 seek=37 conv=notrunc status=none
cp "$work/dirty" "$c/fat_scan/fat16-dirty"
ls -l "$c/xfs_scan" "$c/fat_scan"
# partclone images: real ones of tiny filesystems (no checksums; CRC32 every 3 blocks), and
# hand-built ones from the documented layout for what this partclone cannot write (format
# 0001, XXH64/XXH128 with their checksums left zero: the fuzz entry's repair pass fills them).
mkdir -p "$c/partclone"
if command -v partclone.extfs >/dev/null && command -v mkfs.vfat >/dev/null; then
  rm -f "$work/e2.img"; truncate -s 128K "$work/e2.img"
  mke2fs -q -F -N 16 -t ext2 -d "$work/tree" "$work/e2.img"
  partclone.extfs -q -c -a0 -s "$work/e2.img" -O "$c/partclone/ext2-a0" >/dev/null 2>&1
  rm -f "$work/fat.img"; truncate -s 256K "$work/fat.img"; mkfs.vfat -s 1 "$work/fat.img" >/dev/null
  MTOOLS_SKIP_CHECK=1 mcopy -i "$work/fat.img" "$work/tree/a" ::/a
  partclone.fat -q -c -a1 -k 3 -s "$work/fat.img" -O "$c/partclone/fat-crc-k3" >/dev/null 2>&1
fi
python3 - "$c/partclone" <<'PY'
import struct, sys, zlib
out = sys.argv[1]
TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
    TABLE.append(c)
def crc_v1(reg, block):
    for _ in range(len(block)):
        reg = (reg >> 8) ^ TABLE[(reg ^ block[0]) & 0xFF]
    return reg
def pc_crc(data):  # partclone's CRC32: register from 0xFFFFFFFF, no final inversion
    return (~zlib.crc32(data)) & 0xFFFFFFFF
bs, total = 512, 12
used = [0, 1, 2, 5, 6, 11]
blocks = {b: bytes([(b * 7 + i) & 0xFF for i in range(bs)]) for b in used}
# Format 0001: byte bitmap, BiTmAgIc, each block then its 0001 CRC (never reset).
head = b"partclone-image" + b"EXTFS".ljust(15, b"\0") + b"0001" + b"\0\0"
head += struct.pack("<iQQQ", bs, bs * total, total, len(used)) + bytes(4096)
body = bytes(1 if b in used else 0 for b in range(total)) + b"BiTmAgIc"
reg = 0xFFFFFFFF
for b in used:
    reg = crc_v1(reg, blocks[b])
    body += blocks[b] + struct.pack("<I", reg)
open(f"{out}/v1", "wb").write(head + body)
def v2(name, mode, size, bpc, reseed, bitmap_mode):
    h = b"partclone-image\0" + b"0.3.23".ljust(14, b"\0") + b"0002" + struct.pack("<H", 0xC0DE)
    h += b"FAT".ljust(16, b"\0") + struct.pack("<QQQQI", bs * total, total, len(used), len(used), bs)
    h += struct.pack("<IHHHHIBB", 18, 2, 64, mode, size, bpc, reseed, bitmap_mode)
    h += struct.pack("<I", pc_crc(h))
    if bitmap_mode == 1:
        bits = bytearray((total + 7) // 8)
        for b in used:
            bits[b // 8] |= 1 << (b % 8)
        body = bytes(bits) + struct.pack("<I", pc_crc(bytes(bits)))
        order = used
    elif bitmap_mode == 8:
        body = bytes(1 if b in used else 0 for b in range(total)) + b"BiTmAgIc"
        order = used
    else:
        body, order = b"", range(total)
    for i, b in enumerate(order):
        body += blocks.get(b, bytes(bs))
        if bpc and ((i + 1) % bpc == 0 or i + 1 == len(order)):
            body += bytes(size)
    open(f"{out}/{name}", "wb").write(h + body)
v2("xxh64-byte-k2", 0x30, 8, 2, 1, 8)
v2("xxh128-bit-k4-noreseed", 0x31, 16, 4, 0, 1)
v2("none-nobitmap", 0x00, 0, 0, 1, 0)
PY
ls -l "$c/partclone"
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
