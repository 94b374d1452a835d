#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The guest half of `cargo xtask bench decode`: decodes each stream in
# $BENCH_STREAMS through the virtio-video decoder with FFmpeg's V4L2 mem2mem
# decoder into memory (`-f null`: no conversion, nothing written) and prints
# `result NAME frames N wall_s SECONDS` by the guest's clock.
set -eu

for entry in h264:h264_v4l2m2m:h264.h264 vp9:vp9_v4l2m2m:vp9.ivf; do
	name=${entry%%:*}
	rest=${entry#*:}
	codec=${rest%%:*}
	file=${rest#*:}
	ffmpeg -hide_banner -nostdin -nostats -benchmark -c:v "$codec" \
		-i "$BENCH_STREAMS/$file" -progress pipe:1 -f null - \
		>/tmp/"$name".log 2>&1 || {
		echo "$name: $codec failed:"
		tail -n 20 /tmp/"$name".log
		exit 1
	}
	frames=$(sed -n 's/^frame=//p' /tmp/"$name".log | tail -n 1)
	wall=$(sed -n 's/.*rtime=\([0-9.]*\)s.*/\1/p' /tmp/"$name".log | tail -n 1)
	echo "result $name frames $frames wall_s $wall"
done
