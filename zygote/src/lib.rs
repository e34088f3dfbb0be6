//! The native half of a fork server (docs/architecture.md, "Fork server"): a C library
//! (`libcodejail_zygote.so`, installed beside `codejail-jail`) that the sandbox
//! interpreter's start-up hook loads with `ctypes` in zygote mode
//! (`jail/warm/_codejail_warm.py`). The zygote is that interpreter, started once per
//! command by the broker with the pool's preimports imported; it never runs request
//! code and never sees a request's code, files, input or output. Its loop is here
//! ([`codejail_zygote_serve`], no Python per request); per warm jail it
//!
//! 1. receives one request from the broker on its socket (`receive`): the line `fork`
//!    (or `fork UID GID`: the run's own outside ids) with the warm jail's fds
//!    (SCM_RIGHTS);
//! 2. clones a child straight into the run's new namespaces (`spawn`, between the
//!    interpreter's own before- and after-fork calls, as `os.fork` makes them), with
//!    the run's ids as its effective ids for the clone, so that the run's user
//!    namespace belongs to the run's uid;
//! 3. answers with the child's pid and a pidfd of it, made by the clone (`answer`), by
//!    which the broker watches it (the kernel reaps it: [`codejail_zygote_init`]);
//!
//! and the child, without returning into the interpreter, puts the fds on the
//! stage's numbers, enters the run's cgroup, and runs as the run's init
//! ([`codejail_jail::run_forked_init`]). The clone returns only in the run's program,
//! which the init forked, confined; the hook then goes on as a warm jail's
//! interpreter does.
//!
//! The request's fds, in order: the run's stdin, stdout and stderr, the stage's control,
//! report and hand-over pipes, then the run's `cgroup.procs` files (none, one on v2, two
//! on v1), which the child writes its own pid to before anything else.
//!
//! Every exported function is `extern "C"` and returns a negative errno on failure
//! (the hook checks); nothing here panics across the boundary.

pub mod exit;

use std::ffi::c_int;
use std::io::IoSlice;
use std::os::fd::RawFd;

use codejail_plan::names::MAX_COMPONENT_LEN;
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The ids value that means "keep the zygote's".
pub const NO_ID: u32 = u32::MAX;
/// The zygote's effective uid and gid, read by [`codejail_zygote_init`]: what a child
/// cloned with the zygote's own ids maps.
static ZYGOTE_IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
/// The fds of a request before the cgroup files: stdin, stdout, stderr, control,
/// report, hand-over.
pub const STAGE_FDS: usize = 6;
/// Most fds one request carries (the stage's and two cgroup files, cgroup v1).
pub const MAX_REQUEST_FDS: usize = STAGE_FDS + 2;
/// Where the child parks the received fds while it puts them in place: above every
/// number they go to and every number the interpreter uses at start.
const PARK_FDS_AT: RawFd = 64;

fn errno_of(e: Errno) -> c_int {
    -(e as c_int)
}

/// Make the calling zygote what it must be before it forks anything: not dumpable (no
/// process of its uid may ptrace it or read its `/proc` files), without supplementary
/// groups when it may drop them (with per-run ids its children must not carry the
/// broker's groups into their runs, and inside their own user namespace they could no
/// longer drop them), and its children reaped by the kernel as they exit (`SIGCHLD`
/// ignored: the broker watches each through a pidfd), with what every run's init
/// shares compiled ([`codejail_jail::forked::prepare_zygote`]) and the interpreter's
/// fork calls found (`-ENOSYS` if it exports none: not CPython). Returns 0, or a
/// negative errno.
#[no_mangle]
pub extern "C" fn codejail_zygote_init() -> c_int {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        return errno_of(e);
    }
    // SAFETY: plain reads of our own ids.
    let _ = ZYGOTE_IDS.set(unsafe { (libc::geteuid(), libc::getegid()) });
    let may_drop = match caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETGID)
    {
        Ok(may) => may,
        Err(_) => return -libc::EIO,
    };
    if may_drop {
        // SAFETY: setgroups with an empty list reads no memory.
        if unsafe { libc::syscall(libc::SYS_setgroups, 0 as libc::c_long, 0 as libc::c_long) } < 0 {
            return errno_of(Errno::last());
        }
    }
    // SAFETY: SIG_IGN registers no code of ours as a handler.
    if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) } == libc::SIG_ERR {
        return errno_of(Errno::last());
    }
    // What every run's init would otherwise compute for itself (and copy pages for).
    if codejail_jail::forked::prepare_zygote().is_err() {
        return -libc::EIO;
    }
    match ForkCalls::find() {
        Some(calls) => {
            let _ = FORK_CALLS.set(calls);
            0
        }
        None => -libc::ENOSYS,
    }
}

