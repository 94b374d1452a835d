//! vhost-user transport: one [`VhostUserBackend`] implementation that serves
//! any [`VirtioDevice`].
//!
//! The rust-vmm daemon runs the vhost-user protocol and the vring epoll loop;
//! this module turns queue kicks into [`VirtioDevice::handle_kick`] calls and
//! hands devices a cloneable [`DeviceQueue`] through which requests are popped
//! and completed, on the vring thread or later from worker threads.
//!
//! [`dw100_model`] is the other front: the job socket of QEMU's emulated
//! i.MX8MP DW100, on the same socket rules.

use std::collections::HashSet;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use log::{debug, error, warn};
use thiserror::Error as ThisError;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT, Reader, Writer};
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
mod server;
pub use server::{serve, Listen, ServerError};

/// Guest memory as the daemon maps it (no dirty-page tracking).
pub type GuestMem = GuestMemoryMmap<()>;
/// Shared, swappable view of guest memory.
pub type AtomicMem = GuestMemoryAtomic<GuestMem>;
/// A snapshot of guest memory that stays valid while it is held.
pub type MemGuard = GuestMemoryLoadGuard<GuestMem>;
/// A descriptor chain popped from a device queue.
pub type Chain = DescriptorChain<MemGuard>;

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
///   [`DeviceQueue::pop_all`]) and must not block for long: heavy work goes
///   to worker threads, which keep a clone of the `DeviceQueue` and complete
///   chains later with [`DeviceQueue::complete`]. Every popped chain must be
///   completed exactly once (with length 0 if no reply can be written), or
///   dropped on [`reset`](Self::reset).
/// - `handle_kick` never fails: a bad request gets an error reply; transport
///   failures are logged.
/// - [`reset`](Self::reset) is called when the frontend resets the device,
///   stops a vring (`GET_VRING_BASE`, as when the guest driver goes away) or
///   disconnects: the device drops every stream and pending chain without
///   completing it, and stops its workers from touching the old queues. It
///   may be called several times in a row.
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
    /// The frontend reset the device, stopped a queue or went away.
    fn reset(&self);
}

/// The heads of one queue that the device popped and has not completed.
///
/// virtio-queue only checks that the guest offers no more than a queue's
/// worth of entries ahead of the device; nothing stops a guest from putting a
/// head the device still holds into the avail ring again. Such a head is
/// refused here, so a device never holds more chains than the queue has
/// descriptors, and never completes one head twice.
#[derive(Default)]
pub struct HeadsInFlight {
    heads: Mutex<HashSet<u16>>,
}

impl HeadsInFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u16>> {
        self.heads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many heads the device holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the device holds no head.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets every head: the ring they came from was stopped or reset.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// A cloneable handle on one device virtqueue and the guest memory behind it.
#[derive(Clone)]
pub struct DeviceQueue {
    index: usize,
    vring: VringRwLock<AtomicMem>,
    mem: AtomicMem,
    in_flight: Arc<HeadsInFlight>,
}

impl DeviceQueue {
    /// Wraps `vring`, the queue with number `index`, over `mem`, with heads
    /// in flight tracked from nothing. Every handle on one queue must share
    /// its tracking: clone this one, or use [`tracked`](Self::tracked).
    pub fn new(index: usize, vring: VringRwLock<AtomicMem>, mem: AtomicMem) -> Self {
        Self::tracked(index, vring, mem, Arc::default())
    }

