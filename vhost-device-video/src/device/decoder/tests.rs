//! The decoder device driven through real split virtqueues in guest memory,
//! by the crate's fake guest.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rstest::rstest;
use vm_memory::{ByteValued, Bytes, GuestAddress, Le32};

use super::resource::{PlaneMap, Range, Resource};
use super::*;
use crate::engine::decode::test_streams::{ffmpeg as ffmpeg_output, h264_with_size, still_h264};
use crate::engine::decode::{
    picture_bytes, DecodeEvent, Decoder as Engine, FfmpegDecoders, Picture, Progress, Room,
    INPUT_PADDING,
};
use crate::fake_guest::{ChainId, FakeGuest, Layout, Part, Used, DATA_START, UNWRITTEN};
use crate::protocol::virtio_video::{
    buffer_flag, cmd, event, resp, CmdHdr, MemEntry, ParamsExt, ResourceCreateBody,
    ResourceQueueBody,
};

const MEM_SIZE: u64 = 256 << 20;

type Guest = FakeGuest<DecoderDevice>;

/// The decoder over a fake guest of 256 MiB with 1024-entry queues (the
/// size the guest driver asks for).
fn harness(factory: Arc<dyn DecoderFactory>) -> Guest {
    harness_with(DecoderDevice::new(factory))
}

fn harness_with(device: DecoderDevice) -> Guest {
    let layout = Layout {
        memory: MEM_SIZE,
        queue_size: 1024,
        reuse_memory: false,
    };
    FakeGuest::new(Arc::new(device), layout)
}

/// A command and its reply on the command queue.
trait Commands {
    fn command(&mut self, request: &[u8], reply_len: u32) -> Used;
}

impl Commands for Guest {
    fn command(&mut self, request: &[u8], reply_len: u32) -> Used {
        let chain = self.submit(0, &[Part::Read(request), Part::Write(reply_len)]);
        self.wait(chain)
    }
}

/// The virtio-video header of a reply.
trait Reply {
    fn hdr(&self) -> CmdHdr;
    fn code(&self) -> u32;
}

impl Reply for Used {
    fn hdr(&self) -> CmdHdr {
        let mut hdr = CmdHdr::default();
        hdr.as_mut_slice().copy_from_slice(&self.bytes[..8]);
        hdr
    }

    fn code(&self) -> u32 {
        self.hdr().type_.to_native()
    }
}

fn req(type_: u32, stream_id: u32, body: &[u8]) -> Vec<u8> {
    let hdr = CmdHdr {
        type_: type_.into(),
        stream_id: stream_id.into(),
    };
    let mut out = hdr.as_slice().to_vec();
    out.extend_from_slice(body);
    out
}

fn queue_body(queue: QueueType) -> Vec<u8> {
    let mut body = queue.code().to_le_bytes().to_vec();
    body.extend_from_slice(&[0; 4]);
    body
}

fn stream_create(coded: Format) -> Vec<u8> {
    let body = vv::StreamCreateBody {
        coded_format: coded.code().into(),
        ..Default::default()
    };
    body.as_slice().to_vec()
}

fn resource_create(queue: QueueType, id: u32, entries: &[(u64, u32)]) -> Vec<u8> {
    resource_create_planes(queue, id, vv::PLANES_LAYOUT_SINGLE_BUFFER, &[(0, entries)])
}

/// RESOURCE_CREATE with one (offset, entries) pair per plane.
fn resource_create_planes(
    queue: QueueType,
    id: u32,
    planes_layout: u32,
    planes: &[(u32, &[(u64, u32)])],
) -> Vec<u8> {
    let mut body = ResourceCreateBody {
        queue_type: queue.code().into(),
        resource_id: id.into(),
        planes_layout: planes_layout.into(),
        num_planes: (planes.len() as u32).into(),
        ..Default::default()
    };
    for (index, &(offset, entries)) in planes.iter().enumerate() {
        body.plane_offsets[index] = offset.into();
        body.num_entries[index] = (entries.len() as u32).into();
    }
    let mut out = body.as_slice().to_vec();
    for &(_, entries) in planes {
        for &(addr, len) in entries {
            let entry = MemEntry {
                addr: addr.into(),
                length: len.into(),
                padding: [0; 4],
            };
            out.extend_from_slice(entry.as_slice());
        }
    }
    out
}

fn resource_queue(queue: QueueType, id: u32, timestamp: u64, size: u32) -> Vec<u8> {
    let mut body = ResourceQueueBody {
        queue_type: queue.code().into(),
        resource_id: id.into(),
        timestamp: timestamp.into(),
        num_data_sizes: 1.into(),
        ..Default::default()
    };
    body.data_sizes[0] = Le32::from(size);
    body.as_slice().to_vec()
}

fn ffmpeg_factory() -> Arc<dyn DecoderFactory> {
    Arc::new(FfmpegDecoders::new(1).unwrap())
}

#[test]
fn config_space_is_the_44_byte_v3_config() {
    let h = harness(ffmpeg_factory());
    let config = h.device().config();
    assert_eq!(config.len(), 44);
    assert_eq!(
        u32::from_le_bytes(config[4..8].try_into().unwrap()),
        MAX_CAPS_LENGTH
    );
    assert!(config[12..].starts_with(b"vhost-device-video\0"));
    assert_eq!(h.device().features(), 0b11);
}

#[rstest]
#[case::input(QueueType::Input, 5)]
#[case::output(QueueType::Output, 2)]
fn capabilities_list_every_format(#[case] queue: QueueType, #[case] descs: u32) {
    let mut h = harness(ffmpeg_factory());
    let done = h.command(&req(cmd::QUERY_CAPABILITY, 0, &queue_body(queue)), 4096);
    assert_eq!(done.code(), resp::OK_QUERY_CAPABILITY);
    assert_eq!(done.le32(8), descs);
    // 16-byte header, then per format 24 + 40 + 16 bytes.
    assert_eq!(done.len, 16 + descs * 80);
    let first_format = done.le32(16 + 8);
    let expected = match queue {
        QueueType::Input => Format::H264.code(),
        QueueType::Output => Format::Nv12.code(),
    };
    assert_eq!(first_format, expected);
}

#[rstest]
#[case::h264_profiles(control::PROFILE, Format::H264.code(), resp::OK_QUERY_CONTROL, 3)]
#[case::h264_levels(control::LEVEL, Format::H264.code(), resp::OK_QUERY_CONTROL, 15)]
#[case::vp9_profiles(control::PROFILE, Format::Vp9.code(), resp::OK_QUERY_CONTROL, 1)]
#[case::hevc_levels(control::LEVEL, Format::Hevc.code(), resp::ERR_UNSUPPORTED_CONTROL, 0)]
#[case::av1_profiles(control::PROFILE, Format::Av1.code(), resp::ERR_UNSUPPORTED_CONTROL, 0)]
#[case::raw_format(control::PROFILE, Format::Nv12.code(), resp::ERR_INVALID_PARAMETER, 0)]
fn query_control(#[case] control: u32, #[case] coded: u32, #[case] code: u32, #[case] num: u32) {
    let mut h = harness(ffmpeg_factory());
    let body = vv::QueryControlBody {
        control: control.into(),
        format: coded.into(),
        ..Default::default()
    };
    let done = h.command(&req(cmd::QUERY_CONTROL, 0, body.as_slice()), 256);
    assert_eq!(done.code(), code);
    if code == resp::OK_QUERY_CONTROL {
        assert_eq!(done.le32(8), num);
        assert_eq!(done.len, 16 + 4 * num);
    }
}