/// The interpreter's own calls around a fork, as `os.fork` makes them:
/// `PyOS_BeforeFork`, then `PyOS_AfterFork_Parent` in the parent and
/// `PyOS_AfterFork_Child` in the child, found among the process's symbols (the
/// interpreter exports its C API for extension modules) by [`codejail_zygote_init`],
/// before the zygote answers `ready`.
#[derive(Clone, Copy)]
struct ForkCalls {
    before: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
}

static FORK_CALLS: std::sync::OnceLock<ForkCalls> = std::sync::OnceLock::new();

impl ForkCalls {
    fn find() -> Option<ForkCalls> {
        let find = |name: &std::ffi::CStr| {
            // SAFETY: dlsym with RTLD_DEFAULT only looks a name up among the objects
            // loaded into the process.
            let at = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            // SAFETY: each name is one of CPython's `void f(void)` functions
            // (Include/intrcheck.h), called here as such; a function pointer and a
            // data pointer have the same size on the platforms this builds for.
            (!at.is_null()).then(|| unsafe {
                std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn()>(at)
            })
        };
        Some(ForkCalls {
            before: find(c"PyOS_BeforeFork")?,
            parent: find(c"PyOS_AfterFork_Parent")?,
            child: find(c"PyOS_AfterFork_Child")?,
        })
    }
}

/// The zygote's loop, once it has answered `ready`: receive a request on `sock`, clone
/// its child between the interpreter's before- and after-fork calls (`spawn`), close
/// the request's fds, answer the broker with the child's pid and pidfd, and again. The
/// loop runs no Python, so after a fork the zygote writes (and copies) no page of the
/// interpreter's for the next request.
///
/// Returns 0 only in a run's program (the clone's child, through its init: see
/// `spawn`), once it has made the interpreter's after-fork call in the child
/// (`PyOS_AfterFork_Child`: no Python runs in the child before it, with the locks the
/// before-fork call took still held), with its environment stored at `env` and
/// `env_len` as `spawn` stores it. Returns `-ENOSYS` at once if
/// [`codejail_zygote_init`] found no fork calls, `-EINVAL` for a null pointer. The zygote itself never returns
/// otherwise: it exits with status 0 when the broker closes the socket, 1 on a
/// request that is not one or any failure (the broker then starts another zygote).
///
/// # Safety
///
/// `env` must point at a writable pointer and `env_len` at a writable `isize`; the
/// caller must hold the GIL (a `ctypes.PyDLL` call) in the zygote, single-threaded,
/// holding no fd its children need besides the requests' (see `spawn`).
#[no_mangle]
pub unsafe extern "C" fn codejail_zygote_serve(
    sock: c_int,
    env: *mut *const u8,
    env_len: *mut isize,
) -> c_int {
    let Some(&calls) = FORK_CALLS.get() else {
        return -libc::ENOSYS;
    };
    if env.is_null() || env_len.is_null() {
        return -libc::EINVAL;
    }
    let mut fds = [-1 as c_int; MAX_REQUEST_FDS];
    let mut ids = [NO_ID; 2];
    loop {
        // SAFETY: `fds` has room for MAX_REQUEST_FDS entries, `ids` for two.
        let n = unsafe {
            receive(
                sock,
                fds.as_mut_ptr(),
                MAX_REQUEST_FDS as c_int,
                ids.as_mut_ptr(),
            )
        };
        if n <= 0 {
            exit_now(if n == 0 { 0 } else { 1 })
        }
        let mut pidfd: c_int = -1;
        // SAFETY: the interpreter's own before-fork call, with the GIL held (the
        // caller's contract), as os.fork makes it.
        unsafe { (calls.before)() };
        // SAFETY: `pidfd` is ours, `fds` holds the `n` fds `receive` stored, `env` and
        // `env_len` are writable (the caller's contract); the process is the
        // single-threaded zygote (checked again by `spawn`).
        let pid = unsafe { spawn(ids[0], ids[1], &mut pidfd, fds.as_ptr(), n, env, env_len) };
        if pid == 0 {
            // SAFETY: the interpreter's after-fork call in the child, with the GIL
            // the zygote held, as os.fork makes it.
            unsafe { (calls.child)() };
            return 0;
        }
        // SAFETY: the interpreter's after-fork call in the parent, as above.
        unsafe { (calls.parent)() };
        if pid < 0 {
            exit_now(1)
        }
        // The child has its own copies; the kernel reaps it as soon as it exits
        // (SIGCHLD is ignored), so only the pidfd names it safely.
        for fd in &fds[..n as usize] {
            // SAFETY: each was received by `receive` and is owned by nothing else.
            unsafe { libc::close(*fd) };
        }
        let answered = answer(sock, pid, pidfd);
        // SAFETY: the clone made this pidfd for us; the broker has its own copy.
        unsafe { libc::close(pidfd) };
        if answered != 0 {
            exit_now(1)
        }
    }
}

