//! Which layout this host allows (delegated v2, v1 parents, or none), the set-up it
//! needs, and the confinement report's text for the result.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use super::*;
use crate::config::{CgroupMode, CgroupSettings};

/// Pick the hierarchy per `cgroup.mode`, looking only.
pub(super) fn choose(fs: &dyn CgroupFs, settings: &CgroupSettings, own: &OwnCgroup) -> Candidate {
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
pub(super) fn inspect_v2(
    fs: &dyn CgroupFs,
    settings: &CgroupSettings,
    own: &OwnCgroup,
) -> Candidate {
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
pub(super) fn inspect_v1(fs: &dyn CgroupFs, settings: &CgroupSettings) -> Candidate {
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
pub(super) fn prepare(
    fs: &dyn CgroupFs,
    backend: &Backend,
    own: &OwnCgroup,
) -> Result<(), CgroupError> {
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

pub(super) fn status_for(chosen: &Candidate, required: bool) -> CgroupStatus {
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

pub(super) fn caps_text(memory: bool, pids: bool, memory_files: &str) -> String {
    match (memory, pids) {
        (true, true) => format!("MEMORY as {memory_files}; pids.max = NPROC+2"),
        (true, false) => format!("MEMORY as {memory_files}; no pids cap"),
        (false, true) => "pids.max = NPROC+2; no memory cap".to_string(),
        (false, false) => "no caps".to_string(),
    }
}
