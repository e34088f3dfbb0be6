//! Runs the `codejail-jail` stage binary directly, playing the broker's part: the
//! fds, the run's outside identity, the plan, and the program's pipes.
//!
//! These tests need user namespaces (and, as root, `CAP_SETUID` to become uid 4242).
//! Where the kernel refuses them they are skipped with the reason printed, unless
//! `CODEJAIL_REQUIRE_PRIVILEGED=1`, where they fail. As root, the run is mapped to
//! the outer uid/gid 4242, never to 0: no program ever runs as root.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use codejail_plan::{read_frame, write_frame, Plan, RunLimits, StageReport, MAX_REPORT_FRAME};
use codejail_plan::{EntryKind, FileEntry};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::{getuid, pipe2};

const PYTHON: &str = "/usr/bin/python3";
/// Outer uid/gid a root harness runs the stage as (never 0).
const ROOT_HARNESS_OUTER_ID: u32 = 4242;
/// Longest a stage may take in any test before it is killed and the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    getuid().is_root()
}

fn unique_name(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A plan running `code` with the upstream Python argv and modest limits.
fn python_plan(code: &str) -> Plan {
    Plan {
        program: PYTHON.into(),
        argv: ["python", "-E", "-B", "jailed_code"]
            .map(String::from)
            .to_vec(),
        env: vec![],
        code: Some(code.as_bytes().to_vec()),
        files: vec![],
        extra_files: vec![],
        skeleton_root: "/tmp".into(),
        workdir_name: unique_name("codejail-test"),
        limits: RunLimits {
            cpu_secs: Some(10),
            vmem_bytes: None,
            fsize_bytes: 0,
            nproc: None,
            nofile: 256,
            tmp_bytes: Some(16 << 20),
            tmp_inodes: Some(1000),
        },
        sigpending: None,
        hostname: "codejail-test".into(),
        ro_paths: vec![],
        landlock_min_abi: 1,
        landlock_max_abi: codejail_plan::NEWEST_LANDLOCK_ABI,
        apparmor_profile: None,
        allow_exec: false,
        warm: None,
    }
}

#[derive(Default)]
struct Options {
    stdin: Vec<u8>,
    /// Close the control pipe this long after the go-ahead (the broker's kill).
    close_control_after: Option<Duration>,
    /// SIGKILL the stage itself this long after the go-ahead (the broker's last resort).
    kill_stage_after: Option<Duration>,
    /// Close the control pipe instead of sending the plan.
    no_plan: bool,
}

#[derive(Debug)]
struct Outcome {
    /// Every report.
    reports: Vec<StageReport>,
    stdout: String,
    stderr: String,
    status: ExitStatus,
    /// From the go-ahead (or the kill, when asked) until the stage has exited and
    /// stdout and stderr reached EOF, i.e. no process of the run holds them any more.
    elapsed: Duration,
}

impl Outcome {
    fn exited(&self) -> Option<(Option<i32>, Option<i32>)> {
        self.reports.iter().find_map(|r| match r {
            StageReport::Exited {
                exit_code, signal, ..
            } => Some((*exit_code, *signal)),
            _ => None,
        })
    }

    fn exit_code(&self) -> Option<i32> {
        self.exited().and_then(|(code, _)| code)
    }

    fn failed(&self) -> Option<(&str, &str)> {
        self.reports.iter().find_map(|r| match r {
            StageReport::Failed { step, message } => Some((step.as_str(), message.as_str())),
            _ => None,
        })
    }

    /// Assert the program ran and exited 0, showing everything otherwise.
    fn assert_ok(&self) {
        assert_eq!(self.exit_code(), Some(0), "{self:#?}");
        assert!(self.failed().is_none(), "{self:#?}");
    }
}

/// Skip (or, with `CODEJAIL_REQUIRE_PRIVILEGED=1`, fail) a test that cannot run here.
fn unavailable(reason: &str) -> Option<Outcome> {
    if std::env::var("CODEJAIL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("namespaces required (CODEJAIL_REQUIRE_PRIVILEGED=1) but unavailable: {reason}");
    }
    eprintln!("SKIPPED: namespaces unavailable here: {reason}");
    None
}

/// A CLOEXEC copy of `fd` numbered 10 or above, so the `dup2` onto 3 and 4 in the
/// child can neither clobber a source fd nor be a no-op that keeps CLOEXEC.
fn high_fd(fd: OwnedFd) -> OwnedFd {
    let raw = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(10)).expect("F_DUPFD_CLOEXEC");
    // SAFETY: fcntl returned a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn wait_with_deadline(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the stage did not end within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Play the broker for one run. `None` when namespaces are unavailable (skipped).
fn run(plan: &Plan, options: Options) -> Option<Outcome> {
    let (control_child, control) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let (report, report_child) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let (control_child, report_child) = (high_fd(control_child), high_fd(report_child));
    let (c, r) = (control_child.as_raw_fd(), report_child.as_raw_fd());
    let root = is_root();
    let mut command = Command::new(env!("CARGO_BIN_EXE_codejail-jail"));
    command
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only calls dup2 and the set*id system calls (async-signal-
    // safe; raw, as the child of a multi-threaded process needs) and builds an
    // io::Error from errno (no allocation), as required between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(c, 3) == -1 || libc::dup2(r, 4) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // As the broker does: the stage runs as the run's outside ids, never root.
            let id = ROOT_HARNESS_OUTER_ID as libc::c_long;
            if root
                && (libc::syscall(libc::SYS_setgroups, 0 as libc::c_long, 0 as libc::c_long) != 0
                    || libc::syscall(libc::SYS_setresgid, id, id, id) != 0
                    || libc::syscall(libc::SYS_setresuid, id, id, id) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn codejail-jail");
    drop((control_child, report_child));
    let mut control = File::from(control);
    let report = File::from(report);

    if !options.no_plan {
        write_frame(&mut control, plan).expect("write plan");
    }
    let no_plan = options.no_plan;
    let outcome = finish(child, control, report, Vec::new(), options, no_plan);
    if let Some((step, message)) = outcome.failed() {
        // A host whose /proc has over-mounted files (container runtimes mask some)
        // refuses a new procfs in a user namespace, and some refuse user namespaces:
        // environment limits, not bugs.
        if step == "unshare user namespace" {
            return unavailable(&format!("{step}: {message}"));
        }
        let environment_limited = ["unshare namespaces", "mount proc"].contains(&step);
        if environment_limited && message.contains("Operation not permitted") {
            return unavailable(&format!("{step}: {message}"));
        }
    }
    Some(outcome)
}

/// Feed stdin, collect stdout, stderr and reports, wait for the stage.
fn finish(
    mut child: Child,
    control: File,
    report: File,
    mut reports: Vec<StageReport>,
    options: Options,
    close_control_now: bool,
) -> Outcome {
    let mut stdin = child.stdin.take().expect("stdin");
    let stdin_data = options.stdin;
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&stdin_data);
    });
    let stdout = spawn_reader(child.stdout.take().expect("stdout"));
    let stderr = spawn_reader(child.stderr.take().expect("stderr"));
    let reporter = thread::spawn(move || {
        let mut report = report;
        let mut reports = Vec::new();
        while let Ok(Some(r)) = read_frame::<_, StageReport>(&mut report, MAX_REPORT_FRAME) {
            reports.push(r);
        }
        reports
    });
    let mut start = Instant::now();
    let close_control_after = if close_control_now {
        Some(Duration::ZERO)
    } else {
        options.close_control_after
    };
    let status = match (close_control_after, options.kill_stage_after) {
        (Some(after), _) => {
            thread::sleep(after);
            drop(control);
            start = Instant::now();
            wait_with_deadline(&mut child)
        }
        (None, Some(after)) => {
            thread::sleep(after);
            child.kill().expect("kill the stage");
            start = Instant::now();
            let status = wait_with_deadline(&mut child);
            drop(control);
            status
        }
        (None, None) => {
            let status = wait_with_deadline(&mut child);
            drop(control);
            status
        }
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let elapsed = start.elapsed();
    feeder.join().expect("stdin feeder");
    reports.extend(reporter.join().expect("report reader"));
    Outcome {
        reports,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        status,
        elapsed,
    }
}

/// Host processes whose command line contains `marker`.
fn host_processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                found.push(pid.to_string());
            }
        }
    }
    found
}

