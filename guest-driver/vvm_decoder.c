// SPDX-License-Identifier: GPL-2.0
/*
 * Stateful V4L2 mem2mem decoder on a virtio-video v3 decoder device.
 *
 * One V4L2 context is one device stream. Bitstream buffers (V4L2 OUTPUT,
 * virtio INPUT) and picture buffers (V4L2 CAPTURE, virtio OUTPUT) go to the
 * device as soon as their queue streams: the device holds many buffers of
 * both kinds at once, so buffers bypass the m2m job scheduler and the m2m
 * framework only provides queues, file operations and the media controller.
 *
 * Locking: dev->lock serialises every ioctl, file operation and the
 * resolution-change work; it is held across synchronous commands. The
 * threaded completion half never takes it, it only uses ctx->slock and
 * dev->ctx_slock.
 */
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/virtio_config.h>
#include <media/v4l2-ctrls.h>
#include <media/v4l2-device.h>
#include <media/v4l2-event.h>
#include <media/v4l2-ioctl.h>
#include <media/v4l2-mem2mem.h>
#include <media/videobuf2-dma-sg.h>

#include "vvm_core.h"
#include "vvm_decoder.h"
#include "vvm_node.h"
#include "vvm_virtio_video.h"

/* Stateful AV1 has no V4L2 fourcc in 6.12; later kernels define this one. */
#define VVM_PIX_FMT_AV1 v4l2_fourcc('A', 'V', '0', '1')

/*
 * v4l2-compliance up to 1.32 does not know AV01 and then tests the node as a
 * plain mem2mem device instead of a stateful decoder.
 */
static bool vvm_dec_offer_av1 = true;
module_param_named(offer_av1, vvm_dec_offer_av1, bool, 0444);
MODULE_PARM_DESC(offer_av1, "Offer AV1 (fourcc AV01) on the OUTPUT queue (default: on)");

#define VVM_DEC_MAX_FORMATS 16
#define VVM_DEC_NUM_EVENTS 32
#define VVM_DEC_MIN_CODED_SIZE SZ_512K
#define VVM_DEC_MAX_CODED_SIZE SZ_16M
#define VVM_DEC_MAX_DIM 8192
#define VVM_DEC_MAX_MIN_BUFFERS 32
/* Line padding a device may add beyond twice the picture's width. */
#define VVM_DEC_MAX_STRIDE_PAD 4096
#define VVM_DEC_CAPS_MIN 256
#define VVM_DEC_CAPS_MAX SZ_64K
#define VVM_DEC_META_SLOTS 64
#define VVM_DEC_COPIED_FLAGS (V4L2_BUF_FLAG_TIMECODE | V4L2_BUF_FLAG_TSTAMP_SRC_MASK)

struct vvm_dec_format {
	u32 fourcc;
	u32 virtio;
	u32 min_width, max_width, step_width;
	u32 min_height, max_height, step_height;
};

struct vvm_dec_event {
	struct vvm_request req;
	struct virtio_video_event ev;
};

struct vvm_dec_dev {
	struct vvm_node node;
	struct mutex lock; /* ioctls, file operations, resolution changes */
	/*
	 * Runs the contexts' work that waits for device answers, which the
	 * core's worker delivers: a thread of its own at the same SCHED_FIFO
	 * priority, so that a real-time load below the interrupt threads
	 * holds up a resolution change no more than a completion.
	 */
	struct kthread_worker *ctx_worker;

	spinlock_t ctx_slock; /* guards ctxs */
	struct list_head ctxs;
	struct ida stream_ida;

	u32 max_caps_len;
	struct vvm_dec_format coded[VVM_DEC_MAX_FORMATS];
	unsigned int num_coded;
	struct vvm_dec_format raw[VVM_DEC_MAX_FORMATS];
	unsigned int num_raw;

	struct vvm_dec_event *events;
	struct vvm_request ping;
	atomic_t ping_busy;
	struct virtio_video_query_capability ping_cmd;
	void *ping_resp;
};

struct vvm_dec_pic_fmt {
	u32 fourcc;
	u32 width, height;
	u32 bytesperline, sizeimage;
	struct v4l2_rect visible;
};

/*
 * Where a context is in dev-decoder.rst's state machine, as far as that
 * changes what the driver does; vvm_dec_next_state() holds every
 * transition. Initialization, Capture setup (before the first CAPTURE
 * STREAMON), Decoding, Stopped and Seek differ only in which queues stream,
 * which vb2 tracks, and in whether the device announced the stream's format
 * (device_fmt_known): the driver does the same in all of them, so they are
 * one state here. A drain spans the resolution changes its bitstream brings
 * (dev-decoder.rst, Drain step 2) and FFmpeg ends its input in the middle
 * of one: those overlaps are states of their own.
 */
enum vvm_dec_state {
	/* Initialization, Capture setup, Decoding, Stopped or Seek. */
	VVM_DEC_DECODING,
	/* Drain: a STREAM_DRAIN is at the device; its EOS brings LAST. */
	VVM_DEC_DRAIN,
	/* Drain the device refused: the driver owes the LAST buffer. */
	VVM_DEC_DRAIN_LAST,
	/* Dynamic resolution change: the old format's LAST buffer is owed. */
	VVM_DEC_RES_CHANGE,
	/*
	 * Capture setup after a resolution change: its LAST buffer is out,
	 * picture buffers wait for STREAMOFF(CAPTURE) or START.
	 */
	VVM_DEC_CAPTURE_SETUP,
	/* The two above inside a drain. */
	VVM_DEC_DRAIN_RES_CHANGE,
	VVM_DEC_DRAIN_CAPTURE_SETUP,
	/*
	 * The device died under the context or failed its stream: every
	 * buffer comes back marked ERROR, then calls fail with -EIO. For
	 * good, even once the device is revived.
	 */
	VVM_DEC_FAILED,
};

/* What moves a context from one state to the next. */
enum vvm_dec_trigger {
	VVM_DEC_ON_STOP, /* V4L2_DEC_CMD_STOP: a STREAM_DRAIN goes out */
	VVM_DEC_ON_START, /* V4L2_DEC_CMD_START */
	VVM_DEC_ON_DRAIN_END, /* EOS on a picture buffer, or the drain answered */
	VVM_DEC_ON_DRAIN_REFUSED, /* the device refused the drain */
	VVM_DEC_ON_RES_CHANGE, /* a new picture layout while CAPTURE streams */
	VVM_DEC_ON_LAST_OUT, /* the LAST buffer the driver owed went out */
	VVM_DEC_ON_CAPTURE_OFF, /* STREAMOFF(CAPTURE) */
	VVM_DEC_ON_OUTPUT_OFF, /* STREAMOFF(OUTPUT): a seek ends a drain */
	VVM_DEC_ON_FAIL, /* device death or a stream error */
};

/* What a picture inherits from the bitstream buffer that carried it. */
struct vvm_dec_meta {
	u64 timestamp;
	u32 flags;
	struct v4l2_timecode timecode;
};

struct vvm_dec_ctx {
	struct v4l2_fh fh;
	struct vvm_dec_dev *dev;
	struct list_head list;
	struct v4l2_ctrl_handler hdl;
	struct v4l2_ctrl *min_bufs_ctrl;
	/* On dev->ctx_worker. */
	struct kthread_work res_change;
	struct kthread_work drain_refused;
	struct kthread_work stream_error;

	u32 stream_id;
	const struct vvm_dec_format *coded;
	u32 coded_width, coded_height, coded_sizeimage;
	struct vvm_dec_pic_fmt pic;
	/* The client's colorimetry for the stream; CAPTURE reports it too. */
	u8 colorspace, xfer_func, ycbcr_enc, quantization;
	bool res_created[2];
	bool stream_ok; /* the device holds a stream for this context */
	bool device_fmt_known; /* the device reported the stream's format */

	spinlock_t slock; /* guards the fields below */
	/*
	 * Written under slock. Read without it for FAILED, and for whether
	 * CAPTURE is held, which only dev->lock's holder changes (but to
	 * FAILED).
	 */
	enum vvm_dec_state state;
	struct list_head held; /* buffers not given to the device yet */
	/* The clear under way returns picture buffers only to resend them. */
	bool requeue_capture;
	u32 out_seq, cap_seq;
	u32 cap_undequeued; /* CAPTURE buffers completed, not dequeued yet */
	/*
	 * Pictures from before a resolution change the client must dequeue
	 * before it sees the event; 0 when no event waits.
	 */
	u32 src_change_after;
	/*
	 * Drains sent, and drains ended (by EOS or by their answer); the
	 * device ends them in order. Only the last one sent can end the drain
	 * state: one a seek abandoned may still end late, and is ignored.
	 */
	u32 drains_sent, drains_ended;
	u32 drain_refused_seq; /* the drain drain_refused is about */
	struct vvm_dec_meta meta[VVM_DEC_META_SLOTS];
	unsigned int meta_next;
};

/* The node layer hands the fh to m2m and vb2 as the context (vvm_node.h). */
static_assert(offsetof(struct vvm_dec_ctx, fh) == 0);

/* A drain may outlive its context: the device answers it when it likes. */
struct vvm_dec_drain {
	struct vvm_request req;
	struct vvm_dec_dev *dev;
	u32 stream_id;
	u32 seq; /* its number in the context's drains_sent */
	struct virtio_video_cmd_hdr cmd;
	struct virtio_video_cmd_hdr resp;
};

struct vvm_dec_buf {
	struct v4l2_m2m_buffer m2m;
	struct vvm_dec_ctx *ctx;
	struct list_head list;
	struct vvm_request req;
	struct virtio_video_resource_queue cmd;
	struct virtio_video_resource_queue_resp resp;
	u32 res_id;
	u32 payload;
};

static struct vvm_dec_dev *vvm_dec_core_to_dev(struct vvm_core *core)
{
	return container_of(core, struct vvm_dec_dev, node.core);
}

static struct vvm_dec_ctx *vvm_dec_fh_to_ctx(struct file *file)
{
	return container_of(file->private_data, struct vvm_dec_ctx, fh);
}

static struct vvm_dec_buf *vvm_dec_vb_to_buf(struct vb2_buffer *vb)
{
	return container_of(to_vb2_v4l2_buffer(vb), struct vvm_dec_buf,
			    m2m.vb);
}

static u32 vvm_dec_virtio_queue(bool output_queue)
{
	return output_queue ? VIRTIO_VIDEO_QUEUE_TYPE_INPUT :
			      VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT;
}

static u32 vvm_dec_virtio_format_to_fourcc(u32 format)
{
	switch (format) {
	case VIRTIO_VIDEO_FORMAT_NV12:
		return V4L2_PIX_FMT_NV12;
	case VIRTIO_VIDEO_FORMAT_YUV420:
		return V4L2_PIX_FMT_YUV420;
	case VIRTIO_VIDEO_FORMAT_H264:
		return V4L2_PIX_FMT_H264;
	case VIRTIO_VIDEO_FORMAT_HEVC:
		return V4L2_PIX_FMT_HEVC;
	case VIRTIO_VIDEO_FORMAT_VP8:
		return V4L2_PIX_FMT_VP8;
	case VIRTIO_VIDEO_FORMAT_VP9:
		return V4L2_PIX_FMT_VP9;
	case VIRTIO_VIDEO_FORMAT_AV1:
		return VVM_PIX_FMT_AV1;
	default:
		return 0;
	}
}

static const struct vvm_dec_format *
vvm_dec_find_format(const struct vvm_dec_format *list, unsigned int n, u32 fourcc)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		if (list[i].fourcc == fourcc)
			return &list[i];
	return NULL;
}

/* ---- States -------------------------------------------------------------- */

static const char * const vvm_dec_state_names[] = {
	[VVM_DEC_DECODING] = "decoding",
	[VVM_DEC_DRAIN] = "drain",
	[VVM_DEC_DRAIN_LAST] = "drain-last",
	[VVM_DEC_RES_CHANGE] = "res-change",
	[VVM_DEC_CAPTURE_SETUP] = "capture-setup",
	[VVM_DEC_DRAIN_RES_CHANGE] = "drain+res-change",
	[VVM_DEC_DRAIN_CAPTURE_SETUP] = "drain+capture-setup",
	[VVM_DEC_FAILED] = "failed",
};

/* A STREAM_DRAIN is at the device. */
static bool vvm_dec_draining(enum vvm_dec_state state)
{
	return state == VVM_DEC_DRAIN || state == VVM_DEC_DRAIN_RES_CHANGE ||
	       state == VVM_DEC_DRAIN_CAPTURE_SETUP;
}

