/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What every V4L2 mem2mem node of the driver does the same way: probe and
 * its unwind, registration of the video device, the m2m device and the
 * media controller, removal, the last reference's release, the common
 * half of the vb2 queues, open and release of a file, and querycap. A node
 * embeds &struct vvm_node and describes what differs in &struct
 * vvm_node_ops.
 *
 * A node's context (one per open file) begins with its &struct v4l2_fh:
 * the node layer hands that fh to the m2m context and to both vb2 queues
 * as their priv, which the node's callbacks read as its context. Each node
 * checks the layout with static_assert().
 */
#ifndef VVM_NODE_H
#define VVM_NODE_H

#include <media/media-device.h>
#include <media/v4l2-device.h>
#include <media/v4l2-fh.h>
#include <media/v4l2-mem2mem.h>

#include "vvm_core.h"

struct vvm_node;

/**
 * struct vvm_node_ops - what differs between the nodes
 * @driver: driver name in querycap and in the media device.
 * @card: card name in querycap; NULL for the video device's name.
 * @model: media device model.
 * @function: MEDIA_ENT_F_PROC_VIDEO_* of the node's processing entity.
 * @ioctl_ops: the node's ioctls (querycap may be vvm_node_querycap()).
 * @m2m_ops: mem2mem callbacks.
 * @media_ops: media device callbacks (the Request API), or NULL.
 * @core_ops: core callbacks (death, revival, liveness ping).
 * @vq_names: virtqueue names.
 * @nvqs: number of virtqueues.
 * @qops: vb2 callbacks of both queues.
 * @buf_struct_size: size of the node's buffer, which begins with a
 *	&struct v4l2_m2m_buffer.
 * @output_requests: the OUTPUT queue takes buffers in requests.
 * @setup: optional; runs once the device is DRIVER_OK and before the node
 *	is registered (event buffers, capability queries). Returns 0 or a
 *	negative errno, which fails the probe.
 * @free: frees the structure embedding the node; called once the core is
 *	released, or when the probe fails.
 * @ctx_alloc: allocates a context with its defaults for an open of the node
 *	and returns its fh, not initialised yet, or an ERR_PTR(). Called under
 *	the video device's lock, if the node has one.
 * @ctx_open: sets up the rest of a context whose fh and m2m context exist
 *	(controls, device-side state). Returns 0 or a negative errno; on
 *	failure @ctx_free still follows and undoes what was set up.
 * @ctx_close: optional; the first step of a release, without locks: stop
 *	work that may take the node's locks.
 * @ctx_free: frees a context after its m2m context has gone, under the
 *	video device's lock if the node has one. It also gets contexts that
 *	@ctx_open set up in part, or not at all.
 * @queue_lock: optional; the lock of a context's vb2 queues. Without it,
 *	the video device's lock.
 */
struct vvm_node_ops {
	const char *driver;
	const char *card;
	const char *model;
	u32 function;
	const struct v4l2_ioctl_ops *ioctl_ops;
	const struct v4l2_m2m_ops *m2m_ops;
	const struct media_device_ops *media_ops;
	const struct vvm_core_ops *core_ops;
	const char * const *vq_names;
	unsigned int nvqs;
	const struct vb2_ops *qops;
	unsigned int buf_struct_size;
	bool output_requests;

	int (*setup)(struct vvm_node *node);
	void (*free)(struct vvm_node *node);
	struct v4l2_fh *(*ctx_alloc)(struct vvm_node *node);
	int (*ctx_open)(struct v4l2_fh *fh);
	void (*ctx_close)(struct v4l2_fh *fh);
	void (*ctx_free)(struct v4l2_fh *fh);
	struct mutex *(*queue_lock)(struct v4l2_fh *fh);
};

/**
 * struct vvm_node - one V4L2 mem2mem node on one virtio device
 * @core: the device's core; vdev->priv points at it.
 * @v4l2_dev: its reference count keeps the node's memory, and a hold on the
 *	virtio device, until the last open file is closed.
 * @vfd: the video device. Before vvm_node_probe() the node sets @vfd.name
 *	and, if its ioctls share one device-wide lock, @vfd.lock.
 * @mdev: the media device.
 * @m2m_dev: the mem2mem device.
 * @ops: what differs between the nodes.
 */
struct vvm_node {
	struct vvm_core core;
	struct v4l2_device v4l2_dev;
	struct video_device vfd;
	struct media_device mdev;
	struct v4l2_m2m_dev *m2m_dev;
	const struct vvm_node_ops *ops;
};

/**
 * vvm_node_probe() - bring a node up on a virtio device
 * @node: the node, zeroed but for @node->vfd.name and @node->vfd.lock (and
 *	@node->core.premapped), inside memory @ops->free frees.
 * @vdev: the virtio device being probed.
 * @ops: the node's description.
 *
 * Finds the virtqueues, sets DRIVER_OK, runs @ops->setup and registers the
 * video device, the m2m entities and the media device.
 *
 * Return: 0, or a negative errno once everything, @node included, is undone.
 */
int vvm_node_probe(struct vvm_node *node, struct virtio_device *vdev,
		   const struct vvm_node_ops *ops);

/**
 * vvm_node_remove() - unregister the node and fail all its work
 * @vdev: the device vvm_node_probe() bound.
 *
 * Open files may outlive this call: their calls fail with -ENODEV, and the
 * node's memory goes when the last of them is closed.
 */
void vvm_node_remove(struct virtio_device *vdev);

/**
 * vvm_node_querycap() - VIDIOC_QUERYCAP of every node
 * @file: the open file.
 * @priv: unused.
 * @cap: filled with the node's driver and card names and the bus info of
 *	the virtio function.
 *
 * Return: 0.
 */
int vvm_node_querycap(struct file *file, void *priv,
		      struct v4l2_capability *cap);

/**
 * vvm_node_from_core() - the node a core belongs to
 * @core: &vvm_node.core.
 *
 * Return: the node.
 */
static inline struct vvm_node *vvm_node_from_core(struct vvm_core *core)
{
	return container_of(core, struct vvm_node, core);
}

#endif /* VVM_NODE_H */
