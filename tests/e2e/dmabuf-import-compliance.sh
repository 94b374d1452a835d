#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder,dewarper
# qemu: patched
# module: virtio_video_m2m offer_av1=0
# data: compliance
# needs-config: CONFIG_VIDEO_VIVID
# timeout: 900
# expect: pass
#
# Both nodes import DMABUFs from another driver: v4l2-compliance's
# streaming tests in exporter mode (-s -e), with vivid's capture node as
# the exporter, on the dewarper and on the decoder (its H.264 stream framed
# for --stream-from-hdr). An importer must describe such buffers by their
# DMA addresses, never by the exporter's struct pages: on debug-rt,
# CONFIG_DMABUF_DEBUG scrambles the page pointers an importer sees, so a
# driver that reads sg_page() hands the device garbage addresses and the
# jobs fail. v4l2-compliance does not look at the buffers' ERROR flag, so
# the driver's log must show no failed job either. No failure and no
# warning may be reported.
. "$REPO/tests/clients/dewarp-lib.sh"
. "$REPO/tests/clients/decode-lib.sh"
. "$REPO/tests/clients/compliance-lib.sh"

modprobe vivid n_devs=1 node_types=0x1 ||
	{ echo "not ok - modprobe vivid"; exit 1; }
vivid=
for d in /sys/class/video4linux/video*; do
	case "$(cat "$d/name")" in
	vivid-000-vid-cap) vivid=/dev/${d##*/} ;;
	esac
done
[ -n "$vivid" ] || { echo "not ok - no vivid capture node"; exit 1; }
# Buffers large enough for any queue of both nodes' defaults.
v4l2-ctl -d "$vivid" --set-fmt-video=width=1920,height=1080,pixelformat=YUYV

failures=0
# compliance NAME NODE ARGS...: v4l2-compliance -s -e on NODE, judged by its
# summary line.
compliance() {
	name=$1
	node=$2
	shift 2
	compliance_run "$RESULTS/$name.txt" -d "$node" -s -e "$vivid" "$@" || true
	summary=$(grep '^Total for ' "$RESULTS/$name.txt" | tail -n 1)
	case "$summary" in
	*", Failed: 0, Warnings: 0")
		echo "ok - $name: $summary"
		;;
	*)
		grep -E "fail:|warn:|DMABUF" "$RESULTS/$name.txt" | sed 's/^/#   /'
		echo "not ok - $name: ${summary:-no summary}"
		failures=$((failures + 1))
		;;
	esac
}

echo "dmabuf-import-compliance: start" >/dev/kmsg
compliance dewarper "$(dw_node)"
failed_jobs=$(dmesg | sed -n '/dmabuf-import-compliance: start/,$p' |
	grep -cE 'virtio_video_m2m .*job [0-9]+' || true)
if [ "$failed_jobs" -eq 0 ]; then
	echo "ok - dewarper: no job failed"
else
	dmesg | grep -E 'virtio_video_m2m .*job [0-9]+' | head -n 5 | sed 's/^/#   /'
	echo "not ok - dewarper: $failed_jobs failed job(s) logged"
	failures=$((failures + 1))
fi
compliance decoder "$(decoder_node)" --stream-from-hdr="$TESTDATA/h264.hdr"
[ "$failures" -eq 0 ]
