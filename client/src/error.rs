//! The one error type of the client library. Every variant's `Display` is a single,
//! self-contained line: the CLI prints it as `codejail-client: <message>`.

use std::io;
use std::path::PathBuf;

use codejail_protocol::validate::NameError;
use codejail_protocol::ErrorKind;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker's socket could not be connected to.
    #[error("cannot connect to the broker at {}: {source}", socket.display())]
    Connect {
        /// The socket path tried.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// The broker refused this connection (its `Welcome` carried a reason).
    #[error("the broker refused the connection: {0}")]
    Refused(String),
    /// The broker speaks another protocol version.
    #[error(
        "protocol version mismatch: this client speaks {client}, \
         the broker (codejail-broker {broker_version}) speaks {broker}"
    )]
    VersionMismatch {
        /// Our [`codejail_protocol::PROTOCOL_VERSION`].
        client: u32,
        /// The broker's protocol version.
        broker: u32,
        /// The broker's crate version.
        broker_version: String,
    },
    /// The broker answered the request with an error.
    #[error("broker error ({kind}): {message}")]
    Broker {
        /// What went wrong, for programs.
        kind: ErrorKind,
        /// What went wrong, for people.
        message: String,
    },
    /// The broker sent something this client cannot make sense of.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker closed the connection before answering.
    #[error("the broker closed the connection unexpectedly")]
    Disconnected,
    /// An earlier call on this [`crate::Client`] failed or was abandoned mid-request,
    /// so the connection was closed; connect again.
    #[error("the connection to the broker was closed after an earlier failure; connect again")]
    Closed,
    /// A timeout of [`crate::ClientConfig`] expired: `"connect"`, `"start"`, `"queue"` or
    /// `"total"`.
    #[error("{}", timeout_message(.0))]
    Timeout(&'static str),
    /// Reading from or writing to the broker's socket failed.
    #[error("I/O error talking to the broker: {0}")]
    Io(#[from] io::Error),
    /// The client's own async machinery failed, with no broker involved: its runtime
    /// could not be started, or a task it runs (reading the caller's files, running
    /// the unconfined interpreter) was cancelled.
    #[error("the client's async runtime failed: {0}")]
    Runtime(#[source] io::Error),
    /// A caller-side file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The caller-side path.
        path: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// A caller-side path is neither a regular file, a directory nor a symlink.
    #[error("cannot copy {}: not a regular file, directory or symlink", path.display())]
    UnsupportedFileType {
        /// The caller-side path.
        path: PathBuf,
    },
    /// A caller-side file name or symlink target is not valid UTF-8.
    #[error("cannot copy {}: its name or link target is not valid UTF-8", path.display())]
    NonUtf8Name {
        /// The caller-side path.
        path: PathBuf,
    },
    /// A file name that the broker would refuse, caught early.
    #[error("invalid request: {0}")]
    InvalidName(#[from] NameError),
    /// The encoded request is larger than the frame cap.
    #[error("request too large: {size} bytes encoded, the frame cap is {max} bytes")]
    RequestTooLarge {
        /// Encoded size of the request.
        size: usize,
        /// [`crate::ClientConfig::max_frame`].
        max: usize,
    },
}

fn timeout_message(which: &str) -> &'static str {
    match which {
        "connect" => "timed out connecting to the broker (connect timeout)",
        "start" => {
            "the broker accepted the connection but did not answer within the start \
                    timeout: it is still starting (under socket activation it serves only once \
                    its start-up self-test passed) or it is wedged (systemctl status \
                    codejail-broker)"
        }
        "queue" => "timed out waiting for a free slot on the broker (queue timeout)",
        "total" => "timed out waiting for the broker to finish (total timeout)",
        _ => "timed out talking to the broker",
    }
}

impl ClientError {
    /// The wire [`ErrorKind`] of a broker error; for a name the client refused early,
    /// the kind the broker would have answered ([`ErrorKind::UnknownCommand`] for the
    /// command's name, [`ErrorKind::BadFileName`] for a file's).
    /// `None` for errors that are not about the request itself (connection, timeout, ...).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Broker { kind, .. } => Some(*kind),
            ClientError::InvalidName(NameError::BadCommand(_)) => Some(ErrorKind::UnknownCommand),
            ClientError::InvalidName(_) => Some(ErrorKind::BadFileName),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_kinds_map() {
        let errors = [
            ClientError::Connect {
                socket: "/run/x.sock".into(),
                source: io::Error::from(io::ErrorKind::NotFound),
            },
            ClientError::Refused("uid 1000 not allowed".into()),
            ClientError::VersionMismatch {
                client: 1,
                broker: 2,
                broker_version: "9.0.0".into(),
            },
            ClientError::Broker {
                kind: ErrorKind::Busy,
                message: "queue full".into(),
            },
            ClientError::Timeout("queue"),
            ClientError::Disconnected,
        ];
        for e in &errors {
            let s = e.to_string();
            assert!(!s.contains('\n') && !s.is_empty(), "{s:?}");
        }
        assert!(errors[0].to_string().contains("/run/x.sock"));
        let mismatch = errors[2].to_string();
        assert!(
            mismatch.contains("speaks 1") && mismatch.contains("speaks 2"),
            "{mismatch}"
        );
        assert_eq!(errors[3].kind(), Some(ErrorKind::Busy));
        assert_eq!(errors[4].kind(), None);
        assert!(errors[4].to_string().contains("queue"));
        assert_eq!(
            ClientError::InvalidName(NameError::BadCommand("a b".into())).kind(),
            Some(ErrorKind::UnknownCommand),
            "the kind the broker answers for a bad command name"
        );
        assert_eq!(
            ClientError::InvalidName(NameError::Absolute("/x".into())).kind(),
            Some(ErrorKind::BadFileName)
        );
        let runtime = ClientError::Runtime(io::Error::other("cancelled"));
        assert!(!runtime.to_string().contains("broker"), "{runtime}");
        assert_eq!(runtime.kind(), None);
    }
}
