//! Start-up, between the validated [`Settings`] and serving (docs/architecture.md,
//! "Start-up"): check what the config asks of this host and refuse to start, naming
//! the layer, the reason and the fix, when a required part is missing; sweep what a
//! crashed broker left (run cgroups, processes in the run uid range).
//!
//! [`prepare_host`] is for a broker that is about to serve (it moves itself into its
//! v2 leaf and sweeps); [`inspect_host`] makes the same checks without changing
//! anything, for `check-config`, which must not sweep a serving broker's runs.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::config::{ConnectionCap, Settings, DEFAULT_MAX_CONNECTIONS, MIN_FITTED_CONNECTIONS};
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

/// Fit the connection cap to the open-file limit (raising the soft limit to the hard
/// one first), check the uid range (capabilities, collisions) and the cgroups, then
/// sweep: kill the processes left in the uid range, remove leftover run cgroups. Errors
/// name the layer, the reason and the fix.
pub fn prepare_host(settings: &mut Settings) -> Result<Host, StartupError> {
    let nofile = raise_nofile().map_err(StartupError::Nofile)?;
    fit_connections(settings, nofile)?;
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
pub fn inspect_host(settings: &mut Settings) -> Result<Host, StartupError> {
    // What serving would reach: the soft limit raised to the hard one.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| StartupError::Nofile(format!("getrlimit: {e}")))?;
    fit_connections(settings, hard)?;
    check_uid_pool(settings)?;
    Ok(Host {
        uid_pool: None,
        cgroups: Cgroups::inspect(&settings.cgroup),
    })
}

/// Settle the connection cap for an open-file limit of `nofile` ([`check_nofile`]),
/// with a warning naming the numbers when the default had to be lowered.
fn fit_connections(settings: &mut Settings, nofile: u64) -> Result<(), StartupError> {
    let cap = check_nofile(settings, nofile).map_err(StartupError::Nofile)?;
    if let ConnectionCap::Fitted(n) = cap {
        tracing::warn!(
            max_connections = n,
            rlimit_nofile = nofile,
            "max_connections lowered from its default {DEFAULT_MAX_CONNECTIONS} (which needs \
             {} open files with max_running {}) to fit RLIMIT_NOFILE; raise LimitNOFILE= \
             (or ulimit -n) to hold more connections at once",
            open_files_needed(DEFAULT_MAX_CONNECTIONS, settings.max_running),
            settings.max_running,
        );
    }
    settings.max_connections = cap;
    Ok(())
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

/// The open files a connection cap of `connections` needs with `max_running` runs:
/// each connection one, each running run [`FDS_PER_RUN`], the broker [`FDS_BASE`].
pub fn open_files_needed(connections: u32, max_running: u32) -> u64 {
    u64::from(connections) + u64::from(max_running) * FDS_PER_RUN + FDS_BASE
}

/// The connection cap for an open-file limit of `nofile`. The cap, plus what each
/// running run holds, plus the broker's own, must fit: otherwise accept would fail
/// with EMFILE under load, which is exactly the lockout the cap prevents. A cap the
/// operator set is kept if it fits and refused otherwise; the default is lowered to
/// what fits ([`ConnectionCap::Fitted`]), and refused below
/// [`MIN_FITTED_CONNECTIONS`]. Errors name the numbers and the fix.
pub fn check_nofile(settings: &Settings, nofile: u64) -> Result<ConnectionCap, String> {
    let cap = settings.max_connections;
    let needed = open_files_needed(cap.get(), settings.max_running);
    if needed <= nofile {
        return Ok(cap);
    }
    let runs = open_files_needed(0, settings.max_running);
    let fits = u32::try_from(nofile.saturating_sub(runs)).unwrap_or(u32::MAX);
    match cap {
        ConnectionCap::Default(_) | ConnectionCap::Fitted(_) if fits >= MIN_FITTED_CONNECTIONS => {
            Ok(ConnectionCap::Fitted(fits))
        }
        ConnectionCap::Default(n) | ConnectionCap::Fitted(n) => Err(format!(
            "the open-file limit of {nofile} holds {fits} connections with max_running ({}) \
             x {FDS_PER_RUN} + {FDS_BASE} descriptors, fewer than {MIN_FITTED_CONNECTIONS} \
             (the default max_connections ({n}) needs {needed}): raise it (the unit's \
             LimitNOFILE=, or ulimit -n) or lower max_running",
            settings.max_running
        )),
        ConnectionCap::Configured(n) => Err(format!(
            "max_connections ({n}) + max_running ({}) x {FDS_PER_RUN} + {FDS_BASE} = {needed} \
             descriptors do not fit the open-file limit of {nofile}: raise it (the unit's \
             LimitNOFILE=, or ulimit -n) or lower max_connections (to at most {fits})",
            settings.max_running
        )),
    }
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
