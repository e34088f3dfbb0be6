//! Admission: a bounded number of parallel runs and a bounded queue in front of them.
//! A request that finds both full gets `Busy` at once rather than waiting unbounded.
//!
//! A run answers its client before it gives its slot back (the stage is reaped, the
//! cgroup removed and the uid checked after the reply, so that the caller does not
//! wait for them). Such a slot is *finishing*: it frees itself within milliseconds,
//! without any further wait on the program. A request that finds every slot taken may
//! queue for a finishing slot even when the queue is full (or `max_queue` is 0), so a
//! caller that sends its next request as soon as it has its answer is never refused.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use codejail_protocol::Load;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Slots and queue.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max_running: u32,
    max_queue: u32,
    queued: AtomicU32,
    running: Arc<AtomicU32>,
    finishing: Arc<AtomicU32>,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    running: Arc<AtomicU32>,
    finishing: Arc<AtomicU32>,
    is_finishing: bool,
}

impl Slot {
    /// The run has ended and its client is being answered: only clean-up that does
    /// not wait on the program is left before this slot is dropped.
    pub fn finishing(&mut self) {
        if !self.is_finishing {
            self.is_finishing = true;
            self.finishing.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.is_finishing {
            self.finishing.fetch_sub(1, Ordering::SeqCst);
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The outcome of asking for a slot.
#[derive(Debug)]
pub enum Ticket {
    /// A slot is free now.
    Now(Slot),
    /// The request is queued at this position; await [`Admission::wait`].
    Queued(u32),
    /// Every slot and the queue are full.
    Busy,
}

/// Decrements the queue count however the wait ends (including cancellation).
struct QueuedGuard<'a>(&'a AtomicU32);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// `max_running` parallel runs, `max_queue` waiting.
    pub fn new(max_running: u32, max_queue: u32) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(max_running as usize)),
            max_running,
            max_queue,
            queued: AtomicU32::new(0),
            running: Arc::new(AtomicU32::new(0)),
            finishing: Arc::new(AtomicU32::new(0)),
        }
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        self.running.fetch_add(1, Ordering::SeqCst);
        Slot {
            _permit: permit,
            running: self.running.clone(),
            finishing: self.finishing.clone(),
            is_finishing: false,
        }
    }

    /// Queue places: the configured ones plus one per finishing slot.
    fn queue_room(&self) -> u32 {
        self.max_queue
            .saturating_add(self.finishing.load(Ordering::SeqCst))
    }

    /// Take a free slot, or a place in the queue (or behind a finishing slot), or `Busy`.
    pub fn try_admit(&self) -> Ticket {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ticket::Now(self.slot(p));
        }
        let reserved = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q < self.queue_room()).then_some(q + 1)
            });
        match reserved {
            Ok(ahead) => Ticket::Queued(ahead),
            Err(_) => Ticket::Busy,
        }
    }

    /// Wait in the queue (after [`Ticket::Queued`]) for a slot. Cancel-safe: dropping
    /// the future gives the queue place back.
    pub async fn wait(&self) -> Option<Slot> {
        let _guard = QueuedGuard(&self.queued);
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        Some(self.slot(permit))
    }

    /// Stop handing out slots (shutdown): queued waiters get `None`.
    pub fn close(&self) {
        self.slots.close();
    }

    /// Whether a request could be admitted now (a free slot or a free queue place),
    /// asked before a big request's body is read.
    pub fn has_room(&self) -> bool {
        self.slots.available_permits() > 0 || self.queued.load(Ordering::SeqCst) < self.queue_room()
    }

    /// Current load.
    pub fn load(&self) -> Load {
        Load {
            running: self.running.load(Ordering::SeqCst),
            queued: self.queued.load(Ordering::SeqCst),
            max_running: self.max_running,
            max_queue: self.max_queue,
            ..Load::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_slots_then_queue_then_busy() {
        let a = Admission::new(1, 1);
        let Ticket::Now(slot) = a.try_admit() else {
            panic!("first gets a slot")
        };
        assert!(matches!(a.try_admit(), Ticket::Queued(0)));
        assert!(matches!(a.try_admit(), Ticket::Busy));
        assert_eq!(a.load().running, 1);
        assert_eq!(a.load().queued, 1);
        let waiter = a.wait();
        drop(slot);
        let s2 = waiter.await.expect("slot after release");
        assert_eq!(a.load().queued, 0);
        assert_eq!(a.load().running, 1);
        drop(s2);
        assert_eq!(a.load().running, 0);
    }

    #[tokio::test]
    async fn a_finishing_slot_takes_a_waiter_even_without_a_queue() {
        let a = Admission::new(1, 0);
        let Ticket::Now(mut slot) = a.try_admit() else {
            panic!("first gets a slot")
        };
        assert!(matches!(a.try_admit(), Ticket::Busy), "running, no queue");
        assert!(!a.has_room());
        slot.finishing();
        slot.finishing(); // idempotent
        assert!(a.has_room());
        assert!(matches!(a.try_admit(), Ticket::Queued(0)));
        assert!(
            matches!(a.try_admit(), Ticket::Busy),
            "one waiter per finishing slot"
        );
        let waiter = a.wait();
        drop(slot);
        let s2 = waiter.await.expect("the finishing slot passed on");
        assert_eq!(a.load().running, 1);
        assert_eq!(a.load().queued, 0);
        assert!(matches!(a.try_admit(), Ticket::Busy), "back to no queue");
        drop(s2);
        assert!(matches!(a.try_admit(), Ticket::Now(_)));
    }

    #[tokio::test]
    async fn cancelled_wait_frees_its_queue_place() {
        let a = Admission::new(1, 1);
        let Ticket::Now(_slot) = a.try_admit() else {
            panic!("slot")
        };
        assert!(matches!(a.try_admit(), Ticket::Queued(0)));
        let w = a.wait();
        let r = tokio::time::timeout(std::time::Duration::from_millis(10), w).await;
        assert!(r.is_err());
        assert_eq!(a.load().queued, 0, "the cancelled waiter left the queue");
        assert!(matches!(a.try_admit(), Ticket::Queued(0)));
    }
}
