//! Per-process client state: one tokio runtime and the kept connections, owned by the
//! process that made them.
//!
//! Why per process, checked by pid on every call: after `fork()` the child inherits
//! the parent's memory but none of its threads, so the parent's runtime (its I/O
//! driver runs on a worker thread) is dead in the child, and the parent's connections
//! are the parent's: a child writing to one would interleave frames with the parent.
//! The child therefore never touches them: it sees a pid that is not its own and
//! builds a fresh [`Process`]. The old one is leaked on purpose (dropping a runtime
//! would wait for worker threads that do not exist in the child; closing the kept
//! sockets is not needed, they are shared descriptions the parent still uses).
//!
//! Locks: a thread of the parent may hold `idle`'s lock at the moment another thread
//! forks; the child never takes that lock, because it never uses the old `Process`.
//! The pointer swap itself is lock-free.

use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;

use codejail_client::{Client, ClientConfig, ClientError, ErrorKind, JailRequest, JailResult};
use codejail_protocol::StatusReport;

/// Connections kept per socket; more concurrent callers connect and then close.
const MAX_IDLE_PER_SOCKET: usize = 16;

/// The state of one process.
pub struct Process {
    pid: u32,
    runtime: tokio::runtime::Runtime,
    idle: Mutex<Vec<(PathBuf, Client)>>,
    connects: AtomicU64,
    reconnects: AtomicU64,
}

/// What [`Process::stats`] reports.
pub struct Stats {
    pub pid: u32,
    pub idle: usize,
    pub connects: u64,
    pub reconnects: u64,
}

static CURRENT: AtomicPtr<Process> = AtomicPtr::new(std::ptr::null_mut());

/// This process's state, made on first use and again after a `fork()`.
pub fn current() -> &'static Process {
    let pid = std::process::id();
    let seen = CURRENT.load(Ordering::Acquire);
    // SAFETY: every non-null pointer stored in CURRENT comes from `Box::into_raw` below
    // and is never freed (a replaced `Process` is leaked, see the module comment), so it
    // is valid for 'static; `Process` is Sync.
    if let Some(p) = unsafe { seen.as_ref() } {
        if p.pid == pid {
            return p;
        }
    }
    let fresh = Box::into_raw(Box::new(Process::new(pid)));
    match CURRENT.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: `fresh` came from `Box::into_raw` just above and is now owned by
        // CURRENT, which never frees it.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // Another thread of this process installed its state first: use that one.
            // SAFETY: `fresh` came from `Box::into_raw` above and was never shared.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: as for `seen`: stored by a successful exchange, never freed.
            match unsafe { winner.as_ref() } {
                Some(p) if p.pid == pid => p,
                // Cannot happen (a winner is always a state of this process); retry.
                _ => current(),
            }
        }
    }
}

impl Process {
    fn new(pid: u32) -> Process {
        // One worker thread drives the sockets and timers; the callers' own threads
        // run their futures in `block_on`. Building a runtime only fails when the OS
        // refuses threads or an epoll instance; without either nothing here can work.
        #[allow(clippy::expect_used)]
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("codejail-client")
            .enable_all()
            .build()
            .expect("cannot start the codejail client's I/O thread");
        Process {
            pid,
            runtime,
            idle: Mutex::new(Vec::new()),
            connects: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    /// One run, on a kept connection when there is one. If the kept connection turns
    /// out dead (closed by a broker that restarted or shut down), the run is retried
    /// once on a new connection.
    pub fn jail_code(
        &self,
        cfg: &ClientConfig,
        req: &JailRequest,
    ) -> Result<JailResult, ClientError> {
        self.runtime.block_on(async {
            if let Some(mut client) = self.take_idle(cfg) {
                match client.jail_code(req).await {
                    Ok(r) => {
                        self.keep(cfg, client);
                        return Ok(r);
                    }
                    Err(e) if is_stale(&e) => {
                        self.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.keep_if_usable(cfg, client, &e);
                        return Err(e);
                    }
                }
            }
            let mut client = self.connect(cfg).await?;
            let result = client.jail_code(req).await;
            match &result {
                Ok(_) => self.keep(cfg, client),
                Err(e) => self.keep_if_usable(cfg, client, e),
            }
            result
        })
    }

    /// The broker's status, on a new connection (status calls are rare; a health
    /// check should see a broker that accepts connections now).
    pub fn status(&self, cfg: &ClientConfig) -> Result<StatusReport, ClientError> {
        self.runtime.block_on(async {
            let mut client = self.connect(cfg).await?;
            client.status().await
        })
    }

    /// Drop every kept connection.
    pub fn close_idle(&self) {
        let closed = std::mem::take(&mut *self.lock_idle());
        // Dropping a tokio socket deregisters it from this runtime's driver.
        let _guard = self.runtime.enter();
        drop(closed);
    }

    /// Connection counters of this process.
    pub fn stats(&self) -> Stats {
        Stats {
            pid: self.pid,
            idle: self.lock_idle().len(),
            connects: self.connects.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }

    async fn connect(&self, cfg: &ClientConfig) -> Result<Client, ClientError> {
        let client = Client::connect(cfg).await?;
        self.connects.fetch_add(1, Ordering::Relaxed);
        Ok(client)
    }

    fn take_idle(&self, cfg: &ClientConfig) -> Option<Client> {
        let mut idle = self.lock_idle();
        let at = idle.iter().rposition(|(socket, _)| *socket == cfg.socket)?;
        Some(idle.swap_remove(at).1)
    }

    fn keep(&self, cfg: &ClientConfig, client: Client) {
        let mut idle = self.lock_idle();
        if idle.iter().filter(|(s, _)| *s == cfg.socket).count() < MAX_IDLE_PER_SOCKET {
            idle.push((cfg.socket.clone(), client));
        }
    }

    /// A broker error answer leaves the connection usable; anything else closed it.
    fn keep_if_usable(&self, cfg: &ClientConfig, client: Client, e: &ClientError) {
        if matches!(e, ClientError::Broker { kind, .. } if *kind != ErrorKind::ShuttingDown) {
            self.keep(cfg, client);
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(PathBuf, Client)>> {
        // A panic while holding the lock cannot leave the Vec inconsistent.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether a call on a kept connection failed because the connection was already dead
/// (the broker restarted or shut down since it was last used).
fn is_stale(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Disconnected
            | ClientError::Closed
            | ClientError::Io(_)
            | ClientError::Broker {
                kind: ErrorKind::ShuttingDown,
                ..
            }
    )
}
