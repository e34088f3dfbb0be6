//! The init: PID 1 of the run's pid namespace, forked by the stage. It builds the
//! run's filesystem view, installs the exec guard (`execguard`), forks the program as
//! PID 2, answers the run's exec notifications, reaps everything that dies in the
//! namespace, and relays the program's wait status and usage to the broker.
//!
//! The program is never PID 1: PID 1 of a namespace gets only the signals it has
//! handlers for (pid_namespaces(7)), so it would ignore SIGXCPU and CPU limits would
//! not end it. When the init exits the kernel SIGKILLs every other process of the
//! namespace, daemonized or not, and the stage's `waitpid` on the init returns only
//! once they are all reaped: that is how the run's cleanup is verified, not assumed.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::signalfd::SignalFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::prctl;
use nix::sys::signal::Signal;

use super::apparmor::open_host_proc;
use super::error::{report_failure, JailError};
use super::execguard::{install_exec_guard, ExecGuard};
use super::mounts::make_mounts_private;
use super::program::{exec_program, return_program, ExecSpec};
use super::rootfs::{build_and_enter, seal_root};
use super::seccomp;
use super::stage::{Returned, Start};
use super::sys::{self, Forked, Reaped};
use super::userns::switch_to_run_identity;
use super::warm::{self, Warm};
use super::workspace::{mount_workspace_tmpfs, populate_workspace, prepare_warm_workspace};
use codejail_plan::layout::WORKSPACE_MOUNT;
use codejail_plan::{write_frame, Plan, StageReport};

/// What the init needs from the stage, besides the plan.
pub(crate) struct InitContext<'a> {
    /// The plan.
    pub(crate) plan: &'a Plan,
    /// The program's exec arguments, prepared by the stage.
    pub(crate) spec: &'a ExecSpec,
    /// The control pipe, which only the stage watches: the init closes it (a warm
    /// jail's puts the program's hand-over socket on its number).
    pub(crate) control: File,
    /// A warm jail's hand-over pipe from the broker.
    pub(crate) handover: Option<File>,
    /// `/dev/null`, to put on the init's stdio once the program holds the run's.
    pub(crate) null: &'a File,
    /// What ends the run if the broker goes away; it also says how the program
    /// starts ([`Tie::start`]).
    pub(crate) tie: Tie,
}

/// What ties the init to the broker's control pipe.
pub(crate) enum Tie {
    /// A spawned stage forked the init and watches the control pipe: the init dies
    /// with the stage (`PR_SET_PDEATHSIG`), and checks through the lifeline that the
    /// stage was still there when that was armed.
    Stage {
        /// The read end of the lifeline: a pipe that hangs up when the stage is gone.
        lifeline_read: OwnedFd,
        /// The init's copy of the lifeline's write end, closed first thing so that
        /// only the stage holds one.
        lifeline_write: OwnedFd,
    },
    /// A zygote cloned the init (`forked`): there is no stage, the init watches the
    /// control pipe itself and ends the run at its EOF, as a stage would.
    Control,
}

impl Tie {
    /// How the program starts: a spawned stage's execs the plan's program, a forked
    /// run's returns into the interpreter the zygote cloned.
    fn start(&self) -> Start {
        match self {
            Tie::Stage { .. } => Start::Exec,
            Tie::Control => Start::Return,
        }
    }
}

/// How the init's checklist ended in this process.
enum InitEnd {
    /// The run ended: the report to send.
    Ended(StageReport),
    /// This process is the program of a forked run, confined ([`Start::Return`]).
    Program(Returned),
}

/// The init's checklist, run in the forked PID 1; never returns in the init. Exits 0
/// after reporting the program's end, 1 after reporting a failed step. Returns only
/// in the program of a forked run ([`Start::Return`]), once it is confined.
pub(crate) fn run_init(ctx: InitContext<'_>, report: &mut File) -> Returned {
    match init_steps(ctx, report) {
        Ok(InitEnd::Program(program)) => program,
        Ok(InitEnd::Ended(exited)) => {
            // If the broker is gone there is no one to tell; exiting still ends the run.
            let _ = write_frame(report, &exited);
            sys::exit_now(0)
        }
        Err(error) => {
            report_failure(report, &error);
            sys::exit_now(1)
        }
    }
}