/// The uid and gid of a request's line: `fork` gives [`NO_ID`] twice, `fork UID GID`
/// the two numbers; anything else `None`.
fn request_ids(line: &[u8]) -> Option<(u32, u32)> {
    let line = std::str::from_utf8(line).ok()?.strip_suffix('\n')?;
    let mut words = line.split(' ');
    if words.next()? != codejail_plan::FORK_REQUEST {
        return None;
    }
    match (words.next(), words.next(), words.next()) {
        (None, None, None) => Some((NO_ID, NO_ID)),
        (Some(uid), Some(gid), None) => {
            let (uid, gid) = (uid.parse().ok()?, gid.parse().ok()?);
            (uid != NO_ID && gid != NO_ID).then_some((uid, gid))
        }
        _ => None,
    }
}

/// Receive one request on `sock` into `fds` (room for `max` fds) and `ids` (the uid and
/// gid the child is to take, [`NO_ID`] for the zygote's): returns how many fds came
/// ([`STAGE_FDS`] and the cgroup files), 0 when the broker has closed the socket, a
/// negative errno on error (`-EPROTO` for a request that is not one).
///
/// # Safety
///
/// `fds` must point at `max` writable `c_int`s, `ids` at two writable `u32`s.
unsafe fn receive(sock: c_int, fds: *mut c_int, max: c_int, ids: *mut u32) -> c_int {
    let mut data = [0u8; 64];
    let mut space = nix::cmsg_space!([RawFd; MAX_REQUEST_FDS]);
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    let received = loop {
        match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(Errno::EINTR) => continue,
            other => break other,
        }
    };
    let msg = match received {
        Ok(msg) => msg,
        Err(e) => return errno_of(e),
    };
    let mut got: Vec<RawFd> = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmRights(rights) = cmsg {
                got.extend(rights);
            }
        }
    }
    let len = msg.bytes;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    if len == 0 && got.is_empty() {
        return 0;
    }
    let fits = usize::try_from(max).is_ok_and(|m| got.len() <= m);
    let asked = data.get(..len).and_then(request_ids);
    if asked.is_none() || truncated || got.len() < STAGE_FDS || !fits {
        for fd in got {
            // SAFETY: each fd was just received by this call and is owned by nobody else.
            unsafe { libc::close(fd) };
        }
        return -libc::EPROTO;
    }
    for (i, fd) in got.iter().enumerate() {
        // SAFETY: the caller guarantees `fds` has room for `max` entries, and `i` is
        // below `got.len()`, which is at most `max` (checked above).
        unsafe { *fds.add(i) = *fd };
    }
    let (uid, gid) = asked.unwrap_or((NO_ID, NO_ID));
    // SAFETY: the caller guarantees `ids` points at two writable entries.
    unsafe {
        *ids = uid;
        *ids.add(1) = gid;
    }
    got.len() as c_int
}

/// Answer the broker on `sock`: the child's pid as a line, `forked <pid>`, and the
/// pidfd its clone made (by which the broker waits for and kills the child; the kernel
/// reaps it). Returns 0, or a negative errno (`-EBADF` for a negative `pidfd`).
fn answer(sock: c_int, pid: c_int, pidfd: c_int) -> c_int {
    if pidfd < 0 {
        return -libc::EBADF;
    }
    let line = format!("{} {pid}\n", codejail_plan::FORKED);
    let iov = [IoSlice::new(line.as_bytes())];
    let rights = [pidfd];
    let cmsg = [ControlMessage::ScmRights(&rights)];
    loop {
        match sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return 0,
            Err(Errno::EINTR) => continue,
            Err(e) => return errno_of(e),
        }
    }
}

