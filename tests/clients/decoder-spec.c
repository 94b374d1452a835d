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
 * A drain and a resolution change at once ("Drain", 2: the client handles
 * a resolution change the drained buffers bring, then the drain goes on;
 * STOP and START give -EBUSY until the drain's LAST buffer). In each, the
 * change's LAST buffer comes with the source-change event pending and no
 * EOS event, DQBUF then gives EPIPE; after the Capture Setup the pictures
 * of the new size come, then the drain's LAST buffer with the EOS event
 * and EPIPE; every picture of the stream comes out, of its format's size,
 * none with ERROR; the OUTPUT buffer comes back; START then resumes (no
 * more EPIPE):
 *
 *   change-in-drain  STOP right after the stream is queued: the change
 *                    comes during the drain.
 *   stop-in-change   STOP after the source-change event, before the
 *                    change's LAST buffer (both queues stream, so the
 *                    drain starts, "Drain", 1).
 *   stop-in-setup    STOP after the change's LAST buffer, CAPTURE still
 *                    streaming: the drain spans the Capture Setup.
 *   stop-capture-off STOP after STREAMOFF(CAPTURE) in the Capture Setup:
 *                    returns 0 but starts no drain ("Drain", 1, warning):
 *                    at the first new picture a STOP is not refused, and
 *                    drains.
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
	/* Nothing is queued again before LAST: only the old pictures come. */
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

/* Subscribes to the EOS event too, which a drain's end brings. */
static void subscribe_eos(void)
{
	struct v4l2_event_subscription sub = { .type = V4L2_EVENT_EOS };

	xioctl(VIDIOC_SUBSCRIBE_EVENT, &sub, "SUBSCRIBE_EVENT EOS");
}

/* The CAPTURE format's sizeimage and size. */
static unsigned int capture_format(unsigned int *width, unsigned int *height)
{
	struct v4l2_format f = { .type = CAP };

	xioctl(VIDIOC_G_FMT, &f, "G_FMT CAPTURE");
	*width = f.fmt.pix_mp.width;
	*height = f.fmt.pix_mp.height;
	return f.fmt.pix_mp.plane_fmt[0].sizeimage;
}

/* An event of TYPE must be pending now (a source change: a resolution one). */
static void expect_event(unsigned int type, const char *when)
{
	struct v4l2_event ev;

	if (ioctl(fd, VIDIOC_DQEVENT, &ev))
		fail("%s: no event pending (%s), expected %s", when,
		     strerror(errno), type == V4L2_EVENT_EOS ? "EOS" : "SOURCE_CHANGE");
	if (ev.type != type)
		fail("%s: event %u pending, expected %u", when, ev.type, type);
	if (type == V4L2_EVENT_SOURCE_CHANGE &&
	    !(ev.u.src_change.changes & V4L2_EVENT_SRC_CH_RESOLUTION))
		fail("%s: source change 0x%x without RESOLUTION", when,
		     ev.u.src_change.changes);
}

static void expect_no_event(const char *when)
{
	struct v4l2_event ev;

	if (!ioctl(fd, VIDIOC_DQEVENT, &ev))
		fail("%s: unexpected event %u", when, ev.type);
}

static void expect_epipe(const char *when)
{
	struct dequeued d;

	if (!dequeue_capture(&d))
		fail("%s: DQBUF gave buffer %u (flags 0x%x), expected EPIPE",
		     when, d.index, d.flags);
}

/*
 * Dequeues COUNT pictures of SIZE bytes, none LAST or ERROR; re-queues them
 * if REQUEUE. Returns the index of the last one.
 */
static unsigned int take_pictures(unsigned int count, unsigned int size,
				  int requeue)
{
	struct dequeued d = {};
	unsigned int i;

	for (i = 0; i < count; i++) {
		if (dequeue_capture(&d))
			fail("EPIPE after %u of %u pictures", i, count);
		if (d.flags & (V4L2_BUF_FLAG_ERROR | V4L2_BUF_FLAG_LAST) ||
		    d.bytesused != size)
			fail("buffer %u of %u: flags 0x%x, %u bytes, expected a %u-byte picture",
			     i, count, d.flags, d.bytesused, size);
		if (requeue)
			queue_capture(d.index);
	}
	return d.index;
}

