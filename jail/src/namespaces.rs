//! The run's other namespaces, created by the stage once it holds capabilities in the
//! run's user namespace (so they are all owned by it, and the init and the program
//! inherit them): mount, pid, network, IPC, UTS and time (namespaces(7)).
//!
//! - mount: the root skeleton and the workspace tmpfs exist only for this run and die
//!   with it (the run has no procfs: `mounts`);
//! - pid: the next fork is the run's PID 1 (the init); killing it kills the run;
//! - net: only a loopback device, down: no network at all;
//! - ipc: no System V IPC or POSIX message queues shared with other runs;
//! - uts: the run's own host name;
//! - time: the run's own `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME`, both starting at zero
//!   when the jail is built (time_namespaces(7)), so that they tell how long the run
//!   (or a warm jail, since its build) has existed, not how long the host has been up.
//!   `CLOCK_REALTIME` is not namespaced: a run sees the host's wall clock.

use std::io::Write;

use super::userns::with_own_proc_files;
use nix::sched::{unshare, CloneFlags};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};
use nix::unistd::sethostname;

use super::error::JailError;

/// Unshare the mount, pid, network, IPC, UTS and time namespaces, and set the time
/// namespace's clocks to start now. The calling process stays in its pid and time
/// namespaces; its next child is PID 1 of the new pid namespace and the first process
/// of the new time namespace.
pub(crate) fn unshare_run_namespaces() -> Result<(), JailError> {
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    unshare(flags).map_err(|e| JailError::UnshareNamespaces(e.into()))?;
    // Apart, so that a kernel without time namespaces (CONFIG_TIME_NS, Linux 5.6)
    // is named as the cause rather than a bare EINVAL for the whole set.
    unshare_time_namespace()
}

/// Unshare the time namespace for our children and set its clocks to start now (a
/// forked run's init, whose other namespaces its clone made).
pub(crate) fn unshare_time_namespace() -> Result<(), JailError> {
    unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
        .map_err(|e| JailError::UnshareTime(e.into()))?;
    start_clocks_now()
}

/// Set the offsets of the time namespace just created for our children so that its
/// `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` read zero now (the kernel takes them from
/// `/proc/self/timens_offsets` until a process enters the namespace, and refuses an
/// offset that would make a clock negative: each is the clock's current value,
/// negated, and the clock has only moved forward by the time the kernel checks it).
/// Needs `CAP_SYS_TIME` in the namespace's owner, the run's user namespace, which the
/// stage holds.
fn start_clocks_now() -> Result<(), JailError> {
    let mut offsets = String::new();
    for (name, clock) in [
        ("monotonic", ClockId::CLOCK_MONOTONIC),
        ("boottime", ClockId::CLOCK_BOOTTIME),
    ] {
        let now = clock_gettime(clock).map_err(|e| JailError::SetClockOffsets(e.into()))?;
        let (secs, nanos) = negated(now);
        offsets.push_str(&format!("{name} {secs} {nanos}\n"));
    }
    // One write: the kernel takes both offsets at once, or neither.
    with_own_proc_files(|| {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/proc/self/timens_offsets")
    })
    .and_then(|mut file| file.write_all(offsets.as_bytes()))
    .map_err(JailError::SetClockOffsets)
}

/// `-t` as the kernel's offset format wants it: whole seconds (negative) and a
/// nanosecond part in `0..1_000_000_000`.
fn negated(t: TimeSpec) -> (i64, i64) {
    if t.tv_nsec() == 0 {
        (-t.tv_sec(), 0)
    } else {
        (-t.tv_sec() - 1, 1_000_000_000 - t.tv_nsec())
    }
}

/// Set the host name inside the run's UTS namespace.
pub(crate) fn set_hostname(hostname: &str) -> Result<(), JailError> {
    sethostname(hostname).map_err(|e| JailError::SetHostname {
        hostname: hostname.to_string(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negated_times_keep_the_nanoseconds_in_range() {
        let t = TimeSpec::new;
        assert_eq!(negated(t(12, 0)), (-12, 0));
        assert_eq!(negated(t(12, 250_000_000)), (-13, 750_000_000));
        assert_eq!(negated(t(0, 1)), (-1, 999_999_999));
    }
}
