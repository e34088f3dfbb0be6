//! One cgroup per run (docs/architecture.md §6): the run's memory and pids caps,
//! a kill that reaches every process of the run, and its peak memory.
//!
//! Two layouts:
//!
//! - **v2** (production): a subtree delegated to the broker (systemd `Delegate=yes`).
//!   The "no internal processes" rule (cgroup-v2.rst, "No Internal Process
//!   Constraint") forbids enabling controllers for children of a cgroup that holds
//!   processes, so at start-up the broker moves itself into the leaf `<root>/broker`,
//!   enables `memory` and `pids` in `<root>/cgroup.subtree_control`, and makes each
//!   run's cgroup as the sibling `<root>/run-<id>`. Both leaves are in the delegated
//!   subtree, so the broker may move the stage between them (cgroup-v2.rst,
//!   "Delegation Containment").
//! - **v1** (hybrid hosts such as this project's CI): the run's cgroups are
//!   `<memory parent>/run-<id>` and `<pids parent>/run-<id>`, both parents created and
//!   chowned to the broker's uid by the operator.
//!
//! Per run, in order: [`Cgroups::create_run`] makes the cgroup(s) and writes the caps
//! before the stage exists; the stage joins it between fork and exec, through the
//! files [`RunCgroup::procs_files`] opens (so before anything of the run is charged,
//! and while it still has the broker's uid); [`RunCgroup::kill`] ends every process
//! in it (REALTIME, cancel, clean-up); [`RunCgroup::stats`] reads peak memory and the
//! OOM and pids-limit counters; [`RunCgroup::remove`] kills what is left and removes
//! the cgroup(s), retrying while the kernel still counts exiting tasks.
//!
//! At start-up [`Cgroups::set_up`] sweeps `run-*` cgroups a crashed broker left.
//!
//! The module, by concern: [`fs`] (the kernel interface behind a trait, and where the
//! broker's own cgroup is), `choice` (which layout this host allows, and the report's
//! text for it), `lifecycle` (one run's cgroup: create, add, kill, stats, remove;
//! the start-up sweep).

mod choice;
pub mod fs;
mod lifecycle;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use codejail_protocol::LayerState;

use crate::config::CgroupSettings;

use choice::{choose, prepare, status_for};
pub use fs::{cgroup2_mount, v2_path, CgroupFs, OwnCgroup, RealFs};
use lifecycle::sweep;
pub use lifecycle::{CgroupStats, RunCgroup};

