#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: streams
# timeout: 600
# expect: pass
#
# A mid-stream resolution change (640x360 to 1280x720).
#
# The order a client sees it in: with CAPTURE set up for the first size and
# the whole stream queued, the 10 pictures before the change are dequeued
# before the source-change event is pending (FFmpeg and GStreamer handle a
# pending event first and drop pictures still in the old buffers), then all
# 20 pictures come out. Then through ffmpeg's h264_v4l2m2m: every frame on
# both sides of the change matches the host software decoder.
#
# Then under real-time load: a client at SCHED_FIFO 60 decodes the stream
# ROUNDS times (reschange-timing), first on an idle guest, then while
# rt-hog spins at SCHED_FIFO 49 on every CPU, and prints how long after
# the last old picture the source-change event came, idle and under load.
# The driver reads the new format and signals the event in a SCHED_FIFO 50
# thread of its own, so under load every change must come within
# MAX_CHANGE_MS and their mean within MEAN_CHANGE_MS (TCG's own stalls
# reach a few hundred ms now and then). In the system workqueue
# (SCHED_OTHER) a change waited for the fair server of its CPU, which lends
# ordinary tasks 50 ms after 950 ms of real-time load: from 0 to 950 ms,
# depending on where in that period it came.
. "$REPO/tests/clients/decode-lib.sh"
. "$REPO/tests/clients/host-lib.sh"
. "$REPO/tests/clients/rt-hog-lib.sh"
node=$(decoder_node) || { echo "not ok - no decoder node"; exit 1; }
client=$(client_path reschange-order) || { echo "not ok - no test client"; exit 1; }
timing=$(client_path reschange-timing) || { echo "not ok - no test client"; exit 1; }
hog=$(client_path rt-hog) || { echo "not ok - no test client"; exit 1; }
failures=0
"$client" "$node" "$TESTDATA/reschange.h264" 640 360 10 20 || failures=$((failures + 1))
decode_compare reschange.h264 || failures=$((failures + 1))

ROUNDS=10
MAX_CHANGE_MS=700
MEAN_CHANGE_MS=200
CPUS=$(nproc)
# On tmpfs: no file system round trip while the CPUs are hogged.
cp "$TESTDATA/reschange.h264" /tmp/reschange.h264

# timed NAME: ROUNDS decodes at SCHED_FIFO 60, their times in
# $RESULTS/NAME.log; sets timed_all to the changes in ms, timed_max to the
# longest and timed_mean to their mean (-1 without any).
timed() {
	if chrt -f 60 "$timing" "$node" /tmp/reschange.h264 640 360 20 "$ROUNDS" \
		>"$RESULTS/$1.log" 2>&1; then
		echo "ok - $1: $ROUNDS resolution changes, every picture"
	else
		echo "not ok - $1: $(grep -v '^round' "$RESULTS/$1.log" | head -n 1)"
		failures=$((failures + 1))
	fi
	timed_all=$(awk '/^round/ { printf "%s%d", sep, $4; sep = " " }' "$RESULTS/$1.log")
	read -r timed_max timed_mean <<EOF
$(awk 'BEGIN { m = -1 } /^round/ { n++; s += $4; if ($4 > m) m = $4 }
	END { printf "%d %d\n", m, n ? s / n : -1 }' "$RESULTS/$1.log")
EOF
}

start=$(now_ms)
timed idle
idle_ms=$(($(now_ms) - start))
idle_all=$timed_all

# Long enough for every round under load at the idle pace, plus the
# fair server's wait once a round; stopped once the rounds are over.
hog_s=$((idle_ms * 2 / 1000 + ROUNDS + 4))
[ "$hog_s" -le 40 ] || hog_s=40
rt_hogs_start "$hog" "$hog_s"
timed hog
rt_hogs_stop
for pid in $rt_hogs_failed; do
	echo "not ok - rt-hog $pid ran"
	failures=$((failures + 1))
done
echo "measure: last old picture to source-change event, ms per round; idle: $idle_all; under rt-hog FIFO 49 on $CPUS CPUs: $timed_all"
if [ "$timed_max" -ge 0 ] && [ "$timed_max" -lt "$MAX_CHANGE_MS" ] &&
	[ "$timed_mean" -lt "$MEAN_CHANGE_MS" ]; then
	echo "ok - under rt-hog: longest change $timed_max ms < $MAX_CHANGE_MS ms, mean $timed_mean ms < $MEAN_CHANGE_MS ms"
else
	echo "not ok - under rt-hog: longest change $timed_max ms (bound $MAX_CHANGE_MS), mean $timed_mean ms (bound $MEAN_CHANGE_MS)"
	failures=$((failures + 1))
fi
[ "$failures" -eq 0 ]