#[test]
fn hello_world_reaches_stdout() {
    let Some(out) = run(&python_plan("print('hello world')"), Options::default()) else {
        return;
    };
    out.assert_ok();
    assert_eq!(out.stdout, "hello world\n");
    assert_eq!(out.stderr, "");
    assert!(out.status.success(), "stage exit {:?}", out.status);
    assert!(
        matches!(out.reports.first(), Some(StageReport::Confined { .. })),
        "{:?}",
        out.reports
    );
}

#[test]
fn stdin_reaches_the_program() {
    let code = "import sys; print(sys.stdin.read().upper())";
    let options = Options {
        stdin: b"shout".to_vec(),
        ..Options::default()
    };
    let Some(out) = run(&python_plan(code), options) else {
        return;
    };
    out.assert_ok();
    assert_eq!(out.stdout, "SHOUT\n");
}

#[test]
fn exit_status_is_relayed() {
    let Some(out) = run(&python_plan("raise SystemExit(3)"), Options::default()) else {
        return;
    };
    assert_eq!(out.exited(), Some((Some(3), None)), "{out:#?}");
}

#[test]
fn an_exception_exits_non_zero_with_a_traceback() {
    let Some(out) = run(&python_plan("x = 1\n1 / 0\n"), Options::default()) else {
        return;
    };
    assert_eq!(out.exit_code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("Traceback"), "{}", out.stderr);
    assert!(out.stderr.contains("ZeroDivisionError"), "{}", out.stderr);
}