/* The next picture buffer back from a clear, or queued, becomes LAST. */
static bool vvm_dec_owes_last(enum vvm_dec_state state)
{
	return state == VVM_DEC_DRAIN_LAST || state == VVM_DEC_RES_CHANGE ||
	       state == VVM_DEC_DRAIN_RES_CHANGE;
}

/* Picture buffers wait in the driver for the new format's setup. */
static bool vvm_dec_holds_capture(enum vvm_dec_state state)
{
	return state == VVM_DEC_RES_CHANGE || state == VVM_DEC_CAPTURE_SETUP ||
	       state == VVM_DEC_DRAIN_RES_CHANGE ||
	       state == VVM_DEC_DRAIN_CAPTURE_SETUP;
}

/*
 * Every transition. Returns the next state; -EBUSY or -EIO for a decoder
 * command the state refuses (dev-decoder.rst: none while a drain or a
 * resolution change waits for its LAST buffer; -EIO once failed); -EINVAL
 * for a trigger the driver never fires in that state. What the device
 * sends when nothing waits for it (an EOS without a drain) changes nothing.
 */
static int vvm_dec_next_state(enum vvm_dec_state from, enum vvm_dec_trigger on)
{
	if (from == VVM_DEC_FAILED)
		return on == VVM_DEC_ON_STOP || on == VVM_DEC_ON_START ?
		       -EIO : VVM_DEC_FAILED;
	switch (on) {
	case VVM_DEC_ON_FAIL:
		return VVM_DEC_FAILED;
	case VVM_DEC_ON_STOP:
		if (from == VVM_DEC_DECODING)
			return VVM_DEC_DRAIN;
		if (from == VVM_DEC_RES_CHANGE)
			return VVM_DEC_DRAIN_RES_CHANGE;
		if (from == VVM_DEC_CAPTURE_SETUP)
			return VVM_DEC_DRAIN_CAPTURE_SETUP;
		return -EBUSY;
	case VVM_DEC_ON_START:
		if (from == VVM_DEC_DECODING || from == VVM_DEC_CAPTURE_SETUP)
			return VVM_DEC_DECODING;
		return -EBUSY;
	case VVM_DEC_ON_DRAIN_END:
	case VVM_DEC_ON_OUTPUT_OFF:
		if (from == VVM_DEC_DRAIN)
			return VVM_DEC_DECODING;
		if (from == VVM_DEC_DRAIN_RES_CHANGE)
			return VVM_DEC_RES_CHANGE;
		if (from == VVM_DEC_DRAIN_CAPTURE_SETUP)
			return VVM_DEC_CAPTURE_SETUP;
		return from;
	case VVM_DEC_ON_DRAIN_REFUSED:
		if (from == VVM_DEC_DRAIN)
			return VVM_DEC_DRAIN_LAST;
		/* The change's LAST buffer ends the drain too. */
		if (from == VVM_DEC_DRAIN_RES_CHANGE ||
		    from == VVM_DEC_DRAIN_CAPTURE_SETUP)
			return VVM_DEC_RES_CHANGE;
		return -EINVAL;
	case VVM_DEC_ON_RES_CHANGE:
		if (vvm_dec_draining(from))
			return VVM_DEC_DRAIN_RES_CHANGE;
		return VVM_DEC_RES_CHANGE;
	case VVM_DEC_ON_LAST_OUT:
		if (from == VVM_DEC_DRAIN_LAST)
			return VVM_DEC_DECODING;
		if (from == VVM_DEC_RES_CHANGE)
			return VVM_DEC_CAPTURE_SETUP;
		if (from == VVM_DEC_DRAIN_RES_CHANGE)
			return VVM_DEC_DRAIN_CAPTURE_SETUP;
		return -EINVAL;
	case VVM_DEC_ON_CAPTURE_OFF:
		return vvm_dec_draining(from) ? VVM_DEC_DRAIN : VVM_DEC_DECODING;
	}
	return -EINVAL;
}

/*
 * The one place a context changes state; ctx->slock held. Returns 0, or
 * the error of a refused decoder command with the state unchanged.
 */
static int vvm_dec_transition(struct vvm_dec_ctx *ctx, enum vvm_dec_trigger on)
{
	enum vvm_dec_state from = ctx->state;
	int next = vvm_dec_next_state(from, on);

	lockdep_assert_held(&ctx->slock);
	if (WARN_ONCE(next == -EINVAL,
		      "virtio-video decoder: trigger %d in state %s\n", on,
		      vvm_dec_state_names[from]))
		return -EINVAL;
	if (next < 0)
		return next;
	if (next != from) {
		dev_dbg(&ctx->dev->node.vfd.dev, "stream %u: %s -> %s\n",
			ctx->stream_id, vvm_dec_state_names[from],
			vvm_dec_state_names[next]);
		WRITE_ONCE(ctx->state, next);
	}
	return 0;
}

static bool vvm_dec_failed(struct vvm_dec_ctx *ctx)
{
	return READ_ONCE(ctx->state) == VVM_DEC_FAILED;
}

/* ---- Commands ------------------------------------------------------------ */

static int vvm_dec_resp_to_errno(const struct virtio_video_cmd_hdr *hdr, u32 expected)
{
	u32 type = le32_to_cpu(hdr->type);

	if (type == expected)
		return 0;
	switch (type) {
	case VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY:
		return -ENOMEM;
	case VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER:
	case VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID:
		return -EINVAL;
	default:
		return -EIO;
	}
}

static int vvm_dec_call(struct vvm_dec_dev *dev, const void *cmd, size_t cmd_len,
			const void *data, size_t data_len,
		    void *resp, size_t resp_len, u32 expected)
{
	u32 used = 0;
	int ret;

	ret = vvm_core_call(&dev->node.core, VIRTIO_VIDEO_QUEUE_COMMAND, cmd,
			    cmd_len, data, data_len, resp, resp_len, &used);
	if (ret)
		return ret;
	if (used < sizeof(struct virtio_video_cmd_hdr))
		return -EIO;
	ret = vvm_dec_resp_to_errno(resp, expected);
	if (!ret && used < resp_len)
		return -EIO;
	return ret;
}

static void vvm_dec_fill_hdr(struct virtio_video_cmd_hdr *hdr, u32 type, u32 stream)
{
	hdr->type = cpu_to_le32(type);
	hdr->stream_id = cpu_to_le32(stream);
}

static int vvm_dec_simple_cmd(struct vvm_dec_ctx *ctx, u32 type)
{
	struct virtio_video_cmd_hdr cmd = {}, resp;

	vvm_dec_fill_hdr(&cmd, type, ctx->stream_id);
	return vvm_dec_call(ctx->dev, &cmd, sizeof(cmd), NULL, 0, &resp,
			sizeof(resp), VIRTIO_VIDEO_RESP_OK_NODATA);
}

static int vvm_dec_queue_cmd(struct vvm_dec_ctx *ctx, u32 type, bool output_queue)
{
	struct virtio_video_queue_cmd cmd = {};
	struct virtio_video_cmd_hdr resp;

	vvm_dec_fill_hdr(&cmd.hdr, type, ctx->stream_id);
	cmd.queue_type = cpu_to_le32(vvm_dec_virtio_queue(output_queue));
	return vvm_dec_call(ctx->dev, &cmd, sizeof(cmd), NULL, 0, &resp,
			sizeof(resp), VIRTIO_VIDEO_RESP_OK_NODATA);
}

/*
 * QUEUE_CLEAR returns every buffer of the queue before its reply. A device
 * still holding one afterwards (it refused the clear, answered first, or its
 * ring broke) could write into it after vb2 handed it back and its memory
 * was freed: stop the device, which fails what it held.
 */
static void vvm_dec_queue_clear(struct vvm_dec_ctx *ctx, struct vb2_queue *vq)
{
	struct vvm_core *core = &ctx->dev->node.core;
	bool output = V4L2_TYPE_IS_OUTPUT(vq->type);
	int ret;

	ret = vvm_dec_queue_cmd(ctx, VIRTIO_VIDEO_CMD_QUEUE_CLEAR, output);
	vvm_core_flush(core);
	if (!vvm_core_holds(core, vq))
		return;
	dev_err(&core->vdev->dev,
		"device kept %s buffers after QUEUE_CLEAR (%d), device marked dead\n",
		output ? "bitstream" : "picture", ret);
	vvm_core_kill(core);
}

static int vvm_dec_ctx_check_alive(struct vvm_dec_ctx *ctx)
{
	if (vvm_dec_failed(ctx))
		return -EIO;
	return vvm_core_check_alive(&ctx->dev->node.core);
}

static int vvm_dec_get_params(struct vvm_dec_ctx *ctx, bool output_queue,
			      struct virtio_video_params_ext *params)
{
	struct virtio_video_queue_cmd cmd = {};
	struct virtio_video_get_params_ext_resp *resp;
	int ret;

	resp = kzalloc(sizeof(*resp), GFP_KERNEL);
	if (!resp)
		return -ENOMEM;
	vvm_dec_fill_hdr(&cmd.hdr, VIRTIO_VIDEO_CMD_GET_PARAMS_EXT, ctx->stream_id);
	cmd.queue_type = cpu_to_le32(vvm_dec_virtio_queue(output_queue));
	ret = vvm_dec_call(ctx->dev, &cmd, sizeof(cmd), NULL, 0, resp,
			   sizeof(*resp), VIRTIO_VIDEO_RESP_OK_GET_PARAMS);
	if (!ret)
		*params = resp->params;
	kfree(resp);
	return ret;
}

static int vvm_dec_set_params(struct vvm_dec_ctx *ctx,
			      const struct virtio_video_params_ext *params)
{
	struct virtio_video_set_params_ext *cmd;
	struct virtio_video_cmd_hdr resp;
	int ret;

	cmd = kzalloc(sizeof(*cmd), GFP_KERNEL);
	if (!cmd)
		return -ENOMEM;
	vvm_dec_fill_hdr(&cmd->hdr, VIRTIO_VIDEO_CMD_SET_PARAMS_EXT, ctx->stream_id);
	cmd->params = *params;
	ret = vvm_dec_call(ctx->dev, cmd, sizeof(*cmd), NULL, 0, &resp,
			   sizeof(resp), VIRTIO_VIDEO_RESP_OK_NODATA);
	kfree(cmd);
	return ret;
}

/*
 * Tell the device the coded size the client gave on OUTPUT: until the
 * stream header is parsed, the device's picture layout (which S_FMT on
 * CAPTURE reads back) then follows OUTPUT, as dev-decoder.rst says the
 * CAPTURE format does, instead of the device's own default size. A client
 * that set the stream's real size and set up CAPTURE before the header
 * (FFmpeg does) then sees no resolution change.
 */
static int vvm_dec_set_coded_size(struct vvm_dec_ctx *ctx)
{
	struct virtio_video_params_ext params;
	int ret;

	ret = vvm_dec_get_params(ctx, true, &params);
	if (ret)
		return ret;
	params.frame_width = cpu_to_le32(ctx->coded_width);
	params.frame_height = cpu_to_le32(ctx->coded_height);
	params.plane_formats[0].plane_size = cpu_to_le32(ctx->coded_sizeimage);
	return vvm_dec_set_params(ctx, &params);
}

static int vvm_dec_stream_create(struct vvm_dec_ctx *ctx)
{
	struct virtio_video_stream_create *cmd;
	struct virtio_video_cmd_hdr resp;
	int ret;

	cmd = kzalloc(sizeof(*cmd), GFP_KERNEL);
	if (!cmd)
		return -ENOMEM;
	vvm_dec_fill_hdr(&cmd->hdr, VIRTIO_VIDEO_CMD_STREAM_CREATE, ctx->stream_id);
	cmd->in_mem_type = cpu_to_le32(VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES);
	cmd->out_mem_type = cpu_to_le32(VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES);
	cmd->coded_format = cpu_to_le32(ctx->coded->virtio);
	__get_task_comm((char *)cmd->tag, sizeof(cmd->tag), current);
	ret = vvm_dec_call(ctx->dev, cmd, sizeof(*cmd), NULL, 0, &resp,
			   sizeof(resp), VIRTIO_VIDEO_RESP_OK_NODATA);
	kfree(cmd);
	if (ret)
		return ret;
	memset(ctx->res_created, 0, sizeof(ctx->res_created));
	ctx->device_fmt_known = false;
	ctx->stream_ok = true;
	return vvm_dec_set_coded_size(ctx);
}

