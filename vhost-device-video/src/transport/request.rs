//! One popped descriptor chain and the queue it came from: the only way a
//! device reads a request from guest memory, writes its reply and returns
//! it to the guest.
//!
//! The checks every device needs on a chain are made here, once: the
//! device-readable descriptors come before the device-writable ones (virtio
//! 1.2, 2.7.4.2), every descriptor lies in guest memory, and the writable
//! part is large enough for what the device must always write.

use std::io;

use log::debug;
use thiserror::Error as ThisError;
use virtio_queue::{Reader, Writer};

use super::{Chain, DeviceQueue, TransportError, WritePermit};
use crate::log_limit::warn_limited;

/// What is wrong with the descriptors of a request.
#[derive(Debug, ThisError)]
pub enum RequestError {
    /// A device-readable descriptor follows a device-writable one.
    #[error("queue {queue}, head {head}: device-readable descriptor after a writable one")]
    DescriptorOrder { queue: usize, head: u16 },
    /// A device-readable descriptor lies outside guest memory, or the
    /// readable part is longer than any chain can be.
    #[error("queue {queue}, head {head}: device-readable part unusable: {source}")]
    Readable {
        queue: usize,
        head: u16,
        source: virtio_queue::Error,
    },
    /// As [`Readable`](Self::Readable), for the device-writable part.
    #[error("queue {queue}, head {head}: device-writable part unusable: {source}")]
    Writable {
        queue: usize,
        head: u16,
        source: virtio_queue::Error,
    },
    /// The device-writable part cannot hold what the device must write.
    #[error(
        "queue {queue}, head {head}: device-writable part of {available} bytes, {needed} needed"
    )]
    ShortWritable {
        queue: usize,
        head: u16,
        available: usize,
        needed: usize,
    },
}

/// A descriptor chain the device popped and has to complete exactly once
/// (or drop on a device reset). Made only by
/// [`DeviceQueue::pop_requests`], so its head is tracked in flight.
pub struct Request {
    chain: Chain,
    queue: DeviceQueue,
}

impl Request {
    pub(super) fn new(chain: Chain, queue: DeviceQueue) -> Self {
        Request { chain, queue }
    }

    /// The head descriptor index, the request's name in the used ring.
    pub fn head(&self) -> u16 {
        self.chain.head_index()
    }

    /// The queue the request came from.
    pub fn queue(&self) -> &DeviceQueue {
        &self.queue
    }

    /// Leave to write this request's reply (see [`DeviceQueue::write_permit`]).
    pub fn write_permit(&self) -> Option<WritePermit<'_>> {
        self.queue.write_permit()
    }

    /// The device-readable part as one byte stream. Refuses a chain with a
    /// device-readable descriptor after a device-writable one: the device
    /// would read what it is meant to overwrite.
    pub fn reader(&self) -> Result<Reader<'_, ()>, RequestError> {
        let (queue, head) = (self.queue.index(), self.head());
        let mut seen_writable = false;
        for descriptor in self.chain.clone() {
            if descriptor.is_write_only() {
                seen_writable = true;
            } else if seen_writable {
                return Err(RequestError::DescriptorOrder { queue, head });
            }
        }
        Reader::new(self.chain.memory(), self.chain.clone()).map_err(|source| {
            RequestError::Readable {
                queue,
                head,
                source,
            }
        })
    }

    /// The device-writable part as one byte stream, refused if it holds
    /// fewer than `needed` bytes. Descriptor order is not checked here: a
    /// device can still report a badly ordered chain in its reply.
    pub fn writer(&self, needed: usize) -> Result<Writer<'_, ()>, RequestError> {
        let (queue, head) = (self.queue.index(), self.head());
        let writer = Writer::new(self.chain.memory(), self.chain.clone()).map_err(|source| {
            RequestError::Writable {
                queue,
                head,
                source,
            }
        })?;
        let available = writer.available_bytes();
        if available < needed {
            return Err(RequestError::ShortWritable {
                queue,
                head,
                available,
                needed,
            });
        }
        Ok(writer)
    }

    /// Returns the request to the guest with `written` bytes of its
    /// writable part used, and interrupts the guest if it asked for it.
    pub fn complete(self, written: usize) -> Result<(), TransportError> {
        self.queue.complete(self.head(), used_length(written))
    }

    /// Writes as much of `reply` as the writable part holds and completes
    /// the request. Returns the number of bytes written: 0 if the writable
    /// part is unusable or the ring was given up meanwhile.
    pub fn reply(self, reply: &[u8]) -> Result<usize, TransportError> {
        let queue = self.queue.index();
        // Held until the request is completed, so that no ring stop slips
        // in between.
        let Some(_permit) = self.write_permit() else {
            debug!("queue {queue}: no reply into a ring given up");
            return Ok(0);
        };
        let written = match self.writer(0) {
            Ok(mut writer) => {
                let fit = reply.len().min(writer.available_bytes());
                match io::Write::write_all(&mut writer, &reply[..fit]) {
                    Ok(()) => fit,
                    Err(e) => {
                        warn_limited!("queue {queue}: cannot write reply: {e}");
                        0
                    }
                }
            }
            Err(e) => {
                warn_limited!("{e}");
                0
            }
        };
        self.queue.complete(self.head(), used_length(written))?;
        Ok(written)
    }
}

