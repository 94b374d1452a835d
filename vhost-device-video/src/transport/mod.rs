//! vhost-user transport: one [`VhostUserBackend`] implementation that serves
//! any [`VirtioDevice`].
//!
//! The rust-vmm daemon runs the vhost-user protocol and the vring epoll loop
//! (`vhost-user-backend`'s own epoll handler, the usual choice for a
//! vhost-user backend; rust-vmm's `event-manager` is not used);
//! this module turns queue kicks into [`VirtioDevice::handle_kick`] calls and
//! hands devices a cloneable [`DeviceQueue`] from which they pop
//! [`Request`]s: a request reads its device-readable part, writes its
//! device-writable part and is completed, on the vring thread or later from
//! worker threads. The checks every chain needs (descriptor order, guest
//! addresses, room for a reply) are made there, not in the devices.
//!
//! [`dw100_model`] is the other front: the job socket of QEMU's emulated
//! i.MX8MP DW100, on the same socket rules.

use std::collections::HashSet;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use log::{debug, error, warn};
use thiserror::Error as ThisError;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard,
    GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::log_limit::warn_limited;

pub mod dw100_model;
mod request;
mod server;
pub use request::{Request, RequestError};
pub use server::{serve, Listen, ServerError};

/// Guest memory as the daemon maps it (no dirty-page tracking).
pub type GuestMem = GuestMemoryMmap<()>;
/// Shared, swappable view of guest memory.
pub type AtomicMem = GuestMemoryAtomic<GuestMem>;
/// A snapshot of guest memory that stays valid while it is held.
pub type MemGuard = GuestMemoryLoadGuard<GuestMem>;
/// A descriptor chain popped from a device queue.
type Chain = DescriptorChain<MemGuard>;

/// `VHOST_USER_F_PROTOCOL_FEATURES` (bit 30): the frontend may negotiate
/// vhost-user protocol features such as CONFIG.
const VHOST_USER_F_PROTOCOL_FEATURES: u32 = 30;

/// Errors of the transport layer.
#[derive(Debug, ThisError)]
pub enum TransportError {
    /// The used ring could not be updated.
    #[error("cannot add a used descriptor to queue {queue}: {source}")]
    AddUsed {
        queue: usize,
        source: virtio_queue::Error,
    },
    /// The guest could not be notified.
    #[error("cannot signal queue {queue}: {source}")]
    Signal { queue: usize, source: io::Error },
    /// Notifications could not be toggled while popping requests.
    #[error("cannot change notifications on queue {queue}: {source}")]
    Notification {
        queue: usize,
        source: virtio_queue::Error,
    },
    /// An event on an unknown queue index.
    #[error("event for unknown queue {0}")]
    UnknownQueue(u16),
    /// A device completed a head it does not hold.
    #[error("queue {queue}: head {head} completed but not in flight")]
    NotInFlight { queue: usize, head: u16 },
}

/// A virtio device served over vhost-user.
///
/// Contract:
/// - [`num_queues`](Self::num_queues), [`max_queue_size`](Self::max_queue_size),
///   [`features`](Self::features) and [`config`](Self::config) are constant
///   for the life of the device. `features` holds only device-specific bits;
///   the transport adds `VIRTIO_F_VERSION_1`, `VIRTIO_RING_F_INDIRECT_DESC`,
///   `VIRTIO_RING_F_EVENT_IDX` and `VHOST_USER_F_PROTOCOL_FEATURES`.
///   `config` returns the whole config space; reads are sliced from it.
/// - [`handle_kick`](Self::handle_kick) runs on the vring epoll thread each
///   time the guest kicks a queue. It must pop every available chain (use
///   [`DeviceQueue::pop_requests`]) and must not block for long: heavy work
///   goes to worker threads, which take the [`Request`] along and complete
///   it later ([`Request::complete`], [`Request::reply`]). Every popped
///   request must be completed exactly once (with length 0 if no reply can
///   be written), or dropped on [`reset`](Self::reset).
/// - `handle_kick` never fails: a bad request gets an error reply; transport
///   failures are logged.
/// - [`reset`](Self::reset) is called when the frontend resets the device,
///   or starts a stopped vring on a new ring (the guest driver was reset):
///   the device drops every stream and pending chain without completing
///   it, and stops its workers from touching the old queues. It may be
///   called several times in a row. A stopped vring alone (`GET_VRING_BASE`,
///   as for a VM stop) is no reset: the transport parks completions until
///   the ring runs again (see [`Backend`]).
pub trait VirtioDevice: Send + Sync + 'static {
    /// Number of virtqueues.
    fn num_queues(&self) -> usize;
    /// Largest queue size the device accepts.
    fn max_queue_size(&self) -> usize;
    /// Device-specific feature bits offered to the driver.
    fn features(&self) -> u64;
    /// The complete config space.
    fn config(&self) -> Vec<u8>;
    /// The guest kicked `queue`.
    fn handle_kick(&self, queue: &DeviceQueue);
    /// The frontend reset the device or set a queue up afresh.
    fn reset(&self);
}

