//! The warm pool: per command (`[pool.<command>]`), a few jails built ahead of any
//! request, each with every layer of a cold run in place and its interpreter started
//! (and the preimports imported), waiting in its start-up hook (`jail/src/warm.rs`).
//! A request takes one, hands it its files and code, and the jail runs exactly that
//! one run, then is destroyed like any other; the pool builds a replacement in the
//! background.
//!
//! - A warm jail holds its uid lease and its cgroup from its build on (the
//!   [`Cleanup`] guard, as a cold run's), so `run_ids.count` covers `max_running`
//!   plus every pool's size (checked at start-up).
//! - Builds never starve runs: at most one per core at a time, and none while a
//!   request waits for a slot.
//! - A request the pool cannot serve goes cold, never to an error: no warm jail ready,
//!   no code (a warm jail runs `jailed_code`), a VMEM or MEMORY limit too close to an
//!   idle warm jail's footprint ([`VMEM_MARGIN`], [`MEMORY_MARGIN`]: the preimports'
//!   mappings count against them), or a NOFILE above what the jail was built with.
//! - A warm jail older than the pool's `max_age_secs`, or whose stage has died, is
//!   retired instead of used.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codejail_protocol::{LimitName, Limits, PoolStatus};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{planning, Cleanup, Output, Reports, RunError, RunResult, RunSpec, Stage};
use crate::config::{PoolSpec, Settings};
use crate::server::Shared;
use codejail_plan::{Achieved, HandOver, RunLimits, StageReport, WarmPlan};

/// How long a warm jail may take to be ready (interpreter started, preimports
/// imported; matplotlib's first import builds a font cache).
const BUILD_TIMEOUT: Duration = Duration::from_secs(60);
/// VMEM a request needs above an idle warm jail's address space to be served warm.
pub const VMEM_MARGIN: u64 = 64 << 20;
/// MEMORY a request needs above an idle warm jail's cgroup memory to be served warm.
pub const MEMORY_MARGIN: u64 = 32 << 20;
/// Wait after a failed build, doubled per failure in a row up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long builds in flight may take to finish at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the refill task looks at the pools without being woken.
const TICK: Duration = Duration::from_secs(1);

/// What an idle warm jail holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Resident memory of its interpreter, KiB.
    pub rss_kib: u64,
    /// Address space of its interpreter, bytes (what RLIMIT_AS counts).
    pub vm_bytes: u64,
    /// Memory its cgroup holds, bytes (`None` without a memory cgroup).
    pub memory_bytes: Option<u64>,
}

/// A built jail waiting for its one run.
#[derive(Debug)]
pub struct WarmJail {
    stage: Stage,
    cleanup: Cleanup,
    /// The run directory as the program sees it.
    workdir: String,
    /// The argv up to `jailed_code`, whose length the request's argv starts after.
    script_argv: usize,
    outer_uid: u32,
    built: Instant,
    landlock: Option<Achieved>,
    seccomp_denied: Option<u32>,
    footprint: Footprint,
}

impl WarmJail {
    /// The outside uid its run has.
    pub fn outer_uid(&self) -> u32 {
        self.outer_uid
    }

    /// Run `spec` (a cold run's spec of the request) in this jail: the cgroup gets the
    /// request's caps, the init gets the files, code, arguments and limits, and the run
    /// is supervised from the hand-over on as a cold one is. `held` (the request's
    /// bytes) is given back once the hand-over is written.
    pub async fn run(
        self,
        mut spec: RunSpec,
        out: mpsc::Sender<Output>,
        cancel: impl std::future::Future<Output = ()>,
    ) -> (Result<RunResult, RunError>, Cleanup) {
        let WarmJail {
            mut stage,
            mut cleanup,
            workdir,
            script_argv,
            landlock,
            seccomp_denied,
            ..
        } = self;
        let caps = spec.cgroups.limits_for(
            spec.limits.effective(LimitName::Memory),
            spec.limits.effective(LimitName::Nproc),
        );
        if let Some(Err(e)) = cleanup.cgroup().map(|cg| cg.set_limits(caps)) {
            return (Err(RunError::Cgroup(e)), cleanup);
        }
        // The request's payload moves into the hand-over, its arguments too.
        let plan = &mut spec.plan;
        let args = if script_argv <= plan.argv.len() {
            plan.argv.split_off(script_argv)
        } else {
            Vec::new()
        };
        let handover = HandOver {
            code: plan.code.take().unwrap_or_default(),
            files: std::mem::take(&mut plan.files),
            extra_files: std::mem::take(&mut plan.extra_files),
            args,
            limits: plan.limits,
        };
        // REALTIME and the reported wall time count from the hand-over.
        let started = Instant::now();
        if let Err(e) = stage.restamp_stdio() {
            return (
                Err(RunError::Warm(format!(
                    "setting the times of the run's stdio pipes: {e}"
                ))),
                cleanup,
            );
        }
        let held = spec.held.take();
        let sent = async {
            // The frame is a second copy of the hand-over until that is dropped: it
            // takes the budget's copy room meanwhile.
            let second = match &held {
                Some(h) => Some(h.second_copy().await),
                None => None,
            };
            let frame = codejail_plan::encode_frame(&handover).map_err(RunError::Pipes)?;
            drop(handover);
            drop(second);
            let mut pipe = stage.handover.take().ok_or_else(|| {
                RunError::Protocol("a warm jail without its hand-over pipe".into())
            })?;
            pipe.write_all(&frame)
                .await
                .map_err(|e| RunError::Protocol(format!("sending the hand-over: {e}")))
        };
        let sent = sent.await;
        drop(held);
        if let Err(e) = sent {
            return (Err(e), cleanup);
        }
        spec.workdir = workdir;
        let supervision = spec.supervision();
        let seen = Reports {
            landlock,
            seccomp_denied,
            ..Reports::default()
        };
        let result = stage
            .supervise(&supervision, seen, started, &mut cleanup, out, cancel)
            .await;
        (result, cleanup)
    }

