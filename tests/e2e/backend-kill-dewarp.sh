#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: dewarper
# qemu: patched
# module: virtio_video_m2m
# timeout: 600
# expect: pass
#
# The dewarper's backend is killed (SIGKILL) while frames stream, 20 times
# in one boot. Each time the blocked DQBUF must fail within the watchdog
# bound, every buffer the driver held must come back with
# V4L2_BUF_FLAG_ERROR, STREAMOFF and close() must return, no task may be
# left in D state, and rmmod of the driver must succeed; then the backend is
# restarted (QEMU reconnects), the driver loaded again, and the next round
# runs on a working device.
. "$REPO/tests/clients/fault-lib.sh"
FAULT_CLIENT=$(fault_client)
ROUNDS=20

kill_backend() {
	host_do kill dewarper
}

round=1
while [ "$round" -le "$ROUNDS" ]; do
	if ! fault_wait_node dw100 30; then
		fault_check "round $round: a working dewarper node" false
		break
	fi
	# Watchdog 2 s, plus TCG slack.
	fault_round dw100 "round-$round" kill_backend 5
	host_do start dewarper
	fault_check "round $round: rmmod and insmod" fault_reload
	round=$((round + 1))
done
fault_done
