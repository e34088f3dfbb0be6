//! The broker against bad input, vanishing clients, runaway processes and load: every
//! bad exchange gets a clear error (or a closed connection where nothing can be said)
//! and the broker serves the next request; nothing a run started outlives it.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use codejail_client::ErrorKind as ClientErrorKind;
use codejail_protocol::{EntryKind, ErrorKind, Exec, FileEntry, Hello, HELLO_MAGIC};
use codejail_tests::{
    bin, broker, is_root, limits, processes_with, py, raw_python, reachable_by_others,
    require_privileged, text, unique_marker, wait_until, with_limit, BrokerOpts, Ending, Marked,
    RawConn, TestBroker, OUTSIDER_UID,
};
use tokio::io::AsyncWriteExt;

/// How long the broker may take to answer or close a bad connection.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How long a run's processes may linger after it ended.
const CLEANUP_WITHIN: Duration = Duration::from_secs(10);

/// The broker still serves: a fresh connection runs a program.
async fn assert_still_serving(b: &TestBroker) {
    let res = b.run(&py("print('still serving')")).await;
    assert_eq!(
        (text(&res.stdout).as_str(), res.status),
        ("still serving\n", 0),
        "stderr: {}",
        text(&res.stderr)
    );
}

/// Nothing of a run is left: no process carrying `marker`, no process of the broker's
/// uid but the broker (when it has a uid of its own), nothing in its directory.
fn assert_nothing_left(b: &TestBroker, marker: &str) {
    let gone = wait_until(CLEANUP_WITHIN, || {
        processes_with(marker).is_empty() && b.stray_processes().is_empty()
    });
    assert!(
        gone,
        "processes outlived their run: {:?} / of the broker's uid: {:?}\nbroker output:\n{}",
        processes_with(marker),
        b.stray_processes(),
        b.log()
    );
    assert_eq!(
        b.state_dir_leftovers(),
        Vec::<String>::new(),
        "left in the broker's directory"
    );
}

/// Before the handshake, a bad exchange gets a refusing `Welcome` with a reason.
#[track_caller]
fn assert_refused(ending: &Ending, what: &str) {
    match ending {
        Ending::Refused(reason) => assert!(!reason.trim().is_empty(), "{what}: empty refusal"),
        other => panic!("{what}: expected a refusal with a reason, got {other:?}"),
    }
}

