//! One popped descriptor chain and the queue it came from: the only way a
//! device reads a request from guest memory, writes its reply and returns
//! it to the guest.
//!
//! The checks every device needs on a chain are made here, once: the
//! device-readable descriptors come before the device-writable ones (what
//! the virtio specification requires of drivers), every descriptor lies in
//! guest memory, and the writable part is large enough for what the device
//! must always write.

use std::io;

use log::debug;
use thiserror::Error as ThisError;
use virtio_queue::{Reader, Writer};

use super::{Chain, DeviceQueue, TransportError};
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
        let Some(_permit) = self.queue.write_permit() else {
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
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::fake_guest::{ChainId, FakeGuest, Layout, Part};
    use crate::transport::VirtioDevice;

    /// The queue the requests come from: not the first, so that a request
    /// shows it keeps its queue's number.
    const QUEUE: usize = 3;

    /// A device that keeps every request it pops, for the test to look at.
    #[derive(Default)]
    struct Keeper {
        requests: Mutex<Vec<Request>>,
    }

    impl VirtioDevice for Keeper {
        fn num_queues(&self) -> usize {
            QUEUE + 1
        }
        fn max_queue_size(&self) -> usize {
            16
        }
        fn features(&self) -> u64 {
            0
        }
        fn config(&self) -> Vec<u8> {
            Vec::new()
        }
        fn handle_kick(&self, queue: &DeviceQueue) {
            let popped = queue.pop_requests().unwrap();
            self.requests.lock().unwrap().extend(popped);
        }
        fn reset(&self) {
            self.requests.lock().unwrap().clear();
        }
    }

    /// A fake guest that offered `parts` as one chain, the request the
    /// device popped for it, and the chain.
    fn one_request(parts: &[Part<'_>]) -> (Request, FakeGuest<Keeper>, ChainId) {
        let layout = Layout {
            queue_size: 16,
            ..Layout::default()
        };
        let mut guest = FakeGuest::new(Arc::new(Keeper::default()), layout);
        let chain = guest.submit(QUEUE, parts);
        let mut requests = std::mem::take(&mut *guest.device().requests.lock().unwrap());
        assert_eq!(requests.len(), 1);
        (requests.remove(0), guest, chain)
    }

    #[test]
    fn a_well_formed_chain_reads_and_writes_its_parts() {
        let (request, _guest, _) = one_request(&[
            Part::Read(&[0, 1, 2]),
            Part::Read(&[0, 1, 2, 3, 4]),
            Part::Write(4),
            Part::Write(6),
        ]);
        assert_eq!(request.head(), 0);
        assert_eq!(request.queue().index(), QUEUE);
        let mut read = Vec::new();
        io::Read::read_to_end(&mut request.reader().unwrap(), &mut read).unwrap();
        assert_eq!(read, [0, 1, 2, 0, 1, 2, 3, 4]);
        assert_eq!(request.writer(10).unwrap().available_bytes(), 10);
    }

    #[test]
    fn a_readable_descriptor_after_a_writable_one_is_refused() {
        let (request, _guest, _) =
            one_request(&[Part::Read(&[0; 8]), Part::Write(16), Part::Read(&[0; 8])]);
        assert!(matches!(
            request.reader(),
            Err(RequestError::DescriptorOrder {
                queue: QUEUE,
                head: 0
            })
        ));
        // The device can still say so in its reply.
        assert_eq!(request.writer(16).unwrap().available_bytes(), 16);
    }

    #[test]
    fn a_short_writable_part_is_refused() {
        let (request, _guest, _) =
            one_request(&[Part::Read(&[0; 8]), Part::Write(4), Part::Write(11)]);
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
        let outside = Layout::default().memory * 2;
        let (request, _guest, _) = one_request(&[
            Part::Read(&[0; 8]),
            Part::RawRead(outside, 64),
            Part::Write(4),
        ]);
        assert!(matches!(
            request.reader(),
            Err(RequestError::Readable { .. })
        ));
    }

    #[test]
    fn a_reply_is_cut_to_the_writable_part_and_completes_the_request() {
        let (request, mut guest, chain) =
            one_request(&[Part::Read(&[0; 2]), Part::Write(3), Part::Write(2)]);
        let queue = request.queue().clone();
        assert_eq!(queue.in_flight().len(), 1);
        assert_eq!(request.reply(b"0123456789").unwrap(), 5);
        let used = guest.wait(chain);
        assert_eq!((used.len, &used.bytes[..]), (5, &b"01234"[..]));
        assert_eq!(guest.used_entries(QUEUE), [(0, 5)]);
        assert!(queue.in_flight().is_empty());
    }
}
