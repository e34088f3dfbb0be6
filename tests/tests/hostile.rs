//! Hostile allowed peers: what one caller with an allowed uid can do to the
//! others, each case asserting the outcome that counts: no allowed peer can make
//! another peer's run fail or wait beyond its queue turn, and the broker's memory and
//! descriptors stay bounded.
//!
//! - idle connections: a cap on connections, enforced at accept by closing the one
//!   idle the longest; a clear refusal when every connection is busy; an idle timeout;
//!   the open-file limit checked against the cap at start-up;
//! - big requests: a budget of request bytes held, spent before a frame's body is
//!   read (the length prefix says how big it is), answered `Busy` otherwise;
//! - the program's open files (NOFILE) is in `jail_code.rs`.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use codejail_client::ErrorKind as ClientErrorKind;
use codejail_protocol::{EntryKind, ErrorKind, FileEntry};
use codejail_tests::{
    broker, py, raw_python, text, with_limit, BrokerOpts, ClientError, Ending, JailRequest,
    RawConn, TestBroker,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How many descriptors the broker has open now.
fn broker_fds(b: &TestBroker) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", b.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A normal client's run, with its wall time.
async fn normal_run(b: &TestBroker) -> (Result<codejail_tests::JailResult, ClientError>, Duration) {
    let started = Instant::now();
    let res = b.try_run(&py("print('served')")).await;
    (res, started.elapsed())
}

/// Read a streaming run's stdout until it has printed `ready` (it runs on); panics if
/// it ends first.
async fn wait_for_ready(conn: &mut RawConn, what: &str) {
    let mut out = Vec::new();
    while !out.starts_with(b"ready") {
        match conn.recv().await {
            Some(codejail_protocol::Response::Stdout(chunk)) => out.extend(chunk),
            Some(
                r @ (codejail_protocol::Response::Finished(_)
                | codejail_protocol::Response::Error { .. }),
            ) => panic!("{what} ended early: {r:?}"),
            Some(_) => {}
            None => panic!("the broker closed {what}'s connection"),
        }
    }
}

/// A request of `code` with a 5 MiB file.
fn with_5_mib(code: &str) -> JailRequest {
    let mut req = with_limit(py(code), "REALTIME", 10);
    req.extra_files = vec![("big.bin".into(), vec![2u8; 5 << 20])];
    req
}

/// `req` is answered Busy before its body is read.
async fn assert_busy_unread(b: &TestBroker, req: &JailRequest, when: &str) {
    match b.try_run(req).await {
        Err(ClientError::Broker { kind, message }) => {
            assert_eq!(kind, ClientErrorKind::Busy, "{message}");
            assert!(message.contains("was not read"), "{message}");
        }
        other => panic!("expected Busy {when}, got {other:?}"),
    }
}

/// Whether the broker has closed `conn` (EOF or reset) within `within`.
async fn closed_within(conn: &mut RawConn, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, conn.stream_mut().read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// One uid opens far more idle, handshaken connections than the broker's open-file
/// limit could hold (the lockout of issue 13: with 1024 fds and 1,100 idle
/// connections a normal client timed out). With the cap, the connections idle the
/// longest are closed to make room and a normal client is served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_lock_out_a_normal_client() {
    let b = broker!(BrokerOpts::new()
        .nofile(256)
        .args(["--max-connections", "100"]));
    let mut idle = Vec::new();
    for _ in 0..400 {
        let (conn, welcome) = RawConn::handshake(b.socket()).await;
        assert!(welcome.refused.is_none(), "{:?}", welcome.refused);
        idle.push(conn);
    }
    let (res, took) = normal_run(&b).await;
    let res = res.unwrap_or_else(|e| panic!("a normal client failed: {e}; log:\n{}", b.log()));
    assert_eq!(text(&res.stdout), "served\n");
    assert!(took < Duration::from_secs(5), "served only after {took:?}");
    // The oldest idle connections were closed; the broker holds at most the cap.
    assert!(closed_within(&mut idle[0], Duration::from_secs(5)).await);
    assert!(
        broker_fds(&b) <= 100 + 64,
        "the broker holds {} fds",
        broker_fds(&b)
    );
    assert!(
        !b.log().contains("Too many open files"),
        "accept ran out of fds:\n{}",
        b.log()
    );
    // The newest connection is still usable.
    let last = idle.last_mut().expect("connections");
    last.exec(raw_python("print('kept')")).await;
    let out = last.collect().await;
    out.expect_finished("the newest idle connection");
    assert_eq!(text(&out.stdout), "kept\n");
}

/// When every connection is inside a request, a new one is refused at once with the
/// reason, not left hanging; the runs in progress are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_with_all_busy_is_refused_with_the_reason() {
    let b = broker!(BrokerOpts::new()
        .max_running(2)
        .args(["--max-connections", "2"]));
    let mut busy = Vec::new();
    for _ in 0..2 {
        let (mut conn, _) = RawConn::handshake(b.socket()).await;
        let mut exec = raw_python("import time; time.sleep(2); print('done')");
        exec.limits = codejail_tests::limits(&[("REALTIME", 10)]);
        conn.exec(exec).await;
        busy.push(conn);
    }
    // Both are running (their Started came) before the third connects.
    for conn in &mut busy {
        loop {
            match conn.recv().await {
                Some(codejail_protocol::Response::Started { .. }) => break,
                Some(codejail_protocol::Response::Queued { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let started = Instant::now();
    let err = b
        .try_run(&py("print(1)"))
        .await
        .expect_err("over the cap with every connection busy");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a refusal, not a hang"
    );
    let message = err.to_string();
    assert!(message.contains("cap of 2 connections"), "{message}");
    for conn in &mut busy {
        let out = conn.collect().await;
        assert_eq!(out.expect_finished("a busy connection").status, 0);
        assert_eq!(text(&out.stdout), "done\n");
    }
}

/// A connection idle between requests longer than the idle timeout is closed; one
/// that keeps working is not.
#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let b = broker!(BrokerOpts::new().args(["--idle-timeout-secs", "1"]));
    let (mut idle, _) = RawConn::handshake(b.socket()).await;
    let (mut working, _) = RawConn::handshake(b.socket()).await;
    for _ in 0..3 {
        working.exec(raw_python("print('x')")).await;
        working
            .collect()
            .await
            .expect_finished("a working connection");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(closed_within(&mut idle, Duration::from_secs(3)).await);
    working.exec(raw_python("print('still')")).await;
    let out = working.collect().await;
    out.expect_finished("the working connection, after the idle one was closed");
    assert_eq!(text(&out.stdout), "still\n");
}

/// A broker whose open-file limit cannot hold the connection cap the operator set,
/// plus its runs, refuses to start, naming the numbers and the fix.
#[test]
fn an_open_file_limit_below_the_connection_cap_refuses_start_up() {
    let Some((status, log)) = TestBroker::start_expecting_failure(
        BrokerOpts::new()
            .nofile(512)
            .max_running(4)
            .args(["--max-connections", "1024"]),
    ) else {
        return;
    };
    assert!(!status.success());
    assert!(
        log.contains("max_connections (1024) + max_running (4) x 12 + 64 = 1136")
            && log.contains("open-file limit of 512")
            && log.contains("LimitNOFILE")
            && log.contains("to at most 400"),
        "{log}"
    );
}

/// With no `max_connections` set, a broker whose open-file limit cannot hold the
/// default cap (the runtime's usual 1024 in a container) starts with the cap lowered to
/// what fits: its log warns with the numbers, its status shows the fitted cap, and it
/// serves.
#[tokio::test]
async fn the_default_connection_cap_is_fitted_to_a_low_open_file_limit() {
    let b = broker!(BrokerOpts::new().nofile(512).max_running(4));
    let report = codejail_client::status(&b.cfg()).await.expect("status");
    // 512 - 4 runs x 12 - 64 for the broker itself.
    assert_eq!(report.load.max_connections, 400, "{:?}", report.load);
    assert!(report.load.connections_fitted, "{:?}", report.load);
    let log = b.log();
    assert!(
        log.contains("max_connections lowered from its default 1024")
            && log.contains("max_connections=400")
            && log.contains("rlimit_nofile=512"),
        "{log}"
    );
    let out = b.run(&py("print('served')")).await;
    assert_eq!(text(&out.stdout), "served\n");
}

/// The default cap is not fitted when it fits: the status says so.
#[tokio::test]
async fn the_default_connection_cap_is_kept_when_it_fits() {
    let b = broker!(BrokerOpts::new().nofile(4096).max_running(4));
    let report = codejail_client::status(&b.cfg()).await.expect("status");
    assert_eq!(report.load.max_connections, 1024, "{:?}", report.load);
    assert!(!report.load.connections_fitted, "{:?}", report.load);
    assert!(!b.log().contains("max_connections lowered"), "{}", b.log());
}

/// A frame whose declared length is over the broker's request budget is answered
/// `Busy` before its body is sent at all (only the 4-byte length prefix is), and the
/// connection is then closed.
#[tokio::test]
async fn a_request_over_the_budget_is_busy_before_its_body_is_read() {
    let b = broker!(BrokerOpts::new()
        .max_frame(8 << 20)
        .args(["--request-budget", &(8u64 << 20).to_string()]));
    // Two queued requests of 5 MiB would exceed 8 MiB: hold the budget with one
    // request whose body is half sent, then announce another.
    let (mut first, _) = RawConn::handshake(b.socket()).await;
    let declared: u32 = 5 << 20;
    first
        .stream_mut()
        .write_all(&declared.to_be_bytes())
        .await
        .expect("length prefix");
    first
        .stream_mut()
        .write_all(&vec![0u8; 1 << 20])
        .await
        .expect("part of the body");
    let (mut second, _) = RawConn::handshake(b.socket()).await;
    second
        .stream_mut()
        .write_all(&declared.to_be_bytes())
        .await
        .expect("length prefix");
    match second.ending(Duration::from_secs(5)).await {
        Ending::Error(ErrorKind::Busy, message) => {
            assert!(message.contains("was not read"), "{message}")
        }
        other => panic!("expected Busy before the body, got {other:?}"),
    }
    assert!(closed_within(&mut second, Duration::from_secs(3)).await);
    // Others are still served (a small request always fits).
    let (res, _) = normal_run(&b).await;
    assert_eq!(text(&res.expect("a small request").stdout), "served\n");
}

/// Through the client library: with one run in the only slot and a big request
/// queued (holding its bytes), another big request gets `Busy` (a typed error the
/// caller can retry on), though its write of the body fails once the broker closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reads_busy_even_when_its_write_fails() {
    let b = broker!(BrokerOpts::new()
        .max_running(1)
        .max_queue(4)
        .max_frame(8 << 20)
        .args(["--request-budget", &(8u64 << 20).to_string()]));
    let big = |code: &str| {
        let mut exec = raw_python(code);
        exec.files = vec![FileEntry {
            path: "big.bin".into(),
            kind: EntryKind::File {
                contents: vec![1u8; 5 << 20],
                executable: false,
            },
        }];
        exec.limits = codejail_tests::limits(&[("REALTIME", 10)]);
        exec
    };
    // The running one: its bytes are given back once its plan reached the stage, which
    // it has once the program runs (`Started` comes before: waiting for that only, the
    // queued one below was sometimes answered busy, and the loop waited forever).
    let (mut running, _) = RawConn::handshake(b.socket()).await;
    running
        .exec(big(
            "import time; print('ready', flush=True); time.sleep(3)",
        ))
        .await;
    wait_for_ready(&mut running, "the running one").await;
    // The queued one holds 5 MiB of the 8.
    let (mut queued, _) = RawConn::handshake(b.socket()).await;
    queued.exec(big("print('queued ran')")).await;
    loop {
        match queued.recv().await {
            Some(codejail_protocol::Response::Queued { .. }) => break,
            Some(r @ codejail_protocol::Response::Error { .. }) => {
                panic!("expected the second one queued, got {r:?}")
            }
            Some(_) => {}
            None => panic!("the broker closed the queued one's connection"),
        }
    }
    assert_busy_unread(&b, &with_5_mib("print('never')"), "with the budget spent").await;
    assert_eq!(running.collect().await.expect_finished("running").status, 0);
    let out = queued.collect().await;
    out.expect_finished("queued");
    assert_eq!(text(&out.stdout), "queued ran\n");
}

/// A memory figure of the broker's (`VmRSS:`, `VmHWM:`), KiB.
fn broker_status_kib(b: &TestBroker, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", b.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The broker's resident memory, KiB.
fn broker_rss_kib(b: &TestBroker) -> u64 {
    broker_status_kib(b, "VmRSS:")
}

/// The broker's peak resident memory so far, KiB.
fn broker_hwm_kib(b: &TestBroker) -> u64 {
    broker_status_kib(b, "VmHWM:")
}

/// A request's bytes exist at most twice at once in the broker (the frame and the
/// decoded request, then the plan's payload and its frame for the stage), each copy in
/// an allocation of its own size whose memory goes back to the kernel when it is
/// freed: one 30 MiB request raises the broker's peak RSS by at most twice its size
/// and a margin. Before, decoded files and the plan's frame grew by doubling (copied
/// at growths) and freed payloads stayed in malloc's arenas: 85 MiB for 30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_request_is_held_at_most_twice() {
    let b = broker!(BrokerOpts::new());
    let (res, _) = normal_run(&b).await;
    assert_eq!(text(&res.expect("warm-up").stdout), "served\n");
    let before = broker_hwm_kib(&b);
    let size: usize = 30 << 20;
    let mut req = with_limit(
        py("import os; print(os.path.getsize('big.bin'))"),
        "REALTIME",
        30,
    );
    req.extra_files = vec![("big.bin".into(), vec![5u8; size])];
    let res = b.run(&req).await;
    assert_eq!(
        text(&res.stdout),
        format!("{size}\n"),
        "{}",
        text(&res.stderr)
    );
    let grown = broker_hwm_kib(&b).saturating_sub(before);
    let bound = 2 * (size as u64 >> 10) + 10 * 1024;
    eprintln!(
        "one {} MiB request: peak RSS grew {grown} KiB (bound {bound})",
        size >> 20
    );
    assert!(
        grown <= bound,
        "one {} MiB request raised the broker's peak RSS by {grown} KiB (at most {bound})",
        size >> 20
    );
}

/// A request's stdin stays in the broker until its run ends (the program reads it when
/// it likes), and so does its share of the budget: with a run holding 5 MiB of stdin
/// it does not read and a budget of 8 MiB, another 5 MiB request is answered Busy
/// before its body is read. Before, the whole reservation went once the plan reached
/// the stage, and each running run could hold a largest frame of stdin beyond the
/// budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_stdin_stays_counted_until_its_run_ends() {
    let b = broker!(BrokerOpts::new()
        .max_frame(8 << 20)
        .args(["--request-budget", &(8u64 << 20).to_string()]));
    let (mut running, _) = RawConn::handshake(b.socket()).await;
    let mut exec = raw_python("import time; print('ready', flush=True); time.sleep(60)");
    exec.stdin = vec![3u8; 5 << 20];
    exec.limits = codejail_tests::limits(&[("REALTIME", 60)]);
    running.exec(exec).await;
    // The program runs: its plan has reached the stage.
    wait_for_ready(&mut running, "the stdin run").await;
    let req = with_5_mib("print('read')");
    assert_busy_unread(&b, &req, "while the stdin is held").await;
    // The client leaving ends the run, and its stdin's share is given back.
    drop(running);
    let mut answer = b.try_run(&req).await;
    for _ in 0..50 {
        match &answer {
            Err(ClientError::Broker { kind, .. }) if *kind == ClientErrorKind::Busy => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                answer = b.try_run(&req).await;
            }
            _ => break,
        }
    }
    assert_eq!(text(&answer.expect("once the run ended").stdout), "read\n");
}

/// Many runs in a row (two callers at once) against a production-shape broker (per-run
/// uids, v1 cgroups): every run succeeds, and afterwards nothing is left: no process
/// of the run uids, no file in the broker's directory, no run cgroup, no descriptor
/// beyond those of the warm-up, no uid lease (a leaked one would exhaust the pool of 8
/// within a few runs and fail them), and the broker's RSS grew by at most 2 MiB.
/// `CODEJAIL_SOAK_RUNS` sets the count (default 400; 2000 for the full soak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_leaves_nothing_behind() {
    let runs: usize = std::env::var("CODEJAIL_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let b = broker!(BrokerOpts::new().production_shape().max_running(2));
    let req = with_limit(py("import os; print(os.getpid())"), "REALTIME", 20);
    let batch = |n: usize| {
        let cfg = b.cfg();
        let req = req.clone();
        async move {
            let mut tasks = Vec::new();
            for lane in 0..2 {
                let (cfg, req) = (cfg.clone(), req.clone());
                tasks.push(tokio::spawn(async move {
                    for i in (lane..n).step_by(2) {
                        let res = codejail_client::jail_code(&cfg, &req)
                            .await
                            .unwrap_or_else(|e| panic!("run {i}: {e}"));
                        assert_eq!(
                            (res.status, text(&res.stdout)),
                            (0, "2\n".into()),
                            "run {i}"
                        );
                    }
                }));
            }
            for t in tasks {
                t.await.expect("lane");
            }
        }
    };
    batch(50).await;
    let settle = |b: &TestBroker| {
        codejail_tests::wait_until(Duration::from_secs(10), || b.stray_processes().is_empty())
    };
    assert!(settle(&b), "runs left processes: {:?}", b.stray_processes());
    let (fds, rss) = (broker_fds(&b), broker_rss_kib(&b));
    let started = Instant::now();
    batch(runs).await;
    let took = started.elapsed();
    assert!(settle(&b), "runs left processes: {:?}", b.stray_processes());
    assert_eq!(b.state_dir_leftovers(), Vec::<String>::new());
    let parents = b.cgroup_parents().expect("production shape has cgroups");
    assert!(
        codejail_tests::wait_until(Duration::from_secs(5), || parents
            .leftover_runs()
            .is_empty()),
        "run cgroups left: {:?}",
        parents.leftover_runs()
    );
    assert!(
        codejail_tests::wait_until(Duration::from_secs(5), || broker_fds(&b) <= fds),
        "fds {} -> {}",
        fds,
        broker_fds(&b)
    );
    let grown = broker_rss_kib(&b).saturating_sub(rss);
    eprintln!("soak: {runs} runs in {took:?}; broker fds {fds}, RSS {rss} KiB, grew {grown} KiB");
    assert!(
        grown <= 2048,
        "the broker's RSS grew {grown} KiB over {runs} runs"
    );
}

/// `kill -9` of the broker with runs in progress: every process of those runs dies at
/// once (each stage sees its control pipe close), the restarted broker's start-up
/// sweep removes the runs' cgroups, and a new run works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_broker_mid_run_then_restart() {
    let mut b = broker!(BrokerOpts::new().production_shape().max_running(4));
    let marker = codejail_tests::unique_marker("crash");
    let mut conns = Vec::new();
    for _ in 0..4 {
        let (mut conn, _) = RawConn::handshake(b.socket()).await;
        let mut exec = raw_python("import time; print('up', flush=True); time.sleep(60)");
        exec.argv = vec![marker.clone()];
        exec.limits = codejail_tests::limits(&[("REALTIME", 120)]);
        conn.exec(exec).await;
        conns.push(conn);
    }
    for conn in &mut conns {
        loop {
            match conn.recv().await {
                Some(codejail_protocol::Response::Stdout(_)) => break,
                Some(_) => {}
                None => panic!("the run ended early; log:\n{}", b.log()),
            }
        }
    }
    assert_eq!(codejail_tests::processes_with(&marker).len(), 4);
    let killed = Instant::now();
    b.crash_and_restart();
    assert!(
        codejail_tests::wait_until(Duration::from_secs(5), || codejail_tests::processes_with(
            &marker
        )
        .is_empty()),
        "runs of the killed broker survive: {:?}",
        codejail_tests::processes_with(&marker)
    );
    eprintln!("runs gone {:?} after the kill", killed.elapsed());
    // The restarted broker swept the old runs' cgroups before serving.
    let parents = b.cgroup_parents().expect("cgroups");
    assert_eq!(parents.leftover_runs(), Vec::<std::path::PathBuf>::new());
    let res = b.run(&py("print('after the crash')")).await;
    assert_eq!(text(&res.stdout), "after the crash\n");
    assert!(
        b.stray_processes().is_empty()
            || codejail_tests::wait_until(Duration::from_secs(5), || b
                .stray_processes()
                .is_empty())
    );
}
