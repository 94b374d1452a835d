# Devices of the x86_64 QEMU the harness builds, on top of QEMU's defaults:
# the Q35 machine with virtio-pci, 9p for the guest root and the generic
# vhost-user device for the backends; the optional PCI devices, test devices
# and other boards are left out. (Starting from no devices at all does not
# link in 10.2: ACPI's CXL tables need the CXL code that only defaults enable.)
CONFIG_PCI_DEVICES=n
CONFIG_TEST_DEVICES=n
CONFIG_I440FX=n
CONFIG_ISAPC=n
CONFIG_MICROVM=n
CONFIG_NITRO_ENCLAVE=n
CONFIG_Q35=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_9P=y
CONFIG_VIRTIO_RNG=y
CONFIG_VHOST_USER_TEST=y
CONFIG_SERIAL_ISA=y
