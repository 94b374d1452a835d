#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: dewarper
# qemu: patched
# module: virtio_video_m2m
# data: dewarp
# timeout: 600
# expect: pass
#
# A slow but working device is not declared dead. The backend is restarted
# with every job delayed by 500 ms (vhost-device-video --test-fault
# slow=500; it runs two jobs at once) and four clients stream at the same
# time, four frames in flight each: the last of the 16 jobs queued at the
# backend waits about 4 s, twice the watchdog period (timeout_ms, 2 s),
# while the device answers a job every 250 ms or so. The watchdog must
# measure the device's silence, not the time a job queues: every frame
# comes back unchanged (identity map) and the driver never logs a death.
. "$REPO/tests/clients/fault-lib.sh"
. "$REPO/tests/clients/dewarp-lib.sh"
DW_CLIENT=$(dw_client)
CLIENTS=4
FRAMES=12

host_do kill dewarper
host_do start-faulty dewarper slow=500
fault_check "rmmod and insmod" fault_reload
fault_check "a working dewarper node" fault_wait_node dw100 30

frame="$TESTDATA/src-NV16.raw"
: >/tmp/frames.raw
i=0
while [ "$i" -lt "$FRAMES" ]; do
	cat "$frame" >>/tmp/frames.raw
	i=$((i + 1))
done

echo "virtio_video_m2m: slow device marker" >/dev/kmsg
pids=
c=1
while [ "$c" -le "$CLIENTS" ]; do
	"$DW_CLIENT" --src NV16:320x240 --dst NV16:320x240 --in /tmp/frames.raw \
		--out "/tmp/out-$c.raw" >"$RESULTS/client-$c.log" 2>&1 &
	pids="$pids $!"
	c=$((c + 1))
done
c=1
for pid in $pids; do
	status=0
	wait "$pid" || status=$?
	fault_check "client $c: exit status $status" [ "$status" -eq 0 ]
	[ "$status" -eq 0 ] || sed 's/^/#   /' "$RESULTS/client-$c.log"
	fault_check "client $c: every frame unchanged" cmp -s /tmp/frames.raw "/tmp/out-$c.raw"
	c=$((c + 1))
done

no_death() {
	! dmesg | sed -n '/slow device marker/,$p' | grep -E "marked dead|no answer within"
}
fault_check "the device was never declared dead" no_death
fault_check "rmmod" rmmod virtio_video_m2m
fault_done
