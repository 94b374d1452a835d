# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
# The body of dw100-rt-clean.sh and the dw100-bus-timeout-* tests
# (sourced, POSIX sh): dw_v4l2_stream ten times (60 frames, each bit-exact),
# then how many of the driver's jobs (its interrupts) came with the DW100's
# bus timeout bit (INT_ERR_TIME_OUT, "Interrupt error: 0x1"). The model's
# counter expires when the AXI master stays enabled and idle for
# bus-timeout-us after a frame, i.e. when the driver has not disabled the
# bus by then. Any other interrupt error, or the job watchdog firing, fails.
# A `measure:` line gives the counts (cargo xtask tally repeats it).
#
# Set before sourcing:
#   timeouts_expected  some (at least one job must show it) or none
#   rt_load            on: the interrupt goes to CPU 1, where rt-hog runs at
#                      SCHED_FIFO 60 (above the interrupt threads' 50) in
#                      400 ms bursts 5 ms apart, and the stream runs on
#                      CPU 0; off: no load
. "$REPO/tests/clients/dewarp-lib.sh"

# dw100_interrupts: the DW100's line of /proc/interrupts (the driver names
# it after its device), summed over the CPUs.
dw100_interrupts() {
	awk '/32e30000\.dwe/ { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break; print n }' \
		/proc/interrupts
}

irq=$(awk -F: '/32e30000\.dwe/ { gsub(/ /, "", $1); print $1 }' /proc/interrupts)
# shellcheck disable=SC2154 # set by the test that sources this
if [ "$rt_load" = on ]; then
	suffix=
	[ "$(uname -m)" = aarch64 ] && suffix=.aarch64
	echo 1 >"/proc/irq/$irq/smp_affinity_list"
	taskset -p 1 $$ >/dev/null
	"$REPO/tests/clients/rt-hog$suffix" --cpu 1 --priority 60 \
		--busy-ms 400 --idle-ms 5 --seconds 600 &
	hog=$!
	echo "# interrupt $irq on CPU $(cat "/proc/irq/$irq/effective_affinity_list"), rt-hog on CPU 1"
fi
before=$(dw100_interrupts)
i=1
while [ "$i" -le 10 ]; do
	dw_v4l2_stream "stream $i" || true
	i=$((i + 1))
done
jobs=$(($(dw100_interrupts) - before))
[ "$rt_load" = on ] && kill "$hog"
timeouts=$(dmesg | grep -c 'dw100.*Interrupt error: 0x1$' || true)
others=$(dmesg | grep 'dw100.*Interrupt error' | grep -vc 'Interrupt error: 0x1$' || true)
echo "measure: $timeouts of $jobs jobs with INT_ERR_TIME_OUT, $others other interrupt errors"
# shellcheck disable=SC2154 # set by the test that sources this
case $timeouts_expected in
some) [ "$timeouts" -gt 0 ] && timeouts_ok=yes ;;
none) [ "$timeouts" -eq 0 ] && timeouts_ok=yes ;;
esac
if [ "${timeouts_ok:-no}" = yes ]; then
	echo "ok - bus timeouts in $timeouts of $jobs jobs, $timeouts_expected expected"
else
	echo "not ok - bus timeouts in $timeouts of $jobs jobs, $timeouts_expected expected"
	dw_failures=$((dw_failures + 1))
fi
[ "$others" -eq 0 ] || {
	echo "not ok - $others other interrupt errors:"
	dmesg | grep 'dw100.*Interrupt error' | grep -v 'Interrupt error: 0x1$' | sed 's/^/#   /'
	dw_failures=$((dw_failures + 1))
}
if dmesg | grep -q 'dw100.*No interrupt within'; then
	echo "not ok - the job watchdog fired:"
	dmesg | grep 'dw100.*No interrupt within' | sed 's/^/#   /'
	dw_failures=$((dw_failures + 1))
fi
dw_done
