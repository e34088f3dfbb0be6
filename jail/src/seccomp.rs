//! seccomp: the last layer before exec. The policy is reviewed data (`DENIED`): each
//! entry is a syscall (optionally with an argument condition) that a jailed Python
//! program has no use for and that widens the kernel attack surface or breaks out of
//! another layer, with the reason beside it. Everything else is allowed: the other
//! layers (namespaces, Landlock, rlimits, uid) bound what allowed calls can reach.
//!
//! Compiled with `seccompiler` by the init, which has memory to spare, before the
//! program's rlimits could make compiling fail (in a fork server, once by the zygote,
//! whose copy every run's init finds: [`compiled`]); installed by the program as its
//! very last step before `execve` (the layers and their order: `docs/architecture.md`).
//! Two extra guards that `seccompiler`'s rule language cannot express are a tiny
//! hand-written prefix filter: the x32 ABI (same audit arch as x86_64, syscall numbers
//! with bit 30 set), and `clone3`, answered `ENOSYS` so that libc falls back to
//! `clone`, whose flags *can* be inspected (clone3 passes them in memory).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// A seccomp filter that could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The policy did not compile.
    #[error("compiling the seccomp policy: {0}")]
    Compile(String),
    /// seccomp(2) refused the filter.
    #[error("installing the seccomp filter: {0}")]
    Install(String),
}

/// When a listed call is denied. A denied call fails with `EPERM` (Python's
/// `PermissionError`), except those of [`EACCES_CALLS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deny {
    /// Every time.
    Always,
    /// Only when the first argument is not `AF_UNIX` (sockets, socketpair).
    UnlessArg0IsAfUnix,
    /// Only when the flags (arg 0) carry a namespace flag (clone).
    IfArg0HasNamespaceFlag,
    /// Only when arg 1 (the ioctl request) is one of these.
    IfArg1In(&'static [u64]),
}

/// The namespace flags `clone` must not carry: a new namespace would give the program
/// capabilities over it (and a user namespace is how most kernel exploits start).
const CLONE_NAMESPACE_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

/// TIOCSTI pushes bytes into a terminal's input queue (CVE-2017-5226 class);
/// TIOCLINUX can do the same on a virtual console.
// The ioctl request type differs between libcs (c_ulong on glibc, c_int on musl).
#[allow(clippy::unnecessary_cast)]
const TERMINAL_INJECTION: &[u64] = &[libc::TIOCSTI as u64, libc::TIOCLINUX as u64];

/// `fcntl(F_NOTIFY)` asks for directory change notifications (dnotify).
const DIRECTORY_NOTIFY: &[u64] = &[libc::F_NOTIFY as u64];

