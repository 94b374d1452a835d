// SPDX-License-Identifier: GPL-2.0
/*
 * DW100-compatible dewarper node on a virtio device.
 *
 * The V4L2 side mirrors the upstream dw100 driver's user API (formats,
 * limits, vertex map control, crop selection, Request API, media entity) so
 * that code written for the i.MX8MP DW100 runs unchanged. Each m2m job
 * becomes one descriptor chain (docs/protocol-dewarper.md); several jobs
 * may be in flight and complete in any order.
 */

#include <linux/kref.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/wait_bit.h>

#include <media/media-device.h>
#include <media/v4l2-ctrls.h>
#include <media/v4l2-device.h>
#include <media/v4l2-event.h>
#include <media/v4l2-ioctl.h>
#include <media/v4l2-mem2mem.h>
#include <media/videobuf2-dma-sg.h>

#include "vvm_core.h"
#include "vvm_dewarper.h"
#include "vvm_node.h"

#ifndef V4L2_CID_DW100_DEWARPING_16x16_VERTEX_MAP
#define V4L2_CID_DW100_DEWARPING_16x16_VERTEX_MAP (V4L2_CID_USER_DW100_BASE + 1)
#endif

/* Names a dw100 on silicon reports; libcamera finds the converter by them. */
#define VVM_DW_DRIVER_NAME	"dw100"
#define VVM_DW_CARD		"DW100 dewarper"

#define VVM_DW_MIN_W		176u
#define VVM_DW_MIN_H		144u
#define VVM_DW_MAX_W		4096u
#define VVM_DW_MAX_H		3072u
#define VVM_DW_STEP		8u
#define VVM_DW_DEF_W		640u
#define VVM_DW_DEF_H		480u
#define VVM_DW_BLOCK		16u

/* Jobs of one context on the virtqueue at once. */
#define VVM_DW_MAX_INFLIGHT	8

enum {
	VVM_DW_Q_SRC,
	VVM_DW_Q_DST,
};

enum {
	VVM_DW_FMT_OUTPUT = BIT(0),
	VVM_DW_FMT_CAPTURE = BIT(1),
};

struct vvm_dw_fmt {
	u32 fourcc;
	/* Fourcc of the single-plane format with the same component layout. */
	u32 wire_fourcc;
	u32 types;
	bool semi_planar;
};

static const struct vvm_dw_fmt vvm_dw_formats[] = {
	{ V4L2_PIX_FMT_NV16, V4L2_PIX_FMT_NV16,
	  VVM_DW_FMT_OUTPUT | VVM_DW_FMT_CAPTURE, true },
	{ V4L2_PIX_FMT_NV16M, V4L2_PIX_FMT_NV16,
	  VVM_DW_FMT_OUTPUT | VVM_DW_FMT_CAPTURE, true },
	{ V4L2_PIX_FMT_NV61, V4L2_PIX_FMT_NV61, VVM_DW_FMT_CAPTURE, true },
	{ V4L2_PIX_FMT_NV61M, V4L2_PIX_FMT_NV61, VVM_DW_FMT_CAPTURE, true },
	{ V4L2_PIX_FMT_YUYV, V4L2_PIX_FMT_YUYV,
	  VVM_DW_FMT_OUTPUT | VVM_DW_FMT_CAPTURE, false },
	{ V4L2_PIX_FMT_UYVY, V4L2_PIX_FMT_UYVY,
	  VVM_DW_FMT_OUTPUT | VVM_DW_FMT_CAPTURE, false },
	{ V4L2_PIX_FMT_NV12, V4L2_PIX_FMT_NV12,
	  VVM_DW_FMT_OUTPUT | VVM_DW_FMT_CAPTURE, true },
	{ V4L2_PIX_FMT_NV12M, V4L2_PIX_FMT_NV12,
	  VVM_DW_FMT_OUTPUT | VVM_DW_FMT_CAPTURE, true },
	{ V4L2_PIX_FMT_NV21, V4L2_PIX_FMT_NV21, VVM_DW_FMT_CAPTURE, true },
	{ V4L2_PIX_FMT_NV21M, V4L2_PIX_FMT_NV21, VVM_DW_FMT_CAPTURE, true },
};

struct vvm_dewarper {
	struct vvm_node node;
	struct v4l2_frmsize_stepwise frmsize;
	unsigned int vq_size;
	atomic_t next_context_id;

	/* Jobs on the virtqueue. */
	atomic_t on_device;
	/* Serialises sending with parking and retrying @deferred. */
	struct mutex send_lock;
	/*
	 * A job the full virtqueue could not take. Its mem2mem job stays
	 * running, which holds up the next ones, until a completion frees
	 * descriptors and it goes out.
	 */
	struct vvm_dw_job *deferred;
};

/*
 * A snapshot of the vertex map control, shared by the jobs that use it: the
 * device may read it after the control has changed again.
 */
struct vvm_dw_map {
	struct kref ref;
	u32 generation;
	u32 width;
	u32 height;
	size_t bytes;
	__le32 *entries;
};

/*
 * A vb2 buffer of either queue. A map set in the request of an OUTPUT
 * buffer is snapshotted when the request is queued and waits here for
 * device_run(); buf_finish() drops one the buffer never got to use.
 */
struct vvm_dw_buf {
	struct v4l2_m2m_buffer m2m;
	struct vvm_dw_map *map;
	/* The request's map could not be applied; the job fails. */
	int map_err;
};

struct vvm_dw_q_data {
	struct v4l2_pix_format_mplane pix;
	const struct vvm_dw_fmt *fmt;
	struct v4l2_rect crop;
	unsigned int sequence;
};

/*
 * Locking (docs/guest-driver.md, "Locking"): the V4L2 core holds a
 * context's control handler lock across the copy of a control's payload
 * from user memory, which a userfaultfd or FUSE page can make last forever.
 * So does anything that waits for that lock while holding the context's
 * vq_lock. Neither device_run() nor the completion path takes either of
 * them, and the node has no device-wide ioctl lock.
 */
struct vvm_dw_ctx {
	struct v4l2_fh fh;
	struct vvm_dewarper *dw;
	struct v4l2_ctrl_handler hdl;
	struct v4l2_ctrl *map_ctrl;
	/*
	 * Lock of both vb2 queues, taken by the V4L2 core for the queue
	 * ioctls (m2m_ctx->q_lock) and by the format and selection ioctls.
	 */
	struct mutex vq_lock;
	/* Serialises S_FMT, which may wait for the handler lock. */
	struct mutex fmt_lock;
	/*
	 * Formats change only while their queue has no buffers, so no job
	 * of the context exists; the crop changes while it streams.
	 */
	struct vvm_dw_q_data q_data[2];
	/*
	 * Guards the crop rectangles against device_run(), which reads the
	 * OUTPUT one without vq_lock; writers hold vq_lock too.
	 */
	spinlock_t crop_lock;
	u32 context_id;

	/* Generation of the latest snapshot; under the handler lock. */
	u32 map_generation;
	/*
	 * Snapshot of the control's value, taken when it is set (the
	 * caller's process pays for the copy), and whether a request or
	 * STREAMON has taken it since. Under map_lock.
	 */
	struct vvm_dw_map *map_set;
	bool map_set_new;
	/* Guards map_set and map_set_new; never held for long. */
	spinlock_t map_lock;
	/* Snapshot the next jobs use; only m2m callbacks touch it. */
	struct vvm_dw_map *map;
	/* Generation the device answered for; 0 when it may not know the map. */
	atomic_t map_known;

	/* Jobs counted against VVM_DW_MAX_INFLIGHT. */
	atomic_t queued;
	/* Jobs whose completion has not returned yet; the context outlives them. */
	atomic_t inflight;
	/*
	 * Jobs in the order device_run() built them. The device may complete
	 * them in any order; their buffers go back to userspace in this one.
	 */
	struct list_head in_order;
	/* Guards in_order and the done/state fields of the jobs on it. */
	spinlock_t in_order_lock;
};

/* The node layer hands the fh to m2m and vb2 as the context (vvm_node.h). */
static_assert(offsetof(struct vvm_dw_ctx, fh) == 0);

/*
 * One m2m job on its way through the device. The scatterlists point at the
 * vb2 planes, the map snapshot and the header/status below, all of which
 * stay valid until the request completes.
 */
