#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: small-sizes
# timeout: 1200
# expect: pass
#
# ffmpeg's V4L2 mem2mem decoders, unmodified, decode H.264, HEVC, VP8 and
# VP9 streams at small and odd sizes with every picture kept (framemd5,
# -fps_mode passthrough): each picture's MD5 equals the host software
# decoder's, the first one included. FFmpeg sets up CAPTURE before the
# stream header is parsed, from the size it gives on OUTPUT; a driver whose
# CAPTURE format does not follow that size until the header makes it
# reallocate and lose the picture decoded meanwhile.
. "$REPO/tests/clients/decode-lib.sh"
failures=0
for stream in "$TESTDATA"/*.h264 "$TESTDATA"/*.hevc "$TESTDATA"/*.ivf; do
	decode_compare "${stream##*/}" || failures=$((failures + 1))
done
[ "$failures" -eq 0 ]
