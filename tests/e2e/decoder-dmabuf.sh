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
# CAPTURE buffers imported as DMABUF: v4l2-ctl decodes H.264 (640x360)
# through the decoder node into DMABUFs exported (VIDIOC_EXPBUF) by the
# CAPTURE queue of another open of the node, a separate stream whose buffers
# have its default size (640x480 NV12); every frame matches the host
# software decoder. (vim2m, the other exporter of the debug kernel, is not in
# Debian's.)
. "$REPO/tests/clients/decode-lib.sh"
node=$(decoder_node) || { echo "not ok - no decoder node"; exit 1; }

# v4l2-ctl fills whole OUTPUT buffers from the file, the first one
# completely: dense.h264 is larger than one (512 KiB). Once the file is
# sent it gives a decoder half a second per event, too little under TCG:
# it loops over the file instead and stops after the first pass's pictures.
frames=$(wc -l <"$TESTDATA/dense.md5")
timeout 600 v4l2-ctl -d "$node" --export-device "$node" \
	--set-fmt-video-out=pixelformat=H264 \
	--stream-out-mmap --stream-dmabuf --stream-loop --stream-count "$frames" \
	--stream-from "$TESTDATA/dense.h264" --stream-to /tmp/dense.nv12 \
	>"$RESULTS/v4l2-ctl.log" 2>&1 ||
	{ cat "$RESULTS/v4l2-ctl.log"; echo "not ok - v4l2-ctl failed"; exit 1; }
cat "$RESULTS/v4l2-ctl.log"
compare_raw_frames dense /tmp/dense.nv12 nv12 "$(stream_size dense.h264)"
