// SPDX-License-Identifier: GPL-2.0
/*
 * dewarp-stalled-ctrls: one process's control ioctl, parked in its copy
 * from user memory, must not hold up another process's jobs.
 *
 * Context A (this process) streams with requests and leaves one job
 * waiting for its CAPTURE buffer. One thread of A then sets the vertex map
 * with the payload on a userfaultfd page that is not served until the end,
 * so VIDIOC_S_EXT_CTRLS sleeps in its copy_from_user holding A's control
 * handler lock. While it sleeps:
 *  - another thread of A queues the CAPTURE buffer: A's job must run and
 *    complete (device_run() and the completion path must not wait for the
 *    handler lock);
 *  - a child process B opens the node, sets formats and its own map,
 *    dewarps FRAMES frames, STREAMOFFs and closes: it must finish within
 *    --timeout seconds.
 * Then the page is served and A's S_EXT_CTRLS must return 0.
 *
 * Prints one TAP line per check ("ok - ..."/"not ok - ..."), and for a
 * task still stuck at its deadline its kernel stack. Exit status 0 when
 * every check passed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/media.h>
#include <linux/userfaultfd.h>
#include <linux/videodev2.h>

#include "v4l2-nodes.h"

#ifndef V4L2_CID_USER_DW100_BASE
#define V4L2_CID_USER_DW100_BASE (V4L2_CID_USER_BASE + 0x1190)
#endif
#define DW100_VERTEX_MAP_CID (V4L2_CID_USER_DW100_BASE + 1)

#define WIDTH 320
#define HEIGHT 240
#define B_BUFFERS 2

static const enum v4l2_buf_type out_type = V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE;
static const enum v4l2_buf_type cap_type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;

static int failures;

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("dewarp-stalled-ctrls: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void check(bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s - ", ok ? "ok" : "not ok");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	if (!ok)
		failures++;
}

static int xioctl(int fd, unsigned long req, void *arg)
{
	int ret;

	do {
		ret = ioctl(fd, req, arg);
	} while (ret < 0 && errno == EINTR);
	return ret;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Prints a task's kernel stack: where a call that did not return sleeps. */
static void print_stack(const char *who, const char *path)
{
	char line[256];
	FILE *f = fopen(path, "r");

	printf("# %s is still in the kernel; its stack:\n", who);
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		printf("#   %s", line);
	fclose(f);
}

/* The video node named "dw100" in sysfs. */
static const char *find_device(void)
{
	const char *path = video_node_named("dw100");

	if (!path)
		die("no video node named dw100");
	return path;
}

/* The media device registered on the same parent device as the node. */
static int open_media_device(const char *video_path)
{
	int fd = open_media_beside(video_path);

	if (fd < 0)
		die("no media device beside %s: %s", video_path, strerror(errno));
	return fd;
}

/* S_FMT of both queues to NV12 WIDTHxHEIGHT; 0 or an errno. */
static int set_formats(int fd)
{
	for (int i = 0; i < 2; i++) {
		struct v4l2_format f = { .type = i ? cap_type : out_type };

		f.fmt.pix_mp.pixelformat = V4L2_PIX_FMT_NV12;
		f.fmt.pix_mp.width = WIDTH;
		f.fmt.pix_mp.height = HEIGHT;
		f.fmt.pix_mp.field = V4L2_FIELD_NONE;
		if (xioctl(fd, VIDIOC_S_FMT, &f))
			return errno;
	}
	return 0;
}

/* The vertex map's element count, or 0 (errno set). */
static uint32_t map_elems(int fd)
{
	struct v4l2_query_ext_ctrl q = { .id = DW100_VERTEX_MAP_CID };

	return xioctl(fd, VIDIOC_QUERY_EXT_CTRL, &q) ? 0 : q.elems;
}

