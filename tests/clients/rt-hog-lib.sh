# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
# The RT load of the latency tests (sourced, POSIX sh): rt-hog on every CPU
# at SCHED_FIFO 49, one below the driver's completion threads, spinning
# without a pause.

# rt_hogs_start HOG SECONDS: one HOG (the rt-hog client's path) per CPU, for
# at most SECONDS each.
rt_hogs_start() {
	rt_hogs=
	rt_hogs_cpu=0
	while [ "$rt_hogs_cpu" -lt "$(nproc)" ]; do
		"$1" --cpu "$rt_hogs_cpu" --priority 49 --busy-ms 1000 \
			--idle-ms 0 --seconds "$2" &
		rt_hogs="$rt_hogs $!"
		rt_hogs_cpu=$((rt_hogs_cpu + 1))
	done
}

# rt_hogs_stop: ends the hogs still running; rt_hogs_failed lists those
# that did not run (a hog that cannot get its priority ends at once with
# status 1).
rt_hogs_stop() {
	rt_hogs_failed=
	for rt_hogs_pid in $rt_hogs; do
		if kill -0 "$rt_hogs_pid" 2>/dev/null; then
			kill "$rt_hogs_pid" 2>/dev/null || true
			wait "$rt_hogs_pid" 2>/dev/null || true
		elif ! wait "$rt_hogs_pid"; then
			rt_hogs_failed="$rt_hogs_failed $rt_hogs_pid"
		fi
	done
}
