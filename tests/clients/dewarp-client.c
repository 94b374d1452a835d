// SPDX-License-Identifier: GPL-2.0
/*
 * dewarp-client: drives a DW100-style dewarper node through V4L2.
 *
 * Sets the formats, the crop and the vertex map, queues raw frames read
 * from a file and writes the results to a file. A map can also be attached
 * to one frame through a media request, so that it takes effect on exactly
 * that frame. v4l2-ctl cannot set array controls, hence this program.
 *
 * Frames in files are the planes of one buffer laid end to end, each plane
 * as long as the driver's sizeimage for it.
 *
 * With --timing, one frame is in flight at a time and each frame's round
 * trip (source QBUF to result DQBUF) is printed, so that the time is one
 * job's and not a queue's.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/media.h>
#include <linux/videodev2.h>

#include "v4l2-nodes.h"

#ifndef V4L2_CID_USER_DW100_BASE
#define V4L2_CID_USER_DW100_BASE (V4L2_CID_USER_BASE + 0x1190)
#endif
#define DW100_VERTEX_MAP_CID (V4L2_CID_USER_DW100_BASE + 1)

#define MAX_BUFFERS 4
#define MAX_REQ_MAPS 16
#define MAX_EXPECTED_ERRORS 16

struct image {
	uint32_t fourcc;
	uint32_t width;
	uint32_t height;
	struct v4l2_pix_format_mplane pix;
};

struct buffer {
	void *plane[VIDEO_MAX_PLANES];
	size_t length[VIDEO_MAX_PLANES];
	int request_fd;
};

struct req_map {
	unsigned int frame;
	const char *path;
};

struct options {
	const char *device;
	struct image src;
	struct image dst;
	bool crop_set;
	struct v4l2_rect crop;
	uint32_t crop_flags;
	const char *map_path;
	struct req_map req_maps[MAX_REQ_MAPS];
	unsigned int n_req_maps;
	const char *in_path;
	const char *out_path;
	unsigned int frames;
	unsigned int expected_errors[MAX_EXPECTED_ERRORS];
	unsigned int n_expected_errors;
	bool info;
	bool timing;
};

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("dewarp-client: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static int xioctl(int fd, unsigned long req, void *arg)
{
	int ret;

	do {
		ret = ioctl(fd, req, arg);
	} while (ret < 0 && errno == EINTR);
	return ret;
}

/* A fourcc, or a format name of a two-plane format ("NV12M" is 'NM12'). */
static uint32_t parse_fourcc(const char *s)
{
	static const struct {
		const char *name;
		uint32_t fourcc;
	} multi[] = {
		{ "NV12M", V4L2_PIX_FMT_NV12M },
		{ "NV21M", V4L2_PIX_FMT_NV21M },
		{ "NV16M", V4L2_PIX_FMT_NV16M },
		{ "NV61M", V4L2_PIX_FMT_NV61M },
	};

	for (size_t i = 0; i < sizeof(multi) / sizeof(multi[0]); i++)
		if (!strcmp(s, multi[i].name))
			return multi[i].fourcc;
	if (strlen(s) != 4)
		die("bad format '%s' (want a fourcc such as NV12, or NV12M)", s);
	return v4l2_fourcc(s[0], s[1], s[2], s[3]);
}

static void fourcc_str(uint32_t f, char out[5])
{
	for (int i = 0; i < 4; i++)
		out[i] = (char)((f >> (8 * i)) & 0xff);
	out[4] = 0;
}

/* "NV12:640x480" */
static void parse_image(const char *arg, struct image *img)
{
	char fcc[6];

	if (sscanf(arg, "%5[^:]:%ux%u", fcc, &img->width, &img->height) != 3)
		die("bad image '%s' (want FORMAT:WxH)", arg);
	img->fourcc = parse_fourcc(fcc);
}

static unsigned int parse_uint(const char *s, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || v > UINT32_MAX)
		die("bad %s '%s'", what, s);
	return (unsigned int)v;
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

