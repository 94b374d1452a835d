#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Decoder test streams at small and odd sizes, with their per-frame
# references, made with the host's ffmpeg from its lavfi test source.
#
# Usage: tests/data/small-sizes.sh OUT_DIR
#
# CODEC-WxH.EXT for H.264 (.h264), HEVC (.hevc), VP8 and VP9 (.ivf, the
# form Debian's libvpx writes), 30 frames at 30 fps each: 320x240 (the
# issue's case), 176x144 and 350x198 (no multiple of 16) for every codec;
# 321x241 and 97x55 (odd) for VP8 and VP9, whose encoders take odd sizes.
# CODEC-WxH.md5 lists one MD5 per decoded frame (the last field of
# `ffmpeg -f framemd5`, NV12 at the visible size).
# inputs: tests/data/lib.sh
set -eu
# shellcheck source=tests/data/lib.sh
. "$(dirname "$0")/lib.sh"

out=${1:?usage: $0 OUT_DIR}
mkdir -p "$out"
cd "$out"

encode() { # codec size
	src="testsrc2=size=$2:rate=30:duration=1"
	case "$1" in
	h264) ff -f lavfi -i "$src" -pix_fmt yuv420p -c:v libx264 \
		-profile:v high -bf 2 -g 10 -f h264 "h264-$2.h264" ;;
	hevc) ff -f lavfi -i "$src" -pix_fmt yuv420p -c:v libx265 \
		-x265-params log-level=error:bframes=2:keyint=10 -f hevc \
		"hevc-$2.hevc" ;;
	vp8) ff -f lavfi -i "$src" -pix_fmt yuv420p -c:v libvpx -b:v 500k \
		-g 10 -f ivf "vp8-$2.ivf" ;;
	vp9) ff -f lavfi -i "$src" -pix_fmt yuv420p -c:v libvpx-vp9 \
		-b:v 500k -g 10 -f ivf "vp9-$2.ivf" ;;
	esac
}

for codec in h264 hevc vp8 vp9; do
	for size in 320x240 176x144 350x198; do
		encode "$codec" "$size"
	done
done
for codec in vp8 vp9; do
	for size in 321x241 97x55; do
		encode "$codec" "$size"
	done
done

for stream in *.h264 *.hevc *.ivf; do
	frame_md5s "$stream" "${stream%.*}.md5"
	[ "$(wc -l <"${stream%.*}.md5")" -eq 30 ]
done
