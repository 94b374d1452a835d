#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: streams
# timeout: 900
# expect: pass
#
# Sequences of dev-decoder.rst walked as the document describes them
# (tests/clients/decoder-spec.c): S_FMT(OUTPUT) refused while CAPTURE has
# buffers; STOP and START refused during a drain; old-size CAPTURE buffers
# queued after a resolution change, before its LAST buffer; DEC_CMD_START
# resuming after a resolution change whose format fits the buffers; a seek
# during a drain; a drain and a resolution change at once (the change inside
# a drain, STOP before the change's LAST buffer, STOP in its Capture Setup,
# STOP with CAPTURE off starting no drain).
. "$REPO/tests/clients/decode-lib.sh"
node=$(decoder_node) || { echo "not ok - no decoder node"; exit 1; }
client=$(client_path decoder-spec) || { echo "not ok - no test client"; exit 1; }
"$client" "$node" "$TESTDATA/small.h264" 20 "$TESTDATA/reschange.h264" \
	640 360 10 20