struct vvm_dw_job {
	struct vvm_request req;
	struct vvm_dw_ctx *ctx;
	struct vb2_v4l2_buffer *src;
	struct vb2_v4l2_buffer *dst;
	struct vvm_dw_map *map;
	bool with_map;
	/* Already sent again with the map after ERR_MAP_REQUIRED. */
	bool resent;
	u32 dst_bytes;
	/* On ctx->in_order; done and state are under ctx->in_order_lock. */
	struct list_head in_order_node;
	bool done;
	enum vb2_buffer_state state;

	struct vvm_dw_job_hdr hdr;
	struct vvm_dw_status status;
	struct scatterlist hdr_sg;
	struct scatterlist status_sg;
	struct scatterlist *map_sg;
	struct scatterlist *src_sg[VIDEO_MAX_PLANES];
	struct scatterlist *dst_sg[VIDEO_MAX_PLANES];
	struct scatterlist *sg_pool;
};

/* A job the device answers at once, to see whether it is alive again. */
struct vvm_dw_probe {
	struct vvm_request req;
	struct vvm_dw_job_hdr hdr;
	struct vvm_dw_status status;
	struct scatterlist hdr_sg;
	struct scatterlist status_sg;
};

static struct vvm_dw_ctx *vvm_dw_fh_to_ctx(struct file *file)
{
	return container_of(file->private_data, struct vvm_dw_ctx, fh);
}

static struct vvm_dw_buf *vvm_dw_vbuf_to_buf(struct vb2_v4l2_buffer *vbuf)
{
	return container_of(vbuf, struct vvm_dw_buf, m2m.vb);
}

static struct device *vvm_dw_ctx_dev(struct vvm_dw_ctx *ctx)
{
	return &ctx->dw->node.core.vdev->dev;
}

static u32 vvm_dw_fmt_type(enum v4l2_buf_type type)
{
	return V4L2_TYPE_IS_OUTPUT(type) ? VVM_DW_FMT_OUTPUT :
					   VVM_DW_FMT_CAPTURE;
}

static const struct vvm_dw_fmt *vvm_dw_find_fmt(u32 fourcc, u32 types)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(vvm_dw_formats); i++)
		if (vvm_dw_formats[i].fourcc == fourcc &&
		    (vvm_dw_formats[i].types & types))
			return &vvm_dw_formats[i];
	return NULL;
}

static struct vvm_dw_q_data *vvm_dw_q_data(struct vvm_dw_ctx *ctx,
					   enum v4l2_buf_type type)
{
	return &ctx->q_data[V4L2_TYPE_IS_OUTPUT(type) ? VVM_DW_Q_SRC :
							VVM_DW_Q_DST];
}

static u32 vvm_dw_vertices(u32 length)
{
	return DIV_ROUND_UP(length, VVM_DW_BLOCK) + 1;
}

#ifdef VVM_DEBUG
/*
 * Debug builds only (make VVM_DEBUG=y): the next jobs go out with a reserved
 * header field set, which the device must reject, so that tests can check
 * that a rejected job fails alone.
 */
static unsigned int debug_malformed_jobs;
module_param(debug_malformed_jobs, uint, 0644);
MODULE_PARM_DESC(debug_malformed_jobs,
		 "Debug: send this many next dewarper jobs malformed");

static void vvm_dw_debug_corrupt(struct vvm_dw_job *job)
{
	unsigned int left = READ_ONCE(debug_malformed_jobs);

	if (left) {
		WRITE_ONCE(debug_malformed_jobs, left - 1);
		job->hdr.reserved[0] = cpu_to_le32(1);
	}
}
#else
static void vvm_dw_debug_corrupt(struct vvm_dw_job *job)
{
}
#endif

/* ---- Vertex map ---------------------------------------------------------- */

static void vvm_dw_map_release(struct kref *ref)
{
	struct vvm_dw_map *map = container_of(ref, struct vvm_dw_map, ref);

	kvfree(map->entries);
	kfree(map);
}

static void vvm_dw_map_put(struct vvm_dw_map *map)
{
	if (map)
		kref_put(&map->ref, vvm_dw_map_release);
}

/*
 * Publishes @values (the control's new or current value) as the context's
 * latest map. Called with the control handler's lock held, from the ioctl
 * that set the value: the copy is paid for by the process that asked.
 */
static int vvm_dw_map_publish(struct vvm_dw_ctx *ctx, const u32 *values)
{
	struct v4l2_ctrl *ctrl = ctx->map_ctrl;
	struct vvm_dw_map *map, *old;
	u32 i;

	map = kzalloc(sizeof(*map), GFP_KERNEL);
	if (!map)
		return -ENOMEM;
	kref_init(&map->ref);
	map->width = ctrl->dims[0];
	map->height = ctrl->dims[1];
	map->bytes = array_size(ctrl->elems, sizeof(u32));
	map->entries = kvmalloc(map->bytes, GFP_KERNEL);
	if (!map->entries) {
		kfree(map);
		return -ENOMEM;
	}
	for (i = 0; i < ctrl->elems; i++)
		map->entries[i] = cpu_to_le32(values[i]);

	/* 0 means "no map known to the device". */
	if (++ctx->map_generation == 0)
		ctx->map_generation = 1;
	map->generation = ctx->map_generation;

	spin_lock(&ctx->map_lock);
	old = ctx->map_set;
	ctx->map_set = map;
	ctx->map_set_new = true;
	spin_unlock(&ctx->map_lock);
	vvm_dw_map_put(old);
	return 0;
}

/* The latest map, if nothing took it yet (@all: even if something did). */
static struct vvm_dw_map *vvm_dw_map_take(struct vvm_dw_ctx *ctx, bool all)
{
	struct vvm_dw_map *map = NULL;

	spin_lock(&ctx->map_lock);
	if (ctx->map_set && (all || ctx->map_set_new)) {
		map = ctx->map_set;
		kref_get(&map->ref);
		ctx->map_set_new = false;
	}
	spin_unlock(&ctx->map_lock);
	return map;
}

/* Publishes the control's current value, after its dimensions changed. */
static int vvm_dw_map_publish_cur(struct vvm_dw_ctx *ctx)
{
	int ret;

	v4l2_ctrl_lock(ctx->map_ctrl);
	ret = vvm_dw_map_publish(ctx, ctx->map_ctrl->p_cur.p_u32);
	v4l2_ctrl_unlock(ctx->map_ctrl);
	return ret;
}

/* Runs with the handler lock held, in the ioctl or request queueing. */
static int vvm_dw_s_ctrl(struct v4l2_ctrl *ctrl)
{
	struct vvm_dw_ctx *ctx = container_of(ctrl->handler, struct vvm_dw_ctx,
					      hdl);

	if (ctrl->id == V4L2_CID_DW100_DEWARPING_16x16_VERTEX_MAP)
		return vvm_dw_map_publish(ctx, ctrl->p_new.p_u32);
	return 0;
}

static const struct v4l2_ctrl_ops vvm_dw_ctrl_ops = {
	.s_ctrl = vvm_dw_s_ctrl,
};

/*
 * The default value is the identity map as the dw100 driver builds it: the
 * source size in UQ12.4 split into equal steps over the vertices of the
 * destination grid, clamped to the source edge.
 */
static void vvm_dw_map_init(const struct v4l2_ctrl *ctrl, u32 from_idx,
			    union v4l2_ctrl_ptr ptr)
{
	struct vvm_dw_ctx *ctx = container_of(ctrl->handler, struct vvm_dw_ctx,
					      hdl);
	const struct v4l2_pix_format_mplane *src =
		&ctx->q_data[VVM_DW_Q_SRC].pix;
	u32 mw = ctrl->dims[0], mh = ctrl->dims[1];
	u16 qsw = (src->width & 0xfff) << 4;
	u16 qsh = (src->height & 0xfff) << 4;
	u16 qdx = qsw / (mw - 1);
	u16 qdy = qsh / (mh - 1);
	u32 idx, qx, qy;

	for (idx = from_idx; idx < ctrl->elems; idx++) {
		qy = min_t(u32, (idx / mw) * qdy, qsh);
		qx = min_t(u32, (idx % mw) * qdx, qsw);
		ptr.p_u32[idx] = (qy << 16) | qx;
	}
}

static const struct v4l2_ctrl_type_ops vvm_dw_map_type_ops = {
	.equal = v4l2_ctrl_type_op_equal,
	.init = vvm_dw_map_init,
	.log = v4l2_ctrl_type_op_log,
	.validate = v4l2_ctrl_type_op_validate,
};

