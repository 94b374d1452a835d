//! A fake guest for the device fuzz targets: guest memory, split virtqueues
//! laid out by `MockSplitQueue` and served by the transport's own
//! `VringRwLock`, and descriptor chains built from the fuzz input.
//!
//! The input is a series of records, each one chain:
//! `[shape u8][writable u8][split u8]([size u32 le])[length u16 le][length bytes]`,
//! where `size`, the writable bytes, is there only for writable class 7.
//! The bytes are the device-readable request, cut into up to three
//! descriptors at `split`; `shape` and `writable` add the hostile cases a
//! guest can build: no readable part, readable after writable, zero-length,
//! out-of-range and 4 GiB descriptors, writable buffers too small or split,
//! and chains that loop back to their head.

use std::time::{Duration, Instant};

use vhost_device_video::transport::{AtomicMem, DeviceQueue, GuestMem, VirtioDevice};
use vhost_user_backend::{VringRwLock, VringT};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic};

/// Guest RAM: rings in the first MiB, buffers after it.
pub const MEM_SIZE: u64 = 4 << 20;
const DATA_START: u64 = 1 << 20;
const RING_SPACING: u64 = 0x1_0000;
const QUEUE_SIZE: u16 = 256;
/// Chains per input: enough for a stream's life, few enough that the
/// avail ring never wraps.
const MAX_CHAINS: usize = 48;
/// Writable bytes of classes 0 to 6; class 7 reads its size from the input.
const WRITABLE_SIZES: [u32; 7] = [0, 4, 8, 24, 64, 256, 4096];
/// Largest writable size a record may ask for.
const MAX_WRITABLE: u32 = 2 << 20;

const SHAPE_READABLE_PARTS: u8 = 0b11;
const SHAPE_WRITABLE_FIRST: u8 = 1 << 2;
const SHAPE_OUT_OF_RANGE: u8 = 1 << 3;
const SHAPE_ZERO_LENGTH: u8 = 1 << 4;
const SHAPE_SECOND_QUEUE: u8 = 1 << 5;
const SHAPE_OUT_OF_RANGE_WRITABLE: u8 = 1 << 6;
const SHAPE_HUGE: u8 = 1 << 7;
const WRITABLE_SIZE: u8 = 0b111;
const WRITABLE_SPLIT: u8 = 1 << 3;
const WRITABLE_LOOP: u8 = 1 << 4;

/// One descriptor: guest address, length, flags.
type Desc = (u64, u32, u16);

/// One chain to add: its queue, its descriptors, whether its last
/// descriptor links back to its head.
struct ChainSpec {
    queue: usize,
    descs: Vec<Desc>,
    loops: bool,
}

struct Ring<'a> {
    mock: MockSplitQueue<'a, GuestMem>,
    vring: VringRwLock<AtomicMem>,
    next_desc: u16,
    chains: u16,
}

/// Guest memory and the device's queues in it.
pub struct Guest<'a> {
    mem: &'a GuestMem,
    atomic: AtomicMem,
    rings: Vec<Ring<'a>>,
    next_data: u64,
}

/// Fresh guest memory for one input.
pub fn guest_memory() -> GuestMem {
    match GuestMem::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]) {
        Ok(mem) => mem,
        Err(e) => panic!("cannot map fake guest memory: {e}"),
    }
}

struct Input<'d>(&'d [u8]);

impl<'d> Input<'d> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn take(&mut self, len: usize) -> &'d [u8] {
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head
    }
}

impl<'a> Guest<'a> {
    /// `num_queues` ready queues in `mem`, as a driver leaves them.
    pub fn new(mem: &'a GuestMem, num_queues: usize) -> Self {
        let atomic = GuestMemoryAtomic::new(mem.clone());
        let rings = (0..num_queues)
            .map(|index| {
                let start = GuestAddress(index as u64 * RING_SPACING);
                let mock = MockSplitQueue::create(mem, start, QUEUE_SIZE);
                let vring = match VringRwLock::new(atomic.clone(), QUEUE_SIZE) {
                    Ok(vring) => vring,
                    Err(e) => panic!("cannot create a vring: {e}"),
                };
                if let Err(e) = vring.set_queue_info(
                    mock.desc_table_addr().0,
                    mock.avail_addr().0,
                    mock.used_addr().0,
                ) {
                    panic!("cannot place the vring: {e}");
                }
                vring.set_queue_size(QUEUE_SIZE);
                vring.set_queue_ready(true);
                vring.set_enabled(true);
                Ring {
                    mock,
                    vring,
                    next_desc: 0,
                    chains: 0,
                }
            })
            .collect();
        Guest {
            mem,
            atomic,
            rings,
            next_data: DATA_START,
        }
    }

    fn alloc(&mut self, len: u64) -> u64 {
        if self.next_data + len > MEM_SIZE {
            self.next_data = DATA_START;
        }
        let addr = self.next_data;
        self.next_data = (addr + len.max(1) + 63) & !63;
        addr
    }

    fn put(&mut self, bytes: &[u8]) -> Desc {
        let addr = self.alloc(bytes.len() as u64);
        if let Err(e) = self.mem.write_slice(bytes, GuestAddress(addr)) {
            panic!("cannot write fake guest memory: {e}");
        }
        (addr, bytes.len() as u32, 0)
    }

