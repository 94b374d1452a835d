#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debian-rt debug-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: streams
# timeout: 1200
# expect: pass
#
# The VM is stopped and continued over QMP (`host_do pause 2`) while
# ffmpeg's V4L2 decoder decodes through the node, three times per stream:
# QEMU stops every ring of the device (GET_VRING_BASE) and starts the same
# rings again. The backend keeps its streams across the stop and writes
# nothing while stopped, so each decode must finish bit-exact.
. "$REPO/tests/clients/decode-lib.sh"
. "$REPO/tests/clients/host-lib.sh"
failures=0
for stream in h264.h264 vp9.ivf; do
	name=${stream%.*}
	decode_compare "$stream" >"$RESULTS/$name.verdict" &
	decoding=$!
	# ffmpeg takes a few seconds to start under TCG; a stream takes about
	# 30 s. The pauses fall while pictures are being decoded, with buffers
	# and commands in flight on the device.
	paused=0
	while [ "$paused" -lt 3 ]; do
		sleep 4
		kill -0 "$decoding" 2>/dev/null || break
		host_do pause 2 || failures=$((failures + 1))
		paused=$((paused + 1))
	done
	wait "$decoding" || failures=$((failures + 1))
	cat "$RESULTS/$name.verdict"
	if [ "$paused" -eq 0 ]; then
		echo "not ok - $name: the decode ended before the first pause"
		failures=$((failures + 1))
	else
		echo "ok - $name: $paused pauses mid-decode"
	fi
done
[ "$failures" -eq 0 ]
