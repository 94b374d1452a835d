// SPDX-License-Identifier: GPL-2.0
/*
 * fault-client: streams through a V4L2 mem2mem node until something fails,
 * then shows that nothing hangs and no buffer is lost.
 *
 * Two modes: the dewarper (its default formats, frames of any content,
 * blocking DQBUF on CAPTURE) and, with --decode FILE, the stateful decoder
 * (the file's bytes in fixed-size chunks, over and over; poll() for
 * pictures, events and free bitstream buffers, CAPTURE set up on the
 * source-change event, or with --capture-first in the format the node
 * gives before the stream starts, as FFmpeg does).
 *
 * The stream fails when a call fails or a buffer comes back with
 * V4L2_BUF_FLAG_ERROR. The client then takes back every buffer the driver
 * still holds (blocking DQBUF, each timed; each must come back before
 * DQBUF fails), checks with QUERYBUF that no buffer is left queued and
 * that one never handed back is marked ERROR (unless the device was
 * removed: then every call fails with ENODEV), and times STREAMOFF and
 * close():
 *
 *   call NAME ret=R errno=E (TEXT) ms=T
 *   buf QUEUE INDEX ... ok|BAD
 *   PASSED|FAILED
 *
 * Buffers handed back without ERROR after the failure are listed: the
 * device may have answered them before it died.
 *
 * Exit status: 0 when the stream failed and every check held, 1 when a
 * check failed (or the setup did), 2 when nothing failed within --frames
 * frames.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_BUFS 16
#define DEWARP_BUFS 4
#define BITSTREAM_BUFS 4
#define CHUNK 65536

struct queue {
	unsigned int type;
	unsigned int count;
	unsigned int planes;
	unsigned int sizes[VIDEO_MAX_PLANES];
	bool with_driver[MAX_BUFS];
	void *map[MAX_BUFS];
	size_t map_len[MAX_BUFS];
};

static const char *queue_name(const struct queue *q)
{
	return V4L2_TYPE_IS_OUTPUT(q->type) ? "output" : "capture";
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void report(const char *name, int ret, int err, long start)
{
	printf("call %s ret=%d errno=%d (%s) ms=%ld\n", name, ret,
	       ret < 0 ? err : 0, ret < 0 ? strerror(err) : "ok",
	       now_ms() - start);
}

static int xioctl(int fd, unsigned long request, void *arg)
{
	int ret;

	do {
		ret = ioctl(fd, request, arg);
	} while (ret < 0 && errno == EINTR);
	return ret;
}

static int setup(int fd, struct queue *q, unsigned int count, bool map)
{
	struct v4l2_requestbuffers req = {
		.count = count, .type = q->type, .memory = V4L2_MEMORY_MMAP,
	};
	struct v4l2_format fmt = { .type = q->type };
	unsigned int i;

	if (xioctl(fd, VIDIOC_G_FMT, &fmt) < 0) {
		perror("VIDIOC_G_FMT");
		return -1;
	}
	q->planes = fmt.fmt.pix_mp.num_planes;
	if (q->planes == 0 || q->planes > VIDEO_MAX_PLANES) {
		fprintf(stderr, "%s: %u planes\n", queue_name(q), q->planes);
		return -1;
	}
	for (i = 0; i < q->planes; i++)
		q->sizes[i] = fmt.fmt.pix_mp.plane_fmt[i].sizeimage;
	if (xioctl(fd, VIDIOC_REQBUFS, &req) < 0 || req.count < 1 ||
	    req.count > MAX_BUFS) {
		fprintf(stderr, "%s: VIDIOC_REQBUFS: %s (%u buffers)\n",
			queue_name(q), strerror(errno), req.count);
		return -1;
	}
	q->count = req.count;
	for (i = 0; map && i < q->count; i++) {
		struct v4l2_plane planes[VIDEO_MAX_PLANES] = {};
		struct v4l2_buffer buf = {
			.type = q->type, .memory = V4L2_MEMORY_MMAP, .index = i,
			.m.planes = planes, .length = q->planes,
		};

		if (xioctl(fd, VIDIOC_QUERYBUF, &buf) < 0) {
			perror("VIDIOC_QUERYBUF");
			return -1;
		}
		q->map_len[i] = planes[0].length;
		q->map[i] = mmap(NULL, planes[0].length, PROT_READ | PROT_WRITE,
				 MAP_SHARED, fd, planes[0].m.mem_offset);
		if (q->map[i] == MAP_FAILED) {
			perror("mmap");
			return -1;
		}
	}
	return 0;
}

static int qbuf(int fd, struct queue *q, unsigned int index, unsigned int used)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = {};
	struct v4l2_buffer buf = {
		.type = q->type, .memory = V4L2_MEMORY_MMAP, .index = index,
		.m.planes = planes, .length = q->planes,
	};
	unsigned int i;

	for (i = 0; i < q->planes; i++)
		planes[i].bytesused = V4L2_TYPE_IS_OUTPUT(q->type) ?
				      (used ? used : q->sizes[i]) : 0;
	if (xioctl(fd, VIDIOC_QBUF, &buf) < 0)
		return -1;
	q->with_driver[index] = true;
	return 0;
}

/* DQBUF; returns the index or -1, the buffer's flags in *flags. */
static int dqbuf(int fd, struct queue *q, unsigned int *flags)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = {};
	struct v4l2_buffer buf = {
		.type = q->type, .memory = V4L2_MEMORY_MMAP,
		.m.planes = planes, .length = q->planes,
	};

	if (xioctl(fd, VIDIOC_DQBUF, &buf) < 0)
		return -1;
	if (buf.index >= q->count) {
		errno = ERANGE;
		return -1;
	}
	q->with_driver[buf.index] = false;
	*flags = buf.flags;
	return (int)buf.index;
}

