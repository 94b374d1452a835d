// SPDX-License-Identifier: GPL-2.0
/*
 * Walks sequences of the stateful decoder interface (dev-decoder.rst) on a
 * decoder node, each as the document describes it, and checks what the
 * decoder must do:
 *
 *   busy-format  S_FMT(OUTPUT), even with the same coded format, while
 *                CAPTURE has buffers: -EBUSY ("Commit Points", 5).
 *   drain-busy   V4L2_DEC_CMD_STOP and V4L2_DEC_CMD_START while a drain is
 *                in progress: -EBUSY ("Drain", note); the drain then ends
 *                with every picture and a LAST buffer.
 *   old-buffers  after a resolution change, before the LAST buffer, the
 *                client keeps queuing CAPTURE buffers of the old size
 *                ("Capture Setup", 7): QBUF takes them, reports the one it
 *                queued as queued (not done), and the LAST buffer follows.
 *   start        after a resolution change whose new format fits the
 *                allocated buffers, V4L2_DEC_CMD_START resumes decoding
 *                ("Capture Setup", 6; "Dynamic Resolution Change").
 *   seek-drain   V4L2_DEC_CMD_STOP, then a seek (STREAMOFF, STREAMON of
 *                OUTPUT) before the LAST buffer, which aborts the drain
 *                ("Drain", note): no picture after the seek is LAST, even
 *                if the device ends the abandoned drain late; every picture
 *                of the stream comes again, then a new drain ends with LAST.
 *
 * Usage: decoder-spec NODE SMALL.h264 PICTURES RESCHANGE.h264 WIDTH HEIGHT
 *                     OLD_PICTURES TOTAL [SEQUENCE]
 *
 * SMALL.h264 has PICTURES pictures; RESCHANGE.h264 starts at WIDTHxHEIGHT
 * and changes size after OLD_PICTURES of its TOTAL pictures. Each stream
 * goes in one OUTPUT buffer. SEQUENCE runs only that one. Each sequence
 * runs in a process of its own and ends at its first deviation. Prints TAP
 * lines; exits non-zero if any sequence failed.
 */
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
#include <sys/wait.h>
#include <unistd.h>
#include <linux/videodev2.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_BUFFERS 16
#define WAIT_SECONDS 120

#include "decode-client.h"

/* An ioctl that must fail with -EBUSY. */
static void expect_busy(unsigned long request, void *arg, const char *name)
{
	if (!ioctl(fd, request, arg))
		fail("%s succeeded, expected EBUSY", name);
	if (errno != EBUSY)
		fail("%s: %s, expected EBUSY", name, strerror(errno));
}