/// Requests that must each get an error reply (echoing the stream id when
/// the header was readable) and must not disturb stream 1.
#[rstest]
#[case::unknown_command(req(0x0199, 1, &[]), 1, resp::ERR_INVALID_OPERATION)]
#[case::truncated_header(vec![0x01, 0x01], 0, resp::ERR_INVALID_OPERATION)]
#[case::truncated_stream_create(req(cmd::STREAM_CREATE, 2, &[0; 12]), 2, resp::ERR_INVALID_OPERATION)]
#[case::duplicate_stream(req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 1, resp::ERR_INVALID_STREAM_ID)]
#[case::unsupported_coded_format(req(cmd::STREAM_CREATE, 3, &stream_create(Format::Nv12)), 3, resp::ERR_INVALID_PARAMETER)]
#[case::unknown_stream(req(cmd::RESOURCE_QUEUE, 77, &resource_queue(QueueType::Input, 1, 0, 1)), 77, resp::ERR_INVALID_STREAM_ID)]
#[case::unknown_resource(req(cmd::RESOURCE_QUEUE, 1, &resource_queue(QueueType::Input, 99, 0, 1)), 1, resp::ERR_INVALID_RESOURCE_ID)]
#[case::bad_queue_type(req(cmd::QUEUE_CLEAR, 1, &[7, 7, 0, 0, 0, 0, 0, 0]), 1, resp::ERR_INVALID_PARAMETER)]
#[case::address_out_of_range(req(cmd::RESOURCE_CREATE, 1, &resource_create(QueueType::Output, 5, &[(MEM_SIZE - 16, 4096)])), 1, resp::ERR_INVALID_PARAMETER)]
#[case::zero_length_entry(req(cmd::RESOURCE_CREATE, 1, &resource_create(QueueType::Output, 5, &[(DATA_START, 0)])), 1, resp::ERR_INVALID_PARAMETER)]
#[case::entries_missing(req(cmd::RESOURCE_CREATE, 1, &resource_create(QueueType::Output, 5, &[(DATA_START, 64)])[..80]), 1, resp::ERR_INVALID_OPERATION)]
#[case::huge_entry_count({
    let mut body = ResourceCreateBody { queue_type: 0x101.into(), num_planes: 1.into(), planes_layout: 1.into(), ..Default::default() };
    body.num_entries[0] = u32::MAX.into();
    req(cmd::RESOURCE_CREATE, 1, body.as_slice())
}, 1, resp::ERR_INVALID_PARAMETER)]
#[case::too_many_planes({
    let body = ResourceCreateBody { queue_type: 0x101.into(), num_planes: 9.into(), planes_layout: 1.into(), ..Default::default() };
    req(cmd::RESOURCE_CREATE, 1, body.as_slice())
}, 1, resp::ERR_INVALID_PARAMETER)]
#[case::input_larger_than_resource(req(cmd::RESOURCE_QUEUE, 1, &resource_queue(QueueType::Input, 1, 0, 1 << 20)), 1, resp::ERR_INVALID_PARAMETER)]
#[case::set_params_raw_on_input({
    let p = vv::Params { queue_type: 0x100.into(), format: Format::Nv12.code().into(), ..Default::default() };
    req(cmd::SET_PARAMS, 1, p.as_slice())
}, 1, resp::ERR_INVALID_PARAMETER)]
#[case::set_params_ext_virtio_object({
    let p = ParamsExt { base: vv::Params { queue_type: 0x101.into(), ..Default::default() }, resource_type: 1.into(), padding: [0; 4] };
    req(cmd::SET_PARAMS_EXT, 1, p.as_slice())
}, 1, resp::ERR_INVALID_PARAMETER)]
#[case::unsupported_control(req(cmd::GET_CONTROL, 1, &[1, 0, 0, 0, 0, 0, 0, 0]), 1, resp::ERR_UNSUPPORTED_CONTROL)]
#[case::destroy_unknown_stream(req(cmd::STREAM_DESTROY, 9, &[]), 9, resp::ERR_INVALID_STREAM_ID)]
fn malformed_requests_get_error_replies(
    #[case] request: Vec<u8>,
    #[case] stream_id: u32,
    #[case] code: u32,
) {
    let mut h = harness(ffmpeg_factory());
    let created = h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    assert_eq!(created.code(), resp::OK_NODATA);
    let input = h.alloc(4096);
    let done = h.command(
        &req(
            cmd::RESOURCE_CREATE,
            1,
            &resource_create(QueueType::Input, 1, &[(input, 4096)]),
        ),
        8,
    );
    assert_eq!(done.code(), resp::OK_NODATA);

    let done = h.command(&request, 64);
    assert_eq!(
        (done.code(), done.hdr().stream_id.to_native()),
        (code, stream_id)
    );
    assert_eq!(done.len, 8);

    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Output)),
        256,
    );
    assert_eq!(done.code(), resp::OK_GET_PARAMS);
    assert_eq!(done.len, 128);
}

/// Broken descriptor chains: every one is returned, none stops the device.
#[rstest]
#[case::no_readable_part(vec![Part::Write(64)], Some(resp::ERR_INVALID_OPERATION))]
#[case::readable_out_of_range(vec![Part::RawRead(MEM_SIZE + 4096, 16), Part::Write(64)], Some(resp::ERR_INVALID_OPERATION))]
#[case::huge_readable(vec![Part::RawRead(DATA_START, 0x8000_0000), Part::Write(64)], Some(resp::ERR_INVALID_OPERATION))]
#[case::chain_over_4_gib(vec![Part::RawRead(DATA_START, u32::MAX), Part::Write(64)], None)]
#[case::writable_out_of_range(vec![Part::Read(&[0; 16]), Part::RawWrite(MEM_SIZE - 4, 64)], None)]
#[case::no_writable_part(vec![Part::Read(&[0; 16])], None)]
#[case::readable_after_writable(vec![Part::Write(64), Part::Read(&[0; 16])], None)]
#[case::zero_length_descriptors(vec![Part::RawRead(DATA_START, 0), Part::Read(&[0; 16]), Part::RawWrite(DATA_START, 0), Part::Write(64)], Some(resp::ERR_INVALID_OPERATION))]
#[case::reply_too_small(vec![Part::Read(&[0; 16]), Part::Write(4)], None)]
fn broken_chains_are_returned(#[case] parts: Vec<Part<'static>>, #[case] code: Option<u32>) {
    let mut h = harness(ffmpeg_factory());
    let head = h.submit(0, &parts);
    let done = h.wait(head);
    if let Some(code) = code {
        assert_eq!(done.code(), code);
    }
    let done = h.command(&req(cmd::STREAM_CREATE, 4, &stream_create(Format::Vp9)), 8);
    assert_eq!(done.code(), resp::OK_NODATA);
}

/// A chain whose last descriptor links back to its head never ends: it is
/// returned, and the device goes on serving.
#[test]
fn looping_chain_is_returned() {
    let mut h = harness(ffmpeg_factory());
    let request = req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264));
    let looping = h.add_looping(0, &[Part::Read(&request), Part::Write(64)]);
    h.kick(0);
    h.wait(looping);

    let done = h.command(&req(cmd::STREAM_CREATE, 2, &stream_create(Format::Vp9)), 8);
    assert_eq!(done.code(), resp::OK_NODATA);
}

/// Resources are gone after RESOURCE_DESTROY_ALL: queueing one is an error
/// naming the resource, and the stream itself still works.
#[test]
fn destroyed_resources_are_refused() {
    let mut h = harness(ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    let input = h.alloc(4096);
    let done = h.command(
        &req(
            cmd::RESOURCE_CREATE,
            1,
            &resource_create(QueueType::Input, 1, &[(input, 4096)]),
        ),
        8,
    );
    assert_eq!(done.code(), resp::OK_NODATA);
    let done = h.command(
        &req(cmd::RESOURCE_DESTROY_ALL, 1, &queue_body(QueueType::Input)),
        8,
    );
    assert_eq!(done.code(), resp::OK_NODATA);
    let done = h.command(
        &req(
            cmd::RESOURCE_QUEUE,
            1,
            &resource_queue(QueueType::Input, 1, 0, 16),
        ),
        24,
    );
    assert_eq!(
        (done.code(), done.hdr().stream_id.to_native()),
        (resp::ERR_INVALID_RESOURCE_ID, 1)
    );
    let done = h.command(
        &req(
            cmd::RESOURCE_CREATE,
            1,
            &resource_create(QueueType::Input, 1, &[(input, 4096)]),
        ),
        8,
    );
    assert_eq!(done.code(), resp::OK_NODATA);
    let done = h.command(
        &req(
            cmd::RESOURCE_QUEUE,
            1,
            &resource_queue(QueueType::Input, 1, 0, 16),
        ),
        24,
    );
    assert_eq!(done.code(), resp::OK_RESOURCE_QUEUE);
}

#[test]
fn requests_split_anywhere_read_as_one_stream() {
    let mut h = harness(ffmpeg_factory());
    let request = req(cmd::STREAM_CREATE, 6, &stream_create(Format::Hevc));
    let (a, rest) = request.split_at(3);
    let (b, c) = rest.split_at(40);
    let head = h.submit(
        0,
        &[
            Part::Read(a),
            Part::Read(b),
            Part::Read(c),
            Part::Write(3),
            Part::Write(5),
        ],
    );
    let done = h.wait(head);
    assert_eq!(done.len, 8);
    // The reply straddles both writable buffers; the second holds the rest.
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 6, &queue_body(QueueType::Input)),
        128,
    );
    assert_eq!(done.code(), resp::OK_GET_PARAMS);
    assert_eq!(done.le32(8 + 4), Format::Hevc.code());
}

#[test]
fn destroyed_stream_refuses_commands_and_returns_pending_buffers() {
    let mut h = harness(ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    h.command(&req(cmd::STREAM_CREATE, 2, &stream_create(Format::H264)), 8);
    let out = h.alloc(1 << 20);
    let done = h.command(
        &req(
            cmd::RESOURCE_CREATE,
            1,
            &resource_create(QueueType::Output, 1, &[(out, 1 << 20)]),
        ),
        8,
    );
    assert_eq!(done.code(), resp::OK_NODATA);
    let queued = h.submit(
        0,
        &[
            Part::Read(&req(
                cmd::RESOURCE_QUEUE,
                1,
                &resource_queue(QueueType::Output, 1, 0, 0),
            )),
            Part::Write(24),
        ],
    );
    assert_eq!(
        h.used_position(queued),
        None,
        "a picture buffer waits for a picture"
    );

    let destroy = h.submit(
        0,
        &[
            Part::Read(&req(cmd::STREAM_DESTROY, 1, &[])),
            Part::Write(8),
        ],
    );
    let done = h.wait(queued);
    assert_eq!(
        (done.code(), done.le32(16)),
        (resp::OK_RESOURCE_QUEUE, buffer_flag::ERR)
    );
    assert_eq!(h.wait(destroy).code(), resp::OK_NODATA);
    assert!(h.used_position(queued) < h.used_position(destroy));

    for request in [
        req(cmd::STREAM_DRAIN, 1, &[]),
        req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Input)),
        req(
            cmd::RESOURCE_QUEUE,
            1,
            &resource_queue(QueueType::Output, 1, 0, 0),
        ),
        req(cmd::STREAM_DESTROY, 1, &[]),
    ] {
        let done = h.command(&request, 64);
        assert_eq!(
            (done.code(), done.hdr().stream_id.to_native()),
            (resp::ERR_INVALID_STREAM_ID, 1)
        );
    }
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 2, &queue_body(QueueType::Output)),
        128,
    );
    assert_eq!(done.code(), resp::OK_GET_PARAMS);
}

