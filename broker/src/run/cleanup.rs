//! The guard of what a run holds of the host: its cgroup, its outside uid and, for a
//! warm jail's run, its place in the pool.

use super::cgroup::RunCgroup;
use super::pool::InUse;
use super::process::{kill_stage, StageProcess};
use super::stage::{kill_cgroup, KILL_GRACE};
use super::uidpool::Lease;

/// What a run holds of the host, from the moment it is allocated (a cold run at its
/// start, a warm jail when it is built) to its end: its cgroup and its outside uid.
/// The one guard of both: [`Cleanup::finish`] removes the cgroup (which also checks
/// that no task is left in it), then gives the uid back once none of its processes is
/// left; dropping it does the same synchronously, best effort, so no path can forget
/// either. Kept apart from a run's result so that the caller can answer its client
/// first and clean up after, before it frees the run's slot.
#[must_use = "a run's cgroup and uid are given back by Cleanup::finish"]
#[derive(Debug)]
pub struct Cleanup {
    run_id: u64,
    pub(super) cgroup: Option<RunCgroup>,
    lease: Option<Lease>,
    /// The run's stage once its run has ended, to be reaped (its exit tears the run's
    /// namespaces down).
    pub(super) stage: Option<StageProcess>,
    /// A warm jail's place in its pool, given back last (the pool then builds its
    /// replacement, with the uid this run gives back).
    in_use: Option<InUse>,
}

impl Cleanup {
    /// What run `run_id` holds: its cgroup (if this broker makes them) and its uid
    /// lease (production).
    pub fn new(run_id: u64, cgroup: Option<RunCgroup>, lease: Option<Lease>) -> Cleanup {
        Cleanup {
            run_id,
            cgroup,
            lease,
            stage: None,
            in_use: None,
        }
    }

    /// Hold `in_use` until this run is cleaned up.
    pub(crate) fn hold(&mut self, in_use: InUse) {
        self.in_use = Some(in_use);
    }

    /// The run's cgroup, if it has one.
    pub fn cgroup(&self) -> Option<&RunCgroup> {
        self.cgroup.as_ref()
    }

    /// Reap the run's stage, remove the run's cgroup (kill what is left, rmdir,
    /// retrying while exiting tasks still hold it), then release its uid.
    pub async fn finish(mut self) {
        // The stage first: it exits once the init, and with it every process of the
        // run, is gone (a stage that does not is killed, with the run's cgroup).
        let stage_reaped = self.stage.is_some();
        if let Some(mut stage) = self.stage.take() {
            if tokio::time::timeout(KILL_GRACE, stage.wait())
                .await
                .is_err()
            {
                tracing::error!(
                    run_id = self.run_id,
                    "the stage did not exit after its run; killing it"
                );
                kill_cgroup(self.cgroup.as_ref(), self.run_id);
                let owner = self
                    .lease
                    .as_ref()
                    .map_or_else(|| nix::unistd::geteuid().as_raw(), Lease::id);
                kill_stage(&mut stage, owner);
                stage.wait().await;
            }
        }
        let mut cgroup_removed = false;
        if let Some(cg) = self.cgroup.take() {
            // The run's processes are gone once the cgroup can be removed (rmdir fails
            // with EBUSY while any task is left): this is the check, not an assumption.
            match cg.remove().await {
                Ok(()) => cgroup_removed = true,
                Err(e) => {
                    tracing::error!(run_id = self.run_id, error = %e, "run cgroup not removed")
                }
            }
        }
        if let Some(lease) = self.lease.take() {
            // Every process of the run's uid is made inside the run's cgroup (the stage
            // enters it before it takes the uid: spawned, between fork and exec; forked
            // from a zygote, first thing); none can leave it (the run has no cgroupfs and
            // no cgroup file open, and owns none). So with the stage reaped and the
            // cgroup removed, no process of the uid is left (zombies aside, which the
            // scan ignores too), and the uid goes back without the `/proc` scan a run
            // without cgroups needs.
            if stage_reaped && cgroup_removed {
                lease.release_emptied();
            } else {
                lease.release().await;
            }
        }
        drop(self.in_use.take());
    }
}