/* G/S_EXT_CTRLS of the vertex map, current value or in a request. */
static int map_ctrl(int fd, unsigned long cmd, uint32_t *map, uint32_t elems,
		    int request_fd)
{
	struct v4l2_ext_control c = {
		.id = DW100_VERTEX_MAP_CID,
		.size = elems * 4,
		.p_u32 = map,
	};
	struct v4l2_ext_controls cs = {
		.which = request_fd >= 0 ? V4L2_CTRL_WHICH_REQUEST_VAL :
					   V4L2_CTRL_WHICH_CUR_VAL,
		.count = 1,
		.request_fd = request_fd,
		.controls = &c,
	};

	return xioctl(fd, cmd, &cs) ? errno : 0;
}

static int reqbufs(int fd, enum v4l2_buf_type type, unsigned int count)
{
	struct v4l2_requestbuffers rb = {
		.count = count,
		.type = type,
		.memory = V4L2_MEMORY_MMAP,
	};

	if (xioctl(fd, VIDIOC_REQBUFS, &rb))
		return errno;
	return rb.count < count ? ENOMEM : 0;
}

/* QBUF of an MMAP buffer (NV12: one plane); the payload is what it holds. */
static int qbuf(int fd, enum v4l2_buf_type type, unsigned int index,
		int request_fd)
{
	struct v4l2_plane plane = {};
	struct v4l2_buffer b = {
		.type = type,
		.memory = V4L2_MEMORY_MMAP,
		.index = index,
		.length = 1,
		.m.planes = &plane,
		.field = V4L2_FIELD_NONE,
	};

	if (type == out_type)
		plane.bytesused = WIDTH * HEIGHT * 3 / 2;
	if (request_fd >= 0) {
		b.flags = V4L2_BUF_FLAG_REQUEST_FD;
		b.request_fd = request_fd;
	}
	return xioctl(fd, VIDIOC_QBUF, &b) ? errno : 0;
}

/*
 * DQBUF (the file is non-blocking), waiting in poll: 0, EIO for an ERROR
 * buffer, or an errno. The caller's deadline bounds the wait, not this.
 */
static int dqbuf(int fd, enum v4l2_buf_type type)
{
	struct pollfd p = {
		.fd = fd,
		.events = type == cap_type ? POLLIN : POLLOUT,
	};
	struct v4l2_plane plane = {};
	struct v4l2_buffer b = {
		.type = type,
		.memory = V4L2_MEMORY_MMAP,
		.length = 1,
		.m.planes = &plane,
	};

	while (xioctl(fd, VIDIOC_DQBUF, &b)) {
		if (errno != EAGAIN)
			return errno;
		if (poll(&p, 1, 1000) < 0 && errno != EINTR)
			return errno;
	}
	return b.flags & V4L2_BUF_FLAG_ERROR ? EIO : 0;
}

static int streamon(int fd, bool on)
{
	for (int i = 0; i < 2; i++) {
		enum v4l2_buf_type type = i ? cap_type : out_type;

		if (xioctl(fd, on ? VIDIOC_STREAMON : VIDIOC_STREAMOFF, &type))
			return errno;
	}
	return 0;
}

/* Where process B is, in memory shared with the parent. */
struct b_state {
	char step[80];
	int err;
};

/* Process B: the whole life of an unrelated client of the node. */
static int run_b(const char *device, unsigned int frames,
		 struct b_state *st)
{
	uint32_t *map = NULL;
	char frame[32];
	uint32_t elems;
	unsigned int i;
	int fd;

#define B_STEP(what, call)                                                   \
	do {                                                                 \
		snprintf(st->step, sizeof(st->step), "%s", what);            \
		st->err = (call);                                            \
		if (st->err)                                                 \
			return 1;                                            \
	} while (0)

