//! The warm pools' bookkeeping as a state machine with no I/O: every pool's jails and
//! counts, and every transition, each a method taking the time it happens at. The
//! async side (`pool/mod.rs`) holds it under a lock and drives it; how a jail is built
//! (`pool/warm.rs`) is not its business: it is generic over the jail `J`.
//!
//! A warm jail is, in turn:
//!
//! | state    | counted in | enters by                | leaves by                            |
//! |----------|------------|--------------------------|--------------------------------------|
//! | building | `building` | [`PoolsState::claim_build`] | [`built`](PoolsState::built), [`failed`](PoolsState::failed) |
//! | ready    | `ready`    | `built`                  | [`take`](PoolsState::take) (to in use, or retired when dead or too old), [`expire`](PoolsState::expire), [`shutdown`](PoolsState::shutdown) |
//! | in use   | `in_use`   | `take`                   | [`released`](PoolsState::released), once its run is cleaned up |
//!
//! The invariants, checked by [`PoolsState::check`] after every transition (debug
//! builds) and in the unit tests:
//! - per pool, `ready + building + in_use <= size`: a pool never holds more jails (and
//!   so uids and cgroups) than its size, which start-up counted against the uid range;
//! - all pools together build at most `builders` jails at once (one per core);
//! - a pool waits out a failed build (`retry_at`) exactly while it has failures;
//! - once shut down, no jail is ready and no build is claimed.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use codejail_protocol::{LimitName, Limits, PoolStatus};

use crate::config::PoolSpec;

/// VMEM a request needs above an idle warm jail's address space to be served warm.
pub const VMEM_MARGIN: u64 = 64 << 20;
/// MEMORY a request needs above an idle warm jail's cgroup memory to be served warm.
pub const MEMORY_MARGIN: u64 = 32 << 20;
/// Wait after a failed build, doubled per failure in a row up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait after failed builds.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

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

/// A claimed build: the pool it is for and that pool's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The pool's command.
    pub command: String,
    /// Its settings (the preimports the builder needs).
    pub spec: PoolSpec,
}

/// What [`PoolsState::take`] found.
#[derive(Debug)]
pub struct Taken<J> {
    /// The jail for the run, now in use; `None` is a miss.
    pub jail: Option<J>,
    /// Jails found dead or too old on the way: no longer counted, to be retired.
    pub stale: Vec<J>,
}

/// A violated invariant (a bug in a transition).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("warm pool bookkeeping: {0}")]
pub struct Violation(String);

#[derive(Debug)]
struct Ready<J> {
    jail: J,
    built: Instant,
    footprint: Footprint,
}

#[derive(Debug)]
struct Pool<J> {
    spec: PoolSpec,
    ready: VecDeque<Ready<J>>,
    building: u32,
    /// Taken jails whose runs are not cleaned up yet.
    in_use: u32,
    hits: u64,
    misses: u64,
    /// Misses served by a jail forked for the run ([`PoolsState::fork_now`]).
    forked_now: u64,
    /// The last built jail's, shown in `status` and used by nothing else.
    footprint: Option<Footprint>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl<J> Pool<J> {
    fn held(&self) -> u32 {
        self.ready.len() as u32 + self.building + self.in_use
    }
}

/// Every command's pool.
#[derive(Debug)]
pub struct PoolsState<J> {
    pools: BTreeMap<String, Pool<J>>,
    /// Builds at once, at most, all pools together.
    builders: u32,
    /// The NOFILE a warm jail is built with.
    nofile: u64,
    shut_down: bool,
}

impl<J> PoolsState<J> {
    /// Empty pools of these specs; `builders` builds at once at most; jails built with
    /// a NOFILE of `nofile`.
    pub fn new(
        specs: impl IntoIterator<Item = (String, PoolSpec)>,
        builders: u32,
        nofile: u64,
    ) -> Self {
        let pools = specs
            .into_iter()
            .map(|(command, spec)| {
                let pool = Pool {
                    spec,
                    ready: VecDeque::new(),
                    building: 0,
                    in_use: 0,
                    hits: 0,
                    misses: 0,
                    forked_now: 0,
                    footprint: None,
                    failures: 0,
                    retry_at: None,
                };
                (command, pool)
            })
            .collect();
        PoolsState {
            pools,
            builders: builders.max(1),
            nofile,
            shut_down: false,
        }
    }

