//! The job socket of QEMU's `imx8mp-dw100` model
//! (`docs/protocol-dw100-model.md`): message header, `JOB` and `RESULT`
//! payloads, and the decoding of the DW100 registers a `JOB` carries into
//! the dewarper's checked job, through the same checks as the virtqueue
//! front ([`VdwJob::check`]).

use std::mem::size_of;

use thiserror::Error as ThisError;
use vm_memory::{ByteValued, Le16, Le32, Le64};

use super::dewarp::{
    status, JobError, ValidJob, VdwImage, VdwJob, WireFormat, MAX_PLANE_SIZE, VDW_JOB_F_MAP,
};

/// `magic`: the bytes `DWM1`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"DWM1");
/// `version`.
pub const VERSION: u16 = 1;
/// `type` of a job, QEMU to daemon.
pub const TYPE_JOB: u16 = 1;
/// `type` of a result, daemon to QEMU.
pub const TYPE_RESULT: u16 = 2;
/// Registers a job carries: offsets 0x00..0x8c.
pub const REGISTER_COUNT: usize = 36;
/// Largest vertex map: a 4096x3072 destination's 257x193 vertices.
pub const MAX_MAP_BYTES: usize = 257 * 193 * 4;
/// Largest payload either side sends: a job's fixed part, the largest map
/// and two planes of the largest size the dewarper takes. A peer announcing
/// more has lost the framing.
pub const MAX_MESSAGE: usize = size_of::<JobHeader>() + MAX_MAP_BYTES + 2 * MAX_PLANE_SIZE as usize;

/// Register offsets (`dw100_regs.h`) and fields the daemon reads.
pub mod reg {
    pub const DEWARP_CTRL: usize = 0x04;
    pub const MAP_LUT_SIZE: usize = 0x0c;
    pub const SRC_IMG_SIZE: usize = 0x18;
    pub const SRC_IMG_STRIDE: usize = 0x1c;
    pub const DST_IMG_SIZE: usize = 0x40;
    pub const DST_IMG_STRIDE: usize = 0x44;
    pub const SWAP_CONTROL: usize = 0x58;
    pub const SCALE_FACTOR: usize = 0x64;
    pub const ROI_START: usize = 0x68;
    pub const BOUNDARY_PIXEL: usize = 0x6c;

    /// `DEWARP_CTRL`: source format field.
    pub const CTRL_INPUT_FORMAT_SHIFT: u32 = 4;
    /// `DEWARP_CTRL`: destination format field.
    pub const CTRL_OUTPUT_FORMAT_SHIFT: u32 = 6;
    /// `DEWARP_CTRL`: source and destination auto shadowing, hardware
    /// handshake, split line; none is modelled.
    pub const CTRL_UNMODELLED: u32 = 0xf << 8;
    /// Format field values.
    pub const FORMAT_YUV422_SP: u32 = 0;
    pub const FORMAT_YUV422_PACKED: u32 = 1;
    pub const FORMAT_YUV420_SP: u32 = 2;

    /// `SWAP_CONTROL`: byte swap of the Y nibble of the source byte.
    pub const SWAP_SRC_Y_BYTE: u32 = 1;
    /// `SWAP_CONTROL`: byte swap of the Y nibble of the destination byte.
    pub const SWAP_DST_Y_BYTE: u32 = 1 << 8;
    /// `SWAP_CONTROL`: byte swap of the UV nibble of the destination byte.
    pub const SWAP_DST_UV_BYTE: u32 = 1 << 12;

    /// `BOUNDARY_PIXEL` fields (`Y 23:16, U 15:8, V 7:0`).
    pub const BOUNDARY_FIELDS: u32 = 0x00ff_ffff;
    /// The one `BOUNDARY_PIXEL` the daemon takes: Y=0 U=V=128, black, what
    /// the dw100 driver programs and the remap engine writes outside the
    /// source.
    pub const BOUNDARY_BLACK: u32 = 0x0000_8080;
}

/// Message header (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageHeader {
    pub magic: Le32,
    pub version: Le16,
    pub kind: Le16,
    pub sequence: Le32,
    pub length: Le32,
}

