//! A run forked from a zygote: the sandbox interpreter, started once per command with
//! the pool's preimports and parked in its start-up hook (`jail/warm/_codejail_warm.py`,
//! zygote mode), clones one process per warm jail straight into the run's new user,
//! mount, pid, network, IPC and UTS namespaces ([`CLONE_FLAGS`]). That process is the
//! run's init: it does what a spawned stage does in its namespaces (id maps, time
//! namespace, host name), then the init's checklist, and forks the program, which runs
//! the program's checklist exactly as a cold one does, with one difference at the end:
//! it does not exec the interpreter, it returns into the one it was forked from,
//! confined, and goes on in the hook as a warm jail's interpreter does
//! (docs/architecture.md, "Fork server"). There is no stage process: the init watches
//! the control pipe itself.
//!
//! The zygote's native half (the `codejail-zygote` library) makes the clone with the
//! run's ids as its effective ids (so the user namespace is the run's, as a spawned
//! stage's is), puts the broker's fds on the stage's numbers (stdio, then
//! [`codejail_plan::CONTROL_FD`], [`codejail_plan::REPORT_FD`],
//! [`codejail_plan::HANDOVER_FD`]), enters the run's cgroup and closes everything else
//! before calling [`run_forked_init`].

use std::ffi::CString;

use super::stage::{forked_init_main, StageEnd};
use super::sys;
pub use super::sys::thread_count;
use super::userns::OutsideIds;
use codejail_plan::WARM_FD;

/// The namespaces a zygote's clone creates for a run (clone(2) flags, without the
/// exit signal): all but the time namespace, whose clocks the init sets before its
/// first child enters it.
pub const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// What a zygote prepares once, before its first fork, for every run's init to find
/// in its copy of the zygote's memory: the compiled seccomp policy.
pub fn prepare_zygote() -> std::io::Result<()> {
    super::seccomp::compiled()
        .map(|_| ())
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Run a forked run's init, in the zygote's child, which [`CLONE_FLAGS`] made PID 1
/// of the run's namespaces; `uid` and `gid` are the ids its user namespace is to map
/// (the zygote's effective ids at the clone). In the init this never returns (it exits
/// with its status when the run is over); it returns only in the run's program,
/// confined, with the environment a cold run's `execve` would have given it, holding
/// fds 0-2 (the run's stdio) and [`WARM_FD`] (the hook's channel to the init) and
/// nothing else.
pub fn run_forked_init(uid: u32, gid: u32) -> Vec<CString> {
    match forked_init_main(OutsideIds::new(uid, gid)) {
        StageEnd::Exit(code) => sys::exit_now(code),
        StageEnd::Program(program) => {
            // Every object of the init this process inherited has been dropped on the
            // way back (their fds closed); anything left above the warm channel is
            // closed here, as a cold program's exec would close it.
            if sys::close_fds_from(WARM_FD + 1).is_err() {
                sys::exit_now(super::program::EXIT_EXEC_FAILED);
            }
            program.env
        }
    }
}