static void set_format(int fd, enum v4l2_buf_type type, struct image *img)
{
	struct v4l2_format f = { .type = type };
	char want[5], got[5];

	f.fmt.pix_mp.pixelformat = img->fourcc;
	f.fmt.pix_mp.width = img->width;
	f.fmt.pix_mp.height = img->height;
	f.fmt.pix_mp.field = V4L2_FIELD_NONE;
	if (xioctl(fd, VIDIOC_S_FMT, &f))
		die("S_FMT: %s", strerror(errno));
	if (f.fmt.pix_mp.pixelformat != img->fourcc ||
	    f.fmt.pix_mp.width != img->width ||
	    f.fmt.pix_mp.height != img->height) {
		fourcc_str(img->fourcc, want);
		fourcc_str(f.fmt.pix_mp.pixelformat, got);
		die("format %s %ux%u not accepted (driver chose %s %ux%u)",
		    want, img->width, img->height, got, f.fmt.pix_mp.width,
		    f.fmt.pix_mp.height);
	}
	img->pix = f.fmt.pix_mp;
}

static size_t frame_bytes(const struct image *img)
{
	size_t n = 0;

	for (unsigned int i = 0; i < img->pix.num_planes; i++)
		n += img->pix.plane_fmt[i].sizeimage;
	return n;
}

static uint32_t map_elems(int fd)
{
	struct v4l2_query_ext_ctrl q = { .id = DW100_VERTEX_MAP_CID };

	if (xioctl(fd, VIDIOC_QUERY_EXT_CTRL, &q))
		die("QUERY_EXT_CTRL(vertex map): %s", strerror(errno));
	return q.elems;
}

static uint32_t *read_map(const char *path, uint32_t elems)
{
	uint32_t *map = malloc((size_t)elems * 4);
	struct stat st;
	FILE *f;

	if (!map)
		die("out of memory");
	f = fopen(path, "rb");
	if (!f || fstat(fileno(f), &st))
		die("%s: %s", path, strerror(errno));
	if ((uint64_t)st.st_size != (uint64_t)elems * 4)
		die("%s: %lld bytes, the map of this CAPTURE size needs %u entries (%u bytes)",
		    path, (long long)st.st_size, elems, elems * 4);
	if (fread(map, 4, elems, f) != elems)
		die("%s: short read", path);
	fclose(f);
	/* The file holds little-endian entries, as the control does on x86. */
	return map;
}

static void set_map(int fd, const char *path, int request_fd)
{
	uint32_t elems = map_elems(fd);
	uint32_t *map = read_map(path, elems);
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

	if (xioctl(fd, VIDIOC_S_EXT_CTRLS, &cs))
		die("S_EXT_CTRLS(vertex map from %s): %s", path,
		    strerror(errno));
	free(map);
}

static void set_crop(int fd, const struct options *o)
{
	struct v4l2_selection sel = {
		.type = V4L2_BUF_TYPE_VIDEO_OUTPUT,
		.target = V4L2_SEL_TGT_CROP,
		.flags = o->crop_flags,
		.r = o->crop,
	};

	if (xioctl(fd, VIDIOC_S_SELECTION, &sel))
		die("S_SELECTION: %s", strerror(errno));
	printf("crop %d,%d,%u,%u\n", sel.r.left, sel.r.top, sel.r.width,
	       sel.r.height);
}

