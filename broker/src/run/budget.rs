//! The broker-wide budget of request bytes held in memory. The connection's framing
//! (`server/codec.rs`) spends it: a frame's length prefix is read first, and its body
//! is read only if the budget and the admission queue have room for it. Otherwise the
//! connection hears `Busy` before a byte of the body is buffered, and is closed.
//! Without this, requests were read whole before admission: forty concurrent 30 MiB
//! requests (twenty of them answered busy) took the broker to 2 GiB.
//!
//! A [`Reservation`] travels with the request until the broker no longer holds its
//! bytes. Its copies, one after the other:
//!
//! 1. the frame as read (reserved at its length prefix, before its body is read);
//! 2. the decoded request: a second copy of its code, files and stdin, the frame
//!    dropped right after;
//! 3. the plan: the payload moved into it, no copy;
//! 4. the plan's frame for the jail stage: a second copy again, the plan's payload
//!    dropped right after; the frame goes once it is in the stage's pipe, and with it
//!    the reservation, except stdin's share ([`Reservation::split_off`]), kept with
//!    the stdin until the run ends (the program reads it when it likes).
//!
//! In 2 and 4 the bytes exist twice, between a copy and a drop with nothing awaited
//! in between: each first takes the budget's copy room ([`Reservation::second_copy`],
//! one largest frame's worth, in turns). So the request bytes in memory never exceed
//! the limit plus one largest frame; and as big allocations are mappings of their own,
//! unmapped when freed (`daemon::hardening::map_big_allocations`), the broker's RSS
//! follows them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};

/// The budget: bytes of request frames held at once, all connections together, and
/// the room for the second copy a request's bytes briefly have (module docs).
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    held: AtomicU64,
    /// Bytes of second copies at once (the largest frame), as permits.
    copy_room: u32,
    copying: Semaphore,
}

impl Budget {
    /// A budget of `limit` bytes, with `copy_room` bytes (the largest frame) for
    /// second copies.
    pub fn new(limit: u64, copy_room: usize) -> Arc<Budget> {
        // The frame cap is at most 1 GiB (config): a u32 holds it.
        let copy_room = u32::try_from(copy_room).unwrap_or(u32::MAX);
        Arc::new(Budget {
            limit,
            held: AtomicU64::new(0),
            copy_room,
            copying: Semaphore::new(copy_room as usize),
        })
    }

    /// Reserve `bytes`, or `None` when that would exceed the budget.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut held = self.held.load(Ordering::Acquire);
        loop {
            let next = held.checked_add(bytes).filter(|n| *n <= self.limit)?;
            match self
                .held
                .compare_exchange_weak(held, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Some(Reservation {
                        budget: self.clone(),
                        bytes,
                    })
                }
                Err(now) => held = now,
            }
        }
    }

    /// Bytes reserved now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The room for second copies, bytes.
    pub fn copy_room(&self) -> u64 {
        u64::from(self.copy_room)
    }

    /// Bytes of the copy room taken now.
    pub fn copying(&self) -> u64 {
        let free = u64::try_from(self.copying.available_permits()).unwrap_or(u64::MAX);
        self.copy_room().saturating_sub(free)
    }
}

/// Bytes of the budget held by one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Reservation {
    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Move `bytes` of this reservation (all of it at most) into one of their own,
    /// for a part of the request that is let go of at another time (stdin).
    pub fn split_off(&mut self, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Reservation {
            budget: self.budget.clone(),
            bytes,
        }
    }

    /// Wait for the copy room to hold a second copy of this reservation's bytes: to be
    /// held from before the copy is made until the original is dropped, with nothing
    /// awaited in between (so the room is always given back soon, and waiting for it
    /// cannot deadlock). A reservation bigger than the room (never: the room is the
    /// largest frame) takes all of it.
    pub async fn second_copy(&self) -> SecondCopy<'_> {
        let bytes = u32::try_from(self.bytes)
            .unwrap_or(u32::MAX)
            .min(self.budget.copy_room);
        // The semaphore is never closed: an error cannot happen, and would only mean
        // not waiting.
        SecondCopy {
            _permit: self.budget.copying.acquire_many(bytes).await.ok(),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Room in the budget for a second copy of a request's bytes; given back when dropped.
#[derive(Debug)]
#[must_use = "the room is for as long as both copies exist"]
pub struct SecondCopy<'a> {
    _permit: Option<SemaphorePermit<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_and_are_given_back() {
        let budget = Budget::new(100, 64);
        let a = budget.try_reserve(60).expect("fits");
        assert!(budget.try_reserve(50).is_none(), "over the budget");
        let b = budget.try_reserve(40).expect("exactly fits");
        assert_eq!(budget.held(), 100);
        drop(a);
        assert_eq!(budget.held(), 40);
        drop(b);
        assert_eq!(budget.held(), 0);
        assert!(budget.try_reserve(u64::MAX).is_none(), "no overflow");
    }

    #[test]
    fn a_split_off_share_is_given_back_on_its_own() {
        let budget = Budget::new(100, 100);
        let mut whole = budget.try_reserve(60).expect("fits");
        let stdin = whole.split_off(25);
        assert_eq!((whole.bytes(), stdin.bytes()), (35, 25));
        assert_eq!(budget.held(), 60, "splitting gives nothing back");
        drop(whole);
        assert_eq!(budget.held(), 25, "the share is held until it is dropped");
        let mut rest = stdin;
        let more = rest.split_off(1000);
        assert_eq!(
            (rest.bytes(), more.bytes()),
            (0, 25),
            "never more than it has"
        );
        drop(more);
        drop(rest);
        assert_eq!(budget.held(), 0);
    }

    /// The second copies of requests take turns in the copy room (one largest frame):
    /// with the budget full, the bytes in memory are at most the limit plus the room.
    #[test]
    fn second_copies_take_turns_in_the_copy_room() {
        use futures::FutureExt;
        let budget = Budget::new(100, 40);
        let a = budget.try_reserve(40).expect("fits");
        let b = budget.try_reserve(30).expect("fits");
        let c = budget.try_reserve(30).expect("fits");
        assert!(budget.try_reserve(1).is_none(), "the budget is full");
        let first = a.second_copy().now_or_never().expect("the room is free");
        assert_eq!(budget.copying(), 40);
        assert!(
            b.second_copy().now_or_never().is_none(),
            "a second copy waits while the room is taken"
        );
        drop(first);
        assert_eq!(budget.copying(), 0);
        let second = b.second_copy().now_or_never().expect("its turn");
        assert!(c.second_copy().now_or_never().is_none(), "30 + 30 > 40");
        assert!(budget.held() + budget.copying() <= budget.limit() + budget.copy_room());
        drop(second);
        let small = budget.try_reserve(0).expect("uncounted");
        let third = c.second_copy().now_or_never().expect("its turn");
        assert!(
            small.second_copy().now_or_never().is_some(),
            "an uncounted frame never waits"
        );
        // A reservation bigger than the room (the room is the largest frame, so this
        // does not happen) takes all of the room instead of waiting forever.
        drop(third);
        let big_budget = Budget::new(100, 10);
        let big = big_budget.try_reserve(50).expect("fits");
        let all = big
            .second_copy()
            .now_or_never()
            .expect("clamped to the room");
        assert_eq!(big_budget.copying(), 10);
        drop(all);
    }
}
