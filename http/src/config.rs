//! The front's configuration: parsed once from TOML into [`Config`] (unknown keys are
//! errors naming the key), then the command line's flags override it, then
//! [`Config::validate`] refuses what must not start (a non-loopback address without
//! `allow_non_loopback`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use codejail_protocol::{LimitName, LimitsReport};
use serde::Deserialize;

/// edx-platform's default `CODE_JAIL_REST_SERVICE_HOST` is `http://127.0.0.1:8550`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8550";

/// Client connections held open at once when `max_connections` is not set (fitted
/// down to `RLIMIT_NOFILE` when that is too low for it, see [`Config::connection_cap`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The largest `max_connections` accepted.
pub const MAX_CONNECTIONS_CEILING: usize = 1_000_000;

/// The fewest connections a default cap may be fitted down to before the front
/// refuses to start instead.
pub const MIN_FITTED_CONNECTIONS: usize = 16;

/// Open files the front needs besides its connections: standard streams, the listener,
/// the runtime's epoll and wakers, the signal pipes, the monitor's broker connection
/// and a round of safety checks.
pub const OPEN_FILES_RESERVE: u64 = 64;

/// The open files `connections` client connections may need at once: each one its
/// socket and the broker connection of the request it is serving (one request at a
/// time per HTTP/1.1 connection; `/health/` and code-exec each call the broker), plus
/// [`OPEN_FILES_RESERVE`].
pub fn open_files_needed(connections: usize) -> u64 {
    (connections as u64)
        .saturating_mul(2)
        .saturating_add(OPEN_FILES_RESERVE)
}

