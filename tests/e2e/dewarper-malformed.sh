#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: dewarper
# qemu: patched
# module: virtio_video_m2m_debug
# data: dewarp
# timeout: 600
# expect: pass
#
# A malformed job fails alone: the node (built with VVM_DEBUG=y) sends the
# first job of a stream with a reserved header field set; the device rejects
# it, that frame comes back with V4L2_BUF_FLAG_ERROR, and the next frames are
# processed normally (identity map: the input comes back unchanged).
. "$REPO/tests/clients/dewarp-lib.sh"
DW_CLIENT=$(dw_client)
in=$TESTDATA
param=/sys/module/virtio_video_m2m/parameters/debug_malformed_jobs

if [ ! -w "$param" ]; then
	echo "not ok - $param missing: the module was not built with VVM_DEBUG=y"
	exit 1
fi

echo 1 > "$param"
if dw_run malformed --src NV12:320x240 --dst NV12:320x240 --expect-error 0 \
	--in "$in/seq-NV12.raw" --out /tmp/out.raw; then
	frame=$((320 * 240 * 3 / 2))
	tail -c +$((frame + 1)) "$in/seq-NV12.raw" > /tmp/want.raw
	tail -c +$((frame + 1)) /tmp/out.raw > /tmp/got.raw
	dw_same "frames after the malformed one are the input" /tmp/want.raw /tmp/got.raw
fi
[ "$(cat "$param")" = 0 ] || { echo "not ok - malformed job not sent"; exit 1; }
if dmesg | grep -q 'malformed job'; then
	echo "ok - the device answered ERR_MALFORMED"
else
	echo "not ok - no ERR_MALFORMED answer in the kernel log"
	dw_failures=$((dw_failures + 1))
fi
dw_done
