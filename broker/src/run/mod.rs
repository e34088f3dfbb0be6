//! The runs, from the broker's side. [`Runs`] holds what every run needs (the
//! settings, the admission slots and queue, the request byte budget, the run ids, the
//! cgroups, the uid pool, the warm pools), and [`Runs::exec`] is one run's whole life,
//! a step per call:
//!
//! 1. **check** the request against the settings and plan its run ([`request`]);
//! 2. **admit** it: a slot now, a place in the queue, or `Busy` ([`admission`]);
//! 3. **choose a jail**: a warm one from the command's pool when one fits ([`pool`]),
//!    else a cold one with its own outside uid in production ([`uidpool`]);
//! 4. **run** it: the jail stage spawned as the run's uid into its cgroup ([`cgroup`]),
//!    or the warm jail handed the request; output streamed to the client as it
//!    comes, REALTIME and the output cap enforced, the client's departure ending it
//!    (`stage`, `jail`);
//! 5. **answer**: the log line, then `Finished` or the error;
//! 6. **clean up**: the stage reaped, the cgroup removed, the uid given back, the
//!    warm jail's place freed for its replacement, then the slot (`cleanup`).
//!
//! The connection handler (`server/connection.rs`) and the start-up self-test
//! (`daemon/selftest.rs`) are the two callers, each a [`Client`]. The jail itself is
//! built by the stage binary (`codejail-jail`); docs/architecture.md describes a run's
//! life end to end.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use codejail_plan::Achieved;
use codejail_protocol::{ErrorKind, Exec, Load, PoolStatus, Response};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

pub mod admission;
pub mod budget;
pub mod cgroup;
mod cleanup;
mod error;
mod jail;
mod outcome;
pub mod planning;
pub mod pool;
mod process;
pub mod request;
mod stage;
pub mod uidpool;

use admission::{Admission, Slot, Ticket};
use budget::{Budget, Reservation};
use cgroup::Cgroups;
use pool::Pools;
use uidpool::UidPool;

pub use cleanup::Cleanup;
pub use error::{HandOverError, RunError, WarmError};
pub use jail::Jail;
pub use outcome::{Reports, RunResult};
pub use request::{Refusal, RunSpec};
pub use stage::{Output, Stage, Supervision};

/// Output chunks buffered between a run and a slow client.
const OUTPUT_BUFFER: usize = 16;

/// Which jails a run may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmth {
    /// A warm one when the pool has one that fits, else a cold one.
    Any,
    /// A cold one.
    Cold,
    /// A warm one, or the refusal (the self-test of the pool).
    Warm,
}

/// Who asks for a run.
#[derive(Debug)]
pub struct Caller {
    /// The peer's uid (logs).
    pub peer_uid: u32,
    /// The request's bytes under the request budget, if it was read from a peer.
    pub held: Option<Reservation>,
    /// Which jails the run may take.
    pub warmth: Warmth,
}

/// The other end of a run: the connection that asked for it, or the self-test.
pub trait Client {
    /// Send one response; `false` when the client is gone or not reading.
    fn send(&mut self, response: Response) -> impl Future<Output = bool> + Send;

    /// Resolve when the client leaves, or sends anything (which the protocol forbids
    /// while its request is queued or running): `true` when it closed.
    fn left(&mut self) -> impl Future<Output = bool> + Send;

    /// What the run's program got of Landlock and seccomp, told before its `Finished`
    /// (the self-test compares a warm run's with a cold one's).
    fn confined(&mut self, _landlock: Option<Achieved>, _seccomp_denied: Option<u32>) {}
}

/// Everything runs need, shared by every connection and the warm pools' refill.
#[derive(Debug)]
pub struct Runs {
    settings: Settings,
    admission: Admission,
    budget: Arc<Budget>,
    next_run_id: AtomicU64,
    cgroups: Arc<Cgroups>,
    /// Per-run outside ids (production); `None` when runs share `Settings::identity`.
    uid_pool: Option<UidPool>,
    pools: Pools,
    /// Cancelled when running runs must be killed (end of the shutdown grace).
    kill: CancellationToken,
}

/// A request's names in the log.
struct Who {
    /// Set once the request passed its checks.
    run_id: Option<u64>,
    peer_uid: u32,
    slug: String,
    command: String,
}

