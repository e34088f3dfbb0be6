//! A fake broker on a temporary socket speaks the protocol by hand, so the client's
//! side of every exchange (and its timeouts) is tested without a real broker.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use codejail_protocol::{
    decode, encode, framed, ErrorKind, Exec, Finished, Hello, Load, Mode, Usage, WelcomeHead,
    HELLO_MAGIC, PROTOCOL_VERSION,
};
use futures::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::UnixListener;

use super::wire::Conn;
use super::*;
use tokio::task::JoinHandle;

fn report() -> StatusReport {
    StatusReport {
        broker_version: "0.1.0-fake".into(),
        protocol_version: PROTOCOL_VERSION,
        mode: Mode::Dev,
        layers: BTreeMap::new(),
        load: Load::default(),
        pool: Default::default(),
        commands: BTreeMap::new(),
        limits: Default::default(),
    }
}

fn welcome(protocol_version: u32, refused: Option<&str>) -> Welcome {
    Welcome {
        protocol_version,
        broker_version: "0.1.0-fake".into(),
        refused: refused.map(str::to_string),
        status: report(),
    }
}

async fn read<T: DeserializeOwned>(conn: &mut Conn) -> T {
    let body = conn.next().await.expect("a frame").expect("frame ok");
    decode(&body).expect("decodes")
}

async fn write<T: Serialize>(conn: &mut Conn, value: &T) {
    let body = encode(value).expect("encodes");
    conn.send(Bytes::from(body)).await.expect("send");
}

/// Read the `Hello`, answer with a normal `Welcome`.
async fn accept_hello(conn: &mut Conn) {
    let hello: Hello = read(conn).await;
    assert_eq!(hello.magic, HELLO_MAGIC);
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    write(conn, &welcome(PROTOCOL_VERSION, None)).await;
}

async fn read_exec(conn: &mut Conn) -> Exec {
    match read::<Request>(conn).await {
        Request::Exec(exec) => *exec,
        other => panic!("expected Exec, got {other:?}"),
    }
}

/// A fake broker at a fresh socket: `script` runs on the first accepted connection.
fn fake_broker<F, Fut>(script: F) -> (tempfile::TempDir, ClientConfig, JoinHandle<()>)
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("broker.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let handle = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        script(framed(stream, codejail_protocol::DEFAULT_MAX_FRAME)).await;
    });
    let mut cfg = ClientConfig::new(socket);
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.queue_timeout = Duration::from_secs(5);
    cfg.total_timeout = Duration::from_secs(10);
    (dir, cfg, handle)
}

fn finished(status: i32) -> Response {
    Response::Finished(Finished {
        status,
        usage: Usage {
            cpu_user_ms: 11,
            cpu_sys_ms: 2,
            wall_ms: 30,
            max_rss_kib: 9000,
            peak_memory_bytes: Some(12345),
        },
        limit_hit: None,
        truncated: false,
        output_limit: 1 << 20,
        workdir: "/tmp/codejail-fake".into(),
        pid: 4321,
    })
}

#[tokio::test]
async fn a_run_returns_what_the_broker_sent_and_the_connection_is_reused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let lib = tmp.path().join("lib.py");
    std::fs::write(&lib, b"X = 1\n").expect("write");
    let (_dir, cfg, broker) = fake_broker(|mut conn| async move {
        accept_hello(&mut conn).await;
        let exec = read_exec(&mut conn).await;
        assert_eq!(exec.command, "python");
        assert_eq!(exec.code.as_deref(), Some(&b"print('hello')"[..]));
        assert_eq!(exec.limits.get("CPU"), Some(&3));
        assert_eq!(exec.argv, ["arg1"]);
        assert_eq!(exec.stdin, b"in");
        assert_eq!(exec.slug.as_deref(), Some("test-slug"));
        assert_eq!(exec.files.len(), 1);
        assert_eq!(exec.files[0].path, "lib.py");
        write(&mut conn, &Response::Queued { position: 1 }).await;
        write(&mut conn, &Response::Queued { position: 0 }).await;
        write(&mut conn, &Response::Started { run_id: 42 }).await;
        write(&mut conn, &Response::Stdout(b"hello\n".to_vec())).await;
        write(&mut conn, &Response::Stderr(b"warn".to_vec())).await;
        write(&mut conn, &Response::Stdout(b"more".to_vec())).await;
        write(&mut conn, &finished(3)).await;
        // The same connection carries a further request.
        assert_eq!(read::<Request>(&mut conn).await, Request::Status);
        write(&mut conn, &Response::Status(report())).await;
    });

    let mut client = Client::connect(&cfg).await.expect("connect");
    assert_eq!(client.welcome().broker_version, "0.1.0-fake");
    let req = JailRequest {
        argv: vec!["arg1".into()],
        stdin: b"in".to_vec(),
        slug: Some("test-slug".into()),
        files: vec![lib],
        ..JailRequest::python("print('hello')").limit("CPU", 3)
    };
    let result = client.jail_code(&req).await.expect("run");
    assert_eq!(result.stdout, b"hello\nmore");
    assert_eq!(result.stderr, b"warn");
    assert_eq!(result.status, 3);
    assert_eq!(result.run_id, 42);
    assert_eq!(result.workdir, "/tmp/codejail-fake");
    assert_eq!(result.pid, 4321);
    assert_eq!(result.usage.cpu_user_ms, 11);
    assert_eq!(result.usage.peak_memory_bytes, Some(12345));
    assert_eq!(result.limit_hit, None);
    assert!(!result.truncated);
    let status = client.status().await.expect("status");
    assert_eq!(status, report());
    broker.await.expect("fake broker");
}

