#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The guest half of `cargo xtask bench dewarp`, on q35 (virtio dewarper) and
# on imx8mp-evk (the upstream dw100 driver on the emulated DW100): sends the
# frames of $BENCH_DEWARP/frames.nv12 (1920x1080 NV12) through the guest's
# dw100 node with the fisheye correction map, one job in flight at a time,
# and prints each job's round trip (QBUF to DQBUF) as
# `frame N round_trip_us US`.
set -eu
. "$REPO/tests/clients/dewarp-lib.sh"

"$(dw_client)" --timing \
	--src NV12:1920x1080 --dst NV12:1920x1080 \
	--map "$BENCH_DEWARP/fisheye.map" \
	--in "$BENCH_DEWARP/frames.nv12" --out /tmp/out.nv12