/// After the handshake, a bad request gets an `InvalidRequest` error with a message.
#[track_caller]
fn assert_invalid_request(ending: &Ending, what: &str) {
    match ending {
        Ending::Error(ErrorKind::InvalidRequest, message) => {
            assert!(!message.trim().is_empty(), "{what}: empty message")
        }
        other => panic!("{what}: expected an InvalidRequest error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- bad input

#[tokio::test]
async fn garbage_bytes_before_the_handshake() {
    let b = broker!();

    // Not framed at all: the "length" is 0x47455420 ("GET "), far over the cap.
    let mut conn = RawConn::connect(b.socket()).await;
    conn.stream_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: codejail\r\n\r\n")
        .await
        .expect("write");
    assert_refused(&conn.ending(ANSWER_WITHIN).await, "HTTP request");

    // A well-formed frame that is not a Hello (wrong magic): a clear refusal.
    let mut conn = RawConn::connect(b.socket()).await;
    conn.send_frame(b"\xde\xad\xbe\xef garbage".to_vec()).await;
    match conn.ending(ANSWER_WITHIN).await {
        Ending::Refused(reason) => assert!(!reason.is_empty()),
        other => panic!("a frame that is not a Hello must be refused with a reason, got {other:?}"),
    }

    // A Hello with the wrong magic but an otherwise valid encoding.
    let mut conn = RawConn::connect(b.socket()).await;
    let mut hello = Hello::current();
    hello.magic = *b"HTTP";
    conn.send(&hello).await;
    match conn.ending(ANSWER_WITHIN).await {
        Ending::Refused(reason) => assert!(!reason.is_empty()),
        other => {
            panic!("a Hello with the wrong magic must be refused with a reason, got {other:?}")
        }
    }

    assert_still_serving(&b).await;
}

#[tokio::test]
async fn garbage_request_after_the_handshake() {
    let b = broker!();
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    conn.send_frame(vec![0xff; 16]).await;
    match conn.ending(ANSWER_WITHIN).await {
        Ending::Error(kind, message) => {
            assert_eq!(kind, ErrorKind::InvalidRequest, "{message}");
            assert!(!message.is_empty());
        }
        other => panic!("a garbage request must get an InvalidRequest error, got {other:?}"),
    }
    assert_still_serving(&b).await;
}

#[tokio::test]
async fn truncated_frames() {
    let b = broker!();

    // A frame header announcing 100 bytes, 10 sent, then the write side closed.
    let mut conn = RawConn::connect(b.socket()).await;
    conn.stream_mut()
        .write_all(&[0, 0, 0, 100])
        .await
        .expect("write");
    conn.stream_mut().write_all(&[1; 10]).await.expect("write");
    conn.stream_mut().shutdown().await.expect("shutdown");
    assert_refused(&conn.ending(ANSWER_WITHIN).await, "truncated Hello frame");

    // A complete frame holding a truncated Hello encoding.
    let mut conn = RawConn::connect(b.socket()).await;
    let hello = codejail_protocol::encode(&Hello::current()).expect("encode");
    conn.send_frame(hello[..5].to_vec()).await;
    match conn.ending(ANSWER_WITHIN).await {
        Ending::Refused(reason) => assert!(!reason.is_empty()),
        other => panic!("a truncated Hello must be refused with a reason, got {other:?}"),
    }

    // After the handshake: a truncated Exec encoding in a complete frame.
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    let exec = codejail_protocol::encode(&codejail_protocol::Request::Exec(Box::new(raw_python(
        "print(1)",
    ))))
    .expect("encode");
    conn.send_frame(exec[..exec.len() / 2].to_vec()).await;
    match conn.ending(ANSWER_WITHIN).await {
        Ending::Error(kind, _) => assert_eq!(kind, ErrorKind::InvalidRequest),
        other => panic!("a truncated request must get an InvalidRequest error, got {other:?}"),
    }

    // After the handshake: half a frame, and the client keeps the connection open. The
    // broker must go on serving others meanwhile.
    let (mut stalled, _) = RawConn::handshake(b.socket()).await;
    stalled
        .stream_mut()
        .write_all(&[0, 0, 1, 0, 7, 7])
        .await
        .expect("write");
    assert_still_serving(&b).await;
    stalled.stream_mut().shutdown().await.expect("shutdown");
    assert_invalid_request(
        &stalled.ending(ANSWER_WITHIN).await,
        "truncated request frame",
    );

    assert_still_serving(&b).await;
}

#[tokio::test]
async fn frame_over_the_cap() {
    const CAP: usize = 64 * 1024;
    let b = broker!(BrokerOpts::new().max_frame(CAP));

    // Declared lengths over the cap, with no body: the broker must not wait for (or
    // allocate) the body.
    for declared in [CAP as u32 + 1, u32::MAX] {
        let mut conn = RawConn::connect(b.socket()).await;
        conn.stream_mut()
            .write_all(&declared.to_be_bytes())
            .await
            .expect("write");
        assert_refused(
            &conn.ending(ANSWER_WITHIN).await,
            "frame over the cap before the handshake",
        );
    }
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    conn.stream_mut()
        .write_all(&(CAP as u32 + 1).to_be_bytes())
        .await
        .expect("write");
    assert_invalid_request(
        &conn.ending(ANSWER_WITHIN).await,
        "frame over the cap after the handshake",
    );

    // A real request over the cap, through the client library: an error, not a hang.
    let mut req = py("import sys; print(len(sys.stdin.buffer.read()))");
    req.stdin = vec![b'x'; CAP * 2];
    let started = Instant::now();
    let err = b
        .try_run(&req)
        .await
        .expect_err("a request over the broker's frame cap must fail");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    eprintln!("over-cap request: {err}");

    // Just under the cap works.
    req.stdin = vec![b'x'; CAP / 2];
    let res = b.run(&req).await;
    assert_eq!(
        text(&res.stdout),
        format!("{}\n", CAP / 2),
        "stderr: {}",
        text(&res.stderr)
    );

    assert_still_serving(&b).await;
}

#[tokio::test]
async fn unknown_protocol_version() {
    let b = broker!();
    let mut conn = RawConn::connect(b.socket()).await;
    conn.send(&Hello {
        magic: HELLO_MAGIC,
        protocol_version: 999,
        client_version: "99.0.0".into(),
    })
    .await;
    match conn.ending(ANSWER_WITHIN).await {
        Ending::Refused(reason) => {
            assert!(
                reason.to_lowercase().contains("version") && reason.contains("999"),
                "the refusal should name the versions: {reason:?}"
            );
        }
        other => panic!("an unknown protocol version must be refused with a reason, got {other:?}"),
    }
    assert_still_serving(&b).await;
}

fn file(path: &str) -> FileEntry {
    FileEntry {
        path: path.into(),
        kind: EntryKind::File {
            contents: b"x = 1\n".to_vec(),
            executable: false,
        },
    }
}

#[tokio::test]
async fn hostile_file_names() {
    let b = broker!();
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    let mut cases: Vec<(String, Exec)> = Vec::new();
    for name in [
        "../x",
        "/etc/passwd",
        "jailed_code",
        "tmp",
        "tmp/x",
        "a\0b",
        "",
        "a/../../x",
        "a//b",
        "./x",
        "new\nline",
    ] {
        let mut exec = raw_python("print('should not run')");
        exec.files = vec![file(name)];
        cases.push((format!("file {name:?}"), exec));
        if !name.contains('/') || name.starts_with('/') || name.starts_with("..") {
            let mut exec = raw_python("print('should not run')");
            exec.extra_files = vec![(name.to_string(), b"x".to_vec())];
            cases.push((format!("extra file {name:?}"), exec));
        }
    }
    let mut exec = raw_python("print('should not run')");
    exec.extra_files = vec![("sub/x".into(), b"x".to_vec())];
    cases.push(("extra file in a subdirectory".into(), exec));
    let mut exec = raw_python("print('should not run')");
    exec.files = vec![file("d/x")];
    cases.push(("file whose directory is not listed".into(), exec));
    let mut exec = raw_python("print('should not run')");
    exec.files = vec![file("x")];
    exec.extra_files = vec![("x".into(), b"y".to_vec())];
    cases.push(("the same name twice".into(), exec));
    let mut exec = raw_python("print('should not run')");
    exec.files = vec![FileEntry {
        path: "link".into(),
        kind: EntryKind::Symlink {
            target: "a\0b".into(),
        },
    }];
    cases.push(("symlink target with a NUL".into(), exec));

    for (what, exec) in cases {
        let out = conn.run(exec).await;
        let (kind, message) = out.expect_error(&what);
        assert_eq!(kind, ErrorKind::BadFileName, "{what}: {message}");
        assert!(!message.is_empty(), "{what}");
        assert!(out.stdout.is_empty(), "{what}: something ran");
    }

    // The same connection still works, and so does a new one.
    let out = conn.run(raw_python("print('fine')")).await;
    assert_eq!(text(&out.stdout), "fine\n", "{out:?}");
    assert_eq!(out.finished.map(|f| f.status), Some(0));
    assert_still_serving(&b).await;

    // Symlinks out of the workspace are kept as links, never followed by the broker.
    let mut exec = raw_python("import os; print(os.readlink('link'))");
    exec.files = vec![FileEntry {
        path: "link".into(),
        kind: EntryKind::Symlink {
            target: "/etc/passwd".into(),
        },
    }];
    let out = conn.run(exec).await;
    assert_eq!(text(&out.stdout), "/etc/passwd\n", "{out:?}");
}

#[tokio::test]
async fn unknown_limit_names_and_commands() {
    let b = broker!();
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    for name in ["BOGUS", "cpu", "VMEM "] {
        let mut exec = raw_python("print('should not run')");
        exec.limits = limits(&[(name, 1)]);
        let out = conn.run(exec).await;
        let (kind, message) = out.expect_error(&format!("limit {name:?}"));
        assert_eq!(kind, ErrorKind::UnknownLimit, "{message}");
        assert!(
            message.contains(name.trim()),
            "the error should name the limit: {message:?}"
        );
    }
    let mut exec = raw_python("print('should not run')");
    exec.command = "ruby".into();
    let out = conn.run(exec).await;
    assert_eq!(out.error.map(|e| e.0), Some(ErrorKind::UnknownCommand));

    // Through the client library too.
    let err = b
        .try_run(&with_limit(py("print(1)"), "BOGUS", 1))
        .await
        .expect_err("an unknown limit must fail");
    assert!(err.to_string().contains("BOGUS"), "{err}");
    assert_still_serving(&b).await;
}

#[tokio::test]
async fn limit_above_its_ceiling() {
    // VMEM's default (0, unlimited) would be above its ceiling: a default is needed.
    let b = broker!(BrokerOpts::new()
        .ceiling("REALTIME", 5)
        .ceiling("VMEM", 500_000_000)
        .default_limit("VMEM", 400_000_000));
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    for (name, value) in [
        ("REALTIME", 6),
        ("REALTIME", 0),
        ("VMEM", 500_000_001),
        ("VMEM", 0),
    ] {
        let mut exec = raw_python("print('should not run')");
        exec.limits = limits(&[(name, value)]);
        let out = conn.run(exec).await;
        let (kind, message) = out.expect_error(&format!("{name}={value}"));
        assert_eq!(
            kind,
            ErrorKind::LimitAboveCeiling,
            "{name}={value}: {message}"
        );
        assert!(
            message.contains(name),
            "the error should name the limit: {message:?}"
        );
    }
    // At the ceiling is fine.
    let mut exec = raw_python("print('at the ceiling')");
    exec.limits = limits(&[("REALTIME", 5), ("VMEM", 500_000_000)]);
    let out = conn.run(exec).await;
    assert_eq!(text(&out.stdout), "at the ceiling\n", "{out:?}");

    let err = b
        .try_run(&with_limit(py("print(1)"), "REALTIME", 100))
        .await
        .expect_err("a limit above its ceiling must fail");
    assert_eq!(
        err.kind(),
        Some(ClientErrorKind::LimitAboveCeiling),
        "{err}"
    );
    assert_still_serving(&b).await;
}

/// A default or a context above a ceiling fails start-up, naming the limit.
#[test]
fn defaults_and_contexts_above_a_ceiling_fail_start_up() {
    for (opts, what) in [
        (BrokerOpts::new().ceiling("VMEM", 500_000_000), "VMEM"),
        (
            BrokerOpts::new().ceiling("CPU", 2).default_limit("CPU", 3),
            "CPU",
        ),
        (
            BrokerOpts::new()
                .ceiling("REALTIME", 5)
                .context("course-v1:x", "REALTIME", 6),
            "REALTIME",
        ),
    ] {
        let Some((status, output)) = TestBroker::start_expecting_failure(opts) else {
            return;
        };
        assert!(!status.success(), "{output}");
        assert!(
            output.contains(what),
            "the error should name {what}: {output}"
        );
    }
}

/// Config defaults, then the named context's overrides, then per-request values
/// (docs/contracts.md §4); an unknown context means no overrides.
#[tokio::test]
async fn limit_defaults_contexts_and_request_values() {
    let b = broker!(BrokerOpts::new().default_limit("REALTIME", 1).context(
        "course-v1:slow",
        "REALTIME",
        3
    ));
    let sleep = || py("import time; time.sleep(1.5); print('Done!')");

    let res = b.run(&sleep()).await;
    assert_eq!(
        (res.status, res.limit_hit.as_deref()),
        (-9, Some("REALTIME")),
        "default REALTIME=1"
    );

    let mut req = sleep();
    req.limits_context = Some("course-v1:slow".into());
    let res = b.run(&req).await;
    assert_eq!(
        (text(&res.stdout).as_str(), res.status),
        ("Done!\n", 0),
        "context REALTIME=3"
    );

    req.limits_context = Some("course-v1:unknown".into());
    let res = b.run(&req).await;
    assert_eq!(res.status, -9, "an unknown context means no overrides");

    let mut req = with_limit(sleep(), "REALTIME", 1);
    req.limits_context = Some("course-v1:slow".into());
    let res = b.run(&req).await;
    assert_eq!(res.status, -9, "a request value wins over the context");
}

#[test]
fn peer_uid_not_allowed() {
    if !require_privileged("connecting as another uid") {
        return;
    }
    let b = broker!();
    let client = bin("codejail-client");
    reachable_by_others(&client).unwrap_or_else(|e| panic!("{e}"));
    // Let the kernel admit any uid to the socket, so that the refusal tested is the
    // broker's own SO_PEERCRED check, not the file mode.
    std::fs::set_permissions(
        b.socket(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .expect("chmod socket");

    for args in [
        vec!["status"],
        vec!["exec", "-c", "print('should not run')"],
    ] {
        let out = Command::new(&client)
            .arg("--socket")
            .arg(b.socket())
            .args(&args)
            .uid(OUTSIDER_UID)
            .gid(OUTSIDER_UID)
            .output()
            .expect("run codejail-client as an outsider");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: stderr {stderr:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "one line on stderr: {stderr:?}"
        );
        let lower = stderr.to_lowercase();
        assert!(
            (lower.contains("refused") || lower.contains("not allowed"))
                && lower.contains(&OUTSIDER_UID.to_string()),
            "the message should say the uid was refused: {stderr:?}"
        );
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(assert_still_serving(&b));
}

// ---------------------------------------------------------------- runs that must not outlive their end

/// Wait until the run has printed `token` on stdout (so its program is running).
async fn wait_for_stdout(conn: &mut RawConn, token: &str) {
    let mut seen = Vec::new();
    loop {
        match conn.recv().await {
            Some(codejail_protocol::Response::Stdout(b)) => {
                seen.extend(b);
                if text(&seen).contains(token) {
                    return;
                }
            }
            Some(codejail_protocol::Response::Stderr(b)) => eprintln!("run stderr: {}", text(&b)),
            Some(
                codejail_protocol::Response::Queued { .. }
                | codejail_protocol::Response::Started { .. },
            ) => {}
            other => panic!("the run did not print {token:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn client_disconnecting_mid_run_cancels_it() {
    let b = broker!();
    let marker = unique_marker("disconnect");
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    let mut exec = raw_python(
        "
        import time
        print('started', flush=True)
        time.sleep(30)
        print('not cancelled')
    ",
    );
    exec.mark(&marker);
    exec.limits = limits(&[("REALTIME", 60)]);
    conn.exec(exec).await;
    wait_for_stdout(&mut conn, "started").await;
    assert!(
        wait_until(Duration::from_secs(5), || !processes_with(&marker)
            .is_empty()),
        "the running program should be visible in /proc"
    );
    if is_root() {
        let procs = processes_with(&marker);
        assert!(
            procs.iter().all(|p| Some(p.uid) == b.uid()),
            "the run's processes should run as the broker's uid {:?}: {procs:?}",
            b.uid()
        );
    }

    drop(conn);
    assert_nothing_left(&b, &marker);
    assert_still_serving(&b).await;
}

/// A client that stops reading cannot stretch its run past REALTIME: the run is killed
/// on time while the client still holds its connection (its frames back up in the
/// socket), and the broker keeps serving others.
#[tokio::test]
async fn a_client_that_stops_reading_cannot_outlast_realtime() {
    let b = broker!();
    let marker = unique_marker("stalled");
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    let mut exec = raw_python(
        "
        import sys
        chunk = b'x' * 65536
        while True:
            sys.stdout.buffer.write(chunk)
    ",
    );
    exec.mark(&marker);
    // OUTPUT 0: no cap, so the output backs up to the program instead of being dropped.
    exec.limits = limits(&[("REALTIME", 2), ("CPU", 30), ("OUTPUT", 0)]);
    conn.exec(exec).await;
    // From here on the client never reads.
    assert!(
        wait_until(Duration::from_secs(5), || !processes_with(&marker)
            .is_empty()),
        "the running program should be visible in /proc"
    );
    assert_nothing_left(&b, &marker);
    assert_still_serving(&b).await;
    drop(conn);
}

#[tokio::test]
async fn daemonized_grandchild_dies_with_the_run() {
    let b = broker!();
    let marker = unique_marker("daemon");
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    let mut exec = raw_python(
        "
        import os, sys, time
        marker = sys.argv[1]
        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                # No exec (denied after the program's start): the daemon is this
                # fork, which carries the marker in its command line.
                os.write(w, b'x')
                time.sleep(60)
                os._exit(0)
            os._exit(0)
        os.wait()
        os.read(r, 1)
        print('daemonized', flush=True)
        time.sleep(1)
    ",
    );
    exec.mark(&marker);
    exec.limits = limits(&[("REALTIME", 10)]);
    let started = Instant::now();
    conn.exec(exec).await;
    wait_for_stdout(&mut conn, "daemonized").await;
    // The program and the daemonized grandchild (a fork of it: same command line)
    // while the program sleeps; the middle child has exited.
    assert!(
        wait_until(Duration::from_secs(5), || processes_with(&marker).len()
            >= 2),
        "the daemonized grandchild should be visible in /proc"
    );
    let out = conn.collect().await;
    let finished = out.expect_finished("the daemonizing run");
    eprintln!(
        "daemonizing run finished with {finished:?} after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_nothing_left(&b, &marker);

    // The same, but the program itself outlives REALTIME: the kill takes the whole run,
    // the grandchild in its own session included.
    let marker = unique_marker("daemon_rt");
    let mut req = with_limit(
        py("
            import os, sys, time
            r, w = os.pipe()
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.write(w, b'x')
                    time.sleep(60)
                    os._exit(0)
                os._exit(0)
            os.wait()
            os.read(r, 1)
            time.sleep(30)
        "),
        "REALTIME",
        2,
    );
    req.mark(&marker);
    let res = b.run(&req).await;
    assert_eq!(
        (res.status, res.limit_hit.as_deref()),
        (-9, Some("REALTIME")),
        "{}",
        text(&res.stderr)
    );
    assert_nothing_left(&b, &marker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_runs_each_get_their_own_output() {
    let b = broker!(BrokerOpts::new().max_running(4).max_queue(64));
    let cfg = b.cfg();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let cfg = cfg.clone();
        let token = format!("token-{i}-{}", unique_marker("c"));
        tasks.push(tokio::spawn(async move {
            let mut req = with_limit(
                py(&format!(
                    "import sys\nprint({token:?})\nprint({token:?}[::-1], file=sys.stderr)"
                )),
                "REALTIME",
                30,
            );
            req.slug = Some(format!("concurrent-{i}"));
            let res = codejail_client::jail_code(&cfg, &req).await;
            (token, res)
        }));
    }
    let mut run_ids = std::collections::BTreeSet::new();
    for t in tasks {
        let (token, res) = t.await.expect("task");
        let res = res.unwrap_or_else(|e| panic!("{token}: {e}; broker output:\n{}", b.log()));
        assert_eq!(text(&res.stdout), format!("{token}\n"));
        let reversed: String = token.chars().rev().collect();
        assert_eq!(text(&res.stderr), format!("{reversed}\n"));
        assert_eq!(res.status, 0);
        assert!(
            run_ids.insert(res.run_id),
            "run id {} given twice",
            res.run_id
        );
    }
}

#[tokio::test]
async fn back_to_back_runs_are_never_busy_even_without_a_queue() {
    // The broker answers before it has cleaned a run up; with one slot and no queue, a
    // caller that sends its next request the moment it has its answer must still get
    // a run, not Busy (the HTTP front's start-up checks do exactly this).
    let b = broker!(BrokerOpts::new().max_running(1).max_queue(0));
    for i in 0..30 {
        let res = b
            .try_run(&py(&format!("print({i})")))
            .await
            .unwrap_or_else(|e| panic!("run {i} right after the previous one: {e}"));
        assert_eq!((text(&res.stdout), res.status), (format!("{i}\n"), 0));
    }
    let mut client = codejail_client::Client::connect(&b.cfg())
        .await
        .expect("connect");
    let load = client.status().await.expect("status").load;
    assert_eq!((load.max_running, load.max_queue), (1, 0), "{load:?}");
}

#[tokio::test]
async fn full_queue_answers_busy() {
    let b = broker!(BrokerOpts::new().max_running(1).max_queue(1));
    let marker = unique_marker("busy");
    let long = || {
        let mut exec = raw_python("import time; print('running', flush=True); time.sleep(20)");
        exec.mark(&marker);
        exec.limits = limits(&[("REALTIME", 30)]);
        exec
    };

    let (mut running, _) = RawConn::handshake(b.socket()).await;
    running.exec(long()).await;
    wait_for_stdout(&mut running, "running").await;

    let (mut queued, _) = RawConn::handshake(b.socket()).await;
    queued.exec(long()).await;
    match queued.recv().await {
        Some(codejail_protocol::Response::Queued { position }) => {
            assert_eq!(position, 0, "nothing ahead in the queue")
        }
        other => panic!("the second request should be queued, got {other:?}"),
    }

    let mut client = codejail_client::Client::connect(&b.cfg())
        .await
        .expect("connect");
    let status = client.status().await.expect("status");
    assert_eq!(
        (
            status.load.running,
            status.load.queued,
            status.load.max_running,
            status.load.max_queue
        ),
        (1, 1, 1, 1),
        "{:?}",
        status.load
    );

    let started = Instant::now();
    let err = b
        .try_run(&py("print('third')"))
        .await
        .expect_err("the third request must be refused");
    assert_eq!(err.kind(), Some(ClientErrorKind::Busy), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "Busy must be immediate: {:?}",
        started.elapsed()
    );

    let (mut third, _) = RawConn::handshake(b.socket()).await;
    let out = third.run(raw_python("print('third')")).await;
    assert_eq!(
        out.error.map(|e| e.0),
        Some(ErrorKind::Busy),
        "raw third request"
    );

    // Hanging up cancels both; the broker serves again.
    drop(running);
    drop(queued);
    assert_nothing_left(&b, &marker);
    assert_still_serving(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_run() {
    let mut b = broker!();
    let marker = unique_marker("sigterm");
    let (mut conn, _) = RawConn::handshake(b.socket()).await;
    let mut exec = raw_python("import time; print('started', flush=True); time.sleep(30)");
    exec.mark(&marker);
    exec.limits = limits(&[("REALTIME", 60)]);
    conn.exec(exec).await;
    wait_for_stdout(&mut conn, "started").await;

    let stopping = Instant::now();
    let status = tokio::task::block_in_place(|| b.terminate_within(Duration::from_secs(30)));
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM: exit 0; broker output:\n{}",
        b.log()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "took {:?}",
        stopping.elapsed()
    );

    let out = conn.collect().await;
    assert!(
        out.finished.is_some() || out.error.is_some(),
        "the run's client should see an error or a finished status, got {out:?}"
    );
    assert_nothing_left(&b, &marker);
    if is_root() {
        assert!(b.stray_processes().is_empty(), "{:?}", b.stray_processes());
    }
}

/// SIGTERM right after the socket accepts: the broker already handles it (exit 0,
/// socket removed), it is not killed by the default action.
#[test]
fn sigterm_right_after_start_exits_0() {
    for _ in 0..5 {
        let mut b = broker!();
        let status = b.terminate_within(Duration::from_secs(20));
        assert_eq!(
            status.code(),
            Some(0),
            "{status}; broker output:\n{}",
            b.log()
        );
        assert!(
            !b.socket().exists(),
            "the socket should be removed on SIGTERM"
        );
    }
}
