//! Why a run, or a warm jail's build or hand-over, could not happen: one variant per
//! step, so that the log and the client's `JailFailed` message say which step failed.

use std::path::PathBuf;
use std::time::Duration;

use super::cgroup::CgroupError;

/// A run that could not run (nothing of the request's code ran, unless the variant
/// says otherwise).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run's directory name could not be drawn.
    #[error("no randomness for the run's directory name: {0}")]
    NoRandomness(#[source] getrandom::Error),
    /// Every outside uid of the range is taken or quarantined.
    #[error("no free run uid in {range} (ids are quarantined after runs whose processes could not be removed; see the broker log)")]
    NoRunUid {
        /// The configured range.
        range: String,
    },
    /// The run's cgroup could not be made or given its caps.
    #[error("run cgroup: {0}")]
    Cgroup(#[source] CgroupError),
    /// The stage's pipes could not be made.
    #[error("cannot set up the run's pipes: {0}")]
    Pipes(#[source] std::io::Error),
    /// The stage could not be spawned.
    #[error("cannot start the jail stage {path}: {source}")]
    Spawn {
        /// The stage path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A zygote did not fork a stage (`pool/zygote.rs`).
    #[error("the zygote {zygote} did not fork the jail stage: {source}")]
    Forked {
        /// The zygote's pid.
        zygote: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The stage was gone before the broker knew its pid.
    #[error("the jail stage exited at once")]
    StageGone,
    /// The plan could not be written to the stage's control pipe.
    #[error("sending the plan to the jail stage: {0}")]
    SendPlan(#[source] std::io::Error),
    /// The stage reported a failed step.
    #[error("jail step failed: {step}: {message}")]
    Stage {
        /// The step.
        step: String,
        /// Its error.
        message: String,
    },
    /// The stage's reports broke their protocol (unreadable, out of order, or missing
    /// the program's status).
    #[error("the jail stage's reports: {0}")]
    Reports(String),
    /// The run's processes outlived SIGKILL of its cgroup and stage.
    #[error("the run did not end after SIGKILL")]
    Unkillable,
    /// A warm jail could not be built.
    #[error("warm jail not built: {0}")]
    Warm(#[source] WarmError),
    /// A warm jail could not be handed its request.
    #[error("warm hand-over: {0}")]
    HandOver(#[source] HandOverError),
}

/// Why a warm jail was not built.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// The pool's command is not configured.
    #[error("no command {0:?}")]
    NoCommand(String),
    /// A step before the interpreter started failed.
    #[error("{0}")]
    Build(#[source] Box<RunError>),
    /// The interpreter did not report ready in time.
    #[error("the warm jail was not ready within {0:?}")]
    Timeout(Duration),
    /// The interpreter ended before its start-up hook reported ready.
    #[error("its interpreter ended (exit code {exit_code:?}, signal {signal:?}) before it was ready: is codejail's start-up hook installed in its site-packages (scripts/setup-sandbox-venv.sh)?")]
    InterpreterEnded {
        /// Its exit code.
        exit_code: Option<i32>,
        /// The signal that ended it.
        signal: Option<i32>,
    },
    /// The stage sent a report other than ready, or none.
    #[error("{0}")]
    NotReady(String),
    /// The command's zygote (fork server) could not be started or did not fork.
    #[error("its zygote: {0}")]
    Zygote(String),
    /// Any of the above, with what the interpreter wrote before it failed.
    #[error("{cause}; the interpreter's output: {output}")]
    WithOutput {
        /// The failure.
        cause: Box<WarmError>,
        /// Its stdout and stderr, trimmed.
        output: String,
    },
}

/// Why a warm jail could not be handed its request (the stage then ends the run).
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    /// The run's cgroup did not take the request's caps.
    #[error("setting the request's cgroup caps: {0}")]
    Caps(#[source] CgroupError),
    /// The stdio pipes' times could not be set to now.
    #[error("setting the times of the run's stdio pipes: {0}")]
    Restamp(#[source] std::io::Error),
    /// The jail's hand-over pipe was already gone.
    #[error("the warm jail has no hand-over pipe")]
    NoPipe,
    /// The hand-over could not be encoded or written.
    #[error("sending the hand-over: {0}")]
    Send(#[source] std::io::Error),
}