/// The reviewed deny list: (syscall, condition, why). Memory a run could hold outside
/// its address space (RLIMIT_AS) and its workspace (TMP) without a memory cgroup to
/// count it — SysV IPC objects, memfd pages — is denied in every shape, so the bound
/// does not depend on the host's cgroups.
#[rustfmt::skip]
const DENIED: &[(i64, Deny, &str)] = &[
    (libc::SYS_socket, Deny::UnlessArg0IsAfUnix, "no network: only AF_UNIX sockets (the net namespace has only a down loopback anyway); EACCES"),
    (libc::SYS_socketpair, Deny::UnlessArg0IsAfUnix, "as socket; EACCES"),
    (libc::SYS_ptrace, Deny::Always, "no debugging of anything, including the init and other run processes"),
    (libc::SYS_process_vm_readv, Deny::Always, "reads another process's memory"),
    (libc::SYS_process_vm_writev, Deny::Always, "writes another process's memory"),
    (libc::SYS_kcmp, Deny::Always, "compares kernel objects of other processes (info leak)"),
    (libc::SYS_pidfd_getfd, Deny::Always, "steals a file descriptor from another process"),
    (libc::SYS_keyctl, Deny::Always, "kernel keyrings are not namespaced"),
    (libc::SYS_add_key, Deny::Always, "kernel keyrings"),
    (libc::SYS_request_key, Deny::Always, "kernel keyrings"),
    (libc::SYS_bpf, Deny::Always, "eBPF: large attack surface"),
    (libc::SYS_userfaultfd, Deny::Always, "used to widen kernel race windows in exploits"),
    (libc::SYS_perf_event_open, Deny::Always, "perf: large attack surface, side channels"),
    (libc::SYS_mount, Deny::Always, "the jail's mounts are fixed"),
    (libc::SYS_umount2, Deny::Always, "would uncover what the jail's mounts hide"),
    (libc::SYS_pivot_root, Deny::Always, "the root is fixed"),
    (libc::SYS_chroot, Deny::Always, "the root is fixed"),
    (libc::SYS_move_mount, Deny::Always, "new mount API"),
    (libc::SYS_open_tree, Deny::Always, "new mount API"),
    (libc::SYS_fsopen, Deny::Always, "new mount API"),
    (libc::SYS_fsconfig, Deny::Always, "new mount API"),
    (libc::SYS_fsmount, Deny::Always, "new mount API"),
    (libc::SYS_fspick, Deny::Always, "new mount API"),
    (libc::SYS_mount_setattr, Deny::Always, "new mount API"),
    (libc::SYS_unshare, Deny::Always, "no new namespaces"),
    (libc::SYS_setns, Deny::Always, "no joining other namespaces"),
    (libc::SYS_clone, Deny::IfArg0HasNamespaceFlag, "fork/threads yes, new namespaces no"),
    (libc::SYS_kexec_load, Deny::Always, "replaces the kernel"),
    (libc::SYS_kexec_file_load, Deny::Always, "replaces the kernel"),
    (libc::SYS_init_module, Deny::Always, "loads kernel code"),
    (libc::SYS_finit_module, Deny::Always, "loads kernel code"),
    (libc::SYS_delete_module, Deny::Always, "unloads kernel code"),
    (libc::SYS_io_uring_setup, Deny::Always, "io_uring: bypasses seccomp for its operations, many CVEs"),
    (libc::SYS_io_uring_enter, Deny::Always, "io_uring"),
    (libc::SYS_io_uring_register, Deny::Always, "io_uring"),
    (libc::SYS_ioctl, Deny::IfArg1In(TERMINAL_INJECTION), "terminal input injection"),
    (libc::SYS_name_to_handle_at, Deny::Always, "file handles bypass path checks (the 'shocker' escape)"),
    (libc::SYS_open_by_handle_at, Deny::Always, "file handles bypass path checks (the 'shocker' escape)"),
    (libc::SYS_fanotify_init, Deny::Always, "watches other processes' file accesses"),
    (libc::SYS_reboot, Deny::Always, "host control"),
    (libc::SYS_swapon, Deny::Always, "host control"),
    (libc::SYS_swapoff, Deny::Always, "host control"),
    (libc::SYS_acct, Deny::Always, "host control"),
    (libc::SYS_settimeofday, Deny::Always, "host clock"),
    (libc::SYS_clock_settime, Deny::Always, "host clock"),
    (libc::SYS_clock_adjtime, Deny::Always, "host clock"),
    (libc::SYS_adjtimex, Deny::Always, "host clock"),
    (libc::SYS_syslog, Deny::Always, "kernel log (address leaks)"),
    (libc::SYS_quotactl, Deny::Always, "host quotas"),
    (libc::SYS_vhangup, Deny::Always, "terminal control"),
    (libc::SYS_iopl, Deny::Always, "raw port I/O"),
    (libc::SYS_ioperm, Deny::Always, "raw port I/O"),
    (libc::SYS_modify_ldt, Deny::Always, "16-bit segments: historic exploit surface"),
    (libc::SYS_uselib, Deny::Always, "obsolete a.out loader"),
    (libc::SYS_personality, Deny::Always, "can turn off ASLR (ADDR_NO_RANDOMIZE) or enable legacy behaviours"),
    (libc::SYS_lookup_dcookie, Deny::Always, "oprofile: obsolete"),
    (libc::SYS_memfd_secret, Deny::Always, "memory hidden from the kernel: no use here"),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_inotify_init, Deny::Always, "watches accesses to files the view shares with the host and other runs"),
    (libc::SYS_inotify_init1, Deny::Always, "as inotify_init"),
    (libc::SYS_inotify_add_watch, Deny::Always, "as inotify_init"),
    (libc::SYS_fcntl, Deny::IfArg1In(DIRECTORY_NOTIFY), "dnotify: as inotify, on directories"),
    (libc::SYS_memfd_create, Deny::Always, "pages no rlimit bounds (only a memory cgroup); fileless exec"),
    (libc::SYS_shmget, Deny::Always, "SysV shared memory outlives its mappings: bounded by no rlimit"),
    (libc::SYS_msgget, Deny::Always, "SysV message queues: kernel memory bounded by no rlimit"),
    (libc::SYS_semget, Deny::Always, "SysV semaphore sets: kernel memory bounded by no rlimit"),
];