/// Clone the calling zygote into a child that is PID 1 of new user, mount, pid,
/// network, IPC and UTS namespaces ([`codejail_jail::forked::CLONE_FLAGS`]), as
/// `fork` would otherwise (no new stack: the child goes on from here on a copy of the
/// zygote's), and store a pidfd of it at `pidfd` (made by the clone itself: no pid
/// can be reused in between). With `uid`/`gid` (not [`NO_ID`]) the zygote takes them
/// as its effective ids for the clone and back at once after it, with its
/// `CAP_SETUID` and `CAP_SETGID`: the kernel makes the clone's effective uid the new
/// user namespace's owner, which is charged for what the run holds in it (`ucounts`),
/// and which the child may then map to itself without any capability. The real and
/// saved ids stay the zygote's, so the child can still enter the cgroup the broker
/// opened for it (cgroup v1 checks the opener's uid against the target's real or
/// saved uid) and no process of the run's uid can signal the zygote meanwhile.
///
/// The C library's own fork bookkeeping is done as its `fork` does it: the kernel
/// writes the child's thread id where the library keeps it (`CLONE_CHILD_SETTID` at
/// the address the library registered with `set_tid_address`), and the child
/// registers the zygote's robust-futex list head again (the kernel forgets it across
/// a fork). What does not run are C `pthread_atfork` handlers, which a native library
/// of the preimports may have installed for threads of its own: so the zygote must
/// have exactly one thread, checked here (`-EDEADLK` otherwise), as the start-up hook
/// checks it before it answers `ready`.
///
/// The child never returns into the interpreter: it becomes the run's init with the
/// request's `n` fds (`fds`, as `receive` returned them; see `child_main`), and the
/// clone returns 0 only in the run's program, which the init forked and confined,
/// with its environment stored at `env` and `env_len`: the address and length of the
/// strings the C `environ` points into, each `KEY=value` ended by a NUL (the
/// library's, for the process's life; as large as the run's plan makes it, as a cold
/// run's exec takes it). So the interpreter's after-fork work is done once per run,
/// by the program, and none of the init's pages is written by Python.
///
/// Returns the child's pid in the zygote, 0 in the run's program, a negative errno on
/// failure (the zygote's ids restored; `-EINVAL` for a request that has too few or too
/// many fds).
///
/// # Safety
///
/// `pidfd` must point at a writable `c_int`, `fds` at `n` readable `c_int`s, `env` at
/// a writable pointer and `env_len` at a writable `isize`. The caller must make the
/// interpreter's before-fork call just before and its after-fork calls just after
/// (`PyOS_BeforeFork`, `PyOS_AfterFork_Parent`, `PyOS_AfterFork_Child`), as `os.fork`
/// does, and hold no fd its child needs besides `fds` (the child closes every other).
unsafe fn spawn(
    uid: u32,
    gid: u32,
    pidfd: *mut c_int,
    fds: *const c_int,
    n: c_int,
    env: *mut *const u8,
    env_len: *mut isize,
) -> c_int {
    match codejail_jail::forked::thread_count() {
        Ok(1) => {}
        Ok(_) => return -libc::EDEADLK,
        Err(e) => return -e.raw_os_error().unwrap_or(libc::EIO),
    }
    let count = match usize::try_from(n) {
        Ok(count) if (STAGE_FDS..=MAX_REQUEST_FDS).contains(&count) => count,
        _ => return -libc::EINVAL,
    };
    if fds.is_null() || env.is_null() || env_len.is_null() {
        return -libc::EINVAL;
    }
    let mut given = [-1 as RawFd; MAX_REQUEST_FDS];
    // SAFETY: the caller guarantees `fds` points at `n` readable entries, and `count`
    // (which is `n`) is at most `given.len()`.
    given[..count].copy_from_slice(unsafe { std::slice::from_raw_parts(fds, count) });
    // SAFETY: plain reads of our own ids.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let switch = uid != NO_ID && gid != NO_ID;
    // A child with the run's ids must carry none of the broker's groups: inside its
    // own user namespace it could not drop them (`codejail_zygote_init` did).
    // SAFETY: getgroups with a zero size only counts.
    if switch && unsafe { libc::getgroups(0, std::ptr::null_mut()) } != 0 {
        return -libc::EPERM;
    }
    let mut tid_address: *mut c_int = std::ptr::null_mut();
    // SAFETY: PR_GET_TID_ADDRESS writes one pointer to the address given.
    let have_tid_address = unsafe {
        libc::prctl(
            libc::PR_GET_TID_ADDRESS,
            std::ptr::addr_of_mut!(tid_address) as libc::c_ulong,
        )
    } == 0
        && !tid_address.is_null();
    let mut robust_head: *mut libc::c_void = std::ptr::null_mut();
    let mut robust_len: libc::size_t = 0;
    // SAFETY: get_robust_list of the calling thread (0) writes one pointer and one size.
    let have_robust = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0 as libc::c_long,
            std::ptr::addr_of_mut!(robust_head),
            std::ptr::addr_of_mut!(robust_len),
        )
    } == 0;
    let keep = -1 as libc::c_long;
    if switch {
        // SAFETY: integer arguments only; the effective ids of this process change.
        let switched = unsafe {
            libc::syscall(libc::SYS_setresgid, keep, gid as libc::c_long, keep) == 0
                && libc::syscall(libc::SYS_setresuid, keep, uid as libc::c_long, keep) == 0
        };
        if !switched {
            let e = Errno::last();
            restore_ids(euid, egid);
            return errno_of(e);
        }
    }
    let mut flags = codejail_jail::forked::CLONE_FLAGS as u64 | libc::CLONE_PIDFD as u64;
    if have_tid_address {
        flags |= (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64;
    }
    let args = CloneArgs {
        flags,
        pidfd: pidfd as u64,
        child_tid: if have_tid_address {
            tid_address as u64
        } else {
            0
        },
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack is fork with namespace
    // flags: the child runs on its own copy of this stack and returns from here. The
    // kernel reads `args` (its own layout, `CloneArgs`) and writes the pidfd and the
    // child's tid to the addresses in it, which are valid: the caller's `pidfd`, and
    // the C library's own tid slot, which it registered for exactly this.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        if have_robust {
            // SAFETY: the head the zygote's thread had, at the same address in this
            // copy of its memory.
            unsafe { libc::syscall(libc::SYS_set_robust_list, robust_head, robust_len) };
        }
        // SAFETY: this is the fresh, single-threaded clone (the caller's contract).
        let (strings, len) = unsafe { child_main(&given[..count], uid, gid) };
        // SAFETY: the caller guarantees `env` and `env_len` are writable; an
        // allocation is never longer than `isize::MAX`.
        unsafe {
            env.write(strings);
            env_len.write(len as isize);
        }
        return 0;
    }
    let clone_errno = Errno::last();
    if switch {
        restore_ids(euid, egid);
    }
    if pid < 0 {
        return errno_of(clone_errno);
    }
    pid as c_int
}