impl Runs {
    /// The runs of a broker with these settings, on a host with these cgroups and
    /// (production) this uid pool. The warm pools are empty until [`pool::fill`].
    pub fn new(settings: Settings, cgroups: Cgroups, uid_pool: Option<UidPool>) -> Runs {
        Runs {
            admission: Admission::new(settings.max_running, settings.max_queue),
            budget: Budget::new(settings.request_budget_bytes, settings.max_frame),
            next_run_id: AtomicU64::new(1),
            cgroups: Arc::new(cgroups),
            uid_pool,
            pools: Pools::new(&settings),
            kill: CancellationToken::new(),
            settings,
        }
    }

    /// One run's whole life: check → admit → choose a jail → run → answer → clean
    /// up. Returns whether the client is still there to serve its next request.
    pub async fn exec(&self, exec: Exec, caller: Caller, client: &mut impl Client) -> bool {
        let mut who = Who {
            run_id: None,
            peer_uid: caller.peer_uid,
            slug: exec.slug.clone().unwrap_or_default(),
            command: exec.command.clone(),
        };
        // 1. Check the request and plan its run.
        let mut spec = match self.check(exec, caller.held) {
            Ok(spec) => spec,
            Err(refusal) => return refuse(client, &who, refusal, "request refused").await,
        };
        who.run_id = Some(spec.run_id);
        // 2. Admit it: a slot now, a place in the queue, or Busy.
        let mut slot = match self.admit(&who, client).await {
            Ok(slot) => slot,
            Err(alive) => return alive,
        };
        // 3. Choose a jail: a warm one when the pool has one that fits, else a cold one.
        let jail = match self
            .choose_jail(&mut spec, &who.command, caller.warmth)
            .await
        {
            Ok(jail) => jail,
            Err(refusal) => {
                tracing::error!(run_id = who.run_id, peer_uid = who.peer_uid, slug = who.slug, message = %refusal.message, "no jail for the run");
                return client
                    .send(error_response(refusal.kind, refusal.message))
                    .await;
            }
        };
        // 4. Run it, its output streamed to the client as it comes.
        let Some(ran) = self.run(jail, spec, &who, client).await else {
            return false;
        };
        // The program is gone; what is left (the answer, then the clean-up) does not
        // wait on it, so a request arriving now may wait for this slot.
        slot.finishing();
        // 5. Answer: the log line, then `Finished` or the error.
        let (alive, cleanup) = answer(&who, ran, client).await;
        // 6. Clean up: the cgroup goes, then the uid back to the pool once none of its
        //    processes is left (checked, and leftovers killed), both before the slot is
        //    freed, so that a slot always finds a free uid.
        if let Some(cleanup) = cleanup {
            cleanup.finish().await;
        }
        drop(slot);
        alive
    }

    /// Step 1: the request's checks, then its spec. The request's bytes stay counted
    /// until the plan has reached the stage, stdin's until the run ends.
    fn check(&self, exec: Exec, held: Option<Reservation>) -> Result<RunSpec, Refusal> {
        let mut spec =
            request::plan_run(&self.settings, &self.cgroups, exec, || self.next_run_id())?;
        if let Some(mut held) = held {
            spec.stdin_held = Some(held.split_off(spec.stdin.len() as u64));
            spec.held = Some(held);
        }
        Ok(spec)
    }

    /// Step 2: a slot, after a wait in the queue if need be (the client hears its
    /// place). `Err` holds whether the client is still there.
    async fn admit(&self, who: &Who, client: &mut impl Client) -> Result<Slot, bool> {
        match self.admission.try_admit() {
            Ticket::Now(slot) => Ok(slot),
            Ticket::Busy => {
                let load = self.admission.load();
                let message = format!(
                    "busy: {} runs running and {} queued (the maximum); try again later",
                    load.running, load.queued
                );
                let refusal = Refusal::new(ErrorKind::Busy, message);
                Err(refuse(
                    client,
                    who,
                    refusal,
                    "busy: every slot and the queue are full",
                )
                .await)
            }
            Ticket::Queued(position) => {
                if !client.send(Response::Queued { position }).await {
                    return Err(false);
                }
                tokio::select! {
                    slot = self.admission.wait() => match slot {
                        Some(slot) => Ok(slot),
                        None => {
                            let refusal = Refusal::new(ErrorKind::ShuttingDown, "the broker is shutting down");
                            Err(refuse(client, who, refusal, "shutting down while queued").await)
                        }
                    },
                    // Anything from the client while queued: it left (or broke the
                    // one-request-at-a-time rule). Either way, drop its place.
                    _ = client.left() => {
                        tracing::info!(run_id = who.run_id, peer_uid = who.peer_uid, slug = who.slug, "client left while queued");
                        Err(false)
                    }
                }
            }
        }
    }

