//! Upstream's `test_jail_code.py` scenarios (openedx/codejail 4.x), in Python 3,
//! through a real broker on a temporary socket (started as a non-root uid when the tests
//! run as root, since root is exempt from RLIMIT_NPROC).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use codejail_tests::{assert_ok, broker, fixture, py, text, with_limit, JailRequest};

/// 256 distinct byte values, 10 000 times: 2 560 000 bytes (upstream's size).
fn all_bytes() -> Vec<u8> {
    (0..=255u8).cycle().take(256 * 10_000).collect()
}

// ---------------------------------------------------------------- TestFeatures

#[tokio::test]
async fn test_hello_world() {
    let b = broker!();
    let res = b.run(&py("print('Hello, world!')")).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "Hello, world!\n");
    assert_eq!(res.limit_hit, None);
    assert!(!res.truncated);
}

/// `Finished` names the run's directory as the program saw it (its cwd) and a pid of
/// the run; each run has its own directory.
#[tokio::test]
async fn finished_reports_the_programs_directory_and_a_pid() {
    let b = broker!();
    let code = "import os; print(os.getcwd())";
    let first = b.run(&py(code)).await;
    assert_ok(&first);
    let cwd = text(&first.stdout).trim_end().to_string();
    assert_eq!(
        first.workdir, cwd,
        "reported directory vs the program's cwd"
    );
    let name = cwd.rsplit('/').next().unwrap_or_default();
    assert!(name.starts_with("codejail-"), "{cwd}");
    assert!(first.pid > 1, "pid {}", first.pid);
    let second = b.run(&py(code)).await;
    assert_eq!(second.workdir, text(&second.stdout).trim_end());
    assert_ne!(
        first.workdir, second.workdir,
        "each run has its own directory"
    );
}

/// The blocking API, from a plain (non-async) test.
#[test]
fn test_hello_world_blocking() {
    let b = broker!();
    let res = codejail_client::blocking::jail_code(&b.cfg(), &py("print('Hello, world!')"))
        .unwrap_or_else(|e| panic!("blocking jail_code: {e}; broker output:\n{}", b.log()));
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "Hello, world!\n");
}

#[tokio::test]
async fn test_argv() {
    let b = broker!();
    let mut req = with_limit(
        py("import sys; print(':'.join(sys.argv[1:]))"),
        "REALTIME",
        2,
    );
    req.argv = vec!["Hello".into(), "world".into(), "-x".into()];
    req.slug = Some("a/useful/slug".into());
    let res = b.run(&req).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "Hello:world:-x\n");
}

#[tokio::test]
async fn test_ends_with_exception() {
    let b = broker!();
    let res = b.run(&py("raise Exception('FAIL')")).await;
    assert_ne!(res.status, 0);
    assert_eq!(text(&res.stdout), "");
    // Upstream expects `File "jailed_code"`; Python >= 3.9 makes the script's path
    // absolute in tracebacks, so the jail's working directory may come first. Every
    // other byte must be exactly upstream's.
    let stderr = text(&res.stderr);
    let lines: Vec<&str> = stderr.split_inclusive('\n').collect();
    assert_eq!(lines.len(), 4, "stderr: {stderr:?}");
    assert_eq!(lines[0], "Traceback (most recent call last):\n");
    let file_line = lines[1]
        .strip_prefix("  File \"")
        .and_then(|l| l.strip_suffix("jailed_code\", line 1, in <module>\n"))
        .unwrap_or_else(|| panic!("unexpected File line {:?}", lines[1]));
    assert!(
        file_line.is_empty() || (file_line.starts_with('/') && file_line.ends_with('/')),
        "the code's path should be `jailed_code` in the jail's cwd, got {:?}",
        lines[1]
    );
    assert_eq!(lines[2], "    raise Exception('FAIL')\n");
    assert_eq!(lines[3], "Exception: FAIL\n");
}

#[tokio::test]
async fn test_stdin_is_provided() {
    let b = broker!();
    let mut req = py("
        import json, sys
        print(sum(json.load(sys.stdin)))
    ");
    req.stdin = b"[1, 2.5, 33]".to_vec();
    let res = b.run(&req).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "36.5\n");
}

