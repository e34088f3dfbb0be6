//! One connection to the broker: the handshake, then requests one at a time. Every
//! wait is bounded by a [`Deadline`]; when one expires, or the connection is left in
//! an unknown state, the connection is closed, which also cancels a run on the broker.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use codejail_protocol::{
    codec::decode_head, decode, encode, framed, Hello, Request, Response, StatusReport, Welcome,
    WelcomeHead, PROTOCOL_VERSION,
};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::{files, ClientConfig, ClientError, JailRequest, JailResult, OutputChunk};

type Conn = Framed<UnixStream, LengthDelimitedCodec>;

/// A point in time after which a wait fails with [`ClientError::Timeout`]`(label)`.
/// `at == None` means no deadline (a duration too large to add to now).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Option<Instant>,
    label: &'static str,
}

impl Deadline {
    /// `timeout` from now.
    pub(crate) fn after(timeout: Duration, label: &'static str) -> Self {
        Deadline {
            at: Instant::now().checked_add(timeout),
            label,
        }
    }

    /// No deadline.
    pub(crate) fn never() -> Self {
        Deadline {
            at: None,
            label: "total",
        }
    }

    /// Whichever comes first (`self` on a tie, so its label wins).
    fn earliest(self, other: Deadline) -> Deadline {
        match (self.at, other.at) {
            (Some(a), Some(b)) if b < a => other,
            (Some(_), _) => self,
            (None, _) => other,
        }
    }

    /// Run `fut` until this deadline.
    async fn run<F: Future>(self, fut: F) -> Result<F::Output, ClientError> {
        match self.at {
            Some(at) => timeout_at(at, fut)
                .await
                .map_err(|_| ClientError::Timeout(self.label)),
            None => Ok(fut.await),
        }
    }
}

/// A connection to the broker, after a successful handshake. Requests run one at a
/// time (`&mut self`); after a run the connection can carry further requests.
///
/// If a call fails with a timeout, an I/O or protocol error, or its future is dropped
/// before it completes, the connection is closed (cancelling the run on the broker)
/// and later calls fail with [`ClientError::Closed`]. A [`ClientError::Broker`] error
/// leaves the connection usable.
#[derive(Debug)]
pub struct Client {
    conn: Option<Conn>,
    welcome: Welcome,
    queue_timeout: Duration,
    total_timeout: Duration,
    max_frame: usize,
    /// Set while a request is on the wire; still set at the next call means the
    /// previous call was abandoned mid-request and the stream is out of step.
    in_flight: bool,
}

impl Client {
    /// Connect to `cfg.socket` within `cfg.connect_timeout`, and do the handshake
    /// within `cfg.start_timeout` (a broker being started answers once it serves).
    pub async fn connect(cfg: &ClientConfig) -> Result<Client, ClientError> {
        Self::connect_until(cfg, Deadline::never()).await
    }

    /// [`Client::connect`], and done before `deadline` (the call's total).
    pub(crate) async fn connect_until(
        cfg: &ClientConfig,
        deadline: Deadline,
    ) -> Result<Client, ClientError> {
        let (conn, welcome) = handshake(cfg, deadline).await?;
        Ok(Client {
            conn: Some(conn),
            welcome,
            queue_timeout: cfg.queue_timeout,
            total_timeout: cfg.total_timeout,
            max_frame: cfg.max_frame,
            in_flight: false,
        })
    }

    /// The broker's `Welcome`: its versions and confinement report at connect time.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Run one program (upstream's `jail_code`) and collect its output. Bounded by the
    /// config's queue timeout (until the run starts) and total timeout (the call).
    pub async fn jail_code(&mut self, req: &JailRequest) -> Result<JailResult, ClientError> {
        let total = Deadline::after(self.total_timeout, "total");
        self.jail_code_until(req, total).await
    }

    /// Like [`Client::jail_code`], but hands each output chunk to `on_output` as it
    /// arrives. The returned result's `stdout` and `stderr` are **empty**: the output
    /// was given to `on_output` and is not kept a second time.
    pub async fn jail_code_streaming(
        &mut self,
        req: &JailRequest,
        on_output: impl FnMut(OutputChunk<'_>),
    ) -> Result<JailResult, ClientError> {
        let total = Deadline::after(self.total_timeout, "total");
        self.run_exec(req, total, on_output).await
    }

    /// Ask for the broker's current status, within the total timeout.
    pub async fn status(&mut self) -> Result<StatusReport, ClientError> {
        let total = Deadline::after(self.total_timeout, "total");
        self.status_until(total).await
    }

    /// [`Client::jail_code`] with an explicit overall deadline.
    pub(crate) async fn jail_code_until(
        &mut self,
        req: &JailRequest,
        total: Deadline,
    ) -> Result<JailResult, ClientError> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut result = self
            .run_exec(req, total, |chunk| match chunk {
                OutputChunk::Stdout(b) => stdout.extend_from_slice(b),
                OutputChunk::Stderr(b) => stderr.extend_from_slice(b),
            })
            .await?;
        result.stdout = stdout;
        result.stderr = stderr;
        Ok(result)
    }

