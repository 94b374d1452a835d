//! The virtio-video v3 stateful decoder (virtio ID 31).
//!
//! Commands are parsed and answered on the vring thread. Each stream has a
//! worker thread that owns its decoder engine: it takes bitstream buffers in
//! queue order, decodes outside any lock, and pairs decoded pictures with the
//! guest's OUTPUT-queue (CAPTURE) resources. RESOURCE_QUEUE and STREAM_DRAIN
//! complete asynchronously; everything else synchronously. Pending requests
//! that a QUEUE_CLEAR, RESOURCE_DESTROY_ALL or STREAM_DESTROY discards come
//! back with `BUFFER_FLAG_ERR` before that command's own reply.
//!
//! What a guest makes the device hold is bounded: at most
//! `MAX_READY_PICTURES` decoded pictures wait per stream (the worker stops
//! feeding the decoder when they are there and goes on with the rest of the
//! input as buffers come back), and pictures, bitstream copies, the
//! decoders' own pictures and resource scatter lists are charged to a
//! [`MemoryBudget`] shared by the whole daemon.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread;
use std::time::Duration;

use log::{debug, error, warn};
use thiserror::Error as ThisError;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use crate::engine::decode::{
    picture_bytes, write_picture, CodedFormat, DecodeEvent, Decoder as Engine, DecoderFactory,
    Picture, PictureLayout, PixelFormat, Progress, Room, INPUT_PADDING, MAX_DIMENSION,
};
use crate::fault;
use crate::log_limit::warn_limited;
use crate::protocol::virtio_video::{
    self as vv, buffer_flag, control, event, format, hdr_reply, parse_request, push, resp, Command,
    Config, FormatDesc, FormatFrame, FormatRange, ParamsExt, PlaneEntries, QueryCapabilityResp,
    QueryControlResp, QueueType,
};
use crate::transport::{chain_reader, Chain, DeviceQueue, VirtioDevice};

mod budget;
pub use budget::{Charge, MemoryBudget, DEFAULT_MEMORY_LIMIT, MIN_MEMORY_LIMIT};

/// Queue numbers.
const COMMAND_QUEUE: usize = 0;
const EVENT_QUEUE: usize = 1;
/// Size the harness gives both queues.
const QUEUE_SIZE: usize = 1024;
/// Config space answers: the caps and control replies fit in these.
const MAX_CAPS_LENGTH: u32 = 4096;
const MAX_RESP_LENGTH: u32 = 4096;
/// The name in the config space.
const DEVICE_NAME: &[u8] = b"vhost-device-video";

/// Limits on what a guest may make the device hold. `MAX_STREAMS` counts
/// decoding threads, which outlive their stream until they see it closed.
const MAX_STREAMS: usize = 32;
const MAX_RESOURCES_PER_QUEUE: usize = 64;
const MAX_ENTRIES_PER_RESOURCE: u64 = 65_536;
const MAX_RESOURCE_BYTES: u64 = 256 << 20;
const MAX_INPUT_BYTES: u32 = 32 << 20;
const DEFAULT_INPUT_BYTES: u32 = 2 << 20;
const MAX_READY_PICTURES: usize = 16;
const MAX_PENDING_EVENTS: usize = 64;
const MIN_DIMENSION: u32 = 16;
/// How long a worker short of budget waits before it looks again (budget
/// freed by other streams does not wake it).
const BUDGET_RETRY: Duration = Duration::from_millis(20);
/// Buffers the guest must give each queue; one OUTPUT buffer extra so that
/// a drain always has one to carry EOS.
const INPUT_MIN_BUFFERS: u32 = 1;
const OUTPUT_MIN_BUFFERS: u32 = 2;
const MAX_BUFFERS: u32 = 32;
/// Size assumed for the OUTPUT queue until the stream says otherwise.
const DEFAULT_SIZE: (u32, u32) = (640, 480);

/// Why the device refuses a command; each maps to a response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ThisError)]
pub enum DecoderError {
    #[error("operation not possible now")]
    InvalidOperation,
    #[error("limit reached")]
    OutOfMemory,
    #[error("no such stream")]
    InvalidStreamId,
    #[error("no such resource, or resource busy")]
    InvalidResourceId,
    #[error("invalid parameter")]
    InvalidParameter,
    #[error("unsupported control")]
    UnsupportedControl,
}

impl DecoderError {
    /// The response code.
    pub fn code(self) -> u32 {
        match self {
            DecoderError::InvalidOperation => resp::ERR_INVALID_OPERATION,
            DecoderError::OutOfMemory => resp::ERR_OUT_OF_MEMORY,
            DecoderError::InvalidStreamId => resp::ERR_INVALID_STREAM_ID,
            DecoderError::InvalidResourceId => resp::ERR_INVALID_RESOURCE_ID,
            DecoderError::InvalidParameter => resp::ERR_INVALID_PARAMETER,
            DecoderError::UnsupportedControl => resp::ERR_UNSUPPORTED_CONTROL,
        }
    }
}

fn coded_from_wire(code: u32) -> Option<CodedFormat> {
    Some(match code {
        format::H264 => CodedFormat::H264,
        format::HEVC => CodedFormat::Hevc,
        format::VP8 => CodedFormat::Vp8,
        format::VP9 => CodedFormat::Vp9,
        format::AV1 => CodedFormat::Av1,
        _ => return None,
    })
}

fn coded_to_wire(format: CodedFormat) -> u32 {
    match format {
        CodedFormat::H264 => format::H264,
        CodedFormat::Hevc => format::HEVC,
        CodedFormat::Vp8 => format::VP8,
        CodedFormat::Vp9 => format::VP9,
        CodedFormat::Av1 => format::AV1,
    }
}

fn raw_from_wire(code: u32) -> Option<PixelFormat> {
    match code {
        format::NV12 => Some(PixelFormat::Nv12),
        format::YUV420 => Some(PixelFormat::Yuv420),
        _ => None,
    }
}

fn raw_to_wire(format: PixelFormat) -> u32 {
    match format {
        PixelFormat::Nv12 => format::NV12,
        PixelFormat::Yuv420 => format::YUV420,
    }
}

const RAW_FORMATS: [PixelFormat; 2] = [PixelFormat::Nv12, PixelFormat::Yuv420];

/// Profiles the engine decodes to 8-bit 4:2:0 (v3 defines none for AV1).
fn profiles(format: CodedFormat) -> &'static [u32] {
    match format {
        CodedFormat::H264 => &[0x100, 0x101, 0x103],
        CodedFormat::Hevc => &[0x200, 0x202],
        CodedFormat::Vp8 => &[0x300, 0x301, 0x302, 0x303],
        CodedFormat::Vp9 => &[0x400],
        CodedFormat::Av1 => &[],
    }
}

/// Levels (v3 defines them for H.264 only: 1.0 to 5.1).
fn levels(format: CodedFormat) -> &'static [u32] {
    match format {
        CodedFormat::H264 => &[
            0x100, 0x101, 0x102, 0x103, 0x104, 0x105, 0x106, 0x107, 0x108, 0x109, 0x10A, 0x10B,
            0x10C, 0x10D, 0x10E,
        ],
        _ => &[],
    }
}

fn control_values(control_type: u32, format: CodedFormat) -> &'static [u32] {
    match control_type {
        control::PROFILE => profiles(format),
        _ => levels(format),
    }
}