/*
 * Dequeues and re-queues CAPTURE buffers until the LAST one (not
 * re-queued); each before it must be a picture of SIZE bytes, the LAST one
 * empty or such a picture. Returns the pictures.
 */
static unsigned int sized_pictures_until_last(unsigned int size)
{
	unsigned int pictures = 0;
	struct dequeued d;

	for (;;) {
		if (dequeue_capture(&d))
			fail("DQBUF gave EPIPE before a LAST buffer");
		if ((d.flags & V4L2_BUF_FLAG_ERROR) ||
		    (d.bytesused && d.bytesused != size) ||
		    (!d.bytesused && !(d.flags & V4L2_BUF_FLAG_LAST)))
			fail("after %u pictures: flags 0x%x, %u bytes, expected a %u-byte picture",
			     pictures, d.flags, d.bytesused, size);
		if (d.bytesused)
			pictures++;
		if (d.flags & V4L2_BUF_FLAG_LAST)
			return pictures;
		queue_capture(d.index);
	}
}

/*
 * Opens the node for a stream starting at WIDTHxHEIGHT, OLD CAPTURE
 * buffers of that size streaming, the stream queued (and drained if
 * DRAIN). Returns the pictures' size.
 */
static unsigned int change_setup(const char *node, const char *stream,
				 unsigned int width, unsigned int height,
				 unsigned int old, int drain)
{
	unsigned int w, h, size;

	open_node(node, width, height);
	subscribe_eos();
	size = capture_format(&w, &h);
	if (w != width || h != height)
		fail("CAPTURE is %ux%u, expected %ux%u", w, h, width, height);
	if (setup_capture(old) != old)
		fail("REQBUFS gave another count than %u", old);
	queue_stream(stream, drain);
	return size;
}

/* The change's LAST buffer was dequeued: what must hold then. */
static void change_last_seen(void)
{
	expect_event(V4L2_EVENT_SOURCE_CHANGE, "at the change's LAST buffer");
	expect_no_event("at the change's LAST buffer");
	expect_epipe("after the change's LAST buffer");
}

/*
 * Capture Setup for the new format, with as many buffers as there are new
 * PICTURES: the drain's EOS needs one more, so the drain cannot end before
 * the client queues one again. Returns the new pictures' size.
 */
static unsigned int new_capture(unsigned int width, unsigned int height,
				unsigned int pictures)
{
	unsigned int w, h, size;

	size = capture_format(&w, &h);
	if (w == width && h == height)
		fail("CAPTURE still %ux%u after the change", width, height);
	teardown_capture();
	if (setup_capture(pictures) != pictures)
		fail("REQBUFS gave another count than %u", pictures);
	return size;
}

/*
 * The drain's LAST buffer was dequeued after PICTURES of TOTAL: what must
 * hold then, and START resumes.
 */
static void drain_ended(unsigned int pictures, unsigned int total)
{
	struct v4l2_decoder_cmd start = { .cmd = V4L2_DEC_CMD_START };
	struct v4l2_plane plane = {};
	struct v4l2_buffer b = {
		.type = OUT,
		.memory = V4L2_MEMORY_MMAP,
		.length = 1,
		.m.planes = &plane,
	};

	expect_event(V4L2_EVENT_EOS, "at the drain's LAST buffer");
	expect_no_event("at the drain's LAST buffer");
	expect_epipe("after the drain's LAST buffer");
	if (pictures != total)
		fail("%u pictures, expected %u", pictures, total);
	xioctl(VIDIOC_DQBUF, &b, "DQBUF OUTPUT after the drain");
	if (b.flags & V4L2_BUF_FLAG_ERROR)
		fail("the OUTPUT buffer came back with ERROR");
	xioctl(VIDIOC_DECODER_CMD, &start, "DECODER_CMD START after the drain");
	b.type = CAP;
	if (!ioctl(fd, VIDIOC_DQBUF, &b) || errno != EAGAIN)
		fail("DQBUF CAPTURE after START: %s, expected EAGAIN",
		     strerror(errno));
}

