#!/bin/sh
# kernels: debug-rt debian-rt
# devices: decoder
# qemu: stock
# module: virtio_video_m2m
# data: streams
# timeout: 1800
# expect: pass
#
# ffmpeg's V4L2 mem2mem decoders, unmodified, decode every test stream
# through the decoder node; each frame's MD5 (NV12, visible size) equals the
# host software decoder's.
failures=0
for stream in h264.h264 hevc.hevc vp8.ivf vp9.ivf reschange.h264; do
	case "$stream" in
	*.h264) codec=h264_v4l2m2m ;;
	*.hevc) codec=hevc_v4l2m2m ;;
	vp8.*) codec=vp8_v4l2m2m ;;
	vp9.*) codec=vp9_v4l2m2m ;;
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
		-f framemd5 "$RESULTS/$name.framemd5" \
		>"$RESULTS/$name.log" 2>&1 || echo "# $codec exit $?" >>"$RESULTS/$name.log"
	grep -v '^#' "$RESULTS/$name.framemd5" 2>/dev/null |
		awk -F', *' '{ print $NF }' >"$RESULTS/$name.md5"
	if cmp -s "$TESTDATA/$name.md5" "$RESULTS/$name.md5"; then
		echo "ok - $name: $(wc -l <"$RESULTS/$name.md5") frames bit-exact"
	else
		echo "not ok - $name: $(wc -l <"$RESULTS/$name.md5") frames decoded," \
			"$(wc -l <"$TESTDATA/$name.md5") expected," \
			"first mismatch at line $(cmp "$TESTDATA/$name.md5" "$RESULTS/$name.md5" 2>&1 | sed -n 's/.* line \([0-9]*\).*/\1/p')"
		cat "$RESULTS/$name.log"
		failures=$((failures + 1))
	fi
done
[ "$failures" -eq 0 ]
