#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
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
# fails; from then on the device is known dead and every open (so every new
# decode) fails at once with EIO, instead of each waiting a period again.
# The times are the open() call's own, measured by the fault client.
# Nothing is left in D state and rmmod succeeds.
. "$REPO/tests/clients/fault-lib.sh"
FAULT_CLIENT=$(fault_client)
WATCHDOG_MS=2000

# try_decode N: start a decode with the fault client; sets open_errno and
# open_ms from its report of the open() call.
try_decode() {
	"$FAULT_CLIENT" --device "$node" --decode "$TESTDATA/small.h264" \
		--frames 1 >"$RESULTS/decode-$1.log" 2>&1 || true
	line=$(grep '^call open ' "$RESULTS/decode-$1.log" || echo "call open none")
	open_errno=$(echo "$line" | sed -n 's/.* errno=\([0-9]*\) .*/\1/p')
	open_ms=$(echo "$line" | sed -n 's/.* ms=\([0-9]*\)$/\1/p')
	echo "# decode $1: $line"
}

node=$(fault_node "virtio-video decoder")
"$FAULT_CLIENT" --device "$node" --decode "$TESTDATA/small.h264" --frames 2 \
	>"$RESULTS/decode-0.log" 2>&1 && status=0 || status=$?
fault_check "a decode runs before the kill (fault-client status $status)" [ "$status" -eq 2 ]
host_do kill decoder

# The first open sends STREAM_CREATE, which nobody answers.
try_decode 1
fault_check "first open after the kill: ETIMEDOUT (110), got '${open_errno:-}'" \
	[ "${open_errno:-0}" -eq 110 ]
fault_check "after one watchdog period: ${open_ms:-?} ms" \
	[ "${open_ms:-0}" -ge "$WATCHDOG_MS" -a "${open_ms:-99999}" -lt $((WATCHDOG_MS + 2000)) ]

# Known dead: every further open fails at once.
for i in 2 3 4; do
	try_decode "$i"
	fault_check "open $i: EIO (5), got '${open_errno:-}'" [ "${open_errno:-0}" -eq 5 ]
	fault_check "open $i at once: ${open_ms:-?} ms" [ "${open_ms:-99999}" -lt 100 ]
done

fault_check "rmmod succeeds" rmmod virtio_video_m2m
fault_done
