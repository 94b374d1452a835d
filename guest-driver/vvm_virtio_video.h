/* SPDX-License-Identifier: GPL-2.0 */
/*
 * virtio-video v3 wire format (decoder subset), byte-compatible with the
 * v3 Linux guest header, including its GET/SET_PARAMS_EXT commands, the
 * 44-byte config and error codes from 0x0300. AV1 (0x1007) is this
 * project's extension code. All fields are little-endian.
 */
#ifndef VVM_VIRTIO_VIDEO_H
#define VVM_VIRTIO_VIDEO_H

#include <linux/build_bug.h>
#include <linux/types.h>

#define VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES 0
#define VIRTIO_VIDEO_F_RESOURCE_NON_CONTIG 1

#define VIRTIO_VIDEO_QUEUE_COMMAND 0
#define VIRTIO_VIDEO_QUEUE_EVENT 1

#define VIRTIO_VIDEO_MAX_PLANES 8

enum virtio_video_format {
	VIRTIO_VIDEO_FORMAT_NV12 = 3,
	VIRTIO_VIDEO_FORMAT_YUV420 = 4,
	VIRTIO_VIDEO_FORMAT_H264 = 0x1002,
	VIRTIO_VIDEO_FORMAT_HEVC = 0x1003,
	VIRTIO_VIDEO_FORMAT_VP8 = 0x1004,
	VIRTIO_VIDEO_FORMAT_VP9 = 0x1005,
	VIRTIO_VIDEO_FORMAT_AV1 = 0x1007,
};

enum virtio_video_cmd_type {
	VIRTIO_VIDEO_CMD_QUERY_CAPABILITY = 0x0100,
	VIRTIO_VIDEO_CMD_STREAM_CREATE = 0x0101,
	VIRTIO_VIDEO_CMD_STREAM_DESTROY = 0x0102,
	VIRTIO_VIDEO_CMD_STREAM_DRAIN = 0x0103,
	VIRTIO_VIDEO_CMD_RESOURCE_CREATE = 0x0104,
	VIRTIO_VIDEO_CMD_RESOURCE_QUEUE = 0x0105,
	VIRTIO_VIDEO_CMD_RESOURCE_DESTROY_ALL = 0x0106,
	VIRTIO_VIDEO_CMD_QUEUE_CLEAR = 0x0107,
	VIRTIO_VIDEO_CMD_GET_PARAMS_EXT = 0x010D,
	VIRTIO_VIDEO_CMD_SET_PARAMS_EXT = 0x010E,

	VIRTIO_VIDEO_RESP_OK_NODATA = 0x0200,
	VIRTIO_VIDEO_RESP_OK_QUERY_CAPABILITY = 0x0201,
	VIRTIO_VIDEO_RESP_OK_RESOURCE_QUEUE = 0x0202,
	VIRTIO_VIDEO_RESP_OK_GET_PARAMS = 0x0203,

	VIRTIO_VIDEO_RESP_ERR_INVALID_OPERATION = 0x0300,
	VIRTIO_VIDEO_RESP_ERR_OUT_OF_MEMORY = 0x0301,
	VIRTIO_VIDEO_RESP_ERR_INVALID_STREAM_ID = 0x0302,
	VIRTIO_VIDEO_RESP_ERR_INVALID_RESOURCE_ID = 0x0303,
	VIRTIO_VIDEO_RESP_ERR_INVALID_PARAMETER = 0x0304,
	VIRTIO_VIDEO_RESP_ERR_UNSUPPORTED_CONTROL = 0x0305,
};

enum virtio_video_queue_type {
	VIRTIO_VIDEO_QUEUE_TYPE_INPUT = 0x100,
	VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT = 0x101,
};

#define VIRTIO_VIDEO_MEM_TYPE_GUEST_PAGES 0
#define VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER 1

#define VIRTIO_VIDEO_BUFFER_FLAG_ERR 0x0001
#define VIRTIO_VIDEO_BUFFER_FLAG_EOS 0x0002

#define VIRTIO_VIDEO_EVENT_ERROR 0x0100
#define VIRTIO_VIDEO_EVENT_DECODER_RESOLUTION_CHANGED 0x0200

struct virtio_video_config {
	__le32 version;
	__le32 max_caps_length;
	__le32 max_resp_length;
	__u8 device_name[32];
};

struct virtio_video_cmd_hdr {
	__le32 type;
	__le32 stream_id;
};

struct virtio_video_query_capability {
	struct virtio_video_cmd_hdr hdr;
	__le32 queue_type;
	__u8 padding[4];
};

