//! A warm jail: built ahead of any request with every layer of a cold run in place
//! and its interpreter started (and the preimports imported), waiting in its start-up
//! hook (`jail/src/warm.rs`); then handed one request, run and destroyed like a cold
//! run. How it is built (today a fresh interpreter start in a jail of its own) is this
//! module's business only: the pool's bookkeeping (`state.rs`) does not depend on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use codejail_plan::{Achieved, HandOver, RunLimits, StageReport, WarmPlan};
use codejail_protocol::LimitName;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::state::Footprint;
use super::{InUse, Zygote};
use crate::config::PoolSpec;
use crate::run::cgroup::{PIDS_SHARED, PIDS_SHARED_FORKED};
use crate::run::{
    planning, Cleanup, HandOverError, Output, Reports, RunError, RunResult, RunSpec, Runs, Stage,
    WarmError,
};

/// How long a warm jail may take to be ready (interpreter started, preimports
/// imported; matplotlib's first import builds a font cache).
const BUILD_TIMEOUT: Duration = Duration::from_secs(60);

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
    landlock: Option<Achieved>,
    seccomp_denied: Option<u32>,
    /// Whether it was forked from a zygote.
    forked: bool,
}

impl WarmJail {
    /// The outside uid its run has.
    pub fn outer_uid(&self) -> u32 {
        self.outer_uid
    }

