//! The raw calls the broker side needs: pipes for the stage's fds 3 and 4 and the
//! dup2s that install them in the child between fork and exec; pidfds, to signal a
//! process of a run cgroup without racing pid reuse; and the broker's own protection
//! (not dumpable). Every `unsafe` block of the broker outside `jail` is here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::jail::plan::{CONTROL_FD, REPORT_FD};

/// The lowest fd number the stage pipes are moved to in the broker, so that the child's
/// stdio set-up (fds 0–2) and our dup2 onto 3 and 4 cannot clobber them.
const HIGH_FD: RawFd = 10;

/// A close-on-exec pipe whose two ends are both numbered >= 10.
pub fn pipe_high() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((dup_high(&r)?, dup_high(&w)?))
}

fn dup_high(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(HIGH_FD),
    )?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) just returned this new fd, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// In the child between fork and exec: put the control pipe on fd 3 and the report
/// pipe on fd 4 (dup2 clears FD_CLOEXEC on the new fd, so exactly these survive
/// exec), and clear the ambient capabilities, so that the stage does not inherit the
/// broker's CAP_SETUID/CAP_SETGID across exec (capabilities(7): ambient capabilities
/// are kept over execve of an unprivileged program). The stage needs no capability
/// in the initial namespace: it only creates a user namespace, which is unprivileged.
/// Only async-signal-safe calls, no allocation (STYLE.md §4).
pub fn install_stage_fds(control: RawFd, report: RawFd) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; touches no memory of ours. Clearing
    // an empty ambient set is a no-op, and PR_CAP_AMBIENT exists since Linux 4.3.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup2 on fds the parent keeps open across fork; no memory is touched.
    if unsafe { libc::dup2(control, CONTROL_FD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::dup2(report, REPORT_FD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `PR_SET_DUMPABLE 0` for the broker: no core dumps, and a process that is not
/// dumpable cannot be ptraced, nor its `/proc/<pid>/{environ,mem,maps,fd}` read, by
/// processes with the same uid unless they hold CAP_SYS_PTRACE over the broker's user
/// namespace (ptrace(2) "ptrace access mode checking", proc(5)). In dev mode a run's
/// uid *is* the broker's, so this is what keeps a run off the broker.
pub fn make_undumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the broker is dumpable (`PR_GET_DUMPABLE`).
pub fn is_dumpable() -> io::Result<bool> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r != 0)
}

/// A pidfd for `pid` (pidfd_open(2)): the jail stage's wrapper, one for the crate.
pub(crate) use crate::jail::sys::pidfd_open;

/// Send `signal` to the process a pidfd names (pidfd_send_signal(2), Linux 5.1).
/// `ESRCH` when it has exited meanwhile.
pub fn pidfd_kill(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: a raw syscall on a pidfd we own, with a null siginfo (the kernel then
    // fills it in as for kill(2)) and no flags; no memory of ours is written.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
