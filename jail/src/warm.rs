//! Warm jails: the init's side of a jail built before its request exists
//! ([`Plan::warm`]). Every layer is the cold run's, in the same order, exec included
//! (the interpreter's start is the run's one exec); the difference is what happens
//! between that exec and the user's code:
//!
//! 1. Before forking the program, the init puts one end of a socket pair on fd
//!    [`WARM_FD`] (the number the control pipe had); the program keeps it across its
//!    exec. The interpreter's start-up hook (`jail/warm/_codejail_warm.py`, installed
//!    in the sandbox venv) finds it, reads the preimports (`codejail-warm 1 numpy`),
//!    imports them and answers `ready`; the init reports [`StageReport::Ready`].
//! 2. The broker sends the request as a [`HandOver`] on fd 5 (the init's only). The
//!    init, outside the program's Landlock domain (the program cannot write its
//!    workdir), empties `tmp/` (an import may have written a cache there), caps the
//!    workspace tmpfs, writes the files exactly as a cold run's init does, sets the
//!    times of what the jail made at its build to now (`restamp`), and lowers the
//!    program's rlimits to the request's with prlimit(2).
//! 3. The init reads the program's CPU clock (the CPU used before the hand-over is not
//!    the caller's: it is taken off the reported usage), sends `go` and the script's
//!    arguments, and shuts its side down; the hook sets `sys.argv`, answers
//!    `ack <user µs> <system µs>` (its `os.times()`, which only splits the clock's
//!    total), closes fd 3, and CPython runs `jailed_code` as `__main__`.
//!
//! `RLIMIT_CPU` counts whole seconds of the process's life, so a limit of n seconds
//! is set to n + round(CPU used so far): the program gets n seconds of its own to
//! within half a second (the preimports cost 0.05 s for numpy, 0.3 s with matplotlib),
//! and exactly n when it has used less than half a second.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

use nix::sys::resource::{getrlimit, Resource};
use nix::sys::socket::{shutdown, socketpair, AddressFamily, Shutdown, SockFlag, SockType};

use super::error::{JailError, WarmLineError};
use super::names::check_names;
use super::program::ExecSpec;
use super::restamp::restamp_warm_jail;
use super::rlimits::apply_rlimits_to;
use super::workspace::hand_over_workspace;
use codejail_plan::layout::WORKSPACE_MOUNT;
use codejail_plan::{
    read_frame, write_frame, HandOver, Plan, StageReport, CONTROL_FD, MAX_PLAN_FRAME, WARM_FD,
};

/// The protocol line the hook expects first.
const GREETING: &str = "codejail-warm 1";
/// Longest line the hook may send (its `failed` message is capped below this).
const MAX_LINE: usize = 4096;

/// Where the warm jail is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The interpreter is starting and importing; its `ready` is awaited.
    Starting,
    /// Ready and waiting for the hand-over.
    Idle,
    /// Released; the hook's `ack` is awaited.
    Released,
    /// The user's code runs.
    Running,
}

/// The init's side of a warm jail.
pub(crate) struct Warm {
    /// The init's end of the socket pair.
    sock: File,
    /// The hand-over pipe from the broker, until the hand-over has been read.
    handover: Option<File>,
    state: State,
    /// CPU the program had used when it was released (its CPU clock, exact).
    used: std::time::Duration,
    /// CPU (user, system) µs the program used before the hand-over.
    before: (u64, u64),
    /// The run's processes with its uid that are not the program's (for NPROC).
    shared: u64,
}

/// Put the program's end of a new socket pair on [`WARM_FD`], in place of the control
/// pipe (which the program must never hold): called by the init before it forks the
/// program. Returns the init's end and the program's (to drop once forked).
pub(crate) fn make_channel(control: File) -> Result<(File, OwnedFd), JailError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| JailError::WarmChannel {
        call: "socketpair".into(),
        source: e.into(),
    })?;
    // The control pipe's number, given up without closing it: dup2 below replaces it.
    let number = control.into_raw_fd();
    if number != CONTROL_FD || WARM_FD != CONTROL_FD {
        return Err(JailError::WarmChannelFd { number });
    }
    let program =
        super::sys::dup_onto(theirs.as_fd(), WARM_FD).map_err(|source| JailError::WarmChannel {
            call: format!("dup2 onto fd {WARM_FD}"),
            source,
        })?;
    drop(theirs);
    Ok((File::from(ours), program))
}

impl Warm {
    /// Start the protocol: tell the hook what to import.
    pub(crate) fn start(
        mut sock: File,
        handover: File,
        preimport: &[String],
        shared: u64,
    ) -> Result<Warm, JailError> {
        let mut line = String::from(GREETING);
        for module in preimport {
            line.push(' ');
            line.push_str(module);
        }
        line.push('\n');
        sock.write_all(line.as_bytes())
            .map_err(JailError::WarmGreet)?;
        Ok(Warm {
            sock,
            handover: Some(handover),
            state: State::Starting,
            used: std::time::Duration::ZERO,
            before: (0, 0),
            shared,
        })
    }