    /// Wraps `vring`, the queue with number `index`, over `mem`, its heads
    /// in flight tracked in `in_flight`.
    pub fn tracked(
        index: usize,
        vring: VringRwLock<AtomicMem>,
        mem: AtomicMem,
        in_flight: Arc<HeadsInFlight>,
    ) -> Self {
        Self {
            index,
            vring,
            mem,
            in_flight,
        }
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

    /// Pops the available chains, at most a queue's worth per call so that
    /// a guest refilling the ring as fast as it is emptied cannot keep the
    /// vring thread here; if more are left the queue's own kick is raised,
    /// and the rest are popped on the next turn of the event loop. With
    /// `EVENT_IDX` negotiated this re-arms notifications and pops again
    /// until no chain arrived in between. A head the device already holds
    /// is left out: the guest broke the ring (see [`HeadsInFlight`]).
    pub fn pop_all(&self) -> Result<Vec<Chain>, TransportError> {
        let mut chains = Vec::new();
        let queue = self.index;
        let mut offered = 0usize;
        loop {
            self.vring
                .disable_notification()
                .map_err(|source| TransportError::Notification { queue, source })?;
            let limit = {
                let mut state = self.vring.get_mut();
                let limit = usize::from(state.get_queue().size());
                let iter = state
                    .get_queue_mut()
                    .iter(self.mem.memory())
                    .map_err(|source| TransportError::Notification { queue, source })?;
                let mut in_flight = self.in_flight.lock();
                for chain in iter.take(limit.saturating_sub(offered)) {
                    offered += 1;
                    let head = chain.head_index();
                    if in_flight.insert(head) {
                        chains.push(chain);
                    } else {
                        warn_limited!(
                            "queue {queue}: head {head} offered again while in flight: \
                             broken ring, entry ignored"
                        );
                    }
                }
                limit
            };
            if offered >= limit {
                // Notifications stay off: the raised kick brings us back.
                self.kick_again();
                return Ok(chains);
            }
            let more = self
                .vring
                .enable_notification()
                .map_err(|source| TransportError::Notification { queue, source })?;
            if !more {
                return Ok(chains);
            }
        }
    }

    /// Raises the queue's kick, as the guest would.
    fn kick_again(&self) {
        let state = self.vring.get_ref();
        let Some(kick) = state.get_kick() else {
            // No event loop serves this queue (a unit test): the next
            // pop_all takes the rest.
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
    /// and interrupts the guest if it asked for it.
    pub fn complete(&self, head: u16, len: u32) -> Result<(), TransportError> {
        let queue = self.index;
        if !self.in_flight.lock().remove(&head) {
            return Err(TransportError::NotInFlight { queue, head });
        }
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

    /// Writes `reply` over the writable descriptors of `chain` (as much as
    /// fits) and completes it. Returns the number of bytes written.
    pub fn reply(&self, chain: Chain, reply: &[u8]) -> Result<usize, TransportError> {
        let head = chain.head_index();
        let mem = self.memory();
        let written = match Writer::<()>::new(&*mem, chain) {
            Ok(mut writer) => {
                let fit = reply.len().min(writer.available_bytes());
                match io::Write::write_all(&mut writer, &reply[..fit]) {
                    Ok(()) => fit,
                    Err(e) => {
                        warn_limited!("queue {}: cannot write reply: {e}", self.index);
                        0
                    }
                }
            }
            Err(e) => {
                warn_limited!("queue {}: reply descriptors unusable: {e}", self.index);
                0
            }
        };
        // A written length can only be as large as the chain, which is bounded
        // by u32 descriptor lengths times the queue size; clamp for safety.
        let len = u32::try_from(written).unwrap_or(u32::MAX);
        self.complete(head, len)?;
        Ok(written)
    }
}

/// Reads the device-readable part of `chain` as one byte stream.
pub fn chain_reader(chain: &Chain) -> Result<Reader<'_, ()>, virtio_queue::Error> {
    Reader::new(chain.memory(), chain.clone())
}

/// The vhost-user backend serving one [`VirtioDevice`].
pub struct Backend<D: VirtioDevice> {
    device: Arc<D>,
    mem: RwLock<AtomicMem>,
    /// One per queue, shared by every [`DeviceQueue`] handed out for it.
    in_flight: Vec<Arc<HeadsInFlight>>,
}

impl<D: VirtioDevice> Backend<D> {
    /// Serves `device`, initially over `mem`.
    pub fn new(device: Arc<D>, mem: AtomicMem) -> Self {
        let in_flight = (0..device.num_queues()).map(|_| Arc::default()).collect();
        Self {
            device,
            mem: RwLock::new(mem),
            in_flight,
        }
    }

    /// The device dropped every chain: forget their heads.
    fn forget_heads(&self) {
        for heads in &self.in_flight {
            heads.clear();
        }
    }

    fn memory(&self) -> AtomicMem {
        match self.mem.read() {
            Ok(mem) => mem.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl<D: VirtioDevice> VhostUserBackend for Backend<D> {
    type Bitmap = ();
    type Vring = VringRwLock<AtomicMem>;

    fn num_queues(&self) -> usize {
        self.device.num_queues()
    }

    fn max_queue_size(&self) -> usize {
        self.device.max_queue_size()
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VHOST_USER_F_PROTOCOL_FEATURES)
            | self.device.features()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        debug!("EVENT_IDX {}", if enabled { "on" } else { "off" });
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = self.device.config();
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
        self.device.reset();
        self.forget_heads();
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        debug!("queue {queue_index} stopped");
        self.device.reset();
        self.forget_heads();
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
        let (Some(vring), Some(in_flight)) = (vrings.get(index), self.in_flight.get(index)) else {
            // Never fail here: an error stops the vring thread for good.
            error!("{}", TransportError::UnknownQueue(device_event));
            return Ok(());
        };
        let queue = DeviceQueue::tracked(index, vring.clone(), self.memory(), in_flight.clone());
        self.device.handle_kick(&queue);
        Ok(())
    }
}
