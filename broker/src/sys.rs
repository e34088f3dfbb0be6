//! Every raw kernel call of the broker (the jail stage has its own, in
//! `codejail_jail::sys`), each `unsafe` block with the invariant it relies on, behind
//! safe functions: for the daemon front, taking ownership of the listening socket
//! systemd passed as fd 3 and reading a peer's supplementary groups with
//! `SO_PEERGROUPS` (neither std nor nix wraps them); for the runs, pipes for the
//! stage's fds 3 and 4 and the dup2s that install them between fork and exec, pidfds
//! (to signal a process of a run without racing pid reuse), and the broker's own
//! protection (not dumpable).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use codejail_plan::{CONTROL_FD, HANDOVER_FD, REPORT_FD};

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

/// The lowest fd number the stage pipes are moved to in the broker, so that the child's
/// stdio set-up (fds 0–2) and our dup2 onto 3 and 4 cannot clobber them.
const HIGH_FD: RawFd = 10;

/// A close-on-exec pipe whose two ends are both numbered >= 10.
pub fn pipe_high() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((dup_high(&r)?, dup_high(&w)?))
}

/// `fd` again, as a close-on-exec fd numbered >= 10.
pub fn dup_high(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(HIGH_FD),
    )?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) just returned this new fd, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// In the child between fork and exec: put the control pipe on fd 3, the report
