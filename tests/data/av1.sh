#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# An AV1 stream for decoding with v4l2-ctl, made with the host's ffmpeg from
# its lavfi test source.
#
# Usage: tests/data/av1.sh OUT_DIR
#
#   av1.obu  AV1 (libaom), 320x240, 20 frames, as a low-overhead OBU stream
#            (the `-f obu` form: each temporal unit starts with a temporal
#            delimiter); libaom's alt-ref frames make some units a lone
#            frame header that shows an earlier decoded frame.
#   av1.hdr  the same temporal units, one per record in the framing
#            `v4l2-ctl --stream-from-hdr` reads: per buffer the big-endian
#            fourcc 'Vhdr', then per plane a big-endian byte count and that
#            many bytes.
#   av1.md5  one MD5 per frame from the host's software decoder (the last
#            field of `ffmpeg -f framemd5`, NV12 at the visible size).
# inputs: tests/data/lib.sh
set -eu
# shellcheck source=tests/data/lib.sh
. "$(dirname "$0")/lib.sh"

out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
cd "$out"

ff -f lavfi -i "testsrc2=size=320x240:rate=25:duration=0.8" \
	-pix_fmt yuv420p -c:v libaom-av1 -cpu-used 8 -b:v 300k -g 10 \
	-f obu av1.obu

frame_md5s av1.obu av1.md5
[ "$(wc -l <av1.md5)" -eq 20 ]

hdr_records av1.obu av1.hdr 20
