//! The run's other namespaces, created by the stage once it holds capabilities in the
//! run's user namespace (so they are all owned by it, and the init and the program
//! inherit them): mount, pid, network, IPC and UTS (namespaces(7)).
//!
//! - mount: the workspace tmpfs and the fresh `/proc` exist only for this run and die
//!   with it;
//! - pid: the next fork is the run's PID 1 (the init); killing it kills the run;
//! - net: only a loopback device, down: no network at all;
//! - ipc: no System V IPC or POSIX message queues shared with other runs;
//! - uts: the run's own host name.

use nix::sched::{unshare, CloneFlags};
use nix::unistd::sethostname;

use super::error::JailError;

/// Unshare the mount, pid, network, IPC and UTS namespaces. The calling process
/// stays in its pid namespace; its next child is PID 1 of the new one.
pub(crate) fn unshare_run_namespaces() -> Result<(), JailError> {
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    unshare(flags).map_err(|e| JailError::UnshareNamespaces(e.into()))
}

/// Set the host name inside the run's UTS namespace.
pub(crate) fn set_hostname(hostname: &str) -> Result<(), JailError> {
    sethostname(hostname).map_err(|e| JailError::SetHostname {
        hostname: hostname.to_string(),
        source: e.into(),
    })
}
