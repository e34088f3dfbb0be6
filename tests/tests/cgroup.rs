//! The broker's per-run resources, end to end on a real broker: run cgroups (the v1
//! memory and pids hierarchies, which is what hybrid hosts such as CI have), per-run
//! uids in the production shape (a non-root broker holding only ambient
//! CAP_SETUID/CAP_SETGID), and the start-up sweep.
//!
//! Most tests need root: they create cgroup parents for the broker's uid, start the
//! broker as that uid with `setpriv`, and plant leftovers for the sweep. Without root
//! (or without the v1 memory and pids hierarchies) they skip with the reason printed,
//! unless `CODEJAIL_REQUIRE_PRIVILEGED=1`, where they fail. The refusal tests run
//! unprivileged too.
//!
//! Each test has its own broker uid (43xx) and its own run uid range (3105xx..), so
//! that the brokers' start-up sweeps, which kill processes of their range, never touch
//! another test's runs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use codejail_protocol::{
    decode, encode, framed, Exec, Finished, Hello, Request, Response, Welcome, DEFAULT_MAX_FRAME,
};
use codejail_tests::{bin, is_root, python, reachable_by_others, skip_or_fail, V1CgroupParents};
use futures::{SinkExt, StreamExt};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

/// The broker binary (the jail stage is found next to it).
fn broker_bin() -> PathBuf {
    bin("codejail-broker")
}

/// v1 memory and pids parents for one test's broker, owned by `uid`; `None` (a skip,
/// or a failure under `CODEJAIL_REQUIRE_PRIVILEGED=1`) without root or without the v1
/// memory and pids hierarchies.
fn v1_parents(uid: u32) -> Option<V1CgroupParents> {
    if !is_root() {
        skip_or_fail("creating cgroup parents for the broker's uid needs root");
        return None;
    }
    match V1CgroupParents::create(uid) {
        Ok(p) if p.memory.join("memory.limit_in_bytes").exists() => Some(p),
        Ok(_) => {
            skip_or_fail("the v1 memory hierarchy has no memory.limit_in_bytes");
            None
        }
        Err(e) => {
            skip_or_fail(&format!(
                "{e} (pure cgroup v2 host): the v1 tests cannot run"
            ));
            None
        }
    }
}

/// Make `dir` and its files `uid`'s, as `chown -R` would (a planted leftover cgroup).
fn chown_tree(dir: &Path, uid: u32) {
    let id = Some(uid.into());
    nix::unistd::chown(dir, id, Some(uid.into())).expect("chown cgroup dir");
    for entry in fs::read_dir(dir).expect("read cgroup dir").flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            nix::unistd::chown(&entry.path(), id, Some(uid.into())).expect("chown cgroup file");
        }
    }
}

/// How the broker is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `--dev` as a plain non-root uid: no capabilities.
    Dev,
    /// As production runs it: a non-root uid holding only CAP_SETUID and CAP_SETGID,
    /// ambient (what systemd's AmbientCapabilities= gives), nothing in the bounding set
    /// besides them.
    Production,
}

/// A broker process on a temporary socket, as uid `uid` (or as the caller when not
/// root); SIGTERM then SIGKILL on drop.
struct Broker {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
}

