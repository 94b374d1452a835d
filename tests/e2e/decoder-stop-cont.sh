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
# ffmpeg's V4L2 decoder decodes through the node, up to three times per
# stream: QEMU stops every ring of the device (GET_VRING_BASE) and starts
# the same rings again. The backend keeps its streams across the stop and
# writes nothing while stopped, so each decode must finish bit-exact.
. "$REPO/tests/clients/decode-lib.sh"
. "$REPO/tests/clients/host-lib.sh"

# first_picture NAME: wait (up to 120 s) until ffmpeg has written the
# first picture's line of $RESULTS/NAME.framemd5 (decode_compare flushes
# every line), or until the decode has ended.
first_picture() {
	waited=0
	while [ "$waited" -lt 600 ]; do
		grep -qv '^#' "$RESULTS/$1.framemd5" 2>/dev/null && return 0
		kill -0 "$decoding" 2>/dev/null || return 1
		sleep 0.2
		waited=$((waited + 1))
	done
	return 1
}

failures=0
for stream in h264.h264 vp9.ivf; do
	name=${stream%.*}
	rm -f "$RESULTS/$name.framemd5"
	decode_compare "$stream" >"$RESULTS/$name.verdict" &
	decoding=$!
	# The first pause comes as soon as a picture is out, so that it falls
	# mid-decode, with buffers and commands in flight on the device, however
	# fast the host is; the next ones half a second after each continue.
	paused=0
	if first_picture "$name"; then
		while [ "$paused" -lt 3 ]; do
			kill -0 "$decoding" 2>/dev/null || break
			host_do pause 2 || failures=$((failures + 1))
			paused=$((paused + 1))
			sleep 0.5
		done
	fi
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
