#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debian-rt
# needs-config: CONFIG_INTEL_IOMMU
# devices: both
# qemu: patched
# iommu: translated
# module: virtio_video_m2m
# timeout: 300
# expect: pass
#
# A virtual IOMMU that translates DMA for the video devices' PCI functions.
# The devices read guest-physical addresses (they do not offer
# VIRTIO_F_ACCESS_PLATFORM), while the driver hands them the DMA addresses
# vb2 mapped through the IOMMU: both probes must refuse with a message that
# says what to do, leave no node behind, and let the module unload.
# (Debian's RT kernel only: the debug kernel has no CONFIG_INTEL_IOMMU.)
failures=0
# verdict NAME: a TAP line for the check just run, whose status is in $ok.
verdict() {
	if [ "$ok" = yes ]; then
		echo "ok - $1"
	else
		echo "not ok - $1"
		failures=$((failures + 1))
	fi
}

ok=no && dmesg | grep -q 'iommu: Default domain type: Translated' && ok=yes
verdict "the guest translates DMA through the IOMMU"
refusals=$(dmesg | grep -c 'virtio_video_m2m .*an IOMMU translates for .*put it in passthrough' || true)
ok=no && [ "$refusals" -eq 2 ] && ok=yes
verdict "both devices refused, naming the fix (found $refusals)"
nodes=0
for d in /sys/class/video4linux/video*; do
	[ -e "$d/name" ] || continue
	case "$(cat "$d/name")" in
	"virtio-video decoder"* | dw100) nodes=$((nodes + 1)) ;;
	esac
done
ok=no && [ "$nodes" -eq 0 ] && ok=yes
verdict "no video node registered (found $nodes)"
ok=no && rmmod virtio_video_m2m && ok=yes
verdict "the module unloads"
dmesg | grep -e 'virtio_video_m2m' -e 'iommu: Default domain' | sed 's/^/# /'
[ "$failures" -eq 0 ]
