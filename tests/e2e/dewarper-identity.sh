#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: dewarper
# qemu: patched
# module: virtio_video_m2m
# data: dewarp
# timeout: 1200
# expect: pass
#
# The default (identity) vertex map, for every OUTPUT x CAPTURE format pair:
# pairs with the same component layout (NV16 and NV16M, ...) return the
# input unchanged; the other pairs match the reference engine's conversion.
. "$REPO/tests/clients/dewarp-lib.sh"
DW_CLIENT=$(dw_client)

for src in NV16 NV16M YUYV UYVY NV12 NV12M; do
	sl=${src%M}
	for dst in NV16 NV16M NV61 NV61M YUYV UYVY NV12 NV12M NV21 NV21M; do
		dl=${dst%M}
		dw_run "$src -> $dst" --src "$src:320x240" --dst "$dst:320x240" \
			--in "$TESTDATA/src-$sl.raw" --out /tmp/out.raw || continue
		if [ "$sl" = "$dl" ]; then
			dw_same "$src -> $dst is the input" "$TESTDATA/src-$sl.raw" /tmp/out.raw
		else
			dw_same "$src -> $dst matches the reference" \
				"$TESTDATA/conv-$sl-$dl.raw" /tmp/out.raw
		fi
	done
done
dw_done