    /// Whether no pool is configured.
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// Claim the build of one jail for the pool that lacks the most, if a builder is
    /// free, that pool is not waiting out a failure, and the pools are not shut down.
    pub fn claim_build(&mut self, now: Instant) -> Option<Claim> {
        if self.shut_down {
            return None;
        }
        let building: u32 = self.pools.values().map(|p| p.building).sum();
        if building >= self.builders {
            return None;
        }
        let (command, pool) = self
            .pools
            .iter_mut()
            .filter(|(_, p)| p.retry_at.is_none_or(|t| t <= now))
            .map(|(c, p)| (p.spec.size.saturating_sub(p.held()), c, p))
            .filter(|(missing, _, _)| *missing > 0)
            .max_by_key(|(missing, _, _)| *missing)
            .map(|(_, c, p)| (c.clone(), p))?;
        pool.building += 1;
        let claim = Claim {
            command,
            spec: pool.spec.clone(),
        };
        self.checked();
        Some(claim)
    }

    /// A claimed build of `command`'s pool ended with `jail`, now ready. The jail comes
    /// back when it is not wanted (the pools were shut down meanwhile): retire it.
    pub fn built(
        &mut self,
        command: &str,
        jail: J,
        footprint: Footprint,
        now: Instant,
    ) -> Option<J> {
        let shut_down = self.shut_down;
        let Some(pool) = self.pools.get_mut(command) else {
            return Some(jail);
        };
        pool.building = pool.building.saturating_sub(1);
        pool.failures = 0;
        pool.retry_at = None;
        pool.footprint = Some(footprint);
        let unwanted = if shut_down {
            Some(jail)
        } else {
            pool.ready.push_back(Ready {
                jail,
                built: now,
                footprint,
            });
            None
        };
        self.checked();
        unwanted
    }

    /// A claimed build of `command`'s pool failed: the pool waits before its next
    /// build, twice as long per failure in a row. Returns the wait.
    pub fn failed(&mut self, command: &str, now: Instant) -> Duration {
        let Some(pool) = self.pools.get_mut(command) else {
            return Duration::ZERO;
        };
        pool.building = pool.building.saturating_sub(1);
        pool.failures = pool.failures.saturating_add(1);
        let wait = RETRY_FIRST
            .saturating_mul(1 << pool.failures.min(6))
            .min(RETRY_MAX);
        pool.retry_at = Some(now + wait);
        self.checked();
        wait
    }

    /// A warm jail for a run of `command` with `limits` (with code when `has_code`),
    /// if its pool has one that can serve it: counted in use until [`released`]. Counts
    /// a hit or a miss for pooled commands. Jails older than the pool's maximum age, or
    /// that `alive` says are dead, are taken out on the way, to be retired.
    ///
    /// [`released`]: PoolsState::released
    pub fn take(
        &mut self,
        command: &str,
        limits: &Limits,
        has_code: bool,
        now: Instant,
        mut alive: impl FnMut(&mut J) -> bool,
    ) -> Taken<J> {
        let nofile = self.nofile;
        let mut taken = Taken {
            jail: None,
            stale: Vec::new(),
        };
        let Some(pool) = self.pools.get_mut(command) else {
            return taken;
        };
        if has_code {
            while let Some(mut ready) = pool.ready.pop_front() {
                if now.saturating_duration_since(ready.built) > pool.spec.max_age
                    || !alive(&mut ready.jail)
                {
                    taken.stale.push(ready.jail);
                    continue;
                }
                if !fits(&ready.footprint, limits, nofile) {
                    pool.ready.push_front(ready);
                    break;
                }
                pool.in_use += 1;
                taken.jail = Some(ready.jail);
                break;
            }
        }
        match taken.jail {
            Some(_) => pool.hits += 1,
            None => pool.misses += 1,
        }
        self.checked();
        taken
    }

    /// After a miss of `command`'s pool ([`take`](PoolsState::take) found no jail): the
    /// pool's spec when a jail may be forked for this run instead of going cold. Only a
    /// `fork_server` pool, for a run with code, whose last build succeeded and whose
    /// last jail's footprint fits `limits`. The jail is not one of the pool's (it is
    /// the run's, as a cold jail is: its uid and cgroup count against the run's slot),
    /// so the pool's invariants do not see it; the miss is counted as `forked_now`
    /// instead, or again as a miss by [`fork_failed`](PoolsState::fork_failed).
    pub fn fork_now(&mut self, command: &str, limits: &Limits, has_code: bool) -> Option<PoolSpec> {
        let nofile = self.nofile;
        if self.shut_down || !has_code {
            return None;
        }
        let pool = self.pools.get_mut(command)?;
        let footprint = pool.footprint?;
        if !pool.spec.fork_server || pool.failures > 0 || !fits(&footprint, limits, nofile) {
            return None;
        }
        pool.misses = pool.misses.saturating_sub(1);
        pool.forked_now += 1;
        Some(pool.spec.clone())
    }

