#!/usr/bin/env bash
# Node side, on the PXE-booted live system: save this node's disk as the golden image.
#
#   save-node.sh [DISK] [NAME]      e.g. save-node.sh /dev/sda node-golden
#
# Mounts the head node's share, saves every partition of DISK with rimage save-disk (ext
# filesystems through their bitmaps, swap only described, the data partition recorded as
# "re-create empty with the same UUID"), then unmounts. Set DATA_PART to the number of the
# data partition (default 4), HEAD to the NFS export (default head:/cluster).
set -euo pipefail
disk=${1:-/dev/sda}
name=${2:-node-golden}
head=${HEAD:-head:/cluster}
data_part=${DATA_PART:-4}

mkdir -p /cluster
mountpoint -q /cluster || mount -t nfs -o vers=4,hard "$head" /cluster
trap 'umount /cluster || true' EXIT

# The live system never mounts the node's disk, so every partition is clean and idle.
rimage save-disk --reformat "$data_part" --overwrite "$disk" "/cluster/images/$name"
rimage info "/cluster/images/$name/part2.rimg" || true
sync
