//! The jail stage: a separate, single-threaded exec (`codejail-jail`) that reads a
//! [`codejail_plan::Plan`] and builds the run's jail. Never touches tokio: this crate
//! depends on no async runtime (checked in CI with `cargo tree`).
//!
//! The trust boundary: the broker (a tokio daemon) shares only the plan crate with
//! this one (the plan it sends, the reports it reads); it spawns the stage binary,
//! whose `main` is [`run_stage`], as the run's outside uid and gid. One module per
//! mechanism, in the order they apply:
//!
//! - [`stage`]: the stage's checklist: sanitize, read and check the plan
//!   (`names`), then
//! - `userns`: user namespace and its id maps, run identity;
//! - `namespaces`: mount, pid, net, ipc, uts and time namespaces, the host name;
//! - `init`: PID 1 of the run: `mounts`, `rootfs`, `workspace`, the
//!   `execguard`, fork and reap the program;
//! - [`program`]: PID 2: `rlimits`, `apparmor`, `no_new_privs`, [`landlock`]
//!   (its rules for the view `rootfs` builds), [`seccomp`], exec;
//! - `warm`: a warm jail's hand-over, between the program's exec and its code,
//!   with `restamp`: its build's timestamps moved to the hand-over;
//! - [`forked`]: a run whose init a zygote cloned into the run's namespaces (no
//!   stage process), whose program returns into the interpreter instead of exec'ing
//!   one;
//! - `sys`: every raw system call, each with its `SAFETY` comment;
//! - [`error`]: the one error type, variants named after the failed step.
//!
//! Where things are in the run's view (the workspace mount, `jailed_code`, `tmp/`) is
//! [`codejail_plan::layout`], which the broker reads too.

mod apparmor;
pub mod error;
mod execguard;
pub mod forked;
mod init;
pub mod landlock;
mod mounts;
mod names;
mod namespaces;
pub mod program;
mod restamp;
mod rlimits;
mod rootfs;
pub mod seccomp;
pub mod stage;
pub(crate) mod sys;
mod userns;
mod view;
mod warm;
mod workspace;

pub use error::JailError;
pub use forked::run_forked_init;
pub use stage::run_stage;

/// The stage's checks of a decoded plan before it builds anything, in the stage's order:
/// every peer-supplied name (`names::check_names`), then what `execve` needs. For
/// the fuzz targets (`fuzz/`); the stage calls the same two functions.
#[doc(hidden)]
pub fn fuzz_check_plan(plan: &codejail_plan::Plan) -> Result<(), JailError> {
    names::check_names(plan)?;
    program::ExecSpec::from_plan(plan).map(drop)
}

/// A plan for the unit tests: the python program, nothing to copy, no limits but the
/// defaults, run directory `workdir_name`.
#[cfg(test)]
pub(crate) fn test_plan(workdir_name: &str) -> codejail_plan::Plan {
    codejail_plan::Plan {
        program: "/usr/bin/python3".into(),
        argv: vec!["python".into()],
        env: vec![],
        code: None,
        files: vec![],
        extra_files: vec![],
        skeleton_root: "/tmp".into(),
        workdir_name: workdir_name.into(),
        limits: codejail_plan::RunLimits::default(),
        sigpending: None,
        hostname: "codejail".into(),
        ro_paths: vec![],
        landlock_min_abi: 0,
        landlock_max_abi: codejail_plan::NEWEST_LANDLOCK_ABI,
        apparmor_profile: None,
        allow_exec: false,
        warm: None,
    }
}
