//! The DW100-compatible dewarper device (`docs/protocol-dewarper.md`).
//!
//! One queue; each descriptor chain is one job. The vring thread only pops
//! chains and hands them to a pool of job workers, so several jobs run at
//! once and complete in any order. A worker reads the header, the map and
//! the source planes as one byte stream over the readable descriptors, runs
//! the remap engine and writes the status and the destination planes over the
//! writable descriptors. Maps are cached per context and generation.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use log::{debug, error, warn};
use thiserror::Error as ThisError;
use virtio_queue::{Reader, Writer};
use vm_memory::ByteValued;

use crate::engine::dewarp::{
    Crop, DestImage, DewarpEngine, DewarpError, ImageGeometry, PixelFormat, RemapParams,
    SourceImage, VertexMap, CELL_SIZE, MAX_HEIGHT, MAX_WIDTH, MIN_HEIGHT, MIN_WIDTH, SIZE_STEP,
};
use crate::log_limit::warn_limited;
use crate::protocol::dewarp::{
    self as wire, status, ImageLayout, JobError, ValidJob, VdwConfig, VdwJob, VdwStatus, WireCrop,
    WireFormat, WireGeometry, CONFIG_VERSION,
};
use crate::transport::{DeviceQueue, Request, RequestError, VirtioDevice};

/// The job queue.
const JOB_QUEUE: usize = 0;
/// Largest queue the device accepts.
const QUEUE_SIZE: usize = 1024;
/// Maps kept by default (one per V4L2 context).
pub const DEFAULT_MAP_CACHE_SLOTS: usize = 32;

/// Why a job failed; each maps to a status code.
#[derive(Debug, ThisError)]
enum Failure {
    #[error(transparent)]
    Chain(#[from] RequestError),
    #[error("device-readable part of {0} bytes cannot hold a job header")]
    ShortHeader(usize),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("context {context_id} has no map of generation {generation}")]
    MapRequired { context_id: u32, generation: u32 },
    #[error("cannot read the chain: {0}")]
    Read(std::io::Error),
    #[error("cannot write the chain: {0}")]
    Write(std::io::Error),
    #[error("remap engine: {0}")]
    Engine(DewarpError),
}

impl Failure {
    fn status(&self) -> u32 {
        match self {
            Failure::Chain(_) | Failure::ShortHeader(_) | Failure::Read(_) => status::ERR_MALFORMED,
            Failure::Job(e) => e.status(),
            Failure::MapRequired { .. } => status::ERR_MAP_REQUIRED,
            Failure::Write(_) | Failure::Engine(_) => status::ERR_INTERNAL,
        }
    }
}

/// The last map of each context, least recently used first out.
struct MapCache {
    slots: usize,
    /// `(context_id, generation, map)`, most recently used first.
    entries: VecDeque<(u32, u32, Arc<VertexMap>)>,
}

impl MapCache {
    fn new(slots: usize) -> Self {
        MapCache {
            slots: slots.max(1),
            entries: VecDeque::new(),
        }
    }

    fn get(&mut self, context_id: u32, generation: u32) -> Option<Arc<VertexMap>> {
        let index = self
            .entries
            .iter()
            .position(|(c, g, _)| (*c, *g) == (context_id, generation))?;
        let entry = self.entries.remove(index)?;
        let map = entry.2.clone();
        self.entries.push_front(entry);
        Some(map)
    }

