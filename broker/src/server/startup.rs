//! Start-up, between the validated [`Settings`] and serving (ARCHITECTURE §4, last
//! paragraph; §5): check what the config asks of this host and refuse to start,
//! naming the layer, the reason and the fix, when a required part is missing; sweep
//! what a crashed broker left (run cgroups, processes in the run uid range).
//!
//! [`prepare_host`] is for a broker that is about to serve (it moves itself into its
//! v2 leaf and sweeps); [`inspect_host`] makes the same checks without changing
//! anything, for `check-config`, which must not sweep a serving broker's runs.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::admission::Admission;
use super::{report, selftest, Shared};
use crate::config::Settings;
use crate::run::cgroup::Cgroups;
use crate::run::uidpool::{self, Accounts, PoolError, UidPool};

/// Why the broker refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    // The pool errors are shown in the message, not chained as sources: the binary
    // prints the whole chain (`{:#}`), which would repeat them.
    /// The per-run uid range cannot be used here.
    #[error("layer `identity`: {0}")]
    CheckUidPool(PoolError),
    /// Leftover processes in the uid range could not be removed.
    #[error("layer `identity`: start-up sweep of the run uid range: {0}")]
    SweepStrays(PoolError),
    /// The config requires memory and pids cgroups and they are not both available.
    #[error("layer `cgroups` is required but {state}: {detail}")]
    RequireCgroups {
        /// `partial` or `unavailable`.
        state: &'static str,
        /// What is missing and the fix.
        detail: String,
    },
}

/// What this host gives the broker, checked.
#[derive(Debug)]
pub struct Host {
    /// Where run cgroups are made.
    pub cgroups: Cgroups,
    /// Per-run uids, when configured.
    pub uid_pool: Option<UidPool>,
}

/// Check the uid range (capabilities, collisions) and the cgroups, then sweep: kill
/// the processes left in the uid range, remove leftover run cgroups. Errors name the
/// layer, the reason and the fix.
pub fn prepare_host(settings: &Settings) -> Result<Host, StartupError> {
    let uid_pool = check_uid_pool(settings)?;
    if let Some(pool) = &uid_pool {
        let killed = uidpool::sweep_strays(pool.range()).map_err(StartupError::SweepStrays)?;
        if killed > 0 {
            tracing::warn!(killed, range = %pool.range(), "killed processes a previous broker's runs left");
        }
    }
    let cgroups = Cgroups::set_up(&settings.cgroup);
    require_cgroups(&cgroups)?;
    Ok(Host { cgroups, uid_pool })
}

/// The checks of [`prepare_host`] without sweeping or moving anything. A missing
/// required cgroup layer is not an error here: the report shows it. The uid range is
/// checked but no pool is returned: a probe run must not take (and then clean up)
/// a uid a serving broker's run may hold; it runs with the shared identity.
pub fn inspect_host(settings: &Settings) -> Result<Host, StartupError> {
    check_uid_pool(settings)?;
    Ok(Host {
        uid_pool: None,
        cgroups: Cgroups::inspect(&settings.cgroup),
    })
}

fn check_uid_pool(settings: &Settings) -> Result<Option<UidPool>, StartupError> {
    let Some(range) = settings.run_ids else {
        return Ok(None);
    };
    let accounts = Accounts::read_host().map_err(StartupError::CheckUidPool)?;
    uidpool::check_collisions(range, &accounts).map_err(StartupError::CheckUidPool)?;
    uidpool::check_capabilities().map_err(StartupError::CheckUidPool)?;
    Ok(Some(UidPool::new(range)))
}

fn require_cgroups(cgroups: &Cgroups) -> Result<(), StartupError> {
    let status = cgroups.status();
    if status.holds() {
        return Ok(());
    }
    Err(StartupError::RequireCgroups {
        state: status.state().as_str(),
        detail: status.detail.clone(),
    })
}

/// The shared state of a broker about to run its self-test and serve.
pub fn shared_for(settings: Settings, host: Host) -> Shared {
    let report = report::build(
        &settings,
        host.cgroups.status(),
        &selftest::Probe {
            verdict: Err("not run yet".into()),
            landlock: None,
        },
    );
    Shared {
        admission: Admission::new(settings.max_running, settings.max_queue),
        next_run_id: AtomicU64::new(1),
        report,
        kill_runs: CancellationToken::new(),
        cgroups: Arc::new(host.cgroups),
        uid_pool: host.uid_pool,
        settings,
    }
}
