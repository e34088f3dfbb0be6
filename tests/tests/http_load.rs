//! The HTTP front under load, in a test binary of its own: cargo runs test binaries
//! one after another, so the 1,100 connections held here do not slow down the
//! timing-sensitive tests of `http.rs` (busy retries, deadlines) running beside them.

#![allow(clippy::expect_used)]

use std::net::TcpStream;
use std::time::Duration;

use codejail_tests::broker;
use codejail_tests::http::{closed_within, raise_open_files_limit, TestFront, READY_TIMEOUT};

/// 1,100 clients that each send half a header block and stall, against a front with
/// the open-files limit systemd gives a service by default (soft 1024): `/live` and
/// `/health/` still answer while every stalled connection is held open, and a
/// stalled connection is closed by the header-read timeout.
#[test]
fn stalled_clients_do_not_starve_the_front_and_are_timed_out() {
    const STALLED: usize = 1_100;
    let hard = raise_open_files_limit();
    assert!(
        hard >= 4_096,
        "this test holds {STALLED} connections: the hard RLIMIT_NOFILE ({hard}) is too low"
    );
    let b = broker!();
    // A long timeout: the stalls must stay open while the probes run.
    let front = TestFront::start_with_nofile(
        b.socket(),
        "header_read_timeout_secs = 300",
        Some((1024, hard)),
    );
    assert!(
        front.wait_health(200, READY_TIMEOUT),
        "not ready:\n{}",
        front.log()
    );
    let stalled: Vec<TcpStream> = (0..STALLED).map(|_| front.stall()).collect();
    for path in ["/live", "/health/"] {
        let r = front
            .try_get_within(path, Duration::from_secs(10))
            .unwrap_or_else(|e| {
                panic!(
                    "GET {path} with {STALLED} stalled clients: {e}; log:\n{}",
                    front.log()
                )
            });
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.json().to_json(), r#"{"status": "OK"}"#);
    }
    let open = front.metric("codejail_http_connections").unwrap_or(0.0);
    assert!(
        open >= STALLED as f64,
        "the stalled connections are held, not dropped: {open} open"
    );
    let log = front.log();
    assert!(
        log.contains("raised the soft RLIMIT_NOFILE") && log.contains("max_connections=4096"),
        "the front raised its soft limit for its default cap:\n{log}"
    );
    assert!(!log.contains("accept failed"), "accept ran out:\n{log}");
    drop(stalled);

    // A short timeout: a stalled connection is closed, the next one served.
    let quick = TestFront::start(b.socket(), "header_read_timeout_secs = 0.5");
    let mut s = quick.stall();
    assert!(
        closed_within(&mut s, Duration::from_secs(30)),
        "a connection that stalled in its header block is still open:\n{}",
        quick.log()
    );
    assert_eq!(quick.get("/live").status, 200);
}