	B_STEP("open", (fd = open(device, O_RDWR | O_NONBLOCK)) < 0 ? errno : 0);
	B_STEP("S_FMT", set_formats(fd));
	B_STEP("QUERY_EXT_CTRL", (elems = map_elems(fd)) ? 0 : errno);
	map = calloc(elems, 4);
	B_STEP("allocating the map", map ? 0 : ENOMEM);
	B_STEP("G_EXT_CTRLS", map_ctrl(fd, VIDIOC_G_EXT_CTRLS, map, elems, -1));
	B_STEP("S_EXT_CTRLS", map_ctrl(fd, VIDIOC_S_EXT_CTRLS, map, elems, -1));
	B_STEP("REQBUFS(OUTPUT)", reqbufs(fd, out_type, B_BUFFERS));
	B_STEP("REQBUFS(CAPTURE)", reqbufs(fd, cap_type, B_BUFFERS));
	for (i = 0; i < B_BUFFERS && i < frames; i++) {
		B_STEP("QBUF(OUTPUT)", qbuf(fd, out_type, i, -1));
		B_STEP("QBUF(CAPTURE)", qbuf(fd, cap_type, i, -1));
	}
	B_STEP("STREAMON", streamon(fd, true));
	for (i = 0; i < frames; i++) {
		/* The node returns a context's buffers in queueing order. */
		snprintf(frame, sizeof(frame), "frame %u", i);
		B_STEP(frame, dqbuf(fd, cap_type));
		B_STEP(frame, dqbuf(fd, out_type));
		if (i + B_BUFFERS < frames) {
			B_STEP(frame, qbuf(fd, out_type, i % B_BUFFERS, -1));
			B_STEP(frame, qbuf(fd, cap_type, i % B_BUFFERS, -1));
		}
	}
	B_STEP("STREAMOFF", streamon(fd, false));
	B_STEP("close", close(fd) ? errno : 0);
	snprintf(st->step, sizeof(st->step), "done");
	free(map);
	return 0;
#undef B_STEP
}

/* Context A and the threads that act on it. */
struct ctx_a {
	int fd;
	uint32_t elems;
	uint32_t *payload;
	atomic_bool ctrl_returned;
	int ctrl_err;
	atomic_bool job_done;
	int job_err;
	pid_t job_tid;
};

static void *a_set_map(void *arg)
{
	struct ctx_a *a = arg;

	a->ctrl_err = map_ctrl(a->fd, VIDIOC_S_EXT_CTRLS, a->payload,
			       a->elems, -1);
	atomic_store(&a->ctrl_returned, true);
	return NULL;
}

static void *a_run_job(void *arg)
{
	struct ctx_a *a = arg;

	a->job_tid = (pid_t)syscall(SYS_gettid);
	a->job_err = qbuf(a->fd, cap_type, 0, -1);
	if (!a->job_err)
		a->job_err = dqbuf(a->fd, cap_type);
	if (!a->job_err)
		a->job_err = dqbuf(a->fd, out_type);
	atomic_store(&a->job_done, true);
	return NULL;
}

/* Waits until *flag is set or the deadline (ms) passes. */
static bool wait_flag(atomic_bool *flag, uint64_t deadline)
{
	while (!atomic_load(flag)) {
		if (now_ms() > deadline)
			return false;
		usleep(20000);
	}
	return true;
}

/* Waits for process @pid until the deadline (ms); its status or -1. */
static int wait_child(pid_t pid, uint64_t deadline)
{
	int status;
	pid_t r;

	for (;;) {
		r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
		if (r < 0 || now_ms() > deadline)
			return -1;
		usleep(20000);
	}
}

static void usage(void)
{
	fputs("usage: dewarp-stalled-ctrls [-d DEVICE] [-f FRAMES] [-t SECONDS]\n"
	      "  -d, --device DEV     the dw100 node (default: found in sysfs)\n"
	      "  -f, --frames N       frames process B dewarps (default 8)\n"
	      "  -t, --timeout S      how long B and A's job may take (default 60)\n",
	      stderr);
	exit(2);
}

