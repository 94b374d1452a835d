//! The decoder device driven through real split virtqueues in guest memory
//! (`MockSplitQueue` layouts served by the transport's own `VringRwLock`).

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rstest::rstest;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryAtomic, Le32};

use super::resource::{PlaneMap, Range, Resource};
use super::*;
use crate::engine::decode::test_streams::{ffmpeg as ffmpeg_output, h264_with_size, still_h264};
use crate::engine::decode::{
    picture_bytes, DecodeEvent, Decoder as Engine, FfmpegDecoders, Picture, Progress, Room,
    INPUT_PADDING,
};
use crate::protocol::virtio_video::{
    buffer_flag, cmd, event, resp, CmdHdr, MemEntry, ParamsExt, ResourceCreateBody,
    ResourceQueueBody,
};
use crate::transport::{AtomicMem, Backend, GuestMem};
use vhost_user_backend::VhostUserBackend;
use vmm_sys_util::epoll::EventSet;

const QSIZE: u16 = 1024;
const MEM_SIZE: u64 = 256 << 20;
const DATA_START: u64 = 0x10_0000;

struct Ring<'a> {
    /// The descriptor table; the rings are laid out by hand, as the mock
    /// puts its used ring over the end of its avail ring for large queues.
    mock: MockSplitQueue<'a, GuestMem>,
    avail: u64,
    used_ring: u64,
    vring: VringRwLock<AtomicMem>,
    next_desc: u16,
    seen: u16,
    used: Vec<(u32, u32)>,
    /// Chains submitted per head: descriptors are reused once the table
    /// wraps, and a head's latest chain is its n-th completion.
    submissions: HashMap<u16, usize>,
}

/// A fake guest: the device served by the transport's own backend, which
/// kicks go through as the vring thread's do.
struct Harness<'a> {
    mem: &'a GuestMem,
    rings: [Ring<'a>; 2],
    vrings: Vec<VringRwLock<AtomicMem>>,
    next_data: u64,
    device: Arc<DecoderDevice>,
    backend: Backend<DecoderDevice>,
}

/// A completed request: its head, the bytes of its first writable buffer.
struct Done {
    reply: Vec<u8>,
    len: u32,
}

impl Done {
    fn hdr(&self) -> CmdHdr {
        let mut hdr = CmdHdr::default();
        hdr.as_mut_slice().copy_from_slice(&self.reply[..8]);
        hdr
    }

    fn code(&self) -> u32 {
        self.hdr().type_.to_native()
    }

    fn le32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.reply[offset..offset + 4].try_into().unwrap())
    }
}

fn guest_memory() -> GuestMem {
    GuestMem::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()
}

/// One piece of a descriptor chain.
enum Part<'b> {
    Read(&'b [u8]),
    Write(u32),
    /// A descriptor with an arbitrary address, length and flags.
    Raw(u64, u32, u16),
}

impl<'a> Harness<'a> {
    fn new(mem: &'a GuestMem, factory: Arc<dyn DecoderFactory>) -> Self {
        Self::with_device(mem, DecoderDevice::new(factory))
    }

    fn with_device(mem: &'a GuestMem, device: DecoderDevice) -> Self {
        let atomic = GuestMemoryAtomic::new(mem.clone());
        let ring = |start: u64| {
            let mock = MockSplitQueue::create(mem, GuestAddress(start), QSIZE);
            let avail = mock.avail_addr().0;
            let used_ring = (avail + 4 + 2 * u64::from(QSIZE) + 2 + 3) & !3;
            for field in [avail, avail + 2, used_ring, used_ring + 2] {
                mem.write_obj(0u16, GuestAddress(field)).unwrap();
            }
            let vring = VringRwLock::new(atomic.clone(), QSIZE).unwrap();
            vring
                .set_queue_info(mock.desc_table_addr().0, avail, used_ring)
                .unwrap();
            vring.set_queue_size(QSIZE);
            vring.set_queue_ready(true);
            vring.set_enabled(true);
            Ring {
                mock,
                avail,
                used_ring,
                vring,
                next_desc: 0,
                seen: 0,
                used: Vec::new(),
                submissions: HashMap::new(),
            }
        };
        let rings = [ring(0), ring(0x8_0000)];
        let vrings = rings.iter().map(|r| r.vring.clone()).collect();
        let device = Arc::new(device);
        Self {
            mem,
            rings,
            vrings,
            next_data: DATA_START,
            backend: Backend::new(device.clone(), atomic),
            device,
        }
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let addr = self.next_data;
        self.next_data = (addr + len.max(1) + 63) & !63;
        assert!(self.next_data < MEM_SIZE, "test memory exhausted");
        addr
    }

    fn put(&mut self, bytes: &[u8]) -> u64 {
        let addr = self.alloc(bytes.len() as u64);
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        addr
    }

