//! One cgroup per run (ARCHITECTURE §4 steps 6–8, §5): the run's memory and pids caps,
//! a kill that reaches every process of the run, and its peak memory.
//!
//! Two layouts:
//!
//! - **v2** (production): a subtree delegated to the broker (systemd `Delegate=yes`).
//!   The "no internal processes" rule (cgroup-v2.rst, "No Internal Process
//!   Constraint") forbids enabling controllers for children of a cgroup that holds
//!   processes, so at start-up the broker moves itself into the leaf `<root>/broker`,
//!   enables `memory` and `pids` in `<root>/cgroup.subtree_control`, and makes each
//!   run's cgroup as the sibling `<root>/run-<id>`. Both leaves are in the delegated
//!   subtree, so the broker may move the stage between them (cgroup-v2.rst,
//!   "Delegation Containment").
//! - **v1** (hybrid hosts such as this project's CI): the run's cgroups are
//!   `<memory parent>/run-<id>` and `<pids parent>/run-<id>`, both parents created and
//!   chowned to the broker's uid by the operator.
//!
//! Per run, in order: [`Cgroups::create_run`] makes the cgroup(s) and writes the caps
//! before the stage exists; [`RunCgroup::add_process`] moves the stage in right after
//! spawn, before the plan is sent (so before anything of the run is charged: the
//! stage is still blocked on its control pipe); [`RunCgroup::kill`] ends every process
//! in it (REALTIME, cancel, clean-up); [`RunCgroup::stats`] reads peak memory and the
//! OOM and pids-limit counters; [`RunCgroup::remove`] kills what is left and removes
//! the cgroup(s), retrying while the kernel still counts exiting tasks.
//!
//! At start-up [`Cgroups::set_up`] sweeps `run-*` cgroups a crashed broker left.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codejail_protocol::LayerState;

use crate::config::{CgroupMode, CgroupSettings};
use crate::sys;

/// Prefix of the run cgroups' names; the start-up sweep removes every cgroup named so.
pub const RUN_PREFIX: &str = "run-";
/// The v2 leaf the broker moves itself into.
pub const BROKER_LEAF: &str = "broker";
/// Processes of a run's cgroup that are not the program's: the jail stage and the
/// run's init (the same two the stage adds to RLIMIT_NPROC, see `codejail_jail::rlimits`).
pub const PIDS_SHARED: u64 = 2;
/// How long removing a run cgroup may take (exiting tasks leave it asynchronously).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between removal attempts.
const REMOVE_RETRY: Duration = Duration::from_millis(10);
/// Where a cgroup2 file system is usually mounted: pure v2 hosts, then hybrid ones.
const V2_MOUNT_CANDIDATES: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

