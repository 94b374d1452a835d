//! A fake guest for unit tests, integration tests and the fuzz targets: guest
//! memory, split virtqueues in it, and a device served by the transport's own
//! [`Backend`], kicked as the vring thread kicks it.
//!
//! The descriptor tables and avail rings are laid out by virtio-queue's
//! `MockSplitQueue`; the used rings are placed by hand, as the mock puts its
//! used ring over the end of its avail ring for queues of more than a few
//! entries. Descriptors are taken from a free list and given back when their
//! chain is used, as a driver does, so a head is never reused while the
//! device holds it unless a test offers it again on purpose.
//!
//! Chains are built from [`Part`]s, which include the shapes a hostile guest
//! can make: readable after writable, zero-length, out of range, 4 GiB, and
//! (with [`FakeGuest::add_looping`]) a chain whose last descriptor links back
//! to its head. [`records`] builds such chains from a fuzzer's bytes.
//!
//! Compiled for the crate's unit tests and with the `test-harness` feature
//! (integration tests, the fuzz crate), never into the daemon. A failed step
//! here is a failed test: the harness panics, naming what went wrong.

pub mod records;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::{DescriptorTable, MockSplitQueue};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic};
use vmm_sys_util::epoll::EventSet;

use crate::transport::{AtomicMem, Backend, GuestMem, VirtioDevice};

/// Where buffers start: the rings live below.
pub const DATA_START: u64 = 1 << 20;
/// What a [`Part::Write`] buffer holds until the device writes it.
pub const UNWRITTEN: u8 = 0xee;
/// How long [`FakeGuest::wait`] waits for the device to use a chain.
pub const WAIT: Duration = Duration::from_secs(30);

/// The size of guest memory and of every queue.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Bytes of guest memory.
    pub memory: u64,
    /// Entries of each queue.
    pub queue_size: u16,
    /// When the data area is used up, start again at its beginning instead
    /// of failing (fuzzing: the chains there are done with by then).
    pub reuse_memory: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            memory: 64 << 20,
            queue_size: 256,
            reuse_memory: false,
        }
    }
}

/// One descriptor of a chain.
#[derive(Clone, Copy, Debug)]
pub enum Part<'b> {
    /// Device-readable bytes, put into fresh guest memory.
    Read(&'b [u8]),
    /// A device-writable buffer of this many bytes in fresh guest memory,
    /// filled with [`UNWRITTEN`] so that what the device leaves shows.
    Write(u32),
    /// A device-readable descriptor at any address, of any length: out of
    /// range, zero-length, 4 GiB.
    RawRead(u64, u32),
    /// A device-writable descriptor at any address, of any length.
    RawWrite(u64, u32),
}

/// A chain the guest added, to wait on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainId(usize);

/// A used chain: the length the device wrote and the bytes of the chain's
/// [`Part::Write`] buffers, in chain order.
#[derive(Clone, Debug)]
pub struct Used {
    pub len: u32,
    pub bytes: Vec<u8>,
}

impl Used {
    /// The little-endian u32 at `offset` of the written bytes.
    pub fn le32(&self, offset: usize) -> u32 {
        match self.bytes.get(offset..offset + 4) {
            Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
            _ => panic!("no u32 at {offset} of a {}-byte reply", self.bytes.len()),
        }
    }
}

/// What the guest knows of a chain it added.
struct ChainRecord {
    queue: usize,
    head: u16,
    descriptors: Vec<u16>,
    writable: Vec<(u64, u32)>,
    /// Its head had been used this many times before: its own use is the
    /// next one.
    earlier_uses: usize,
    /// The queue's setup it belongs to.
    generation: u32,
}

/// One queue as the guest driver sees it.
struct Ring {
    desc_table: u64,
    avail: u64,
    used: u64,
    vring: VringRwLock<AtomicMem>,
    free: Vec<u16>,
    /// Used entries read so far, in order: (id, length).
    used_entries: Vec<(u32, u32)>,
    /// The chain of each head the device holds.
    outstanding: HashMap<u16, usize>,
    generation: u32,
}

