# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
# Helpers for the data-set scripts; sourced, not run. A script that sources
# this file names it in an `# inputs:` line, so its data set is made again
# when the helpers change.

# ff ARGS...: the host's ffmpeg, quiet, overwriting its outputs.
ff() {
	ffmpeg -hide_banner -loglevel error -nostdin -y "$@"
}

# frame_md5s STREAM OUT: one MD5 per decoded frame of STREAM (the last field
# of `ffmpeg -f framemd5`, NV12 at the visible size) into OUT; fails when
# there is none.
frame_md5s() {
	ff -i "$1" -vf format=nv12 -fps_mode passthrough -f framemd5 - |
		grep -v '^#' | awk -F', *' '{ print $NF }' >"$2"
	[ -s "$2" ]
}

# be32 N: one big-endian 32-bit word as raw bytes.
be32() {
	# shellcheck disable=SC2059 # the format is the octal escapes built here
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) \
		$(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"
}

# hdr_records STREAM OUT COUNT: STREAM's packets, as ffmpeg's demuxer and
# parser split them, one per record in the framing
# `v4l2-ctl --stream-from-hdr` and `v4l2-compliance --stream-from-hdr` read:
# per buffer the big-endian fourcc 'Vhdr', then per plane a big-endian byte
# count and that many bytes. Fails unless the packets tile STREAM exactly, in
# order, and there are COUNT of them.
hdr_records() {
	ffprobe -v error -select_streams v:0 -show_entries packet=pos,size \
		-of csv=p=0 "$1" >"$2.units"
	next=0
	: >"$2"
	while IFS=, read -r size pos; do
		[ "$pos" -eq "$next" ] || {
			echo "$1: packet at $pos, expected $next" >&2
			return 1
		}
		{
			be32 $((0x72646856)) # v4l2_fourcc('V', 'h', 'd', 'r')
			be32 "$size"
			tail -c +$((pos + 1)) "$1" | head -c "$size"
		} >>"$2"
		next=$((pos + size))
	done <"$2.units"
	[ "$next" -eq "$(wc -c <"$1")" ] || {
		echo "$1: packets end at $next" >&2
		return 1
	}
	[ "$(wc -l <"$2.units")" -eq "$3" ] || {
		echo "$1: $(wc -l <"$2.units") packets, expected $3" >&2
		return 1
	}
	rm "$2.units"
}