#[rstest]
#[case::queue_clear(cmd::QUEUE_CLEAR)]
#[case::destroy_all(cmd::RESOURCE_DESTROY_ALL)]
fn clearing_returns_pending_buffers_before_the_reply(#[case] command: u32) {
    let mut h = harness(ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    let mut pending = Vec::new();
    for id in 1..=3 {
        let out = h.alloc(1 << 20);
        h.command(
            &req(
                cmd::RESOURCE_CREATE,
                1,
                &resource_create(QueueType::Output, id, &[(out, 1 << 20)]),
            ),
            8,
        );
        pending.push(h.submit(
            0,
            &[
                Part::Read(&req(
                    cmd::RESOURCE_QUEUE,
                    1,
                    &resource_queue(QueueType::Output, id, 0, 0),
                )),
                Part::Write(24),
            ],
        ));
    }
    let clear = h.submit(
        0,
        &[
            Part::Read(&req(command, 1, &queue_body(QueueType::Output))),
            Part::Write(8),
        ],
    );
    assert_eq!(h.wait(clear).code(), resp::OK_NODATA);
    let clear_pos = h.used_position(clear);
    for head in pending {
        let done = h.wait(head);
        assert_eq!(done.le32(16), buffer_flag::ERR);
        assert!(h.used_position(head) < clear_pos);
    }
    // Resources survive a clear (queued again, the buffer waits for a
    // picture) but not a destroy.
    let request = req(
        cmd::RESOURCE_QUEUE,
        1,
        &resource_queue(QueueType::Output, 1, 0, 0),
    );
    let head = h.submit(0, &[Part::Read(&request), Part::Write(24)]);
    if command == cmd::RESOURCE_DESTROY_ALL {
        assert_eq!(h.wait(head).code(), resp::ERR_INVALID_RESOURCE_ID);
    } else {
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(h.used_position(head), None);
    }
}

#[test]
fn params_describe_the_single_buffer_layout() {
    let mut h = harness(ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    let p = vv::Params {
        queue_type: 0x100.into(),
        format: Format::H264.code().into(),
        frame_width: 1918.into(),
        frame_height: 1078.into(),
        ..Default::default()
    };
    assert_eq!(
        h.command(&req(cmd::SET_PARAMS, 1, p.as_slice()), 8).code(),
        resp::OK_NODATA
    );
    let p = vv::Params {
        queue_type: 0x101.into(),
        format: Format::Yuv420.code().into(),
        ..Default::default()
    };
    assert_eq!(
        h.command(&req(cmd::SET_PARAMS, 1, p.as_slice()), 8).code(),
        resp::OK_NODATA
    );
    let done = h.command(
        &req(cmd::GET_PARAMS, 1, &queue_body(QueueType::Output)),
        120,
    );
    assert_eq!(done.len, 120);
    let params = &done.bytes[8..];
    let field = |i: usize| u32::from_le_bytes(params[i..i + 4].try_into().unwrap());
    assert_eq!(
        (field(4), field(8), field(12)),
        (Format::Yuv420.code(), 1918, 1078)
    );
    assert_eq!(field(44), 3);
    assert_eq!((field(48), field(52)), (1918 * 1078, 1918));
    assert_eq!((field(56), field(60)), (959 * 539, 959));
    assert_eq!((field(64), field(68)), (959 * 539, 959));
}

/// A whole stateful decode: bitstream in arbitrary pieces, source change,
/// picture buffers scattered over non-contiguous pages, drain with EOS.
#[test]
fn decodes_h264_into_scattered_guest_pages_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h264");
    let path = path.to_str().unwrap();
    ffmpeg_output(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=1918x1078:rate=25",
        "-frames:v",
        "8",
        "-c:v",
        "libx264",
        "-bf",
        "2",
        "-pix_fmt",
        "yuv420p",
        "-f",
        "h264",
        path,
    ]);
    let reference: Vec<String> = String::from_utf8(ffmpeg_output(&[
        "-i", path, "-pix_fmt", "nv12", "-f", "framemd5", "-",
    ]))
    .unwrap()
    .lines()
    .filter(|l| !l.starts_with('#'))
    .map(|l| l.rsplit(',').next().unwrap().trim().to_owned())
    .collect();
    let stream = std::fs::read(path).unwrap();

    let mut h = harness(ffmpeg_factory());

    let mem = h.memory().clone();
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(h.submit(1, &[Part::Write(8)]));
    }
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);

    // Bitstream: 4 input buffers reused round-robin, 10000 bytes per piece.
    let piece = 10_000u32;
    for id in 0..4 {
        let addr = h.alloc(u64::from(piece));
        h.command(
            &req(
                cmd::RESOURCE_CREATE,
                1,
                &resource_create(QueueType::Input, id, &[(addr, piece)]),
            ),
            8,
        );
    }
    let input_addr: Vec<u64> = (0..4u32)
        .map(|id| {
            let key = (QueueType::Input, id);
            let streams = h.device().streams();
            let st = streams[&1].lock();
            st.resources[&key].ranges[0].0
        })
        .collect();
    let mut inputs = Vec::new();
    for (i, chunk) in stream.chunks(piece as usize).enumerate() {
        let id = (i % 4) as u32;
        if i >= 4 {
            let head = inputs[i - 4];
            h.wait(head);
        }
        mem.write_slice(chunk, GuestAddress(input_addr[id as usize]))
            .unwrap();
        inputs.push(h.submit(
            0,
            &[
                Part::Read(&req(
                    cmd::RESOURCE_QUEUE,
                    1,
                    &resource_queue(QueueType::Input, id, 1000 + i as u64, chunk.len() as u32),
                )),
                Part::Write(24),
            ],
        ));
    }

    // Source change: the event, then the new layout.
    let head = events[0];
    let event = h.wait(head);
    assert_eq!(
        (event.le32(0), event.le32(4)),
        (event::DECODER_RESOLUTION_CHANGED, 1)
    );
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Output)),
        128,
    );
    let size = done.le32(8 + 48) + done.le32(8 + 56);
    assert_eq!((done.le32(8 + 8), done.le32(8 + 12)), (1918, 1078));

    // Picture buffers: pages handed out in reverse order.
    let pages = u64::from(size).div_ceil(4096);
    let mut outputs = HashMap::new();
    for id in 0..3u32 {
        let base = h.alloc(pages * 4096);
        let entries: Vec<(u64, u32)> = (0..pages).rev().map(|p| (base + p * 4096, 4096)).collect();
        h.command(
            &req(
                cmd::RESOURCE_CREATE,
                1,
                &resource_create(QueueType::Output, id, &entries),
            ),
            8,
        );
        outputs.insert(id, entries);
    }
    let queue_output = |h: &mut Guest, id: u32| {
        h.submit(
            0,
            &[
                Part::Read(&req(
                    cmd::RESOURCE_QUEUE,
                    1,
                    &resource_queue(QueueType::Output, id, 0, 0),
                )),
                Part::Write(24),
            ],
        )
    };
    let mut waiting: Vec<(u32, ChainId)> =
        (0..3).map(|id| (id, queue_output(&mut h, id))).collect();
    let drain = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
    );

    let mut md5s = Vec::new();
    let mut stamps = Vec::new();
    loop {
        let (id, head) = waiting.remove(0);
        let done = h.wait(head);
        assert_eq!(done.code(), resp::OK_RESOURCE_QUEUE);
        let flags = done.le32(16);
        if flags & buffer_flag::EOS != 0 {
            assert_eq!(done.le32(20), 0);
            break;
        }
        assert_eq!(flags, 0, "picture {} errored", md5s.len());
        let mut bytes = Vec::new();
        for &(addr, len) in &outputs[&id] {
            let mut page = vec![0u8; len as usize];
            mem.read_slice(&mut page, GuestAddress(addr)).unwrap();
            bytes.extend_from_slice(&page);
        }
        bytes.truncate(size as usize);
        md5s.push(
            Md5::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
        stamps.push(u64::from_le_bytes(done.bytes[8..16].try_into().unwrap()));
        waiting.push((id, queue_output(&mut h, id)));
    }
    assert_eq!(md5s, reference);
    assert!(
        stamps.iter().all(|t| (1000..1000 + 100).contains(t)),
        "{stamps:?}"
    );
    let done = h.wait(drain);
    assert_eq!(done.code(), resp::OK_NODATA);
    for head in inputs {
        assert_eq!(h.wait(head).le32(16), 0);
    }
}