fn init_steps(ctx: InitContext<'_>, report: &mut File) -> Result<InitEnd, JailError> {
    let InitContext {
        plan,
        spec,
        control,
        handover,
        null,
        tie,
    } = ctx;
    let start = tie.start();
    // The run's inner identity, for the init and the program it forks (the stage
    // keeps its own: see `userns`).
    switch_to_run_identity()?;
    let watched = match tie {
        Tie::Stage {
            lifeline_read,
            lifeline_write,
        } => {
            // Die with the stage, first: if the broker kills the stage, the whole run
            // must go (the stage is single-threaded, so "parent thread exits" means
            // "stage exits").
            prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| JailError::TieToStage(e.into()))?;
            // The stage may have died between fork and prctl; the lifeline pipe
            // tells, once our own copy of its write end is closed.
            drop(lifeline_write);
            check_stage_alive(&lifeline_read)?;
            drop(lifeline_read);
            None
        }
        // No stage: the init watches the control pipe, on a number of its own (a
        // warm jail's program gets the hand-over socket on the control pipe's).
        Tie::Control => Some(control.try_clone().map_err(JailError::WatchControl)?),
    };
    // The control pipe is the stage's business (and the broker's kill switch); the
    // program must not hold it. A warm jail's program gets its hand-over socket on
    // that number instead (`warm`).
    let mut channel = match (&plan.warm, handover) {
        (Some(_), Some(handover)) => {
            let (ours, program_end) = warm::make_channel(control)?;
            Some((ours, program_end, handover))
        }
        _ => {
            drop(control);
            None
        }
    };
    // Nothing mounted from here on may propagate to the host (mount_namespaces(7)).
    make_mounts_private()?;
    // AppArmor's exec attribute is in a procfs, which the run's root has none of: the
    // host's, opened now, is the program's way to it (see `apparmor`).
    let host_proc = match &plan.apparmor_profile {
        Some(_) => Some(open_host_proc()?),
        None => None,
    };
    // The minimal read-only root, with the workspace (a fresh tmpfs, capped, dying
    // with the mount namespace) on its /tmp and no procfs; pivot_root leaves the host
    // behind.
    build_and_enter(plan, |at| mount_workspace_tmpfs(plan, at))?;
    // Files are written by the init, before any code of the user's runs (a warm
    // jail's at its hand-over).
    if plan.warm.is_some() {
        prepare_warm_workspace(plan, WORKSPACE_MOUNT)?;
    } else {
        populate_workspace(plan, WORKSPACE_MOUNT)?;
    }
    // Nothing more is mounted: the skeleton becomes read-only.
    seal_root()?;
    // The seccomp filter is compiled now (or was, by a fork server's zygote), by
    // trusted code with memory to spare, before rlimits can starve it; the program
    // only installs it.
    let filters = seccomp::compiled().map_err(JailError::CompileSeccomp)?;
    // Exec denial, on ourselves before the fork, so every process of the run inherits
    // the filter and no untrusted code exists yet; we hold its listener.
    let guard = if plan.allow_exec {
        None
    } else {
        Some(install_exec_guard()?)
    };
    // The run's own session and process group, which the program inherits: kill(0)
    // and killpg reach every process of a group whatever its pid namespace, and
    // without Landlock's signal scope (ABI < 6) a run sharing a uid with the stage,
    // the broker or another run's processes (one identity for all runs) could
    // otherwise signal theirs. Signals from inside the namespace to us, its PID 1,
    // are dropped unless we handle them.
    nix::unistd::setsid().map_err(|e| JailError::NewSession(e.into()))?;
    // The program is PID 2, never PID 1 (see the module doc).
    let program = match sys::fork().map_err(|source| JailError::Fork {
        what: "program",
        source,
    })? {
        Forked::Child => {
            // Nor the control pipe, which only the init watches.
            drop(watched);
            // The program holds the sentinel until its exec, and never the listener.
            let sentinel = guard.map(|(guard, sentinel)| {
                drop(guard);
                sentinel
            });
            if start == Start::Exec {
                exec_program(plan, spec, filters, report, sentinel, host_proc)
            }
            // A forked interpreter's: its end of the warm channel stays on its number
            // (the hook takes it), the init's end and the hand-over pipe close here.
            if let Some((ours, program_end, handover)) = channel.take() {
                let _ = std::os::fd::IntoRawFd::into_raw_fd(program_end);
                drop((ours, handover));
            }
            let program = return_program(plan, spec, filters, report, sentinel, host_proc);
            return Ok(InitEnd::Program(program));
        }
        Forked::Parent(pid) => pid,
    };
    drop(host_proc);
    // The program holds the run's stdio: the init gives it up, so that the output
    // pipes close once the program and what it started are done with them.
    sys::stdio_to(null.as_fd()).map_err(JailError::OpenNull)?;
    // A warm jail's program waits in its interpreter's start-up for the hand-over.
    let mut warm = match channel {
        Some((ours, program_end, handover)) => {
            drop(program_end);
            let preimport = plan.warm.as_ref().map(|w| w.preimport.as_slice());
            Some(Warm::start(
                ours,
                handover,
                preimport.unwrap_or_default(),
                start.shared_processes(),
            )?)
        }
        None => None,
    };
    // Only the program may hold the sentinel's write end, or it would never hang up.
    let mut guard = guard.map(|(mut guard, sentinel)| {
        drop(sentinel);
        guard.set_program(program);
        guard
    });
    // The stage asks us to end the run (REALTIME, cancel) with SIGTERM, so that we
    // can reap the run's processes ourselves and report what they used. SIGTERM and
    // SIGCHLD are blocked and taken synchronously, so neither can be missed.
    let signals = sys::init_signal_fd().map_err(JailError::Reap)?;
    loop {
        // Reap everything that has ended (orphans are re-parented to us) until the
        // program itself has.
        loop {
            match sys::wait4_nohang() {
                Ok(Some(reaped)) if reaped.pid == program => {
                    let before = warm.as_mut().map(Warm::used_before).unwrap_or_default();
                    return Ok(InitEnd::Ended(exit_report(&reaped, before)));
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(JailError::Reap(e)),
            }
        }
        let waiting = warm.as_ref().and_then(Warm::waiting_on);
        match wait_event(&signals, guard.as_ref(), waiting, watched.as_ref())? {
            Event::Terminate => {
                let before = warm.as_mut().map(Warm::used_before).unwrap_or_default();
                return terminate_run(before).map(InitEnd::Ended);
            }
            Event::ChildEnded => {}
            Event::Warm => {
                if let Some(w) = warm.as_mut() {
                    if !w.step(plan, program, report)? {
                        // Given up before its hand-over: end the run.
                        return terminate_run((0, 0)).map(InitEnd::Ended);
                    }
                }
            }
            Event::Exec => {
                if let Some(guard) = guard.as_mut() {
                    guard.answer()?;
                }
            }
        }
    }
}