/// The kernel's `struct clone_args` (clone3(2), `CLONE_ARGS_SIZE_VER2`: a kernel that
/// knows fewer fields takes the larger size when the fields it does not know are 0).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Take back the zygote's effective ids (its real ones: always allowed), and make it
/// undumpable again (a change of effective ids resets the flag).
fn restore_ids(euid: libc::uid_t, egid: libc::gid_t) {
    let keep = -1 as libc::c_long;
    // SAFETY: integer arguments only.
    let restored = unsafe {
        libc::syscall(libc::SYS_setresuid, keep, euid as libc::c_long, keep) == 0
            && libc::syscall(libc::SYS_setresgid, keep, egid as libc::c_long, keep) == 0
    };
    // A zygote that cannot be itself again must not fork anything more.
    if !restored || nix::sys::prctl::set_dumpable(false).is_err() {
        exit_now(1)
    }
}

/// The interpreter's script path, which each forked program points at its own run
/// directory ([`codejail_zygote_script_path`]).
struct ScriptPath {
    /// The interpreter's buffer (wide characters) that its config's field points at.
    buf: *mut libc::wchar_t,
    /// Its room, in wide characters.
    cap: usize,
    /// The script's name (the interpreter's `argv[0]`, relative), as bytes.
    name: Vec<u8>,
}

// SAFETY: the pointer is the zygote's own buffer, written only by the one thread of a
// forked child.
unsafe impl Send for ScriptPath {}
// SAFETY: as above.
unsafe impl Sync for ScriptPath {}

