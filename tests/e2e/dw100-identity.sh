#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# machine: imx8mp-evk
# kernels: debug-rt debian-rt
# dw100: fixed
# data: dewarp
# timeout: 1200
# expect: pass
#
# The upstream dw100 driver's default (identity) vertex map through plain
# v4l2-ctl, for every OUTPUT x CAPTURE format pair it offers: pairs with the
# same component layout (NV16 and NV16M, ...) return the input unchanged, the
# other pairs match the reference engine's conversion.
. "$REPO/tests/clients/dewarp-lib.sh"
node=$(dw_node)

# v4l2-ctl takes the fourcc code, which for the M formats is not the name.
fourcc() {
	case $1 in
	NV12M) echo NM12 ;;
	NV21M) echo NM21 ;;
	NV16M) echo NM16 ;;
	NV61M) echo NM61 ;;
	*) echo "$1" ;;
	esac
}

for src in NV16 NV16M YUYV UYVY NV12 NV12M; do
	sl=${src%M}
	for dst in NV16 NV16M NV61 NV61M YUYV UYVY NV12 NV12M NV21 NV21M; do
		dl=${dst%M}
		rm -f /tmp/out.raw
		if ! v4l2-ctl -d "$node" \
			--set-fmt-video-out="width=320,height=240,pixelformat=$(fourcc "$src")" \
			--set-fmt-video="width=320,height=240,pixelformat=$(fourcc "$dst")" \
			--stream-out-mmap --stream-mmap --stream-count=2 \
			--stream-from="$TESTDATA/src-$sl.raw" --stream-to=/tmp/out.raw \
			>/tmp/v4l2-ctl.log 2>&1; then
			echo "not ok - $src -> $dst: v4l2-ctl failed:"
			sed 's/^/#   /' /tmp/v4l2-ctl.log
			dw_failures=$((dw_failures + 1))
			continue
		fi
		if [ "$sl" = "$dl" ]; then
			dw_same "$src -> $dst is the input" "$TESTDATA/src-$sl.raw" /tmp/out.raw
		else
			dw_same "$src -> $dst matches the reference" \
				"$TESTDATA/conv-$sl-$dl.raw" /tmp/out.raw
		fi
	done
done
dw_done
