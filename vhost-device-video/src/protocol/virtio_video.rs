//! virtio-video v3 wire protocol, byte-compatible with the Linux guest header
//! `virtio_video.h` (v3 with the `_EXT` params commands and the 44-byte config
//! holding `device_name`).
//!
//! Requests are read as a byte stream over all device-readable descriptors,
//! whatever the split, into a [`Command`]; the device answers with a typed
//! [`Response`], whose [`Response::encode`] gives the bytes written over the
//! device-writable descriptors. Every parse failure becomes a
//! [`RequestError`] carrying the [`ErrorCode`] the device answers with.

use std::io::Read;
use std::mem::size_of;

use thiserror::Error as ThisError;
use vm_memory::{ByteValued, Le32, Le64};

/// Largest number of planes in any plane array.
pub const MAX_PLANES: usize = 8;

/// `VIRTIO_VIDEO_F_RESOURCE_GUEST_PAGES`: resources are guest-page lists.
pub const F_RESOURCE_GUEST_PAGES: u32 = 0;
/// `VIRTIO_VIDEO_F_RESOURCE_NON_CONTIG`: a plane may span several entries.
pub const F_RESOURCE_NON_CONTIG: u32 = 1;

/// Command codes.
pub mod cmd {
    pub const QUERY_CAPABILITY: u32 = 0x0100;
    pub const STREAM_CREATE: u32 = 0x0101;
    pub const STREAM_DESTROY: u32 = 0x0102;
    pub const STREAM_DRAIN: u32 = 0x0103;
    pub const RESOURCE_CREATE: u32 = 0x0104;
    pub const RESOURCE_QUEUE: u32 = 0x0105;
    pub const RESOURCE_DESTROY_ALL: u32 = 0x0106;
    pub const QUEUE_CLEAR: u32 = 0x0107;
    pub const GET_PARAMS: u32 = 0x0108;
    pub const SET_PARAMS: u32 = 0x0109;
    pub const QUERY_CONTROL: u32 = 0x010A;
    pub const GET_CONTROL: u32 = 0x010B;
    pub const SET_CONTROL: u32 = 0x010C;
    pub const GET_PARAMS_EXT: u32 = 0x010D;
    pub const SET_PARAMS_EXT: u32 = 0x010E;
}

/// Response codes.
pub mod resp {
    pub const OK_NODATA: u32 = 0x0200;
    pub const OK_QUERY_CAPABILITY: u32 = 0x0201;
    pub const OK_RESOURCE_QUEUE: u32 = 0x0202;
    pub const OK_GET_PARAMS: u32 = 0x0203;
    pub const OK_QUERY_CONTROL: u32 = 0x0204;
    pub const OK_GET_CONTROL: u32 = 0x0205;
    pub const ERR_INVALID_OPERATION: u32 = 0x0300;
    pub const ERR_OUT_OF_MEMORY: u32 = 0x0301;
    pub const ERR_INVALID_STREAM_ID: u32 = 0x0302;
    pub const ERR_INVALID_RESOURCE_ID: u32 = 0x0303;
    pub const ERR_INVALID_PARAMETER: u32 = 0x0304;
    pub const ERR_UNSUPPORTED_CONTROL: u32 = 0x0305;
}

/// Event types.
pub mod event {
    pub const ERROR: u32 = 0x0100;
    pub const DECODER_RESOLUTION_CHANGED: u32 = 0x0200;
}

/// Buffer flags of a RESOURCE_QUEUE response.
pub mod buffer_flag {
    pub const ERR: u32 = 0x0001;
    pub const EOS: u32 = 0x0002;
}

/// `virtio_video_format`: a picture format or a coded format. `Av1` is this
/// device's documented extension (not in v3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Nv12,
    Yuv420,
    H264,
    Hevc,
    Vp8,
    Vp9,
    Av1,
}

impl Format {
    /// The wire value.
    pub const fn code(self) -> u32 {
        match self {
            Format::Nv12 => 3,
            Format::Yuv420 => 4,
            Format::H264 => 0x1002,
            Format::Hevc => 0x1003,
            Format::Vp8 => 0x1004,
            Format::Vp9 => 0x1005,
            Format::Av1 => 0x1007,
        }
    }

    /// The format a wire value names, if any.
    pub fn from_code(code: u32) -> Option<Self> {
        [
            Format::Nv12,
            Format::Yuv420,
            Format::H264,
            Format::Hevc,
            Format::Vp8,
            Format::Vp9,
            Format::Av1,
        ]
        .into_iter()
        .find(|format| format.code() == code)
    }

    /// The PROFILE values a decoder offers for this codec: those whose
    /// pictures are 8-bit 4:2:0, the only ones NV12 and YUV420 carry, except
    /// H.264 Extended (data partitioning and SP/SI slices, which decoders
    /// such as FFmpeg's do not handle). v3 defines none for AV1.
    pub fn profiles(self) -> &'static [u32] {
        match self {
            Format::H264 => &[
                profile::H264_BASELINE,
                profile::H264_MAIN,
                profile::H264_HIGH,
            ],
            Format::Hevc => &[profile::HEVC_MAIN, profile::HEVC_MAIN_STILL_PICTURE],
            Format::Vp8 => &[
                profile::VP8_PROFILE0,
                profile::VP8_PROFILE1,
                profile::VP8_PROFILE2,
                profile::VP8_PROFILE3,
            ],
            Format::Vp9 => &[profile::VP9_PROFILE0],
            Format::Nv12 | Format::Yuv420 | Format::Av1 => &[],
        }
    }

    /// The levels (LEVEL control values) of this codec: v3 defines them for
    /// H.264 only.
    pub fn levels(self) -> &'static [u32] {
        match self {
            Format::H264 => &level::H264,
            _ => &[],
        }
    }
}

