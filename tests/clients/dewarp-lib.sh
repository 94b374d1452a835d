# SPDX-License-Identifier: GPL-2.0
# Shell helpers for the dewarper guest tests (sourced, POSIX sh).

# The dewarper's video node: the one named like a DW100 on silicon.
dw_node() {
	for d in /sys/class/video4linux/video*; do
		if [ "$(cat "$d/name")" = dw100 ]; then
			echo "/dev/${d##*/}"
			return 0
		fi
	done
	echo "no dw100 video node" >&2
	return 1
}

# The test client: built on the host by `make -C tests/clients`, else built
# here with the host's compiler (the guest sees the host root).
dw_client() {
	# The arm64 (imx8mp-evk) guests run the cross-built NAME.aarch64.
	suffix=
	[ "$(uname -m)" = aarch64 ] && suffix=.aarch64
	if [ -x "$REPO/tests/clients/dewarp-client$suffix" ]; then
		echo "$REPO/tests/clients/dewarp-client$suffix"
		return 0
	fi
	if [ ! -x /tmp/dewarp-client ]; then
		cc -O2 -std=gnu11 -static -o /tmp/dewarp-client \
			"$REPO/tests/clients/dewarp-client.c" >&2 || return 1
	fi
	echo /tmp/dewarp-client
}

# dw_same NAME EXPECTED ACTUAL: compare byte for byte, report, count failures.
dw_failures=0
dw_same() {
	if cmp -s "$2" "$3"; then
		echo "ok - $1"
	else
		echo "not ok - $1: $(cmp -l "$2" "$3" 2>/dev/null | wc -l) bytes differ"
		dw_failures=$((dw_failures + 1))
	fi
}

# dw_run NAME CLIENT-ARGS...: run the client; a failure counts and is reported.
dw_run() {
	name=$1
	shift
	if "$DW_CLIENT" "$@" >/tmp/dw-client.log 2>&1; then
		return 0
	fi
	echo "not ok - $name: dewarp-client failed:"
	sed 's/^/#   /' /tmp/dw-client.log
	dw_failures=$((dw_failures + 1))
	return 1
}

# dw_done: the script's verdict.
dw_done() {
	if [ "$dw_failures" -ne 0 ]; then
		echo "# $dw_failures check(s) failed"
		return 1
	fi
	echo "# all checks passed"
}
