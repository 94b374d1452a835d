#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# machine: imx8mp-evk
# kernels: debug-rt debian-rt
# dw100: fixed
# data: dewarp
# timeout: 600
# expect: pass
#
# dw100-backend-kill.sh with plain v4l2-ctl instead of the fault client. The
# daemon behind the emulated DW100 is killed while v4l2-ctl streams: the
# model ends the job in flight and every later one with an AXI error, the
# driver hands the buffers back with V4L2_BUF_FLAG_ERROR ("Interrupt error:
# 0x2", thousands a second: the kernel log wraps). v4l2-ctl takes error
# buffers back without counting or writing them and keeps streaming, never
# blocked:
# 1. the daemon restarted, the same v4l2-ctl gets the rest of its frames,
#    each a good one, and exits with status 0;
# 2. killed again, v4l2-ctl given SIGTERM while only error buffers come
#    exits within 5 s, its close does not hang;
# then, the daemon restarted, a new stream is bit-exact. No task is left in
# D state (the harness checks), the debug kernel reports nothing.
. "$REPO/tests/clients/fault-lib.sh"
. "$REPO/tests/clients/dewarp-lib.sh"
frame_size=$((320 * 240 * 3 / 2))

# wait_frames FILE N: up to 30 s for FILE to hold N frames.
wait_frames() {
	n=0
	while [ "$(dw_frames "$1")" -lt "$2" ]; do
		n=$((n + 1))
		[ "$n" -le 300 ] || return 1
		sleep 0.1
	done
}

# output_buffers: the output buffers v4l2-ctl has taken back so far (it
# prints '>' for each).
output_buffers() {
	tr -cd '>' </tmp/v4l2-ctl.log | wc -c
}

# errors_stream FILE NAME: the daemon is dead; v4l2-ctl ($stream_pid) must
# go on taking its buffers back, with no frame (the capture buffers come back
# with ERROR), and stay responsive.
errors_stream() {
	before=$(output_buffers)
	frames=$(dw_frames "$1")
	sleep 2
	after=$(output_buffers)
	fault_check "$2: buffers still come back with the daemon gone ($((after - before)) in 2 s)" \
		[ "$after" -gt "$before" ]
	fault_check "$2: no frame meanwhile" [ "$(dw_frames "$1")" -eq "$frames" ]
	fault_check "$2: the driver failed them: $(dmesg | grep 'dw100.*Interrupt error' | tail -n 1)" \
		[ "$(dw_interrupt_errors)" -gt 0 ]
	state=$(grep '^State:' "/proc/$stream_pid/status" 2>/dev/null || echo gone)
	streaming=false
	case "$state" in
	*"R ("* | *"S ("*) streaming=true ;;
	esac
	fault_check "$2: v4l2-ctl streams on ($state)" $streaming
}

# 1. Killed, restarted: the stream goes on to its end.
dw_v4l2_start 200 /tmp/kill.raw
wait_frames /tmp/kill.raw 4 || fault_check "frames flow" false
host_do kill dw100
errors_stream /tmp/kill.raw "round 1"
host_do start dw100
fault_wait_exit "$stream_pid" 60
fault_check "round 1: v4l2-ctl ended ${fault_ms} ms after the restart, status $fault_status" \
	[ "$fault_status" -eq 0 ]
fault_check "round 1: 200 frames ($(dw_frames /tmp/kill.raw))" \
	[ "$(dw_frames /tmp/kill.raw)" -eq 200 ]
# Error jobs consumed source frames too: each frame is one of the two.
dd if="$TESTDATA/down-NV12-NV12.raw" of=/tmp/ref0.raw bs="$frame_size" count=1 2>/dev/null
dd if="$TESTDATA/down-NV12-NV12.raw" of=/tmp/ref1.raw bs="$frame_size" skip=1 count=1 2>/dev/null
bad=0
i=0
while [ "$i" -lt "$(dw_frames /tmp/kill.raw)" ]; do
	dd if=/tmp/kill.raw of=/tmp/frame.raw bs="$frame_size" skip="$i" count=1 2>/dev/null
	cmp -s /tmp/frame.raw /tmp/ref0.raw || cmp -s /tmp/frame.raw /tmp/ref1.raw || bad=$((bad + 1))
	i=$((i + 1))
done
fault_check "round 1: every frame bit-exact ($bad differ)" [ "$bad" -eq 0 ]

# 2. Killed, then v4l2-ctl given up on.
dw_v4l2_start 100000 /tmp/kill.raw
wait_frames /tmp/kill.raw 4 || fault_check "round 2: frames flow" false
host_do kill dw100
errors_stream /tmp/kill.raw "round 2"
kill -TERM "$stream_pid"
fault_wait_exit "$stream_pid" 5
fault_check "round 2: v4l2-ctl gone ${fault_ms} ms after SIGTERM" [ "$fault_status" -ne 255 ]

host_do start dw100
# QEMU reconnects within its reconnect-ms; until then jobs fail.
sleep 1
dw_v4l2_stream "after the restart" || true
fault_failures=$((fault_failures + dw_failures))
fault_done
