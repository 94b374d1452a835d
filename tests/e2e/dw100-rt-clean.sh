#!/bin/sh
# machine: imx8mp-evk
# kernels: debug-rt debian-rt
# dw100: fixed
# data: dewarp
# timeout: 600
# expect: pass
#
# The stream of dw100-rt-splat.sh through the fixed driver (the job finishes
# in a threaded handler), ten times in one boot, each bit-exact. On the debug
# kernel lockdep and DEBUG_ATOMIC_SLEEP check every lock the handlers take,
# on every interrupt, so one boot sees what ten would; any report fails the
# run. The hard half disables the AXI master at once, so the model's bus
# timeout (its default period) never trips: no "Interrupt error" either.
. "$REPO/tests/clients/dewarp-lib.sh"
i=1
while [ "$i" -le 10 ]; do
	dw_v4l2_stream "stream $i" || true
	i=$((i + 1))
done
errors=$(dw_interrupt_errors)
if [ "$errors" -eq 0 ]; then
	echo "ok - no interrupt error in 60 frames"
else
	echo "not ok - $errors interrupt error(s):"
	dmesg | grep 'dw100.*Interrupt error' | sed 's/^/#   /'
	dw_failures=$((dw_failures + 1))
fi
dw_done
