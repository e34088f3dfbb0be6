//! The jail stage: what `codejail-jail` does, from the fds the broker hands it to the
//! end of the run. [`run_stage`] reads the plan and builds the jail in one ordered
//! checklist (`build_jail`); the init (`super::init`) and the program
//! ([`super::program`]) continue the sequence inside the run's namespaces.
//!
//! The stage is single-threaded and never touches tokio: `unshare(CLONE_NEWUSER)`
//! refuses multi-threaded callers, `fork` is only sound there, and
//! `PR_SET_PDEATHSIG` (which ties the init to the stage) tracks a parent *thread*.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{pipe2, Pid};

use super::error::{report_failure, JailError};
use super::init::{run_init, InitContext, Tie};
use super::names::check_names;
use super::namespaces::{set_hostname, unshare_run_namespaces, unshare_time_namespace};
use super::program::ExecSpec;
use super::sys::{self, Forked};
use super::userns::{enter_user_namespace, map_own_ids, OutsideIds};
use codejail_plan::{read_frame, Plan, HANDOVER_FD, MAX_PLAN_FRAME};

/// Exit status of the stage when the run was built and has ended (however the
/// program ended: the reports say how).
pub const EXIT_RUN_ENDED: i32 = 0;
/// Exit status of the stage when it failed (after a `Failed` report when it could
/// send one) or the broker abandoned the run before it started.
pub const EXIT_FAILED: i32 = 1;
/// Exit status of the stage when fds 3 and 4 are not usable (nothing can be reported).
pub const EXIT_NO_FDS: i32 = 2;

/// How the run's program starts, once every layer is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// It execs the plan's program: a stage the broker spawned (`codejail-jail`).
    Exec,
    /// It returns into the interpreter its init was cloned from: a forked run's
    /// (`forked`). The program is then that interpreter, already started.
    Return,
}

impl Start {
    /// Processes of the run's user namespace with the run's uid besides the program's
    /// own tree, which `RLIMIT_NPROC` must leave room for: the stage and the init of a
    /// spawned stage; only the init when a zygote's child is the init itself
    /// ([`forked_init_main`]).
    pub(crate) fn shared_processes(self) -> u64 {
        match self {
            Start::Exec => 2,
            Start::Return => 1,
        }
    }
}

/// What the program takes back into the interpreter it was forked from
/// ([`Start::Return`]): the environment a cold run's `execve` would have given it.
#[derive(Debug)]
pub(crate) struct Returned {
    /// `KEY=value` strings, in the order a cold run gets them.
    pub(crate) env: Vec<std::ffi::CString>,
}

/// How a stage ended in this process.
pub(crate) enum StageEnd {
    /// The process is to exit with this status.
    Exit(i32),
    /// This process is the run's program ([`Start::Return`] only), confined.
    Program(Returned),
}

/// Run the jail stage: take fds 3 and 4, build the jail, supervise it, and return the
/// process exit status ([`EXIT_RUN_ENDED`], [`EXIT_FAILED`] or [`EXIT_NO_FDS`]). A
/// failed step is reported on fd 4 as `StageReport::Failed`; nothing is ever written
/// to fds 0-2, which belong to the program.
pub fn run_stage() -> i32 {
    let Ok((control, mut report, handover)) = sys::take_stage_fds() else {
        return EXIT_NO_FDS;
    };
    match build_jail(control, handover, &mut report) {
        Ok(()) => EXIT_RUN_ENDED,
        Err(error) => {
            report_failure(&mut report, &error);
            EXIT_FAILED
        }
    }
}

/// The init of a forked run: a zygote's child, cloned into the run's new user, mount,
/// pid, network, IPC and UTS namespaces (so it is their PID 1 already), with the
/// broker's fds in place and the run's cgroup entered. `outside` are the ids its user
/// namespace maps (the zygote's effective ids at the clone: the run's). There is no
/// stage process: the init watches the control pipe itself. Returns only in the run's
/// program, confined; in the init, the status to exit with.
pub(crate) fn forked_init_main(outside: OutsideIds) -> StageEnd {
    let Ok((control, mut report, handover)) = sys::take_stage_fds() else {
        return StageEnd::Exit(EXIT_NO_FDS);
    };
    match build_forked_init(control, handover, &mut report, outside) {
        Ok(program) => StageEnd::Program(program),
        Err(error) => {
            report_failure(&mut report, &error);
            StageEnd::Exit(EXIT_FAILED)
        }
    }
}

