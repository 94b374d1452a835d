# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
# Helpers for guest tests that need the host to act at a chosen moment
# (sourced, POSIX sh). The harness carries out each request before the
# helper returns; see "Host control" in docs/harness.md.

host_seq=0

# host_do ACTION TARGET [FAULT]: ask the host to `kill` or `start` the backend of a
# device, or to `unplug` it (PCI hot-unplug through QEMU's monitor). TARGET
# is `decoder`, `dewarper` (the first of that kind) or `decoder0`,
# `dewarper1`... (the device's place in the run's device list). Prints the
# host's answer; fails if the host refused or did not answer in 60 s.
# `start-faulty TARGET FAULT` starts a backend that injects a test fault
# (vhost-device-video/src/fault.rs); a later plain `start` injects none.
host_do() {
	host_seq=$((host_seq + 1))
	req=$(printf '%s/%s-%06d' "$VDV_CONTROL" "$$" "$host_seq")
	echo "$*" >"$req.tmp"
	mv "$req.tmp" "$req.req"
	tries=0
	while [ ! -e "$req.reply" ]; do
		tries=$((tries + 1))
		if [ "$tries" -gt 600 ]; then
			echo "host_do $*: no answer from the host in 60 s" >&2
			return 1
		fi
		sleep 0.1
	done
	answer=$(cat "$req.reply")
	rm -f "$req.reply"
	echo "# host: $answer"
	case "$answer" in
	ok*) return 0 ;;
	*) return 1 ;;
	esac
}

# now_ms: milliseconds since boot (/proc/uptime, in hundredths), for timing
# calls; busybox's date has no %N.
now_ms() {
	read -r uptime_s _ </proc/uptime
	uptime_cs=${uptime_s#*.}
	uptime_cs=${uptime_cs#0}
	echo $((${uptime_s%.*} * 1000 + uptime_cs * 10))
}