    /// Destroy an unused warm jail: its stage is killed (the init dies with it, and the
    /// whole run with the init), then its cgroup and uid are given back.
    pub async fn retire(self) {
        let WarmJail { stage, cleanup, .. } = self;
        stage.kill().await;
        cleanup.finish().await;
    }
}

/// A warm jail taken for a run, counted against its pool's size until the run's
/// [`Cleanup`] is done: the pool is refilled after each use, not while the run that
/// took the jail still needs the CPU (a build started at the take cost that run 0.6 ms
/// p50 when runs were 100 ms apart, 1.2 ms back to back, on two cores) and its uid.
#[derive(Debug)]
pub struct InUse {
    count: Arc<AtomicU32>,
    wake: Arc<Notify>,
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// One command's pool.
#[derive(Debug)]
struct Pool {
    spec: PoolSpec,
    ready: VecDeque<WarmJail>,
    building: u32,
    /// Taken jails whose runs are not cleaned up yet ([`InUse`]).
    in_use: Arc<AtomicU32>,
    hits: u64,
    misses: u64,
    footprint: Option<Footprint>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// Every command's pool.
#[derive(Debug)]
pub struct Pools {
    pools: Mutex<BTreeMap<String, Pool>>,
    /// Woken when a jail was taken or a build or a warm run ended.
    wake: Arc<Notify>,
    /// The NOFILE a warm jail is built with (the broker's own hard limit).
    nofile: u64,
    /// Builds at once, at most (one per core).
    builders: u32,
}

impl Pools {
    /// The configured pools, empty.
    pub fn new(settings: &Settings) -> Pools {
        let pools = settings
            .pools
            .iter()
            .map(|(command, spec)| {
                let pool = Pool {
                    spec: spec.clone(),
                    ready: VecDeque::new(),
                    building: 0,
                    in_use: Arc::new(AtomicU32::new(0)),
                    hits: 0,
                    misses: 0,
                    footprint: None,
                    failures: 0,
                    retry_at: None,
                };
                (command.clone(), pool)
            })
            .collect();
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(_, hard)| hard)
            .unwrap_or(codejail_plan::DEFAULT_NOFILE);
        let builders = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Pools {
            pools: Mutex::new(pools),
            wake: Arc::new(Notify::new()),
            nofile,
            builders,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pool>> {
        // A panic while holding the lock leaves plain counters and queues: still usable.
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget the hits and misses so far (the start-up self-test's).
    pub fn reset_counts(&self) {
        for pool in self.lock().values_mut() {
            pool.hits = 0;
            pool.misses = 0;
        }
    }

    /// Whether any pool is configured.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The pools as `status` shows them.
    pub fn status(&self) -> BTreeMap<String, PoolStatus> {
        self.lock()
            .iter()
            .map(|(command, p)| {
                let footprint = p.footprint.unwrap_or_default();
                let status = PoolStatus {
                    size: p.spec.size,
                    ready: p.ready.len() as u32,
                    preimport: p.spec.preimport.clone(),
                    hits: p.hits,
                    misses: p.misses,
                    idle_rss_kib: footprint.rss_kib,
                    idle_memory_bytes: footprint.memory_bytes,
                };
                (command.clone(), status)
            })
            .collect()
    }

    /// A warm jail for a run of `command` with `limits` (with code when `has_code`),
    /// if its pool has one that can serve it. Counts a hit or a miss for pooled
    /// commands; jails found dead or too old are retired on the way.
    pub fn take(&self, command: &str, limits: &Limits, has_code: bool) -> Option<WarmJail> {
        let (jail, stale) = {
            let mut pools = self.lock();
            let pool = pools.get_mut(command)?;
            let mut stale = Vec::new();
            let mut found = None;
            if has_code {
                while let Some(mut jail) = pool.ready.pop_front() {
                    if jail.built.elapsed() > pool.spec.max_age || !jail.stage.is_alive() {
                        stale.push(jail);
                        continue;
                    }
                    if !fits(&jail.footprint, limits, self.nofile) {
                        pool.ready.push_front(jail);
                        break;
                    }
                    pool.in_use.fetch_add(1, Ordering::SeqCst);
                    jail.cleanup.hold(InUse {
                        count: pool.in_use.clone(),
                        wake: self.wake.clone(),
                    });
                    found = Some(jail);
                    break;
                }
            }
            match found {
                Some(_) => pool.hits += 1,
                None => pool.misses += 1,
            }
            (found, stale)
        };
        for jail in stale {
            tokio::spawn(jail.retire());
        }
        self.wake.notify_one();
        jail
    }

    /// Claim the build of one jail for the pool that lacks the most, if a builder is
    /// free and no pool is waiting out a failure.
    fn claim_build(&self) -> Option<(String, PoolSpec)> {
        let mut pools = self.lock();
        let building: u32 = pools.values().map(|p| p.building).sum();
        if building >= self.builders {
            return None;
        }
        let now = Instant::now();
        let (command, pool) = pools
            .iter_mut()
            .filter(|(_, p)| p.retry_at.is_none_or(|t| t <= now))
            .map(|(c, p)| {
                let held = p.ready.len() as u32 + p.building + p.in_use.load(Ordering::SeqCst);
                let missing = p.spec.size.saturating_sub(held);
                (missing, c, p)
            })
            .filter(|(missing, _, _)| *missing > 0)
            .max_by_key(|(missing, _, _)| *missing)
            .map(|(_, c, p)| (c.clone(), p))?;
        pool.building += 1;
        Some((command, pool.spec.clone()))
    }

    /// A claimed build has ended.
    fn built(&self, command: &str, result: Result<WarmJail, RunError>) {
        let mut pools = self.lock();
        let Some(pool) = pools.get_mut(command) else {
            return;
        };
        pool.building = pool.building.saturating_sub(1);
        match result {
            Ok(jail) => {
                pool.failures = 0;
                pool.retry_at = None;
                pool.footprint = Some(jail.footprint);
                pool.ready.push_back(jail);
            }
            Err(e) => {
                pool.failures = pool.failures.saturating_add(1);
                let wait = RETRY_FIRST
                    .saturating_mul(1 << pool.failures.min(6))
                    .min(RETRY_MAX);
                pool.retry_at = Some(Instant::now() + wait);
                tracing::error!(command, error = %e, retry_in = ?wait, "warm jail build failed; runs go cold meanwhile");
            }
        }
        drop(pools);
        self.wake.notify_one();
    }

    /// Take the jails older than their pool's maximum age, and with `all`, every one.
    fn take_expired(&self, all: bool) -> Vec<WarmJail> {
        let mut pools = self.lock();
        let mut expired = Vec::new();
        for (command, pool) in pools.iter_mut() {
            let max_age = pool.spec.max_age;
            let (old, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut pool.ready)
                .into_iter()
                .partition(|j| all || j.built.elapsed() > max_age);
            pool.ready = keep;
            if !all && !old.is_empty() {
                tracing::info!(
                    command,
                    retired = old.len(),
                    ?max_age,
                    "warm jails retired unused: older than the pool's max_age_secs"
                );
            }
            expired.extend(old);
        }
        expired
    }
}

/// Whether a warm jail with this idle footprint can run under `limits` as a cold run
/// would (its NOFILE built at `nofile`).
fn fits(footprint: &Footprint, limits: &Limits, nofile: u64) -> bool {
    let room = |limit: Option<u64>, held: u64, margin: u64| {
        limit.is_none_or(|limit| limit >= held.saturating_add(margin))
    };
    // An address space that could not be measured fits no VMEM limit: the run then
    // goes cold rather than risk failing where a cold one would not.
    let vmem = limits.effective(LimitName::Vmem);
    let vmem_fits = match footprint.vm_bytes {
        0 => vmem.is_none(),
        held => room(vmem, held, VMEM_MARGIN),
    };
    // Without a memory cgroup MEMORY is not enforced, so nothing to fit.
    let memory_fits = footprint
        .memory_bytes
        .is_none_or(|held| room(limits.effective(LimitName::Memory), held, MEMORY_MARGIN));
    vmem_fits && memory_fits && limits.get(LimitName::Nofile) <= nofile
}

/// The limits a warm jail is built with: none but NOFILE at the broker's own hard
/// limit and no core dumps; the hand-over lowers each to the request's (a limit can
/// only be lowered, never raised).
fn build_limits() -> RunLimits {
    RunLimits {
        cpu_secs: None,
        vmem_bytes: None,
        fsize_bytes: u64::MAX,
        nproc: None,
        nofile: u64::MAX,
        tmp_bytes: None,
        tmp_inodes: None,
    }
}

/// Build one warm jail of `command`: lease a uid, make its cgroup, spawn its stage with
/// a warm plan, and wait until its interpreter reports ready.
pub async fn build(shared: &Shared, command: &str, spec: &PoolSpec) -> Result<WarmJail, RunError> {
    let settings = &shared.settings;
    let cmd = settings
        .commands
        .get(command)
        .ok_or_else(|| RunError::Protocol(format!("no command {command:?}")))?;
    let run_id = shared
        .next_run_id
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let workdir_name = planning::workdir_name().map_err(|e| {
        RunError::Protocol(format!("no randomness for the run's directory name: {e}"))
    })?;
    let argv = planning::command_argv(cmd, true);
    let script_argv = argv.len();
    let mut plan = planning::command_plan(settings, cmd, argv, build_limits(), workdir_name);
    plan.warm = Some(WarmPlan {
        preimport: spec.preimport.clone(),
    });
    let workdir = planning::program_workdir(&plan.workdir_name);
    let (identity, lease) = match &shared.uid_pool {
        Some(pool) => {
            let lease = pool.lease().ok_or_else(|| {
                RunError::Protocol(format!(
                    "no free run uid in {} for a warm jail",
                    pool.range()
                ))
            })?;
            (lease.identity(), Some(lease))
        }
        None => (settings.identity, None),
    };
    let caps = shared.cgroups.limits_for(None, None);
    let cgroup = shared
        .cgroups
        .create_run(run_id, caps)
        .map_err(RunError::Cgroup)?;
    let cleanup = Cleanup::new(run_id, cgroup, lease);
    let mut stage = match Stage::spawn(
        &settings.jail_stage,
        &mut plan,
        identity,
        cleanup.cgroup(),
        None,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            cleanup.finish().await;
            return Err(e);
        }
    };
    let (mut landlock, mut seccomp_denied) = (None, None);
    let ready = tokio::time::timeout(BUILD_TIMEOUT, async {
        loop {
            match stage.next_report().await? {
                Some(StageReport::Confined {
                    landlock: l,
                    seccomp_denied: s,
                }) => {
                    landlock = Some(l);
                    seccomp_denied = Some(s);
                }
                Some(StageReport::Ready) => return Ok(()),
                Some(StageReport::Failed { step, message }) => {
                    return Err(RunError::Stage { step, message })
                }
                Some(StageReport::Exited {
                    exit_code, signal, ..
                }) => {
                    return Err(RunError::Warm(format!(
                        "its interpreter ended (exit code {exit_code:?}, signal {signal:?}) before it was ready: is codejail's start-up hook installed in its site-packages (scripts/setup-sandbox-venv.sh)?"
                    )))
                }
                Some(other) => {
                    return Err(RunError::Protocol(format!(
                        "a warm jail reported {other:?} before it was ready"
                    )))
                }
                None => {
                    return Err(RunError::Protocol(
                        "the stage ended before its warm jail was ready".into(),
                    ))
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(RunError::Protocol(format!(
            "the warm jail was not ready within {BUILD_TIMEOUT:?}"
        )))
    });
    let stderr = stage.take_pending_output();
    if let Err(e) = ready {
        stage.kill().await;
        cleanup.finish().await;
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = stderr.trim();
        return Err(if stderr.is_empty() {
            e
        } else {
            let e = match e {
                RunError::Warm(message) => message,
                other => other.to_string(),
            };
            RunError::Warm(format!("{e}; the interpreter's output: {stderr}"))
        });
    }
    if !stderr.is_empty() {
        tracing::debug!(
            command,
            bytes = stderr.len(),
            "output of a warm jail's start-up discarded"
        );
    }
    let footprint = measure(stage.pid(), &cleanup);
    Ok(WarmJail {
        stage,
        cleanup,
        workdir,
        script_argv,
        outer_uid: identity.outer_uid,
        built: Instant::now(),
        landlock,
        seccomp_denied,
        footprint,
    })
}

/// An idle warm jail's footprint: its interpreter's (the stage's grandchild, found in
/// the host's `/proc`) resident and virtual size, and its cgroup's memory.
fn measure(stage_pid: u32, cleanup: &Cleanup) -> Footprint {
    let children = |pid: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let program = children(stage_pid)
        .first()
        .and_then(|init| children(*init).first().copied());
    let status = program
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .unwrap_or_default();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Footprint {
        rss_kib: kib("VmRSS:"),
        vm_bytes: kib("VmSize:") * 1024,
        memory_bytes: cleanup.cgroup().and_then(|cg| cg.memory_current()),
    }
}

/// Fill every pool to its size before serving (a failed build fails start-up: the
/// pool's configuration or the interpreter's hook is wrong).
pub async fn fill(shared: &Shared) -> Result<(), String> {
    let pools: Vec<(String, PoolSpec)> = shared
        .settings
        .pools
        .iter()
        .map(|(c, s)| (c.clone(), s.clone()))
        .collect();
    for (command, spec) in pools {
        for _ in 0..spec.size {
            let jail = build(shared, &command, &spec)
                .await
                .map_err(|e| format!("warm pool of {command}: {e}"))?;
            let mut all = shared.pools.lock();
            if let Some(pool) = all.get_mut(&command) {
                pool.footprint = Some(jail.footprint);
                pool.ready.push_back(jail);
            }
        }
    }
    Ok(())
}

/// Keep the pools full until `stop`: build replacements (one per core at most, none
/// while a request waits for a slot), retire jails past their maximum age; at `stop`
/// retire every warm jail.
pub async fn refill(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tasks = JoinSet::new();
    loop {
        for jail in shared.pools.take_expired(false) {
            tasks.spawn(jail.retire());
        }
        while shared.admission.load().queued == 0 {
            let Some((command, spec)) = shared.pools.claim_build() else {
                break;
            };
            let s = shared.clone();
            tasks.spawn(async move {
                let result = build(&s, &command, &spec).await;
                s.pools.built(&command, result);
            });
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = shared.pools.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Builds in flight finish (briefly: a build takes tens of milliseconds) and their
    // jails are retired with the rest, so that each one's cgroup and uid are given
    // back properly; one that hangs is dropped after the grace (its guard's drop then
    // kills it and tries once to remove its cgroup; the next start-up sweeps the rest).
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("warm jail builds still running at shutdown; dropped");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    for jail in shared.pools.take_expired(true) {
        jail.retire().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pairs: &[(LimitName, u64)]) -> Limits {
        let mut l = Limits::default();
        for (name, value) in pairs {
            l.set(*name, *value);
        }
        l
    }

    #[test]
    fn a_request_fits_a_warm_jail_only_with_room_above_its_footprint() {
        let idle = Footprint {
            rss_kib: 25_000,
            vm_bytes: 100 << 20,
            memory_bytes: Some(10 << 20),
        };
        let nofile = 4096;
        assert!(fits(&idle, &limits(&[]), nofile));
        assert!(fits(
            &idle,
            &limits(&[(LimitName::Vmem, (100 << 20) + VMEM_MARGIN)]),
            nofile
        ));
        assert!(!fits(
            &idle,
            &limits(&[(LimitName::Vmem, (100 << 20) + VMEM_MARGIN - 1)]),
            nofile
        ));
        assert!(fits(
            &idle,
            &limits(&[(LimitName::Memory, (10 << 20) + MEMORY_MARGIN)]),
            nofile
        ));
        assert!(!fits(
            &idle,
            &limits(&[(LimitName::Memory, 20 << 20)]),
            nofile
        ));
        assert!(!fits(
            &idle,
            &limits(&[(LimitName::Nofile, nofile + 1)]),
            nofile
        ));
        // Unmeasured: no VMEM limit fits; no memory cgroup: MEMORY is not enforced.
        let unknown = Footprint {
            vm_bytes: 0,
            memory_bytes: None,
            ..idle
        };
        assert!(!fits(
            &unknown,
            &limits(&[(LimitName::Vmem, 1 << 40)]),
            nofile
        ));
        assert!(fits(
            &unknown,
            &limits(&[(LimitName::Memory, 1 << 20)]),
            nofile
        ));
    }
}
