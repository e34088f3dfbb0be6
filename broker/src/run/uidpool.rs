//! Per-run outside ids (docs/architecture.md §7): in production every
//! concurrent run is mapped to its own uid/gid from the configured range (`run_ids`),
//! so runs cannot signal, ptrace or write into each other, and NPROC is theirs alone.
//!
//! - [`check_capabilities`]: the broker needs CAP_SETUID/CAP_SETGID in its effective
//!   set: the stage's child takes the run's uid and gid (`setresuid`/`setresgid`,
//!   supplementary groups cleared) before it execs the stage, which then creates the
//!   run's user namespace and writes its own id maps.
//! - [`check_collisions`]: the range must not hold a real account, group or a
//!   `/etc/subuid`/`/etc/subgid` range (a run would otherwise *be* that user).
//! - [`sweep_strays`]: at start-up, kill processes still running with an id of the
//!   range (leftovers of a crashed broker).
//! - [`UidPool::lease`]: an id for a run that got its admission slot; the
//!   [`Lease`] gives it back only once no process with that uid is left.
//!
//! The broker holds no capability over a run's user namespace (the stage created it,
//! as the run's uid), so it signals a run's processes as their owner: a thread of its
//! own switches its euid to the run's uid for the signal (`sys::pidfd_kill_as`).

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{IdRange, RunIdentity};
use crate::sys;

/// How long killed leftovers get to disappear.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Pause between scans while waiting.
const SCAN_RETRY: Duration = Duration::from_millis(10);

/// A check or step of the uid pool that failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The broker lacks a capability the pool needs.
    #[error(
        "the run uid range needs {cap} in the broker's effective capability set, which it does not hold; \
         fix: start the broker with AmbientCapabilities=CAP_SETUID CAP_SETGID (systemd), or remove run_ids"
    )]
    CheckCapabilities {
        /// The missing capability, e.g. `CAP_SETUID`.
        cap: &'static str,
    },
    /// The capability sets could not be read.
    #[error("cannot read the broker's capabilities: {0}")]
    ReadCapabilities(String),
    /// An accounts file could not be read.
    #[error("cannot read {path} to check the run uid range: {source}")]
    ReadAccounts {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The range holds an id that is someone's.
    #[error("the run uid range {range} collides with {what}; fix: move run_ids to ids no account, group or subordinate range uses")]
    CheckCollisions {
        /// The range.
        range: IdRange,
        /// The colliding entry, e.g. `user "postgres" (uid 200001) in /etc/passwd`.
        what: String,
    },
    /// `/proc` could not be scanned.
    #[error("cannot scan /proc for processes of the run uid range: {0}")]
    ScanProcesses(#[source] io::Error),
    /// A process with an id of the range cannot be killed: it is not a run of a
    /// broker of this uid, so something else uses the range.
    #[error(
        "process {pid} runs as uid {uid}, inside the run uid range, and the broker cannot kill it ({source}); \
         it is not a leftover run, so something else uses these ids: fix run_ids"
    )]
    KillStray {
        /// The process.
        pid: i32,
        /// Its real uid.
        uid: u32,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Killed processes did not go away.
    #[error("processes {pids:?} with run uids survived SIGKILL for {KILL_WAIT:?}")]
    WaitStrays {
        /// What is left.
        pids: Vec<i32>,
    },
}

/// The broker's capability check: CAP_SETUID and CAP_SETGID in its effective set,
/// which the stage's child needs to take the run's uid and gid and clear its
/// supplementary groups before its exec (`sys::install_stage_fds`).
pub fn check_capabilities() -> Result<(), PoolError> {
    use caps::{CapSet, Capability};
    for (cap, name) in [
        (Capability::CAP_SETUID, "CAP_SETUID"),
        (Capability::CAP_SETGID, "CAP_SETGID"),
    ] {
        let held = caps::has_cap(None, CapSet::Effective, cap)
            .map_err(|e| PoolError::ReadCapabilities(e.to_string()))?;
        if !held {
            return Err(PoolError::CheckCapabilities { cap: name });
        }
    }
    Ok(())
}

/// Whether the broker holds CAP_SETGID (then runs may clear their supplementary
/// groups: the broker can write `allow` to their `setgroups`).
pub fn holds_setgid() -> bool {
    caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETGID).unwrap_or(false)
}

/// The accounts files, as text (missing `/etc/subuid`/`/etc/subgid` read as empty).
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// `/etc/passwd`.
    pub passwd: String,
    /// `/etc/group`.
    pub group: String,
    /// `/etc/subuid`.
    pub subuid: String,
    /// `/etc/subgid`.
    pub subgid: String,
}

