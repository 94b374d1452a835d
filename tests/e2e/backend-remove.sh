#!/bin/sh
# kernels: debug-rt debian-rt
# devices: decoder,dewarper
# qemu: patched
# module: virtio_video_m2m
# data: streams
# timeout: 400
# expect: pass
#
# Device removal mid-stream fails in-flight work like a backend death:
# - rmmod while a stream runs is refused at once (the open file holds the
#   module) and the stream goes on;
# - unbinding the driver from the dewarper mid-stream (what rmmod does once
#   files are closed) makes the blocked DQBUF fail, every held buffer comes
#   back with V4L2_BUF_FLAG_ERROR, STREAMOFF and close() return;
# - PCI hot-unplug of the decoder through QEMU's monitor (`device_del`)
#   mid-decode ends the decode with an error. The debug-rt kernel has no
#   PCI hotplug support; there the guest removes the PCI function itself
#   (sysfs `remove`), which runs the same driver path.
# Then rmmod succeeds and nothing is left in D state.
. "$REPO/tests/clients/fault-lib.sh"
FAULT_CLIENT=$(fault_client)
BOUND=6

# A refused rmmod returns at once and does not disturb the stream.
rmmod_refused() {
	start=$(now_ms)
	if rmmod virtio_video_m2m 2>"$RESULTS/rmmod.log"; then
		echo "# rmmod succeeded under an open file"
		rmmod_ok=0
	else
		rmmod_ok=1
	fi
	rmmod_ms=$(($(now_ms) - start))
	sleep 1
	unbind_dewarper
}

unbind_dewarper() {
	dev=$(basename "$(readlink -f /sys/class/video4linux/"${node#/dev/}"/device)")
	echo "# unbinding $dev"
	echo "$dev" >/sys/bus/virtio/drivers/virtio_video_m2m/unbind
}

node=$(fault_node dw100)
fault_round dw100 unbind-dewarper rmmod_refused "$BOUND"
fault_check "rmmod under an open file refused in $rmmod_ms ms" \
	[ "$rmmod_ok" -eq 1 -a "$rmmod_ms" -lt 2000 ]
fault_check "the dewarper node is gone" [ -z "$(fault_node dw100)" ]

# Hot-unplug of the decoder mid-decode.
decoder_pci=$(basename "$(readlink -f "/sys/class/video4linux/$(basename "$(fault_node "virtio-video decoder")")/device/..")")
echo "# decoder PCI function: $decoder_pci"
progress=/tmp/progress
ffmpeg -hide_banner -loglevel error -nostdin -xerror -stream_loop -1 \
	-c:v h264_v4l2m2m -i "$TESTDATA/h264.h264" -f null - \
	-progress "$progress" >"$RESULTS/ffmpeg-unplug.log" 2>&1 &
pid=$!
n=0
until grep -qs '^frame=[1-9]' "$progress"; do
	n=$((n + 1))
	[ "$n" -le 600 ] || break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if [ -n "$(ls /sys/bus/pci/slots 2>/dev/null)" ]; then
	fault_check "device_del sent" host_do unplug decoder
else
	echo "# no PCI hotplug slots in this kernel: removing the function from the guest"
	echo 1 >"/sys/bus/pci/devices/$decoder_pci/remove" &
fi
fault_wait_exit "$pid" 30
fault_check "the decode failed (status $fault_status) ${fault_ms} ms after the removal" \
	[ "$fault_status" -ne 0 -a "$fault_status" -ne 255 ]
fault_check "within $((BOUND * 1000)) ms" [ "$fault_ms" -lt $((BOUND * 1000)) ]
n=0
while [ -e "/sys/bus/pci/devices/$decoder_pci" ] && [ "$n" -lt 100 ]; do
	n=$((n + 1))
	sleep 0.1
done
fault_check "the decoder's PCI function is gone" [ ! -e "/sys/bus/pci/devices/$decoder_pci" ]
fault_check "rmmod succeeds" rmmod virtio_video_m2m
fault_done