static const struct v4l2_ctrl_config vvm_dw_map_ctrl = {
	.ops = &vvm_dw_ctrl_ops,
	.type_ops = &vvm_dw_map_type_ops,
	.id = V4L2_CID_DW100_DEWARPING_16x16_VERTEX_MAP,
	.name = "Dewarping Vertex Map",
	.type = V4L2_CTRL_TYPE_U32,
	.min = 0,
	.max = U32_MAX,
	.step = 1,
	.def = 0,
	.dims = { DIV_ROUND_UP(VVM_DW_DEF_W, VVM_DW_BLOCK) + 1,
		  DIV_ROUND_UP(VVM_DW_DEF_H, VVM_DW_BLOCK) + 1 },
};

/* ---- Jobs ---------------------------------------------------------------- */

/*
 * Frame buffers are described by their DMA mapping for the transport's
 * device (vb2 maps them against it), never by struct page: an imported
 * DMABUF may have no pages, and its exporter's page pointers are not the
 * importer's to read (CONFIG_DMABUF_DEBUG scrambles them). The virtqueue is
 * premapped, so these addresses go to the device as they are.
 */

/* Number of DMA segments covering the first @len bytes, 0 if too short. */
static unsigned int vvm_dw_sg_count(struct sg_table *sgt, size_t len)
{
	struct scatterlist *sg;
	unsigned int i, n = 0;

	for_each_sgtable_dma_sg(sgt, sg, i) {
		if (!len)
			break;
		len -= min_t(size_t, len, sg_dma_len(sg));
		n++;
	}
	return len ? 0 : n;
}

static void vvm_dw_sg_fill(struct scatterlist *out, unsigned int n,
			   struct sg_table *sgt, size_t len)
{
	struct scatterlist *sg;
	unsigned int i;
	size_t chunk;

	sg_init_table(out, n);
	for_each_sgtable_dma_sg(sgt, sg, i) {
		if (i == n)
			break;
		chunk = min_t(size_t, len, sg_dma_len(sg));
		out[i].length = chunk;
		sg_dma_address(&out[i]) = sg_dma_address(sg);
		sg_dma_len(&out[i]) = chunk;
		len -= chunk;
	}
}

static unsigned int vvm_dw_map_sg_count(const struct vvm_dw_map *map)
{
	if (!is_vmalloc_addr(map->entries))
		return 1;
	return DIV_ROUND_UP(offset_in_page(map->entries) + map->bytes,
			    PAGE_SIZE);
}

static void vvm_dw_map_sg_fill(struct scatterlist *out, unsigned int n,
			       const struct vvm_dw_map *map)
{
	const u8 *p = (const u8 *)map->entries;
	size_t left = map->bytes;
	size_t chunk;
	unsigned int i;

	sg_init_table(out, n);
	if (n == 1 && !is_vmalloc_addr(p)) {
		sg_set_buf(out, p, left);
		return;
	}
	for (i = 0; i < n; i++) {
		chunk = min_t(size_t, left, PAGE_SIZE - offset_in_page(p));
		sg_set_page(&out[i], vmalloc_to_page(p), chunk,
			    offset_in_page(p));
		p += chunk;
		left -= chunk;
	}
}

static void vvm_dw_fill_image(struct vvm_dw_image *img,
			      const struct vvm_dw_q_data *q, bool dst)
{
	const struct v4l2_pix_format_mplane *pix = &q->pix;
	u32 luma_stride = pix->plane_fmt[0].bytesperline;
	u32 luma_bytes = luma_stride * pix->height;
	unsigned int i;

	memset(img, 0, sizeof(*img));
	img->fourcc = cpu_to_le32(q->fmt->wire_fourcc);
	img->width = cpu_to_le32(pix->width);
	img->height = cpu_to_le32(pix->height);
	img->num_planes = cpu_to_le32(pix->num_planes);
	img->stride[0] = cpu_to_le32(luma_stride);
	for (i = 0; i < pix->num_planes; i++)
		img->plane_size[i] = cpu_to_le32(pix->plane_fmt[i].sizeimage);
	if (!q->fmt->semi_planar)
		return;
	if (pix->num_planes == 2) {
		img->stride[1] = cpu_to_le32(pix->plane_fmt[1].bytesperline);
	} else {
		/* Where the dw100 driver puts the chroma of one-plane images. */
		img->stride[1] = cpu_to_le32(luma_stride);
		img->chroma_offset = cpu_to_le32(dst ? ALIGN(luma_bytes, 16) :
						 luma_bytes);
	}
}

static void vvm_dw_job_free(struct vvm_dw_job *job)
{
	vvm_dw_map_put(job->map);
	kvfree(job->sg_pool);
	kfree(job);
}

static void vvm_dw_job_done(struct vvm_request *req, int status);

/*
 * Counts the scatterlist entries of each plane of @buf into @counts and
 * adds them to @total; 0 when a plane has no memory behind its size.
 */
static int vvm_dw_count_plane_sgs(struct vb2_v4l2_buffer *buf,
				  const struct vvm_dw_q_data *q,
				  unsigned int *counts, unsigned int *total)
{
	unsigned int i;

	for (i = 0; i < q->pix.num_planes; i++) {
		counts[i] = vvm_dw_sg_count(vb2_dma_sg_plane_desc(&buf->vb2_buf, i),
					    q->pix.plane_fmt[i].sizeimage);
		if (!counts[i])
			return -EINVAL;
		*total += counts[i];
	}
	return 0;
}

/* Describes each plane of @buf from @next on; returns the entry after. */
static struct scatterlist *
vvm_dw_fill_plane_sgs(struct scatterlist *next, struct vb2_v4l2_buffer *buf,
		      const struct vvm_dw_q_data *q, const unsigned int *counts,
		      struct scatterlist **planes)
{
	unsigned int i;

	for (i = 0; i < q->pix.num_planes; i++) {
		planes[i] = next;
		vvm_dw_sg_fill(next, counts[i],
			       vb2_dma_sg_plane_desc(&buf->vb2_buf, i),
			       q->pix.plane_fmt[i].sizeimage);
		next += counts[i];
	}
	return next;
}

static void vvm_dw_fill_job_hdr(struct vvm_dw_job *job)
{
	struct vvm_dw_ctx *ctx = job->ctx;
	const struct vvm_dw_q_data *sq = &ctx->q_data[VVM_DW_Q_SRC];
	struct v4l2_rect crop;

	job->hdr.context_id = cpu_to_le32(ctx->context_id);
	job->hdr.sequence = cpu_to_le32(job->src->sequence);
	job->hdr.map_generation = cpu_to_le32(job->map->generation);
	job->hdr.map_width = cpu_to_le32(job->map->width);
	job->hdr.map_height = cpu_to_le32(job->map->height);
	spin_lock(&ctx->crop_lock);
	crop = sq->crop;
	spin_unlock(&ctx->crop_lock);
	job->hdr.crop_left = cpu_to_le32(crop.left);
	job->hdr.crop_top = cpu_to_le32(crop.top);
	job->hdr.crop_width = cpu_to_le32(crop.width);
	job->hdr.crop_height = cpu_to_le32(crop.height);
	vvm_dw_fill_image(&job->hdr.src, sq, false);
	vvm_dw_fill_image(&job->hdr.dst, &ctx->q_data[VVM_DW_Q_DST], true);
}

/*
 * Builds the chain of one job: header, map, source planes; status,
 * destination planes. The map is always described so that a job can be
 * sent again with it after ERR_MAP_REQUIRED.
 */
static struct vvm_dw_job *vvm_dw_job_create(struct vvm_dw_ctx *ctx,
					    struct vb2_v4l2_buffer *src,
					    struct vb2_v4l2_buffer *dst)
{
	const struct vvm_dw_q_data *sq = &ctx->q_data[VVM_DW_Q_SRC];
	const struct vvm_dw_q_data *dq = &ctx->q_data[VVM_DW_Q_DST];
	unsigned int nsrc[VIDEO_MAX_PLANES] = {}, ndst[VIDEO_MAX_PLANES] = {};
	unsigned int nmap, total, i;
	struct scatterlist *next;
	struct vvm_dw_job *job;

	if (!ctx->map)
		return ERR_PTR(-EINVAL);

