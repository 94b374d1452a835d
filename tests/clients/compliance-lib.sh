# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
# v4l2-compliance under a watchdog (sourced, POSIX sh).
#
# The tool's mem2mem streaming loop (captureBufs() in v4l2-test-buffers.cpp,
# v4l-utils 1.30 to at least 1.32) counts OUTPUT dequeues down in an unsigned
# counter and ends only in a poll round that both takes it to zero and
# reports the node readable. v4l2_m2m_poll() reports EPOLLOUT as soon as a
# job's OUTPUT buffer is done, before the driver marks its CAPTURE buffer
# done, so a round can see the OUTPUT buffer alone; if the next job also
# finishes before the next round's DQBUF, the counter wraps and the loop runs
# on for 2^32 frames. Its progress line then counts past the stream's end
# ("Frame #060" and on for the default 60 frames): that is the tool's race,
# not the device's, so such a run is killed and the tool run once more. A run
# that prints nothing for a while is hung: it is killed and fails.

# A streaming frame number this high is past the end of any of the tests'
# streams (`-s` streams 60 frames).
compliance_runaway_frame=1000
# Seconds without output that make a run hung: a whole passing run takes
# under a minute on the arm64 debug kernel under TCG, and the tool's output
# to a file, block-buffered, grows at least every 8 KiB.
compliance_stall_s=120
compliance_poll_s=2

# compliance_last_frame OUT: the last "Frame #N" progress number in OUT, or 0.
compliance_last_frame() {
	frame=$(tail -c 256 "$1" | tr '\r' '\n' |
		sed -n 's/.*: Frame #0*\([0-9][0-9]*\).*/\1/p' | tail -n 1)
	echo "${frame:-0}"
}

# compliance_last_test OUT: the last test v4l2-compliance reported in OUT.
compliance_last_test() {
	tr '\r' '\n' <"$1" | sed -n 's/^[[:space:]]*\(test .*\)/\1/p' | tail -n 1
}

# compliance_watch PID OUT: wait for the v4l2-compliance PID writing OUT;
# sets compliance_outcome to exited, or to runaway or stalled and kills it.
compliance_watch() {
	compliance_outcome=
	size=-1
	quiet_s=0
	while kill -0 "$1" 2>/dev/null; do
		if [ "$(compliance_last_frame "$2")" -ge "$compliance_runaway_frame" ]; then
			compliance_outcome=runaway
			break
		fi
		now=$(wc -c <"$2" | tr -d ' ')
		if [ "$now" -ne "$size" ]; then
			size=$now
			quiet_s=0
		elif [ "$quiet_s" -ge "$compliance_stall_s" ]; then
			compliance_outcome=stalled
			break
		fi
		sleep "$compliance_poll_s"
		quiet_s=$((quiet_s + compliance_poll_s))
	done
	if [ -n "$compliance_outcome" ]; then
		kill -KILL "$1" 2>/dev/null || true
	else
		compliance_outcome=exited
	fi
	wait "$1" || true
}

# compliance_run OUT ARGS...: v4l2-compliance ARGS with its output in OUT.
# Returns 0 when the tool ran to its end (judge its summary in OUT), 1 when
# it hung or ran away twice, with the reason at the end of OUT. The output
# of a first runaway run is kept as OUT.runaway.
compliance_run() {
	out=$1
	shift
	for attempt in 1 2; do
		: >"$out"
		v4l2-compliance "$@" >"$out" 2>&1 &
		compliance_watch $! "$out"
		case "$compliance_outcome" in
		exited)
			return 0
			;;
		stalled)
			printf '\ncompliance-lib: no output for %s s after "%s": killed\n' \
				"$compliance_stall_s" "$(compliance_last_test "$out")" >>"$out"
			return 1
			;;
		esac
		reason="a streaming frame counter reached $(compliance_last_frame "$out")"
		reason="$reason after \"$(compliance_last_test "$out")\", past its stream's end"
		if [ "$attempt" = 2 ]; then
			printf '\ncompliance-lib: %s, again: killed\n' "$reason" >>"$out"
			return 1
		fi
		mv "$out" "$out.runaway"
		echo "# v4l2-compliance: $reason (its m2m poll loop missed its" \
			"exit, see tests/clients/compliance-lib.sh): killed, running it once more"
	done
}