    /// Adds a chain to queue `q` and kicks; returns its head and the address
    /// of its first writable buffer.
    fn submit(&mut self, q: usize, parts: &[Part<'_>]) -> (u16, u64) {
        let (head, reply_addr) = self.stage(q, parts);
        self.kick(q);
        (head, reply_addr)
    }

    /// Adds a chain to queue `q` without kicking.
    fn stage(&mut self, q: usize, parts: &[Part<'_>]) -> (u16, u64) {
        let mut descs = Vec::new();
        let mut reply_addr = 0;
        for part in parts {
            let (addr, len, flags) = match part {
                Part::Read(bytes) => (self.put(bytes), bytes.len() as u32, 0),
                Part::Write(len) => {
                    let addr = self.alloc(u64::from(*len));
                    if reply_addr == 0 {
                        reply_addr = addr;
                    }
                    (addr, *len, VRING_DESC_F_WRITE as u16)
                }
                Part::Raw(addr, len, flags) => (*addr, *len, *flags),
            };
            descs.push((addr, len, flags));
        }
        let ring = &mut self.rings[q];
        let count = descs.len() as u16;
        if ring.next_desc + count > QSIZE {
            // Wrap: the chains at the start of the table completed long ago.
            ring.next_desc = 0;
        }
        let head = ring.next_desc;
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let last = i + 1 == descs.len();
                let flags = if last {
                    flags
                } else {
                    flags | VRING_DESC_F_NEXT as u16
                };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, head + i as u16 + 1))
            })
            .collect();
        for (i, desc) in raw.iter().enumerate() {
            ring.mock
                .desc_table()
                .store(head + i as u16, *desc)
                .unwrap();
        }
        ring.next_desc += count;
        self.make_available(q, head);
        (head, reply_addr)
    }

    /// Puts `head` into queue `q`'s avail ring and kicks.
    fn offer(&mut self, q: usize, head: u16) {
        self.make_available(q, head);
        self.kick(q);
    }

    fn kick(&self, q: usize) {
        self.backend
            .handle_event(q as u16, EventSet::IN, &self.vrings, 0)
            .unwrap();
    }

    /// Puts `head` into queue `q`'s avail ring, by hand: the mock's own
    /// helper does not wrap it.
    fn make_available(&mut self, q: usize, head: u16) {
        let ring = &mut self.rings[q];
        let avail = ring.avail;
        let avail_idx: u16 = self.mem.read_obj(GuestAddress(avail + 2)).unwrap();
        let slot = u64::from(avail_idx % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(avail + 4 + 2 * slot))
            .unwrap();
        self.mem
            .write_obj(avail_idx.wrapping_add(1), GuestAddress(avail + 2))
            .unwrap();
        *ring.submissions.entry(head).or_default() += 1;
    }

    /// Queue `q`'s used index in guest memory.
    fn used_index(&self, q: usize) -> u16 {
        let at = GuestAddress(self.rings[q].used_ring + 2);
        self.mem.read_obj(at).unwrap()
    }

    /// Collects used entries of queue `q` written so far.
    fn harvest(&mut self, q: usize) {
        let ring = &mut self.rings[q];
        let used = ring.used_ring;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        while ring.seen != idx {
            let slot = u64::from(ring.seen % QSIZE);
            let id: u32 = self
                .mem
                .read_obj(GuestAddress(used + 4 + 8 * slot))
                .unwrap();
            let len: u32 = self
                .mem
                .read_obj(GuestAddress(used + 8 + 8 * slot))
                .unwrap();
            ring.used.push((id, len));
            ring.seen = ring.seen.wrapping_add(1);
        }
    }

    /// The used entry of the latest chain with head `head`, if used yet.
    fn latest_use(&mut self, q: usize, head: u16) -> Option<(usize, u32)> {
        self.harvest(q);
        let ring = &self.rings[q];
        let nth = ring.submissions.get(&head).copied().unwrap_or(1).max(1);
        ring.used
            .iter()
            .enumerate()
            .filter(|(_, (id, _))| *id == u32::from(head))
            .nth(nth - 1)
            .map(|(position, &(_, len))| (position, len))
    }

    /// Waits until chain `head` of queue `q` is used and returns its reply.
    fn wait(&mut self, q: usize, head: u16, reply_addr: u64) -> Done {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((_, len)) = self.latest_use(q, head) {
                let mut reply = vec![0u8; len.max(8) as usize];
                if reply_addr != 0 {
                    self.mem
                        .read_slice(&mut reply, GuestAddress(reply_addr))
                        .unwrap();
                }
                return Done { reply, len };
            }
            assert!(Instant::now() < deadline, "chain {head} never completed");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Position of `head` in queue `q`'s used order, if used yet.
    fn used_position(&mut self, q: usize, head: u16) -> Option<usize> {
        self.latest_use(q, head).map(|(position, _)| position)
    }

    fn command(&mut self, request: &[u8], reply_len: u32) -> Done {
        let (head, addr) = self.submit(0, &[Part::Read(request), Part::Write(reply_len)]);
        self.wait(0, head, addr)
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

fn stream_create(coded: u32) -> Vec<u8> {
    let body = vv::StreamCreateBody {
        coded_format: coded.into(),
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
    let mem = guest_memory();
    let h = Harness::new(&mem, ffmpeg_factory());
    let config = h.device.config();
    assert_eq!(config.len(), 44);
    assert_eq!(
        u32::from_le_bytes(config[4..8].try_into().unwrap()),
        MAX_CAPS_LENGTH
    );
    assert!(config[12..].starts_with(b"vhost-device-video\0"));
    assert_eq!(h.device.features(), 0b11);
}

#[rstest]
#[case::input(QueueType::Input, 5)]
#[case::output(QueueType::Output, 2)]
fn capabilities_list_every_format(#[case] queue: QueueType, #[case] descs: u32) {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let done = h.command(&req(cmd::QUERY_CAPABILITY, 0, &queue_body(queue)), 4096);
    assert_eq!(done.code(), resp::OK_QUERY_CAPABILITY);
    assert_eq!(done.le32(8), descs);
    // 16-byte header, then per format 24 + 40 + 16 bytes.
    assert_eq!(done.len, 16 + descs * 80);
    let first_format = done.le32(16 + 8);
    let expected = match queue {
        QueueType::Input => format::H264,
        QueueType::Output => format::NV12,
    };
    assert_eq!(first_format, expected);
}

#[rstest]
#[case::h264_profiles(control::PROFILE, format::H264, resp::OK_QUERY_CONTROL, 3)]
#[case::h264_levels(control::LEVEL, format::H264, resp::OK_QUERY_CONTROL, 15)]
#[case::vp9_profiles(control::PROFILE, format::VP9, resp::OK_QUERY_CONTROL, 1)]
#[case::hevc_levels(control::LEVEL, format::HEVC, resp::ERR_UNSUPPORTED_CONTROL, 0)]
#[case::av1_profiles(control::PROFILE, format::AV1, resp::ERR_UNSUPPORTED_CONTROL, 0)]
#[case::raw_format(control::PROFILE, format::NV12, resp::ERR_INVALID_PARAMETER, 0)]
fn query_control(#[case] control: u32, #[case] coded: u32, #[case] code: u32, #[case] num: u32) {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
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
#[case::duplicate_stream(req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 1, resp::ERR_INVALID_STREAM_ID)]
#[case::unsupported_coded_format(req(cmd::STREAM_CREATE, 3, &stream_create(format::NV12)), 3, resp::ERR_INVALID_PARAMETER)]
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
    let p = vv::Params { queue_type: 0x100.into(), format: format::NV12.into(), ..Default::default() };
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
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let created = h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
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
#[case::readable_out_of_range(vec![Part::Raw(MEM_SIZE + 4096, 16, 0), Part::Write(64)], Some(resp::ERR_INVALID_OPERATION))]
#[case::huge_readable(vec![Part::Raw(DATA_START, 0x8000_0000, 0), Part::Write(64)], Some(resp::ERR_INVALID_OPERATION))]
#[case::chain_over_4_gib(vec![Part::Raw(DATA_START, u32::MAX, 0), Part::Write(64)], None)]
#[case::writable_out_of_range(vec![Part::Read(&[0; 16]), Part::Raw(MEM_SIZE - 4, 64, VRING_DESC_F_WRITE as u16)], None)]
#[case::no_writable_part(vec![Part::Read(&[0; 16])], None)]
#[case::readable_after_writable(vec![Part::Write(64), Part::Read(&[0; 16])], None)]
#[case::zero_length_descriptors(vec![Part::Raw(DATA_START, 0, 0), Part::Read(&[0; 16]), Part::Raw(DATA_START, 0, VRING_DESC_F_WRITE as u16), Part::Write(64)], Some(resp::ERR_INVALID_OPERATION))]
#[case::reply_too_small(vec![Part::Read(&[0; 16]), Part::Write(4)], None)]
fn broken_chains_are_returned(#[case] parts: Vec<Part<'static>>, #[case] code: Option<u32>) {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let (head, addr) = h.submit(0, &parts);
    let done = h.wait(0, head, addr);
    if let Some(code) = code {
        assert_eq!(done.code(), code);
    }
    let done = h.command(&req(cmd::STREAM_CREATE, 4, &stream_create(format::VP9)), 8);
    assert_eq!(done.code(), resp::OK_NODATA);
}

/// A chain whose last descriptor links back to its head never ends: it is
/// returned, and the device goes on serving.
#[test]
fn looping_chain_is_returned() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let request = req(cmd::STREAM_CREATE, 1, &stream_create(format::H264));
    let addr = h.put(&request);
    let reply = h.alloc(64);
    let ring = &mut h.rings[0];
    let head = ring.next_desc;
    let next = VRING_DESC_F_NEXT as u16;
    let raw = [
        SplitDescriptor::new(addr, request.len() as u32, next, head + 1),
        SplitDescriptor::new(reply, 64, next | VRING_DESC_F_WRITE as u16, head),
    ]
    .map(RawDescriptor::from);
    ring.mock.add_desc_chains(&raw, head).unwrap();
    ring.next_desc += 2;
    h.kick(0);
    h.wait(0, head, reply);

    let done = h.command(&req(cmd::STREAM_CREATE, 2, &stream_create(format::VP9)), 8);
    assert_eq!(done.code(), resp::OK_NODATA);
}

/// Resources are gone after RESOURCE_DESTROY_ALL: queueing one is an error
/// naming the resource, and the stream itself still works.
#[test]
fn destroyed_resources_are_refused() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
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
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let request = req(cmd::STREAM_CREATE, 6, &stream_create(format::HEVC));
    let (a, rest) = request.split_at(3);
    let (b, c) = rest.split_at(40);
    let (head, addr) = h.submit(
        0,
        &[
            Part::Read(a),
            Part::Read(b),
            Part::Read(c),
            Part::Write(3),
            Part::Write(5),
        ],
    );
    let done = h.wait(0, head, addr);
    assert_eq!(done.len, 8);
    // The reply straddles both writable buffers; the second holds the rest.
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 6, &queue_body(QueueType::Input)),
        128,
    );
    assert_eq!(done.code(), resp::OK_GET_PARAMS);
    assert_eq!(done.le32(8 + 4), format::HEVC);
}

