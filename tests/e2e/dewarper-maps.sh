#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: dewarper
# qemu: patched
# module: virtio_video_m2m
# data: dewarp
# timeout: 900
# expect: pass
#
# Non-trivial vertex maps (rotation, fisheye correction), a downscale by the
# default map of a smaller CAPTURE size, and a source crop: each result
# matches the reference engine bit for bit.
. "$REPO/tests/clients/dewarp-lib.sh"
dw_map_checks
dw_done
