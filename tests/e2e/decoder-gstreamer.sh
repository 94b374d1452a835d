#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: streams
# timeout: 900
# expect: pass
#
# GStreamer's V4L2 stateful decoders (v4l2h264dec, v4l2h265dec, v4l2vp8dec,
# v4l2vp9dec), unmodified, decode through the decoder node (320x240
# streams: GStreamer under TCG is slow); every frame matches the host
# software decoder. videocodectestsink writes the visible frames without
# the buffers' padding, as I420. Debian's kernel only: under the debug
# kernel each gst-launch-1.0 took minutes (13 for the test); the driver
# paths it uses run there in decoder-bitexact, -reschange and -dmabuf.
. "$REPO/tests/clients/decode-lib.sh"
export GST_REGISTRY="$RESULTS/gst-registry.bin"

# gst_compare STREAM PARSER ELEMENT
gst_compare() {
	stream=$1 parser=$2 element=$3
	name=${stream%.*}
	if ! gst-inspect-1.0 "$element" >"$RESULTS/$name-inspect.txt" 2>&1; then
		echo "not ok - $name: GStreamer has no $element for the node"
		return 1
	fi
	# shellcheck disable=SC2086 # PARSER is a pipeline fragment
	if ! timeout 300 gst-launch-1.0 -q filesrc location="$TESTDATA/$stream" ! \
		$parser ! "$element" ! video/x-raw,format=NV12 ! \
		videocodectestsink location="/tmp/$name.yuv" \
		>"$RESULTS/$name-gst.log" 2>&1; then
		cat "$RESULTS/$name-gst.log"
		echo "not ok - $name: gst-launch-1.0 failed"
		return 1
	fi
	compare_raw_frames "$name" "/tmp/$name.yuv" yuv420p "$(stream_size "$stream")" ||
		{ cat "$RESULTS/$name-gst.log"; return 1; }
	# GStreamer warns, and goes on, when frames never came back.
	if grep -q WARNING "$RESULTS/$name-gst.log"; then
		cat "$RESULTS/$name-gst.log"
		echo "not ok - $name: GStreamer warned"
		return 1
	fi
}

failures=0
gst_compare small.h264 h264parse v4l2h264dec || failures=$((failures + 1))
gst_compare small-hevc.hevc h265parse v4l2h265dec || failures=$((failures + 1))
gst_compare small-vp8.ivf ivfparse v4l2vp8dec || failures=$((failures + 1))
gst_compare small-vp9.ivf "ivfparse ! vp9parse" v4l2vp9dec || failures=$((failures + 1))
[ "$failures" -eq 0 ]
