#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: av1
# timeout: 240
# expect: pass
#
# AV1 through the decoder node's AV01 format: v4l2-ctl sends one temporal
# unit per OUTPUT buffer and writes the decoded CAPTURE frames; every frame
# (NV12, visible size) matches the host software decoder. No unmodified AV1
# V4L2 decoder client exists in the guest (FFmpeg 5.1 has no av1_v4l2m2m).
. "$REPO/tests/clients/decode-lib.sh"
node=$(decoder_node) || { echo "not ok - no decoder node"; exit 1; }

# Once the file is sent v4l2-ctl gives a decoder half a second per event,
# too little under TCG: it loops over the stream instead (which restarts at
# a key frame) and stops after the first pass's pictures.
frames=$(wc -l <"$TESTDATA/av1.md5")
timeout 200 v4l2-ctl -d "$node" --set-fmt-video-out=pixelformat=AV01 \
	--stream-mmap --stream-out-mmap --stream-loop --stream-count "$frames" \
	--stream-from-hdr "$TESTDATA/av1.hdr" --stream-to /tmp/av1.nv12 \
	>"$RESULTS/v4l2-ctl.log" 2>&1 ||
	{ cat "$RESULTS/v4l2-ctl.log"; echo "not ok - v4l2-ctl failed"; exit 1; }
cat "$RESULTS/v4l2-ctl.log"
compare_raw_frames av1 /tmp/av1.nv12 nv12 "$(stream_size av1.obu)"
