//! The broker's log: structured `tracing` events, sent to the journal
//! with their fields (`CODEJAIL_RUN_ID`, `CODEJAIL_SLUG`, `CODEJAIL_PEER_UID`, ...) when
//! the broker runs under systemd, human-readable lines on stderr otherwise.
//!
//! "Under systemd" means `JOURNAL_STREAM` names the stream our stderr is connected to
//! (systemd.exec(5): compare its device and inode with stderr's, since a child of a
//! service inherits the variable but perhaps not the stream). When the journal socket
//! cannot be reached, logging falls back to stderr and says so: a broker never runs
//! blind, nor fails to start, for want of journald.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter (`info` when unset).
pub const FILTER_VAR: &str = "CODEJAIL_LOG";
/// Prefix of the broker's own journal fields (`run_id` becomes `CODEJAIL_RUN_ID`).
pub const JOURNAL_FIELD_PREFIX: &str = "CODEJAIL";

/// Where the log went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// The systemd journal, natively.
    Journal,
    /// stderr; with the reason when the journal was wanted but not reachable.
    Stderr {
        /// Why not the journal, when it was wanted.
        journal_unreachable: Option<String>,
    },
}

/// Whether `JOURNAL_STREAM` (`"<device>:<inode>"`) names our stderr.
pub fn stderr_is_journal_stream() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<libc::dev_t>(), ino.parse::<libc::ino_t>()) else {
        return false;
    };
    nix::sys::stat::fstat(libc::STDERR_FILENO).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env(FILTER_VAR).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Install the global subscriber: the journal when [`stderr_is_journal_stream`] and
/// the journal socket answers, stderr otherwise. Logs (once installed) why the
/// journal was not used when it was wanted.
pub fn init() -> LogTarget {
    let wanted = stderr_is_journal_stream();
    let journal = if wanted {
        Some(tracing_journald::layer().map(|l| {
            l.with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
                .with_syslog_identifier("codejail-broker".into())
        }))
    } else {
        None
    };
    match journal {
        Some(Ok(layer)) => {
            tracing_subscriber::registry()
                .with(filter())
                .with(layer)
                .init();
            LogTarget::Journal
        }
        other => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_env_filter(filter())
                .init();
            let journal_unreachable = match other {
                Some(Err(e)) => {
                    tracing::warn!(
                        error = %e,
                        "JOURNAL_STREAM is set but the journal socket is not reachable: logging to stderr"
                    );
                    Some(e.to_string())
                }
                _ => None,
            };
            LogTarget::Stderr {
                journal_unreachable,
            }
        }
    }
}