/// What a stage does before any namespace of its own, spawned or forked: the fds, the
/// process's state, the plan and its checks. Returns the plan, the program's exec
/// arguments and a warm jail's hand-over pipe.
fn prepare(
    control: &mut File,
    handover: Option<File>,
    start: Start,
) -> Result<(Plan, ExecSpec, Option<File>), JailError> {
    // Sanitize first: nothing of the broker's beyond the fd contract may reach the
    // jail (a leaked fd is an escape: CVE-2024-21626). The environment is never
    // passed on: the program gets exactly the plan's.
    sys::close_fds_from(HANDOVER_FD + 1).map_err(JailError::CloseInheritedFds)?;
    // Not dumpable: no process of the run's uid may ptrace the stage or open its
    // /proc files (it holds the broker's pipes). The kernel made it dumpable at exec
    // (its ids did not change there); the init and the program inherit this until the
    // program's exec.
    nix::sys::prctl::set_dumpable(false).map_err(|e| JailError::MakeUndumpable(e.into()))?;
    // fork and unshare(CLONE_NEWUSER) are only sound/allowed single-threaded.
    check_single_threaded()?;
    // A known umask, so the workspace gets exactly the modes the plan asks for.
    umask(Mode::from_bits_truncate(0o022));
    // The plan: one frame, its length capped before anything is allocated.
    let plan = read_plan(control)?;
    // Names again: the broker checked them, but this is the check that counts.
    check_names(&plan)?;
    // A program that returns into a forked interpreter is a warm jail's (it waits for
    // its request in the interpreter's start-up hook).
    if start == Start::Return && plan.warm.is_none() {
        return Err(JailError::ValidatePlan(
            "a forked run needs a warm plan".to_string(),
        ));
    }
    // The hand-over pipe is a warm jail's (for its init); a cold run has none.
    let handover = match (&plan.warm, handover) {
        (None, _) => None,
        (Some(_), Some(pipe)) => Some(pipe),
        (Some(_), None) => {
            return Err(JailError::ValidatePlan(format!(
                "a warm plan needs the hand-over pipe on fd {HANDOVER_FD}"
            )))
        }
    };
    // C strings for execve now, so a bad plan fails before any namespace exists.
    let spec = ExecSpec::from_plan(&plan)?;
    Ok((plan, spec, handover))
}

/// The forked init's checklist: [`prepare`], then what the stage would do in the
/// namespaces the zygote's clone made, then the init's own (`init_steps`).
fn build_forked_init(
    mut control: File,
    handover: Option<File>,
    report: &mut File,
    outside: OutsideIds,
) -> Result<Returned, JailError> {
    let (plan, spec, handover) = prepare(&mut control, handover, Start::Return)?;
    // Our own id maps, as a stage writes them: the namespace's owner, the zygote's
    // effective uid at the clone, is the run's uid we map.
    map_own_ids(outside)?;
    // The time namespace, for our children only (its offsets must be set before any
    // process is in it): the program is the first, as in a spawned stage's run.
    unshare_time_namespace()?;
    set_hostname(&plan.hostname)?;
    // /dev/null before the root moves, for the init to give up the run's stdio.
    let null = open_null()?;
    let program = run_init(
        InitContext {
            plan: &plan,
            spec: &spec,
            control,
            handover,
            null: &null,
            tie: Tie::Control,
        },
        report,
    );
    // Only the run's program gets here (the init exits inside `run_init`). The plan
    // and the spec are left allocated, not freed: each free would write heap pages the
    // program shares copy-on-write with its init and the zygote, for nothing (they
    // hold no fd; the process ends with the run).
    std::mem::forget(plan);
    std::mem::forget(spec);
    Ok(program)
}

