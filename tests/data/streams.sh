#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Decoder test streams and their per-frame references, made with the host's
# ffmpeg from its lavfi test source.
#
# Usage: tests/data/streams.sh OUT_DIR
#
# For each NAME.EXT stream, NAME.md5 lists one MD5 per decoded frame (the
# last field of `ffmpeg -f framemd5`, frames as NV12 at the visible size),
# which is what a guest decode must reproduce bit-exactly.
#   h264.h264      H.264 High, B-frames, 1918x1078 (not a multiple of 16)
#   hevc.hevc      HEVC Main (8-bit), 1918x1078
#   vp8.ivf        VP8, 1918x1078
#   vp9.ivf        VP9 profile 0, 1918x1078
#   reschange.h264 H.264, 640x360 then 1280x720 mid-stream (the reference
#                  is ffmpeg's output: every frame at the first size)
#   small.h264     H.264, 320x240, for compliance runs
#   small-hevc.hevc, small-vp8.ivf, small-vp9.ivf
#                  HEVC, VP8, VP9 at 320x240, for clients that decode slowly
#   dense.h264     H.264, 640x360 at a low quantiser: larger than one 512 KiB
#                  bitstream buffer, which v4l2-ctl's file streaming needs
#   truncated.h264 h264.h264 cut in the middle of a frame
#   corrupt.h264   h264.h264 with garbage written over slice data
# inputs: tests/data/lib.sh
set -eu
# shellcheck source=tests/data/lib.sh
. "$(dirname "$0")/lib.sh"

out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
cd "$out"

src() { # size frames
	echo "testsrc2=size=$1:rate=25:duration=$(($2 / 25)).$(($2 % 25 * 4))"
}

ref() { # stream
	frame_md5s "$1" "${1%.*}.md5"
}

ff -f lavfi -i "$(src 1918x1078 30)" -pix_fmt yuv420p -c:v libx264 \
	-profile:v high -bf 2 -g 12 -x264-params keyint=12:scenecut=0 \
	-f h264 h264.h264
ff -f lavfi -i "$(src 1918x1078 20)" -pix_fmt yuv420p -c:v libx265 \
	-x265-params log-level=error:bframes=2:keyint=10 -f hevc hevc.hevc
ff -f lavfi -i "$(src 1918x1078 20)" -pix_fmt yuv420p -c:v libvpx \
	-b:v 2M -g 10 -f ivf vp8.ivf
ff -f lavfi -i "$(src 1918x1078 20)" -pix_fmt yuv420p -c:v libvpx-vp9 \
	-b:v 2M -g 10 -f ivf vp9.ivf
ff -f lavfi -i "$(src 320x240 20)" -pix_fmt yuv420p -c:v libx264 \
	-profile:v main -bf 2 -g 10 -f h264 small.h264

ff -f lavfi -i "$(src 320x240 20)" -pix_fmt yuv420p -c:v libx265 \
	-x265-params log-level=error:bframes=2:keyint=10 -f hevc small-hevc.hevc
ff -f lavfi -i "$(src 320x240 20)" -pix_fmt yuv420p -c:v libvpx \
	-b:v 500k -g 10 -f ivf small-vp8.ivf
ff -f lavfi -i "$(src 320x240 20)" -pix_fmt yuv420p -c:v libvpx-vp9 \
	-b:v 500k -g 10 -f ivf small-vp9.ivf
ff -f lavfi -i "$(src 640x360 50)" -pix_fmt yuv420p -c:v libx264 \
	-profile:v high -bf 2 -g 12 -qp 2 -f h264 dense.h264

for stream in h264.h264 hevc.hevc vp8.ivf vp9.ivf small.h264 small-hevc.hevc \
	small-vp8.ivf small-vp9.ivf dense.h264; do
	ref "$stream"
done

# Two coded sizes in one elementary stream; each part starts with an IDR
# and its own SPS/PPS.
ff -f lavfi -i "$(src 640x360 10)" -pix_fmt yuv420p -c:v libx264 \
	-profile:v main -bf 2 -g 10 -f h264 part1.h264
ff -f lavfi -i "$(src 1280x720 10)" -pix_fmt yuv420p -c:v libx264 \
	-profile:v main -bf 2 -g 10 -f h264 part2.h264
cat part1.h264 part2.h264 > reschange.h264
rm -f part1.h264 part2.h264
# ffmpeg scales later sizes to the first one for its output; the guest's
# run goes through the same pipeline.
ref reschange.h264

# Damaged input: the decoder must report errors, never hang.
size=$(wc -c < h264.h264)
head -c $((size / 2 + 777)) h264.h264 > truncated.h264
cp h264.h264 corrupt.h264
# Seeded, so that every run of a test sees the same damage.
python3 -c 'import random, sys; random.seed(1); sys.stdout.buffer.write(random.randbytes(4096))' |
	dd of=corrupt.h264 bs=4096 seek=$((size / 3)) oflag=seek_bytes count=1 \
	conv=notrunc 2>/dev/null