#[test]
fn destroyed_stream_refuses_commands_and_returns_pending_buffers() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
    h.command(&req(cmd::STREAM_CREATE, 2, &stream_create(format::H264)), 8);
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
    let (queued, queued_addr) = h.submit(
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
        h.used_position(0, queued),
        None,
        "a picture buffer waits for a picture"
    );

    let (destroy, destroy_addr) = h.submit(
        0,
        &[
            Part::Read(&req(cmd::STREAM_DESTROY, 1, &[])),
            Part::Write(8),
        ],
    );
    let done = h.wait(0, queued, queued_addr);
    assert_eq!(
        (done.code(), done.le32(16)),
        (resp::OK_RESOURCE_QUEUE, buffer_flag::ERR)
    );
    assert_eq!(h.wait(0, destroy, destroy_addr).code(), resp::OK_NODATA);
    assert!(h.used_position(0, queued) < h.used_position(0, destroy));

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
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
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
    let (clear, clear_addr) = h.submit(
        0,
        &[
            Part::Read(&req(command, 1, &queue_body(QueueType::Output))),
            Part::Write(8),
        ],
    );
    assert_eq!(h.wait(0, clear, clear_addr).code(), resp::OK_NODATA);
    let clear_pos = h.used_position(0, clear);
    for (head, addr) in pending {
        let done = h.wait(0, head, addr);
        assert_eq!(done.le32(16), buffer_flag::ERR);
        assert!(h.used_position(0, head) < clear_pos);
    }
    // Resources survive a clear (queued again, the buffer waits for a
    // picture) but not a destroy.
    let request = req(
        cmd::RESOURCE_QUEUE,
        1,
        &resource_queue(QueueType::Output, 1, 0, 0),
    );
    let (head, addr) = h.submit(0, &[Part::Read(&request), Part::Write(24)]);
    if command == cmd::RESOURCE_DESTROY_ALL {
        assert_eq!(h.wait(0, head, addr).code(), resp::ERR_INVALID_RESOURCE_ID);
    } else {
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(h.used_position(0, head), None);
    }
}

