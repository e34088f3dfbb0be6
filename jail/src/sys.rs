//! Every raw system call of the jail stage that needs `unsafe`, each behind a safe
//! wrapper whose `// SAFETY:` comment states the invariant it relies on. The rest of
//! `jail` calls these wrappers (or `nix`'s safe ones) and holds no `unsafe` itself.
//!
//! These are `pub(crate)` and meant for the single-threaded `codejail-jail` process
//! only; the broker (a tokio process) must never call them.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use codejail_plan::{CONTROL_FD, HANDOVER_FD, REPORT_FD};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Set once [`take_stage_fds`] has handed out fds 3 and 4.
static STAGE_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Take ownership of the control pipe (fd 3, must be readable), the report pipe
/// (fd 4, must be writable) that the broker set up (see `plan.rs`), and the hand-over
/// pipe (fd 5, readable) when the broker passed one (warm jails only). Succeeds at
/// most once per process.
pub(crate) fn take_stage_fds() -> io::Result<(File, File, Option<File>)> {
    if STAGE_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "fds 3 and 4 were already taken",
        ));
    }
    let access = |fd: RawFd| {
        // SAFETY: F_GETFL only reads the status flags of an fd number; an unused
        // number yields EBADF, nothing else.
        cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) }).map(|flags| flags & libc::O_ACCMODE)
    };
    for (fd, wanted) in [(CONTROL_FD, libc::O_RDONLY), (REPORT_FD, libc::O_WRONLY)] {
        let mode = access(fd).map_err(|e| io::Error::new(e.kind(), format!("fd {fd}: {e}")))?;
        if mode != wanted && mode != libc::O_RDWR {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {fd} has the wrong access mode"),
            ));
        }
    }
    let handover = match access(HANDOVER_FD) {
        Ok(libc::O_RDONLY | libc::O_RDWR) => true,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {HANDOVER_FD} has the wrong access mode"),
            ))
        }
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => false,
        Err(e) => return Err(e),
    };
    // SAFETY: both fds are open (checked above) and were given to this process by
    // the broker for exactly this use; nothing else in the process owns them, and
    // STAGE_FDS_TAKEN makes sure they are wrapped only once.
    let control = unsafe { File::from_raw_fd(CONTROL_FD) };
    // SAFETY: as above, for the report fd.
    let report = unsafe { File::from_raw_fd(REPORT_FD) };
    // SAFETY: as above, for the hand-over fd, which is open when `handover` is set.
    let handover = handover.then(|| unsafe { File::from_raw_fd(HANDOVER_FD) });
    Ok((control, report, handover))
}

/// `dup2(fd, target)`, leaving `target` without `FD_CLOEXEC`. The caller owns
/// `target` afterwards (whatever was there is closed by the kernel: the caller must
/// know nothing else owns that number).
pub(crate) fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: dup2 takes plain integers; the caller guarantees that no object owns
    // `target` (see the doc comment).
    let fd = cvt(unsafe { libc::dup2(fd.as_raw_fd(), target) })?;
    // SAFETY: dup2 returned `target`, now a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Put `null` (an open `/dev/null`) on fds 0, 1 and 2: the stage and the init give up
/// the run's stdio once the process below them holds it, so that the broker sees the
/// output pipes close as soon as the program (and what it started) has.
pub(crate) fn stdio_to(null: BorrowedFd<'_>) -> io::Result<()> {
    for fd in 0..=2 {
        // SAFETY: dup2 takes plain integers; fds 0-2 belong to no Rust object of the
        // stage or the init (their stdio is never used: errors go to the report fd).
        cvt(unsafe { libc::dup2(null.as_raw_fd(), fd) })?;
    }
    Ok(())
}

/// Clear `FD_CLOEXEC` on `fd`, so that it survives `execve`.
pub(crate) fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD with an integer flag argument touches no memory.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop)
}

/// The CPU time (user + system, all threads) process `pid` has used so far
/// (clock_getcpuclockid(3)); the init reads its program's at hand-over.
pub(crate) fn process_cpu_time(pid: libc::pid_t) -> io::Result<std::time::Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid, writable clockid_t for the duration of the call.
    let rc = unsafe { libc::clock_getcpuclockid(pid, &mut clock) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    cvt(unsafe { libc::clock_gettime(clock, &mut ts) })?;
    Ok(std::time::Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    ))
}

/// prlimit(2) on process `pid`: set `(soft, hard)` of `resource` and return what was
/// in force before. Lowering needs no privilege when the caller has the target's uids.
pub(crate) fn prlimit(
    pid: libc::pid_t,
    resource: libc::__rlimit_resource_t,
    new: Option<(u64, u64)>,
) -> io::Result<(u64, u64)> {
    let wanted = new.map(|(soft, hard)| libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    });
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let new_ptr = wanted
        .as_ref()
        .map_or(std::ptr::null(), |w| w as *const libc::rlimit64);
    // SAFETY: `new_ptr` is null or points at a valid rlimit64 that outlives the call;
    // `old` is valid and writable for the duration of the call.
    cvt(unsafe { libc::prlimit64(pid, resource, new_ptr, &mut old) })?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// Close every fd from `first` up. Call only before this process opened any fd of