impl Accounts {
    /// Read the host's files.
    pub fn read_host() -> Result<Accounts, PoolError> {
        let read = |path: &str, optional: bool| match std::fs::read_to_string(path) {
            Ok(s) => Ok(s),
            Err(e) if optional && e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(PoolError::ReadAccounts {
                path: path.into(),
                source,
            }),
        };
        Ok(Accounts {
            passwd: read("/etc/passwd", false)?,
            group: read("/etc/group", false)?,
            subuid: read("/etc/subuid", true)?,
            subgid: read("/etc/subgid", true)?,
        })
    }
}

/// Check that no user (`/etc/passwd` uid or primary gid), group (`/etc/group`) or
/// subordinate range (`/etc/subuid`, `/etc/subgid`) uses an id of `range`. Accounts
/// only in NSS databases (LDAP, sssd) are not seen: keep the range apart from those
/// by site policy.
pub fn check_collisions(range: IdRange, accounts: &Accounts) -> Result<(), PoolError> {
    let collide = |what: String| PoolError::CheckCollisions { range, what };
    for line in records(&accounts.passwd) {
        let f: Vec<&str> = line.split(':').collect();
        let name = f.first().copied().unwrap_or("?");
        for (idx, kind) in [(2, "uid"), (3, "gid")] {
            if let Some(id) = f.get(idx).and_then(|s| s.parse::<u32>().ok()) {
                if range.contains(id) {
                    return Err(collide(format!(
                        "user {name:?} ({kind} {id}) in /etc/passwd"
                    )));
                }
            }
        }
    }
    for line in records(&accounts.group) {
        let f: Vec<&str> = line.split(':').collect();
        if let Some(id) = f.get(2).and_then(|s| s.parse::<u32>().ok()) {
            if range.contains(id) {
                let name = f.first().copied().unwrap_or("?");
                return Err(collide(format!("group {name:?} (gid {id}) in /etc/group")));
            }
        }
    }
    for (text, file) in [
        (&accounts.subuid, "/etc/subuid"),
        (&accounts.subgid, "/etc/subgid"),
    ] {
        for line in records(text) {
            let f: Vec<&str> = line.split(':').collect();
            let (Some(start), Some(count)) = (
                f.get(1).and_then(|s| s.parse::<u64>().ok()),
                f.get(2).and_then(|s| s.parse::<u64>().ok()),
            ) else {
                continue;
            };
            if range.overlaps(start, count) {
                let end = start + count.saturating_sub(1);
                return Err(collide(format!(
                    "the subordinate range {start}-{end} of {:?} in {file}",
                    f.first().copied().unwrap_or("?")
                )));
            }
        }
    }
    Ok(())
}

/// Non-empty, non-comment lines.
fn records(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The real uid in a `/proc/<pid>/status` text.
pub fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|u| u.parse().ok())
}

/// Whether process `pid` (of outside uid `uid`) is in a user namespace as a run's
/// stage makes it: one that maps exactly `INNER_RUN_ID` to `uid`, or nothing yet (a
/// stage between creating it and writing its maps); its `uid_map`, which anyone may
/// read, says. That, and its uid being in the broker's range, is what makes it one of
/// ours to kill; a process of such a uid elsewhere is someone else's.
fn in_run_namespace(pid: i32, uid: u32) -> bool {
    let run_map = [
        codejail_plan::INNER_RUN_ID.to_string(),
        uid.to_string(),
        "1".to_string(),
    ];
    std::fs::read_to_string(format!("/proc/{pid}/uid_map")).is_ok_and(|map| {
        let fields: Vec<&str> = map.split_whitespace().collect();
        fields.is_empty() || fields == run_map
    })
}

/// Whether a `/proc/<pid>/status` is a zombie's (or a task being torn down).
fn is_zombie(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .map(str::trim_start)
        .is_some_and(|s| s.starts_with('Z') || s.starts_with('X'))
}

/// Every process in `/proc`: its pid and its `status` text (one that exits between the
/// listing and the read is skipped). The one `/proc` scan of the project (the broker's
/// sweeps, and the tests' checks that nothing is left).
pub fn proc_statuses() -> io::Result<Vec<(i32, String)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(status) = std::fs::read_to_string(entry.path().join("status")) {
            found.push((pid, status));
        }
    }
    Ok(found)
}

/// Live processes (pid, real uid) whose real uid satisfies `wanted`, from `/proc`.
pub fn processes_with_uid(wanted: impl Fn(u32) -> bool) -> io::Result<Vec<(i32, u32)>> {
    Ok(proc_statuses()?
        .into_iter()
        // A zombie has released everything but its pid and exit status; it waits for
        // its parent (or the host's init) to reap it, and no signal changes that.
        .filter(|(_, status)| !is_zombie(status))
        .filter_map(|(pid, status)| real_uid(&status).filter(|u| wanted(*u)).map(|u| (pid, u)))
        .collect())
}

