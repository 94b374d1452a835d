//! Guest resources: the scatter lists a stream's buffers are made of, where
//! a picture's planes go in them, and the writes of pictures into them.

use std::borrow::Cow;
use std::sync::Arc;

use log::debug;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use super::stream::{QueuedOutput, StreamState};
use super::{Charge, DecoderError, MemoryBudget, MAX_RESOURCES_PER_QUEUE, MAX_RESOURCE_BYTES};
use crate::engine::decode::{write_picture, Picture, PictureLayout};
use crate::protocol::virtio_video::{self as vv, PlaneEntries, QueueType};
use crate::transport::DeviceQueue;

/// A guest buffer: a scatter list of guest-physical ranges.
pub(super) struct Resource {
    /// (guest address, length, offset of the range in the buffer).
    pub(super) ranges: Vec<Range>,
    pub(super) size: u64,
    pub(super) planes: PlaneMap,
    pub(super) queued: bool,
    /// The scatter list's share of the budget.
    pub(super) _charge: Charge,
}

/// One guest range of a resource: (guest address, length, offset of the
/// range in the buffer).
pub(super) type Range = (u64, u32, u64);

/// Where the planes of a picture go in a resource's scatter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PlaneMap {
    /// One memory plane: the picture planes at the stream layout's offsets.
    Packed,
    /// Picture plane `p` starts at `spans[p].0` and must end by `spans[p].1`
    /// (offsets into the scatter list): the guest gave each plane its own
    /// memory (`PLANES_LAYOUT_PER_PLANE`) or its own offset in one buffer.
    Placed(Vec<(u64, u64)>),
}

impl Resource {
    /// Whether a picture of the stream layout fits: every plane within its
    /// memory. Checked for each queued buffer on every picture, so it
    /// allocates nothing.
    pub(super) fn fits(&self, layout: &PictureLayout) -> bool {
        match &self.planes {
            PlaneMap::Packed => self.size >= layout.total_size(),
            PlaneMap::Placed(spans) => {
                spans.len() == layout.planes.len()
                    && spans
                        .iter()
                        .zip(&layout.planes)
                        .all(|(&(start, end), plane)| {
                            start
                                .checked_add(u64::from(plane.size))
                                .is_some_and(|plane_end| plane_end <= end)
                        })
            }
        }
    }

    /// The stream layout as it lands in this resource, if every plane fits.
    pub(super) fn placed_layout<'l>(
        &self,
        layout: &'l PictureLayout,
    ) -> Option<Cow<'l, PictureLayout>> {
        if !self.fits(layout) {
            return None;
        }
        match &self.planes {
            PlaneMap::Packed => Some(Cow::Borrowed(layout)),
            PlaneMap::Placed(spans) => {
                let mut placed = layout.clone();
                for (plane, &(start, _)) in placed.planes.iter_mut().zip(spans) {
                    plane.offset = start;
                }
                Some(Cow::Owned(placed))
            }
        }
    }

    /// Calls `f(address, start, end)` for each piece of `[offset, offset +
    /// len)` that falls in one range; `start..end` indexes the caller's
    /// bytes. Returns false if the buffer is too short.
    pub(super) fn for_each_piece(
        &self,
        offset: u64,
        len: usize,
        f: &mut dyn FnMut(GuestAddress, usize, usize) -> bool,
    ) -> bool {
        let end = offset.saturating_add(len as u64);
        if end > self.size {
            return false;
        }
        let first = self
            .ranges
            .partition_point(|&(_, l, start)| start + u64::from(l) <= offset);
        let mut done = 0usize;
        for &(addr, l, start) in self.ranges.get(first..).unwrap_or_default() {
            if done == len {
                break;
            }
            let within = offset + done as u64 - start;
            let take = (u64::from(l) - within).min((len - done) as u64) as usize;
            if !f(GuestAddress(addr + within), done, done + take) {
                return false;
            }
            done += take;
        }
        done == len
    }
}

