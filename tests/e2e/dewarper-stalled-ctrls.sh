#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: dewarper
# qemu: patched
# module: virtio_video_m2m
# timeout: 600
# expect: pass
# needs-config: CONFIG_USERFAULTFD
#
# A process whose control ioctl sleeps in its copy from user memory holds
# up nobody else. Process A streams with requests and keeps one job
# waiting for a CAPTURE buffer; one of its threads sets the vertex map from
# a userfaultfd page nobody serves, so VIDIOC_S_EXT_CTRLS sleeps in
# copy_from_user with A's control handler locked. Meanwhile another thread
# of A queues the CAPTURE buffer (A's job must complete: device_run() and
# the completion path take no lock that ioctl holds) and process B opens
# the node, sets formats and its own map, dewarps 8 frames, STREAMOFFs and
# closes, all within 60 s. Then the page is served and A's S_EXT_CTRLS
# returns 0 (tests/clients/dewarp-stalled-ctrls.c). Without the fix, B
# waits for the node-wide ioctl lock A's S_EXT_CTRLS held (and its close
# for it in D state), and A's job waits in device_run() for the handler
# lock until the page is served.
client=$REPO/tests/clients/dewarp-stalled-ctrls
[ "$(uname -m)" = aarch64 ] && client=$client.aarch64
if [ ! -x "$client" ]; then
	cc -O2 -std=gnu11 -static -o /tmp/dewarp-stalled-ctrls \
		"$REPO/tests/clients/dewarp-stalled-ctrls.c"
	client=/tmp/dewarp-stalled-ctrls
fi

status=0
"$client" --frames 8 --timeout 60 || status=$?
if dmesg | grep -E "marked dead|no answer within"; then
	echo "not ok - the device was declared dead"
	status=1
else
	echo "ok - the device was never declared dead"
fi
rmmod virtio_video_m2m
exit "$status"
