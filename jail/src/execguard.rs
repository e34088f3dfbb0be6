//! Exec denial: once the configured program has been exec'd, every `execve` and
//! `execveat` by any process of the run fails with `EACCES`, as under upstream's
//! AppArmor profile (no `subprocess`, no `ls`/`ps`, no `#!` script, no
//! `sys.executable`, no dynamic loader, no ELF in a memfd). A command may opt out with
//! `allow_exec = true` (the plan's `allow_exec`), for graders that legitimately spawn.
//!
//! # How
//!
//! The init installs a seccomp filter on itself, before it forks the program, that
//! sends `execve`/`execveat` to a user-notification listener the init holds
//! ([`super::seccomp::exec_filter`], seccomp_unotify(2)). Filters are inherited by
//! every child and cannot be removed, so every process of the run is under it. The
//! init answers each notification ([`ExecGuard::answer`]):
//!
//! - **allowed** only when it comes from the program's pid *and* the program has not
//!   exec'd yet. "Not yet" is a sentinel: a close-on-exec pipe whose only write end
//!   the program holds. The kernel closes it inside that very `execve` (before the new
//!   image runs a single instruction), so any notification that arrives after the
//!   program's code started sees the pipe hung up. A restarted `execve` notifies twice,
//!   which is why this is not a "first notification" counter: both are still the
//!   trusted one.
//! - **denied** with `EACCES` otherwise.
//!
//! `SECCOMP_USER_NOTIF_FLAG_CONTINUE` is unsafe for decisions that read the call's
//! pointer arguments (another thread may change them after the check: the TOCTOU of
//! seccomp_unotify(2), "Caveats"). This one never reads them: it depends only on
//! which process asks and when, and the only `execve` allowed happens before any
//! untrusted code exists.
//!
//! # Why the program cannot get around it
//!
//! - It cannot answer its own notifications: the listener is never in its hands
//!   (closed in the program right after `fork`; close-on-exec besides), there is no
//!   `/proc` to reach the init's fds through, `pidfd_getfd` and `ptrace` are denied by
//!   the seccomp policy, and Landlock's scopes keep it from signalling the init.
//! - It cannot install a listener of its own to take precedence: the kernel refuses a
//!   second listener in a filter chain that already has one (`EBUSY`,
//!   `has_duplicate_listener` in kernel/seccomp.c), and any other filter it adds can
//!   only be stricter (seccomp(2): the most restrictive action wins).
//! - There is no other way to exec: `uselib` and `io_uring` are denied by the policy,
//!   foreign-arch and x32 call numbers are killed by this filter itself.
//! - Killing the init ends the whole run (it is PID 1 of the run's pid namespace).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;

use super::error::JailError;
use super::seccomp::exec_filter;
use super::sys;

/// The init's side of exec denial: the listener and the sentinel's read end.
pub(crate) struct ExecGuard {
    /// The seccomp user-notification listener.
    listener: OwnedFd,
    /// The sentinel's read end, until it has hung up (the program exec'd).
    sentinel: Option<OwnedFd>,
    /// The program's pid (in the run's pid namespace, as notifications report it).
    program: Option<libc::pid_t>,
}

/// The program's side: the sentinel's write end, to hold (close-on-exec) until its
/// exec.
pub(crate) struct ExecSentinel(#[allow(dead_code)] OwnedFd);

/// Install the exec filter on the calling process (the init, before it forks the
/// program) and make the sentinel.
pub(crate) fn install_exec_guard() -> Result<(ExecGuard, ExecSentinel), JailError> {
    let (read, write) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| JailError::InstallExecGuard(e.into()))?;
    let listener = install_filter().map_err(JailError::InstallExecGuard)?;
    Ok((
        ExecGuard {
            listener,
            sentinel: Some(read),
            program: None,
        },
        ExecSentinel(write),
    ))
}

/// Install the exec filter with a listener whose notifications wait killably
/// (`SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, Linux 5.19: once received, only a fatal
/// signal interrupts the notifying `execve`). Kernels before 5.19 refuse the flag
/// (`EINVAL`); the filter is then installed without it, which is still sound: a
/// signal may interrupt and restart the program's own `execve`, which then notifies
/// again, and the decision (the program's pid, the sentinel not yet hung up) gives the
/// same answer both times; no counter of notifications is kept.
fn install_filter() -> std::io::Result<OwnedFd> {
    let filter = exec_filter();
    match sys::install_listener_filter(&filter, libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            sys::install_listener_filter(&filter, 0)
        }
        other => other,
    }
}

impl ExecGuard {
    /// The listener, to poll: readable when a notification is pending.
    pub(crate) fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Record the program's pid (the init's `fork` result).
    pub(crate) fn set_program(&mut self, pid: libc::pid_t) {
        self.program = Some(pid);
    }

    /// Whether the program has exec'd: its sentinel hung up. Checked after a
    /// notification was received, so an exec that completed before the notifying
    /// call was made is always seen.
    fn program_has_execd(&mut self) -> bool {
        let Some(sentinel) = &self.sentinel else {
            return true;
        };
        let mut fds = [PollFd::new(sentinel.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            // Not ready: the write end is still open, the program has not exec'd.
            Ok(0) => false,
            // Hung up (the only event possible: nothing is ever written), or poll
            // failed: either way, deny from now on.
            _ => {
                self.sentinel = None;
                true
            }
        }
    }

    /// Receive one pending notification and answer it. A caller that died before
    /// being received or answered (`ENOENT`) is not an error.
    pub(crate) fn answer(&mut self) -> Result<(), JailError> {
        let notif = match sys::notif_recv(self.listener.as_fd()) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::EINTR) | Some(libc::EAGAIN)
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(JailError::AnswerExec(e)),
        };
        let from_program = i64::from(notif.pid) == self.program.map_or(-1, i64::from);
        let allow = from_program && !self.program_has_execd();
        match sys::notif_send(self.listener.as_fd(), notif.id, allow, libc::EACCES) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(JailError::AnswerExec(e)),
            _ => Ok(()),
        }
    }
}