/* ---- Picture format ------------------------------------------------------ */

static void vvm_dec_default_pic_layout(struct vvm_dec_pic_fmt *pic)
{
	u32 chroma_h = DIV_ROUND_UP(pic->height, 2);

	pic->bytesperline = ALIGN(pic->width, 2);
	if (pic->fourcc == V4L2_PIX_FMT_YUV420)
		pic->sizeimage = pic->bytesperline * pic->height +
				 2 * (pic->bytesperline / 2) * chroma_h;
	else
		pic->sizeimage = pic->bytesperline * (pic->height + chroma_h);
}

static void vvm_dec_reset_pic_fmt(struct vvm_dec_ctx *ctx)
{
	struct vvm_dec_pic_fmt *pic = &ctx->pic;

	pic->width = ctx->coded_width;
	pic->height = ctx->coded_height;
	pic->visible = (struct v4l2_rect){ 0, 0, pic->width, pic->height };
	vvm_dec_default_pic_layout(pic);
}

/*
 * The device's component planes must sit where a single-plane V4L2 client
 * looks for them: back to back, chroma rows as long as the fourcc implies
 * (NV12: the luma stride; YUV420: half of it). Only the last plane may be
 * longer than needed, and the whole picture takes at most twice what it
 * needs, so a device cannot make the guest allocate gigabytes per buffer.
 */
static int vvm_dec_check_pic_layout(struct vvm_dec_pic_fmt *pic,
				    const struct virtio_video_params_ext *p)
{
	bool planar = pic->fourcc == V4L2_PIX_FMT_YUV420;
	u32 num_planes = le32_to_cpu(p->num_planes);
	u64 bpl = le32_to_cpu(p->plane_formats[0].stride);
	u64 chroma_rows = DIV_ROUND_UP(pic->height, 2);
	u64 need[VIRTIO_VIDEO_MAX_PLANES] = {}, chroma_stride, size = 0, total = 0;
	u32 i;

	if (num_planes != (planar ? 3 : 2) ||
	    bpl < ALIGN(pic->width, 2) || (bpl & 1) ||
	    bpl > 2ULL * ALIGN(pic->width, 2) + VVM_DEC_MAX_STRIDE_PAD)
		return -EINVAL;
	chroma_stride = planar ? bpl / 2 : bpl;
	need[0] = bpl * pic->height;
	for (i = 1; i < num_planes; i++)
		need[i] = chroma_stride * chroma_rows;
	for (i = 0; i < num_planes; i++) {
		u64 plane = le32_to_cpu(p->plane_formats[i].plane_size);

		if (i && le32_to_cpu(p->plane_formats[i].stride) != chroma_stride)
			return -EINVAL;
		if (i + 1 < num_planes ? plane != need[i] : plane < need[i])
			return -EINVAL;
		size += plane;
		total += need[i];
	}
	if (size > 2 * total || size > U32_MAX)
		return -EINVAL;
	pic->bytesperline = bpl;
	pic->sizeimage = size;
	return 0;
}

/* A crop rectangle outside the picture means the whole picture. */
static void vvm_dec_set_visible(struct vvm_dec_pic_fmt *pic,
				const struct virtio_video_crop *crop)
{
	u32 left = le32_to_cpu(crop->left), top = le32_to_cpu(crop->top);
	u32 width = le32_to_cpu(crop->width);
	u32 height = le32_to_cpu(crop->height);

	if (!width || !height || left >= pic->width || top >= pic->height ||
	    width > pic->width - left || height > pic->height - top)
		pic->visible = (struct v4l2_rect){ 0, 0, pic->width, pic->height };
	else
		pic->visible = (struct v4l2_rect){ left, top, width, height };
}

/* Take the picture layout the device reports, in one memory plane. */
static int vvm_dec_apply_output_params(struct vvm_dec_ctx *ctx,
				       const struct virtio_video_params_ext *p)
{
	struct vvm_dec_pic_fmt pic = {};
	u32 min_bufs;
	int ret;

	pic.fourcc = vvm_dec_virtio_format_to_fourcc(le32_to_cpu(p->format));
	pic.width = le32_to_cpu(p->frame_width);
	pic.height = le32_to_cpu(p->frame_height);
	if (!vvm_dec_find_format(ctx->dev->raw, ctx->dev->num_raw, pic.fourcc) ||
	    !pic.width || !pic.height || pic.width > VVM_DEC_MAX_DIM ||
	    pic.height > VVM_DEC_MAX_DIM)
		return -EINVAL;
	ret = vvm_dec_check_pic_layout(&pic, p);
	if (ret)
		return ret;
	vvm_dec_set_visible(&pic, &p->crop);

	ctx->pic = pic;
	min_bufs = clamp(le32_to_cpu(p->min_buffers), 1U,
			 (u32)VVM_DEC_MAX_MIN_BUFFERS);
	v4l2_ctrl_s_ctrl(ctx->min_bufs_ctrl, min_bufs);
	return 0;
}

static int vvm_dec_refresh_output_params(struct vvm_dec_ctx *ctx)
{
	struct virtio_video_params_ext params;
	int ret;

	ret = vvm_dec_get_params(ctx, false, &params);
	if (ret)
		return ret;
	return vvm_dec_apply_output_params(ctx, &params);
}

/* ---- Buffers ------------------------------------------------------------- */

static void vvm_dec_buf_done(struct vvm_dec_buf *buf, enum vb2_buffer_state state,
			     u32 payload, bool last)
{
	struct vb2_v4l2_buffer *vbuf = &buf->m2m.vb;
	struct vvm_dec_ctx *ctx = buf->ctx;
	bool output = V4L2_TYPE_IS_OUTPUT(vbuf->vb2_buf.type);
	unsigned long flags;

	vbuf->field = V4L2_FIELD_NONE;
	if (last)
		vbuf->flags |= V4L2_BUF_FLAG_LAST;
	/* CAPTURE sequence numbers count pictures, not empty buffers. */
	spin_lock_irqsave(&ctx->slock, flags);
	if (output)
		vbuf->sequence = ctx->out_seq++;
	else if (state == VB2_BUF_STATE_DONE && payload && !last)
		vbuf->sequence = ctx->cap_seq++;
	else
		vbuf->sequence = ctx->cap_seq;
	if (!output)
		ctx->cap_undequeued++;
	spin_unlock_irqrestore(&ctx->slock, flags);
	if (!output)
		vb2_set_plane_payload(&vbuf->vb2_buf, 0,
				      state == VB2_BUF_STATE_DONE ?
				      min_t(unsigned long, payload,
					    vb2_plane_size(&vbuf->vb2_buf, 0)) :
				      0);
	vb2_buffer_done(&vbuf->vb2_buf, state);
}

static void vvm_dec_queue_eos_event(struct vvm_dec_ctx *ctx)
{
	static const struct v4l2_event eos = { .type = V4L2_EVENT_EOS };

	v4l2_event_queue_fh(&ctx->fh, &eos);
}

static void vvm_dec_queue_src_change_event(struct vvm_dec_ctx *ctx)
{
	static const struct v4l2_event src_ch = {
		.type = V4L2_EVENT_SOURCE_CHANGE,
		.u.src_change.changes = V4L2_EVENT_SRC_CH_RESOLUTION,
	};

	v4l2_event_queue_fh(&ctx->fh, &src_ch);
}

static void vvm_dec_remember_meta(struct vvm_dec_ctx *ctx, struct vb2_v4l2_buffer *src)
{
	struct vvm_dec_meta *m;
	unsigned long flags;

	spin_lock_irqsave(&ctx->slock, flags);
	m = &ctx->meta[ctx->meta_next];
	ctx->meta_next = (ctx->meta_next + 1) % VVM_DEC_META_SLOTS;
	m->timestamp = src->vb2_buf.timestamp;
	m->flags = src->flags & VVM_DEC_COPIED_FLAGS;
	m->timecode = src->timecode;
	spin_unlock_irqrestore(&ctx->slock, flags);
}

static void vvm_dec_apply_meta(struct vvm_dec_ctx *ctx, struct vb2_v4l2_buffer *dst)
{
	unsigned long flags;
	unsigned int i, slot;

	spin_lock_irqsave(&ctx->slock, flags);
	for (i = 1; i <= VVM_DEC_META_SLOTS; i++) {
		slot = (ctx->meta_next + VVM_DEC_META_SLOTS - i) %
		       VVM_DEC_META_SLOTS;
		if (ctx->meta[slot].timestamp != dst->vb2_buf.timestamp)
			continue;
		dst->flags &= ~VVM_DEC_COPIED_FLAGS;
		dst->flags |= ctx->meta[slot].flags;
		dst->timecode = ctx->meta[slot].timecode;
		break;
	}
	spin_unlock_irqrestore(&ctx->slock, flags);
}

/*
 * A drain ends with an EOS on a picture buffer: that of the oldest drain
 * still open. Only the last drain sent ends the drain state; an older one
 * a seek abandoned (dev-decoder.rst lets STREAMOFF(OUTPUT) abort a drain)
 * must not make a picture after the seek LAST. ctx->slock held.
 */
static bool vvm_dec_eos_ends_drain(struct vvm_dec_ctx *ctx)
{
	lockdep_assert_held(&ctx->slock);
	if (ctx->drains_ended == ctx->drains_sent)
		return false;
	ctx->drains_ended++;
	return ctx->drains_ended == ctx->drains_sent &&
	       vvm_dec_draining(ctx->state);
}

/* Threaded half: the device returned a buffer. */
static void vvm_dec_resource_queue_done(struct vvm_request *req, int status)
{
	struct vvm_dec_buf *buf = req->priv;
	struct vvm_dec_ctx *ctx = buf->ctx;
	bool output = V4L2_TYPE_IS_OUTPUT(buf->m2m.vb.vb2_buf.type);
	enum vb2_buffer_state state = VB2_BUF_STATE_DONE;
	unsigned long irqflags;
	bool last = false;
	u32 flags = 0;

	if (status || req->used_len < sizeof(buf->resp) ||
	    vvm_dec_resp_to_errno(&buf->resp.hdr,
				  VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE))
		state = VB2_BUF_STATE_ERROR;
	else
		flags = le32_to_cpu(buf->resp.flags);

	if (output) {
		if (flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR)
			state = VB2_BUF_STATE_ERROR;
		vvm_dec_buf_done(buf, state, 0, false);
		return;
	}

	spin_lock_irqsave(&ctx->slock, irqflags);
	if ((flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR) &&
	    vvm_dec_owes_last(ctx->state)) {
		/* The first one a clear returns is the LAST one. */
		last = true;
		state = VB2_BUF_STATE_DONE;
		vvm_dec_transition(ctx, VVM_DEC_ON_LAST_OUT);
	} else if ((flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR) &&
		   ctx->requeue_capture) {
		list_add_tail(&buf->list, &ctx->held);
		spin_unlock_irqrestore(&ctx->slock, irqflags);
		return;
	} else if ((flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS) &&
		   vvm_dec_eos_ends_drain(ctx)) {
		last = true;
		state = VB2_BUF_STATE_DONE;
		vvm_dec_transition(ctx, VVM_DEC_ON_DRAIN_END);
	} else if (flags & VIRTIO_VIDEO_BUFFER_FLAG_ERR) {
		state = VB2_BUF_STATE_ERROR;
	}
	spin_unlock_irqrestore(&ctx->slock, irqflags);
	/* An EOS that ends nothing is a picture like the others. */
	if (!last)
		flags &= ~VIRTIO_VIDEO_BUFFER_FLAG_EOS;

	if (state == VB2_BUF_STATE_DONE && !last) {
		buf->m2m.vb.vb2_buf.timestamp = le64_to_cpu(buf->resp.timestamp);
		vvm_dec_apply_meta(ctx, &buf->m2m.vb);
	}
	/* The event comes first: a client sees it before the LAST buffer. */
	if (flags & VIRTIO_VIDEO_BUFFER_FLAG_EOS)
		vvm_dec_queue_eos_event(ctx);
	vvm_dec_buf_done(buf, state, last ? 0 : buf->payload, last);
}

