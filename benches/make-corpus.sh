#!/usr/bin/env bash
# Builds the benchmark corpus: a 4 GiB ext4 (or XFS) filesystem (4 KiB blocks), about half used
# by binaries and libraries, text, already-compressed and random data, whose free space holds
# stale non-zero data because files were written, deleted and rewritten through a loop mount.
# Usage: make-corpus.sh OUT.img [SIZE_GIB] [ext4|xfs]. Needs root (loop mount).
set -euo pipefail
out=$1
size_gib=${2:-4}
fstype=${3:-ext4}
[ "$(id -u)" -eq 0 ] || { echo "make-corpus.sh: needs root for the loop mount" >&2; exit 1; }
mnt=$(mktemp -d)
cleanup() { mountpoint -q "$mnt" && umount "$mnt"; rmdir "$mnt"; }
trap cleanup EXIT

rm -f "$out"
truncate -s "${size_gib}G" "$out"
case $fstype in
  ext4) mkfs.ext4 -q -F -b 4096 -L corpus "$out" ;;
  xfs) mkfs.xfs -q -f -b size=4096 -L corpus "$out" ;;
  *) echo "make-corpus.sh: unknown filesystem type $fstype" >&2; exit 2 ;;
esac
mount -o loop "$out" "$mnt"

# Budget in MiB, scaled to the filesystem size (4 GiB → about 2 GiB used at the end).
scale=$(( size_gib * 256 ))            # MiB per quarter of the filesystem
copy_tree() { # copy_tree SRC DST LIMIT_MIB: regular files under SRC until LIMIT_MIB
  local src=$1 dst=$2 limit=$(( $3 * 1048576 )) total=0 f sz
  mkdir -p "$dst"
  while IFS= read -r -d '' f; do
    sz=$(stat -c %s "$f")
    [ $(( total + sz )) -gt "$limit" ] && break
    mkdir -p "$dst/$(dirname "${f#/}")"
    cp -p "$f" "$dst/${f#/}" 2>/dev/null || continue
    total=$(( total + sz ))
  done < <(find "$src" -xdev -type f -size +0 -print0 2>/dev/null | sort -z)
}

# 1. Stale data: filler that will be deleted (libraries and random data).
copy_tree /usr/lib "$mnt/stale/lib" $(( scale * 3 / 4 ))
head -c $(( scale * 3 / 8 ))M /dev/urandom > "$mnt/stale/random.bin"
sync

# 2. The data that stays: binaries and libraries, text, compressed, random.
copy_tree /usr/bin "$mnt/usr/bin" $(( scale / 4 ))
copy_tree /usr/lib/x86_64-linux-gnu "$mnt/usr/lib" $(( scale * 3 / 4 ))
copy_tree /usr/share "$mnt/usr/share" $(( scale / 4 ))
mkdir -p "$mnt/var/log" "$mnt/data"
for i in $(seq 1 $(( scale / 32 ))); do
  find /usr/share/doc -type f -name '*.gz' -print0 2>/dev/null | head -z -n 200 | xargs -0 cat > "$mnt/data/archive$i.gz" 2>/dev/null || true
  seq 1 200000 | sed "s/^/node$i log line /" > "$mnt/var/log/syslog.$i"
done
# Already-compressed data: zstd frames of library code.
find /usr/lib -xdev -type f -size +100k -print0 2>/dev/null | sort -z | head -z -n 400 | xargs -0 cat | head -c $(( scale / 4 ))M | zstd -q -3 -c > "$mnt/data/bundle.zst" || true
head -c $(( scale / 8 ))M /dev/urandom > "$mnt/data/random.bin"
sync

# 3. Delete the filler and rewrite some files, as a disk in use would.
rm -rf "$mnt/stale"
for f in $(find "$mnt/usr/bin" -type f | sort | awk 'NR % 3 == 0'); do cp -p "$f" "$f.new" && mv "$f.new" "$f"; done
sync
df -h "$mnt" | tail -1
umount "$mnt"
case $fstype in
  ext4) e2fsck -fn "$out" >/dev/null ;;
  xfs) xfs_repair -n "$out" >/dev/null 2>&1 ;;
esac
echo "corpus: $out"