/// The used length of `written` bytes. A chain holds at most a queue's
/// worth of descriptors of u32 lengths each; the clamp only keeps the
/// conversion total.
fn used_length(written: usize) -> u32 {
    u32::try_from(written).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use vhost_user_backend::{VringRwLock, VringT};
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic};

    use super::*;
    use crate::transport::GuestMem;

    const QSIZE: u16 = 16;
    const MEM_SIZE: usize = 1 << 20;
    /// Where the descriptors of the test chains point.
    const DATA: u64 = 0x8_0000;

    /// Read `R(len)` or write `W(len)` descriptor, or one at an address
    /// outside guest memory.
    #[derive(Clone, Copy)]
    enum Desc {
        R(u32),
        W(u32),
        OutsideR,
    }

    /// One queue holding `chain` (its descriptors back to back from
    /// `DATA`, readable bytes counting up), popped as a request.
    fn one_request<'m>(
        mem: &'m GuestMem,
        chain: &[Desc],
    ) -> (Request, MockSplitQueue<'m, GuestMem>) {
        let mock = MockSplitQueue::create(mem, GuestAddress(0), QSIZE);
        let mut addr = DATA;
        let raw: Vec<RawDescriptor> = chain
            .iter()
            .enumerate()
            .map(|(i, desc)| {
                let (at, len, flags) = match *desc {
                    Desc::R(len) => {
                        let bytes: Vec<u8> = (0..len).map(|b| b as u8).collect();
                        mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
                        (addr, len, 0)
                    }
                    Desc::W(len) => (addr, len, VRING_DESC_F_WRITE as u16),
                    Desc::OutsideR => (MEM_SIZE as u64 * 2, 64, 0),
                };
                addr += u64::from(len);
                let next = if i + 1 < chain.len() {
                    VRING_DESC_F_NEXT as u16
                } else {
                    0
                };
                RawDescriptor::from(SplitDescriptor::new(at, len, flags | next, i as u16 + 1))
            })
            .collect();
        mock.add_desc_chains(&raw, 0).unwrap();
        let atomic = GuestMemoryAtomic::new(mem.clone());
        let vring = VringRwLock::new(atomic.clone(), QSIZE).unwrap();
        vring
            .set_queue_info(
                mock.desc_table_addr().0,
                mock.avail_addr().0,
                mock.used_addr().0,
            )
            .unwrap();
        vring.set_queue_size(QSIZE);
        vring.set_queue_ready(true);
        vring.set_enabled(true);
        let queue = DeviceQueue::new(3, vring, atomic);
        let mut requests = queue.pop_requests().unwrap();
        assert_eq!(requests.len(), 1);
        (requests.remove(0), mock)
    }

    fn memory() -> GuestMem {
        GuestMem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    #[test]
    fn a_well_formed_chain_reads_and_writes_its_parts() {
        let mem = memory();
        let (request, _mock) = one_request(&mem, &[Desc::R(3), Desc::R(5), Desc::W(4), Desc::W(6)]);
        assert_eq!(request.head(), 0);
        assert_eq!(request.queue().index(), 3);
        let mut read = Vec::new();
        io::Read::read_to_end(&mut request.reader().unwrap(), &mut read).unwrap();
        assert_eq!(read, [0, 1, 2, 0, 1, 2, 3, 4]);
        assert_eq!(request.writer(10).unwrap().available_bytes(), 10);
    }

    #[test]
    fn a_readable_descriptor_after_a_writable_one_is_refused() {
        let mem = memory();
        let (request, _mock) = one_request(&mem, &[Desc::R(8), Desc::W(16), Desc::R(8)]);
        assert!(matches!(
            request.reader(),
            Err(RequestError::DescriptorOrder { queue: 3, head: 0 })
        ));
        // The device can still say so in its reply.
        assert_eq!(request.writer(16).unwrap().available_bytes(), 16);
    }

    #[test]
    fn a_short_writable_part_is_refused() {
        let mem = memory();
        let (request, _mock) = one_request(&mem, &[Desc::R(8), Desc::W(4), Desc::W(11)]);
        assert!(request.writer(15).is_ok());
        assert!(matches!(
            request.writer(16),
            Err(RequestError::ShortWritable {
                available: 15,
                needed: 16,
                ..
            })
        ));
    }

    #[test]
    fn a_descriptor_outside_guest_memory_is_refused() {
        let mem = memory();
        let (request, _mock) = one_request(&mem, &[Desc::R(8), Desc::OutsideR, Desc::W(4)]);
        assert!(matches!(
            request.reader(),
            Err(RequestError::Readable { .. })
        ));
    }

    #[test]
    fn a_reply_is_cut_to_the_writable_part_and_completes_the_request() {
        let mem = memory();
        let (request, mock) = one_request(&mem, &[Desc::R(2), Desc::W(3), Desc::W(2)]);
        let queue = request.queue().clone();
        assert_eq!(queue.in_flight().len(), 1);
        assert_eq!(request.reply(b"0123456789").unwrap(), 5);
        let written: [u8; 5] = mem.read_obj(GuestAddress(DATA + 2)).unwrap();
        assert_eq!(&written, b"01234");
        let used = mock.used_addr().0;
        let index: u16 = mem.read_obj(GuestAddress(used + 2)).unwrap();
        let (id, len): (u32, u32) = (
            mem.read_obj(GuestAddress(used + 4)).unwrap(),
            mem.read_obj(GuestAddress(used + 8)).unwrap(),
        );
        assert_eq!((index, id, len), (1, 0, 5));
        assert!(queue.in_flight().is_empty());
    }
}