    /// The descriptors one record asks for, or `None` at the end of input.
    fn record(&mut self, input: &mut Input<'_>) -> Option<ChainSpec> {
        let shape = input.byte()?;
        let writable = input.byte()?;
        let split = input.byte()?;
        let size = match WRITABLE_SIZES.get(usize::from(writable & WRITABLE_SIZE)) {
            Some(&size) => size,
            None => {
                let bytes = [input.byte()?, input.byte()?, input.byte()?, input.byte()?];
                u32::from_le_bytes(bytes) % (MAX_WRITABLE + 1)
            }
        };
        let length = u16::from_le_bytes([input.byte()?, input.byte().unwrap_or(0)]);
        let request = input.take(usize::from(length));

        let mut readable = Vec::new();
        if shape & SHAPE_HUGE != 0 {
            readable.push((DATA_START, u32::MAX - 0xfff, 0));
        }
        if shape & SHAPE_ZERO_LENGTH != 0 {
            readable.push((DATA_START, 0, 0));
        }
        let cut = if request.is_empty() {
            0
        } else {
            usize::from(split) % (request.len() + 1)
        };
        let (first, rest) = request.split_at(cut);
        match shape & SHAPE_READABLE_PARTS {
            0 => {}
            1 => readable.push(self.put(request)),
            2 => {
                readable.push(self.put(first));
                readable.push(self.put(rest));
            }
            _ => {
                let (second, third) = rest.split_at(rest.len() / 2);
                readable.push(self.put(first));
                readable.push(self.put(second));
                readable.push(self.put(third));
            }
        }

        let mut written = Vec::new();
        if shape & SHAPE_OUT_OF_RANGE != 0 {
            let flags = if shape & SHAPE_OUT_OF_RANGE_WRITABLE != 0 {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            written.push((MEM_SIZE + 0x1000, 64, flags));
        }
        let halves = if writable & WRITABLE_SPLIT != 0 && size > 1 {
            vec![size / 2, size - size / 2]
        } else if size > 0 {
            vec![size]
        } else {
            Vec::new()
        };
        for half in halves {
            let addr = self.alloc(u64::from(half));
            written.push((addr, half, VRING_DESC_F_WRITE as u16));
        }

        let descs = if shape & SHAPE_WRITABLE_FIRST != 0 {
            written.into_iter().chain(readable).collect()
        } else {
            readable.into_iter().chain(written).collect()
        };
        let queue = usize::from(shape & SHAPE_SECOND_QUEUE != 0) % self.rings.len();
        Some(ChainSpec {
            queue,
            descs,
            loops: writable & WRITABLE_LOOP != 0,
        })
    }

    /// Adds one chain to `queue`; false when the queue has no room.
    fn add(&mut self, queue: usize, descs: &[Desc], loops: bool) -> bool {
        let Some(ring) = self.rings.get_mut(queue) else {
            return false;
        };
        let count = descs.len().max(1) as u16;
        if u32::from(ring.next_desc) + u32::from(count) > u32::from(QUEUE_SIZE) {
            return false;
        }
        let head = ring.next_desc;
        let empty = [(DATA_START, 0, 0)];
        let descs = if descs.is_empty() { &empty[..] } else { descs };
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let last = i + 1 == descs.len();
                let (flags, next) = match (last, loops) {
                    (false, _) => (flags | VRING_DESC_F_NEXT as u16, head + i as u16 + 1),
                    (true, true) => (flags | VRING_DESC_F_NEXT as u16, head),
                    (true, false) => (flags, 0),
                };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        if let Err(e) = ring.mock.add_desc_chains(&raw, head) {
            panic!("cannot add a chain: {e:?}");
        }
        ring.next_desc += count;
        ring.chains += 1;
        true
    }

    fn queue(&self, index: usize) -> Option<DeviceQueue> {
        let ring = self.rings.get(index)?;
        Some(DeviceQueue::new(
            index,
            ring.vring.clone(),
            self.atomic.clone(),
        ))
    }

    /// Feeds every chain of `data` to `device`, kicking after each.
    pub fn run(&mut self, device: &dyn VirtioDevice, data: &[u8]) {
        let mut input = Input(data);
        for _ in 0..MAX_CHAINS {
            let Some(spec) = self.record(&mut input) else {
                break;
            };
            if !self.add(spec.queue, &spec.descs, spec.loops) {
                break;
            }
            if let Some(queue) = self.queue(spec.queue) {
                device.handle_kick(&queue);
            }
        }
    }

    // Only the dewarper returns every chain; the decoder keeps some by design.
    #[allow(dead_code)]
    fn used_index(&self, index: usize) -> u16 {
        let Some(ring) = self.rings.get(index) else {
            return 0;
        };
        let at = GuestAddress(ring.mock.used_addr().0 + 2);
        self.mem.read_obj(at).unwrap_or(0)
    }

    /// Panics unless every chain added to `queue` is used within `limit`:
    /// a chain the device never returns hangs the guest driver.
    #[allow(dead_code)]
    pub fn assert_all_used(&self, queue: usize, limit: Duration) {
        let Some(ring) = self.rings.get(queue) else {
            return;
        };
        let deadline = Instant::now() + limit;
        loop {
            let used = self.used_index(queue);
            if used == ring.chains {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "queue {queue}: {} of {} chains never returned",
                    ring.chains.wrapping_sub(used),
                    ring.chains
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
