//! codejail-service's start-up safety checks, and the monitor that re-runs them each
//! time the broker comes (back) up.
//!
//! The checks are codejail-service's start-up checks, run through the same `safe_exec`
//! as requests: a trivial run must succeed, and listing `/`, starting a subprocess and
//! opening an `AF_INET` socket must each fail with the denial upstream expects. Until
//! they pass, code-exec answers 500 and `/health/` 503. Upstream's fifth check (the
//! service host itself cannot reach `www.example.net`) is not made: this front never
//! contacts an outside address; deployments deny its egress with a network policy
//! (`deploy/kubernetes/networkpolicy.yaml`).
//!
//! The monitor keeps one connection to the broker and asks its status every
//! `health_interval`; a broken connection means the broker stopped or restarted, so
//! readiness is dropped at once and the checks run again once it answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use codejail_client::pyjson::{Dict, Value};
use codejail_client::{safe_exec, Client, ClientConfig, SafeExecError, SafeExecOptions};
use codejail_protocol::LimitsReport;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// One safety check: code, and what its outcome must be.
struct Check {
    name: &'static str,
    code: &'static str,
    globals: &'static [(&'static str, i64)],
    expect: fn(&Dict, Option<&str>) -> Result<(), String>,
}

/// Upstream's checks, in its order and with its expectations.
const CHECKS: &[Check] = &[
    Check {
        name: "Basic code execution",
        code: "x = x + 1",
        globals: &[("x", 16)],
        expect: expect_basic,
    },
    Check {
        name: "Block sandbox escape by disk access",
        code: "import os; ret = os.listdir('/')",
        globals: &[],
        expect: expect_permission_error,
    },
    Check {
        name: "Block sandbox escape by process execution",
        code: "import subprocess;ret = subprocess.check_output(['date', '-u', '-d', '@0', '+%Y'])",
        globals: &[],
        expect: expect_exec_denied,
    },
    Check {
        name: "Block network access",
        code: "\nimport socket\nwith socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:\n    filedesc = s.fileno()\n",
        globals: &[],
        expect: expect_permission_error,
    },
];

/// How long after a failed round of checks the next one runs (unless the broker
/// restarts first).
pub const RECHECK_AFTER_FAILURE: Duration = Duration::from_secs(10);

const PERMISSION_DENIED: &str = "PermissionError: [Errno 13] Permission denied";
const RESOURCE_UNAVAILABLE: &str = "BlockingIOError: [Errno 11] Resource temporarily unavailable";

fn expect_basic(globals: &Dict, emsg: Option<&str>) -> Result<(), String> {
    if let Some(e) = emsg {
        return Err(format!("Unexpected error: {e}"));
    }
    match globals.get("x") {
        None => Err("x not in returned globals".into()),
        Some(x) if x.as_i64() == Some(17) => Ok(()),
        Some(x) => Err(format!("returned global x != 17 (was {x})")),
    }
}

fn expect_permission_error(globals: &Dict, emsg: Option<&str>) -> Result<(), String> {
    match emsg {
        None => Err(format!(
            "Expected error, but code ran successfully. Globals: {globals}"
        )),
        Some(e) if e.contains(PERMISSION_DENIED) => Ok(()),
        Some(e) => Err(format!("Expected permission error, but got: {e}")),
    }
}

fn expect_exec_denied(globals: &Dict, emsg: Option<&str>) -> Result<(), String> {
    match emsg {
        None => Err(format!(
            "Expected error, but code ran successfully. Globals: {globals}"
        )),
        Some(e) if e.contains(PERMISSION_DENIED) || e.contains(RESOURCE_UNAVAILABLE) => Ok(()),
        Some(e) => Err(format!(
            "Expected permission or resource limit error, but got: {e}"
        )),
    }
}

