// SPDX-License-Identifier: GPL-2.0
/*
 * Times a stateful V4L2 decoder's mid-stream resolution change as a client
 * lives it: how long after it dequeued the last picture of the old size
 * the V4L2_EVENT_SOURCE_CHANGE reaches it. The driver reads the new format
 * from the device and signals the event in a work item of its own, so the
 * time shows at which priority that work runs (run the client at a
 * real-time priority, beside a real-time load).
 *
 * Usage: reschange-timing NODE STREAM.h264 WIDTH HEIGHT PICTURES ROUNDS
 *
 * Each round opens NODE, sets CAPTURE up for WIDTHxHEIGHT (the first
 * size), queues the whole stream in one OUTPUT buffer followed by
 * V4L2_DEC_CMD_STOP and dequeues as FFmpeg does: a pending event first
 * (on a source change: CAPTURE torn down and set up again for the new
 * format), buffers as they come, until the LAST buffer of the new size.
 * Prints one line per round,
 *
 *   round N change_ms C total_ms T
 *
 * (C: last old picture to event; T: STREAMON to LAST), and exits non-zero
 * when a round sees no source change or not PICTURES pictures.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/videodev2.h>

#define CAPTURE_BUFFERS 16
#define WAIT_SECONDS 120

#include "decode-client.h"

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Dequeues one CAPTURE buffer if one is done; returns 0 when none is. */
static int try_dequeue(struct dequeued *d)
{
	struct v4l2_plane plane = {};
	struct v4l2_buffer b = {
		.type = CAP,
		.memory = V4L2_MEMORY_MMAP,
		.length = 1,
		.m.planes = &plane,
	};

	if (ioctl(fd, VIDIOC_DQBUF, &b)) {
		if (errno == EAGAIN)
			return 0;
		if (errno == EPIPE)
			fail("DQBUF gave EPIPE before the new size's LAST buffer");
		fail("DQBUF CAPTURE: %s", strerror(errno));
	}
	d->index = b.index;
	d->flags = b.flags;
	d->bytesused = plane.bytesused;
	return 1;
}

static void round_trip(const char *node, const char *stream,
		       unsigned int width, unsigned int height,
		       unsigned int expected, unsigned int round)
{
	long start, last_old = -1, change = -1;
	unsigned int pictures = 0;
	struct pollfd p;
	struct dequeued d;

	open_node(node, width, height);
	setup_capture(CAPTURE_BUFFERS);
	start = now_ms();
	queue_stream(stream, 1);

	for (;;) {
		p = (struct pollfd){ .fd = fd, .events = POLLIN | POLLPRI };
		if (poll(&p, 1, WAIT_SECONDS * 1000) <= 0)
			fail("round %u: nothing within %d s (%u pictures)",
			     round, WAIT_SECONDS, pictures);
		if (p.revents & POLLPRI) {
			struct v4l2_event ev;

			xioctl(VIDIOC_DQEVENT, &ev, "DQEVENT");
			if (ev.type != V4L2_EVENT_SOURCE_CHANGE || change >= 0)
				continue;
			change = now_ms();
			teardown_capture();
			setup_capture(CAPTURE_BUFFERS);
			continue;
		}
		if (!try_dequeue(&d))
			continue;
		if (is_picture(&d)) {
			pictures++;
			if (change < 0)
				last_old = now_ms();
		}
		if ((d.flags & V4L2_BUF_FLAG_LAST) && change >= 0)
			break;
		if (!(d.flags & V4L2_BUF_FLAG_LAST))
			queue_capture(d.index);
	}
	close(fd);
	fd = -1;
	if (last_old < 0)
		fail("round %u: no picture before the source change", round);
	if (pictures != expected)
		fail("round %u: %u pictures, expected %u", round, pictures,
		     expected);
	printf("round %u change_ms %ld total_ms %ld\n", round,
	       change - last_old, now_ms() - start);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	unsigned int width, height, expected, rounds, round;

	if (argc != 7) {
		fprintf(stderr,
			"usage: %s NODE STREAM.h264 WIDTH HEIGHT PICTURES ROUNDS\n",
			argv[0]);
		return 2;
	}
	width = strtoul(argv[3], NULL, 0);
	height = strtoul(argv[4], NULL, 0);
	expected = strtoul(argv[5], NULL, 0);
	rounds = strtoul(argv[6], NULL, 0);
	for (round = 1; round <= rounds; round++)
		round_trip(argv[1], argv[2], width, height, expected, round);
	return 0;
}