/// The denied calls that fail with `EACCES` rather than `EPERM`: an AppArmor-confined
/// upstream denies socket families with `EACCES` ("[Errno 13] Permission denied"), and
/// its callers' deployment tests match that errno.
const EACCES_CALLS: [i64; 2] = [libc::SYS_socket, libc::SYS_socketpair];

/// The errno a denied call `nr` gets.
fn errno_for(nr: i64) -> u32 {
    if EACCES_CALLS.contains(&nr) {
        libc::EACCES as u32
    } else {
        libc::EPERM as u32
    }
}

fn arch() -> TargetArch {
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
    #[cfg(not(target_arch = "aarch64"))]
    TargetArch::x86_64
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SeccompError::Compile(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|e| SeccompError::Compile(e.to_string()))
}

fn rules_for(deny: Deny) -> Result<Vec<SeccompRule>, SeccompError> {
    Ok(match deny {
        Deny::Always => vec![],
        Deny::UnlessArg0IsAfUnix => vec![rule(vec![cond(
            0,
            SeccompCmpOp::Ne,
            libc::AF_UNIX as u64,
        )?])?],
        Deny::IfArg0HasNamespaceFlag => CLONE_NAMESPACE_FLAGS
            .iter()
            .map(|f| rule(vec![cond(0, SeccompCmpOp::MaskedEq(*f), *f)?]))
            .collect::<Result<_, _>>()?,
        Deny::IfArg1In(values) => values
            .iter()
            .map(|v| rule(vec![cond(1, SeccompCmpOp::Eq, *v)?]))
            .collect::<Result<_, _>>()?,
    })
}

/// The compiled filters, in installation order.
#[derive(Debug, Clone)]
pub struct Filters {
    /// x32 and clone3 guards.
    prefix: BpfProgram,
    /// The reviewed deny list, one filter per errno (a seccompiler filter has one
    /// match action).
    policy: Vec<BpfProgram>,
}

/// `AUDIT_ARCH_*` of the native ABI (`struct seccomp_data.arch`).
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;
#[cfg(not(target_arch = "aarch64"))]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// Build a BPF statement (seccompiler's own helpers are private).
fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
const ARCH: u32 = 4; // offsetof(struct seccomp_data, arch)
const X32_BIT: u32 = 0x4000_0000;

/// The start of both hand-written filters: a foreign arch kills, and so does an x32
/// call number (bit 30; no Python we run is x32, so such a call can only be an
/// attack). Leaves the call number loaded.
fn abi_guard() -> [sock_filter; 6] {
    [
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR),
        jump(JSET_K, X32_BIT, 0, 1),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

/// The prefix filter: wrong arch → kill; x32 syscall numbers (bit 30) → kill (no
/// Python we run is x32, so such a call can only be an attack); clone3 → ENOSYS.
fn prefix_filter() -> BpfProgram {
    let mut prog = abi_guard().to_vec();
    prog.extend([
        jump(JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
    ]);
    prog
}

/// The exec filter of [`super::execguard`], installed by the init on itself before it
/// forks the program (so every process of the run inherits it): `execve` and `execveat`
/// go to the init's listener ([`libc::SECCOMP_RET_USER_NOTIF`]); a foreign arch or an
/// x32 call number kills (the prefix filter, installed later, says the same; this
/// filter must hold on its own, since it is in force first); everything else passes.
pub(crate) fn exec_filter() -> Vec<libc::sock_filter> {
    abi_guard()
        .into_iter()
        .chain([
            jump(JEQ_K, libc::SYS_execve as u32, 2, 0),
            jump(JEQ_K, libc::SYS_execveat as u32, 1, 0),
            stmt(RET_K, libc::SECCOMP_RET_ALLOW),
            stmt(RET_K, libc::SECCOMP_RET_USER_NOTIF),
        ])
        .map(|f| libc::sock_filter {
            code: f.code,
            jt: f.jt,
            jf: f.jf,
            k: f.k,
        })
        .collect()
}

/// The policy, compiled once per process: the first call compiles it (a spawned
/// stage's init, before rlimits; a fork server's zygote, before its first fork, so
/// that every run's init finds it compiled in its copy of the zygote's memory and
/// neither allocates nor writes for it).
pub fn compiled() -> Result<&'static Filters, SeccompError> {
    static COMPILED: OnceLock<Filters> = OnceLock::new();
    if let Some(filters) = COMPILED.get() {
        return Ok(filters);
    }
    let filters = compile()?;
    Ok(COMPILED.get_or_init(|| filters))
}

/// Compile the policy.
fn compile() -> Result<Filters, SeccompError> {
    let mut by_errno: BTreeMap<u32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    for (nr, deny, _why) in DENIED {
        by_errno
            .entry(errno_for(*nr))
            .or_default()
            .entry(*nr)
            .or_default()
            .extend(rules_for(*deny)?);
    }
    let mut policy = Vec::with_capacity(by_errno.len());
    for (errno, rules) in by_errno {
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno),
            arch(),
        )
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
        policy.push(
            filter
                .try_into()
                .map_err(|e: seccompiler::BackendError| SeccompError::Compile(e.to_string()))?,
        );
    }
    Ok(Filters {
        prefix: prefix_filter(),
        policy,
    })
}

