//! codejail-protocol: the wire between a caller (the `codejail-client` crate) and the
//! broker daemon. Types only, plus the framing codec: no sockets, no processes.
//!
//! A connection is a sequence of length-delimited frames
//! ([`tokio_util::codec::LengthDelimitedCodec`], 4-byte big-endian length, explicit cap),
//! each carrying one `postcard`-encoded value:
//!
//! 1. client -> broker: [`Hello`] (frozen forever: any version can read it);
//! 2. broker -> client: [`Welcome`] (its first three fields are frozen forever, so any
//!    client can read the broker's version and a refusal, see [`WelcomeHead`]);
//! 3. then any number of [`Request`]s, one at a time, each answered by a stream of
//!    [`Response`]s that ends with [`Response::Finished`], [`Response::Error`] or
//!    [`Response::Status`]. The broker reads a connection's next request only once the
//!    previous run is cleaned up (its cgroup removed, its uid back in the pool); a
//!    frame sent while a run is in progress cancels that run.

pub mod codec;
mod handshake;
pub mod limits;
pub mod render;
mod request;
mod response;
mod status;
pub mod validate;

pub use codec::{decode, decode_head, encode, framed, CodecError, DEFAULT_MAX_FRAME};
pub use codejail_plan::{EntryKind, FileEntry};
pub use handshake::{Hello, Welcome, WelcomeHead, HELLO_MAGIC};
pub use limits::{LimitName, Limits};
pub use request::{Exec, Request};
pub use response::{upstream_status, ErrorKind, Finished, Response, Usage};
pub use status::{
    CommandInfo, ForkServerStatus, Layer, LayerState, LimitsReport, Load, Mode, PoolStatus,
    StatusReport,
};

/// The protocol version spoken by this crate. Bump it whenever anything after the
/// handshake changes its encoding.
pub const PROTOCOL_VERSION: u32 = 6;

#[cfg(test)]
mod tests;
