//! Detection, set-up and the run lifecycle against a recording fake cgroupfs.

use super::*;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;

use super::fs::*;
use super::lifecycle::*;
use crate::config::CgroupMode;

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
    let limits = cg.limits_for(Some(64 << 20), Some(15), PIDS_SHARED);
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
        .create_run(1, cg.limits_for(None, None, PIDS_SHARED))
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
        .create_run(2, cg.limits_for(Some(1 << 20), Some(3), PIDS_SHARED))
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
        .create_run(1, cg.limits_for(None, None, PIDS_SHARED))
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
        .create_run(3, cg.limits_for(Some(1 << 26), None, PIDS_SHARED))
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