    /// Step 3: a warm jail from the command's pool when it can serve the run; else,
    /// when the pool has a fork server, one forked for the run now; else a cold one
    /// with its own outside uid from the uid pool (production; without a uid pool the
    /// spec keeps the shared identity).
    async fn choose_jail(
        &self,
        spec: &mut RunSpec,
        command: &str,
        warmth: Warmth,
    ) -> Result<Jail, Refusal> {
        if warmth != Warmth::Cold {
            let has_code = spec.plan.code.is_some();
            if let Some(jail) = self.pools.take(command, &spec.limits, has_code) {
                return Ok(Jail::Warm(Box::new(jail)));
            }
            if let Some(jail) = self
                .pools
                .fork_now(self, command, &spec.limits, has_code)
                .await
            {
                return Ok(Jail::Warm(Box::new(jail)));
            }
            if warmth == Warmth::Warm {
                return Err(Refusal::new(
                    ErrorKind::JailFailed,
                    format!("no warm jail of {command} is ready"),
                ));
            }
        }
        let Some(pool) = &self.uid_pool else {
            return Ok(Jail::Cold(None));
        };
        // max_running + pool sizes <= count (checked at start-up), so a slot implies a
        // free id unless ids were quarantined after runs whose processes could not be
        // removed.
        let lease = pool.lease().ok_or_else(|| {
            let e = RunError::NoRunUid {
                range: pool.range().to_string(),
            };
            Refusal::new(ErrorKind::JailFailed, e.to_string())
        })?;
        spec.identity = lease.identity();
        Ok(Jail::Cold(Some(lease)))
    }

    /// Step 4: tell the client the run started, then run it in its own task, so that
    /// its REALTIME timer and output pumps never wait on this client: a slow or
    /// stalled reader delays only its own frames (and is dropped after its send
    /// timeout), never the enforcement of its limits. `None` when the client was gone
    /// before the start (the jail is given back).
    async fn run(
        &self,
        jail: Jail,
        spec: RunSpec,
        who: &Who,
        client: &mut impl Client,
    ) -> Option<Ran> {
        // From here on the jail's guard gives everything back on every path, by
        // `Cleanup::finish` or by its drop.
        let run_id = spec.run_id;
        if !client.send(Response::Started { run_id }).await {
            jail.abandon().await;
            return None;
        }
        let (limits, run_uid, warm, served) = (
            spec.limits,
            jail.outer_uid(&spec),
            jail.is_warm(),
            jail.served(),
        );
        let cancel = self.kill.child_token();
        let mut client_alive = true;
        let (out_tx, mut out_rx) = mpsc::channel::<Output>(OUTPUT_BUFFER);
        let mut task = tokio::spawn(jail.run(spec, out_tx, cancel.clone().cancelled_owned()));
        let joined = loop {
            tokio::select! {
                r = &mut task => break r,
                Some(chunk) = out_rx.recv() => {
                    if client_alive && !client.send(chunk.into()).await {
                        client_alive = false;
                        cancel.cancel();
                    }
                }
                closed = client.left(), if client_alive => {
                    // The client closed, or sent a frame mid-run, which the protocol
                    // forbids: cancel the run either way.
                    tracing::info!(run_id, peer_uid = who.peer_uid, slug = who.slug, closed, "client left mid-run; cancelling");
                    client_alive = false;
                    cancel.cancel();
                }
            }
        };
        while let Ok(chunk) = out_rx.try_recv() {
            if client_alive && !client.send(chunk.into()).await {
                client_alive = false;
            }
        }
        Some(Ran {
            limits,
            run_uid,
            warm,
            served,
            cancelled: cancel.is_cancelled(),
            client_alive,
            joined,
        })
    }

    /// The next run id (a warm jail's build takes one too).
    pub(crate) fn next_run_id(&self) -> u64 {
        self.next_run_id.fetch_add(1, Ordering::SeqCst)
    }

    /// The validated settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The request byte budget (the connections' framing spends it).
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Whether the admission queue can take one more request.
    pub fn has_room(&self) -> bool {
        self.admission.has_room()
    }

    /// Runs running and queued, and the connection cap.
    pub fn load(&self) -> Load {
        let cap = self.settings.max_connections;
        Load {
            max_connections: cap.get(),
            connections_fitted: cap.is_fitted(),
            ..self.admission.load()
        }
    }

