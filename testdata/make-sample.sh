#!/usr/bin/env bash
# Makes testdata/sample.ext4: a small ext4 filesystem (8 MiB, 1 KiB blocks) with a few files,
# the sample the README runs rimage on. Deterministic: fixed UUID, hash seed and timestamps.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/sample.ext4}
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT

mkdir -p "$tree/etc" "$tree/usr/bin" "$tree/home/admin/notes" "$tree/var/log"
printf 'node%02d\n' 7 > "$tree/etc/hostname"
for i in $(seq 1 40); do printf 'node%02d 10.0.0.%d\n' "$i" "$i"; done > "$tree/etc/hosts"
printf '# /etc/fstab\nUUID=5a1e0000-0000-4000-8000-00000000cafe / ext4 defaults 0 1\n' > "$tree/etc/fstab"
# A pseudo-random "binary" (deterministic) and some compressible logs.
head -c 300000 /dev/zero | openssl enc -aes-128-ctr -nosalt -K 00112233445566778899aabbccddeeff -iv 0 2>/dev/null > "$tree/usr/bin/tool" \
  || python3 -c 'import random,sys; r=random.Random(1); sys.stdout.buffer.write(bytes(r.getrandbits(8) for _ in range(300000)))' > "$tree/usr/bin/tool"
for i in $(seq 1 3000); do echo "Nov 25 02:$((i % 60)):00 node07 kernel: event $i"; done > "$tree/var/log/messages"
echo "remember to re-image node12" > "$tree/home/admin/notes/todo.txt"
ln -s ../../etc/hosts "$tree/home/admin/hosts-link"
chmod 0755 "$tree/usr/bin/tool"
find "$tree" -exec touch -h -d '2026-01-01 00:00:00 UTC' {} +

rm -f "$out"
truncate -s 8M "$out"
E2FSPROGS_FAKE_TIME=1767225600 mke2fs -q -F -t ext4 -b 1024 -L sample \
  -U 5a1e0000-0000-4000-8000-00000000cafe -E hash_seed=5a1e0000-0000-4000-8000-000000000001 \
  -d "$tree" "$out"
echo "wrote $out"