static void open_node(const char *node, unsigned int width,
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

static void queue_capture(unsigned int index)
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
static unsigned int setup_capture(unsigned int count)
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

/*
 * Dequeues and re-queues CAPTURE buffers until the LAST one; returns the
 * pictures seen.
 */
static unsigned int pictures_until_last(void)
{
	unsigned int pictures = 0;
	struct dequeued d;

	for (;;) {
		if (dequeue_capture(&d))
			fail("DQBUF gave EPIPE before a LAST buffer");
		if (is_picture(&d))
			pictures++;
		if (d.flags & V4L2_BUF_FLAG_LAST)
			return pictures;
		queue_capture(d.index);
	}
}

static void close_node(void)
{
	close(fd);
	fd = -1;
}

static void busy_format(const char *node)
{
	struct v4l2_requestbuffers rb = {
		.type = CAP,
		.memory = V4L2_MEMORY_MMAP,
		.count = 2,
	};
	struct v4l2_format f = { .type = OUT };

	test_name = "busy-format";
	open_node(node, 320, 240);
	xioctl(VIDIOC_REQBUFS, &rb, "REQBUFS CAPTURE");
	xioctl(VIDIOC_G_FMT, &f, "G_FMT OUTPUT");
	f.fmt.pix_mp.width = 640;
	f.fmt.pix_mp.height = 480;
	expect_busy(VIDIOC_S_FMT, &f, "S_FMT OUTPUT (same codec) with CAPTURE buffers");
	rb.count = 0;
	xioctl(VIDIOC_REQBUFS, &rb, "REQBUFS 0 CAPTURE");
	xioctl(VIDIOC_S_FMT, &f, "S_FMT OUTPUT without CAPTURE buffers");
	close_node();
	printf("ok - %s: S_FMT(OUTPUT) is refused while CAPTURE has buffers\n",
	       test_name);
}

static void drain_busy(const char *node, const char *stream,
		       unsigned int expected)
{
	struct v4l2_decoder_cmd stop = { .cmd = V4L2_DEC_CMD_STOP };
	struct v4l2_decoder_cmd start = { .cmd = V4L2_DEC_CMD_START };
	unsigned int pictures;

	test_name = "drain-busy";
	open_node(node, 320, 240);
	/* Two buffers and none dequeued: the drain cannot end meanwhile. */
	setup_capture(2);
	queue_stream(stream, 1);
	expect_busy(VIDIOC_DECODER_CMD, &stop, "DECODER_CMD STOP during a drain");
	expect_busy(VIDIOC_DECODER_CMD, &start, "DECODER_CMD START during a drain");
	pictures = pictures_until_last();
	if (pictures != expected)
		fail("%u pictures before LAST, expected %u", pictures, expected);
	close_node();
	printf("ok - %s: STOP and START refused during the drain, which ended with %u pictures\n",
	       test_name, pictures);
}

/*
 * OLD buffers of the first size: they hold the pictures from before the
 * change. One goes back before the LAST buffer.
 */
static void old_buffers(const char *node, const char *stream,
			unsigned int width, unsigned int height,
			unsigned int old, unsigned int total)
{
	struct v4l2_format f = { .type = CAP };
	unsigned int pictures = 0, i;
	struct dequeued d = {};
	struct v4l2_event ev;

	test_name = "old-buffers";
	open_node(node, width, height);
	if (setup_capture(old) != old)
		fail("REQBUFS gave another count than %u", old);
	queue_stream(stream, 1);
	for (i = 0; i < old; i++) {
		if (dequeue_capture(&d) || !is_picture(&d))
			fail("buffer %u of the first size is no picture (flags 0x%x)",
			     i, d.flags);
		pictures++;
	}
	{
		struct pollfd p = { .fd = fd, .events = POLLPRI };

		if (poll(&p, 1, WAIT_SECONDS * 1000) <= 0)
			fail("no source change event within %d s", WAIT_SECONDS);
	}
	xioctl(VIDIOC_DQEVENT, &ev, "DQEVENT");
	if (ev.type != V4L2_EVENT_SOURCE_CHANGE)
		fail("event %u instead of SOURCE_CHANGE", ev.type);
	xioctl(VIDIOC_G_FMT, &f, "G_FMT CAPTURE");
	if (f.fmt.pix_mp.width == width && f.fmt.pix_mp.height == height)
		fail("CAPTURE still %ux%u after the change", width, height);
	/* Keep queuing until LAST: an old-size buffer is accepted. */
	queue_capture(d.index);
	if (dequeue_capture(&d) || !(d.flags & V4L2_BUF_FLAG_LAST))
		fail("no LAST buffer after the change (flags 0x%x)", d.flags);
	if (!dequeue_capture(&d))
		fail("DQBUF after LAST did not give EPIPE");
	teardown_capture();
	setup_capture(old);
	pictures += pictures_until_last();
	if (pictures != total)
		fail("%u pictures, expected %u", pictures, total);
	close_node();
	printf("ok - %s: an old-size buffer queued before LAST was taken; %u pictures\n",
	       test_name, pictures);
}

/* Buffers big enough for both sizes: DEC_CMD_START resumes after the change. */
static void start_after_change(const char *node, const char *stream,
			       unsigned int width, unsigned int height,
			       unsigned int old, unsigned int total)
{
	struct v4l2_decoder_cmd start = { .cmd = V4L2_DEC_CMD_START };
	struct v4l2_decoder_cmd stop = { .cmd = V4L2_DEC_CMD_STOP };
	struct v4l2_create_buffers cb = { .count = MAX_BUFFERS, .memory = V4L2_MEMORY_MMAP };
	struct v4l2_format f = { .type = CAP };
	unsigned int pictures = 0, i, room;
	struct v4l2_event ev;
	struct dequeued d;

	test_name = "start";
	open_node(node, width, height);
	cb.format.type = CAP;
	xioctl(VIDIOC_G_FMT, &cb.format, "G_FMT CAPTURE");
	/* Room for NV12 or YUV420 at four times the first size. */
	room = 4 * width * height * 3 / 2;
	cb.format.fmt.pix_mp.plane_fmt[0].sizeimage = room;
	xioctl(VIDIOC_CREATE_BUFS, &cb, "CREATE_BUFS CAPTURE");
	for (i = 0; i < cb.count; i++)
		queue_capture(cb.index + i);
	xioctl(VIDIOC_STREAMON, &cb.format.type, "STREAMON CAPTURE");
	/* No drain yet: START is not allowed during one. */
	queue_stream(stream, 0);
	/*
	 * Nothing is queued again before LAST: a buffer the device got after
	 * announcing the change but before the driver held CAPTURE back would
	 * take a picture of the new size.
	 */
	for (;;) {
		if (dequeue_capture(&d))
			fail("EPIPE before the LAST buffer of the change");
		if (is_picture(&d))
			pictures++;
		if (d.flags & V4L2_BUF_FLAG_LAST)
			break;
	}
	if (pictures != old)
		fail("%u pictures before the change, expected %u", pictures, old);
	xioctl(VIDIOC_DQEVENT, &ev, "DQEVENT");
	if (ev.type != V4L2_EVENT_SOURCE_CHANGE)
		fail("event %u instead of SOURCE_CHANGE", ev.type);
	xioctl(VIDIOC_G_FMT, &f, "G_FMT CAPTURE");
	if (f.fmt.pix_mp.plane_fmt[0].sizeimage > room)
		fail("new sizeimage %u exceeds the %u-byte buffers",
		     f.fmt.pix_mp.plane_fmt[0].sizeimage, room);
	xioctl(VIDIOC_DECODER_CMD, &start, "DECODER_CMD START");
	queue_capture(d.index);
	xioctl(VIDIOC_DECODER_CMD, &stop, "DECODER_CMD STOP");
	pictures += pictures_until_last();
	if (pictures != total)
		fail("%u pictures, expected %u", pictures, total);
	close_node();
	printf("ok - %s: DEC_CMD_START resumed after the change; %u pictures\n",
	       test_name, pictures);
}

/* Queues OUTPUT buffer 0 again with the whole stream, stamped SEC. */
static void requeue_stream(const char *path, long sec)
{
	struct v4l2_plane plane = {};
	struct v4l2_buffer b = {
		.type = OUT,
		.memory = V4L2_MEMORY_MMAP,
		.length = 1,
		.m.planes = &plane,
	};
	struct stat st;

	if (stat(path, &st))
		fail("%s: %s", path, strerror(errno));
	xioctl(VIDIOC_QUERYBUF, &b, "QUERYBUF OUTPUT");
	plane.bytesused = st.st_size;
	b.timestamp.tv_sec = sec;
	xioctl(VIDIOC_QBUF, &b, "QBUF OUTPUT after the seek");
}

static void seek_drain(const char *node, const char *stream,
		       unsigned int expected)
{
	struct v4l2_decoder_cmd stop = { .cmd = V4L2_DEC_CMD_STOP };
	unsigned int pictures = 0;
	struct dequeued d = {};
	int type = OUT;

	test_name = "seek-drain";
	open_node(node, 320, 240);
	/* Two buffers and none dequeued: the drain cannot end meanwhile. */
	setup_capture(2);
	queue_stream(stream, 1);
	xioctl(VIDIOC_STREAMOFF, &type, "STREAMOFF OUTPUT during the drain");
	requeue_stream(stream, 2);
	xioctl(VIDIOC_STREAMON, &type, "STREAMON OUTPUT after the seek");
	/*
	 * Pictures from before the seek (stamped 1 s) come first; none may be
	 * LAST. Then the first one of the new position, and a drain of its own.
	 */
	for (;;) {
		if (dequeue_capture(&d) || (d.flags & V4L2_BUF_FLAG_LAST))
			fail("picture %u after the seek is LAST (%u bytes)",
			     pictures, d.bytesused);
		if (d.sec == 2 && is_picture(&d))
			pictures++;
		queue_capture(d.index);
		if (pictures)
			break;
	}
	xioctl(VIDIOC_DECODER_CMD, &stop, "DECODER_CMD STOP after the seek");
	pictures += pictures_until_last();
	if (pictures != expected)
		fail("%u pictures after the seek, expected %u", pictures, expected);
	close_node();
	printf("ok - %s: no LAST after the seek before the new drain's, %u pictures\n",
	       test_name, pictures);
}

static const char * const sequences[] = {
	"busy-format", "drain-busy", "old-buffers", "start", "seek-drain",
};

int main(int argc, char **argv)
{
	unsigned int width, height, old, total, i, failures = 0;

	test_name = "setup";
	if (argc != 9 && argc != 10) {
		fprintf(stderr,
			"usage: %s NODE SMALL.h264 PICTURES RESCHANGE.h264 WIDTH HEIGHT OLD_PICTURES TOTAL [SEQUENCE]\n",
			argv[0]);
		return 2;
	}
	width = strtoul(argv[5], NULL, 0);
	height = strtoul(argv[6], NULL, 0);
	old = strtoul(argv[7], NULL, 0);
	total = strtoul(argv[8], NULL, 0);
	if (!old || old >= MAX_BUFFERS)
		fail("OLD_PICTURES must be 1 to %d", MAX_BUFFERS - 1);

	/* Each sequence in a child of its own: one failing stops no other. */
	for (i = 0; i < ARRAY_SIZE(sequences); i++) {
		pid_t child;
		int status;

		if (argc == 10 && strcmp(argv[9], sequences[i]))
			continue;
		child = fork();
		if (child < 0)
			fail("fork: %s", strerror(errno));
		if (!child) {
			switch (i) {
			case 0:
				busy_format(argv[1]);
				break;
			case 1:
				drain_busy(argv[1], argv[2], strtoul(argv[3], NULL, 0));
				break;
			case 2:
				old_buffers(argv[1], argv[4], width, height, old, total);
				break;
			case 3:
				start_after_change(argv[1], argv[4], width, height, old, total);
				break;
			default:
				seek_drain(argv[1], argv[2], strtoul(argv[3], NULL, 0));
			}
			exit(0);
		}
		fflush(stdout);
		if (waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
		    WEXITSTATUS(status))
			failures++;
	}
	return failures ? 1 : 0;
}
