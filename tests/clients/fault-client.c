// SPDX-License-Identifier: GPL-2.0
/*
 * fault-client: streams frames through a V4L2 mem2mem node (the dewarper,
 * with its default formats) until a call fails, then reports how every
 * call returned and the state of every buffer:
 *
 *   call NAME ret=R errno=E ms=T     one line per call after the failure
 *   buf QUEUE INDEX flags=0xF ok|BAD
 *
 * A buffer that was with the driver when the stream failed must come back
 * with V4L2_BUF_FLAG_ERROR and without V4L2_BUF_FLAG_QUEUED. Exit status: 0
 * when the stream failed and every check held, 1 when a check failed, 2 when
 * no call failed within --frames frames.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/videodev2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define NBUF 4

static const char *queue_name(unsigned int type)
{
	return type == V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE ? "output" : "capture";
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

struct queue {
	unsigned int type;
	unsigned int planes;
	unsigned int sizes[VIDEO_MAX_PLANES];
	bool with_driver[NBUF];
};

static int xioctl(int fd, unsigned long request, void *arg)
{
	int ret;

	do {
		ret = ioctl(fd, request, arg);
	} while (ret < 0 && errno == EINTR);
	return ret;
}

static int setup(int fd, struct queue *q)
{
	struct v4l2_requestbuffers req = {
		.count = NBUF, .type = q->type, .memory = V4L2_MEMORY_MMAP,
	};
	struct v4l2_format fmt = { .type = q->type };
	unsigned int i;

	if (xioctl(fd, VIDIOC_G_FMT, &fmt) < 0) {
		perror("VIDIOC_G_FMT");
		return -1;
	}
	q->planes = fmt.fmt.pix_mp.num_planes;
	if (q->planes == 0 || q->planes > VIDEO_MAX_PLANES) {
		fprintf(stderr, "%s: %u planes\n", queue_name(q->type), q->planes);
		return -1;
	}
	for (i = 0; i < q->planes; i++)
		q->sizes[i] = fmt.fmt.pix_mp.plane_fmt[i].sizeimage;
	if (xioctl(fd, VIDIOC_REQBUFS, &req) < 0 || req.count < NBUF) {
		fprintf(stderr, "%s: VIDIOC_REQBUFS: %s (%u buffers)\n",
			queue_name(q->type), strerror(errno), req.count);
		return -1;
	}
	return 0;
}

static int qbuf(int fd, struct queue *q, unsigned int index)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = {};
	struct v4l2_buffer buf = {
		.type = q->type, .memory = V4L2_MEMORY_MMAP, .index = index,
		.m.planes = planes, .length = q->planes,
	};
	unsigned int i;

	for (i = 0; i < q->planes; i++)
		planes[i].bytesused = q->type == V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE ?
				      q->sizes[i] : 0;
	if (xioctl(fd, VIDIOC_QBUF, &buf) < 0)
		return -1;
	q->with_driver[index] = true;
	return 0;
}

/* Blocking DQBUF; returns the index or -1. */
static int dqbuf(int fd, struct queue *q)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = {};
	struct v4l2_buffer buf = {
		.type = q->type, .memory = V4L2_MEMORY_MMAP,
		.m.planes = planes, .length = q->planes,
	};

	if (xioctl(fd, VIDIOC_DQBUF, &buf) < 0)
		return -1;
	if (buf.index >= NBUF) {
		errno = ERANGE;
		return -1;
	}
	q->with_driver[buf.index] = false;
	return (int)buf.index;
}

static void report(const char *name, int ret, int err, long start)
{
	printf("call %s ret=%d errno=%d (%s) ms=%ld\n", name, ret,
	       ret < 0 ? err : 0, ret < 0 ? strerror(err) : "ok",
	       now_ms() - start);
}

