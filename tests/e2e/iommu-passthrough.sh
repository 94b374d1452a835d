#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kernels: debian-rt
# needs-config: CONFIG_INTEL_IOMMU
# devices: both
# qemu: patched
# iommu: passthrough
# module: virtio_video_m2m
# data: streams
# timeout: 900
# expect: pass
#
# A virtual IOMMU with the guest's devices in passthrough (identity) domains,
# the setting docs/guest-driver.md tells users of an IOMMU to choose: both
# nodes bind, a stream decodes bit-exact and a dewarp job returns its input
# (same format, identity map). Debian's RT kernel only: the debug kernel has
# no CONFIG_INTEL_IOMMU.
. "$REPO/tests/clients/decode-lib.sh"
. "$REPO/tests/clients/dewarp-lib.sh"
DW_CLIENT=$(dw_client)

if dmesg | grep -q 'iommu: Default domain type: Passthrough'; then
	echo "ok - the guest keeps its devices in passthrough domains"
else
	echo "not ok - no passthrough IOMMU domain in the guest"
	dw_failures=$((dw_failures + 1))
fi
decode_compare h264.h264 || dw_failures=$((dw_failures + 1))
head -c $((320 * 240 * 3 / 2)) /dev/urandom >/tmp/in.raw
dw_run "NV12 identity" --src NV12:320x240 --dst NV12:320x240 \
	--in /tmp/in.raw --out /tmp/out.raw &&
	dw_same "NV12 identity returns the input" /tmp/in.raw /tmp/out.raw
dw_done