struct virtio_video_query_capability_resp {
	struct virtio_video_cmd_hdr hdr;
	__le32 num_descs;
	__u8 padding[4];
};

struct virtio_video_format_range {
	__le32 min;
	__le32 max;
	__le32 step;
	__u8 padding[4];
};

struct virtio_video_format_frame {
	struct virtio_video_format_range width;
	struct virtio_video_format_range height;
	__le32 num_rates;
	__u8 padding[4];
};

struct virtio_video_format_desc {
	__le64 mask;
	__le32 format;
	__le32 planes_layout;
	__le32 plane_align;
	__le32 num_frames;
};

struct virtio_video_stream_create {
	struct virtio_video_cmd_hdr hdr;
	__le32 in_mem_type;
	__le32 out_mem_type;
	__le32 coded_format;
	__u8 padding[4];
	__u8 tag[64];
};

struct virtio_video_mem_entry {
	__le64 addr;
	__le32 length;
	__u8 padding[4];
};

struct virtio_video_resource_create {
	struct virtio_video_cmd_hdr hdr;
	__le32 queue_type;
	__le32 resource_id;
	__le32 planes_layout;
	__le32 num_planes;
	__le32 plane_offsets[VIRTIO_VIDEO_MAX_PLANES];
	__le32 num_entries[VIRTIO_VIDEO_MAX_PLANES];
};

struct virtio_video_resource_queue {
	struct virtio_video_cmd_hdr hdr;
	__le32 queue_type;
	__le32 resource_id;
	__le64 timestamp;
	__le32 num_data_sizes;
	__le32 data_sizes[VIRTIO_VIDEO_MAX_PLANES];
	__u8 padding[4];
};

struct virtio_video_resource_queue_resp {
	struct virtio_video_cmd_hdr hdr;
	__le64 timestamp;
	__le32 flags;
	__le32 size;
};

/* RESOURCE_DESTROY_ALL, QUEUE_CLEAR and GET_PARAMS share this layout. */
struct virtio_video_queue_cmd {
	struct virtio_video_cmd_hdr hdr;
	__le32 queue_type;
	__u8 padding[4];
};

struct virtio_video_plane_format {
	__le32 plane_size;
	__le32 stride;
};

struct virtio_video_crop {
	__le32 left;
	__le32 top;
	__le32 width;
	__le32 height;
};

struct virtio_video_params_ext {
	__le32 queue_type;
	__le32 format;
	__le32 frame_width;
	__le32 frame_height;
	__le32 min_buffers;
	__le32 max_buffers;
	struct virtio_video_crop crop;
	__le32 frame_rate;
	__le32 num_planes;
	struct virtio_video_plane_format plane_formats[VIRTIO_VIDEO_MAX_PLANES];
	__le32 resource_type;
	__u8 padding[4];
};

struct virtio_video_get_params_ext_resp {
	struct virtio_video_cmd_hdr hdr;
	struct virtio_video_params_ext params;
};

struct virtio_video_set_params_ext {
	struct virtio_video_cmd_hdr hdr;
	struct virtio_video_params_ext params;
};

struct virtio_video_event {
	__le32 event_type;
	__le32 stream_id;
};

static_assert(sizeof(struct virtio_video_config) == 44);
static_assert(sizeof(struct virtio_video_cmd_hdr) == 8);
static_assert(sizeof(struct virtio_video_query_capability) == 16);
static_assert(sizeof(struct virtio_video_query_capability_resp) == 16);
static_assert(sizeof(struct virtio_video_format_range) == 16);
static_assert(sizeof(struct virtio_video_format_frame) == 40);
static_assert(sizeof(struct virtio_video_format_desc) == 24);
static_assert(sizeof(struct virtio_video_stream_create) == 88);
static_assert(sizeof(struct virtio_video_mem_entry) == 16);
static_assert(sizeof(struct virtio_video_resource_create) == 88);
static_assert(sizeof(struct virtio_video_resource_queue) == 64);
static_assert(sizeof(struct virtio_video_resource_queue_resp) == 24);
static_assert(sizeof(struct virtio_video_queue_cmd) == 16);
static_assert(sizeof(struct virtio_video_params_ext) == 120);
static_assert(sizeof(struct virtio_video_get_params_ext_resp) == 128);
static_assert(sizeof(struct virtio_video_set_params_ext) == 128);
static_assert(sizeof(struct virtio_video_event) == 8);

#endif /* VVM_VIRTIO_VIDEO_H */