/// its own at or above `first` (it would close fds that Rust objects still own).
pub(crate) fn close_fds_from(first: RawFd) -> io::Result<()> {
    // Sound only because the caller guarantees that no object of this process owns
    // an fd in the range (the stage calls this first thing, before it opens anything).
    close_range_from(first, 0)
}

/// Mark every fd from `first` up close-on-exec (close_range(2) `CLOSE_RANGE_CLOEXEC`):
/// they stay usable until `execve` succeeds.
pub(crate) fn set_cloexec_from(first: RawFd) -> io::Result<()> {
    // CLOSE_RANGE_CLOEXEC only sets a flag on fds, it closes none: no owner is affected.
    close_range_from(first, libc::CLOSE_RANGE_CLOEXEC)
}

/// close_range(2) from `first` to the last fd, with `flags` (see the two callers for
/// why each use is sound).
fn close_range_from(first: RawFd, flags: libc::c_uint) -> io::Result<()> {
    let first =
        libc::c_uint::try_from(first).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: close_range takes plain integers and touches no memory; which fds it may
    // close or flag is the callers' invariant, stated at each.
    cvt_long(unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, flags) })?;
    Ok(())
}

/// The number of threads of this process (from `/proc/self/status`), to check the
/// stage's single-threadedness before it forks and unshares (and a zygote's before it
/// clones: `codejail_jail::forked::thread_count`).
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no Threads: line in /proc/self/status",
            )
        })
}

/// Which side of a [`fork`] we are on.
pub(crate) enum Forked {
    /// The new process.
    Child,
    /// The calling process; the child's pid.
    Parent(libc::pid_t),
}

/// `fork(2)`. Only for the single-threaded jail stage and the init it forks:
/// `run_stage` checks [`thread_count`] is 1 before the first fork, and neither the
/// stage nor the init ever starts a thread.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: the calling process is single-threaded (see the doc comment), so no
    // other thread can hold a lock (the allocator's, stdio's) that the child would
    // inherit locked; the child may therefore keep running ordinary Rust code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// `pidfd_open(2)`: an fd that becomes readable when the process `pid` ends.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and touches no memory of ours.
    let fd = cvt_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) })?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: on success the kernel returned a new fd (O_CLOEXEC by default for
    // pidfds) that nothing else in the process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One child reaped by [`wait4_any`].
pub(crate) struct Reaped {
    /// Its pid.
    pub(crate) pid: libc::pid_t,
    /// Its raw wait status (decode with `libc::WIFEXITED` and friends).
    pub(crate) status: libc::c_int,
    /// Its resource usage and that of the descendants it waited for.
    pub(crate) rusage: libc::rusage,
}

/// An all-zero `rusage`.
pub(crate) fn zeroed_rusage() -> libc::rusage {
    // SAFETY: `rusage` is a plain C struct of integers; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// `wait4(pid, ..., 0, ...)`: reap that child (or any, for -1), blocking; retries on
/// `EINTR`.
pub(crate) fn wait4_pid(which: libc::pid_t) -> io::Result<Reaped> {
    let mut status: libc::c_int = 0;
    let mut rusage = zeroed_rusage();
    loop {
        // SAFETY: `status` and `rusage` are valid, writable and correctly typed for
        // the duration of the call.
        let pid = unsafe { libc::wait4(which, &mut status, 0, &mut rusage) };
        if pid == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(Reaped {
            pid,
            status,
            rusage,
        });
    }
}

/// The signals the init takes synchronously: the stage's request to end the run
/// (SIGTERM) and a child's end (SIGCHLD).
fn init_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGCHLD);
    set
}

/// Block SIGTERM and SIGCHLD in the init and return a non-blocking signalfd that
/// delivers them: a blocked signal stays pending, so none can slip between a check
/// and a wait, and the init can `poll` it beside the exec listener. (PID 1 of a
/// namespace discards signals it neither handles nor blocks.)
pub(crate) fn init_signal_fd() -> io::Result<nix::sys::signalfd::SignalFd> {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let set = init_signals();
    set.thread_block().map_err(io::Error::from)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(io::Error::from)
}