/// The fixed part of a `JOB` payload (176 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct JobHeader {
    /// Registers 0x00..0x8c, index = offset / 4.
    pub regs: [Le32; REGISTER_COUNT],
    pub map_length: Le32,
    pub src_y_length: Le32,
    pub src_uv_length: Le32,
    pub dst_y_length: Le32,
    pub dst_uv_length: Le32,
    pub reserved: [Le32; 3],
}

/// The fixed part of a `RESULT` payload (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResultHeader {
    pub status: Le32,
    pub reserved0: Le32,
    pub engine_time_ns: Le64,
    pub dst_y_length: Le32,
    pub dst_uv_length: Le32,
    pub reserved1: [Le32; 2],
}

impl Default for JobHeader {
    fn default() -> Self {
        JobHeader {
            regs: [Le32::default(); REGISTER_COUNT],
            map_length: 0.into(),
            src_y_length: 0.into(),
            src_uv_length: 0.into(),
            dst_y_length: 0.into(),
            dst_uv_length: 0.into(),
            reserved: [0.into(); 3],
        }
    }
}

// SAFETY: plain little-endian integers with no padding (sizes asserted).
unsafe impl ByteValued for MessageHeader {}
// SAFETY: as above.
unsafe impl ByteValued for JobHeader {}
// SAFETY: as above.
unsafe impl ByteValued for ResultHeader {}

const _: () = assert!(size_of::<MessageHeader>() == 16);
const _: () = assert!(size_of::<JobHeader>() == 176);
const _: () = assert!(size_of::<ResultHeader>() == 32);
const _: () = assert!(MAX_MESSAGE <= u32::MAX as usize);

/// What is wrong with a message. Framing errors ([`is_framing`]) end the
/// connection; the others are answered with [`status`](Self::status).
///
/// [`is_framing`]: Self::is_framing
#[derive(Debug, ThisError, PartialEq, Eq)]
pub enum MessageError {
    #[error("magic {0:#010x} is not DWM1: framing lost")]
    Magic(u32),
    #[error("protocol version {0}, this daemon speaks version 1: framing lost")]
    Version(u16),
    #[error("message type {0} where a JOB (1) was expected: framing lost")]
    Kind(u16),
    #[error("payload of {0} bytes announced, at most {MAX_MESSAGE} exist: framing lost")]
    TooLong(u32),
    #[error("JOB payload of {0} bytes cannot hold the 176-byte job header")]
    ShortPayload(usize),
    #[error("JOB has a reserved field set")]
    Reserved,
    #[error("JOB payload is {actual} bytes, its lengths say {expected}")]
    PayloadLength { actual: usize, expected: usize },
    #[error("DEWARP_CTRL {0:#010x}: shadowing, handshake or split line (bits 8-11) set")]
    ControlBits(u32),
    #[error("DEWARP_CTRL {ctrl:#010x}: {which} format field 3 is no DW100 format")]
    Format { which: &'static str, ctrl: u32 },
    #[error(
        "SWAP_CONTROL {swap:#010x}: swap bits the dw100 driver never sets for {src:?} to {dst:?}"
    )]
    Swap {
        swap: u32,
        src: RegisterFormat,
        dst: RegisterFormat,
    },
    #[error("BOUNDARY_PIXEL {0:#010x} is not Y=0 U=V=128")]
    BoundaryPixel(u32),
    #[error("SCALE_FACTOR {0} outside 1..=128")]
    ScaleFactor(u32),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("{what} is {actual} bytes, the registers say {expected}")]
    Length {
        what: &'static str,
        actual: usize,
        expected: usize,
    },
}

impl MessageError {
    /// Whether the peer lost the framing: the connection must be closed.
    pub fn is_framing(&self) -> bool {
        matches!(
            self,
            MessageError::Magic(_)
                | MessageError::Version(_)
                | MessageError::Kind(_)
                | MessageError::TooLong(_)
        )
    }

