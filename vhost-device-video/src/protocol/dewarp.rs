//! Dewarper wire protocol (`docs/protocol-dewarper.md`): the job header, the
//! image descriptors, the status, and the validation of a job against the
//! real lengths of its descriptor chain.
//!
//! A checked job is told in wire types of this module ([`WireFormat`],
//! [`WireGeometry`], [`WireCrop`]); the device maps them to the remap
//! engine's.

use std::mem::size_of;

use thiserror::Error as ThisError;
use vm_memory::{ByteValued, Le32, Le64};

/// Experimental virtio device ID of the dewarper: one that neither the virtio
/// specification nor any surveyed VMM uses (`docs/protocol-dewarper.md`).
pub const DEWARPER_VIRTIO_ID: u32 = 56;
/// Config space `version`.
pub const CONFIG_VERSION: u32 = 1;
/// The vertex map follows the job header.
pub const VDW_JOB_F_MAP: u32 = 1 << 0;

/// Smallest picture width a job may give.
pub const MIN_WIDTH: u32 = 176;
/// Smallest picture height a job may give.
pub const MIN_HEIGHT: u32 = 144;
/// Largest picture width a job may give.
pub const MAX_WIDTH: u32 = 4096;
/// Largest picture height a job may give.
pub const MAX_HEIGHT: u32 = 3072;
/// Picture widths and heights are multiples of this.
pub const SIZE_STEP: u32 = 8;
/// Side of a vertex map cell, in destination pixels.
pub const MAP_CELL_SIZE: u32 = 16;

/// Largest line stride the device takes, in bytes (twice a line of the widest
/// packed picture): bounds what a guest can make the device allocate.
pub const MAX_STRIDE: u32 = 2 * MAX_WIDTH * 2;
/// Largest memory plane the device takes, in bytes.
pub const MAX_PLANE_SIZE: u32 = 64 << 20;

/// Vertices per row (or column) of the map for a destination of `length`
/// pixels: one per started cell, and the closing one.
pub fn map_vertices(length: u32) -> u32 {
    length.div_ceil(MAP_CELL_SIZE) + 1
}

/// An image format of the wire, named by the V4L2 fourcc of its
/// single-plane form. Semi-planar formats (NV*) hold a luma component and
/// an interleaved chroma component; packed ones (YUYV, UYVY) one component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireFormat {
    /// 4:2:0 semi-planar, U before V.
    Nv12,
    /// 4:2:0 semi-planar, V before U.
    Nv21,
    /// 4:2:2 semi-planar, U before V.
    Nv16,
    /// 4:2:2 semi-planar, V before U.
    Nv61,
    /// 4:2:2 packed Y0 U Y1 V.
    Yuyv,
    /// 4:2:2 packed U Y0 V Y1.
    Uyvy,
}

impl WireFormat {
    pub const ALL: [WireFormat; 6] = [
        WireFormat::Nv12,
        WireFormat::Nv21,
        WireFormat::Nv16,
        WireFormat::Nv61,
        WireFormat::Yuyv,
        WireFormat::Uyvy,
    ];

    /// The `fourcc` field's value.
    pub const fn fourcc(self) -> u32 {
        u32::from_le_bytes(*match self {
            WireFormat::Nv12 => b"NV12",
            WireFormat::Nv21 => b"NV21",
            WireFormat::Nv16 => b"NV16",
            WireFormat::Nv61 => b"NV61",
            WireFormat::Yuyv => b"YUYV",
            WireFormat::Uyvy => b"UYVY",
        })
    }

    pub fn from_fourcc(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    /// Whether a job's source may have this format (the DW100 reads no
    /// V-before-U semi-planar image).
    pub const fn is_source_format(self) -> bool {
        !matches!(self, WireFormat::Nv21 | WireFormat::Nv61)
    }

    pub const fn is_packed(self) -> bool {
        matches!(self, WireFormat::Yuyv | WireFormat::Uyvy)
    }

    /// Bytes per pixel of the luma (or packed) component.
    pub const fn luma_bytes_per_pixel(self) -> usize {
        if self.is_packed() {
            2
        } else {
            1
        }
    }

    /// log2 of the vertical chroma subsampling.
    pub const fn chroma_vertical_shift(self) -> u32 {
        match self {
            WireFormat::Nv12 | WireFormat::Nv21 => 1,
            _ => 0,
        }
    }
}

/// Format, size and line strides of one image as a job gives them.
/// `chroma_stride` is that of the chroma component of semi-planar formats;
/// for packed formats it repeats `luma_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireGeometry {
    pub format: WireFormat,
    pub width: u32,
    pub height: u32,
    pub luma_stride: usize,
    pub chroma_stride: usize,
}