/// Guest memory, the device's queues in it, and the device behind them.
pub struct FakeGuest<D: VirtioDevice> {
    mem: GuestMem,
    layout: Layout,
    rings: Vec<Ring>,
    vrings: Vec<VringRwLock<AtomicMem>>,
    chains: Vec<ChainRecord>,
    next_data: u64,
    device: Arc<D>,
    backend: Backend<D>,
}

/// Bytes one queue of `size` entries takes: descriptor table, avail ring,
/// used ring, each with its event word, rounded up to a page.
fn ring_span(size: u16) -> u64 {
    let size = u64::from(size);
    (16 * size + (6 + 2 * size) + 4 + (6 + 8 * size)).next_multiple_of(4096)
}

impl<D: VirtioDevice> FakeGuest<D> {
    /// `device`'s queues, ready as a driver leaves them, in fresh memory.
    pub fn new(device: Arc<D>, layout: Layout) -> Self {
        let queues = device.num_queues();
        let span = ring_span(layout.queue_size);
        assert!(
            span * queues as u64 <= DATA_START && DATA_START < layout.memory,
            "{queues} queues of {} entries do not fit below the data in {} bytes",
            layout.queue_size,
            layout.memory
        );
        let mem = GuestMem::from_ranges(&[(GuestAddress(0), layout.memory as usize)])
            .unwrap_or_else(|e| panic!("cannot map {} bytes of guest memory: {e}", layout.memory));
        let atomic = GuestMemoryAtomic::new(mem.clone());
        let rings: Vec<Ring> = (0..queues)
            .map(|index| Self::ring(&mem, &atomic, index as u64 * span, layout.queue_size))
            .collect();
        let vrings = rings.iter().map(|ring| ring.vring.clone()).collect();
        FakeGuest {
            backend: Backend::new(device.clone(), atomic),
            device,
            mem,
            layout,
            rings,
            vrings,
            chains: Vec::new(),
            next_data: DATA_START,
        }
    }

    fn ring(mem: &GuestMem, atomic: &AtomicMem, start: u64, size: u16) -> Ring {
        let mock = MockSplitQueue::create(mem, GuestAddress(start), size);
        let desc_table = mock.desc_table_addr().0;
        let avail = mock.avail_addr().0;
        let used = (avail + 4 + 2 * u64::from(size) + 2).next_multiple_of(4);
        for field in [avail, avail + 2, used, used + 2] {
            write(mem, &0u16.to_le_bytes(), field);
        }
        let vring = VringRwLock::new(atomic.clone(), size)
            .unwrap_or_else(|e| panic!("cannot create a vring of {size}: {e}"));
        vring
            .set_queue_info(desc_table, avail, used)
            .unwrap_or_else(|e| panic!("cannot place the vring: {e}"));
        vring.set_queue_size(size);
        vring.set_queue_ready(true);
        vring.set_enabled(true);
        Ring {
            desc_table,
            avail,
            used,
            vring,
            free: (0..size).rev().collect(),
            used_entries: Vec::new(),
            outstanding: HashMap::new(),
            generation: 0,
        }
    }

    /// The device.
    pub fn device(&self) -> &Arc<D> {
        &self.device
    }

    /// The transport serving the device, as the vhost-user daemon runs it.
    pub fn backend(&self) -> &Backend<D> {
        &self.backend
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMem {
        &self.mem
    }

    /// The layout the guest was made with.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Queue `queue`'s vring, as the frontend set it up.
    fn vring(&self, queue: usize) -> &VringRwLock<AtomicMem> {
        &self.ring_ref(queue).vring
    }

    fn ring_ref(&self, queue: usize) -> &Ring {
        self.rings
            .get(queue)
            .unwrap_or_else(|| panic!("the device has no queue {queue}"))
    }

    fn ring_mut(&mut self, queue: usize) -> &mut Ring {
        self.rings
            .get_mut(queue)
            .unwrap_or_else(|| panic!("the device has no queue {queue}"))
    }

    /// `len` bytes of guest memory for a buffer, 64-byte aligned.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let mut addr = self.next_data;
        if addr + len > self.layout.memory {
            assert!(
                self.layout.reuse_memory && DATA_START + len <= self.layout.memory,
                "fake guest memory used up: {len} more bytes asked for"
            );
            addr = DATA_START;
        }
        self.next_data = (addr + len.max(1)).next_multiple_of(64);
        addr
    }

