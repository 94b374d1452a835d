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
set -eu

out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
cd "$out"

ffmpeg -hide_banner -loglevel error -nostdin -y \
	-f lavfi -i "testsrc2=size=320x240:rate=25:duration=0.8" \
	-pix_fmt yuv420p -c:v libaom-av1 -cpu-used 8 -b:v 300k -g 10 \
	-f obu av1.obu

ffmpeg -hide_banner -loglevel error -nostdin -i av1.obu -vf format=nv12 \
	-fps_mode passthrough -f framemd5 - | grep -v '^#' |
	awk -F', *' '{ print $NF }' >av1.md5
[ "$(wc -l <av1.md5)" -eq 20 ]

# One big-endian 32-bit word as raw bytes.
be32() {
	# shellcheck disable=SC2059 # the format is the octal escapes built here
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) \
		$(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"
}

# Temporal units as the demuxer splits them: byte offset and size.
ffprobe -v error -select_streams v:0 -show_entries packet=pos,size \
	-of csv=p=0 av1.obu >units.csv

next=0
: >av1.hdr
while IFS=, read -r size pos; do
	# The units must tile the file exactly, in order.
	[ "$pos" -eq "$next" ] || { echo "unit at $pos, expected $next" >&2; exit 1; }
	{
		be32 $((0x72646856)) # v4l2_fourcc('V', 'h', 'd', 'r')
		be32 "$size"
		tail -c +$((pos + 1)) av1.obu | head -c "$size"
	} >>av1.hdr
	next=$((pos + size))
done <units.csv
[ "$next" -eq "$(wc -c <av1.obu)" ] || { echo "units end at $next" >&2; exit 1; }
[ "$(wc -l <units.csv)" -eq 20 ]
rm units.csv