    fn insert(&mut self, context_id: u32, generation: u32, map: Arc<VertexMap>) {
        self.entries.retain(|(c, _, _)| *c != context_id);
        self.entries.push_front((context_id, generation, map));
        self.entries.truncate(self.slots);
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// A popped chain on its way to a worker.
struct Work {
    request: Request,
    /// Device epoch when the chain was popped; a reset moves the epoch on
    /// and the chain is then dropped instead of completed.
    epoch: u64,
}

/// State the workers share with the device.
struct Shared {
    engine: Arc<dyn DewarpEngine>,
    maps: Mutex<MapCache>,
    epoch: AtomicU64,
    /// Held shared by every job while it runs and by every kick while it
    /// pops, taken exclusively by a reset: the frontend may hand a job's
    /// guest memory back to the guest driver once the reset returns, so no
    /// job may still be writing there, and no chain popped before the reset
    /// may carry the new epoch.
    running: RwLock<()>,
}

/// Per-worker buffers, reused from job to job.
#[derive(Default)]
struct Buffers {
    src: Vec<u8>,
    dst: Vec<u8>,
}

/// The dewarper device.
pub struct DewarperDevice {
    shared: Arc<Shared>,
    /// Bounded by the queue size: the transport hands out each head once
    /// until it is completed, so a full channel means a broken invariant.
    jobs: mpsc::SyncSender<Work>,
    map_cache_slots: usize,
}

impl DewarperDevice {
    /// A device running jobs on `workers` threads (at least one) with
    /// `engine`, keeping `map_cache_slots` maps.
    pub fn new(engine: Arc<dyn DewarpEngine>, workers: usize, map_cache_slots: usize) -> Self {
        let map_cache_slots = map_cache_slots.max(1);
        let shared = Arc::new(Shared {
            engine,
            maps: Mutex::new(MapCache::new(map_cache_slots)),
            epoch: AtomicU64::new(0),
            running: RwLock::new(()),
        });
        let (jobs, receiver) = mpsc::sync_channel::<Work>(QUEUE_SIZE);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..workers.max(1) {
            let (shared, receiver) = (shared.clone(), receiver.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("dewarp-job-{index}"))
                .spawn(move || {
                    let mut buffers = Buffers::default();
                    loop {
                        let next = receiver
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv();
                        // The device is gone once its sender is dropped.
                        let Ok(work) = next else { return };
                        shared.run(work, &mut buffers);
                    }
                });
            if let Err(e) = spawned {
                error!("cannot start dewarper worker {index}: {e}");
            }
        }
        DewarperDevice {
            shared,
            jobs,
            map_cache_slots,
        }
    }
}

impl Shared {
    fn run(&self, work: Work, buffers: &mut Buffers) {
        let Work { request, epoch } = work;
        let _running = self.running.read().unwrap_or_else(PoisonError::into_inner);
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        // Held for the whole job and its completion: a stopped ring waits
        // for it, and a job of a ring given up writes nothing.
        let queue = request.queue().clone();
        let Some(_permit) = queue.write_permit() else {
            return;
        };
        if let Some(delay) = crate::fault::job_delay() {
            std::thread::sleep(delay);
        }
        let used = self.process(&request, buffers);
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if let Err(e) = request.complete(used) {
            error!("dewarper: {e}");
        }
    }

    /// Runs the job of `request`; returns the used length.
    fn process(&self, request: &Request, buffers: &mut Buffers) -> usize {
        let mut status_writer = match request.writer(size_of::<VdwStatus>()) {
            Ok(writer) => writer,
            Err(e) => {
                warn_limited!("dewarper: no status can be written: {e}");
                return 0;
            }
        };
        let writable = status_writer.available_bytes();
        let mut sequence = 0;
        let start = Instant::now();
        let outcome = self.execute(
            request,
            writable,
            &mut status_writer,
            buffers,
            &mut sequence,
        );
        let (code, used) = match outcome {
            Ok(engine_time_ns) => {
                debug!("dewarper: job {sequence} done in {:?}", start.elapsed());
                let status = VdwStatus::new(status::OK, sequence, engine_time_ns);
                (status, writable)
            }
            Err(failure) => {
                warn_limited!("dewarper: job {sequence} failed: {failure}");
                let status = VdwStatus::new(failure.status(), sequence, 0);
                (status, size_of::<VdwStatus>())
            }
        };
        if let Err(e) = status_writer.write_all(code.as_slice()) {
            warn_limited!("dewarper: cannot write the status of job {sequence}: {e}");
            return 0;
        }
        used
    }

    /// Checks and runs the job; on success the destination is written after
    /// the status bytes of `writer` and the engine time returned.
    fn execute(
        &self,
        request: &Request,
        writable: usize,
        writer: &mut Writer<'_, ()>,
        buffers: &mut Buffers,
        sequence: &mut u32,
    ) -> Result<u64, Failure> {
        let mut reader = request.reader()?;
        let readable = reader.available_bytes();
        if readable < size_of::<VdwJob>() {
            return Err(Failure::ShortHeader(readable));
        }
        let header: VdwJob = reader.read_obj().map_err(Failure::Read)?;
        *sequence = header.sequence.to_native();
        let job = header.validate(readable, writable)?;
        let map = self.map_for(&job, &mut reader)?;

        read_image(&mut reader, &job.src, &mut buffers.src)?;
        // Zeroed so that padding never carries another job's pixels.
        buffers.dst.clear();
        buffers.dst.resize(job.dst.total_size, 0);
        let engine_time = self.remap(&job, &map, buffers)?;

        let mut data = writer
            .split_at(size_of::<VdwStatus>())
            .map_err(|e| Failure::Write(std::io::Error::other(e)))?;
        data.write_all(&buffers.dst).map_err(Failure::Write)?;
        Ok(engine_time)
    }

    /// The job's map: read from the chain (and cached) or from the cache.
    fn map_for(
        &self,
        job: &ValidJob,
        reader: &mut Reader<'_, ()>,
    ) -> Result<Arc<VertexMap>, Failure> {
        let mut cache = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        if !job.carries_map {
            return cache
                .get(job.context_id, job.map_generation)
                .filter(|map| (map.width(), map.height()) == (job.map_width, job.map_height))
                .ok_or(Failure::MapRequired {
                    context_id: job.context_id,
                    generation: job.map_generation,
                });
        }
        drop(cache);
        let mut bytes = vec![0u8; job.map_bytes()];
        reader.read_exact(&mut bytes).map_err(Failure::Read)?;
        let map = VertexMap::from_le_bytes(job.map_width, job.map_height, &bytes)
            .map_err(Failure::Engine)?;
        let map = Arc::new(map);
        cache = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        cache.insert(job.context_id, job.map_generation, map.clone());
        Ok(map)
    }

    /// Runs the engine from `buffers.src` into `buffers.dst`; returns the
    /// engine time in nanoseconds.
    fn remap(
        &self,
        job: &ValidJob,
        map: &VertexMap,
        buffers: &mut Buffers,
    ) -> Result<u64, Failure> {
        remap_job(&*self.engine, job, map, &buffers.src, &mut buffers.dst).map_err(Failure::Engine)
    }
}

/// Runs `engine` on one checked job: `src` holds the source image's memory
/// planes back to back, `dst` the destination's (as [`ImageLayout`] places
/// them). Bytes of `dst` outside the picture are left as they are. Returns
/// the engine time in nanoseconds. Every front of the dewarper (the
/// virtqueue here, the DW100 model's job socket) runs its jobs through this.
pub fn remap_job(
    engine: &dyn DewarpEngine,
    job: &ValidJob,
    map: &VertexMap,
    src: &[u8],
    dst: &mut [u8],
) -> Result<u64, DewarpError> {
    let (luma, chroma) = split(src, &job.src);
    let source = SourceImage {
        geometry: engine_geometry(&job.src.geometry),
        luma,
        chroma,
    };
    let (luma, chroma) = if job.dst.geometry.format.is_packed() {
        (dst, &mut [][..])
    } else {
        let chroma_start = job.dst.chroma_start.min(dst.len());
        dst.split_at_mut(chroma_start)
    };
    let mut dest = DestImage {
        geometry: engine_geometry(&job.dst.geometry),
        luma,
        chroma,
    };
    let params = RemapParams {
        map,
        crop: engine_crop(job.crop),
    };
    let start = Instant::now();
    engine.remap(&params, &source, &mut dest)?;
    Ok(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

// A job the wire's checks accept has sizes the engine takes and a map of
// the engine's cells.
const _: () = assert!(
    wire::MIN_WIDTH == MIN_WIDTH
        && wire::MIN_HEIGHT == MIN_HEIGHT
        && wire::MAX_WIDTH == MAX_WIDTH
        && wire::MAX_HEIGHT == MAX_HEIGHT
        && wire::SIZE_STEP == SIZE_STEP
        && wire::MAP_CELL_SIZE == CELL_SIZE
);

/// The engine's layout of a wire format.
fn engine_format(format: WireFormat) -> PixelFormat {
    match format {
        WireFormat::Nv12 => PixelFormat::Nv12,
        WireFormat::Nv21 => PixelFormat::Nv21,
        WireFormat::Nv16 => PixelFormat::Nv16,
        WireFormat::Nv61 => PixelFormat::Nv61,
        WireFormat::Yuyv => PixelFormat::Yuyv,
        WireFormat::Uyvy => PixelFormat::Uyvy,
    }
}

fn engine_geometry(geometry: &WireGeometry) -> ImageGeometry {
    ImageGeometry {
        format: engine_format(geometry.format),
        width: geometry.width,
        height: geometry.height,
        luma_stride: geometry.luma_stride,
        chroma_stride: geometry.chroma_stride,
    }
}

fn engine_crop(crop: WireCrop) -> Crop {
    Crop {
        left: crop.left,
        top: crop.top,
        width: crop.width,
        height: crop.height,
    }
}

/// The luma and chroma components of an image's bytes.
fn split<'a>(bytes: &'a [u8], layout: &ImageLayout) -> (&'a [u8], &'a [u8]) {
    if layout.geometry.format.is_packed() {
        (bytes, &[])
    } else {
        bytes.split_at(layout.chroma_start.min(bytes.len()))
    }
}

/// Reads an image's planes (validated size, backed by the chain) into `buffer`.
fn read_image(
    reader: &mut Reader<'_, ()>,
    layout: &ImageLayout,
    buffer: &mut Vec<u8>,
) -> Result<(), Failure> {
    buffer.resize(layout.total_size, 0);
    reader.read_exact(buffer).map_err(Failure::Read)
}

impl VirtioDevice for DewarperDevice {
    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        0
    }

    fn config(&self) -> Vec<u8> {
        let config = VdwConfig {
            version: CONFIG_VERSION.into(),
            max_width: MAX_WIDTH.into(),
            max_height: MAX_HEIGHT.into(),
            map_cache_slots: u32::try_from(self.map_cache_slots)
                .unwrap_or(u32::MAX)
                .into(),
        };
        config.as_slice().to_vec()
    }

    fn handle_kick(&self, queue: &DeviceQueue) {
        // Held across the pop: a reset waits for the chains of this kick to
        // be tagged with the epoch they were popped in, so that none of them
        // is completed into the ring the reset leaves behind.
        let _kick = self
            .shared
            .running
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        let requests = match queue.pop_requests() {
            Ok(requests) => requests,
            Err(e) => {
                error!("dewarper: {e}");
                return;
            }
        };
        if queue.index() != JOB_QUEUE {
            warn!("dewarper: kick on unknown queue {}", queue.index());
            for request in requests {
                let _ = request.complete(0);
            }
            return;
        }
        for request in requests {
            match self.jobs.try_send(Work { request, epoch }) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(Work { request, .. })) => {
                    error!("dewarper: job channel full, job {} refused", request.head());
                    let _ = request.complete(0);
                }
                Err(mpsc::TrySendError::Disconnected(Work { request, .. })) => {
                    error!("dewarper: no job worker running");
                    let _ = request.complete(0);
                }
            }
        }
    }