#[test]
fn drain_of_an_empty_stream_returns_eos_then_the_reply() {
    let mut h = harness(ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 3, &stream_create(Format::Vp8)), 8);
    let drain = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 3, &[])), Part::Write(8)],
    );
    // A second drain while one is pending is refused at once.
    let done = h.command(&req(cmd::STREAM_DRAIN, 3, &[]), 8);
    assert_eq!(done.code(), resp::ERR_INVALID_OPERATION);
    assert_eq!(h.used_position(drain), None, "the drain waits for a buffer");
    let out = h.alloc(4096);
    h.command(
        &req(
            cmd::RESOURCE_CREATE,
            3,
            &resource_create(QueueType::Output, 1, &[(out, 4096)]),
        ),
        8,
    );
    let eos = h.submit(
        0,
        &[
            Part::Read(&req(
                cmd::RESOURCE_QUEUE,
                3,
                &resource_queue(QueueType::Output, 1, 0, 0),
            )),
            Part::Write(24),
        ],
    );
    let done = h.wait(eos);
    assert_eq!((done.le32(16), done.le32(20)), (buffer_flag::EOS, 0));
    assert_eq!(h.wait(drain).code(), resp::OK_NODATA);
    assert!(h.used_position(eos) < h.used_position(drain));
}

#[test]
fn garbage_bitstream_neither_crashes_nor_blocks_the_stream() {
    let mut h = harness(ffmpeg_factory());
    let mem = h.memory().clone();
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    let addr = h.alloc(65536);
    let garbage: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    mem.write_slice(&garbage, GuestAddress(addr)).unwrap();
    h.command(
        &req(
            cmd::RESOURCE_CREATE,
            1,
            &resource_create(QueueType::Input, 1, &[(addr, 65536)]),
        ),
        8,
    );
    for ts in 0..3 {
        let request = req(
            cmd::RESOURCE_QUEUE,
            1,
            &resource_queue(QueueType::Input, 1, ts, 65536),
        );
        let done = h.command(&request, 24);
        assert_eq!(done.code(), resp::OK_RESOURCE_QUEUE);
        assert_eq!(done.bytes[8..16], ts.to_le_bytes());
    }
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Input)),
        128,
    );
    assert_eq!(done.code(), resp::OK_GET_PARAMS);
}

/// Byte offsets at which ffprobe's parser starts each access unit.
fn access_units(path: &str) -> Vec<usize> {
    let out = Process::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=pos",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().trim_end_matches(',').parse().unwrap())
        .collect()
}

/// The first format is announced once the stream header is decoded, before
/// any picture is out: with B-frames the decoder holds pictures back for
/// several inputs, while a client waits for the event before it allocates
/// picture buffers.
#[test]
fn format_is_announced_before_reordered_pictures_come_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.h264");
    let path = path.to_str().unwrap();
    ffmpeg_output(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=176x144:rate=25",
        "-frames:v",
        "10",
        "-c:v",
        "libx264",
        "-bf",
        "2",
        "-pix_fmt",
        "yuv420p",
        "-f",
        "h264",
        path,
    ]);
    let stream = std::fs::read(path).unwrap();
    let units = access_units(path);
    assert!(units.len() >= 3, "{units:?}");

    let mut h = harness(ffmpeg_factory());

    let ev = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    let size = 176 * 144 * 3 / 2;
    let out = h.alloc(size);
    h.command(
        &req(
            cmd::RESOURCE_CREATE,
            1,
            &resource_create(QueueType::Output, 1, &[(out, size as u32)]),
        ),
        8,
    );
    let pic = h.submit(
        0,
        &[
            Part::Read(&req(
                cmd::RESOURCE_QUEUE,
                1,
                &resource_queue(QueueType::Output, 1, 0, 0),
            )),
            Part::Write(24),
        ],
    );
    // The first two access units, one per bitstream buffer.
    for (id, range) in [(1u32, units[0]..units[1]), (2, units[1]..units[2])] {
        let unit = &stream[range];
        let addr = h.put(unit);
        h.command(
            &req(
                cmd::RESOURCE_CREATE,
                1,
                &resource_create(QueueType::Input, id, &[(addr, unit.len() as u32)]),
            ),
            8,
        );
        let done = h.command(
            &req(
                cmd::RESOURCE_QUEUE,
                1,
                &resource_queue(QueueType::Input, id, u64::from(id), unit.len() as u32),
            ),
            24,
        );
        assert_eq!((done.code(), done.le32(16)), (resp::OK_RESOURCE_QUEUE, 0));
    }
    assert_eq!(h.wait(ev).le32(0), event::DECODER_RESOLUTION_CHANGED);
    assert_eq!(h.used_position(pic), None, "no picture is out yet");
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Output)),
        128,
    );
    assert_eq!((done.le32(8 + 8), done.le32(8 + 12)), (176, 144));
}

/// Buffers queued before the first picture are used when the picture has
/// the size the guest set (the flow of clients that allocate before the
/// source-change event and only reallocate on a real change).
#[test]
fn buffers_queued_for_the_announced_size_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.ivf");
    let path = path.to_str().unwrap();
    ffmpeg_output(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=176x144:rate=25",
        "-frames:v",
        "2",
        "-c:v",
        "libvpx",
        "-auto-alt-ref",
        "0",
        "-f",
        "ivf",
        path,
    ]);
    let ivf = std::fs::read(path).unwrap();
    let first_len = u32::from_le_bytes(ivf[32..36].try_into().unwrap()) as usize;
    let first = &ivf[44..44 + first_len];

    let mut h = harness(ffmpeg_factory());

    let ev = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::Vp8)), 8);
    let p = vv::Params {
        queue_type: 0x100.into(),
        format: Format::Vp8.code().into(),
        frame_width: 176.into(),
        frame_height: 144.into(),
        ..Default::default()
    };
    h.command(
        &req(
            cmd::SET_PARAMS_EXT,
            1,
            ParamsExt {
                base: p,
                ..Default::default()
            }
            .as_slice(),
        ),
        8,
    );
    let out = h.alloc(176 * 144 * 3 / 2);
    h.command(
        &req(
            cmd::RESOURCE_CREATE,
            1,
            &resource_create(QueueType::Output, 1, &[(out, 176 * 144 * 3 / 2)]),
        ),
        8,
    );
    let pic = h.submit(
        0,
        &[
            Part::Read(&req(
                cmd::RESOURCE_QUEUE,
                1,
                &resource_queue(QueueType::Output, 1, 0, 0),
            )),
            Part::Write(24),
        ],
    );
    let input = h.put(first);
    h.command(
        &req(
            cmd::RESOURCE_CREATE,
            1,
            &resource_create(QueueType::Input, 1, &[(input, first.len() as u32)]),
        ),
        8,
    );
    h.command(
        &req(
            cmd::RESOURCE_QUEUE,
            1,
            &resource_queue(QueueType::Input, 1, 42, first.len() as u32),
        ),
        24,
    );
    assert_eq!(h.wait(ev).le32(0), event::DECODER_RESOLUTION_CHANGED);
    let done = h.wait(pic);
    assert_eq!((done.le32(16), done.bytes[8]), (0, 42));
}

#[rstest]
#[case::h264_profile(Format::H264, control::PROFILE, 0x103, resp::OK_NODATA)]
#[case::h264_level(Format::H264, control::LEVEL, 0x10B, resp::OK_NODATA)]
#[case::unlisted_profile(Format::H264, control::PROFILE, 0x104, resp::ERR_INVALID_PARAMETER)]
#[case::vp8_level(Format::Vp8, control::LEVEL, 0x100, resp::ERR_UNSUPPORTED_CONTROL)]
fn controls_are_set_and_read_back(
    #[case] coded: Format,
    #[case] control_type: u32,
    #[case] value: u32,
    #[case] code: u32,
) {
    let mut h = harness(ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 5, &stream_create(coded)), 8);
    let get = req(
        cmd::GET_CONTROL,
        5,
        &[control_type.to_le_bytes(), [0; 4]].concat(),
    );
    let before = h.command(&get, 16);
    let set = vv::SetControlBody {
        control: control_type.into(),
        value: value.into(),
        ..Default::default()
    };
    let done = h.command(&req(cmd::SET_CONTROL, 5, set.as_slice()), 8);
    assert_eq!(done.code(), code);
    let after = h.command(&get, 16);
    match code {
        resp::OK_NODATA => {
            assert_eq!(after.code(), resp::OK_GET_CONTROL);
            assert_eq!(after.le32(8), value);
        }
        resp::ERR_UNSUPPORTED_CONTROL => assert_eq!(after.code(), code),
        _ => assert_eq!(after.le32(8), before.le32(8)),
    }
}

#[test]
fn input_clear_cancels_a_pending_drain_before_its_reply() {
    let mut h = harness(ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    let drain = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
    );
    let clear = h.submit(
        0,
        &[
            Part::Read(&req(cmd::QUEUE_CLEAR, 1, &queue_body(QueueType::Input))),
            Part::Write(8),
        ],
    );
    assert_eq!(h.wait(clear).code(), resp::OK_NODATA);
    assert_eq!(h.wait(drain).code(), resp::ERR_INVALID_OPERATION);
    assert!(h.used_position(drain) < h.used_position(clear));
    // The stream drains normally afterwards.
    let out = h.alloc(4096);
    h.command(
        &req(
            cmd::RESOURCE_CREATE,
            1,
            &resource_create(QueueType::Output, 1, &[(out, 4096)]),
        ),
        8,
    );
    h.submit(
        0,
        &[
            Part::Read(&req(
                cmd::RESOURCE_QUEUE,
                1,
                &resource_queue(QueueType::Output, 1, 0, 0),
            )),
            Part::Write(24),
        ],
    );
    assert_eq!(
        h.command(&req(cmd::STREAM_DRAIN, 1, &[]), 8).code(),
        resp::OK_NODATA
    );
}