#[test]
fn params_describe_the_single_buffer_layout() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
    let p = vv::Params {
        queue_type: 0x100.into(),
        format: format::H264.into(),
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
        format: format::YUV420.into(),
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
    let params = &done.reply[8..];
    let field = |i: usize| u32::from_le_bytes(params[i..i + 4].try_into().unwrap());
    assert_eq!(
        (field(4), field(8), field(12)),
        (format::YUV420, 1918, 1078)
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

    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(h.submit(1, &[Part::Write(8)]));
    }
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);

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
            let streams = h.device.streams();
            let st = streams[&1].lock();
            st.resources[&key].ranges[0].0
        })
        .collect();
    let mut inputs = Vec::new();
    for (i, chunk) in stream.chunks(piece as usize).enumerate() {
        let id = (i % 4) as u32;
        if i >= 4 {
            let (head, addr) = inputs[i - 4];
            h.wait(0, head, addr);
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
    let (head, addr) = events[0];
    let event = h.wait(1, head, addr);
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
    let queue_output = |h: &mut Harness<'_>, id: u32| {
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
    let mut waiting: Vec<(u32, (u16, u64))> =
        (0..3).map(|id| (id, queue_output(&mut h, id))).collect();
    let (drain, drain_addr) = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
    );

    let mut md5s = Vec::new();
    let mut stamps = Vec::new();
    loop {
        let (id, (head, addr)) = waiting.remove(0);
        let done = h.wait(0, head, addr);
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
        stamps.push(u64::from_le_bytes(done.reply[8..16].try_into().unwrap()));
        waiting.push((id, queue_output(&mut h, id)));
    }
    assert_eq!(md5s, reference);
    assert!(
        stamps.iter().all(|t| (1000..1000 + 100).contains(t)),
        "{stamps:?}"
    );
    let done = h.wait(0, drain, drain_addr);
    assert_eq!(done.code(), resp::OK_NODATA);
    for (head, addr) in inputs {
        assert_eq!(h.wait(0, head, addr).le32(16), 0);
    }
}

#[test]
fn drain_of_an_empty_stream_returns_eos_then_the_reply() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 3, &stream_create(format::VP8)), 8);
    let (drain, drain_addr) = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 3, &[])), Part::Write(8)],
    );
    // A second drain while one is pending is refused at once.
    let done = h.command(&req(cmd::STREAM_DRAIN, 3, &[]), 8);
    assert_eq!(done.code(), resp::ERR_INVALID_OPERATION);
    assert_eq!(
        h.used_position(0, drain),
        None,
        "the drain waits for a buffer"
    );
    let out = h.alloc(4096);
    h.command(
        &req(
            cmd::RESOURCE_CREATE,
            3,
            &resource_create(QueueType::Output, 1, &[(out, 4096)]),
        ),
        8,
    );
    let (eos, eos_addr) = h.submit(
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
    let done = h.wait(0, eos, eos_addr);
    assert_eq!((done.le32(16), done.le32(20)), (buffer_flag::EOS, 0));
    assert_eq!(h.wait(0, drain, drain_addr).code(), resp::OK_NODATA);
    assert!(h.used_position(0, eos) < h.used_position(0, drain));
}

