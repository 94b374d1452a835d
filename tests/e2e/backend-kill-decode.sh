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
# The decoder's backend is killed (SIGKILL) while a stream decodes, 20 times
# in one boot. Each time the client's blocked poll()/DQBUF must return within
# the watchdog bound, no buffer may stay queued and every buffer the driver
# never handed back must be marked ERROR, STREAMOFF and close() must return,
# no task may be left in D state, and rmmod of the driver must succeed; then
# the backend is restarted (QEMU reconnects), the driver loaded again, and
# the next round runs on a working device.
. "$REPO/tests/clients/fault-lib.sh"
FAULT_CLIENT=$(fault_client)
ROUNDS=20

kill_backend() {
	host_do kill decoder
}

round=1
while [ "$round" -le "$ROUNDS" ]; do
	if ! fault_wait_node "virtio-video decoder" 30; then
		fault_check "round $round: a working decoder node" false
		break
	fi
	# Pictures alone in flight are checked by pings that have half the
	# watchdog period (2 s), so a death shows within 2 s; plus TCG slack.
	fault_round "virtio-video decoder" "round-$round" kill_backend 5 \
		--decode "$TESTDATA/h264.h264"
	host_do start decoder
	fault_check "round $round: rmmod and insmod" fault_reload
	round=$((round + 1))
done
fault_done