/// Everything `codejail-http` can be told, with its defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve code-exec at all (codejail-service's `CODEJAIL_ENABLED`). Default true:
    /// installing the front is the opt-in; false answers 500 "Codejail service not
    /// enabled" to every code-exec.
    pub enabled: bool,
    /// Where to listen. Default [`DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// Listen on a non-loopback address. There is no authentication (as upstream's
    /// codejail-service): whoever reaches the port can run code in the jail.
    pub allow_non_loopback: bool,
    /// The broker's socket; default as the client's (`$CODEJAIL_SOCKET`, else
    /// `/run/codejail/broker.sock`).
    pub broker_socket: Option<PathBuf>,
    /// How long a request the broker answers busy is retried before it is answered
    /// 503. Seconds, default 0.5.
    pub queue_wait_secs: f64,
    /// The `Retry-After` of a 503 busy answer, in whole seconds. Default 1.
    pub retry_after_secs: u64,
    /// The largest request body accepted, in bytes. Default 10 MiB.
    pub max_body_bytes: usize,
    /// Requests to `/api/v0/code-exec` handled at once; more are answered 503 busy at
    /// once. Default 64.
    pub max_in_flight: usize,
    /// Added to the run's REALTIME (the broker's, for the request's limit override
    /// context, read from its status) to make a request's deadline. Seconds, default 1.
    pub deadline_slack_secs: f64,
    /// The longest deadline of any request, whatever the broker's REALTIME, e.g.
    /// edx-platform's 3.5 s read timeout. Seconds; default none.
    pub max_deadline_secs: Option<f64>,
    /// Removed: the front reads REALTIME from the broker. Accepted and ignored with a
    /// warning (see [`Config::removed_keys`]), so an older config still starts.
    #[serde(rename = "realtime_secs")]
    pub removed_realtime_secs: Option<toml::Value>,
    /// Removed, as `realtime_secs`.
    #[serde(rename = "context_realtime_secs")]
    pub removed_context_realtime_secs: Option<toml::Value>,
    /// The longest a client may take to send its request body. Seconds, default 10.
    pub body_timeout_secs: f64,
    /// The longest a connection may take to send a request's header block, counted
    /// from its opening or from the end of its previous answer (so it is also how long
    /// a kept-alive connection may sit idle); then it is closed without an answer.
    /// Seconds, default 5.
    pub header_read_timeout_secs: f64,
    /// Client connections held open at once; while that many are open, new ones wait
    /// in the listen backlog. Each may need two open files (its socket and its broker
    /// call): the front raises its soft `RLIMIT_NOFILE` to fit, up to the hard limit,
    /// and refuses to start if a set value still does not fit. Default
    /// [`DEFAULT_MAX_CONNECTIONS`], fitted down (with a warning) to what
    /// `RLIMIT_NOFILE` allows.
    pub max_connections: Option<usize>,
    /// How often the broker is polled (and, after it came back, checked). Seconds,
    /// default 1.
    pub health_interval_secs: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8550)),
            allow_non_loopback: false,
            broker_socket: None,
            queue_wait_secs: 0.5,
            retry_after_secs: 1,
            max_body_bytes: 10 * 1024 * 1024,
            max_in_flight: 64,
            deadline_slack_secs: 1.0,
            max_deadline_secs: None,
            removed_realtime_secs: None,
            removed_context_realtime_secs: None,
            body_timeout_secs: 10.0,
            header_read_timeout_secs: 5.0,
            max_connections: None,
            health_interval_secs: 1.0,
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`] (the message names the key).
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message: the key, the line and what is wrong.
        message: String,
    },
    /// A value is out of its range.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// A non-loopback listen address without `allow_non_loopback`.
    #[error(
        "refusing to listen on {0}: not a loopback address, and codejail-http has no \
         authentication (anyone who reaches it can run code); set allow_non_loopback = true \
         in the config (or pass --allow-non-loopback) and restrict who can reach the port"
    )]
    NonLoopback(SocketAddr),
    /// `max_connections` needs more open files than `RLIMIT_NOFILE` allows.
    #[error(
        "max_connections = {connections} needs {needed} open files (two per connection: \
         its socket and its broker call, plus {OPEN_FILES_RESERVE}), but RLIMIT_NOFILE \
         is {limit}: raise the limit (LimitNOFILE= in the unit, ulimit -n) or lower \
         max_connections to at most {fits}"
    )]
    OpenFiles {
        /// The configured cap.
        connections: usize,
        /// [`open_files_needed`] for it.
        needed: u64,
        /// The soft `RLIMIT_NOFILE`, after the front tried to raise it.
        limit: u64,
        /// The largest cap that fits.
        fits: usize,
    },
    /// Not even [`MIN_FITTED_CONNECTIONS`] fit in `RLIMIT_NOFILE`.
    #[error(
        "RLIMIT_NOFILE is {limit}: too low to serve even {MIN_FITTED_CONNECTIONS} \
         connections (each may need two open files, plus {OPEN_FILES_RESERVE}); raise it \
         (LimitNOFILE= in the unit, ulimit -n) to at least {}",
        open_files_needed(DEFAULT_MAX_CONNECTIONS)
    )]
    TooFewOpenFiles {
        /// The soft `RLIMIT_NOFILE`, after the front tried to raise it.
        limit: u64,
    },
}

/// The connection cap [`Config::connection_cap`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionCap {
    /// `max_connections` as set, or the default: it fits.
    AsConfigured(usize),
    /// The default did not fit `RLIMIT_NOFILE` and was lowered to this.
    Fitted(usize),
}

impl ConnectionCap {
    /// The cap.
    pub fn get(self) -> usize {
        match self {
            ConnectionCap::AsConfigured(n) | ConnectionCap::Fitted(n) => n,
        }
    }
}

impl Config {
    /// Parse a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parse a configuration text; the error is toml's one-line message.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.message().to_string() + &location(text, &e))
    }

    /// Check the values that parse but cannot be used.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && !self.allow_non_loopback {
            return Err(ConfigError::NonLoopback(self.listen));
        }
        if !(0.1..=600.0).contains(&self.header_read_timeout_secs) {
            return Err(ConfigError::Invalid {
                key: "header_read_timeout_secs",
                reason: format!(
                    "{} is not a number of seconds between 0.1 and 600",
                    self.header_read_timeout_secs
                ),
            });
        }
        if let Some(n) = self.max_connections {
            if !(1..=MAX_CONNECTIONS_CEILING).contains(&n) {
                return Err(ConfigError::Invalid {
                    key: "max_connections",
                    reason: format!("{n} is not between 1 and {MAX_CONNECTIONS_CEILING}"),
                });
            }
        }
        for (key, value) in [
            ("queue_wait_secs", self.queue_wait_secs),
            ("deadline_slack_secs", self.deadline_slack_secs),
            ("body_timeout_secs", self.body_timeout_secs),
            ("health_interval_secs", self.health_interval_secs),
        ] {
            if !(0.0..=3600.0).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("{value} is not a number of seconds between 0 and 3600"),
                });
            }
        }
        // The monitor's connection must never sit idle long enough for the broker to
        // close it (idle_timeout_secs, 60 by default): a closed connection reads as a
        // broker restart and re-runs the checks.
        if !(0.05..=30.0).contains(&self.health_interval_secs) {
            return Err(ConfigError::Invalid {
                key: "health_interval_secs",
                reason: format!(
                    "{} is not between 0.05 and 30 (the broker closes connections idle \
                     for idle_timeout_secs, 60 by default)",
                    self.health_interval_secs
                ),
            });
        }
        if let Some(max) = self.max_deadline_secs {
            if !(0.1..=86_400.0).contains(&max) {
                return Err(ConfigError::Invalid {
                    key: "max_deadline_secs",
                    reason: format!("{max} is not a number of seconds between 0.1 and 86400"),
                });
            }
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::Invalid {
                key: "max_in_flight",
                reason: "must be at least 1".into(),
            });
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "max_body_bytes",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// The open files the configured (or default) connection cap needs.
    pub fn open_files_wanted(&self) -> u64 {
        open_files_needed(self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS))
    }

    /// The connection cap under a soft `RLIMIT_NOFILE` of `limit`: `max_connections`
    /// if it fits, else an error naming both numbers; without `max_connections`, the
    /// default, lowered to what fits (refused below [`MIN_FITTED_CONNECTIONS`]).
    pub fn connection_cap(&self, limit: u64) -> Result<ConnectionCap, ConfigError> {
        let fits =
            usize::try_from(limit.saturating_sub(OPEN_FILES_RESERVE) / 2).unwrap_or(usize::MAX);
        match self.max_connections {
            Some(connections) if open_files_needed(connections) <= limit => {
                Ok(ConnectionCap::AsConfigured(connections))
            }
            Some(connections) => Err(ConfigError::OpenFiles {
                connections,
                needed: open_files_needed(connections),
                limit,
                fits,
            }),
            None if fits >= DEFAULT_MAX_CONNECTIONS => {
                Ok(ConnectionCap::AsConfigured(DEFAULT_MAX_CONNECTIONS))
            }
            None if fits >= MIN_FITTED_CONNECTIONS => Ok(ConnectionCap::Fitted(fits)),
            None => Err(ConfigError::TooFewOpenFiles { limit }),
        }
    }

    /// How long a connection may take to send a header block.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_read_timeout_secs)
    }

    /// How long busy answers are retried.
    pub fn queue_wait(&self) -> Duration {
        Duration::from_secs_f64(self.queue_wait_secs)
    }

    /// The `Retry-After` of busy answers.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(self.retry_after_secs)
    }

    /// The deadline of one run in this limits context: the REALTIME the broker gives
    /// such a run (its default, or the context's override: an unknown context has
    /// none, as the broker's rule) plus the slack, at most `max_deadline_secs`. A
    /// broker REALTIME of 0 (no limit) leaves only that cap, if any
    /// ([`Duration::MAX`]: none).
    pub fn run_deadline(&self, limits: &LimitsReport, context: Option<&str>) -> Duration {
        let deadline = match limits.value(context, LimitName::Realtime) {
            Some(realtime) if realtime > 0 => {
                Duration::from_secs(realtime) + Duration::from_secs_f64(self.deadline_slack_secs)
            }
            _ => Duration::MAX,
        };
        match self.max_deadline_secs {
            Some(max) => deadline.min(Duration::from_secs_f64(max)),
            None => deadline,
        }
    }

    /// The keys of this config that are no longer used (logged as warnings at start).
    pub fn removed_keys(&self) -> Vec<&'static str> {
        [
            ("realtime_secs", self.removed_realtime_secs.is_some()),
            (
                "context_realtime_secs",
                self.removed_context_realtime_secs.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

/// ` at line L column C` for a toml error that has a position.
fn location(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return String::new();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" (at line {line} column {column})")
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_toml("").expect("empty is valid");
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.queue_wait(), Duration::from_millis(500));
        assert_eq!(
            c.run_deadline(&LimitsReport::default(), None),
            Duration::MAX,
            "no REALTIME known, no cap: no deadline"
        );
        assert!(c.removed_keys().is_empty());
        c.validate().expect("defaults validate");
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let e = Config::from_toml("listen = \"127.0.0.1:1\"\nqueue_wiat_secs = 1\n")
            .expect_err("unknown key");
        assert!(e.contains("queue_wiat_secs") && e.contains("line 2"), "{e}");
        let e = Config::from_toml("max_body_bytes = \"big\"").expect_err("bad type");
        assert!(e.contains("max_body_bytes") || e.contains("line 1"), "{e}");
        let e = Config::from_toml("listen = \"nowhere\"").expect_err("bad address");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn non_loopback_needs_an_explicit_yes() {
        let mut c = Config::from_toml("listen = \"0.0.0.0:8550\"").expect("parses");
        let e = c.validate().expect_err("refused");
        assert!(e.to_string().contains("allow_non_loopback"), "{e}");
        c.allow_non_loopback = true;
        c.validate().expect("allowed when told");
        let c = Config::from_toml("listen = \"[::1]:9000\"").expect("parses");
        c.validate().expect("IPv6 loopback is loopback");
    }

    #[test]
    fn deadlines_follow_the_brokers_realtime_for_the_context() {
        let mut defaults = codejail_protocol::Limits::default();
        defaults.set(LimitName::Realtime, 3);
        let broker = LimitsReport::new(
            &defaults,
            &Default::default(),
            &[
                (
                    "course-v1:big".to_string(),
                    [(LimitName::Realtime, 10)].into_iter().collect(),
                ),
                (
                    "course-v1:free".to_string(),
                    [(LimitName::Realtime, 0)].into_iter().collect(),
                ),
            ]
            .into_iter()
            .collect(),
        );
        let c = Config::from_toml("deadline_slack_secs = 0.5").expect("parses");
        assert_eq!(c.run_deadline(&broker, None), Duration::from_millis(3_500));
        assert_eq!(
            c.run_deadline(&broker, Some("other")),
            Duration::from_millis(3_500),
            "an unknown context has the defaults"
        );
        assert_eq!(
            c.run_deadline(&broker, Some("course-v1:big")),
            Duration::from_millis(10_500)
        );
        assert_eq!(
            c.run_deadline(&broker, Some("course-v1:free")),
            Duration::MAX,
            "REALTIME 0: no deadline"
        );
        let capped = Config::from_toml("max_deadline_secs = 3.5").expect("parses");
        assert_eq!(
            capped.run_deadline(&broker, Some("course-v1:big")),
            Duration::from_millis(3_500)
        );
        assert_eq!(
            capped.run_deadline(&broker, Some("course-v1:free")),
            Duration::from_millis(3_500)
        );
        assert_eq!(
            capped.run_deadline(&broker, None),
            Duration::from_millis(3_500),
            "3 s + the default slack of 1 s, capped"
        );
        let e = Config::from_toml("max_deadline_secs = 0")
            .expect("parses")
            .validate()
            .expect_err("zero");
        assert!(e.to_string().contains("max_deadline_secs"), "{e}");
        let e = Config::from_toml("queue_wait_secs = -1")
            .expect("parses")
            .validate()
            .expect_err("negative");
        assert!(e.to_string().contains("queue_wait_secs"), "{e}");
        let e = Config::from_toml("health_interval_secs = 90")
            .expect("parses")
            .validate()
            .expect_err("longer than the broker's idle timeout");
        assert!(e.to_string().contains("idle_timeout_secs"), "{e}");
    }

    #[test]
    fn the_connection_cap_must_fit_the_open_files_limit() {
        let c = Config::default();
        assert_eq!(c.open_files_wanted(), 2 * 4096 + OPEN_FILES_RESERVE);
        assert_eq!(
            c.connection_cap(16_384).expect("fits"),
            ConnectionCap::AsConfigured(DEFAULT_MAX_CONNECTIONS)
        );
        assert_eq!(
            c.connection_cap(open_files_needed(DEFAULT_MAX_CONNECTIONS))
                .expect("exactly fits"),
            ConnectionCap::AsConfigured(DEFAULT_MAX_CONNECTIONS)
        );
        // systemd's default soft limit: the default cap is fitted down.
        assert_eq!(
            c.connection_cap(1024).expect("fitted"),
            ConnectionCap::Fitted(480)
        );
        assert!(open_files_needed(480) <= 1024 && open_files_needed(481) > 1024);
        let e = c.connection_cap(64).expect_err("not even the minimum");
        assert!(e.to_string().contains("RLIMIT_NOFILE is 64"), "{e}");

        let set = Config::from_toml("max_connections = 4096").expect("parses");
        set.validate().expect("validates");
        let e = set
            .connection_cap(1024)
            .expect_err("a set cap is never lowered");
        let text = e.to_string();
        assert!(
            text.contains("max_connections = 4096")
                && text.contains("RLIMIT_NOFILE is 1024")
                && text.contains("at most 480"),
            "{text}"
        );
        assert_eq!(
            Config::from_toml("max_connections = 100")
                .expect("parses")
                .connection_cap(1024)
                .expect("fits"),
            ConnectionCap::AsConfigured(100)
        );
        for bad in ["max_connections = 0", "header_read_timeout_secs = 0"] {
            let e = Config::from_toml(bad)
                .expect("parses")
                .validate()
                .expect_err(bad);
            assert!(e.to_string().contains(&bad[..bad.len() - 4]), "{e}");
        }
        assert_eq!(c.header_read_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn the_removed_realtime_keys_still_parse_and_are_named() {
        let c = Config::from_toml(
            "realtime_secs = 3\n[context_realtime_secs]\n\"course-v1:big\" = 10\n",
        )
        .expect("an older config still parses");
        c.validate().expect("and validates");
        assert_eq!(c.removed_keys(), ["realtime_secs", "context_realtime_secs"]);
    }
}
