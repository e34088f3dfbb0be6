//! The `codejail-client` binary against a fake broker on a temporary socket: exit
//! codes, output passthrough and the `--json` shapes (docs/contracts.md).

#![allow(clippy::expect_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::process::Output;

use bytes::Bytes;
use codejail_protocol::{
    decode, encode, framed, CommandInfo, Exec, Finished, Hello, Layer, LayerState, LimitsReport,
    Load, Mode, Request, Response, StatusReport, Usage, Welcome, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixListener;
use tokio::sync::oneshot;

fn report(required_layer_state: LayerState) -> StatusReport {
    let layer = |state, required| Layer {
        state,
        required,
        holds: state == LayerState::Full,
        detail: "detail text".into(),
    };
    StatusReport {
        broker_version: "0.1.0-fake".into(),
        protocol_version: PROTOCOL_VERSION,
        mode: Mode::Dev,
        layers: BTreeMap::from([
            ("landlock".to_string(), layer(required_layer_state, true)),
            ("seccomp".to_string(), layer(LayerState::Unavailable, false)),
        ]),
        load: Load {
            running: 1,
            queued: 0,
            max_running: 4,
            max_queue: 16,
            ..Load::default()
        },
        pool: Default::default(),
        commands: BTreeMap::from([(
            "python".to_string(),
            CommandInfo {
                bin: "/sandbox/bin/python".into(),
                allow_exec: false,
            },
        )]),
        limits: LimitsReport {
            defaults: BTreeMap::from([("REALTIME".to_string(), 3)]),
            ceilings: BTreeMap::from([("CPU".to_string(), 5)]),
            contexts: BTreeMap::from([(
                "course-v1:big".to_string(),
                BTreeMap::from([("REALTIME".to_string(), 10)]),
            )]),
        },
    }
}

/// Serve one connection: handshake, then answer the first request. For an `Exec`,
/// `answers` are sent after it and the `Exec` is handed back through the channel.
async fn serve_one(
    listener: UnixListener,
    answers: Vec<Response>,
    status: StatusReport,
    got_exec: oneshot::Sender<Exec>,
) {
    let (stream, _) = listener.accept().await.expect("accept");
    let mut conn = framed(stream, DEFAULT_MAX_FRAME);
    let body = conn.next().await.expect("hello").expect("frame");
    let _: Hello = decode(&body).expect("hello decodes");
    let welcome = Welcome {
        protocol_version: PROTOCOL_VERSION,
        broker_version: "0.1.0-fake".into(),
        refused: None,
        status: status.clone(),
    };
    let send = |v: Vec<u8>| Bytes::from(v);
    conn.send(send(encode(&welcome).expect("enc")))
        .await
        .expect("send");
    let body = conn.next().await.expect("request").expect("frame");
    match decode::<Request>(&body).expect("request decodes") {
        Request::Exec(exec) => {
            let _ = got_exec.send(*exec);
            for a in answers {
                conn.send(send(encode(&a).expect("enc")))
                    .await
                    .expect("send");
            }
        }
        Request::Status => {
            conn.send(send(encode(&Response::Status(status)).expect("enc")))
                .await
                .expect("send");
        }
        other => panic!("unexpected {other:?}"),
    }
}

struct Run {
    out: Output,
    exec: Option<Exec>,
}

/// Run the CLI with `args` against a fake broker giving `answers` / `status`.
async fn run_cli(args: &[&str], answers: Vec<Response>, status: StatusReport) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("broker.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(serve_one(listener, answers, status, tx));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_codejail-client"))
        .arg("--socket")
        .arg(&socket)
        .args(args)
        .current_dir(dir.path())
        .output()
        .await
        .expect("run the CLI");
    server.abort();
    Run {
        out,
        exec: rx.await.ok(),
    }
}

fn finished(status: i32, limit_hit: Option<&str>) -> Response {
    Response::Finished(Finished {
        status,
        usage: Usage {
            cpu_user_ms: 5,
            cpu_sys_ms: 6,
            wall_ms: 1001,
            max_rss_kib: 7000,
            peak_memory_bytes: None,
        },
        limit_hit: limit_hit.map(str::to_string),
        truncated: false,
        output_limit: 1 << 24,
        workdir: "/tmp/codejail-fake".into(),
        pid: 99,
    })
}

#[tokio::test]
async fn exec_passes_output_through_and_exits_with_the_status() {
    let answers = vec![
        Response::Started { run_id: 1 },
        Response::Stdout(b"out1\n".to_vec()),
        Response::Stderr(b"err\xff\n".to_vec()),
        Response::Stdout(b"out2\n".to_vec()),
        finished(3, None),
    ];
    let run = run_cli(
        &[
            "exec",
            "--limit",
            "CPU=2",
            "--context",
            "ctx",
            "--slug",
            "sl",
            "-c",
            "print(1)",
            "--",
            "a1",
            "a2",
        ],
        answers,
        report(LayerState::Full),
    )
    .await;
    assert_eq!(run.out.status.code(), Some(3), "{:?}", run.out);
    assert_eq!(run.out.stdout, b"out1\nout2\n");
    assert_eq!(run.out.stderr, b"err\xff\n", "raw bytes pass through");
    let exec = run.exec.expect("the broker got an Exec");
    assert_eq!(exec.command, "python");
    assert_eq!(exec.code.as_deref(), Some(&b"print(1)"[..]));
    assert_eq!(exec.argv, ["a1", "a2"]);
    assert_eq!(exec.limits, BTreeMap::from([("CPU".to_string(), 2)]));
    assert_eq!(exec.limits_context.as_deref(), Some("ctx"));
    assert_eq!(exec.slug.as_deref(), Some("sl"));
    assert!(exec.stdin.is_empty());
}