static SCRIPT_PATH: std::sync::OnceLock<ScriptPath> = std::sync::OnceLock::new();

/// In the zygote, once: the interpreter's config keeps the script's path as CPython made
/// it absolute at its start (from the zygote's cwd) in the buffer `buf` (room for `cap`
/// wide characters), and opens that path once site has ended. Each forked
/// program writes its own path there, its cwd (the run's directory) and `name` (`len`
/// bytes), before the clone returns in it ([`codejail_zygote_serve`]). Returns 0,
/// `-ENAMETOOLONG` when the path in the longest run directory a plan may name
/// (`longest_script_path`) would not fit `cap` (so no run can fail on it after its
/// init has forked the program, where it could not say why), or `-EINVAL`.
///
/// # Safety
///
/// `buf` must stay valid and writable for `cap` wide characters for the process's life;
/// `name` must point at `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn codejail_zygote_script_path(
    buf: *mut libc::wchar_t,
    cap: usize,
    name: *const u8,
    len: usize,
) -> c_int {
    if buf.is_null() || name.is_null() || cap == 0 {
        return -libc::EINVAL;
    }
    // SAFETY: the caller guarantees `name` points at `len` readable bytes.
    let name = unsafe { std::slice::from_raw_parts(name, len) }.to_vec();
    if longest_script_path(name.len()) > cap {
        return -libc::ENAMETOOLONG;
    }
    match SCRIPT_PATH.set(ScriptPath { buf, cap, name }) {
        Ok(()) => 0,
        Err(_) => -libc::EINVAL,
    }
}

/// The most wide characters, its NUL included, that the script's path (its name `len`
/// bytes long) takes in any run directory: the workdir of a name of `NAME_MAX` bytes
/// (the stage refuses a longer one), then the name. Decoding never makes more wide
/// characters than there are bytes.
fn longest_script_path(len: usize) -> usize {
    let workdir = codejail_plan::layout::program_workdir(&"x".repeat(MAX_COMPONENT_LEN));
    workdir.len() + 1 + len + 1
}

/// `bytes` as CPython decodes a path at its start (UTF-8, each byte that is not part
/// of a valid sequence as the lone surrogate U+DC80..U+DCFF: `surrogateescape`).
fn decode_path(bytes: &[u8]) -> Vec<libc::wchar_t> {
    let mut wide = Vec::with_capacity(bytes.len() + 1);
    for chunk in bytes.utf8_chunks() {
        wide.extend(chunk.valid().chars().map(|c| c as libc::wchar_t));
        wide.extend(
            chunk
                .invalid()
                .iter()
                .map(|&b| 0xDC00 + libc::wchar_t::from(b)),
        );
    }
    wide
}

/// Point the interpreter's script path at `cwd/name` ([`codejail_zygote_script_path`]).
fn write_script_path() -> Result<(), Errno> {
    let Some(path) = SCRIPT_PATH.get() else {
        return Err(Errno::EINVAL);
    };
    let cwd = nix::unistd::getcwd()?;
    let mut bytes = std::os::unix::ffi::OsStrExt::as_bytes(cwd.as_os_str()).to_vec();
    bytes.push(b'/');
    bytes.extend_from_slice(&path.name);
    let mut wide = decode_path(&bytes);
    wide.push(0);
    if wide.len() > path.cap {
        return Err(Errno::ENAMETOOLONG);
    }
    // SAFETY: `buf` has room for `cap` wide characters (the registration's contract),
    // `wide` is at most that long, and the two cannot overlap (`wide` is ours).
    unsafe { std::ptr::copy_nonoverlapping(wide.as_ptr(), path.buf, wide.len()) };
    Ok(())
}