/// What a [`FakeDecoders`] decoder does with each input byte.
#[derive(Clone, Copy, Default)]
struct FakeSettings {
    /// The byte is a unit that makes a 16x16 picture (else nothing).
    pictures: bool,
    /// Time one unit takes.
    unit_time: Duration,
    /// `run` waits for `FakeShared::release`, ignoring the cancel flag, as
    /// a decoder busy with one long unit.
    stuck: bool,
    /// Pictures the decoder says it keeps inside.
    held: u32,
}

/// What the fake decoders of one test share.
#[derive(Default)]
struct FakeShared {
    /// Pictures alive now, and the most ever alive at once.
    alive: AtomicUsize,
    most_alive: AtomicUsize,
    /// Units decoded, all decoders together.
    units: AtomicUsize,
    /// `run` calls entered, and the release of stuck ones.
    runs: AtomicUsize,
    release: AtomicBool,
}

/// An engine whose every input byte is one bitstream unit; pictures are
/// numbered in decoding order, the number their timestamp and the value of
/// their luma bytes.
#[derive(Clone, Default)]
struct FakeDecoders {
    settings: FakeSettings,
    shared: Arc<FakeShared>,
}

impl FakeDecoders {
    fn new(settings: FakeSettings) -> Self {
        Self {
            settings,
            shared: Arc::default(),
        }
    }
}

impl DecoderFactory for FakeDecoders {
    fn supports(&self, _: CodedFormat) -> bool {
        true
    }

    fn create(
        &self,
        _: CodedFormat,
    ) -> Result<Box<dyn Engine>, crate::engine::decode::EngineError> {
        Ok(Box::new(FakeDecoder {
            factory: self.clone(),
            pending: 0,
            serial: 0,
            header: false,
        }))
    }
}

struct FakeDecoder {
    factory: FakeDecoders,
    pending: usize,
    serial: u64,
    header: bool,
}

impl Engine for FakeDecoder {
    fn feed(
        &mut self,
        data: Vec<u8>,
        _timestamp: u64,
    ) -> Result<(), crate::engine::decode::EngineError> {
        self.pending += data.len();
        self.header = true;
        Ok(())
    }

    fn start_flush(&mut self) {}

    fn run(
        &mut self,
        out: &mut Vec<DecodeEvent>,
        room: Room,
        cancel: &AtomicBool,
    ) -> Result<Progress, crate::engine::decode::EngineError> {
        let FakeDecoders { settings, shared } = &self.factory;
        shared.runs.fetch_add(1, Ordering::SeqCst);
        while settings.stuck && !shared.release.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (start, mut bytes) = (out.len(), 0);
        loop {
            if out.len() - start >= room.events || bytes >= room.bytes {
                return Ok(Progress::Full);
            }
            if cancel.load(Ordering::Relaxed) {
                return Ok(Progress::Cancelled);
            }
            if self.pending == 0 {
                return Ok(Progress::Idle);
            }
            self.pending -= 1;
            shared.units.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(settings.unit_time);
            if settings.pictures {
                out.push(DecodeEvent::Picture(Box::new(FakePicture::new(
                    self.serial,
                    shared.clone(),
                ))));
                bytes += picture_bytes(16, 16);
                self.serial += 1;
            }
        }
    }

    fn reset(&mut self) -> Result<(), crate::engine::decode::EngineError> {
        self.pending = 0;
        Ok(())
    }

    fn header_size(&self) -> Option<(u32, u32)> {
        self.header.then_some((16, 16))
    }

    fn max_held_pictures(&self) -> u32 {
        self.factory.settings.held
    }
}

struct FakePicture {
    serial: u64,
    y: Vec<u8>,
    uv: Vec<u8>,
    shared: Arc<FakeShared>,
}

impl FakePicture {
    fn new(serial: u64, shared: Arc<FakeShared>) -> Self {
        let alive = shared.alive.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_alive.fetch_max(alive, Ordering::SeqCst);
        Self {
            serial,
            y: vec![serial as u8; 256],
            uv: vec![128; 128],
            shared,
        }
    }
}

impl Drop for FakePicture {
    fn drop(&mut self) {
        self.shared.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Picture for FakePicture {
    fn size(&self) -> (u32, u32) {
        (16, 16)
    }

    fn timestamp(&self) -> u64 {
        self.serial
    }

    fn planes(&self) -> Option<crate::engine::decode::SourcePlanes<'_>> {
        Some(crate::engine::decode::SourcePlanes::SemiPlanar {
            y: (&self.y, 16),
            uv: (&self.uv, 16),
        })
    }

    fn is_corrupt(&self) -> bool {
        false
    }
}

/// Bytes of a 16x16 NV12 picture.
const FAKE_PICTURE: u32 = 16 * 16 * 3 / 2;

fn create(h: &mut Guest, stream: u32, queue: QueueType, id: u32, len: u32) -> u64 {
    let addr = h.alloc(u64::from(len));
    let done = h.command(
        &req(
            cmd::RESOURCE_CREATE,
            stream,
            &resource_create(queue, id, &[(addr, len)]),
        ),
        8,
    );
    assert_eq!(done.code(), resp::OK_NODATA);
    addr
}

fn queue(h: &mut Guest, stream: u32, queue: QueueType, id: u32, size: u32) -> ChainId {
    h.submit(
        0,
        &[
            Part::Read(&req(
                cmd::RESOURCE_QUEUE,
                stream,
                &resource_queue(queue, id, 7, size),
            )),
            Part::Write(24),
        ],
    )
}

/// Sets the coded size of stream `stream`, so the device expects
/// `width`x`height` pictures before the decoder has said so.
fn set_coded_size(h: &mut Guest, stream: u32, width: u32, height: u32) {
    let p = vv::Params {
        queue_type: 0x100.into(),
        frame_width: width.into(),
        frame_height: height.into(),
        ..Default::default()
    };
    let done = h.command(&req(cmd::SET_PARAMS, stream, p.as_slice()), 8);
    assert_eq!(done.code(), resp::OK_NODATA);
}

/// Waits until `f()` holds, for up to `seconds`.
fn eventually(seconds: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// One bitstream buffer holding 1,000 pictures, and two picture buffers:
/// decoding stops while the pictures waiting for a buffer reach the cap (or
/// what the memory budget holds) and goes on as buffers come back. Every
/// picture reaches the guest, in order, then EOS.
#[rstest]
#[case::cap(DEFAULT_MEMORY_LIMIT, MAX_READY_PICTURES)]
#[case::budget_for_five(0, 5)]
fn one_buffer_of_many_pictures_waits_for_buffers_and_loses_none(
    #[case] limit: u64,
    #[case] most_ready: usize,
) {
    const PICTURES: u32 = 1000;
    let resource = (size_of::<Resource>() + size_of::<Range>()) as u64;
    let limit = if limit == 0 {
        // Three resources, the bitstream copy, the one picture the decoder
        // holds, and `most_ready` pictures.
        3 * resource
            + (u64::from(PICTURES) + INPUT_PADDING as u64)
            + (1 + most_ready as u64) * u64::from(FAKE_PICTURE)
    } else {
        limit
    };
    let engine = FakeDecoders::new(FakeSettings {
        pictures: true,
        held: 1,
        ..Default::default()
    });
    let budget = MemoryBudget::new(limit);
    let device = DecoderDevice::with_budget(Arc::new(engine.clone()), budget.clone());
    let mut h = harness_with(device);
    let mem = h.memory().clone();
    let ev = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    set_coded_size(&mut h, 1, 16, 16);
    create(&mut h, 1, QueueType::Input, 0, PICTURES);
    let outputs = [
        create(&mut h, 1, QueueType::Output, 0, FAKE_PICTURE),
        create(&mut h, 1, QueueType::Output, 1, FAKE_PICTURE),
    ];
    let input = queue(&mut h, 1, QueueType::Input, 0, PICTURES);
    let done = h.wait(input);
    assert_eq!((done.code(), done.le32(16)), (resp::OK_RESOURCE_QUEUE, 0));
    assert_eq!(h.wait(ev).le32(0), event::DECODER_RESOLUTION_CHANGED);
    assert!(eventually(5, || engine.shared.alive.load(Ordering::SeqCst)
        == most_ready));

    let mut waiting: VecDeque<(u32, ChainId)> = (0..2)
        .map(|id| (id, queue(&mut h, 1, QueueType::Output, id, 0)))
        .collect();
    for serial in 0..PICTURES {
        let (id, head) = waiting.pop_front().unwrap();
        let done = h.wait(head);
        assert_eq!(done.code(), resp::OK_RESOURCE_QUEUE, "picture {serial}");
        assert_eq!(
            (done.le32(16), done.bytes[8..16].to_vec()),
            (0, u64::from(serial).to_le_bytes().to_vec()),
            "picture {serial}"
        );
        let luma: u8 = mem.read_obj(GuestAddress(outputs[id as usize])).unwrap();
        assert_eq!(luma, serial as u8);
        waiting.push_back((id, queue(&mut h, 1, QueueType::Output, id, 0)));
    }
    let drain = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
    );
    let (_, head) = waiting.pop_front().unwrap();
    assert_eq!(h.wait(head).le32(16), buffer_flag::EOS);
    assert_eq!(h.wait(drain).code(), resp::OK_NODATA);
    assert_eq!(
        engine.shared.most_alive.load(Ordering::SeqCst),
        most_ready,
        "pictures held at once"
    );
    h.command(&req(cmd::STREAM_DESTROY, 1, &[]), 8);
    assert!(eventually(5, || budget.used() == 0), "{}", budget.used());
}

/// After a layout change, picture buffers the guest queues before it has
/// read the new layout (GET_PARAMS of the OUTPUT queue) are for the old
/// one: a driver learns of the change only when it handles the event, and
/// until then queues what its client gives it. They are not written even
/// when the new picture fits, and come back at the driver's QUEUE_CLEAR;
/// the picture goes into the first buffer queued after the GET_PARAMS.
#[test]
fn buffers_queued_before_the_new_layout_is_read_are_not_used() {
    let engine = FakeDecoders::new(FakeSettings {
        pictures: true,
        ..Default::default()
    });
    let mut h = harness(Arc::new(engine.clone()));
    let ev = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    // Buffers of the default 640x480 layout, which a 16x16 picture fits.
    let old_layout = 640 * 480 * 3 / 2;
    let addrs = [
        create(&mut h, 1, QueueType::Output, 0, old_layout),
        create(&mut h, 1, QueueType::Output, 1, old_layout),
    ];
    for addr in addrs {
        h.memory().write_obj(UNWRITTEN, GuestAddress(addr)).unwrap();
    }
    let before_event = queue(&mut h, 1, QueueType::Output, 0, 0);
    create(&mut h, 1, QueueType::Input, 0, 1);
    let input = queue(&mut h, 1, QueueType::Input, 0, 1);
    assert_eq!(h.wait(input).le32(16), 0);
    assert_eq!(h.wait(ev).le32(0), event::DECODER_RESOLUTION_CHANGED);
    assert!(eventually(5, || engine.shared.alive.load(Ordering::SeqCst) == 1));

    // The driver has not handled the event yet.
    let before_read = queue(&mut h, 1, QueueType::Output, 1, 0);
    assert!(
        !eventually(1, || h.used_position(before_read).is_some()),
        "a buffer queued before the new layout was read took a picture"
    );
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Output)),
        128,
    );
    assert_eq!((done.le32(8 + 8), done.le32(8 + 12)), (16, 16));
    assert_eq!(h.used_position(before_read), None);
    let cleared = h.command(&req(cmd::QUEUE_CLEAR, 1, &queue_body(QueueType::Output)), 8);
    assert_eq!(cleared.code(), resp::OK_NODATA);
    for chain in [before_event, before_read] {
        let done = h.wait(chain);
        assert_eq!(
            (done.code(), done.le32(16), done.le32(20)),
            (resp::OK_RESOURCE_QUEUE, buffer_flag::ERR, 0)
        );
    }
    for addr in addrs {
        let luma: u8 = h.memory().read_obj(GuestAddress(addr)).unwrap();
        assert_eq!(luma, UNWRITTEN, "nothing was written");
    }

    let after_read = queue(&mut h, 1, QueueType::Output, 1, 0);
    let done = h.wait(after_read);
    assert_eq!(
        (done.le32(16), done.le32(20), done.bytes[8..16].to_vec()),
        (0, FAKE_PICTURE, 0u64.to_le_bytes().to_vec())
    );
}

