//! End-to-end tests of `codejail-http` against a real broker: every status code and
//! message of codejail-service's API (docs/compat.md §5), edx-platform's exact
//! request shapes, busy and the in-flight cap, deadlines, disconnects, health following
//! the broker, metrics and graceful shutdown. Loopback only, ephemeral ports.
//!
//! Every test that needs a ready front (`TestFront::start_ready`) depends on the
//! jail passing codejail-service's safety checks (exec denied with EACCES, `AF_INET`
//! sockets denied with EACCES, `/` unlistable).

#![allow(clippy::expect_used)]

use std::os::unix::fs::symlink;
use std::process::Command;
use std::time::{Duration, Instant};

use codejail_client::pyjson::Value;
use codejail_tests::http::{
    config_text, front_command, multipart, multipart_parts, zip_of, HttpResponse, TestFront,
};
use codejail_tests::{bin, broker, wait_until, BrokerOpts, TestBroker};

const CODE_EXEC: &str = "/api/v0/code-exec";

/// edx-platform's payload (`xmodule.capa.safe_exec.remote_exec`): every key present,
/// `None` where it has no value.
fn edx_payload(code: &str, globals: &str) -> String {
    format!(
        "{{\"code\": {}, \"globals_dict\": {globals}, \"python_path\": null, \
         \"limit_overrides_context\": null, \"slug\": \"problem-1\", \"unsafely\": false}}",
        Value::from(code).to_json()
    )
}

fn globals_of(r: &HttpResponse) -> Value {
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
        .as_dict()
        .and_then(|d| d.get("globals_dict"))
        .cloned()
        .unwrap_or_else(|| panic!("no globals_dict: {r:?}"))
}

fn running(b: &TestBroker) -> u32 {
    codejail_client::blocking::status(&b.cfg())
        .map(|s| s.load.running)
        .unwrap_or(u32::MAX)
}

