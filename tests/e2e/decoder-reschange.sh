#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: streams
# timeout: 600
# expect: pass
#
# A mid-stream resolution change (640x360 to 1280x720).
#
# The order a client sees it in: with CAPTURE set up for the first size and
# the whole stream queued, the 10 pictures before the change are dequeued
# before the source-change event is pending (FFmpeg and GStreamer handle a
# pending event first and drop pictures still in the old buffers), then all
# 20 pictures come out. Then through ffmpeg's h264_v4l2m2m: every frame on
# both sides of the change matches the host software decoder.
. "$REPO/tests/clients/decode-lib.sh"
node=$(decoder_node) || { echo "not ok - no decoder node"; exit 1; }
client=$(client_path reschange-order) || { echo "not ok - no test client"; exit 1; }
failures=0
"$client" "$node" "$TESTDATA/reschange.h264" 640 360 10 20 || failures=$((failures + 1))
decode_compare reschange.h264 || failures=$((failures + 1))
[ "$failures" -eq 0 ]