pub(super) fn create_resource(
    st: &mut StreamState,
    budget: &Arc<MemoryBudget>,
    queue: &DeviceQueue,
    queue_type: QueueType,
    resource_id: u32,
    planes_layout: u32,
    planes: Vec<PlaneEntries>,
) -> Result<(), DecoderError> {
    // Bitstream buffers have one plane; pictures may come in one buffer or
    // one per plane (multi-planar V4L2 formats such as NV12M).
    let per_plane = match planes_layout {
        vv::PLANES_LAYOUT_SINGLE_BUFFER => false,
        vv::PLANES_LAYOUT_PER_PLANE => true,
        _ => return Err(DecoderError::InvalidParameter),
    };
    let multi_plane = planes.len() > 1;
    if multi_plane && queue_type == QueueType::Input
        || per_plane && planes.iter().any(|p| p.entries.is_empty())
    {
        return Err(DecoderError::InvalidParameter);
    }
    let key = (queue_type, resource_id);
    match st.resources.get(&key) {
        Some(existing) if existing.queued => return Err(DecoderError::InvalidResourceId),
        Some(_) => {}
        None => {
            let count = st
                .resources
                .keys()
                .filter(|(q, _)| *q == queue_type)
                .count();
            if count >= MAX_RESOURCES_PER_QUEUE {
                return Err(DecoderError::OutOfMemory);
            }
        }
    }
    let count: usize = planes.iter().map(|p| p.entries.len()).sum();
    let metadata = std::mem::size_of::<Resource>() + count * std::mem::size_of::<Range>();
    let charge = budget
        .try_charge(metadata as u64)
        .ok_or(DecoderError::OutOfMemory)?;
    let mem = queue.memory();
    let mut ranges = Vec::with_capacity(count);
    let mut size = 0u64;
    let mut spans = Vec::with_capacity(planes.len());
    for plane in planes {
        let memory_start = size;
        for (addr, len) in plane.entries {
            let valid = len > 0
                && mem.check_range(GuestAddress(addr), len as usize, Permissions::ReadWrite);
            if !valid {
                return Err(DecoderError::InvalidParameter);
            }
            ranges.push((addr, len, size));
            size += u64::from(len);
            if size > MAX_RESOURCE_BYTES {
                return Err(DecoderError::OutOfMemory);
            }
        }
        spans.push((memory_start, size, u64::from(plane.offset)));
    }
    let planes = if !multi_plane {
        PlaneMap::Packed
    } else if per_plane {
        PlaneMap::Placed(
            spans
                .iter()
                .map(|&(start, end, offset)| (start + offset, end))
                .collect(),
        )
    } else {
        PlaneMap::Placed(spans.iter().map(|&(_, _, offset)| (offset, size)).collect())
    };
    st.resources.insert(
        key,
        Resource {
            ranges,
            size,
            planes,
            queued: false,
            _charge: charge,
        },
    );
    Ok(())
}

pub(super) fn release(st: &mut StreamState, resource_id: u32) {
    if let Some(r) = st.resources.get_mut(&(QueueType::Output, resource_id)) {
        r.queued = false;
    }
}

pub(super) fn write_to_resource(
    st: &StreamState,
    resource_id: u32,
    picture: &dyn Picture,
    out: &QueuedOutput,
) -> bool {
    let Some(resource) = st.resources.get(&(QueueType::Output, resource_id)) else {
        return false;
    };
    let Some(layout) = resource.placed_layout(&st.output) else {
        return false;
    };
    let Some(planes) = picture.planes() else {
        debug!("picture in a pixel format the device cannot output");
        return false;
    };
    let (w, h) = picture.size();
    let Some(_permit) = out.pending.queue().write_permit() else {
        return false;
    };
    let mem = out.pending.queue().memory();
    let mut sink = |offset: u64, bytes: &[u8]| {
        resource.for_each_piece(offset, bytes.len(), &mut |addr, start, end| {
            bytes
                .get(start..end)
                .is_some_and(|src| mem.write_slice(src, addr).is_ok())
        })
    };
    match write_picture(&planes, w, h, &layout, &mut sink) {
        Ok(()) => true,
        Err(e) => {
            debug!("picture not written: {e}");
            false
        }
    }
}