#[test]
fn cpu_limit_ends_a_busy_loop_with_sigxcpu() {
    let mut plan = python_plan("while True:\n    pass\n");
    plan.limits.cpu_secs = Some(1);
    let Some(out) = run(&plan, Options::default()) else {
        return;
    };
    assert_eq!(out.exited(), Some((None, Some(libc::SIGXCPU))), "{out:#?}");
    match out
        .reports
        .iter()
        .find(|r| matches!(r, StageReport::Exited { .. }))
    {
        Some(StageReport::Exited { cpu_user_us, .. }) => {
            assert!(*cpu_user_us >= 500_000, "{cpu_user_us}")
        }
        other => panic!("{other:?}"),
    }
}

/// NPROC n means the program plus n-1 more processes, per run.
#[test]
fn nproc_limit_counts_the_program_and_its_children() {
    let code = "import os, time\n\
                def try_fork():\n    \
                    try:\n        pid = os.fork()\n    \
                    except OSError:\n        return False\n    \
                    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n    \
                    return True\n\
                print(try_fork(), try_fork())\n";
    for (nproc, expected) in [
        (1, "False False\n"),
        (2, "True False\n"),
        (3, "True True\n"),
    ] {
        let mut plan = python_plan(code);
        plan.limits.nproc = Some(nproc);
        let Some(out) = run(&plan, Options::default()) else {
            return;
        };
        out.assert_ok();
        assert_eq!(out.stdout, expected, "NPROC={nproc}: {out:#?}");
    }
}

#[test]
fn fsize_zero_forbids_writing_files_and_a_bigger_limit_allows_it() {
    let code = "import os\n\
                try:\n    \
                    with open(os.path.join(os.environ['TMPDIR'], 'f'), 'wb') as f:\n        \
                        f.write(b'x' * 100)\n    \
                    print('wrote', os.path.getsize(os.path.join(os.environ['TMPDIR'], 'f')))\n\
                except OSError as e:\n    \
                    print('failed', e.errno)\n";
    let mut plan = python_plan(code);
    plan.limits.fsize_bytes = 0;
    let Some(out) = run(&plan, Options::default()) else {
        return;
    };
    out.assert_ok();
    assert_eq!(out.stdout, format!("failed {}\n", libc::EFBIG));

    let mut plan = python_plan(code);
    plan.limits.fsize_bytes = 1000;
    let Some(out) = run(&plan, Options::default()) else {
        return;
    };
    out.assert_ok();
    assert_eq!(out.stdout, "wrote 100\n");
}