#[tokio::test]
async fn a_signal_gives_128_plus_n_with_and_without_json() {
    let answers = || {
        vec![
            Response::Started { run_id: 1 },
            finished(-9, Some("REALTIME")),
        ]
    };
    let run = run_cli(&["exec", "-c", "x"], answers(), report(LayerState::Full)).await;
    assert_eq!(run.out.status.code(), Some(137));

    let run = run_cli(
        &["exec", "--json", "-c", "x"],
        answers(),
        report(LayerState::Full),
    )
    .await;
    assert_eq!(run.out.status.code(), Some(137));
    let v: serde_json::Value = serde_json::from_slice(&run.out.stdout).expect("one JSON object");
    assert_eq!(
        v,
        serde_json::json!({
            "status": -9, "stdout": "", "stderr": "", "limit_hit": "REALTIME", "truncated": false,
            "usage": {"cpu_user_ms": 5, "cpu_sys_ms": 6, "wall_ms": 1001, "max_rss_kib": 7000,
                      "peak_memory_bytes": null}
        })
    );
}

#[tokio::test]
async fn json_output_collects_and_decodes_lossily() {
    let answers = vec![
        Response::Started { run_id: 1 },
        Response::Stdout(b"a\xffb".to_vec()),
        Response::Stderr(b"e".to_vec()),
        finished(0, None),
    ];
    let run = run_cli(
        &["exec", "--json", "-c", "x"],
        answers,
        report(LayerState::Full),
    )
    .await;
    assert_eq!(run.out.status.code(), Some(0));
    assert!(run.out.stderr.is_empty());
    let v: serde_json::Value = serde_json::from_slice(&run.out.stdout).expect("JSON");
    assert_eq!(v["stdout"], "a\u{fffd}b");
    assert_eq!(v["stderr"], "e");
}

#[tokio::test]
async fn files_stdin_and_extra_files_are_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prog = dir.path().join("prog.py");
    std::fs::write(&prog, b"print('p')").expect("write");
    let data = dir.path().join("data.bin");
    std::fs::write(&data, b"\x00\x01").expect("write");
    let input = dir.path().join("input.txt");
    std::fs::write(&input, b"stdin bytes").expect("write");
    let answers = vec![Response::Started { run_id: 1 }, finished(0, None)];
    let run = run_cli(
        &[
            "exec",
            "--file",
            prog.to_str().expect("utf8"),
            "--extra-file",
            &format!("blob={}", data.display()),
            "--stdin-file",
            input.to_str().expect("utf8"),
            "--command",
            "python3",
            "--",
            "prog.py",
            "x",
        ],
        answers,
        report(LayerState::Full),
    )
    .await;
    assert_eq!(run.out.status.code(), Some(0), "{:?}", run.out);
    let exec = run.exec.expect("Exec");
    assert_eq!(exec.code, None, "with no code the program is argv[0]");
    assert_eq!(exec.argv, ["prog.py", "x"]);
    assert_eq!(exec.command, "python3");
    assert_eq!(exec.files.len(), 1);
    assert_eq!(exec.files[0].path, "prog.py");
    assert_eq!(
        exec.extra_files,
        [("blob".to_string(), b"\x00\x01".to_vec())]
    );
    assert_eq!(exec.stdin, b"stdin bytes");
}

#[tokio::test]
async fn a_broker_error_is_one_line_and_exit_125() {
    let answers = vec![Response::Error {
        kind: codejail_protocol::ErrorKind::Busy,
        message: "all slots busy\nsecond line".into(),
    }];
    let run = run_cli(&["exec", "-c", "x"], answers, report(LayerState::Full)).await;
    assert_eq!(run.out.status.code(), Some(125));
    assert!(run.out.stdout.is_empty());
    let err = String::from_utf8(run.out.stderr).expect("utf8");
    assert!(err.starts_with("codejail-client: "), "{err}");
    assert!(err.contains("busy"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
}

#[tokio::test]
async fn status_exit_codes_and_json_shape() {
    let run = run_cli(&["status", "--json"], vec![], report(LayerState::Full)).await;
    assert_eq!(run.out.status.code(), Some(0), "{:?}", run.out);
    let v: serde_json::Value = serde_json::from_slice(&run.out.stdout).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!({
            "broker_version": "0.1.0-fake", "protocol_version": PROTOCOL_VERSION, "mode": "dev",
            "layers": {
                "landlock": {"state": "full", "required": true, "holds": true,
                    "detail": "detail text"},
                "seccomp": {"state": "unavailable", "required": false, "holds": false,
                    "detail": "detail text"}
            },
            "load": {"running": 1, "queued": 0, "max_running": 4, "max_queue": 16,
                "max_connections": 0, "connections_fitted": false},
            "commands": {"python": {"bin": "/sandbox/bin/python", "allow_exec": false}},
            "pool": {},
            "limits": {
                "defaults": {"REALTIME": 3},
                "ceilings": {"CPU": 5},
                "contexts": {"course-v1:big": {"REALTIME": 10}}
            }
        })
    );

    let run = run_cli(&["status"], vec![], report(LayerState::Partial)).await;
    assert_eq!(run.out.status.code(), Some(1), "degraded");
    let table = String::from_utf8(run.out.stdout).expect("utf8");
    assert!(
        table.contains("landlock") && table.contains("partial"),
        "{table}"
    );
    assert!(table.contains("DEGRADED"), "{table}");
}

#[test]
fn an_unreachable_broker_is_exit_125() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [&["status"][..], &["status", "--json"], &["exec", "-c", "x"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_codejail-client"))
            .arg("--socket")
            .arg(dir.path().join("absent.sock"))
            .args(args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(out.stdout.is_empty());
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    }
}