	nmap = vvm_dw_map_sg_count(ctx->map);
	total = 2 + nmap;
	if (vvm_dw_count_plane_sgs(src, sq, nsrc, &total) ||
	    vvm_dw_count_plane_sgs(dst, dq, ndst, &total))
		return ERR_PTR(-EINVAL);
	/* A chain may not be longer than the queue (virtio 1.2, 2.7.5.3.1). */
	if (total > ctx->dw->vq_size)
		return ERR_PTR(-E2BIG);

	job = kzalloc(sizeof(*job), GFP_KERNEL);
	if (!job)
		return ERR_PTR(-ENOMEM);
	job->sg_pool = kvmalloc_array(total - 2, sizeof(*job->sg_pool),
				      GFP_KERNEL);
	if (!job->sg_pool) {
		kfree(job);
		return ERR_PTR(-ENOMEM);
	}
	job->ctx = ctx;
	job->src = src;
	job->dst = dst;
	kref_get(&ctx->map->ref);
	job->map = ctx->map;
	vvm_dw_fill_job_hdr(job);

	sg_init_one(&job->hdr_sg, &job->hdr, sizeof(job->hdr));
	vvm_core_premap(&job->hdr_sg, 1);
	sg_init_one(&job->status_sg, &job->status, sizeof(job->status));
	vvm_core_premap(&job->status_sg, 1);

	next = job->sg_pool;
	job->map_sg = next;
	vvm_dw_map_sg_fill(next, nmap, job->map);
	vvm_core_premap(next, nmap);
	next += nmap;
	next = vvm_dw_fill_plane_sgs(next, src, sq, nsrc, job->src_sg);
	vvm_dw_fill_plane_sgs(next, dst, dq, ndst, job->dst_sg);
	for (i = 0; i < dq->pix.num_planes; i++)
		job->dst_bytes += dq->pix.plane_fmt[i].sizeimage;
	return job;
}

/* Hands a job to the device and counts it while the device holds it. */
static int vvm_dw_job_send(struct vvm_dw_job *job)
{
	struct vvm_dw_ctx *ctx = job->ctx;
	struct vvm_dewarper *dw = ctx->dw;
	struct scatterlist *parts[2 + 2 * VIDEO_MAX_PLANES];
	unsigned int out = 0, in = 0, i;
	int ret;

	parts[out++] = &job->hdr_sg;
	if (job->with_map)
		parts[out++] = job->map_sg;
	for (i = 0; i < ctx->q_data[VVM_DW_Q_SRC].pix.num_planes; i++)
		parts[out++] = job->src_sg[i];
	parts[out + in++] = &job->status_sg;
	for (i = 0; i < ctx->q_data[VVM_DW_Q_DST].pix.num_planes; i++)
		parts[out + in++] = job->dst_sg[i];

	job->hdr.flags = cpu_to_le32(job->with_map ? VVM_DW_JOB_F_MAP : 0);
	memset(&job->status, 0, sizeof(job->status));
	vvm_request_init(&job->req, vvm_dw_job_done, job);

	atomic_inc(&dw->on_device);
	ret = vvm_core_submit(&dw->node.core, &job->req, 0, parts, out, in);
	if (ret)
		atomic_dec(&dw->on_device);
	return ret;
}

/*
 * Sends a job or, when the virtqueue is full of other jobs, parks it as
 * dw->deferred and returns -EAGAIN. A full ring with no job on it means the
 * chain cannot fit at all. Called with dw->send_lock held.
 */
static int vvm_dw_job_send_or_defer(struct vvm_dw_job *job)
{
	struct vvm_dewarper *dw = job->ctx->dw;
	int ret;

	ret = vvm_dw_job_send(job);
	if (ret != -ENOSPC)
		return ret;
	if (!atomic_read(&dw->on_device)) {
		/* The last job may have left between the two reads. */
		ret = vvm_dw_job_send(job);
		if (ret != -ENOSPC || !atomic_read(&dw->on_device))
			return ret;
	}
	dw->deferred = job;
	return -EAGAIN;
}

static const char *vvm_dw_status_name(u32 code)
{
	switch (code) {
	case VVM_DW_ERR_MALFORMED:
		return "malformed job";
	case VVM_DW_ERR_UNSUPPORTED:
		return "unsupported format or size";
	case VVM_DW_ERR_MAP_REQUIRED:
		return "map required";
	case VVM_DW_ERR_INVALID_MAP:
		return "invalid map";
	case VVM_DW_ERR_INTERNAL:
		return "internal device error";
	default:
		return "unknown status";
	}
}

/* Returns both buffers of a job to userspace and lets the next job run. */
static void vvm_dw_job_finish(struct vvm_dw_job *job,
			      enum vb2_buffer_state state)
{
	struct vvm_dw_ctx *ctx = job->ctx;
	unsigned int i;

	if (state != VB2_BUF_STATE_DONE)
		for (i = 0; i < job->dst->vb2_buf.num_planes; i++)
			vb2_set_plane_payload(&job->dst->vb2_buf, i, 0);
	v4l2_m2m_buf_done(job->src, state);
	v4l2_m2m_buf_done(job->dst, state);
	vvm_dw_job_free(job);

	atomic_dec(&ctx->queued);
	v4l2_m2m_try_schedule(ctx->fh.m2m_ctx);
	/* Last touch of the context: stop_streaming() may free it after this. */
	if (atomic_dec_and_test(&ctx->inflight))
		wake_up_var(&ctx->inflight);
}

/*
 * Finishes @job and every job queued after it that is already done, so that
 * buffers are dequeued in sequence order even when the device answers jobs
 * out of order.
 */
static void vvm_dw_job_complete(struct vvm_dw_job *job,
				enum vb2_buffer_state state)
{
	struct vvm_dw_ctx *ctx = job->ctx;
	struct vvm_dw_job *next;
	LIST_HEAD(ready);

	spin_lock(&ctx->in_order_lock);
	job->state = state;
	job->done = true;
	while ((next = list_first_entry_or_null(&ctx->in_order,
						struct vvm_dw_job,
						in_order_node)) && next->done)
		list_move_tail(&next->in_order_node, &ready);
	spin_unlock(&ctx->in_order_lock);

	list_for_each_entry_safe(job, next, &ready, in_order_node)
		vvm_dw_job_finish(job, job->state);
}

/* Retries the parked job; runs after every completion. */
static void vvm_dw_send_deferred(struct vvm_dewarper *dw)
{
	struct vvm_dw_job *job;
	struct vvm_dw_ctx *ctx;
	int ret;

	mutex_lock(&dw->send_lock);
	job = dw->deferred;
	dw->deferred = NULL;
	ret = job ? vvm_dw_job_send_or_defer(job) : -EAGAIN;
	mutex_unlock(&dw->send_lock);
	if (ret == -EAGAIN)
		return;

	/* Its mem2mem job is still running, so the context is alive. */
	ctx = job->ctx;
	if (ret) {
		dev_warn_ratelimited(vvm_dw_ctx_dev(ctx), "job %u not sent: %d\n",
				     le32_to_cpu(job->hdr.sequence), ret);
		vvm_dw_job_complete(job, VB2_BUF_STATE_ERROR);
	}
	v4l2_m2m_job_finish(dw->node.m2m_dev, ctx->fh.m2m_ctx);
}

/* Threaded half: may sleep, may call into vb2 and mem2mem. */
static void vvm_dw_job_done(struct vvm_request *req, int status)
{
	struct vvm_dw_job *job = req->priv;
	struct vvm_dw_ctx *ctx = job->ctx;
	struct vvm_dewarper *dw = ctx->dw;
	enum vb2_buffer_state state = VB2_BUF_STATE_ERROR;
	u32 code, sequence = le32_to_cpu(job->hdr.sequence);

	atomic_dec(&dw->on_device);
	if (status) {
		dev_warn_ratelimited(vvm_dw_ctx_dev(ctx), "job %u failed: %d\n",
				     sequence, status);
		goto finish;
	}
	code = req->used_len < sizeof(job->status) ?
	       VVM_DW_ERR_MALFORMED : le32_to_cpu(job->status.status);

	switch (code) {
	case VVM_DW_OK:
		if (req->used_len != sizeof(job->status) + job->dst_bytes) {
			dev_warn_ratelimited(vvm_dw_ctx_dev(ctx),
					     "job %u: device wrote %u bytes, expected %zu\n",
					     sequence, req->used_len,
					     sizeof(job->status) + job->dst_bytes);
			break;
		}
		atomic_set(&ctx->map_known, job->map->generation);
		state = VB2_BUF_STATE_DONE;
		break;
	case VVM_DW_ERR_MAP_REQUIRED:
		/* The device lost the map (restart, cache eviction): resend. */
		if (!job->resent) {
			job->resent = true;
			job->with_map = true;
			atomic_set(&ctx->map_known, 0);
			if (!vvm_dw_job_send(job))
				goto out;
		}
		fallthrough;
	default:
		dev_warn_ratelimited(vvm_dw_ctx_dev(ctx), "job %u: %s (%u)\n",
				     sequence, vvm_dw_status_name(code), code);
		break;
	}
finish:
	vvm_dw_job_complete(job, state);
out:
	vvm_dw_send_deferred(dw);
}

