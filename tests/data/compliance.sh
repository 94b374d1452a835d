#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# A stream for v4l2-compliance's decoder streaming test, made with the host's
# ffmpeg from its lavfi test source.
#
# Usage: tests/data/compliance.sh OUT_DIR
#
#   h264.hdr  H.264 Main, B-frames, 320x240, 20 frames, one access unit per
#             record in the framing `v4l2-compliance --stream-from-hdr` reads
#             (and `v4l2-ctl --stream-to-hdr` writes): per buffer the
#             big-endian fourcc 'Vhdr', then per plane a big-endian byte
#             count and that many bytes.
# Without the framing v4l2-compliance fills each OUTPUT buffer to its full
# size, so a buffer would carry many pictures, or none of a stream smaller
# than one buffer.
# inputs: tests/data/lib.sh
set -eu
# shellcheck source=tests/data/lib.sh
. "$(dirname "$0")/lib.sh"

out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
cd "$out"

ff -f lavfi -i "testsrc2=size=320x240:rate=25:duration=0.8" \
	-pix_fmt yuv420p -c:v libx264 -profile:v main -bf 2 -g 10 \
	-f h264 h264.h264

hdr_records h264.h264 h264.hdr 20