/* Context A: streaming with requests, one job waiting for CAPTURE. */
static void setup_a(struct ctx_a *a, const char *device)
{
	int media_fd, request_fd, err;
	uint32_t *map;

	a->fd = open(device, O_RDWR | O_NONBLOCK);
	if (a->fd < 0)
		die("%s: %s", device, strerror(errno));
	err = set_formats(a->fd);
	if (err)
		die("A: S_FMT: %s", strerror(err));
	a->elems = map_elems(a->fd);
	map = calloc(a->elems, 4);
	if (!a->elems || !map)
		die("A: no vertex map control");
	err = map_ctrl(a->fd, VIDIOC_G_EXT_CTRLS, map, a->elems, -1);
	if (err)
		die("A: G_EXT_CTRLS: %s", strerror(err));
	if (reqbufs(a->fd, out_type, 1) || reqbufs(a->fd, cap_type, 1))
		die("A: REQBUFS: %s", strerror(errno));
	if (streamon(a->fd, true))
		die("A: STREAMON: %s", strerror(errno));

	media_fd = open_media_device(device);
	if (xioctl(media_fd, MEDIA_IOC_REQUEST_ALLOC, &request_fd))
		die("A: MEDIA_IOC_REQUEST_ALLOC: %s", strerror(errno));
	err = map_ctrl(a->fd, VIDIOC_S_EXT_CTRLS, map, a->elems, request_fd);
	if (err)
		die("A: S_EXT_CTRLS(request): %s", strerror(err));
	err = qbuf(a->fd, out_type, 0, request_fd);
	if (err)
		die("A: QBUF(OUTPUT, request): %s", strerror(err));
	if (xioctl(request_fd, MEDIA_REQUEST_IOC_QUEUE, NULL))
		die("A: MEDIA_REQUEST_IOC_QUEUE: %s", strerror(errno));
	free(map);
	close(media_fd);
}

/* An anonymous page whose first touch waits for @uffd, never served here. */
static void *unserved_page(int *uffd, long page)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = {};
	void *p;

	*uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (*uffd < 0)
		die("userfaultfd: %s", strerror(errno));
	if (xioctl(*uffd, UFFDIO_API, &api))
		die("UFFDIO_API: %s", strerror(errno));
	p = mmap(NULL, page, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	reg.range.start = (uintptr_t)p;
	reg.range.len = page;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (xioctl(*uffd, UFFDIO_REGISTER, &reg))
		die("UFFDIO_REGISTER: %s", strerror(errno));
	return p;
}

/* Waits for the fault of a copy_from_user on the page. */
static bool wait_fault(int uffd, void *page, int timeout_ms)
{
	struct pollfd p = { .fd = uffd, .events = POLLIN };
	struct uffd_msg msg;

	if (poll(&p, 1, timeout_ms) != 1)
		return false;
	if (read(uffd, &msg, sizeof(msg)) != (ssize_t)sizeof(msg))
		return false;
	return msg.event == UFFD_EVENT_PAGEFAULT &&
	       msg.arg.pagefault.address == (uintptr_t)page;
}