/*
 * As on the dw100, a new map reaches the device only with a request: the
 * one @src's request carried becomes the context's. Returns the error the
 * request's map had, if any.
 */
static int vvm_dw_adopt_request_map(struct vvm_dw_ctx *ctx,
				    struct vb2_v4l2_buffer *src)
{
	struct vvm_dw_buf *sbuf = vvm_dw_vbuf_to_buf(src);

	if (sbuf->map) {
		vvm_dw_map_put(ctx->map);
		ctx->map = sbuf->map;
		sbuf->map = NULL;
	} else if (READ_ONCE(ctx->map_set_new)) {
		dev_warn_once(vvm_dw_ctx_dev(ctx),
			      "the vertex map changes while streaming only through requests\n");
	}
	return sbuf->map_err;
}

/*
 * Runs from a completion as often as from an ioctl, so it takes no lock an
 * ioctl may hold for long: the map comes from snapshots taken beforehand.
 */
static void vvm_dw_device_run(void *priv)
{
	struct vvm_dw_ctx *ctx = priv;
	struct vvm_dewarper *dw = ctx->dw;
	struct vb2_v4l2_buffer *src, *dst;
	struct vvm_dw_job *job = NULL;
	int ret;

	src = v4l2_m2m_next_src_buf(ctx->fh.m2m_ctx);
	dst = v4l2_m2m_next_dst_buf(ctx->fh.m2m_ctx);
	ret = vvm_dw_adopt_request_map(ctx, src);

	v4l2_m2m_src_buf_remove(ctx->fh.m2m_ctx);
	v4l2_m2m_dst_buf_remove(ctx->fh.m2m_ctx);
	src->sequence = ctx->q_data[VVM_DW_Q_SRC].sequence++;
	dst->sequence = ctx->q_data[VVM_DW_Q_DST].sequence++;
	v4l2_m2m_buf_copy_metadata(src, dst, true);

	if (!ret)
		ret = vvm_core_check_alive(&dw->node.core);
	if (!ret) {
		job = vvm_dw_job_create(ctx, src, dst);
		ret = PTR_ERR_OR_ZERO(job);
	}
	if (ret) {
		dev_warn_ratelimited(vvm_dw_ctx_dev(ctx), "job %u not built: %d\n",
				     src->sequence, ret);
		v4l2_m2m_buf_done(src, VB2_BUF_STATE_ERROR);
		v4l2_m2m_buf_done(dst, VB2_BUF_STATE_ERROR);
		goto next;
	}

	vvm_dw_debug_corrupt(job);
	spin_lock(&ctx->in_order_lock);
	list_add_tail(&job->in_order_node, &ctx->in_order);
	spin_unlock(&ctx->in_order_lock);
	job->with_map = atomic_read(&ctx->map_known) != job->map->generation;
	atomic_inc(&ctx->queued);
	atomic_inc(&ctx->inflight);

	mutex_lock(&dw->send_lock);
	ret = vvm_dw_job_send_or_defer(job);
	mutex_unlock(&dw->send_lock);
	if (ret == -EAGAIN)
		return;
	if (ret) {
		dev_warn_ratelimited(vvm_dw_ctx_dev(ctx), "job %u not sent: %d\n",
				     src->sequence, ret);
		vvm_dw_job_complete(job, VB2_BUF_STATE_ERROR);
	}
next:
	/* The device takes several jobs: let mem2mem schedule the next one. */
	v4l2_m2m_job_finish(dw->node.m2m_dev, ctx->fh.m2m_ctx);
}

static int vvm_dw_job_ready(void *priv)
{
	struct vvm_dw_ctx *ctx = priv;

	return atomic_read(&ctx->queued) < VVM_DW_MAX_INFLIGHT;
}

static const struct v4l2_m2m_ops vvm_dw_m2m_ops = {
	.device_run = vvm_dw_device_run,
	.job_ready = vvm_dw_job_ready,
};

/* ---- vb2 queues ---------------------------------------------------------- */

static int vvm_dw_queue_setup(struct vb2_queue *vq, unsigned int *nbuffers,
			      unsigned int *nplanes, unsigned int sizes[],
			      struct device *alloc_devs[])
{
	struct vvm_dw_ctx *ctx = vb2_get_drv_priv(vq);
	const struct v4l2_pix_format_mplane *pix =
		&vvm_dw_q_data(ctx, vq->type)->pix;
	unsigned int i;

	if (*nplanes) {
		if (*nplanes != pix->num_planes)
			return -EINVAL;
		for (i = 0; i < *nplanes; i++)
			if (sizes[i] < pix->plane_fmt[i].sizeimage)
				return -EINVAL;
		return 0;
	}

	*nplanes = pix->num_planes;
	for (i = 0; i < pix->num_planes; i++)
		sizes[i] = pix->plane_fmt[i].sizeimage;
	return 0;
}

static int vvm_dw_buf_out_validate(struct vb2_buffer *vb)
{
	to_vb2_v4l2_buffer(vb)->field = V4L2_FIELD_NONE;
	return 0;
}

static int vvm_dw_buf_prepare(struct vb2_buffer *vb)
{
	struct vvm_dw_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);
	struct vb2_v4l2_buffer *vbuf = to_vb2_v4l2_buffer(vb);
	const struct v4l2_pix_format_mplane *pix =
		&vvm_dw_q_data(ctx, vb->vb2_queue->type)->pix;
	unsigned int i;

	if (V4L2_TYPE_IS_OUTPUT(vb->vb2_queue->type) &&
	    vbuf->field != V4L2_FIELD_NONE)
		return -EINVAL;

	for (i = 0; i < pix->num_planes; i++) {
		if (vb2_plane_size(vb, i) < pix->plane_fmt[i].sizeimage)
			return -EINVAL;
		vb2_set_plane_payload(vb, i, pix->plane_fmt[i].sizeimage);
	}
	return 0;
}

static void vvm_dw_buf_queue(struct vb2_buffer *vb)
{
	struct vvm_dw_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);

	v4l2_m2m_buf_queue(ctx->fh.m2m_ctx, to_vb2_v4l2_buffer(vb));
}

/* A map its request set but no job used. */
static void vvm_dw_buf_finish(struct vb2_buffer *vb)
{
	struct vvm_dw_buf *buf = vvm_dw_vbuf_to_buf(to_vb2_v4l2_buffer(vb));

	vvm_dw_map_put(buf->map);
	buf->map = NULL;
	buf->map_err = 0;
}

/*
 * vb2 cancels a buffer of a queued request. Nothing to do: the request's
 * controls completed when it was queued (vvm_dw_req_queue()).
 */
static void vvm_dw_buf_request_complete(struct vb2_buffer *vb)
{
}

static void vvm_dw_return_buffers(struct vb2_queue *q,
				  enum vb2_buffer_state state)
{
	struct vvm_dw_ctx *ctx = vb2_get_drv_priv(q);
	struct vb2_v4l2_buffer *vbuf;

	for (;;) {
		if (V4L2_TYPE_IS_OUTPUT(q->type))
			vbuf = v4l2_m2m_src_buf_remove(ctx->fh.m2m_ctx);
		else
			vbuf = v4l2_m2m_dst_buf_remove(ctx->fh.m2m_ctx);
		if (!vbuf)
			return;
		v4l2_m2m_buf_done(vbuf, state);
	}
}

static int vvm_dw_start_streaming(struct vb2_queue *q, unsigned int count)
{
	struct vvm_dw_ctx *ctx = vb2_get_drv_priv(q);

	vvm_dw_q_data(ctx, q->type)->sequence = 0;

	/* Without requests the map in force at STREAMON is used throughout. */
	vvm_dw_map_put(ctx->map);
	ctx->map = vvm_dw_map_take(ctx, true);
	return 0;
}