impl WireGeometry {
    /// Tightly packed geometry (stride = line length).
    pub fn packed(format: WireFormat, width: u32, height: u32) -> Self {
        let luma_stride = width as usize * format.luma_bytes_per_pixel();
        WireGeometry {
            format,
            width,
            height,
            luma_stride,
            chroma_stride: if format.is_packed() {
                luma_stride
            } else {
                width as usize
            },
        }
    }

    /// Bytes the luma (or packed) component spans: every line but the last
    /// is a full stride.
    pub fn luma_extent(&self) -> usize {
        span(
            self.luma_stride,
            self.height,
            self.width as usize * self.format.luma_bytes_per_pixel(),
        )
    }

    /// Bytes the chroma component of a semi-planar format spans; 0 for
    /// packed.
    pub fn chroma_extent(&self) -> usize {
        if self.format.is_packed() {
            0
        } else {
            let lines = self.height >> self.format.chroma_vertical_shift();
            span(self.chroma_stride, lines, self.width as usize)
        }
    }
}

/// Bytes `lines` lines of `line_bytes` span at `stride` bytes apart.
fn span(stride: usize, lines: u32, line_bytes: usize) -> usize {
    stride * (lines as usize).saturating_sub(1) + line_bytes
}

/// The source rectangle a job reads, in source pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireCrop {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

/// Status codes.
pub mod status {
    pub const OK: u32 = 0;
    pub const ERR_MALFORMED: u32 = 1;
    pub const ERR_UNSUPPORTED: u32 = 2;
    pub const ERR_MAP_REQUIRED: u32 = 3;
    pub const ERR_INVALID_MAP: u32 = 4;
    pub const ERR_INTERNAL: u32 = 5;
}

/// Config space (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VdwConfig {
    pub version: Le32,
    pub max_width: Le32,
    pub max_height: Le32,
    pub map_cache_slots: Le32,
}

/// `struct vdw_image` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VdwImage {
    pub fourcc: Le32,
    pub width: Le32,
    pub height: Le32,
    pub num_planes: Le32,
    pub stride: [Le32; 2],
    pub plane_size: [Le32; 2],
    pub chroma_offset: Le32,
    pub reserved: Le32,
}

/// `struct vdw_job` (128 bytes), the first device-readable bytes of a chain.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VdwJob {
    pub context_id: Le32,
    pub sequence: Le32,
    pub flags: Le32,
    pub map_generation: Le32,
    pub map_width: Le32,
    pub map_height: Le32,
    /// `left, top, width, height`.
    pub crop: [Le32; 4],
    pub src: VdwImage,
    pub dst: VdwImage,
    pub reserved: [Le32; 2],
}

/// `struct vdw_status` (16 bytes), the first device-writable bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VdwStatus {
    pub status: Le32,
    pub sequence: Le32,
    pub engine_time_ns: Le64,
}

// SAFETY: plain little-endian integers with no padding (sizes asserted).
unsafe impl ByteValued for VdwConfig {}
// SAFETY: as above.
unsafe impl ByteValued for VdwImage {}
// SAFETY: as above.
unsafe impl ByteValued for VdwJob {}
// SAFETY: as above.
unsafe impl ByteValued for VdwStatus {}

const _: () = assert!(size_of::<VdwConfig>() == 16);
const _: () = assert!(size_of::<VdwImage>() == 40);
const _: () = assert!(size_of::<VdwJob>() == 128);
const _: () = assert!(size_of::<VdwStatus>() == 16);

impl VdwStatus {
    pub fn new(code: u32, sequence: u32, engine_time_ns: u64) -> Self {
        VdwStatus {
            status: code.into(),
            sequence: sequence.into(),
            engine_time_ns: engine_time_ns.into(),
        }
    }
}

