//! A stream's decoding thread: takes queued bitstream buffers in order,
//! runs the engine outside the stream lock, and pairs the pictures it
//! produces with queued OUTPUT resources.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::debug;
use vm_memory::Bytes;

use super::resource::{release, write_to_resource};
use super::stream::{
    announce_size, valid_size, InputItem, QueuedOutput, Ready, Stream, StreamState,
};
use super::{Charge, MAX_READY_PICTURES};
use crate::engine::decode::{
    picture_bytes, CodedFormat, DecodeEvent, Decoder as Engine, DecoderFactory, Progress, Room,
    INPUT_PADDING,
};
use crate::log_limit::warn_limited;
use crate::protocol::virtio_video::{buffer_flag, event, QueueType, Response};

/// How long a worker short of budget waits before it looks again (budget
/// freed by other streams does not wake it).
const BUDGET_RETRY: Duration = Duration::from_millis(20);

/// Counts a decoding thread as live until it ends.
pub(super) struct LiveWorker(Arc<AtomicUsize>);

impl LiveWorker {
    pub(super) fn new(count: &Arc<AtomicUsize>) -> Self {
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
pub(super) enum Job {
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
pub(super) struct Busy {
    /// The input generation it belongs to.
    generation: u64,
    /// A drain: EOS follows once it is through.
    flush: bool,
    /// The bitstream copy's share of the budget.
    _input: Option<Charge>,
}

/// A stream's decoder and what it is charged for.
pub(super) struct EngineSlot {
    format: CodedFormat,
    generation: u64,
    decoder: Box<dyn Engine>,
    /// The pictures the decoder may keep inside, charged for the picture
    /// size its header declared.
    held: Option<((u32, u32), Charge)>,
}

/// Budget reserved for the pictures of one stretch of decoding.
pub(super) struct Reserved {
    charge: Charge,
    /// Pictures of the stream's present size that fit in `charge`.
    pictures: usize,
}

/// Why the worker cannot decode now.
pub(super) enum Stall {
    /// Nothing to decode, or `MAX_READY_PICTURES` wait for buffers.
    Idle,
    /// The budget has no room for a picture or the next bitstream copy.
    Budget,
}

/// A stream's worker: decodes in queue order until the stream closes, a
/// stretch at a time, each stretch ending when the stream's pictures
/// waiting for buffers reach `MAX_READY_PICTURES` or the budget.
pub(super) struct Worker<'a> {
    stream: &'a Stream,
    factory: &'a dyn DecoderFactory,
    engine: Option<EngineSlot>,
    busy: Option<Busy>,
}

impl<'a> Worker<'a> {
    pub(super) fn new(stream: &'a Stream, factory: &'a dyn DecoderFactory) -> Self {
        Self {
            stream,
            factory,
            engine: None,
            busy: None,
        }
    }

    pub(super) fn run(mut self) {
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
                if crate::fault::stream_error() {
                    return Err("test fault: the decoder failed for good".to_string());
                }
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
pub(super) fn take_input(
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
                let mem = pending.queue().memory();
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
pub(super) fn pump(stream: &Stream, st: &mut StreamState) {
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
                        drain.reply(Response::Ok);
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
                let mut flags = if written && !picture.is_corrupt() {
                    0
                } else {
                    buffer_flag::ERR
                };
                // The drain is answered after its EOS, as a real one is.
                let late_drain = if std::mem::take(&mut st.eos_on_next_picture) {
                    flags |= buffer_flag::EOS;
                    st.drain.take()
                } else {
                    None
                };
                let size = u32::try_from(needed).unwrap_or(u32::MAX);
                out.pending.buffer_done(timestamp, flags, size);
                if let Some(drain) = late_drain {
                    drain.reply(Response::Ok);
                }
            }
        }
    }
}