    /// `bytes` in fresh guest memory; returns their address.
    pub fn put(&mut self, bytes: &[u8]) -> u64 {
        let addr = self.alloc(bytes.len() as u64);
        write(&self.mem, bytes, addr);
        addr
    }

    /// Adds a chain of `parts` to `queue` and kicks it.
    pub fn submit(&mut self, queue: usize, parts: &[Part<'_>]) -> ChainId {
        let chain = self.add(queue, parts);
        self.kick(queue);
        chain
    }

    /// Adds a chain of `parts` to `queue` without kicking.
    pub fn add(&mut self, queue: usize, parts: &[Part<'_>]) -> ChainId {
        self.try_add(queue, parts, false).unwrap_or_else(|| {
            panic!(
                "queue {queue}: no free descriptors for a chain of {}",
                parts.len()
            )
        })
    }

    /// Adds a chain of `parts` to `queue` whose last descriptor links back
    /// to its head, without kicking.
    pub fn add_looping(&mut self, queue: usize, parts: &[Part<'_>]) -> ChainId {
        self.try_add(queue, parts, true).unwrap_or_else(|| {
            panic!(
                "queue {queue}: no free descriptors for a chain of {}",
                parts.len()
            )
        })
    }

    /// Adds a chain of `parts` (at least one) to `queue`, looping back to
    /// its head if `looping`; `None` when the queue has too few free
    /// descriptors, the device holding the rest.
    fn try_add(&mut self, queue: usize, parts: &[Part<'_>], looping: bool) -> Option<ChainId> {
        assert!(!parts.is_empty(), "a chain has at least one descriptor");
        self.harvest(queue);
        if self.ring_ref(queue).free.len() < parts.len() {
            return None;
        }
        let mut descs = Vec::with_capacity(parts.len());
        let mut writable = Vec::new();
        for part in parts {
            descs.push(match *part {
                Part::Read(bytes) => (self.put(bytes), bytes.len() as u32, 0),
                Part::Write(len) => {
                    let addr = self.alloc(u64::from(len));
                    write(&self.mem, &vec![UNWRITTEN; len as usize], addr);
                    writable.push((addr, len));
                    (addr, len, VRING_DESC_F_WRITE as u16)
                }
                Part::RawRead(addr, len) => (addr, len, 0),
                Part::RawWrite(addr, len) => (addr, len, VRING_DESC_F_WRITE as u16),
            });
        }
        let size = self.layout.queue_size;
        let id = self.chains.len();
        let Self { mem, rings, .. } = self;
        let ring = &mut rings[queue];
        let split = ring.free.len() - parts.len();
        let indices: Vec<u16> = ring.free.drain(split..).rev().collect();
        let head = indices[0];
        let table = DescriptorTable::new(&*mem, GuestAddress(ring.desc_table), size);
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let (flags, next) = match indices.get(i + 1) {
                Some(&next) => (flags | VRING_DESC_F_NEXT as u16, next),
                None if looping => (flags | VRING_DESC_F_NEXT as u16, head),
                None => (flags, 0),
            };
            let desc = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
            if let Err(e) = table.store(indices[i], desc) {
                panic!("cannot write descriptor {}: {e:?}", indices[i]);
            }
        }
        let earlier_uses = count_uses(&ring.used_entries, head);
        ring.outstanding.insert(head, id);
        let generation = ring.generation;
        self.chains.push(ChainRecord {
            queue,
            head,
            descriptors: indices,
            writable,
            earlier_uses,
            generation,
        });
        self.make_available(queue, head);
        Some(ChainId(id))
    }

    /// Puts `chain`'s head into its queue's avail ring again, as a broken
    /// or hostile driver may while the device still holds it, and kicks.
    pub fn offer_again(&mut self, chain: ChainId) {
        let (queue, head) = {
            let record = self.record(chain);
            (record.queue, record.head)
        };
        self.make_available(queue, head);
        self.kick(queue);
    }

    /// Writes `head` into the next avail slot (the ring wraps) and
    /// publishes it.
    fn make_available(&self, queue: usize, head: u16) {
        let ring = self.ring_ref(queue);
        let index_at = GuestAddress(ring.avail + 2);
        let index: u16 = self
            .mem
            .load(index_at, Ordering::Acquire)
            .unwrap_or_else(|e| panic!("cannot read the avail index: {e}"));
        let slot = u64::from(index % self.layout.queue_size);
        write(&self.mem, &head.to_le_bytes(), ring.avail + 4 + 2 * slot);
        if let Err(e) = self
            .mem
            .store(index.wrapping_add(1), index_at, Ordering::Release)
        {
            panic!("cannot write the avail index: {e}");
        }
    }

    /// The guest kicks `queue`: the transport pops and hands it to the
    /// device as on the vring thread.
    pub fn kick(&self, queue: usize) {
        let event = u16::try_from(queue).unwrap_or_else(|_| panic!("queue {queue}"));
        if let Err(e) = self
            .backend
            .handle_event(event, EventSet::IN, &self.vrings, 0)
        {
            panic!("queue {queue}: the kick failed: {e}");
        }
    }

    /// The frontend resets the device while the vring thread is in a kick
    /// of `queue`: the kick runs on another thread, and the reset comes as
    /// soon as `under_way` holds. Returns the used index when the reset
    /// returned and once the kick has ended and `settle` has passed; they
    /// differ if anything was completed after the reset.
    pub fn reset_during_kick(
        &self,
        queue: usize,
        under_way: impl Fn(&Self) -> bool,
        settle: Duration,
    ) -> (u16, u16) {
        std::thread::scope(|scope| {
            let kick = scope.spawn(|| self.kick(queue));
            while !under_way(self) {
                std::hint::spin_loop();
            }
            self.device.reset();
            let at_reset = self.used_index(queue);
            if kick.join().is_err() {
                panic!("queue {queue}: the kick panicked");
            }
            std::thread::sleep(settle);
            (at_reset, self.used_index(queue))
        })
    }

    /// The frontend stops `queue` (`GET_VRING_BASE`, as for a VM stop).
    pub fn stop_queue(&self, queue: usize) {
        self.vring(queue).set_queue_ready(false);
        let index = u32::try_from(queue).unwrap_or_else(|_| panic!("queue {queue}"));
        if let Err(e) = self.backend.stop_vring(index) {
            panic!("cannot stop queue {queue}: {e}");
        }
    }

    /// The frontend starts stopped `queue` again on the same ring, and the
    /// guest kicks it (a VM cont).
    pub fn restart_queue(&self, queue: usize) {
        self.vring(queue).set_queue_ready(true);
        self.kick(queue);
    }

    /// The guest driver was reset and sets `queue` up afresh at the same
    /// addresses: indices from 0, every descriptor free. Chains added
    /// before are gone; waiting on one is a test bug.
    pub fn set_up_queue_afresh(&mut self, queue: usize) {
        let ring = self.ring_ref(queue);
        for field in [ring.avail + 2, ring.used + 2] {
            write(&self.mem, &0u16.to_le_bytes(), field);
        }
        ring.vring.set_queue_next_avail(0);
        ring.vring.set_queue_next_used(0);
        ring.vring.set_queue_ready(true);
        let size = self.layout.queue_size;
        let ring = self.ring_mut(queue);
        ring.free = (0..size).rev().collect();
        ring.used_entries.clear();
        ring.outstanding.clear();
        ring.generation += 1;
    }

    /// `queue`'s used index in guest memory.
    pub fn used_index(&self, queue: usize) -> u16 {
        let at = GuestAddress(self.ring_ref(queue).used + 2);
        self.mem
            .load(at, Ordering::Acquire)
            .unwrap_or_else(|e| panic!("cannot read the used index: {e}"))
    }

    /// Reads the used entries of `queue` written since the last look and
    /// frees their descriptors. An id the guest does not hold is recorded
    /// and otherwise ignored.
    fn harvest(&mut self, queue: usize) {
        let index = self.used_index(queue);
        let size = self.layout.queue_size;
        let Self {
            mem, rings, chains, ..
        } = self;
        let ring = &mut rings[queue];
        let word = |at: u64| -> u32 {
            mem.read_obj::<u32>(GuestAddress(at))
                .map(u32::from_le)
                .unwrap_or_else(|e| panic!("cannot read the used ring: {e}"))
        };
        let mut seen = ring.used_entries.len() as u16;
        while seen != index {
            let at = ring.used + 4 + 8 * u64::from(seen % size);
            let (id, len) = (word(at), word(at + 4));
            ring.used_entries.push((id, len));
            seen = seen.wrapping_add(1);
            let held = u16::try_from(id)
                .ok()
                .and_then(|head| ring.outstanding.remove(&head));
            if let Some(chain) = held {
                ring.free.extend(chains[chain].descriptors.iter().rev());
            }
        }
    }

    /// Every used entry of `queue` so far, in order: (id, length).
    pub fn used_entries(&mut self, queue: usize) -> &[(u32, u32)] {
        self.harvest(queue);
        &self.ring_ref(queue).used_entries
    }

    /// How many times the device has used `chain` so far: more than once
    /// when it answered a head offered again while it held it.
    pub fn times_used(&mut self, chain: ChainId) -> usize {
        let (queue, head, earlier) = {
            let record = self.record(chain);
            (record.queue, record.head, record.earlier_uses)
        };
        count_uses(self.used_entries(queue), head) - earlier
    }

    fn record(&self, chain: ChainId) -> &ChainRecord {
        let record = &self.chains[chain.0];
        assert_eq!(
            record.generation,
            self.ring_ref(record.queue).generation,
            "chain {chain:?} is from before queue {} was set up afresh",
            record.queue
        );
        record
    }

    /// The addresses and lengths of `chain`'s [`Part::Write`] buffers.
    pub fn writable(&self, chain: ChainId) -> &[(u64, u32)] {
        &self.record(chain).writable
    }

    /// Where `chain` stands in its queue's used order, if used yet.
    pub fn used_position(&mut self, chain: ChainId) -> Option<usize> {
        let (queue, head, earlier) = {
            let record = self.record(chain);
            (record.queue, record.head, record.earlier_uses)
        };
        self.used_entries(queue)
            .iter()
            .enumerate()
            .filter(|(_, &(id, _))| id == u32::from(head))
            .nth(earlier)
            .map(|(position, _)| position)
    }

    /// `chain`'s used entry and written bytes, if used yet.
    fn try_used(&mut self, chain: ChainId) -> Option<Used> {
        let position = self.used_position(chain)?;
        let record = self.record(chain);
        let (_, len) = self.rings[record.queue].used_entries[position];
        let mut bytes = Vec::new();
        for &(addr, size) in &record.writable {
            let mut piece = vec![0u8; size as usize];
            if let Err(e) = self.mem.read_slice(&mut piece, GuestAddress(addr)) {
                panic!("cannot read a reply at {addr:#x}: {e}");
            }
            bytes.extend(piece);
        }
        Some(Used { len, bytes })
    }

    /// Waits up to [`WAIT`] for the device to use `chain`.
    pub fn wait(&mut self, chain: ChainId) -> Used {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(used) = self.try_used(chain) {
                return used;
            }
            assert!(
                Instant::now() < deadline,
                "queue {}: chain with head {} never used",
                self.record(chain).queue,
                self.record(chain).head
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Panics unless the device uses every chain it holds of `queue` within
    /// `limit`: a chain never returned hangs the guest driver.
    pub fn assert_all_used(&mut self, queue: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.harvest(queue);
            let held = self.ring_ref(queue).outstanding.len();
            if held == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queue {queue}: {held} chains never used"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn count_uses(entries: &[(u32, u32)], head: u16) -> usize {
    entries
        .iter()
        .filter(|&&(id, _)| id == u32::from(head))
        .count()
}

fn write(mem: &GuestMem, bytes: &[u8], addr: u64) {
    if let Err(e) = mem.write_slice(bytes, GuestAddress(addr)) {
        panic!("cannot write {} bytes at {addr:#x}: {e}", bytes.len());
    }
}