static int free_index(const struct queue *q)
{
	unsigned int i;

	for (i = 0; i < q->count; i++)
		if (!q->with_driver[i])
			return (int)i;
	return -1;
}

static bool holds_any(const struct queue *q)
{
	unsigned int i;

	for (i = 0; i < q->count; i++)
		if (q->with_driver[i])
			return true;
	return false;
}

/*
 * Takes back every buffer the driver holds, until DQBUF fails. Each must
 * come back (a client that waits for a free buffer would wait forever),
 * unless the device was removed: then every call fails with ENODEV.
 * Returns 1 when a buffer was kept.
 */
static int drain(int fd, struct queue *q)
{
	char name[32];
	unsigned int flags;
	int err;

	snprintf(name, sizeof(name), "dqbuf-%s-after", queue_name(q));
	while (holds_any(q)) {
		long start = now_ms();
		int index = dqbuf(fd, q, &flags);

		err = errno;
		report(name, index, err, start);
		if (index < 0) {
			printf("queue %s: buffers kept after DQBUF failed %s\n",
			       queue_name(q),
			       err == ENODEV ? "(device removed) ok" : "BAD");
			return err != ENODEV;
		}
		printf("buf %s %d handed back flags=0x%x%s\n", queue_name(q),
		       index, flags, flags & V4L2_BUF_FLAG_ERROR ? "" :
		       " (answered before the failure)");
	}
	return 0;
}

/* No buffer may be left queued; one never handed back must be ERROR. */
static int check_buffers(int fd, struct queue *q)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES];
	int bad = 0;
	unsigned int i;

	for (i = 0; i < q->count; i++) {
		struct v4l2_buffer buf = {
			.type = q->type, .memory = V4L2_MEMORY_MMAP, .index = i,
			.m.planes = planes, .length = q->planes,
		};
		bool good;

		memset(planes, 0, sizeof(planes));
		if (xioctl(fd, VIDIOC_QUERYBUF, &buf) < 0) {
			/* After removal every call fails so; nothing to check. */
			bool gone = errno == ENODEV;

			printf("buf %s %u QUERYBUF: %s %s\n", queue_name(q), i,
			       strerror(errno), gone ? "(device removed) ok" : "BAD");
			bad += !gone;
			continue;
		}
		good = !(buf.flags & V4L2_BUF_FLAG_QUEUED) &&
		       (!q->with_driver[i] || (buf.flags & V4L2_BUF_FLAG_ERROR));
		printf("buf %s %u flags=0x%x held=%d %s\n", queue_name(q), i,
		       buf.flags, q->with_driver[i], good ? "ok" : "BAD");
		bad += !good;
	}
	return bad;
}

static void signal_ready(const char *ready)
{
	FILE *f;

	if (!ready)
		return;
	f = fopen(ready, "w");
	if (f)
		fclose(f);
}

/* Returns the name of the failing step, NULL if --frames went through. */
static const char *stream_dewarp(int fd, struct queue *out, struct queue *cap,
				 long frames, const char *ready, long *start)
{
	long done = 0;
	unsigned int i;

	if (setup(fd, out, DEWARP_BUFS, false) || setup(fd, cap, DEWARP_BUFS, false))
		exit(1);
	for (i = 0; i < out->count; i++)
		if (qbuf(fd, out, i, 0))
			return "qbuf-output";
	for (i = 0; i < cap->count; i++)
		if (qbuf(fd, cap, i, 0))
			return "qbuf-capture";
	if (xioctl(fd, VIDIOC_STREAMON, &out->type) < 0)
		return "streamon-output";
	if (xioctl(fd, VIDIOC_STREAMON, &cap->type) < 0)
		return "streamon-capture";

	while (done < frames) {
		unsigned int flags;
		int index;

		*start = now_ms();
		index = dqbuf(fd, cap, &flags);
		if (index < 0)
			return "dqbuf-capture";
		if (flags & V4L2_BUF_FLAG_ERROR) {
			errno = 0;
			return "capture-buffer-error";
		}
		if (qbuf(fd, cap, (unsigned int)index, 0))
			return "qbuf-capture";
		index = dqbuf(fd, out, &flags);
		if (index < 0)
			return "dqbuf-output";
		if (qbuf(fd, out, (unsigned int)index, 0))
			return "qbuf-output";
		if (++done == 2)
			signal_ready(ready);
	}
	printf("frames %ld\n", done);
	return NULL;
}

