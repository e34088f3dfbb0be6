//! `/proc` scans: what is left of a run on the host.

use std::fs::{self};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One process, as seen in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id (in our pid namespace).
    pub pid: i32,
    /// Real uid.
    pub uid: u32,
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: String,
    /// Command line, arguments joined by spaces (empty for zombies).
    pub cmdline: String,
    /// Its name (`/proc/PID/comm`: at most 15 bytes; a program may set it).
    pub comm: String,
    /// Parent pid.
    pub ppid: i32,
}

/// Every process visible in `/proc` (processes that vanish mid-scan are skipped), from
/// the broker's own scan.
pub fn processes() -> Vec<ProcInfo> {
    scan(true)
}

/// [`processes`] without their command lines (left empty). Reading a command line takes
/// the process's memory-map lock, which a process forking in a loop holds most of the
/// time: a scan while a fork bomb runs can wait seconds on one. Everything else read
/// here (status, comm) does not wait on it.
pub fn processes_without_cmdline() -> Vec<ProcInfo> {
    scan(false)
}

fn scan(with_cmdline: bool) -> Vec<ProcInfo> {
    let Ok(statuses) = codejail_broker::run::uidpool::proc_statuses() else {
        return Vec::new();
    };
    statuses
        .into_iter()
        .map(|(pid, status)| {
            let state = status
                .lines()
                .find_map(|l| l.strip_prefix("State:"))
                .map(|rest| rest.trim().to_string())
                .unwrap_or_default();
            let cmdline = if !with_cmdline {
                Ok(Vec::new())
            } else {
                fs::read(format!("/proc/{pid}/cmdline"))
            };
            let cmdline = cmdline
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim_end_matches('\n').to_string())
                .unwrap_or_default();
            let ppid = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            ProcInfo {
                ppid,
                pid,
                uid: codejail_broker::run::uidpool::real_uid(&status).unwrap_or(u32::MAX),
                state,
                cmdline,
                comm,
            }
        })
        .collect()
}

/// The length of a process name (`TASK_COMM_LEN` - 1).
const COMM_LEN: usize = 15;

/// A Python line that names the program's process (and so every fork of it) after the
/// marker in its `sys.argv[1]`, its last 15 bytes, for [`processes_with`] to find. A
/// warm jail's interpreter was exec'd before its request existed, so its command line
/// cannot carry the marker (its `sys.argv` does); a process name set at run time can.
/// Put it first in the code of a run whose processes a test looks for, cold or warm.
pub const NAME_AFTER_MARKER: &str = "import ctypes as _cj_c, sys as _cj_s; \
    _cj_c.CDLL(None).prctl(15, _cj_s.argv[1][-15:].encode(), 0, 0, 0); del _cj_c, _cj_s\n";

/// Processes named after `marker` ([`NAME_AFTER_MARKER`]), found without reading any
/// command line ([`processes_without_cmdline`]).
pub fn processes_named(marker: &str) -> Vec<ProcInfo> {
    processes_without_cmdline()
        .into_iter()
        .filter(|p| named_after(p, marker))
        .collect()
}

fn named_after(p: &ProcInfo, marker: &str) -> bool {
    p.comm.len() == COMM_LEN && marker.as_bytes().ends_with(p.comm.as_bytes())
}

/// Processes whose command line contains `marker`, or that were named after it
/// ([`NAME_AFTER_MARKER`]).
pub fn processes_with(marker: &str) -> Vec<ProcInfo> {
    processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(marker) || named_after(p, marker))
        .collect()
}

/// Poll `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A unique marker for a test's processes (put in their argv, found in `/proc`).
pub fn unique_marker(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "cjmark_{tag}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether `pid` descends from `ancestor` (by the ppid chain in `procs`).
pub fn descends_from(procs: &[ProcInfo], pid: i32, ancestor: i32) -> bool {
    let parent = |p: i32| procs.iter().find(|i| i.pid == p).map(|i| i.ppid);
    let mut at = pid;
    for _ in 0..64 {
        match parent(at) {
            Some(pp) if pp == ancestor => return true,
            Some(pp) if pp > 1 => at = pp,
            _ => return false,
        }
    }
    false
}