/* Fills the page with @map (the node's default), waking the copy. */
static int serve_page(int uffd, void *page, long size, const uint32_t *map,
		      uint32_t elems)
{
	struct uffdio_copy copy = {};
	void *src = calloc(1, size);

	if (!src)
		return ENOMEM;
	memcpy(src, map, (size_t)elems * 4);
	copy.dst = (uintptr_t)page;
	copy.src = (uintptr_t)src;
	copy.len = size;
	if (xioctl(uffd, UFFDIO_COPY, &copy)) {
		free(src);
		return errno;
	}
	free(src);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "frames", required_argument, NULL, 'f' },
		{ "timeout", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	long page = sysconf(_SC_PAGESIZE);
	unsigned int frames = 8, timeout_s = 60;
	const char *device = NULL;
	pthread_t set_map, run_job;
	struct ctx_a a = { .fd = -1 };
	uint32_t *defaults;
	struct b_state *b;
	uint64_t start, deadline;
	char path[64];
	int opt, uffd, status, err;
	pid_t pid;

	while ((opt = getopt_long(argc, argv, "d:f:t:", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			device = optarg;
			break;
		case 'f':
			frames = (unsigned int)strtoul(optarg, NULL, 0);
			break;
		case 't':
			timeout_s = (unsigned int)strtoul(optarg, NULL, 0);
			break;
		default:
			usage();
		}
	}
	if (!device)
		device = find_device();
	if (!frames || !timeout_s)
		usage();

	setup_a(&a, device);
	defaults = calloc(a.elems, 4);
	if (!defaults ||
	    map_ctrl(a.fd, VIDIOC_G_EXT_CTRLS, defaults, a.elems, -1))
		die("A: G_EXT_CTRLS: %s", strerror(errno));
	if ((size_t)a.elems * 4 > (size_t)page)
		die("A: the map (%u entries) does not fit a page", a.elems);

	/* Park A's S_EXT_CTRLS in its copy from the unserved page. */
	a.payload = unserved_page(&uffd, page);
	if (pthread_create(&set_map, NULL, a_set_map, &a))
		die("pthread_create failed");
	check(wait_fault(uffd, a.payload, 10000) &&
	      !atomic_load(&a.ctrl_returned),
	      "A's S_EXT_CTRLS waits in its copy from a userfaultfd page");

	/* B, and A's own waiting job, while A's control ioctl is parked. */
	b = mmap(NULL, sizeof(*b), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	start = now_ms();
	deadline = start + timeout_s * 1000ull;
	if (pthread_create(&run_job, NULL, a_run_job, &a))
		die("pthread_create failed");
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0)
		_exit(run_b(device, frames, b));

	status = wait_child(pid, deadline);
	if (status < 0) {
		check(false, "B: %u frames, STREAMOFF and close within %u s (stuck at %s)",
		      frames, timeout_s, b->step);
		snprintf(path, sizeof(path), "/proc/%d/stack", (int)pid);
		print_stack("B", path);
	} else {
		check(status == 0, "B: %u frames, STREAMOFF and close in %llu ms%s%s%s",
		      frames, (unsigned long long)(now_ms() - start),
		      status ? " (failed at " : "", status ? b->step : "",
		      status ? ")" : "");
		if (status)
			printf("# B: %s: %s\n", b->step, strerror(b->err));
	}
	if (wait_flag(&a.job_done, deadline)) {
		check(!a.job_err, "A's job completes while A's S_EXT_CTRLS waits%s%s",
		      a.job_err ? ": " : "",
		      a.job_err ? strerror(a.job_err) : "");
	} else {
		check(false, "A's job completes within %u s while A's S_EXT_CTRLS waits",
		      timeout_s);
		snprintf(path, sizeof(path), "/proc/self/task/%d/stack",
			 (int)a.job_tid);
		print_stack("A's QBUF/DQBUF thread", path);
	}
	check(!atomic_load(&a.ctrl_returned),
	      "A's S_EXT_CTRLS still waits for its page");

	/* Release A: whatever was stuck behind it goes on. */
	err = serve_page(uffd, a.payload, page, defaults, a.elems);
	if (err)
		die("UFFDIO_COPY: %s", strerror(err));
	deadline = now_ms() + timeout_s * 1000ull;
	check(wait_flag(&a.ctrl_returned, deadline) && !a.ctrl_err,
	      "A's S_EXT_CTRLS returns 0 once its page is served");
	if (status < 0) {
		status = wait_child(pid, deadline);
		printf("# B after A was released: %s\n",
		       status < 0 ? "still stuck" : "finished");
	}
	if (!wait_flag(&a.job_done, deadline))
		die("A's job thread is still stuck");
	pthread_join(set_map, NULL);
	pthread_join(run_job, NULL);

	check(!streamon(a.fd, false) && !close(a.fd), "A: STREAMOFF and close");
	close(uffd);
	free(defaults);
	return failures ? 1 : 0;
}
