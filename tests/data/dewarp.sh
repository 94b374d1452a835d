#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Dewarper test data: source frames from the host's ffmpeg test source,
# vertex maps and expected results from the reference remap engine
# (vhost-device-video/examples/dewarp.rs), all on the host.
#
# Usage: tests/data/dewarp.sh OUT_DIR
#
# Raw frames are V4L2 buffers laid end to end (bytesperline = width, chroma
# right after luma), which is also what dewarp-client reads and writes.
#   src-F.raw            2 frames 320x240, F in NV16 NV12 YUYV UYVY
#   conv-F-G.raw         src-F.raw through the default map into format G
#   big-NV12.raw, big-YUYV.raw            2 frames 640x480
#   rotate-640x480.map, fisheye-640x480.map, identity-*.map, rotate-320x240.map
#   rotate-NV12-NV12.raw, fisheye-YUYV-NV16.raw, fisheye-NV12-NV21.raw
#   down-NV12-NV12.raw   big-NV12.raw to 320x240 through the default map
#   crop-NV12-NV12.raw   big-NV12.raw, crop 160,120,320,240, default map
#   seq-NV12.raw         5 frames 320x240
#   seq-request-NV12.raw seq-NV12.raw with only frame 2 rotated
# inputs: vhost-device-video/src/engine/dewarp vhost-device-video/examples/dewarp.rs
set -eu

out=${1:?usage: $0 OUT_DIR}
repo=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
cd "$out"

cargo build --quiet --release -j2 --manifest-path "$repo/Cargo.toml" \
	-p vhost-device-video --example dewarp
dewarp=$(cargo metadata --format-version 1 --no-deps \
	--manifest-path "$repo/Cargo.toml" |
	python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/examples/dewarp

# frames FORMAT WxH COUNT FILE: ffmpeg's testsrc2 as raw frames.
frames() {
	case $1 in
	NV12) pix=nv12 ;;
	YUYV) pix=yuyv422 ;;
	UYVY) pix=uyvy422 ;;
	NV16) pix=yuv422p ;;
	esac
	ffmpeg -hide_banner -loglevel error -nostdin -y \
		-f lavfi -i "testsrc2=size=$2:rate=5" -frames:v "$3" \
		-pix_fmt "$pix" -f rawvideo "$4"
	if [ "$1" = NV16 ]; then
		# ffmpeg writes no NV16: interleave the planar 4:2:2 chroma.
		python3 - "$2" "$4" <<'PY'
import sys
w, h = (int(v) for v in sys.argv[1].split("x"))
path = sys.argv[2]
data = open(path, "rb").read()
luma, plane = w * h, w * h // 2
frame = luma + 2 * plane
out = bytearray()
for i in range(len(data) // frame):
    f = data[i * frame:(i + 1) * frame]
    uv = bytearray(2 * plane)
    uv[0::2] = f[luma:luma + plane]
    uv[1::2] = f[luma + plane:]
    out += f[:luma] + uv
open(path, "wb").write(out)
PY
	fi
}

remap() {
	"$dewarp" remap --engine reference "$@"
}

"$dewarp" map identity --src 320x240 --dst 320x240 --out identity-320x240.map
"$dewarp" map identity --src 640x480 --dst 640x480 --out identity-640x480.map
"$dewarp" map identity --src 640x480 --dst 320x240 --out identity-640x480-320x240.map
"$dewarp" map rotate --degrees 30 --src 320x240 --dst 320x240 --out rotate-320x240.map
"$dewarp" map rotate --degrees 30 --src 640x480 --dst 640x480 --out rotate-640x480.map
"$dewarp" map fisheye --strength 0.3 --src 640x480 --dst 640x480 --out fisheye-640x480.map

for f in NV16 NV12 YUYV UYVY; do
	frames "$f" 320x240 2 "src-$f.raw"
done
for f in NV16 NV12 YUYV UYVY; do
	for g in NV16 NV61 NV12 NV21 YUYV UYVY; do
		remap --src "$f:320x240" --dst "$g:320x240" --map identity-320x240.map \
			--in "src-$f.raw" --out "conv-$f-$g.raw"
	done
	# The guest test counts on the default map being an exact identity here.
	cmp "src-$f.raw" "conv-$f-$f.raw"
done

frames NV12 640x480 2 big-NV12.raw
frames YUYV 640x480 2 big-YUYV.raw
remap --src NV12:640x480 --dst NV12:640x480 --map rotate-640x480.map \
	--in big-NV12.raw --out rotate-NV12-NV12.raw
remap --src YUYV:640x480 --dst NV16:640x480 --map fisheye-640x480.map \
	--in big-YUYV.raw --out fisheye-YUYV-NV16.raw
remap --src NV12:640x480 --dst NV21:640x480 --map fisheye-640x480.map \
	--in big-NV12.raw --out fisheye-NV12-NV21.raw
remap --src NV12:640x480 --dst NV12:320x240 --map identity-640x480-320x240.map \
	--in big-NV12.raw --out down-NV12-NV12.raw
remap --src NV12:640x480 --dst NV12:640x480 --map identity-640x480.map \
	--crop 160,120,320,240 --in big-NV12.raw --out crop-NV12-NV12.raw

frames NV12 320x240 5 seq-NV12.raw
size=$((320 * 240 * 3 / 2))
head -c $((2 * size)) seq-NV12.raw > seq-request-NV12.raw
tail -c +$((2 * size + 1)) seq-NV12.raw | head -c "$size" > seq-frame2.raw
remap --src NV12:320x240 --dst NV12:320x240 --map rotate-320x240.map \
	--in seq-frame2.raw --out seq-frame2-rotated.raw
cat seq-frame2-rotated.raw >> seq-request-NV12.raw
tail -c +$((3 * size + 1)) seq-NV12.raw >> seq-request-NV12.raw
rm seq-frame2.raw seq-frame2-rotated.raw
# Frame 2 must really change, or the request test proves nothing.
if cmp -s seq-NV12.raw seq-request-NV12.raw; then
	echo "the rotation map leaves frame 2 unchanged" >&2
	exit 1
fi