#[tokio::test]
async fn streaming_hands_over_chunks_in_order() {
    let (_dir, cfg, broker) = fake_broker(|mut conn| async move {
        accept_hello(&mut conn).await;
        read_exec(&mut conn).await;
        write(&mut conn, &Response::Started { run_id: 1 }).await;
        write(&mut conn, &Response::Stdout(b"a".to_vec())).await;
        write(&mut conn, &Response::Stderr(b"b".to_vec())).await;
        write(&mut conn, &Response::Stdout(b"c".to_vec())).await;
        write(&mut conn, &finished(-9)).await;
    });
    let mut client = Client::connect(&cfg).await.expect("connect");
    let mut seen = Vec::new();
    let result = client
        .jail_code_streaming(&JailRequest::python("x"), |chunk| match chunk {
            OutputChunk::Stdout(b) => seen.push(("out", b.to_vec())),
            OutputChunk::Stderr(b) => seen.push(("err", b.to_vec())),
        })
        .await
        .expect("run");
    assert_eq!(
        seen,
        [
            ("out", b"a".to_vec()),
            ("err", b"b".to_vec()),
            ("out", b"c".to_vec())
        ]
    );
    assert_eq!(result.status, -9);
    assert!(result.stdout.is_empty() && result.stderr.is_empty());
    broker.await.expect("fake broker");
}

#[tokio::test]
async fn a_refusal_carries_the_reason() {
    let (_dir, cfg, broker) = fake_broker(|mut conn| async move {
        let _: Hello = read(&mut conn).await;
        write(
            &mut conn,
            &welcome(PROTOCOL_VERSION, Some("uid 1234 is not allowed")),
        )
        .await;
    });
    let err = jail_code_once(&cfg).await.expect_err("refused");
    match err {
        ClientError::Refused(reason) => assert_eq!(reason, "uid 1234 is not allowed"),
        other => panic!("expected Refused, got {other:?}"),
    }
    broker.await.expect("fake broker");
}

#[tokio::test]
async fn a_refusal_sent_before_reading_hello_is_still_read() {
    let (_dir, cfg, broker) = fake_broker(|mut conn| async move {
        write(
            &mut conn,
            &welcome(PROTOCOL_VERSION, Some("too many connections")),
        )
        .await;
    });
    let err = jail_code_once(&cfg).await.expect_err("refused");
    assert!(
        matches!(err, ClientError::Refused(ref r) if r == "too many connections"),
        "{err:?}"
    );
    broker.await.expect("fake broker");
}