/// A cgroup step that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// mkdir of a run cgroup.
    #[error("cannot create cgroup {path}: {source}")]
    CreateCgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Writing a limit (`memory.max`, `pids.max`, ...).
    #[error("cannot set {path} to {value}: {source}")]
    SetLimit {
        /// The control file.
        path: PathBuf,
        /// The value written.
        value: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Writing a pid to `cgroup.procs`.
    #[error("cannot move process {pid} into {path}: {source}")]
    MoveProcess {
        /// The process.
        pid: u32,
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Killing the processes of a cgroup.
    #[error("cannot kill the processes of cgroup {path}: {source}")]
    KillProcesses {
        /// The cgroup directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// rmdir of a run cgroup.
    #[error("cannot remove cgroup {path}: {source}")]
    RemoveCgroup {
        /// The cgroup directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Listing a parent for the start-up sweep.
    #[error("cannot list {path} to sweep leftover run cgroups: {source}")]
    SweepParent {
        /// The parent directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Moving the broker into its v2 leaf.
    #[error("cannot move the broker into {path}: {source}")]
    MoveBroker {
        /// The leaf's `cgroup.procs`.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Enabling controllers for the run cgroups.
    #[error("cannot enable {controllers} in {path}: {source}")]
    EnableControllers {
        /// `"+memory +pids"`.
        controllers: String,
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The file operations the cgroup code needs: the real cgroupfs, or a fake one in a
/// temporary directory for the unit tests (where rmdir removes the "control files" as
/// the kernel does).
pub trait CgroupFs: Send + Sync + fmt::Debug {
    /// Read a whole control file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Write a control file, in one `write(2)` as cgroupfs requires.
    fn write(&self, path: &Path, contents: &str) -> io::Result<()>;
    /// mkdir a cgroup.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// rmdir a cgroup (`EBUSY` while it has tasks).
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Names of the sub-directories (child cgroups).
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;
    /// Whether the broker may write there (`access(W_OK)`).
    fn writable(&self, path: &Path) -> bool;
}

/// The host's cgroup file systems.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl CgroupFs for RealFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        // No O_CREAT: a control file that does not exist is an error, not a new file.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(contents.as_bytes())
    }
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn writable(&self, path: &Path) -> bool {
        nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
    }
}

/// Where the broker itself sits in the cgroup hierarchies (from `/proc/self`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnCgroup {
    /// The broker's pid (written to `cgroup.procs` to move it).
    pub pid: u32,
    /// The broker's v2 cgroup directory (cgroup2 mount + the `0::` path).
    pub v2_dir: Option<PathBuf>,
}

impl OwnCgroup {
    /// Read `/proc/self/cgroup` and `/proc/self/mountinfo`.
    pub fn detect() -> OwnCgroup {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mount = cgroup2_mount(&mountinfo).or_else(|| {
            V2_MOUNT_CANDIDATES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.join("cgroup.controllers").exists())
        });
        OwnCgroup {
            pid: std::process::id(),
            v2_dir: match (mount, v2_path(&cgroup)) {
                (Some(m), Some(rel)) => Some(match rel.trim_start_matches('/') {
                    "" => m,
                    rel => m.join(rel),
                }),
                _ => None,
            },
        }
    }
}

/// The `0::<path>` line of a `/proc/<pid>/cgroup` (cgroups(7)).
pub fn v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// The mount point of the cgroup2 file system in a `/proc/<pid>/mountinfo`
/// (proc(5): fields up to " - ", then the file system type).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// What the cgroups layer achieves here, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupStatus {
    /// Runs get a memory cap.
    pub memory: bool,
    /// Runs get a pids cap.
    pub pids: bool,
    /// Policy requires both.
    pub required: bool,
    /// What is used, or what is missing with the fix.
    pub detail: String,
}

impl CgroupStatus {
    /// Full with memory and pids, Partial with one, Unavailable with none.
    pub fn state(&self) -> LayerState {
        match (self.memory, self.pids) {
            (true, true) => LayerState::Full,
            (false, false) => LayerState::Unavailable,
            _ => LayerState::Partial,
        }
    }

    /// Whether policy is met (not required, or both controllers).
    pub fn holds(&self) -> bool {
        !self.required || self.state() == LayerState::Full
    }
}

/// Where run cgroups are made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Backend {
    /// No cgroups.
    Off,
    /// Children of a delegated v2 cgroup.
    V2 {
        root: PathBuf,
        memory: bool,
        pids: bool,
    },
    /// Children of v1 parents, per controller.
    V1 {
        memory: Option<PathBuf>,
        pids: Option<PathBuf>,
    },
}

/// What one hierarchy offers, found without changing anything.
#[derive(Debug, Clone)]
struct Candidate {
    backend: Backend,
    /// Why a controller is missing, and the fix.
    missing: Vec<String>,
}

impl Candidate {
    fn controllers(&self) -> usize {
        match &self.backend {
            Backend::Off => 0,
            Backend::V2 { memory, pids, .. } => usize::from(*memory) + usize::from(*pids),
            Backend::V1 { memory, pids } => {
                usize::from(memory.is_some()) + usize::from(pids.is_some())
            }
        }
    }
}

/// The broker's cgroup set-up: where run cgroups go and what they get.
#[derive(Debug)]
pub struct Cgroups {
    fs: Arc<dyn CgroupFs>,
    backend: Backend,
    status: CgroupStatus,
    unlimited_pids: u64,
}

/// The caps of one run's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCgroupLimits {
    /// Memory cap in bytes (`None`: no cap).
    pub memory_bytes: Option<u64>,
    /// `pids.max`.
    pub pids_max: u64,
}

impl Cgroups {
    /// Find the cgroups this host offers per `settings`, prepare them (v2: move the
    /// broker into its leaf and enable the controllers), and sweep the `run-*` cgroups
    /// a crashed broker left. Never fails: what does not work is reported in the
    /// status (the caller refuses to start when policy requires it).
    pub fn set_up(settings: &CgroupSettings) -> Cgroups {
        Self::set_up_with(Arc::new(RealFs), settings, &OwnCgroup::detect())
    }

    /// Find what this host offers without changing anything (`check-config`, which
    /// must neither move itself nor sweep a serving broker's runs). The result makes
    /// no run cgroups; its status says what a serving broker would get.
    pub fn inspect(settings: &CgroupSettings) -> Cgroups {
        let fs: Arc<dyn CgroupFs> = Arc::new(RealFs);
        let own = OwnCgroup::detect();
        let chosen = choose(&*fs, settings, &own);
        let status = status_for(&chosen, settings.required);
        Cgroups {
            fs,
            backend: Backend::Off,
            status,
            unlimited_pids: settings.unlimited_pids,
        }
    }

