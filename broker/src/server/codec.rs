//! The request framing: length-delimited frames whose body is read only if the
//! broker's request budget (`crate::run::budget`) and the admission queue have room
//! for it. Otherwise the connection hears `Busy` before a byte of the body is
//! buffered, and is closed.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::run::budget::{Budget, Reservation};

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