/// Run every check; `Err` lists the failed ones (each `name: why`).
pub async fn run_checks(cfg: &ClientConfig) -> Result<(), Vec<String>> {
    let mut failures = Vec::new();
    for check in CHECKS {
        let mut globals: Dict = check
            .globals
            .iter()
            .map(|&(k, v)| (k, Value::from(v)))
            .collect();
        let outcome = safe_exec(cfg, check.code, &mut globals, &SafeExecOptions::default()).await;
        let verdict = match outcome {
            Ok(()) => (check.expect)(&globals, None),
            Err(SafeExecError::Exception(e)) => (check.expect)(&globals, Some(&e.message)),
            Err(other) => Err(format!("Uncaught exception from check: {other}")),
        };
        match verdict {
            Ok(()) => tracing::info!(check = check.name, "startup check passed"),
            Err(why) => {
                tracing::error!(check = check.name, %why, "startup check failed");
                failures.push(format!("{}: {why}", check.name));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Whether code-exec may be served: the broker answers, its required layers hold and
/// the checks passed against this broker instance. Also the broker's limits as its
/// last status gave them, which make each request's deadline.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    broker_up: AtomicBool,
    /// Wakes the monitor early (a request saw the broker go away).
    kick: Notify,
    /// The broker's limit policy from its last status (empty until one answered, and
    /// no request is served before that).
    limits: RwLock<Arc<LimitsReport>>,
}

impl Readiness {
    /// Whether code-exec is served.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The broker's limits as of its last answer to a poll.
    pub fn broker_limits(&self) -> Arc<LimitsReport> {
        match self.limits.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_broker_limits(&self, limits: LimitsReport) {
        let mut current = match self.limits.write() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if **current != limits {
            tracing::info!(
                realtime = ?limits.defaults.get("REALTIME"),
                contexts = limits.contexts.len(),
                "the broker's limits (each request's deadline follows its REALTIME)"
            );
            *current = Arc::new(limits);
        }
    }

    /// Whether the broker answered the last poll.
    pub fn broker_up(&self) -> bool {
        self.broker_up.load(Ordering::SeqCst)
    }

    /// The broker is gone: stop serving until it is back and checked again.
    pub fn broker_lost(&self, metrics: &Metrics) {
        if self.ready.swap(false, Ordering::SeqCst) {
            tracing::warn!("the broker went away: not ready until it is back and checked");
        }
        self.broker_up.store(false, Ordering::SeqCst);
        metrics.ready.set(0);
        metrics.broker_up.set(0);
        self.kick.notify_one();
    }

    fn set(&self, metrics: &Metrics, broker_up: bool, ready: bool) {
        self.broker_up.store(broker_up, Ordering::SeqCst);
        self.ready.store(ready, Ordering::SeqCst);
        metrics.broker_up.set(i64::from(broker_up));
        metrics.ready.set(i64::from(ready));
    }
}

/// Poll the broker for ever, keeping `readiness` true only while it holds. Runs the
/// safety checks each time a (new) broker answers.
pub async fn monitor(
    cfg: ClientConfig,
    interval: Duration,
    readiness: &Readiness,
    metrics: &Metrics,
) {
    let mut conn: Option<Client> = None;
    let mut checked = false;
    // After a failed round, the next one waits RECHECK_AFTER_FAILURE (a broken setup
    // does not fix itself every second); a broker restart re-checks at once.
    let mut next_check = Instant::now();
    loop {
        let status = match conn.as_mut() {
            Some(c) => c.status().await,
            None => match Client::connect(&cfg).await {
                Ok(mut c) => {
                    let s = c.status().await;
                    conn = Some(c);
                    s
                }
                Err(e) => Err(e),
            },
        };
        if let Ok(report) = &status {
            readiness.set_broker_limits(report.limits.clone());
        }
        match status {
            Err(e) => {
                if readiness.broker_up() || readiness.is_ready() {
                    tracing::warn!(error = %e, "the broker does not answer");
                }
                conn = None;
                checked = false;
                next_check = Instant::now();
                readiness.set(metrics, false, false);
            }
            Ok(report) if !report.required_layers_hold() => {
                tracing::warn!("the broker runs without a required layer: not ready");
                checked = false;
                next_check = Instant::now();
                readiness.set(metrics, true, false);
            }
            Ok(_) if checked => readiness.set(metrics, true, true),
            Ok(_) if Instant::now() < next_check => readiness.set(metrics, true, false),
            Ok(_) => {
                readiness.set(metrics, true, false);
                match run_checks(&cfg).await {
                    Ok(()) => {
                        tracing::info!("startup safety checks passed: ready");
                        checked = true;
                        readiness.set(metrics, true, true);
                    }
                    Err(failures) => {
                        next_check = Instant::now() + RECHECK_AFTER_FAILURE;
                        tracing::error!(
                            failed = failures.join("; "),
                            "startup safety checks failed: code-exec answers 500 until they pass"
                        );
                    }
                }
            }
        }
        // A failed check is retried at the same pace; a kick (a request saw the broker
        // go away) polls at once.
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = readiness.kick.notified() => {
                conn = None;
                checked = false;
                next_check = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_are_upstreams() {
        let mut g = Dict::new();
        g.insert("x", 17);
        assert!(expect_basic(&g, None).is_ok());
        g.insert("x", 16);
        assert_eq!(
            expect_basic(&g, None),
            Err("returned global x != 17 (was 16)".into())
        );
        assert!(expect_basic(&Dict::new(), None).is_err());
        assert!(expect_basic(&g, Some("boom")).is_err());

        let denied = "Couldn't execute jailed code: stdout: b'', stderr: b'...PermissionError: [Errno 13] Permission denied: ...' with status code: 1";
        let again = "... BlockingIOError: [Errno 11] Resource temporarily unavailable ...";
        let missing = "... FileNotFoundError: [Errno 2] No such file or directory: 'date' ...";
        assert!(expect_permission_error(&Dict::new(), Some(denied)).is_ok());
        assert!(expect_permission_error(&Dict::new(), Some(again)).is_err());
        assert!(expect_permission_error(&Dict::new(), None).is_err());
        assert!(expect_exec_denied(&Dict::new(), Some(denied)).is_ok());
        assert!(expect_exec_denied(&Dict::new(), Some(again)).is_ok());
        assert!(expect_exec_denied(&Dict::new(), Some(missing)).is_err());
    }
}
