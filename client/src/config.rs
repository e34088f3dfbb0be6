//! Where the broker is and how long to wait for it. A web worker must never hang on a
//! broker that is gone, overloaded or wedged: every wait is bounded by one of these.

use std::path::PathBuf;
use std::time::Duration;

use codejail_protocol::DEFAULT_MAX_FRAME;

/// The socket used when `$CODEJAIL_SOCKET` is not set: the broker's default `socket`.
pub const DEFAULT_SOCKET: &str = "/run/codejail/broker.sock";

/// How long a client waits for a broker that is starting: about eight times the
/// slowest broker start measured on the project's test hosts (4 s from the first
/// connection to the answer, socket-activated in a VM under software emulation:
/// docs/hosts.md).
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable naming the broker's socket.
pub const SOCKET_ENV: &str = "CODEJAIL_SOCKET";

/// How to reach the broker and the timeouts of every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The broker's Unix socket.
    pub socket: PathBuf,
    /// Connecting to the socket. Default 2 s (a Unix socket connects at once, or
    /// fails at once when no broker or systemd socket listens there).
    pub connect_timeout: Duration,
    /// From connected to the broker's `Welcome`: a serving broker answers at once,
    /// but one that systemd is starting for this very connection (socket activation)
    /// answers only once its start-up self-test has passed. Default
    /// 30 s; past it, [`crate::ClientError::Timeout`]`("start")`.
    pub start_timeout: Duration,
    /// From sending a run request until the broker says it `Started` (time spent in
    /// the broker's queue). Default 10 s.
    pub queue_timeout: Duration,
    /// The whole call, connecting included when the call connects. Default 60 s.
    /// Durations too large to add to the current time mean "no total timeout".
    pub total_timeout: Duration,
    /// The largest frame sent or accepted. Default [`DEFAULT_MAX_FRAME`].
    pub max_frame: usize,
}

impl ClientConfig {
    /// Default timeouts for the broker at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ClientConfig {
            socket: socket.into(),
            connect_timeout: Duration::from_secs(2),
            start_timeout: DEFAULT_START_TIMEOUT,
            queue_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(60),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Default timeouts for the broker at `$CODEJAIL_SOCKET`, else
    /// [`DEFAULT_SOCKET`].
    pub fn from_env() -> Self {
        Self::new(socket_from_env())
    }
}

/// `$CODEJAIL_SOCKET` when set and non-empty, else [`DEFAULT_SOCKET`].
pub fn socket_from_env() -> PathBuf {
    match std::env::var_os(SOCKET_ENV) {
        Some(s) if !s.is_empty() => PathBuf::from(s),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let cfg = ClientConfig::new("/x.sock");
        assert_eq!(cfg.socket, PathBuf::from("/x.sock"));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(2));
        assert_eq!(cfg.queue_timeout, Duration::from_secs(10));
        assert_eq!(cfg.total_timeout, Duration::from_secs(60));
        assert_eq!(cfg.max_frame, DEFAULT_MAX_FRAME);
    }
}
