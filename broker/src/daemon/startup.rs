//! Start-up, between the validated [`Settings`] and serving (docs/architecture.md,
//! "Start-up"): check what the config asks of this host and refuse to start, naming
//! the layer, the reason and the fix, when a required part is missing; sweep what a
//! crashed broker left (run cgroups, processes in the run uid range).
//!
//! [`prepare_host`] is for a broker that is about to serve (it moves itself into its
//! v2 leaf and sweeps); [`inspect_host`] makes the same checks without changing
//! anything, for `check-config`, which must not sweep a serving broker's runs.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::config::Settings;
use crate::run::cgroup::Cgroups;
use crate::run::uidpool::{self, Accounts, PoolError, UidPool};
use crate::run::Runs;

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
    /// The open-file limit cannot hold the connection cap and the runs.
    #[error("open files: {0}")]
    Nofile(String),
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
    let nofile = raise_nofile().map_err(StartupError::Nofile)?;
    check_nofile(settings, nofile).map_err(StartupError::Nofile)?;
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
    // What serving would reach: the soft limit raised to the hard one.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| StartupError::Nofile(format!("getrlimit: {e}")))?;
    check_nofile(settings, hard).map_err(StartupError::Nofile)?;
    check_uid_pool(settings)?;
    Ok(Host {
        uid_pool: None,
        cgroups: Cgroups::inspect(&settings.cgroup),
    })
}

/// Descriptors the broker holds for one running run: the stage's stdin, stdout,
/// stderr, control and report pipes, a pidfd, the run's cgroup directories, and the
/// client's connection is counted under the connection cap.
pub const FDS_PER_RUN: u64 = 12;
/// Descriptors of the broker itself: the listener, the runtime (epoll, eventfds),
/// stdio, the journal, and headroom for start-up files.
pub const FDS_BASE: u64 = 64;

/// Raise the soft open-file limit to the hard one (allowed without any capability:
/// setrlimit(2)) and return it. The unit sets `LimitNOFILE=`; elsewhere the soft limit
/// inherited is often 1024, which the connection cap alone may exceed.
fn raise_nofile() -> Result<u64, String> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(|e| format!("raising the soft limit {soft} to the hard limit {hard}: {e}"))?;
    }
    Ok(hard)
}

/// The cap on connections, plus what each running run holds, plus the broker's own,
/// must fit in `nofile`: otherwise accept would fail with EMFILE under load, which is
/// exactly the lockout the cap prevents.
pub fn check_nofile(settings: &Settings, nofile: u64) -> Result<(), String> {
    let needed = u64::from(settings.max_connections)
        + u64::from(settings.max_running) * FDS_PER_RUN
        + FDS_BASE;
    if needed > nofile {
        return Err(format!(
            "max_connections ({}) + max_running ({}) x {FDS_PER_RUN} + {FDS_BASE} = {needed} \
             descriptors do not fit the open-file limit of {nofile}: raise it (the unit's \
             LimitNOFILE=, or ulimit -n) or lower max_connections",
            settings.max_connections, settings.max_running
        ));
    }
    Ok(())
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

impl Host {
    /// The runs of a broker on this host, before its self-test.
    pub fn runs(self, settings: Settings) -> Runs {
        Runs::new(settings, self.cgroups, self.uid_pool)
    }
}
