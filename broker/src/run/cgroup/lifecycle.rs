//! One run's cgroup(s): create them with the caps written, move the stage in, kill
//! every process in them, read their stats, remove them; and the start-up sweep of
//! run cgroups a crashed broker left.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::sys;

/// Remove every `run-*` cgroup under the parents, killing what is in them.
pub(super) fn sweep(fs: &Arc<dyn CgroupFs>, backend: &Backend) -> Result<usize, CgroupError> {
    let parents: Vec<&PathBuf> = match backend {
        Backend::Off => vec![],
        Backend::V2 { root, .. } => vec![root],
        Backend::V1 { memory, pids } => [memory, pids].into_iter().flatten().collect(),
    };
    let mut removed = 0;
    for parent in parents {
        let names = fs
            .list_dirs(parent)
            .map_err(|source| CgroupError::SweepParent {
                path: parent.clone(),
                source,
            })?;
        for name in names.into_iter().filter(|n| n.starts_with(RUN_PREFIX)) {
            let dir = parent.join(&name);
            let v2 = matches!(backend, Backend::V2 { .. });
            let mut run = RunCgroup {
                fs: fs.clone(),
                v2_kill: v2 && fs.exists(&dir.join("cgroup.kill")),
                dirs: vec![dir],
                memory: None,
                pids: None,
                removed: false,
            };
            run.remove_blocking()?;
            removed += 1;
        }
    }
    Ok(removed)
}

pub(super) fn create_v2(
    fs: &dyn CgroupFs,
    dir: &Path,
    memory: bool,
    pids: bool,
    limits: RunCgroupLimits,
) -> Result<(), CgroupError> {
    make_dir(fs, dir)?;
    if memory {
        let max = limits
            .memory_bytes
            .map_or_else(|| "max".to_string(), |b| b.to_string());
        set(fs, &dir.join("memory.max"), &max)?;
        // No swap: a run past its cap is OOM-killed instead of thrashing the host's
        // swap (the file exists only where swap accounting is built in).
        let swap = dir.join("memory.swap.max");
        if fs.exists(&swap) {
            set(fs, &swap, "0")?;
        }
    }
    if pids {
        set(fs, &dir.join("pids.max"), &limits.pids_max.to_string())?;
    }
    Ok(())
}

pub(super) fn create_v1_memory(
    fs: &dyn CgroupFs,
    dir: &Path,
    limits: RunCgroupLimits,
) -> Result<(), CgroupError> {
    make_dir(fs, dir)?;
    let max = limits
        .memory_bytes
        .map_or_else(|| "-1".to_string(), |b| b.to_string());
    // memory first: memsw must never be below it (cgroup-v1/memory.rst §2.5).
    set(fs, &dir.join("memory.limit_in_bytes"), &max)?;
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if fs.exists(&memsw) {
        set(fs, &memsw, &max)?;
    }
    Ok(())
}

pub(super) fn create_v1_pids(
    fs: &dyn CgroupFs,
    dir: &Path,
    limits: RunCgroupLimits,
) -> Result<(), CgroupError> {
    make_dir(fs, dir)?;
    set(fs, &dir.join("pids.max"), &limits.pids_max.to_string())
}

pub(super) fn make_dir(fs: &dyn CgroupFs, dir: &Path) -> Result<(), CgroupError> {
    fs.create_dir(dir)
        .map_err(|source| CgroupError::CreateCgroup {
            path: dir.to_path_buf(),
            source,
        })
}

