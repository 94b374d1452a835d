#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: dewarper
# qemu: patched
# module: virtio_video_m2m
# data: dewarp
# timeout: 600
# expect: pass
#
# A vertex map set through a request takes effect on exactly the frame of
# that request: five frames queued ahead, the request of frame 2 carries a
# rotation, the request of frame 3 the identity again.
. "$REPO/tests/clients/dewarp-lib.sh"
DW_CLIENT=$(dw_client)
in=$TESTDATA

if dw_run requests --src NV12:320x240 --dst NV12:320x240 \
	--request-map "2:$in/rotate-320x240.map" \
	--request-map "3:$in/identity-320x240.map" \
	--in "$in/seq-NV12.raw" --out /tmp/out.raw; then
	dw_same "frames 0, 1, 3, 4 identity; frame 2 rotated" \
		"$in/seq-request-NV12.raw" /tmp/out.raw
fi
dw_done