static void setup_buffers(int fd, enum v4l2_buf_type type,
			  const struct image *img, struct buffer *bufs,
			  unsigned int count)
{
	struct v4l2_requestbuffers rb = {
		.count = count,
		.type = type,
		.memory = V4L2_MEMORY_MMAP,
	};

	if (xioctl(fd, VIDIOC_REQBUFS, &rb))
		die("REQBUFS: %s", strerror(errno));
	if (rb.count < count)
		die("REQBUFS: got %u buffers, wanted %u", rb.count, count);

	for (unsigned int i = 0; i < count; i++) {
		struct v4l2_plane planes[VIDEO_MAX_PLANES] = {};
		struct v4l2_buffer b = {
			.type = type,
			.memory = V4L2_MEMORY_MMAP,
			.index = i,
			.length = img->pix.num_planes,
			.m.planes = planes,
		};

		if (xioctl(fd, VIDIOC_QUERYBUF, &b))
			die("QUERYBUF: %s", strerror(errno));
		bufs[i].request_fd = -1;
		for (unsigned int p = 0; p < b.length; p++) {
			bufs[i].length[p] = planes[p].length;
			bufs[i].plane[p] = mmap(NULL, planes[p].length,
						PROT_READ | PROT_WRITE,
						MAP_SHARED, fd,
						planes[p].m.mem_offset);
			if (bufs[i].plane[p] == MAP_FAILED)
				die("mmap: %s", strerror(errno));
		}
	}
}

static const char *map_for_frame(const struct options *o, unsigned int frame)
{
	for (unsigned int i = 0; i < o->n_req_maps; i++)
		if (o->req_maps[i].frame == frame)
			return o->req_maps[i].path;
	return NULL;
}

static bool error_expected(const struct options *o, unsigned int frame)
{
	for (unsigned int i = 0; i < o->n_expected_errors; i++)
		if (o->expected_errors[i] == frame)
			return true;
	return false;
}

static uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void queue_source(int fd, int media_fd, const struct options *o,
			 struct buffer *buf, unsigned int index,
			 unsigned int frame, FILE *in, uint64_t *queued_ns)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = {};
	struct v4l2_buffer b = {
		.type = V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE,
		.memory = V4L2_MEMORY_MMAP,
		.index = index,
		.length = o->src.pix.num_planes,
		.m.planes = planes,
		.field = V4L2_FIELD_NONE,
	};
	const char *map = map_for_frame(o, frame);

	for (unsigned int p = 0; p < o->src.pix.num_planes; p++) {
		size_t n = o->src.pix.plane_fmt[p].sizeimage;

		if (fread(buf->plane[p], 1, n, in) != n)
			die("%s: no frame %u", o->in_path, frame);
		planes[p].bytesused = n;
	}
	/* The timestamp names the frame; the node copies it to the result. */
	b.timestamp.tv_sec = frame;

	if (media_fd >= 0) {
		if (buf->request_fd < 0 &&
		    xioctl(media_fd, MEDIA_IOC_REQUEST_ALLOC, &buf->request_fd))
			die("MEDIA_IOC_REQUEST_ALLOC: %s", strerror(errno));
		if (map)
			set_map(fd, map, buf->request_fd);
		b.flags |= V4L2_BUF_FLAG_REQUEST_FD;
		b.request_fd = buf->request_fd;
	}
	*queued_ns = monotonic_ns();
	if (xioctl(fd, VIDIOC_QBUF, &b))
		die("QBUF(OUTPUT, frame %u): %s", frame, strerror(errno));
	if (media_fd >= 0 &&
	    xioctl(buf->request_fd, MEDIA_REQUEST_IOC_QUEUE, NULL))
		die("MEDIA_REQUEST_IOC_QUEUE(frame %u): %s", frame,
		    strerror(errno));
}

static void queue_capture(int fd, const struct image *dst, unsigned int index)
{
	struct v4l2_plane planes[VIDEO_MAX_PLANES] = {};
	struct v4l2_buffer b = {
		.type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE,
		.memory = V4L2_MEMORY_MMAP,
		.index = index,
		.length = dst->pix.num_planes,
		.m.planes = planes,
	};

	if (xioctl(fd, VIDIOC_QBUF, &b))
		die("QBUF(CAPTURE): %s", strerror(errno));
}