/// pipe on fd 4 and a warm jail's hand-over pipe on fd 5 (dup2 clears FD_CLOEXEC on
/// the new fd, so exactly these survive exec), clear the ambient capabilities, so that
/// the stage does not inherit the broker's CAP_SETUID/CAP_SETGID across exec
/// (capabilities(7): ambient capabilities are kept over execve of an unprivileged
/// program), join the run's cgroup(s) by writing `0` to each of `cgroup_procs` (fds
/// the parent opened), and take the run's identity ([`become_run_identity`]). The stage needs
/// no capability in the initial namespace: it only creates a user namespace, which is
/// unprivileged. Only async-signal-safe calls, no allocation.
pub fn install_stage_fds(
    control: RawFd,
    report: RawFd,
    handover: Option<RawFd>,
    cgroup_procs: &[RawFd],
    identity: StageIdentity,
) -> io::Result<()> {
    clear_ambient_caps()?;
    // The cgroups first, before a dup2 onto 3-5 could land on one of their fds.
    for &procs in cgroup_procs {
        // SAFETY: write(2) of a two-byte static buffer to an fd the parent keeps open.
        if unsafe { libc::write(procs, b"0\n".as_ptr().cast(), 2) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: dup2 on fds the parent keeps open across fork; no memory is touched.
    if unsafe { libc::dup2(control, CONTROL_FD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::dup2(report, REPORT_FD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(handover) = handover {
        // SAFETY: as above.
        if unsafe { libc::dup2(handover, HANDOVER_FD) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    become_run_identity(identity)
}

/// In the child of the broker that becomes a zygote (a fork server's interpreter,
/// `run::pool::zygote`), before exec: its socket to the broker on fd 3 (where the
/// interpreter's start-up hook looks), nothing else, and then either the runs' one
/// identity (the broker's own) with no capability, or, with per-run ids
/// (`keep_setid`), the broker's own ids with `CAP_SETUID` and `CAP_SETGID` kept
/// across the exec (ambient), with which it makes each clone as its run's ids
/// (`codejail_zygote`). Only async-signal-safe
/// calls, no allocation.
pub fn install_zygote_fd(
    sock: RawFd,
    identity: StageIdentity,
    keep_setid: bool,
    apparmor: Option<&CStr>,
) -> io::Result<()> {
    if let Some(request) = apparmor {
        request_exec_label(request)?;
    }
    if !keep_setid {
        clear_ambient_caps()?;
    } else {
        // capability.h: CAP_SETGID 6, CAP_SETUID 7.
        for cap in [6, 7] {
            // SAFETY: prctl with integer arguments only. Raising an ambient
            // capability needs it permitted and inheritable, as the broker's are.
            if unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            } < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: dup2 on an fd the parent keeps open across fork; no memory is touched.
    if unsafe { libc::dup2(sock, CONTROL_FD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // Nothing else: an fd the broker inherited without close-on-exec (a test runner's
    // jobserver pipe, say) would be copied into every child of the zygote.
    // SAFETY: close_range takes plain integers; in this child nothing needs an fd above
    // 3 (the pipe std uses to report a failed exec is close-on-exec and stays: the
    // flag CLOSE_RANGE_CLOEXEC only marks fds, and exec closes them).
    if unsafe {
        libc::syscall(
            libc::SYS_close_range,
            (CONTROL_FD + 1) as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    if keep_setid {
        Ok(())
    } else {
        become_run_identity(identity)
    }
}

/// Write `request` (`stack PROFILE`) to this thread's AppArmor exec attribute, the
/// per-LSM file or else the legacy one (async-signal-safe: open, write, close).
fn request_exec_label(request: &CStr) -> io::Result<()> {
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for attr in [
        c"/proc/thread-self/attr/apparmor/exec",
        c"/proc/thread-self/attr/exec",
    ] {
        // SAFETY: open, write and close on a C string and a buffer that outlive the
        // calls; no allocation.
        unsafe {
            let fd = libc::open(attr.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                last = io::Error::last_os_error();
                continue;
            }
            let bytes = request.to_bytes();
            let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            let error = io::Error::last_os_error();
            libc::close(fd);
            if n == bytes.len() as isize {
                return Ok(());
            }
            last = if n < 0 {
                error
            } else {
                io::Error::from(io::ErrorKind::WriteZero)
            };
        }
    }
    Err(last)
}

/// Clear the ambient capabilities (async-signal-safe: one prctl).
fn clear_ambient_caps() -> io::Result<()> {
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
    Ok(())
}

/// Who the stage runs as, outside: the run's uid and gid (real, effective and saved).
///
/// All three uids: under `no_new_privs` (systemd's `NoNewPrivileges=`), an exec whose
/// effective uid differs from its real one is a set-uid exec to the kernel, which then
/// resets the effective uid to the real one (commoncap's `cap_bprm_creds_from_file`,
/// Linux 6.1): the stage would run, and create the run's namespaces, as the broker's
/// uid. So the broker holds no uid in common with the stage, and signals it as its
/// owner (`pidfd_kill_as`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageIdentity {
    /// The run's outside uid.
    pub uid: u32,
    /// The run's outside gid.
    pub gid: u32,
    /// Clear the supplementary groups (the broker holds CAP_SETGID).
    pub clear_groups: bool,
}

impl From<crate::config::RunIdentity> for StageIdentity {
    fn from(identity: crate::config::RunIdentity) -> StageIdentity {
        StageIdentity {
            uid: identity.outer_uid,
            gid: identity.outer_gid,
            clear_groups: identity.clear_groups,
        }
    }
}

/// Take the run's identity in the stage's child before exec, so that the user
/// namespace the stage creates is owned, and charged, by the run's uid (see
/// `codejail_jail::userns`): the supplementary groups (when we may), then the gid,
/// then the uid, each only if it differs (dev: the broker's own ids, nothing to do).
/// Raw system calls: the child of a multi-threaded process must not use libc's
/// set*id wrappers, which signal the parent's other threads (gone in the child).
fn become_run_identity(id: StageIdentity) -> io::Result<()> {
    let check = |rc: libc::c_long| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    if id.clear_groups {
        // SAFETY: setgroups(0, NULL) reads no memory.
        check(unsafe { libc::syscall(libc::SYS_setgroups, 0 as libc::c_long, 0 as libc::c_long) })?;
    }
    let (mut rg, mut eg, mut sg, mut ru, mut eu, mut su) = (0, 0, 0, 0, 0, 0);
    // SAFETY: getresgid/getresuid write three ids into our stack variables.
    check(unsafe {
        libc::syscall(
            libc::SYS_getresgid,
            &mut rg as *mut libc::gid_t,
            &mut eg as *mut libc::gid_t,
            &mut sg as *mut libc::gid_t,
        )
    })?;
    // SAFETY: as above.
    check(unsafe {
        libc::syscall(
            libc::SYS_getresuid,
            &mut ru as *mut libc::uid_t,
            &mut eu as *mut libc::uid_t,
            &mut su as *mut libc::uid_t,
        )
    })?;
    if (rg, eg, sg) != (id.gid, id.gid, id.gid) {
        // SAFETY: integer arguments only.
        check(unsafe { libc::syscall(libc::SYS_setresgid, id.gid, id.gid, id.gid) })?;
    }
    if (ru, eu, su) != (id.uid, id.uid, id.uid) {
        // SAFETY: integer arguments only.
        check(unsafe { libc::syscall(libc::SYS_setresuid, id.uid, id.uid, id.uid) })?;
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

/// The size from which the broker's allocations are mappings of their own.
pub const MAPPED_FROM_BYTES: usize = 128 * 1024;

/// Have glibc's malloc serve every allocation of [`MAPPED_FROM_BYTES`] or more with a
/// mapping of its own, unmapped when freed (`M_MMAP_THRESHOLD`, mallopt(3)), for the
/// life of the process. By default the threshold starts there but rises to the size of
/// any such block that is freed (up to 32 MiB): after the first request's payload
/// was freed, the next ones came from the arenas (one per worker thread that asks),
/// whose freed memory stays resident unless it is at the very top of a heap, so the
/// broker's RSS stayed far above the request bytes it held. Fixed, the request
/// payloads' memory goes back to the kernel as soon as they are dropped. A no-op
/// without glibc.
pub fn map_big_allocations() -> io::Result<()> {
    #[cfg(target_env = "gnu")]
    {
        let bytes = libc::c_int::try_from(MAPPED_FROM_BYTES)
            .map_err(|_| io::Error::other("mmap threshold out of range"))?;
        // SAFETY: mallopt takes two integers and changes malloc's parameters under its
        // own lock; it touches no memory of ours.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) } != 1 {
            return Err(io::Error::other(
                "mallopt(M_MMAP_THRESHOLD) refused the value",
            ));
        }
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

/// A pidfd for `pid` (pidfd_open(2), Linux 5.3), close-on-exec as the kernel makes it.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and touches no memory of ours.
    match unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) } {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: on success the kernel returned a new fd that nothing else owns.
        fd => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
    }
}

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

/// Send `signal` to the process a pidfd names, whose real uid is `owner`: directly,
/// or, when that is refused with `EPERM`, with this thread's effective uid set to
/// `owner` for the one call. A run's processes are its own uid in a user namespace
/// the run's uid created, so the broker has no capability over them and kill(2)'s
/// rule (the sender's real or effective uid is the target's real or saved uid) is
/// the way in; the broker holds CAP_SETUID for exactly such identity changes.
///
/// The kernel keeps credentials per thread; only libc's wrappers make a set*id call
/// process-wide, so the raw system call changes this thread alone, and nothing else
/// runs on it until it is switched back (no `.await` in between). If switching back
/// fails the process aborts: it must never go on with another uid.
pub fn pidfd_kill_as(pidfd: &OwnedFd, signal: i32, owner: u32) -> io::Result<()> {
    match pidfd_kill(pidfd, signal) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        done => return done,
    }
    let mine = nix::unistd::geteuid().as_raw();
    if mine == owner {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    let keep = -1 as libc::c_long;
    // SAFETY: integer arguments only; changes this thread's effective uid.
    if unsafe { libc::syscall(libc::SYS_setresuid, keep, owner as libc::c_long, keep) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let sent = pidfd_kill(pidfd, signal);
    // SAFETY: as above, back to our own effective uid (our real uid, always allowed).
    if unsafe { libc::syscall(libc::SYS_setresuid, keep, mine as libc::c_long, keep) } < 0 {
        std::process::abort();
    }
    // An effective uid change resets the process's dumpable flag to fs.suid_dumpable:
    // the broker must stay undumpable (`make_undumpable`).
    if make_undumpable().is_err() {
        std::process::abort();
    }
    sent
}

/// Append to `buf` what can be read from the non-blocking `fd` now, at most `max`
/// bytes (a pipe tokio already set `O_NONBLOCK` on).
pub fn read_available(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, max: usize) {
    let mut chunk = [0u8; 4096];
    while buf.len() < max {
        match nix::unistd::read(fd.as_raw_fd(), &mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n.min(max - buf.len())]),
        }
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