    /// [`Client::status`] with an explicit deadline.
    pub(crate) async fn status_until(
        &mut self,
        total: Deadline,
    ) -> Result<StatusReport, ClientError> {
        let body = encode_request(&Request::Status, self.max_frame)?;
        let conn = self.begin()?;
        let outcome = async {
            send_request(conn, body, total).await?;
            match recv(conn, total).await? {
                Response::Status(report) => Ok(report),
                Response::Error { kind, message } => Err(ClientError::Broker { kind, message }),
                other => Err(unexpected(&other, "a Status request")),
            }
        }
        .await;
        self.end(outcome)
    }

    /// Send one `Exec` and follow its responses to the end.
    async fn run_exec<F: FnMut(OutputChunk<'_>)>(
        &mut self,
        req: &JailRequest,
        total: Deadline,
        mut on_output: F,
    ) -> Result<JailResult, ClientError> {
        if self.conn.is_none() || self.in_flight {
            // Fail before reading any file.
            self.conn = None;
            return Err(ClientError::Closed);
        }
        let entries = total.run(collect_files(&req.files)).await??;
        let body = encode_request(
            &Request::Exec(Box::new(req.to_exec(entries))),
            self.max_frame,
        )?;
        let queue = Deadline::after(self.queue_timeout, "queue").earliest(total);
        let conn = self.begin()?;
        let outcome = async {
            send_request(conn, body, queue).await?;
            let run_id = loop {
                match recv(conn, queue).await? {
                    Response::Queued { .. } => continue,
                    Response::Started { run_id } => break run_id,
                    Response::Error { kind, message } => {
                        return Err(ClientError::Broker { kind, message })
                    }
                    other => return Err(unexpected(&other, "a run before it started")),
                }
            };
            loop {
                match recv(conn, total).await? {
                    Response::Stdout(bytes) => on_output(OutputChunk::Stdout(&bytes)),
                    Response::Stderr(bytes) => on_output(OutputChunk::Stderr(&bytes)),
                    Response::Finished(f) => {
                        return Ok(JailResult {
                            stdout: Vec::new(),
                            stderr: Vec::new(),
                            status: f.status,
                            usage: f.usage,
                            limit_hit: f.limit_hit,
                            truncated: f.truncated,
                            output_limit: f.output_limit,
                            run_id,
                            workdir: f.workdir,
                            pid: f.pid,
                        })
                    }
                    Response::Error { kind, message } => {
                        return Err(ClientError::Broker { kind, message })
                    }
                    other => return Err(unexpected(&other, "a running run")),
                }
            }
        }
        .await;
        self.end(outcome)
    }

    /// The connection, marked busy with a request.
    fn begin(&mut self) -> Result<&mut Conn, ClientError> {
        if self.in_flight {
            self.conn = None;
        }
        let conn = self.conn.as_mut().ok_or(ClientError::Closed)?;
        self.in_flight = true;
        Ok(conn)
    }

    /// Mark the request complete; close the connection unless it ended cleanly (a
    /// result or a broker error, after which the broker expects the next request).
    fn end<T>(&mut self, outcome: Result<T, ClientError>) -> Result<T, ClientError> {
        match &outcome {
            Ok(_) | Err(ClientError::Broker { .. }) => self.in_flight = false,
            Err(_) => self.conn = None,
        }
        outcome
    }
}

/// Connect (within the connect timeout), then send the `Hello` and read and check the
/// `Welcome` (within the start timeout), all before `deadline`.
async fn handshake(cfg: &ClientConfig, deadline: Deadline) -> Result<(Conn, Welcome), ClientError> {
    let connecting = Deadline::after(cfg.connect_timeout, "connect").earliest(deadline);
    let stream = connecting
        .run(UnixStream::connect(&cfg.socket))
        .await?
        .map_err(|source| ClientError::Connect {
            socket: cfg.socket.clone(),
            source,
        })?;
    let mut conn = framed(stream, cfg.max_frame);
    let hello = encode_request(&Hello::current(), cfg.max_frame)?;
    // A broker that refuses may close before reading our Hello; its refusal is still
    // readable, so a failed send is reported only if no Welcome follows.
    let starting = Deadline::after(cfg.start_timeout, "start").earliest(deadline);
    let (answer, sent) = starting
        .run(async {
            let sent = conn.send(hello).await;
            (next_frame(&mut conn).await, sent)
        })
        .await?;
    let body = match (answer, sent) {
        (Ok(Some(body)), _) => body,
        (_, Err(e)) => return Err(ClientError::Io(e)),
        (Ok(None), Ok(())) => return Err(ClientError::Disconnected),
        (Err(e), Ok(())) => return Err(e),
    };
    let head: WelcomeHead = decode_head(&body)
        .map_err(|e| ClientError::Protocol(format!("cannot read the broker's Welcome: {e}")))?;
    if let Some(reason) = head.refused {
        return Err(ClientError::Refused(reason));
    }
    if head.protocol_version != PROTOCOL_VERSION {
        return Err(ClientError::VersionMismatch {
            client: PROTOCOL_VERSION,
            broker: head.protocol_version,
            broker_version: head.broker_version,
        });
    }
    let welcome: Welcome = decode(&body)
        .map_err(|e| ClientError::Protocol(format!("cannot read the broker's Welcome: {e}")))?;
    Ok((conn, welcome))
}