static int vvm_dec_create_resource(struct vvm_dec_ctx *ctx, struct vvm_dec_buf *buf)
{
	struct vb2_buffer *vb = &buf->m2m.vb.vb2_buf;
	struct sg_table *sgt = vb2_dma_sg_plane_desc(vb, 0);
	struct virtio_video_resource_create cmd = {};
	struct virtio_video_mem_entry *entries;
	struct virtio_video_cmd_hdr resp;
	struct scatterlist *sg;
	unsigned int i;
	int ret;

	if (!sgt || !sgt->nents)
		return -EINVAL;
	entries = kcalloc(sgt->nents, sizeof(*entries), GFP_KERNEL);
	if (!entries)
		return -ENOMEM;
	for_each_sgtable_dma_sg(sgt, sg, i) {
		entries[i].addr = cpu_to_le64(sg_dma_address(sg));
		entries[i].length = cpu_to_le32(sg_dma_len(sg));
	}

	/* Re-creating an id replaces the resource (e.g. a new DMABUF). */
	buf->res_id = vb->index + 1;
	vvm_dec_fill_hdr(&cmd.hdr, VIRTIO_VIDEO_CMD_RESOURCE_CREATE, ctx->stream_id);
	cmd.queue_type = cpu_to_le32(vvm_dec_virtio_queue(V4L2_TYPE_IS_OUTPUT(vb->type)));
	cmd.resource_id = cpu_to_le32(buf->res_id);
	cmd.planes_layout = cpu_to_le32(VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER);
	cmd.num_planes = cpu_to_le32(1);
	cmd.num_entries[0] = cpu_to_le32(sgt->nents);
	ret = vvm_dec_call(ctx->dev, &cmd, sizeof(cmd), entries,
			   sgt->nents * sizeof(*entries), &resp, sizeof(resp),
		       VIRTIO_VIDEO_RESP_OK_NODATA);
	kfree(entries);
	if (ret)
		buf->res_id = 0;
	else
		ctx->res_created[V4L2_TYPE_IS_OUTPUT(vb->type)] = true;
	return ret;
}

/* Hand one buffer to the device; on failure it is returned with ERROR. */
static void vvm_dec_send_buffer(struct vvm_dec_ctx *ctx, struct vvm_dec_buf *buf)
{
	struct vb2_buffer *vb = &buf->m2m.vb.vb2_buf;
	bool output = V4L2_TYPE_IS_OUTPUT(vb->type);
	struct scatterlist cmd_sg, resp_sg, *sgs[2];
	int ret = 0;

	if (!buf->res_id)
		ret = vvm_dec_create_resource(ctx, buf);
	if (ret)
		goto fail;

	memset(&buf->cmd, 0, sizeof(buf->cmd));
	vvm_dec_fill_hdr(&buf->cmd.hdr, VIRTIO_VIDEO_CMD_RESOURCE_QUEUE, ctx->stream_id);
	buf->cmd.queue_type = cpu_to_le32(vvm_dec_virtio_queue(output));
	buf->cmd.resource_id = cpu_to_le32(buf->res_id);
	buf->cmd.num_data_sizes = cpu_to_le32(1);
	if (output) {
		buf->cmd.timestamp = cpu_to_le64(vb->timestamp);
		buf->cmd.data_sizes[0] = cpu_to_le32(vb2_get_plane_payload(vb, 0));
		vvm_dec_remember_meta(ctx, &buf->m2m.vb);
	}
	buf->payload = ctx->pic.sizeimage;

	sg_init_one(&cmd_sg, &buf->cmd, sizeof(buf->cmd));
	sg_init_one(&resp_sg, &buf->resp, sizeof(buf->resp));
	sgs[0] = &cmd_sg;
	sgs[1] = &resp_sg;
	vvm_request_init(&buf->req, vvm_dec_resource_queue_done, buf);
	/* Bitstream waits for a stalled decoder, a picture buffer for a picture. */
	buf->req.wait = VVM_WAIT_LONG;
	buf->req.owner = vb->vb2_queue;
	ret = vvm_core_submit(&ctx->dev->node.core, &buf->req,
			      VIRTIO_VIDEO_QUEUE_COMMAND, sgs, 1, 1);
	if (!ret)
		return;
fail:
	vvm_dec_buf_done(buf, VB2_BUF_STATE_ERROR, 0, false);
}

/*
 * Sends the held buffers of a queue. While a resolution change holds
 * CAPTURE back, the first one still owed becomes the LAST buffer instead.
 */
static void vvm_dec_send_held(struct vvm_dec_ctx *ctx, bool output)
{
	struct vvm_dec_buf *buf, *tmp, *last = NULL;
	unsigned long flags;
	LIST_HEAD(send);

	spin_lock_irqsave(&ctx->slock, flags);
	list_for_each_entry_safe(buf, tmp, &ctx->held, list) {
		if (V4L2_TYPE_IS_OUTPUT(buf->m2m.vb.vb2_buf.type) != output)
			continue;
		if (!output && vvm_dec_owes_last(ctx->state)) {
			vvm_dec_transition(ctx, VVM_DEC_ON_LAST_OUT);
			list_del_init(&buf->list);
			last = buf;
			continue;
		}
		if (!output && vvm_dec_holds_capture(ctx->state))
			continue;
		list_move_tail(&buf->list, &send);
	}
	spin_unlock_irqrestore(&ctx->slock, flags);

	if (last)
		vvm_dec_buf_done(last, VB2_BUF_STATE_DONE, 0, true);
	list_for_each_entry_safe(buf, tmp, &send, list) {
		list_del_init(&buf->list);
		vvm_dec_send_buffer(ctx, buf);
	}
}

static void vvm_dec_return_held(struct vvm_dec_ctx *ctx, bool output,
				enum vb2_buffer_state state)
{
	struct vvm_dec_buf *buf, *tmp;
	unsigned long flags;
	LIST_HEAD(ret);

	spin_lock_irqsave(&ctx->slock, flags);
	list_for_each_entry_safe(buf, tmp, &ctx->held, list)
		if (V4L2_TYPE_IS_OUTPUT(buf->m2m.vb.vb2_buf.type) == output)
			list_move_tail(&buf->list, &ret);
	spin_unlock_irqrestore(&ctx->slock, flags);

	list_for_each_entry_safe(buf, tmp, &ret, list) {
		list_del_init(&buf->list);
		vvm_dec_buf_done(buf, state, 0, false);
	}
}

/* ---- vb2 ----------------------------------------------------------------- */

static int vvm_dec_queue_setup(struct vb2_queue *vq, unsigned int *nbuffers,
			       unsigned int *nplanes, unsigned int sizes[],
			   struct device *alloc_devs[])
{
	struct vvm_dec_ctx *ctx = vb2_get_drv_priv(vq);
	bool output = V4L2_TYPE_IS_OUTPUT(vq->type);
	u32 size = output ? ctx->coded_sizeimage : ctx->pic.sizeimage;
	int ret;

	if (*nplanes)
		return (*nplanes != 1 || sizes[0] < size) ? -EINVAL : 0;

	if (!ctx->stream_ok) {
		ret = vvm_dec_stream_create(ctx);
		if (ret)
			return ret;
	}
	/* Fresh allocation: the device forgets the previous resources. */
	if (!vb2_get_num_buffers(vq) && ctx->res_created[output]) {
		ret = vvm_dec_queue_cmd(ctx, VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL,
					output);
		if (ret)
			return ret;
		ctx->res_created[output] = false;
	}
	*nplanes = 1;
	sizes[0] = size;
	return 0;
}

static int vvm_dec_buf_out_validate(struct vb2_buffer *vb)
{
	to_vb2_v4l2_buffer(vb)->field = V4L2_FIELD_NONE;
	return 0;
}

static int vvm_dec_buf_init(struct vb2_buffer *vb)
{
	struct vvm_dec_buf *buf = vvm_dec_vb_to_buf(vb);

	buf->ctx = vb2_get_drv_priv(vb->vb2_queue);
	buf->res_id = 0;
	INIT_LIST_HEAD(&buf->list);
	return 0;
}

static int vvm_dec_buf_prepare(struct vb2_buffer *vb)
{
	struct vvm_dec_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);

	if (V4L2_TYPE_IS_OUTPUT(vb->type))
		return vb2_get_plane_payload(vb, 0) > vb2_plane_size(vb, 0) ?
			-EINVAL : 0;
	/*
	 * Until the LAST buffer of a resolution change, clients keep queuing
	 * the buffers they have (dev-decoder.rst); those are held, never
	 * given to the device for the new size.
	 */
	if (vb2_plane_size(vb, 0) < ctx->pic.sizeimage &&
	    !vvm_dec_holds_capture(READ_ONCE(ctx->state)))
		return -EINVAL;
	vb2_set_plane_payload(vb, 0, min_t(unsigned long, ctx->pic.sizeimage,
					   vb2_plane_size(vb, 0)));
	return 0;
}

/*
 * DQBUF. A client sees a resolution change only once it has taken every
 * picture from before it: FFmpeg and GStreamer handle the event before
 * the buffers that are ready with it and drop those with the old buffers.
 */
static void vvm_dec_buf_finish(struct vb2_buffer *vb)
{
	struct vvm_dec_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);
	bool signal = false;
	unsigned long flags;

	/* Buffers a STREAMOFF takes back are not dequeued. */
	if (V4L2_TYPE_IS_OUTPUT(vb->type) || !vb2_is_streaming(vb->vb2_queue) ||
	    (vb->state != VB2_BUF_STATE_DONE && vb->state != VB2_BUF_STATE_ERROR))
		return;
	spin_lock_irqsave(&ctx->slock, flags);
	if (ctx->cap_undequeued)
		ctx->cap_undequeued--;
	if (ctx->src_change_after)
		signal = !--ctx->src_change_after;
	spin_unlock_irqrestore(&ctx->slock, flags);
	if (signal)
		vvm_dec_queue_src_change_event(ctx);
}

static void vvm_dec_buf_queue(struct vb2_buffer *vb)
{
	struct vvm_dec_ctx *ctx = vb2_get_drv_priv(vb->vb2_queue);
	struct vvm_dec_buf *buf = vvm_dec_vb_to_buf(vb);
	unsigned long flags;

	/*
	 * The buffer waits until QBUF has reported its state (vvm_dec_qbuf) or
	 * streaming starts: the device may return it at once, a LAST buffer
	 * owed after a resolution change is returned at once, and QBUF must
	 * not report a buffer it queued as already done.
	 */
	spin_lock_irqsave(&ctx->slock, flags);
	list_add_tail(&buf->list, &ctx->held);
	spin_unlock_irqrestore(&ctx->slock, flags);
}

static int vvm_dec_start_streaming(struct vb2_queue *vq, unsigned int count)
{
	struct vvm_dec_ctx *ctx = vb2_get_drv_priv(vq);
	bool output = V4L2_TYPE_IS_OUTPUT(vq->type);
	unsigned long flags;
	int ret;

	ret = vvm_dec_ctx_check_alive(ctx);
	if (ret) {
		vvm_dec_return_held(ctx, output, VB2_BUF_STATE_QUEUED);
		return ret;
	}
	spin_lock_irqsave(&ctx->slock, flags);
	if (output) {
		ctx->out_seq = 0;
	} else {
		ctx->cap_seq = 0;
		ctx->cap_undequeued = 0;
		ctx->src_change_after = 0;
	}
	spin_unlock_irqrestore(&ctx->slock, flags);
	/*
	 * The device announces a format only when it changes: after a seek
	 * with CAPTURE not set up, tell the client the one it already knows.
	 */
	if (output && ctx->device_fmt_known &&
	    !vb2_is_streaming(v4l2_m2m_get_dst_vq(ctx->fh.m2m_ctx)))
		vvm_dec_queue_src_change_event(ctx);
	vvm_dec_send_held(ctx, output);
	return 0;
}

static void vvm_dec_stop_streaming(struct vb2_queue *vq)
{
	struct vvm_dec_ctx *ctx = vb2_get_drv_priv(vq);
	bool output = V4L2_TYPE_IS_OUTPUT(vq->type);
	unsigned long flags;
	bool signal = false;

	/*
	 * Held buffers first: the clear then waits for a device death in
	 * progress, whose vvm_dec_dead() may be failing them too.
	 */
	vvm_dec_return_held(ctx, output, VB2_BUF_STATE_ERROR);
	vvm_dec_queue_clear(ctx, vq);

	spin_lock_irqsave(&ctx->slock, flags);
	if (output) {
		vvm_dec_transition(ctx, VVM_DEC_ON_OUTPUT_OFF);
	} else {
		vvm_dec_transition(ctx, VVM_DEC_ON_CAPTURE_OFF);
		/* The pictures it waited for are gone: the change is not. */
		signal = ctx->src_change_after;
		ctx->src_change_after = 0;
		ctx->cap_undequeued = 0;
	}
	spin_unlock_irqrestore(&ctx->slock, flags);
	if (signal)
		vvm_dec_queue_src_change_event(ctx);
}

