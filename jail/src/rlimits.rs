//! Resource limits of the program (setrlimit(2)), upstream semantics first:
//!
//! | limit | applied as |
//! |---|---|
//! | CPU n | `RLIMIT_CPU` soft n, hard n+1: SIGXCPU at n seconds, SIGKILL one later |
//! | VMEM n | `RLIMIT_AS` n |
//! | FSIZE n | `RLIMIT_FSIZE` n, always set: 0 means no file may be written |
//! | NPROC n | `RLIMIT_NPROC` n + the run's processes that are not the program's (below) |
//! | NOFILE n | `RLIMIT_NOFILE` n, soft = hard, always set: the program can neither raise it nor keep the broker's |
//! | (always) | `RLIMIT_CORE` 0: no core dumps of untrusted code |
//!
//! `RLIMIT_NPROC` counts the processes and threads of a *(user namespace, real uid)*
//! pair since Linux 5.14 (ucounts), so it is per run here, not per host uid as
//! upstream. Besides the program's own tree, other processes of the run's namespace
//! share its uid: the stage (the broker starts it as the run's uid, and it creates the
//! run's namespaces) and the init, or in a forked run only the init (a zygote's child,
//! with no stage: `forked`); they are added so that NPROC n still means "the program
//! plus n-1 more" (`Start::shared_processes`).
//! The check is done at fork (copy_process): a fork fails with `EAGAIN` when the
//! count including the new process would exceed the limit.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use super::error::JailError;
use codejail_plan::RunLimits;

/// One limit to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RlimitSetting {
    /// The resource.
    pub(crate) resource: Resource,
    /// Its name, for errors.
    pub(crate) name: &'static str,
    /// Soft limit.
    pub(crate) soft: u64,
    /// Hard limit.
    pub(crate) hard: u64,
}

