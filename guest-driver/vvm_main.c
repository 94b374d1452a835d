// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_video_m2m: V4L2 mem2mem nodes for virtio video devices.
 */
#include <linux/iommu.h>
#include <linux/module.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include "vvm_decoder.h"
#include "vvm_dewarper.h"
#include "vvm_node.h"
#include "vvm_virtio_video.h"

static const struct virtio_device_id vvm_id_table[] = {
	{ VIRTIO_ID_VIDEO_DECODER, VIRTIO_DEV_ANY_ID },
	{ VIRTIO_ID_DEWARPER, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, vvm_id_table);

static int vvm_probe(struct virtio_device *vdev)
{
	switch (vdev->id.device) {
	case VIRTIO_ID_VIDEO_DECODER:
		return vvm_decoder_probe(vdev);
	case VIRTIO_ID_DEWARPER:
		return vvm_dewarper_probe(vdev);
	default:
		return -ENODEV;
	}
}

/*
 * Every field of the protocol is little-endian, which only a device that
 * offers VIRTIO_F_VERSION_1 promises.
 *
 * With indirect descriptors the ring allocates a table per chain on add and
 * frees it on completion, which the core would have to do under its raw
 * spinlock, and PREEMPT_RT forbids allocating or freeing there. Every
 * scatterlist entry takes a ring slot instead.
 *
 * With VIRTIO_F_ACCESS_PLATFORM the ring maps every entry through the DMA
 * API when it is added and unmaps it when it comes back (IOVA allocation,
 * swiotlb bounce copies of whole frames), again under the raw spinlock:
 * refused. Without it the device reads guest-physical addresses, which the
 * DMA addresses vb2 hands the driver are only while no IOMMU translates for
 * the transport's device: a translating vIOMMU is refused too.
 */
static int vvm_validate(struct virtio_device *vdev)
{
	struct device *dma_dev = vdev->dev.parent;
	struct iommu_domain *domain;

	__virtio_clear_bit(vdev, VIRTIO_RING_F_INDIRECT_DESC);
	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1)) {
		dev_err(&vdev->dev,
			"the device does not offer VIRTIO_F_VERSION_1: a legacy device's fields are not little-endian\n");
		return -ENODEV;
	}
	if (virtio_has_feature(vdev, VIRTIO_F_ACCESS_PLATFORM)) {
		dev_err(&vdev->dev,
			"VIRTIO_F_ACCESS_PLATFORM is not supported: start the device without iommu_platform=on\n");
		return -EINVAL;
	}
	domain = dma_dev ? iommu_get_domain_for_dev(dma_dev) : NULL;
	if (domain && domain->type != IOMMU_DOMAIN_IDENTITY) {
		dev_err(&vdev->dev,
			"an IOMMU translates for %s, but the device reads guest-physical addresses: put it in passthrough (iommu.passthrough=1 or iommu=pt)\n",
			dev_name(dma_dev));
		return -EINVAL;
	}
	return 0;
}

static unsigned int vvm_features[] = {
	VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES,
	VIRTIO_VIDEO_F_RESOURCE_NON_CONTIG,
};

static struct virtio_driver vvm_driver = {
	.driver.name = KBUILD_MODNAME,
	.id_table = vvm_id_table,
	.feature_table = vvm_features,
	.feature_table_size = ARRAY_SIZE(vvm_features),
	.validate = vvm_validate,
	.probe = vvm_probe,
	.remove = vvm_node_remove,
};
module_virtio_driver(vvm_driver);

MODULE_DESCRIPTION("V4L2 mem2mem nodes for virtio video devices");
MODULE_LICENSE("GPL");
