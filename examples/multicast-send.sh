#!/usr/bin/env bash
# Head node: multicast one golden disk to a room of nodes with udpcast, sending each byte once.
#
#   multicast-send.sh NAME RECEIVERS [IFACE]   e.g. multicast-send.sh node-golden 40 eth1
#
# rimage writes the saved disk directory as one disk stream (manifest, boot area, each partition
# image); udp-sender multicasts it. Start this first, then boot the nodes into multicast-receive.sh.
#
# The udpcast options that matter:
#   --min-receivers N      start as soon as N receivers have joined ...
#   --max-wait SECONDS     ... or after this long with fewer (those that joined are served)
#   --max-bitrate RATE     leave room on the link for everything else (e.g. 600m on 1 GbE)
#   --mcast-rdv-address    rendezvous group; the default 224.0.0.1 does not get through some
#   --portbase             switches and network namespaces: set both, identically on each side
#   --nokbd                no "press any key" prompt: the sender runs unattended
# A receiver that dies is dropped by the sender; the others carry on. rimage on each node
# checks every record and chunk as it arrives, so a node whose stream broke exits non-zero and
# reports which partitions are complete: re-run it for that node (or restore it over HTTP).
set -euo pipefail
name=${1:?usage: multicast-send.sh NAME RECEIVERS [IFACE]}
receivers=${2:?usage: multicast-send.sh NAME RECEIVERS [IFACE]}
iface=${3:-eth0}
images=${IMAGES:-/cluster/images}

rimage verify "$images/$name" # the whole saved disk, before 40 nodes wait on it
rimage send "$images/$name" |
  udp-sender --interface "$iface" \
    --mcast-rdv-address "${RDV:-239.1.1.1}" --portbase "${PORTBASE:-9200}" \
    --min-receivers "$receivers" --max-wait "${MAX_WAIT:-300}" \
    --max-bitrate "${MAX_BITRATE:-600m}" --nokbd