    /// [`Cgroups::set_up`] on any file system (the unit tests use a fake cgroupfs).
    pub fn set_up_with(
        fs: Arc<dyn CgroupFs>,
        settings: &CgroupSettings,
        own: &OwnCgroup,
    ) -> Cgroups {
        let mut chosen = choose(&*fs, settings, own);
        if let Err(e) = prepare(&*fs, &chosen.backend, own) {
            chosen = Candidate {
                backend: Backend::Off,
                missing: vec![format!(
                    "{e}; fix: run the broker under systemd with Delegate=yes (its own cgroup subtree, owned by its user)"
                )],
            };
        }
        let mut status = status_for(&chosen, settings.required);
        let swept = sweep(&fs, &chosen.backend);
        match swept {
            Ok(0) => {}
            Ok(n) => tracing::warn!(removed = n, "removed run cgroups a previous broker left"),
            Err(e) => {
                // A parent we cannot list is a parent we cannot manage either.
                tracing::error!(error = %e, "start-up sweep of run cgroups failed");
                status
                    .detail
                    .push_str(&format!("; start-up sweep failed: {e}"));
            }
        }
        Cgroups {
            fs,
            backend: chosen.backend,
            status,
            unlimited_pids: settings.unlimited_pids,
        }
    }

    /// What this layer achieves.
    pub fn status(&self) -> &CgroupStatus {
        &self.status
    }

    /// Whether runs get cgroups from this set-up (not after [`Cgroups::inspect`]).
    pub fn makes_run_cgroups(&self) -> bool {
        self.backend != Backend::Off
    }

    /// The caps of a run with these limits: MEMORY as is (0 = none); pids for the
    /// program's NPROC plus the stage and the init, or `unlimited_pids` when NPROC is
    /// 0 so that a fork bomb is still bounded.
    pub fn limits_for(&self, memory: Option<u64>, nproc: Option<u64>) -> RunCgroupLimits {
        RunCgroupLimits {
            memory_bytes: memory,
            pids_max: nproc
                .map(|n| n.saturating_add(PIDS_SHARED))
                .unwrap_or(self.unlimited_pids),
        }
    }

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

/// Pick the hierarchy per `cgroup.mode`, looking only.
fn choose(fs: &dyn CgroupFs, settings: &CgroupSettings, own: &OwnCgroup) -> Candidate {
    let off = |why: &str| Candidate {
        backend: Backend::Off,
        missing: vec![why.to_string()],
    };
    match settings.mode {
        CgroupMode::None => off("disabled (cgroup.mode = \"none\"; with --dev, pass --cgroup-v2 DIR or --cgroup-v1 MEMORY_PARENT,PIDS_PARENT)"),
        CgroupMode::V2 => inspect_v2(fs, settings, own),
        CgroupMode::V1 => inspect_v1(fs, settings),
        CgroupMode::Auto => {
            let v2 = inspect_v2(fs, settings, own);
            if v2.controllers() == 2 {
                return v2;
            }
            let v1 = inspect_v1(fs, settings);
            if v1.controllers() > v2.controllers() {
                return v1;
            }
            if v2.controllers() > 0 {
                return v2;
            }
            let mut missing = v2.missing;
            missing.extend(v1.missing);
            Candidate {
                backend: Backend::Off,
                missing,
            }
        }
    }
}

/// A delegated v2 root with the memory and/or pids controllers available.
fn inspect_v2(fs: &dyn CgroupFs, settings: &CgroupSettings, own: &OwnCgroup) -> Candidate {
    let fix = "fix: run the broker under systemd with Delegate=yes (or set cgroup.v2_root to a cgroup delegated to its uid)";
    let off = |why: String| Candidate {
        backend: Backend::Off,
        missing: vec![why],
    };
    let Some(root) = settings.v2_root.clone().or_else(|| own.v2_dir.clone()) else {
        return off(format!(
            "v2: no cgroup2 file system or no 0:: line in /proc/self/cgroup; {fix}"
        ));
    };
    let controllers = match fs.read(&root.join("cgroup.controllers")) {
        Ok(c) => c
            .split_whitespace()
            .map(str::to_string)
            .collect::<BTreeSet<_>>(),
        Err(e) => {
            return off(format!(
                "v2: {} is not a usable cgroup ({e}); {fix}",
                root.display()
            ))
        }
    };
    let memory = controllers.contains("memory");
    let pids = controllers.contains("pids");
    let absent: Vec<&str> = [("memory", memory), ("pids", pids)]
        .into_iter()
        .filter(|(_, have)| !have)
        .map(|(name, _)| name)
        .collect();
    let mut missing = Vec::new();
    if !absent.is_empty() {
        missing.push(format!(
            "v2: no {} controller in {} (cgroup.controllers: {:?}); {fix}",
            absent.join(" or "),
            root.display(),
            controllers.iter().cloned().collect::<Vec<_>>().join(" ")
        ));
    }
    if !(memory || pids) {
        return Candidate {
            backend: Backend::Off,
            missing,
        };
    }
    for file in ["cgroup.subtree_control", "cgroup.procs"] {
        if !fs.writable(&root.join(file)) {
            return off(format!(
                "v2: {} is not writable by the broker's uid, so {} is not delegated to it; {fix}",
                root.join(file).display(),
                root.display()
            ));
        }
    }
    if !fs.writable(&root) {
        return off(format!(
            "v2: the broker's uid cannot create cgroups in {}; {fix}",
            root.display()
        ));
    }
    Candidate {
        backend: Backend::V2 { root, memory, pids },
        missing,
    }
}

/// v1 parents that exist, are cgroups of the right hierarchy, and are writable.
fn inspect_v1(fs: &dyn CgroupFs, settings: &CgroupSettings) -> Candidate {
    let mut missing = Vec::new();
    let mut check = |name: &str, parent: &Path, marker: &str| {
        let fix = format!(
            "fix: as root, `mkdir {p} && chown <broker user> {p} {p}/cgroup.procs {p}/tasks` (cgroup.v1_{name})",
            p = parent.display()
        );
        if !fs.exists(&parent.join(marker)) {
            missing.push(format!(
                "v1: {} is not a {name} cgroup (no {marker}); {fix}",
                parent.display()
            ));
            return None;
        }
        if !fs.writable(parent) {
            missing.push(format!(
                "v1: the broker's uid cannot create cgroups in {}; {fix}",
                parent.display()
            ));
            return None;
        }
        Some(parent.to_path_buf())
    };
    let memory = check("memory", &settings.v1_memory, "memory.limit_in_bytes");
    let pids = check("pids", &settings.v1_pids, "pids.max");
    let backend = if memory.is_none() && pids.is_none() {
        Backend::Off
    } else {
        Backend::V1 { memory, pids }
    };
    Candidate { backend, missing }
}

/// v2 only: move the broker out of the root into its leaf when it sits in the root,
/// then enable the controllers for the run cgroups.
fn prepare(fs: &dyn CgroupFs, backend: &Backend, own: &OwnCgroup) -> Result<(), CgroupError> {
    let Backend::V2 { root, memory, pids } = backend else {
        return Ok(());
    };
    // The broker is an internal process of `root` only if it sits there itself; a
    // broker elsewhere (an explicit cgroup.v2_root) leaves its own cgroup alone.
    if own.v2_dir.as_deref() == Some(root.as_path()) {
        let leaf = root.join(BROKER_LEAF);
        match fs.create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::CreateCgroup { path: leaf, source }),
        }
        let procs = leaf.join("cgroup.procs");
        // Writing our pid moves the whole process, every thread (cgroup-v2.rst).
        fs.write(&procs, &own.pid.to_string())
            .map_err(|source| CgroupError::MoveBroker {
                path: procs,
                source,
            })?;
    }
    let controllers = [("+memory", *memory), ("+pids", *pids)]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(" ");
    let path = root.join("cgroup.subtree_control");
    fs.write(&path, &controllers)
        .map_err(|source| CgroupError::EnableControllers {
            controllers,
            path,
            source,
        })
}

