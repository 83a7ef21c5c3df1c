#!/usr/bin/env bash
# Node side: receive the multicast disk stream and restore it as it arrives.
#
#   multicast-receive.sh [DISK] [IFACE]   e.g. multicast-receive.sh /dev/sda eth0
#
# Same rendezvous address and port base as the sender. rimage restore-disk - checks the
# manifest against this disk before writing anything, writes each partition as its image
# arrives (every chunk checked before it is written), re-creates swap and empty filesystems with
# their old UUIDs and runs the post-restore command. If the stream breaks, it exits non-zero and
# names the partitions that are complete and those that are not: this node is not restored.
set -euo pipefail
disk=${1:-/dev/sda}
iface=${2:-eth0}

udp-receiver --interface "$iface" \
  --mcast-rdv-address "${RDV:-239.1.1.1}" --portbase "${PORTBASE:-9200}" --nokbd |
  rimage restore-disk - "$disk" --post-restore "${POST_RESTORE:-true}"
