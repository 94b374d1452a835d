//! Per-stream state and the commands that name a stream, run in order on
//! the stream's own command thread.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use log::debug;

use super::events::EventQueue;
use super::resource::{create_resource, Resource};
use super::{
    control_values, engine_coded, engine_pixel, wire_coded, wire_pixel, Charge, DecoderError,
    MemoryBudget, Pending, INPUT_MIN_BUFFERS, MAX_BUFFERS, MAX_INPUT_BYTES, MIN_DIMENSION,
    OUTPUT_MIN_BUFFERS,
};
use crate::engine::decode::{CodedFormat, Picture, PictureLayout, MAX_DIMENSION};
use crate::fault;
use crate::protocol::virtio_video::{
    self as vv, buffer_flag, control, event, Command, CropRect, ErrorCode, QueueParams, QueueType,
    Response,
};

pub(super) enum InputItem {
    Buffer {
        resource_id: u32,
        timestamp: u64,
        size: u32,
        pending: Pending,
    },
    Drain,
}

pub(super) struct QueuedOutput {
    pub(super) resource_id: u32,
    pub(super) generation: u64,
    pub(super) pending: Pending,
}

pub(super) enum Ready {
    /// A picture and its share of the budget.
    Picture(Box<dyn Picture>, Charge),
    Lost {
        timestamp: u64,
    },
}

pub(super) struct StreamState {
    pub(super) closed: bool,
    pub(super) failed: bool,
    pub(super) coded: CodedFormat,
    pub(super) input_size: (u32, u32),
    pub(super) input_buffer_bytes: u32,
    pub(super) profile: Option<u32>,
    pub(super) level: Option<u32>,
    pub(super) output: PictureLayout,
    /// Whether the decoder has reported a picture size yet.
    pub(super) output_known: bool,
    pub(super) resources: HashMap<(QueueType, u32), Resource>,
    pub(super) inputs: VecDeque<InputItem>,
    pub(super) outputs: VecDeque<QueuedOutput>,
    pub(super) ready: VecDeque<Ready>,
    pub(super) drain: Option<Pending>,
    pub(super) eos_pending: bool,
    /// Test fault `drain-survives-clear`: a drain a clear kept ends with
    /// EOS on the next picture.
    pub(super) eos_on_next_picture: bool,
    /// Bumped when queued input is discarded or the coded format changes:
    /// the worker resets its decoder and drops what it was decoding.
    pub(super) input_generation: u64,
    /// Bumped when the picture layout changes: only OUTPUT resources queued
    /// for the new layout take the new pictures.
    pub(super) output_generation: u64,
    /// The output generation whose layout the guest has read (GET_PARAMS of
    /// the OUTPUT queue). Resources it queues are meant for that layout: a
    /// driver queues picture buffers of the old layout until it has read
    /// the new one, however long after the event that is.
    pub(super) output_generation_read: u64,
    /// OUTPUT resources were queued: the worker should pair pictures.
    pub(super) pump: bool,
}

pub(super) struct Stream {
    pub(super) id: u32,
    pub(super) state: Mutex<StreamState>,
    pub(super) wake: Condvar,
    pub(super) events: Arc<EventQueue>,
    pub(super) budget: Arc<MemoryBudget>,
    /// Set with the stream lock held when the input being decoded became
    /// stale (a clear, a format change, the stream closing): the decoder
    /// stops at the next bitstream unit.
    pub(super) cancel: AtomicBool,
    /// The stream's commands, run in order on its own thread, so that a
    /// command waiting for this stream's lock (held while a bitstream is
    /// copied in or pictures are written out) holds up no other stream.
    /// Taken when the stream is destroyed or the device reset, which ends
    /// the thread. Unbounded, but the transport hands out each head once
    /// until it is answered: at most a queue's worth of commands wait.
    pub(super) commands: Mutex<Option<mpsc::Sender<(Command, Pending)>>>,
    /// Set by a reset: commands still waiting are dropped unanswered.
    pub(super) dropped: AtomicBool,
}