fn status_for(chosen: &Candidate, required: bool) -> CgroupStatus {
    let unbounded = "memory and CPU are then bounded per process only (RLIMIT_AS, RLIMIT_CPU x NPROC), tmpfs pages unaccounted";
    let (memory, pids, used) = match &chosen.backend {
        Backend::Off => (false, false, format!("no run cgroups: {unbounded}")),
        Backend::V2 { root, memory, pids } => (
            *memory,
            *pids,
            format!(
                "v2: one cgroup per run under {} ({}), killed with cgroup.kill and removed after the run",
                root.display(),
                caps_text(*memory, *pids, "memory.max, memory.swap.max=0")
            ),
        ),
        Backend::V1 { memory, pids } => (
            memory.is_some(),
            pids.is_some(),
            format!(
                "v1: one cgroup per run under {} ({}), killed and removed after the run",
                [memory, pids]
                    .into_iter()
                    .flatten()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and "),
                caps_text(
                    memory.is_some(),
                    pids.is_some(),
                    "memory.limit_in_bytes, memsw"
                )
            ),
        ),
    };
    let mut detail = used;
    let complete = memory && pids;
    if !complete && !chosen.missing.is_empty() {
        detail.push_str("; missing: ");
        detail.push_str(&chosen.missing.join("; "));
    }
    CgroupStatus {
        memory,
        pids,
        required,
        detail,
    }
}

fn caps_text(memory: bool, pids: bool, memory_files: &str) -> String {
    match (memory, pids) {
        (true, true) => format!("MEMORY as {memory_files}; pids.max = NPROC+2"),
        (true, false) => format!("MEMORY as {memory_files}; no pids cap"),
        (false, true) => "pids.max = NPROC+2; no memory cap".to_string(),
        (false, false) => "no caps".to_string(),
    }
}