/// The heads of one queue that the device popped and has not completed,
/// and what completes while the ring is stopped.
///
/// virtio-queue only checks that the guest offers no more than a queue's
/// worth of entries ahead of the device; nothing stops a guest from putting a
/// head the device still holds into the avail ring again. Such a head is
/// refused here, so a device never holds more chains than the queue has
/// descriptors, and never completes one head twice.
///
/// While the frontend has the ring stopped (`GET_VRING_BASE`, as for a VM
/// stop or a snapshot) completions are parked here, not written: they are
/// written when the same ring starts again (see [`Backend`]).
#[derive(Default)]
pub struct HeadsInFlight {
    state: Mutex<Tracking>,
    /// Held by whoever checks a stopped ring's restart.
    restart: Mutex<()>,
}

#[derive(Default)]
struct Tracking {
    heads: HashSet<u16>,
    /// Where the ring stood when it was stopped; `None` while it runs.
    stopped: Option<RingState>,
    /// Completions (head, length) made while it was stopped.
    parked: Vec<(u16, u32)>,
}

/// What identifies a ring and how far the device got in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RingState {
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    next_avail: u16,
    next_used: u16,
}

impl RingState {
    fn of(vring: &VringRwLock<AtomicMem>) -> Self {
        let state = vring.get_ref();
        let queue = state.get_queue();
        RingState {
            desc_table: queue.desc_table(),
            avail_ring: queue.avail_ring(),
            used_ring: queue.used_ring(),
            next_avail: queue.next_avail(),
            next_used: queue.next_used(),
        }
    }
}

impl HeadsInFlight {
    fn lock(&self) -> MutexGuard<'_, Tracking> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many heads the device holds.
    pub fn len(&self) -> usize {
        self.lock().heads.len()
    }

    /// Whether the device holds no head.
    pub fn is_empty(&self) -> bool {
        self.lock().heads.is_empty()
    }

    /// Forgets every head and parked completion: the device dropped them.
    pub fn clear(&self) {
        let mut tracking = self.lock();
        tracking.heads.clear();
        tracking.parked.clear();
        tracking.stopped = None;
    }

    /// How many completions wait for the ring to start again.
    pub fn parked(&self) -> usize {
        self.lock().parked.len()
    }
}

/// Whether a device may write into guest memory.
///
/// Once a stopped ring's `GET_VRING_BASE` has been answered the guest
/// driver may free the buffers it had given the device (a reset), so no
/// reply, picture or job result may be written until the ring runs again:
/// writers hold a [`WritePermit`], a stop waits for those under way, and
/// later ones wait for the restart. If the rings are then set up afresh,
/// or the device is reset, every handle of the old rings is stale: its
/// writers get no permit and its chains are never completed.
#[derive(Default)]
pub struct WriteGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// Queues stopped and not yet running again.
    stopped: usize,
    /// Permits held.
    writers: usize,
    /// Bumped when the device's rings are given up (a reset, a new ring).
    generation: u64,
}

/// Leave to write into guest memory through the chains of one queue
/// handle; while it is held no ring of the device stops.
pub struct WritePermit<'a> {
    gate: &'a WriteGate,
}

