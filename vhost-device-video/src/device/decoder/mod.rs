//! The virtio-video v3 stateful decoder (virtio ID 31).
//!
//! Commands are parsed on the vring thread; device commands are answered
//! there, a stream's commands in order on that stream's own thread. Each
//! stream also has a worker thread that owns its decoder engine: it takes
//! bitstream buffers in queue order, decodes outside any lock, and pairs
//! decoded pictures with the guest's OUTPUT-queue (CAPTURE) resources.
//! RESOURCE_QUEUE and STREAM_DRAIN complete asynchronously; everything else
//! synchronously. Pending requests
//! that a QUEUE_CLEAR, RESOURCE_DESTROY_ALL or STREAM_DESTROY discards come
//! back with `BUFFER_FLAG_ERR` before that command's own reply.
//!
//! What a guest makes the device hold is bounded: at most
//! `MAX_READY_PICTURES` decoded pictures wait per stream (the worker stops
//! feeding the decoder when they are there and goes on with the rest of the
//! input as buffers come back), and pictures, bitstream copies, the
//! decoders' own pictures and resource scatter lists are charged to a
//! [`MemoryBudget`] shared by the whole daemon.
//!
//! This module is the device: the virtio queues, command dispatch and the
//! map of streams. `stream` holds a stream's state and runs the commands
//! that name it, `worker` is its decoding thread, `resource` the guest
//! buffers pictures and bitstreams live in, `events` the event queue and
//! `budget` the memory budget.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread;

use log::{debug, error, warn};
use thiserror::Error as ThisError;

use crate::engine::decode::{
    CodedFormat, DecoderFactory, PictureLayout, PixelFormat, MAX_DIMENSION,
};
use crate::protocol::virtio_video::{
    self as vv, control, parse_request, Command, Config, ErrorCode, Format, FormatCapability,
    FrameCapability, QueueType, Response, ValueRange,
};
use crate::transport::{DeviceQueue, Request, VirtioDevice};

mod budget;
mod events;
mod resource;
mod stream;
mod worker;

pub use budget::{Charge, MemoryBudget, DEFAULT_MEMORY_LIMIT, MIN_MEMORY_LIMIT};
use events::EventQueue;
use stream::{close_stream, run_commands, Stream, StreamState};
use worker::{LiveWorker, Worker};

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
    /// The error response.
    pub fn code(self) -> ErrorCode {
        match self {
            DecoderError::InvalidOperation => ErrorCode::InvalidOperation,
            DecoderError::OutOfMemory => ErrorCode::OutOfMemory,
            DecoderError::InvalidStreamId => ErrorCode::InvalidStreamId,
            DecoderError::InvalidResourceId => ErrorCode::InvalidResourceId,
            DecoderError::InvalidParameter => ErrorCode::InvalidParameter,
            DecoderError::UnsupportedControl => ErrorCode::UnsupportedControl,
        }
    }
}

// The one-to-one mapping between the wire's formats and the engine's.

/// The engine's coded format for `format`, if it is a coded format.
fn engine_coded(format: Format) -> Option<CodedFormat> {
    match format {
        Format::H264 => Some(CodedFormat::H264),
        Format::Hevc => Some(CodedFormat::Hevc),
        Format::Vp8 => Some(CodedFormat::Vp8),
        Format::Vp9 => Some(CodedFormat::Vp9),
        Format::Av1 => Some(CodedFormat::Av1),
        Format::Nv12 | Format::Yuv420 => None,
    }
}

fn wire_coded(format: CodedFormat) -> Format {
    match format {
        CodedFormat::H264 => Format::H264,
        CodedFormat::Hevc => Format::Hevc,
        CodedFormat::Vp8 => Format::Vp8,
        CodedFormat::Vp9 => Format::Vp9,
        CodedFormat::Av1 => Format::Av1,
    }
}

/// The engine's pixel format for `format`, if it is a picture format.
fn engine_pixel(format: Format) -> Option<PixelFormat> {
    match format {
        Format::Nv12 => Some(PixelFormat::Nv12),
        Format::Yuv420 => Some(PixelFormat::Yuv420),
        Format::H264 | Format::Hevc | Format::Vp8 | Format::Vp9 | Format::Av1 => None,
    }
}

fn wire_pixel(format: PixelFormat) -> Format {
    match format {
        PixelFormat::Nv12 => Format::Nv12,
        PixelFormat::Yuv420 => Format::Yuv420,
    }
}

/// The values of a profile or level control for `format`.
fn control_values(control_type: u32, format: CodedFormat) -> &'static [u32] {
    let format = wire_coded(format);
    match control_type {
        control::PROFILE => format.profiles(),
        _ => format.levels(),
    }
}

/// A request whose reply waits.
struct Pending {
    request: Request,
    stream_id: u32,
}

