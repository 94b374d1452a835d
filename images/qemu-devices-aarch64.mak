# Devices of the aarch64 QEMU the harness builds (patched variant only):
# QEMU's default set, as for x86_64. Listed here are what the harness uses;
# the build fails if one of them cannot be enabled.
CONFIG_FSL_IMX8MP_EVK=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_9P=y
CONFIG_VIRTIO_RNG=y