/// PROFILE control values (v3's `virtio_video_profile`) that
/// [`Format::profiles`] offers.
pub mod profile {
    pub const H264_BASELINE: u32 = 0x100;
    pub const H264_MAIN: u32 = 0x101;
    pub const H264_HIGH: u32 = 0x103;
    pub const HEVC_MAIN: u32 = 0x200;
    pub const HEVC_MAIN_STILL_PICTURE: u32 = 0x202;
    pub const VP8_PROFILE0: u32 = 0x300;
    pub const VP8_PROFILE1: u32 = 0x301;
    pub const VP8_PROFILE2: u32 = 0x302;
    pub const VP8_PROFILE3: u32 = 0x303;
    pub const VP9_PROFILE0: u32 = 0x400;
}

/// LEVEL control values (v3's `virtio_video_level`).
pub mod level {
    /// H.264 levels 1.0, 1.1, 1.2, 1.3, 2.0, 2.1, 2.2, 3.0, 3.1, 3.2, 4.0,
    /// 4.1, 4.2, 5.0 and 5.1, in that order.
    pub const H264: [u32; 15] = [
        0x100, 0x101, 0x102, 0x103, 0x104, 0x105, 0x106, 0x107, 0x108, 0x109, 0x10A, 0x10B, 0x10C,
        0x10D, 0x10E,
    ];
}

/// Memory types.
pub const MEM_TYPE_GUEST_PAGES: u32 = 0;
/// `VIRTIO_VIDEO_PLANES_LAYOUT_SINGLE_BUFFER`.
pub const PLANES_LAYOUT_SINGLE_BUFFER: u32 = 1;
/// `VIRTIO_VIDEO_PLANES_LAYOUT_PER_PLANE`.
pub const PLANES_LAYOUT_PER_PLANE: u32 = 2;

/// Control types.
pub mod control {
    pub const PROFILE: u32 = 2;
    pub const LEVEL: u32 = 3;
}

/// A virtio-video queue (not a virtqueue): bitstream in, pictures out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueType {
    /// `VIRTIO_VIDEO_QUEUE_TYPE_INPUT` (0x100), the V4L2 OUTPUT queue.
    Input,
    /// `VIRTIO_VIDEO_QUEUE_TYPE_OUTPUT` (0x101), the V4L2 CAPTURE queue.
    Output,
}

impl QueueType {
    /// The wire value.
    pub fn code(self) -> u32 {
        match self {
            QueueType::Input => 0x100,
            QueueType::Output => 0x101,
        }
    }

    fn from_code(code: u32) -> Result<Self, ProtocolError> {
        match code {
            0x100 => Ok(QueueType::Input),
            0x101 => Ok(QueueType::Output),
            other => Err(ProtocolError::QueueType(other)),
        }
    }
}

/// An error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `ERR_INVALID_OPERATION`.
    InvalidOperation,
    /// `ERR_OUT_OF_MEMORY`.
    OutOfMemory,
    /// `ERR_INVALID_STREAM_ID`.
    InvalidStreamId,
    /// `ERR_INVALID_RESOURCE_ID`.
    InvalidResourceId,
    /// `ERR_INVALID_PARAMETER`.
    InvalidParameter,
    /// `ERR_UNSUPPORTED_CONTROL`.
    UnsupportedControl,
}

impl ErrorCode {
    /// The wire value.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::InvalidOperation => resp::ERR_INVALID_OPERATION,
            ErrorCode::OutOfMemory => resp::ERR_OUT_OF_MEMORY,
            ErrorCode::InvalidStreamId => resp::ERR_INVALID_STREAM_ID,
            ErrorCode::InvalidResourceId => resp::ERR_INVALID_RESOURCE_ID,
            ErrorCode::InvalidParameter => resp::ERR_INVALID_PARAMETER,
            ErrorCode::UnsupportedControl => resp::ERR_UNSUPPORTED_CONTROL,
        }
    }
}

/// `virtio_video_format_range`: `min..=max` in steps of `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRange {
    pub min: u32,
    pub max: u32,
    pub step: u32,
}

/// One `virtio_video_format_frame` of a capability, with its frame rates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameCapability {
    pub width: ValueRange,
    pub height: ValueRange,
    pub rates: Vec<ValueRange>,
}

/// One `virtio_video_format_desc` of a QUERY_CAPABILITY reply, with its
/// frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatCapability {
    pub format: Format,
    /// Bit `i` set: the format goes with desc `i` of the other queue.
    pub mask: u64,
    pub planes_layout: u32,
    pub plane_align: u32,
    pub frames: Vec<FrameCapability>,
}

/// `virtio_video_crop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CropRect {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

/// `virtio_video_plane_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaneLayout {
    pub plane_size: u32,
    pub stride: u32,
}

/// `virtio_video_params`, its queue type decoded. The plane array is kept
/// whole: a SET_PARAMS' `plane_formats[0]` counts whatever `num_planes` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueParams {
    pub queue: QueueType,
    /// `None` on the wire is 0: SET_PARAMS keeps the format it has.
    pub format: Option<Format>,
    pub frame_width: u32,
    pub frame_height: u32,
    pub min_buffers: u32,
    pub max_buffers: u32,
    pub crop: CropRect,
    pub frame_rate: u32,
    pub num_planes: u32,
    pub plane_formats: [PlaneLayout; MAX_PLANES],
}

impl QueueParams {
    /// Params of `queue` with every other field 0.
    pub fn new(queue: QueueType) -> Self {
        Self {
            queue,
            format: None,
            frame_width: 0,
            frame_height: 0,
            min_buffers: 0,
            max_buffers: 0,
            crop: CropRect::default(),
            frame_rate: 0,
            num_planes: 0,
            plane_formats: [PlaneLayout::default(); MAX_PLANES],
        }
    }