/* STOP and START while a drain is in progress. */
static void drain_refuses_commands(const char *when)
{
	struct v4l2_decoder_cmd stop = { .cmd = V4L2_DEC_CMD_STOP };
	struct v4l2_decoder_cmd start = { .cmd = V4L2_DEC_CMD_START };
	char name[96];

	snprintf(name, sizeof(name), "DECODER_CMD STOP %s", when);
	expect_busy(VIDIOC_DECODER_CMD, &stop, name);
	snprintf(name, sizeof(name), "DECODER_CMD START %s", when);
	expect_busy(VIDIOC_DECODER_CMD, &start, name);
}

/* Waits for the source-change event and dequeues it. */
static void wait_source_change(void)
{
	struct pollfd p = { .fd = fd, .events = POLLPRI };

	if (poll(&p, 1, WAIT_SECONDS * 1000) <= 0)
		fail("no source change event within %d s", WAIT_SECONDS);
	expect_event(V4L2_EVENT_SOURCE_CHANGE, "after the old pictures");
}

/*
 * The old pictures are dequeued (not re-queued), the event taken, and one
 * old-size buffer queued again for the change's LAST buffer (the device
 * held none). With STOP_FIRST, the drain starts before that buffer.
 */
static void change_last_from_old_buffer(unsigned int size, unsigned int old,
					int stop_first)
{
	struct v4l2_decoder_cmd stop = { .cmd = V4L2_DEC_CMD_STOP };
	struct dequeued d;
	unsigned int index;

	index = take_pictures(old, size, 0);
	wait_source_change();
	if (stop_first) {
		xioctl(VIDIOC_DECODER_CMD, &stop,
		       "DECODER_CMD STOP before the change's LAST buffer");
		drain_refuses_commands("during a drain before the change's LAST buffer");
	}
	queue_capture(index);
	if (dequeue_capture(&d) || !(d.flags & V4L2_BUF_FLAG_LAST) ||
	    d.bytesused)
		fail("no empty LAST buffer for the change (flags 0x%x, %u bytes)",
		     d.flags, d.bytesused);
	expect_no_event("at the change's LAST buffer");
	expect_epipe("after the change's LAST buffer");
}

static void change_in_drain(const char *node, const char *stream,
			    unsigned int width, unsigned int height,
			    unsigned int old, unsigned int total)
{
	unsigned int size, pictures;

	test_name = "change-in-drain";
	size = change_setup(node, stream, width, height, old, 1);
	/* Buffers re-queued before the change's LAST: it may be any of them. */
	pictures = sized_pictures_until_last(size);
	if (pictures != old)
		fail("%u pictures before the change's LAST buffer, expected %u",
		     pictures, old);
	change_last_seen();
	drain_refuses_commands("during a drain, at the change");
	size = new_capture(width, height, total - old);
	drain_refuses_commands("during a drain, after the Capture Setup");
	pictures += sized_pictures_until_last(size);
	drain_ended(pictures, total);
	close_node();
	printf("ok - %s: change LAST, event, Capture Setup, drain LAST and EOS; %u pictures\n",
	       test_name, pictures);
}

static void stop_in_change(const char *node, const char *stream,
			   unsigned int width, unsigned int height,
			   unsigned int old, unsigned int total)
{
	unsigned int size, pictures;

	test_name = "stop-in-change";
	size = change_setup(node, stream, width, height, old, 0);
	change_last_from_old_buffer(size, old, 1);
	drain_refuses_commands("during a drain, at the change");
	size = new_capture(width, height, total - old);
	pictures = old + sized_pictures_until_last(size);
	drain_ended(pictures, total);
	close_node();
	printf("ok - %s: STOP before the change's LAST drained after it; %u pictures\n",
	       test_name, pictures);
}