/// What woke the init.
enum Event {
    /// The stage asks to end the run (SIGTERM), or the control pipe the init watches
    /// has reached its end (the broker's kill switch, or the broker is gone).
    Terminate,
    /// A child ended (SIGCHLD): reap.
    ChildEnded,
    /// An exec notification is pending.
    Exec,
    /// A warm jail's awaited fd is readable.
    Warm,
}

/// Wait for a signal, the control pipe's end (`control`: the init watches it when
/// no stage does), an exec notification or (a warm jail) its awaited fd. Signals and
/// the control pipe first: ending the run is never delayed by a stream of
/// notifications.
fn wait_event(
    signals: &SignalFd,
    guard: Option<&ExecGuard>,
    warm: Option<BorrowedFd<'_>>,
    control: Option<&File>,
) -> Result<Event, JailError> {
    loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let control_at = control.map(|pipe| {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let listener = guard.map(|guard| {
            fds.push(PollFd::new(guard.listener(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let warm_at = warm.map(|fd| {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(JailError::Reap(e.into())),
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let signalled = ready(&fds[0]);
        let notified = listener.is_some_and(|i| ready(&fds[i]));
        let warm_ready = warm_at.is_some_and(|i| ready(&fds[i]));
        let control_ready = control_at.is_some_and(|i| ready(&fds[i]));
        // The control pipe before the signals: a run that keeps the init busy reaping
        // (orphans exiting one after another) must not delay its own end.
        if let (true, Some(pipe)) = (control_ready, control) {
            let mut scratch = [0u8; 64];
            match (&*pipe).read(&mut scratch) {
                // EOF: the broker says kill (REALTIME, cancel) or the broker died.
                Ok(0) => return Ok(Event::Terminate),
                // Nothing else is expected on it; ignore stray bytes.
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(JailError::WatchControl(e)),
            }
        }
        if signalled {
            let mut terminate = false;
            loop {
                match signals.read_signal() {
                    Ok(Some(info)) => terminate |= info.ssi_signo == libc::SIGTERM as u32,
                    Ok(None) => break,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(JailError::Reap(e.into())),
                }
            }
            return Ok(if terminate {
                Event::Terminate
            } else {
                Event::ChildEnded
            });
        }
        if notified {
            return Ok(Event::Exec);
        }
        if warm_ready {
            return Ok(Event::Warm);
        }
    }
}

/// End the run on the stage's request: kill every other process of the namespace,
/// reap them all, and report their accumulated usage (less `before`, a warm jail's
/// CPU before its hand-over).
fn terminate_run(before: (u64, u64)) -> Result<StageReport, JailError> {
    sys::kill_all_others().map_err(JailError::Reap)?;
    loop {
        match sys::wait4_once() {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => break,
            Err(e) => return Err(JailError::Reap(e)),
        }
    }
    let rusage = sys::children_rusage().map_err(JailError::Reap)?;
    let (cpu_user_us, cpu_sys_us, max_rss_kib) = usage_of(&Reaped {
        pid: 0,
        status: 0,
        rusage,
    });
    let (cpu_user_us, cpu_sys_us) = (
        cpu_user_us.saturating_sub(before.0),
        cpu_sys_us.saturating_sub(before.1),
    );
    Ok(StageReport::Killed {
        cpu_user_us,
        cpu_sys_us,
        max_rss_kib,
    })
}

/// `Err` when the stage is already gone (its end of the lifeline hung up).
fn check_stage_alive(lifeline: &OwnedFd) -> Result<(), JailError> {
    let mut fds = [PollFd::new(lifeline.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::ZERO).map_err(|e| JailError::TieToStage(e.into()))?;
    if ready > 0 {
        return Err(JailError::TieToStage(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "the stage died before the init armed PR_SET_PDEATHSIG",
        )));
    }
    Ok(())
}

/// CPU (user, system) in microseconds and peak RSS in KiB of a reaped child, which
/// covers it and the descendants it waited for (getrusage(2)).
pub(crate) fn usage_of(reaped: &Reaped) -> (u64, u64, u64) {
    let micros = |tv: libc::timeval| {
        u64::try_from(tv.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000)
            .saturating_add(u64::try_from(tv.tv_usec).unwrap_or(0))
    };
    (
        micros(reaped.rusage.ru_utime),
        micros(reaped.rusage.ru_stime),
        u64::try_from(reaped.rusage.ru_maxrss).unwrap_or(0),
    )
}

/// The `Exited` report for the program's wait status and rusage (which covers the
/// program and the descendants it waited for: getrusage(2)), less `before` (a warm
/// jail's CPU before its hand-over, which is not the caller's).
fn exit_report(reaped: &Reaped, before: (u64, u64)) -> StageReport {
    let status = reaped.status;
    let (cpu_user_us, cpu_sys_us, max_rss_kib) = usage_of(reaped);
    let (cpu_user_us, cpu_sys_us) = (
        cpu_user_us.saturating_sub(before.0),
        cpu_sys_us.saturating_sub(before.1),
    );
    StageReport::Exited {
        exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        cpu_user_us,
        cpu_sys_us,
        max_rss_kib,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reaped(status: i32) -> Reaped {
        let mut rusage = sys::zeroed_rusage();
        rusage.ru_utime.tv_sec = 1;
        rusage.ru_utime.tv_usec = 5;
        rusage.ru_maxrss = 1234;
        Reaped {
            pid: 2,
            status,
            rusage,
        }
    }

    #[test]
    fn wait_status_is_decoded() {
        // exit(3): status 3 << 8; killed by SIGXCPU: status 24.
        match exit_report(&reaped(3 << 8), (0, 0)) {
            StageReport::Exited {
                exit_code,
                signal,
                cpu_user_us,
                max_rss_kib,
                ..
            } => {
                assert_eq!((exit_code, signal), (Some(3), None));
                assert_eq!(cpu_user_us, 1_000_005);
                assert_eq!(max_rss_kib, 1234);
            }
            other => panic!("unexpected {other:?}"),
        }
        match exit_report(&reaped(libc::SIGXCPU), (0, 0)) {
            StageReport::Exited {
                exit_code, signal, ..
            } => assert_eq!((exit_code, signal), (None, Some(24))),
            other => panic!("unexpected {other:?}"),
        }
    }
}