    fn from_wire(params: &Params) -> Result<Self, ProtocolError> {
        let crop = &params.crop;
        Ok(Self {
            queue: QueueType::from_code(params.queue_type.to_native())?,
            format: match params.format.to_native() {
                0 => None,
                code => Some(format_of(code)?),
            },
            frame_width: params.frame_width.to_native(),
            frame_height: params.frame_height.to_native(),
            min_buffers: params.min_buffers.to_native(),
            max_buffers: params.max_buffers.to_native(),
            crop: CropRect {
                left: crop.left.to_native(),
                top: crop.top.to_native(),
                width: crop.width.to_native(),
                height: crop.height.to_native(),
            },
            frame_rate: params.frame_rate.to_native(),
            num_planes: params.num_planes.to_native(),
            plane_formats: params.plane_formats.map(|plane| PlaneLayout {
                plane_size: plane.plane_size.to_native(),
                stride: plane.stride.to_native(),
            }),
        })
    }

    fn to_wire(&self) -> Params {
        Params {
            queue_type: self.queue.code().into(),
            format: self.format.map_or(0, Format::code).into(),
            frame_width: self.frame_width.into(),
            frame_height: self.frame_height.into(),
            min_buffers: self.min_buffers.into(),
            max_buffers: self.max_buffers.into(),
            crop: Crop {
                left: self.crop.left.into(),
                top: self.crop.top.into(),
                width: self.crop.width.into(),
                height: self.crop.height.into(),
            },
            frame_rate: self.frame_rate.into(),
            num_planes: self.num_planes.into(),
            plane_formats: self.plane_formats.map(|plane| PlaneFormat {
                plane_size: plane.plane_size.into(),
                stride: plane.stride.into(),
            }),
        }
    }
}

/// A response, its header's `stream_id` given to [`Response::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `OK_NODATA`.
    Ok,
    /// An error code, header only.
    Error(ErrorCode),
    /// `OK_QUERY_CAPABILITY`: the descs of one queue.
    QueryCapability(Vec<FormatCapability>),
    /// `OK_RESOURCE_QUEUE`: a queued buffer comes back.
    ResourceQueue {
        timestamp: u64,
        /// [`buffer_flag`] bits.
        flags: u32,
        size: u32,
    },
    /// `OK_GET_PARAMS`: the 112-byte params, or with `resource_type` the
    /// 120-byte `_EXT` form.
    GetParams {
        params: QueueParams,
        resource_type: Option<u32>,
    },
    /// `OK_QUERY_CONTROL`: the values the control takes.
    QueryControl(Vec<u32>),
    /// `OK_GET_CONTROL`: the control's value.
    GetControl(u32),
}

impl Response {
    /// The response as written to the guest, its header naming `stream_id`.
    pub fn encode(&self, stream_id: u32) -> Vec<u8> {
        let hdr = |type_: u32| CmdHdr {
            type_: type_.into(),
            stream_id: stream_id.into(),
        };
        let mut out = Vec::new();
        match self {
            Response::Ok => push(&mut out, &hdr(resp::OK_NODATA)),
            Response::Error(code) => push(&mut out, &hdr(code.code())),
            Response::QueryCapability(descs) => {
                push(
                    &mut out,
                    &QueryCapabilityResp {
                        hdr: hdr(resp::OK_QUERY_CAPABILITY),
                        num_descs: count(descs.len()).into(),
                        padding: [0; 4],
                    },
                );
                for desc in descs {
                    encode_capability(&mut out, desc);
                }
            }
            Response::ResourceQueue {
                timestamp,
                flags,
                size,
            } => push(
                &mut out,
                &ResourceQueueResp {
                    hdr: hdr(resp::OK_RESOURCE_QUEUE),
                    timestamp: (*timestamp).into(),
                    flags: (*flags).into(),
                    size: (*size).into(),
                },
            ),
            Response::GetParams {
                params,
                resource_type,
            } => {
                push(&mut out, &hdr(resp::OK_GET_PARAMS));
                let base = params.to_wire();
                match resource_type {
                    Some(resource_type) => push(
                        &mut out,
                        &ParamsExt {
                            base,
                            resource_type: (*resource_type).into(),
                            padding: [0; 4],
                        },
                    ),
                    None => push(&mut out, &base),
                }
            }
            Response::QueryControl(values) => {
                push(
                    &mut out,
                    &QueryControlResp {
                        hdr: hdr(resp::OK_QUERY_CONTROL),
                        num: count(values.len()).into(),
                        padding: [0; 4],
                    },
                );
                for value in values {
                    push(&mut out, &Le32::from(*value));
                }
            }
            Response::GetControl(value) => push(
                &mut out,
                &GetControlResp {
                    hdr: hdr(resp::OK_GET_CONTROL),
                    value: (*value).into(),
                    padding: [0; 4],
                },
            ),
        }
        out
    }
}

/// A list length as the wire's 32-bit count; the device's lists are short.
fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl ValueRange {
    fn to_wire(self) -> FormatRange {
        FormatRange {
            min: self.min.into(),
            max: self.max.into(),
            step: self.step.into(),
            padding: [0; 4],
        }
    }
}

fn encode_capability(out: &mut Vec<u8>, desc: &FormatCapability) {
    push(
        out,
        &FormatDesc {
            mask: desc.mask.into(),
            format: desc.format.code().into(),
            planes_layout: desc.planes_layout.into(),
            plane_align: desc.plane_align.into(),
            num_frames: count(desc.frames.len()).into(),
        },
    );
    for frame in &desc.frames {
        push(
            out,
            &FormatFrame {
                width: frame.width.to_wire(),
                height: frame.height.to_wire(),
                num_rates: count(frame.rates.len()).into(),
                padding: [0; 4],
            },
        );
        for rate in &frame.rates {
            push(out, &rate.to_wire());
        }
    }
}