/// A guest buffer: a scatter list of guest-physical ranges.
struct Resource {
    /// (guest address, length, offset of the range in the buffer).
    ranges: Vec<Range>,
    size: u64,
    planes: PlaneMap,
    queued: bool,
    /// The scatter list's share of the budget.
    _charge: Charge,
}

/// One guest range of a resource: (guest address, length, offset of the
/// range in the buffer).
type Range = (u64, u32, u64);

/// Where the planes of a picture go in a resource's scatter list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PlaneMap {
    /// One memory plane: the picture planes at the stream layout's offsets.
    Packed,
    /// Picture plane `p` starts at `spans[p].0` and must end by `spans[p].1`
    /// (offsets into the scatter list): the guest gave each plane its own
    /// memory (`PLANES_LAYOUT_PER_PLANE`) or its own offset in one buffer.
    Placed(Vec<(u64, u64)>),
}

impl Resource {
    /// Whether a picture of the stream layout fits: every plane within its
    /// memory. Checked for each queued buffer on every picture, so it
    /// allocates nothing.
    fn fits(&self, layout: &PictureLayout) -> bool {
        match &self.planes {
            PlaneMap::Packed => self.size >= layout.total_size(),
            PlaneMap::Placed(spans) => {
                spans.len() == layout.planes.len()
                    && spans
                        .iter()
                        .zip(&layout.planes)
                        .all(|(&(start, end), plane)| {
                            start
                                .checked_add(u64::from(plane.size))
                                .is_some_and(|plane_end| plane_end <= end)
                        })
            }
        }
    }

    /// The stream layout as it lands in this resource, if every plane fits.
    fn placed_layout<'l>(&self, layout: &'l PictureLayout) -> Option<Cow<'l, PictureLayout>> {
        if !self.fits(layout) {
            return None;
        }
        match &self.planes {
            PlaneMap::Packed => Some(Cow::Borrowed(layout)),
            PlaneMap::Placed(spans) => {
                let mut placed = layout.clone();
                for (plane, &(start, _)) in placed.planes.iter_mut().zip(spans) {
                    plane.offset = start;
                }
                Some(Cow::Owned(placed))
            }
        }
    }

    /// Calls `f(address, start, end)` for each piece of `[offset, offset +
    /// len)` that falls in one range; `start..end` indexes the caller's
    /// bytes. Returns false if the buffer is too short.
    fn for_each_piece(
        &self,
        offset: u64,
        len: usize,
        f: &mut dyn FnMut(GuestAddress, usize, usize) -> bool,
    ) -> bool {
        let end = offset.saturating_add(len as u64);
        if end > self.size {
            return false;
        }
        let first = self
            .ranges
            .partition_point(|&(_, l, start)| start + u64::from(l) <= offset);
        let mut done = 0usize;
        for &(addr, l, start) in self.ranges.get(first..).unwrap_or_default() {
            if done == len {
                break;
            }
            let within = offset + done as u64 - start;
            let take = (u64::from(l) - within).min((len - done) as u64) as usize;
            if !f(GuestAddress(addr + within), done, done + take) {
                return false;
            }
            done += take;
        }
        done == len
    }
}

/// A request whose reply waits.
struct Pending {
    chain: Chain,
    queue: DeviceQueue,
    stream_id: u32,
}

impl Pending {
    fn reply(self, bytes: &[u8]) {
        if let Err(e) = self.queue.reply(self.chain, bytes) {
            error!("stream {}: {e}", self.stream_id);
        }
    }

    fn buffer_done(self, timestamp: u64, flags: u32, size: u32) {
        let bytes = vv::resource_queue_reply(self.stream_id, timestamp, flags, size);
        self.reply(&bytes);
    }

    fn refuse(self, code: u32) {
        let bytes = hdr_reply(code, self.stream_id);
        self.reply(&bytes);
    }
}

enum InputItem {
    Buffer {
        resource_id: u32,
        timestamp: u64,
        size: u32,
        pending: Pending,
    },
    Drain,
}

struct QueuedOutput {
    resource_id: u32,
    generation: u64,
    pending: Pending,
}

enum Ready {
    /// A picture and its share of the budget.
    Picture(Box<dyn Picture>, Charge),
    Lost {
        timestamp: u64,
    },
}

struct StreamState {
    closed: bool,
    failed: bool,
    coded: CodedFormat,
    input_size: (u32, u32),
    input_buffer_bytes: u32,
    profile: Option<u32>,
    level: Option<u32>,
    output: PictureLayout,
    /// Whether the decoder has reported a picture size yet.
    output_known: bool,
    resources: HashMap<(QueueType, u32), Resource>,
    inputs: VecDeque<InputItem>,
    outputs: VecDeque<QueuedOutput>,
    ready: VecDeque<Ready>,
    drain: Option<Pending>,
    eos_pending: bool,
    /// Bumped when queued input is discarded or the coded format changes:
    /// the worker resets its decoder and drops what it was decoding.
    input_generation: u64,
    /// Bumped when the picture layout changes: only OUTPUT resources queued
    /// after that take the new pictures.
    output_generation: u64,
    /// OUTPUT resources were queued: the worker should pair pictures.
    pump: bool,
}

struct Stream {
    id: u32,
    state: Mutex<StreamState>,
    wake: Condvar,
    events: Arc<EventQueue>,
    budget: Arc<MemoryBudget>,
    /// Set with the stream lock held when the input being decoded became
    /// stale (a clear, a format change, the stream closing): the decoder
    /// stops at the next bitstream unit.
    cancel: AtomicBool,
    /// The stream's commands, run in order on its own thread, so that a
    /// command waiting for this stream's lock (held while a bitstream is
    /// copied in or pictures are written out) holds up no other stream.
    /// Taken when the stream is destroyed or the device reset, which ends
    /// the thread. Unbounded, but the transport hands out each head once
    /// until it is answered: at most a queue's worth of commands wait.
    commands: Mutex<Option<mpsc::Sender<(Command, Pending)>>>,
    /// Set by a reset: commands still waiting are dropped unanswered.
    dropped: AtomicBool,
}

impl Stream {
    fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a command to the stream's thread; gives it back if the thread
    /// is gone.
    fn submit(&self, command: Command, pending: Pending) -> Result<(), Pending> {
        let commands = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = commands.as_ref() else {
            return Err(pending);
        };
        sender
            .send((command, pending))
            .map_err(|mpsc::SendError((_, pending))| pending)
    }

