//! `codejail._native`: the small native half of the `codejail` Python package. It
//! wraps `codejail-client` (one implementation of the protocol, shared with the CLI);
//! everything callers touch is plain Python on top (`codejail/*.py`).
//!
//! What this module adds to the client library is what a Python app server needs:
//!
//! - the GIL is released for the whole call ([`Python::detach`]), so many threads
//!   (gunicorn `--threads`) run jails at once;
//! - connections are kept and reused per process (`process::Process`); after
//!   `fork()` (gunicorn `preload_app`) the child notices the pid change and starts with
//!   a fresh runtime and no connections, never touching its parent's;
//! - a kept connection that turns out dead (the broker restarted since) is replaced
//!   once, so a restart between two calls is invisible;
//! - failures become the typed exceptions of `codejail.broker` (unreachable, busy,
//!   refused, ...), each naming the socket and the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use codejail_client::{ClientConfig, ClientError, ErrorKind, JailRequest, JailResult};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

mod process;

/// Timeouts of one call, in seconds (`None`: the client's default; for `total`, a
/// negative value means no total timeout).
struct Timeouts {
    connect: Option<f64>,
    start: Option<f64>,
    queue: Option<f64>,
    total: Option<f64>,
}

impl Timeouts {
    fn config(&self, socket: &str) -> PyResult<ClientConfig> {
        let mut cfg = ClientConfig::new(socket);
        if let Some(s) = self.connect {
            cfg.connect_timeout = seconds("connect_timeout", s)?;
        }
        if let Some(s) = self.start {
            cfg.start_timeout = seconds("start_timeout", s)?;
        }
        if let Some(s) = self.queue {
            cfg.queue_timeout = seconds("queue_timeout", s)?;
        }
        match self.total {
            // The client treats a duration too large to add to now as "none".
            Some(s) if s < 0.0 => cfg.total_timeout = Duration::MAX,
            Some(s) => cfg.total_timeout = seconds("total_timeout", s)?,
            None => {}
        }
        Ok(cfg)
    }
}

fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!("{what} must be a number of seconds >= 0, not {s}"))
    })
}

/// Run one program in a fresh jail on the broker at `socket` (upstream's `jail_code`,
/// without its Python-side configuration: `codejail.jail_code` resolves that).
#[pyfunction]
#[pyo3(signature = (
    socket, command, code, files, extra_files, argv, stdin, limits,
    limits_context=None, slug=None, connect_timeout=None, queue_timeout=None,
    total_timeout=None, start_timeout=None,
))]
#[allow(clippy::too_many_arguments)] // One per keyword of the Python signature.
fn jail_code<'py>(
    py: Python<'py>,
    socket: String,
    command: String,
    code: Option<String>,
    files: Vec<PathBuf>,
    extra_files: Vec<(String, Vec<u8>)>,
    argv: Vec<String>,
    stdin: Vec<u8>,
    limits: BTreeMap<String, u64>,
    limits_context: Option<String>,
    slug: Option<String>,
    connect_timeout: Option<f64>,
    queue_timeout: Option<f64>,
    total_timeout: Option<f64>,
    start_timeout: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = Timeouts {
        connect: connect_timeout,
        start: start_timeout,
        queue: queue_timeout,
        total: total_timeout,
    }
    .config(&socket)?;
    let req = JailRequest {
        command,
        code,
        files,
        extra_files,
        argv,
        stdin,
        limits,
        limits_context,
        slug,
    };
    let result = py.detach(|| process::current().jail_code(&cfg, &req));
    match result {
        Ok(r) => result_dict(py, r),
        Err(e) => Err(broker_error(py, &socket, &e)),
    }
}

/// The broker's status report as JSON text (`codejail-client status --json`'s shape).
#[pyfunction]
#[pyo3(signature = (socket, connect_timeout=None, total_timeout=None, start_timeout=None))]
fn status_json(
    py: Python<'_>,
    socket: String,
    connect_timeout: Option<f64>,
    total_timeout: Option<f64>,
    start_timeout: Option<f64>,
) -> PyResult<String> {
    let cfg = Timeouts {
        connect: connect_timeout,
        start: start_timeout,
        queue: None,
        total: total_timeout,
    }
    .config(&socket)?;
    let result = py.detach(|| process::current().status(&cfg));
    match result {
        Ok(report) => Ok(codejail_client::json::status_report(&report).to_string()),
        Err(e) => Err(broker_error(py, &socket, &e)),
    }
}

/// This process's connection state, for tests and diagnostics: `{"pid": the process the
/// state belongs to, "idle": kept connections, "connects": connections made,
/// "reconnects": dead kept connections replaced}`.
#[pyfunction]
fn connection_stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let stats = process::current().stats();
    let d = PyDict::new(py);
    d.set_item("pid", stats.pid)?;
    d.set_item("idle", stats.idle)?;
    d.set_item("connects", stats.connects)?;
    d.set_item("reconnects", stats.reconnects)?;
    Ok(d)
}