#[tokio::test]
async fn test_stdin_can_be_large_and_binary() {
    let b = broker!();
    let mut req = with_limit(
        py("
            import sys
            data = sys.stdin.buffer.read()
            print(len(data), sum(data))
        "),
        "REALTIME",
        5,
    );
    req.stdin = all_bytes();
    let res = b.run(&req).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "2560000 326400000\n");
}

#[tokio::test]
async fn test_stdout_can_be_large_and_binary() {
    let b = broker!();
    let req = with_limit(
        py("
            import sys
            sys.stdout.buffer.write(bytes(range(256)) * 10000)
        "),
        "REALTIME",
        5,
    );
    let res = b.run(&req).await;
    assert_ok(&res);
    assert_eq!(res.stdout.len(), 2_560_000);
    assert!(
        res.stdout == all_bytes(),
        "stdout differs from what the program wrote"
    );
    assert!(!res.truncated);
}

#[tokio::test]
async fn test_stderr_can_be_large_and_binary() {
    let b = broker!();
    let req = with_limit(
        py("
            import sys
            sys.stderr.buffer.write(bytes(range(256)) * 10000)
            sys.stdout.write('OK!')
        "),
        "REALTIME",
        5,
    );
    let res = b.run(&req).await;
    assert_eq!(
        res.status,
        0,
        "stderr starts {:?}",
        text(&res.stderr[..res.stderr.len().min(200)])
    );
    assert_eq!(text(&res.stdout), "OK!");
    assert_eq!(res.stderr.len(), 2_560_000);
    assert!(
        res.stderr == all_bytes(),
        "stderr differs from what the program wrote"
    );
}

#[tokio::test]
async fn test_files_are_copied() {
    let b = broker!();
    let mut req = py("print('Look:', open('hello.txt').read())");
    req.files = vec![fixture("hello.txt")];
    let res = b.run(&req).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "Look: Hello there.\n\n");
}

#[tokio::test]
async fn test_directories_are_copied() {
    let b = broker!();
    let mut req = py(r#"
        import os
        res = []
        for path, dirs, files in os.walk("."):
            res.append((path, sorted(dirs), sorted(files)))
        for row in sorted(res):
            print(row)
    "#);
    req.files = vec![fixture("hello.txt"), fixture("pylib")];
    let res = b.run(&req).await;
    assert_ok(&res);
    // Upstream 4.x expects the workspace's tmp/ too.
    assert_eq!(
        text(&res.stdout),
        "('.', ['pylib', 'tmp'], ['hello.txt', 'jailed_code'])\n\
         ('./pylib', [], ['module.py'])\n\
         ('./tmp', [], [])\n"
    );
}

#[tokio::test]
async fn test_executing_a_copied_file() {
    let b = broker!();
    let req = JailRequest {
        command: "python".into(),
        files: vec![fixture("doit.py")],
        argv: vec!["doit.py".into(), "1".into(), "2".into(), "3".into()],
        ..JailRequest::default()
    };
    let res = b.run(&req).await;
    assert_ok(&res);
    assert_eq!(
        text(&res.stdout),
        "This is doit.py!\nMy args are ['doit.py', '1', '2', '3']\n"
    );
}

#[tokio::test]
async fn test_executing_extra_files() {
    let b = broker!();
    let run_py = codejail_tests::dedent(
        "
        import os
        print(sorted(os.listdir('.')))
        print(open('also.txt', 'rb').read())
    ",
    );
    let req = JailRequest {
        command: "python".into(),
        extra_files: vec![
            ("run.py".into(), run_py.into_bytes()),
            // Not UTF-8: just binary data.
            ("also.txt".into(), b"also here\xff\x00\xab".to_vec()),
        ],
        argv: vec!["run.py".into()],
        ..JailRequest::default()
    };
    let res = b.run(&req).await;
    assert_ok(&res);
    assert_eq!(
        text(&res.stdout),
        "['also.txt', 'run.py', 'tmp']\nb'also here\\xff\\x00\\xab'\n"
    );
}

/// Not in upstream's list, but its `extra_files` example: code that reads an extra file.
#[tokio::test]
async fn test_code_can_exec_extra_files() {
    let b = broker!();
    let mut req = py("exec(open('run.py').read())");
    req.extra_files = vec![("run.py".into(), b"print('extra!')".to_vec())];
    let res = b.run(&req).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "extra!\n");
}

// ---------------------------------------------------------------- TestLimits

const BIG_ALLOC: &str = "print(len(bytearray(100000000)))";

#[tokio::test]
async fn test_cant_use_too_much_memory() {
    let b = broker!();
    let res = b.run(&with_limit(py(BIG_ALLOC), "VMEM", 80_000_000)).await;
    assert_eq!(text(&res.stdout), "");
    assert!(
        text(&res.stderr).contains("MemoryError"),
        "stderr: {:?}",
        text(&res.stderr)
    );
    assert_eq!(res.status, 1);
}

#[tokio::test]
async fn test_changing_vmem_limit() {
    let b = broker!();
    let res = b.run(&with_limit(py(BIG_ALLOC), "VMEM", 160_000_000)).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "100000000\n");
}