    /// The warm pools as `status` shows them.
    pub fn pool_status(&self) -> BTreeMap<String, PoolStatus> {
        self.pools.status()
    }

    /// The warm pools.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// Where run cgroups are made.
    pub fn cgroups(&self) -> &Arc<Cgroups> {
        &self.cgroups
    }

    /// The per-run outside ids (production).
    pub fn uid_pool(&self) -> Option<&UidPool> {
        self.uid_pool.as_ref()
    }

    /// Admit no more runs: queued requests hear `ShuttingDown`.
    pub fn close(&self) {
        self.admission.close();
    }

    /// End every running run now (the shutdown grace is over).
    pub fn kill_all(&self) {
        self.kill.cancel();
    }
}

/// How a run's task ended: the run's result and the clean-up still to do.
type Ending = (Result<RunResult, RunError>, Cleanup);

/// A run that has ended (or whose task failed), with what its answer needs.
struct Ran {
    limits: codejail_protocol::Limits,
    run_uid: u32,
    warm: bool,
    /// `cold`, `warm` or `forked` ([`jail::Jail::served`]).
    served: &'static str,
    /// Whether the run was cancelled (its client left, or the broker is stopping).
    cancelled: bool,
    client_alive: bool,
    joined: Result<Ending, tokio::task::JoinError>,
}

/// Step 5: log the run's end and answer the client (if it is still there). Returns
/// whether it is, and the clean-up still to do.
async fn answer(who: &Who, ran: Ran, client: &mut impl Client) -> (bool, Option<Cleanup>) {
    let Who {
        run_id,
        peer_uid,
        ref slug,
        ref command,
    } = *who;
    let run_id = run_id.unwrap_or_default();
    let (limits, warm, served, run_uid) = (ran.limits, ran.warm, ran.served, ran.run_uid);
    let (result, cleanup) = match ran.joined {
        Ok(done) => done,
        Err(e) => {
            // The run task panicked: a bug, answered as an internal error.
            tracing::error!(run_id, slug, peer_uid, error = %e, "run task failed");
            let alive = ran.client_alive
                && client
                    .send(error_response(
                        ErrorKind::Internal,
                        "the run failed inside the broker",
                    ))
                    .await;
            return (alive, None);
        }
    };
    let alive = match result {
        Ok(result) => {
            let fin = result.finished;
            let outcome = if ran.cancelled && fin.limit_hit.is_none() {
                "cancelled"
            } else {
                "finished"
            };
            tracing::info!(
                run_id,
                slug,
                peer_uid,
                command,
                limits = %limits,
                outcome,
                status = fin.status,
                limit_hit = fin.limit_hit.as_deref().unwrap_or("-"),
                truncated = fin.truncated,
                wall_ms = fin.usage.wall_ms,
                cpu_user_ms = fin.usage.cpu_user_ms,
                cpu_sys_ms = fin.usage.cpu_sys_ms,
                max_rss_kib = fin.usage.max_rss_kib,
                peak_memory_bytes = fin.usage.peak_memory_bytes.unwrap_or(0),
                run_uid,
                warm,
                served,
                "run ended"
            );
            client.confined(result.landlock, result.seccomp_denied);
            ran.client_alive && client.send(Response::Finished(fin)).await
        }
        Err(e) => {
            tracing::error!(run_id, slug, peer_uid, command, limits = %limits, warm, served, outcome = "jail failed", error = %e, "run failed");
            ran.client_alive
                && client
                    .send(error_response(ErrorKind::JailFailed, e.to_string()))
                    .await
        }
    };
    (alive, Some(cleanup))
}

/// Log a refused request and tell its client; whether the client is still there.
async fn refuse(client: &mut impl Client, who: &Who, refusal: Refusal, what: &str) -> bool {
    tracing::warn!(
        run_id = who.run_id,
        peer_uid = who.peer_uid,
        slug = who.slug,
        kind = %refusal.kind,
        message = %refusal.message,
        "{what}"
    );
    client
        .send(error_response(refusal.kind, refusal.message))
        .await
}

/// The protocol's error response.
pub fn error_response(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error {
        kind,
        message: message.into(),
    }
}

impl From<Output> for Response {
    fn from(chunk: Output) -> Response {
        match chunk {
            Output::Stdout(b) => Response::Stdout(b),
            Output::Stderr(b) => Response::Stderr(b),
        }
    }
}