    /// Ends the stream's command thread once it has run what it was given.
    fn stop_commands(&self) {
        self.commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// A stream's command thread: runs its commands in order until the stream
/// is destroyed or the device reset.
fn run_commands(stream: &Stream, kicks: &RwLock<()>, commands: mpsc::Receiver<(Command, Pending)>) {
    for (command, pending) in commands {
        // As a kick does: a reset waits for the command under way, and
        // commands popped before it are dropped, not answered after it.
        let _kick = kicks.read().unwrap_or_else(PoisonError::into_inner);
        if stream.dropped.load(Ordering::Acquire) {
            continue;
        }
        if matches!(command, Command::StreamDestroy) {
            close_stream(stream);
            pending.reply(&hdr_reply(resp::OK_NODATA, stream.id));
            return;
        }
        if let Err(refusal) = stream_command(stream, command, pending) {
            debug!("stream {}: {refusal}", stream.id);
        }
    }
}

/// Event buffers the guest posted, and events waiting for one.
#[derive(Default)]
struct EventQueue {
    inner: Mutex<EventInner>,
}

#[derive(Default)]
struct EventInner {
    buffers: VecDeque<(Chain, DeviceQueue)>,
    waiting: VecDeque<vv::Event>,
}

impl EventQueue {
    fn lock(&self) -> MutexGuard<'_, EventInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn post(&self, event_type: u32, stream_id: u32) {
        let event = vv::Event {
            event_type: event_type.into(),
            stream_id: stream_id.into(),
        };
        let mut inner = self.lock();
        if inner.waiting.len() >= MAX_PENDING_EVENTS {
            warn_limited!("event queue starved: dropping an event");
            inner.waiting.pop_front();
        }
        inner.waiting.push_back(event);
        Self::deliver(&mut inner);
    }

    fn add_buffers(&self, buffers: Vec<Chain>, queue: &DeviceQueue) {
        let mut inner = self.lock();
        inner
            .buffers
            .extend(buffers.into_iter().map(|c| (c, queue.clone())));
        Self::deliver(&mut inner);
    }

    fn deliver(inner: &mut EventInner) {
        while !inner.waiting.is_empty() && !inner.buffers.is_empty() {
            let (Some(event), Some((chain, queue))) =
                (inner.waiting.pop_front(), inner.buffers.pop_front())
            else {
                return;
            };
            if let Err(e) = queue.reply(chain, vm_memory::ByteValued::as_slice(&event)) {
                error!("event: {e}");
            }
        }
    }

    fn clear(&self) {
        let mut inner = self.lock();
        inner.buffers.clear();
        inner.waiting.clear();
    }
}

/// The decoder device.
pub struct DecoderDevice {
    factory: Arc<dyn DecoderFactory>,
    formats: Vec<CodedFormat>,
    streams: Mutex<HashMap<u32, Arc<Stream>>>,
    events: Arc<EventQueue>,
    budget: Arc<MemoryBudget>,
    /// Decoding threads still running, those of destroyed streams included.
    live_workers: Arc<AtomicUsize>,
    /// Held shared by a kick from its pop to its last reply, and by a
    /// stream's command thread while it runs a command; taken exclusively
    /// by a reset: a chain popped before the reset is answered before the
    /// reset returns or dropped by it, never answered into the ring the
    /// frontend sets up afterwards.
    kicks: Arc<RwLock<()>>,
}

impl DecoderDevice {
    /// A decoder offering the coded formats `factory` supports, within a
    /// budget of its own of `DEFAULT_MEMORY_LIMIT`.
    pub fn new(factory: Arc<dyn DecoderFactory>) -> Self {
        Self::with_budget(factory, MemoryBudget::new(DEFAULT_MEMORY_LIMIT))
    }