    /// The `RESULT` status of a job refused for this reason.
    pub fn status(&self) -> u32 {
        match self {
            MessageError::Magic(_)
            | MessageError::Version(_)
            | MessageError::Kind(_)
            | MessageError::TooLong(_)
            | MessageError::ShortPayload(_)
            | MessageError::Reserved
            | MessageError::PayloadLength { .. }
            | MessageError::Length { .. } => status::ERR_MALFORMED,
            MessageError::ControlBits(_)
            | MessageError::Format { .. }
            | MessageError::Swap { .. }
            | MessageError::BoundaryPixel(_)
            | MessageError::ScaleFactor(_) => status::ERR_UNSUPPORTED,
            MessageError::Job(e) => e.status(),
        }
    }
}

impl MessageHeader {
    /// The header of a `RESULT` of `length` payload bytes.
    pub fn result(sequence: u32, length: usize) -> Self {
        MessageHeader {
            magic: MAGIC.into(),
            version: VERSION.into(),
            kind: TYPE_RESULT.into(),
            sequence: sequence.into(),
            length: u32::try_from(length).unwrap_or(u32::MAX).into(),
        }
    }

    /// The header of a `JOB` of `length` payload bytes (what the model sends).
    pub fn job(sequence: u32, length: usize) -> Self {
        MessageHeader {
            kind: TYPE_JOB.into(),
            ..Self::result(sequence, length)
        }
    }

    /// Checks the framing of a message sent to the daemon; returns the
    /// payload length.
    pub fn check_job(&self) -> Result<usize, MessageError> {
        let magic = self.magic.to_native();
        if magic != MAGIC {
            return Err(MessageError::Magic(magic));
        }
        let version = self.version.to_native();
        if version != VERSION {
            return Err(MessageError::Version(version));
        }
        let kind = self.kind.to_native();
        if kind != TYPE_JOB {
            return Err(MessageError::Kind(kind));
        }
        let length = self.length.to_native();
        match usize::try_from(length) {
            Ok(len) if len <= MAX_MESSAGE => Ok(len),
            _ => Err(MessageError::TooLong(length)),
        }
    }
}

impl ResultHeader {
    /// A successful job's result: the destination planes follow.
    pub fn ok(engine_time_ns: u64, dst_y_length: u32, dst_uv_length: u32) -> Self {
        ResultHeader {
            status: status::OK.into(),
            engine_time_ns: engine_time_ns.into(),
            dst_y_length: dst_y_length.into(),
            dst_uv_length: dst_uv_length.into(),
            ..Default::default()
        }
    }

    /// A failed job's result: nothing follows.
    pub fn error(code: u32) -> Self {
        ResultHeader {
            status: code.into(),
            ..Default::default()
        }
    }
}

/// A `DEWARP_CTRL` format field with the swap that selects among its
/// formats: what the registers say one image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterFormat {
    /// 0: YUV 4:2:2 semi-planar.
    Yuv422SemiPlanar,
    /// 1: YUV 4:2:2 packed.
    Yuv422Packed,
    /// 2: YUV 4:2:0 semi-planar.
    Yuv420SemiPlanar,
}

impl RegisterFormat {
    fn from_field(field: u32) -> Option<Self> {
        match field {
            reg::FORMAT_YUV422_SP => Some(RegisterFormat::Yuv422SemiPlanar),
            reg::FORMAT_YUV422_PACKED => Some(RegisterFormat::Yuv422Packed),
            reg::FORMAT_YUV420_SP => Some(RegisterFormat::Yuv420SemiPlanar),
            _ => None,
        }
    }

    /// The pixel format with (`swapped`) or without the format's one swap:
    /// the Y byte swap of packed images (UYVY), the UV byte swap of
    /// semi-planar ones (NV61, NV21).
    fn pixel_format(self, swapped: bool) -> WireFormat {
        match (self, swapped) {
            (RegisterFormat::Yuv422SemiPlanar, false) => WireFormat::Nv16,
            (RegisterFormat::Yuv422SemiPlanar, true) => WireFormat::Nv61,
            (RegisterFormat::Yuv422Packed, false) => WireFormat::Yuyv,
            (RegisterFormat::Yuv422Packed, true) => WireFormat::Uyvy,
            (RegisterFormat::Yuv420SemiPlanar, false) => WireFormat::Nv12,
            (RegisterFormat::Yuv420SemiPlanar, true) => WireFormat::Nv21,
        }
    }

