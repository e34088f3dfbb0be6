//! The broker's transport (mini-redis shape): [`run`] accepting on the Unix socket
//! under the connection cap ([`connections`]), one [`connection`] task per
//! connection, shutdown injected as a future so tests can drive it. Per-connection
//! errors are logged and answered, never fatal to the broker. What a request does is
//! `crate::run`'s: a connection hands each `Exec` to [`Runs::exec`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use codejail_protocol::StatusReport;
use tokio::net::UnixListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::run::Runs;

pub mod codec;
pub mod connection;
pub mod connections;
pub mod peer;

/// What every connection shares: the runs, the connection cap and the confinement
/// report.
#[derive(Debug)]
pub struct Service {
    /// Where requests run.
    pub runs: Arc<Runs>,
    /// Open connections, capped.
    pub connections: Arc<connections::Connections>,
    /// The confinement report (without load; filled in per request).
    pub report: StatusReport,
}

impl Service {
    /// The service of `runs`, with the confinement report of the start-up self-test.
    pub fn new(runs: Arc<Runs>, report: StatusReport) -> Service {
        let connections =
            connections::Connections::new(runs.settings().max_connections.get() as usize);
        Service {
            runs,
            connections,
            report,
        }
    }

    /// The validated settings.
    pub fn settings(&self) -> &Settings {
        self.runs.settings()
    }

    /// The status report with the current load.
    pub fn status(&self) -> StatusReport {
        let mut r = self.report.clone();
        r.load = self.runs.load();
        r.pool = self.runs.pool_status();
        r
    }
}

/// A socket that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// bind(2) or the stale-socket check failed.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// chmod/chown of the socket failed.
    #[error("cannot set owner/mode of {path}: {source}")]
    Permissions {
        /// The socket path.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Fail when another broker is serving the configured socket (a connect succeeds).
/// Called before the start-up sweep, which would otherwise kill that broker's runs.
pub fn check_no_other_broker(settings: &Settings) -> Result<(), ListenError> {
    let path = &settings.socket_path;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ListenError::Bind {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another broker is serving this socket",
            ),
        });
    }
    Ok(())
}

/// Bind the socket with its configured mode and group. A stale socket file (from a
/// crash) is replaced; any other file at the path is left alone and is an error.
pub fn bind(settings: &Settings) -> Result<UnixListener, ListenError> {
    let path = &settings.socket_path;
    let bind_err = |source| ListenError::Bind {
        path: path.clone(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(bind_err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(bind_err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another broker is serving this socket",
            )));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    let perm_err = |source| ListenError::Permissions {
        path: path.clone(),
        source,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.socket_mode))
        .map_err(perm_err)?;
    if let Some(gid) = settings.socket_gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(perm_err)?;
    }
    Ok(listener)
}

/// Serve until `shutdown` resolves; then stop accepting, give running runs the grace
/// period, kill what is left, and return once every connection has ended.
pub async fn run(
    listener: UnixListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future,
) {
    let mut conns = JoinSet::new();
    let stop_accepting = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                // The cap is enforced here, at accept: at it, the connection idle the
                // longest is closed to make room; only when all are busy is the new
                // one refused (with the reason).
                Ok((stream, _)) => match service.connections.admit() {
                    Ok(place) => {
                        let service = service.clone();
                        let stop = stop_accepting.clone();
                        conns.spawn(async move { connection::serve(stream, service, stop, place).await });
                    }
                    Err(full) => {
                        tracing::warn!(%full, "connection refused");
                        conns.spawn(connection::refuse(stream, full.to_string(), service.status()));
                    }
                },
                Err(e) => {
                    // EMFILE and friends: log, back off a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    let settings = service.settings();
    tracing::info!(
        running = service.runs.load().running,
        "shutting down: no new connections, runs get {:?}",
        settings.shutdown_grace
    );
    drop(listener);
    // A socket systemd passed stays: its file is systemd's, and the next start needs it.
    if !settings.socket_activated {
        let _ = std::fs::remove_file(&settings.socket_path);
    }
    stop_accepting.cancel();
    service.runs.close();
    if drain(&mut conns, settings.shutdown_grace).await.is_err() {
        tracing::warn!("grace period over: killing the remaining runs");
        service.runs.kill_all();
        if drain(&mut conns, Duration::from_secs(10)).await.is_err() {
            conns.abort_all();
        }
    }
}

/// Wait up to `limit` for every connection task to end.
async fn drain(
    conns: &mut JoinSet<()>,
    limit: Duration,
) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(limit, async { while conns.join_next().await.is_some() {} }).await
}

/// Remove a socket path on exit (best effort).
pub fn remove_socket(path: &Path) {
    let _ = std::fs::remove_file(path);
}