    /// A decoder offering the coded formats `factory` supports, charging
    /// what guests make it hold to `budget`.
    pub fn with_budget(factory: Arc<dyn DecoderFactory>, budget: Arc<MemoryBudget>) -> Self {
        let formats = CodedFormat::ALL
            .into_iter()
            .filter(|f| factory.supports(*f))
            .collect();
        Self {
            factory,
            formats,
            streams: Mutex::new(HashMap::new()),
            events: Arc::new(EventQueue::default()),
            budget,
            live_workers: Arc::new(AtomicUsize::new(0)),
            kicks: Arc::new(RwLock::new(())),
        }
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<u32, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stream(&self, id: u32) -> Result<Arc<Stream>, DecoderError> {
        self.streams()
            .get(&id)
            .cloned()
            .ok_or(DecoderError::InvalidStreamId)
    }

    fn handle_command(&self, chain: Chain, queue: &DeviceQueue) {
        let parsed = match chain_reader(&chain) {
            Ok(mut reader) => parse_request(&mut reader, MAX_ENTRIES_PER_RESOURCE),
            Err(e) => {
                debug!("unreadable request: {e}");
                Err(vv::RequestError {
                    stream_id: 0,
                    error: vv::ProtocolError::Chain(e.to_string()),
                })
            }
        };
        let request = match parsed {
            Ok(request) => request,
            Err(e) => {
                debug!("malformed request: {e}");
                let _ = queue
                    .reply(chain, &hdr_reply(e.error.response_code(), e.stream_id))
                    .map_err(|e| error!("{e}"));
                return;
            }
        };
        let stream_id = request.stream_id;
        let pending = Pending {
            chain,
            queue: queue.clone(),
            stream_id,
        };
        if let Err(refusal) = self.dispatch(stream_id, request.command, pending) {
            debug!("stream {stream_id}: {refusal}");
        }
    }

    /// Runs one command. Replies through `pending`, now or later.
    fn dispatch(
        &self,
        stream_id: u32,
        command: Command,
        pending: Pending,
    ) -> Result<(), DecoderError> {
        let result = match command {
            Command::QueryCapability(queue) => Ok(Some(self.capabilities(queue))),
            Command::StreamCreate {
                in_mem_type,
                out_mem_type,
                coded_format,
            } => self
                .create_stream(stream_id, in_mem_type, out_mem_type, coded_format)
                .map(|()| Some(hdr_reply(resp::OK_NODATA, stream_id))),
            Command::StreamDestroy => {
                // Later commands find no stream; those before it run first,
                // then the stream's thread closes it and replies.
                let Some(stream) = self.streams().remove(&stream_id) else {
                    pending.refuse(DecoderError::InvalidStreamId.code());
                    return Err(DecoderError::InvalidStreamId);
                };
                let submitted = stream.submit(Command::StreamDestroy, pending);
                stream.stop_commands();
                if let Err(pending) = submitted {
                    close_stream(&stream);
                    pending.reply(&hdr_reply(resp::OK_NODATA, stream_id));
                }
                return Ok(());
            }
            Command::QueryControl {
                control,
                format: coded,
            } => self.query_control(stream_id, control, coded).map(Some),
            other => {
                let refusal = DecoderError::InvalidStreamId;
                return match self.stream(stream_id) {
                    Ok(stream) => stream.submit(other, pending).map_err(|pending| {
                        pending.refuse(refusal.code());
                        refusal
                    }),
                    Err(refusal) => {
                        pending.refuse(refusal.code());
                        Err(refusal)
                    }
                };
            }
        };
        match result {
            Ok(Some(bytes)) => {
                pending.reply(&bytes);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(refusal) => {
                pending.refuse(refusal.code());
                Err(refusal)
            }
        }
    }

    fn capabilities(&self, queue: QueueType) -> Vec<u8> {
        let mut out = Vec::new();
        let (count, other_mask) = match queue {
            QueueType::Input => (self.formats.len(), (1u64 << RAW_FORMATS.len()) - 1),
            QueueType::Output => (RAW_FORMATS.len(), (1u64 << self.formats.len()) - 1),
        };
        push(
            &mut out,
            &QueryCapabilityResp {
                hdr: vv::CmdHdr {
                    type_: resp::OK_QUERY_CAPABILITY.into(),
                    stream_id: 0.into(),
                },
                num_descs: (count as u32).into(),
                padding: [0; 4],
            },
        );
        let codes: Vec<u32> = match queue {
            QueueType::Input => self.formats.iter().map(|f| coded_to_wire(*f)).collect(),
            QueueType::Output => RAW_FORMATS.iter().map(|f| raw_to_wire(*f)).collect(),
        };
        let range = |min: u32, max: u32, step: u32| FormatRange {
            min: min.into(),
            max: max.into(),
            step: step.into(),
            padding: [0; 4],
        };
        for code in codes {
            push(
                &mut out,
                &FormatDesc {
                    mask: other_mask.into(),
                    format: code.into(),
                    planes_layout: vv::PLANES_LAYOUT_SINGLE_BUFFER.into(),
                    plane_align: 1.into(),
                    num_frames: 1.into(),
                },
            );
            push(
                &mut out,
                &FormatFrame {
                    width: range(MIN_DIMENSION, MAX_DIMENSION, 1),
                    height: range(MIN_DIMENSION, MAX_DIMENSION, 1),
                    num_rates: 1.into(),
                    padding: [0; 4],
                },
            );
            push(&mut out, &range(1, 120, 1));
        }
        out
    }

    fn create_stream(
        &self,
        id: u32,
        in_mem_type: u32,
        out_mem_type: u32,
        coded_format: u32,
    ) -> Result<(), DecoderError> {
        if in_mem_type != vv::MEM_TYPE_GUEST_PAGES || out_mem_type != vv::MEM_TYPE_GUEST_PAGES {
            return Err(DecoderError::InvalidParameter);
        }
        let coded = coded_from_wire(coded_format)
            .filter(|f| self.formats.contains(f))
            .ok_or(DecoderError::InvalidParameter)?;
        let mut streams = self.streams();
        if streams.contains_key(&id) {
            return Err(DecoderError::InvalidStreamId);
        }
        if self.live_workers.load(Ordering::Acquire) >= MAX_STREAMS {
            return Err(DecoderError::OutOfMemory);
        }
        let (commands, orders) = mpsc::channel();
        let stream = Arc::new(Stream {
            id,
            state: Mutex::new(StreamState {
                closed: false,
                failed: false,
                coded,
                input_size: (0, 0),
                input_buffer_bytes: DEFAULT_INPUT_BYTES,
                profile: None,
                level: None,
                output: PictureLayout::packed(PixelFormat::Nv12, DEFAULT_SIZE.0, DEFAULT_SIZE.1),
                output_known: false,
                resources: HashMap::new(),
                inputs: VecDeque::new(),
                outputs: VecDeque::new(),
                ready: VecDeque::new(),
                drain: None,
                eos_pending: false,
                input_generation: 0,
                output_generation: 0,
                pump: false,
            }),
            wake: Condvar::new(),
            events: self.events.clone(),
            budget: self.budget.clone(),
            cancel: AtomicBool::new(false),
            commands: Mutex::new(Some(commands)),
            dropped: AtomicBool::new(false),
        });
        let runner = stream.clone();
        let kicks = self.kicks.clone();
        thread::Builder::new()
            .name(format!("stream-{id}"))
            .spawn(move || run_commands(&runner, &kicks, orders))
            .map_err(|e| {
                error!("cannot start a stream's command thread: {e}");
                DecoderError::OutOfMemory
            })?;
        let worker = stream.clone();
        let factory = self.factory.clone();
        let live = LiveWorker::new(&self.live_workers);
        thread::Builder::new()
            .name(format!("decode-{id}"))
            .spawn(move || {
                Worker::new(&worker, factory.as_ref()).run();
                drop(live);
            })
            .map_err(|e| {
                error!("cannot start a decoding thread: {e}");
                stream.stop_commands();
                DecoderError::OutOfMemory
            })?;
        streams.insert(id, stream);
        Ok(())
    }

    fn query_control(
        &self,
        stream_id: u32,
        control: u32,
        coded: u32,
    ) -> Result<Vec<u8>, DecoderError> {
        let coded = coded_from_wire(coded)
            .filter(|f| self.formats.contains(f))
            .ok_or(DecoderError::InvalidParameter)?;
        let values = control_values(control, coded);
        if values.is_empty() {
            return Err(DecoderError::UnsupportedControl);
        }
        let mut out = Vec::new();
        push(
            &mut out,
            &QueryControlResp {
                hdr: vv::CmdHdr {
                    type_: resp::OK_QUERY_CONTROL.into(),
                    stream_id: stream_id.into(),
                },
                num: (values.len() as u32).into(),
                padding: [0; 4],
            },
        );
        for value in values {
            out.extend_from_slice(&value.to_le_bytes());
        }
        Ok(out)
    }

    fn close_all(&self) {
        let streams: Vec<_> = self.streams().drain().map(|(_, s)| s).collect();
        for stream in streams {
            stream.dropped.store(true, Ordering::Release);
            stream.stop_commands();
            let mut st = stream.lock();
            // Chains of a reset queue are dropped, never completed.
            st.inputs.clear();
            st.outputs.clear();
            st.drain = None;
            st.closed = true;
            stream.cancel.store(true, Ordering::Relaxed);
            stream.wake.notify_all();
        }
        self.events.clear();
    }
}

impl Drop for DecoderDevice {
    fn drop(&mut self) {
        self.close_all();
    }
}

impl VirtioDevice for DecoderDevice {
    fn num_queues(&self) -> usize {
        2
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << vv::F_RESOURCE_GUEST_PAGES) | (1 << vv::F_RESOURCE_NON_CONTIG)
    }

    fn config(&self) -> Vec<u8> {
        let mut config = Config {
            version: 0.into(),
            max_caps_length: MAX_CAPS_LENGTH.into(),
            max_resp_length: MAX_RESP_LENGTH.into(),
            device_name: [0; 32],
        };
        config.device_name[..DEVICE_NAME.len()].copy_from_slice(DEVICE_NAME);
        vm_memory::ByteValued::as_slice(&config).to_vec()
    }

    fn handle_kick(&self, queue: &DeviceQueue) {
        let _kick = self.kicks.read().unwrap_or_else(PoisonError::into_inner);
        let chains = match queue.pop_all() {
            Ok(chains) => chains,
            Err(e) => {
                error!("{e}");
                return;
            }
        };
        match queue.index() {
            COMMAND_QUEUE => {
                for chain in chains {
                    self.handle_command(chain, queue);
                }
            }
            EVENT_QUEUE => self.events.add_buffers(chains, queue),
            other => {
                warn!("kick on unknown queue {other}");
                for chain in chains {
                    let _ = queue.complete(chain.head_index(), 0);
                }
            }
        }
    }

    fn reset(&self) {
        let _no_kick = self.kicks.write().unwrap_or_else(PoisonError::into_inner);
        self.close_all();
    }
}

/// Closes a stream: every pending request comes back with an error.
fn close_stream(stream: &Stream) {
    let mut st = stream.lock();
    clear_input(stream, &mut st);
    clear_output(&mut st);
    st.resources.clear();
    st.closed = true;
    stream.wake.notify_all();
}

/// Returns queued bitstream buffers with ERR, cancels a drain, and stops
/// the decoding of what was taken already.
fn clear_input(stream: &Stream, st: &mut StreamState) {
    stream.cancel.store(true, Ordering::Relaxed);
    for item in std::mem::take(&mut st.inputs) {
        if let InputItem::Buffer {
            resource_id,
            pending,
            ..
        } = item
        {
            if let Some(r) = st.resources.get_mut(&(QueueType::Input, resource_id)) {
                r.queued = false;
            }
            pending.buffer_done(0, buffer_flag::ERR, 0);
        }
    }
    if let Some(drain) = st.drain.take() {
        drain.refuse(resp::ERR_INVALID_OPERATION);
    }
    st.eos_pending = false;
    st.ready.clear();
    st.input_generation += 1;
}

/// Returns queued picture buffers with ERR.
fn clear_output(st: &mut StreamState) {
    for out in std::mem::take(&mut st.outputs) {
        if let Some(r) = st.resources.get_mut(&(QueueType::Output, out.resource_id)) {
            r.queued = false;
        }
        out.pending.buffer_done(0, buffer_flag::ERR, 0);
    }
}

/// Runs a command that names an existing stream.
fn stream_command(stream: &Stream, command: Command, pending: Pending) -> Result<(), DecoderError> {
    let id = stream.id;
    let mut st = stream.lock();
    let result: Result<Option<Vec<u8>>, DecoderError> = match command {
        Command::StreamDrain => {
            if st.drain.is_some() || st.closed || fault::drain_refused() {
                Err(DecoderError::InvalidOperation)
            } else {
                st.drain = Some(pending);
                st.inputs.push_back(InputItem::Drain);
                stream.wake.notify_all();
                return Ok(());
            }
        }
        Command::ResourceCreate {
            queue,
            resource_id,
            planes_layout,
            planes,
        } => create_resource(
            &mut st,
            &stream.budget,
            &pending.queue,
            queue,
            resource_id,
            planes_layout,
            planes,
        )
        .map(|()| Some(hdr_reply(resp::OK_NODATA, id))),
        Command::ResourceQueue {
            queue,
            resource_id,
            timestamp,
            data_sizes,
        } => {
            return queue_resource(
                stream,
                &mut st,
                queue,
                resource_id,
                timestamp,
                &data_sizes,
                pending,
            )
        }
        Command::ResourceDestroyAll(queue) => {
            match queue {
                QueueType::Input => clear_input(stream, &mut st),
                QueueType::Output => clear_output(&mut st),
            }
            st.resources.retain(|(q, _), _| *q != queue);
            Ok(Some(hdr_reply(resp::OK_NODATA, id)))
        }
        Command::QueueClear(queue) => {
            // Test fault: an answer that leaves the buffers queued.
            let fault = fault::queue_clear_reply(resp::OK_NODATA, resp::ERR_INVALID_OPERATION);
            if fault.is_none() {
                match queue {
                    QueueType::Input => clear_input(stream, &mut st),
                    QueueType::Output => clear_output(&mut st),
                }
                stream.wake.notify_all();
            }
            Ok(Some(hdr_reply(fault.unwrap_or(resp::OK_NODATA), id)))
        }
        Command::GetParams { queue, ext } => Ok(Some(params_reply(&st, id, queue, ext))),
        Command::SetParams {
            params,
            resource_type,
        } => set_params(stream, &mut st, &params, resource_type)
            .map(|()| Some(hdr_reply(resp::OK_NODATA, id))),
        Command::GetControl(control_type) => {
            let values = control_values(control_type, st.coded);
            let chosen = match control_type {
                control::PROFILE => st.profile,
                _ => st.level,
            };
            match chosen.or_else(|| values.first().copied()) {
                Some(value) => {
                    let mut out = Vec::new();
                    push(
                        &mut out,
                        &vv::GetControlResp {
                            hdr: vv::CmdHdr {
                                type_: resp::OK_GET_CONTROL.into(),
                                stream_id: id.into(),
                            },
                            value: value.into(),
                            padding: [0; 4],
                        },
                    );
                    Ok(Some(out))
                }
                None => Err(DecoderError::UnsupportedControl),
            }
        }
        Command::SetControl {
            control: control_type,
            value,
        } => {
            let values = control_values(control_type, st.coded);
            if values.is_empty() {
                Err(DecoderError::UnsupportedControl)
            } else if !values.contains(&value) {
                Err(DecoderError::InvalidParameter)
            } else {
                if control_type == control::PROFILE {
                    st.profile = Some(value);
                } else {
                    st.level = Some(value);
                }
                Ok(Some(hdr_reply(resp::OK_NODATA, id)))
            }
        }
        // Device-level commands never reach a stream.
        Command::QueryCapability(_)
        | Command::StreamCreate { .. }
        | Command::StreamDestroy
        | Command::QueryControl { .. } => Err(DecoderError::InvalidOperation),
    };
    drop(st);
    match result {
        Ok(Some(bytes)) => {
            pending.reply(&bytes);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(refusal) => {
            pending.refuse(refusal.code());
            Err(refusal)
        }
    }
}

fn create_resource(
    st: &mut StreamState,
    budget: &Arc<MemoryBudget>,
    queue: &DeviceQueue,
    queue_type: QueueType,
    resource_id: u32,
    planes_layout: u32,
    planes: Vec<PlaneEntries>,
) -> Result<(), DecoderError> {
    // Bitstream buffers have one plane; pictures may come in one buffer or
    // one per plane (multi-planar V4L2 formats such as NV12M).
    let per_plane = match planes_layout {
        vv::PLANES_LAYOUT_SINGLE_BUFFER => false,
        vv::PLANES_LAYOUT_PER_PLANE => true,
        _ => return Err(DecoderError::InvalidParameter),
    };
    let multi_plane = planes.len() > 1;
    if multi_plane && queue_type == QueueType::Input
        || per_plane && planes.iter().any(|p| p.entries.is_empty())
    {
        return Err(DecoderError::InvalidParameter);
    }
    let key = (queue_type, resource_id);
    match st.resources.get(&key) {
        Some(existing) if existing.queued => return Err(DecoderError::InvalidResourceId),
        Some(_) => {}
        None => {
            let count = st
                .resources
                .keys()
                .filter(|(q, _)| *q == queue_type)
                .count();
            if count >= MAX_RESOURCES_PER_QUEUE {
                return Err(DecoderError::OutOfMemory);
            }
        }
    }
    let count: usize = planes.iter().map(|p| p.entries.len()).sum();
    let metadata = std::mem::size_of::<Resource>() + count * std::mem::size_of::<Range>();
    let charge = budget
        .try_charge(metadata as u64)
        .ok_or(DecoderError::OutOfMemory)?;
    let mem = queue.memory();
    let mut ranges = Vec::with_capacity(count);
    let mut size = 0u64;
    let mut spans = Vec::with_capacity(planes.len());
    for plane in planes {
        let memory_start = size;
        for (addr, len) in plane.entries {
            let valid = len > 0
                && mem.check_range(GuestAddress(addr), len as usize, Permissions::ReadWrite);
            if !valid {
                return Err(DecoderError::InvalidParameter);
            }
            ranges.push((addr, len, size));
            size += u64::from(len);
            if size > MAX_RESOURCE_BYTES {
                return Err(DecoderError::OutOfMemory);
            }
        }
        spans.push((memory_start, size, u64::from(plane.offset)));
    }
    let planes = if !multi_plane {
        PlaneMap::Packed
    } else if per_plane {
        PlaneMap::Placed(
            spans
                .iter()
                .map(|&(start, end, offset)| (start + offset, end))
                .collect(),
        )
    } else {
        PlaneMap::Placed(spans.iter().map(|&(_, _, offset)| (offset, size)).collect())
    };
    st.resources.insert(
        key,
        Resource {
            ranges,
            size,
            planes,
            queued: false,
            _charge: charge,
        },
    );
    Ok(())
}

fn queue_resource(
    stream: &Stream,
    st: &mut StreamState,
    queue: QueueType,
    resource_id: u32,
    timestamp: u64,
    data_sizes: &[u32],
    pending: Pending,
) -> Result<(), DecoderError> {
    let refusal = (|| {
        if st.closed {
            return Err(DecoderError::InvalidOperation);
        }
        let resource = st
            .resources
            .get_mut(&(queue, resource_id))
            .ok_or(DecoderError::InvalidResourceId)?;
        if resource.queued {
            return Err(DecoderError::InvalidResourceId);
        }
        match queue {
            QueueType::Input => {
                let size = *data_sizes.first().ok_or(DecoderError::InvalidParameter)?;
                if u64::from(size) > resource.size || size > MAX_INPUT_BYTES {
                    return Err(DecoderError::InvalidParameter);
                }
                Ok(Some(size))
            }
            QueueType::Output => Ok(None),
        }
    })();
    let size = match refusal {
        Ok(size) => size,
        Err(refusal) => {
            pending.refuse(refusal.code());
            return Err(refusal);
        }
    };
    if let Some(r) = st.resources.get_mut(&(queue, resource_id)) {
        r.queued = true;
    }
    match size {
        Some(size) => st.inputs.push_back(InputItem::Buffer {
            resource_id,
            timestamp,
            size,
            pending,
        }),
        None => {
            let generation = st.output_generation;
            st.outputs.push_back(QueuedOutput {
                resource_id,
                generation,
                pending,
            });
            st.pump = true;
        }
    }
    stream.wake.notify_all();
    Ok(())
}

fn params_reply(st: &StreamState, stream_id: u32, queue: QueueType, ext: bool) -> Vec<u8> {
    let mut params = vv::Params {
        queue_type: queue.code().into(),
        max_buffers: MAX_BUFFERS.into(),
        ..Default::default()
    };
    match queue {
        QueueType::Input => {
            let (w, h) = if st.input_size.0 > 0 {
                st.input_size
            } else {
                (st.output.width, st.output.height)
            };
            params.format = coded_to_wire(st.coded).into();
            params.frame_width = w.into();
            params.frame_height = h.into();
            params.min_buffers = INPUT_MIN_BUFFERS.into();
            params.num_planes = 1.into();
            params.plane_formats[0].plane_size = st.input_buffer_bytes.into();
        }
        QueueType::Output => {
            let layout = &st.output;
            params.format = raw_to_wire(layout.format).into();
            params.frame_width = layout.width.into();
            params.frame_height = layout.height.into();
            params.min_buffers = OUTPUT_MIN_BUFFERS.into();
            params.crop = vv::Crop {
                left: 0.into(),
                top: 0.into(),
                width: layout.width.into(),
                height: layout.height.into(),
            };
            params.num_planes = (layout.planes.len() as u32).into();
            for (dst, plane) in params.plane_formats.iter_mut().zip(&layout.planes) {
                dst.plane_size = plane.size.into();
                dst.stride = plane.stride.into();
            }
            crate::fault::distort_layout(&mut params);
        }
    }
    let mut out = hdr_reply(resp::OK_GET_PARAMS, stream_id);
    if ext {
        push(
            &mut out,
            &ParamsExt {
                base: params,
                resource_type: vv::MEM_TYPE_GUEST_PAGES.into(),
                padding: [0; 4],
            },
        );
    } else {
        push(&mut out, &params);
    }
    out
}

fn set_params(
    stream: &Stream,
    st: &mut StreamState,
    params: &vv::Params,
    resource_type: Option<u32>,
) -> Result<(), DecoderError> {
    if resource_type.is_some_and(|t| t != vv::MEM_TYPE_GUEST_PAGES) {
        return Err(DecoderError::InvalidParameter);
    }
    let queue = match params.queue_type.to_native() {
        0x100 => QueueType::Input,
        0x101 => QueueType::Output,
        _ => return Err(DecoderError::InvalidParameter),
    };
    let code = params.format.to_native();
    match queue {
        QueueType::Input => {
            if code != 0 {
                let coded = coded_from_wire(code).ok_or(DecoderError::InvalidParameter)?;
                if coded != st.coded {
                    st.coded = coded;
                    st.profile = None;
                    st.level = None;
                    clear_input(stream, st);
                }
            }
            let (w, h) = (
                params.frame_width.to_native(),
                params.frame_height.to_native(),
            );
            if w > MAX_DIMENSION || h > MAX_DIMENSION {
                return Err(DecoderError::InvalidParameter);
            }
            if w > 0 && h > 0 {
                st.input_size = (w, h);
                if !st.output_known {
                    st.output = PictureLayout::packed(
                        st.output.format,
                        w.max(MIN_DIMENSION),
                        h.max(MIN_DIMENSION),
                    );
                }
            }
            let size = params.plane_formats[0].plane_size.to_native();
            if size > 0 {
                st.input_buffer_bytes = size.clamp(4096, MAX_INPUT_BYTES);
            }
        }
        QueueType::Output => {
            if code != 0 {
                let raw = raw_from_wire(code).ok_or(DecoderError::InvalidParameter)?;
                if raw != st.output.format {
                    st.output = PictureLayout::packed(raw, st.output.width, st.output.height);
                }
            }
        }
    }
    Ok(())
}

/// Counts a decoding thread as live until it ends.
struct LiveWorker(Arc<AtomicUsize>);

impl LiveWorker {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for LiveWorker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the worker does next.
enum Job {
    /// Write ready pictures into newly queued OUTPUT resources.
    Pump,
    /// Hand a copy of a bitstream buffer to the decoder and decode it.
    Decode {
        data: Vec<u8>,
        timestamp: u64,
        charge: Charge,
    },
    /// Drain the decoder.
    Flush,
    /// Go on decoding the input the decoder holds.
    Resume,
}

/// Input the decoder holds and has not finished.
struct Busy {
    /// The input generation it belongs to.
    generation: u64,
    /// A drain: EOS follows once it is through.
    flush: bool,
    /// The bitstream copy's share of the budget.
    _input: Option<Charge>,
}

/// A stream's decoder and what it is charged for.
struct EngineSlot {
    format: CodedFormat,
    generation: u64,
    decoder: Box<dyn Engine>,
    /// The pictures the decoder may keep inside, charged for the picture
    /// size its header declared.
    held: Option<((u32, u32), Charge)>,
}

/// Budget reserved for the pictures of one stretch of decoding.
struct Reserved {
    charge: Charge,
    /// Pictures of the stream's present size that fit in `charge`.
    pictures: usize,
}

/// Why the worker cannot decode now.
enum Stall {
    /// Nothing to decode, or `MAX_READY_PICTURES` wait for buffers.
    Idle,
    /// The budget has no room for a picture or the next bitstream copy.
    Budget,
}

/// A stream's worker: decodes in queue order until the stream closes, a
/// stretch at a time, each stretch ending when the stream's pictures
/// waiting for buffers reach `MAX_READY_PICTURES` or the budget.
struct Worker<'a> {
    stream: &'a Stream,
    factory: &'a dyn DecoderFactory,
    engine: Option<EngineSlot>,
    busy: Option<Busy>,
}

impl<'a> Worker<'a> {
    fn new(stream: &'a Stream, factory: &'a dyn DecoderFactory) -> Self {
        Self {
            stream,
            factory,
            engine: None,
            busy: None,
        }
    }

    fn run(mut self) {
        loop {
            let mut st = self.stream.lock();
            let (job, room) = loop {
                if st.closed {
                    return;
                }
                if self
                    .busy
                    .as_ref()
                    .is_some_and(|b| b.generation != st.input_generation)
                {
                    // Its input was cleared: the decoder is reset before the
                    // next job.
                    self.busy = None;
                }
                if st.pump {
                    st.pump = false;
                    break (Job::Pump, None);
                }
                match self.next_job(&mut st) {
                    Ok((job, room)) => break (job, Some(room)),
                    Err(Stall::Idle) => {
                        st = self.stream.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                    Err(Stall::Budget) => {
                        st = match self.stream.wake.wait_timeout(st, BUDGET_RETRY) {
                            Ok((st, _)) => st,
                            Err(p) => p.into_inner().0,
                        };
                    }
                }
            };
            let (generation, coded) = (st.input_generation, st.coded);
            if !matches!(job, Job::Pump) {
                // Under the lock: a clear from now on bumps the generation
                // and sets the flag again.
                self.stream.cancel.store(false, Ordering::Relaxed);
            }
            drop(st);
            self.run_job(job, room, generation, coded);
        }
    }

    /// The next decoding job and the room reserved for its pictures.
    fn next_job(&mut self, st: &mut StreamState) -> Result<(Job, Reserved), Stall> {
        if self.busy.is_none() && st.inputs.is_empty() {
            return Err(Stall::Idle);
        }
        let free = MAX_READY_PICTURES.saturating_sub(st.ready.len());
        if free == 0 {
            return Err(Stall::Idle);
        }
        if self.busy.is_some() {
            return Ok((Job::Resume, self.reserve_room(st, free)?));
        }
        loop {
            // The bitstream copy is charged before the room for pictures:
            // both must fit.
            let input_bytes = match st.inputs.front() {
                None => return Err(Stall::Idle),
                Some(InputItem::Drain) => None,
                Some(InputItem::Buffer { size, .. }) => Some(*size as usize + INPUT_PADDING),
            };
            let charge = match input_bytes {
                Some(bytes) => Some(
                    self.stream
                        .budget
                        .try_charge(bytes as u64)
                        .ok_or(Stall::Budget)?,
                ),
                None => None,
            };
            let room = self.reserve_room(st, free)?;
            let Some(item) = st.inputs.pop_front() else {
                return Err(Stall::Idle);
            };
            if let Some(job) = take_input(self.stream, st, item, charge) {
                return Ok((job, room));
            }
        }
    }

    /// Room for at least one picture of the size the stream has now, for
    /// `free` if they fit; reserved so that streams decoding at the same
    /// time cannot together go over the budget. Until the decoder has read
    /// the stream's header the size is a guess: room for one picture, and
    /// the decoder's own pictures are charged before more.
    fn reserve_room(&self, st: &StreamState, free: usize) -> Result<Reserved, Stall> {
        let free = if st.output_known { free } else { 1 };
        let picture = picture_bytes(st.output.width, st.output.height).max(1);
        let charge = self
            .stream
            .budget
            .try_charge_between(picture, picture.saturating_mul(free as u64))
            .ok_or(Stall::Budget)?;
        let pictures = usize::try_from(charge.bytes() / picture).unwrap_or(free);
        Ok(Reserved { charge, pictures })
    }

    fn run_job(&mut self, job: Job, room: Option<Reserved>, generation: u64, coded: CodedFormat) {
        let mut produced = Vec::new();
        let mut fatal = None;
        let mut flushed = false;
        if let Some(room) = &room {
            match self.decode(job, room, generation, coded, &mut produced) {
                Ok(done) => flushed = done,
                Err(e) => fatal = Some(e),
            }
        }
        let header_size = match &self.engine {
            Some(slot) if fatal.is_none() => slot.decoder.header_size(),
            _ => None,
        };
        if let Some(e) = header_size.and_then(|size| self.charge_held_pictures(size)) {
            fatal = Some(e);
        }
        if fatal.is_some() {
            // Drop the decoder and what it holds.
            self.engine = None;
            self.busy = None;
        }
        let stream = self.stream;
        let mut st = stream.lock();
        if st.closed {
            return;
        }
        if room.is_some() && st.input_generation != generation {
            // Input was cleared while decoding: what came out is stale.
            return;
        }
        if let Some(e) = fatal {
            // Guest data or the guest's use of the budget ends a stream: a
            // guest can make this happen at will.
            warn_limited!("stream {}: {e}", stream.id);
            st.failed = true;
            stream.events.post(event::ERROR, stream.id);
        }
        // Clients wait for the first format before they give picture
        // buffers, so it is announced as soon as the header is read, not
        // with the first picture, which reordering may hold back for several
        // inputs. Later changes go with the pictures: those of the old size
        // still come first.
        if let Some((w, h)) = header_size.filter(|_| !st.output_known) {
            if valid_size(w, h) {
                announce_size(stream, &mut st, w, h);
            }
        }
        if let Some(Reserved {
            charge: mut room, ..
        }) = room
        {
            for event in produced {
                st.ready.push_back(match event {
                    DecodeEvent::Picture(picture) => {
                        let (w, h) = picture.size();
                        let charge = room.split(picture_bytes(w, h));
                        Ready::Picture(picture, charge)
                    }
                    DecodeEvent::Corrupt { timestamp } => Ready::Lost { timestamp },
                });
            }
        }
        if flushed {
            st.eos_pending = true;
        }
        pump(stream, &mut st);
    }

    /// Runs a decoding job within `room`; returns whether a drain ended.
    fn decode(
        &mut self,
        job: Job,
        room: &Reserved,
        generation: u64,
        coded: CodedFormat,
        produced: &mut Vec<DecodeEvent>,
    ) -> Result<bool, String> {
        if !matches!(job, Job::Resume) {
            self.fresh_engine(generation, coded)?;
        }
        let Some(slot) = self.engine.as_mut() else {
            return Ok(false);
        };
        match job {
            Job::Decode {
                data,
                timestamp,
                charge,
            } => {
                self.busy = Some(Busy {
                    generation,
                    flush: false,
                    _input: Some(charge),
                });
                slot.decoder
                    .feed(data, timestamp)
                    .map_err(|e| e.to_string())?;
            }
            Job::Flush => {
                self.busy = Some(Busy {
                    generation,
                    flush: true,
                    _input: None,
                });
                slot.decoder.start_flush();
            }
            Job::Resume | Job::Pump => {}
        }
        // As many pictures as the reservation holds; fewer if they are
        // larger than the stream's present size.
        let room = Room {
            events: room.pictures,
            bytes: room.charge.bytes(),
        };
        let progress = slot
            .decoder
            .run(produced, room, &self.stream.cancel)
            .map_err(|e| e.to_string())?;
        Ok(match progress {
            Progress::Full => false,
            Progress::Idle => self.busy.take().is_some_and(|b| b.flush),
            Progress::Cancelled => {
                self.busy = None;
                false
            }
        })
    }

    /// Makes sure the decoder is for `coded` and `generation`: a new
    /// generation means a seek or a format change, so the decoder is reset
    /// or remade.
    fn fresh_engine(&mut self, generation: u64, coded: CodedFormat) -> Result<(), String> {
        if self
            .engine
            .as_ref()
            .is_some_and(|slot| slot.format == coded && slot.generation == generation)
        {
            return Ok(());
        }
        let reused = self
            .engine
            .take()
            .filter(|slot| slot.format == coded)
            .and_then(|mut slot| slot.decoder.reset().is_ok().then_some(slot));
        self.engine = Some(match reused {
            Some(slot) => EngineSlot { generation, ..slot },
            None => EngineSlot {
                format: coded,
                generation,
                decoder: self.factory.create(coded).map_err(|e| e.to_string())?,
                held: None,
            },
        });
        Ok(())
    }

    /// Charges the pictures the decoder may keep inside once its header
    /// declared their size; an error if the budget has no room for them.
    fn charge_held_pictures(&mut self, (w, h): (u32, u32)) -> Option<String> {
        let slot = self.engine.as_mut()?;
        if slot.held.as_ref().is_some_and(|(size, _)| *size == (w, h)) {
            return None;
        }
        slot.held = None;
        let count = slot.decoder.max_held_pictures();
        let bytes = u64::from(count).saturating_mul(picture_bytes(w, h));
        match self.stream.budget.try_charge(bytes) {
            Some(charge) => {
                slot.held = Some(((w, h), charge));
                None
            }
            None => Some(format!(
                "{w}x{h} pictures need {} MiB for the decoder's {count} pictures: \
                 over the memory budget ({} of {} MiB in use)",
                bytes >> 20,
                self.stream.budget.used() >> 20,
                self.stream.budget.limit() >> 20
            )),
        }
    }
}

/// Turns a queued input into a job. A bitstream buffer is copied out of the
/// guest, `charge` paying for the copy, and returned at once; the decoder
/// works on the copy.
fn take_input(
    stream: &Stream,
    st: &mut StreamState,
    item: InputItem,
    charge: Option<Charge>,
) -> Option<Job> {
    match item {
        InputItem::Drain => Some(Job::Flush),
        InputItem::Buffer {
            resource_id,
            timestamp,
            size,
            pending,
        } => {
            let key = (QueueType::Input, resource_id);
            let data = st.resources.get_mut(&key).and_then(|r| {
                r.queued = false;
                let mem = pending.queue.memory();
                // Room for the padding the decoder adds, so it need not
                // copy the buffer again.
                let mut data = Vec::with_capacity(size as usize + INPUT_PADDING);
                data.resize(size as usize, 0);
                let ok = r.for_each_piece(0, data.len(), &mut |addr, start, end| {
                    data.get_mut(start..end)
                        .is_some_and(|dst| mem.read_slice(dst, addr).is_ok())
                });
                ok.then_some(data)
            });
            let failed = st.failed;
            match (data, charge) {
                (Some(data), Some(charge)) if !failed => {
                    pending.buffer_done(timestamp, 0, 0);
                    Some(Job::Decode {
                        data,
                        timestamp,
                        charge,
                    })
                }
                _ => {
                    debug!("stream {}: input {resource_id} unusable", stream.id);
                    pending.buffer_done(timestamp, buffer_flag::ERR, 0);
                    None
                }
            }
        }
    }
}

/// Pairs ready pictures, then a pending EOS, with queued OUTPUT resources.
fn pump(stream: &Stream, st: &mut StreamState) {
    loop {
        if let Some(Ready::Picture(picture, _)) = st.ready.front() {
            let (w, h) = picture.size();
            if !st.output_known || (w, h) != (st.output.width, st.output.height) {
                if !valid_size(w, h) {
                    st.ready.pop_front();
                    st.ready.push_front(Ready::Lost { timestamp: 0 });
                    continue;
                }
                announce_size(stream, st, w, h);
            }
        }
        let generation = st.output_generation;
        let needed = st.output.total_size();
        let usable = |st: &StreamState, o: &QueuedOutput| {
            o.generation == generation
                && st
                    .resources
                    .get(&(QueueType::Output, o.resource_id))
                    .is_some_and(|r| r.fits(&st.output))
        };
        if st.ready.is_empty() {
            // EOS needs no picture room: any queued buffer carries it.
            if st.eos_pending && st.drain.is_some() {
                if let Some(out) = st.outputs.pop_front() {
                    release(st, out.resource_id);
                    out.pending.buffer_done(0, buffer_flag::EOS, 0);
                    st.eos_pending = false;
                    if let Some(drain) = st.drain.take() {
                        drain.reply(&hdr_reply(resp::OK_NODATA, stream.id));
                    }
                }
            }
            return;
        }
        let Some(pos) = st.outputs.iter().position(|o| usable(st, o)) else {
            return;
        };
        let Some(ready) = st.ready.pop_front() else {
            return;
        };
        let Some(out) = st.outputs.remove(pos) else {
            return;
        };
        release(st, out.resource_id);
        match ready {
            Ready::Lost { timestamp } => out.pending.buffer_done(timestamp, buffer_flag::ERR, 0),
            Ready::Picture(picture, _charge) => {
                let timestamp = picture.timestamp();
                let written = write_to_resource(st, out.resource_id, picture.as_ref(), &out);
                let flags = if written && !picture.is_corrupt() {
                    0
                } else {
                    buffer_flag::ERR
                };
                let size = u32::try_from(needed).unwrap_or(u32::MAX);
                out.pending.buffer_done(timestamp, flags, size);
            }
        }
    }
}

fn valid_size(w: u32, h: u32) -> bool {
    (1..=MAX_DIMENSION).contains(&w) && (1..=MAX_DIMENSION).contains(&h)
}

/// Takes `w`x`h` as the stream's picture size and tells the guest.
fn announce_size(stream: &Stream, st: &mut StreamState, w: u32, h: u32) {
    let layout = PictureLayout::packed(st.output.format, w, h);
    // Buffers queued for the layout the guest already had stay good when the
    // stream confirms it; after a real change only buffers queued after the
    // event are used.
    if layout != st.output {
        st.output = layout;
        st.output_generation += 1;
    }
    st.output_known = true;
    stream
        .events
        .post(event::DECODER_RESOLUTION_CHANGED, stream.id);
}

fn release(st: &mut StreamState, resource_id: u32) {
    if let Some(r) = st.resources.get_mut(&(QueueType::Output, resource_id)) {
        r.queued = false;
    }
}

fn write_to_resource(
    st: &StreamState,
    resource_id: u32,
    picture: &dyn Picture,
    out: &QueuedOutput,
) -> bool {
    let Some(resource) = st.resources.get(&(QueueType::Output, resource_id)) else {
        return false;
    };
    let Some(layout) = resource.placed_layout(&st.output) else {
        return false;
    };
    let Some(planes) = picture.planes() else {
        debug!("picture in a pixel format the device cannot output");
        return false;
    };
    let (w, h) = picture.size();
    let Some(_permit) = out.pending.queue.write_permit() else {
        return false;
    };
    let mem = out.pending.queue.memory();
    let mut sink = |offset: u64, bytes: &[u8]| {
        resource.for_each_piece(offset, bytes.len(), &mut |addr, start, end| {
            bytes
                .get(start..end)
                .is_some_and(|src| mem.write_slice(src, addr).is_ok())
        })
    };
    match write_picture(&planes, w, h, &layout, &mut sink) {
        Ok(()) => true,
        Err(e) => {
            debug!("picture not written: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests;