    fn reset(&self) {
        self.shared.epoch.fetch_add(1, Ordering::AcqRel);
        // Jobs of the old epoch still under way finish their writes first.
        drop(
            self.shared
                .running
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        );
        self.shared
            .maps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    //! The device driven through real split virtqueues in guest memory, by
    //! the crate's fake guest.

    use std::time::{Duration, Instant};

    use vm_memory::Le32;

    use super::*;
    use crate::engine::dewarp::{map_vertices, maps, FastEngine, ReferenceEngine};
    use crate::fake_guest::{ChainId, FakeGuest, Layout, Part, Used, DATA_START};
    use crate::protocol::dewarp::{image_descriptor, VDW_JOB_F_MAP};

    const MEM_SIZE: u64 = 64 << 20;

    type Guest = FakeGuest<DewarperDevice>;

    fn guest(slots: usize) -> Guest {
        guest_with_engine(slots, Arc::new(FastEngine::new(2)))
    }

    fn guest_with_engine(slots: usize, engine: Arc<dyn DewarpEngine>) -> Guest {
        let layout = Layout {
            memory: MEM_SIZE,
            ..Layout::default()
        };
        FakeGuest::new(Arc::new(DewarperDevice::new(engine, 3, slots)), layout)
    }

    /// A completed chain: used length, status and the bytes after it.
    struct Done {
        len: u32,
        status: u32,
        sequence: u32,
        data: Vec<u8>,
    }

    impl From<Used> for Done {
        fn from(used: Used) -> Self {
            let word = |o: usize| {
                if used.bytes.len() < o + 4 {
                    u32::MAX
                } else {
                    used.le32(o)
                }
            };
            Done {
                len: used.len,
                status: word(0),
                sequence: word(4),
                data: used.bytes.get(16..).unwrap_or_default().to_vec(),
            }
        }
    }

    /// Submits a chain and waits for it.
    fn run(h: &mut Guest, parts: &[Part<'_>]) -> Done {
        let chain = h.submit(0, parts);
        h.wait(chain).into()
    }

    /// A job: header fields, picture contents, map.
    struct Job {
        header: VdwJob,
        map: Option<VertexMap>,
        src: Vec<u8>,
        src_geometry: WireGeometry,
        dst_geometry: WireGeometry,
    }

    fn picture(geometry: &WireGeometry, seed: u32) -> Vec<u8> {
        let len = geometry.luma_extent() + geometry.chroma_extent();
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect()
    }

    fn job(
        src: (WireFormat, u32, u32, u32),
        dst: (WireFormat, u32, u32, u32),
        map: VertexMap,
        context_id: u32,
        generation: u32,
    ) -> Job {
        let src_geometry = WireGeometry::packed(src.0, src.1, src.2);
        let dst_geometry = WireGeometry::packed(dst.0, dst.1, dst.2);
        let header = VdwJob {
            context_id: context_id.into(),
            sequence: 77.into(),
            flags: VDW_JOB_F_MAP.into(),
            map_generation: generation.into(),
            map_width: map.width().into(),
            map_height: map.height().into(),
            crop: [0, 0, src.1, src.2].map(Le32::from),
            src: image_descriptor(&src_geometry, src.3),
            dst: image_descriptor(&dst_geometry, dst.3),
            reserved: [0.into(); 2],
        };
        Job {
            header,
            map: Some(map),
            src: picture(&src_geometry, context_id),
            src_geometry,
            dst_geometry,
        }
    }

    impl Job {
        fn without_map(mut self) -> Self {
            self.header.flags = 0.into();
            self.map = None;
            self
        }

        fn readable(&self) -> Vec<u8> {
            let mut bytes = self.header.as_slice().to_vec();
            if let Some(map) = &self.map {
                bytes.extend(map.to_le_bytes());
            }
            bytes.extend(&self.src);
            bytes
        }

        fn dst_len(&self) -> u32 {
            (self.dst_geometry.luma_extent() + self.dst_geometry.chroma_extent()) as u32
        }

        /// Header, map, source (`readable`) as 4 KiB pages; status and
        /// destination likewise.
        fn paged_parts<'r>(&self, readable: &'r [u8]) -> Vec<Part<'r>> {
            let mut parts: Vec<Part> = readable.chunks(4096).map(Part::Read).collect();
            let mut left = 16 + self.dst_len();
            while left > 0 {
                let piece = left.min(4096);
                parts.push(Part::Write(piece));
                left -= piece;
            }
            parts
        }

        fn parts<'r>(&self, readable: &'r [u8]) -> [Part<'r>; 2] {
            [Part::Read(readable), Part::Write(16 + self.dst_len())]
        }