macro_rules! wire_struct {
    ($(#[$meta:meta])* $name:ident, $size:expr, { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }
        // SAFETY: repr(C) over little-endian integers and byte arrays with
        // every pad explicit: no implicit padding, any bit pattern is valid.
        unsafe impl ByteValued for $name {}
        const _: () = assert!(size_of::<$name>() == $size);
    };
}

wire_struct!(
    /// `virtio_video_config`.
    Config, 44, {
    version: Le32,
    max_caps_length: Le32,
    max_resp_length: Le32,
    device_name: [u8; 32],
});

wire_struct!(
    /// `virtio_video_cmd_hdr`, heading every request and response.
    CmdHdr, 8, { type_: Le32, stream_id: Le32 });

wire_struct!(
    /// `virtio_video_event`.
    Event, 8, { event_type: Le32, stream_id: Le32 });

wire_struct!(
    /// Body of QUERY_CAPABILITY, GET_PARAMS(_EXT), RESOURCE_DESTROY_ALL and
    /// QUEUE_CLEAR: a queue type and padding.
    QueueBody, 8, { queue_type: Le32, padding: [u8; 4] });

wire_struct!(
    /// Body of `virtio_video_stream_create`.
    StreamCreateBody, 80, {
    in_mem_type: Le32,
    out_mem_type: Le32,
    coded_format: Le32,
    padding: [u8; 4],
    /// The 64-byte tag, split because `Default` stops at 32-byte arrays.
    tag: [[u8; 32]; 2],
});

wire_struct!(
    /// Body of `virtio_video_resource_create`, before its entries.
    ResourceCreateBody, 80, {
    queue_type: Le32,
    resource_id: Le32,
    planes_layout: Le32,
    num_planes: Le32,
    plane_offsets: [Le32; MAX_PLANES],
    num_entries: [Le32; MAX_PLANES],
});

wire_struct!(
    /// `virtio_video_mem_entry`.
    MemEntry, 16, { addr: Le64, length: Le32, padding: [u8; 4] });

wire_struct!(
    /// Body of `virtio_video_resource_queue`.
    ResourceQueueBody, 56, {
    queue_type: Le32,
    resource_id: Le32,
    timestamp: Le64,
    num_data_sizes: Le32,
    data_sizes: [Le32; MAX_PLANES],
    padding: [u8; 4],
});

wire_struct!(
    /// `virtio_video_resource_queue_resp`.
    ResourceQueueResp, 24, {
    hdr: CmdHdr,
    timestamp: Le64,
    flags: Le32,
    size: Le32,
});

wire_struct!(
    /// `virtio_video_crop`.
    Crop, 16, { left: Le32, top: Le32, width: Le32, height: Le32 });

wire_struct!(
    /// `virtio_video_plane_format`.
    PlaneFormat, 8, { plane_size: Le32, stride: Le32 });

wire_struct!(
    /// `virtio_video_params` (112 bytes, GET/SET_PARAMS).
    Params, 112, {
    queue_type: Le32,
    format: Le32,
    frame_width: Le32,
    frame_height: Le32,
    min_buffers: Le32,
    max_buffers: Le32,
    crop: Crop,
    frame_rate: Le32,
    num_planes: Le32,
    plane_formats: [PlaneFormat; MAX_PLANES],
});

wire_struct!(
    /// `virtio_video_params` with the resource type tail (120 bytes,
    /// GET/SET_PARAMS_EXT).
    ParamsExt, 120, { base: Params, resource_type: Le32, padding: [u8; 4] });

wire_struct!(
    /// `virtio_video_query_capability_resp` without its descriptors.
    QueryCapabilityResp, 16, { hdr: CmdHdr, num_descs: Le32, padding: [u8; 4] });

wire_struct!(
    /// `virtio_video_format_desc`.
    FormatDesc, 24, {
    mask: Le64,
    format: Le32,
    planes_layout: Le32,
    plane_align: Le32,
    num_frames: Le32,
});

wire_struct!(
    /// `virtio_video_format_range`.
    FormatRange, 16, { min: Le32, max: Le32, step: Le32, padding: [u8; 4] });

wire_struct!(
    /// `virtio_video_format_frame` without its frame rates.
    FormatFrame, 40, {
    width: FormatRange,
    height: FormatRange,
    num_rates: Le32,
    padding: [u8; 4],
});

wire_struct!(
    /// Body of `virtio_video_query_control` with its profile/level part.
    QueryControlBody, 16, {
    control: Le32,
    padding: [u8; 4],
    format: Le32,
    padding2: [u8; 4],
});

wire_struct!(
    /// `virtio_video_query_control_resp` without its values.
    QueryControlResp, 16, { hdr: CmdHdr, num: Le32, padding: [u8; 4] });

wire_struct!(
    /// Body of `virtio_video_get_control`.
    GetControlBody, 8, { control: Le32, padding: [u8; 4] });

wire_struct!(
    /// `virtio_video_get_control_resp` with a profile or level value.
    GetControlResp, 16, { hdr: CmdHdr, value: Le32, padding: [u8; 4] });

wire_struct!(
    /// Body of `virtio_video_set_control` with a profile or level value.
    SetControlBody, 16, {
    control: Le32,
    padding: [u8; 4],
    value: Le32,
    padding2: [u8; 4],
});

/// Why a request could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum ProtocolError {
    /// The readable part of the chain ended inside the request.
    #[error("request truncated")]
    Truncated,
    /// The descriptor chain itself is unusable (bad address, overflow).
    #[error("bad descriptor chain: {0}")]
    Chain(String),
    /// An unknown command code.
    #[error("unknown command {0:#x}")]
    UnknownCommand(u32),
    /// An unknown queue type.
    #[error("unknown queue type {0:#x}")]
    QueueType(u32),
    /// An unknown format.
    #[error("unknown format {0:#x}")]
    Format(u32),
    /// A plane count beyond [`MAX_PLANES`].
    #[error("plane count {0} out of range")]
    PlaneCount(u32),
    /// More memory entries than a resource may have.
    #[error("{0} memory entries exceed the limit")]
    TooManyEntries(u64),
    /// A control the device does not know.
    #[error("unsupported control {0}")]
    UnsupportedControl(u32),
}