/// Prefix of the run cgroups' names; the start-up sweep removes every cgroup named so.
pub const RUN_PREFIX: &str = "run-";
/// The v2 leaf the broker moves itself into.
pub const BROKER_LEAF: &str = "broker";
/// Processes of a run's cgroup that are not the program's: the jail stage and the
/// run's init (the same two the stage adds to RLIMIT_NPROC, see `codejail_jail::rlimits`).
pub const PIDS_SHARED: u64 = 2;
/// The same for a run forked from a zygote: its init only (it has no stage).
pub const PIDS_SHARED_FORKED: u64 = 1;
/// How long removing a run cgroup may take (exiting tasks leave it asynchronously).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between removal attempts.
const REMOVE_RETRY: Duration = Duration::from_millis(10);
/// Where a cgroup2 file system is usually mounted: pure v2 hosts, then hybrid ones.
const V2_MOUNT_CANDIDATES: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
/// A cgroup step that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// mkdir of a run cgroup.
    #[error("cannot create cgroup {path}: {source}")]
    CreateCgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Writing a limit (`memory.max`, `pids.max`, ...).
    #[error("cannot set {path} to {value}: {source}")]
    SetLimit {
        /// The control file.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Writing a pid to `cgroup.procs`.
    #[error("cannot move process {pid} into {path}: {source}")]
    MoveProcess {
        /// The process.
        pid: u32,
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Killing the processes of a cgroup.
    #[error("cannot kill the processes of cgroup {path}: {source}")]
    KillProcesses {
        /// The cgroup directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// rmdir of a run cgroup.
    #[error("cannot remove cgroup {path}: {source}")]
    RemoveCgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Listing a parent for the start-up sweep.
    #[error("cannot list {path} to sweep leftover run cgroups: {source}")]
    SweepParent {
        /// The parent directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Moving the broker into its v2 leaf.
    #[error("cannot move the broker into {path}: {source}")]
    MoveBroker {
        /// The leaf's `cgroup.procs`.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Enabling controllers for the run cgroups.
    #[error("cannot enable {controllers} in {path}: {source}")]
    EnableControllers {
        /// `"+memory +pids"`.
        controllers: String,
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}
/// What the cgroups layer achieves here, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupStatus {
    /// Runs get a memory cap.
    pub memory: bool,
    /// Runs get a pids cap.
    pub pids: bool,
    /// Policy requires both.
    pub required: bool,
    /// What is used, or what is missing with the fix.
    pub detail: String,
}

impl CgroupStatus {
    /// Full with memory and pids, Partial with one, Unavailable with none.
    pub fn state(&self) -> LayerState {
        match (self.memory, self.pids) {
            (true, true) => LayerState::Full,
            (false, false) => LayerState::Unavailable,
            _ => LayerState::Partial,
        }
    }

    /// Whether policy is met (not required, or both controllers).
    pub fn holds(&self) -> bool {
        !self.required || self.state() == LayerState::Full
    }
}

/// Where run cgroups are made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Backend {
    /// No cgroups.
    Off,
    /// Children of a delegated v2 cgroup.
    V2 {
        root: PathBuf,
        memory: bool,
        pids: bool,
    },
    /// Children of v1 parents, per controller.
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

/// What one hierarchy offers, found without changing anything.
#[derive(Debug, Clone)]
struct Candidate {
    backend: Backend,
    /// Why a controller is missing, and the fix.
    missing: Vec<String>,
}

impl Candidate {
    fn controllers(&self) -> usize {
        match &self.backend {
            Backend::Off => 0,
            Backend::V2 { memory, pids, .. } => usize::from(*memory) + usize::from(*pids),
            Backend::V1 { memory, pids } => {
                usize::from(memory.is_some()) + usize::from(pids.is_some())
            }
        }
    }
}

/// The broker's cgroup set-up: where run cgroups go and what they get.
#[derive(Debug)]
pub struct Cgroups {
    fs: Arc<dyn CgroupFs>,
    backend: Backend,
    status: CgroupStatus,
    unlimited_pids: u64,
}

/// The caps of one run's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCgroupLimits {
    /// Memory cap in bytes (`None`: no cap).
    pub memory_bytes: Option<u64>,
    /// `pids.max`.
    pub pids_max: u64,
}

impl Cgroups {
    /// Find the cgroups this host offers per `settings`, prepare them (v2: move the
    /// broker into its leaf and enable the controllers), and sweep the `run-*` cgroups
    /// a crashed broker left. Never fails: what does not work is reported in the
    /// status (the caller refuses to start when policy requires it).
    pub fn set_up(settings: &CgroupSettings) -> Cgroups {
        Self::set_up_with(Arc::new(RealFs), settings, &OwnCgroup::detect())
    }

    /// Find what this host offers without changing anything (`check-config`, which
    /// must neither move itself nor sweep a serving broker's runs). The result makes
    /// no run cgroups; its status says what a serving broker would get.
    pub fn inspect(settings: &CgroupSettings) -> Cgroups {
        let fs: Arc<dyn CgroupFs> = Arc::new(RealFs);
        let own = OwnCgroup::detect();
        let chosen = choose(&*fs, settings, &own);
        let status = status_for(&chosen, settings.required);
        Cgroups {
            fs,
            backend: Backend::Off,
            status,
            unlimited_pids: settings.unlimited_pids,
        }
    }

    /// [`Cgroups::set_up`] on any file system (the unit tests use a fake cgroupfs).
    pub fn set_up_with(
        fs: Arc<dyn CgroupFs>,
        settings: &CgroupSettings,
        own: &OwnCgroup,
    ) -> Cgroups {
        let mut chosen = choose(&*fs, settings, own);
        if let Err(e) = prepare(&*fs, &chosen.backend, own) {
            chosen = Candidate {
                backend: Backend::Off,
                missing: vec![format!(
                    "{e}; fix: run the broker under systemd with Delegate=yes (its own cgroup subtree, owned by its user)"
                )],
            };
        }
        let mut status = status_for(&chosen, settings.required);
        let swept = sweep(&fs, &chosen.backend);
        match swept {
            Ok(0) => {}
            Ok(n) => tracing::warn!(removed = n, "removed run cgroups a previous broker left"),
            Err(e) => {
                // A parent we cannot list is a parent we cannot manage either.
                tracing::error!(error = %e, "start-up sweep of run cgroups failed");
                status
                    .detail
                    .push_str(&format!("; start-up sweep failed: {e}"));
            }
        }
        Cgroups {
            fs,
            backend: chosen.backend,
            status,
            unlimited_pids: settings.unlimited_pids,
        }
    }

    /// What this layer achieves.
    pub fn status(&self) -> &CgroupStatus {
        &self.status
    }

    /// Whether runs get cgroups from this set-up (not after [`Cgroups::inspect`]).
    pub fn makes_run_cgroups(&self) -> bool {
        self.backend != Backend::Off
    }

    /// The caps of a run with these limits: MEMORY as is (0 = none); pids for the
    /// program's NPROC plus the run's `shared` processes ([`PIDS_SHARED`], or
    /// [`PIDS_SHARED_FORKED`]), or `unlimited_pids` when NPROC is 0 so that a fork
    /// bomb is still bounded.
    pub fn limits_for(
        &self,
        memory: Option<u64>,
        nproc: Option<u64>,
        shared: u64,
    ) -> RunCgroupLimits {
        RunCgroupLimits {
            memory_bytes: memory,
            pids_max: nproc
                .map(|n| n.saturating_add(shared))
                .unwrap_or(self.unlimited_pids),
        }
    }
}
