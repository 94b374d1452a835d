# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
# The body of the dw100-no-irq-* tests (sourced by them, POSIX sh): the
# emulated DW100 does every job but never raises its interrupt
# (fault-no-irq=on), as a device that stopped interrupting would.
#
# 1. Plain v4l2-ctl streams six frames. It gets no frame: after its 2 s
#    select timeout (or once the driver has failed its buffers) it stops and
#    exits; it must be gone within 30 s with status 0. A driver that waits
#    for the interrupt for ever leaves it in D state in its close, in
#    v4l2_m2m_cancel_job() via dw100_release(), through SIGKILL: its state
#    and kernel stack are printed, and the harness reports the task.
# 2. fault-client, which stops at the first failed buffer: its first
#    capture buffer must come back with V4L2_BUF_FLAG_ERROR, every buffer
#    back, STREAMOFF and close() prompt, within 30 s.
. "$REPO/tests/clients/fault-lib.sh"
. "$REPO/tests/clients/dewarp-lib.sh"

dw_v4l2_start 6 /tmp/no-irq.raw || exit 1
fault_wait_exit "$stream_pid" 30
fault_check "v4l2-ctl ended ${fault_ms} ms after it started, status $fault_status" \
	[ "$fault_status" -eq 0 ]
if [ "$fault_status" -ne 0 ]; then
	sed 's/^/#   /' /tmp/v4l2-ctl.log
	# The device is stuck with the job: nothing more can run.
	fault_done || exit 1
fi
fault_check "v4l2-ctl got no frame ($(dw_frames /tmp/no-irq.raw))" \
	[ "$(dw_frames /tmp/no-irq.raw)" -eq 0 ]

FAULT_CLIENT=$(fault_client)
node=$(dw_node)
"$FAULT_CLIENT" --device "$node" --frames 4 >"$RESULTS/fault-client.log" 2>&1 &
pid=$!
fault_wait_exit "$pid" 30
fault_check "fault-client: a buffer came back with ERROR, all back, ${fault_ms} ms" \
	[ "$fault_status" -eq 0 ]
sed 's/^/#   /' "$RESULTS/fault-client.log"
echo "# the driver's messages:"
dmesg | grep 'dw100 ' | sed 's/^/#   /'
fault_done