    fn is_packed(self) -> bool {
        self == RegisterFormat::Yuv422Packed
    }

    /// The swap bit that selects the swapped format: the Y byte swap for
    /// packed images, the UV byte swap for semi-planar ones.
    fn destination_swap(self) -> u32 {
        if self.is_packed() {
            reg::SWAP_DST_Y_BYTE
        } else {
            reg::SWAP_DST_UV_BYTE
        }
    }
}

/// A job the registers describe, checked: the dewarper's job and the plane
/// lengths on the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelJob {
    pub job: ValidJob,
    /// Bytes of the source luma (or packed) plane and chroma plane.
    pub src_lengths: [usize; 2],
    /// Bytes of the destination luma (or packed) plane and chroma plane.
    pub dst_lengths: [usize; 2],
}

impl ModelJob {
    /// Bytes of the vertex map.
    pub fn map_length(&self) -> usize {
        self.job.map_bytes()
    }

    /// Bytes of both destination planes.
    pub fn dst_length(&self) -> usize {
        self.dst_lengths[0] + self.dst_lengths[1]
    }
}

/// Width 12:0 and height 28:16 of a `*_IMG_SIZE` register.
fn image_size(value: u32) -> (u32, u32) {
    (value & 0x1fff, (value >> 16) & 0x1fff)
}

/// An image as the dewarper's descriptor: each plane arrives on its own, so
/// a semi-planar image is the two-plane form, both strides the stride
/// register, each plane `stride * lines` bytes.
fn register_image(format: WireFormat, size: u32, stride: u32) -> VdwImage {
    let (width, height) = image_size(size);
    let luma = u64::from(stride) * u64::from(height);
    let plane_bytes = |bytes: u64| u32::try_from(bytes).unwrap_or(u32::MAX).into();
    let (num_planes, plane_size) = if format.is_packed() {
        (1, [plane_bytes(luma), 0.into()])
    } else {
        let chroma = luma >> format.chroma_vertical_shift();
        (2, [plane_bytes(luma), plane_bytes(chroma)])
    };
    VdwImage {
        fourcc: format.fourcc().into(),
        width: width.into(),
        height: height.into(),
        num_planes: num_planes.into(),
        stride: [stride.into(), stride.into()],
        plane_size,
        chroma_offset: 0.into(),
        reserved: 0.into(),
    }
}

/// The crop origin on one axis for a `ROI_START` field: the smallest
/// coordinate the driver's `((c << 7) * q) >> 14` turns into `roi`.
pub fn crop_origin(roi: u32, q: u32) -> u32 {
    // Sizes are checked before the crop; max(1) only keeps a division by
    // zero out of registers that fail that check.
    (roi << 7).div_ceil(q.max(1))
}

impl JobHeader {
    /// Register at `offset`.
    pub fn reg(&self, offset: usize) -> u32 {
        self.regs
            .get(offset / 4)
            .map_or(0, |value| value.to_native())
    }

    /// Sets the register at `offset` (what the model does with its snapshot).
    pub fn set_reg(&mut self, offset: usize, value: u32) {
        if let Some(slot) = self.regs.get_mut(offset / 4) {
            *slot = value.into();
        }
    }

