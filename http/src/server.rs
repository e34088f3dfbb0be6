//! Accepting and serving connections: hyper's HTTP/1.1 server with a timer, so that a
//! connection that does not send its header block within `header_read_timeout_secs`
//! is closed, under a cap of `max_connections` open at once (a semaphore: at the cap
//! the front stops accepting and new connections wait in the listen backlog until one
//! closes). axum's own `serve` sets neither.
//!
//! Each connection may need two open files (its socket and the broker call of the
//! request it serves); [`fit_open_files`] makes the cap and `RLIMIT_NOFILE` agree at
//! start, so that accepting never fails for want of a descriptor.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{ConfigError, ConnectionCap, DEFAULT_MAX_CONNECTIONS};
use crate::metrics::InFlight;
use crate::{checks, routes, AppState, Config};

/// The largest request header block (request line included) read; larger ones are
/// answered 431 by hyper. edx-platform sends a few hundred bytes; the bound keeps
/// `max_connections` stalled header blocks small in memory.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// After an accept error other than a peer's reset (e.g. out of descriptors or
/// memory), the listener rests this long before it tries again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Make `config.max_connections` and the soft `RLIMIT_NOFILE` agree: raise the soft
/// limit to what the cap needs (at most the hard limit; a failure to raise is not an
/// error, the check below decides), then set `max_connections` to the cap
/// [`Config::connection_cap`] decides. A set cap that does not fit is an error naming
/// both numbers; a default one that does not fit is lowered, with a warning.
pub fn fit_open_files(config: &mut Config) -> Result<usize, ConfigError> {
    let wanted = config.open_files_wanted();
    let mut limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < wanted && hard > soft => {
            let raised = wanted.min(hard);
            match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
                Ok(()) => {
                    tracing::info!(from = soft, to = raised, "raised the soft RLIMIT_NOFILE");
                    raised
                }
                Err(e) => {
                    tracing::warn!(error = %e, soft, hard, "cannot raise the soft RLIMIT_NOFILE");
                    soft
                }
            }
        }
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE; assuming 1024");
            1024
        }
    };
    // RLIM_INFINITY reads as u64::MAX: no bound to fit.
    if limit == nix::libc::RLIM_INFINITY {
        limit = u64::MAX;
    }
    let cap = config.connection_cap(limit)?;
    if let ConnectionCap::Fitted(n) = cap {
        tracing::warn!(
            max_connections = n,
            rlimit_nofile = limit,
            "max_connections lowered from its default {DEFAULT_MAX_CONNECTIONS} (which needs \
             {wanted} open files) to fit RLIMIT_NOFILE; raise LimitNOFILE= (or ulimit -n) \
             to serve more connections at once"
        );
    }
    config.max_connections = Some(cap.get());
    Ok(cap.get())
}

/// Serve on `listener` with the broker monitor running, until `shutdown` resolves;
/// then stop accepting, let the requests in flight finish (each is bounded by its
/// deadline), close idle connections, and return.
///
/// The connection cap is `max_connections` (the default when unset: the binary sets
/// it with [`fit_open_files`] first).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut monitor_cfg = state.client.clone();
    monitor_cfg.queue_timeout = Duration::from_secs(10);
    monitor_cfg.total_timeout = Duration::from_secs(10);
    let interval = Duration::from_secs_f64(state.config.health_interval_secs);
    let readiness = state.readiness.clone();
    let metrics = state.metrics.clone();
    let monitor = tokio::spawn(async move {
        checks::monitor(monitor_cfg, interval, &readiness, &metrics).await;
    });

    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout())
        .max_header_size(MAX_HEADER_BYTES);
    let slots = Arc::new(Semaphore::new(
        state
            .config
            .max_connections
            .unwrap_or(DEFAULT_MAX_CONNECTIONS),
    ));
    let metrics = state.metrics.clone();
    let app = routes(state);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        // A slot first: at the cap, connections wait in the kernel's backlog.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let conn = graceful.watch(
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone())),
        );
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _open = InFlight::enter(&metrics.connections);
            if let Err(e) = conn.await {
                // A header-read timeout, a malformed request, a peer's reset.
                tracing::debug!(error = %e, "connection closed on an error");
            }
            drop(slot);
        });
    }

    drop(listener);
    tracing::debug!(
        connections = graceful.count(),
        "closing idle connections, finishing the requests in flight"
    );
    graceful.shutdown().await;
    monitor.abort();
    Ok(())
}

/// A peer that reset before it was accepted is nothing; anything else (out of
/// descriptors, of memory) is logged and the listener rests a moment rather than spin.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in {ACCEPT_ERROR_PAUSE:?}");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