    /// A jail [`fork_now`](PoolsState::fork_now) allowed could not be forked: the run
    /// goes cold, a miss after all.
    pub fn fork_failed(&mut self, command: &str) {
        if let Some(pool) = self.pools.get_mut(command) {
            pool.forked_now = pool.forked_now.saturating_sub(1);
            pool.misses += 1;
        }
    }

    /// A taken jail's run of `command` is cleaned up: its place is free for a
    /// replacement. `false` when none of the pool's jails was in use (a bug).
    pub fn released(&mut self, command: &str) -> bool {
        let Some(pool) = self.pools.get_mut(command) else {
            return false;
        };
        let was_in_use = pool.in_use > 0;
        pool.in_use = pool.in_use.saturating_sub(1);
        self.checked();
        was_in_use
    }

    /// Take out the ready jails older than their pool's maximum age, to be retired
    /// (with their pool's command).
    pub fn expire(&mut self, now: Instant) -> Vec<(String, J)> {
        let mut expired = Vec::new();
        for (command, pool) in &mut self.pools {
            let max_age = pool.spec.max_age;
            let (old, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut pool.ready)
                .into_iter()
                .partition(|r| now.saturating_duration_since(r.built) > max_age);
            pool.ready = keep;
            expired.extend(old.into_iter().map(|r| (command.clone(), r.jail)));
        }
        self.checked();
        expired
    }

    /// Shut the pools down: every ready jail is taken out, to be retired, and no build
    /// is claimed from now on (one in flight comes back from [`built`]).
    ///
    /// [`built`]: PoolsState::built
    pub fn shutdown(&mut self) -> Vec<J> {
        self.shut_down = true;
        let all = self
            .pools
            .values_mut()
            .flat_map(|p| std::mem::take(&mut p.ready))
            .map(|r| r.jail)
            .collect();
        self.checked();
        all
    }

    /// Forget the hits and misses so far (the start-up self-test's).
    pub fn reset_counts(&mut self) {
        for pool in self.pools.values_mut() {
            pool.hits = 0;
            pool.misses = 0;
            pool.forked_now = 0;
        }
    }

    /// The pools as `status` shows them.
    pub fn status(&self) -> BTreeMap<String, PoolStatus> {
        self.pools
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
                    forked_now: p.forked_now,
                    // The zygote's side is the driver's to fill in (`Pools::status`).
                    fork_server: p.spec.fork_server.then(Default::default),
                };
                (command.clone(), status)
            })
            .collect()
    }

    /// The invariants (module docs), all of them.
    pub fn check(&self) -> Result<(), Violation> {
        let mut building = 0;
        for (command, p) in &self.pools {
            if p.held() > p.spec.size {
                return Err(Violation(format!(
                    "pool {command} holds {} ready + {} building + {} in use, over its size {}",
                    p.ready.len(),
                    p.building,
                    p.in_use,
                    p.spec.size
                )));
            }
            if p.retry_at.is_some() != (p.failures > 0) {
                return Err(Violation(format!(
                    "pool {command} has {} failures but retry_at {:?}",
                    p.failures, p.retry_at
                )));
            }
            if self.shut_down && (!p.ready.is_empty()) {
                return Err(Violation(format!(
                    "pool {command} has ready jails after shutdown"
                )));
            }
            building += p.building;
        }
        if building > self.builders {
            return Err(Violation(format!(
                "{building} builds at once, over {} builders",
                self.builders
            )));
        }
        Ok(())
    }

    /// After a transition: the invariants hold. A violation is a bug in a transition:
    /// it fails the tests (debug builds panic); a release build logs it.
    fn checked(&self) {
        if let Err(v) = self.check() {
            debug_assert!(false, "{v}");
            tracing::error!(%v, "warm pool invariant violated");
        }
    }
}

/// Whether a warm jail with this idle footprint can run under `limits` as a cold run
/// would (its NOFILE built at `nofile`).
pub fn fits(footprint: &Footprint, limits: &Limits, nofile: u64) -> bool {
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

#[cfg(test)]
mod tests;
