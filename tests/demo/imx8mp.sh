#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The i.MX8MP half of `cargo xtask demo`, in the arm64 guest on imx8mp-evk:
# sends $DEMO/before.nv12 ($DEMO_SIZE NV12) through the upstream dw100
# driver (variant $DEMO_VARIANT) on the emulated DW100 with the lens
# correction map $DEMO/correction.map, and writes the result to
# $DEMO/$DEMO_OUT (shared with the host).
set -eu
. "$REPO/tests/clients/dewarp-lib.sh"

size=$DEMO_SIZE
echo "guest: $(uname -r) on $(tr -d '\0' </proc/device-tree/model), $(nproc) CPUs"
echo "guest: $(dw_node): the upstream dw100 driver, variant $DEMO_VARIANT"
echo "guest: distorted frame $DEMO_FRAME through the dw100 driver (lens correction map)"
# The writable 9p share has no page cache: it reads and writes straight
# from and into the caller's pages, and the driver's MMAP buffers
# (dma-contig, mapped as raw PFNs) cannot be pinned: EFAULT. The client
# works on copies in /tmp.
cp "$DEMO/before.nv12" /tmp/before.nv12
"$(dw_client)" --src "NV12:$size" --dst "NV12:$size" --map "$DEMO/correction.map" \
	--in /tmp/before.nv12 --out /tmp/after.nv12 >/tmp/dewarp.log 2>&1 || status=$?
sed 's/^/guest: dewarp-client: /' /tmp/dewarp.log
if [ -z "${status:-}" ]; then
	cp /tmp/after.nv12 "$DEMO/$DEMO_OUT"
fi
exit "${status:-0}"