    /// Checks the job against the `payload_length` of its message and
    /// decodes its registers into the dewarper's checked job. Order: the
    /// payload (reserved fields, lengths adding up), the registers only the
    /// model has (control bits, formats, swaps, boundary pixel, scale
    /// factor), the dewarper's checks (sizes, strides, crop, map
    /// dimensions), then the plane lengths against the registers.
    pub fn check(&self, payload_length: usize) -> Result<ModelJob, MessageError> {
        if self.reserved.iter().any(|r| r.to_native() != 0) {
            return Err(MessageError::Reserved);
        }
        let lengths = [
            self.map_length,
            self.src_y_length,
            self.src_uv_length,
            self.dst_y_length,
            self.dst_uv_length,
        ]
        .map(|l| l.to_native() as usize);
        let expected = size_of::<JobHeader>() + lengths[0] + lengths[1] + lengths[2];
        if payload_length != expected {
            return Err(MessageError::PayloadLength {
                actual: payload_length,
                expected,
            });
        }

        let ctrl = self.reg(reg::DEWARP_CTRL);
        if ctrl & reg::CTRL_UNMODELLED != 0 {
            return Err(MessageError::ControlBits(ctrl));
        }
        let format = |which, shift: u32| {
            RegisterFormat::from_field((ctrl >> shift) & 3)
                .ok_or(MessageError::Format { which, ctrl })
        };
        let src = format("source", reg::CTRL_INPUT_FORMAT_SHIFT)?;
        let dst = format("destination", reg::CTRL_OUTPUT_FORMAT_SHIFT)?;
        // The driver swaps only the source's Y bytes (UYVY: its source
        // formats have no V/U order), and one of the destination's.
        let swap = self.reg(reg::SWAP_CONTROL);
        let src_swapped = swap & reg::SWAP_SRC_Y_BYTE != 0;
        let dst_swapped = swap & dst.destination_swap() != 0;
        let known = if src.is_packed() {
            reg::SWAP_SRC_Y_BYTE
        } else {
            0
        } | dst.destination_swap();
        if swap & !known != 0 {
            return Err(MessageError::Swap { swap, src, dst });
        }
        let boundary = self.reg(reg::BOUNDARY_PIXEL);
        if boundary & reg::BOUNDARY_FIELDS != reg::BOUNDARY_BLACK {
            return Err(MessageError::BoundaryPixel(boundary));
        }
        let scale = self.reg(reg::SCALE_FACTOR);
        if !(1..=128).contains(&scale) {
            return Err(MessageError::ScaleFactor(scale));
        }

        let (src_size, dst_size) = (self.reg(reg::SRC_IMG_SIZE), self.reg(reg::DST_IMG_SIZE));
        let (src_width, src_height) = image_size(src_size);
        let (dst_width, _) = image_size(dst_size);
        // The crop whose scale factor is `scale`; the engine uses only its
        // width's scale, so its height just stays inside the source. The
        // driver scales both ROI coordinates by the width ratio `q`.
        let q = (dst_width << 7) / src_width.max(1);
        let roi = self.reg(reg::ROI_START);
        let (left, top) = (
            crop_origin(roi & 0x1fff, q),
            crop_origin((roi >> 16) & 0x1fff, q),
        );
        let width = (scale * src_width).div_ceil(128);
        let height = (scale * src_height)
            .div_ceil(128)
            .min(src_height.saturating_sub(top));
        let map_size = self.reg(reg::MAP_LUT_SIZE);
        let vdw = VdwJob {
            flags: VDW_JOB_F_MAP.into(),
            map_width: (map_size & 0x7ff).into(),
            map_height: ((map_size >> 16) & 0x7ff).into(),
            crop: [left, top, width, height].map(Le32::from),
            src: register_image(
                src.pixel_format(src_swapped),
                src_size,
                self.reg(reg::SRC_IMG_STRIDE),
            ),
            dst: register_image(
                dst.pixel_format(dst_swapped),
                dst_size,
                self.reg(reg::DST_IMG_STRIDE),
            ),
            ..Default::default()
        };
        let job = vdw.check()?;

        let plane_lengths = |image: &VdwImage| image.plane_size.map(|s| s.to_native() as usize);
        let (src_lengths, dst_lengths) = (plane_lengths(&vdw.src), plane_lengths(&vdw.dst));
        let checks = [
            ("map_length", lengths[0], job.map_bytes()),
            ("src_y_length", lengths[1], src_lengths[0]),
            ("src_uv_length", lengths[2], src_lengths[1]),
            ("dst_y_length", lengths[3], dst_lengths[0]),
            ("dst_uv_length", lengths[4], dst_lengths[1]),
        ];
        for (what, actual, expected) in checks {
            if actual != expected {
                return Err(MessageError::Length {
                    what,
                    actual,
                    expected,
                });
            }
        }
        Ok(ModelJob {
            job,
            src_lengths,
            dst_lengths,
        })
    }
}

#[cfg(test)]
mod tests;
