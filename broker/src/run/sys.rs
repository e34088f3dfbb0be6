//! The raw calls the broker side of a run needs: pipes for the stage's fds 3 and 4,
//! and the dup2s that install them in the child between fork and exec.

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
/// pipe on fd 4. dup2 clears FD_CLOEXEC on the new fd, so exactly these survive exec.
/// Only async-signal-safe calls, no allocation (STYLE.md §4).
pub fn install_stage_fds(control: RawFd, report: RawFd) -> io::Result<()> {
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
