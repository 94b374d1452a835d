#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: streams
# timeout: 1800
# expect: pass
#
# ffmpeg's V4L2 mem2mem decoders, unmodified, decode every test stream
# through the decoder node; each frame's MD5 (NV12, visible size) equals the
# host software decoder's. The resolution change has its own test.
. "$REPO/tests/clients/decode-lib.sh"
failures=0
for stream in h264.h264 hevc.hevc vp8.ivf vp9.ivf; do
	decode_compare "$stream" || failures=$((failures + 1))
done
[ "$failures" -eq 0 ]
