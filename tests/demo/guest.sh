#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The guest half of `cargo xtask demo`. Decodes $DEMO/clip.h264 ($DEMO_SIZE)
# through the virtio-video decoder with ffmpeg's V4L2 mem2mem decoder, writes
# one MD5 per frame (of the frame as NV12, as `ffmpeg -f framemd5` hashes it)
# to guest.md5, and has the dewarper correct $DEMO/before.nv12 (frame
# $DEMO_FRAME as the host's barrel lens model bent it) with
# $DEMO/correction.map into after.nv12. Everything it writes goes to $DEMO
# (shared with the host).
set -eu

size=$DEMO_SIZE
width=${size%x*}
height=${size#*x}
frame_bytes=$((width * height * 3 / 2))

echo "guest: $(uname -r), $(nproc) CPUs"
for node in /sys/class/video4linux/video*; do
	echo "guest: /dev/${node##*/}: $(cat "$node/name")"
done

# The node may hand out the coded size (rounded up to macroblocks): keep the
# visible part, as NV12.
echo "guest: decoding clip.h264 ($size) with h264_v4l2m2m"
start=$(date +%s.%N)
ffmpeg -hide_banner -loglevel error -nostdin -y -c:v h264_v4l2m2m \
	-i "$DEMO/clip.h264" -vf "crop=$width:$height:0:0,format=nv12" \
	-fps_mode passthrough -f rawvideo /tmp/frames.nv12
end=$(date +%s.%N)
frames=$(($(wc -c </tmp/frames.nv12) / frame_bytes))
echo "guest: $frames frames in $(awk "BEGIN { printf \"%.1f\", $end - $start }") s"
mkdir /tmp/frames
split -b "$frame_bytes" -d -a 4 /tmp/frames.nv12 /tmp/frames/
md5sum /tmp/frames/* | cut -d' ' -f1 >"$DEMO/guest.md5"

echo "guest: distorted frame $DEMO_FRAME through the dewarper (lens correction map)"
"$REPO/tests/clients/dewarp-client" --src "NV12:$size" --dst "NV12:$size" \
	--map "$DEMO/correction.map" --in "$DEMO/before.nv12" --out "$DEMO/after.nv12" \
	>/tmp/dewarp.log 2>&1 || status=$?
sed 's/^/guest: dewarp-client: /' /tmp/dewarp.log
exit "${status:-0}"
