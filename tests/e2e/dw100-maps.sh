#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
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
dw_map_checks
dw_done
