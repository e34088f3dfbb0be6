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
    fn the_removed_realtime_keys_still_parse_and_are_named() {
        let c = Config::from_toml(
            "realtime_secs = 3\n[context_realtime_secs]\n\"course-v1:big\" = 10\n",
        )
        .expect("an older config still parses");
        c.validate().expect("and validates");
        assert_eq!(c.removed_keys(), ["realtime_secs", "context_realtime_secs"]);
    }
}
