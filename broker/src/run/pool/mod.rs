//! The warm pool: per command (`[pool.<command>]`), a few jails built ahead of any
//! request (`warm`), each with every layer of a cold run in place and its
//! interpreter started. A request takes one, hands it its files and code, and the jail
//! runs exactly that one run, then is destroyed like any other; the pool builds a
//! replacement in the background.
//!
//! - The bookkeeping is a state machine with no I/O ([`state`]); [`Pools`] holds it
//!   under a lock, and [`fill`] (start-up) and [`refill`] (a task) drive it.
//! - A warm jail holds its uid lease and its cgroup from its build on (the `Cleanup`
//!   guard, as a cold run's), so `run_ids.count` covers `max_running` plus every
//!   pool's size (checked at start-up). A taken jail keeps its place ([`InUse`]) until
//!   its run is cleaned up: the pool is refilled after each use, not while the run
//!   that took the jail still needs the CPU (a build started at the take cost that
//!   run 0.6 ms p50 when runs were 100 ms apart, 1.2 ms back to back, on two cores)
//!   and its uid.
//! - Builds never starve runs: at most one per core at a time, and none while a
//!   request waits for a slot.
//! - A request the pool cannot serve goes cold, never to an error: no warm jail ready,
//!   no code (a warm jail runs `jailed_code`), a VMEM or MEMORY limit too close to an
//!   idle warm jail's footprint ([`state::VMEM_MARGIN`], [`state::MEMORY_MARGIN`]: the
//!   preimports' mappings count against them), or a NOFILE above what the jail was
//!   built with.
//! - A warm jail older than the pool's `max_age_secs`, or whose stage has died, is
//!   retired instead of used.
//! - A pool with `fork_server` builds its jails by forking them from the command's
//!   zygote ([`zygote`]): the same jail, without an interpreter start per jail.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use codejail_protocol::{Limits, PoolStatus};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Runs;
use crate::config::Settings;

pub mod state;
mod warm;
pub mod zygote;

pub use state::Footprint;
use state::{Claim, PoolsState};
use warm::BuiltFor;
pub use warm::WarmJail;
pub use zygote::{Zygote, Zygotes};

/// How long builds in flight may take to finish at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the refill task looks at the pools without being woken.
const TICK: Duration = Duration::from_secs(1);

/// Every command's pool.
#[derive(Debug)]
pub struct Pools {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<PoolsState<WarmJail>>,
    /// Woken when a jail was taken or released, or a build ended.
    wake: Notify,
    /// The zygotes of the pools with `fork_server` (`zygote`).
    zygotes: Zygotes,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, PoolsState<WarmJail>> {
        // Every transition checks the invariants before it returns: a panic inside one
        // is a bug the tests catch, and what it left is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A taken warm jail's place in its pool, held by its run's `Cleanup` and given back
/// (the pool then builds a replacement) when that is done.
#[derive(Debug)]
pub struct InUse {
    pools: Arc<Inner>,
    command: String,
}

impl Drop for InUse {
    fn drop(&mut self) {
        if !self.pools.lock().released(&self.command) {
            tracing::error!(
                command = self.command,
                "a warm jail was released that its pool did not count in use"
            );
        }
        self.pools.wake.notify_one();
    }
}

impl Pools {
    /// The configured pools, empty.
    pub fn new(settings: &Settings) -> Pools {
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(_, hard)| hard)
            .unwrap_or(codejail_plan::DEFAULT_NOFILE);
        let builders = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let specs = settings
            .pools
            .iter()
            .map(|(command, spec)| (command.clone(), spec.clone()));
        Pools {
            inner: Arc::new(Inner {
                state: Mutex::new(PoolsState::new(specs, builders, nofile)),
                wake: Notify::new(),
                zygotes: Zygotes::default(),
            }),
        }
    }

    /// Whether any pool is configured.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().is_empty()
    }

    /// The pools as `status` shows them.
    pub fn status(&self) -> BTreeMap<String, PoolStatus> {
        let mut status = self.inner.lock().status();
        for (command, pool) in &mut status {
            if let Some(fork_server) = &mut pool.fork_server {
                *fork_server = self.inner.zygotes.status(command);
            }
        }
        status
    }

    /// The zygotes of the pools with a fork server.
    pub fn zygotes(&self) -> &Zygotes {
        &self.inner.zygotes
    }

    /// Forget the hits and misses so far (the start-up self-test's).
    pub fn reset_counts(&self) {
        self.inner.lock().reset_counts();
    }

    /// A warm jail for a run of `command` with `limits` (with code when `has_code`),
    /// if its pool has one that can serve it; it keeps its place in the pool until its
    /// run is cleaned up. Jails found dead or too old are retired on the way.
    pub fn take(&self, command: &str, limits: &Limits, has_code: bool) -> Option<WarmJail> {
        let taken = self.inner.lock().take(
            command,
            limits,
            has_code,
            Instant::now(),
            WarmJail::is_alive,
        );
        for jail in taken.stale {
            tokio::spawn(jail.retire());
        }
        self.inner.wake.notify_one();
        let mut jail = taken.jail?;
        jail.hold(InUse {
            pools: self.inner.clone(),
            command: command.to_string(),
        });
        Some(jail)
    }

