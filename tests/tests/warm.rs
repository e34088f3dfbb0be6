//! The warm pool end to end (`run::pool`, `jail/src/warm.rs`): a warm run is a cold run
//! in every way a program can observe, its limits count from the hand-over, nothing of
//! the hook or of another run is left for it to find, requests the pool cannot serve
//! run cold, and `status` shows the pool. (The whole jail_code, safe_exec, confinement
//! and robustness suites also run a second time with every broker pooled:
//! `CODEJAIL_TEST_POOL`, scripts/test.sh.)
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use codejail_protocol::PoolStatus;
use codejail_tests::{
    bin, broker, py, python, text, with_limit, BrokerOpts, JailRequest, TestBroker,
};

fn pooled(size: u32, preimport: &[&str]) -> BrokerOpts {
    let mut args = vec!["--pool-size".to_string(), size.to_string()];
    for m in preimport {
        args.push("--preimport".into());
        args.push((*m).into());
    }
    BrokerOpts::new().args(args)
}

async fn pool_status(b: &TestBroker) -> PoolStatus {
    let report = codejail_client::status(&b.cfg()).await.expect("status");
    report.pool.get("python").cloned().unwrap_or_default()
}

/// Wait until the pool has a jail ready, so that the next run is warm.
async fn wait_ready(b: &TestBroker) -> PoolStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = pool_status(b).await;
        if p.ready > 0 {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no warm jail ready in 30 s; broker log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run `req` warm (checked by the pool's hit count).
async fn run_warm(b: &TestBroker, req: &JailRequest) -> codejail_client::JailResult {
    let before = wait_ready(b).await;
    let res = b.run(req).await;
    let after = pool_status(b).await;
    assert_eq!(
        after.hits,
        before.hits + 1,
        "the run was not served warm; log:\n{}",
        b.log()
    );
    res
}

/// What a program shows of itself, its workdir name replaced by `WORKDIR`.
fn normalised(res: &codejail_client::JailResult) -> (i32, String, String) {
    let name = res
        .workdir
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let clean = |b: &[u8]| text(b).replace(&name, "WORKDIR");
    (res.status, clean(&res.stdout), clean(&res.stderr))
}

/// The same programs, cold and warm, show the same things: argv, cwd, `TMPDIR`,
/// `sys.path[0]`, the environment, pids, uid, modules, tracebacks, exit codes, signals,
/// flushing at exit, stdin, copied files, and no frame above the script.
#[tokio::test]
async fn warm_and_cold_runs_are_alike() {
    // No pool, even in the pooled pass (CODEJAIL_TEST_POOL): its runs are the cold ones.
    let cold = broker!(BrokerOpts::new().args(["--pool-size", "0"]));
    let warm = broker!(pooled(1, &[]));
    let programs: Vec<(&str, JailRequest)> = vec![
        ("identity", {
            let mut r = py(r#"
                import os, sys
                print(sys.argv, sys.orig_argv[-3:], os.getcwd(), sys.path[0])
                print(sorted(os.environ.items()))
                print(os.getpid(), os.getppid(), os.getuid(), os.getgid(), __name__, __file__)
                print(sorted(os.listdir('.')), os.listdir('tmp'))
                print(sorted(sys.modules))
                print(sys.flags, sys.path, sys.executable, sys.prefix)
                print(sorted(k for k in globals()), sys.stdin.isatty(), sys.stdout.encoding)
                try:
                    sys._getframe(1)
                except ValueError as e:
                    print('no caller:', e)
            "#);
            r.argv = vec!["one".into(), "two words".into()];
            r
        }),
        ("traceback", py("def f():\n    raise KeyError('k')\nf()\n")),
        ("exit code", py("import sys; print('out'); sys.exit(3)")),
        ("signal", py("import os, signal; os.kill(os.getpid(), signal.SIGTERM)")),
        ("flush at exit", py("import sys; sys.stdout.write('no newline'); sys.stderr.write('err')")),
        ("stdin", {
            let mut r = py("import sys; print(sys.stdin.read()[::-1])");
            r.stdin = b"hello".to_vec();
            r
        }),
        ("extra files", {
            let mut r = py("import helper; print(helper.VALUE, open('data.txt').read())");
            r.extra_files = vec![
                ("helper.py".into(), b"VALUE = 42\n".to_vec()),
                ("data.txt".into(), b"contents".to_vec()),
            ];
            r
        }),
        ("write in tmp", py("import os; open(os.environ['TMPDIR'] + '/f', 'w').write('x'); print(os.listdir(os.environ['TMPDIR']))")),
    ];
    for (what, req) in &programs {
        let c = cold.run(req).await;
        let w = run_warm(&warm, req).await;
        assert_eq!(normalised(&w), normalised(&c), "{what}: warm vs cold");
    }
    assert!(
        warm.log().contains("warm=true"),
        "the journal records warm runs; log:\n{}",
        warm.log()
    );
    assert!(cold.log().contains("warm=false"), "{}", cold.log());
}

/// From inside a warm run: the hook's socket and module are gone, no fd but stdio is
/// open, the workspace's tmp/ is empty although the preimport wrote there, and a
/// previous run's changes to a preimported module are not there (one jail, one run).
#[tokio::test]
async fn nothing_of_the_prelude_or_a_previous_run_is_left() {
    // matplotlib writes its cache into MPLCONFIGDIR ($TMPDIR) when imported.
    let b = broker!(pooled(1, &["numpy", "matplotlib"]));
    let probe = py(r#"
        import gc, os, socket, sys
        open_fds = []
        for fd in range(1024):
            try:
                os.fstat(fd)
                open_fds.append(fd)
            except OSError:
                pass
        try:
            socket.socket(fileno=3)
            sock = 'OPEN'
        except OSError as e:
            sock = e.errno
        ours = [o for o in gc.get_objects()
                if getattr(o, '__module__', None) == '_codejail_warm'
                or getattr(o, '__name__', None) == '_codejail_warm']
        import numpy
        print(open_fds, sock, '_codejail_warm' in sys.modules, len(ours))
        print(os.listdir(os.environ['TMPDIR']), 'numpy' in sys.modules, 'matplotlib' in sys.modules)
        print(getattr(numpy, 'left_by_a_previous_run', 'clean'))
        numpy.left_by_a_previous_run = 'dirty'
        open(os.environ['TMPDIR'] + '/left', 'w').write('x')
    "#);
    for _ in 0..2 {
        let res = run_warm(&b, &probe).await;
        assert_eq!(
            text(&res.stdout),
            "[0, 1, 2] 9 False 0\n[] True True\nclean\n",
            "stderr: {}",
            text(&res.stderr)
        );
    }
}

/// From inside a warm run, the init's end of the hand-over socket (and any other fd of
/// the init) cannot be taken: pidfd_getfd(2) on PID 1 fails for every fd, and so does
/// ptrace; signalling the init is refused too.
#[tokio::test]
async fn the_inits_end_of_the_hand_over_cannot_be_taken() {
    let b = broker!(pooled(1, &[]));
    let res = run_warm(
        &b,
        &py(r#"
            import ctypes, errno, os, signal
            libc = ctypes.CDLL(None, use_errno=True)
            SYS_pidfd_open, SYS_pidfd_getfd, SYS_ptrace = 434, 438, 101
            pidfd = libc.syscall(SYS_pidfd_open, 1, 0)
            opened = pidfd >= 0 or errno.errorcode[ctypes.get_errno()]
            got = []
            if pidfd >= 0:
                for fd in range(64):
                    r = libc.syscall(SYS_pidfd_getfd, pidfd, fd, 0)
                    if r >= 0:
                        got.append(fd)
            traced = libc.syscall(SYS_ptrace, 16, 1, 0, 0)  # PTRACE_ATTACH
            trace_err = errno.errorcode.get(ctypes.get_errno(), '?') if traced < 0 else 'ATTACHED'
            try:
                os.kill(1, signal.SIGTERM)
                killed = 'SENT'
            except OSError as e:
                killed = errno.errorcode[e.errno]
            print(opened, got, trace_err, killed)
        "#),
    )
    .await;
    let out = text(&res.stdout);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert!(
        out.contains(" [] "),
        "no fd of the init may be taken: {out} {}",
        text(&res.stderr)
    );
    assert_ne!(
        fields.get(fields.len().saturating_sub(2)),
        Some(&"ATTACHED"),
        "{out}"
    );
    assert_ne!(fields.last(), Some(&"SENT"), "{out}");
}

/// CPU and the reported usage count from the hand-over: the preimports' CPU is not the
/// caller's, and CPU=1 still ends a busy loop by SIGXCPU within RLIMIT_CPU's tolerance
/// (the limit is moved by the CPU already used, rounded to the second).
#[tokio::test]
async fn limits_and_usage_count_from_the_hand_over() {
    let b = broker!(pooled(1, &["numpy"]));
    let res = run_warm(&b, &py("x = 1")).await;
    assert_eq!(res.status, 0, "{}", text(&res.stderr));
    let cpu = res.usage.cpu_user_ms + res.usage.cpu_sys_ms;
    assert!(
        cpu < 40,
        "a warm `x = 1` used {cpu} ms of CPU: the preimports were counted"
    );
    let busy = with_limit(with_limit(py("while True: pass"), "CPU", 1), "REALTIME", 10);
    let res = run_warm(&b, &busy).await;
    assert_eq!(res.status, -24, "SIGXCPU; {res:?}\n{}", b.log());
    assert_eq!(res.limit_hit.as_deref(), Some("CPU"));
    let cpu = res.usage.cpu_user_ms + res.usage.cpu_sys_ms;
    assert!((500..1600).contains(&cpu), "CPU=1 loop used {cpu} ms");
    // A wall-clock limit counts from the hand-over too: the jail waited before it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let res = run_warm(
        &b,
        &with_limit(
            py("import time; time.sleep(0.5); print('on time')"),
            "REALTIME",
            1,
        ),
    )
    .await;
    assert_eq!(text(&res.stdout), "on time\n", "{:?}", res.limit_hit);
    // The request's other limits hold in the warm jail as in a cold one.
    // (CPython ignores SIGXFSZ: the write fails with EFBIG.)
    let fsize = py("f = open('tmp/f', 'w', buffering=1)\nf.write('x' * 100 + '\\n')");
    let res = run_warm(&b, &with_limit(fsize, "FSIZE", 10)).await;
    assert_eq!(res.status, 1, "FSIZE: {}", text(&res.stderr));
    assert!(
        text(&res.stderr).contains("File too large"),
        "{}",
        text(&res.stderr)
    );
    let forks = py(r#"
        import os, time
        for _ in range(10):
            if os.fork() == 0:
                time.sleep(5)
                os._exit(0)
    "#);
    let res = run_warm(&b, &with_limit(forks, "NPROC", 3)).await;
    assert!(
        text(&res.stderr).contains("BlockingIOError"),
        "NPROC: {}",
        text(&res.stderr)
    );
}

/// Nothing a warm run can stat tells when its jail was built (which follows another
/// run's end): the workspace (the `/tmp` mount, the run's directory, its `tmp/`), every
/// directory and link of the jail's root that the jail made (`/`, `/dev`, the masks,
/// the directories on the way to the interpreter) and the run's stdio pipes have
/// access and modification times no older than the request (taken by the test just
/// before it sends it), a second after the jail was ready. (Both shapes: in production
/// the stdio pipes are the broker's uid's, the run's uid another.)
#[tokio::test]
async fn a_warm_runs_timestamps_are_its_hand_overs() {
    warm_timestamps_are_the_hand_overs(pooled(1, &[])).await;
}

#[tokio::test]
async fn a_production_warm_runs_timestamps_are_its_hand_overs() {
    warm_timestamps_are_the_hand_overs(pooled(1, &[]).production_shape()).await;
}

async fn warm_timestamps_are_the_hand_overs(opts: BrokerOpts) {
    let b = broker!(opts);
    // Entries of the jail's root the test knows by name: the host's top level (masked
    // or bound) and the directories on the way to the interpreter.
    let mut paths: Vec<String> = std::fs::read_dir("/")
        .expect("read /")
        .flatten()
        .map(|e| format!("/{}", e.file_name().to_string_lossy()))
        .collect();
    paths.extend(
        python()
            .ancestors()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty()),
    );
    paths.extend(["/", "/dev", "/proc", "/tmp", ".", "tmp"].map(String::from));
    paths.sort();
    paths.dedup();
    let probe = py(&r#"
        import json, os
        out = {}
        for p in json.loads('@PATHS@'):
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[p] = [st.st_dev, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns]
        for fd in (0, 1, 2):
            st = os.fstat(fd)
            out["fd %d" % fd] = [st.st_dev, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns]
        print(json.dumps(out))
    "#
    .replace("@PATHS@", &serde_json::to_string(&paths).unwrap()));
    let before = wait_ready(&b).await;
    // Whatever the jail made at its build is a second old now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128;
    let res = b.run(&probe).await;
    assert_eq!(
        pool_status(&b).await.hits,
        before.hits + 1,
        "not served warm"
    );
    let seen: std::collections::BTreeMap<String, [i128; 4]> = serde_json::from_slice(&res.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&res.stdout), text(&res.stderr)));
    // The kernel stamps files with its coarse clock, up to a tick behind the fine one.
    let granularity = 20_000_000;
    let dev_of = |p: &str| seen.get(p).map(|t| t[0]).expect(p);
    let jails = [dev_of("/"), dev_of("/tmp")];
    let mut checked = Vec::new();
    for (path, [dev, times @ ..]) in &seen {
        // What the jail made: its root's and its workspace's inodes, and the pipes.
        if !jails.contains(dev) && !path.starts_with("fd ") {
            continue;
        }
        for (what, t) in ["atime", "mtime", "ctime"].iter().zip(times) {
            assert!(
                *t >= sent - granularity,
                "{path}'s {what} is {} ms older than the request: it tells when the warm jail was built; all: {seen:?}",
                (sent - t) / 1_000_000
            );
        }
        checked.push(path.clone());
    }
    for needed in [
        "/", "/dev", "/proc", "/tmp", ".", "tmp", "fd 0", "fd 1", "fd 2",
    ] {
        assert!(
            checked.iter().any(|p| p == needed),
            "{needed} was not checked: {checked:?}"
        );
    }
}

/// Run `req` warm (checked by the pool's hit count), keeping a broker error.
async fn try_run_warm(
    b: &TestBroker,
    req: &JailRequest,
) -> Result<codejail_client::JailResult, codejail_client::ClientError> {
    let before = wait_ready(b).await;
    let res = b.try_run(req).await;
    assert_eq!(
        pool_status(b).await.hits,
        before.hits + 1,
        "not served warm"
    );
    res
}

/// Arguments of `bytes` bytes as execve(2) counts them (each string with its NUL and
/// its pointer), in strings of at most 100 000 bytes.
fn arguments_of(bytes: u64) -> Vec<String> {
    let mut args = Vec::new();
    let mut left = bytes;
    while left > 9 {
        let len = (left - 9).min(100_000);
        args.push("x".repeat(len as usize));
        left -= len + 9;
    }
    args
}

/// Arguments are held to execve(2)'s limits warm as cold, although a warm jail's
/// interpreter was exec'd before they existed: too many bytes of them (over a quarter
/// of the stack limit: 3 MB under the usual 8 MiB) or one longer than 32 pages fail
/// both runs with the same error (the CLI's exit 125, "Argument list too long"), and
/// arguments just under the limit run on both.
#[tokio::test]
async fn arguments_are_held_to_execves_limits_warm_and_cold() {
    let cold = broker!(BrokerOpts::new().args(["--pool-size", "0"]));
    let warm = broker!(pooled(1, &[]));
    let (stack, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_STACK)
        .expect("getrlimit");
    // The kernel's room for the strings and pointers (fs/exec.c); both brokers inherit
    // this process's stack limit.
    let room = (stack / 4).clamp(128 << 10, 6 << 20);
    let with_args = |args: Vec<String>| {
        let mut req = py("import sys; print(len(sys.argv), sum(map(len, sys.argv)))");
        req.argv = args;
        req
    };
    let too_many = with_args(arguments_of(room + (1 << 20)));
    let too_long = with_args(vec!["x".repeat(32 * 4096)]);
    for (what, req) in [("too many bytes", &too_many), ("one too long", &too_long)] {
        let c = cold.try_run(req).await;
        let w = try_run_warm(&warm, req).await;
        let (c, w) = match (c, w) {
            (Err(c), Err(w)) => (c, w),
            (c, w) => panic!("{what}: both must fail; cold: {c:?}; warm: {w:?}"),
        };
        assert!(
            c.to_string().contains("Argument list too long"),
            "{what}: cold: {c}"
        );
        assert_eq!(
            format!("{w:?}"),
            format!("{c:?}"),
            "{what}: warm and cold fail alike"
        );
    }
    // The command's argv, the environment and the file name take less than 16 KiB.
    let under = with_args(arguments_of(room - (16 << 10)));
    let c = cold.run(&under).await;
    let w = run_warm(&warm, &under).await;
    assert_eq!(c.status, 0, "cold: {}", text(&c.stderr));
    assert_eq!(normalised(&w), normalised(&c), "just under the limit");
}

/// A request the pool cannot serve runs cold, never fails for it: argv only (no
/// code), or a VMEM below the warm jail's footprint plus the margin.
#[tokio::test]
async fn requests_the_pool_cannot_serve_run_cold() {
    let b = broker!(pooled(1, &["numpy"]));
    let before = wait_ready(&b).await;
    let mut argv_only = JailRequest {
        command: "python".into(),
        argv: vec!["script.py".into(), "x".into()],
        ..JailRequest::default()
    };
    argv_only.extra_files = vec![("script.py".into(), b"import sys; print(sys.argv)".to_vec())];
    let res = b.run(&argv_only).await;
    assert_eq!(
        text(&res.stdout),
        "['script.py', 'x']\n",
        "{}",
        text(&res.stderr)
    );
    let res = b
        .run(&with_limit(py("print('small')"), "VMEM", 80 << 20))
        .await;
    assert_eq!(text(&res.stdout), "small\n", "{}", text(&res.stderr));
    let after = pool_status(&b).await;
    assert_eq!((after.hits, after.misses), (before.hits, before.misses + 2));
}

/// `status` shows each pool: size, ready, preimports, hits, misses, idle memory.
#[tokio::test]
async fn status_shows_the_pool() {
    let b = broker!(pooled(2, &["numpy"]));
    let p = wait_ready(&b).await;
    assert_eq!(p.size, 2);
    assert_eq!(p.preimport, ["numpy"]);
    assert!(
        p.idle_rss_kib > 15_000,
        "numpy imported: {} KiB",
        p.idle_rss_kib
    );
    if b.cgroup_parents().is_none() {
        assert_eq!(p.idle_memory_bytes, None, "no memory cgroup in dev");
    }
    let out = std::process::Command::new(bin("codejail-client"))
        .arg("--socket")
        .arg(b.socket())
        .args(["status", "--json"])
        .output()
        .expect("client");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let pool = &json["pool"]["python"];
    for key in [
        "size",
        "ready",
        "preimport",
        "hits",
        "misses",
        "idle_rss_kib",
        "idle_memory_bytes",
    ] {
        assert!(
            pool.get(key).is_some(),
            "status --json pool lacks {key}: {json}"
        );
    }
    let table = std::process::Command::new(bin("codejail-client"))
        .arg("--socket")
        .arg(b.socket())
        .arg("status")
        .output()
        .expect("client");
    assert!(
        text(&table.stdout).contains("warm python: "),
        "{}",
        text(&table.stdout)
    );
}

/// In production shape a warm jail has its own uid from the range and its own cgroup,
/// taken when it is built, and its run is as confined as a cold one.
#[tokio::test]
async fn production_warm_runs_have_their_own_uid_and_cgroup() {
    let b = broker!(pooled(1, &[]).production_shape());
    let idle = wait_ready(&b).await;
    assert!(
        idle.idle_memory_bytes.is_some_and(|m| m > 1 << 20),
        "an idle warm jail's cgroup memory: {idle:?}"
    );
    let res = run_warm(&b, &py("import os; print(os.getuid())")).await;
    assert_eq!(text(&res.stdout), "1000\n", "{}", text(&res.stderr));
    assert!(
        res.usage.peak_memory_bytes.is_some(),
        "the warm run's cgroup recorded its memory"
    );
    let range = b.run_ids().expect("run ids");
    let log = b.log();
    let uid = log
        .lines()
        .filter(|l| l.contains("run ended") && l.contains("warm=true"))
        .find_map(|l| {
            l.split("run_uid=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()
        })
        .expect("a warm run's journal line with its uid");
    assert!(range.contains(&uid), "warm run uid {uid} outside {range:?}");
}

/// A warm jail that waits longer than the pool's maximum age is replaced by a fresh
/// one, unused; runs keep being served.
#[tokio::test]
async fn warm_jails_past_their_max_age_are_replaced() {
    let b = broker!(pooled(1, &[]).args(["--pool-max-age-secs", "1"]));
    wait_ready(&b).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log().contains("warm jails retired unused") {
        assert!(
            Instant::now() < deadline,
            "no jail retired; log:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (Served warm or, if it lands just as its jail ages out, cold: either way served.)
    let res = b.run(&py("print('fresh')")).await;
    assert_eq!(text(&res.stdout), "fresh\n", "{}", text(&res.stderr));
    let p = pool_status(&b).await;
    assert_eq!(p.hits + p.misses, 1, "{p:?}");
}

/// The broker's child processes (its stages: runs and warm jails), from every thread.
fn broker_children(b: &TestBroker) -> Vec<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", b.pid())).expect("tasks");
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// A warm jail killed while it waits (its stage, and with it its init and interpreter)
/// is not used: the request runs cold, and the pool builds a new one.
#[tokio::test]
async fn a_warm_jail_that_died_while_waiting_is_not_used() {
    let b = broker!(pooled(1, &[]));
    let before = wait_ready(&b).await;
    let stages = broker_children(&b);
    assert_eq!(stages.len(), 1, "one warm jail's stage: {stages:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stages[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the stage");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{}/stat", stages[0])).exists()
        && std::fs::read_to_string(format!("/proc/{}/stat", stages[0]))
            .is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(Instant::now() < deadline, "the stage did not die");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let res = b.run(&py("print('served')")).await;
    assert_eq!(text(&res.stdout), "served\n", "{}", text(&res.stderr));
    let after = pool_status(&b).await;
    assert_eq!(
        (after.hits, after.misses),
        (before.hits, before.misses + 1),
        "the dead jail was not used"
    );
    let res = run_warm(&b, &py("print('warm again')")).await;
    assert_eq!(text(&res.stdout), "warm again\n");
}

/// SIGTERM with a pool: the broker retires its warm jails and exits 0, leaving no
/// process and (production shape) no cgroup behind.
#[tokio::test]
async fn shutdown_retires_the_warm_jails() {
    let mut b = broker!(pooled(2, &[]).production_shape());
    let p = wait_ready(&b).await;
    assert!(p.ready >= 1);
    let status = b.terminate_within(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}; log:\n{}", b.log());
    assert!(
        codejail_tests::wait_until(Duration::from_secs(5), || b.stray_processes().is_empty()),
        "left: {:?}",
        b.stray_processes()
    );
    if let Some(parents) = b.cgroup_parents() {
        assert_eq!(parents.leftover_runs(), Vec::<std::path::PathBuf>::new());
    }
}

/// A pool whose interpreter lacks the start-up hook refuses to start, saying so.
#[test]
fn a_pool_without_the_hook_fails_start_up() {
    // /usr/bin/python3 has no hook installed (only the sandbox venv does).
    assert_ne!(python(), std::path::Path::new("/usr/bin/python3"));
    let Some((status, output)) =
        TestBroker::start_expecting_failure(pooled(1, &[]).python("/usr/bin/python3"))
    else {
        return;
    };
    assert!(!status.success());
    assert!(
        output.contains("warm pool of python") && output.contains("setup-sandbox-venv"),
        "{output}"
    );
}

/// A warm jail is replaced after its run, not while it runs: during a warm run the pool
/// of one stays empty (the next request in that time runs cold), and once the run has
/// ended the replacement is built.
#[tokio::test]
async fn the_pool_refills_after_the_run_not_during_it() {
    let b = broker!(pooled(1, &[]));
    let before = wait_ready(&b).await;
    assert_eq!(before.ready, 1);
    let long = {
        let b = &b;
        async move {
            let code = "import time; print('started', flush=True); time.sleep(3); print('done')";
            b.run(&with_limit(py(code), "REALTIME", 10)).await
        }
    };
    let watch = async {
        // Until the long run has started (the pool's hit counted), then while it runs.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool_status(&b).await.hits == before.hits {
            assert!(Instant::now() < deadline, "the long run was not taken warm");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut seen = Vec::new();
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            seen.push(pool_status(&b).await.ready);
        }
        // Meanwhile a second request: the pool is empty, so it runs cold.
        let res = b.run(&py("print('meanwhile')")).await;
        assert_eq!(text(&res.stdout), "meanwhile\n", "{}", text(&res.stderr));
        seen
    };
    let (res, seen) = tokio::join!(long, watch);
    assert_eq!(
        text(&res.stdout),
        "started\ndone\n",
        "{}",
        text(&res.stderr)
    );
    assert!(
        seen.iter().all(|&ready| ready == 0),
        "a replacement was built while the run that took the jail still ran: {seen:?}"
    );
    let after = wait_ready(&b).await;
    assert_eq!(
        (after.ready, after.hits, after.misses),
        (1, before.hits + 1, before.misses + 1),
        "refilled once the run ended; the request meanwhile was a miss"
    );
}