impl ProtocolError {
    /// The error this is answered with.
    pub fn response_code(&self) -> ErrorCode {
        match self {
            ProtocolError::Truncated
            | ProtocolError::Chain(_)
            | ProtocolError::UnknownCommand(_) => ErrorCode::InvalidOperation,
            ProtocolError::QueueType(_)
            | ProtocolError::Format(_)
            | ProtocolError::PlaneCount(_)
            | ProtocolError::TooManyEntries(_) => ErrorCode::InvalidParameter,
            ProtocolError::UnsupportedControl(_) => ErrorCode::UnsupportedControl,
        }
    }
}

/// A request that could not be parsed, with the stream it named (0 when the
/// header itself was unreadable), so the error reply can echo it.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
#[error("stream {stream_id}: {error}")]
pub struct RequestError {
    pub stream_id: u32,
    pub error: ProtocolError,
}

/// The memory entries of a resource, per memory plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneEntries {
    pub offset: u32,
    pub entries: Vec<(u64, u32)>,
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    QueryCapability(QueueType),
    StreamCreate {
        in_mem_type: u32,
        out_mem_type: u32,
        coded_format: Format,
    },
    StreamDestroy,
    StreamDrain,
    ResourceCreate {
        queue: QueueType,
        resource_id: u32,
        planes_layout: u32,
        planes: Vec<PlaneEntries>,
    },
    ResourceQueue {
        queue: QueueType,
        resource_id: u32,
        timestamp: u64,
        data_sizes: Vec<u32>,
    },
    ResourceDestroyAll(QueueType),
    QueueClear(QueueType),
    GetParams {
        queue: QueueType,
        ext: bool,
    },
    SetParams {
        params: QueueParams,
        resource_type: Option<u32>,
    },
    QueryControl {
        control: u32,
        format: Format,
    },
    GetControl(u32),
    SetControl {
        control: u32,
        value: u32,
    },
}

/// A parsed request: its header fields and command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub stream_id: u32,
    pub command: Command,
}

/// Reads one wire struct from a byte stream.
fn read<T: ByteValued + Default, R: Read>(reader: &mut R) -> Result<T, ProtocolError> {
    let mut value = T::default();
    reader
        .read_exact(value.as_mut_slice())
        .map_err(|_| ProtocolError::Truncated)?;
    Ok(value)
}

/// Parses one request from the readable byte stream `reader`.
/// `max_entries` bounds the memory entries of a RESOURCE_CREATE.
pub fn parse_request<R: Read>(reader: &mut R, max_entries: u64) -> Result<Request, RequestError> {
    let hdr: CmdHdr = read(reader).map_err(|error| RequestError {
        stream_id: 0,
        error,
    })?;
    let stream_id = hdr.stream_id.to_native();
    let command = parse_command(hdr.type_.to_native(), reader, max_entries)
        .map_err(|error| RequestError { stream_id, error })?;
    Ok(Request { stream_id, command })
}

fn queue_of<R: Read>(reader: &mut R) -> Result<QueueType, ProtocolError> {
    let body: QueueBody = read(reader)?;
    QueueType::from_code(body.queue_type.to_native())
}

fn parse_command<R: Read>(
    code: u32,
    reader: &mut R,
    max_entries: u64,
) -> Result<Command, ProtocolError> {
    Ok(match code {
        cmd::QUERY_CAPABILITY => Command::QueryCapability(queue_of(reader)?),
        cmd::STREAM_CREATE => {
            let body: StreamCreateBody = read(reader)?;
            Command::StreamCreate {
                in_mem_type: body.in_mem_type.to_native(),
                out_mem_type: body.out_mem_type.to_native(),
                coded_format: format_of(body.coded_format.to_native())?,
            }
        }
        cmd::STREAM_DESTROY => Command::StreamDestroy,
        cmd::STREAM_DRAIN => Command::StreamDrain,
        cmd::RESOURCE_CREATE => parse_resource_create(reader, max_entries)?,
        cmd::RESOURCE_QUEUE => {
            let body: ResourceQueueBody = read(reader)?;
            let count = body.num_data_sizes.to_native();
            let sizes = body
                .data_sizes
                .get(..count as usize)
                .ok_or(ProtocolError::PlaneCount(count))?;
            Command::ResourceQueue {
                queue: QueueType::from_code(body.queue_type.to_native())?,
                resource_id: body.resource_id.to_native(),
                timestamp: body.timestamp.to_native(),
                data_sizes: sizes.iter().map(|s| s.to_native()).collect(),
            }
        }
        cmd::RESOURCE_DESTROY_ALL => Command::ResourceDestroyAll(queue_of(reader)?),
        cmd::QUEUE_CLEAR => Command::QueueClear(queue_of(reader)?),
        cmd::GET_PARAMS | cmd::GET_PARAMS_EXT => Command::GetParams {
            queue: queue_of(reader)?,
            ext: code == cmd::GET_PARAMS_EXT,
        },
        cmd::SET_PARAMS => {
            let params: Params = read(reader)?;
            Command::SetParams {
                params: QueueParams::from_wire(&params)?,
                resource_type: None,
            }
        }
        cmd::SET_PARAMS_EXT => {
            let ext: ParamsExt = read(reader)?;
            Command::SetParams {
                params: QueueParams::from_wire(&ext.base)?,
                resource_type: Some(ext.resource_type.to_native()),
            }
        }
        cmd::QUERY_CONTROL => {
            let body: QueryControlBody = read(reader)?;
            Command::QueryControl {
                control: known_control(body.control.to_native())?,
                format: format_of(body.format.to_native())?,
            }
        }
        cmd::GET_CONTROL => {
            let body: GetControlBody = read(reader)?;
            Command::GetControl(known_control(body.control.to_native())?)
        }
        cmd::SET_CONTROL => {
            let body: SetControlBody = read(reader)?;
            Command::SetControl {
                control: known_control(body.control.to_native())?,
                value: body.value.to_native(),
            }
        }
        other => return Err(ProtocolError::UnknownCommand(other)),
    })
}

