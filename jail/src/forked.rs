//! A stage forked from a zygote: the sandbox interpreter, started once per command with
//! the pool's preimports and parked in its start-up hook (`jail/warm/_codejail_warm.py`,
//! zygote mode), forks a process per warm jail, and that process runs the stage's
//! checklist ([`run_forked_stage`]) exactly as a spawned `codejail-jail` does, with one
//! difference at the end: the run's program does not exec the interpreter, it returns
//! into the one it was forked from, confined, and goes on in the hook as a warm jail's
//! interpreter does (docs/architecture.md, "Fork server").
//!
//! The zygote's native half (the `codejail-zygote` library) puts the broker's fds on
//! the stage's numbers (stdio, then [`codejail_plan::CONTROL_FD`],
//! [`codejail_plan::REPORT_FD`], [`codejail_plan::HANDOVER_FD`]), enters the run's
//! cgroup and closes everything else before calling this.

use std::ffi::CString;

use super::stage::{stage_main, StageEnd, Start};
use super::sys;
use codejail_plan::WARM_FD;

/// Run the stage of a forked warm jail. In the stage and the init this never returns
/// (each exits with its status when the run is over); it returns only in the run's
/// program, confined, with the environment a cold run's `execve` would have given it,
/// holding fds 0-2 (the run's stdio) and [`WARM_FD`] (the hook's channel to the init)
/// and nothing else.
pub fn run_forked_stage() -> Vec<CString> {
    match stage_main(Start::Return) {
        StageEnd::Exit(code) => sys::exit_now(code),
        StageEnd::Program(program) => {
            // Every object of the stage and the init this process inherited has been
            // dropped on the way back (their fds closed); anything left above the warm
            // channel is closed here, as a cold program's exec would close it.
            if sys::close_fds_from(WARM_FD + 1).is_err() {
                sys::exit_now(super::program::EXIT_EXEC_FAILED);
            }
            program.env
        }
    }
}
