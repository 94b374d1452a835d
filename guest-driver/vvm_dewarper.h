/* SPDX-License-Identifier: GPL-2.0 */
/*
 * DW100-compatible dewarper node (experimental virtio ID 56).
 *
 * Wire layout: docs/protocol-dewarper.md. All fields are little-endian.
 */
#ifndef VVM_DEWARPER_H
#define VVM_DEWARPER_H

#include <linux/build_bug.h>
#include <linux/types.h>

struct virtio_device;

/*
 * No virtio ID is assigned to a dewarper. 56 is used neither by the
 * specification, which counts up, nor by VMMs' private devices, which count
 * down from 63 (docs/protocol-dewarper.md).
 */
#define VIRTIO_ID_DEWARPER 56

#define VVM_DW_CONFIG_VERSION 1

/**
 * struct vvm_dw_config - device configuration space
 * @version: layout version, %VVM_DW_CONFIG_VERSION.
 * @max_width: widest image the device accepts.
 * @max_height: tallest image the device accepts.
 * @map_cache_slots: number of (context, generation) maps the device keeps.
 */
struct vvm_dw_config {
	__le32 version;
	__le32 max_width;
	__le32 max_height;
	__le32 map_cache_slots;
};

static_assert(sizeof(struct vvm_dw_config) == 16);

/**
 * struct vvm_dw_image - one image of a job
 * @fourcc: V4L2 fourcc of the single-plane form of the format.
 * @width: pixels.
 * @height: lines.
 * @num_planes: memory planes following in the chain (1 or 2).
 * @stride: bytes per line of the luma (or packed) and chroma components.
 * @plane_size: bytes of each memory plane in the chain.
 * @chroma_offset: offset of the chroma component in plane 0 of a one-plane
 *	semi-planar image, else 0.
 * @reserved: zero.
 */
struct vvm_dw_image {
	__le32 fourcc;
	__le32 width;
	__le32 height;
	__le32 num_planes;
	__le32 stride[2];
	__le32 plane_size[2];
	__le32 chroma_offset;
	__le32 reserved;
};

static_assert(sizeof(struct vvm_dw_image) == 40);

/* The vertex map follows the job header. */
#define VVM_DW_JOB_F_MAP	BIT(0)

/**
 * struct vvm_dw_job_hdr - job header, first device-readable bytes of a chain
 * @context_id: V4L2 context owning the map.
 * @sequence: echoed in the status.
 * @flags: %VVM_DW_JOB_F_MAP.
 * @map_generation: the map this job uses.
 * @map_width: vertices per map row.
 * @map_height: vertex rows.
 * @crop_left: source crop rectangle, left.
 * @crop_top: source crop rectangle, top.
 * @crop_width: source crop rectangle, width.
 * @crop_height: source crop rectangle, height.
 * @src: source image.
 * @dst: destination image.
 * @reserved: zero.
 */
struct vvm_dw_job_hdr {
	__le32 context_id;
	__le32 sequence;
	__le32 flags;
	__le32 map_generation;
	__le32 map_width;
	__le32 map_height;
	__le32 crop_left;
	__le32 crop_top;
	__le32 crop_width;
	__le32 crop_height;
	struct vvm_dw_image src;
	struct vvm_dw_image dst;
	__le32 reserved[2];
};

static_assert(sizeof(struct vvm_dw_job_hdr) == 128);

enum vvm_dw_status_code {
	VVM_DW_OK = 0,
	VVM_DW_ERR_MALFORMED = 1,
	VVM_DW_ERR_UNSUPPORTED = 2,
	VVM_DW_ERR_MAP_REQUIRED = 3,
	VVM_DW_ERR_INVALID_MAP = 4,
	VVM_DW_ERR_INTERNAL = 5,
};

/**
 * struct vvm_dw_status - first device-writable bytes of a chain
 * @status: &enum vvm_dw_status_code.
 * @sequence: the job's sequence.
 * @engine_time_ns: time the remap engine spent on the job.
 */
struct vvm_dw_status {
	__le32 status;
	__le32 sequence;
	__le64 engine_time_ns;
};

static_assert(sizeof(struct vvm_dw_status) == 16);

/**
 * vvm_dewarper_probe() - bind a dewarper device and register its V4L2 node
 * @vdev: virtio device with ID %VIRTIO_ID_DEWARPER.
 *
 * Return: 0 or a negative errno.
 */
int vvm_dewarper_probe(struct virtio_device *vdev);

#endif /* VVM_DEWARPER_H */
