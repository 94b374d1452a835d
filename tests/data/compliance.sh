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
set -eu

out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
cd "$out"

ffmpeg -hide_banner -loglevel error -nostdin -y \
	-f lavfi -i "testsrc2=size=320x240:rate=25:duration=0.8" \
	-pix_fmt yuv420p -c:v libx264 -profile:v main -bf 2 -g 10 \
	-f h264 h264.h264

# One big-endian 32-bit word as raw bytes.
be32() {
	# shellcheck disable=SC2059 # the format is the octal escapes built here
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) \
		$(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"
}

# Access units as the demuxer's parser splits them: byte offset and size.
ffprobe -v error -select_streams v:0 -show_entries packet=pos,size \
	-of csv=p=0 h264.h264 >units.csv

next=0
: >h264.hdr
while IFS=, read -r size pos; do
	# The units must tile the file exactly, in order.
	[ "$pos" -eq "$next" ] || { echo "unit at $pos, expected $next" >&2; exit 1; }
	{
		be32 $((0x72646856)) # v4l2_fourcc('V', 'h', 'd', 'r')
		be32 "$size"
		tail -c +$((pos + 1)) h264.h264 | head -c "$size"
	} >>h264.hdr
	next=$((pos + size))
done <units.csv
[ "$next" -eq "$(wc -c <h264.h264)" ] || { echo "units end at $next" >&2; exit 1; }
[ "$(wc -l <units.csv)" -eq 20 ]
rm units.csv