static const struct vb2_ops vvm_dec_qops = {
	.queue_setup = vvm_dec_queue_setup,
	.buf_out_validate = vvm_dec_buf_out_validate,
	.buf_init = vvm_dec_buf_init,
	.buf_prepare = vvm_dec_buf_prepare,
	.buf_finish = vvm_dec_buf_finish,
	.buf_queue = vvm_dec_buf_queue,
	.start_streaming = vvm_dec_start_streaming,
	.stop_streaming = vvm_dec_stop_streaming,
	.wait_prepare = vb2_ops_wait_prepare,
	.wait_finish = vb2_ops_wait_finish,
};

/* ---- Resolution change and device events --------------------------------- */

/*
 * The failed-context path, for a device death and a stream error alike:
 * the context turns FAILED and its held buffers come back marked ERROR.
 * The queues are not put in vb2's error state: a client must still get its
 * buffers back, and FFmpeg, which waits for a free bitstream buffer, would
 * spin on POLLERR forever. QBUF fails from now on, and DQBUF once nothing
 * is left (vvm_dec_dqbuf). Any context; dev->ctx_slock may be held.
 */
static void vvm_dec_ctx_fail(struct vvm_dec_ctx *ctx)
{
	unsigned long flags;

	spin_lock_irqsave(&ctx->slock, flags);
	vvm_dec_transition(ctx, VVM_DEC_ON_FAIL);
	spin_unlock_irqrestore(&ctx->slock, flags);
	vvm_dec_return_held(ctx, true, VB2_BUF_STATE_ERROR);
	vvm_dec_return_held(ctx, false, VB2_BUF_STATE_ERROR);
}

/*
 * The device failed the stream for good but lives on: the context fails
 * as under a death, and the buffers the device still holds come back
 * (marked ERROR) through QUEUE_CLEAR. dev->lock held.
 */
static void vvm_dec_stream_fail(struct vvm_dec_ctx *ctx)
{
	struct vb2_queue *out_q = v4l2_m2m_get_src_vq(ctx->fh.m2m_ctx);
	struct vb2_queue *cap_q = v4l2_m2m_get_dst_vq(ctx->fh.m2m_ctx);

	vvm_dec_ctx_fail(ctx);
	if (vb2_is_streaming(out_q))
		vvm_dec_queue_clear(ctx, out_q);
	if (vb2_is_streaming(cap_q))
		vvm_dec_queue_clear(ctx, cap_q);
}

static void vvm_dec_stream_error_work(struct kthread_work *work)
{
	struct vvm_dec_ctx *ctx = container_of(work, struct vvm_dec_ctx,
					       stream_error);
	struct vvm_dec_dev *dev = ctx->dev;

	mutex_lock(&dev->lock);
	if (!vvm_dec_failed(ctx)) {
		dev_err(&dev->node.vfd.dev,
			"stream %u: the device reported a stream error; the stream fails\n",
			ctx->stream_id);
		vvm_dec_stream_fail(ctx);
	}
	mutex_unlock(&dev->lock);
}

/*
 * Takes the picture buffers back from the device. Each one it returns goes
 * as the state and requeue_capture say (the LAST one, held to be sent
 * again, or held until STREAMOFF); then the held ones that may go are sent.
 */
static void vvm_dec_clear_capture(struct vvm_dec_ctx *ctx)
{
	unsigned long flags;

	vvm_dec_queue_clear(ctx, v4l2_m2m_get_dst_vq(ctx->fh.m2m_ctx));
	spin_lock_irqsave(&ctx->slock, flags);
	ctx->requeue_capture = false;
	spin_unlock_irqrestore(&ctx->slock, flags);
	vvm_dec_send_held(ctx, false);
}

/*
 * Reads the format the device announced. Without it the client would wait
 * forever: a failure fails the stream, with one line in the log.
 */
static int vvm_dec_read_new_format(struct vvm_dec_ctx *ctx)
{
	struct vvm_dec_dev *dev = ctx->dev;
	struct virtio_video_params_ext params;
	int ret;

	ret = vvm_dec_get_params(ctx, false, &params);
	if (ret) {
		/* A death failed the context already. */
		if (!vvm_dec_failed(ctx)) {
			dev_err(&dev->node.vfd.dev,
				"stream %u: reading the new format failed (%d); the stream fails\n",
				ctx->stream_id, ret);
			vvm_dec_stream_fail(ctx);
		}
		return ret;
	}
	ret = vvm_dec_apply_output_params(ctx, &params);
	if (ret) {
		dev_err(&dev->node.vfd.dev,
			"stream %u: the device reported an invalid picture layout; the stream fails\n",
			ctx->stream_id);
		vvm_dec_stream_fail(ctx);
	}
	return ret;
}

/*
 * A client that allocated CAPTURE buffers for exactly this format (the
 * stream's size given on OUTPUT) sees no resolution change: an event would
 * make it tear down buffers that already hold pictures. Otherwise the
 * event waits until the client has dequeued the pictures completed before
 * it (every completion the device sent before the event has run: the
 * answer to GET_PARAMS came after them).
 */
static void vvm_dec_signal_new_format(struct vvm_dec_ctx *ctx,
				      bool same_layout)
{
	struct vb2_queue *cap_q = v4l2_m2m_get_dst_vq(ctx->fh.m2m_ctx);
	unsigned long flags;
	bool signal;

	signal = !same_layout || !vb2_is_busy(cap_q);
	spin_lock_irqsave(&ctx->slock, flags);
	if (signal && vb2_is_streaming(cap_q) && ctx->cap_undequeued) {
		ctx->src_change_after = ctx->cap_undequeued;
		signal = false;
	}
	spin_unlock_irqrestore(&ctx->slock, flags);
	if (signal)
		vvm_dec_queue_src_change_event(ctx);
}

static void vvm_dec_res_change_work(struct kthread_work *work)
{
	struct vvm_dec_ctx *ctx = container_of(work, struct vvm_dec_ctx,
					       res_change);
	struct vvm_dec_dev *dev = ctx->dev;
	struct vb2_queue *cap_q = v4l2_m2m_get_dst_vq(ctx->fh.m2m_ctx);
	struct vvm_dec_pic_fmt old;
	bool same_layout;
	unsigned long flags;

	mutex_lock(&dev->lock);
	old = ctx->pic;
	if (vvm_dec_failed(ctx) || vvm_dec_read_new_format(ctx))
		goto unlock;
	ctx->device_fmt_known = true;
	same_layout = !memcmp(&old, &ctx->pic, sizeof(old));
	vvm_dec_signal_new_format(ctx, same_layout);
	if (!vb2_is_streaming(cap_q))
		goto unlock;

	/*
	 * The device uses only picture buffers queued after the GET_PARAMS
	 * above read the format (dev->lock keeps QBUF out until the state
	 * below is set). With an unchanged layout the queued ones are sent
	 * again; otherwise the client must reallocate, which it learns from
	 * a LAST buffer, and further buffers wait for its STREAMOFF.
	 */
	spin_lock_irqsave(&ctx->slock, flags);
	if (same_layout)
		ctx->requeue_capture = true;
	else
		vvm_dec_transition(ctx, VVM_DEC_ON_RES_CHANGE);
	spin_unlock_irqrestore(&ctx->slock, flags);
	vvm_dec_clear_capture(ctx);
unlock:
	mutex_unlock(&dev->lock);
}

static int vvm_dec_post_event(struct vvm_dec_dev *dev, struct vvm_dec_event *e);

static void vvm_dec_event_done(struct vvm_request *req, int status)
{
	struct vvm_dec_event *e = container_of(req, struct vvm_dec_event, req);
	struct vvm_dec_dev *dev = req->priv;
	struct vvm_dec_ctx *ctx;
	u32 type, stream;

	if (status)
		return;
	if (req->used_len >= sizeof(e->ev)) {
		type = le32_to_cpu(e->ev.event_type);
		stream = le32_to_cpu(e->ev.stream_id);
		spin_lock(&dev->ctx_slock);
		list_for_each_entry(ctx, &dev->ctxs, list) {
			if (ctx->stream_id != stream)
				continue;
			if (type == VIRTIO_VIDEO_EVENT_DECODER_RESOLUTION_CHANGED)
				kthread_queue_work(dev->ctx_worker,
						   &ctx->res_change);
			else if (type == VIRTIO_VIDEO_EVENT_ERROR)
				kthread_queue_work(dev->ctx_worker,
						   &ctx->stream_error);
			break;
		}
		spin_unlock(&dev->ctx_slock);
	}
	vvm_dec_post_event(dev, e);
}

static int vvm_dec_post_event(struct vvm_dec_dev *dev, struct vvm_dec_event *e)
{
	struct scatterlist sg, *sgs[1] = { &sg };

	memset(&e->ev, 0, sizeof(e->ev));
	vvm_request_init(&e->req, vvm_dec_event_done, dev);
	e->req.wait = VVM_WAIT_EVENT;
	sg_init_one(&sg, &e->ev, sizeof(e->ev));
	return vvm_core_submit(&dev->node.core, &e->req, VIRTIO_VIDEO_QUEUE_EVENT,
			       sgs, 0, 1);
}

static int vvm_dec_post_events(struct vvm_dec_dev *dev)
{
	unsigned int i;
	int ret;

	for (i = 0; i < VVM_DEC_NUM_EVENTS; i++) {
		ret = vvm_dec_post_event(dev, &dev->events[i]);
		if (ret)
			return ret;
	}
	return 0;
}

static void vvm_dec_drain_done(struct vvm_request *req, int status)
{
	struct vvm_dec_drain *drain = container_of(req, struct vvm_dec_drain,
						   req);
	struct vvm_dec_dev *dev = drain->dev;
	struct vvm_dec_ctx *ctx;
	bool refused;

	/* A dead device failed everything already; a refusal sends no EOS. */
	refused = !status && (req->used_len < sizeof(drain->resp) ||
			      vvm_dec_resp_to_errno(&drain->resp,
						    VIRTIO_VIDEO_RESP_OK_NODATA));
	spin_lock(&dev->ctx_slock);
	list_for_each_entry(ctx, &dev->ctxs, list) {
		if (ctx->stream_id != drain->stream_id)
			continue;
		spin_lock(&ctx->slock);
		/* Answered without EOS: it ended all the same. */
		if ((s32)(drain->seq - ctx->drains_ended) > 0)
			ctx->drains_ended = drain->seq;
		/* An older drain, abandoned by a seek, changes nothing. */
		if (drain->seq == ctx->drains_sent) {
			if (refused) {
				ctx->drain_refused_seq = drain->seq;
				kthread_queue_work(dev->ctx_worker,
						   &ctx->drain_refused);
			} else {
				vvm_dec_transition(ctx, VVM_DEC_ON_DRAIN_END);
			}
		}
		spin_unlock(&ctx->slock);
		break;
	}
	spin_unlock(&dev->ctx_slock);
	kfree(drain);
}

/*
 * The device refused a drain, so no picture buffer will carry its EOS: the
 * client, waiting for LAST, would wait forever. The first picture buffer a
 * clear returns (or the next one queued) becomes the LAST one; the others
 * go back to the device.
 */
static void vvm_dec_drain_refused_work(struct kthread_work *work)
{
	struct vvm_dec_ctx *ctx = container_of(work, struct vvm_dec_ctx,
					       drain_refused);
	struct vb2_queue *cap_q = v4l2_m2m_get_dst_vq(ctx->fh.m2m_ctx);
	struct vvm_dec_dev *dev = ctx->dev;
	unsigned long flags;
	bool draining;

	mutex_lock(&dev->lock);
	spin_lock_irqsave(&ctx->slock, flags);
	/*
	 * A seek (OUTPUT STREAMOFF) ended the drain, maybe a new one began
	 * since, or no CAPTURE streams.
	 */
	draining = vvm_dec_draining(ctx->state) &&
		   ctx->drain_refused_seq == ctx->drains_sent &&
		   vb2_is_streaming(cap_q);
	if (draining) {
		vvm_dec_transition(ctx, VVM_DEC_ON_DRAIN_REFUSED);
		ctx->requeue_capture = true;
	}
	spin_unlock_irqrestore(&ctx->slock, flags);
	if (!draining) {
		mutex_unlock(&dev->lock);
		return;
	}
	dev_err(&dev->node.vfd.dev,
		"stream %u: the device refused a drain; it ends with an empty LAST buffer\n",
		ctx->stream_id);
	/* The event comes first: a client sees it before the LAST buffer. */
	vvm_dec_queue_eos_event(ctx);
	vvm_dec_clear_capture(ctx);
	mutex_unlock(&dev->lock);
}

