//! How a run ended, as the broker reports it: the stage's reports collected
//! ([`Reports`]), the output cap ([`OutputCap`]), and the `Finished` they make
//! ([`finish`]), with the limit that ended the run ([`limit_hit`]).

use std::time::Instant;

use codejail_protocol::{Finished, LimitName, Usage};

use super::cgroup::{CgroupStats, RunCgroup};
use super::{RunError, Supervision};
use codejail_plan::{Achieved, StageReport};

/// Why the broker ended a run early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// REALTIME ran out.
    Realtime,
    /// The client left or the broker is stopping.
    Cancelled,
}

/// Collected output and how much was dropped.
pub(crate) struct OutputCap {
    pub(crate) remaining: Option<u64>,
    pub(crate) truncated: bool,
}

impl OutputCap {
    /// Keep what fits under the cap, count the rest as truncated.
    pub(crate) fn admit(&mut self, mut chunk: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(rem) = self.remaining.as_mut() {
            let keep = (*rem).min(chunk.len() as u64) as usize;
            if keep < chunk.len() {
                self.truncated = true;
                chunk.truncate(keep);
            }
            *rem -= keep as u64;
        }
        (!chunk.is_empty()).then_some(chunk)
    }
}

/// What the stage, init and program reported after the handshake.
#[derive(Debug, Default)]
pub struct Reports {
    /// The first failed step and its message.
    pub(crate) failed: Option<(String, String)>,
    /// What Landlock achieved in the program.
    pub(crate) landlock: Option<Achieved>,
    /// Entries of the seccomp deny list the program got.
    pub(crate) seccomp_denied: Option<u32>,
    /// The program's end, as the init reported it.
    pub(crate) exited: Option<StageReport>,
    /// CPU user/sys (µs) and peak RSS (KiB) of a run the broker ended.
    pub(crate) killed_usage: Option<(u64, u64, u64)>,
}

/// A run's end as the broker sees it.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// What goes to the client.
    pub finished: Finished,
    /// What Landlock achieved in the program (None when it never got that far).
    pub landlock: Option<Achieved>,
    /// Entries of the seccomp deny list the program got (None likewise).
    pub seccomp_denied: Option<u32>,
}

/// Turn what the run left into its `Finished`.
pub(crate) fn finish(
    reports: Result<Reports, RunError>,
    exit: Option<std::process::ExitStatus>,
    ended: Option<Ended>,
    started: Instant,
    spec: &Supervision,
    cap: &std::sync::Mutex<OutputCap>,
    cgroup: Option<&RunCgroup>,
) -> Result<RunResult, RunError> {
    let truncated = cap.lock().map(|c| c.truncated).unwrap_or(true);
    // The program has ended and nothing holds its output: the cgroup's counters hold
    // all the run did (what is left of it dies with the init, now, doing nothing).
    let stats = cgroup.map(RunCgroup::stats).unwrap_or_default();
    let mut usage = Usage {
        wall_ms: started.elapsed().as_millis() as u64,
        peak_memory_bytes: stats.peak_memory_bytes,
        ..Usage::default()
    };
    let reports = reports?;
    if let (None, Some((step, message))) = (ended, &reports.failed) {
        return Err(RunError::Stage {
            step: step.clone(),
            message: message.clone(),
        });
    }
    let (status, signal) = match (ended, reports.exited) {
        (Some(_), _) => {
            if let Some((user, sys, rss)) = reports.killed_usage {
                usage.cpu_user_ms = user / 1000;
                usage.cpu_sys_ms = sys / 1000;
                usage.max_rss_kib = rss;
            }
            (-libc::SIGKILL, Some(libc::SIGKILL))
        }
        (
            None,
            Some(StageReport::Exited {
                exit_code,
                signal,
                cpu_user_us,
                cpu_sys_us,
                max_rss_kib,
            }),
        ) => {
            usage.cpu_user_ms = cpu_user_us / 1000;
            usage.cpu_sys_ms = cpu_sys_us / 1000;
            usage.max_rss_kib = max_rss_kib;
            (
                codejail_protocol::upstream_status(exit_code, signal),
                signal,
            )
        }
        // The OOM killer took the stage or the init (the run's own memory use is
        // charged to the same cgroup): the run ended because of MEMORY.
        (None, None) if stats.oom_kills > 0 => (-libc::SIGKILL, Some(libc::SIGKILL)),
        (None, other) => {
            return Err(RunError::Reports(format!(
                "the stage ended ({}) without the program's status (last report: {other:?})",
                exit.map(|e| e.to_string())
                    .unwrap_or_else(|| "unknown".into())
            )))
        }
    };
    let limit_hit = limit_hit(ended, signal, status, &usage, spec, truncated, &stats);
    Ok(RunResult {
        finished: Finished {
            status,
            usage,
            limit_hit: limit_hit.map(str::to_string),
            truncated,
            output_limit: spec.limits.get(LimitName::Output),
            workdir: spec.workdir.clone(),
            // The stage's pid, filled in by `execute_in`, which spawned it.
            pid: 0,
        },
        landlock: reports.landlock,
        seccomp_denied: reports.seccomp_denied,
    })
}

/// The limit that ended (or, for OUTPUT, cut) the run. The cgroup counters only
/// count when the run ended badly (non-zero status): a program that caught the
/// failed fork of one child, or outlived the OOM kill of one, finished on its own.
pub(crate) fn limit_hit(
    ended: Option<Ended>,
    signal: Option<i32>,
    status: i32,
    usage: &Usage,
    spec: &Supervision,
    truncated: bool,
    stats: &CgroupStats,
) -> Option<&'static str> {
    let cpu_limit_ms = spec
        .limits
        .effective(LimitName::Cpu)
        .map(|s| s.saturating_mul(1000));
    let failed = status != 0;
    let hit = match (ended, signal) {
        (Some(Ended::Realtime), _) => LimitName::Realtime,
        (Some(Ended::Cancelled), _) => return None,
        (None, Some(libc::SIGXCPU)) => LimitName::Cpu,
        // The memcg OOM killer SIGKILLs too: checked before the CPU guess below.
        _ if failed && stats.oom_kills > 0 => LimitName::Memory,
        // The hard limit (n+1) kills with SIGKILL when SIGXCPU was caught or ignored.
        (None, Some(libc::SIGKILL))
            if cpu_limit_ms.is_some_and(|l| usage.cpu_user_ms + usage.cpu_sys_ms >= l) =>
        {
            LimitName::Cpu
        }
        (None, Some(libc::SIGXFSZ)) => LimitName::Fsize,
        // pids.max is not a limit of its own: NPROC is the request's knob, and the
        // cgroup cap (NPROC+2, or cgroup.unlimited_pids when NPROC is 0) backs it up.
        _ if failed && stats.pids_max_hits > 0 => return Some("PIDS"),
        _ if truncated => LimitName::Output,
        _ => return None,
    };
    Some(hit.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_cap_keeps_prefix_and_marks_truncation() {
        let mut cap = OutputCap {
            remaining: Some(5),
            truncated: false,
        };
        assert_eq!(cap.admit(b"abc".to_vec()), Some(b"abc".to_vec()));
        assert_eq!(cap.admit(b"defg".to_vec()), Some(b"de".to_vec()));
        assert!(cap.truncated);
        assert_eq!(cap.admit(b"h".to_vec()), None);
        let mut unlimited = OutputCap {
            remaining: None,
            truncated: false,
        };
        assert_eq!(unlimited.admit(vec![1; 10]), Some(vec![1; 10]));
        assert!(!unlimited.truncated);
    }
}