impl Pending {
    /// The queue the request came from (and the guest memory behind it).
    fn queue(&self) -> &DeviceQueue {
        self.request.queue()
    }

    fn reply(self, response: Response) {
        let bytes = response.encode(self.stream_id);
        if let Err(e) = self.request.reply(&bytes) {
            error!("stream {}: {e}", self.stream_id);
        }
    }

    fn buffer_done(self, timestamp: u64, flags: u32, size: u32) {
        self.reply(Response::ResourceQueue {
            timestamp,
            flags,
            size,
        });
    }

    fn refuse(self, code: ErrorCode) {
        self.reply(Response::Error(code));
    }

    /// Answers with a command's outcome: its response, nothing yet (the
    /// reply comes later) or its refusal, which is handed back.
    fn answer(self, outcome: Result<Option<Response>, DecoderError>) -> Result<(), DecoderError> {
        match outcome {
            Ok(Some(response)) => {
                self.reply(response);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(refusal) => {
                self.refuse(refusal.code());
                Err(refusal)
            }
        }
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

    fn handle_command(&self, request: Request) {
        let parsed = match request.reader() {
            Ok(mut reader) => parse_request(&mut reader, MAX_ENTRIES_PER_RESOURCE),
            Err(e) => {
                debug!("unreadable request: {e}");
                Err(vv::RequestError {
                    stream_id: 0,
                    error: vv::ProtocolError::Chain(e.to_string()),
                })
            }
        };
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                debug!("malformed request: {e}");
                let reply = Response::Error(e.error.response_code()).encode(e.stream_id);
                let _ = request.reply(&reply).map_err(|e| error!("{e}"));
                return;
            }
        };
        let stream_id = parsed.stream_id;
        let pending = Pending { request, stream_id };
        if let Err(refusal) = self.dispatch(stream_id, parsed.command, pending) {
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
                .map(|()| Some(Response::Ok)),
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
                    pending.reply(Response::Ok);
                }
                return Ok(());
            }
            Command::QueryControl {
                control,
                format: coded,
            } => self.query_control(control, coded).map(Some),
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
        pending.answer(result)
    }

    fn capabilities(&self, queue: QueueType) -> Response {
        let (formats, other_count): (Vec<Format>, usize) = match queue {
            QueueType::Input => (
                self.formats.iter().map(|f| wire_coded(*f)).collect(),
                PixelFormat::ALL.len(),
            ),
            QueueType::Output => (
                PixelFormat::ALL.into_iter().map(wire_pixel).collect(),
                self.formats.len(),
            ),
        };
        let dimension = ValueRange {
            min: MIN_DIMENSION,
            max: MAX_DIMENSION,
            step: 1,
        };
        let frame = FrameCapability {
            width: dimension,
            height: dimension,
            rates: vec![ValueRange {
                min: 1,
                max: 120,
                step: 1,
            }],
        };
        Response::QueryCapability(
            formats
                .into_iter()
                .map(|format| FormatCapability {
                    format,
                    mask: (1u64 << other_count) - 1,
                    planes_layout: vv::PLANES_LAYOUT_SINGLE_BUFFER,
                    plane_align: 1,
                    frames: vec![frame.clone()],
                })
                .collect(),
        )
    }

    fn create_stream(
        &self,
        id: u32,
        in_mem_type: u32,
        out_mem_type: u32,
        coded_format: Format,
    ) -> Result<(), DecoderError> {
        if in_mem_type != vv::MEM_TYPE_GUEST_PAGES || out_mem_type != vv::MEM_TYPE_GUEST_PAGES {
            return Err(DecoderError::InvalidParameter);
        }
        let coded = engine_coded(coded_format)
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
                eos_on_next_picture: false,
                input_generation: 0,
                output_generation: 0,
                output_generation_read: 0,
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

    fn query_control(&self, control: u32, coded: Format) -> Result<Response, DecoderError> {
        let coded = engine_coded(coded)
            .filter(|f| self.formats.contains(f))
            .ok_or(DecoderError::InvalidParameter)?;
        let values = control_values(control, coded);
        if values.is_empty() {
            return Err(DecoderError::UnsupportedControl);
        }
        Ok(Response::QueryControl(values.to_vec()))
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
        let requests = match queue.pop_requests() {
            Ok(requests) => requests,
            Err(e) => {
                error!("{e}");
                return;
            }
        };
        match queue.index() {
            COMMAND_QUEUE => {
                for request in requests {
                    self.handle_command(request);
                }
            }
            EVENT_QUEUE => self.events.add_buffers(requests),
            other => {
                warn!("kick on unknown queue {other}");
                for request in requests {
                    let _ = request.complete(0);
                }
            }
        }
    }

    fn reset(&self) {
        let _no_kick = self.kicks.write().unwrap_or_else(PoisonError::into_inner);
        self.close_all();
    }
}

#[cfg(test)]
mod tests;