static void vvm_dw_stop_streaming(struct vb2_queue *q)
{
	struct vvm_dw_ctx *ctx = vb2_get_drv_priv(q);

	/*
	 * Jobs on the device own buffers of both queues. They end in bounded
	 * time: the core's watchdog fails whatever the device keeps.
	 */
	wait_var_event(&ctx->inflight, !atomic_read(&ctx->inflight));
	vvm_dw_return_buffers(q, VB2_BUF_STATE_ERROR);
}

static const struct vb2_ops vvm_dw_qops = {
	.queue_setup = vvm_dw_queue_setup,
	.buf_out_validate = vvm_dw_buf_out_validate,
	.buf_prepare = vvm_dw_buf_prepare,
	.buf_queue = vvm_dw_buf_queue,
	.buf_finish = vvm_dw_buf_finish,
	.buf_request_complete = vvm_dw_buf_request_complete,
	.start_streaming = vvm_dw_start_streaming,
	.stop_streaming = vvm_dw_stop_streaming,
	.wait_prepare = vb2_ops_wait_prepare,
	.wait_finish = vb2_ops_wait_finish,
};

/* ---- File operations ----------------------------------------------------- */

static void vvm_dw_default_fmt(struct vvm_dw_q_data *q)
{
	struct v4l2_pix_format_mplane *pix = &q->pix;

	q->fmt = &vvm_dw_formats[0];
	memset(pix, 0, sizeof(*pix));
	pix->field = V4L2_FIELD_NONE;
	pix->colorspace = V4L2_COLORSPACE_REC709;
	pix->xfer_func = V4L2_MAP_XFER_FUNC_DEFAULT(pix->colorspace);
	pix->ycbcr_enc = V4L2_MAP_YCBCR_ENC_DEFAULT(pix->colorspace);
	pix->quantization = V4L2_MAP_QUANTIZATION_DEFAULT(false,
							  pix->colorspace,
							  pix->ycbcr_enc);
	v4l2_fill_pixfmt_mp(pix, q->fmt->fourcc, VVM_DW_DEF_W, VVM_DW_DEF_H);
	q->crop = (struct v4l2_rect){ 0, 0, VVM_DW_DEF_W, VVM_DW_DEF_H };
}

static struct vvm_dw_ctx *vvm_dw_fh_ctx(struct v4l2_fh *fh)
{
	return container_of(fh, struct vvm_dw_ctx, fh);
}

static struct v4l2_fh *vvm_dw_ctx_alloc(struct vvm_node *node)
{
	struct vvm_dewarper *dw = container_of(node, struct vvm_dewarper, node);
	struct vvm_dw_ctx *ctx;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return ERR_PTR(-ENOMEM);
	ctx->dw = dw;
	ctx->context_id = atomic_inc_return(&dw->next_context_id);
	mutex_init(&ctx->vq_lock);
	mutex_init(&ctx->fmt_lock);
	spin_lock_init(&ctx->map_lock);
	spin_lock_init(&ctx->crop_lock);
	INIT_LIST_HEAD(&ctx->in_order);
	spin_lock_init(&ctx->in_order_lock);
	vvm_dw_default_fmt(&ctx->q_data[VVM_DW_Q_SRC]);
	ctx->q_data[VVM_DW_Q_DST] = ctx->q_data[VVM_DW_Q_SRC];
	return &ctx->fh;
}

static int vvm_dw_ctx_open(struct v4l2_fh *fh)
{
	struct vvm_dw_ctx *ctx = vvm_dw_fh_ctx(fh);

	v4l2_ctrl_handler_init(&ctx->hdl, 1);
	ctx->map_ctrl = v4l2_ctrl_new_custom(&ctx->hdl, &vvm_dw_map_ctrl, NULL);
	if (ctx->hdl.error)
		return ctx->hdl.error;
	fh->ctrl_handler = &ctx->hdl;
	return vvm_dw_map_publish_cur(ctx);
}

/*
 * Takes only the context's own locks: no ioctl of this file runs any more,
 * and the m2m context's release waited for its jobs, which the watchdog
 * bounds.
 */
static void vvm_dw_ctx_free(struct v4l2_fh *fh)
{
	struct vvm_dw_ctx *ctx = vvm_dw_fh_ctx(fh);

	v4l2_ctrl_handler_free(&ctx->hdl);
	vvm_dw_map_put(ctx->map);
	vvm_dw_map_put(ctx->map_set);
	mutex_destroy(&ctx->fmt_lock);
	mutex_destroy(&ctx->vq_lock);
	kfree(ctx);
}

static struct mutex *vvm_dw_queue_lock(struct v4l2_fh *fh)
{
	return &vvm_dw_fh_ctx(fh)->vq_lock;
}

/* ---- ioctls -------------------------------------------------------------- */

static int vvm_dw_enum_fmt(struct file *file, void *priv,
			   struct v4l2_fmtdesc *f)
{
	u32 types = vvm_dw_fmt_type(f->type);
	unsigned int i, n = 0;

	for (i = 0; i < ARRAY_SIZE(vvm_dw_formats); i++) {
		if (!(vvm_dw_formats[i].types & types))
			continue;
		if (n++ == f->index) {
			f->pixelformat = vvm_dw_formats[i].fourcc;
			return 0;
		}
	}
	return -EINVAL;
}

static int vvm_dw_enum_framesizes(struct file *file, void *priv,
				  struct v4l2_frmsizeenum *fsize)
{
	struct vvm_dewarper *dw = vvm_dw_fh_to_ctx(file)->dw;

	if (fsize->index ||
	    !vvm_dw_find_fmt(fsize->pixel_format,
			     VVM_DW_FMT_OUTPUT | VVM_DW_FMT_CAPTURE))
		return -EINVAL;

	fsize->type = V4L2_FRMSIZE_TYPE_STEPWISE;
	fsize->stepwise = dw->frmsize;
	return 0;
}

static int vvm_dw_g_fmt(struct file *file, void *priv, struct v4l2_format *f)
{
	struct vvm_dw_ctx *ctx = vvm_dw_fh_to_ctx(file);

	mutex_lock(&ctx->vq_lock);
	f->fmt.pix_mp = vvm_dw_q_data(ctx, f->type)->pix;
	mutex_unlock(&ctx->vq_lock);
	return 0;
}

static void vvm_dw_try_fmt(struct vvm_dw_ctx *ctx, struct v4l2_format *f)
{
	struct v4l2_pix_format_mplane *pix = &f->fmt.pix_mp;
	const struct vvm_dw_fmt *fmt;

	fmt = vvm_dw_find_fmt(pix->pixelformat, vvm_dw_fmt_type(f->type));
	if (!fmt)
		fmt = &vvm_dw_formats[0];

	v4l2_apply_frmsize_constraints(&pix->width, &pix->height,
				       &ctx->dw->frmsize);
	v4l2_fill_pixfmt_mp(pix, fmt->fourcc, pix->width, pix->height);
	pix->field = V4L2_FIELD_NONE;

	if (V4L2_TYPE_IS_OUTPUT(f->type)) {
		if (pix->colorspace == V4L2_COLORSPACE_DEFAULT)
			pix->colorspace = V4L2_COLORSPACE_REC709;
		if (pix->xfer_func == V4L2_XFER_FUNC_DEFAULT)
			pix->xfer_func =
				V4L2_MAP_XFER_FUNC_DEFAULT(pix->colorspace);
		if (pix->ycbcr_enc == V4L2_YCBCR_ENC_DEFAULT)
			pix->ycbcr_enc =
				V4L2_MAP_YCBCR_ENC_DEFAULT(pix->colorspace);
		if (pix->quantization == V4L2_QUANTIZATION_DEFAULT)
			pix->quantization =
				V4L2_MAP_QUANTIZATION_DEFAULT(false,
							      pix->colorspace,
							      pix->ycbcr_enc);
	} else {
		/* No colour conversion: the capture side follows the output. */
		const struct v4l2_pix_format_mplane *src =
			&ctx->q_data[VVM_DW_Q_SRC].pix;

		pix->colorspace = src->colorspace;
		pix->xfer_func = src->xfer_func;
		pix->ycbcr_enc = src->ycbcr_enc;
		pix->quantization = src->quantization;
	}
}