/// A stream whose input is cleared, or that is destroyed, stops decoding at
/// the next bitstream unit, not at the end of its buffer (here 100 s of
/// work); its thread ends at once.
#[test]
fn clearing_or_destroying_a_stream_stops_its_decoding_at_once() {
    let engine = FakeDecoders::new(FakeSettings {
        unit_time: Duration::from_millis(1),
        ..Default::default()
    });
    let device = DecoderDevice::new(Arc::new(engine.clone()));
    let mut h = harness_with(device);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    create(&mut h, 1, QueueType::Input, 0, 100_000);
    let units = || engine.shared.units.load(Ordering::SeqCst);
    queue(&mut h, 1, QueueType::Input, 0, 100_000);
    assert!(eventually(5, || units() > 0));
    let done = h.command(&req(cmd::QUEUE_CLEAR, 1, &queue_body(QueueType::Input)), 8);
    assert_eq!(done.code(), resp::OK_NODATA);
    std::thread::sleep(Duration::from_millis(20));
    let after_clear = units();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        units() <= after_clear + 1,
        "decoding went on after the clear"
    );

    queue(&mut h, 1, QueueType::Input, 0, 100_000);
    assert!(eventually(5, || units() > after_clear + 1));
    h.command(&req(cmd::STREAM_DESTROY, 1, &[]), 8);
    assert!(
        eventually(1, || h.device().live_workers.load(Ordering::SeqCst) == 0),
        "the thread of a destroyed stream is still decoding"
    );
}

/// `MAX_STREAMS` counts decoding threads: streams destroyed while their
/// decoder is stuck in a long unit still count until their thread ends, so
/// a create/destroy storm cannot pile up threads.
#[test]
fn the_stream_limit_counts_threads_still_decoding() {
    let engine = FakeDecoders::new(FakeSettings {
        stuck: true,
        ..Default::default()
    });
    let device = DecoderDevice::new(Arc::new(engine.clone()));
    let mut h = harness_with(device);
    for id in 1..=MAX_STREAMS as u32 {
        let done = h.command(
            &req(cmd::STREAM_CREATE, id, &stream_create(Format::H264)),
            8,
        );
        assert_eq!(done.code(), resp::OK_NODATA);
        create(&mut h, id, QueueType::Input, 0, 16);
        queue(&mut h, id, QueueType::Input, 0, 16);
    }
    assert!(eventually(5, || engine.shared.runs.load(Ordering::SeqCst)
        == MAX_STREAMS));
    for id in 1..=MAX_STREAMS as u32 {
        let done = h.command(&req(cmd::STREAM_DESTROY, id, &[]), 8);
        assert_eq!(done.code(), resp::OK_NODATA);
    }
    let storm = req(cmd::STREAM_CREATE, 100, &stream_create(Format::H264));
    assert_eq!(h.command(&storm, 8).code(), resp::ERR_OUT_OF_MEMORY);
    engine.shared.release.store(true, Ordering::SeqCst);
    assert!(eventually(5, || h
        .device()
        .live_workers
        .load(Ordering::SeqCst)
        == 0));
    assert_eq!(h.command(&storm, 8).code(), resp::OK_NODATA);
}

/// Resource scatter lists are charged to the budget: creating them stops
/// with OUT_OF_MEMORY at the limit, and destroying them gives it back.
#[test]
fn resource_lists_are_charged_to_the_budget() {
    let entries = 1000;
    let per_resource = (size_of::<Resource>() + entries * size_of::<Range>()) as u64;
    let budget = MemoryBudget::new(2 * per_resource + per_resource / 2);
    let device = DecoderDevice::with_budget(Arc::new(FakeDecoders::default()), budget.clone());
    let mut h = harness_with(device);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    let page = h.alloc(4096);
    let list = vec![(page, 4096); entries];
    let create = |h: &mut Guest, id| {
        let body = resource_create(QueueType::Output, id, &list);
        h.command(&req(cmd::RESOURCE_CREATE, 1, &body), 8).code()
    };
    assert_eq!(create(&mut h, 1), resp::OK_NODATA);
    assert_eq!(create(&mut h, 2), resp::OK_NODATA);
    assert_eq!(create(&mut h, 3), resp::ERR_OUT_OF_MEMORY);
    assert_eq!(budget.used(), 2 * per_resource);
    let done = h.command(
        &req(cmd::RESOURCE_DESTROY_ALL, 1, &queue_body(QueueType::Output)),
        8,
    );
    assert_eq!(done.code(), resp::OK_NODATA);
    assert_eq!(budget.used(), 0);
    assert_eq!(create(&mut h, 3), resp::OK_NODATA);
}

/// A decoder whose pictures would not fit in the budget fails its stream
/// with an ERROR event; the next bitstream buffer comes back with ERR.
#[test]
fn a_decoder_over_the_budget_fails_its_stream() {
    let engine = FakeDecoders::new(FakeSettings {
        held: 100_000,
        ..Default::default()
    });
    let budget = MemoryBudget::new(16 << 20);
    let device = DecoderDevice::with_budget(Arc::new(engine), budget.clone());
    let mut h = harness_with(device);
    let ev = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    set_coded_size(&mut h, 1, 16, 16);
    create(&mut h, 1, QueueType::Input, 0, 16);
    let head = queue(&mut h, 1, QueueType::Input, 0, 16);
    assert_eq!(h.wait(head).le32(16), 0);
    assert_eq!(h.wait(ev).le32(0), event::ERROR);
    let head = queue(&mut h, 1, QueueType::Input, 0, 16);
    assert_eq!(h.wait(head).le32(16), buffer_flag::ERR);
    assert!(eventually(5, || budget.used() < 1 << 20));
}