#[tokio::test]
async fn test_disabling_vmem_limit() {
    let b = broker!();
    let res = b
        .run(&with_limit(
            py("print(len(bytearray(50000000)))"),
            "VMEM",
            0,
        ))
        .await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "50000000\n");
}

#[tokio::test]
async fn test_cant_use_too_much_cpu() {
    let b = broker!();
    let req = with_limit(
        with_limit(py("print(sum(range(2**31-1)))"), "CPU", 1),
        "REALTIME",
        10,
    );
    let res = b.run(&req).await;
    assert_eq!(text(&res.stdout), "");
    assert_eq!(text(&res.stderr), "");
    assert_eq!(res.status, -libc::SIGXCPU, "killed by SIGXCPU");
    assert_eq!(res.limit_hit.as_deref(), Some("CPU"));
    assert!(
        res.usage.cpu_user_ms + res.usage.cpu_sys_ms >= 900,
        "about one CPU second was used: {:?}",
        res.usage
    );
}

const SLEEP_15: &str = "
    import time
    time.sleep(1.5)
    print('Done!')
";

#[tokio::test]
async fn test_cant_use_too_much_time() {
    let b = broker!();
    let res = b.run(&with_limit(py(SLEEP_15), "REALTIME", 1)).await;
    assert_eq!(text(&res.stdout), "");
    assert_eq!(res.status, -libc::SIGKILL);
    assert_eq!(res.limit_hit.as_deref(), Some("REALTIME"));
    assert!(
        (900..10_000).contains(&res.usage.wall_ms),
        "killed after about a second: {:?}",
        res.usage
    );
}

#[tokio::test]
async fn test_changing_realtime_limit() {
    let b = broker!();
    let res = b.run(&with_limit(py(SLEEP_15), "REALTIME", 2)).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "Done!\n");
    assert_eq!(res.limit_hit, None);
}

#[tokio::test]
async fn test_disabling_realtime_limit() {
    let b = broker!();
    let res = b.run(&with_limit(py(SLEEP_15), "REALTIME", 0)).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "Done!\n");
}

#[tokio::test]
async fn test_can_write_temp_files() {
    let b = broker!();
    let req = with_limit(
        py(r#"
            import os, tempfile
            print("Trying mkstemp")
            f, path = tempfile.mkstemp()
            os.close(f)
            with open(path, "w") as f1:
                f1.write("hello")
            with open(path) as f2:
                print("Got this:", f2.read())
        "#),
        "FSIZE",
        1000,
    );
    let res = b.run(&req).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "Trying mkstemp\nGot this: hello\n");
}

#[tokio::test]
async fn test_temp_files_go_to_the_workspace_tmp() {
    let b = broker!();
    let req = with_limit(
        py(r#"
            import os, tempfile
            print(os.environ.get("TMPDIR") == os.path.join(os.getcwd(), "tmp"))
            print(tempfile.gettempdir() == os.path.join(os.getcwd(), "tmp"))
        "#),
        "FSIZE",
        1000,
    );
    let res = b.run(&req).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "True\nTrue\n");
}