/// Install both filters on the calling thread. Needs `no_new_privs` (or
/// CAP_SYS_ADMIN); the program sets it just before. The last step before exec.
pub fn install(filters: &Filters) -> Result<(), SeccompError> {
    for filter in std::iter::once(&filters.prefix).chain(&filters.policy) {
        seccompiler::apply_filter(filter).map_err(|e| SeccompError::Install(e.to_string()))?;
    }
    Ok(())
}

/// How many deny entries the policy has (for the confinement report).
pub fn policy_len() -> usize {
    DENIED.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `f` on a fresh thread with no_new_privs and the filters installed, so the
    /// test process itself stays unfiltered.
    fn in_filtered_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let filters = compile().expect("policy compiles");
        std::thread::spawn(move || {
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) only sets a flag on this thread.
            let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            assert_eq!(rc, 0);
            install(&filters).expect("install");
            f()
        })
        .join()
        .expect("thread")
    }

    fn errno_of(rc: libc::c_long) -> i32 {
        if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    #[test]
    fn every_entry_has_a_reason_and_no_duplicates() {
        let mut seen = std::collections::HashSet::new();
        for (nr, _, why) in DENIED {
            assert!(!why.is_empty());
            assert!(seen.insert(*nr), "syscall {nr} listed twice");
        }
    }

    #[test]
    fn denied_calls_fail_and_allowed_ones_work() {
        let results = in_filtered_thread(|| {
            // SAFETY: raw syscalls with harmless or invalid arguments; each either
            // fails (what we test) or creates an fd we close.
            unsafe {
                let inet = libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0);
                let inet_errno = errno_of(inet);
                let unix = libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if unix >= 0 {
                    libc::close(unix as i32);
                }
                let ptrace = errno_of(libc::syscall(
                    libc::SYS_ptrace,
                    libc::PTRACE_TRACEME,
                    0,
                    0,
                    0,
                ));
                let unshare = errno_of(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER));
                let clone3 = errno_of(libc::syscall(libc::SYS_clone3, 0usize, 0usize));
                let clone_rc = libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                );
                if clone_rc == 0 {
                    // The filter failed and we are the cloned child: leave at once.
                    libc::_exit(0);
                }
                let clone_ns = errno_of(clone_rc);
                let bpf = errno_of(libc::syscall(libc::SYS_bpf, 0, 0usize, 0));
                let tiocsti = errno_of(libc::syscall(libc::SYS_ioctl, 0, libc::TIOCSTI, 0usize));
                let getpid = libc::syscall(libc::SYS_getpid);
                (
                    inet_errno, unix, ptrace, unshare, clone3, clone_ns, bpf, tiocsti, getpid,
                )
            }
        });
        let (inet, unix, ptrace, unshare, clone3, clone_ns, bpf, tiocsti, getpid) = results;
        assert_eq!(inet, libc::EACCES, "AF_INET socket: upstream's errno 13");
        assert!(unix >= 0, "AF_UNIX socket must work");
        assert_eq!(ptrace, libc::EPERM, "ptrace");
        assert_eq!(unshare, libc::EPERM, "unshare");
        assert_eq!(clone3, libc::ENOSYS, "clone3");
        assert_eq!(clone_ns, libc::EPERM, "clone with CLONE_NEWUSER");
        assert_eq!(bpf, libc::EPERM, "bpf");
        assert_eq!(tiocsti, libc::EPERM, "ioctl TIOCSTI");
        assert!(getpid > 0, "ordinary calls work");
    }
}