static void dqbuf(int fd, enum v4l2_buf_type type, unsigned int num_planes,
		  struct v4l2_buffer *b, struct v4l2_plane *planes)
{
	memset(b, 0, sizeof(*b));
	b->type = type;
	b->memory = V4L2_MEMORY_MMAP;
	b->length = num_planes;
	b->m.planes = planes;
	if (xioctl(fd, VIDIOC_DQBUF, b))
		die("DQBUF: %s", strerror(errno));
}

/* A dequeued source buffer's request is complete; make it reusable. */
static void recycle_request(struct buffer *buf)
{
	struct pollfd p = { .fd = buf->request_fd, .events = POLLPRI };

	if (buf->request_fd < 0)
		return;
	if (poll(&p, 1, 5000) != 1)
		die("request did not complete");
	if (xioctl(buf->request_fd, MEDIA_REQUEST_IOC_REINIT, NULL))
		die("MEDIA_REQUEST_IOC_REINIT: %s", strerror(errno));
}

static void stream(int fd, const struct options *o)
{
	struct buffer src_bufs[MAX_BUFFERS] = {}, dst_bufs[MAX_BUFFERS] = {};
	enum v4l2_buf_type out_type = V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE;
	enum v4l2_buf_type cap_type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE;
	size_t src_frame = frame_bytes(&o->src);
	size_t dst_frame = frame_bytes(&o->dst);
	unsigned int frames = o->frames, count, queued = 0, done = 0;
	unsigned int errors = 0, unexpected = 0;
	/* When each frame in flight was queued, by frame % MAX_BUFFERS. */
	uint64_t queued_ns[MAX_BUFFERS] = {};
	int media_fd = -1, out_fd;
	struct stat st;
	FILE *in;

	in = fopen(o->in_path, "rb");
	if (!in || fstat(fileno(in), &st))
		die("%s: %s", o->in_path, strerror(errno));
	if (!frames)
		frames = (unsigned int)(st.st_size / src_frame);
	if (!frames)
		die("%s: shorter than one %zu-byte frame", o->in_path,
		    src_frame);
	out_fd = open(o->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (out_fd < 0)
		die("%s: %s", o->out_path, strerror(errno));
	if (o->n_req_maps)
		media_fd = open_media_device(o->device);

	count = frames < MAX_BUFFERS ? frames : MAX_BUFFERS;
	if (o->timing)
		count = 1;
	setup_buffers(fd, out_type, &o->src, src_bufs, count);
	setup_buffers(fd, cap_type, &o->dst, dst_bufs, count);

	for (unsigned int i = 0; i < count; i++) {
		queue_capture(fd, &o->dst, i);
		queue_source(fd, media_fd, o, &src_bufs[i], i, queued, in,
			     &queued_ns[queued % MAX_BUFFERS]);
		queued++;
	}
	if (xioctl(fd, VIDIOC_STREAMON, &out_type) ||
	    xioctl(fd, VIDIOC_STREAMON, &cap_type))
		die("STREAMON: %s", strerror(errno));

	while (done < frames) {
		struct v4l2_plane planes[VIDEO_MAX_PLANES];
		struct v4l2_buffer b;
		unsigned int frame;
		off_t off;

		dqbuf(fd, cap_type, o->dst.pix.num_planes, &b, planes);
		frame = (unsigned int)b.timestamp.tv_sec;
		if (frame >= frames || b.sequence != frame)
			die("result for frame %u came with sequence %u", frame,
			    b.sequence);
		if (o->timing)
			printf("frame %u round_trip_us %llu\n", frame,
			       (unsigned long long)(monotonic_ns() -
						    queued_ns[frame % MAX_BUFFERS]) /
				       1000);
		if (b.flags & V4L2_BUF_FLAG_ERROR) {
			errors++;
			if (!error_expected(o, frame)) {
				unexpected++;
				fprintf(stderr, "frame %u: error\n", frame);
			}
		} else {
			if (error_expected(o, frame)) {
				unexpected++;
				fprintf(stderr, "frame %u: expected an error\n",
					frame);
			}
			off = (off_t)frame * (off_t)dst_frame;
			for (unsigned int p = 0; p < o->dst.pix.num_planes; p++) {
				size_t n = o->dst.pix.plane_fmt[p].sizeimage;

				if (planes[p].bytesused != n)
					die("frame %u plane %u: %u bytes, expected %zu",
					    frame, p, planes[p].bytesused, n);
				if (pwrite(out_fd, dst_bufs[b.index].plane[p],
					   n, off) != (ssize_t)n)
					die("%s: %s", o->out_path,
					    strerror(errno));
				off += (off_t)n;
			}
		}
		done++;
		if (queued < frames)
			queue_capture(fd, &o->dst, b.index);

		dqbuf(fd, out_type, o->src.pix.num_planes, &b, planes);
		recycle_request(&src_bufs[b.index]);
		if (queued < frames) {
			queue_source(fd, media_fd, o, &src_bufs[b.index],
				     b.index, queued, in,
				     &queued_ns[queued % MAX_BUFFERS]);
			queued++;
		}
	}

	if (xioctl(fd, VIDIOC_STREAMOFF, &out_type) ||
	    xioctl(fd, VIDIOC_STREAMOFF, &cap_type))
		die("STREAMOFF: %s", strerror(errno));
	if (ftruncate(out_fd, (off_t)frames * (off_t)dst_frame))
		die("%s: %s", o->out_path, strerror(errno));
	close(out_fd);
	fclose(in);
	for (unsigned int i = 0; i < count; i++)
		if (src_bufs[i].request_fd >= 0)
			close(src_bufs[i].request_fd);
	if (media_fd >= 0)
		close(media_fd);

	printf("frames %u errors %u\n", frames, errors);
	if (unexpected)
		die("%u frame(s) did not end as expected", unexpected);
}

static void print_info(int fd, const struct options *o)
{
	struct v4l2_capability cap = {};
	char f[5];

	if (xioctl(fd, VIDIOC_QUERYCAP, &cap))
		die("QUERYCAP: %s", strerror(errno));
	printf("driver %s\ncard %s\nbus_info %s\n", cap.driver, cap.card,
	       cap.bus_info);
	fourcc_str(o->src.pix.pixelformat, f);
	printf("src %s %ux%u planes %u\n", f, o->src.pix.width,
	       o->src.pix.height, o->src.pix.num_planes);
	fourcc_str(o->dst.pix.pixelformat, f);
	printf("dst %s %ux%u planes %u\n", f, o->dst.pix.width,
	       o->dst.pix.height, o->dst.pix.num_planes);
	printf("map elems %u\n", map_elems(fd));
}

static void usage(void)
{
	fputs("usage: dewarp-client [options]\n"
	      "  -d, --device PATH       video node (default: the node named dw100)\n"
	      "  -s, --src FOURCC:WxH    source (OUTPUT queue) format\n"
	      "  -D, --dst FOURCC:WxH    destination (CAPTURE queue) format\n"
	      "  -c, --crop L,T,W,H      source crop rectangle\n"
	      "      --crop-flags le|ge|le,ge\n"
	      "  -m, --map FILE          vertex map set before streaming\n"
	      "  -r, --request-map N:FILE  frame N's request carries map FILE\n"
	      "                          (every frame then goes through a request)\n"
	      "  -i, --in FILE           raw source frames\n"
	      "  -o, --out FILE          raw destination frames\n"
	      "  -n, --frames N          frames to process (default: all in --in)\n"
	      "  -e, --expect-error N    frame N must come back with an error\n"
	      "      --info              print capabilities and formats\n"
	      "      --timing            one frame in flight at a time; print each\n"
	      "                          frame's QBUF-to-DQBUF round trip\n",
	      stderr);
	exit(2);
}

static void parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longs[] = {
		{ "device", required_argument, NULL, 'd' },
		{ "src", required_argument, NULL, 's' },
		{ "dst", required_argument, NULL, 'D' },
		{ "crop", required_argument, NULL, 'c' },
		{ "crop-flags", required_argument, NULL, 'F' },
		{ "map", required_argument, NULL, 'm' },
		{ "request-map", required_argument, NULL, 'r' },
		{ "in", required_argument, NULL, 'i' },
		{ "out", required_argument, NULL, 'o' },
		{ "frames", required_argument, NULL, 'n' },
		{ "expect-error", required_argument, NULL, 'e' },
		{ "info", no_argument, NULL, 'I' },
		{ "timing", no_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char *colon;
	int c;

	o->src = (struct image){ .fourcc = V4L2_PIX_FMT_NV16, .width = 640,
				 .height = 480 };
	o->dst = o->src;
	while ((c = getopt_long(argc, argv, "d:s:D:c:m:r:i:o:n:e:h", longs,
				NULL)) != -1) {
		switch (c) {
		case 'd':
			o->device = optarg;
			break;
		case 's':
			parse_image(optarg, &o->src);
			break;
		case 'D':
			parse_image(optarg, &o->dst);
			break;
		case 'c':
			if (sscanf(optarg, "%d,%d,%u,%u", &o->crop.left,
				   &o->crop.top, &o->crop.width,
				   &o->crop.height) != 4)
				die("bad crop '%s' (want L,T,W,H)", optarg);
			o->crop_set = true;
			break;
		case 'F':
			if (!strcmp(optarg, "le"))
				o->crop_flags = V4L2_SEL_FLAG_LE;
			else if (!strcmp(optarg, "ge"))
				o->crop_flags = V4L2_SEL_FLAG_GE;
			else if (!strcmp(optarg, "le,ge"))
				o->crop_flags = V4L2_SEL_FLAG_LE |
						V4L2_SEL_FLAG_GE;
			else
				die("bad crop flags '%s'", optarg);
			break;
		case 'm':
			o->map_path = optarg;
			break;
		case 'r':
			if (o->n_req_maps == MAX_REQ_MAPS)
				die("at most %d request maps", MAX_REQ_MAPS);
			colon = strchr(optarg, ':');
			if (!colon)
				die("bad request map '%s' (want N:FILE)",
				    optarg);
			*colon = 0;
			o->req_maps[o->n_req_maps].frame =
				parse_uint(optarg, "frame");
			o->req_maps[o->n_req_maps++].path = colon + 1;
			break;
		case 'i':
			o->in_path = optarg;
			break;
		case 'o':
			o->out_path = optarg;
			break;
		case 'n':
			o->frames = parse_uint(optarg, "frame count");
			break;
		case 'e':
			if (o->n_expected_errors == MAX_EXPECTED_ERRORS)
				die("at most %d expected errors",
				    MAX_EXPECTED_ERRORS);
			o->expected_errors[o->n_expected_errors++] =
				parse_uint(optarg, "frame");
			break;
		case 'I':
			o->info = true;
			break;
		case 'T':
			o->timing = true;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (!o->info && (!o->in_path || !o->out_path))
		die("--in and --out are required (or --info)");
}

int main(int argc, char **argv)
{
	struct options o = {};
	int fd;

	parse_args(argc, argv, &o);
	if (!o.device)
		o.device = find_device();
	fd = open(o.device, O_RDWR);
	if (fd < 0)
		die("%s: %s", o.device, strerror(errno));

	/* OUTPUT first: the default map of a new CAPTURE size uses the source size. */
	set_format(fd, V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE, &o.src);
	set_format(fd, V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE, &o.dst);
	if (o.crop_set)
		set_crop(fd, &o);
	if (o.map_path)
		set_map(fd, o.map_path, -1);

	if (o.info)
		print_info(fd, &o);
	else
		stream(fd, &o);
	close(fd);
	return 0;
}