impl Broker {
    fn spawn(uid: Option<u32>, shape: Shape, args: &[&str]) -> Broker {
        let bin = broker_bin();
        if uid.is_some() {
            for p in [bin.as_path(), python().as_path()] {
                if let Err(why) = reachable_by_others(p) {
                    panic!("the broker runs as a non-root uid and cannot reach {}: {why}; run the tests with scripts/test.sh", p.display());
                }
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("codejail-cgtest-")
            .tempdir()
            .expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        if let Some(uid) = uid {
            nix::unistd::chown(dir.path(), Some(uid.into()), Some(uid.into())).expect("chown");
        }
        let socket = dir.path().join("b.sock");
        let log = dir.path().join("broker.log");
        let log_file = fs::File::create(&log).expect("log");
        let mut cmd = match uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .args(["--pdeathsig", "SIGKILL"]);
                if shape == Shape::Production {
                    c.args([
                        "--inh-caps=-all,+setuid,+setgid",
                        "--ambient-caps=-all,+setuid,+setgid",
                        "--bounding-set=-all,+setuid,+setgid",
                        "--no-new-privs",
                    ]);
                }
                c.arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("--dev")
            .arg("--socket")
            .arg(&socket)
            .arg("--python")
            .arg(python())
            .args(["--allow-uid", &nix::unistd::getuid().as_raw().to_string()])
            .args(args)
            .current_dir(dir.path())
            .env("TMPDIR", dir.path())
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup"))
            .stderr(log_file);
        let child = cmd.spawn().expect("spawn the broker");
        Broker {
            child,
            _dir: dir,
            socket,
            log,
        }
    }

    /// Start and wait until it listens (after its start-up self-test).
    fn start(uid: Option<u32>, shape: Shape, args: &[&str]) -> Broker {
        let mut b = Self::spawn(uid, shape, args);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = b.child.try_wait().expect("try_wait") {
                panic!("the broker exited during start-up ({status}):\n{}", b.log());
            }
            if std::os::unix::net::UnixStream::connect(&b.socket).is_ok() {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not listen:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Start a broker that must refuse to start: its exit status and output.
    fn refused(uid: Option<u32>, shape: Shape, args: &[&str]) -> (ExitStatus, String) {
        let mut b = Self::spawn(uid, shape, args);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = b.child.try_wait().expect("try_wait") {
                return (status, b.log());
            }
            assert!(
                Instant::now() < deadline,
                "the broker should have refused to start:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The broker's pid (setpriv execs it, so the child's pid is the broker's).
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one run gave.
#[derive(Debug)]
#[allow(dead_code)] // stderr is there for the Debug output of failed assertions
struct Outcome {
    stdout: String,
    stderr: String,
    fin: Finished,
}

/// One run over raw protocol frames.
async fn exec(b: &Broker, code: &str, limits: &[(&str, u64)]) -> Outcome {
    let run = async {
        let stream = tokio::net::UnixStream::connect(&b.socket)
            .await
            .expect("connect");
        let mut f = framed(stream, DEFAULT_MAX_FRAME);
        f.send(Bytes::from(encode(&Hello::current()).expect("hello")))
            .await
            .expect("send hello");
        let welcome: Welcome =
            decode(&f.next().await.expect("welcome").expect("frame")).expect("decode welcome");
        assert_eq!(welcome.refused, None);
        let request = Request::Exec(Box::new(Exec {
            command: "python".into(),
            code: Some(code.as_bytes().to_vec()),
            limits: limits
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            ..Exec::default()
        }));
        f.send(Bytes::from(encode(&request).expect("encode")))
            .await
            .expect("send exec");
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        loop {
            let frame = f.next().await.expect("a response").expect("a frame");
            match decode::<Response>(&frame).expect("decode response") {
                Response::Stdout(c) => stdout.extend(c),
                Response::Stderr(c) => stderr.extend(c),
                Response::Finished(fin) => {
                    // The broker takes the next request of a connection only once the
                    // previous run is cleaned up (cgroup removed, uid returned): a
                    // Status round trip makes the checks after this call exact.
                    f.send(Bytes::from(encode(&Request::Status).expect("encode")))
                        .await
                        .expect("send status");
                    loop {
                        let frame = f.next().await.expect("a response").expect("a frame");
                        if let Response::Status(_) = decode(&frame).expect("decode") {
                            break;
                        }
                    }
                    return Outcome {
                        stdout: String::from_utf8_lossy(&stdout).into_owned(),
                        stderr: String::from_utf8_lossy(&stderr).into_owned(),
                        fin,
                    };
                }
                Response::Error { kind, message } => {
                    panic!("run failed: {kind:?}: {message}\nbroker log:\n{}", b.log())
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(RUN_TIMEOUT, run).await {
        Ok(o) => o,
        Err(_) => panic!(
            "no Finished within {RUN_TIMEOUT:?}; broker log:\n{}",
            b.log()
        ),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// (pid, real uid, comm) of every live process whose real uid satisfies `wanted`.
fn processes(wanted: impl Fn(u32) -> bool) -> Vec<(i32, u32, String)> {
    codejail_broker::run::uidpool::processes_with_uid(wanted)
        .expect("/proc")
        .into_iter()
        .map(|(pid, uid)| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (pid, uid, comm.trim().to_string())
        })
        .collect()
}

/// Touches every page: a bytes object of 200 MB is written in full.
const ALLOCATE_200MB: &str = "b = b'x' * 200_000_000\nprint(len(b))\n";

#[test]
fn memory_cap_oom_kills_the_run_and_peak_memory_is_reported() {
    const UID: u32 = 4301;
    let Some(fx) = v1_parents(UID) else {
        return;
    };
    let b = Broker::start(
        Some(UID),
        Shape::Dev,
        &["--cgroup-v1", &fx.arg(), "--require-cgroups"],
    );
    assert!(b.log().contains("cgroups          full"), "{}", b.log());
    runtime().block_on(async {
        // With no RLIMIT_AS (VMEM=0) the allocation itself succeeds and the pages are
        // charged as they are written: the memcg OOM killer SIGKILLs the program, it
        // never sees a MemoryError.
        let limits = [("MEMORY", 64 * MIB), ("VMEM", 0), ("REALTIME", 20), ("CPU", 10)];
        let o = exec(&b, ALLOCATE_200MB, &limits).await;
        assert_eq!(o.fin.status, -9, "{o:?}");
        assert_eq!(o.fin.limit_hit.as_deref(), Some("MEMORY"), "{o:?}");
        assert_eq!(o.stdout, "", "{o:?}");
        let peak = o.fin.usage.peak_memory_bytes.expect("peak memory from the cgroup");
        assert!((32 * MIB..=64 * MIB).contains(&peak), "peak {peak} for a 64 MiB cap");

        // The same program under a cap it fits in.
        let o = exec(&b, ALLOCATE_200MB, &[("MEMORY", 512 * MIB), ("REALTIME", 20), ("CPU", 10)]).await;
        assert_eq!((o.fin.status, o.stdout.trim()), (0, "200000000"), "{o:?}");
        assert_eq!(o.fin.limit_hit, None);
        let peak = o.fin.usage.peak_memory_bytes.expect("peak");
        assert!((200_000_000..=512 * MIB).contains(&peak), "peak {peak} for 200 MB");

        // tmpfs pages are charged to the run too: writing 150 MiB to tmp/ under a
        // 64 MiB cap (TMP and FSIZE allowing it) gets the writer OOM-killed rather
        // than an ENOMEM or ENOSPC from write(2).
        let write_tmp = "import os\nn = 0\nwith open(os.path.join(os.environ['TMPDIR'], 'big'), 'wb') as f:\n    for i in range(150):\n        f.write(b'x' * (1 << 20)); n += 1\nprint('wrote', n)\n";
        let limits = [("MEMORY", 64 * MIB), ("TMP", 256 * MIB), ("FSIZE", 256 * MIB), ("REALTIME", 20), ("CPU", 10)];
        let o = exec(&b, write_tmp, &limits).await;
        assert_eq!((o.fin.status, o.fin.limit_hit.as_deref()), (-9, Some("MEMORY")), "{o:?}");
        assert!(o.fin.usage.max_rss_kib < 64 * 1024, "the program itself stayed small: {o:?}");

        let o = exec(&b, "print(1)\n", &[]).await;
        assert_eq!((o.fin.status, o.stdout.as_str()), (0, "1\n"), "{o:?}");
        let peak = o.fin.usage.peak_memory_bytes.expect("peak");
        assert!(peak > 0 && peak < 64 * MIB, "peak {peak}");
    });
    assert_eq!(
        fx.leftover_runs(),
        Vec::<PathBuf>::new(),
        "every run cgroup removed"
    );
}

/// Forks children that sleep until a fork fails; prints how many it made; exits 1.
const COUNT_FORKS: &str = "import os, sys, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print(n, e.errno)\n    sys.exit(1)\n";

const FORK_BOMB: &str =
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n";

#[test]
fn fork_bomb_is_held_by_pids_max_and_the_broker_keeps_serving() {
    const UID: u32 = 4302;
    let Some(fx) = v1_parents(UID) else {
        return;
    };
    let b = Broker::start(
        Some(UID),
        Shape::Dev,
        &["--cgroup-v1", &fx.arg(), "--require-cgroups"],
    );
    runtime().block_on(async {
        // NPROC=0: no RLIMIT_NPROC at all, only the cgroup's pids.max (256) holds.
        let started = Instant::now();
        let o = exec(&b, FORK_BOMB, &[("NPROC", 0), ("REALTIME", 2), ("CPU", 2)]).await;
        assert_eq!(
            (o.fin.status, o.fin.limit_hit.as_deref()),
            (-9, Some("REALTIME")),
            "{o:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );

        // pids.max = 256 counts the stage, the init and the program: 253 children.
        let o = exec(&b, COUNT_FORKS, &[("NPROC", 0), ("REALTIME", 20)]).await;
        assert_eq!(o.stdout.trim(), format!("253 {}", libc::EAGAIN), "{o:?}");
        assert_eq!(
            (o.fin.status, o.fin.limit_hit.as_deref()),
            (1, Some("PIDS")),
            "{o:?}"
        );

        // With NPROC set, RLIMIT_NPROC (NPROC+2 for stage and init) refuses first and
        // pids.max (the same NPROC+2) is never reached: no PIDS.
        let o = exec(&b, COUNT_FORKS, &[("NPROC", 5), ("REALTIME", 20)]).await;
        assert_eq!(o.stdout.trim(), format!("4 {}", libc::EAGAIN), "{o:?}");
        assert_eq!(
            (o.fin.status, o.fin.limit_hit.as_deref()),
            (1, None),
            "{o:?}"
        );

        let o = exec(&b, "print(1)\n", &[]).await;
        assert_eq!(
            (o.fin.status, o.stdout.as_str()),
            (0, "1\n"),
            "the broker keeps serving: {o:?}"
        );
    });
    assert_eq!(
        fx.leftover_runs(),
        Vec::<PathBuf>::new(),
        "every run cgroup removed"
    );
    // Dev shape: runs share the broker's uid, so this finds any process left.
    let left: Vec<_> = processes(|u| u == UID)
        .into_iter()
        .filter(|(pid, _, _)| *pid != b.pid())
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn production_shape_gives_concurrent_runs_distinct_uids() {
    const UID: u32 = 4303;
    const FIRST: u32 = 310_300;
    const COUNT: u32 = 8;
    let in_range = |u: u32| (FIRST..FIRST + COUNT).contains(&u);
    let Some(fx) = v1_parents(UID) else {
        return;
    };
    let b = Broker::start(
        Some(UID),
        Shape::Production,
        &[
            "--cgroup-v1",
            &fx.arg(),
            "--require-cgroups",
            "--run-ids",
            &format!("{FIRST}:{COUNT}"),
            "--max-running",
            "4",
        ],
    );
    let log = b.log();
    assert!(log.contains("identity         full"), "{log}");
    assert!(
        log.contains(&format!("{FIRST}-{}", FIRST + COUNT - 1)),
        "{log}"
    );
    // Not dumpable: the kernel makes its /proc files root's (proc(5)).
    let environ = fs::metadata(format!("/proc/{}/environ", b.pid())).expect("environ");
    assert_eq!(
        environ.uid(),
        0,
        "a dumpable broker's /proc/<pid>/environ is its own uid's"
    );
    let status = fs::read_to_string(format!("/proc/{}/status", b.pid())).expect("status");
    assert!(
        status.contains(&format!("Uid:\t{UID}\t{UID}\t{UID}\t{UID}")),
        "{status}"
    );

    // The run has no procfs: which pids exist is asked with kill(pid, 0).
    let code = "import os, time\n\
        def exists(p):\n    \
            try:\n        os.kill(p, 0)\n        return True\n    \
            except ProcessLookupError:\n        return False\n    \
            except PermissionError:\n        return True\n\
        print([p for p in range(1, 4096) if exists(p)], os.getuid())\ntime.sleep(3)\n";
    let rt = runtime();
    let (a, c, seen) = rt.block_on(async {
        let observe = async {
            // From the host, while both sleep: the programs' real uids, and the stages'
            // ambient capabilities (the broker's must not leak into them).
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let procs = processes(in_range);
                let programs: BTreeSet<u32> = procs
                    .iter()
                    .filter(|(_, _, name)| name.starts_with("python"))
                    .map(|(_, uid, _)| *uid)
                    .collect();
                if programs.len() == 2 {
                    let ambient: Vec<String> = procs
                        .iter()
                        .filter_map(|(pid, _, _)| {
                            fs::read_to_string(format!("/proc/{pid}/status")).ok()
                        })
                        .filter_map(|s| {
                            s.lines()
                                .find(|l| l.starts_with("CapAmb:"))
                                .map(str::to_string)
                        })
                        .collect();
                    return (programs, ambient);
                }
                assert!(
                    Instant::now() < deadline,
                    "never saw two runs at once: {procs:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let limits = [("REALTIME", 20)];
        tokio::join!(exec(&b, code, &limits), exec(&b, code, &limits), observe)
    });
    for o in [&a, &c] {
        // Each sees only its own init and program, and is uid 1000 inside.
        assert_eq!(o.stdout.trim(), "[1, 2] 1000", "{o:?}");
        assert_eq!(o.fin.status, 0, "{o:?}");
        assert!(o.fin.usage.peak_memory_bytes.is_some(), "{o:?}");
    }
    let (uids, ambient) = seen;
    assert_eq!(uids.len(), 2, "two distinct outside uids: {uids:?}");
    assert!(uids.iter().all(|u| in_range(*u)), "{uids:?}");
    assert!(
        ambient.iter().all(|l| l.ends_with("0000000000000000")),
        "{ambient:?}"
    );
    let left = processes(in_range);
    assert!(left.is_empty(), "processes of the run uids left: {left:?}");
    assert_eq!(fx.leftover_runs(), Vec::<PathBuf>::new());
}

/// A process as `outer` in a user namespace it created and mapped as a run's stage
/// does (`1000 <outer> 1`): what a run of a crashed broker looks like.
fn spawn_userns_leftover(outer: u32) -> Child {
    let code = "import ctypes, os, time\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        assert libc.unshare(0x10000000) == 0, ctypes.get_errno()\n\
        open('/proc/self/uid_map', 'w').write('1000 %d 1\\n' % os.geteuid_outer)\n\
        print('ready', flush=True)\n\
        time.sleep(600)\n";
    let code = code.replace("os.geteuid_outer", &outer.to_string());
    let mut child = Command::new("setpriv")
        .arg(format!("--reuid={outer}"))
        .arg(format!("--regid={outer}"))
        .args(["--clear-groups", "--pdeathsig", "SIGKILL"])
        .arg(python())
        .args(["-c", &code])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the leftover");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "ready");
    child
}

fn wait_dead(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} is still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn start_up_sweep_removes_leftover_runs_and_cgroups() {
    const UID: u32 = 4304;
    const FIRST: u32 = 310_400;
    let Some(fx) = v1_parents(UID) else {
        return;
    };
    // A leftover run cgroup of a crashed broker, with a process of the broker's uid in
    // it, and a leftover run process in the uid range.
    let mut in_cgroup = Command::new("setpriv")
        .arg(format!("--reuid={UID}"))
        .arg(format!("--regid={UID}"))
        .args(["--clear-groups", "--pdeathsig", "SIGKILL", "sleep", "600"])
        .spawn()
        .expect("sleep");
    for parent in [&fx.memory, &fx.pids] {
        let dir = parent.join("run-99");
        fs::create_dir(&dir).expect("mkdir run-99");
        chown_tree(&dir, UID);
        fs::write(dir.join("cgroup.procs"), in_cgroup.id().to_string()).expect("move the sleeper");
    }
    let mut stray = spawn_userns_leftover(FIRST + 5);
    let strays = processes(|u| u == FIRST + 5);
    assert_eq!(strays.len(), 1, "{strays:?}");

    let b = Broker::start(
        Some(UID),
        Shape::Production,
        &[
            "--cgroup-v1",
            &fx.arg(),
            "--require-cgroups",
            "--run-ids",
            &format!("{FIRST}:8"),
            "--max-running",
            "2",
        ],
    );
    let status = wait_dead(&mut in_cgroup, "the process in the leftover run cgroup");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let status = wait_dead(&mut stray, "the leftover run process");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert_eq!(
        fx.leftover_runs(),
        Vec::<PathBuf>::new(),
        "leftover run cgroups removed"
    );
    let log = b.log();
    assert!(
        log.contains("removed run cgroups a previous broker left"),
        "{log}"
    );
    assert!(
        log.contains("killed processes a previous broker's runs left"),
        "{log}"
    );
    drop(b);

    // A process in the range that is *not* in a run's user namespace (one mapping
    // only `1000 <its uid>`) is not the broker's to kill: something else uses those
    // ids, and the broker refuses.
    let mut foreign = Command::new("setpriv")
        .arg(format!("--reuid={}", FIRST + 6))
        .arg(format!("--regid={}", FIRST + 6))
        .args(["--clear-groups", "--pdeathsig", "SIGKILL", "sleep", "600"])
        .spawn()
        .expect("sleep");
    let (status, log) = Broker::refused(
        Some(UID),
        Shape::Production,
        &[
            "--cgroup-v1",
            &fx.arg(),
            "--run-ids",
            &format!("{FIRST}:8"),
            "--max-running",
            "2",
        ],
    );
    let _ = foreign.kill();
    let _ = foreign.wait();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "process {} runs as uid {}",
            foreign.id(),
            FIRST + 6
        )),
        "{log}"
    );
    assert!(log.contains("layer `identity`"), "{log}");
}

#[test]
fn missing_requirements_refuse_start_naming_layer_reason_and_fix() {
    // Runs unprivileged too: as a normal user the broker runs as that user.
    let uid = is_root().then_some(4305);
    let (status, log) = Broker::refused(
        uid,
        Shape::Dev,
        &["--run-ids", "310500:4", "--max-running", "2"],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("layer `identity`") && log.contains("CAP_SETUID"),
        "{log}"
    );
    assert!(
        log.contains("AmbientCapabilities=CAP_SETUID CAP_SETGID"),
        "{log}"
    );

    // uid 1 is `daemon` on Debian; a collision is reported before the capabilities.
    let (status, log) = Broker::refused(
        uid,
        Shape::Dev,
        &["--run-ids", "1:10", "--max-running", "1"],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("collides with") && log.contains("/etc/passwd"),
        "{log}"
    );

    let (status, log) = Broker::refused(
        uid,
        Shape::Dev,
        &["--run-ids", "310500:2", "--max-running", "4"],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("run_ids.count") && log.contains("max_running (4)"),
        "{log}"
    );

    let (status, log) = Broker::refused(
        uid,
        Shape::Dev,
        &[
            "--require-cgroups",
            "--cgroup-v1",
            "/nonexistent/memory/codejail,/nonexistent/pids/codejail",
        ],
    );
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("layer `cgroups` is required but unavailable"),
        "{log}"
    );
    assert!(log.contains("chown"), "the fix: {log}");

    let (status, log) = Broker::refused(uid, Shape::Dev, &["--require-cgroups"]);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("cgroup.required"), "{log}");
}
