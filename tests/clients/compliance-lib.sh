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
	compliance_frame=$(tail -c 256 "$1" | tr '\r' '\n' |
		sed -n 's/.*: Frame #0*\([0-9][0-9]*\).*/\1/p' | tail -n 1)
	echo "${compliance_frame:-0}"
}

# compliance_last_test OUT: the last test v4l2-compliance reported in OUT.
compliance_last_test() {
	tr '\r' '\n' <"$1" | sed -n 's/^[[:space:]]*\(test .*\)/\1/p' | tail -n 1
}

# compliance_watch PID OUT: wait for the v4l2-compliance PID writing OUT;
# sets compliance_outcome to exited, or to runaway or stalled and kills it.
compliance_watch() {
	compliance_outcome=
	compliance_size=-1
	compliance_quiet_s=0
	while kill -0 "$1" 2>/dev/null; do
		if [ "$(compliance_last_frame "$2")" -ge "$compliance_runaway_frame" ]; then
			compliance_outcome=runaway
			break
		fi
		compliance_now=$(wc -c <"$2" | tr -d ' ')
		if [ "$compliance_now" -ne "$compliance_size" ]; then
			compliance_size=$compliance_now
			compliance_quiet_s=0
		elif [ "$compliance_quiet_s" -ge "$compliance_stall_s" ]; then
			compliance_outcome=stalled
			break
		fi
		sleep "$compliance_poll_s"
		compliance_quiet_s=$((compliance_quiet_s + compliance_poll_s))
	done
	if [ -z "$compliance_outcome" ]; then
		compliance_outcome=exited
		wait "$1" || true
		return
	fi
	kill -KILL "$1" 2>/dev/null || true
	# A hung tool may be stuck in the kernel past SIGKILL (a job that never
	# finishes blocks its release): only a runaway one, whose device works,
	# is waited for.
	[ "$compliance_outcome" = stalled ] || wait "$1" || true
}

# compliance_run OUT ARGS...: v4l2-compliance ARGS with its output in OUT.
# Returns 0 when the tool ran to its end (judge its summary in OUT), 1 when
# it hung or ran away twice, with the reason at the end of OUT. The output
# of a first runaway run is kept as OUT.runaway. (Its variables are named
# compliance_* so as not to clobber the caller's.)
compliance_run() {
	compliance_out=$1
	shift
	for compliance_attempt in 1 2; do
		: >"$compliance_out"
		v4l2-compliance "$@" >"$compliance_out" 2>&1 &
		compliance_watch $! "$compliance_out"
		compliance_test=$(compliance_last_test "$compliance_out")
		case "$compliance_outcome" in
		exited)
			return 0
			;;
		stalled)
			printf '\ncompliance-lib: no output for %s s after "%s": killed\n' \
				"$compliance_stall_s" "$compliance_test" >>"$compliance_out"
			return 1
			;;
		esac
		compliance_reason="a streaming frame counter reached"
		compliance_reason="$compliance_reason $(compliance_last_frame "$compliance_out")"
		compliance_reason="$compliance_reason after \"$compliance_test\", past its stream's end"
		if [ "$compliance_attempt" = 2 ]; then
			printf '\ncompliance-lib: %s, again: killed\n' "$compliance_reason" \
				>>"$compliance_out"
			return 1
		fi
		mv "$compliance_out" "$compliance_out.runaway"
		echo "# v4l2-compliance: $compliance_reason (its m2m poll loop missed its" \
			"exit, see tests/clients/compliance-lib.sh): killed, running it once more"
	done
}