/* ---- ioctls -------------------------------------------------------------- */

static int vvm_dec_enum_fmt(struct file *file, void *priv, struct v4l2_fmtdesc *f)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_to_ctx(file);
	struct vvm_dec_dev *dev = ctx->dev;

	if (V4L2_TYPE_IS_OUTPUT(f->type)) {
		if (f->index >= dev->num_coded)
			return -EINVAL;
		f->pixelformat = dev->coded[f->index].fourcc;
		f->flags = V4L2_FMT_FLAG_COMPRESSED |
			   V4L2_FMT_FLAG_DYN_RESOLUTION;
		if (f->pixelformat == VVM_PIX_FMT_AV1)
			strscpy(f->description, "AV1", sizeof(f->description));
		return 0;
	}
	if (f->index >= dev->num_raw)
		return -EINVAL;
	f->pixelformat = dev->raw[f->index].fourcc;
	return 0;
}

static int vvm_dec_enum_framesizes(struct file *file, void *priv,
				   struct v4l2_frmsizeenum *fsize)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_to_ctx(file);
	const struct vvm_dec_format *fmt;

	if (fsize->index)
		return -EINVAL;
	fmt = vvm_dec_find_format(ctx->dev->coded, ctx->dev->num_coded,
				  fsize->pixel_format);
	if (!fmt)
		fmt = vvm_dec_find_format(ctx->dev->raw, ctx->dev->num_raw,
					  fsize->pixel_format);
	if (!fmt)
		return -EINVAL;
	fsize->type = V4L2_FRMSIZE_TYPE_STEPWISE;
	fsize->stepwise.min_width = fmt->min_width;
	fsize->stepwise.max_width = fmt->max_width;
	fsize->stepwise.step_width = fmt->step_width;
	fsize->stepwise.min_height = fmt->min_height;
	fsize->stepwise.max_height = fmt->max_height;
	fsize->stepwise.step_height = fmt->step_height;
	return 0;
}

static void vvm_dec_fill_pix_mp(struct vvm_dec_ctx *ctx, struct v4l2_pix_format_mplane *mp,
				u32 fourcc, u32 width, u32 height, u32 bpl, u32 size)
{
	memset(mp->reserved, 0, sizeof(mp->reserved));
	mp->pixelformat = fourcc;
	mp->width = width;
	mp->height = height;
	mp->field = V4L2_FIELD_NONE;
	mp->num_planes = 1;
	mp->flags = 0;
	mp->colorspace = ctx->colorspace;
	mp->xfer_func = ctx->xfer_func;
	mp->ycbcr_enc = ctx->ycbcr_enc;
	mp->quantization = ctx->quantization;
	memset(mp->plane_fmt[0].reserved, 0, sizeof(mp->plane_fmt[0].reserved));
	mp->plane_fmt[0].bytesperline = bpl;
	mp->plane_fmt[0].sizeimage = size;
}

static int vvm_dec_g_fmt(struct file *file, void *priv, struct v4l2_format *f)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_to_ctx(file);
	struct vvm_dec_pic_fmt *pic = &ctx->pic;

	if (V4L2_TYPE_IS_OUTPUT(f->type))
		vvm_dec_fill_pix_mp(ctx, &f->fmt.pix_mp, ctx->coded->fourcc,
				    ctx->coded_width, ctx->coded_height, 0,
			    ctx->coded_sizeimage);
	else
		vvm_dec_fill_pix_mp(ctx, &f->fmt.pix_mp, pic->fourcc, pic->width,
				    pic->height, pic->bytesperline, pic->sizeimage);
	return 0;
}

static const struct vvm_dec_format *
vvm_dec_try_coded_fmt(struct vvm_dec_ctx *ctx, struct v4l2_format *f)
{
	struct v4l2_pix_format_mplane *mp = &f->fmt.pix_mp;
	u32 colorspace = mp->colorspace, xfer_func = mp->xfer_func;
	u32 ycbcr_enc = mp->ycbcr_enc, quantization = mp->quantization;
	const struct vvm_dec_format *fmt;
	u32 size;

	fmt = vvm_dec_find_format(ctx->dev->coded, ctx->dev->num_coded, mp->pixelformat);
	if (!fmt)
		fmt = &ctx->dev->coded[0];
	mp->width = clamp(mp->width, fmt->min_width, fmt->max_width);
	mp->height = clamp(mp->height, fmt->min_height, fmt->max_height);
	size = clamp_t(u32, mp->plane_fmt[0].sizeimage, VVM_DEC_MIN_CODED_SIZE,
		       VVM_DEC_MAX_CODED_SIZE);
	if (!mp->plane_fmt[0].sizeimage)
		size = clamp_t(u32, mp->width * mp->height * 3 / 4,
			       VVM_DEC_MIN_CODED_SIZE, VVM_DEC_MAX_CODED_SIZE);
	vvm_dec_fill_pix_mp(ctx, mp, fmt->fourcc, mp->width, mp->height, 0, size);
	/* The bitstream's colorimetry is the client's to state. */
	if (colorspace != V4L2_COLORSPACE_DEFAULT &&
	    colorspace <= V4L2_COLORSPACE_DCI_P3 &&
	    colorspace != V4L2_COLORSPACE_BT878 &&
	    colorspace != V4L2_COLORSPACE_JPEG) {
		mp->colorspace = colorspace;
		mp->xfer_func = xfer_func <= V4L2_XFER_FUNC_SMPTE2084 ?
				xfer_func : V4L2_XFER_FUNC_DEFAULT;
		mp->ycbcr_enc = ycbcr_enc <= V4L2_YCBCR_ENC_SMPTE240M ?
				ycbcr_enc : V4L2_YCBCR_ENC_DEFAULT;
		mp->quantization = quantization <= V4L2_QUANTIZATION_LIM_RANGE ?
				   quantization : V4L2_QUANTIZATION_DEFAULT;
	}
	return fmt;
}

/* The picture size is the stream's; only the pixel format may be chosen. */
static void vvm_dec_try_pic_fmt(struct vvm_dec_ctx *ctx, struct v4l2_format *f,
				struct vvm_dec_pic_fmt *pic)
{
	*pic = ctx->pic;
	if (vvm_dec_find_format(ctx->dev->raw, ctx->dev->num_raw,
				f->fmt.pix_mp.pixelformat) &&
	    f->fmt.pix_mp.pixelformat != pic->fourcc) {
		pic->fourcc = f->fmt.pix_mp.pixelformat;
		vvm_dec_default_pic_layout(pic);
	}
	vvm_dec_fill_pix_mp(ctx, &f->fmt.pix_mp, pic->fourcc, pic->width, pic->height,
			    pic->bytesperline, pic->sizeimage);
}

static int vvm_dec_try_fmt(struct file *file, void *priv, struct v4l2_format *f)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_to_ctx(file);
	struct vvm_dec_pic_fmt pic;

	if (V4L2_TYPE_IS_OUTPUT(f->type))
		vvm_dec_try_coded_fmt(ctx, f);
	else
		vvm_dec_try_pic_fmt(ctx, f, &pic);
	return 0;
}

static int vvm_dec_set_coded_fmt(struct vvm_dec_ctx *ctx, struct v4l2_format *f)
{
	const struct vvm_dec_format *fmt = vvm_dec_try_coded_fmt(ctx, f);
	struct v4l2_pix_format_mplane *mp = &f->fmt.pix_mp;
	int ret;

	/* dev-decoder.rst: not while either queue has buffers. */
	if (vb2_is_busy(v4l2_m2m_get_src_vq(ctx->fh.m2m_ctx)) ||
	    vb2_is_busy(v4l2_m2m_get_dst_vq(ctx->fh.m2m_ctx)))
		return -EBUSY;
	if (fmt != ctx->coded) {
		/* The coded format is fixed at stream creation. */
		if (ctx->stream_ok) {
			ret = vvm_dec_simple_cmd(ctx, VIRTIO_VIDEO_CMD_STREAM_DESTROY);
			if (ret)
				return ret;
			ctx->stream_ok = false;
		}
		ctx->coded = fmt;
		ret = vvm_dec_stream_create(ctx);
		if (ret)
			return ret;
	}
	ctx->coded_width = mp->width;
	ctx->coded_height = mp->height;
	ctx->coded_sizeimage = mp->plane_fmt[0].sizeimage;
	if (ctx->stream_ok && !ctx->device_fmt_known) {
		ret = vvm_dec_set_coded_size(ctx);
		if (ret)
			return ret;
	}
	ctx->colorspace = mp->colorspace;
	ctx->xfer_func = mp->xfer_func;
	ctx->ycbcr_enc = mp->ycbcr_enc;
	ctx->quantization = mp->quantization;
	/* Until the stream header is parsed, CAPTURE follows OUTPUT. */
	vvm_dec_reset_pic_fmt(ctx);
	return 0;
}

static int vvm_dec_set_pic_fmt(struct vvm_dec_ctx *ctx, struct v4l2_format *f)
{
	struct virtio_video_params_ext params;
	struct vvm_dec_pic_fmt pic;
	const struct vvm_dec_format *fmt;
	int ret;

	if (vb2_is_busy(v4l2_m2m_get_dst_vq(ctx->fh.m2m_ctx)))
		return -EBUSY;
	vvm_dec_try_pic_fmt(ctx, f, &pic);
	if (pic.fourcc == ctx->pic.fourcc)
		return 0;

	fmt = vvm_dec_find_format(ctx->dev->raw, ctx->dev->num_raw, pic.fourcc);
	ret = vvm_dec_get_params(ctx, false, &params);
	if (ret)
		return ret;
	params.format = cpu_to_le32(fmt->virtio);
	ret = vvm_dec_set_params(ctx, &params);
	if (ret)
		return ret;
	ret = vvm_dec_get_params(ctx, false, &params);
	if (ret)
		return ret;
	if (le32_to_cpu(params.frame_width) && vvm_dec_apply_output_params(ctx, &params) == 0) {
		if (ctx->pic.fourcc != pic.fourcc)
			return -EINVAL;
	} else {
		ctx->pic = pic;
	}
	vvm_dec_fill_pix_mp(ctx, &f->fmt.pix_mp, ctx->pic.fourcc, ctx->pic.width,
			    ctx->pic.height, ctx->pic.bytesperline, ctx->pic.sizeimage);
	return 0;
}

static int vvm_dec_s_fmt(struct file *file, void *priv, struct v4l2_format *f)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_to_ctx(file);

	if (V4L2_TYPE_IS_OUTPUT(f->type))
		return vvm_dec_set_coded_fmt(ctx, f);
	return vvm_dec_set_pic_fmt(ctx, f);
}

static int vvm_dec_qbuf(struct file *file, void *priv, struct v4l2_buffer *b)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_to_ctx(file);
	struct vb2_queue *vq;
	int ret;

	if (vvm_dec_failed(ctx))
		return -EIO;
	ret = v4l2_m2m_ioctl_qbuf(file, priv, b);
	if (ret)
		return ret;
	vq = v4l2_m2m_get_vq(ctx->fh.m2m_ctx, b->type);
	if (vb2_start_streaming_called(vq))
		vvm_dec_send_held(ctx, V4L2_TYPE_IS_OUTPUT(b->type));
	return 0;
}

/*
 * After a device death or a stream error the client takes back the
 * buffers it had queued; once none is left, DQBUF fails instead of waiting
 * for a buffer that cannot come (QBUF is refused).
 */
static int vvm_dec_dqbuf(struct file *file, void *priv, struct v4l2_buffer *b)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_to_ctx(file);
	struct vb2_queue *vq;
	unsigned long flags;
	bool none_done;

	if (vvm_dec_failed(ctx)) {
		vq = v4l2_m2m_get_vq(ctx->fh.m2m_ctx, b->type);
		if (!vq)
			return -EINVAL;
		spin_lock_irqsave(&vq->done_lock, flags);
		none_done = list_empty(&vq->done_list);
		spin_unlock_irqrestore(&vq->done_lock, flags);
		if (none_done)
			return -EIO;
	}
	return v4l2_m2m_ioctl_dqbuf(file, priv, b);
}