/// The `SafeExecException` message for globals cut at the `OUTPUT` limit of `limit`
/// bytes (the client library's, so that every caller says the same).
#[pyfunction]
fn truncated_output_message(limit: u64) -> String {
    codejail_client::safe_exec::truncated_output_message(limit)
}

/// Close this process's kept connections (the next call connects again).
#[pyfunction]
fn close_connections(py: Python<'_>) {
    py.detach(|| process::current().close_idle());
}

fn result_dict(py: Python<'_>, r: JailResult) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("stdout", PyBytes::new(py, &r.stdout))?;
    d.set_item("stderr", PyBytes::new(py, &r.stderr))?;
    d.set_item("status", r.status)?;
    d.set_item("limit_hit", r.limit_hit)?;
    d.set_item("truncated", r.truncated)?;
    d.set_item("output_limit", r.output_limit)?;
    d.set_item("run_id", r.run_id)?;
    d.set_item("workdir", r.workdir)?;
    d.set_item("pid", r.pid)?;
    let usage = PyDict::new(py);
    usage.set_item("cpu_user_ms", r.usage.cpu_user_ms)?;
    usage.set_item("cpu_sys_ms", r.usage.cpu_sys_ms)?;
    usage.set_item("wall_ms", r.usage.wall_ms)?;
    usage.set_item("max_rss_kib", r.usage.max_rss_kib)?;
    usage.set_item("peak_memory_bytes", r.usage.peak_memory_bytes)?;
    d.set_item("usage", usage)?;
    Ok(d)
}

/// The `codejail.broker` exception class for a client error.
fn error_class(e: &ClientError) -> &'static str {
    match e {
        ClientError::Connect { .. }
        | ClientError::Disconnected
        | ClientError::Closed
        | ClientError::Io(_)
        | ClientError::Timeout("connect" | "start") => "BrokerUnavailable",
        // Waiting too long for a slot is the broker being busy: the caller may retry.
        ClientError::Timeout("queue") => "BrokerBusy",
        ClientError::Refused(_) | ClientError::VersionMismatch { .. } => "BrokerRefused",
        ClientError::Broker { kind, .. } => match kind {
            ErrorKind::Busy => "BrokerBusy",
            ErrorKind::ShuttingDown => "BrokerUnavailable",
            ErrorKind::InvalidRequest
            | ErrorKind::UnknownCommand
            | ErrorKind::UnknownLimit
            | ErrorKind::LimitAboveCeiling
            | ErrorKind::BadFileName => "BrokerRequestError",
            _ => "BrokerError",
        },
        ClientError::InvalidName(_)
        | ClientError::RequestTooLarge { .. }
        | ClientError::ReadFile { .. }
        | ClientError::UnsupportedFileType { .. }
        | ClientError::NonUtf8Name { .. } => "BrokerRequestError",
        _ => "BrokerError",
    }
}

/// A short machine-readable kind for the exception's `kind` attribute.
fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Connect { .. } => "connect".into(),
        ClientError::Disconnected | ClientError::Closed => "disconnected".into(),
        ClientError::Io(_) => "io".into(),
        ClientError::Runtime(_) => "runtime".into(),
        ClientError::Timeout(which) => format!("{which}_timeout"),
        ClientError::Refused(_) => "refused".into(),
        ClientError::VersionMismatch { .. } => "version_mismatch".into(),
        ClientError::Broker { kind, .. } => kind.to_string().replace(' ', "_"),
        ClientError::Protocol(_) => "protocol".into(),
        _ => "request".into(),
    }
}

/// The typed Python exception for `e`, naming the socket and the reason. Falls back
/// to `RuntimeError` with the same text if `codejail.broker` cannot be imported.
fn broker_error(py: Python<'_>, socket: &str, e: &ClientError) -> PyErr {
    let reason = e.to_string();
    let kind = error_kind(e);
    let made = py
        .import("codejail.broker")
        .and_then(|m| m.getattr(error_class(e)))
        .and_then(|cls| cls.call1((socket, reason.clone(), kind)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(import_error) => {
            let err = pyo3::exceptions::PyRuntimeError::new_err(format!(
                "codejail broker at {socket}: {reason}"
            ));
            err.set_cause(py, Some(import_error));
            err
        }
    }
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(jail_code, m)?)?;
    m.add_function(wrap_pyfunction!(status_json, m)?)?;
    m.add_function(wrap_pyfunction!(connection_stats, m)?)?;
    m.add_function(wrap_pyfunction!(close_connections, m)?)?;
    m.add_function(wrap_pyfunction!(truncated_output_message, m)?)?;
    m.add("SAFE_EXEC_WRAPPER", codejail_client::safe_exec::WRAPPER)?;
    m.add("DEFAULT_SOCKET", codejail_client::DEFAULT_SOCKET)?;
    m.add("PROTOCOL_VERSION", codejail_protocol::PROTOCOL_VERSION)?;
    Ok(())
}