/* Every buffer the driver held must be back, marked as failed. */
static int check_buffers(int fd, struct queue *q)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	int bad = 0;
	unsigned int i;

	for (i = 0; i < NBUF; i++) {
		struct v4l2_buffer buf = {
			.type = q->type, .memory = V4L2_MEMORY_MMAP, .index = i,
			.m.planes = planes, .length = q->planes,
		};
		bool good;

		memset(planes, 0, sizeof(planes));
		if (xioctl(fd, VIDIOC_QUERYBUF, &buf) < 0) {
			printf("buf %s %u QUERYBUF: %s BAD\n", queue_name(q->type),
			       i, strerror(errno));
			bad++;
			continue;
		}
		good = !(buf.flags & V4L2_BUF_FLAG_QUEUED) &&
		       (!q->with_driver[i] || (buf.flags & V4L2_BUF_FLAG_ERROR));
		printf("buf %s %u flags=0x%x held=%d %s\n", queue_name(q->type), i,
		       buf.flags, q->with_driver[i], good ? "ok" : "BAD");
		bad += !good;
	}
	return bad;
}

int main(int argc, char **argv)
{
	struct queue out = { .type = V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE };
	struct queue cap = { .type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE };
	const char *device = NULL, *ready = NULL;
	long frames = 100000, done = 0, start;
	int fd, opt, ret, err, bad = 0;
	const char *failed = NULL;
	unsigned int i;

	static const struct option options[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "frames", required_argument, NULL, 'n' },
		{ "ready", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};

	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'd':
			device = optarg;
			break;
		case 'n':
			frames = strtol(optarg, NULL, 0);
			break;
		case 'r':
			ready = optarg;
			break;
		default:
			goto usage;
		}
	}
	if (!device || frames <= 0)
		goto usage;

	start = now_ms();
	fd = open(device, O_RDWR);
	if (fd < 0) {
		err = errno;
		report("open", -1, err, start);
		return 1;
	}
	if (setup(fd, &out) || setup(fd, &cap))
		return 1;
	for (i = 0; i < NBUF; i++) {
		if (qbuf(fd, &out, i) || qbuf(fd, &cap, i)) {
			perror("VIDIOC_QBUF");
			return 1;
		}
	}
	if (xioctl(fd, VIDIOC_STREAMON, &out.type) < 0 ||
	    xioctl(fd, VIDIOC_STREAMON, &cap.type) < 0) {
		perror("VIDIOC_STREAMON");
		return 1;
	}

	while (done < frames) {
		int index;

		start = now_ms();
		index = dqbuf(fd, &cap);
		if (index < 0) {
			failed = "dqbuf-capture";
			break;
		}
		index = dqbuf(fd, &out);
		if (index < 0) {
			failed = "dqbuf-output";
			break;
		}
		done++;
		if (done == 2 && ready) {
			FILE *f = fopen(ready, "w");

			if (f)
				fclose(f);
		}
		if (qbuf(fd, &out, (unsigned int)index)) {
			failed = "qbuf-output";
			break;
		}
		for (i = 0; i < NBUF; i++)
			if (!cap.with_driver[i])
				break;
		if (i < NBUF && qbuf(fd, &cap, i)) {
			failed = "qbuf-capture";
			break;
		}
	}
	printf("frames %ld\n", done);
	if (!failed) {
		printf("no call failed\n");
		return 2;
	}
	err = errno;
	report(failed, -1, err, start);

	/* A second wait must not block either. */
	start = now_ms();
	ret = dqbuf(fd, &cap);
	report("dqbuf-again", ret, errno, start);
	bad += ret >= 0;

	bad += check_buffers(fd, &out);
	bad += check_buffers(fd, &cap);

	start = now_ms();
	ret = xioctl(fd, VIDIOC_STREAMOFF, &out.type);
	report("streamoff-output", ret, errno, start);
	start = now_ms();
	ret = xioctl(fd, VIDIOC_STREAMOFF, &cap.type);
	report("streamoff-capture", ret, errno, start);
	start = now_ms();
	ret = close(fd);
	report("close", ret, errno, start);
	bad += ret < 0;
	printf("%s\n", bad ? "FAILED" : "PASSED");
	return bad ? 1 : 0;

usage:
	fprintf(stderr,
		"usage: fault-client --device /dev/videoN [--frames N] [--ready FILE]\n");
	return 1;
}