impl Stream {
    pub(super) fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a command to the stream's thread; gives it back if the thread
    /// is gone.
    pub(super) fn submit(&self, command: Command, pending: Pending) -> Result<(), Pending> {
        let commands = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = commands.as_ref() else {
            return Err(pending);
        };
        sender
            .send((command, pending))
            .map_err(|mpsc::SendError((_, pending))| pending)
    }

    /// Ends the stream's command thread once it has run what it was given.
    pub(super) fn stop_commands(&self) {
        self.commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// A stream's command thread: runs its commands in order until the stream
/// is destroyed or the device reset.
pub(super) fn run_commands(
    stream: &Stream,
    kicks: &RwLock<()>,
    commands: mpsc::Receiver<(Command, Pending)>,
) {
    for (command, pending) in commands {
        // As a kick does: a reset waits for the command under way, and
        // commands popped before it are dropped, not answered after it.
        let _kick = kicks.read().unwrap_or_else(PoisonError::into_inner);
        if stream.dropped.load(Ordering::Acquire) {
            continue;
        }
        if matches!(command, Command::StreamDestroy) {
            close_stream(stream);
            pending.reply(Response::Ok);
            return;
        }
        if let Err(refusal) = stream_command(stream, command, pending) {
            debug!("stream {}: {refusal}", stream.id);
        }
    }
}

/// Closes a stream: every pending request comes back with an error.
pub(super) fn close_stream(stream: &Stream) {
    let mut st = stream.lock();
    clear_input(stream, &mut st);
    if let Some(drain) = st.drain.take() {
        drain.refuse(ErrorCode::InvalidOperation);
    }
    clear_output(&mut st);
    st.resources.clear();
    st.closed = true;
    stream.wake.notify_all();
}

/// Returns queued bitstream buffers with ERR, cancels a drain, and stops
/// the decoding of what was taken already.
pub(super) fn clear_input(stream: &Stream, st: &mut StreamState) {
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
    if st.drain.is_some() && fault::drain_survives_clear() {
        st.eos_on_next_picture = true;
    } else if let Some(drain) = st.drain.take() {
        drain.refuse(ErrorCode::InvalidOperation);
    }
    st.eos_pending = false;
    st.ready.clear();
    st.input_generation += 1;
}

/// Returns queued picture buffers with ERR.
pub(super) fn clear_output(st: &mut StreamState) {
    for out in std::mem::take(&mut st.outputs) {
        if let Some(r) = st.resources.get_mut(&(QueueType::Output, out.resource_id)) {
            r.queued = false;
        }
        out.pending.buffer_done(0, buffer_flag::ERR, 0);
    }
}

/// Runs a command that names an existing stream.
pub(super) fn stream_command(
    stream: &Stream,
    command: Command,
    pending: Pending,
) -> Result<(), DecoderError> {
    let mut st = stream.lock();
    let result: Result<Option<Response>, DecoderError> = match command {
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
            pending.queue(),
            queue,
            resource_id,
            planes_layout,
            planes,
        )
        .map(|()| Some(Response::Ok)),
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
            Ok(Some(Response::Ok))
        }
        Command::QueueClear(queue) => {
            // Test fault: an answer that leaves the buffers queued.
            let fault = fault::queue_clear_reply(
                Response::Ok,
                Response::Error(ErrorCode::InvalidOperation),
            );
            if fault.is_none() {
                match queue {
                    QueueType::Input => clear_input(stream, &mut st),
                    QueueType::Output => clear_output(&mut st),
                }
                stream.wake.notify_all();
            }
            Ok(Some(fault.unwrap_or(Response::Ok)))
        }
        Command::GetParams { queue, ext } => {
            if queue == QueueType::Output {
                // The reply tells the guest the present layout: from now on
                // it queues buffers for it.
                st.output_generation_read = st.output_generation;
            }
            Ok(Some(Response::GetParams {
                params: queue_params(&st, queue),
                resource_type: ext.then_some(vv::MEM_TYPE_GUEST_PAGES),
            }))
        }
        Command::SetParams {
            params,
            resource_type,
        } => set_params(stream, &mut st, &params, resource_type).map(|()| Some(Response::Ok)),
        Command::GetControl(control_type) => {
            let values = control_values(control_type, st.coded);
            let chosen = match control_type {
                control::PROFILE => st.profile,
                _ => st.level,
            };
            match chosen.or_else(|| values.first().copied()) {
                Some(value) => Ok(Some(Response::GetControl(value))),
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
                Ok(Some(Response::Ok))
            }
        }
        // Device-level commands never reach a stream.
        Command::QueryCapability(_)
        | Command::StreamCreate { .. }
        | Command::StreamDestroy
        | Command::QueryControl { .. } => Err(DecoderError::InvalidOperation),
    };
    drop(st);
    pending.answer(result)
}