/// Lines a guest can trigger at will are rate-limited: 200 chains whose
/// reply buffer lies outside guest memory, and 200 events with no event
/// buffer, write a burst of lines each, not 200.
#[test]
fn floods_of_guest_errors_write_few_log_lines() {
    crate::log_limit::capture::install();
    let burst = crate::log_limit::BURST as usize;
    let mut h = harness(Arc::new(FakeDecoders::default()));
    let unusable = "device-writable part unusable";
    let before = crate::log_limit::capture::count(unusable);
    for _ in 0..200 {
        let head = h.submit(
            0,
            &[
                Part::Read(&req(cmd::STREAM_DESTROY, 1, &[])),
                Part::RawWrite(MEM_SIZE - 4, 64),
            ],
        );
        h.wait(head);
    }
    let written = crate::log_limit::capture::count(unusable) - before;
    // Two windows at most: the test may straddle the end of one.
    assert!((1..=2 * burst).contains(&written), "{written} lines");

    let starved = "event queue starved";
    let before = crate::log_limit::capture::count(starved);
    let events = EventQueue::default();
    for _ in 0..MAX_PENDING_EVENTS + 200 {
        events.post(event::ERROR, 1);
    }
    let written = crate::log_limit::capture::count(starved) - before;
    assert!((1..=2 * burst).contains(&written), "{written} lines");
}

/// The flood of issue 12: one 16 MiB bitstream buffer holding 1,000 1080p
/// pictures (one IDR picture, then P pictures of skipped macroblocks, about
/// 19 KB, then zeros) and four picture buffers. Run alone in a child process
/// with the FFmpeg engine, the device's peak resident size stays under
/// 512 MiB (decoding the whole buffer at once took 3.1 GB), and every
/// picture reaches the guest.
#[test]
fn a_flood_of_pictures_in_one_buffer_stays_under_512_mib() {
    let kib = crate::test_child::peak_rss_kib(
        "device::decoder::tests::flood_of_1080p_pictures_in_one_buffer",
    );
    eprintln!("peak resident size {} MiB", kib >> 10);
    assert!(kib < 512 << 10, "peak resident size {} MiB", kib >> 10);
}

#[test]
#[ignore = "run alone by a_flood_of_pictures_in_one_buffer_stays_under_512_mib"]
fn flood_of_1080p_pictures_in_one_buffer() {
    const PICTURES: usize = 1000;
    const BUFFER: u32 = 16 << 20;
    let stream = still_h264(1920, 1080, PICTURES as u32);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.h264");
    std::fs::write(&path, &stream).unwrap();
    let path = path.to_str().unwrap();
    // Every picture is the same gray one.
    let reference = ffmpeg_output(&[
        "-i",
        path,
        "-frames:v",
        "1",
        "-pix_fmt",
        "nv12",
        "-f",
        "rawvideo",
        "-",
    ]);
    assert_eq!(reference.len(), 1920 * 1080 * 3 / 2);

    let mut h = harness(ffmpeg_factory());

    let mem = h.memory().clone();
    let ev = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    let input = create(&mut h, 1, QueueType::Input, 0, BUFFER);
    mem.write_slice(&stream, GuestAddress(input)).unwrap();
    // The whole buffer: the stream, then zeros (trailing zero bytes, which
    // H.264 allows after any unit).
    let head = queue(&mut h, 1, QueueType::Input, 0, BUFFER);
    assert_eq!(h.wait(head).le32(16), 0);
    assert_eq!(h.wait(ev).le32(0), event::DECODER_RESOLUTION_CHANGED);
    // As a driver does: it reads the new layout, then queues for it.
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Output)),
        128,
    );
    assert_eq!((done.le32(8 + 8), done.le32(8 + 12)), (1920, 1080));
    let size = reference.len() as u32;
    let outputs: Vec<u64> = (0..4)
        .map(|id| create(&mut h, 1, QueueType::Output, id, size))
        .collect();
    let mut waiting: VecDeque<(u32, ChainId)> = (0..4)
        .map(|id| (id, queue(&mut h, 1, QueueType::Output, id, 0)))
        .collect();
    let mut picture = vec![0u8; reference.len()];
    let mut drain = None;
    for index in 0..PICTURES {
        if index == PICTURES - 1 {
            // The parser completes the last picture's unit at the drain.
            drain = Some(h.submit(
                0,
                &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
            ));
        }
        let (id, head) = waiting.pop_front().unwrap();
        let done = h.wait(head);
        assert_eq!(
            (done.code(), done.le32(16), done.le32(20)),
            (resp::OK_RESOURCE_QUEUE, 0, size),
            "picture {index}"
        );
        mem.read_slice(&mut picture, GuestAddress(outputs[id as usize]))
            .unwrap();
        assert!(picture == reference, "picture {index} differs");
        waiting.push_back((id, queue(&mut h, 1, QueueType::Output, id, 0)));
    }
    let (_, head) = waiting.pop_front().unwrap();
    assert_eq!(h.wait(head).le32(16), buffer_flag::EOS);
    let drain = drain.expect("the drain went out with the last picture");
    assert_eq!(h.wait(drain).code(), resp::OK_NODATA);
    crate::test_child::report_peak();
}

/// An H.264 stream whose SPS declares 16000x16000 is refused cleanly: each
/// of its pictures comes back as a picture buffer with ERR, no format
/// change is announced, the stream drains, and the device (alone in a
/// child process) never holds memory for such a picture (384 MB each).
#[test]
fn a_16k_sps_is_refused_cleanly() {
    let kib = crate::test_child::peak_rss_kib("device::decoder::tests::sixteen_k_sps_stream");
    eprintln!("peak resident size {} MiB", kib >> 10);
    assert!(kib < 100 << 10, "peak resident size {} MiB", kib >> 10);
}

#[test]
#[ignore = "run alone by a_16k_sps_is_refused_cleanly"]
fn sixteen_k_sps_stream() {
    let stream = h264_with_size(&still_h264(64, 48, 3), 16000, 16000);
    let mut h = harness(ffmpeg_factory());
    let mem = h.memory().clone();
    let ev = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    let input = create(&mut h, 1, QueueType::Input, 0, stream.len() as u32);
    mem.write_slice(&stream, GuestAddress(input)).unwrap();
    // Buffers for the size the stream starts with (640x480).
    let size = 640 * 480 * 3 / 2;
    let mut waiting: VecDeque<ChainId> = (0..4)
        .map(|id| {
            create(&mut h, 1, QueueType::Output, id, size);
            queue(&mut h, 1, QueueType::Output, id, 0)
        })
        .collect();
    queue(&mut h, 1, QueueType::Input, 0, stream.len() as u32);
    let drain = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
    );
    let mut lost = 0;
    loop {
        let head = waiting.pop_front().unwrap();
        let flags = h.wait(head).le32(16);
        if flags == buffer_flag::EOS {
            break;
        }
        assert_eq!(flags, buffer_flag::ERR);
        lost += 1;
    }
    assert_eq!(lost, 3, "each picture reported lost");
    assert_eq!(h.wait(drain).code(), resp::OK_NODATA);
    assert_eq!(h.used_position(ev), None, "no format announced");
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Output)),
        128,
    );
    assert_eq!((done.le32(8 + 8), done.le32(8 + 12)), (640, 480));
    crate::test_child::report_peak();
}

/// A guest that puts a head the device still holds into the avail ring
/// again, thousands of times: every copy is ignored (no reply, no work kept),
/// and the real chain is still answered once when its buffer comes back.
#[test]
fn a_head_offered_again_while_in_flight_is_ignored() {
    let mut h = harness(ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    create(&mut h, 1, QueueType::Output, 1, 1 << 20);
    let held = queue(&mut h, 1, QueueType::Output, 1, 0);
    for _ in 0..5_000 {
        h.offer_again(held);
    }
    assert_eq!(
        h.times_used(held),
        0,
        "a re-offered head was answered while its chain waits"
    );
    assert_eq!(h.backend().in_flight(0).unwrap().len(), 1);
    // The device still serves, and the held chain comes back once.
    let done = h.command(&req(cmd::STREAM_DESTROY, 1, &[]), 8);
    assert_eq!(done.code(), resp::OK_NODATA);
    let done = h.wait(held);
    assert_eq!(done.le32(16), buffer_flag::ERR);
    assert_eq!(h.times_used(held), 1);
    assert!(h.backend().in_flight(0).unwrap().is_empty());
}

/// A reset while a kick is answering hundreds of commands: every command
/// popped before the reset is answered before the reset returns, none after
/// (the frontend hands the ring to a new driver once it returns).
#[test]
fn nothing_is_answered_after_a_reset_returns() {
    let mut h = harness(ffmpeg_factory());
    // Requests with the most entries a resource may have: each takes a
    // while to read, so the reset lands while the kick is under way.
    let entries = vec![(DATA_START, 4096); MAX_ENTRIES_PER_RESOURCE as usize];
    let request = req(
        cmd::RESOURCE_CREATE,
        1,
        &resource_create(QueueType::Output, 1, &entries),
    );
    let addr = h.put(&request);
    for _ in 0..150 {
        h.add(
            0,
            &[Part::RawRead(addr, request.len() as u32), Part::Write(64)],
        );
    }
    let (at_reset, at_end) = h.reset_during_kick(0, |h| h.used_index(0) > 0, Duration::ZERO);
    assert!(at_reset > 0);
    assert_eq!(
        at_reset, at_end,
        "commands answered after the reset returned"
    );
}

/// One stream's lock held for a long time (as while its worker copies a
/// 32 MiB bitstream in or writes pictures out): a command to that stream
/// waits, and commands to other streams and to the device are answered
/// meanwhile.
#[test]
fn a_busy_stream_holds_up_no_other_stream() {
    let mut h = harness(ffmpeg_factory());
    for id in [1, 2] {
        let done = h.command(
            &req(cmd::STREAM_CREATE, id, &stream_create(Format::H264)),
            8,
        );
        assert_eq!(done.code(), resp::OK_NODATA);
    }
    let busy = h.device().stream(2).unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _st = busy.lock();
        held_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(3));
    });
    held_rx.recv().unwrap();
    let start = Instant::now();
    let params = |id| req(cmd::GET_PARAMS_EXT, id, &queue_body(QueueType::Input));
    let waiting = h.submit(0, &[Part::Read(&params(2)), Part::Write(128)]);
    let done = h.command(&params(1), 128);
    assert_eq!(done.code(), resp::OK_GET_PARAMS);
    let done = h.command(
        &req(cmd::QUERY_CAPABILITY, 0, &queue_body(QueueType::Input)),
        1024,
    );
    assert_eq!(done.code(), resp::OK_QUERY_CAPABILITY);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "stream 1 waited {:?} for stream 2",
        start.elapsed()
    );
    assert_eq!(h.used_position(waiting), None);
    holder.join().unwrap();
    assert_eq!(h.wait(waiting).code(), resp::OK_GET_PARAMS);
}