    /// After [`take`](Pools::take) found none: a jail forked now for a run of
    /// `command` with `limits`, from the command's running zygote, when its pool has a
    /// fork server and the run could have taken a pooled jail (`PoolsState::fork_now`).
    /// The jail is the run's alone, as a cold one is: no place in the pool. `None`
    /// (the run goes cold) when no zygote runs (one is starting, or the pool has no
    /// fork server), the run does not fit, or the fork fails.
    pub async fn fork_now(
        &self,
        runs: &Runs,
        command: &str,
        limits: &Limits,
        has_code: bool,
    ) -> Option<WarmJail> {
        let spec = self.inner.lock().fork_now(command, limits, has_code)?;
        // A fork of the running zygote is taken only for a run that may have one.
        let Some(zygote) = self.inner.zygotes.reserve(command) else {
            self.inner.lock().fork_failed(command);
            return None;
        };
        match warm::build(runs, command, &spec, BuiltFor::Run(zygote)).await {
            Ok((jail, _)) => Some(jail),
            Err(e) => {
                self.inner.lock().fork_failed(command);
                tracing::warn!(command, error = %e, "no jail could be forked for the run; it runs cold");
                None
            }
        }
    }

    fn claim_build(&self) -> Option<Claim> {
        self.inner.lock().claim_build(Instant::now())
    }

    /// Build the claimed jail and put it in its pool; the error, if it failed.
    async fn build(&self, runs: &Runs, claim: Claim) -> Result<(), String> {
        let result = warm::build(runs, &claim.command, &claim.spec, BuiltFor::Pool).await;
        let now = Instant::now();
        let outcome = match result {
            Ok((jail, footprint)) => {
                let unwanted = self
                    .inner
                    .lock()
                    .built(&claim.command, jail, footprint, now);
                if let Some(jail) = unwanted {
                    jail.retire().await;
                }
                Ok(())
            }
            Err(e) => {
                let wait = self.inner.lock().failed(&claim.command, now);
                tracing::error!(command = claim.command, error = %e, retry_in = ?wait, "warm jail build failed; runs go cold meanwhile");
                Err(format!("warm pool of {}: {e}", claim.command))
            }
        };
        self.inner.wake.notify_one();
        outcome
    }

    /// Retire the jails older than their pool's maximum age.
    fn retire_expired(&self, tasks: &mut JoinSet<()>) {
        let expired = self.inner.lock().expire(Instant::now());
        let mut by_command: BTreeMap<&str, usize> = BTreeMap::new();
        for (command, _) in &expired {
            *by_command.entry(command).or_default() += 1;
        }
        for (command, retired) in by_command {
            tracing::info!(
                command,
                retired,
                "warm jails retired unused: older than the pool's max_age_secs"
            );
        }
        for (_, jail) in expired {
            tasks.spawn(jail.retire());
        }
    }

    /// Shut the pools down and retire every warm jail (a build still in flight retires
    /// its jail when it ends).
    pub async fn shutdown(&self) {
        let all = self.inner.lock().shutdown();
        for jail in all {
            jail.retire().await;
        }
        self.inner.zygotes.stop().await;
    }
}

/// Fill every pool to its size before serving, one build at a time (a failed build
/// fails start-up: the pool's configuration or the interpreter's hook is wrong).
pub async fn fill(runs: &Runs) -> Result<(), String> {
    let pools = runs.pools();
    while let Some(claim) = pools.claim_build() {
        pools.build(runs, claim).await?;
    }
    Ok(())
}

/// Keep the pools full until `stop`: build replacements (one per core at most, none
/// while a request waits for a slot), retire jails past their maximum age; at `stop`
/// retire every warm jail.
pub async fn refill(runs: Arc<Runs>, stop: CancellationToken) {
    let mut tasks = JoinSet::new();
    let pools = runs.pools();
    loop {
        pools.retire_expired(&mut tasks);
        while runs.load().queued == 0 {
            let Some(claim) = pools.claim_build() else {
                break;
            };
            let runs = runs.clone();
            tasks.spawn(async move {
                // Logged by `build`; the pool waits out the failure.
                let _ = runs.pools().build(&runs, claim).await;
            });
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = pools.inner.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // No build is claimed from now on; builds in flight finish (briefly: a build takes
    // tens of milliseconds) and retire their jails, so that each one's cgroup and uid
    // are given back properly; one that hangs is dropped after the grace (its guard's
    // drop then kills it and tries once to remove its cgroup; the next start-up sweeps
    // the rest).
    pools.shutdown().await;
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("warm jail builds still running at shutdown; dropped");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