    /// Whether it was forked from a zygote (`fork_server`).
    pub fn is_forked(&self) -> bool {
        self.forked
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
            forked,
            ..
        } = self;
        let caps = spec.cgroups.limits_for(
            spec.limits.effective(LimitName::Memory),
            spec.limits.effective(LimitName::Nproc),
            if forked {
                PIDS_SHARED_FORKED
            } else {
                PIDS_SHARED
            },
        );
        if let Some(Err(e)) = cleanup.cgroup().map(|cg| cg.set_limits(caps)) {
            return (Err(RunError::HandOver(HandOverError::Caps(e))), cleanup);
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
            return (Err(RunError::HandOver(HandOverError::Restamp(e))), cleanup);
        }
        let held = spec.held.take();
        let sent = async {
            // The frame is a second copy of the hand-over until that is dropped: it
            // takes the budget's copy room meanwhile.
            let second = match &held {
                Some(h) => Some(h.second_copy().await),
                None => None,
            };
            let frame = codejail_plan::encode_frame(&handover).map_err(HandOverError::Send)?;
            drop(handover);
            drop(second);
            let mut pipe = stage.handover.take().ok_or(HandOverError::NoPipe)?;
            pipe.write_all(&frame).await.map_err(HandOverError::Send)
        };
        let sent = sent.await;
        drop(held);
        if let Err(e) = sent {
            return (Err(RunError::HandOver(e)), cleanup);
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

    /// Whether its stage still runs (one can die while it waits).
    pub(super) fn is_alive(&mut self) -> bool {
        self.stage.is_alive()
    }

    /// Hold `in_use` (its place in the pool) until its run is cleaned up.
    pub(super) fn hold(&mut self, in_use: InUse) {
        self.cleanup.hold(in_use);
    }

    /// Destroy an unused warm jail: its stage is killed (the init dies with it, and the
    /// whole run with the init; a forked jail's "stage" is its init), then its cgroup
    /// and uid are given back.
    pub async fn retire(self) {
        let WarmJail { stage, cleanup, .. } = self;
        stage.kill().await;
        cleanup.finish().await;
    }
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

/// A build step's error, as the warm jail's.
fn built(e: RunError) -> WarmError {
    WarmError::Build(Box::new(e))
}

/// Who a jail is built for.
#[derive(Debug, Clone)]
pub enum BuiltFor {
    /// The pool, ahead of any request: a fork server's zygote is started (or replaced)
    /// when none may serve.
    Pool,
    /// A run waiting for it (a fork server's pool had none ready): forked by this
    /// zygote, the one running (none is started on the request path).
    Run(Arc<Zygote>),
}

/// Build one warm jail of `command`: lease a uid, make its cgroup, spawn its stage with
/// a warm plan (a fresh interpreter start in a jail of its own) or fork it from the
/// command's zygote (`fork_server`), and wait until its interpreter reports ready.
/// Returns it with its idle footprint.
pub async fn build(
    runs: &Runs,
    command: &str,
    spec: &PoolSpec,
    built_for: BuiltFor,
) -> Result<(WarmJail, Footprint), WarmError> {
    let settings = runs.settings();
    let cmd = settings
        .commands
        .get(command)
        .ok_or_else(|| WarmError::NoCommand(command.to_string()))?;
    let run_id = runs.next_run_id();
    let workdir_name = planning::workdir_name().map_err(|e| built(RunError::NoRandomness(e)))?;
    let argv = planning::command_argv(cmd, true);
    let script_argv = argv.len();
    let mut plan = planning::command_plan(settings, cmd, argv, build_limits(), workdir_name);
    plan.warm = Some(WarmPlan {
        preimport: spec.preimport.clone(),
    });
    let workdir = planning::program_workdir(&plan.workdir_name);
    // A fork server's zygote first (started or replaced here for the pool): one that
    // cannot start leases no uid and makes no cgroup.
    let zygote = match built_for {
        BuiltFor::Run(zygote) => Some(zygote),
        BuiltFor::Pool if spec.fork_server => {
            Some(runs.pools().zygotes().get(runs, command, spec).await?)
        }
        BuiltFor::Pool => None,
    };
    let (identity, lease) = match runs.uid_pool() {
        Some(pool) => {
            let lease = pool.lease().ok_or_else(|| {
                built(RunError::NoRunUid {
                    range: pool.range().to_string(),
                })
            })?;
            (lease.identity(), Some(lease))
        }
        None => (settings.identity, None),
    };
    let cgroups = runs.cgroups();
    let caps = cgroups.limits_for(None, None, PIDS_SHARED);
    let cgroup = cgroups
        .create_run(run_id, caps)
        .map_err(|e| built(RunError::Cgroup(e)))?;
    let per_run_ids = lease.is_some();
    let cleanup = Cleanup::new(run_id, cgroup, lease);
    let stage = match zygote {
        // A zygote that fails to fork is replaced at the next build.
        Some(zygote) => {
            let forked = Stage::fork(
                zygote.clone(),
                &mut plan,
                identity,
                per_run_ids,
                cleanup.cgroup(),
            )
            .await;
            if !zygote.usable() {
                runs.pools().zygotes().discard(command, zygote.pid());
            }
            forked
        }
        None => {
            Stage::spawn(
                &settings.jail_stage,
                &mut plan,
                identity,
                cleanup.cgroup(),
                None,
            )
            .await
        }
    };
    let mut stage = match stage {
        Ok(s) => s,
        Err(e) => {
            cleanup.finish().await;
            return Err(built(e));
        }
    };
    let (mut landlock, mut seccomp_denied) = (None, None);
    let ready = tokio::time::timeout(BUILD_TIMEOUT, async {
        loop {
            match stage.next_report().await.map_err(built)? {
                Some(StageReport::Confined {
                    landlock: l,
                    seccomp_denied: s,
                }) => {
                    landlock = Some(l);
                    seccomp_denied = Some(s);
                }
                Some(StageReport::Ready) => return Ok(()),
                Some(StageReport::Failed { step, message }) => {
                    return Err(built(RunError::Stage { step, message }))
                }
                Some(StageReport::Exited {
                    exit_code, signal, ..
                }) => return Err(WarmError::InterpreterEnded { exit_code, signal }),
                Some(other) => {
                    return Err(WarmError::NotReady(format!(
                        "a warm jail reported {other:?} before it was ready"
                    )))
                }
                None => {
                    return Err(WarmError::NotReady(
                        "the stage ended before its warm jail was ready".into(),
                    ))
                }
            }
        }
    })
    .await
    .unwrap_or(Err(WarmError::Timeout(BUILD_TIMEOUT)));
    let stderr = stage.take_pending_output();
    if let Err(e) = ready {
        stage.kill().await;
        cleanup.finish().await;
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = stderr.trim();
        return Err(if stderr.is_empty() {
            e
        } else {
            WarmError::WithOutput {
                cause: Box::new(e),
                output: stderr.to_string(),
            }
        });
    }
    if !stderr.is_empty() {
        tracing::debug!(
            command,
            bytes = stderr.len(),
            "output of a warm jail's start-up discarded"
        );
    }
    let footprint = measure(stage.pid(), spec.fork_server, &cleanup);
    let jail = WarmJail {
        stage,
        cleanup,
        workdir,
        script_argv,
        outer_uid: identity.outer_uid,
        landlock,
        seccomp_denied,
        forked: spec.fork_server,
    };
    Ok((jail, footprint))
}

/// An idle warm jail's footprint: its interpreter's (the stage's grandchild; a forked
/// jail has no stage, and its interpreter is the child of its init, whose pid the
/// zygote answered: found in the host's `/proc`) resident and virtual size, and its
/// cgroup's memory.
fn measure(stage_pid: u32, forked: bool, cleanup: &Cleanup) -> Footprint {
    let children = |pid: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let init = if forked {
        Some(stage_pid)
    } else {
        children(stage_pid).first().copied()
    };
    let program = init.and_then(|init| children(init).first().copied());
    let status = program
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .unwrap_or_default();
    let kib = |key: &str| status_kib(&status, key);
    Footprint {
        rss_kib: kib("VmRSS:"),
        vm_bytes: kib("VmSize:") * 1024,
        memory_bytes: cleanup.cgroup().and_then(|cg| cg.memory_current()),
    }
}

/// The value of `key` (`VmRSS:`, `VmSize:`) in a `/proc/PID/status` text, KiB; 0 when
/// it is absent.
pub(super) fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
