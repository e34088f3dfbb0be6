//! The `codejail-client` command line against a real broker: the contract of
//! docs/contracts.md §1-§3 (`exec`, `exec --json`, `status`, exit codes).
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use codejail_tests::{bin, broker, describe, fixture, text, TestBroker};
use serde_json::Value;

/// Run `codejail-client --socket SOCKET ARGS...` with `stdin`.
fn client(socket: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin("codejail-client"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("CODEJAIL_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn codejail-client");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait codejail-client")
}

fn run(b: &TestBroker, args: &[&str]) -> Output {
    client(b.socket(), args, b"")
}

/// Stdout must be exactly one JSON object (a trailing newline allowed).
fn one_json_object(out: &Output) -> serde_json::Map<String, Value> {
    let stdout = text(&out.stdout);
    let mut values = serde_json::Deserializer::from_str(&stdout).into_iter::<Value>();
    let first = values
        .next()
        .unwrap_or_else(|| panic!("no JSON on stdout: {}", describe(out)))
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", describe(out)));
    assert!(
        values.next().is_none(),
        "more than one JSON value: {}",
        describe(out)
    );
    match first {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

fn keys(map: &serde_json::Map<String, Value>) -> Vec<&str> {
    let mut k: Vec<&str> = map.keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

/// A client or broker failure: exit 125, nothing on stdout, one line on stderr.
#[track_caller]
fn assert_client_failure(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(125), "{}", describe(out));
    assert_eq!(text(&out.stdout), "", "{}", describe(out));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "exactly one line on stderr: {stderr:?}"
    );
    assert!(!stderr.trim().is_empty());
    stderr
}

#[test]
fn exec_json_prints_exactly_the_contract_object() {
    let b = broker!();
    let out = run(&b, &["exec", "--json", "-c", "print(1)"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let obj = one_json_object(&out);
    assert_eq!(
        keys(&obj),
        [
            "limit_hit",
            "status",
            "stderr",
            "stdout",
            "truncated",
            "usage"
        ],
        "{obj:?}"
    );
    assert_eq!(obj["status"], Value::from(0));
    assert_eq!(obj["stdout"], Value::from("1\n"));
    assert_eq!(obj["stderr"], Value::from(""));
    assert_eq!(obj["limit_hit"], Value::Null);
    assert_eq!(obj["truncated"], Value::from(false));
    let usage = obj["usage"].as_object().expect("usage is an object");
    assert_eq!(
        keys(usage),
        [
            "cpu_sys_ms",
            "cpu_user_ms",
            "max_rss_kib",
            "peak_memory_bytes",
            "wall_ms"
        ],
        "{usage:?}"
    );
    for k in ["cpu_sys_ms", "cpu_user_ms", "max_rss_kib", "wall_ms"] {
        assert!(
            usage[k].is_u64(),
            "usage.{k} must be an unsigned integer: {usage:?}"
        );
    }
    assert!(usage["peak_memory_bytes"].is_u64() || usage["peak_memory_bytes"].is_null());
    assert!(
        usage["max_rss_kib"].as_u64() > Some(0),
        "a Python process uses some memory"
    );
}

#[test]
fn exec_json_reports_limits_and_replaces_invalid_utf8() {
    let b = broker!();
    let out = run(
        &b,
        &[
            "exec",
            "--json",
            "--limit",
            "REALTIME=1",
            "-c",
            "import time; time.sleep(5)",
        ],
    );
    let obj = one_json_object(&out);
    assert_eq!(
        out.status.code(),
        Some(137),
        "--json exits as without it: {}",
        describe(&out)
    );
    assert_eq!(obj["status"], Value::from(-9), "{obj:?}");
    assert_eq!(obj["limit_hit"], Value::from("REALTIME"), "{obj:?}");
    assert_eq!(obj["stdout"], Value::from(""));

    let out = run(
        &b,
        &[
            "exec",
            "--json",
            "-c",
            "import sys; sys.stdout.buffer.write(b'a\\xffb')",
        ],
    );
    let obj = one_json_object(&out);
    assert_eq!(
        obj["stdout"],
        Value::from("a\u{fffd}b"),
        "invalid bytes are replaced"
    );
}

#[test]
fn exec_passes_output_through_and_exits_with_the_status() {
    let b = broker!();
    let out = run(
        &b,
        &[
            "exec",
            "-c",
            "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    let out = run(
        &b,
        &[
            "exec",
            "-c",
            "import sys; print(':'.join(sys.argv[1:]))",
            "--",
            "Hello",
            "world",
            "-x",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(text(&out.stdout), "Hello:world:-x\n");
}

#[test]
fn exec_killed_by_a_limit_exits_128_plus_the_signal() {
    let b = broker!();
    let out = run(
        &b,
        &[
            "exec",
            "--limit",
            "REALTIME=1",
            "-c",
            "import time; time.sleep(5)",
        ],
    );
    assert_eq!(out.status.code(), Some(128 + 9), "{}", describe(&out));
    let out = run(
        &b,
        &[
            "exec",
            "--limit",
            "CPU=1",
            "--limit",
            "REALTIME=10",
            "-c",
            "while True: pass",
        ],
    );
    assert_eq!(out.status.code(), Some(128 + 24), "{}", describe(&out));
}

#[test]
fn exec_stdin_files_and_code_files() {
    let b = broker!();
    let code = "import json, sys; print(sum(json.load(sys.stdin)))";
    let out = client(
        b.socket(),
        &["exec", "--stdin-file", "-", "-c", code],
        b"[1, 2.5, 33]",
    );
    assert_eq!(text(&out.stdout), "36.5\n", "{}", describe(&out));

    let dir = tempfile::tempdir().expect("tempdir");
    let stdin_file = dir.path().join("stdin.json");
    std::fs::write(&stdin_file, "[1, 2]").expect("write");
    let out = run(
        &b,
        &[
            "exec",
            "--stdin-file",
            stdin_file.to_str().unwrap(),
            "-c",
            code,
        ],
    );
    assert_eq!(text(&out.stdout), "3\n", "{}", describe(&out));

    // No --stdin-file: empty stdin, even when the client's own stdin has data.
    let out = client(
        b.socket(),
        &["exec", "-c", "import sys; print(repr(sys.stdin.read()))"],
        b"not for the jail",
    );
    assert_eq!(text(&out.stdout), "''\n", "{}", describe(&out));

    let hello = fixture("hello.txt");
    let out = run(
        &b,
        &[
            "exec",
            "--file",
            hello.to_str().unwrap(),
            "-c",
            "print('Look:', open('hello.txt').read())",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "Look: Hello there.\n\n",
        "{}",
        describe(&out)
    );

    let doit = fixture("doit.py");
    let out = run(
        &b,
        &[
            "exec",
            "--file",
            doit.to_str().unwrap(),
            "--",
            "doit.py",
            "1",
            "2",
            "3",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "This is doit.py!\nMy args are ['doit.py', '1', '2', '3']\n",
        "{}",
        describe(&out)
    );

    let extra = format!("run.py={}", doit.display());
    let out = run(&b, &["exec", "--extra-file", &extra, "--", "run.py"]);
    assert_eq!(
        text(&out.stdout),
        "This is doit.py!\nMy args are ['run.py']\n",
        "{}",
        describe(&out)
    );

    let code_file = dir.path().join("code.py");
    std::fs::write(&code_file, "print('from a code file')\n").expect("write");
    let out = run(&b, &["exec", "--code-file", code_file.to_str().unwrap()]);
    assert_eq!(
        text(&out.stdout),
        "from a code file\n",
        "{}",
        describe(&out)
    );
}

#[test]
fn unreachable_socket_exits_125_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("nobody-listens.sock");
    for args in [
        vec!["exec", "-c", "print(1)"],
        vec!["exec", "--json", "-c", "print(1)"],
        vec!["status"],
        vec!["status", "--json"],
    ] {
        let out = client(&socket, &args, b"");
        let stderr = assert_client_failure(&out);
        assert!(
            stderr.contains(&socket.display().to_string()),
            "{args:?}: the message should name the socket: {stderr:?}"
        );
    }

    // $CODEJAIL_SOCKET is the default socket.
    let out = Command::new(bin("codejail-client"))
        .args(["exec", "-c", "print(1)"])
        .env("CODEJAIL_SOCKET", &socket)
        .stdin(Stdio::null())
        .output()
        .expect("run codejail-client");
    let stderr = assert_client_failure(&out);
    assert!(stderr.contains(&socket.display().to_string()), "{stderr:?}");
}

#[test]
fn broker_errors_exit_125_with_one_line() {
    let b = broker!();
    let out = run(&b, &["exec", "--limit", "BOGUS=1", "-c", "print(1)"]);
    let stderr = assert_client_failure(&out);
    assert!(stderr.contains("BOGUS"), "{stderr:?}");

    let out = run(
        &b,
        &["exec", "--json", "--command", "ruby", "-c", "print(1)"],
    );
    assert_client_failure(&out);

    // $CODEJAIL_SOCKET reaches the broker too.
    let out = Command::new(bin("codejail-client"))
        .args(["exec", "-c", "print('via env')"])
        .env("CODEJAIL_SOCKET", b.socket())
        .stdin(Stdio::null())
        .output()
        .expect("run codejail-client");
    assert_eq!(text(&out.stdout), "via env\n", "{}", describe(&out));
}

#[test]
fn status_json_shape_and_exit_code() {
    let b = broker!();
    let out = run(&b, &["status", "--json"]);
    let obj = one_json_object(&out);
    assert_eq!(
        keys(&obj),
        [
            "broker_version",
            "commands",
            "layers",
            "limits",
            "load",
            "mode",
            "pool",
            "protocol_version"
        ],
        "{obj:?}"
    );
    assert_eq!(obj["pool"], serde_json::json!({}), "no pool configured");
    let commands = obj["commands"].as_object().expect("commands is an object");
    let python = commands["python"]
        .as_object()
        .expect("the dev broker has a python command");
    assert_eq!(keys(python), ["allow_exec", "bin"], "{python:?}");
    let bin = python["bin"].as_str().expect("bin is a string");
    assert!(bin.starts_with('/'), "bin is absolute: {bin}");
    assert!(python["allow_exec"].is_boolean(), "{python:?}");
    assert!(obj["broker_version"].is_string());
    assert_eq!(
        obj["protocol_version"],
        Value::from(codejail_protocol::PROTOCOL_VERSION)
    );
    assert_eq!(obj["mode"], Value::from("dev"));
    let load = obj["load"].as_object().expect("load is an object");
    assert_eq!(
        keys(load),
        [
            "connections_fitted",
            "max_connections",
            "max_queue",
            "max_running",
            "queued",
            "running"
        ],
        "{load:?}"
    );
    for (k, v) in load {
        if k == "connections_fitted" {
            assert!(v.is_boolean(), "{load:?}");
        } else {
            assert!(v.is_u64(), "{load:?}");
        }
    }
    assert!(load["max_connections"].as_u64() > Some(0), "{load:?}");
    let layers = obj["layers"].as_object().expect("layers is an object");
    assert!(!layers.is_empty(), "the report names its layers");
    let mut all_required_hold = true;
    for (name, layer) in layers {
        let layer = layer
            .as_object()
            .unwrap_or_else(|| panic!("layer {name} is not an object"));
        assert_eq!(
            keys(layer),
            ["detail", "holds", "required", "state"],
            "layer {name}"
        );
        let state = layer["state"].as_str().expect("state is a string");
        assert!(
            ["full", "partial", "unavailable"].contains(&state),
            "layer {name}: {state}"
        );
        let required = layer["required"].as_bool().expect("required is a bool");
        let holds = layer["holds"].as_bool().expect("holds is a bool");
        assert!(layer["detail"].is_string());
        assert!(holds || state != "full", "layer {name}: a full layer holds");
        assert!(
            !holds || state != "unavailable",
            "layer {name}: an unavailable layer does not hold"
        );
        if required && !holds {
            all_required_hold = false;
        }
    }
    let expected = if all_required_hold { 0 } else { 1 };
    assert_eq!(
        out.status.code(),
        Some(expected),
        "exit 0 iff every required layer holds (meets its configured minimum): {}",
        describe(&out)
    );

    let plain = run(&b, &["status"]);
    assert_eq!(plain.status.code(), Some(expected), "{}", describe(&plain));
    assert!(!plain.stdout.is_empty(), "status prints a report");
}

/// An interpreter under the host's `/tmp` cannot be shown in a jail (there `/tmp` is
/// the run's private workspace): the broker refuses it at start-up, naming the path,
/// the reason and the fix, instead of failing every run at `execve`. Both from a
/// config (`check-config`: 2, invalid, the key named) and with `--dev --python`.
#[test]
fn an_interpreter_under_tmp_is_refused_at_start_up_with_the_fix() {
    let dir = tempfile::Builder::new()
        .prefix("codejail-venv-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).expect("mkdir");
    let python = bin_dir.join("python");
    std::os::unix::fs::symlink(codejail_tests::python(), &python).expect("symlink");
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[commands.python]\nbin = \"{}\"\n[cgroup]\nmode = \"none\"\nrequired = false\n",
            python.display()
        ),
    )
    .expect("write config");
    let check = |out: &Output, what: &str| {
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("commands.python")
                && stderr.contains(&python.display().to_string())
                && stderr.contains("private workspace")
                && stderr.contains("/var/tmp"),
            "{what}: {}",
            describe(out)
        );
    };
    let out = std::process::Command::new(bin("codejail-broker"))
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    check(&out, "check-config");
    let out = std::process::Command::new(bin("codejail-broker"))
        .args(["--dev", "--socket"])
        .arg(dir.path().join("b.sock"))
        .arg("--python")
        .arg(&python)
        .output()
        .expect("run the broker");
    assert!(!out.status.success(), "{}", describe(&out));
    check(&out, "--dev --python");
    assert!(!dir.path().join("b.sock").exists(), "it must not serve");
}
