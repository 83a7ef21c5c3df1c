#!/usr/bin/env bash
# Node side, on the PXE-booted live system: re-image this node from a golden image.
#
#   restore-node.sh [DISK] [NAME]   e.g. restore-node.sh /dev/sda node-golden
#
# Mounts the head node's share and runs rimage restore-disk, which writes the partition table
# (kept when identical), restores / and /boot, re-creates swap and the data partition with
# their old UUIDs (so /etc/fstab still matches), checks every partition's identity, and then
# runs the post-restore fixes inside the restored root:
#   - rebuild the initramfs for this node's hardware (nodes have mixed boards);
#   - pin network interface names to eth0 (udev rule masked).
set -euo pipefail
disk=${1:-/dev/sda}
name=${2:-node-golden}
head=${HEAD:-head:/cluster}

mkdir -p /cluster
mountpoint -q /cluster || mount -t nfs -o vers=4,hard,ro "$head" /cluster
trap 'umount /cluster || true' EXIT

rimage verify "/cluster/images/$name/part2.rimg"
rimage restore-disk "/cluster/images/$name" "$disk" --post-restore '
  set -e
  mkdir -p "$RIMAGE_ROOT/etc/udev/rules.d"
  ln -sf /dev/null "$RIMAGE_ROOT/etc/udev/rules.d/80-net-name-slot.rules"
  for fs in proc sys dev; do mount --bind "/$fs" "$RIMAGE_ROOT/$fs"; done
  trap "umount $RIMAGE_ROOT/dev $RIMAGE_ROOT/sys $RIMAGE_ROOT/proc" EXIT
  chroot "$RIMAGE_ROOT" mkinitcpio -p linux
'
echo "restored $disk from $name; reboot when ready"
