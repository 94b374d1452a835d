#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt
# needs-config: CONFIG_VIDEO_VIM2M
# devices: none
# qemu: stock
# module: none
# timeout: 900
# expect: pass
#
# Real v4l2-compliance, streaming included, against the kernel's vim2m
# mem2mem test driver inside the debug RT guest.
modprobe vim2m
node=""
for dev in /sys/class/video4linux/video*; do
	if grep -q vim2m "$dev/name"; then
		node=/dev/${dev##*/}
		break
	fi
done
[ -n "$node" ] || { echo "no vim2m video node"; exit 1; }
status=0
v4l2-compliance -d "$node" -s > "$RESULTS/v4l2-compliance.txt" 2>&1 || status=$?
cat "$RESULTS/v4l2-compliance.txt"
grep -q 'Failed: 0' "$RESULTS/v4l2-compliance.txt"
exit "$status"