pub(super) fn set(fs: &dyn CgroupFs, path: &Path, value: &str) -> Result<(), CgroupError> {
    fs.write(path, value)
        .map_err(|source| CgroupError::SetLimit {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

/// Which memory files a run's memory cgroup has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MemoryFiles {
    V1,
    V2,
}

/// What a run's cgroup recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Peak memory of the run, bytes (v2 `memory.peak`, v1
    /// `memory.max_usage_in_bytes`).
    pub peak_memory_bytes: Option<u64>,
    /// Processes of the run the OOM killer killed because of the memory cap.
    pub oom_kills: u64,
    /// Forks refused because of `pids.max`.
    pub pids_max_hits: u64,
}

/// One run's cgroup(s). Remove with [`RunCgroup::remove`]; dropping it makes one
/// best-effort attempt (the next start-up sweep removes what that leaves).
#[derive(Debug)]
pub struct RunCgroup {
    fs: Arc<dyn CgroupFs>,
    /// Every directory made for the run (one in v2, one per controller in v1).
    dirs: Vec<PathBuf>,
    memory: Option<(PathBuf, MemoryFiles)>,
    pids: Option<PathBuf>,
    /// v2 with `cgroup.kill` (Linux 5.14).
    v2_kill: bool,
    removed: bool,
}

/// Write `pid` to `cgroup.procs` of each directory.
pub(super) fn move_into(fs: &dyn CgroupFs, dirs: &[PathBuf], pid: u32) -> Result<(), CgroupError> {
    for dir in dirs {
        let path = dir.join("cgroup.procs");
        fs.write(&path, &pid.to_string())
            .map_err(|source| CgroupError::MoveProcess { pid, path, source })?;
    }
    Ok(())
}

impl RunCgroup {
    /// The run's cgroup directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Move process `pid` (the just-spawned stage, still blocked on its control pipe)
    /// into the run's cgroup(s). The whole thread group moves (`cgroup.procs`).
    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        move_into(self.fs.as_ref(), &self.dirs, pid)
    }

    /// The run's `cgroup.procs` files, opened for writing (close-on-exec), for the
    /// stage to join the run's cgroup(s) itself between fork and exec (writing `0`,
    /// "the writer", with the broker's credentials still). It runs as the run's uid
    /// from its exec on, and a v1 hierarchy lets a process be moved only by its own
    /// uid (or root), so the broker could not move it afterwards.
    pub fn procs_files(&self) -> Result<Vec<std::os::fd::OwnedFd>, CgroupError> {
        self.dirs
            .iter()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(std::os::fd::OwnedFd::from)
                    .map_err(|source| CgroupError::MoveProcess {
                        pid: 0,
                        path,
                        source,
                    })
            })
            .collect()
    }

    /// SIGKILL every process of the run: v2 writes `cgroup.kill`, which the kernel
    /// applies to the whole cgroup atomically, forks in flight included; v1 (or a v2
    /// kernel before 5.14) signals each pid listed in `cgroup.procs` through a pidfd
    /// (see `kill_listed`). Returns without waiting for them to be gone.
    pub fn kill(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let result = if self.v2_kill {
                self.fs.write(&dir.join("cgroup.kill"), "1")
            } else {
                kill_listed(&*self.fs, dir)
            };
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CgroupError::KillProcesses {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Memory the run's cgroup holds now (v2 `memory.current`, v1
    /// `memory.usage_in_bytes`); `None` without a memory cgroup.
    pub fn memory_current(&self) -> Option<u64> {
        let (dir, files) = self.memory.as_ref()?;
        let file = match files {
            MemoryFiles::V2 => "memory.current",
            MemoryFiles::V1 => "memory.usage_in_bytes",
        };
        self.fs
            .read(&dir.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Write the caps of `limits` into the run's cgroup(s), as [`Cgroups::create_run`]
    /// does: a warm jail, built with none, gets its request's at hand-over.
    pub fn set_limits(&self, limits: RunCgroupLimits) -> Result<(), CgroupError> {
        if let Some((dir, files)) = &self.memory {
            match files {
                MemoryFiles::V2 => {
                    let max = limits
                        .memory_bytes
                        .map_or_else(|| "max".to_string(), |b| b.to_string());
                    set(&*self.fs, &dir.join("memory.max"), &max)?;
                }
                MemoryFiles::V1 => {
                    let max = limits
                        .memory_bytes
                        .map_or_else(|| "-1".to_string(), |b| b.to_string());
                    // Lowering: memory first, then memsw (never below memory).
                    set(&*self.fs, &dir.join("memory.limit_in_bytes"), &max)?;
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if self.fs.exists(&memsw) {
                        set(&*self.fs, &memsw, &max)?;
                    }
                }
            }
        }
        if let Some(dir) = &self.pids {
            set(
                &*self.fs,
                &dir.join("pids.max"),
                &limits.pids_max.to_string(),
            )?;
        }
        Ok(())
    }

    /// Peak memory and the limit counters (read before [`RunCgroup::remove`]).
    pub fn stats(&self) -> CgroupStats {
        let mut stats = CgroupStats::default();
        if let Some((dir, files)) = &self.memory {
            let (peak, events, key) = match files {
                MemoryFiles::V2 => ("memory.peak", "memory.events", "oom_kill"),
                MemoryFiles::V1 => (
                    "memory.max_usage_in_bytes",
                    "memory.oom_control",
                    "oom_kill",
                ),
            };
            stats.peak_memory_bytes = self
                .fs
                .read(&dir.join(peak))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            stats.oom_kills = self
                .fs
                .read(&dir.join(events))
                .ok()
                .and_then(|s| keyed_value(&s, key))
                .unwrap_or(0);
        }
        if let Some(dir) = &self.pids {
            stats.pids_max_hits = self
                .fs
                .read(&dir.join("pids.events"))
                .ok()
                .and_then(|s| keyed_value(&s, "max"))
                .unwrap_or(0);
        }
        stats
    }

    /// Kill what is left and remove the cgroup(s), retrying while exiting tasks still
    /// hold them (rmdir gives `EBUSY` until the last one has left).
    pub async fn remove(mut self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        loop {
            match self.try_remove() {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() < deadline => tokio::time::sleep(REMOVE_RETRY).await,
                Ok(false) => return Err(self.busy_error()),
                Err(e) => return Err(e),
            }
        }
    }

    /// [`RunCgroup::remove`] for synchronous callers (the start-up sweep).
    fn remove_blocking(&mut self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        loop {
            match self.try_remove() {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() < deadline => std::thread::sleep(REMOVE_RETRY),
                Ok(false) => return Err(self.busy_error()),
                Err(e) => return Err(e),
            }
        }
    }

    /// One kill and one rmdir per remaining directory: `Ok(true)` once all are gone.
    fn try_remove(&mut self) -> Result<bool, CgroupError> {
        self.kill()?;
        let mut remaining = Vec::new();
        for dir in std::mem::take(&mut self.dirs) {
            match self.fs.remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => remaining.push(dir),
                Err(source) => {
                    remaining.push(dir.clone());
                    self.dirs = remaining;
                    return Err(CgroupError::RemoveCgroup { path: dir, source });
                }
            }
        }
        self.dirs = remaining;
        self.removed = self.dirs.is_empty();
        Ok(self.removed)
    }

    fn remove_once(&mut self) {
        let _ = self.try_remove();
    }

    fn busy_error(&self) -> CgroupError {
        let dir = self.dirs.first().cloned().unwrap_or_default();
        let left = self
            .fs
            .read(&dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        CgroupError::RemoveCgroup {
            path: dir,
            source: io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!("still busy after {REMOVE_TIMEOUT:?}; processes left: [{left}]"),
            ),
        }
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if !self.removed && !self.dirs.is_empty() {
            self.remove_once();
        }
    }
}

/// SIGKILL each process listed in `<dir>/cgroup.procs`. Each pid is pinned with a
/// pidfd first and only signalled if it is *still* listed afterwards: a pid that was
/// reaped and reused between the read and the kill then names a process outside the
/// cgroup, which is never signalled (the pidfd of a dead process gives `ESRCH`).
pub(super) fn kill_listed(fs: &dyn CgroupFs, dir: &Path) -> io::Result<()> {
    let procs = dir.join("cgroup.procs");
    let listed = |text: &str| -> BTreeSet<i32> {
        text.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let before = listed(&fs.read(&procs)?);
    let mut pinned = Vec::new();
    for pid in before {
        match sys::pidfd_open(pid) {
            Ok(fd) => pinned.push((pid, fd)),
            // Gone already, or not a valid pid (a fake cgroupfs).
            Err(_) => continue,
        }
    }
    if pinned.is_empty() {
        return Ok(());
    }
    let still = listed(&fs.read(&procs)?);
    for (pid, fd) in pinned {
        if still.contains(&pid) {
            // A run's processes are the run's uid, in a namespace the broker does not
            // own: signalled as their owner (see `sys::pidfd_kill_as`).
            let owner = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| crate::run::uidpool::real_uid(&s));
            let sent = match owner {
                Some(uid) => sys::pidfd_kill_as(&fd, libc::SIGKILL, uid),
                None => sys::pidfd_kill(&fd, libc::SIGKILL),
            };
            match sent {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The value of `key` in a flat-keyed file (`memory.events`, `memory.oom_control`,
/// `pids.events`: one `key value` per line).
pub(super) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl Cgroups {
    /// Make the cgroup(s) of run `run_id` with its caps written; `None` when this
    /// broker has no cgroups. On error, whatever was made is removed again.
    pub fn create_run(
        &self,
        run_id: u64,
        limits: RunCgroupLimits,
    ) -> Result<Option<RunCgroup>, CgroupError> {
        let name = format!("{RUN_PREFIX}{run_id}");
        let mut run = RunCgroup {
            fs: self.fs.clone(),
            dirs: Vec::new(),
            memory: None,
            pids: None,
            v2_kill: false,
            removed: false,
        };
        let made = match &self.backend {
            Backend::Off => return Ok(None),
            Backend::V2 { root, memory, pids } => {
                let dir = root.join(&name);
                // Recorded before mkdir, so that a failure below removes it again.
                run.dirs.push(dir.clone());
                run.memory = memory.then(|| (dir.clone(), MemoryFiles::V2));
                run.pids = pids.then(|| dir.clone());
                create_v2(&*self.fs, &dir, *memory, *pids, limits).map(|()| {
                    run.v2_kill = self.fs.exists(&dir.join("cgroup.kill"));
                })
            }
            Backend::V1 { memory, pids } => {
                let mut result = Ok(());
                if let Some(parent) = memory {
                    let dir = parent.join(&name);
                    run.dirs.push(dir.clone());
                    run.memory = Some((dir.clone(), MemoryFiles::V1));
                    result = create_v1_memory(&*self.fs, &dir, limits);
                }
                if let (Ok(()), Some(parent)) = (&result, pids) {
                    let dir = parent.join(&name);
                    run.dirs.push(dir.clone());
                    run.pids = Some(dir.clone());
                    result = create_v1_pids(&*self.fs, &dir, limits);
                }
                result
            }
        };
        match made {
            Ok(()) => Ok(Some(run)),
            Err(e) => {
                // Nothing is in them yet: one attempt each is enough.
                run.remove_once();
                run.removed = true;
                Err(e)
            }
        }
    }
}
