#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: patched
# module: virtio_video_m2m
# data: streams
# timeout: 600
# expect: pass
#
# A decoder device whose answers a client cannot use: the backend is
# restarted with a test fault (vhost-device-video --test-fault) each round.
#
# A crop rectangle whose right edge wraps around 2^32 to inside the picture
# (bad-layout=crop-wrap) is outside the picture: G_SELECTION must give the
# full picture, not a rectangle starting 16 pixels left of it, and the
# decode stays bit-exact.
#
# A picture layout no V4L2 client could use (bad-layout=KIND) fails the
# stream with a clear message instead of handing the client gigabyte
# buffers or chroma planes where they are not:
#
# - huge-stride: lines so long that every picture takes about 3 GiB;
# - chroma-stride: NV12 chroma rows 64 bytes longer than the luma rows,
#   which a single-plane NV12 client cannot express.
#
# For each, FFmpeg's decode must end by itself with an error and the
# driver must log the refusal. The stream fails as under a device death:
# the fault client, which sets up CAPTURE before the stream starts (as
# FFmpeg does) so that picture buffers are at the device when the layout
# comes, must get every buffer back (ERROR), each before DQBUF fails with
# EIO; and the refusal is one line in the log.
#
# A stream error (stream-error=N: the device fails the stream for good at
# its Nth bitstream buffer and sends EVENT_ERROR) while the device lives on
# fails the stream the same way: every buffer back, one line in the log;
# then a new stream on the same device decodes bit-exact.
#
# A refused drain (drain-refused): no picture buffer will carry the EOS, so
# the driver ends the drain with an empty LAST buffer itself; FFmpeg, which
# drains at the end of its input, must end by itself.
#
# A drain a seek abandoned, ended late (drain-survives-clear: the device
# keeps the drain across QUEUE_CLEAR of the bitstream queue and puts its
# EOS on the first picture after the seek): no picture after the seek may
# be LAST; every picture comes, and a new drain ends with LAST
# (decoder-spec's seek-drain sequence).
#
# A last round on a well-behaved backend decodes bit-exact.
. "$REPO/tests/clients/fault-lib.sh"
. "$REPO/tests/clients/decode-lib.sh"
FAULT_CLIENT=$(fault_client)
STREAM="$TESTDATA/h264.h264"

# logged_once MESSAGE: since the last mark, the kernel logged MESSAGE and
# no other line about a stream.
logged_once() {
	lines=$(fault_since_mark | grep 'stream [0-9]*: ')
	echo "$lines" | sed 's/^/#   /'
	[ "$(echo "$lines" | grep -c .)" -eq 1 ] && echo "$lines" | grep -q "$1"
}

# every_buffer_back NAME [CLIENT-ARGS...]: the fault client decodes until
# the stream fails, then must get every buffer back (exit status 0).
every_buffer_back() {
	log="$RESULTS/$1.log"
	shift
	"$FAULT_CLIENT" --device "$(fault_node "virtio-video decoder")" \
		--decode "$STREAM" "$@" >"$log" 2>&1 &
	fault_wait_exit $! 60
	[ "$fault_status" -eq 0 ] || sed 's/^/#   /' "$log"
	[ "$fault_status" -eq 0 ]
}

# full_picture_selected NODE: the CAPTURE crop is the whole format.
full_picture_selected() {
	size=$(v4l2-ctl -d "$1" --get-fmt-video | sed -n 's|.*Width/Height *: *\([0-9]*\)/\([0-9]*\).*|\1 \2|p')
	selection=$(v4l2-ctl -d "$1" --get-selection target=crop)
	echo "# format ${size:-?}; ${selection#*: }"
	echo "$selection" | grep -q "Left 0, Top 0, Width ${size% *}, Height ${size#* },"
}

fault_restart_with bad-layout=crop-wrap
fault_check "crop-wrap: the crop is the full picture" \
	full_picture_selected "$(fault_node "virtio-video decoder")"
fault_check "crop-wrap: bit-exact" decode_compare small.h264

for kind in huge-stride chroma-stride; do
	fault_restart_with "bad-layout=$kind"
	fault_mark_log
	status=0
	timeout -s KILL 120 ffmpeg -hide_banner -loglevel warning -nostdin -xerror \
		-c:v h264_v4l2m2m -i "$TESTDATA/small.h264" \
		-f framemd5 "$RESULTS/$kind.framemd5" \
		>"$RESULTS/$kind.log" 2>&1 || status=$?
	sed 's/^/#   /' "$RESULTS/$kind.log" | tail -n 5
	# 126 and 127: ffmpeg did not run at all, which proves nothing.
	fault_check "$kind: the decode failed by itself (status $status)" \
		[ "$status" -ne 0 -a "$status" -ne 137 -a "$status" -ne 126 -a "$status" -ne 127 ]
	fault_check "$kind: the driver refused the layout" \
		fault_logged "invalid picture layout"
	fault_mark_log
	fault_check "$kind: every buffer back, then EIO" \
		every_buffer_back "$kind-client" --capture-first
	fault_check "$kind: the refusal is one line in the log" \
		logged_once "invalid picture layout"
done

fault_restart_with stream-error=20
fault_mark_log
fault_check "stream-error: every buffer back, then EIO" \
	every_buffer_back stream-error-client
fault_check "stream-error: one line in the log" \
	logged_once "reported a stream error"
fault_check "stream-error: the device lives on: a new stream bit-exact" \
	decode_compare small.h264

fault_restart_with drain-refused
fault_mark_log
status=0
timeout -s KILL 120 ffmpeg -hide_banner -loglevel warning -nostdin \
	-c:v h264_v4l2m2m -i "$TESTDATA/small.h264" -f framemd5 \
	"$RESULTS/drain-refused.framemd5" >"$RESULTS/drain-refused.log" 2>&1 ||
	status=$?
sed 's/^/#   /' "$RESULTS/drain-refused.log" | tail -n 5
fault_check "drain-refused: the decode ended by itself (status $status)" \
	[ "$status" -ne 137 -a "$status" -ne 126 -a "$status" -ne 127 ]
fault_check "drain-refused: the driver ended the drain" \
	fault_logged "refused a drain"

fault_restart_with drain-survives-clear
fault_check "drain-survives-clear: the late EOS ends nothing after the seek" \
	"$(client_path decoder-spec)" "$(fault_node "virtio-video decoder")" \
	"$TESTDATA/small.h264" 20 "$TESTDATA/reschange.h264" 640 360 10 20 \
	seek-drain

fault_restart_with ""
fault_check "no fault: bit-exact" decode_compare small.h264
fault_done