static void stop_in_setup(const char *node, const char *stream,
			  unsigned int width, unsigned int height,
			  unsigned int old, unsigned int total)
{
	struct v4l2_decoder_cmd stop = { .cmd = V4L2_DEC_CMD_STOP };
	unsigned int size, pictures;

	test_name = "stop-in-setup";
	size = change_setup(node, stream, width, height, old, 0);
	change_last_from_old_buffer(size, old, 0);
	xioctl(VIDIOC_DECODER_CMD, &stop,
	       "DECODER_CMD STOP after the change's LAST buffer");
	drain_refuses_commands("during a drain, in the Capture Setup");
	size = new_capture(width, height, total - old);
	drain_refuses_commands("during a drain, after the Capture Setup");
	pictures = old + sized_pictures_until_last(size);
	drain_ended(pictures, total);
	close_node();
	printf("ok - %s: STOP in the Capture Setup drained after it; %u pictures\n",
	       test_name, pictures);
}

static void stop_capture_off(const char *node, const char *stream,
			     unsigned int width, unsigned int height,
			     unsigned int old, unsigned int total)
{
	struct v4l2_decoder_cmd stop = { .cmd = V4L2_DEC_CMD_STOP };
	struct v4l2_requestbuffers rb = { .type = CAP, .memory = V4L2_MEMORY_MMAP };
	unsigned int size, w, h, pictures, index;

	test_name = "stop-capture-off";
	size = change_setup(node, stream, width, height, old, 0);
	change_last_from_old_buffer(size, old, 0);
	size = capture_format(&w, &h);
	if (w == width && h == height)
		fail("CAPTURE still %ux%u after the change", width, height);
	xioctl(VIDIOC_STREAMOFF, &rb.type, "STREAMOFF CAPTURE");
	xioctl(VIDIOC_DECODER_CMD, &stop, "DECODER_CMD STOP with CAPTURE off");
	xioctl(VIDIOC_REQBUFS, &rb, "REQBUFS 0 CAPTURE");
	/* No drain started: the Capture Setup ends with STREAMON alone. */
	setup_capture(total - old);
	/*
	 * One new picture, not queued again: a drain could not end yet (its
	 * EOS needs a buffer), so a drain in progress would refuse this STOP.
	 * Without a drain the decoder keeps the stream's last pictures.
	 */
	index = take_pictures(1, size, 0);
	expect_no_event("at a new picture, no drain started");
	xioctl(VIDIOC_DECODER_CMD, &stop, "DECODER_CMD STOP after a new picture");
	queue_capture(index);
	pictures = old + 1 + sized_pictures_until_last(size);
	drain_ended(pictures, total);
	close_node();
	printf("ok - %s: STOP with CAPTURE off started no drain, a later one did; %u pictures\n",
	       test_name, pictures);
}

static const char * const sequences[] = {
	"busy-format", "drain-busy", "old-buffers", "start", "seek-drain",
	"change-in-drain", "stop-in-change", "stop-in-setup", "stop-capture-off",
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
	if (total <= old || total - old > MAX_BUFFERS)
		fail("TOTAL must be OLD_PICTURES + 1 to %d", old + MAX_BUFFERS);

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
			case 4:
				seek_drain(argv[1], argv[2], strtoul(argv[3], NULL, 0));
				break;
			case 5:
				change_in_drain(argv[1], argv[4], width, height, old, total);
				break;
			case 6:
				stop_in_change(argv[1], argv[4], width, height, old, total);
				break;
			case 7:
				stop_in_setup(argv[1], argv[4], width, height, old, total);
				break;
			default:
				stop_capture_off(argv[1], argv[4], width, height, old, total);
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