/// SIGKILL every process whose real uid satisfies `wanted` and wait until none is
/// left. Each pid is pinned with a pidfd and its uid checked again before the
/// signal, so a pid reused meanwhile by another process is never signalled.
/// Returns how many processes were found.
pub fn kill_uid_processes(wanted: impl Fn(u32) -> bool + Copy) -> Result<usize, PoolError> {
    let first = processes_with_uid(wanted).map_err(PoolError::ScanProcesses)?;
    if first.is_empty() {
        return Ok(0);
    }
    let deadline = Instant::now() + KILL_WAIT;
    let mut left = first.clone();
    loop {
        for (pid, uid) in &left {
            let Ok(fd) = sys::pidfd_open(*pid) else {
                continue;
            };
            let still = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| real_uid(&s))
                .is_some_and(wanted);
            if !still {
                continue;
            }
            // A run's process is signalled as its uid (the broker holds no capability
            // over a namespace its run created); anything else only as ourselves.
            let sent = if in_run_namespace(*pid, *uid) {
                sys::pidfd_kill_as(&fd, libc::SIGKILL, *uid)
            } else {
                sys::pidfd_kill(&fd, libc::SIGKILL)
            };
            match sent {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(source) => {
                    return Err(PoolError::KillStray {
                        pid: *pid,
                        uid: *uid,
                        source,
                    })
                }
            }
        }
        std::thread::sleep(SCAN_RETRY);
        left = processes_with_uid(wanted).map_err(PoolError::ScanProcesses)?;
        if left.is_empty() {
            return Ok(first.len());
        }
        if Instant::now() > deadline {
            return Err(PoolError::WaitStrays {
                pids: left.into_iter().map(|(p, _)| p).collect(),
            });
        }
    }
}

/// Start-up: kill the processes a crashed broker's runs left in `range`.
pub fn sweep_strays(range: IdRange) -> Result<usize, PoolError> {
    kill_uid_processes(|u| range.contains(u))
}

/// Outside ids for runs, handed out oldest-freed first so that an id rests as long as
/// possible between two runs.
#[derive(Debug, Clone)]
pub struct UidPool {
    range: IdRange,
    free: Arc<Mutex<VecDeque<u32>>>,
}

impl UidPool {
    /// Every id of `range`, free.
    pub fn new(range: IdRange) -> UidPool {
        UidPool {
            range,
            free: Arc::new(Mutex::new((range.first..=range.last()).collect())),
        }
    }

    /// The range.
    pub fn range(&self) -> IdRange {
        self.range
    }

    /// How many ids are free.
    pub fn free_count(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// An id for one run, or `None` when every id is in use (cannot happen while
    /// `max_running <= count`, which the config enforces, unless ids were
    /// quarantined).
    pub fn lease(&self) -> Option<Lease> {
        let id = self.free.lock().ok()?.pop_front()?;
        Some(Lease {
            id,
            free: Some(self.free.clone()),
        })
    }
}

/// One run's id. Give it back with [`Lease::release`] once the run has ended; plain
/// drop does the same check synchronously.
#[derive(Debug)]
pub struct Lease {
    id: u32,
    free: Option<Arc<Mutex<VecDeque<u32>>>>,
}

impl Lease {
    /// The uid (and gid) of the run.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The run's identity: this id as uid and gid; supplementary groups cleared when
    /// the broker holds CAP_SETGID (it always does with a pool: checked at start-up).
    pub fn identity(&self) -> RunIdentity {
        RunIdentity {
            outer_uid: self.id,
            outer_gid: self.id,
            clear_groups: holds_setgid(),
        }
    }

    /// Give the id back once no process with it is left: kill leftovers (a daemonized
    /// grandchild that escaped a broken run) and wait for them; an id whose processes
    /// survive stays out of the pool (quarantined), logged.
    pub async fn release(self) {
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }

    /// Give the id back at once: the caller has proved that no process with it is left
    /// (its run's cgroup, which held every one of them, removed; `Cleanup::finish`).
    pub fn release_emptied(mut self) {
        if let Some(free) = self.free.take() {
            if let Ok(mut f) = free.lock() {
                f.push_back(self.id);
            }
        }
    }

