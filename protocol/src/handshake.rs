//! The handshake that opens every connection: the client's [`Hello`] and the broker's
//! [`Welcome`], whose heads are frozen so that any version can read any other's.

use serde::{Deserialize, Serialize};

use crate::{StatusReport, PROTOCOL_VERSION};

/// The magic that opens every [`Hello`]: lets the broker tell a codejail client from
/// anything else that connects to its socket.
pub const HELLO_MAGIC: [u8; 4] = *b"CJL\x01";

/// The first frame a client sends. **Frozen forever**: its encoding must never change,
/// so that every broker version can read any client's version and refuse cleanly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`HELLO_MAGIC`].
    pub magic: [u8; 4],
    /// The protocol version the client speaks.
    pub protocol_version: u32,
    /// The client's crate version, for logs.
    pub client_version: String,
}

impl Hello {
    /// The `Hello` this crate sends.
    pub fn current() -> Self {
        Hello {
            magic: HELLO_MAGIC,
            protocol_version: PROTOCOL_VERSION,
            client_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The frozen head of every [`Welcome`]: a client of any version decodes this prefix
/// (postcard ignores trailing bytes) to learn the broker's version or why it refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeHead {
    /// The protocol version the broker speaks.
    pub protocol_version: u32,
    /// The broker's crate version.
    pub broker_version: String,
    /// `Some(reason)` when the broker refuses this connection; it closes right after.
    pub refused: Option<String>,
}

/// The broker's answer to [`Hello`]. The first three fields are [`WelcomeHead`]
/// (frozen); the rest may change with the protocol version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the broker speaks.
    pub protocol_version: u32,
    /// The broker's crate version.
    pub broker_version: String,
    /// `Some(reason)` when the broker refuses this connection; it closes right after.
    pub refused: Option<String>,
    /// How the broker confines runs, layer by layer.
    pub status: StatusReport,
}