impl Drop for WritePermit<'_> {
    fn drop(&mut self) {
        self.gate.lock().writers -= 1;
        self.gate.changed.notify_all();
    }
}

impl WriteGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Waits while a ring is stopped; `None` if the chains of `generation`
    /// were given up meanwhile.
    fn enter(&self, generation: u64) -> Option<WritePermit<'_>> {
        let mut state = self.lock();
        while state.stopped > 0 && state.generation == generation {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.generation != generation {
            return None;
        }
        state.writers += 1;
        Some(WritePermit { gate: self })
    }

    /// A ring stops: waits for the writes under way.
    fn stop(&self) {
        let mut state = self.lock();
        state.stopped += 1;
        while state.writers > 0 {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A stopped ring runs again.
    fn resume(&self) {
        let mut state = self.lock();
        state.stopped = state.stopped.saturating_sub(1);
        self.changed.notify_all();
    }

    /// The device's rings are given up: writers of the old ones stop.
    fn discard(&self) {
        let mut state = self.lock();
        state.stopped = 0;
        state.generation += 1;
        self.changed.notify_all();
    }
}

/// A cloneable handle on one device virtqueue and the guest memory behind it.
#[derive(Clone)]
pub struct DeviceQueue {
    index: usize,
    vring: VringRwLock<AtomicMem>,
    mem: AtomicMem,
    in_flight: Arc<HeadsInFlight>,
    gate: Arc<WriteGate>,
    /// The gate's generation when this handle was made (at a kick).
    generation: u64,
}

impl DeviceQueue {
    /// Wraps `vring`, the queue with number `index`, over `mem`, with heads
    /// in flight tracked from nothing. Every handle on one queue must share
    /// its tracking: clone this one, or use [`tracked`](Self::tracked).
    pub fn new(index: usize, vring: VringRwLock<AtomicMem>, mem: AtomicMem) -> Self {
        Self::tracked(index, vring, mem, Arc::default(), Arc::default())
    }

    /// Wraps `vring`, the queue with number `index`, over `mem`, its heads
    /// in flight tracked in `in_flight`, its writes let through by `gate`.
    fn tracked(
        index: usize,
        vring: VringRwLock<AtomicMem>,
        mem: AtomicMem,
        in_flight: Arc<HeadsInFlight>,
        gate: Arc<WriteGate>,
    ) -> Self {
        let generation = gate.generation();
        Self {
            index,
            vring,
            mem,
            in_flight,
            gate,
            generation,
        }
    }

    /// Leave to write into the guest memory of this handle's chains:
    /// waits while a ring of the device is stopped; `None` once the chains
    /// were given up (a reset, or the ring set up afresh), when nothing of
    /// them may be written any more.
    pub fn write_permit(&self) -> Option<WritePermit<'_>> {
        self.gate.enter(self.generation)
    }

    /// The heads the device holds.
    pub fn in_flight(&self) -> &HeadsInFlight {
        &self.in_flight
    }

    /// The queue number.
    pub fn index(&self) -> usize {
        self.index
    }

    /// A snapshot of guest memory.
    pub fn memory(&self) -> MemGuard {
        self.mem.memory()
    }

    /// Pops the available chains as [`Request`]s, at most a queue's worth
    /// per call so that a guest refilling the ring as fast as it is emptied
    /// cannot keep the vring thread here; if more are left the queue's own kick is raised,
    /// and the rest are popped on the next turn of the event loop. With
    /// `EVENT_IDX` negotiated this re-arms notifications and pops again
    /// until no chain arrived in between. A head the device already holds
    /// is left out: the guest broke the ring (see [`HeadsInFlight`]).
    pub fn pop_requests(&self) -> Result<Vec<Request>, TransportError> {
        let mut requests = Vec::new();
        let queue = self.index;
        let mut offered = 0usize;
        loop {
            self.vring
                .disable_notification()
                .map_err(|source| TransportError::Notification { queue, source })?;
            let (limit, popped) = {
                let mut state = self.vring.get_mut();
                let limit = usize::from(state.get_queue().size());
                let iter = state
                    .get_queue_mut()
                    .iter(self.mem.memory())
                    .map_err(|source| TransportError::Notification { queue, source })?;
                let popped: Vec<Chain> = iter.take(limit.saturating_sub(offered)).collect();
                (limit, popped)
            };
            // Not under the vring lock: `complete` takes the two the other
            // way round.
            let mut in_flight = self.in_flight.lock();
            for chain in popped {
                offered += 1;
                let head = chain.head_index();
                if in_flight.heads.insert(head) {
                    requests.push(Request::new(chain, self.clone()));
                } else {
                    warn_limited!(
                        "queue {queue}: head {head} offered again while in flight: \
                         broken ring, entry ignored"
                    );
                }
            }
            drop(in_flight);
            if offered >= limit {
                // Notifications stay off: the raised kick brings us back.
                self.kick_again();
                return Ok(requests);
            }
            let more = self
                .vring
                .enable_notification()
                .map_err(|source| TransportError::Notification { queue, source })?;
            if !more {
                return Ok(requests);
            }
        }
    }

    /// Raises the queue's kick, as the guest would.
    fn kick_again(&self) {
        let state = self.vring.get_ref();
        let Some(kick) = state.get_kick() else {
            // No event loop serves this queue (a unit test): the next
            // pop_requests takes the rest.
            return;
        };
        let one = 1u64;
        // SAFETY: the fd is the queue's kick eventfd, kept open by `state`,
        // which holds the vring lock; an eventfd write reads exactly the 8
        // bytes of `one`, which outlives the call.
        let written = unsafe {
            libc::write(
                kick.as_raw_fd(),
                std::ptr::addr_of!(one).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
        if written < 0 {
            error!(
                "queue {}: cannot raise the kick again: {}",
                self.index,
                io::Error::last_os_error()
            );
        }
    }

    /// Returns the chain with head `head` to the guest, `len` bytes written,
    /// and interrupts the guest if it asked for it. While the ring is
    /// stopped the completion is parked until it starts again. Devices
    /// complete through their [`Request`].
    fn complete(&self, head: u16, len: u32) -> Result<(), TransportError> {
        let queue = self.index;
        if self.gate.generation() != self.generation {
            debug!("queue {queue}: head {head} of a ring given up, not completed");
            return Ok(());
        }
        // Held until the used entry is written, so that a stop cannot slip
        // in between.
        let mut in_flight = self.in_flight.lock();
        if !in_flight.heads.contains(&head) {
            return Err(TransportError::NotInFlight { queue, head });
        }
        if in_flight.stopped.is_some() {
            in_flight.parked.push((head, len));
            return Ok(());
        }
        in_flight.heads.remove(&head);
        self.write_used(head, len)
    }

    /// Writes one used entry and interrupts the guest if it asked for it.
    fn write_used(&self, head: u16, len: u32) -> Result<(), TransportError> {
        let queue = self.index;
        if crate::fault::bogus_used_id() {
            return self.complete_with_bogus_id(len);
        }
        self.vring
            .add_used(head, len)
            .map_err(|source| TransportError::AddUsed { queue, source })?;
        let needed = self
            .vring
            .needs_notification()
            .map_err(|source| TransportError::Notification { queue, source })?;
        if needed {
            self.vring
                .signal_used_queue()
                .map_err(|source| TransportError::Signal { queue, source })?;
        }
        Ok(())
    }

    /// Test fault: writes the next used element with an id one past the
    /// ring (the queue's own `add_used` refuses such an id) and interrupts
    /// the guest.
    fn complete_with_bogus_id(&self, len: u32) -> Result<(), TransportError> {
        let queue = self.index;
        let mem = self.memory();
        let used_error = |source| TransportError::AddUsed { queue, source };
        {
            let mut state = self.vring.get_mut();
            let ring = state.get_queue_mut();
            let size = ring.size();
            let next = ring.next_used();
            let slot = u64::from(next % size.max(1));
            let elem_addr = GuestAddress(ring.used_ring() + 4 + slot * 8);
            let idx_addr = GuestAddress(ring.used_ring() + 2);
            let elem = [u32::from(size).to_le_bytes(), len.to_le_bytes()].concat();
            mem.write_slice(&elem, elem_addr)
                .map_err(|e| used_error(virtio_queue::Error::GuestMemory(e)))?;
            let next = next.wrapping_add(1);
            mem.store(
                u16::to_le(next),
                idx_addr,
                std::sync::atomic::Ordering::Release,
            )
            .map_err(|e| used_error(virtio_queue::Error::GuestMemory(e)))?;
            ring.set_next_used(next);
        }
        warn!("test fault: queue {queue} returned a used id past the ring");
        self.vring
            .signal_used_queue()
            .map_err(|source| TransportError::Signal { queue, source })
    }
}

/// How often a stopped ring is looked at for its restart.
const RESTART_POLL: Duration = Duration::from_millis(20);

/// The vhost-user backend serving one [`VirtioDevice`].
///
/// A stopped ring (`GET_VRING_BASE`) keeps the device as it is: streams,
/// jobs and chains in flight stay, and what completes meanwhile is parked.
/// When the ring is started again (at its first kick, or when a watcher
/// thread sees it ready with an interrupt eventfd, whichever comes first) it
/// is compared with where it stopped: the same addresses and indices mean
/// the same ring (a VM stop and cont), and the parked completions are
/// written and the guest interrupted; anything else is a new ring (the
/// guest driver reset the device), and the device is reset first, dropping
/// what it held.
pub struct Backend<D: VirtioDevice> {
    shared: Arc<Shared<D>>,
    mem: RwLock<AtomicMem>,
    /// The rings, known from the first event.
    vrings: Mutex<Vec<VringRwLock<AtomicMem>>>,
}

/// What a restart watcher needs.
struct Shared<D: VirtioDevice> {
    device: Arc<D>,
    /// One per queue, shared by every [`DeviceQueue`] handed out for it.
    in_flight: Vec<Arc<HeadsInFlight>>,
    gate: Arc<WriteGate>,
}

impl<D: VirtioDevice> Shared<D> {
    /// The frontend gave up every ring: nothing of them is written any
    /// more, the device drops what it held and their heads are forgotten.
    fn give_up_rings(&self) {
        self.gate.discard();
        self.device.reset();
        for heads in &self.in_flight {
            heads.clear();
        }
    }

    /// Queue `index`, if stopped, runs again on `vring`: resumes it (the
    /// same ring) or resets the device (a new ring).
    fn restart(&self, index: usize, vring: &VringRwLock<AtomicMem>) {
        let Some(tracking) = self.in_flight.get(index) else {
            return;
        };
        let _one = tracking
            .restart
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(stopped) = tracking.lock().stopped else {
            return;
        };
        if RingState::of(vring) != stopped {
            debug!("queue {index} restarted on a new ring: device reset");
            self.give_up_rings();
            return;
        }
        let mut state = tracking.lock();
        let parked = std::mem::take(&mut state.parked);
        debug!("queue {index} restarted: {} completions", parked.len());
        for &(head, len) in &parked {
            state.heads.remove(&head);
            if let Err(e) = vring.add_used(head, len) {
                error!(
                    "{}",
                    TransportError::AddUsed {
                        queue: index,
                        source: e
                    }
                );
            }
        }
        state.stopped = None;
        drop(state);
        self.gate.resume();
        if !parked.is_empty() {
            if let Err(e) = vring.signal_used_queue() {
                error!(
                    "{}",
                    TransportError::Signal {
                        queue: index,
                        source: e
                    }
                );
            }
        }
    }
}

impl<D: VirtioDevice> Backend<D> {
    /// Serves `device`, initially over `mem`.
    pub fn new(device: Arc<D>, mem: AtomicMem) -> Self {
        let in_flight = (0..device.num_queues()).map(|_| Arc::default()).collect();
        Self {
            shared: Arc::new(Shared {
                device,
                in_flight,
                gate: Arc::default(),
            }),
            mem: RwLock::new(mem),
            vrings: Mutex::new(Vec::new()),
        }
    }

    /// The frontend went away: nothing of its rings is written any more and
    /// the device drops what it held.
    pub fn give_up(&self) {
        self.shared.give_up_rings();
    }

    /// The heads in flight of queue `index`.
    pub fn in_flight(&self, index: usize) -> Option<&HeadsInFlight> {
        self.shared.in_flight.get(index).map(|heads| &**heads)
    }

    fn memory(&self) -> AtomicMem {
        match self.mem.read() {
            Ok(mem) => mem.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Watches stopped queue `index` until it runs again or the backend
    /// goes away.
    fn watch_restart(&self, index: usize, vring: VringRwLock<AtomicMem>) {
        let shared = Arc::downgrade(&self.shared);
        let spawned = std::thread::Builder::new()
            .name(format!("restart-{index}"))
            .spawn(move || loop {
                std::thread::sleep(RESTART_POLL);
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let Some(tracking) = shared.in_flight.get(index) else {
                    return;
                };
                if tracking.lock().stopped.is_none() {
                    return;
                }
                let live = {
                    let state = vring.get_ref();
                    state.get_queue().ready() && state.get_call().is_some()
                };
                if live {
                    shared.restart(index, &vring);
                    return;
                }
            });
        if let Err(e) = spawned {
            // The first kick after the restart still resumes the queue.
            error!("cannot watch queue {index} for its restart: {e}");
        }
    }
}

impl<D: VirtioDevice> VhostUserBackend for Backend<D> {
    type Bitmap = ();
    type Vring = VringRwLock<AtomicMem>;

    fn num_queues(&self) -> usize {
        self.shared.device.num_queues()
    }

    fn max_queue_size(&self) -> usize {
        self.shared.device.max_queue_size()
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VHOST_USER_F_PROTOCOL_FEATURES)
            | self.shared.device.features()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        debug!("EVENT_IDX {}", if enabled { "on" } else { "off" });
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = self.shared.device.config();
        let start = offset as usize;
        let end = start.saturating_add(size as usize);
        config
            .get(start..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    fn update_memory(&self, mem: AtomicMem) -> io::Result<()> {
        match self.mem.write() {
            Ok(mut guard) => *guard = mem,
            Err(poisoned) => *poisoned.into_inner() = mem,
        }
        Ok(())
    }

    fn reset_device(&self) {
        self.shared.give_up_rings();
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        let index = queue_index as usize;
        let vring = self
            .vrings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .cloned();
        let (Some(vring), Some(tracking)) = (vring, self.shared.in_flight.get(index)) else {
            // Never kicked: the device holds nothing of it.
            debug!("queue {queue_index} stopped before its first kick");
            return Ok(());
        };
        let at = RingState::of(&vring);
        let (held, already) = {
            let mut state = tracking.lock();
            let already = state.stopped.replace(at).is_some();
            (state.heads.len(), already)
        };
        if already {
            return Ok(());
        }
        // Returns once no reply, picture or job is being written.
        self.shared.gate.stop();
        debug!("queue {queue_index} stopped with {held} chains in flight: {at:?}");
        self.watch_restart(index, vring);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::empty()) {
            Ok(pair) => Some(pair),
            Err(e) => {
                error!("cannot create the worker exit event: {e}");
                None
            }
        }
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            warn!("unexpected epoll events {evset:?} on queue {device_event}");
        }
        let index = usize::from(device_event);
        let (Some(vring), Some(in_flight)) = (vrings.get(index), self.shared.in_flight.get(index))
        else {
            // Never fail here: an error stops the vring thread for good.
            error!("{}", TransportError::UnknownQueue(device_event));
            return Ok(());
        };
        {
            let mut known = self.vrings.lock().unwrap_or_else(PoisonError::into_inner);
            if known.is_empty() {
                known.extend(vrings.iter().cloned());
            }
        }
        // A kick on a stopped queue means it runs again.
        self.shared.restart(index, vring);
        let queue = DeviceQueue::tracked(
            index,
            vring.clone(),
            self.memory(),
            in_flight.clone(),
            self.shared.gate.clone(),
        );
        self.shared.device.handle_kick(&queue);
        Ok(())
    }
}
