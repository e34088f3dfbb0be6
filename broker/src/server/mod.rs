//! The daemon's front (mini-redis shape): [`run`] accepting on the Unix socket,
//! one [`handler`] task per connection, shutdown injected as a future so tests can
//! drive it. Per-connection errors are logged and answered, never fatal to the broker.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use codejail_protocol::StatusReport;
use tokio::net::UnixListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::run::cgroup::Cgroups;
use crate::run::uidpool::UidPool;

pub mod admission;
pub mod budget;
pub mod connections;
pub mod handler;
pub mod peer;
pub mod report;
pub mod selftest;
pub mod startup;

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// Validated settings.
    pub settings: Settings,
    /// Slots and queue.
    pub admission: admission::Admission,
    /// Next run id.
    pub next_run_id: AtomicU64,
    /// The confinement report (without load; filled in per request).
    pub report: StatusReport,
    /// Cancelled when running runs must be killed (end of the shutdown grace).
    pub kill_runs: CancellationToken,
    /// Where run cgroups are made.
    pub cgroups: Arc<Cgroups>,
    /// Per-run outside ids (production), `None` when runs share
    /// [`Settings::identity`].
    pub uid_pool: Option<UidPool>,
    /// Open connections, capped.
    pub connections: Arc<connections::Connections>,
    /// Bytes of requests held, capped.
    pub budget: Arc<budget::Budget>,
    /// The warm pools.
    pub pools: crate::run::pool::Pools,
}

impl Shared {
    /// The status report with the current load.
    pub fn status(&self) -> StatusReport {
        let mut r = self.report.clone();
        r.load = self.admission.load();
        r.pool = self.pools.status();
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
pub async fn run(listener: UnixListener, shared: Arc<Shared>, shutdown: impl std::future::Future) {
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
                Ok((stream, _)) => match shared.connections.admit() {
                    Ok(slot) => {
                        let shared = shared.clone();
                        let stop = stop_accepting.clone();
                        conns.spawn(async move { handler::serve(stream, shared, stop, slot).await });
                    }
                    Err(full) => {
                        tracing::warn!(%full, "connection refused");
                        conns.spawn(handler::refuse(stream, full.to_string(), shared.status()));
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
    tracing::info!(
        running = shared.admission.load().running,
        "shutting down: no new connections, runs get {:?}",
        shared.settings.shutdown_grace
    );
    drop(listener);
    // A socket systemd passed stays: its file is systemd's, and the next start needs it.
    if !shared.settings.socket_activated {
        let _ = std::fs::remove_file(&shared.settings.socket_path);
    }
    stop_accepting.cancel();
    shared.admission.close();
    if drain(&mut conns, shared.settings.shutdown_grace)
        .await
        .is_err()
    {
        tracing::warn!("grace period over: killing the remaining runs");
        shared.kill_runs.cancel();
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
