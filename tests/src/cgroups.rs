//! v1 memory and pids cgroup parents for production-shape brokers.

use std::fs::{self};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// v1 memory and pids cgroup parents for one production-shape broker, created under
/// this test process's own cgroups and owned by the broker's uid, as an operator sets
/// them up (see `tests/tests/cgroup.rs`). Removed (with whatever run cgroups are left,
/// their tasks killed) on drop.
#[derive(Debug)]
pub struct V1CgroupParents {
    /// The memory parent.
    pub memory: PathBuf,
    /// The pids parent.
    pub pids: PathBuf,
    /// A pooled broker's pid: run cgroups holding only its descendants are its unused
    /// warm jails', not leftovers (a run's stage is reaped before its run ends, and
    /// its cgroup removed after).
    pub pooled_broker: Option<i32>,
}

impl V1CgroupParents {
    /// The directory of `controller`'s v1 hierarchy that holds this process.
    pub(crate) fn own(controller: &str) -> Option<PathBuf> {
        let mount = Path::new("/sys/fs/cgroup").join(controller);
        let cgroup = fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, list, path) = (f.next()?, f.next()?, f.next()?);
            list.split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })?;
        let dir = mount.join(rel.trim_start_matches('/'));
        dir.join("cgroup.procs").exists().then_some(dir)
    }

    /// Create both parents for a broker running as `uid` (needs root).
    pub fn create(uid: u32) -> Result<V1CgroupParents, String> {
        let (Some(memory), Some(pids)) = (Self::own("memory"), Self::own("pids")) else {
            return Err("no v1 memory and pids hierarchies here".into());
        };
        let name = format!("codejail-test-{}-{uid}", std::process::id());
        let parents = V1CgroupParents {
            pooled_broker: None,
            memory: memory.join(&name),
            pids: pids.join(&name),
        };
        for dir in [&parents.memory, &parents.pids] {
            // A leftover of a killed earlier test process with the same pid.
            if dir.exists() {
                remove_cgroup(dir);
            }
            fs::create_dir(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            // The broker creates the run cgroups itself; the parent's own files are
            // chowned as `chown -R` would.
            let id = Some(uid.into());
            nix::unistd::chown(dir, id, Some(uid.into()))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
            for entry in fs::read_dir(dir)
                .map_err(|e| format!("read {}: {e}", dir.display()))?
                .flatten()
            {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    nix::unistd::chown(&entry.path(), id, Some(uid.into()))
                        .map_err(|e| format!("chown {}: {e}", entry.path().display()))?;
                }
            }
        }
        Ok(parents)
    }

    /// The `--cgroup-v1` argument.
    pub fn arg(&self) -> String {
        format!("{},{}", self.memory.display(), self.pids.display())
    }

    /// Run cgroups (`run-*`) left under either parent.
    pub fn leftover_runs(&self) -> Vec<PathBuf> {
        let procs = self.pooled_broker.map(|_| crate::processes());
        [&self.memory, &self.pids]
            .iter()
            .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten())
            .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
            .map(|e| e.path())
            .filter(|dir| {
                let (Some(broker), Some(procs)) = (self.pooled_broker, &procs) else {
                    return true;
                };
                let listed: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                listed.is_empty()
                    || !listed
                        .iter()
                        .all(|p| crate::procs::descends_from(procs, *p, broker))
            })
            .collect()
    }
}

impl Drop for V1CgroupParents {
    fn drop(&mut self) {
        for dir in [&self.memory, &self.pids] {
            let children: Vec<PathBuf> = fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            for child in children.iter().chain(std::iter::once(dir)) {
                remove_cgroup(child);
            }
        }
    }
}

/// Kill whatever is in a cgroup and rmdir it (test clean-up; retries while tasks exit).
pub(crate) fn remove_cgroup(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.exists() && Instant::now() < deadline {
        for pid in fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
