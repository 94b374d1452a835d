#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m offer_av1=0
# data: compliance
# timeout: 300
# expect: pass
#
# v4l2-compliance, streaming a real H.264 stream through the decoder node:
# no failure, no warning. The node offers no AV1 here: v4l2-compliance up to
# 1.32 does not know the AV01 fourcc and would not test it as a decoder.
node=
for d in /sys/class/video4linux/video*; do
	case "$(cat "$d/name")" in
	"virtio-video decoder"*) node=/dev/${d##*/} ;;
	esac
done
[ -n "$node" ] || { echo "not ok - no virtio-video decoder node"; exit 1; }

v4l2-compliance -d "$node" -s --stream-from-hdr="$TESTDATA/h264.hdr" \
	>"$RESULTS/compliance.txt" 2>&1 || true
cat "$RESULTS/compliance.txt"

summary=$(grep '^Total for ' "$RESULTS/compliance.txt" | tail -n 1)
case "$summary" in
*", Failed: 0, Warnings: 0") echo "ok - $summary" ;;
*) echo "not ok - v4l2-compliance: ${summary:-no summary}"; exit 1 ;;
esac
