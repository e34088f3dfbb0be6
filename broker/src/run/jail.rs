//! Where one run runs: a jail built for it (a cold run, with its own outside uid in
//! production), or a warm one from the pool, built ahead with its uid and cgroup.

use std::time::Instant;

use codejail_protocol::LimitName;
use tokio::sync::mpsc;

use super::cgroup::PIDS_SHARED;
use super::cleanup::Cleanup;
use super::outcome::{Reports, RunResult};
use super::pool::WarmJail;
use super::request::RunSpec;
use super::stage::{Output, Stage};
use super::uidpool::Lease;
use super::RunError;

/// Where one run runs: a jail built for it (with its own uid lease, in production),
/// or a warm one from the pool, built ahead with its lease and cgroup. Either way
/// [`Jail::run`] ends with the [`Cleanup`] guard of what the run holds.
#[derive(Debug)]
pub enum Jail {
    /// Built for this run.
    Cold(Option<Lease>),
    /// Taken from the warm pool.
    Warm(Box<WarmJail>),
}

impl Jail {
    /// Give the jail back unused (its client left before the run started): a warm
    /// jail is retired; a cold one holds only its uid lease, given back on drop.
    pub async fn abandon(self) {
        if let Jail::Warm(warm) = self {
            warm.retire().await;
        }
    }

    /// Whether the run is a warm jail's.
    pub fn is_warm(&self) -> bool {
        matches!(self, Jail::Warm(_))
    }

    /// How the run is served, for its log line: `cold`, `warm` (a warm jail whose
    /// interpreter started in it) or `forked` (a warm jail forked from a zygote).
    pub fn served(&self) -> &'static str {
        match self {
            Jail::Cold(_) => "cold",
            Jail::Warm(jail) if jail.is_forked() => "forked",
            Jail::Warm(_) => "warm",
        }
    }

    /// The outside uid the run has.
    pub fn outer_uid(&self, spec: &RunSpec) -> u32 {
        match self {
            Jail::Cold(_) => spec.identity.outer_uid,
            Jail::Warm(jail) => jail.outer_uid(),
        }
    }

    /// Run `spec` to its end here. Output chunks go to `out` as they are read;
    /// `cancel` resolving ends the run at once. Returns once the program has ended and
    /// nothing holds its output pipes, with the [`Cleanup`] still to do (which reaps
    /// the stage, after which every process of the run's pid namespace is gone).
    pub async fn run(
        self,
        spec: RunSpec,
        out: mpsc::Sender<Output>,
        cancel: impl std::future::Future<Output = ()>,
    ) -> (Result<RunResult, RunError>, Cleanup) {
        match self {
            Jail::Cold(lease) => run_cold(spec, lease, out, cancel).await,
            Jail::Warm(jail) => jail.run(spec, out, cancel).await,
        }
    }
}

/// Run one program in a jail built for it (a cold run). Output chunks go to `out` as they are read;
/// `cancel` resolving (e.g. the client went away) ends the run at once. Returns once
/// the program has ended and nothing holds its output pipes, with the [`Cleanup`]
/// still to do (which reaps the stage: every process of the run is gone then).
async fn run_cold(
    mut spec: RunSpec,
    lease: Option<Lease>,
    out: mpsc::Sender<Output>,
    cancel: impl std::future::Future<Output = ()>,
) -> (Result<RunResult, RunError>, Cleanup) {
    // The cgroup first, caps written, so that the stage is charged from its start.
    let limits = spec.cgroups.limits_for(
        spec.limits.effective(LimitName::Memory),
        spec.limits.effective(LimitName::Nproc),
        PIDS_SHARED,
    );
    let cgroup = match spec.cgroups.create_run(spec.run_id, limits) {
        Ok(cg) => cg,
        Err(e) => {
            return (
                Err(RunError::Cgroup(e)),
                Cleanup::new(spec.run_id, None, lease),
            )
        }
    };
    let mut cleanup = Cleanup::new(spec.run_id, cgroup, lease);
    let started = Instant::now();
    let held = spec.held.take();
    let result = match Stage::spawn(
        &spec.stage,
        &mut spec.plan,
        spec.identity,
        cleanup.cgroup(),
        held,
    )
    .await
    {
        Ok(stage) => {
            stage
                .supervise(
                    &spec.supervision(),
                    Reports::default(),
                    started,
                    &mut cleanup,
                    out,
                    cancel,
                )
                .await
        }
        Err(e) => Err(e),
    };
    (result, cleanup)
}
