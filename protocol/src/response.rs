//! What the broker answers a request with: a stream of [`Response`]s ending in a
//! [`Finished`] run, a typed [`ErrorKind`], or a status report.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::StatusReport;

/// Resource usage of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// User CPU time, milliseconds.
    pub cpu_user_ms: u64,
    /// System CPU time, milliseconds.
    pub cpu_sys_ms: u64,
    /// Wall-clock time from start to end, milliseconds.
    pub wall_ms: u64,
    /// Peak resident set size of the program, KiB.
    pub max_rss_kib: u64,
    /// Peak memory of the run's cgroup, where one is used.
    pub peak_memory_bytes: Option<u64>,
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Upstream's status: exit code, or minus the signal number.
    pub status: i32,
    /// Resource usage.
    pub usage: Usage,
    /// The limit that ended (or, for `OUTPUT`, cut) the run, by name.
    pub limit_hit: Option<String>,
    /// Output beyond the cap was discarded.
    pub truncated: bool,
    /// The run's `OUTPUT` limit: bytes of stdout and stderr together kept.
    pub output_limit: u64,
    /// The run's directory (the program's cwd) as the program saw it.
    pub workdir: String,
    /// A host pid of the run (the jail stage's), as upstream logs the pid of its
    /// sandboxed process; the process is gone by the time this arrives.
    pub pid: u32,
}

/// A broker answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// The request waits for a slot; `position` requests are ahead of it.
    Queued {
        /// Requests ahead in the queue.
        position: u32,
    },
    /// The run has a slot and its jail is being built.
    Started {
        /// The run's id, as in the broker's log.
        run_id: u64,
    },
    /// A chunk of the program's standard output.
    Stdout(Vec<u8>),
    /// A chunk of the program's standard error.
    Stderr(Vec<u8>),
    /// The run ended.
    Finished(Finished),
    /// The request failed; the connection stays usable unless the kind says otherwise.
    Error {
        /// What went wrong, for programs.
        kind: ErrorKind,
        /// What went wrong, for people.
        message: String,
    },
    /// The answer to [`Request::Status`](crate::Request::Status).
    Status(StatusReport),
}

/// A typed error on the wire (internal errors never cross it as text dumps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or names something invalid.
    InvalidRequest,
    /// The command name is not configured.
    UnknownCommand,
    /// A limit name is not known.
    UnknownLimit,
    /// A limit value is above its configured ceiling.
    LimitAboveCeiling,
    /// A file name is unsafe (absolute, `..`, NUL, clash, ...).
    BadFileName,
    /// Every slot and the queue are full: try again later.
    Busy,
    /// The broker is shutting down.
    ShuttingDown,
    /// The jail could not be built; nothing ran.
    JailFailed,
    /// Something inside the broker failed.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::InvalidRequest => "invalid request",
            ErrorKind::UnknownCommand => "unknown command",
            ErrorKind::UnknownLimit => "unknown limit",
            ErrorKind::LimitAboveCeiling => "limit above ceiling",
            ErrorKind::BadFileName => "bad file name",
            ErrorKind::Busy => "busy",
            ErrorKind::ShuttingDown => "shutting down",
            ErrorKind::JailFailed => "jail failed",
            ErrorKind::Internal => "internal error",
        };
        f.write_str(s)
    }
}

/// Upstream's status for a wait status: the exit code, or minus the signal number.
pub fn upstream_status(exit_code: Option<i32>, signal: Option<i32>) -> i32 {
    match (exit_code, signal) {
        (Some(code), _) => code,
        (None, Some(sig)) => -sig,
        (None, None) => -1,
    }
}