#[test]
fn refuses_non_loopback_and_names_bad_config_keys() {
    let out = Command::new(bin("codejail-http"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--broker-socket",
            "/nonexistent.sock",
        ])
        .output()
        .expect("run codejail-http");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0") && err.contains("allow_non_loopback"),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nmax_body_byte = 5\n").expect("write");
    let out = Command::new(bin("codejail-http"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run codejail-http");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_body_byte") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn without_a_broker_it_is_not_ready_but_alive() {
    let dir = tempfile::tempdir().expect("tmp");
    let front = TestFront::start(&dir.path().join("none.sock"), "");
    let r = front.code_exec(&edx_payload("x = 1", "{}"));
    r.assert_refusal(500, "error", "Codejail service is not correctly configured");
    let h = front.get("/health/");
    assert_eq!(h.status, 503, "{h:?}");
    assert_eq!(h.json().to_json(), r#"{"status": "UNAVAILABLE"}"#);
    let live = front.get("/live");
    assert_eq!(live.status, 200, "{live:?}");
    assert_eq!(live.json().to_json(), r#"{"status": "OK"}"#);
    // Wrong method: DRF's 405 with `detail`, before anything else.
    front
        .get(CODE_EXEC)
        .assert_refusal(405, "detail", "Method \"GET\" not allowed.");
    let m = front.get("/metrics");
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body);
    for needle in [
        "codejail_http_broker_up 0",
        "codejail_http_ready 0",
        "codejail_http_requests_total{outcome=\"NotReady\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} not in:\n{text}");
    }
    front
        .get("/nowhere")
        .assert_refusal(404, "detail", "Not found.");

    // Disabled comes first of all (codejail-service's CODEJAIL_ENABLED).
    let off = TestFront::start(&dir.path().join("none.sock"), "enabled = false");
    off.code_exec(&edx_payload("x = 1", "{}")).assert_refusal(
        500,
        "error",
        "Codejail service not enabled",
    );
    off.post(CODE_EXEC, Some("text/plain"), b"x")
        .assert_refusal(500, "error", "Codejail service not enabled");
}

#[test]
fn edx_platform_shapes_run_and_round_trip_nan() {
    let b = broker!();
    let front = TestFront::start_ready(b.socket(), "");

    // urlencoded, no files, NaN and a big integer in the globals.
    let r = front.code_exec(&edx_payload(
        "x = x + 1\ny = str(f)",
        r#"{"x": 16, "f": NaN, "big": 123456789012345678901234567890}"#,
    ));
    let g = globals_of(&r);
    let g = g.as_dict().expect("dict");
    assert_eq!(g.get("x").and_then(Value::as_i64), Some(17), "{r:?}");
    assert_eq!(g.get("y").and_then(Value::as_str), Some("nan"));
    assert!(g.get("f").and_then(Value::as_f64).is_some_and(f64::is_nan));
    assert_eq!(
        g.get("big").map(Value::to_json).as_deref(),
        Some("123456789012345678901234567890")
    );
    assert!(!r.json().as_dict().expect("dict").contains_key("emsg"));
    assert!(
        String::from_utf8_lossy(&r.body).contains("NaN"),
        "NaN goes back as NaN"
    );

    // multipart with python_lib.zip, as requests sends files=[("python_lib.zip", ...)].
    let zip = zip_of(&[("course_helpers.py", "def answer():\n    return 42\n")]);
    let payload = "{\"code\": \"import course_helpers\\nx = course_helpers.answer()\", \
         \"globals_dict\": {}, \"python_path\": [\"python_lib.zip\"], \
         \"limit_overrides_context\": \"course-v1:edX+Demo+2024\", \"slug\": \"p\", \"unsafely\": false}";
    let r = front.code_exec_multipart(payload, &[("python_lib.zip", &zip)]);
    let g = globals_of(&r);
    assert_eq!(
        g.as_dict().and_then(|d| d.get("x")).and_then(Value::as_i64),
        Some(42),
        "{r:?}"
    );

    // The code fails: 200, the input globals unchanged, upstream's exact message.
    let r = front.code_exec(&edx_payload(
        "x = 2\nraise ValueError('nope')",
        r#"{"x": 1}"#,
    ));
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    let d = v.as_dict().expect("dict");
    assert_eq!(
        d.get("globals_dict").map(Value::to_json).as_deref(),
        Some(r#"{"x": 1}"#)
    );
    let emsg = r.json_str("emsg");
    assert!(
        emsg.starts_with("Couldn't execute jailed code: stdout: b'', stderr: b'Traceback")
            && emsg.ends_with("ValueError: nope\\n' with status code: 1"),
        "{emsg}"
    );

    // Killed by REALTIME: upstream's -9 message. The code sleeps, as codejail-service's
    // own timeout tests do: with CPU and REALTIME both at their default of 1 s, a busy
    // loop ends by whichever clock fires first, which differs between a cold run and a
    // warm or forked one (docs/operating.md, "Warm pool").
    let r = front.code_exec(&edx_payload("import time\ntime.sleep(5)", "{}"));
    assert_eq!(
        r.json_str("emsg"),
        "Couldn't execute jailed code: stdout: b'', stderr: b'' with status code: -9"
    );

    // Output that is not globals.
    let r = front.code_exec(&edx_payload(
        "import sys\nsys.__stdout__.write('garbage')\nsys.__stdout__.flush()",
        "{}",
    ));
    assert_eq!(
        r.json_str("emsg"),
        "Sandboxed code produced corrupted stdout."
    );
}

#[test]
fn every_refusal_in_upstreams_order() {
    let b = broker!();
    let front = TestFront::start_ready(b.socket(), "max_body_bytes = 65536");
    let bad = |r: HttpResponse, msg: &str| r.assert_refusal(400, "error", msg);

    bad(
        front.post_form(&[("other", "1")]),
        "Missing 'payload' parameter in POST body",
    );
    bad(
        front.post(CODE_EXEC, None, b""),
        "Missing 'payload' parameter in POST body",
    );
    bad(
        front.code_exec(""),
        "Unable to parse payload JSON: Expecting value: line 1 column 1 (char 0)",
    );
    let r = front.code_exec("{\"code\": ");
    assert_eq!(r.status, 400);
    assert!(
        r.json_str("error")
            .starts_with("Unable to parse payload JSON: "),
        "{r:?}"
    );
    bad(
        front.code_exec("{\"globals_dict\": {}}"),
        "Payload JSON did not match schema at path $: 'code' is a required property",
    );
    bad(
        front.code_exec("{\"code\": 5, \"globals_dict\": {}}"),
        "Payload JSON did not match schema at path $.code: 5 is not of type 'string'",
    );
    // python_path before files before unsafely.
    let all_wrong =
        "{\"code\": \"\", \"globals_dict\": {}, \"python_path\": [\"/etc\"], \"unsafely\": true}";
    bad(
        front.code_exec_multipart(all_wrong, &[("evil.py", b"x")]),
        "Only allowed entry in 'python_path' is 'python_lib.zip'",
    );
    let files_wrong = "{\"code\": \"\", \"globals_dict\": {}, \"unsafely\": true}";
    bad(
        front.code_exec_multipart(files_wrong, &[("../evil.py", b"x")]),
        "Only allowed name for uploaded file is 'python_lib.zip'",
    );
    bad(
        front.code_exec(files_wrong),
        "Refusing codejail execution with unsafely=true",
    );

    // HTTP-level refusals, with DRF's `detail`.
    front
        .post(CODE_EXEC, Some("text/plain"), b"payload=x")
        .assert_refusal(
            415,
            "detail",
            "Unsupported media type \"text/plain\" in request.",
        );
    front
        .post(CODE_EXEC, Some("application/json"), b"{}")
        .assert_refusal(
            415,
            "detail",
            "Unsupported media type \"application/json\" in request.",
        );
    let r = front.post(
        CODE_EXEC,
        Some("multipart/form-data; boundary=zzz"),
        b"--zzz\r\nContent-Disposition: form-data\r\n\r\nunterminated",
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.json_str("detail").starts_with("Form parse error - "),
        "{r:?}"
    );
    let big = format!("payload={}", "a".repeat(70_000));
    let r = front.post(
        CODE_EXEC,
        Some("application/x-www-form-urlencoded"),
        big.as_bytes(),
    );
    r.assert_refusal(
        413,
        "detail",
        "Request body too large: the limit is 65536 bytes",
    );
    let (ct, body) = multipart("{}", &[("python_lib.zip", &[0u8; 70_000])]);
    let r = front.post(CODE_EXEC, Some(&ct), &body);
    r.assert_refusal(
        413,
        "detail",
        "Request body too large: the limit is 65536 bytes",
    );
    front
        .send(b"PUT /api/v0/code-exec HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        .expect("PUT")
        .assert_refusal(405, "detail", "Method \"PUT\" not allowed.");

    // Garbage on the socket gets an answer or a close, and the front keeps serving.
    let _ = front.send(b"\x00\x01garbage\r\n\r\n");
    let r = front.code_exec(&edx_payload("x = 1", "{}"));
    assert_eq!(globals_of(&r).to_json(), r#"{"x": 1}"#);
}

#[test]
fn busy_broker_is_retried_then_503_and_the_in_flight_cap_too() {
    let b = broker!(BrokerOpts::new()
        .max_running(1)
        .max_queue(0)
        .default_limit("REALTIME", 10));
    let front = TestFront::start_ready(
        b.socket(),
        "queue_wait_secs = 1.0\nretry_after_secs = 2\nmax_in_flight = 2",
    );
    std::thread::scope(|s| {
        let long =
            s.spawn(|| front.code_exec(&edx_payload("import time\ntime.sleep(4)\nx = 1", "{}")));
        assert!(
            wait_until(Duration::from_secs(10), || running(&b) == 1),
            "the long run started"
        );
        let t = Instant::now();
        let r = front.code_exec(&edx_payload("x = 2", "{}"));
        let waited = t.elapsed();
        r.assert_refusal(503, "error", "Codejail service is busy, try again later");
        assert_eq!(r.header("retry-after"), Some("2"));
        assert!(
            waited >= Duration::from_secs(1),
            "retried for queue_wait: {waited:?}"
        );
        assert!(waited < Duration::from_secs(3), "then answered: {waited:?}");
        assert_eq!(
            globals_of(&long.join().expect("thread")).to_json(),
            r#"{"x": 1}"#
        );
    });

    // The front's own cap (2 in flight): a third request is refused at once.
    std::thread::scope(|s| {
        let slow = || front.code_exec(&edx_payload("import time\ntime.sleep(3)", "{}"));
        let first = s.spawn(slow);
        assert!(wait_until(Duration::from_secs(10), || running(&b) == 1));
        // The second waits on the busy broker inside the front (in flight, retrying).
        let second = s.spawn(|| front.code_exec(&edx_payload("x = 3", "{}")));
        assert!(
            wait_until(Duration::from_secs(5), || {
                String::from_utf8_lossy(&front.get("/metrics").body)
                    .contains("codejail_http_in_flight 2")
            }),
            "two requests in flight"
        );
        let t = Instant::now();
        let third = front.code_exec(&edx_payload("x = 4", "{}"));
        third.assert_refusal(503, "error", "Codejail service is busy, try again later");
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "refused at once: {:?}",
            t.elapsed()
        );
        assert_eq!(first.join().expect("thread").status, 200);
        assert_eq!(second.join().expect("thread").status, 503);
    });
    let text = String::from_utf8_lossy(&front.get("/metrics").body).into_owned();
    assert!(
        text.contains("codejail_http_busy_rejections_total{source=\"Front\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("codejail_http_busy_rejections_total{source=\"Broker\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("codejail_http_requests_total{outcome=\"Busy\"} 3"),
        "each busy answer counted once: {text}"
    );
}

#[test]
fn deadline_and_disconnect_end_the_run() {
    let b = broker!(BrokerOpts::new().default_limit("REALTIME", 30));
    // The front caps every deadline at 2 s: that ends the call long before REALTIME.
    let front = TestFront::start_ready(b.socket(), "max_deadline_secs = 2");
    let t = Instant::now();
    let r = front.code_exec(&edx_payload("import time\ntime.sleep(20)", "{}"));
    r.assert_refusal(503, "error", "Codejail service is busy, try again later");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(
        wait_until(Duration::from_secs(5), || running(&b) == 0),
        "the abandoned run was cancelled; broker log:\n{}",
        b.log()
    );

    // A client that goes away mid-run cancels it.
    let front = TestFront::start_ready(b.socket(), "");
    let mut s = std::net::TcpStream::connect(front.addr()).expect("connect");
    let payload = edx_payload("import time\ntime.sleep(25)", "{}");
    let body = codejail_tests::http::urlencode(&[("payload", &payload)]);
    std::io::Write::write_all(
        &mut s,
        &TestFront::request_bytes(
            "POST",
            CODE_EXEC,
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
        ),
    )
    .expect("send");
    assert!(
        wait_until(Duration::from_secs(10), || running(&b) == 1),
        "the run started"
    );
    drop(s);
    assert!(
        wait_until(Duration::from_secs(5), || running(&b) == 0),
        "the disconnect cancelled the run; front log:\n{}",
        front.log()
    );
}

#[test]
fn the_deadline_follows_the_brokers_realtime_and_its_contexts() {
    // REALTIME is configured on the broker alone: the front (no config) reads it.
    let b = broker!(BrokerOpts::new().default_limit("REALTIME", 3).context(
        "course-v1:big",
        "REALTIME",
        6
    ));
    let front = TestFront::start_ready(b.socket(), "");
    let in_context = |code: &str, context: &str| {
        edx_payload(code, "{}").replace(
            "\"limit_overrides_context\": null",
            &format!(
                "\"limit_overrides_context\": {}",
                Value::from(context).to_json()
            ),
        )
    };
    std::thread::scope(|s| {
        // Longer than the 2 s a front that assumed upstream's REALTIME of 1 would wait.
        let within =
            s.spawn(|| front.code_exec(&edx_payload("import time\ntime.sleep(2.5)\nx = 1", "{}")));
        // Longer than the default's deadline (3 s + 1 s), within the context's REALTIME.
        let context = s.spawn(|| {
            front.code_exec(&in_context(
                "import time\ntime.sleep(4.5)\nx = 2",
                "course-v1:big",
            ))
        });
        let killed = s.spawn(|| front.code_exec(&edx_payload("import time\ntime.sleep(30)", "{}")));
        let r = within.join().expect("thread");
        assert_eq!(globals_of(&r).to_json(), r#"{"x": 1}"#, "{}", front.log());
        let r = context.join().expect("thread");
        assert_eq!(globals_of(&r).to_json(), r#"{"x": 2}"#, "{}", front.log());
        let r = killed.join().expect("thread");
        assert_eq!(
            r.status, 200,
            "killed by the broker's REALTIME, not a 503: {r:?}"
        );
        assert_eq!(
            r.json_str("emsg"),
            "Couldn't execute jailed code: stdout: b'', stderr: b'' with status code: -9"
        );
    });
}

#[test]
fn globals_over_the_output_limit_are_an_emsg_naming_it() {
    let b = broker!(BrokerOpts::new().default_limit("OUTPUT", 4096));
    let front = TestFront::start_ready(b.socket(), "");
    let r = front.code_exec(&edx_payload("big = 'x' * 5000", r#"{"a": 1}"#));
    assert_eq!(globals_of(&r).to_json(), r#"{"a": 1}"#, "the input globals");
    let emsg = r.json_str("emsg");
    assert!(
        emsg.starts_with("Couldn't execute jailed code: ")
            && emsg.contains("OUTPUT limit of 4096 bytes"),
        "{emsg}"
    );
    // Just under the limit they come back.
    let r = front.code_exec(&edx_payload("big = 'x' * 4000", "{}"));
    assert_eq!(
        globals_of(&r).to_json(),
        format!("{{\"big\": \"{}\"}}", "x".repeat(4000))
    );
}

#[test]
fn health_follows_the_broker_down_and_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let link = dir.path().join("broker.sock");
    let mut first = broker!();
    symlink(first.socket(), &link).expect("link");
    let front = TestFront::start_ready(&link, "");
    assert_eq!(
        front.get("/health/").json().to_json(),
        r#"{"status": "OK"}"#
    );

    first.terminate_within(Duration::from_secs(10));
    assert!(
        front.wait_health(503, Duration::from_secs(5)),
        "{}",
        front.log()
    );
    front.code_exec(&edx_payload("x = 1", "{}")).assert_refusal(
        500,
        "error",
        "Codejail service is not correctly configured",
    );
    assert_eq!(
        front.get("/live").status,
        200,
        "alive while the broker is down"
    );

    let second = TestBroker::start(BrokerOpts::new());
    std::fs::remove_file(&link).expect("unlink");
    symlink(second.socket(), &link).expect("relink");
    assert!(
        front.wait_health(200, Duration::from_secs(20)),
        "ready again after the checks re-ran:\n{}",
        front.log()
    );
    let checks_passed = front.log().matches("startup safety checks passed").count();
    assert_eq!(checks_passed, 2, "the checks ran again for the new broker");
    assert_eq!(
        globals_of(&front.code_exec(&edx_payload("x = 5", "{}"))).to_json(),
        r#"{"x": 5}"#
    );
}

#[test]
fn sigterm_finishes_the_request_in_flight() {
    let b = broker!(BrokerOpts::new().default_limit("REALTIME", 10));
    let mut front = TestFront::start_ready(b.socket(), "");
    let addr = front.addr();
    let pid = front.pid();
    std::thread::scope(|s| {
        let slow =
            s.spawn(|| front.code_exec(&edx_payload("import time\ntime.sleep(2)\nx = 9", "{}")));
        assert!(wait_until(Duration::from_secs(10), || running(&b) == 1));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let r = slow.join().expect("thread");
        assert_eq!(globals_of(&r).to_json(), r#"{"x": 9}"#);
    });
    let status = front.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", front.log());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer listening"
    );
}

/// A connection cap set in the config that does not fit the front's open-files limit
/// (hard 1024: it cannot raise it) refuses to start, naming both numbers; without the
/// key, the default cap is fitted to the limit, and the log says so.
#[test]
fn a_connection_cap_over_the_open_files_limit_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("none.sock");
    let cfg = dir.path().join("http.toml");
    std::fs::write(&cfg, config_text(&socket, "max_connections = 4096")).expect("write");
    let out = front_command(&cfg, Some((1024, 1024)))
        .output()
        .expect("run codejail-http");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_connections = 4096")
            && err.contains("needs 8256 open files")
            && err.contains("RLIMIT_NOFILE is 1024"),
        "{err}"
    );

    let front = TestFront::start_with_nofile(&socket, "", Some((1024, 1024)));
    let log = front.log();
    assert!(
        log.contains("max_connections lowered") && log.contains("max_connections=480"),
        "{log}"
    );
    assert_eq!(front.get("/live").status, 200);
}

/// A multipart form of many parts: the last `payload` and the last file of each name
/// win, whatever comes between (hundreds of other fields, a hundred files of the one
/// allowed name); one field or one file over Django's default caps (1000 fields, 100
/// files) is a clear 400.
#[test]
fn many_part_forms_keep_the_last_of_each_name_and_are_capped() {
    let b = broker!();
    let front = TestFront::start_ready(b.socket(), "");
    let first = zip_of(&[("lib.py", "VALUE = 'first'\n")]);
    let last = zip_of(&[("lib.py", "VALUE = 'last'\n")]);
    let payload = "{\"code\": \"import lib\\nx = lib.VALUE\", \"globals_dict\": {}, \
         \"python_path\": [\"python_lib.zip\"], \"slug\": \"parts\"}";
    let fillers: Vec<String> = (0..1_000).map(|i| format!("field{i}")).collect();
    let form = |fields: usize, files: usize| {
        let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![("payload", None, b"not JSON")];
        parts.extend(
            fillers[..fields - 2]
                .iter()
                .map(|n| (n.as_str(), None, &b"x"[..])),
        );
        for i in 0..files {
            let zip = if i + 1 == files { &last } else { &first };
            parts.push(("python_lib.zip", Some("python_lib.zip"), zip));
        }
        parts.push(("payload", None, payload.as_bytes()));
        multipart_parts(&parts)
    };

    let (ct, body) = form(1_000, 100);
    let r = front.post(CODE_EXEC, Some(&ct), &body);
    assert_eq!(
        globals_of(&r).to_json(),
        r#"{"x": "last"}"#,
        "the last python_lib.zip and the last payload"
    );

    let (ct, body) = form(1_000, 101);
    front.post(CODE_EXEC, Some(&ct), &body).assert_refusal(
        400,
        "detail",
        "Form parse error - too many files: the limit is 100",
    );
    let (ct, body) = form(1_001, 1);
    front.post(CODE_EXEC, Some(&ct), &body).assert_refusal(
        400,
        "detail",
        "Form parse error - too many fields: the limit is 1000",
    );
    // A file of another name among many is still refused by name.
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = (0..50)
        .map(|_| ("python_lib.zip", Some("python_lib.zip"), &last[..]))
        .collect();
    parts.insert(10, ("evil.py", Some("evil.py"), b"x"));
    parts.push(("payload", None, payload.as_bytes()));
    let (ct, body) = multipart_parts(&parts);
    front.post(CODE_EXEC, Some(&ct), &body).assert_refusal(
        400,
        "error",
        "Only allowed name for uploaded file is 'python_lib.zip'",
    );
}

/// A request that declares a body over `max_body_bytes` (100 TB here) is answered 413
/// with the JSON refusal from its headers alone: no body byte is sent, and the body
/// timeout (long here) is not waited out.
#[test]
fn a_declared_body_over_the_cap_is_refused_before_it_is_sent() {
    let b = broker!();
    let front = TestFront::start_ready(b.socket(), "body_timeout_secs = 600");
    for ct in [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zzz",
    ] {
        let head = format!(
            "POST {CODE_EXEC} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Content-Type: {ct}\r\nContent-Length: 100000000000000\r\n\r\n"
        );
        let r = front
            .send_within(head.as_bytes(), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{ct}: no answer to the headers: {e}"));
        r.assert_refusal(
            413,
            "detail",
            "Request body too large: the limit is 10485760 bytes",
        );
    }
    // A declared length at the cap is read as usual.
    let head = format!(
        "POST {CODE_EXEC} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10485760\r\n\r\n"
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(b"payload=");
    request.resize(request.len() + 10_485_760 - b"payload=".len(), b'a');
    front.send(&request).expect("an answer").assert_refusal(
        400,
        "error",
        "Unable to parse payload JSON: Expecting value: line 1 column 1 (char 0)",
    );
}

/// A header block over 16 KiB is refused by hyper with 431 (its own answer: an empty
/// body, hyper offers no way to give it one), and the front keeps serving.
#[test]
fn an_oversized_header_block_is_refused_with_431() {
    let dir = tempfile::tempdir().expect("tmp");
    let front = TestFront::start(&dir.path().join("none.sock"), "");
    let big = format!(
        "GET /live HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let r = front.send(big.as_bytes()).expect("an answer");
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(front.get("/live").status, 200);
}