/// In the zygote's child ([`spawn`]): put the request's fds (`given`, as [`receive`]
/// returned them) in place, enter the run's cgroup, close every other fd, and run as
/// the run's init, whose user namespace maps `uid`/`gid` (the ids the zygote cloned it
/// with; [`NO_ID`]: the zygote's own).
/// Returns only in the run's program, confined, with the interpreter's script path
/// pointing at the run's directory ([`codejail_zygote_script_path`]) and the
/// environment a cold run would have as its C environment (`environ`, in the plan's
/// order, as the exec would have set it), whose strings' buffer and length it
/// returns (for the hook's `os.environ`). In every other process of the run, and on
/// any failure (reported to the broker where the report pipe is in place), the
/// process exits.
///
/// # Safety
///
/// The caller must be a freshly forked, single-threaded process that holds no fd it
/// still needs (all are closed).
unsafe fn child_main(given: &[RawFd], uid: u32, gid: u32) -> (*const u8, usize) {
    // Undumpable first: the clone of a zygote whose effective ids changed inherits the
    // flag fs.suid_dumpable gave it, and it holds the broker's fds.
    if nix::sys::prctl::set_dumpable(false).is_err() {
        exit_now(1)
    }
    // The init waits for the run's processes: SIGCHLD as a fresh process has it, not
    // ignored as in the zygote.
    // SAFETY: SIG_DFL registers no code of ours as a handler.
    if unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) } == libc::SIG_ERR {
        exit_now(1)
    }
    if place_fds(given).is_err() {
        exit_now(1)
    }
    // The ids the namespace maps: the clone's effective ids, which are the run's, or
    // the zygote's own (the same numbers: the zygote's real ids).
    let (uid, gid) = if uid == NO_ID || gid == NO_ID {
        // Read before the clone: inside the new namespace, before its maps, every id
        // of ours reads as the overflow id.
        match ZYGOTE_IDS.get() {
            Some(ids) => *ids,
            None => exit_now(1),
        }
    } else {
        (uid, gid)
    };
    let vars = codejail_jail::run_forked_init(uid, gid);
    // Not for want of room (the registration made sure that any run directory's path
    // fits: [`codejail_zygote_script_path`]); only if getcwd itself fails.
    if write_script_path().is_err() {
        exit_now(codejail_jail::program::EXIT_EXEC_FAILED)
    }
    let strings = set_environ(&vars);
    // Freeing them would write the allocator's pages shared with the zygote, for
    // nothing: the process exits without them.
    std::mem::forget(vars);
    strings
}

/// Make `vars` the process's C environment, in their order, as a cold program's
/// `execve` would have, and return its strings' buffer and length: each `KEY=value`
/// ended by a NUL, which the array points into. Both are leaked: they are the
/// environment for the rest of the process's life (the C library's `setenv` copies
/// an array it did not make before it adds to it; `unsetenv` edits it in place, which
/// a leaked, writable array allows; neither writes the strings).
fn set_environ(vars: &[std::ffi::CString]) -> (*const u8, usize) {
    extern "C" {
        static mut environ: *mut *mut std::ffi::c_char;
    }
    let total = vars.iter().map(|v| v.as_bytes_with_nul().len()).sum();
    let mut strings: Vec<u8> = Vec::with_capacity(total);
    let mut starts = Vec::with_capacity(vars.len());
    for var in vars {
        starts.push(strings.len());
        strings.extend_from_slice(var.as_bytes_with_nul());
    }
    let len = strings.len();
    let base = strings.leak().as_mut_ptr();
    let mut array: Vec<*mut std::ffi::c_char> = starts
        .into_iter()
        // SAFETY: each start is an offset inside `strings`, where a string begins.
        .map(|start| unsafe { base.add(start) }.cast())
        .collect();
    array.push(std::ptr::null_mut());
    let array = array.leak().as_mut_ptr();
    // SAFETY: the process is single-threaded here (the caller's contract), so nothing
    // reads `environ` meanwhile; the array is NULL-terminated, each entry a string
    // ended by its NUL inside `strings`, and both live forever.
    unsafe { std::ptr::addr_of_mut!(environ).write(array) };
    (base.cast_const(), len)
}