    /// The fd the init waits on now, if any.
    pub(crate) fn waiting_on(&self) -> Option<BorrowedFd<'_>> {
        match self.state {
            State::Starting | State::Released => Some(self.sock.as_fd()),
            State::Idle => self.handover.as_ref().map(AsFd::as_fd),
            State::Running => None,
        }
    }

    /// CPU (user, system) µs used before the hand-over, read from the hook's `ack`
    /// (which it sent before any code of the user's ran) if it has not been yet.
    pub(crate) fn used_before(&mut self) -> (u64, u64) {
        if self.state == State::Released {
            // The program has ended or is being ended: its side is closed, so this
            // read does not block.
            let _ = self.read_ack();
        }
        self.before
    }

    /// Handle what the awaited fd has for us. `Ok(false)` when the broker gave up the
    /// jail before handing it a request (the run must end).
    pub(crate) fn step(
        &mut self,
        plan: &Plan,
        program: libc::pid_t,
        report: &mut File,
    ) -> Result<bool, JailError> {
        match self.state {
            State::Starting => {
                let line = read_line(&mut self.sock).map_err(JailError::WarmNotReady)?;
                match line.strip_prefix("failed ") {
                    _ if line == "ready" => {
                        write_frame(report, &StageReport::Ready).map_err(JailError::Report)?;
                        self.state = State::Idle;
                    }
                    Some(message) => return Err(JailError::Preimport(message.to_string())),
                    None => return Err(JailError::WarmNotReadyAnswer { line }),
                }
            }
            State::Idle => {
                let Some(mut pipe) = self.handover.take() else {
                    return Ok(false);
                };
                let handover: Option<HandOver> =
                    read_frame(&mut pipe, MAX_PLAN_FRAME).map_err(JailError::WarmReadHandOver)?;
                let Some(handover) = handover else {
                    return Ok(false);
                };
                self.hand_over(plan, handover, program)?;
                self.state = State::Released;
            }
            State::Released => {
                self.read_ack()?;
            }
            State::Running => {}
        }
        Ok(true)
    }

    /// Materialise the request and release the program.
    fn hand_over(
        &mut self,
        plan: &Plan,
        handover: HandOver,
        program: libc::pid_t,
    ) -> Result<(), JailError> {
        let HandOver {
            code,
            files,
            extra_files,
            args,
            limits,
        } = handover;
        let run = Plan {
            code: Some(code),
            files,
            extra_files,
            limits,
            ..plan.clone()
        };
        // The names again, as the stage checks a cold plan's.
        check_names(&run)?;
        // The exec a cold run of this request would make, and the kernel's verdict on
        // its size: this program was exec'd before the arguments existed, so without
        // this check arguments that fail a cold run (execve's E2BIG) would run here.
        // Same check, same error, same report as the cold program's failed execve.
        let (stack, _) =
            getrlimit(Resource::RLIMIT_STACK).map_err(|e| JailError::WarmStackLimit(e.into()))?;
        ExecSpec::from_plan(plan)?
            .with_args(&args)?
            .check_exec_size(stack)?;
        // (`from_plan` and `with_args` refused any argument with a NUL: the separators
        // are unambiguous.)
        let mut message = b"go".to_vec();
        for arg in &args {
            message.push(0);
            message.extend_from_slice(arg.as_bytes());
        }
        hand_over_workspace(&run, WORKSPACE_MOUNT)?;
        // Nothing the run can stat may tell when the jail was built.
        restamp_warm_jail(&run.workdir_name)?;
        // The limits count from now: the CPU already used is added to RLIMIT_CPU.
        let used = super::sys::process_cpu_time(program).map_err(JailError::WarmCpuClock)?;
        apply_rlimits_to(program, &run.limits, used, self.shared)?;
        self.used = used;
        self.sock
            .write_all(&message)
            .map_err(|source| JailError::WarmRelease {
                what: "releasing the interpreter",
                source,
            })?;
        shutdown(self.sock.as_raw_fd(), Shutdown::Write).map_err(|e| JailError::WarmRelease {
            what: "shutdown of the hand-over socket",
            source: e.into(),
        })?;
        Ok(())
    }

    fn read_ack(&mut self) -> Result<(), JailError> {
        self.state = State::Running;
        let line = read_line(&mut self.sock).map_err(JailError::WarmAck)?;
        let mut words = line.split(' ');
        let parsed: Option<(u64, u64)> =
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("ack"), Some(user), Some(system), None) => {
                    user.parse().ok().zip(system.parse().ok())
                }
                _ => None,
            };
        let (_, system) = parsed.ok_or(JailError::WarmBadAck { line })?;
        // The total is the CPU clock's at the release (exact); the hook's os.times()
        // (clock ticks) only splits it into user and system time.
        let total = u64::try_from(self.used.as_micros()).unwrap_or(u64::MAX);
        let system = u64::min(system, total);
        self.before = (total - system, system);
        Ok(())
    }
}

/// One `\n`-terminated line (without it), read a byte at a time so nothing after it
/// is consumed; EOF first is an error.
fn read_line(sock: &mut File) -> Result<String, WarmLineError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match sock.read(&mut byte) {
            Ok(0) => {
                return Err(WarmLineError::Closed {
                    after: (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned()),
                })
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_LINE => {
                return Err(WarmLineError::TooLong { max: MAX_LINE })
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WarmLineError::Read(e)),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}
