#!/bin/sh
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: streams
# timeout: 300
# expect: pass
#
# Stock QEMU's generic device when the backend dies: the guest gets no
# signal, so the first command after the death waits out the watchdog and
# fails; from then on the device is known dead and every open and every
# decode fails at once, well under the watchdog period, instead of each
# waiting it out. Nothing is left in D state and rmmod succeeds.
. "$REPO/tests/clients/fault-lib.sh"
WATCHDOG_MS=2000

node=$(fault_node "virtio-video decoder")
fault_check "the decoder works before the kill" v4l2-ctl -d "$node" --info
host_do kill decoder

# The first open sends STREAM_CREATE, which nobody answers.
start=$(now_ms)
v4l2-ctl -d "$node" --info >"$RESULTS/open-1.log" 2>&1 && status=0 || status=$?
ms=$(($(now_ms) - start))
fault_check "first open after the kill failed (status $status) after $ms ms" [ "$status" -ne 0 ]
fault_check "first open ended within one watchdog period (plus slack)" [ "$ms" -lt $((WATCHDOG_MS + 2000)) ]
grep -q 'ETIMEDOUT\|timed out\|Connection timed out' "$RESULTS/open-1.log" ||
	sed 's/^/# open-1: /' "$RESULTS/open-1.log"

# Known dead: each further open fails at once with EIO.
i=2
while [ "$i" -le 4 ]; do
	start=$(now_ms)
	v4l2-ctl -d "$node" --info >"$RESULTS/open-$i.log" 2>&1 && status=0 || status=$?
	ms=$(($(now_ms) - start))
	fault_check "open $i failed at once (status $status, $ms ms)" \
		[ "$status" -ne 0 -a "$ms" -lt $((WATCHDOG_MS / 2)) ]
	fault_check "open $i says EIO" grep -q 'Input/output error' "$RESULTS/open-$i.log"
	i=$((i + 1))
done

# A whole decode started now fails at once too.
start=$(now_ms)
ffmpeg -hide_banner -loglevel error -nostdin -xerror -c:v h264_v4l2m2m \
	-i "$TESTDATA/small.h264" -f null - >"$RESULTS/ffmpeg.log" 2>&1 && status=0 || status=$?
ms=$(($(now_ms) - start))
fault_check "a decode on the dead device failed (status $status) in $ms ms" [ "$status" -ne 0 ]
fault_check "without waiting out a watchdog period" [ "$ms" -lt "$WATCHDOG_MS" ]

fault_check "rmmod succeeds" rmmod virtio_video_m2m
fault_done