/// Install `filter` on the calling thread with a user-notification listener
/// (`SECCOMP_FILTER_FLAG_NEW_LISTENER`, plus `extra_flags`). Returns the listener
/// (close-on-exec, as the kernel makes it). Without `no_new_privs` this needs
/// CAP_SYS_ADMIN in the caller's user namespace, which the init has (seccomp(2)).
pub(crate) fn install_listener_filter(
    filter: &[libc::sock_filter],
    extra_flags: libc::c_ulong,
) -> io::Result<OwnedFd> {
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | extra_flags;
    // SAFETY: `prog` points at `filter`, `len` instructions long, alive for the whole
    // call; the kernel copies the program and reads nothing of ours afterwards.
    let fd = cvt_long(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    })?;
    let fd = RawFd::try_from(fd)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "listener fd out of range"))?;
    // SAFETY: on success seccomp(2) returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SECCOMP_IOCTL_NOTIF_RECV`: take the next pending notification from `listener`.
/// `ENOENT` means its caller died (or was killed) before it could be received.
pub(crate) fn notif_recv(listener: BorrowedFd<'_>) -> io::Result<libc::seccomp_notif> {
    // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: `notif` is a valid, writable seccomp_notif for the duration of the call,
    // the size the ioctl number encodes.
    cvt(unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut notif as *mut libc::seccomp_notif,
        )
    })?;
    Ok(notif)
}

/// `SECCOMP_IOCTL_NOTIF_SEND`: answer notification `id`: let the call go on
/// (`allow`) or fail it with `errno`. `ENOENT` means its caller is gone.
pub(crate) fn notif_send(
    listener: BorrowedFd<'_>,
    id: u64,
    allow: bool,
    errno: i32,
) -> io::Result<()> {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: if allow { 0 } else { -errno },
        flags: if allow {
            libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
        } else {
            0
        },
    };
    // SAFETY: `resp` is a valid seccomp_notif_resp for the duration of the call; the
    // kernel only reads it.
    cvt(unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &resp as *const libc::seccomp_notif_resp,
        )
    })
    .map(drop)
}

/// `wait4(-1, WNOHANG)`: a child that has ended, if any (`None` when none has).
pub(crate) fn wait4_nohang() -> io::Result<Option<Reaped>> {
    let mut status: libc::c_int = 0;
    let mut rusage = zeroed_rusage();
    // SAFETY: `status` and `rusage` are valid, writable and correctly typed for the
    // duration of the call.
    let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut rusage) };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(Reaped {
            pid,
            status,
            rusage,
        })),
    }
}

/// One `wait4(-1)`, returning `EINTR` (as `ErrorKind::Interrupted`) instead of retrying.
pub(crate) fn wait4_once() -> io::Result<Reaped> {
    let mut status: libc::c_int = 0;
    let mut rusage = zeroed_rusage();
    // SAFETY: `status` and `rusage` are valid, writable and correctly typed for the
    // duration of the call.
    let pid = unsafe { libc::wait4(-1, &mut status, 0, &mut rusage) };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(Reaped {
        pid,
        status,
        rusage,
    })
}

/// `kill(-1, SIGKILL)` from the init: every other process of the pid namespace.
pub(crate) fn kill_all_others() -> io::Result<()> {
    // SAFETY: kill takes plain integers and touches no memory.
    if unsafe { libc::kill(-1, libc::SIGKILL) } == -1 {
        let e = io::Error::last_os_error();
        // ESRCH: nothing left to kill.
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// `getrusage(RUSAGE_CHILDREN)`: everything this process has reaped.
pub(crate) fn children_rusage() -> io::Result<libc::rusage> {
    let mut rusage = zeroed_rusage();
    // SAFETY: `rusage` is valid and writable for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut rusage) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(rusage)
}

/// `_exit(2)`: end the process now, without running destructors, atexit handlers or
/// stdio flushes (which belong to the process we were forked from).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no memory of ours; skipping
    // destructors is sound (leaking is always safe).
    unsafe { libc::_exit(code) }
}

/// `openat(2)` relative to `dir`, always with `O_CLOEXEC` added.
pub(crate) fn open_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is an open fd
    // for the duration of the borrow.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    })?;
    // SAFETY: openat returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat(2)` relative to `dir`.
pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })?;
    Ok(())
}

/// `symlinkat(2)`: create the link `name` in `dir` pointing at `target` (never
/// resolved).
pub(crate) fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call; `dir` is open.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
    Ok(())
}

/// Reset every catchable signal to its default action and unblock all signals, so
/// the program starts as if from a clean `execve`: dispositions set to "ignore"
/// survive `execve` (signal(7)) and Rust's runtime ignores `SIGPIPE` in the stage.
pub(crate) fn reset_signals() -> io::Result<()> {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL registers no code of ours as a handler. The
        // numbers glibc reserves for itself (32, 33) fail with EINVAL, which is
        // fine: they cannot have been set to ignore by us either.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    // SAFETY: `set` is a plain bitmask; sigemptyset initialises it before use and
    // sigprocmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        cvt(libc::sigemptyset(&mut set))?;
        cvt(libc::sigprocmask(
            libc::SIG_SETMASK,
            &set,
            std::ptr::null_mut(),
        ))?;
    }
    Ok(())
}