/// The program's initial environment (what execve passed, unaffected by Python's
/// own locale coercion: the program is `env` itself, as the run has no procfs to
/// read `/proc/self/environ` from) is exactly TMPDIR, PATH, HOME (the run's tmp/) and the
/// plan's variables.
#[test]
fn environment_is_only_tmpdir_path_home_and_the_plan() {
    let mut plan = python_plan("");
    plan.program = "/usr/bin/env".into();
    plan.argv = vec!["env".into()];
    plan.code = None;
    plan.env = vec![("OPENBLAS_NUM_THREADS".into(), "1".into())];
    let Some(out) = run(&plan, Options::default()) else {
        return;
    };
    out.assert_ok();
    let expected = format!(
        "TMPDIR=/tmp/{0}/tmp\nPATH=/usr/local/bin:/usr/bin:/bin\nHOME=/tmp/{0}/tmp\n\
         OPENBLAS_NUM_THREADS=1\n",
        plan.workdir_name
    );
    assert_eq!(out.stdout, expected);
}

#[test]
fn the_program_is_pid_2_as_the_run_uid_alone_in_its_namespaces() {
    // No procfs in the run: which pids exist is asked with kill(pid, 0) (ESRCH: none;
    // EPERM: one that exists but is out of reach), the interfaces with SIOCGIFNAME
    // (an AF_UNIX socket is enough for it; netlink is denied).
    let code = "import os, socket, fcntl, struct\n\
                print(os.getpid())\n\
                def exists(p):\n    \
                    try:\n        os.kill(p, 0)\n        return True\n    \
                    except ProcessLookupError:\n        return False\n    \
                    except PermissionError:\n        return True\n\
                print([p for p in range(1, 4096) if exists(p)])\n\
                print(os.getuid(), os.geteuid(), os.getgid(), os.getegid())\n\
                print(os.getgroups())\n\
                print(socket.gethostname())\n\
                s = socket.socket(socket.AF_UNIX)\n\
                def ifname(i):\n    \
                    try:\n        return fcntl.ioctl(s, 0x8910, struct.pack('16si12x', b'', i))[:16].rstrip(b'\\0').decode()\n    \
                    except OSError:\n        return None\n\
                print(sorted(n for n in map(ifname, range(1, 64)) if n))\n\
                s.close()\n\
                print(os.getcwd() == os.path.dirname(os.path.abspath('jailed_code')))\n\
                print(os.path.basename(os.getcwd()))\n\
                open_fds = []\n\
                for fd in range(3, 64):\n    \
                    try:\n        os.fstat(fd)\n        open_fds.append(fd)\n    \
                    except OSError:\n        pass\n\
                print(open_fds)\n";
    let plan = python_plan(code);
    let Some(out) = run(&plan, Options::default()) else {
        return;
    };
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "2", "{out:#?}");
    assert_eq!(
        lines[1], "[1, 2]",
        "only the run's init and program are visible"
    );
    assert_eq!(lines[2], "1000 1000 1000 1000");
    if is_root() {
        assert_eq!(lines[3], "[]");
    }
    assert_eq!(lines[4], "codejail-test");
    assert_eq!(lines[5], "['lo']", "a fresh network namespace has only lo");
    assert_eq!(lines[6], "True");
    assert_eq!(lines[7], plan.workdir_name);
    assert_eq!(lines[8], "[]", "no fd beyond stdio reaches the program");
}

/// `python_plan(code)` with `marker` as the program's argument: it is in the command
/// line of every process the program forks, which the host's `/proc` shows.
fn marked_plan(code: &str, marker: &str) -> Plan {
    let mut plan = python_plan(code);
    plan.argv.push(marker.to_string());
    plan
}

#[test]
fn a_daemonized_grandchild_dies_with_the_run() {
    let marker = unique_name("codejail-daemon-marker");
    // The grandchild (a fork: exec is denied) carries the marker in its command line
    // and says it is up through a pipe.
    let code = "import os, time\n\
         r, w = os.pipe()\n\
         pid = os.fork()\n\
         if pid == 0:\n    \
             os.setsid()\n    \
             if os.fork() == 0:\n        \
                 os.write(w, b'up')\n        \
                 time.sleep(30)\n        \
                 os._exit(0)\n    \
             os._exit(0)\n\
         os.waitpid(pid, 0)\n\
         os.close(w)\n\
         print('seen' if os.read(r, 2) == b'up' else 'not seen')\n";
    let Some(out) = run(&marked_plan(code, &marker), Options::default()) else {
        return;
    };
    out.assert_ok();
    assert_eq!(
        out.stdout, "seen\n",
        "the grandchild must have been running: {out:#?}"
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "the stage took {:?}",
        out.elapsed
    );
    assert_eq!(
        host_processes_with(&marker),
        Vec::<String>::new(),
        "the grandchild survived the run"
    );
}

