#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debug-rt debian-rt
# devices: decoder,dewarper
# qemu: patched
# module: virtio_video_m2m
# data: streams
# timeout: 400
# expect: pass
#
# Device removal mid-stream fails in-flight work like a backend death:
# - rmmod while a stream runs is refused (the open file holds the module)
#   and returns;
# - unbinding the driver from the dewarper mid-stream (what rmmod does once
#   files are closed) makes the blocked DQBUF return; from then on every
#   call on the file fails with ENODEV, and close() returns;
# - PCI hot-unplug of the decoder through QEMU's monitor (`device_del`)
#   mid-decode: the blocked poll() returns, the decode fails, the function
#   goes away. The debug-rt kernel has no PCI hotplug support; there the
#   guest removes the PCI function itself (sysfs `remove`), which runs the
#   same driver path.
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
	[ "$rmmod_ok" -eq 1 -a "$rmmod_ms" -lt 5000 ]
fault_check "the dewarper node is gone" [ -z "$(fault_node dw100)" ]

# Hot-unplug of the decoder mid-decode.
unplug_decoder() {
	if [ -n "$(ls /sys/bus/pci/slots 2>/dev/null)" ]; then
		fault_check "device_del sent" host_do unplug decoder
	else
		echo "# no PCI hotplug slots in this kernel: removing the function from the guest"
		echo 1 >"/sys/bus/pci/devices/$decoder_pci/remove" &
	fi
}

decoder_pci=$(basename "$(readlink -f "/sys/class/video4linux/$(basename "$(fault_node "virtio-video decoder")")/device/..")")
echo "# decoder PCI function: $decoder_pci"
fault_round "virtio-video decoder" unplug-decoder unplug_decoder "$BOUND" \
	--decode "$TESTDATA/h264.h264"
n=0
while [ -e "/sys/bus/pci/devices/$decoder_pci" ] && [ "$n" -lt 100 ]; do
	n=$((n + 1))
	sleep 0.1
done
fault_check "the decoder's PCI function is gone" [ ! -e "/sys/bus/pci/devices/$decoder_pci" ]
fault_check "rmmod succeeds" rmmod virtio_video_m2m
fault_done