/* Fills a bitstream buffer with the next chunk, from the start at the end. */
static unsigned int fill_chunk(FILE *in, struct queue *out, unsigned int index)
{
	size_t want = out->map_len[index] < CHUNK ? out->map_len[index] : CHUNK;
	size_t got = fread(out->map[index], 1, want, in);

	if (got < want) {
		rewind(in);
		got += fread((char *)out->map[index] + got, 1, want - got, in);
	}
	return (unsigned int)got;
}

static int setup_capture(int fd, struct queue *cap)
{
	struct v4l2_control min = { .id = V4L2_CID_MIN_BUFFERS_FOR_CAPTURE };
	unsigned int count = 4, i;

	if (xioctl(fd, VIDIOC_G_CTRL, &min) == 0 && min.value > 0)
		count = (unsigned int)min.value + 2;
	if (count > MAX_BUFS)
		count = MAX_BUFS;
	if (setup(fd, cap, count, false))
		return -1;
	for (i = 0; i < cap->count; i++)
		if (qbuf(fd, cap, i, 0))
			return -1;
	return xioctl(fd, VIDIOC_STREAMON, &cap->type);
}

static const char *stream_decode(int fd, struct queue *out, struct queue *cap,
				 const char *path, bool capture_first,
				 long frames, const char *ready, long *start)
{
	struct v4l2_event_subscription sub = {
		.type = V4L2_EVENT_SOURCE_CHANGE,
	};
	struct pollfd pfd = { .fd = fd, .events = POLLIN | POLLOUT | POLLPRI };
	bool capturing = false;
	unsigned int i, flags;
	long done = 0;
	FILE *in;
	int index;

	in = fopen(path, "rb");
	if (!in) {
		perror(path);
		exit(1);
	}
	if (xioctl(fd, VIDIOC_SUBSCRIBE_EVENT, &sub) < 0) {
		perror("VIDIOC_SUBSCRIBE_EVENT");
		exit(1);
	}
	if (setup(fd, out, BITSTREAM_BUFS, true))
		exit(1);
	for (i = 0; i < out->count; i++)
		if (qbuf(fd, out, i, fill_chunk(in, out, i)))
			return "qbuf-output";
	if (capture_first) {
		if (setup_capture(fd, cap))
			return "capture-setup";
		capturing = true;
	}
	if (xioctl(fd, VIDIOC_STREAMON, &out->type) < 0)
		return "streamon-output";

	while (done < frames) {
		*start = now_ms();
		if (poll(&pfd, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			return "poll";
		}
		if (pfd.revents & POLLERR) {
			errno = 0;
			return "poll-error";
		}
		if (pfd.revents & POLLPRI) {
			struct v4l2_event ev;

			if (xioctl(fd, VIDIOC_DQEVENT, &ev) < 0)
				return "dqevent";
			if (ev.type == V4L2_EVENT_SOURCE_CHANGE && !capturing) {
				if (setup_capture(fd, cap))
					return "capture-setup";
				capturing = true;
			}
		}
		if (capturing && (pfd.revents & POLLIN)) {
			index = dqbuf(fd, cap, &flags);
			if (index < 0)
				return "dqbuf-capture";
			if (flags & V4L2_BUF_FLAG_ERROR) {
				errno = 0;
				return "capture-buffer-error";
			}
			if (qbuf(fd, cap, (unsigned int)index, 0))
				return "qbuf-capture";
			if (++done == 2)
				signal_ready(ready);
		}
		if ((pfd.revents & POLLOUT) && free_index(out) < 0) {
			index = dqbuf(fd, out, &flags);
			if (index < 0)
				return "dqbuf-output";
			if (qbuf(fd, out, (unsigned int)index,
				 fill_chunk(in, out, (unsigned int)index)))
				return "qbuf-output";
		}
	}
	printf("frames %ld\n", done);
	return NULL;
}

int main(int argc, char **argv)
{
	struct queue out = { .type = V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE };
	struct queue cap = { .type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE };
	const char *device = NULL, *ready = NULL, *decode = NULL;
	const char *failed;
	long frames = 100000, start;
	int fd, opt, ret, err, bad = 0;
	bool capture_first = false;

	static const struct option options[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "decode", required_argument, NULL, 'c' },
		{ "frames", required_argument, NULL, 'n' },
		{ "ready", required_argument, NULL, 'r' },
		{ "capture-first", no_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};

	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'd':
			device = optarg;
			break;
		case 'c':
			decode = optarg;
			break;
		case 'n':
			frames = strtol(optarg, NULL, 0);
			break;
		case 'r':
			ready = optarg;
			break;
		case 'f':
			capture_first = true;
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
	if (decode)
		failed = stream_decode(fd, &out, &cap, decode, capture_first,
				       frames, ready, &start);
	else
		failed = stream_dewarp(fd, &out, &cap, frames, ready, &start);
	if (!failed) {
		printf("nothing failed\n");
		return 2;
	}
	err = errno;
	report(failed, -1, err, start);

	bad += drain(fd, &cap);
	bad += drain(fd, &out);
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
		"usage: fault-client --device /dev/videoN [--decode FILE [--capture-first]]\n"
		"                    [--frames N] [--ready FILE]\n");
	return 1;
}