    fn settle(&mut self) {
        let Some(free) = self.free.take() else { return };
        let id = self.id;
        match kill_uid_processes(|u| u == id) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                uid = id,
                killed = n,
                "processes of a finished run were left; killed"
            ),
            Err(e) => {
                tracing::error!(uid = id, error = %e, "run uid quarantined: its processes could not be removed");
                return;
            }
        }
        if let Ok(mut f) = free.lock() {
            f.push_back(id);
        };
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u32, count: u32) -> IdRange {
        IdRange { first, count }
    }

    #[test]
    fn pool_hands_out_distinct_ids_until_exhausted_and_recycles_oldest_first() {
        // A range no process on a test machine runs as, so release finds nothing.
        let pool = UidPool::new(range(3_900_000_000, 3));
        let a = pool.lease().expect("a");
        let b = pool.lease().expect("b");
        let c = pool.lease().expect("c");
        let mut ids = vec![a.id(), b.id(), c.id()];
        ids.sort_unstable();
        assert_eq!(ids, vec![3_900_000_000, 3_900_000_001, 3_900_000_002]);
        assert!(pool.lease().is_none(), "exhausted");
        assert_eq!(pool.free_count(), 0);
        let b_id = b.id();
        drop(b);
        assert_eq!(pool.free_count(), 1);
        let again = pool.lease().expect("freed id");
        assert_eq!(again.id(), b_id);
        drop(a);
        drop(c);
        drop(again);
        // Oldest-freed first: a's id comes back before c's and b's.
        let order: Vec<u32> = (0..3)
            .map(|_| pool.lease().expect("id"))
            .map(|l| {
                let id = l.id();
                std::mem::forget(l);
                id
            })
            .collect();
        assert_eq!(order, vec![3_900_000_000, 3_900_000_002, 3_900_000_001]);
    }

    #[tokio::test]
    async fn release_returns_the_id() {
        let pool = UidPool::new(range(3_900_000_100, 1));
        let l = pool.lease().expect("id");
        assert!(pool.lease().is_none());
        l.release().await;
        assert_eq!(pool.free_count(), 1);
        let l = pool.lease().expect("id again");
        l.release_emptied();
        assert_eq!(pool.free_count(), 1, "given back once, not twice");
        assert_eq!(pool.lease().map(|l| l.id()), Some(3_900_000_100));
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment\n\
        postgres:x:200005:120:PostgreSQL:/var/lib/postgresql:/bin/bash\n\
        odd:x:1500:300010::/home/odd:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:250003:\n";
    const SUBUID: &str = "alice:100000:65536\nbob:400000:65536\n";

    fn accounts() -> Accounts {
        Accounts {
            passwd: PASSWD.into(),
            group: GROUP.into(),
            subuid: SUBUID.into(),
            subgid: String::new(),
        }
    }

    #[test]
    fn collisions_name_the_account_or_range() {
        let err = check_collisions(range(200_000, 64), &accounts()).expect_err("postgres");
        let msg = err.to_string();
        assert!(
            msg.contains("\"postgres\"")
                && msg.contains("uid 200005")
                && msg.contains("/etc/passwd"),
            "{msg}"
        );
        let err = check_collisions(range(300_000, 64), &accounts()).expect_err("primary gid");
        assert!(err.to_string().contains("\"odd\" (gid 300010)"), "{err}");
        let err = check_collisions(range(250_000, 8), &accounts()).expect_err("group");
        assert!(
            err.to_string()
                .contains("group \"staff\" (gid 250003) in /etc/group"),
            "{err}"
        );
        let err = check_collisions(range(165_000, 1000), &accounts()).expect_err("alice's subuids");
        assert!(
            err.to_string().contains("100000-165535") && err.to_string().contains("\"alice\""),
            "{err}"
        );
        // Adjacent, not overlapping: 165536 is just past alice's range.
        check_collisions(range(165_536, 1000), &accounts()).expect("free range");
        let mut a = accounts();
        a.subgid = "carol:500000:10\n".into();
        let err = check_collisions(range(500_009, 1), &a).expect_err("subgid");
        assert!(err.to_string().contains("/etc/subgid"), "{err}");
        check_collisions(range(500_010, 1), &a).expect("just past carol");
    }

    #[test]
    fn zombies_are_not_processes_to_kill() {
        assert!(is_zombie("Name:\tx\nState:\tZ (zombie)\n"));
        assert!(!is_zombie("Name:\tx\nState:\tS (sleeping)\n"));
    }

    #[test]
    fn real_uid_is_the_first_uid_field() {
        let status = "Name:\tpython\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t5\t5\t5\n";
        assert_eq!(real_uid(status), Some(1000));
        assert_eq!(real_uid("Name: x\n"), None);
    }

    #[test]
    fn our_own_processes_are_found_by_uid() {
        let me = nix::unistd::getuid().as_raw();
        let found = processes_with_uid(|u| u == me).expect("scan");
        let pid = std::process::id() as i32;
        assert!(found.iter().any(|(p, _)| *p == pid), "{found:?}");
    }
}
