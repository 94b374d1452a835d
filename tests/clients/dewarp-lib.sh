# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
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

# dw_map_checks: the map tests' checks, the same on the virtio dewarper and
# the emulated DW100 (their nodes take the same controls): a rotation and a
# fisheye correction set as vertex maps, a downscale by the default map of a
# smaller CAPTURE size, and a source crop, each bit-exact against the
# reference engine's output in $TESTDATA. Failures are counted.
dw_map_checks() {
	DW_CLIENT=$(dw_client)
	in=$TESTDATA
	if dw_run rotation --src NV12:640x480 --dst NV12:640x480 \
		--map "$in/rotate-640x480.map" --in "$in/big-NV12.raw" --out /tmp/out.raw; then
		dw_same "rotation NV12 -> NV12" "$in/rotate-NV12-NV12.raw" /tmp/out.raw
	fi
	if dw_run fisheye --src YUYV:640x480 --dst NV16M:640x480 \
		--map "$in/fisheye-640x480.map" --in "$in/big-YUYV.raw" --out /tmp/out.raw; then
		dw_same "fisheye correction YUYV -> NV16M" "$in/fisheye-YUYV-NV16.raw" /tmp/out.raw
	fi
	if dw_run fisheye-nv21 --src NV12M:640x480 --dst NV21:640x480 \
		--map "$in/fisheye-640x480.map" --in "$in/big-NV12.raw" --out /tmp/out.raw; then
		dw_same "fisheye correction NV12M -> NV21" "$in/fisheye-NV12-NV21.raw" /tmp/out.raw
	fi
	if dw_run downscale --src NV12:640x480 --dst NV12:320x240 \
		--in "$in/big-NV12.raw" --out /tmp/out.raw; then
		dw_same "default map, 640x480 -> 320x240" "$in/down-NV12-NV12.raw" /tmp/out.raw
	fi
	if dw_run crop --src NV12:640x480 --dst NV12:640x480 --crop 160,120,320,240 \
		--in "$in/big-NV12.raw" --out /tmp/out.raw; then
		if grep -q '^crop 160,120,320,240$' /tmp/dw-client.log; then
			dw_same "crop 160,120,320,240" "$in/crop-NV12-NV12.raw" /tmp/out.raw
		else
			echo "not ok - crop: the node chose $(grep '^crop' /tmp/dw-client.log)"
			dw_failures=$((dw_failures + 1))
		fi
	fi
}

# dw_done: the script's verdict.
dw_done() {
	if [ "$dw_failures" -ne 0 ]; then
		echo "# $dw_failures check(s) failed"
		return 1
	fi
	echo "# all checks passed"
}

# dw_v4l2_stream NAME: the dw100 RT tests' stream, through plain v4l2-ctl:
# big-NV12.raw's two 640x480 NV12 frames, three times over, downscaled by
# the driver's default map to 320x240 NV12, each frame bit-exact against the
# reference engine's (down-NV12-NV12.raw). Counts a failure, returns 1.
dw_v4l2_stream() {
	stream_node=$(dw_node) || {
		echo "not ok - $1: no dw100 node"
		dw_failures=$((dw_failures + 1))
		return 1
	}
	if [ ! -e /tmp/down-x3.raw ]; then
		cat "$TESTDATA/down-NV12-NV12.raw" "$TESTDATA/down-NV12-NV12.raw" \
			"$TESTDATA/down-NV12-NV12.raw" >/tmp/down-x3.raw
	fi
	rm -f /tmp/stream.raw
	if ! v4l2-ctl -d "$stream_node" \
		--set-fmt-video-out=width=640,height=480,pixelformat=NV12 \
		--set-fmt-video=width=320,height=240,pixelformat=NV12 \
		--stream-out-mmap --stream-mmap --stream-count=6 --stream-loop \
		--stream-from="$TESTDATA/big-NV12.raw" --stream-to=/tmp/stream.raw \
		>/tmp/v4l2-ctl.log 2>&1; then
		echo "not ok - $1: v4l2-ctl failed:"
		sed 's/^/#   /' /tmp/v4l2-ctl.log
		dw_failures=$((dw_failures + 1))
		return 1
	fi
	dw_same "$1: 6 frames 640x480 -> 320x240, bit-exact" /tmp/down-x3.raw /tmp/stream.raw
}

# dw_v4l2_start COUNT OUT: dw_v4l2_stream's stream for COUNT good frames
# (the source looped), written to OUT, in the background: sets stream_pid.
dw_v4l2_start() {
	stream_node=$(dw_node) || return 1
	rm -f "$2"
	v4l2-ctl -d "$stream_node" \
		--set-fmt-video-out=width=640,height=480,pixelformat=NV12 \
		--set-fmt-video=width=320,height=240,pixelformat=NV12 \
		--stream-out-mmap --stream-mmap --stream-count="$1" --stream-loop \
		--stream-from="$TESTDATA/big-NV12.raw" --stream-to="$2" \
		>/tmp/v4l2-ctl.log 2>&1 &
	# shellcheck disable=SC2034 # for the script that sources this
	stream_pid=$!
}

# dw_frames FILE: how many 320x240 NV12 frames FILE holds.
dw_frames() {
	echo $(($(stat -c %s "$1" 2>/dev/null || echo 0) / (320 * 240 * 3 / 2)))
}

# dw_interrupt_errors: the dw100 driver's "Interrupt error" lines in the
# kernel log (a ring: a flood of them pushes the oldest out).
dw_interrupt_errors() {
	dmesg | grep -c 'dw100.*Interrupt error' || true
}
