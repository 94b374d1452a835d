/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Stateful V4L2 decoder node on a virtio-video v3 decoder device.
 */
#ifndef VVM_DECODER_H
#define VVM_DECODER_H

#include <linux/virtio.h>

#define VIRTIO_ID_VIDEO_DECODER 31

int vvm_decoder_probe(struct virtio_device *vdev);

#endif /* VVM_DECODER_H */