pub(super) fn queue_resource(
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
            let generation = st.output_generation_read;
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

/// What GET_PARAMS reports for `queue`.
fn queue_params(st: &StreamState, queue: QueueType) -> QueueParams {
    let mut params = QueueParams::new(queue);
    params.max_buffers = MAX_BUFFERS;
    match queue {
        QueueType::Input => {
            let (w, h) = if st.input_size.0 > 0 {
                st.input_size
            } else {
                (st.output.width, st.output.height)
            };
            params.format = Some(wire_coded(st.coded));
            params.frame_width = w;
            params.frame_height = h;
            params.min_buffers = INPUT_MIN_BUFFERS;
            params.num_planes = 1;
            params.plane_formats[0].plane_size = st.input_buffer_bytes;
        }
        QueueType::Output => {
            let layout = &st.output;
            params.format = Some(wire_pixel(layout.format));
            params.frame_width = layout.width;
            params.frame_height = layout.height;
            params.min_buffers = OUTPUT_MIN_BUFFERS;
            params.crop = CropRect {
                left: 0,
                top: 0,
                width: layout.width,
                height: layout.height,
            };
            params.num_planes = layout.planes.len() as u32;
            for (dst, plane) in params.plane_formats.iter_mut().zip(&layout.planes) {
                dst.plane_size = plane.size;
                dst.stride = plane.stride;
            }
            crate::fault::distort_layout(&mut params);
        }
    }
    params
}

pub(super) fn set_params(
    stream: &Stream,
    st: &mut StreamState,
    params: &QueueParams,
    resource_type: Option<u32>,
) -> Result<(), DecoderError> {
    if resource_type.is_some_and(|t| t != vv::MEM_TYPE_GUEST_PAGES) {
        return Err(DecoderError::InvalidParameter);
    }
    match params.queue {
        QueueType::Input => {
            if let Some(format) = params.format {
                let coded = engine_coded(format).ok_or(DecoderError::InvalidParameter)?;
                if coded != st.coded {
                    st.coded = coded;
                    st.profile = None;
                    st.level = None;
                    clear_input(stream, st);
                }
            }
            let (w, h) = (params.frame_width, params.frame_height);
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
            let size = params.plane_formats[0].plane_size;
            if size > 0 {
                st.input_buffer_bytes = size.clamp(4096, MAX_INPUT_BYTES);
            }
        }
        QueueType::Output => {
            if let Some(format) = params.format {
                let raw = engine_pixel(format).ok_or(DecoderError::InvalidParameter)?;
                if raw != st.output.format {
                    st.output = PictureLayout::packed(raw, st.output.width, st.output.height);
                }
            }
        }
    }
    Ok(())
}

pub(super) fn valid_size(w: u32, h: u32) -> bool {
    (1..=MAX_DIMENSION).contains(&w) && (1..=MAX_DIMENSION).contains(&h)
}

/// Takes `w`x`h` as the stream's picture size and tells the guest.
pub(super) fn announce_size(stream: &Stream, st: &mut StreamState, w: u32, h: u32) {
    let layout = PictureLayout::packed(st.output.format, w, h);
    // Buffers queued for the layout the guest already had stay good when the
    // stream confirms it; after a real change only buffers queued after the
    // guest has read the new layout are used.
    if layout != st.output {
        st.output = layout;
        st.output_generation += 1;
    }
    st.output_known = true;
    stream
        .events
        .post(event::DECODER_RESOLUTION_CHANGED, stream.id);
}
