# Devices of the x86_64 QEMU the harness builds: QEMU's default set (partial
# sets do not hold together in 10.2: ACPI needs CXL, CXL needs the PCIe root
# port, ...). Listed here are what the harness uses; the build fails if one
# of them cannot be enabled.
CONFIG_Q35=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_9P=y
CONFIG_VIRTIO_RNG=y
CONFIG_VHOST_USER_TEST=y
CONFIG_SERIAL_ISA=y