/// Remove every `run-*` cgroup under the parents, killing what is in them.
fn sweep(fs: &Arc<dyn CgroupFs>, backend: &Backend) -> Result<usize, CgroupError> {
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

fn create_v2(
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

fn create_v1_memory(
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

fn create_v1_pids(
    fs: &dyn CgroupFs,
    dir: &Path,
    limits: RunCgroupLimits,
) -> Result<(), CgroupError> {
    make_dir(fs, dir)?;
    set(fs, &dir.join("pids.max"), &limits.pids_max.to_string())
}

fn make_dir(fs: &dyn CgroupFs, dir: &Path) -> Result<(), CgroupError> {
    fs.create_dir(dir)
        .map_err(|source| CgroupError::CreateCgroup {
            path: dir.to_path_buf(),
            source,
        })
}

fn set(fs: &dyn CgroupFs, path: &Path, value: &str) -> Result<(), CgroupError> {
    fs.write(path, value)
        .map_err(|source| CgroupError::SetLimit {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

/// Which memory files a run's memory cgroup has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemoryFiles {
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
fn move_into(fs: &dyn CgroupFs, dirs: &[PathBuf], pid: u32) -> Result<(), CgroupError> {
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

    /// [`RunCgroup::add_process`] off the async runtime's threads: a migration waits
    /// for an RCU grace period in the kernel (about 10 ms measured on v1 memory here),
    /// which must not stall every other connection served by that thread.
    pub async fn add_process_async(&self, pid: u32) -> Result<(), CgroupError> {
        let (fs, dirs) = (self.fs.clone(), self.dirs.clone());
        tokio::task::spawn_blocking(move || move_into(fs.as_ref(), &dirs, pid))
            .await
            .unwrap_or_else(|e| {
                Err(CgroupError::MoveProcess {
                    pid,
                    path: PathBuf::from("cgroup.procs"),
                    source: io::Error::other(e.to_string()),
                })
            })
    }

    /// SIGKILL every process of the run: v2 writes `cgroup.kill`, which the kernel
    /// applies to the whole cgroup atomically, forks in flight included; v1 (or a v2
    /// kernel before 5.14) signals each pid listed in `cgroup.procs` through a pidfd
    /// (see [`kill_listed`]). Returns without waiting for them to be gone.
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
fn kill_listed(fs: &dyn CgroupFs, dir: &Path) -> io::Result<()> {
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
            match sys::pidfd_kill(&fd, libc::SIGKILL) {
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
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A cgroupfs in a temporary directory: a new cgroup gets the control files of its
    /// parent (as the kernel's do), rmdir removes them, `cgroup.procs` lists what was
    /// written to it, writing `1` to `cgroup.kill` empties it, and rmdir of a cgroup
    /// with processes listed fails with EBUSY. Every operation is logged in order.
    #[derive(Debug)]
    struct FakeFs {
        log: Mutex<Vec<String>>,
        read_only: Vec<PathBuf>,
        failing_writes: Vec<&'static str>,
        base: PathBuf,
    }

    impl FakeFs {
        fn new(base: &Path) -> FakeFs {
            FakeFs {
                log: Mutex::new(Vec::new()),
                read_only: Vec::new(),
                failing_writes: Vec::new(),
                base: base.to_path_buf(),
            }
        }
        fn rel(&self, p: &Path) -> String {
            p.strip_prefix(&self.base)
                .unwrap_or(p)
                .display()
                .to_string()
        }
        fn note(&self, s: String) {
            self.log.lock().expect("log").push(s);
        }
        fn log(&self) -> Vec<String> {
            self.log.lock().expect("log").clone()
        }
    }

    impl CgroupFs for FakeFs {
        fn read(&self, path: &Path) -> io::Result<String> {
            std::fs::read_to_string(path)
        }
        fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
            self.note(format!("write {} {contents}", self.rel(path)));
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if self.failing_writes.contains(&name) {
                return Err(io::Error::from_raw_os_error(libc::EACCES));
            }
            if !path.is_file() {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            if name == "cgroup.kill" && contents == "1" {
                let procs = path.with_file_name("cgroup.procs");
                std::fs::write(procs, "")?;
            }
            if name == "cgroup.procs" {
                // Moving a process appends it to the list.
                let mut listed = std::fs::read_to_string(path)?;
                listed.push_str(contents);
                listed.push('\n');
                return std::fs::write(path, listed);
            }
            std::fs::write(path, contents)
        }
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            self.note(format!("mkdir {}", self.rel(path)));
            std::fs::create_dir(path)?;
            let parent = path.parent().expect("parent");
            for entry in std::fs::read_dir(parent)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    let contents = match entry.file_name().to_str() {
                        Some("cgroup.procs") => "",
                        Some("memory.peak") => "123456\n",
                        Some("memory.max_usage_in_bytes") => "654321\n",
                        _ => "",
                    };
                    std::fs::write(path.join(entry.file_name()), contents)?;
                }
            }
            Ok(())
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            self.note(format!("rmdir {}", self.rel(path)));
            let procs = std::fs::read_to_string(path.join("cgroup.procs"))?;
            if !procs.trim().is_empty() {
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
            std::fs::remove_dir_all(path)
        }
        fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
            RealFs.list_dirs(path)
        }
        fn exists(&self, path: &Path) -> bool {
            path.exists()
        }
        fn writable(&self, path: &Path) -> bool {
            !self.read_only.iter().any(|p| p == path)
        }
    }

    fn touch(dir: &Path, files: &[&str]) {
        std::fs::create_dir_all(dir).expect("mkdir");
        for f in files {
            std::fs::write(dir.join(f), "").expect("touch");
        }
    }

    const V2_FILES: [&str; 10] = [
        "cgroup.procs",
        "cgroup.kill",
        "cgroup.subtree_control",
        "memory.max",
        "memory.swap.max",
        "memory.peak",
        "memory.events",
        "pids.max",
        "pids.events",
        "cgroup.events",
    ];

    /// A delegated v2 root (with the given controllers) that holds the broker.
    fn v2_host(controllers: &str) -> (tempfile::TempDir, PathBuf, OwnCgroup) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("codejail.service");
        touch(&root, &V2_FILES);
        std::fs::write(root.join("cgroup.controllers"), controllers).expect("controllers");
        std::fs::write(root.join("cgroup.procs"), "4321\n").expect("procs");
        let own = OwnCgroup {
            pid: 4321,
            v2_dir: Some(root.clone()),
        };
        (tmp, root, own)
    }

    fn settings(mode: CgroupMode, base: &Path) -> CgroupSettings {
        CgroupSettings {
            mode,
            v2_root: None,
            v1_memory: base.join("memory/codejail"),
            v1_pids: base.join("pids/codejail"),
            required: true,
            unlimited_pids: 256,
        }
    }

    #[test]
    fn v2_set_up_moves_the_broker_into_a_leaf_then_enables_controllers() {
        let (tmp, root, own) = v2_host("cpu memory pids io");
        // A crashed broker's run with a process still listed, and a sibling that is
        // not a run cgroup (never touched).
        touch(&root.join("run-7"), &V2_FILES);
        std::fs::write(root.join("run-7/cgroup.procs"), "999\n").expect("procs");
        touch(&root.join("other"), &["cgroup.procs"]);
        let fs = Arc::new(FakeFs::new(tmp.path()));
        let cg = Cgroups::set_up_with(fs.clone(), &settings(CgroupMode::V2, tmp.path()), &own);
        assert_eq!(cg.status().state(), LayerState::Full, "{:?}", cg.status());
        assert!(cg.status().holds());
        assert!(cg.makes_run_cgroups());
        assert_eq!(
            fs.log(),
            vec![
                "mkdir codejail.service/broker",
                "write codejail.service/broker/cgroup.procs 4321",
                "write codejail.service/cgroup.subtree_control +memory +pids",
                "write codejail.service/run-7/cgroup.kill 1",
                "rmdir codejail.service/run-7",
            ]
        );
        assert!(!root.join("run-7").exists(), "leftover run cgroup swept");
        assert!(root.join("other").exists() && root.join("broker").exists());
    }

    #[test]
    fn v2_run_cgroup_lifecycle_writes_caps_procs_kill_then_rmdir() {
        let (tmp, root, own) = v2_host("memory pids");
        let fs = Arc::new(FakeFs::new(tmp.path()));
        let cg = Cgroups::set_up_with(fs.clone(), &settings(CgroupMode::V2, tmp.path()), &own);
        fs.log.lock().expect("log").clear();
        let limits = cg.limits_for(Some(64 << 20), Some(15));
        assert_eq!(limits.pids_max, 17, "NPROC + the stage and the init");
        let run = cg.create_run(5, limits).expect("create").expect("a cgroup");
        let dir = root.join("run-5");
        assert_eq!(run.dirs(), std::slice::from_ref(&dir));
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.max")).expect("max"),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.swap.max")).expect("swap"),
            "0"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("pids.max")).expect("pids"),
            "17"
        );
        run.add_process(777).expect("move");
        assert_eq!(
            std::fs::read_to_string(dir.join("cgroup.procs")).expect("procs"),
            "777\n"
        );
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .expect("events");
        std::fs::write(dir.join("pids.events"), "max 4\n").expect("events");
        let stats = run.stats();
        assert_eq!(
            stats,
            CgroupStats {
                peak_memory_bytes: Some(123456),
                oom_kills: 1,
                pids_max_hits: 4
            }
        );
        run.kill().expect("kill");
        assert_eq!(
            std::fs::read_to_string(dir.join("cgroup.procs")).expect("procs"),
            ""
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(run.remove()).expect("remove");
        assert!(!dir.exists());
        assert_eq!(
            fs.log(),
            vec![
                "mkdir codejail.service/run-5",
                &format!("write codejail.service/run-5/memory.max {}", 64u64 << 20),
                "write codejail.service/run-5/memory.swap.max 0",
                "write codejail.service/run-5/pids.max 17",
                "write codejail.service/run-5/cgroup.procs 777",
                "write codejail.service/run-5/cgroup.kill 1",
                "write codejail.service/run-5/cgroup.kill 1",
                "rmdir codejail.service/run-5",
            ]
        );
    }

    #[test]
    fn unlimited_memory_and_nproc_still_bound_pids() {
        let (tmp, root, own) = v2_host("memory pids");
        let fs = Arc::new(FakeFs::new(tmp.path()));
        let cg = Cgroups::set_up_with(fs, &settings(CgroupMode::V2, tmp.path()), &own);
        let run = cg
            .create_run(1, cg.limits_for(None, None))
            .expect("create")
            .expect("cgroup");
        assert_eq!(
            std::fs::read_to_string(root.join("run-1/memory.max")).expect("max"),
            "max"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("run-1/pids.max")).expect("pids"),
            "256"
        );
        drop(run);
        assert!(
            !root.join("run-1").exists(),
            "drop removes an empty run cgroup"
        );
    }

    #[test]
    fn a_failed_limit_write_removes_the_new_cgroup() {
        let (tmp, root, own) = v2_host("memory pids");
        let mut fake = FakeFs::new(tmp.path());
        fake.failing_writes.push("pids.max");
        let fs = Arc::new(fake);
        let cg = Cgroups::set_up_with(fs, &settings(CgroupMode::V2, tmp.path()), &own);
        let err = cg
            .create_run(2, cg.limits_for(Some(1 << 20), Some(3)))
            .expect_err("EACCES");
        assert!(matches!(err, CgroupError::SetLimit { .. }), "{err:?}");
        assert!(err.to_string().contains("pids.max"), "{err}");
        assert!(!root.join("run-2").exists());
    }

    #[test]
    fn v2_without_memory_is_partial_and_names_the_fix() {
        let (tmp, _root, own) = v2_host("cpu pids");
        let fs = Arc::new(FakeFs::new(tmp.path()));
        let cg = Cgroups::set_up_with(fs, &settings(CgroupMode::V2, tmp.path()), &own);
        let st = cg.status();
        assert_eq!(
            (st.memory, st.pids, st.state()),
            (false, true, LayerState::Partial)
        );
        assert!(!st.holds(), "required and partial");
        assert!(st.detail.contains("no memory controller"), "{}", st.detail);
        assert!(st.detail.contains("Delegate=yes"), "{}", st.detail);
    }

    #[test]
    fn v2_not_delegated_is_unavailable() {
        let (tmp, root, own) = v2_host("memory pids");
        let mut fake = FakeFs::new(tmp.path());
        fake.read_only.push(root.join("cgroup.subtree_control"));
        let fs = Arc::new(fake);
        let cg = Cgroups::set_up_with(fs.clone(), &settings(CgroupMode::V2, tmp.path()), &own);
        assert_eq!(cg.status().state(), LayerState::Unavailable);
        assert!(
            cg.status().detail.contains("not delegated"),
            "{}",
            cg.status().detail
        );
        assert!(!cg.makes_run_cgroups());
        assert!(
            fs.log().is_empty(),
            "nothing moved or written: {:?}",
            fs.log()
        );
        assert!(cg
            .create_run(1, cg.limits_for(None, None))
            .expect("no-op")
            .is_none());
    }

    #[test]
    fn a_broker_outside_the_v2_root_is_not_moved() {
        let (tmp, root, mut own) = v2_host("memory pids");
        own.v2_dir = Some(tmp.path().join("elsewhere"));
        let fs = Arc::new(FakeFs::new(tmp.path()));
        let mut s = settings(CgroupMode::V2, tmp.path());
        s.v2_root = Some(root);
        let cg = Cgroups::set_up_with(fs.clone(), &s, &own);
        assert_eq!(cg.status().state(), LayerState::Full);
        assert_eq!(
            fs.log(),
            vec!["write codejail.service/cgroup.subtree_control +memory +pids"]
        );
    }

    fn v1_host(with_pids: bool) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tempdir");
        touch(
            &tmp.path().join("memory/codejail"),
            &[
                "cgroup.procs",
                "tasks",
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "memory.max_usage_in_bytes",
                "memory.oom_control",
            ],
        );
        if with_pids {
            touch(
                &tmp.path().join("pids/codejail"),
                &["cgroup.procs", "tasks", "pids.max", "pids.events"],
            );
        }
        tmp
    }

    #[test]
    fn v1_runs_get_a_memory_and_a_pids_cgroup() {
        let tmp = v1_host(true);
        let fs = Arc::new(FakeFs::new(tmp.path()));
        // Auto on a hybrid host: v2 has no controllers, v1 has both.
        let (_v2tmp, _root, own) = v2_host("cpu io");
        let cg = Cgroups::set_up_with(fs.clone(), &settings(CgroupMode::Auto, tmp.path()), &own);
        assert_eq!(cg.status().state(), LayerState::Full, "{:?}", cg.status());
        assert!(
            cg.status().detail.starts_with("v1:"),
            "{}",
            cg.status().detail
        );
        let run = cg
            .create_run(3, cg.limits_for(Some(1 << 26), None))
            .expect("create")
            .expect("cgroup");
        run.add_process(4242).expect("move");
        std::fs::write(
            tmp.path().join("memory/codejail/run-3/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("oom");
        let stats = run.stats();
        assert_eq!(
            (
                stats.peak_memory_bytes,
                stats.oom_kills,
                stats.pids_max_hits
            ),
            (Some(654321), 2, 0)
        );
        assert_eq!(
            fs.log(),
            vec![
                "mkdir memory/codejail/run-3",
                "write memory/codejail/run-3/memory.limit_in_bytes 67108864",
                "write memory/codejail/run-3/memory.memsw.limit_in_bytes 67108864",
                "mkdir pids/codejail/run-3",
                "write pids/codejail/run-3/pids.max 256",
                "write memory/codejail/run-3/cgroup.procs 4242",
                "write pids/codejail/run-3/cgroup.procs 4242",
            ]
        );
        // Empty the fake lists (pid 4242 is not ours to signal), then remove.
        for d in run.dirs() {
            std::fs::write(d.join("cgroup.procs"), "").expect("empty");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(run.remove()).expect("remove");
        assert!(!tmp.path().join("memory/codejail/run-3").exists());
        assert!(!tmp.path().join("pids/codejail/run-3").exists());
    }

    #[test]
    fn v1_without_pids_is_partial_with_the_fix() {
        let tmp = v1_host(false);
        let fs = Arc::new(FakeFs::new(tmp.path()));
        let cg = Cgroups::set_up_with(
            fs,
            &settings(CgroupMode::V1, tmp.path()),
            &OwnCgroup::default(),
        );
        let st = cg.status();
        assert_eq!(st.state(), LayerState::Partial);
        assert!(
            st.detail.contains("pids/codejail is not a pids cgroup"),
            "{}",
            st.detail
        );
        assert!(st.detail.contains("chown"), "{}", st.detail);
    }

    #[test]
    fn v1_sweep_removes_leftover_runs() {
        let tmp = v1_host(true);
        touch(
            &tmp.path().join("memory/codejail/run-12"),
            &["cgroup.procs"],
        );
        touch(&tmp.path().join("pids/codejail/run-12"), &["cgroup.procs"]);
        let fs = Arc::new(FakeFs::new(tmp.path()));
        let cg = Cgroups::set_up_with(
            fs,
            &settings(CgroupMode::V1, tmp.path()),
            &OwnCgroup::default(),
        );
        assert_eq!(cg.status().state(), LayerState::Full);
        assert!(!tmp.path().join("memory/codejail/run-12").exists());
        assert!(!tmp.path().join("pids/codejail/run-12").exists());
    }

    #[test]
    fn mode_none_is_unavailable_and_says_how_to_enable() {
        let tmp = v1_host(true);
        let fs = Arc::new(FakeFs::new(tmp.path()));
        let mut s = settings(CgroupMode::None, tmp.path());
        s.required = false;
        let cg = Cgroups::set_up_with(fs, &s, &OwnCgroup::default());
        assert_eq!(cg.status().state(), LayerState::Unavailable);
        assert!(cg.status().holds(), "not required");
        assert!(
            cg.status().detail.contains("--cgroup-v1"),
            "{}",
            cg.status().detail
        );
    }

    #[test]
    fn proc_parsers() {
        assert_eq!(
            v2_path("12:pids:/\n0::/system.slice/codejail.service\n").as_deref(),
            Some("/system.slice/codejail.service")
        );
        assert_eq!(v2_path("4:memory:/x\n"), None);
        let mountinfo = "22 1 0:21 / /proc rw - proc proc rw\n\
            30 25 0:26 / /sys/fs/cgroup/uni\\040fied rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/uni fied"))
        );
        assert_eq!(cgroup2_mount("22 1 0:21 / /proc rw - proc proc rw\n"), None);
        assert_eq!(keyed_value("oom 2\noom_kill 1\n", "oom_kill"), Some(1));
        assert_eq!(keyed_value("oom_kill_disable 0\n", "oom_kill"), None);
    }
}
