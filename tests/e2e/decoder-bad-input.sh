#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: streams
# timeout: 900
# expect: pass
#
# Truncated and corrupted H.264 streams end in decoded frames, error-flagged
# buffers or a clean error: never a hang (bounded by timeout) nor a splat
# (checked by the harness). The node still decodes a good stream afterwards.
failures=0
for name in truncated corrupt; do
	status=0
	timeout 300 ffmpeg -hide_banner -loglevel warning -nostdin \
		-c:v h264_v4l2m2m -i "$TESTDATA/$name.h264" -fps_mode passthrough -f framemd5 \
		"$RESULTS/$name.framemd5" >"$RESULTS/$name.log" 2>&1 || status=$?
	frames=$(grep -vc '^#' "$RESULTS/$name.framemd5" 2>/dev/null || true)
	if [ "$status" -eq 124 ]; then
		echo "not ok - $name: ffmpeg still running after 300 s"
		failures=$((failures + 1))
	elif [ "$status" -eq 126 ] || [ "$status" -eq 127 ]; then
		echo "not ok - $name: ffmpeg did not run (exit $status)"
		failures=$((failures + 1))
	else
		echo "ok - $name: ffmpeg exit $status, ${frames:-0} frames"
	fi
done

size=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height \
	-of csv=p=0:s=x "$TESTDATA/h264.h264")
timeout 300 ffmpeg -hide_banner -loglevel warning -nostdin -c:v h264_v4l2m2m \
	-i "$TESTDATA/h264.h264" -vf "crop=${size%x*}:${size#*x}:0:0,format=nv12" -fps_mode passthrough -f framemd5 - \
	2>"$RESULTS/good.log" | grep -v '^#' | awk -F', *' '{ print $NF }' \
	>"$RESULTS/good.md5"
if cmp -s "$TESTDATA/h264.md5" "$RESULTS/good.md5"; then
	echo "ok - good stream after bad ones: bit-exact"
else
	echo "not ok - good stream after bad ones"
	failures=$((failures + 1))
fi
[ "$failures" -eq 0 ]