static int vvm_dw_try_fmt_vid(struct file *file, void *priv,
			      struct v4l2_format *f)
{
	struct vvm_dw_ctx *ctx = vvm_dw_fh_to_ctx(file);

	mutex_lock(&ctx->vq_lock);
	vvm_dw_try_fmt(ctx, f);
	mutex_unlock(&ctx->vq_lock);
	return 0;
}

/* Called with ctx->vq_lock held. */
static int vvm_dw_set_fmt(struct vvm_dw_ctx *ctx, struct v4l2_format *f)
{
	struct vvm_dw_q_data *q = vvm_dw_q_data(ctx, f->type);

	if (vb2_is_busy(v4l2_m2m_get_vq(ctx->fh.m2m_ctx, f->type)))
		return -EBUSY;

	vvm_dw_try_fmt(ctx, f);
	q->fmt = vvm_dw_find_fmt(f->fmt.pix_mp.pixelformat,
				 vvm_dw_fmt_type(f->type));
	q->pix = f->fmt.pix_mp;
	spin_lock(&ctx->crop_lock);
	q->crop = (struct v4l2_rect){ 0, 0, q->pix.width, q->pix.height };
	spin_unlock(&ctx->crop_lock);

	if (V4L2_TYPE_IS_OUTPUT(f->type)) {
		struct v4l2_pix_format_mplane *dst =
			&ctx->q_data[VVM_DW_Q_DST].pix;

		dst->colorspace = q->pix.colorspace;
		dst->xfer_func = q->pix.xfer_func;
		dst->ycbcr_enc = q->pix.ycbcr_enc;
		dst->quantization = q->pix.quantization;
	}
	return 0;
}

/*
 * The vertex grid follows the CAPTURE size. The handler lock is taken
 * after vq_lock is dropped, never under it: see struct vvm_dw_ctx.
 */
static int vvm_dw_s_fmt_vid(struct file *file, void *priv,
			    struct v4l2_format *f)
{
	struct vvm_dw_ctx *ctx = vvm_dw_fh_to_ctx(file);
	u32 dims[V4L2_CTRL_MAX_DIMS] = {};
	int ret;

	if (mutex_lock_interruptible(&ctx->fmt_lock))
		return -ERESTARTSYS;
	mutex_lock(&ctx->vq_lock);
	ret = vvm_dw_set_fmt(ctx, f);
	mutex_unlock(&ctx->vq_lock);
	if (ret || V4L2_TYPE_IS_OUTPUT(f->type))
		goto out;

	dims[0] = vvm_dw_vertices(f->fmt.pix_mp.width);
	dims[1] = vvm_dw_vertices(f->fmt.pix_mp.height);
	ret = v4l2_ctrl_modify_dimensions(ctx->map_ctrl, dims);
	if (!ret)
		ret = vvm_dw_map_publish_cur(ctx);
out:
	mutex_unlock(&ctx->fmt_lock);
	return ret;
}

static int vvm_dw_g_selection(struct file *file, void *priv,
			      struct v4l2_selection *sel)
{
	struct vvm_dw_ctx *ctx = vvm_dw_fh_to_ctx(file);
	const struct vvm_dw_q_data *src = &ctx->q_data[VVM_DW_Q_SRC];
	int ret = 0;

	if (sel->type != V4L2_BUF_TYPE_VIDEO_OUTPUT)
		return -EINVAL;

	mutex_lock(&ctx->vq_lock);
	switch (sel->target) {
	case V4L2_SEL_TGT_CROP_DEFAULT:
	case V4L2_SEL_TGT_CROP_BOUNDS:
		sel->r = (struct v4l2_rect){ 0, 0, src->pix.width,
					     src->pix.height };
		break;
	case V4L2_SEL_TGT_CROP:
		sel->r = src->crop;
		break;
	default:
		ret = -EINVAL;
		break;
	}
	mutex_unlock(&ctx->vq_lock);
	return ret;
}

/*
 * The DW100 scales uniformly: both axes take one UQ16.16 factor (their mean,
 * the larger with GE, the smaller with LE) and the rectangle of that scale
 * is centred on the requested one, inside the frame. Called with
 * ctx->vq_lock held.
 */
static int vvm_dw_set_crop(struct vvm_dw_ctx *ctx, struct v4l2_selection *sel)
{
	struct vvm_dw_q_data *src = &ctx->q_data[VVM_DW_Q_SRC];
	u32 fw = src->pix.width, fh = src->pix.height;
	u32 scale_x, scale_y, scale, w, h;
	s32 left, top;

	if (sel->type != V4L2_BUF_TYPE_VIDEO_OUTPUT ||
	    sel->target != V4L2_SEL_TGT_CROP)
		return -EINVAL;

	top = clamp_t(s32, sel->r.top, 0, fh - VVM_DW_MIN_H);
	left = clamp_t(s32, sel->r.left, 0, fw - VVM_DW_MIN_W);
	h = clamp_t(u32, sel->r.height, VVM_DW_MIN_H, fh - top);
	w = clamp_t(u32, sel->r.width, VVM_DW_MIN_W, fw - left);

	scale_x = (w << 16) / fw;
	scale_y = (h << 16) / fh;
	if (scale_x == scale_y) {
		scale = scale_x;
	} else {
		switch (sel->flags) {
		case 0:
			scale = (scale_x + scale_y) / 2;
			break;
		case V4L2_SEL_FLAG_GE:
			scale = max(scale_x, scale_y);
			break;
		case V4L2_SEL_FLAG_LE:
			scale = min(scale_x, scale_y);
			break;
		case V4L2_SEL_FLAG_GE | V4L2_SEL_FLAG_LE:
			return -ERANGE;
		default:
			return -EINVAL;
		}
	}

	left += ((s32)w - (s32)(((u64)fw * scale) >> 16)) / 2;
	top += ((s32)h - (s32)(((u64)fh * scale) >> 16)) / 2;
	w = ((u64)fw * scale) >> 16;
	h = ((u64)fh * scale) >> 16;
	left = min_t(s32, fw - w, max(0, left));
	top = min_t(s32, fh - h, max(0, top));

	sel->r = (struct v4l2_rect){ left, top, w, h };
	spin_lock(&ctx->crop_lock);
	src->crop = sel->r;
	spin_unlock(&ctx->crop_lock);
	return 0;
}

static int vvm_dw_s_selection(struct file *file, void *priv,
			      struct v4l2_selection *sel)
{
	struct vvm_dw_ctx *ctx = vvm_dw_fh_to_ctx(file);
	int ret;

	mutex_lock(&ctx->vq_lock);
	ret = vvm_dw_set_crop(ctx, sel);
	mutex_unlock(&ctx->vq_lock);
	return ret;
}

static const struct v4l2_ioctl_ops vvm_dw_ioctl_ops = {
	.vidioc_querycap = vvm_node_querycap,

	.vidioc_enum_fmt_vid_cap = vvm_dw_enum_fmt,
	.vidioc_enum_framesizes = vvm_dw_enum_framesizes,
	.vidioc_g_fmt_vid_cap_mplane = vvm_dw_g_fmt,
	.vidioc_try_fmt_vid_cap_mplane = vvm_dw_try_fmt_vid,
	.vidioc_s_fmt_vid_cap_mplane = vvm_dw_s_fmt_vid,

	.vidioc_enum_fmt_vid_out = vvm_dw_enum_fmt,
	.vidioc_g_fmt_vid_out_mplane = vvm_dw_g_fmt,
	.vidioc_try_fmt_vid_out_mplane = vvm_dw_try_fmt_vid,
	.vidioc_s_fmt_vid_out_mplane = vvm_dw_s_fmt_vid,

	.vidioc_g_selection = vvm_dw_g_selection,
	.vidioc_s_selection = vvm_dw_s_selection,

	.vidioc_reqbufs = v4l2_m2m_ioctl_reqbufs,
	.vidioc_querybuf = v4l2_m2m_ioctl_querybuf,
	.vidioc_qbuf = v4l2_m2m_ioctl_qbuf,
	.vidioc_dqbuf = v4l2_m2m_ioctl_dqbuf,
	.vidioc_prepare_buf = v4l2_m2m_ioctl_prepare_buf,
	.vidioc_create_bufs = v4l2_m2m_ioctl_create_bufs,
	.vidioc_expbuf = v4l2_m2m_ioctl_expbuf,
	.vidioc_streamon = v4l2_m2m_ioctl_streamon,
	.vidioc_streamoff = v4l2_m2m_ioctl_streamoff,

	.vidioc_subscribe_event = v4l2_ctrl_subscribe_event,
	.vidioc_unsubscribe_event = v4l2_event_unsubscribe,
};