/// Read the caller's files off the async worker thread.
async fn collect_files(
    paths: &[std::path::PathBuf],
) -> Result<Vec<codejail_protocol::FileEntry>, ClientError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let paths = paths.to_vec();
    match tokio::task::spawn_blocking(move || files::collect(&paths)).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ClientError::Io(std::io::Error::other(e))),
    }
}

/// Encode a frame body, refusing one over the cap before it reaches the socket.
fn encode_request<T: serde::Serialize>(value: &T, max_frame: usize) -> Result<Bytes, ClientError> {
    let body = encode(value)
        .map_err(|e| ClientError::Protocol(format!("cannot encode the request: {e}")))?;
    if body.len() > max_frame {
        return Err(ClientError::RequestTooLarge {
            size: body.len(),
            max: max_frame,
        });
    }
    Ok(Bytes::from(body))
}

/// The next frame body, `None` at a clean end of stream.
async fn next_frame(conn: &mut Conn) -> Result<Option<bytes::BytesMut>, ClientError> {
    conn.next().await.transpose().map_err(ClientError::Io)
}

/// The next response, before `deadline`.
/// Send a request. The broker may refuse a big one (busy) after reading only its length
/// prefix, answer, and close: the write then fails (EPIPE, ECONNRESET) with the answer
/// already waiting to be read, so it is read and returned instead of the write error.
async fn send_request(conn: &mut Conn, body: Bytes, deadline: Deadline) -> Result<(), ClientError> {
    let sent = deadline.run(conn.send(body)).await?;
    let Err(write_error) = sent else {
        return Ok(());
    };
    let answer = Deadline::after(REFUSAL_READ_TIMEOUT, "reading the broker's answer")
        .earliest(deadline)
        .run(next_frame(conn))
        .await;
    if let Ok(Ok(Some(frame))) = answer {
        if let Ok(Response::Error { kind, message }) = decode::<Response>(&frame) {
            return Err(ClientError::Broker { kind, message });
        }
    }
    Err(write_error.into())
}

/// How long to look for the broker's answer after a failed write.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(2);

async fn recv(conn: &mut Conn, deadline: Deadline) -> Result<Response, ClientError> {
    let body = deadline
        .run(next_frame(conn))
        .await??
        .ok_or(ClientError::Disconnected)?;
    decode(&body).map_err(|e| ClientError::Protocol(format!("cannot read a broker response: {e}")))
}

/// The error for a response that makes no sense at this point.
fn unexpected(resp: &Response, during: &str) -> ClientError {
    let name = match resp {
        Response::Queued { .. } => "Queued",
        Response::Started { .. } => "Started",
        Response::Stdout(_) => "Stdout",
        Response::Stderr(_) => "Stderr",
        Response::Finished(_) => "Finished",
        Response::Error { .. } => "Error",
        Response::Status(_) => "Status",
        _ => "an unknown response",
    };
    ClientError::Protocol(format!("unexpected {name} from the broker during {during}"))
}

#[cfg(test)]
#[allow(clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    //! A fake broker on a temporary socket speaks the protocol by hand, so the client's
    //! side of every exchange (and its timeouts) is tested without a real broker.

    use super::*;
    use codejail_protocol::{ErrorKind, Exec, Finished, Load, Mode, Usage, HELLO_MAGIC};
    use serde::{de::DeserializeOwned, Serialize};
    use std::collections::BTreeMap;
    use tokio::net::UnixListener;
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

    #[tokio::test]
    async fn a_huge_timeout_means_no_deadline() {
        let d = Deadline::after(Duration::MAX, "total");
        assert!(d.at.is_none());
        assert_eq!(d.run(async { 7 }).await.expect("no timeout"), 7);
        let soon = Deadline::after(Duration::from_millis(1), "queue");
        assert_eq!(soon.earliest(d).label, "queue");
        assert_eq!(d.earliest(soon).label, "queue");
    }

    async fn jail_code_once(cfg: &ClientConfig) -> Result<JailResult, ClientError> {
        crate::jail_code(cfg, &JailRequest::python("print(1)")).await
    }
}
