//! One connection to the broker: the handshake, then requests one at a time. Every
//! wait is bounded by a [`Deadline`]; when one expires, or the connection is left in
//! an unknown state, the connection is closed, which also cancels a run on the broker.

use std::time::Duration;

use codejail_protocol::{Request, Response, StatusReport, Welcome};

use crate::deadline::Deadline;
use crate::{files, ClientConfig, ClientError, JailRequest, JailResult, OutputChunk};

#[cfg(test)]
mod tests;
mod wire;

use wire::{encode_request, handshake, recv, send_request, unexpected, Conn};

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
        Err(e) => Err(ClientError::Runtime(std::io::Error::other(e))),
    }
}
