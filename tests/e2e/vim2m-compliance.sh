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
. "$REPO/tests/clients/compliance-lib.sh"

modprobe vim2m
node=""
for dev in /sys/class/video4linux/video*; do
	if grep -q vim2m "$dev/name"; then
		node=/dev/${dev##*/}
		break
	fi
done
[ -n "$node" ] || { echo "no vim2m video node"; exit 1; }
compliance_run "$RESULTS/v4l2-compliance.txt" -d "$node" -s || true
cat "$RESULTS/v4l2-compliance.txt"
grep -q '^Total for .*, Failed: 0,' "$RESULTS/v4l2-compliance.txt"
