// SPDX-License-Identifier: GPL-2.0
/*
 * Checks the order in which a stateful V4L2 decoder tells a client about a
 * mid-stream resolution change: the pictures decoded before the change must
 * be dequeued before the V4L2_EVENT_SOURCE_CHANGE is pending. Clients such
 * as FFmpeg and GStreamer handle the event first when both are ready, and
 * drop the pictures still in the old buffers.
 *
 * Usage: reschange-order NODE STREAM.h264 WIDTH HEIGHT OLD_PICTURES TOTAL
 *
 * CAPTURE is set up for WIDTHxHEIGHT (the first size) before decoding, with
 * more buffers than the OLD_PICTURES before the change; the whole stream
 * goes in one OUTPUT buffer followed by V4L2_DEC_CMD_STOP. The client waits
 * until every CAPTURE buffer is done (the pictures, then the buffers the
 * change returned), so the decoder has made all its choices; only then does
 * it look at events and buffers. Prints TAP lines; exits non-zero on a
 * wrong order or picture count.
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
#include <time.h>
#include <unistd.h>
#include <linux/videodev2.h>

#define CAPTURE_BUFFERS 16
#define WAIT_SECONDS 300

#include "decode-client.h"

static unsigned int capture_count;

/* Checks CAPTURE is @width x @height, then sets it up and streams it. */
static void setup_sized_capture(unsigned int width, unsigned int height)
{
	struct v4l2_format f = { .type = CAP };

	xioctl(VIDIOC_G_FMT, &f, "G_FMT CAPTURE");
	if (f.fmt.pix_mp.width != width || f.fmt.pix_mp.height != height)
		fail("CAPTURE is %ux%u, the stream %ux%u", f.fmt.pix_mp.width,
		     f.fmt.pix_mp.height, width, height);
	capture_count = setup_capture(CAPTURE_BUFFERS);
}

/* How many CAPTURE buffers are done, and how many of those hold pictures. */
static void done_buffers(unsigned int *done, unsigned int *pictures)
{
	unsigned int i;

	*done = 0;
	*pictures = 0;
	for (i = 0; i < capture_count; i++) {
		struct v4l2_plane plane = {};
		struct v4l2_buffer b = {
			.type = CAP,
			.memory = V4L2_MEMORY_MMAP,
			.index = i,
			.length = 1,
			.m.planes = &plane,
		};

		xioctl(VIDIOC_QUERYBUF, &b, "QUERYBUF CAPTURE");
		if (!(b.flags & V4L2_BUF_FLAG_DONE))
			continue;
		(*done)++;
		if (plane.bytesused &&
		    !(b.flags & (V4L2_BUF_FLAG_ERROR | V4L2_BUF_FLAG_LAST)))
			(*pictures)++;
	}
}

static int event_pending(void)
{
	struct pollfd p = { .fd = fd, .events = POLLPRI };

	if (poll(&p, 1, 0) < 0)
		fail("poll: %s", strerror(errno));
	return !!(p.revents & POLLPRI);
}

int main(int argc, char **argv)
{
	struct v4l2_event_subscription sub = {};
	struct v4l2_format f = { .type = CAP };
	unsigned int width, height, old, total, done, ready, pictures = 0;
	struct v4l2_event ev;
	struct dequeued d;
	time_t deadline;

	if (argc != 7) {
		fprintf(stderr, "usage: %s NODE STREAM.h264 WIDTH HEIGHT OLD_PICTURES TOTAL\n",
			argv[0]);
		return 2;
	}
	width = strtoul(argv[3], NULL, 0);
	height = strtoul(argv[4], NULL, 0);
	old = strtoul(argv[5], NULL, 0);
	total = strtoul(argv[6], NULL, 0);
	if (old >= CAPTURE_BUFFERS - 1)
		fail("%u pictures before the change need more than %d buffers",
		     old, CAPTURE_BUFFERS);

	/* The first size on OUTPUT: CAPTURE can be set up at once. */
	open_node(argv[1], width, height);
	sub.type = V4L2_EVENT_EOS;
	xioctl(VIDIOC_SUBSCRIBE_EVENT, &sub, "SUBSCRIBE_EVENT EOS");
	setup_sized_capture(width, height);
	queue_stream(argv[2], 1);

	deadline = time(NULL) + WAIT_SECONDS;
	for (;;) {
		done_buffers(&done, &ready);
		if (done == capture_count)
			break;
		if (time(NULL) > deadline)
			fail("only %u of %u CAPTURE buffers done within %d s",
			     done, capture_count, WAIT_SECONDS);
		usleep(100 * 1000);
	}
	if (ready != old)
		fail("%u pictures before the change, expected %u", ready, old);

	/* Dequeue the way FFmpeg does: an event first, if there is one. */
	for (;;) {
		if (event_pending()) {
			done_buffers(&done, &ready);
			if (ready)
				fail("source change pending with %u of %u pictures from before it not dequeued",
				     ready, old);
			break;
		}
		if (dequeue_capture(&d) || !d.bytesused ||
		    (d.flags & V4L2_BUF_FLAG_LAST))
			fail("LAST buffer before the source change event");
		if (!(d.flags & V4L2_BUF_FLAG_ERROR))
			pictures++;
	}
	printf("ok - the %u pictures before the change came before its event\n",
	       pictures);

	xioctl(VIDIOC_DQEVENT, &ev, "DQEVENT");
	if (ev.type != V4L2_EVENT_SOURCE_CHANGE)
		fail("event %u instead of SOURCE_CHANGE", ev.type);
	teardown_capture();
	xioctl(VIDIOC_G_FMT, &f, "G_FMT CAPTURE");
	setup_sized_capture(f.fmt.pix_mp.width, f.fmt.pix_mp.height);
	do {
		if (dequeue_capture(&d))
			fail("DQBUF gave EPIPE before a LAST buffer");
		if (is_picture(&d))
			pictures++;
	} while (!(d.flags & V4L2_BUF_FLAG_LAST));
	if (pictures != total)
		fail("%u pictures decoded, expected %u", pictures, total);
	printf("ok - %u pictures, %u after the change to %ux%u\n", pictures,
	       pictures - old, f.fmt.pix_mp.width, f.fmt.pix_mp.height);
	return 0;
}
