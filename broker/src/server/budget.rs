//! The broker-wide budget of request bytes held in memory, and the request framing
//! that spends it: a frame's length prefix is read first, and its body is read only if
//! the budget and the admission queue have room for it ([`RequestCodec`]). Otherwise
//! the connection hears `Busy` before a byte of the body is buffered, and is closed.
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
//! unmapped when freed ([`map_big_allocations`]), the broker's RSS follows them.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Make the memory of big allocations (request frames and payloads among them) go
/// back to the kernel when they are freed, so that what the budget counts is what the
/// broker's RSS holds; called once at start-up (see `sys::map_big_allocations`).
pub fn map_big_allocations() -> io::Result<()> {
    crate::sys::map_big_allocations()
}

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

/// Frames up to this size are not counted against the budget.
pub const UNCOUNTED_FRAME_BYTES: usize = 4096;

/// Frames above this size must also find room in the admission queue before their
/// body is read (a Status request or a small Exec is always read: it costs nothing).
pub const ADMIT_BEFORE_READ_BYTES: usize = 64 * 1024;

/// What the request framing yields.
#[derive(Debug)]
pub enum Inbound {
    /// A whole frame, its bytes reserved.
    Frame(BytesMut, Reservation),
    /// A frame of `len` bytes whose body will not be read: over the budget
    /// (`queue_full` false) or no room in the admission queue (`queue_full` true).
    Refused {
        /// The frame's declared length.
        len: usize,
        /// Whether the admission queue was full (else the byte budget).
        queue_full: bool,
    },
}

/// The length-delimited framing of [`codejail_protocol::framed`] (same cap, same
/// errors), with the budget asked between the length prefix and the body.
pub struct RequestCodec {
    inner: LengthDelimitedCodec,
    budget: Arc<Budget>,
    pending: Option<Reservation>,
    max_frame: usize,
    /// Whether the admission queue has room (asked for big frames only).
    has_room: Box<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for RequestCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestCodec")
            .field("max_frame", &self.max_frame)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl RequestCodec {
    /// Framing with `max_frame` as the cap, spending `budget`; `has_room` says whether
    /// the admission queue can take one more request.
    pub fn new(
        max_frame: usize,
        budget: Arc<Budget>,
        has_room: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        RequestCodec {
            inner: codejail_protocol::codec::length_codec(max_frame),
            budget,
            pending: None,
            max_frame,
            has_room: Box::new(has_room),
        }
    }
}

/// Responses go out through the same length-delimited framing.
impl Encoder<Bytes> for RequestCodec {
    type Error = io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), io::Error> {
        self.inner.encode(item, dst)
    }
}

impl Decoder for RequestCodec {
    type Item = Inbound;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, io::Error> {
        if self.pending.is_none() {
            let Some(head) = src.get(..4) else {
                return Ok(None);
            };
            let mut len_bytes = [0u8; 4];
            len_bytes.copy_from_slice(head);
            let len = u32::from_be_bytes(len_bytes) as usize;
            if len > self.max_frame {
                // The inner codec refuses it with its own error.
                return self
                    .inner
                    .decode(src)
                    .map(|f| f.map(|_| unreachable_frame()));
            }
            if len > ADMIT_BEFORE_READ_BYTES && !(self.has_room)() {
                return Ok(Some(Inbound::Refused {
                    len,
                    queue_full: true,
                }));
            }
            // A small frame (a Hello, a Status, a short Exec) costs nothing worth
            // counting: it is always read, so a full budget never refuses those.
            let counted = if len <= UNCOUNTED_FRAME_BYTES {
                0
            } else {
                len as u64
            };
            match self.budget.try_reserve(counted) {
                Some(r) => self.pending = Some(r),
                None => {
                    return Ok(Some(Inbound::Refused {
                        len,
                        queue_full: false,
                    }))
                }
            }
        }
        match self.inner.decode(src)? {
            Some(frame) => match self.pending.take() {
                Some(r) => Ok(Some(Inbound::Frame(frame, r))),
                None => Err(io::Error::other("frame without a reservation")),
            },
            None => Ok(None),
        }
    }
}

/// The inner codec never yields a frame over its cap; if it somehow did, it is not
/// accounted, so it is refused like an over-budget one would be.
fn unreachable_frame() -> Inbound {
    Inbound::Refused {
        len: usize::MAX,
        queue_full: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&(len as u32).to_be_bytes());
        b.extend_from_slice(&vec![7u8; len]);
        b
    }

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

    #[test]
    fn the_body_is_not_buffered_when_over_budget() {
        let budget = Budget::new(10_000, 10_000);
        let mut codec = RequestCodec::new(1 << 20, budget.clone(), || true);
        // Only the header has arrived: the refusal comes before any body byte.
        let mut src = BytesMut::from(&(50_000u32).to_be_bytes()[..]);
        match codec.decode(&mut src).expect("decode") {
            Some(Inbound::Refused { len, queue_full }) => {
                assert_eq!((len, queue_full), (50_000, false))
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(budget.held(), 0);
        // A frame that fits is read, and holds its bytes until dropped.
        let mut src = frame(6000);
        let Some(Inbound::Frame(body, r)) = codec.decode(&mut src).expect("decode") else {
            panic!("expected a frame");
        };
        assert_eq!(body.len(), 6000);
        assert_eq!(budget.held(), 6000);
        drop(r);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn small_frames_are_read_even_with_the_budget_spent() {
        let budget = Budget::new(10_000, 10_000);
        let _all = budget.try_reserve(10_000).expect("fits");
        let mut codec = RequestCodec::new(1 << 20, budget.clone(), || true);
        let mut src = frame(100);
        assert!(matches!(
            codec.decode(&mut src).expect("decode"),
            Some(Inbound::Frame(..))
        ));
        let mut src = frame(UNCOUNTED_FRAME_BYTES + 1);
        assert!(matches!(
            codec.decode(&mut src).expect("decode"),
            Some(Inbound::Refused {
                queue_full: false,
                ..
            })
        ));
    }

    #[test]
    fn big_frames_need_room_in_the_queue_small_ones_do_not() {
        let budget = Budget::new(1 << 30, 1 << 30);
        let mut codec = RequestCodec::new(1 << 30, budget, || false);
        let mut src = BytesMut::from(&((ADMIT_BEFORE_READ_BYTES as u32) + 1).to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut src).expect("decode"),
            Some(Inbound::Refused {
                queue_full: true,
                ..
            })
        ));
        let mut src = frame(10);
        assert!(matches!(
            codec.decode(&mut src).expect("decode"),
            Some(Inbound::Frame(..))
        ));
    }

    #[test]
    fn a_frame_over_the_cap_is_an_error() {
        let mut codec = RequestCodec::new(1024, Budget::new(1 << 20, 1 << 20), || true);
        let mut src = frame(2000);
        assert!(codec.decode(&mut src).is_err());
    }

    #[test]
    fn a_partial_body_keeps_its_reservation_until_complete() {
        let budget = Budget::new(10_000, 10_000);
        let mut codec = RequestCodec::new(1 << 20, budget.clone(), || true);
        let whole = frame(5000);
        let mut src = BytesMut::from(&whole[..200]);
        assert!(codec.decode(&mut src).expect("decode").is_none());
        assert_eq!(budget.held(), 5000, "reserved at the header");
        src.extend_from_slice(&whole[200..]);
        assert!(matches!(
            codec.decode(&mut src).expect("decode"),
            Some(Inbound::Frame(..))
        ));
    }
}