static int vvm_dec_g_selection(struct file *file, void *priv,
			       struct v4l2_selection *s)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_to_ctx(file);

	if (s->type != V4L2_BUF_TYPE_VIDEO_CAPTURE &&
	    s->type != V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE)
		return -EINVAL;
	/* No scaling: the visible rectangle is written where it is. */
	switch (s->target) {
	case V4L2_SEL_TGT_CROP:
	case V4L2_SEL_TGT_CROP_DEFAULT:
	case V4L2_SEL_TGT_COMPOSE:
	case V4L2_SEL_TGT_COMPOSE_DEFAULT:
	case V4L2_SEL_TGT_COMPOSE_BOUNDS:
		s->r = ctx->pic.visible;
		return 0;
	case V4L2_SEL_TGT_CROP_BOUNDS:
	case V4L2_SEL_TGT_COMPOSE_PADDED:
		s->r = (struct v4l2_rect){ 0, 0, ctx->pic.width,
					   ctx->pic.height };
		return 0;
	default:
		return -EINVAL;
	}
}

/*
 * V4L2_DEC_CMD_START: not before the LAST buffer of a drain or of a
 * resolution change. After a change's LAST buffer the held picture buffers
 * fit the new format, and decoding resumes.
 */
static int vvm_dec_start(struct vvm_dec_ctx *ctx)
{
	struct vb2_queue *cap_q = v4l2_m2m_get_dst_vq(ctx->fh.m2m_ctx);
	enum vvm_dec_state from;
	unsigned long flags;
	int ret;

	spin_lock_irqsave(&ctx->slock, flags);
	from = ctx->state;
	ret = vvm_dec_transition(ctx, VVM_DEC_ON_START);
	spin_unlock_irqrestore(&ctx->slock, flags);
	if (ret)
		return ret;
	vb2_clear_last_buffer_dequeued(cap_q);
	if (from == VVM_DEC_CAPTURE_SETUP)
		vvm_dec_send_held(ctx, false);
	return 0;
}

static struct vvm_dec_drain *vvm_dec_drain_alloc(struct vvm_dec_ctx *ctx)
{
	struct vvm_dec_drain *drain;

	drain = kzalloc(sizeof(*drain), GFP_KERNEL);
	if (!drain)
		return NULL;
	drain->dev = ctx->dev;
	drain->stream_id = ctx->stream_id;
	vvm_dec_fill_hdr(&drain->cmd, VIRTIO_VIDEO_CMD_STREAM_DRAIN,
			 ctx->stream_id);
	vvm_request_init(&drain->req, vvm_dec_drain_done, NULL);
	/* The device answers a drain only once a picture buffer took the EOS. */
	drain->req.wait = VVM_WAIT_LONG;
	return drain;
}

/*
 * V4L2_DEC_CMD_STOP: not during another drain (dev-decoder.rst); during a
 * resolution change it drains after the change, as FFmpeg, which ends its
 * input whenever it likes, needs.
 */
static int vvm_dec_stop(struct vvm_dec_ctx *ctx)
{
	struct vb2_queue *out_q = v4l2_m2m_get_src_vq(ctx->fh.m2m_ctx);
	struct vb2_queue *cap_q = v4l2_m2m_get_dst_vq(ctx->fh.m2m_ctx);
	struct scatterlist cmd_sg, resp_sg, *sgs[2];
	struct vvm_dec_drain *drain;
	unsigned long flags;
	int ret;

	ret = vvm_dec_next_state(READ_ONCE(ctx->state), VVM_DEC_ON_STOP);
	if (ret < 0)
		return ret;
	/* Nothing is being decoded: there is nothing to drain. */
	if (!vb2_is_streaming(out_q) || !vb2_is_streaming(cap_q))
		return 0;
	ret = vvm_dec_ctx_check_alive(ctx);
	if (ret)
		return ret;

	drain = vvm_dec_drain_alloc(ctx);
	if (!drain)
		return -ENOMEM;
	spin_lock_irqsave(&ctx->slock, flags);
	ret = vvm_dec_transition(ctx, VVM_DEC_ON_STOP);
	if (!ret)
		drain->seq = ++ctx->drains_sent;
	spin_unlock_irqrestore(&ctx->slock, flags);
	if (ret) {
		kfree(drain);
		return ret;
	}
	sg_init_one(&cmd_sg, &drain->cmd, sizeof(drain->cmd));
	sg_init_one(&resp_sg, &drain->resp, sizeof(drain->resp));
	sgs[0] = &cmd_sg;
	sgs[1] = &resp_sg;
	ret = vvm_core_submit(&ctx->dev->node.core, &drain->req,
			      VIRTIO_VIDEO_QUEUE_COMMAND, sgs, 1, 1);
	if (ret) {
		spin_lock_irqsave(&ctx->slock, flags);
		ctx->drains_ended = drain->seq;
		vvm_dec_transition(ctx, VVM_DEC_ON_DRAIN_END);
		spin_unlock_irqrestore(&ctx->slock, flags);
		kfree(drain);
	}
	return ret;
}

static int vvm_dec_decoder_cmd(struct file *file, void *priv,
			       struct v4l2_decoder_cmd *dc)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_to_ctx(file);
	int ret;

	ret = v4l2_m2m_ioctl_try_decoder_cmd(file, priv, dc);
	if (ret)
		return ret;
	if (dc->cmd == V4L2_DEC_CMD_START)
		return vvm_dec_start(ctx);
	return vvm_dec_stop(ctx);
}

static int vvm_dec_subscribe_event(struct v4l2_fh *fh,
				   const struct v4l2_event_subscription *sub)
{
	switch (sub->type) {
	case V4L2_EVENT_EOS:
		return v4l2_event_subscribe(fh, sub, 2, NULL);
	case V4L2_EVENT_SOURCE_CHANGE:
		return v4l2_src_change_event_subscribe(fh, sub);
	default:
		return v4l2_ctrl_subscribe_event(fh, sub);
	}
}

static const struct v4l2_ioctl_ops vvm_dec_ioctl_ops = {
	.vidioc_querycap = vvm_node_querycap,
	.vidioc_enum_fmt_vid_cap = vvm_dec_enum_fmt,
	.vidioc_enum_fmt_vid_out = vvm_dec_enum_fmt,
	.vidioc_enum_framesizes = vvm_dec_enum_framesizes,
	.vidioc_g_fmt_vid_cap_mplane = vvm_dec_g_fmt,
	.vidioc_g_fmt_vid_out_mplane = vvm_dec_g_fmt,
	.vidioc_try_fmt_vid_cap_mplane = vvm_dec_try_fmt,
	.vidioc_try_fmt_vid_out_mplane = vvm_dec_try_fmt,
	.vidioc_s_fmt_vid_cap_mplane = vvm_dec_s_fmt,
	.vidioc_s_fmt_vid_out_mplane = vvm_dec_s_fmt,
	.vidioc_g_selection = vvm_dec_g_selection,

	.vidioc_reqbufs = v4l2_m2m_ioctl_reqbufs,
	.vidioc_querybuf = v4l2_m2m_ioctl_querybuf,
	.vidioc_qbuf = vvm_dec_qbuf,
	.vidioc_dqbuf = vvm_dec_dqbuf,
	.vidioc_prepare_buf = v4l2_m2m_ioctl_prepare_buf,
	.vidioc_create_bufs = v4l2_m2m_ioctl_create_bufs,
	.vidioc_expbuf = v4l2_m2m_ioctl_expbuf,
	.vidioc_streamon = v4l2_m2m_ioctl_streamon,
	.vidioc_streamoff = v4l2_m2m_ioctl_streamoff,

	.vidioc_try_decoder_cmd = v4l2_m2m_ioctl_try_decoder_cmd,
	.vidioc_decoder_cmd = vvm_dec_decoder_cmd,

	.vidioc_subscribe_event = vvm_dec_subscribe_event,
	.vidioc_unsubscribe_event = v4l2_event_unsubscribe,
};

/* ---- File operations ----------------------------------------------------- */

static struct vvm_dec_ctx *vvm_dec_fh_ctx(struct v4l2_fh *fh)
{
	return container_of(fh, struct vvm_dec_ctx, fh);
}

/* A new context: H.264 at 1080p into NV12 where the device has them. */
static struct v4l2_fh *vvm_dec_ctx_alloc(struct vvm_node *node)
{
	struct vvm_dec_dev *dev = container_of(node, struct vvm_dec_dev, node);
	struct vvm_dec_ctx *ctx;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return ERR_PTR(-ENOMEM);
	ctx->dev = dev;
	ctx->state = VVM_DEC_DECODING;
	spin_lock_init(&ctx->slock);
	INIT_LIST_HEAD(&ctx->held);
	INIT_LIST_HEAD(&ctx->list);
	kthread_init_work(&ctx->res_change, vvm_dec_res_change_work);
	kthread_init_work(&ctx->drain_refused, vvm_dec_drain_refused_work);
	kthread_init_work(&ctx->stream_error, vvm_dec_stream_error_work);
	ctx->coded = vvm_dec_find_format(dev->coded, dev->num_coded,
					 V4L2_PIX_FMT_H264);
	if (!ctx->coded)
		ctx->coded = &dev->coded[0];
	ctx->coded_width = 1920;
	ctx->coded_height = 1080;
	ctx->coded_sizeimage = SZ_2M;
	ctx->colorspace = V4L2_COLORSPACE_REC709;
	ctx->pic.fourcc = vvm_dec_find_format(dev->raw, dev->num_raw,
					      V4L2_PIX_FMT_NV12) ?
			  V4L2_PIX_FMT_NV12 : dev->raw[0].fourcc;
	vvm_dec_reset_pic_fmt(ctx);
	return &ctx->fh;
}

/* Under dev->lock: the control, a stream id and the device's stream. */
static int vvm_dec_ctx_open(struct v4l2_fh *fh)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_ctx(fh);
	struct vvm_dec_dev *dev = ctx->dev;
	int ret;

	v4l2_ctrl_handler_init(&ctx->hdl, 1);
	ctx->min_bufs_ctrl = v4l2_ctrl_new_std(&ctx->hdl, NULL,
					       V4L2_CID_MIN_BUFFERS_FOR_CAPTURE,
					       1, VVM_DEC_MAX_MIN_BUFFERS, 1, 1);
	if (ctx->hdl.error)
		return ctx->hdl.error;
	fh->ctrl_handler = &ctx->hdl;

	ret = ida_alloc_min(&dev->stream_ida, 1, GFP_KERNEL);
	if (ret < 0)
		return ret;
	ctx->stream_id = ret;
	/*
	 * A device out of streams does not stop an open that only looks
	 * (v4l2-compliance opens 100 times); REQBUFS tries again.
	 */
	ret = vvm_dec_stream_create(ctx);
	if (ret && ret != -ENOMEM)
		return ret;
	/* The device's initial picture layout, if it already knows one. */
	if (ctx->stream_ok)
		vvm_dec_refresh_output_params(ctx);

	spin_lock(&dev->ctx_slock);
	list_add_tail(&ctx->list, &dev->ctxs);
	spin_unlock(&dev->ctx_slock);
	return 0;
}

/* Without locks: the works take dev->lock. */
static void vvm_dec_ctx_close(struct v4l2_fh *fh)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_ctx(fh);
	struct vvm_dec_dev *dev = ctx->dev;

	spin_lock(&dev->ctx_slock);
	list_del_init(&ctx->list);
	spin_unlock(&dev->ctx_slock);
	kthread_cancel_work_sync(&ctx->res_change);
	kthread_cancel_work_sync(&ctx->drain_refused);
	kthread_cancel_work_sync(&ctx->stream_error);
}

/* Under dev->lock, also for a context vvm_dec_ctx_open() left half done. */
static void vvm_dec_ctx_free(struct v4l2_fh *fh)
{
	struct vvm_dec_ctx *ctx = vvm_dec_fh_ctx(fh);

	if (ctx->stream_ok)
		vvm_dec_simple_cmd(ctx, VIRTIO_VIDEO_CMD_STREAM_DESTROY);
	if (ctx->stream_id)
		ida_free(&ctx->dev->stream_ida, ctx->stream_id);
	v4l2_ctrl_handler_free(&ctx->hdl);
	kfree(ctx);
}