/// Why a job is refused; [`JobError::status`] is the code the guest sees.
#[derive(Debug, ThisError, PartialEq, Eq)]
pub enum JobError {
    #[error("{0} has a reserved field set")]
    Reserved(&'static str),
    #[error("{which}: fourcc {fourcc:#010x} is not a supported format here")]
    Format { which: &'static str, fourcc: u32 },
    #[error("{which}: {width}x{height} outside 176x144..4096x3072 in steps of 8")]
    Size {
        which: &'static str,
        width: u32,
        height: u32,
    },
    #[error("{which}: {num_planes} memory planes for this format")]
    PlaneCount {
        which: &'static str,
        num_planes: u32,
    },
    #[error("{which}: stride {stride} outside {min}..={max}")]
    Stride {
        which: &'static str,
        stride: u32,
        min: u32,
        max: u32,
    },
    #[error("{which}: plane of {size} bytes above the {MAX_PLANE_SIZE} bytes limit")]
    PlaneTooLarge { which: &'static str, size: u32 },
    #[error("{which}: components do not fit their memory planes")]
    Layout { which: &'static str },
    #[error("crop {0:?} is empty or outside the source")]
    Crop(WireCrop),
    #[error("map is {width}x{height}, the destination needs {expected_width}x{expected_height}")]
    MapDimensions {
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
    },
    #[error("chain has {actual} {direction} bytes, the header says {expected}")]
    ChainLength {
        direction: &'static str,
        actual: usize,
        expected: usize,
    },
}

impl JobError {
    pub fn status(&self) -> u32 {
        match self {
            JobError::Reserved(_)
            | JobError::PlaneCount { .. }
            | JobError::Layout { .. }
            | JobError::ChainLength { .. } => status::ERR_MALFORMED,
            JobError::Format { .. }
            | JobError::Size { .. }
            | JobError::Stride { .. }
            | JobError::PlaneTooLarge { .. }
            | JobError::Crop(_) => status::ERR_UNSUPPORTED,
            JobError::MapDimensions { .. } => status::ERR_INVALID_MAP,
        }
    }
}

/// A checked image: its geometry and where its components sit in the
/// image's bytes (its memory planes back to back, as in the chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    pub geometry: WireGeometry,
    /// Offset of the chroma component from the start of the image's bytes
    /// (0 for packed formats).
    pub chroma_start: usize,
    /// Bytes of all memory planes.
    pub total_size: usize,
}

/// A checked job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidJob {
    pub context_id: u32,
    pub sequence: u32,
    pub map_generation: u32,
    pub map_width: u32,
    pub map_height: u32,
    /// The vertex map follows the header.
    pub carries_map: bool,
    pub crop: WireCrop,
    pub src: ImageLayout,
    pub dst: ImageLayout,
}

impl ValidJob {
    /// Bytes of the vertex map in the chain (0 without `VDW_JOB_F_MAP`).
    pub fn map_bytes(&self) -> usize {
        if self.carries_map {
            self.map_width as usize * self.map_height as usize * 4
        } else {
            0
        }
    }
}

impl VdwImage {
    fn check(&self, which: &'static str, source: bool) -> Result<ImageLayout, JobError> {
        if self.reserved.to_native() != 0 {
            return Err(JobError::Reserved(which));
        }
        let fourcc = self.fourcc.to_native();
        let format = WireFormat::from_fourcc(fourcc)
            .filter(|f| !source || f.is_source_format())
            .ok_or(JobError::Format { which, fourcc })?;
        let (width, height) = (self.width.to_native(), self.height.to_native());
        if !(MIN_WIDTH..=MAX_WIDTH).contains(&width)
            || !(MIN_HEIGHT..=MAX_HEIGHT).contains(&height)
            || !width.is_multiple_of(SIZE_STEP)
            || !height.is_multiple_of(SIZE_STEP)
        {
            return Err(JobError::Size {
                which,
                width,
                height,
            });
        }
        let num_planes = self.num_planes.to_native();
        let two_planes = match num_planes {
            1 => false,
            2 if !format.is_packed() => true,
            _ => return Err(JobError::PlaneCount { which, num_planes }),
        };
        let [stride0, stride1] = self.stride.map(Le32::to_native);
        let [size0, size1] = self.plane_size.map(Le32::to_native);
        let chroma_offset = self.chroma_offset.to_native();
        let check_stride = |stride: u32, min: u32| {
            if (min..=MAX_STRIDE).contains(&stride) {
                Ok(())
            } else {
                Err(JobError::Stride {
                    which,
                    stride,
                    min,
                    max: MAX_STRIDE,
                })
            }
        };
        check_stride(stride0, width * format.luma_bytes_per_pixel() as u32)?;
        if !format.is_packed() {
            check_stride(stride1, width)?;
        }
        for size in [size0, size1] {
            if size > MAX_PLANE_SIZE {
                return Err(JobError::PlaneTooLarge { which, size });
            }
        }
        let geometry = WireGeometry {
            format,
            width,
            height,
            luma_stride: stride0 as usize,
            chroma_stride: if format.is_packed() {
                stride0 as usize
            } else {
                stride1 as usize
            },
        };
        let (size0, size1) = (size0 as usize, size1 as usize);
        let (luma, chroma) = (geometry.luma_extent(), geometry.chroma_extent());
        let chroma_offset = chroma_offset as usize;
        let chroma_start = if two_planes {
            if chroma_offset != 0 || luma > size0 || chroma > size1 {
                return Err(JobError::Layout { which });
            }
            size0
        } else if format.is_packed() {
            if chroma_offset != 0 || size1 != 0 || luma > size0 {
                return Err(JobError::Layout { which });
            }
            0
        } else {
            if size1 != 0 || chroma_offset < luma || chroma_offset + chroma > size0 {
                return Err(JobError::Layout { which });
            }
            chroma_offset
        };
        Ok(ImageLayout {
            geometry,
            chroma_start,
            total_size: size0 + size1,
        })
    }
}

impl VdwJob {
    /// Checks every field and the chain's real lengths (`readable` bytes
    /// after and including the header, `writable` bytes including the
    /// status). Returns the first problem in this order: reserved fields,
    /// images, crop, map dimensions, chain lengths.
    pub fn validate(&self, readable: usize, writable: usize) -> Result<ValidJob, JobError> {
        let job = self.check()?;
        let expected = size_of::<VdwJob>() + job.map_bytes() + job.src.total_size;
        if readable != expected {
            return Err(JobError::ChainLength {
                direction: "device-readable",
                actual: readable,
                expected,
            });
        }
        let expected = size_of::<VdwStatus>() + job.dst.total_size;
        if writable != expected {
            return Err(JobError::ChainLength {
                direction: "device-writable",
                actual: writable,
                expected,
            });
        }
        Ok(job)
    }

    /// Checks every field, in the order of [`validate`](Self::validate),
    /// without the chain lengths: what any front of the dewarper (the
    /// virtqueue, the DW100 model's job socket) runs on a job.
    pub fn check(&self) -> Result<ValidJob, JobError> {
        let flags = self.flags.to_native();
        if flags & !VDW_JOB_F_MAP != 0 || self.reserved.iter().any(|r| r.to_native() != 0) {
            return Err(JobError::Reserved("job header"));
        }
        let src = self.src.check("source", true)?;
        let dst = self.dst.check("destination", false)?;
        let [left, top, width, height] = self.crop.map(Le32::to_native);
        let crop = WireCrop {
            left,
            top,
            width,
            height,
        };
        let inside = |start: u32, len: u32, limit: u32| {
            len > 0 && start.checked_add(len).is_some_and(|end| end <= limit)
        };
        if !inside(left, width, src.geometry.width) || !inside(top, height, src.geometry.height) {
            return Err(JobError::Crop(crop));
        }
        let (map_width, map_height) = (self.map_width.to_native(), self.map_height.to_native());
        let (expected_width, expected_height) = (
            map_vertices(dst.geometry.width),
            map_vertices(dst.geometry.height),
        );
        if (map_width, map_height) != (expected_width, expected_height) {
            return Err(JobError::MapDimensions {
                width: map_width,
                height: map_height,
                expected_width,
                expected_height,
            });
        }
        Ok(ValidJob {
            context_id: self.context_id.to_native(),
            sequence: self.sequence.to_native(),
            map_generation: self.map_generation.to_native(),
            map_width,
            map_height,
            carries_map: flags & VDW_JOB_F_MAP != 0,
            crop,
            src,
            dst,
        })
    }
}

/// The image descriptor a guest sends for a picture of `geometry` in
/// `num_planes` memory planes, each component tightly after the previous.
pub fn image_descriptor(geometry: &WireGeometry, num_planes: u32) -> VdwImage {
    let luma = geometry.luma_extent() as u32;
    let chroma = geometry.chroma_extent() as u32;
    let packed = geometry.format.is_packed();
    let (plane_size, chroma_offset) = match (packed, num_planes) {
        (true, _) => ([luma, 0], 0),
        (false, 2) => ([luma, chroma], 0),
        (false, _) => ([luma + chroma, 0], luma),
    };
    VdwImage {
        fourcc: geometry.format.fourcc().into(),
        width: geometry.width.into(),
        height: geometry.height.into(),
        num_planes: num_planes.into(),
        stride: [
            (geometry.luma_stride as u32).into(),
            if packed {
                0.into()
            } else {
                (geometry.chroma_stride as u32).into()
            },
        ],
        plane_size: plane_size.map(Le32::from),
        chroma_offset: chroma_offset.into(),
        reserved: 0.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_job() -> VdwJob {
        let src = WireGeometry::packed(WireFormat::Nv12, 320, 240);
        let dst = WireGeometry::packed(WireFormat::Yuyv, 176, 144);
        VdwJob {
            context_id: 7.into(),
            sequence: 1.into(),
            flags: VDW_JOB_F_MAP.into(),
            map_generation: 1.into(),
            map_width: 12.into(),
            map_height: 10.into(),
            crop: [0, 0, 320, 240].map(Le32::from),
            src: image_descriptor(&src, 1),
            dst: image_descriptor(&dst, 1),
            reserved: [0.into(); 2],
        }
    }

    const READABLE: usize = 128 + 12 * 10 * 4 + 320 * 240 * 3 / 2;
    const WRITABLE: usize = 16 + 176 * 144 * 2;

    #[test]
    fn a_good_job_validates() {
        let job = good_job().validate(READABLE, WRITABLE).unwrap();
        assert_eq!(job.src.chroma_start, 320 * 240);
        assert_eq!(job.map_bytes(), 480);
        assert_eq!(job.dst.total_size, 176 * 144 * 2);
    }

    #[test]
    fn every_bad_field_has_its_status() {
        type Corruption = Box<dyn Fn(&mut VdwJob)>;
        let cases: Vec<(Corruption, u32)> = vec![
            (
                Box::new(|j| j.reserved[1] = 1.into()),
                status::ERR_MALFORMED,
            ),
            (Box::new(|j| j.flags = 2.into()), status::ERR_MALFORMED),
            (
                Box::new(|j| j.src.reserved = 1.into()),
                status::ERR_MALFORMED,
            ),
            (
                Box::new(|j| j.src.fourcc = WireFormat::Nv21.fourcc().into()),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.dst.fourcc = 0.into()),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.src.width = 4104.into()),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.dst.height = 140.into()),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.src.width = 324.into()),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.src.stride[0] = 319.into()),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.src.stride[1] = u32::MAX.into()),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.src.plane_size[0] = u32::MAX.into()),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.dst.num_planes = 2.into()),
                status::ERR_MALFORMED,
            ),
            (
                Box::new(|j| j.src.num_planes = 0.into()),
                status::ERR_MALFORMED,
            ),
            (
                Box::new(|j| j.src.chroma_offset = 100.into()),
                status::ERR_MALFORMED,
            ),
            (
                Box::new(|j| j.src.plane_size[1] = 4.into()),
                status::ERR_MALFORMED,
            ),
            (
                Box::new(|j| j.dst.chroma_offset = 4.into()),
                status::ERR_MALFORMED,
            ),
            (
                Box::new(|j| j.crop = [1, 0, 320, 240].map(Le32::from)),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.crop = [0, 0, 0, 240].map(Le32::from)),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.crop = [u32::MAX, 0, 2, 2].map(Le32::from)),
                status::ERR_UNSUPPORTED,
            ),
            (
                Box::new(|j| j.map_width = 13.into()),
                status::ERR_INVALID_MAP,
            ),
            (Box::new(|j| j.flags = 0.into()), status::ERR_MALFORMED),
        ];
        for (i, (corrupt, code)) in cases.iter().enumerate() {
            let mut job = good_job();
            corrupt(&mut job);
            let err = job.validate(READABLE, WRITABLE).unwrap_err();
            assert_eq!(err.status(), *code, "case {i}: {err}");
        }
    }

    #[test]
    fn chain_lengths_must_match_exactly() {
        let job = good_job();
        for (readable, writable) in [
            (READABLE - 1, WRITABLE),
            (READABLE + 1, WRITABLE),
            (READABLE, WRITABLE - 1),
            (READABLE, WRITABLE + 4096),
            (0, 0),
        ] {
            let err = job.validate(readable, writable).unwrap_err();
            assert_eq!(err.status(), status::ERR_MALFORMED);
        }
    }

    #[test]
    fn two_plane_images_place_chroma_after_plane_0() {
        let mut job = good_job();
        let src = WireGeometry::packed(WireFormat::Nv16, 320, 240);
        job.src = image_descriptor(&src, 2);
        let job = job.validate(128 + 480 + 320 * 240 * 2, WRITABLE).unwrap();
        assert_eq!(job.src.chroma_start, 320 * 240);
        assert_eq!(job.src.geometry.format, WireFormat::Nv16);
    }
}
