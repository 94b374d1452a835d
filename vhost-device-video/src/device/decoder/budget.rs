//! The memory budget: the bytes a guest makes the decoder hold, counted
//! against one limit for the whole daemon (`--memory-limit`).
//!
//! Charged are the pictures waiting for a guest buffer, the bitstream copies
//! being decoded, the pictures each stream's decoder keeps inside, and the
//! resource scatter lists. A [`Charge`] gives its bytes back when dropped, so
//! whatever holds the memory holds the charge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The limit when none is given: room for about thirty 1080p H.264 streams
/// or one 8192x8192 one.
pub const DEFAULT_MEMORY_LIMIT: u64 = 4 << 30;
/// The smallest limit accepted: a 4K H.264 stream with its pictures.
pub const MIN_MEMORY_LIMIT: u64 = 512 << 20;

/// Bytes the device may hold, and the bytes it holds.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// `bytes` from the budget, or `None` if they do not fit.
    pub fn try_charge(self: &Arc<Self>, bytes: u64) -> Option<Charge> {
        self.try_charge_between(bytes, bytes)
    }

    /// As many bytes as fit, up to `most`, if at least `least` fit.
    pub fn try_charge_between(self: &Arc<Self>, least: u64, most: u64) -> Option<Charge> {
        let mut taken = 0;
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                let free = self.limit.saturating_sub(used);
                if free < least {
                    return None;
                }
                taken = most.min(free);
                Some(used + taken)
            })
            .ok()?;
        Some(Charge {
            budget: self.clone(),
            bytes: taken,
        })
    }

    /// Memory that exists already: charged even over the limit.
    fn force(self: &Arc<Self>, bytes: u64) -> Charge {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            budget: self.clone(),
            bytes,
        }
    }
}

/// Bytes taken from a [`MemoryBudget`], given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Charge {
    /// The bytes charged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Moves `bytes` of this charge (a reservation) into a charge of their
    /// own. What the reservation lacks is charged anyway, over the limit if
    /// need be: it is for memory that exists already.
    pub fn split(&mut self, bytes: u64) -> Charge {
        let moved = bytes.min(self.bytes);
        self.bytes -= moved;
        let mut charge = self.budget.force(bytes - moved);
        charge.bytes += moved;
        charge
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_the_limit_and_come_back_on_drop() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_charge(60).unwrap();
        assert!(budget.try_charge(41).is_none());
        let mut reservation = budget.try_charge_between(10, 1000).unwrap();
        assert_eq!((reservation.bytes(), budget.used()), (40, 100));
        let picture = reservation.split(50);
        assert_eq!((picture.bytes(), reservation.bytes()), (50, 0));
        assert_eq!(budget.used(), 110);
        drop((a, picture, reservation));
        assert_eq!(budget.used(), 0);
        assert!(budget.try_charge_between(101, 200).is_none());
    }
}