#[test]
fn garbage_bitstream_neither_crashes_nor_blocks_the_stream() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
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
        assert_eq!(done.reply[8..16], ts.to_le_bytes());
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

    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let (ev, ev_addr) = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
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
    let (pic, _) = h.submit(
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
    assert_eq!(
        h.wait(1, ev, ev_addr).le32(0),
        event::DECODER_RESOLUTION_CHANGED
    );
    assert_eq!(h.used_position(0, pic), None, "no picture is out yet");
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

    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let (ev, ev_addr) = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::VP8)), 8);
    let p = vv::Params {
        queue_type: 0x100.into(),
        format: format::VP8.into(),
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
    let (pic, pic_addr) = h.submit(
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
    assert_eq!(
        h.wait(1, ev, ev_addr).le32(0),
        event::DECODER_RESOLUTION_CHANGED
    );
    let done = h.wait(0, pic, pic_addr);
    assert_eq!((done.le32(16), done.reply[8]), (0, 42));
}

#[rstest]
#[case::h264_profile(format::H264, control::PROFILE, 0x103, resp::OK_NODATA)]
#[case::h264_level(format::H264, control::LEVEL, 0x10B, resp::OK_NODATA)]
#[case::unlisted_profile(format::H264, control::PROFILE, 0x104, resp::ERR_INVALID_PARAMETER)]
#[case::vp8_level(format::VP8, control::LEVEL, 0x100, resp::ERR_UNSUPPORTED_CONTROL)]
fn controls_are_set_and_read_back(
    #[case] coded: u32,
    #[case] control_type: u32,
    #[case] value: u32,
    #[case] code: u32,
) {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
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
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
    let (drain, drain_addr) = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
    );
    let (clear, clear_addr) = h.submit(
        0,
        &[
            Part::Read(&req(cmd::QUEUE_CLEAR, 1, &queue_body(QueueType::Input))),
            Part::Write(8),
        ],
    );
    assert_eq!(h.wait(0, clear, clear_addr).code(), resp::OK_NODATA);
    assert_eq!(
        h.wait(0, drain, drain_addr).code(),
        resp::ERR_INVALID_OPERATION
    );
    assert!(h.used_position(0, drain) < h.used_position(0, clear));
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

fn create(h: &mut Harness<'_>, stream: u32, queue: QueueType, id: u32, len: u32) -> u64 {
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

fn queue(h: &mut Harness<'_>, stream: u32, queue: QueueType, id: u32, size: u32) -> (u16, u64) {
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
fn set_coded_size(h: &mut Harness<'_>, stream: u32, width: u32, height: u32) {
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
    let mem = guest_memory();
    let engine = FakeDecoders::new(FakeSettings {
        pictures: true,
        held: 1,
        ..Default::default()
    });
    let budget = MemoryBudget::new(limit);
    let device = DecoderDevice::with_budget(Arc::new(engine.clone()), budget.clone());
    let mut h = Harness::with_device(&mem, device);
    let (ev, ev_addr) = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
    set_coded_size(&mut h, 1, 16, 16);
    create(&mut h, 1, QueueType::Input, 0, PICTURES);
    let outputs = [
        create(&mut h, 1, QueueType::Output, 0, FAKE_PICTURE),
        create(&mut h, 1, QueueType::Output, 1, FAKE_PICTURE),
    ];
    let (input, input_addr) = queue(&mut h, 1, QueueType::Input, 0, PICTURES);
    let done = h.wait(0, input, input_addr);
    assert_eq!((done.code(), done.le32(16)), (resp::OK_RESOURCE_QUEUE, 0));
    assert_eq!(
        h.wait(1, ev, ev_addr).le32(0),
        event::DECODER_RESOLUTION_CHANGED
    );
    assert!(eventually(5, || engine.shared.alive.load(Ordering::SeqCst)
        == most_ready));

    let mut waiting: VecDeque<(u32, (u16, u64))> = (0..2)
        .map(|id| (id, queue(&mut h, 1, QueueType::Output, id, 0)))
        .collect();
    for serial in 0..PICTURES {
        let (id, (head, addr)) = waiting.pop_front().unwrap();
        let done = h.wait(0, head, addr);
        assert_eq!(done.code(), resp::OK_RESOURCE_QUEUE, "picture {serial}");
        assert_eq!(
            (done.le32(16), done.reply[8..16].to_vec()),
            (0, u64::from(serial).to_le_bytes().to_vec()),
            "picture {serial}"
        );
        let luma: u8 = mem.read_obj(GuestAddress(outputs[id as usize])).unwrap();
        assert_eq!(luma, serial as u8);
        waiting.push_back((id, queue(&mut h, 1, QueueType::Output, id, 0)));
    }
    let (drain, drain_addr) = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
    );
    let (_, (head, addr)) = waiting.pop_front().unwrap();
    assert_eq!(h.wait(0, head, addr).le32(16), buffer_flag::EOS);
    assert_eq!(h.wait(0, drain, drain_addr).code(), resp::OK_NODATA);
    assert_eq!(
        engine.shared.most_alive.load(Ordering::SeqCst),
        most_ready,
        "pictures held at once"
    );
    h.command(&req(cmd::STREAM_DESTROY, 1, &[]), 8);
    assert!(eventually(5, || budget.used() == 0), "{}", budget.used());
}

/// A stream whose input is cleared, or that is destroyed, stops decoding at
/// the next bitstream unit, not at the end of its buffer (here 100 s of
/// work); its thread ends at once.
#[test]
fn clearing_or_destroying_a_stream_stops_its_decoding_at_once() {
    let mem = guest_memory();
    let engine = FakeDecoders::new(FakeSettings {
        unit_time: Duration::from_millis(1),
        ..Default::default()
    });
    let device = DecoderDevice::new(Arc::new(engine.clone()));
    let mut h = Harness::with_device(&mem, device);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
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
        eventually(1, || h.device.live_workers.load(Ordering::SeqCst) == 0),
        "the thread of a destroyed stream is still decoding"
    );
}

/// `MAX_STREAMS` counts decoding threads: streams destroyed while their
/// decoder is stuck in a long unit still count until their thread ends, so
/// a create/destroy storm cannot pile up threads.
#[test]
fn the_stream_limit_counts_threads_still_decoding() {
    let mem = guest_memory();
    let engine = FakeDecoders::new(FakeSettings {
        stuck: true,
        ..Default::default()
    });
    let device = DecoderDevice::new(Arc::new(engine.clone()));
    let mut h = Harness::with_device(&mem, device);
    for id in 1..=MAX_STREAMS as u32 {
        let done = h.command(
            &req(cmd::STREAM_CREATE, id, &stream_create(format::H264)),
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
    let storm = req(cmd::STREAM_CREATE, 100, &stream_create(format::H264));
    assert_eq!(h.command(&storm, 8).code(), resp::ERR_OUT_OF_MEMORY);
    engine.shared.release.store(true, Ordering::SeqCst);
    assert!(eventually(5, || h
        .device
        .live_workers
        .load(Ordering::SeqCst)
        == 0));
    assert_eq!(h.command(&storm, 8).code(), resp::OK_NODATA);
}

/// Resource scatter lists are charged to the budget: creating them stops
/// with OUT_OF_MEMORY at the limit, and destroying them gives it back.
#[test]
fn resource_lists_are_charged_to_the_budget() {
    let mem = guest_memory();
    let entries = 1000;
    let per_resource = (size_of::<Resource>() + entries * size_of::<Range>()) as u64;
    let budget = MemoryBudget::new(2 * per_resource + per_resource / 2);
    let device = DecoderDevice::with_budget(Arc::new(FakeDecoders::default()), budget.clone());
    let mut h = Harness::with_device(&mem, device);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
    let page = h.alloc(4096);
    let list = vec![(page, 4096); entries];
    let create = |h: &mut Harness<'_>, id| {
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
    let mem = guest_memory();
    let engine = FakeDecoders::new(FakeSettings {
        held: 100_000,
        ..Default::default()
    });
    let budget = MemoryBudget::new(16 << 20);
    let device = DecoderDevice::with_budget(Arc::new(engine), budget.clone());
    let mut h = Harness::with_device(&mem, device);
    let (ev, ev_addr) = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
    set_coded_size(&mut h, 1, 16, 16);
    create(&mut h, 1, QueueType::Input, 0, 16);
    let (head, addr) = queue(&mut h, 1, QueueType::Input, 0, 16);
    assert_eq!(h.wait(0, head, addr).le32(16), 0);
    assert_eq!(h.wait(1, ev, ev_addr).le32(0), event::ERROR);
    let (head, addr) = queue(&mut h, 1, QueueType::Input, 0, 16);
    assert_eq!(h.wait(0, head, addr).le32(16), buffer_flag::ERR);
    assert!(eventually(5, || budget.used() < 1 << 20));
}

/// Lines a guest can trigger at will are rate-limited: 200 chains whose
/// reply buffer lies outside guest memory, and 200 events with no event
/// buffer, write a burst of lines each, not 200.
#[test]
fn floods_of_guest_errors_write_few_log_lines() {
    crate::log_limit::capture::install();
    let burst = crate::log_limit::BURST as usize;
    let mem = guest_memory();
    let mut h = Harness::new(&mem, Arc::new(FakeDecoders::default()));
    let unusable = "device-writable part unusable";
    let before = crate::log_limit::capture::count(unusable);
    for _ in 0..200 {
        let (head, addr) = h.submit(
            0,
            &[
                Part::Read(&req(cmd::STREAM_DESTROY, 1, &[])),
                Part::Raw(MEM_SIZE - 4, 64, VRING_DESC_F_WRITE as u16),
            ],
        );
        h.wait(0, head, addr);
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

    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let (ev, ev_addr) = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
    let input = create(&mut h, 1, QueueType::Input, 0, BUFFER);
    mem.write_slice(&stream, GuestAddress(input)).unwrap();
    // The whole buffer: the stream, then zeros (trailing zero bytes, which
    // H.264 allows after any unit).
    let (head, addr) = queue(&mut h, 1, QueueType::Input, 0, BUFFER);
    assert_eq!(h.wait(0, head, addr).le32(16), 0);
    assert_eq!(
        h.wait(1, ev, ev_addr).le32(0),
        event::DECODER_RESOLUTION_CHANGED
    );
    let size = reference.len() as u32;
    let outputs: Vec<u64> = (0..4)
        .map(|id| create(&mut h, 1, QueueType::Output, id, size))
        .collect();
    let mut waiting: VecDeque<(u32, (u16, u64))> = (0..4)
        .map(|id| (id, queue(&mut h, 1, QueueType::Output, id, 0)))
        .collect();
    let mut picture = vec![0u8; reference.len()];
    let mut drain = (0, 0);
    for index in 0..PICTURES {
        if index == PICTURES - 1 {
            // The parser completes the last picture's unit at the drain.
            drain = h.submit(
                0,
                &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
            );
        }
        let (id, (head, addr)) = waiting.pop_front().unwrap();
        let done = h.wait(0, head, addr);
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
    let (_, (head, addr)) = waiting.pop_front().unwrap();
    assert_eq!(h.wait(0, head, addr).le32(16), buffer_flag::EOS);
    assert_eq!(h.wait(0, drain.0, drain.1).code(), resp::OK_NODATA);
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
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let (ev, _) = h.submit(1, &[Part::Write(8)]);
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
    let input = create(&mut h, 1, QueueType::Input, 0, stream.len() as u32);
    mem.write_slice(&stream, GuestAddress(input)).unwrap();
    // Buffers for the size the stream starts with (640x480).
    let size = 640 * 480 * 3 / 2;
    let mut waiting: VecDeque<(u16, u64)> = (0..4)
        .map(|id| {
            create(&mut h, 1, QueueType::Output, id, size);
            queue(&mut h, 1, QueueType::Output, id, 0)
        })
        .collect();
    queue(&mut h, 1, QueueType::Input, 0, stream.len() as u32);
    let (drain, drain_addr) = h.submit(
        0,
        &[Part::Read(&req(cmd::STREAM_DRAIN, 1, &[])), Part::Write(8)],
    );
    let mut lost = 0;
    loop {
        let (head, addr) = waiting.pop_front().unwrap();
        let flags = h.wait(0, head, addr).le32(16);
        if flags == buffer_flag::EOS {
            break;
        }
        assert_eq!(flags, buffer_flag::ERR);
        lost += 1;
    }
    assert_eq!(lost, 3, "each picture reported lost");
    assert_eq!(h.wait(0, drain, drain_addr).code(), resp::OK_NODATA);
    assert_eq!(h.used_position(1, ev), None, "no format announced");
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
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
    create(&mut h, 1, QueueType::Output, 1, 1 << 20);
    let (held, held_addr) = queue(&mut h, 1, QueueType::Output, 1, 0);
    for _ in 0..5_000 {
        h.offer(0, held);
    }
    h.harvest(0);
    assert!(
        h.rings[0].used.iter().all(|&(id, _)| id != u32::from(held)),
        "a re-offered head was answered while its chain waits"
    );
    assert_eq!(h.backend.in_flight(0).unwrap().len(), 1);
    // The device still serves, and the held chain comes back once.
    let done = h.command(&req(cmd::STREAM_DESTROY, 1, &[]), 8);
    assert_eq!(done.code(), resp::OK_NODATA);
    h.rings[0].submissions.insert(held, 1);
    let done = h.wait(0, held, held_addr);
    assert_eq!(done.le32(16), buffer_flag::ERR);
    h.harvest(0);
    let answers = h.rings[0]
        .used
        .iter()
        .filter(|&&(id, _)| id == u32::from(held))
        .count();
    assert_eq!(answers, 1);
    assert!(h.backend.in_flight(0).unwrap().is_empty());
}

/// A reset while a kick is answering hundreds of commands: every command
/// popped before the reset is answered before the reset returns, none after
/// (the frontend hands the ring to a new driver once it returns).
#[test]
fn nothing_is_answered_after_a_reset_returns() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
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
        h.stage(
            0,
            &[Part::Raw(addr, request.len() as u32, 0), Part::Write(64)],
        );
    }
    let (device, backend, vrings) = (&h.device, &h.backend, &h.vrings);
    let (at_reset, at_end) = std::thread::scope(|scope| {
        let kick = scope.spawn(|| backend.handle_event(0, EventSet::IN, vrings, 0));
        while h.used_index(0) == 0 {
            std::hint::spin_loop();
        }
        device.reset();
        let at_reset = h.used_index(0);
        kick.join().unwrap().unwrap();
        (at_reset, h.used_index(0))
    });
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
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    for id in [1, 2] {
        let done = h.command(
            &req(cmd::STREAM_CREATE, id, &stream_create(format::H264)),
            8,
        );
        assert_eq!(done.code(), resp::OK_NODATA);
    }
    let busy = h.device.stream(2).unwrap();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let _st = busy.lock();
        held_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(3));
    });
    held_rx.recv().unwrap();
    let start = Instant::now();
    let params = |id| req(cmd::GET_PARAMS_EXT, id, &queue_body(QueueType::Input));
    let (waiting, waiting_addr) = h.submit(0, &[Part::Read(&params(2)), Part::Write(128)]);
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
    assert_eq!(h.used_position(0, waiting), None);
    holder.join().unwrap();
    assert_eq!(h.wait(0, waiting, waiting_addr).code(), resp::OK_GET_PARAMS);
}