/// Park the fds high, write this process's pid to each cgroup file, put the stage's
/// six on 0-5 and close everything else.
fn place_fds(given: &[RawFd]) -> Result<(), Errno> {
    let mut parked = Vec::with_capacity(given.len());
    for fd in given {
        // SAFETY: F_DUPFD_CLOEXEC only creates a new fd number for an open file; the
        // received fds are this process's, owned by no Rust object.
        let high = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, PARK_FDS_AT) };
        if high < 0 {
            return Err(Errno::last());
        }
        parked.push(high);
    }
    // Into the run's cgroup first, so everything the run does is charged there ("0":
    // the writing process).
    for procs in &parked[STAGE_FDS..] {
        // SAFETY: writes one byte from a static buffer to an fd of ours.
        if unsafe { libc::write(*procs, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(Errno::last());
        }
    }
    for (target, fd) in parked[..STAGE_FDS].iter().enumerate() {
        // SAFETY: dup2 takes plain integers; numbers 0-5 belong to no Rust object here
        // (the interpreter's stdio objects keep using 0-2, now the run's).
        if unsafe { libc::dup2(*fd, target as c_int) } < 0 {
            return Err(Errno::last());
        }
    }
    // SAFETY: close_range takes plain integers; no Rust object owns an fd of this
    // process, and the interpreter holds none it needs above 2 (the caller's contract).
    let closed = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            codejail_plan::HANDOVER_FD as libc::c_uint + 1,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    if closed < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

fn exit_now(code: c_int) -> ! {
    // SAFETY: _exit ends the process at once; nothing of the interpreter's (its buffers,
    // its atexit handlers) belongs to this forked copy.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_runs_ids_or_none() {
        assert_eq!(request_ids(b"fork\n"), Some((NO_ID, NO_ID)));
        assert_eq!(
            request_ids(b"fork 1900000001 1900000001\n"),
            Some((1_900_000_001, 1_900_000_001))
        );
        assert_eq!(request_ids(b"fork 1 2 3\n"), None);
        assert_eq!(
            request_ids(b"fork 4294967295 1\n"),
            None,
            "NO_ID is not an id"
        );
        assert_eq!(request_ids(b"spawn\n"), None);
    }

    /// A path decodes as CPython decodes its arguments (`os.fsdecode`: UTF-8 with
    /// `surrogateescape`): `"/tmp/a\xffb/\xc3\xa9".decode("utf-8", "surrogateescape")`
    /// is `'/tmp/a\udcffb/é'`.
    #[test]
    fn paths_decode_as_cpython_decodes_them() {
        let want: Vec<libc::wchar_t> = "/tmp/a"
            .chars()
            .map(|c| c as libc::wchar_t)
            .chain([0xDCFF])
            .chain("b/\u{e9}".chars().map(|c| c as libc::wchar_t))
            .collect();
        assert_eq!(decode_path(b"/tmp/a\xffb/\xc3\xa9"), want);
        assert_eq!(decode_path(b"\xc3"), vec![0xDCC3], "a cut sequence");
    }

    /// A zygote with a thread besides its own is refused before any clone: the clone
    /// would run no C at-fork handler, and the thread's library state would be left
    /// half-alive in the child. (The test harness runs each test on a thread of its
    /// own; one more is started to be sure.)
    #[test]
    fn a_threaded_caller_is_refused_before_the_clone() {
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = wait.recv();
        });
        assert!(codejail_jail::forked::thread_count().expect("thread count") >= 2);
        let mut pidfd: c_int = -1;
        let fds = [0 as c_int; STAGE_FDS];
        let mut env: *const u8 = std::ptr::null();
        let mut env_len: isize = -1;
        // SAFETY: every pointer is to a local of the right size; the call returns
        // before any clone.
        let got = unsafe {
            spawn(
                NO_ID,
                NO_ID,
                &mut pidfd,
                fds.as_ptr(),
                STAGE_FDS as c_int,
                &mut env,
                &mut env_len,
            )
        };
        let _ = stop.send(());
        let _ = other.join();
        assert_eq!(got, -libc::EDEADLK);
        assert_eq!(pidfd, -1, "no pidfd for a clone that was never made");
        assert!(env.is_null() && env_len == -1, "no environment written");
    }

    /// A script name that would not fit the path buffer in the longest run directory a
    /// plan may name is refused when the zygote registers it, not in a run.
    #[test]
    fn the_script_path_must_fit_the_longest_run_directory() {
        let longest = longest_script_path("jailed_code".len());
        let workdir = codejail_plan::layout::program_workdir(&"x".repeat(MAX_COMPONENT_LEN));
        assert_eq!(
            longest,
            format!("{workdir}/jailed_code").len() + 1,
            "with its NUL"
        );
        let mut buf = vec![0 as libc::wchar_t; longest];
        let name = b"jailed_code";
        // SAFETY: `buf` has `longest - 1` wide characters (the contract is checked
        // before anything is kept), `name` its length.
        let short = unsafe {
            codejail_zygote_script_path(buf.as_mut_ptr(), longest - 1, name.as_ptr(), 11)
        };
        assert_eq!(short, -libc::ENAMETOOLONG);
        assert!(SCRIPT_PATH.get().is_none(), "nothing registered");
    }
}