#[tokio::test]
async fn test_cant_write_large_temp_files() {
    let b = broker!();
    let req = with_limit(
        py(r#"
            import os, tempfile
            print("Trying mkstemp")
            f, path = tempfile.mkstemp()
            os.close(f)
            with open(path, "w") as f1:
                try:
                    f1.write(".".join("%05d" % i for i in range(1000)))
                except IOError as e:
                    print("Expected exception: %s" % e)
                else:
                    with open(path) as f2:
                        print("Got this:", f2.read())
        "#),
        "FSIZE",
        1000,
    );
    let res = b.run(&req).await;
    let stderr = text(&res.stderr);
    assert!(stderr.contains("OSError"), "stderr: {stderr:?}");
    assert!(stderr.contains("File too large"), "stderr: {stderr:?}");
}

#[tokio::test]
async fn test_cant_fork() {
    let b = broker!();
    let req = with_limit(
        py(r#"
            import os
            print("Forking")
            child_ppid = os.fork()
            print(child_ppid)
        "#),
        "NPROC",
        1,
    );
    let res = b.run(&req).await;
    // stdout holds only the first print.
    assert_eq!(text(&res.stdout), "Forking\n");
    assert!(
        text(&res.stderr).contains("BlockingIOError"),
        "stderr: {:?}",
        text(&res.stderr)
    );
    assert_ne!(res.status, 0);
}

/// The whole environment of a run: `TMPDIR`, `HOME`, plus what the broker's `python`
/// command sets (numeric libraries held to one thread so they do not exhaust NPROC, and
/// a UTF-8 locale, which also keeps Python from adding `LC_CTYPE` by coercing the C
/// locale).
/// Nothing from the broker's own environment.
const EXPECTED_ENV: &[(&str, &str)] = &[
    // `~` is the run's own tmp/ (checked below): nltk, which capa's chemistry names
    // import, refuses to import without a home.
    ("HOME", "<the run's tmp/>"),
    ("LC_ALL", "'C.UTF-8'"),
    ("MKL_NUM_THREADS", "'1'"),
    // matplotlib's cache goes to the run's own tmp/ (checked below).
    ("MPLCONFIGDIR", "<the run's tmp/>"),
    ("OMP_NUM_THREADS", "'1'"),
    ("OPENBLAS_NUM_THREADS", "'1'"),
    // Upstream's runs get sudo's PATH; callers' tests check there is one.
    ("PATH", "'/usr/local/bin:/usr/bin:/bin'"),
];

#[tokio::test]
async fn test_cant_see_environment_variables() {
    // The harness starts every broker with HONEY_BOO_BOO=Look! in its environment.
    let b = broker!();
    let res = b
        .run(&py(r#"
            import os
            for name, value in sorted(os.environ.items()):
                print("%s: %r" % (name, value))
        "#))
        .await;
    assert_ok(&res);
    let stdout = text(&res.stdout);
    assert!(
        !stdout.contains("HONEY"),
        "the broker's environment leaked: {stdout}"
    );
    let mut env: Vec<(&str, &str)> = stdout
        .lines()
        .map(|l| l.split_once(": ").unwrap_or((l, "")))
        .collect();
    // TMPDIR names the run's own tmp/ (its path is checked by
    // test_temp_files_go_to_the_workspace_tmp).
    let tmpdir = env
        .iter()
        .position(|(n, _)| *n == "TMPDIR")
        .expect("TMPDIR is set");
    let (_, value) = env.remove(tmpdir);
    assert!(value.ends_with("/tmp'"), "TMPDIR: {value}");
    for (name, v) in env.iter_mut() {
        if *name == "MPLCONFIGDIR" || *name == "HOME" {
            assert_eq!(*v, value, "{name} is the run's tmp/");
            *v = "<the run's tmp/>";
        }
    }
    assert_eq!(env, EXPECTED_ENV, "the jail's whole environment");
}

#[tokio::test]
async fn test_reading_dev_random() {
    let b = broker!();
    // We can read 10 bytes just fine.
    let res = b
        .run(&py("
            x = open('/dev/random', 'rb').read(10)
            print(len(x))
        "))
        .await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "10\n");

    // Reading all of it never ends: the real-time limit (or memory) stops it.
    let res = b
        .run(&with_limit(
            py("
                x = open('/dev/random', 'rb').read()
                print('Done!')
            "),
            "REALTIME",
            1,
        ))
        .await;
    assert_ne!(res.status, 0);
    assert_eq!(text(&res.stdout), "");

    // /dev/urandom as in upstream 4.x.
    let res = b
        .run(&py("print(len(open('/dev/urandom', 'rb').read(10)))"))
        .await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "10\n");
}

// ---------------------------------------------------------------- our own limits

#[tokio::test]
async fn test_output_over_the_cap_is_truncated() {
    let b = broker!();
    let req = with_limit(
        py("
            import sys
            sys.stdout.write('x' * 5000)
            sys.stdout.flush()
            sys.stderr.write('y' * 5000)
            sys.stderr.flush()
            print('still running', file=sys.stderr)
        "),
        "OUTPUT",
        1000,
    );
    let res = b.run(&req).await;
    assert!(res.truncated, "output over OUTPUT must be marked truncated");
    assert_eq!(res.limit_hit.as_deref(), Some("OUTPUT"));
    assert!(
        res.stdout.len() + res.stderr.len() <= 1000,
        "kept {} + {} bytes, more than OUTPUT",
        res.stdout.len(),
        res.stderr.len()
    );
    // The program was drained, not killed: it ran to the end.
    assert_eq!(res.status, 0);
}

#[tokio::test]
async fn test_tmp_limit_caps_the_workspace() {
    let b = broker!();
    let req = with_limit(
        with_limit(
            py(r#"
                import os, tempfile
                with tempfile.NamedTemporaryFile(delete=False) as f:
                    f.write(b"x" * 100000)
                print("small file ok", flush=True)
                with tempfile.NamedTemporaryFile() as f:
                    f.write(b"x" * 4000000)
                    f.flush()
                print("big file written")
            "#),
            "TMP",
            1_000_000,
        ),
        "FSIZE",
        10_000_000,
    );
    let res = b.run(&req).await;
    assert_eq!(
        text(&res.stdout),
        "small file ok\n",
        "stderr: {}",
        text(&res.stderr)
    );
    assert!(
        text(&res.stderr).contains("No space left on device"),
        "stderr: {}",
        text(&res.stderr)
    );
    assert_ne!(res.status, 0);
}

#[tokio::test]
async fn test_usage_is_reported_for_a_run_killed_by_realtime() {
    let b = broker!();
    let req = with_limit(with_limit(py("while True: pass"), "CPU", 5), "REALTIME", 1);
    let res = b.run(&req).await;
    assert_eq!(
        (res.status, res.limit_hit.as_deref()),
        (-9, Some("REALTIME"))
    );
    assert!(
        res.usage.cpu_user_ms + res.usage.cpu_sys_ms >= 500,
        "a busy loop killed after 1 s used CPU: {:?}",
        res.usage
    );
    assert!(res.usage.max_rss_kib > 0, "{:?}", res.usage);
}

/// NOFILE (default 1024) is the program's RLIMIT_NOFILE with soft = hard: it cannot
/// raise it towards the broker's own hard limit (under systemd 524288), opening past
/// it fails with EMFILE, a request may set it, and 0 (which would mean "unlimited",
/// i.e. the broker's) is refused with the reason.
#[tokio::test]
async fn test_open_files_are_capped_by_nofile() {
    let b = broker!();
    let code = r#"
        import errno, os, resource
        print(resource.getrlimit(resource.RLIMIT_NOFILE))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
            print("raised")
        except ValueError as e:
            print("not raised")
        fds = []
        try:
            for _ in range(5000):
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as e:
            print(errno.errorcode[e.errno], len(fds) + 3 <= resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    "#;
    let res = b.run(&py(code)).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "(1024, 1024)\nnot raised\nEMFILE True\n");
    let res = b.run(&with_limit(py(code), "NOFILE", 64)).await;
    assert_ok(&res);
    assert_eq!(text(&res.stdout), "(64, 64)\nnot raised\nEMFILE True\n");
    for bad in [0, 3] {
        let err = b
            .try_run(&with_limit(py("print(1)"), "NOFILE", bad))
            .await
            .expect_err("NOFILE below its minimum must be refused");
        let message = err.to_string();
        assert!(
            message.contains("NOFILE") && message.contains("minimum"),
            "{message}"
        );
    }
    // The broker keeps serving.
    assert_ok(&b.run(&py("print(1)")).await);
}
