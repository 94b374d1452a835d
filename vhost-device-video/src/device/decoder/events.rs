//! The event queue: buffers the guest posts for events, and events waiting
//! for one.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use log::error;

use super::MAX_PENDING_EVENTS;
use crate::log_limit::warn_limited;
use crate::protocol::virtio_video as vv;
use crate::transport::Request;

/// Event buffers the guest posted, and events waiting for one.
#[derive(Default)]
pub(super) struct EventQueue {
    inner: Mutex<EventInner>,
}

#[derive(Default)]
pub(super) struct EventInner {
    buffers: VecDeque<Request>,
    waiting: VecDeque<vv::Event>,
}

impl EventQueue {
    fn lock(&self) -> MutexGuard<'_, EventInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn post(&self, event_type: u32, stream_id: u32) {
        let event = vv::Event {
            event_type: event_type.into(),
            stream_id: stream_id.into(),
        };
        let mut inner = self.lock();
        if inner.waiting.len() >= MAX_PENDING_EVENTS {
            warn_limited!("event queue starved: dropping an event");
            inner.waiting.pop_front();
        }
        inner.waiting.push_back(event);
        Self::deliver(&mut inner);
    }

    pub(super) fn add_buffers(&self, buffers: Vec<Request>) {
        let mut inner = self.lock();
        inner.buffers.extend(buffers);
        Self::deliver(&mut inner);
    }

    fn deliver(inner: &mut EventInner) {
        while !inner.waiting.is_empty() && !inner.buffers.is_empty() {
            let (Some(event), Some(buffer)) =
                (inner.waiting.pop_front(), inner.buffers.pop_front())
            else {
                return;
            };
            if let Err(e) = buffer.reply(vm_memory::ByteValued::as_slice(&event)) {
                error!("event: {e}");
            }
        }
    }

    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.buffers.clear();
        inner.waiting.clear();
    }
}