        /// Submits the job in two descriptors and waits for it.
        fn run(&self, h: &mut Guest) -> Done {
            run(h, &self.parts(&self.readable()))
        }

        /// Submits the job in 4 KiB descriptors and waits for it.
        fn run_paged(&self, h: &mut Guest) -> Done {
            run(h, &self.paged_parts(&self.readable()))
        }

        /// Submits the job in two descriptors.
        fn submit(&self, h: &mut Guest) -> ChainId {
            h.submit(0, &self.parts(&self.readable()))
        }

        /// What the reference engine makes of it.
        fn expected(&self, map: &VertexMap) -> Vec<u8> {
            let (sg, dg) = (
                engine_geometry(&self.src_geometry),
                engine_geometry(&self.dst_geometry),
            );
            let (luma, chroma) = if sg.format.is_packed() {
                (&self.src[..], &[][..])
            } else {
                self.src.split_at(sg.luma_extent())
            };
            let mut out = vec![0u8; self.dst_len() as usize];
            let (dl, dc) = if dg.format.is_packed() {
                (&mut out[..], &mut [][..])
            } else {
                out.split_at_mut(dg.luma_extent())
            };
            let [left, top, width, height] = self.header.crop.map(Le32::to_native);
            ReferenceEngine
                .remap(
                    &RemapParams {
                        map,
                        crop: Crop {
                            left,
                            top,
                            width,
                            height,
                        },
                    },
                    &SourceImage {
                        geometry: sg,
                        luma,
                        chroma,
                    },
                    &mut DestImage {
                        geometry: dg,
                        luma: dl,
                        chroma: dc,
                    },
                )
                .unwrap();
            out
        }
    }

    fn identity_job(context_id: u32, generation: u32) -> Job {
        job(
            (WireFormat::Nv12, 320, 240, 1),
            (WireFormat::Nv12, 320, 240, 1),
            maps::driver_identity_map(320, 240, 320, 240),
            context_id,
            generation,
        )
    }

    fn assert_ok(done: &Done, job: &Job, expected: &[u8]) {
        assert_eq!(done.status, status::OK);
        assert_eq!(done.sequence, 77);
        assert_eq!(done.len, 16 + job.dst_len());
        assert!(done.data == expected, "destination differs");
    }

    #[test]
    fn config_space_is_16_bytes_as_documented() {
        let device = DewarperDevice::new(Arc::new(ReferenceEngine), 1, 4);
        let config = device.config();
        assert_eq!(config.len(), 16);
        let word = |i: usize| u32::from_le_bytes(config[i..i + 4].try_into().unwrap());
        assert_eq!((word(0), word(4), word(8), word(12)), (1, 4096, 3072, 4));
        assert_eq!(device.num_queues(), 1);
    }

    /// The wire's formats and geometry say what the engine's say: the same
    /// fourcc, component layout and extents, the same map size.
    #[test]
    fn wire_formats_and_geometry_map_onto_the_engine() {
        for format in WireFormat::ALL {
            let engine = engine_format(format);
            assert_eq!(engine.fourcc(), format.fourcc());
            assert_eq!(engine.is_packed(), format.is_packed());
            assert_eq!(engine.is_source_format(), format.is_source_format());
            assert_eq!(engine.luma_bytes_per_pixel(), format.luma_bytes_per_pixel());
            assert_eq!(
                engine.chroma_vertical_shift(),
                format.chroma_vertical_shift()
            );
            for (width, height, padding) in [(176, 144, 0), (640, 480, 64), (4096, 3072, 8)] {
                let mut wire = WireGeometry::packed(format, width, height);
                wire.luma_stride += padding;
                wire.chroma_stride += padding;
                let geometry = engine_geometry(&wire);
                assert_eq!(geometry.luma_extent(), wire.luma_extent());
                assert_eq!(geometry.chroma_extent(), wire.chroma_extent());
            }
        }
        for length in MIN_WIDTH..=MAX_WIDTH {
            assert_eq!(wire::map_vertices(length), map_vertices(length));
        }
    }

    #[test]
    fn good_jobs_over_any_descriptor_split() {
        let mut h = guest(4);
        let identity = identity_job(1, 1);
        let done = identity.run_paged(&mut h);
        assert_ok(&done, &identity, &identity.src);

        let fisheye = maps::fisheye_correction_map(640, 480, 320, 240, 0.3);
        let mut warp = job(
            (WireFormat::Yuyv, 640, 480, 1),
            (WireFormat::Nv21, 320, 240, 2),
            fisheye.clone(),
            2,
            5,
        );
        warp.header.crop = [40, 30, 560, 420].map(Le32::from);
        let expected = warp.expected(&fisheye);
        assert_ok(&warp.run(&mut h), &warp, &expected);
        // The cached map serves the next frame of the context.
        let next = warp.without_map();
        assert_ok(&next.run_paged(&mut h), &next, &expected);
    }

    #[test]
    fn jobs_run_concurrently_and_all_complete() {
        let mut h = guest(4);
        let jobs: Vec<Job> = (0..6).map(|c| identity_job(c, 1)).collect();
        let submitted: Vec<_> = jobs.iter().map(|j| j.submit(&mut h)).collect();
        for (job, chain) in jobs.iter().zip(submitted) {
            let done = h.wait(chain).into();
            assert_ok(&done, job, &job.src);
        }
    }

    #[test]
    fn unknown_map_generation_requires_the_map() {
        let mut h = guest(2);
        let done = identity_job(1, 1).without_map().run(&mut h);
        assert_eq!((done.status, done.len), (status::ERR_MAP_REQUIRED, 16));
        identity_job(1, 1).run(&mut h);
        assert_eq!(
            identity_job(1, 1).without_map().run(&mut h).status,
            status::OK
        );
        // A new generation of the same context needs its map.
        let done = identity_job(1, 2).without_map().run(&mut h);
        assert_eq!(done.status, status::ERR_MAP_REQUIRED);
        // Least recently used contexts fall out of the two slots.
        identity_job(2, 1).run(&mut h);
        identity_job(3, 1).run(&mut h);
        let done = identity_job(1, 1).without_map().run(&mut h);
        assert_eq!(done.status, status::ERR_MAP_REQUIRED);
        assert_eq!(
            identity_job(3, 1).without_map().run(&mut h).status,
            status::OK
        );
    }

    #[test]
    fn malformed_chains_fail_alone_and_a_good_job_still_works() {
        let mut h = guest(4);
        let good = identity_job(9, 1);
        let readable = good.readable();
        let dst_len = 16 + good.dst_len();
        let status_of = |h: &mut Guest, parts: &[Part<'_>]| {
            let done = run(h, parts);
            (done.status, done.len)
        };
        let malformed = (status::ERR_MALFORMED, 16);

        // Short chains.
        assert_eq!(
            status_of(
                &mut h,
                &[Part::Read(&readable[..100]), Part::Write(dst_len)]
            ),
            malformed
        );
        assert_eq!(
            status_of(
                &mut h,
                &[
                    Part::Read(&readable[..readable.len() - 1]),
                    Part::Write(dst_len)
                ]
            ),
            malformed
        );
        assert_eq!(
            status_of(&mut h, &[Part::Read(&readable), Part::Write(dst_len - 1)]),
            malformed
        );
        assert_eq!(
            status_of(&mut h, &[Part::Read(&readable), Part::Write(16)]),
            malformed
        );
        // No room for a status: used length 0.
        assert_eq!(run(&mut h, &[Part::Read(&readable)]).len, 0);
        assert_eq!(run(&mut h, &[Part::Read(&readable), Part::Write(8)]).len, 0);
        // Wrong directions: readable after writable, header in a writable buffer.
        assert_eq!(
            status_of(&mut h, &[Part::Write(dst_len), Part::Read(&readable)]),
            malformed
        );
        assert_eq!(
            status_of(&mut h, &[Part::Write(128), Part::Write(dst_len)]),
            malformed
        );
        // Descriptors outside guest memory.
        let outside = MEM_SIZE + 0x1000;
        assert_eq!(
            status_of(
                &mut h,
                &[Part::RawRead(outside, 4096), Part::Write(dst_len)]
            ),
            malformed
        );
        let done = run(
            &mut h,
            &[Part::Read(&readable), Part::RawWrite(outside, 4096)],
        );
        assert_eq!(done.len, 0);

        // Bad fields.
        let field = |h: &mut Guest, corrupt: &dyn Fn(&mut VdwJob)| {
            let mut job = identity_job(9, 1);
            corrupt(&mut job.header);
            job.run(h).status
        };
        assert_eq!(
            field(&mut h, &|j| j.reserved[0] = 1.into()),
            status::ERR_MALFORMED
        );
        assert_eq!(
            field(&mut h, &|j| j.dst.reserved = 1.into()),
            status::ERR_MALFORMED
        );
        assert_eq!(
            field(&mut h, &|j| j.flags = 0x80.into()),
            status::ERR_MALFORMED
        );
        assert_eq!(
            field(&mut h, &|j| j.src.fourcc =
                0x3231_564e_u32.swap_bytes().into()),
            status::ERR_UNSUPPORTED
        );
        assert_eq!(
            field(&mut h, &|j| j.dst.width = 8192.into()),
            status::ERR_UNSUPPORTED
        );
        assert_eq!(
            field(&mut h, &|j| j.src.stride[0] = 100.into()),
            status::ERR_UNSUPPORTED
        );
        assert_eq!(
            field(&mut h, &|j| j.crop[2] = 321.into()),
            status::ERR_UNSUPPORTED
        );
        assert_eq!(
            field(&mut h, &|j| j.map_height = 1.into()),
            status::ERR_INVALID_MAP
        );
        // Huge sizes: refused before anything is allocated or read.
        assert_eq!(
            field(&mut h, &|j| j.src.plane_size[0] = u32::MAX.into()),
            status::ERR_UNSUPPORTED
        );
        assert_eq!(
            field(&mut h, &|j| {
                j.dst.stride = [16384.into(), 16384.into()];
                j.dst.plane_size[0] = (16384 * 240 * 2).into();
            }),
            status::ERR_MALFORMED
        );
        assert_eq!(
            field(&mut h, &|j| j.dst.height = u32::MAX.into()),
            status::ERR_UNSUPPORTED
        );

        // The device still works.
        let done = good.run_paged(&mut h);
        assert_ok(&done, &good, &good.src);
    }

    /// Chains longer than the job, with empty descriptors, or looping back
    /// to their head: each fails alone, and a good job still works.
    #[test]
    fn overlong_empty_and_looping_chains_fail_alone() {
        let mut h = guest(4);
        let good = identity_job(3, 1);
        let readable = good.readable();
        let dst_len = 16 + good.dst_len();

        let mut longer = readable.clone();
        longer.push(0);
        let done = run(&mut h, &[Part::Read(&longer), Part::Write(dst_len)]);
        assert_eq!((done.status, done.len), (status::ERR_MALFORMED, 16));
        let done = run(&mut h, &[Part::Read(&readable), Part::Write(dst_len + 1)]);
        assert_eq!((done.status, done.len), (status::ERR_MALFORMED, 16));

        // Empty descriptors carry no bytes: the job around them is whole.
        let done = run(
            &mut h,
            &[
                Part::RawRead(DATA_START, 0),
                Part::Read(&readable),
                Part::RawRead(DATA_START, 0),
                Part::RawWrite(DATA_START, 0),
                Part::Write(dst_len),
            ],
        );
        assert_eq!(done.status, status::OK);

        // The last descriptor links back to the head.
        let looping = h.add_looping(0, &[Part::Read(&readable), Part::Write(dst_len)]);
        h.kick(0);
        h.wait(looping);

        let done = good.run_paged(&mut h);
        assert_ok(&done, &good, &good.src);
    }

    #[test]
    fn reset_drops_cached_maps() {
        let mut h = guest(4);
        identity_job(1, 1).run(&mut h);
        h.device().reset();
        let done = identity_job(1, 1).without_map().run(&mut h);
        assert_eq!(done.status, status::ERR_MAP_REQUIRED);
    }

    /// An engine that holds every job until the test lets it go.
    struct GatedEngine {
        open: Mutex<bool>,
        opened: std::sync::Condvar,
        started: AtomicU64,
    }

    impl GatedEngine {
        fn new() -> Arc<Self> {
            Arc::new(GatedEngine {
                open: Mutex::new(false),
                opened: std::sync::Condvar::new(),
                started: AtomicU64::new(0),
            })
        }

        fn release(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    impl DewarpEngine for GatedEngine {
        fn remap(
            &self,
            params: &RemapParams<'_>,
            src: &SourceImage<'_>,
            dst: &mut DestImage<'_>,
        ) -> Result<(), DewarpError> {
            self.started.fetch_add(1, Ordering::AcqRel);
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            ReferenceEngine.remap(params, src, dst)
        }
    }

    /// A guest re-offering the head of a job under way, thousands of times:
    /// the copies are ignored rather than queued for the workers, and the
    /// job completes once.
    #[test]
    fn a_head_offered_again_while_in_flight_is_ignored() {
        let engine = GatedEngine::new();
        let mut h = guest_with_engine(4, engine.clone());
        let job = identity_job(1, 1);
        let chain = job.submit(&mut h);
        let deadline = Instant::now() + Duration::from_secs(20);
        while engine.started.load(Ordering::Acquire) == 0 {
            assert!(Instant::now() < deadline, "the job never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        for _ in 0..5_000 {
            h.offer_again(chain);
        }
        assert_eq!(h.backend().in_flight(0).unwrap().len(), 1);
        engine.release();
        assert_ok(&h.wait(chain).into(), &job, &job.src);
        std::thread::sleep(Duration::from_millis(200));
        let answers = h.times_used(chain);
        assert_eq!(answers, 1, "a re-offered head ran again");
        assert_eq!(engine.started.load(Ordering::Acquire), 1);
        assert!(h.backend().in_flight(0).unwrap().is_empty());
    }

    /// Resets landing while a kick pops a full ring of jobs: no job popped
    /// before a reset is completed after it returns (the frontend hands the
    /// ring to a new driver then).
    #[test]
    fn nothing_is_completed_after_a_reset_returns() {
        for _ in 0..5 {
            let mut h = guest(4);
            let job = identity_job(1, 1);
            let readable = job.readable();
            for _ in 0..usize::from(h.layout().queue_size) / 2 {
                h.add(0, &job.parts(&readable));
            }
            // Workers still running after the kick get 300 ms to complete
            // what they should not.
            let (at_reset, at_end) = h.reset_during_kick(
                0,
                |h| !h.backend().in_flight(0).unwrap().is_empty(),
                Duration::from_millis(300),
            );
            assert_eq!(at_reset, at_end, "jobs completed after the reset returned");
        }
    }
}
