// SPDX-License-Identifier: GPL-2.0
/*
 * The V4L2 mem2mem plumbing every node of the driver shares (vvm_node.h).
 */
#include <linux/device.h>
#include <linux/err.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/virtio.h>
#include <media/v4l2-dev.h>
#include <media/v4l2-ioctl.h>
#include <media/videobuf2-dma-sg.h>

#include "vvm_node.h"

/* ---- Queues -------------------------------------------------------------- */

static struct mutex *vvm_node_queue_lock(struct vvm_node *node,
					 struct v4l2_fh *fh)
{
	return node->ops->queue_lock ? node->ops->queue_lock(fh) :
				       node->vfd.lock;
}

/*
 * Both queues carry scatter-gather buffers the device reads at the DMA
 * addresses of the virtio function, and pass timestamps from a bitstream
 * or source buffer on to the pictures made of it.
 */
static int vvm_node_queue_init(void *priv, struct vb2_queue *src,
			       struct vb2_queue *dst)
{
	struct v4l2_fh *fh = priv;
	struct vvm_node *node = container_of(fh->vdev, struct vvm_node, vfd);
	const struct vvm_node_ops *ops = node->ops;
	struct vb2_queue *qs[] = { src, dst };
	unsigned int i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(qs); i++) {
		struct vb2_queue *q = qs[i];

		q->type = q == src ? V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE :
				     V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;
		q->io_modes = VB2_MMAP | VB2_DMABUF;
		q->drv_priv = priv;
		q->buf_struct_size = ops->buf_struct_size;
		q->ops = ops->qops;
		q->mem_ops = &vb2_dma_sg_memops;
		q->timestamp_flags = V4L2_BUF_FLAG_TIMESTAMP_COPY;
		q->lock = vvm_node_queue_lock(node, fh);
		q->dev = vvm_core_dma_device(&node->core);
		q->supports_requests = q == src && ops->output_requests;
		ret = vb2_queue_init(q);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- File operations ----------------------------------------------------- */

/*
 * Under the video device's lock, if the node has one. The m2m context goes
 * first: stopping its queues may still signal events to the fh.
 */
static void vvm_node_ctx_destroy(struct vvm_node *node, struct v4l2_fh *fh)
{
	struct mutex *q_lock = fh->m2m_ctx ? fh->m2m_ctx->q_lock : NULL;

	if (fh->m2m_ctx) {
		if (q_lock != node->vfd.lock)
			mutex_lock(q_lock);
		v4l2_m2m_ctx_release(fh->m2m_ctx);
		if (q_lock != node->vfd.lock)
			mutex_unlock(q_lock);
		fh->m2m_ctx = NULL;
	}
	v4l2_fh_exit(fh);
	node->ops->ctx_free(fh);
}

/* Under the video device's lock, if the node has one. */
static int vvm_node_open_locked(struct vvm_node *node, struct file *file)
{
	struct v4l2_fh *fh;
	int ret;

	/* A dead device fails at once, and may start its revival. */
	ret = vvm_core_check_alive(&node->core);
	if (ret)
		return ret;

	fh = node->ops->ctx_alloc(node);
	if (IS_ERR(fh))
		return PTR_ERR(fh);
	v4l2_fh_init(fh, &node->vfd);
	file->private_data = fh;

	fh->m2m_ctx = v4l2_m2m_ctx_init(node->m2m_dev, fh, vvm_node_queue_init);
	if (IS_ERR(fh->m2m_ctx)) {
		ret = PTR_ERR(fh->m2m_ctx);
		fh->m2m_ctx = NULL;
		goto destroy;
	}
	ret = node->ops->ctx_open(fh);
	if (ret)
		goto destroy;
	v4l2_fh_add(fh);
	return 0;

destroy:
	vvm_node_ctx_destroy(node, fh);
	file->private_data = NULL;
	return ret;
}

static int vvm_node_open(struct file *file)
{
	struct vvm_node *node = video_drvdata(file);
	struct mutex *lock = node->vfd.lock;
	int ret;

	if (lock && mutex_lock_interruptible(lock))
		return -ERESTARTSYS;
	ret = vvm_node_open_locked(node, file);
	if (lock)
		mutex_unlock(lock);
	return ret;
}

static int vvm_node_release(struct file *file)
{
	struct vvm_node *node = video_drvdata(file);
	struct v4l2_fh *fh = file->private_data;
	struct mutex *lock = node->vfd.lock;

	if (node->ops->ctx_close)
		node->ops->ctx_close(fh);
	if (lock)
		mutex_lock(lock);
	v4l2_fh_del(fh);
	vvm_node_ctx_destroy(node, fh);
	if (lock)
		mutex_unlock(lock);
	return 0;
}

static const struct v4l2_file_operations vvm_node_fops = {
	.owner = THIS_MODULE,
	.open = vvm_node_open,
	.release = vvm_node_release,
	.poll = v4l2_m2m_fop_poll,
	.unlocked_ioctl = video_ioctl2,
	.mmap = v4l2_m2m_fop_mmap,
};

/* ---- querycap ------------------------------------------------------------ */

/*
 * The location of the virtio function: "PCI:<address>" for virtio-pci, as
 * a PCI media device reports it, else the virtio device on the platform
 * bus. The video device and the media device report the same.
 */
static void vvm_node_bus_info(struct vvm_node *node, char *buf, size_t size)
{
	struct device *vdev_dev = &node->core.vdev->dev;
	struct device *parent = vdev_dev->parent;

	if (parent && dev_is_pci(parent))
		snprintf(buf, size, "PCI:%s", dev_name(parent));
	else
		snprintf(buf, size, "platform:%s", dev_name(vdev_dev));
}

int vvm_node_querycap(struct file *file, void *priv,
		      struct v4l2_capability *cap)
{
	struct vvm_node *node = video_drvdata(file);
	const char *card = node->ops->card ?: node->vfd.name;

	strscpy(cap->driver, node->ops->driver, sizeof(cap->driver));
	strscpy(cap->card, card, sizeof(cap->card));
	vvm_node_bus_info(node, cap->bus_info, sizeof(cap->bus_info));
	return 0;
}

/* ---- Registration -------------------------------------------------------- */

/* Last reference to the node gone: every open file is closed. */
static void vvm_node_v4l2_release(struct v4l2_device *v4l2_dev)
{
	struct vvm_node *node = container_of(v4l2_dev, struct vvm_node,
					     v4l2_dev);
	struct device *vdev_dev = &node->core.vdev->dev;

	vvm_core_release(&node->core);
	v4l2_m2m_release(node->m2m_dev);
	media_device_cleanup(&node->mdev);
	node->ops->free(node);
	put_device(vdev_dev);
}

static void vvm_node_media_init(struct vvm_node *node)
{
	struct media_device *mdev = &node->mdev;

	mdev->dev = &node->core.vdev->dev;
	strscpy(mdev->model, node->ops->model, sizeof(mdev->model));
	strscpy(mdev->driver_name, node->ops->driver, sizeof(mdev->driver_name));
	vvm_node_bus_info(node, mdev->bus_info, sizeof(mdev->bus_info));
	mdev->ops = node->ops->media_ops;
	media_device_init(mdev);
	node->v4l2_dev.mdev = mdev;
}

/* The video device, its m2m entities, then the media device. */
static int vvm_node_register_video(struct vvm_node *node)
{
	struct video_device *vfd = &node->vfd;
	int ret;

	vfd->fops = &vvm_node_fops;
	vfd->ioctl_ops = node->ops->ioctl_ops;
	vfd->release = video_device_release_empty;
	vfd->v4l2_dev = &node->v4l2_dev;
	vfd->vfl_dir = VFL_DIR_M2M;
	vfd->device_caps = V4L2_CAP_VIDEO_M2M_MPLANE | V4L2_CAP_STREAMING;
	video_set_drvdata(vfd, node);

	ret = video_register_device(vfd, VFL_TYPE_VIDEO, -1);
	if (ret)
		return ret;
	ret = v4l2_m2m_register_media_controller(node->m2m_dev, vfd,
						 node->ops->function);
	if (ret)
		goto unreg_video;
	ret = media_device_register(&node->mdev);
	if (ret)
		goto unreg_mc;
	return 0;

unreg_mc:
	v4l2_m2m_unregister_media_controller(node->m2m_dev);
unreg_video:
	video_unregister_device(vfd);
	return ret;
}

int vvm_node_probe(struct vvm_node *node, struct virtio_device *vdev,
		   const struct vvm_node_ops *ops)
{
	int ret;

	node->ops = ops;
	ret = vvm_core_init(&node->core, vdev, ops->core_ops, ops->nvqs,
			    ops->vq_names);
	if (ret) {
		ops->free(node);
		return ret;
	}
	vvm_core_ready(&node->core);
	ret = ops->setup ? ops->setup(node) : 0;
	if (ret)
		goto remove_core;

	node->m2m_dev = v4l2_m2m_init(ops->m2m_ops);
	if (IS_ERR(node->m2m_dev)) {
		ret = PTR_ERR(node->m2m_dev);
		goto remove_core;
	}
	vvm_node_media_init(node);
	ret = v4l2_device_register(&vdev->dev, &node->v4l2_dev);
	if (ret)
		goto release_m2m;
	/*
	 * From here on the node's memory goes with its last reference, and
	 * so does the node's hold on the virtio device: open files outlive
	 * removal, and their m2m work and logging still reach the device
	 * structure after v4l2_device_unregister() dropped its own hold.
	 */
	get_device(&vdev->dev);
	node->v4l2_dev.release = vvm_node_v4l2_release;
	ret = vvm_node_register_video(node);
	if (ret) {
		vvm_core_remove(&node->core);
		v4l2_device_unregister(&node->v4l2_dev);
		v4l2_device_put(&node->v4l2_dev);
		return ret;
	}
	dev_info(&vdev->dev, "%s registered as %s\n", node->vfd.name,
		 video_device_node_name(&node->vfd));
	return 0;

release_m2m:
	media_device_cleanup(&node->mdev);
	v4l2_m2m_release(node->m2m_dev);
remove_core:
	vvm_core_remove(&node->core);
	vvm_core_release(&node->core);
	ops->free(node);
	return ret;
}

void vvm_node_remove(struct virtio_device *vdev)
{
	struct vvm_node *node = vvm_node_from_core(vdev->priv);

	media_device_unregister(&node->mdev);
	v4l2_m2m_unregister_media_controller(node->m2m_dev);
	video_unregister_device(&node->vfd);
	/* Fails every request on the device; open files see errors from now on. */
	vvm_core_remove(&node->core);
	v4l2_device_unregister(&node->v4l2_dev);
	v4l2_device_put(&node->v4l2_dev);
}
