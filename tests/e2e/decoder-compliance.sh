#!/bin/sh
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: streams
# timeout: 300
# expect: pass
# todo: all v4l2-compliance 1.30 fails the MIN_BUFFERS_FOR_CAPTURE event check and S_FMT xfer_func propagation, and its decoder streaming test stalls after 3 frames
#
# v4l2-compliance, streaming a real H.264 stream through the decoder node:
# no failure, no warning.
node=
for d in /sys/class/video4linux/video*; do
	case "$(cat "$d/name")" in
	"virtio-video decoder"*) node=/dev/${d##*/} ;;
	esac
done
[ -n "$node" ] || { echo "not ok - no virtio-video decoder node"; exit 1; }

v4l2-compliance -d "$node" -s --stream-from="$TESTDATA/small.h264" \
	>"$RESULTS/compliance.txt" 2>&1 || true
cat "$RESULTS/compliance.txt"

summary=$(grep '^Total for ' "$RESULTS/compliance.txt" | tail -n 1)
case "$summary" in
*", Failed: 0, Warnings: 0") echo "ok - $summary" ;;
*) echo "not ok - v4l2-compliance: ${summary:-no summary}"; exit 1 ;;
esac
