#!/bin/sh
# machine: imx8mp-evk
# kernels: debug-rt debian-rt
# dw100: fixed
# data: dewarp
# timeout: 900
# expect: pass
#
# Vertex maps set through the upstream dw100 driver's
# V4L2_CID_DW100_DEWARPING_16x16_VERTEX_MAP control (rotation, fisheye
# correction), a downscale by the driver's default map of a smaller CAPTURE
# size, and a source crop: each result matches the reference engine bit for
# bit.
. "$REPO/tests/clients/dewarp-lib.sh"
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
dw_done