#[test]
fn closing_the_control_pipe_kills_the_run() {
    let marker = unique_name("codejail-kill-marker");
    let code = "print('started', flush=True); import time; time.sleep(30)";
    let options = Options {
        close_control_after: Some(Duration::from_millis(1500)),
        ..Options::default()
    };
    let Some(out) = run(&marked_plan(code, &marker), options) else {
        return;
    };
    assert_eq!(out.stdout, "started\n", "{out:#?}");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "the stage took {:?} after the kill",
        out.elapsed
    );
    assert_eq!(
        out.exited(),
        None,
        "the init was killed, it reports nothing: {out:#?}"
    );
    assert!(out.failed().is_none(), "{out:#?}");
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(host_processes_with(&marker), Vec::<String>::new());
}

/// The init is tied to the stage (PR_SET_PDEATHSIG), so killing the stage outright
/// still ends the whole run.
#[test]
fn killing_the_stage_kills_the_run() {
    let marker = unique_name("codejail-stage-kill-marker");
    let code = "print('started', flush=True); import time; time.sleep(30)";
    let options = Options {
        kill_stage_after: Some(Duration::from_millis(1500)),
        ..Options::default()
    };
    let Some(out) = run(&marked_plan(code, &marker), options) else {
        return;
    };
    assert_eq!(out.stdout, "started\n", "{out:#?}");
    assert_eq!(out.status.code(), None, "the stage was killed");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "the run outlived the stage by {:?}",
        out.elapsed
    );
    assert_eq!(host_processes_with(&marker), Vec::<String>::new());
}