impl Harness<'_> {
    /// The frontend starts queue `q` again on the same ring, and the guest
    /// kicks it.
    fn restart(&self, q: usize) {
        self.rings[q].vring.set_queue_ready(true);
        self.kick(q);
    }

    /// The guest driver is reset and sets queue `q` up afresh at the same
    /// addresses: indices from 0, an empty table.
    fn restart_afresh(&mut self, q: usize) {
        let ring = &mut self.rings[q];
        for field in [ring.avail + 2, ring.used_ring + 2] {
            self.mem.write_obj(0u16, GuestAddress(field)).unwrap();
        }
        ring.vring.set_queue_next_avail(0);
        ring.vring.set_queue_next_used(0);
        ring.vring.set_queue_ready(true);
        (ring.next_desc, ring.seen) = (0, 0);
        ring.used.clear();
        ring.submissions.clear();
    }
}

/// Sets up stream 1 with a picture buffer queued and a drain behind it,
/// both held up (the stream's lock held by another thread) until queue 0
/// has been stopped; then lets them go and checks that, with the ring
/// stopped, nothing is written: no reply, no used entry.
fn drain_across_a_stop(h: &mut Harness<'_>) -> [(u16, u64); 2] {
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
    create(h, 1, QueueType::Output, 1, 1 << 20);
    let stream = h.device.stream(1).unwrap();
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
    let (backend, vring) = (&h.backend, &h.rings[0].vring);
    std::thread::scope(|scope| {
        let stopper = scope.spawn(|| {
            vring.set_queue_ready(false);
            backend.stop_vring(0).unwrap();
        });
        std::thread::sleep(Duration::from_millis(100));
        go_tx.send(()).unwrap();
        stopper.join().unwrap();
    });
    holder.join().unwrap();
    // The drain ends with the EOS buffer, whose reply waits for the ring.
    std::thread::sleep(Duration::from_millis(500));
    let mut reply = [0u8; 24];
    h.mem
        .read_slice(&mut reply, GuestAddress(output.1))
        .unwrap();
    assert_eq!(reply, [0; 24], "a reply written while the ring was stopped");
    assert_eq!(h.used_index(0), at_stop, "used while the ring was stopped");
    assert_eq!(h.backend.in_flight(0).unwrap().len(), 2);
    [output, drain]
}

