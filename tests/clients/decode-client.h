/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the decoder test clients share: the node they drive, failing with a
 * TAP line, a whole stream in one OUTPUT buffer, and queuing and dequeuing
 * CAPTURE buffers. Included by one client per program, not compiled alone;
 * the client defines WAIT_SECONDS, how long a CAPTURE buffer may take.
 */
#ifndef VDV_DECODE_CLIENT_H
#define VDV_DECODE_CLIENT_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/videodev2.h>

#define CAP V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
#define OUT V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE

/* The decoder node's open file. */
static int fd = -1;
/* When set, the name a failure's TAP line gives before its reason. */
static const char *test_name;

static inline void fail(const char *fmt, ...)
{
	va_list ap;

	printf("not ok - ");
	if (test_name)
		printf("%s: ", test_name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	exit(1);
}

static inline void xioctl(unsigned long request, void *arg, const char *name)
{
	if (ioctl(fd, request, arg))
		fail("%s: %s", name, strerror(errno));
}

/*
 * Opens @node non-blocking, subscribes to source changes and sets OUTPUT to
 * H.264 at @width x @height.
 */
static inline void open_node(const char *node, unsigned int width,
			     unsigned int height)
{
	struct v4l2_event_subscription sub = { .type = V4L2_EVENT_SOURCE_CHANGE };
	struct v4l2_format f = { .type = OUT };

	fd = open(node, O_RDWR | O_NONBLOCK);
	if (fd < 0)
		fail("%s: %s", node, strerror(errno));
	xioctl(VIDIOC_SUBSCRIBE_EVENT, &sub, "SUBSCRIBE_EVENT SOURCE_CHANGE");
	f.fmt.pix_mp.pixelformat = V4L2_PIX_FMT_H264;
	f.fmt.pix_mp.width = width;
	f.fmt.pix_mp.height = height;
	f.fmt.pix_mp.num_planes = 1;
	xioctl(VIDIOC_S_FMT, &f, "S_FMT OUTPUT");
}

/*
 * Puts the file at @path in one OUTPUT buffer (timestamp 1 s) and streams
 * OUTPUT; with @drain, then sends V4L2_DEC_CMD_STOP.
 */
static inline void queue_stream(const char *path, int drain)
{
	struct v4l2_requestbuffers rb = {
		.type = OUT,
		.memory = V4L2_MEMORY_MMAP,
		.count = 1,
	};
	struct v4l2_plane plane = {};
	struct v4l2_buffer b = {
		.type = OUT,
		.memory = V4L2_MEMORY_MMAP,
		.length = 1,
		.m.planes = &plane,
	};
	struct v4l2_decoder_cmd stop = { .cmd = V4L2_DEC_CMD_STOP };
	struct stat st;
	void *map;
	int in;

	xioctl(VIDIOC_REQBUFS, &rb, "REQBUFS OUTPUT");
	xioctl(VIDIOC_QUERYBUF, &b, "QUERYBUF OUTPUT");
	in = open(path, O_RDONLY);
	if (in < 0 || fstat(in, &st))
		fail("%s: %s", path, strerror(errno));
	if (st.st_size > plane.length)
		fail("%s: %lld bytes do not fit in one %u-byte OUTPUT buffer",
		     path, (long long)st.st_size, plane.length);
	map = mmap(NULL, plane.length, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   plane.m.mem_offset);
	if (map == MAP_FAILED)
		fail("mmap OUTPUT: %s", strerror(errno));
	if (read(in, map, st.st_size) != st.st_size)
		fail("%s: short read", path);
	close(in);
	plane.bytesused = st.st_size;
	b.timestamp.tv_sec = 1;
	xioctl(VIDIOC_QBUF, &b, "QBUF OUTPUT");
	xioctl(VIDIOC_STREAMON, &rb.type, "STREAMON OUTPUT");
	if (drain)
		xioctl(VIDIOC_DECODER_CMD, &stop, "DECODER_CMD STOP");
}

/* QBUFs CAPTURE buffer @index, which must not come back done already. */
static inline void queue_capture(unsigned int index)
{
	struct v4l2_plane plane = {};
	struct v4l2_buffer b = {
		.type = CAP,
		.memory = V4L2_MEMORY_MMAP,
		.index = index,
		.length = 1,
		.m.planes = &plane,
	};

	xioctl(VIDIOC_QBUF, &b, "QBUF CAPTURE");
	if (b.flags & (V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_LAST))
		fail("QBUF CAPTURE reports buffer %u done (flags 0x%x) before DQBUF",
		     index, b.flags);
}

/* REQBUFS COUNT CAPTURE buffers of the current format, all queued. */
static inline unsigned int setup_capture(unsigned int count)
{
	struct v4l2_requestbuffers rb = {
		.type = CAP,
		.memory = V4L2_MEMORY_MMAP,
		.count = count,
	};
	unsigned int i;

	xioctl(VIDIOC_REQBUFS, &rb, "REQBUFS CAPTURE");
	for (i = 0; i < rb.count; i++)
		queue_capture(i);
	xioctl(VIDIOC_STREAMON, &rb.type, "STREAMON CAPTURE");
	return rb.count;
}

/* A CAPTURE buffer as DQBUF gave it. */
struct dequeued {
	unsigned int index;
	unsigned int flags;
	unsigned int bytesused;
	long sec; /* its timestamp's seconds */
};

/*
 * Dequeues one CAPTURE buffer into @d, waiting up to WAIT_SECONDS for it;
 * returns 0, or -1 on EPIPE (after the LAST buffer; @d is then zeroed).
 */
static inline int dequeue_capture(struct dequeued *d)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	struct v4l2_plane plane = {};
	struct v4l2_buffer b = {
		.type = CAP,
		.memory = V4L2_MEMORY_MMAP,
		.length = 1,
		.m.planes = &plane,
	};

	memset(d, 0, sizeof(*d));
	for (;;) {
		if (!ioctl(fd, VIDIOC_DQBUF, &b))
			break;
		if (errno == EPIPE)
			return -1;
		if (errno != EAGAIN)
			fail("DQBUF CAPTURE: %s", strerror(errno));
		if (poll(&p, 1, WAIT_SECONDS * 1000) <= 0)
			fail("no CAPTURE buffer within %d s", WAIT_SECONDS);
	}
	d->index = b.index;
	d->flags = b.flags;
	d->bytesused = plane.bytesused;
	d->sec = b.timestamp.tv_sec;
	return 0;
}

/* Whether a dequeued buffer holds a picture. */
static inline int is_picture(const struct dequeued *d)
{
	return d->bytesused &&
	       !(d->flags & (V4L2_BUF_FLAG_ERROR | V4L2_BUF_FLAG_LAST));
}

/* STREAMOFF CAPTURE and free its buffers. */
static inline void teardown_capture(void)
{
	struct v4l2_requestbuffers rb = { .type = CAP, .memory = V4L2_MEMORY_MMAP };

	xioctl(VIDIOC_STREAMOFF, &rb.type, "STREAMOFF CAPTURE");
	xioctl(VIDIOC_REQBUFS, &rb, "REQBUFS 0 CAPTURE");
}

#endif