/// The limits to set for `limits`, in the order they are applied; `sigpending` is the
/// plan's bound on queued signals (`Plan::sigpending`), `shared` the run's processes
/// with its uid that are not the program's.
pub(crate) fn rlimit_settings(
    limits: &RunLimits,
    sigpending: Option<u64>,
    shared: u64,
) -> Vec<RlimitSetting> {
    let set = |resource, name, soft, hard| RlimitSetting {
        resource,
        name,
        soft,
        hard,
    };
    let mut settings = Vec::with_capacity(7);
    if let Some(secs) = limits.cpu_secs {
        settings.push(set(
            Resource::RLIMIT_CPU,
            "RLIMIT_CPU",
            secs,
            secs.saturating_add(1),
        ));
    }
    if let Some(bytes) = limits.vmem_bytes {
        settings.push(set(Resource::RLIMIT_AS, "RLIMIT_AS", bytes, bytes));
    }
    settings.push(set(
        Resource::RLIMIT_FSIZE,
        "RLIMIT_FSIZE",
        limits.fsize_bytes,
        limits.fsize_bytes,
    ));
    if let Some(n) = limits.nproc {
        let n = n.saturating_add(shared);
        settings.push(set(Resource::RLIMIT_NPROC, "RLIMIT_NPROC", n, n));
    }
    settings.push(set(
        Resource::RLIMIT_NOFILE,
        "RLIMIT_NOFILE",
        limits.nofile,
        limits.nofile,
    ));
    settings.push(set(Resource::RLIMIT_CORE, "RLIMIT_CORE", 0, 0));
    if let Some(n) = sigpending {
        settings.push(set(Resource::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING", n, n));
    }
    settings
}

/// Clamp a wanted (soft, hard) pair under the hard limit already in force: without
/// `CAP_SYS_RESOURCE` in the initial namespace a hard limit can only be lowered, and
/// a stricter limit than asked is still within the contract.
pub(crate) fn clamp_to_current(soft: u64, hard: u64, current_hard: u64) -> (u64, u64) {
    let hard = hard.min(current_hard);
    (soft.min(hard), hard)
}

/// Apply the run's limits to the calling process (the program, just before exec).
pub(crate) fn apply_rlimits(
    limits: &RunLimits,
    sigpending: Option<u64>,
    shared: u64,
) -> Result<(), JailError> {
    for setting in rlimit_settings(limits, sigpending, shared) {
        let fail = |e: nix::Error| JailError::SetRlimit {
            resource: setting.name,
            soft: setting.soft,
            hard: setting.hard,
            source: e.into(),
        };
        let (_, current_hard) = getrlimit(setting.resource).map_err(fail)?;
        let (soft, hard) = clamp_to_current(setting.soft, setting.hard, current_hard);
        setrlimit(setting.resource, soft, hard).map_err(fail)?;
    }
    Ok(())
}

/// Apply the run's limits to process `pid` (a warm jail's waiting program, at its
/// hand-over) with prlimit(2): only ever lowered, as [`apply_rlimits`] does. `used`
/// is the CPU the process has already used: RLIMIT_CPU counts the process's whole
/// life in whole seconds, so the limit is moved by `used` rounded to the nearest
/// second (the program gets n seconds of its own to within half a second).
pub(crate) fn apply_rlimits_to(
    pid: libc::pid_t,
    limits: &RunLimits,
    used: std::time::Duration,
    shared: u64,
) -> Result<(), JailError> {
    let offset = used.as_secs() + u64::from(used.subsec_millis() >= 500);
    // RLIMIT_SIGPENDING was set at the program's exec and never changes.
    for mut setting in rlimit_settings(limits, None, shared) {
        if setting.resource == Resource::RLIMIT_CPU {
            setting.soft = setting.soft.saturating_add(offset);
            setting.hard = setting.hard.saturating_add(offset);
        }
        let fail = |e: std::io::Error| JailError::SetRlimit {
            resource: setting.name,
            soft: setting.soft,
            hard: setting.hard,
            source: e,
        };
        // nix's Resource is the C enum's value (repr u32 on glibc).
        let resource = setting.resource as libc::__rlimit_resource_t;
        let (_, current_hard) = super::sys::prlimit(pid, resource, None).map_err(fail)?;
        let (soft, hard) = clamp_to_current(setting.soft, setting.hard, current_hard);
        super::sys::prlimit(pid, resource, Some((soft, hard))).map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(settings: &[RlimitSetting], resource: Resource) -> Option<(u64, u64)> {
        settings
            .iter()
            .find(|s| s.resource == resource)
            .map(|s| (s.soft, s.hard))
    }

    #[test]
    fn upstream_semantics() {
        let limits = RunLimits {
            cpu_secs: Some(1),
            vmem_bytes: Some(1 << 30),
            fsize_bytes: 0,
            nproc: Some(15),
            nofile: 1024,
            tmp_bytes: None,
            tmp_inodes: None,
        };
        let s = rlimit_settings(&limits, None, 2);
        assert_eq!(find(&s, Resource::RLIMIT_CPU), Some((1, 2)));
        assert_eq!(find(&s, Resource::RLIMIT_AS), Some((1 << 30, 1 << 30)));
        assert_eq!(find(&s, Resource::RLIMIT_FSIZE), Some((0, 0)));
        assert_eq!(find(&s, Resource::RLIMIT_NPROC), Some((17, 17)));
        // A forked run has no stage: only its init shares the run's uid.
        let forked = rlimit_settings(&limits, None, 1);
        assert_eq!(find(&forked, Resource::RLIMIT_NPROC), Some((16, 16)));
        assert_eq!(find(&s, Resource::RLIMIT_NOFILE), Some((1024, 1024)));
        assert_eq!(find(&s, Resource::RLIMIT_CORE), Some((0, 0)));
        assert_eq!(find(&s, Resource::RLIMIT_SIGPENDING), None);
        let s = rlimit_settings(&limits, Some(512), 2);
        assert_eq!(find(&s, Resource::RLIMIT_SIGPENDING), Some((512, 512)));
    }

    #[test]
    fn unset_limits_are_left_alone_but_fsize_and_core_always_apply() {
        let s = rlimit_settings(&RunLimits::default(), None, 2);
        assert_eq!(find(&s, Resource::RLIMIT_CPU), None);
        assert_eq!(find(&s, Resource::RLIMIT_AS), None);
        assert_eq!(find(&s, Resource::RLIMIT_NPROC), None);
        assert_eq!(find(&s, Resource::RLIMIT_FSIZE), Some((0, 0)));
        assert_eq!(find(&s, Resource::RLIMIT_CORE), Some((0, 0)));
        let s = rlimit_settings(
            &RunLimits {
                cpu_secs: Some(u64::MAX),
                nproc: Some(u64::MAX),
                ..RunLimits::default()
            },
            None,
            2,
        );
        assert_eq!(find(&s, Resource::RLIMIT_CPU), Some((u64::MAX, u64::MAX)));
        assert_eq!(find(&s, Resource::RLIMIT_NPROC), Some((u64::MAX, u64::MAX)));
    }

    #[test]
    fn clamping_only_tightens() {
        assert_eq!(clamp_to_current(1, 2, u64::MAX), (1, 2));
        assert_eq!(clamp_to_current(10, 11, 5), (5, 5));
        assert_eq!(clamp_to_current(3, 11, 5), (3, 5));
    }
}