/// Sets up stream 1 with a picture buffer queued and a drain behind it,
/// both held up (the stream's lock held by another thread) until queue 0
/// has been stopped; then lets them go and checks that, with the ring
/// stopped, nothing is written: no reply, no used entry.
fn drain_across_a_stop(h: &mut Guest) -> [ChainId; 2] {
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    create(h, 1, QueueType::Output, 1, 1 << 20);
    let stream = h.device().stream(1).unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _st = stream.lock();
        held_tx.send(()).unwrap();
        let _ = go_rx.recv();
    });
    held_rx.recv().unwrap();
    let output = queue(h, 1, QueueType::Output, 1, 0);
    let drain = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
    );
    let at_stop = h.used_index(0);
    // Stopped from another thread: a stop that waited for the stream (as a
    // reset does) would otherwise wait for this thread forever.
    let guest = &*h;
    std::thread::scope(|scope| {
        let stopper = scope.spawn(|| guest.stop_queue(0));
        std::thread::sleep(Duration::from_millis(100));
        go_tx.send(()).unwrap();
        stopper.join().unwrap();
    });
    holder.join().unwrap();
    // The drain ends with the EOS buffer, whose reply waits for the ring.
    std::thread::sleep(Duration::from_millis(500));
    let mut reply = [0u8; 24];
    h.memory()
        .read_slice(&mut reply, GuestAddress(h.writable(output)[0].0))
        .unwrap();
    assert_eq!(
        reply, [UNWRITTEN; 24],
        "a reply written while the ring was stopped"
    );
    assert_eq!(h.used_index(0), at_stop, "used while the ring was stopped");
    assert_eq!(h.backend().in_flight(0).unwrap().len(), 2);
    [output, drain]
}

/// A VM stop and cont mid-stream: the frontend stops the command queue
/// while a picture buffer and a drain are pending, then starts the same
/// ring again. The stream survives; what completed meanwhile is written
/// only once the ring runs again, and nothing is lost.
#[test]
fn a_stopped_ring_keeps_its_streams_and_answers_after_the_restart() {
    let mut h = harness(ffmpeg_factory());
    let [output, drain] = drain_across_a_stop(&mut h);
    h.restart_queue(0);
    let done = h.wait(output);
    assert_eq!(done.le32(16), buffer_flag::EOS);
    assert_eq!(h.wait(drain).code(), resp::OK_NODATA);
    assert!(h.backend().in_flight(0).unwrap().is_empty());
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Input)),
        128,
    );
    assert_eq!(done.code(), resp::OK_GET_PARAMS);
}

/// A ring stopped and then set up afresh (the guest driver reset the
/// device): nothing of the old ring is written into the new one, and the
/// old streams are gone.
#[test]
fn a_ring_restarted_afresh_resets_the_device() {
    let mut h = harness(ffmpeg_factory());
    let [output, _] = drain_across_a_stop(&mut h);
    let output_addr = h.writable(output)[0].0;
    h.set_up_queue_afresh(0);
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Input)),
        128,
    );
    assert_eq!(done.code(), resp::ERR_INVALID_STREAM_ID);
    assert_eq!(h.used_index(0), 1, "old chains written into the new ring");
    let mut reply = [0u8; 24];
    h.memory()
        .read_slice(&mut reply, GuestAddress(output_addr))
        .unwrap();
    assert_eq!(
        reply, [UNWRITTEN; 24],
        "an old chain's reply written after the reset"
    );
    assert!(h.backend().in_flight(0).unwrap().is_empty());
}

/// Multi-planar picture buffers, as a driver with NV12M-style formats sends
/// them: each plane in its own memory (PER_PLANE), or planes at their own
/// offsets in one buffer. The picture's planes land where the guest put
/// them; a bitstream buffer must have one plane.
#[rstest]
#[case::per_plane(vv::PLANES_LAYOUT_PER_PLANE)]
#[case::single_buffer_with_offsets(vv::PLANES_LAYOUT_SINGLE_BUFFER)]
fn pictures_land_in_multi_planar_buffers(#[case] planes_layout: u32) {
    let engine = FakeDecoders::new(FakeSettings {
        pictures: true,
        held: 1,
        ..Default::default()
    });
    let mut h = harness(Arc::new(engine));
    let mem = h.memory().clone();
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(Format::H264)), 8);
    set_coded_size(&mut h, 1, 16, 16);

    // The chroma memory comes first in guest memory, with a gap before it in
    // the single-buffer case: nothing may rely on the packed layout.
    let per_plane = planes_layout == vv::PLANES_LAYOUT_PER_PLANE;
    let (luma, chroma, create_output) = if per_plane {
        let chroma = h.alloc(128);
        let luma = h.alloc(256);
        let entries: [&[(u64, u32)]; 2] = [&[(luma, 256)], &[(chroma, 128)]];
        let body = resource_create_planes(
            QueueType::Output,
            0,
            planes_layout,
            &[(0, entries[0]), (0, entries[1])],
        );
        (luma, chroma, body)
    } else {
        let buffer = h.alloc(512);
        let body = resource_create_planes(
            QueueType::Output,
            0,
            planes_layout,
            &[(0, &[(buffer, 512)]), (384, &[])],
        );
        (buffer, buffer + 384, body)
    };
    assert_eq!(
        h.command(&req(cmd::RESOURCE_CREATE, 1, &create_output), 8)
            .code(),
        resp::OK_NODATA
    );
    let input = h.alloc(1);
    let two_plane_bitstream = resource_create_planes(
        QueueType::Input,
        0,
        planes_layout,
        &[(0, &[(input, 1)]), (0, &[(input, 1)])],
    );
    assert_eq!(
        h.command(&req(cmd::RESOURCE_CREATE, 1, &two_plane_bitstream), 8)
            .code(),
        resp::ERR_INVALID_PARAMETER
    );
    create(&mut h, 1, QueueType::Input, 0, 1);
    // Marked, so that what the device writes (and leaves) shows.
    let span = if per_plane { 256 } else { 512 };
    mem.write_slice(&vec![0xaa; span], GuestAddress(luma))
        .unwrap();
    mem.write_slice(&[0xaa; 128], GuestAddress(chroma)).unwrap();

    let out = queue(&mut h, 1, QueueType::Output, 0, 0);
    queue(&mut h, 1, QueueType::Input, 0, 1);
    let done = h.wait(out);
    assert_eq!((done.code(), done.le32(16)), (resp::OK_RESOURCE_QUEUE, 0));
    let mut y = [0u8; 256];
    let mut uv = [0u8; 128];
    mem.read_slice(&mut y, GuestAddress(luma)).unwrap();
    mem.read_slice(&mut uv, GuestAddress(chroma)).unwrap();
    assert!(y.iter().all(|&b| b == 0), "luma of picture 0");
    assert!(uv.iter().all(|&b| b == 128), "chroma of picture 0");
    if !per_plane {
        let mut gap = [0u8; 128];
        mem.read_slice(&mut gap, GuestAddress(luma + 256)).unwrap();
        assert!(gap.iter().all(|&b| b == 0xaa), "the gap is left alone");
    }
}

/// A placed plane that runs past its memory makes the buffer unusable for
/// the layout, as a too-small single buffer is.
#[test]
fn placed_planes_must_fit_their_memory() {
    let layout = PictureLayout::packed(PixelFormat::Nv12, 16, 16);
    let resource = |planes| Resource {
        ranges: Vec::new(),
        size: 1024,
        planes,
        queued: false,
        _charge: MemoryBudget::new(1024).try_charge(0).unwrap(),
    };
    let fits = resource(PlaneMap::Placed(vec![(0, 256), (512, 640)]));
    let placed = fits.placed_layout(&layout).unwrap();
    assert_eq!(
        placed.planes.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [0, 512]
    );
    for spans in [
        vec![(0, 255), (512, 640)],
        vec![(0, 256), (600, 640)],
        vec![(0, 256)],
        vec![(u64::MAX, u64::MAX), (0, 128)],
    ] {
        assert_eq!(
            resource(PlaneMap::Placed(spans.clone())).placed_layout(&layout),
            None,
            "{spans:?}"
        );
    }
    assert!(resource(PlaneMap::Packed).placed_layout(&layout).is_some());
}