fn format_of(code: u32) -> Result<Format, ProtocolError> {
    Format::from_code(code).ok_or(ProtocolError::Format(code))
}

/// The decoder knows only the profile and level controls; others are
/// rejected before their (control-specific) payload is read.
fn known_control(control: u32) -> Result<u32, ProtocolError> {
    match control {
        control::PROFILE | control::LEVEL => Ok(control),
        other => Err(ProtocolError::UnsupportedControl(other)),
    }
}

fn parse_resource_create<R: Read>(
    reader: &mut R,
    max_entries: u64,
) -> Result<Command, ProtocolError> {
    let body: ResourceCreateBody = read(reader)?;
    let queue = QueueType::from_code(body.queue_type.to_native())?;
    let num_planes = body.num_planes.to_native();
    if num_planes == 0 || num_planes as usize > MAX_PLANES {
        return Err(ProtocolError::PlaneCount(num_planes));
    }
    let counts = body
        .num_entries
        .get(..num_planes as usize)
        .ok_or(ProtocolError::PlaneCount(num_planes))?;
    let total: u64 = counts.iter().map(|c| u64::from(c.to_native())).sum();
    if total == 0 || total > max_entries {
        return Err(ProtocolError::TooManyEntries(total));
    }
    let mut planes = Vec::with_capacity(counts.len());
    for (count, offset) in counts.iter().zip(body.plane_offsets.iter()) {
        let count = count.to_native() as usize;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let entry: MemEntry = read(reader)?;
            entries.push((entry.addr.to_native(), entry.length.to_native()));
        }
        planes.push(PlaneEntries {
            offset: offset.to_native(),
            entries,
        });
    }
    Ok(Command::ResourceCreate {
        queue,
        resource_id: body.resource_id.to_native(),
        planes_layout: body.planes_layout.to_native(),
        planes,
    })
}

