//! Chains built from a byte string, for the device fuzz targets and the
//! integration test that replays their seeds.
//!
//! The input is a series of records, each one chain:
//! `[shape u8][writable u8][split u8]([size u32 le])[length u16 le][length bytes]`,
//! where `size`, the writable bytes, is there only for writable class 7.
//! The bytes are the device-readable request, cut into up to three
//! descriptors at `split`; `shape` and `writable` add the hostile cases a
//! guest can build: no readable part, readable after writable, zero-length,
//! out-of-range and 4 GiB descriptors, writable buffers too small or split,
//! and chains that loop back to their head.

use super::{ChainId, FakeGuest, Layout, Part, DATA_START};
use crate::transport::VirtioDevice;

/// The guest the records are meant for: small, so that an input runs in
/// milliseconds; its data area reused, as inputs are long.
pub const LAYOUT: Layout = Layout {
    memory: 4 << 20,
    queue_size: 256,
    reuse_memory: true,
};
/// Chains per input: enough for a stream's life, few enough to keep an
/// input short.
const MAX_CHAINS: usize = 48;
/// Writable bytes of classes 0 to 6; class 7 reads its size from the input.
const WRITABLE_SIZES: [u32; 7] = [0, 4, 8, 24, 64, 256, 4096];
/// Largest writable size a record may ask for.
const MAX_WRITABLE: u32 = 2 << 20;
/// The length of a "4 GiB" descriptor: two of them overflow a u32 total.
const HUGE: u32 = u32::MAX - 0xfff;

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

/// One record: its queue, its descriptors, whether it loops.
struct Record<'d> {
    queue: usize,
    parts: Vec<Part<'d>>,
    looping: bool,
}

fn record<'d>(input: &mut Input<'d>, memory: u64, queues: usize) -> Option<Record<'d>> {
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
        readable.push(Part::RawRead(DATA_START, HUGE));
    }
    if shape & SHAPE_ZERO_LENGTH != 0 {
        readable.push(Part::RawRead(DATA_START, 0));
    }
    let cut = if request.is_empty() {
        0
    } else {
        usize::from(split) % (request.len() + 1)
    };
    let (first, rest) = request.split_at(cut);
    match shape & SHAPE_READABLE_PARTS {
        0 => {}
        1 => readable.push(Part::Read(request)),
        2 => readable.extend([Part::Read(first), Part::Read(rest)]),
        _ => {
            let (second, third) = rest.split_at(rest.len() / 2);
            readable.extend([Part::Read(first), Part::Read(second), Part::Read(third)]);
        }
    }

    let mut written = Vec::new();
    if shape & SHAPE_OUT_OF_RANGE != 0 {
        let outside = memory + 0x1000;
        written.push(if shape & SHAPE_OUT_OF_RANGE_WRITABLE != 0 {
            Part::RawWrite(outside, 64)
        } else {
            Part::RawRead(outside, 64)
        });
    }
    if writable & WRITABLE_SPLIT != 0 && size > 1 {
        written.extend([Part::Write(size / 2), Part::Write(size - size / 2)]);
    } else if size > 0 {
        written.push(Part::Write(size));
    }

    let mut parts: Vec<Part<'d>> = if shape & SHAPE_WRITABLE_FIRST != 0 {
        written.into_iter().chain(readable).collect()
    } else {
        readable.into_iter().chain(written).collect()
    };
    if parts.is_empty() {
        parts.push(Part::RawRead(DATA_START, 0));
    }
    Some(Record {
        queue: usize::from(shape & SHAPE_SECOND_QUEUE != 0) % queues,
        parts,
        looping: writable & WRITABLE_LOOP != 0,
    })
}

impl<D: VirtioDevice> FakeGuest<D> {
    /// Adds every chain `data` describes, kicking after each, until the
    /// input ends, [`MAX_CHAINS`] are in, or a queue has no room left;
    /// returns the chains added.
    pub fn run_records(&mut self, data: &[u8]) -> Vec<ChainId> {
        let mut input = Input(data);
        let (memory, queues) = (self.layout.memory, self.rings.len());
        let mut added = Vec::new();
        for _ in 0..MAX_CHAINS {
            let Some(record) = record(&mut input, memory, queues) else {
                break;
            };
            let Some(chain) = self.try_add(record.queue, &record.parts, record.looping) else {
                break;
            };
            added.push(chain);
            self.kick(record.queue);
        }
        added
    }
}