/*
 * Buffers never enter the m2m ready lists, so no job is ever scheduled;
 * the framework still requires the callback.
 */
static void vvm_dec_device_run(void *priv)
{
	struct vvm_dec_ctx *ctx = priv;

	v4l2_m2m_job_finish(ctx->dev->node.m2m_dev, ctx->fh.m2m_ctx);
}

static const struct v4l2_m2m_ops vvm_dec_m2m_ops = {
	.device_run = vvm_dec_device_run,
};

/* ---- Core callbacks ------------------------------------------------------ */

/* The core failed the buffers the device held; the rest fail here. */
static void vvm_dec_dead(struct vvm_core *core, int err)
{
	struct vvm_dec_dev *dev = vvm_dec_core_to_dev(core);
	struct vvm_dec_ctx *ctx;

	spin_lock(&dev->ctx_slock);
	list_for_each_entry(ctx, &dev->ctxs, list)
		vvm_dec_ctx_fail(ctx);
	spin_unlock(&dev->ctx_slock);
}

static void vvm_dec_ping_done(struct vvm_request *req, int status)
{
	struct vvm_dec_dev *dev = req->priv;

	atomic_set(&dev->ping_busy, 0);
}

static int vvm_dec_ping(struct vvm_core *core)
{
	struct vvm_dec_dev *dev = vvm_dec_core_to_dev(core);
	struct scatterlist cmd_sg, resp_sg, *sgs[2];
	int ret;

	if (atomic_xchg(&dev->ping_busy, 1))
		return 0;
	vvm_dec_fill_hdr(&dev->ping_cmd.hdr, VIRTIO_VIDEO_CMD_QUERY_CAPABILITY, 0);
	dev->ping_cmd.queue_type = cpu_to_le32(VIRTIO_VIDEO_QUEUE_TYPE_INPUT);
	sg_init_one(&cmd_sg, &dev->ping_cmd, sizeof(dev->ping_cmd));
	sg_init_one(&resp_sg, dev->ping_resp, dev->max_caps_len);
	sgs[0] = &cmd_sg;
	sgs[1] = &resp_sg;
	vvm_request_init(&dev->ping, vvm_dec_ping_done, dev);
	dev->ping.wait = VVM_WAIT_PROBE;
	ret = vvm_core_submit(core, &dev->ping, VIRTIO_VIDEO_QUEUE_COMMAND,
			      sgs, 1, 1);
	if (ret)
		atomic_set(&dev->ping_busy, 0);
	return ret;
}

static int vvm_dec_revive(struct vvm_core *core)
{
	return vvm_dec_post_events(vvm_dec_core_to_dev(core));
}

static const struct vvm_core_ops vvm_dec_core_ops = {
	.dead = vvm_dec_dead,
	.revive = vvm_dec_revive,
	.ping = vvm_dec_ping,
};

/* ---- Probe --------------------------------------------------------------- */

/*
 * Parses the frame sizes of one format description at buf + *off into fmt;
 * every length is checked. No frame size means the defaults.
 */
static int vvm_dec_parse_frames(const u8 *buf, size_t len, size_t *off,
				u32 num_frames, struct vvm_dec_format *fmt)
{
	const struct virtio_video_format_frame *frame;
	u32 f, rates;

	if (!num_frames) {
		*fmt = (struct vvm_dec_format){
			.fourcc = fmt->fourcc, .virtio = fmt->virtio,
			.min_width = 16, .max_width = 4096, .step_width = 1,
			.min_height = 16, .max_height = 4096, .step_height = 1,
		};
		return 0;
	}
	fmt->min_width = U32_MAX;
	fmt->min_height = U32_MAX;
	for (f = 0; f < num_frames; f++) {
		if (len - *off < sizeof(*frame))
			return -EIO;
		frame = (const void *)(buf + *off);
		*off += sizeof(*frame);
		rates = le32_to_cpu(frame->num_rates);
		if ((len - *off) / sizeof(struct virtio_video_format_range) < rates)
			return -EIO;
		*off += rates * sizeof(struct virtio_video_format_range);
		fmt->min_width = min(fmt->min_width, le32_to_cpu(frame->width.min));
		fmt->max_width = max(fmt->max_width, le32_to_cpu(frame->width.max));
		fmt->step_width = max(le32_to_cpu(frame->width.step), 1U);
		fmt->min_height = min(fmt->min_height,
				      le32_to_cpu(frame->height.min));
		fmt->max_height = max(fmt->max_height,
				      le32_to_cpu(frame->height.max));
		fmt->step_height = max(le32_to_cpu(frame->height.step), 1U);
	}
	return 0;
}

/* Parse one QUERY_CAPABILITY answer; every length is checked. */
static int vvm_dec_parse_caps(const u8 *buf, size_t len,
			      struct vvm_dec_format *out, unsigned int *count)
{
	const struct virtio_video_query_capability_resp *resp = (void *)buf;
	const struct virtio_video_format_desc *desc;
	size_t off = sizeof(*resp);
	u32 num_descs, d;
	int ret;

	*count = 0;
	if (len < off)
		return -EIO;
	num_descs = le32_to_cpu(resp->num_descs);
	for (d = 0; d < num_descs; d++) {
		struct vvm_dec_format fmt = {};

		if (len - off < sizeof(*desc))
			return -EIO;
		desc = (const void *)(buf + off);
		off += sizeof(*desc);
		fmt.virtio = le32_to_cpu(desc->format);
		fmt.fourcc = vvm_dec_virtio_format_to_fourcc(fmt.virtio);
		ret = vvm_dec_parse_frames(buf, len, &off,
					   le32_to_cpu(desc->num_frames), &fmt);
		if (ret)
			return ret;
		fmt.max_width = min_t(u32, fmt.max_width, VVM_DEC_MAX_DIM);
		fmt.max_height = min_t(u32, fmt.max_height, VVM_DEC_MAX_DIM);
		if (!fmt.fourcc ||
		    (fmt.fourcc == VVM_PIX_FMT_AV1 && !vvm_dec_offer_av1) ||
		    !fmt.min_width || !fmt.min_height ||
		    fmt.min_width > fmt.max_width ||
		    fmt.min_height > fmt.max_height ||
		    vvm_dec_find_format(out, *count, fmt.fourcc) ||
		    *count == VVM_DEC_MAX_FORMATS)
			continue;
		out[(*count)++] = fmt;
	}
	return *count ? 0 : -ENODEV;
}

static int vvm_dec_query_caps(struct vvm_dec_dev *dev, bool output_queue)
{
	struct virtio_video_query_capability cmd = {};
	u32 used = 0;
	void *resp;
	int ret;

	resp = kzalloc(dev->max_caps_len, GFP_KERNEL);
	if (!resp)
		return -ENOMEM;
	vvm_dec_fill_hdr(&cmd.hdr, VIRTIO_VIDEO_CMD_QUERY_CAPABILITY, 0);
	cmd.queue_type = cpu_to_le32(vvm_dec_virtio_queue(output_queue));
	ret = vvm_core_call(&dev->node.core, VIRTIO_VIDEO_QUEUE_COMMAND, &cmd,
			    sizeof(cmd), NULL, 0, resp, dev->max_caps_len, &used);
	if (!ret && used < sizeof(struct virtio_video_cmd_hdr))
		ret = -EIO;
	if (!ret)
		ret = vvm_dec_resp_to_errno(resp, VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY);
	if (!ret && output_queue)
		ret = vvm_dec_parse_caps(resp, used, dev->coded, &dev->num_coded);
	else if (!ret)
		ret = vvm_dec_parse_caps(resp, used, dev->raw, &dev->num_raw);
	kfree(resp);
	return ret;
}

static void vvm_dec_dev_free(struct vvm_dec_dev *dev)
{
	/* Every context is gone, and its work with it. */
	if (dev->ctx_worker)
		kthread_destroy_worker(dev->ctx_worker);
	ida_destroy(&dev->stream_ida);
	mutex_destroy(&dev->lock);
	kfree(dev->ping_resp);
	kfree(dev->events);
	kfree(dev);
}

static void vvm_dec_node_free(struct vvm_node *node)
{
	vvm_dec_dev_free(container_of(node, struct vvm_dec_dev, node));
}

/* DRIVER_OK: event buffers out, then what the device decodes into what. */
static int vvm_dec_setup(struct vvm_node *node)
{
	struct vvm_dec_dev *dev = container_of(node, struct vvm_dec_dev, node);
	int ret;

	ret = vvm_dec_post_events(dev);
	if (!ret)
		ret = vvm_dec_query_caps(dev, true);
	if (!ret)
		ret = vvm_dec_query_caps(dev, false);
	if (ret)
		dev_err(&node->core.vdev->dev, "capability query failed: %d\n",
			ret);
	return ret;
}

static const char * const vvm_dec_vq_names[] = { "command", "event" };

static const struct vvm_node_ops vvm_dec_node_ops = {
	.driver = KBUILD_MODNAME,
	.model = "virtio-video-decoder",
	.function = MEDIA_ENT_F_PROC_VIDEO_DECODER,
	.ioctl_ops = &vvm_dec_ioctl_ops,
	.m2m_ops = &vvm_dec_m2m_ops,
	.core_ops = &vvm_dec_core_ops,
	.vq_names = vvm_dec_vq_names,
	.nvqs = ARRAY_SIZE(vvm_dec_vq_names),
	.qops = &vvm_dec_qops,
	.buf_struct_size = sizeof(struct vvm_dec_buf),
	.setup = vvm_dec_setup,
	.free = vvm_dec_node_free,
	.ctx_alloc = vvm_dec_ctx_alloc,
	.ctx_open = vvm_dec_ctx_open,
	.ctx_close = vvm_dec_ctx_close,
	.ctx_free = vvm_dec_ctx_free,
};

/* The device's state and buffers, sized by its configuration. */
static struct vvm_dec_dev *vvm_dec_dev_alloc(struct virtio_device *vdev)
{
	struct vvm_dec_dev *dev;
	char name[33] = {};
	int ret;

	dev = kzalloc(sizeof(*dev), GFP_KERNEL);
	if (!dev)
		return ERR_PTR(-ENOMEM);
	mutex_init(&dev->lock);
	spin_lock_init(&dev->ctx_slock);
	INIT_LIST_HEAD(&dev->ctxs);
	ida_init(&dev->stream_ida);

	dev->max_caps_len =
		virtio_cread32(vdev, offsetof(struct virtio_video_config,
					      max_caps_length));
	if (dev->max_caps_len < VVM_DEC_CAPS_MIN ||
	    dev->max_caps_len > VVM_DEC_CAPS_MAX) {
		dev_err(&vdev->dev, "bad max_caps_length %u\n",
			dev->max_caps_len);
		vvm_dec_dev_free(dev);
		return ERR_PTR(-EINVAL);
	}
	dev->events = kcalloc(VVM_DEC_NUM_EVENTS, sizeof(*dev->events),
			      GFP_KERNEL);
	dev->ping_resp = kzalloc(dev->max_caps_len, GFP_KERNEL);
	if (!dev->events || !dev->ping_resp) {
		vvm_dec_dev_free(dev);
		return ERR_PTR(-ENOMEM);
	}
	dev->ctx_worker = vvm_fifo_worker_create(vdev, "vvm-dec");
	if (IS_ERR(dev->ctx_worker)) {
		ret = PTR_ERR(dev->ctx_worker);
		dev->ctx_worker = NULL;
		vvm_dec_dev_free(dev);
		return ERR_PTR(ret);
	}

	virtio_cread_bytes(vdev, offsetof(struct virtio_video_config,
					  device_name), name, sizeof(name) - 1);
	snprintf(dev->node.vfd.name, sizeof(dev->node.vfd.name),
		 "virtio-video decoder%s%s", name[0] ? " " : "", name);
	dev->node.vfd.lock = &dev->lock;
	return dev;
}

int vvm_decoder_probe(struct virtio_device *vdev)
{
	struct vvm_dec_dev *dev;

	if (!virtio_has_feature(vdev, VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES))
		return -ENODEV;

	dev = vvm_dec_dev_alloc(vdev);
	if (IS_ERR(dev))
		return PTR_ERR(dev);
	return vvm_node_probe(&dev->node, vdev, &vvm_dec_node_ops);
}