#[tokio::test]
async fn another_protocol_version_is_named() {
    let (_dir, cfg, broker) = fake_broker(|mut conn| async move {
        let _: Hello = read(&mut conn).await;
        // A future broker: the frozen head, then fields this client cannot know.
        let mut body = encode(&WelcomeHead {
            protocol_version: 99,
            broker_version: "9.0.0".into(),
            refused: None,
        })
        .expect("encode");
        body.extend_from_slice(b"\x07unknown future fields");
        conn.send(Bytes::from(body)).await.expect("send");
    });
    let err = jail_code_once(&cfg).await.expect_err("mismatch");
    assert!(
        matches!(
            err,
            ClientError::VersionMismatch {
                client: PROTOCOL_VERSION,
                broker: 99,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("99") && msg.contains(&PROTOCOL_VERSION.to_string()),
        "{msg}"
    );
    broker.await.expect("fake broker");
}

#[tokio::test]
async fn busy_is_a_typed_broker_error_and_the_connection_stays_usable() {
    let (_dir, cfg, broker) = fake_broker(|mut conn| async move {
        accept_hello(&mut conn).await;
        read_exec(&mut conn).await;
        let busy = Response::Error {
            kind: ErrorKind::Busy,
            message: "all 4 slots and the queue of 16 are full".into(),
        };
        write(&mut conn, &busy).await;
        assert_eq!(read::<Request>(&mut conn).await, Request::Status);
        write(&mut conn, &Response::Status(report())).await;
    });
    let mut client = Client::connect(&cfg).await.expect("connect");
    let err = client
        .jail_code(&JailRequest::python("x"))
        .await
        .expect_err("busy");
    assert!(
        matches!(
            err,
            ClientError::Broker {
                kind: ErrorKind::Busy,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), Some(ErrorKind::Busy));
    assert!(err.to_string().contains("queue of 16"), "{err}");
    client.status().await.expect("still usable");
    broker.await.expect("fake broker");
}

#[tokio::test]
async fn a_silent_broker_times_out_at_start() {
    let (_dir, mut cfg, broker) = fake_broker(|mut conn| async move {
        let _: Hello = read(&mut conn).await;
        // Never answer; hold the connection open until the client goes away.
        assert!(conn.next().await.is_none());
    });
    cfg.start_timeout = Duration::from_millis(200);
    let err = Client::connect(&cfg).await.expect_err("timeout");
    assert!(matches!(err, ClientError::Timeout("start")), "{err:?}");
    broker.await.expect("fake broker");
}

#[tokio::test]
async fn a_broker_that_never_starts_the_run_times_out_in_the_queue() {
    let (_dir, mut cfg, broker) = fake_broker(|mut conn| async move {
        accept_hello(&mut conn).await;
        read_exec(&mut conn).await;
        write(&mut conn, &Response::Queued { position: 3 }).await;
        // Closing the connection is how the client cancels: we must see EOF.
        assert!(conn.next().await.is_none());
    });
    cfg.queue_timeout = Duration::from_millis(200);
    let mut client = Client::connect(&cfg).await.expect("connect");
    let err = client
        .jail_code(&JailRequest::python("x"))
        .await
        .expect_err("timeout");
    assert!(matches!(err, ClientError::Timeout("queue")), "{err:?}");
    // The connection was closed (the fake broker saw EOF) and is not reused.
    broker.await.expect("fake broker");
    let err = client.status().await.expect_err("closed");
    assert!(matches!(err, ClientError::Closed), "{err:?}");
}

#[tokio::test]
async fn a_run_that_never_finishes_times_out_in_total() {
    let (_dir, mut cfg, broker) = fake_broker(|mut conn| async move {
        accept_hello(&mut conn).await;
        read_exec(&mut conn).await;
        write(&mut conn, &Response::Started { run_id: 5 }).await;
        write(&mut conn, &Response::Stdout(b"partial".to_vec())).await;
        assert!(
            conn.next().await.is_none(),
            "the client must close to cancel"
        );
    });
    cfg.total_timeout = Duration::from_millis(300);
    let err = jail_code_once(&cfg).await.expect_err("timeout");
    assert!(matches!(err, ClientError::Timeout("total")), "{err:?}");
    broker.await.expect("fake broker");
}

#[tokio::test]
async fn an_abandoned_call_closes_the_connection() {
    let (_dir, cfg, broker) = fake_broker(|mut conn| async move {
        accept_hello(&mut conn).await;
        read_exec(&mut conn).await;
        write(&mut conn, &Response::Started { run_id: 5 }).await;
        assert!(
            conn.next().await.is_none(),
            "the client must close to cancel"
        );
    });
    let mut client = Client::connect(&cfg).await.expect("connect");
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        client.jail_code(&JailRequest::python("x")),
    )
    .await;
    assert!(abandoned.is_err(), "the run never finishes");
    let err = client.status().await.expect_err("out of step");
    assert!(matches!(err, ClientError::Closed), "{err:?}");
    broker.await.expect("fake broker");
}

#[tokio::test]
async fn a_broker_that_hangs_up_mid_run_is_reported() {
    let (_dir, cfg, broker) = fake_broker(|mut conn| async move {
        accept_hello(&mut conn).await;
        read_exec(&mut conn).await;
        write(&mut conn, &Response::Started { run_id: 5 }).await;
    });
    let err = jail_code_once(&cfg).await.expect_err("hang-up");
    assert!(matches!(err, ClientError::Disconnected), "{err:?}");
    broker.await.expect("fake broker");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_naming_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ClientConfig::new(dir.path().join("absent.sock"));
    let err = jail_code_once(&cfg).await.expect_err("no broker");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.sock"), "{err}");
}

#[tokio::test]
async fn an_oversized_request_is_refused_before_sending() {
    let (_dir, mut cfg, broker) = fake_broker(|mut conn| async move {
        accept_hello(&mut conn).await;
        // The request never arrives; the connection stays usable.
        assert_eq!(read::<Request>(&mut conn).await, Request::Status);
        write(&mut conn, &Response::Status(report())).await;
    });
    cfg.max_frame = 4096;
    let mut client = Client::connect(&cfg).await.expect("connect");
    let req = JailRequest {
        stdin: vec![0; 10_000],
        ..JailRequest::python("x")
    };
    let err = client.jail_code(&req).await.expect_err("too large");
    assert!(
        matches!(err, ClientError::RequestTooLarge { max: 4096, .. }),
        "{err:?}"
    );
    client.status().await.expect("still usable");
    broker.await.expect("fake broker");
}

async fn jail_code_once(cfg: &ClientConfig) -> Result<JailResult, ClientError> {
    crate::jail_code(cfg, &JailRequest::python("print(1)")).await
}
