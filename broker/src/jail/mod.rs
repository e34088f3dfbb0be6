//! The jail stage: a separate, single-threaded exec (`codejail-jail`) that reads a
//! [`plan::Plan`] and builds the run's jail. Never touches tokio.
//!
//! The broker uses only [`plan`] (the data it sends), [`write_id_maps`] (it writes
//! the run's id maps when the stage reports `NeedMaps`) and spawns the stage binary,
//! whose `main` is [`run_stage`]. One module per mechanism, in the order they apply:
//!
//! - [`stage`]: the stage's checklist: sanitize, read and check the plan, then
//! - [`userns`] (+ [`idmap`], written by the broker): user namespace, run identity;
//! - [`namespaces`]: mount, pid, net, ipc, uts namespaces and the host name;
//! - [`init`]: PID 1 of the run: [`mounts`], [`rootfs`], [`workspace`], the
//!   [`execguard`], fork and reap the program;
//! - [`program`]: PID 2: [`rlimits`], `no_new_privs`, exec;
//! - [`sys`]: every raw system call, each with its `SAFETY` comment;
//! - [`error`]: the one error type, variants named after the failed step.

pub mod apparmor;
pub mod error;
mod execguard;
pub mod idmap;
mod init;
pub mod landlock;
mod mounts;
mod namespaces;
pub mod plan;
pub mod program;
mod rlimits;
mod rootfs;
pub mod seccomp;
pub mod stage;
pub(crate) mod sys;
mod userns;
mod workspace;

pub use error::JailError;
pub use idmap::write_id_maps;
pub use stage::run_stage;
