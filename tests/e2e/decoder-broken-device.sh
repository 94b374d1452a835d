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
# A decoder device that breaks the protocol is declared dead, and nothing
# the device held is freed while it could still write into it. The backend
# is restarted with a test fault (vhost-device-video --test-fault) each
# round and the driver reloaded:
#
# - bogus-used-id: while a stream decodes, the device returns a used id
#   outside the ring. The ring is then broken and nothing more comes back;
#   the driver must take that as death at once: the client's poll/DQBUF
#   returns within the bound with no buffer left queued. (Without it the
#   picture buffers, which may wait forever, are never failed; STREAMOFF
#   leaves them active in vb2 and the core keeps them in flight after they
#   are freed.)
# - queue-clear-early and queue-clear-error: QUEUE_CLEAR is answered (OK, or
#   refused) while the device keeps the queued buffers. STREAMOFF must kill
#   the device instead of handing those buffers back to vb2 as if the
#   device had let go of them.
#
# Every round ends with rmmod; a last round on a well-behaved backend
# decodes normally. Any kernel splat (vb2's "leaving buffer in active
# state" warning, a use-after-free on a poisoned object in debug-rt) fails
# the run.
. "$REPO/tests/clients/fault-lib.sh"
FAULT_CLIENT=$(fault_client)
NODE="virtio-video decoder"
STREAM="$TESTDATA/h264.h264"

# none_queued LOG: the fault client's report shows no buffer left queued.
none_queued() {
	grep '^buf [a-z]* [0-9]* flags=' "$1" | while read -r _ _ _ flags _; do
		flags=${flags#flags=}
		[ $((flags & 2)) -eq 0 ] || { echo "# still queued: $flags"; return 1; }
	done
}

# Round 1: a broken ring while pictures are in flight. The 150th used
# descriptor comes a few dozen pictures into the stream.
fault_restart_with bogus-used-id=150
fault_mark_log
log="$RESULTS/bogus-used-id.log"
"$FAULT_CLIENT" --device "$(fault_node "$NODE")" --decode "$STREAM" >"$log" 2>&1 &
fault_wait_exit $! 60
sed 's/^/#   /' "$log"
fault_check "bogus-used-id: the client ended by itself" [ "$fault_status" -ne 255 ]
fault_check "bogus-used-id: no buffer left queued" none_queued "$log"
fault_check "bogus-used-id: the driver declared the device dead" \
	fault_logged "virtqueue broken"

# Rounds 2 and 3: QUEUE_CLEAR answered while the device keeps buffers.
# v4l2-ctl decodes a few pictures and stops with buffers at the device.
for fault in queue-clear-early queue-clear-error; do
	fault_restart_with "$fault"
	fault_mark_log
	node=$(fault_node "$NODE")
	status=0
	timeout 120 v4l2-ctl -d "$node" --set-fmt-video-out=pixelformat=H264 \
		--stream-mmap --stream-out-mmap --stream-loop --stream-count 4 \
		--stream-from "$STREAM" --stream-to /dev/null \
		>"$RESULTS/$fault.log" 2>&1 || status=$?
	fault_check "$fault: v4l2-ctl ended by itself (status $status)" \
		[ "$status" -ne 124 ]
	fault_check "$fault: the driver declared the device dead" \
		fault_logged "after QUEUE_CLEAR"
done

# A well-behaved backend again: the same decode completes.
fault_restart_with ""
node=$(fault_node "$NODE")
fault_check "no fault: v4l2-ctl decodes" timeout 120 v4l2-ctl -d "$node" \
	--set-fmt-video-out=pixelformat=H264 --stream-mmap --stream-out-mmap \
	--stream-loop --stream-count 4 --stream-from "$STREAM" --stream-to /dev/null
fault_check "no fault: rmmod" rmmod virtio_video_m2m
fault_done
