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
	decode_compare "$stream" >"$RESULTS/${stream%.*}.verdict" &
	decoding=$!
	paused=0
	while [ "$paused" -lt 3 ]; do
		sleep 1
		kill -0 "$decoding" 2>/dev/null || break
		host_do pause 2 || failures=$((failures + 1))
		paused=$((paused + 1))
	done
	wait "$decoding" || failures=$((failures + 1))
	cat "$RESULTS/${stream%.*}.verdict"
	if [ "$paused" -eq 0 ]; then
		echo "not ok - ${stream%.*}: the decode ended before the first pause"
		failures=$((failures + 1))
	else
		echo "ok - ${stream%.*}: $paused pauses mid-decode"
	fi
done
[ "$failures" -eq 0 ]