#[test]
fn closing_the_control_pipe_before_the_plan_ends_the_stage() {
    let options = Options {
        no_plan: true,
        ..Options::default()
    };
    let out = run(&python_plan("print('never')"), options).expect("needs no namespaces");
    assert_eq!(out.failed().map(|f| f.0), Some("read plan"), "{out:#?}");
    assert_eq!(out.stdout, "");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn hostile_names_are_refused_before_anything_is_built() {
    for bad in ["../x", "/etc/x", "a/../../x", "tmp/x", "jailed_code"] {
        let mut plan = python_plan("print('never')");
        plan.files = vec![FileEntry {
            path: bad.into(),
            kind: EntryKind::File {
                contents: b"pwned".to_vec(),
                executable: false,
            },
        }];
        // Needs no namespace: the refusal comes first.
        let out = run(&plan, Options::default()).expect("validation needs no namespaces");
        let (step, message) = out
            .failed()
            .unwrap_or_else(|| panic!("{bad:?} accepted: {out:#?}"));
        assert_eq!(step, "validate plan", "{message}");
        assert_eq!(out.reports.len(), 1, "{bad:?}: the stage went on: {out:#?}");
        assert_eq!(out.status.code(), Some(1));
        for host_dir in ["/tmp", "/workspace"] {
            assert!(!std::path::Path::new(host_dir)
                .join(&plan.workdir_name)
                .exists());
        }
    }
    let mut plan = python_plan("print('never')");
    plan.extra_files = vec![("sub/extra".into(), vec![])];
    let out = run(&plan, Options::default()).expect("validation needs no namespaces");
    assert_eq!(out.failed().map(|f| f.0), Some("validate plan"), "{out:#?}");
}

#[test]
fn a_symlink_entry_stays_a_symlink() {
    let code = "import os\n\
                print(os.path.islink('link'), os.readlink('link'))\n\
                print(os.path.islink('rel'), os.readlink('rel'))\n";
    let mut plan = python_plan(code);
    plan.files = vec![
        FileEntry {
            path: "link".into(),
            kind: EntryKind::Symlink {
                target: "/etc/hostname".into(),
            },
        },
        FileEntry {
            path: "rel".into(),
            kind: EntryKind::Symlink {
                target: "../../nowhere".into(),
            },
        },
    ];
    let Some(out) = run(&plan, Options::default()) else {
        return;
    };
    out.assert_ok();
    assert_eq!(out.stdout, "True /etc/hostname\nTrue ../../nowhere\n");
}

#[test]
fn files_directories_and_extra_files_are_copied_into_a_private_tmpfs() {
    let code = "import os, stat\n\
                from pkg import mod\n\
                print(mod.X)\n\
                print(open('extra.txt').read())\n\
                mode = lambda p: oct(stat.S_IMODE(os.lstat(p).st_mode))\n\
                print(mode('pkg'), mode('pkg/mod.py'), mode('run.sh'), mode('tmp'), mode('jailed_code'))\n\
                print(os.stat('pkg/mod.py').st_uid, os.stat('.').st_uid)\n\
                print(sorted(os.listdir('.')))\n";
    let mut plan = python_plan(code);
    plan.files = vec![
        FileEntry {
            path: "pkg".into(),
            kind: EntryKind::Dir,
        },
        FileEntry {
            path: "pkg/mod.py".into(),
            kind: EntryKind::File {
                contents: b"X = 42\n".to_vec(),
                executable: false,
            },
        },
        FileEntry {
            path: "run.sh".into(),
            kind: EntryKind::File {
                contents: b"#!/bin/sh\n".to_vec(),
                executable: true,
            },
        },
    ];
    plan.extra_files = vec![("extra.txt".into(), b"extra contents".to_vec())];
    let Some(out) = run(&plan, Options::default()) else {
        return;
    };
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "42", "{out:#?}");
    assert_eq!(lines[1], "extra contents");
    assert_eq!(lines[2], "0o755 0o644 0o755 0o700 0o644");
    assert_eq!(lines[3], "1000 1000");
    assert_eq!(
        lines[4],
        "['extra.txt', 'jailed_code', 'pkg', 'run.sh', 'tmp']"
    );
    for host_dir in ["/tmp", "/workspace"] {
        assert!(
            !std::path::Path::new(host_dir)
                .join(&plan.workdir_name)
                .exists(),
            "the workspace must live only in the run's mount namespace"
        );
    }
}

#[test]
fn an_exec_failure_is_reported_with_its_step() {
    let mut plan = python_plan("");
    plan.program = "/nonexistent/python".into();
    let Some(out) = run(&plan, Options::default()) else {
        return;
    };
    let (step, message) = out.failed().expect("a Failed report");
    assert_eq!(step, "exec /nonexistent/python");
    assert!(message.contains("No such file"), "{message}");
    assert_eq!(out.exit_code(), Some(127));
}

/// The stage reports the kernel's Landlock ABI, and refuses to run the program on a
/// kernel whose ABI is below the plan's minimum, naming both (an ABI-2 kernel under a
/// minimum of 4 fails the same way; this machine's kernel has ABI 7).
#[test]
fn landlock_below_the_plans_minimum_fails_before_the_program_runs() {
    let plan = python_plan("print('ran')");
    let Some(out) = run(&plan, Options::default()) else {
        return;
    };
    out.assert_ok();
    let abi = out
        .reports
        .iter()
        .find_map(|r| match r {
            StageReport::Confined { landlock, .. } => Some(landlock.abi()),
            _ => None,
        })
        .expect("a Confined report");
    assert!(abi >= 1, "this kernel has Landlock: {out:#?}");

    let mut plan = python_plan("print('ran')");
    plan.landlock_min_abi = abi + 1;
    let Some(out) = run(&plan, Options::default()) else {
        return;
    };
    let (step, message) = out.failed().expect("a Failed report");
    assert_eq!(step, "landlock", "{message}");
    assert_eq!(
        message,
        format!(
            "landlock ABI {} or newer is required (landlock_min_abi) but this kernel has ABI {abi}",
            abi + 1
        )
    );
    assert!(
        !out.stdout.contains("ran"),
        "the program never ran: {out:#?}"
    );
    assert_eq!(out.exit_code(), Some(127));
}