/// Appends `value`'s bytes to `out`.
fn push<T: ByteValued>(out: &mut Vec<u8>, value: &T) {
    out.extend_from_slice(value.as_slice());
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn request(type_: u32, stream_id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push(
            &mut out,
            &CmdHdr {
                type_: type_.into(),
                stream_id: stream_id.into(),
            },
        );
        out.extend_from_slice(body);
        out
    }

    #[rstest]
    #[case::empty(vec![], 0, ErrorCode::InvalidOperation)]
    #[case::half_header(vec![0x00, 0x01, 0, 0], 0, ErrorCode::InvalidOperation)]
    #[case::unknown(request(0x0142, 9, &[]), 9, ErrorCode::InvalidOperation)]
    #[case::short_create(request(cmd::STREAM_CREATE, 3, &[0; 20]), 3, ErrorCode::InvalidOperation)]
    #[case::bad_queue(request(cmd::QUEUE_CLEAR, 4, &[0x55, 0, 0, 0, 0, 0, 0, 0]), 4, ErrorCode::InvalidParameter)]
    #[case::bad_control(request(cmd::GET_CONTROL, 5, &[1, 0, 0, 0, 0, 0, 0, 0]), 5, ErrorCode::UnsupportedControl)]
    #[case::bad_params_queue(request(cmd::SET_PARAMS, 6, Params { queue_type: 0x102.into(), ..Default::default() }.as_slice()), 6, ErrorCode::InvalidParameter)]
    fn malformed_requests_map_to_error_codes(
        #[case] bytes: Vec<u8>,
        #[case] stream_id: u32,
        #[case] code: ErrorCode,
    ) {
        let err = parse_request(&mut bytes.as_slice(), 16).unwrap_err();
        assert_eq!(err.stream_id, stream_id);
        assert_eq!(err.error.response_code(), code);
    }

    #[test]
    fn resource_create_reads_entries_after_the_fixed_part() {
        let mut body = ResourceCreateBody {
            queue_type: 0x101.into(),
            resource_id: 7.into(),
            planes_layout: PLANES_LAYOUT_SINGLE_BUFFER.into(),
            num_planes: 1.into(),
            ..Default::default()
        };
        body.num_entries[0] = 2.into();
        let mut bytes = request(cmd::RESOURCE_CREATE, 1, body.as_slice());
        for (addr, len) in [(0x1000u64, 4096u32), (0x8000, 100)] {
            push(
                &mut bytes,
                &MemEntry {
                    addr: addr.into(),
                    length: len.into(),
                    padding: [0; 4],
                },
            );
        }
        let req = parse_request(&mut bytes.as_slice(), 16).unwrap();
        let Command::ResourceCreate { planes, .. } = req.command else {
            panic!("wrong command");
        };
        assert_eq!(planes[0].entries, vec![(0x1000, 4096), (0x8000, 100)]);
        // More entries than allowed, and entries missing: both rejected.
        assert!(parse_request(&mut bytes.as_slice(), 1).is_err());
        assert!(parse_request(&mut &bytes[..bytes.len() - 1], 16).is_err());
    }

    #[test]
    fn resource_queue_rejects_too_many_sizes() {
        let body = ResourceQueueBody {
            queue_type: 0x100.into(),
            num_data_sizes: 9.into(),
            ..Default::default()
        };
        let bytes = request(cmd::RESOURCE_QUEUE, 2, body.as_slice());
        let err = parse_request(&mut bytes.as_slice(), 16).unwrap_err();
        assert_eq!(err.error, ProtocolError::PlaneCount(9));
    }

    fn le32(bytes: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
    }

    fn le64(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    // Expected values below are the guest header's (vvm_virtio_video.h and
    // docs/protocol-decoder.md), written out rather than taken from the
    // constants above, so a wrong constant fails too.

    #[rstest]
    #[case::ok(Response::Ok, 0x0200)]
    #[case::invalid_operation(Response::Error(ErrorCode::InvalidOperation), 0x0300)]
    #[case::out_of_memory(Response::Error(ErrorCode::OutOfMemory), 0x0301)]
    #[case::invalid_stream_id(Response::Error(ErrorCode::InvalidStreamId), 0x0302)]
    #[case::invalid_resource_id(Response::Error(ErrorCode::InvalidResourceId), 0x0303)]
    #[case::invalid_parameter(Response::Error(ErrorCode::InvalidParameter), 0x0304)]
    #[case::unsupported_control(Response::Error(ErrorCode::UnsupportedControl), 0x0305)]
    fn header_only_responses_are_eight_bytes(#[case] response: Response, #[case] type_: u32) {
        let bytes = response.encode(0x1234_5678);
        assert_eq!(bytes.len(), 8);
        assert_eq!(le32(&bytes, 0), type_);
        assert_eq!(le32(&bytes, 4), 0x1234_5678);
    }

    #[test]
    fn query_capability_lays_out_descs_frames_and_rates() {
        let range = |min, max, step| ValueRange { min, max, step };
        let response = Response::QueryCapability(vec![
            FormatCapability {
                format: Format::H264,
                mask: 0x8000_0000_0000_0003,
                planes_layout: 1,
                plane_align: 4,
                frames: vec![FrameCapability {
                    width: range(16, 8192, 2),
                    height: range(32, 4096, 4),
                    rates: vec![range(1, 60, 1), range(120, 240, 120)],
                }],
            },
            FormatCapability {
                format: Format::Vp9,
                mask: 1,
                planes_layout: 2,
                plane_align: 1,
                frames: vec![],
            },
        ]);
        let bytes = response.encode(3);
        // 16-byte resp, then desc 24 + frame 40 + 2 rates 16, then desc 24.
        assert_eq!(bytes.len(), 16 + 24 + 40 + 32 + 24);
        assert_eq!((le32(&bytes, 0), le32(&bytes, 4)), (0x0201, 3));
        assert_eq!(le32(&bytes, 8), 2, "num_descs");
        assert_eq!(&bytes[12..16], &[0; 4]);
        // format_desc: mask 0/8, format 8/4, planes_layout 12/4,
        // plane_align 16/4, num_frames 20/4.
        assert_eq!(le64(&bytes, 16), 0x8000_0000_0000_0003);
        assert_eq!(le32(&bytes, 24), 0x1002);
        assert_eq!(le32(&bytes, 28), 1);
        assert_eq!(le32(&bytes, 32), 4);
        assert_eq!(le32(&bytes, 36), 1, "num_frames");
        // format_frame at 40: width 0/16, height 16/16, num_rates 32/4.
        let frame = 40;
        assert_eq!(
            [0, 4, 8].map(|o| le32(&bytes, frame + o)),
            [16, 8192, 2],
            "width"
        );
        assert_eq!(
            [16, 20, 24].map(|o| le32(&bytes, frame + o)),
            [32, 4096, 4],
            "height"
        );
        assert_eq!(le32(&bytes, frame + 32), 2, "num_rates");
        let rates = frame + 40;
        assert_eq!([0, 4, 8].map(|o| le32(&bytes, rates + o)), [1, 60, 1]);
        assert_eq!(
            [16, 20, 24].map(|o| le32(&bytes, rates + o)),
            [120, 240, 120]
        );
        let second = rates + 32;
        assert_eq!(le64(&bytes, second), 1);
        assert_eq!(le32(&bytes, second + 8), 0x1005);
        assert_eq!(le32(&bytes, second + 12), 2);
        assert_eq!(le32(&bytes, second + 20), 0, "num_frames");
    }

    #[test]
    fn query_control_lists_its_values() {
        let bytes = Response::QueryControl(vec![0x100, 0x101, 0x103]).encode(7);
        assert_eq!(bytes.len(), 16 + 3 * 4);
        assert_eq!((le32(&bytes, 0), le32(&bytes, 4)), (0x0204, 7));
        assert_eq!(le32(&bytes, 8), 3, "num");
        assert_eq!(&bytes[12..16], &[0; 4]);
        assert_eq!([16, 20, 24].map(|o| le32(&bytes, o)), [0x100, 0x101, 0x103]);
    }

    #[test]
    fn get_control_carries_one_value() {
        let bytes = Response::GetControl(0x10E).encode(2);
        assert_eq!(bytes.len(), 16);
        assert_eq!((le32(&bytes, 0), le32(&bytes, 4)), (0x0205, 2));
        assert_eq!(le32(&bytes, 8), 0x10E);
        assert_eq!(&bytes[12..16], &[0; 4]);
    }

    #[test]
    fn resource_queue_reply_lays_out_timestamp_flags_and_size() {
        let bytes = Response::ResourceQueue {
            timestamp: 0x0102_0304_0506_0708,
            flags: 0x0002,
            size: 3_110_400,
        }
        .encode(9);
        assert_eq!(bytes.len(), 24);
        assert_eq!((le32(&bytes, 0), le32(&bytes, 4)), (0x0202, 9));
        assert_eq!(le64(&bytes, 8), 0x0102_0304_0506_0708);
        assert_eq!(le32(&bytes, 16), 0x0002);
        assert_eq!(le32(&bytes, 20), 3_110_400);
    }

    fn sample_params() -> QueueParams {
        let mut params = QueueParams::new(QueueType::Output);
        params.format = Some(Format::Nv12);
        params.frame_width = 1920;
        params.frame_height = 1080;
        params.min_buffers = 2;
        params.max_buffers = 32;
        params.crop = CropRect {
            left: 1,
            top: 2,
            width: 1918,
            height: 1076,
        };
        params.frame_rate = 30;
        params.num_planes = 2;
        params.plane_formats[0] = PlaneLayout {
            plane_size: 1920 * 1080,
            stride: 1920,
        };
        params.plane_formats[1] = PlaneLayout {
            plane_size: 1920 * 540,
            stride: 1920,
        };
        params.plane_formats[7] = PlaneLayout {
            plane_size: 77,
            stride: 78,
        };
        params
    }

    #[rstest]
    #[case::plain(None, 8 + 112)]
    #[case::ext(Some(0), 8 + 120)]
    fn get_params_lays_out_every_field(#[case] resource_type: Option<u32>, #[case] len: usize) {
        let bytes = Response::GetParams {
            params: sample_params(),
            resource_type,
        }
        .encode(5);
        assert_eq!(bytes.len(), len);
        assert_eq!((le32(&bytes, 0), le32(&bytes, 4)), (0x0203, 5));
        // params at 8: queue_type 0, format 4, frame_width 8, frame_height
        // 12, min_buffers 16, max_buffers 20, crop 24/16, frame_rate 40,
        // num_planes 44, plane_formats 48/64.
        let field = |offset: usize| le32(&bytes, 8 + offset);
        assert_eq!(field(0), 0x101);
        assert_eq!(field(4), 3);
        assert_eq!((field(8), field(12)), (1920, 1080));
        assert_eq!((field(16), field(20)), (2, 32));
        assert_eq!([24, 28, 32, 36].map(field), [1, 2, 1918, 1076]);
        assert_eq!((field(40), field(44)), (30, 2));
        assert_eq!((field(48), field(52)), (1920 * 1080, 1920));
        assert_eq!((field(56), field(60)), (1920 * 540, 1920));
        assert_eq!((field(48 + 7 * 8), field(52 + 7 * 8)), (77, 78));
        if resource_type.is_some() {
            assert_eq!(field(112), 0, "resource_type");
            assert_eq!(&bytes[124..128], &[0; 4]);
        }
    }

    #[test]
    fn set_params_decodes_what_get_params_encodes() {
        let params = sample_params();
        let reply = Response::GetParams {
            params: params.clone(),
            resource_type: Some(0),
        }
        .encode(4);
        let bytes = request(cmd::SET_PARAMS_EXT, 4, &reply[8..]);
        let parsed = parse_request(&mut bytes.as_slice(), 16).unwrap();
        assert_eq!(
            parsed.command,
            Command::SetParams {
                params,
                resource_type: Some(0)
            }
        );
    }

    #[rstest]
    #[case::nv12(Format::Nv12, 3)]
    #[case::yuv420(Format::Yuv420, 4)]
    #[case::h264(Format::H264, 0x1002)]
    #[case::hevc(Format::Hevc, 0x1003)]
    #[case::vp8(Format::Vp8, 0x1004)]
    #[case::vp9(Format::Vp9, 0x1005)]
    #[case::av1(Format::Av1, 0x1007)]
    fn formats_have_the_guest_header_codes(#[case] format: Format, #[case] code: u32) {
        assert_eq!(format.code(), code);
        assert_eq!(Format::from_code(code), Some(format));
    }

    #[rstest]
    #[case::zero(0)]
    #[case::fwht(0x1006)]
    #[case::mpeg2(0x1001)]
    fn unknown_formats_are_refused_where_a_format_is_required(#[case] code: u32) {
        assert_eq!(Format::from_code(code), None);
        let body = StreamCreateBody {
            coded_format: code.into(),
            ..Default::default()
        };
        let bytes = request(cmd::STREAM_CREATE, 8, body.as_slice());
        let err = parse_request(&mut bytes.as_slice(), 16).unwrap_err();
        assert_eq!(err.error, ProtocolError::Format(code));
        assert_eq!(err.error.response_code(), ErrorCode::InvalidParameter);
    }

    #[test]
    fn set_params_takes_format_zero_as_no_change_and_refuses_unknown_ones() {
        let params = |format: u32| Params {
            queue_type: 0x100.into(),
            format: format.into(),
            ..Default::default()
        };
        let parse = |format| {
            let bytes = request(cmd::SET_PARAMS, 1, params(format).as_slice());
            parse_request(&mut bytes.as_slice(), 16).map(|r| r.command)
        };
        let Ok(Command::SetParams { params: kept, .. }) = parse(0) else {
            panic!("format 0 refused");
        };
        assert_eq!(kept.format, None);
        let Ok(Command::SetParams { params: vp8, .. }) = parse(0x1004) else {
            panic!("VP8 refused");
        };
        assert_eq!(vp8.format, Some(Format::Vp8));
        assert_eq!(
            parse(0x1006).unwrap_err().error,
            ProtocolError::Format(0x1006)
        );
    }

    #[test]
    fn profile_and_level_values_are_v3s() {
        assert_eq!(Format::H264.profiles(), &[0x100, 0x101, 0x103]);
        assert_eq!(Format::Hevc.profiles(), &[0x200, 0x202]);
        assert_eq!(Format::Vp8.profiles(), &[0x300, 0x301, 0x302, 0x303]);
        assert_eq!(Format::Vp9.profiles(), &[0x400]);
        assert!(Format::Av1.profiles().is_empty());
        assert_eq!(
            Format::H264.levels(),
            (0x100..=0x10E).collect::<Vec<u32>>().as_slice()
        );
        for format in [
            Format::Hevc,
            Format::Vp8,
            Format::Vp9,
            Format::Av1,
            Format::Nv12,
        ] {
            assert!(format.levels().is_empty(), "{format:?}");
        }
    }
}