/* ---- Device -------------------------------------------------------------- */

static void vvm_dw_probe_done(struct vvm_request *req, int status)
{
	kfree(req->priv);
}

/*
 * After a death the core needs one answer to call the device alive: a bare
 * header (no images) is a job every device rejects at once.
 */
static int vvm_dw_revive(struct vvm_core *core)
{
	struct scatterlist *parts[2];
	struct vvm_dw_probe *probe;
	int ret;

	probe = kzalloc(sizeof(*probe), GFP_KERNEL);
	if (!probe)
		return -ENOMEM;
	sg_init_one(&probe->hdr_sg, &probe->hdr, sizeof(probe->hdr));
	vvm_core_premap(&probe->hdr_sg, 1);
	sg_init_one(&probe->status_sg, &probe->status, sizeof(probe->status));
	vvm_core_premap(&probe->status_sg, 1);
	parts[0] = &probe->hdr_sg;
	parts[1] = &probe->status_sg;
	vvm_request_init(&probe->req, vvm_dw_probe_done, probe);
	ret = vvm_core_submit(core, &probe->req, 0, parts, 1, 1);
	if (ret)
		kfree(probe);
	return ret;
}

/*
 * Jobs on the device were failed by the core; jobs not yet sent fail in
 * device_run while the device is dead. Nothing else holds buffers.
 */
static void vvm_dw_dead(struct vvm_core *core, int err)
{
	if (err != -ENODEV)
		dev_err(&core->vdev->dev,
			"dewarper stopped answering: jobs fail until it answers again\n");
}

static const struct vvm_core_ops vvm_dw_core_ops = {
	.dead = vvm_dw_dead,
	.revive = vvm_dw_revive,
};

/* The context of a request: the one its (OUTPUT) buffer belongs to. */
static struct vvm_dw_ctx *vvm_dw_req_ctx(struct media_request *req)
{
	struct media_request_object *obj;
	struct vb2_buffer *vb;

	list_for_each_entry(obj, &req->objects, list) {
		if (vb2_request_object_is_buffer(obj)) {
			vb = container_of(obj, struct vb2_buffer, req_obj);
			return vb2_get_drv_priv(vb->vb2_queue);
		}
	}
	return NULL;
}

/*
 * MEDIA_REQUEST_IOC_QUEUE, in the process that queues the request: the map
 * the request sets becomes a snapshot that rides on its OUTPUT buffer, and
 * the request's controls complete here, before the buffer can reach a job.
 * device_run() and the completion path then never need the handler lock,
 * which the control ioctls hold across their copy from user memory.
 */
static void vvm_dw_req_queue(struct media_request *req)
{
	struct vvm_dw_ctx *ctx = vvm_dw_req_ctx(req);
	struct media_request_object *obj, *next;
	struct vvm_dw_map *map;
	struct vvm_dw_buf *buf;
	struct vb2_buffer *vb;
	int ret;

	/* vb2_request_validate() refused requests without a buffer. */
	if (WARN_ON(!ctx))
		return;

	list_for_each_entry_safe(obj, next, &req->objects, list)
		if (obj->ops->queue && !vb2_request_object_is_buffer(obj))
			obj->ops->queue(obj);

	ret = v4l2_ctrl_request_setup(req, &ctx->hdl);
	map = ret ? NULL : vvm_dw_map_take(ctx, false);
	list_for_each_entry(obj, &req->objects, list) {
		if (!vb2_request_object_is_buffer(obj))
			continue;
		vb = container_of(obj, struct vb2_buffer, req_obj);
		buf = vvm_dw_vbuf_to_buf(to_vb2_v4l2_buffer(vb));
		buf->map_err = ret;
		if (map)
			kref_get(&map->ref);
		buf->map = map;
	}
	vvm_dw_map_put(map);
	v4l2_ctrl_request_complete(req, &ctx->hdl);

	/* A buffer may complete, and leave the list, as soon as it is queued. */
	list_for_each_entry_safe(obj, next, &req->objects, list)
		if (obj->ops->queue && vb2_request_object_is_buffer(obj))
			obj->ops->queue(obj);
	v4l2_m2m_try_schedule(ctx->fh.m2m_ctx);
}

static const struct media_device_ops vvm_dw_media_ops = {
	.req_validate = vb2_request_validate,
	.req_queue = vvm_dw_req_queue,
};

static int vvm_dw_read_config(struct vvm_dewarper *dw,
			      struct virtio_device *vdev)
{
	u32 version, max_w, max_h, slots;

	virtio_cread_le(vdev, struct vvm_dw_config, version, &version);
	virtio_cread_le(vdev, struct vvm_dw_config, max_width, &max_w);
	virtio_cread_le(vdev, struct vvm_dw_config, max_height, &max_h);
	virtio_cread_le(vdev, struct vvm_dw_config, map_cache_slots, &slots);

	if (version != VVM_DW_CONFIG_VERSION || !slots ||
	    max_w < VVM_DW_MIN_W || max_h < VVM_DW_MIN_H) {
		dev_err(&vdev->dev,
			"unsupported dewarper: version %u, %ux%u, %u map slots\n",
			version, max_w, max_h, slots);
		return -ENODEV;
	}

	dw->frmsize = (struct v4l2_frmsize_stepwise){
		.min_width = VVM_DW_MIN_W,
		.max_width = min(VVM_DW_MAX_W, round_down(max_w, VVM_DW_STEP)),
		.step_width = VVM_DW_STEP,
		.min_height = VVM_DW_MIN_H,
		.max_height = min(VVM_DW_MAX_H, round_down(max_h, VVM_DW_STEP)),
		.step_height = VVM_DW_STEP,
	};
	return 0;
}

static void vvm_dw_free(struct vvm_node *node)
{
	struct vvm_dewarper *dw = container_of(node, struct vvm_dewarper, node);

	mutex_destroy(&dw->send_lock);
	kfree(dw);
}

static int vvm_dw_setup(struct vvm_node *node)
{
	struct vvm_dewarper *dw = container_of(node, struct vvm_dewarper, node);

	dw->vq_size = virtqueue_get_vring_size(node->core.vqs[0]);
	return 0;
}

static const char * const vvm_dw_vq_names[] = { "jobq" };

static const struct vvm_node_ops vvm_dw_node_ops = {
	.driver = VVM_DW_DRIVER_NAME,
	.card = VVM_DW_CARD,
	.model = VVM_DW_DRIVER_NAME,
	.function = MEDIA_ENT_F_PROC_VIDEO_SCALER,
	.ioctl_ops = &vvm_dw_ioctl_ops,
	.m2m_ops = &vvm_dw_m2m_ops,
	.media_ops = &vvm_dw_media_ops,
	.core_ops = &vvm_dw_core_ops,
	.vq_names = vvm_dw_vq_names,
	.nvqs = ARRAY_SIZE(vvm_dw_vq_names),
	.qops = &vvm_dw_qops,
	.buf_struct_size = sizeof(struct vvm_dw_buf),
	.output_requests = true,
	.setup = vvm_dw_setup,
	.free = vvm_dw_free,
	.ctx_alloc = vvm_dw_ctx_alloc,
	.ctx_open = vvm_dw_ctx_open,
	.ctx_free = vvm_dw_ctx_free,
	.queue_lock = vvm_dw_queue_lock,
};

int vvm_dewarper_probe(struct virtio_device *vdev)
{
	struct vvm_dewarper *dw;
	int ret;

	dw = kzalloc(sizeof(*dw), GFP_KERNEL);
	if (!dw)
		return -ENOMEM;
	mutex_init(&dw->send_lock);
	ret = vvm_dw_read_config(dw, vdev);
	if (ret) {
		vvm_dw_free(&dw->node);
		return ret;
	}
	dw->node.core.premapped = true;
	strscpy(dw->node.vfd.name, VVM_DW_DRIVER_NAME,
		sizeof(dw->node.vfd.name));
	/*
	 * No device-wide ioctl lock (vfd.lock stays NULL): the queue ioctls
	 * take the context's vq_lock (m2m_ctx->q_lock), the others lock what
	 * they touch.
	 */
	return vvm_node_probe(&dw->node, vdev, &vvm_dw_node_ops);
}
