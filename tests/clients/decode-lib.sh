# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
# Helpers for the decoder e2e tests; sourced, not run.

# decoder_node: the decoder's video node.
decoder_node() {
	for d in /sys/class/video4linux/video*; do
		case "$(cat "$d/name")" in
		"virtio-video decoder"*) echo "/dev/${d##*/}"; return 0 ;;
		esac
	done
	echo "no virtio-video decoder node" >&2
	return 1
}

# client_path NAME: a test client of tests/clients, built on the host by
# `make -C tests/clients`, else built here with the host's compiler (the
# guest sees the host root).
client_path() {
	if [ -x "$REPO/tests/clients/$1" ]; then
		echo "$REPO/tests/clients/$1"
		return 0
	fi
	if [ ! -x "/tmp/$1" ]; then
		cc -O2 -std=gnu11 -static -o "/tmp/$1" "$REPO/tests/clients/$1.c" >&2 ||
			return 1
	fi
	echo "/tmp/$1"
}

# decode_compare STREAM: decodes $TESTDATA/STREAM with ffmpeg's V4L2 mem2mem
# decoder for its codec, unmodified, and compares each frame's MD5 with the
# host software decoder's ($TESTDATA/NAME.md5). Prints a TAP line; returns
# non-zero on a mismatch.
decode_compare() {
	stream=$1
	case "$stream" in
	*.h264) codec=h264_v4l2m2m ;;
	*.hevc) codec=hevc_v4l2m2m ;;
	vp8*.ivf | *-vp8.ivf) codec=vp8_v4l2m2m ;;
	vp9*.ivf | *-vp9.ivf) codec=vp9_v4l2m2m ;;
	*) echo "not ok - $stream: no V4L2 decoder for it"; return 1 ;;
	esac
	name=${stream%.*}
	# The node may hand out the coded size; keep the visible part.
	filter=format=nv12
	if [ "$name" != reschange ]; then
		size=$(ffprobe -v error -select_streams v:0 \
			-show_entries stream=width,height -of csv=p=0:s=x \
			"$TESTDATA/$stream")
		filter="crop=${size%x*}:${size#*x}:0:0,format=nv12"
	fi
	timeout 600 ffmpeg -hide_banner -loglevel warning -nostdin \
		-c:v "$codec" -i "$TESTDATA/$stream" -vf "$filter" -fps_mode passthrough \
		-flush_packets 1 -f framemd5 "$RESULTS/$name.framemd5" \
		>"$RESULTS/$name.log" 2>&1 || echo "# $codec exit $?" >>"$RESULTS/$name.log"
	grep -v '^#' "$RESULTS/$name.framemd5" 2>/dev/null |
		awk -F', *' '{ print $NF }' >"$RESULTS/$name.md5"
	if cmp -s "$TESTDATA/$name.md5" "$RESULTS/$name.md5"; then
		echo "ok - $name: $(wc -l <"$RESULTS/$name.md5") frames bit-exact"
		return 0
	fi
	echo "not ok - $name: $(wc -l <"$RESULTS/$name.md5") frames decoded," \
		"$(wc -l <"$TESTDATA/$name.md5") expected," \
		"first mismatch at line $(cmp "$TESTDATA/$name.md5" "$RESULTS/$name.md5" 2>&1 | sed -n 's/.* line \([0-9]*\).*/\1/p')"
	cat "$RESULTS/$name.log"
	return 1
}

# stream_size STREAM: the visible size of $TESTDATA/STREAM as WIDTHxHEIGHT.
stream_size() {
	ffprobe -v error -select_streams v:0 -show_entries stream=width,height \
		-of csv=p=0:s=x "$TESTDATA/$1"
}

# compare_raw_frames NAME RAW PIXFMT SIZE: compares each frame of RAW,
# tightly packed frames of FFmpeg pixel format PIXFMT and SIZE
# (WIDTHxHEIGHT), as NV12, with the host software decoder's MD5s
# ($TESTDATA/NAME.md5). RAW is removed. Prints a TAP line; returns non-zero
# on a mismatch.
compare_raw_frames() {
	name=$1 raw=$2 pixfmt=$3 size=$4
	ffmpeg -hide_banner -loglevel error -nostdin -f rawvideo \
		-pix_fmt "$pixfmt" -video_size "$size" -i "$raw" -vf format=nv12 \
		-f framemd5 - 2>"$RESULTS/$name-md5.log" | grep -v '^#' |
		awk -F', *' '{ print $NF }' >"$RESULTS/$name.md5"
	rm -f "$raw"
	if cmp -s "$TESTDATA/$name.md5" "$RESULTS/$name.md5"; then
		echo "ok - $name: $(wc -l <"$RESULTS/$name.md5") frames bit-exact"
		return 0
	fi
	echo "not ok - $name: $(wc -l <"$RESULTS/$name.md5") frames decoded," \
		"$(wc -l <"$TESTDATA/$name.md5") expected," \
		"first mismatch at line $(cmp "$TESTDATA/$name.md5" "$RESULTS/$name.md5" 2>&1 | sed -n 's/.* line \([0-9]*\).*/\1/p')"
	return 1
}