/// The stage's checklist, in order. Each step is one call; the comment says why it
/// sits where it does. Returns once the init ran and has ended, with every process
/// of the run.
fn build_jail(
    mut control: File,
    handover: Option<File>,
    report: &mut File,
) -> Result<(), JailError> {
    let (plan, spec, handover) = prepare(&mut control, handover, Start::Exec)?;
    // (The broker has already moved us into the run's cgroup, before sending the plan:
    // everything from here on is charged to the run.)
    // The user namespace first: it grants the capabilities every later step needs. We
    // are the run's outside uid and gid already (the broker switched before exec), so
    // the namespace, and what its processes hold, is charged to the run's uid.
    let outside = enter_user_namespace()?;
    // Our own id maps: the run's outside ids, as the run's inner id.
    map_own_ids(outside)?;
    // The other namespaces, owned by the run's user namespace; our next child is the
    // run's PID 1.
    unshare_run_namespaces()?;
    // The host name lives in the new UTS namespace.
    set_hostname(&plan.hostname)?;
    // A pipe that hangs up when the stage dies, for the init to check that
    // PR_SET_PDEATHSIG was armed in time.
    let (lifeline_read, lifeline_write) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| JailError::CreateLifeline(e.into()))?;
    // /dev/null, opened now (before the init's pivot_root moves our root too), for the
    // stage and the init to give up the run's stdio once their child holds it.
    let null = open_null()?;
    // Fork the init; it builds the rest inside the namespaces and never returns.
    let init = match sys::fork().map_err(|source| JailError::Fork {
        what: "init",
        source,
    })? {
        Forked::Child => {
            // Never returns: the init exits, its program execs or exits.
            run_init(
                InitContext {
                    plan: &plan,
                    spec: &spec,
                    control,
                    handover,
                    null: &null,
                    tie: Tie::Stage {
                        lifeline_read,
                        lifeline_write,
                    },
                },
                report,
            );
            sys::exit_now(EXIT_FAILED)
        }
        Forked::Parent(pid) => Pid::from_raw(pid),
    };
    drop(lifeline_read);
    // The init holds the run's stdio now: the output pipes close when the run's
    // processes are done with them, not when the stage exits.
    sys::stdio_to(null.as_fd()).map_err(JailError::OpenNull)?;
    drop(null);
    // Supervise: the broker closing the control pipe (or dying) kills the run; the
    // init's end (after every process of the run is gone) ends the stage.
    let supervised = supervise_init(&mut control, init);
    drop(lifeline_write);
    supervised
}

fn open_null() -> Result<File, JailError> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(JailError::OpenNull)
}

fn check_single_threaded() -> Result<(), JailError> {
    match sys::thread_count() {
        Ok(1) => Ok(()),
        Ok(n) => Err(JailError::CheckSingleThreaded(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{n} threads"),
        ))),
        Err(e) => Err(JailError::CheckSingleThreaded(e)),
    }
}

fn read_plan(control: &mut File) -> Result<Plan, JailError> {
    read_frame(control, MAX_PLAN_FRAME)
        .map_err(JailError::ReadPlan)?
        .ok_or(JailError::NoPlan)
}

/// Wait for the init to end, killing it when the control pipe reaches EOF; then reap
/// it. When `waitpid` returns, the kernel has killed and reaped every process of the
/// run's pid namespace (pid_namespaces(7)).
fn supervise_init(control: &mut File, init: Pid) -> Result<(), JailError> {
    let watched = watch_init(control, init);
    if watched.is_err() {
        // Whatever went wrong, the run must not outlive the stage's attention.
        let _ = kill(init, Signal::SIGKILL);
    }
    sys::wait4_pid(init.as_raw()).map_err(JailError::WatchInit)?;
    watched
}

/// How long the init gets to end the run itself (killing and reaping every process,
/// then reporting their usage) before the stage SIGKILLs it.
const TERMINATE_GRACE_MS: u16 = 1000;

/// End the run: ask the init (SIGTERM, which it handles), then SIGKILL it if it has
/// not ended within the grace period. Either way its death empties the namespace.
fn end_run(pidfd: &std::os::fd::OwnedFd, init: Pid) -> Result<(), JailError> {
    kill(init, Signal::SIGTERM).map_err(|e| JailError::WatchInit(e.into()))?;
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    let ended = matches!(poll(&mut fds, PollTimeout::from(TERMINATE_GRACE_MS)), Ok(n) if n > 0);
    if !ended {
        kill(init, Signal::SIGKILL).map_err(|e| JailError::WatchInit(e.into()))?;
    }
    Ok(())
}

/// Poll the control pipe and a pidfd of the init until the init ends or the control
/// pipe hangs up (then kill the init).
fn watch_init(control: &mut File, init: Pid) -> Result<(), JailError> {
    let pidfd = sys::pidfd_open(init.as_raw()).map_err(JailError::WatchInit)?;
    let mut scratch = [0u8; 64];
    loop {
        let mut fds = [
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(JailError::WatchInit(e.into())),
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let (control_ready, init_ended) = (ready(&fds[0]), ready(&fds[1]));
        if init_ended {
            return Ok(());
        }
        if control_ready {
            match control.read(&mut scratch) {
                // EOF: the broker says kill (REALTIME, cancel) or the broker died.
                Ok(0) => {
                    return end_run(&pidfd, init);
                }
                // Nothing else is expected after the go-ahead; ignore stray bytes.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(JailError::WatchInit(e)),
            }
        }
    }
}
