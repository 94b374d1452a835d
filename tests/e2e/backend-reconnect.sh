#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: patched
# module: virtio_video_m2m revive_on_open=1
# data: streams
# timeout: 600
# expect: pass
#
# Backend restart in one boot (patched QEMU reconnects, the driver revives
# the device on the next open): the backend is killed mid-decode; the decode
# fails within the watchdog bound; a decode started while no backend runs
# fails too instead of hanging; the backend is restarted and the guest
# decodes bit-exact again, with the same driver instance.
. "$REPO/tests/clients/fault-lib.sh"
. "$REPO/tests/clients/decode-lib.sh"
BOUND_MS=5000

fault_check "bit-exact before the kill" decode_compare small.h264

progress=/tmp/progress
ffmpeg -hide_banner -loglevel warning -nostdin -xerror -stream_loop -1 \
	-c:v h264_v4l2m2m -i "$TESTDATA/h264.h264" -f null - \
	-progress "$progress" >"$RESULTS/ffmpeg-killed.log" 2>&1 &
pid=$!
n=0
until grep -qs '^frame=[1-9]' "$progress"; do
	n=$((n + 1))
	[ "$n" -le 600 ] || break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
host_do kill decoder

# In the window before the restart, a new consumer must not hang either.
ffmpeg -hide_banner -loglevel error -nostdin -xerror -c:v h264_v4l2m2m \
	-i "$TESTDATA/small.h264" -f null - >"$RESULTS/ffmpeg-window.log" 2>&1 &
window=$!

fault_wait_exit "$pid" 30
# 126 and 127: ffmpeg did not run at all, which proves nothing.
fault_check "the decode failed (status $fault_status) ${fault_ms} ms after the kill" \
	[ "$fault_status" -ne 0 -a "$fault_status" -ne 255 -a "$fault_status" -ne 126 -a "$fault_status" -ne 127 ]
fault_check "within $BOUND_MS ms" [ "$fault_ms" -lt "$BOUND_MS" ]
fault_wait_exit "$window" 30
fault_check "a decode started while the backend was dead failed (status $fault_status)" \
	[ "$fault_status" -ne 0 -a "$fault_status" -ne 255 -a "$fault_status" -ne 126 -a "$fault_status" -ne 127 ]

fault_check "backend restarted" host_do start decoder
fault_check "the decoder opens again" fault_wait_node "virtio-video decoder" 30
fault_check "bit-exact after the restart: small" decode_compare small.h264
fault_check "bit-exact after the restart: h264" decode_compare h264.h264
dmesg | grep -i 'virtio_video\|vvm\|backend' | sed 's/^/# /' | tail -n 20
fault_done
