//! virtio-video v3 wire protocol, byte-compatible with the Linux guest header
//! `virtio_video.h` (v3 with the `_EXT` params commands and the 44-byte config
//! holding `device_name`).
//!
//! Requests are read as a byte stream over all device-readable descriptors,
//! whatever the split; replies are built as byte vectors and written over the
//! device-writable descriptors. Every parse failure becomes a [`RequestError`]
//! carrying the response code the device answers with.

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

/// Formats. `AV1` is this device's documented extension (not in v3).
pub mod format {
    pub const NV12: u32 = 3;
    pub const YUV420: u32 = 4;
    pub const H264: u32 = 0x1002;
    pub const HEVC: u32 = 0x1003;
    pub const VP8: u32 = 0x1004;
    pub const VP9: u32 = 0x1005;
    pub const AV1: u32 = 0x1007;
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
    /// The response code this error is answered with.
    pub fn response_code(&self) -> u32 {
        match self {
            ProtocolError::Truncated
            | ProtocolError::Chain(_)
            | ProtocolError::UnknownCommand(_) => resp::ERR_INVALID_OPERATION,
            ProtocolError::QueueType(_)
            | ProtocolError::PlaneCount(_)
            | ProtocolError::TooManyEntries(_) => resp::ERR_INVALID_PARAMETER,
            ProtocolError::UnsupportedControl(_) => resp::ERR_UNSUPPORTED_CONTROL,
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
        coded_format: u32,
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
        params: Params,
        resource_type: Option<u32>,
    },
    QueryControl {
        control: u32,
        format: u32,
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
                coded_format: body.coded_format.to_native(),
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
        cmd::SET_PARAMS => Command::SetParams {
            params: read(reader)?,
            resource_type: None,
        },
        cmd::SET_PARAMS_EXT => {
            let ext: ParamsExt = read(reader)?;
            Command::SetParams {
                params: ext.base,
                resource_type: Some(ext.resource_type.to_native()),
            }
        }
        cmd::QUERY_CONTROL => {
            let body: QueryControlBody = read(reader)?;
            Command::QueryControl {
                control: known_control(body.control.to_native())?,
                format: body.format.to_native(),
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

/// A response made of a header only.
pub fn hdr_reply(type_: u32, stream_id: u32) -> Vec<u8> {
    CmdHdr {
        type_: type_.into(),
        stream_id: stream_id.into(),
    }
    .as_slice()
    .to_vec()
}

/// Appends `value`'s bytes to `out`.
pub fn push<T: ByteValued>(out: &mut Vec<u8>, value: &T) {
    out.extend_from_slice(value.as_slice());
}

/// A RESOURCE_QUEUE response.
pub fn resource_queue_reply(stream_id: u32, timestamp: u64, flags: u32, size: u32) -> Vec<u8> {
    ResourceQueueResp {
        hdr: CmdHdr {
            type_: resp::OK_RESOURCE_QUEUE.into(),
            stream_id: stream_id.into(),
        },
        timestamp: timestamp.into(),
        flags: flags.into(),
        size: size.into(),
    }
    .as_slice()
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn request(type_: u32, stream_id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = hdr_reply(type_, stream_id);
        out.extend_from_slice(body);
        out
    }

    #[rstest]
    #[case::empty(vec![], 0, resp::ERR_INVALID_OPERATION)]
    #[case::half_header(vec![0x00, 0x01, 0, 0], 0, resp::ERR_INVALID_OPERATION)]
    #[case::unknown(request(0x0142, 9, &[]), 9, resp::ERR_INVALID_OPERATION)]
    #[case::short_create(request(cmd::STREAM_CREATE, 3, &[0; 20]), 3, resp::ERR_INVALID_OPERATION)]
    #[case::bad_queue(request(cmd::QUEUE_CLEAR, 4, &[0x55, 0, 0, 0, 0, 0, 0, 0]), 4, resp::ERR_INVALID_PARAMETER)]
    #[case::bad_control(request(cmd::GET_CONTROL, 5, &[1, 0, 0, 0, 0, 0, 0, 0]), 5, resp::ERR_UNSUPPORTED_CONTROL)]
    fn malformed_requests_map_to_error_codes(
        #[case] bytes: Vec<u8>,
        #[case] stream_id: u32,
        #[case] code: u32,
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
}
