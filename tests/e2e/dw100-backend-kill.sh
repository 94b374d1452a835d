#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# machine: imx8mp-evk
# kernels: debug-rt debian-rt
# dw100: fixed
# data: dewarp
# timeout: 900
# expect: pass
#
# The daemon behind the emulated DW100 is killed (SIGKILL) while frames
# stream through the upstream dw100 driver, 5 times in one boot. Each time
# the model ends the job in flight with an AXI error, the driver hands the
# buffers back with V4L2_BUF_FLAG_ERROR, STREAMOFF and close() return, no
# task is left in D state; the daemon is restarted (QEMU reconnects) and the
# next stream is bit-exact again.
. "$REPO/tests/clients/fault-lib.sh"
. "$REPO/tests/clients/dewarp-lib.sh"
FAULT_CLIENT=$(fault_client)
DW_CLIENT=$(dw_client)
ROUNDS=5

kill_daemon() {
	host_do kill dw100
}

round=1
while [ "$round" -le "$ROUNDS" ]; do
	fault_round dw100 "round-$round" kill_daemon 10
	host_do start dw100
	# QEMU reconnects within its reconnect-ms; until then jobs fail.
	n=0
	while :; do
		if "$DW_CLIENT" --src NV12:640x480 --dst NV12:640x480 \
			--map "$TESTDATA/rotate-640x480.map" --in "$TESTDATA/big-NV12.raw" \
			--out /tmp/out.raw >/tmp/dw-client.log 2>&1; then
			break
		fi
		n=$((n + 1))
		if [ "$n" -ge 20 ]; then
			echo "# no good stream 10 s after the restart:"
			sed 's/^/#   /' /tmp/dw-client.log
			break
		fi
		sleep 0.5
	done
	dw_same "round $round: after the restart the stream is exact" \
		"$TESTDATA/rotate-NV12-NV12.raw" /tmp/out.raw
	round=$((round + 1))
done
fault_done
if [ "$dw_failures" -ne 0 ]; then
	echo "# $dw_failures exactness check(s) failed"
	exit 1
fi
