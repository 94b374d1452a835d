#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: dewarper
# qemu: patched
# module: virtio_video_m2m
# data: none
# timeout: 900
# expect: pass
#
# v4l2-compliance with streaming on the dewarper node: no failure, no warning.
. "$REPO/tests/clients/dewarp-lib.sh"
. "$REPO/tests/clients/compliance-lib.sh"

node=$(dw_node)
compliance_run "$RESULTS/compliance.txt" -d "$node" -s || true
cat "$RESULTS/compliance.txt"

summary=$(grep '^Total for ' "$RESULTS/compliance.txt" | tail -n 1)
case "$summary" in
*", Failed: 0, Warnings: 0") echo "ok - $summary" ;;
*) echo "not ok - v4l2-compliance: ${summary:-no summary}"; exit 1 ;;
esac
