//! The daemon front's few raw kernel calls (the jail and the run supervision keep
//! theirs in `jail::sys` and `run::sys`): taking ownership of the listening socket
//! systemd passed as fd 3, and reading a peer's supplementary groups with
//! `SO_PEERGROUPS`, which neither std nor nix wraps. Each `unsafe` block states its
//! invariant; callers get safe functions.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the inherited fd has been adopted: a second [`OwnedFd`] for the same
/// number would close it twice.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// Take ownership of `fd`, an open descriptor this process inherited at exec and that
/// nothing else in the process owns (systemd's first passed socket, fd 3,
/// sd_listen_fds(3)). Fails when the fd is not open, or when called a second time.
pub(crate) fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // F_GETFD fails with EBADF on a closed descriptor: never wrap a number that is not
    // an open fd (it could be opened later by someone else and then closed by us).
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).map_err(io::Error::from)?;
    if ADOPTED.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the inherited socket was already adopted",
        ));
    }
    // SAFETY: `fd` is open (checked above), it was inherited across exec (the caller
    // checked LISTEN_PID names this process, so systemd passed it to us), nothing in
    // this process has wrapped it before (the ADOPTED flag, set exactly once), and the
    // returned OwnedFd becomes its only owner, so it is closed exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The supplementary groups of the peer of a connected Unix socket, as they were when
/// it called connect(2) (`SO_PEERGROUPS`, Linux >= 4.13, socket(7)). `SO_PEERCRED`
/// carries only the primary gid.
pub(crate) fn peer_groups(sock: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    // Most processes have few groups; the kernel says how many when the buffer is too
    // small (ERANGE with `len` set), up to NGROUPS_MAX (65536).
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * size_of::<libc::gid_t>())
            .map_err(|_| io::Error::other("group buffer too large"))?;
        // SAFETY: `sock` is a valid open fd for the duration of the call (a borrow);
        // the kernel writes at most `len` bytes into `groups`, which is valid for
        // `len` bytes of writes, and updates `len` through a valid pointer.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(needed.min(groups.len()));
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || needed <= groups.len() || needed > 65536 {
            return Err(err);
        }
        groups.resize(needed, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn peer_groups_of_a_socketpair_are_ours() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut got = peer_groups(a.as_fd()).expect("SO_PEERGROUPS");
        let mut ours: Vec<u32> = nix::unistd::getgroups()
            .expect("getgroups")
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        got.sort_unstable();
        ours.sort_unstable();
        assert_eq!(got, ours);
    }

    #[test]
    fn a_closed_fd_is_never_adopted() {
        // Far above anything a test process has open.
        let e = adopt_inherited_fd(987_654).expect_err("not open");
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }
}