/// A VM stop and cont mid-stream: the frontend stops the command queue
/// while a picture buffer and a drain are pending, then starts the same
/// ring again. The stream survives; what completed meanwhile is written
/// only once the ring runs again, and nothing is lost.
#[test]
fn a_stopped_ring_keeps_its_streams_and_answers_after_the_restart() {
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let [(output, output_addr), (drain, drain_addr)] = drain_across_a_stop(&mut h);
    h.restart(0);
    let done = h.wait(0, output, output_addr);
    assert_eq!(done.le32(16), buffer_flag::EOS);
    assert_eq!(h.wait(0, drain, drain_addr).code(), resp::OK_NODATA);
    assert!(h.backend.in_flight(0).unwrap().is_empty());
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
    let mem = guest_memory();
    let mut h = Harness::new(&mem, ffmpeg_factory());
    let [(_, output_addr), _] = drain_across_a_stop(&mut h);
    h.restart_afresh(0);
    let done = h.command(
        &req(cmd::GET_PARAMS_EXT, 1, &queue_body(QueueType::Input)),
        128,
    );
    assert_eq!(done.code(), resp::ERR_INVALID_STREAM_ID);
    assert_eq!(h.used_index(0), 1, "old chains written into the new ring");
    let mut reply = [0u8; 24];
    h.mem
        .read_slice(&mut reply, GuestAddress(output_addr))
        .unwrap();
    assert_eq!(
        reply, [0; 24],
        "an old chain's reply written after the reset"
    );
    assert!(h.backend.in_flight(0).unwrap().is_empty());
}

/// Multi-planar picture buffers, as a driver with NV12M-style formats sends
/// them: each plane in its own memory (PER_PLANE), or planes at their own
/// offsets in one buffer. The picture's planes land where the guest put
/// them; a bitstream buffer must have one plane.
#[rstest]
#[case::per_plane(vv::PLANES_LAYOUT_PER_PLANE)]
#[case::single_buffer_with_offsets(vv::PLANES_LAYOUT_SINGLE_BUFFER)]
fn pictures_land_in_multi_planar_buffers(#[case] planes_layout: u32) {
    let mem = guest_memory();
    let engine = FakeDecoders::new(FakeSettings {
        pictures: true,
        held: 1,
        ..Default::default()
    });
    let mut h = Harness::new(&mem, Arc::new(engine));
    h.command(&req(cmd::STREAM_CREATE, 1, &stream_create(format::H264)), 8);
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

    let (out, out_addr) = queue(&mut h, 1, QueueType::Output, 0, 0);
    queue(&mut h, 1, QueueType::Input, 0, 1);
    let done = h.wait(0, out, out_addr);
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
