# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
# Helpers for the backend-failure guest tests (sourced, POSIX sh).
. "$REPO/tests/clients/host-lib.sh"

fault_failures=0

# fault_check NAME CONDITION...: TAP line for a shell test; counts failures.
fault_check() {
	check_name=$1
	shift
	if "$@"; then
		echo "ok - $check_name"
	else
		echo "not ok - $check_name"
		fault_failures=$((fault_failures + 1))
	fi
}

# fault_node NAME-PREFIX: the video node whose name starts with the prefix.
fault_node() {
	for d in /sys/class/video4linux/video*; do
		[ -e "$d/name" ] || continue
		case "$(cat "$d/name")" in
		"$1"*)
			echo "/dev/${d##*/}"
			return 0
			;;
		esac
	done
	return 1
}

# fault_wait_exit PID SECONDS: wait for the child PID to end. Sets
# fault_ms (how long that took) and fault_status (its exit status, or 255
# when it did not end: its state and kernel stack are printed, it gets
# SIGKILL, and if it is stuck in the kernel the harness's D-state check
# reports it). Always returns 0 (sh -e).
fault_wait_exit() {
	start=$(now_ms)
	while kill -0 "$1" 2>/dev/null && ! grep -q '^State:.Z' "/proc/$1/status" 2>/dev/null; do
		if [ $(($(now_ms) - start)) -gt $(($2 * 1000)) ]; then
			echo "# pid $1 still there after $2 s: $(grep '^State:' "/proc/$1/status")"
			sed 's/^/#   /' "/proc/$1/stack" 2>/dev/null
			for task in /proc/"$1"/task/*; do
				echo "#   thread ${task##*/} $(cat "$task/comm" 2>/dev/null):" \
					"$(grep '^State:' "$task/status" 2>/dev/null)" \
					"wchan=$(cat "$task/wchan" 2>/dev/null)"
			done
			fault_ms=$(($(now_ms) - start))
			fault_status=255
			# Killed, it closes its file: a close that hangs in the
			# driver leaves it in D state for the harness to report.
			kill -KILL "$1" 2>/dev/null
			sleep 5
			if kill -0 "$1" 2>/dev/null; then
				echo "# pid $1 survives SIGKILL: $(grep '^State:' "/proc/$1/status")"
				sed 's/^/#   /' "/proc/$1/stack" 2>/dev/null
			fi
			return 0
		fi
		sleep 0.1
	done
	fault_ms=$(($(now_ms) - start))
	fault_status=0
	wait "$1" || fault_status=$?
}

# fault_reload: rmmod the guest driver (must succeed) and insmod it again.
fault_reload() {
	rmmod virtio_video_m2m || return 1
	# shellcheck disable=SC2086 # parameters are separate words
	insmod "$VDV_MODULE" $VDV_MODULE_PARAMS
}

# fault_wait_node PREFIX SECONDS: wait until a node named PREFIX* opens.
fault_wait_node() {
	n=0
	while :; do
		node=$(fault_node "$1") && v4l2-ctl -d "$node" --info >/dev/null 2>&1 && return 0
		n=$((n + 1))
		[ "$n" -le $(($2 * 5)) ] || return 1
		sleep 0.2
	done
}

# fault_done: the script's verdict.
fault_done() {
	if [ "$fault_failures" -ne 0 ]; then
		echo "# $fault_failures check(s) failed"
		return 1
	fi
	echo "# all checks passed"
}

# fault_client: the test client, built on the host by `make -C
# tests/clients`, else here with the host's compiler.
fault_client() {
	# The arm64 (imx8mp-evk) guests run the cross-built NAME.aarch64.
	suffix=
	[ "$(uname -m)" = aarch64 ] && suffix=.aarch64
	if [ -x "$REPO/tests/clients/fault-client$suffix" ]; then
		echo "$REPO/tests/clients/fault-client$suffix"
		return 0
	fi
	if [ ! -x /tmp/fault-client ]; then
		cc -O2 -std=gnu11 -static -o /tmp/fault-client \
			"$REPO/tests/clients/fault-client.c" >&2 || return 1
	fi
	echo /tmp/fault-client
}

# fault_round NODE NAME ACTION SECONDS [CLIENT-ARGS...]: start the fault
# client on the node named NODE* (the dewarper: `dw100`; the decoder:
# `virtio-video decoder` with `--decode STREAM`), run the command ACTION once
# two frames are through, then check that the client ends within SECONDS
# with no call blocked, no buffer left queued, and every buffer the driver
# never handed back marked ERROR. The client's report goes to
# $RESULTS/NAME.log and is shown when a check fails.
fault_round() {
	round_node=$1
	round_name=$2
	round_action=$3
	bound_ms=$(($4 * 1000))
	shift 4
	node=$(fault_node "$round_node") || {
		fault_check "$round_name: a $round_node node" false
		return 0
	}
	rm -f /tmp/ready
	"$FAULT_CLIENT" --device "$node" --ready /tmp/ready "$@" \
		>"$RESULTS/$round_name.log" 2>&1 &
	pid=$!
	n=0
	until [ -e /tmp/ready ]; do
		n=$((n + 1))
		if [ "$n" -gt 600 ] || ! kill -0 "$pid" 2>/dev/null; then
			fault_check "$round_name: the stream started" false
			sed 's/^/#   /' "$RESULTS/$round_name.log"
			return 0
		fi
		sleep 0.1
	done
	$round_action
	fault_wait_exit "$pid" 30
	fault_check "$round_name: client ended ${fault_ms} ms after the fault, every buffer back" \
		[ "$fault_status" -eq 0 ]
	fault_check "$round_name: within $bound_ms ms" [ "$fault_ms" -lt "$bound_ms" ]
	if [ "$fault_status" -ne 0 ] || [ "$fault_ms" -ge "$bound_ms" ]; then
		sed 's/^/#   /' "$RESULTS/$round_name.log"
	fi
}

# fault_restart_with FAULT: a new decoder backend injecting the test FAULT
# (vhost-device-video --test-fault; none if empty), and a freshly loaded
# driver bound to it.
fault_restart_with() {
	host_do kill decoder
	if [ -n "$1" ]; then
		host_do start-faulty decoder "$1"
	else
		host_do start decoder
	fi
	fault_check "${1:-no fault}: rmmod and insmod" fault_reload
	fault_check "${1:-no fault}: a working decoder node" \
		fault_wait_node "virtio-video decoder" 30
}

# fault_mark_log: a line in the kernel log for fault_logged to start at.
fault_mark_log() {
	echo "virtio_video_m2m: test marker" >/dev/kmsg
}

# fault_since_mark: the kernel log since the last mark.
fault_since_mark() {
	dmesg | awk '/virtio_video_m2m: test marker/ { n = 0; next }
		{ line[n++] = $0 }
		END { for (i = 0; i < n; i++) print line[i] }'
}

# fault_logged MESSAGE: the kernel logged MESSAGE since the last mark.
fault_logged() {
	fault_since_mark | grep -q "$1"
}
