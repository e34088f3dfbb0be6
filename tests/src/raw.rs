//! A raw protocol connection, for sending what the client library never would.

use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use codejail_protocol::{
    codec::decode_head, decode, encode, ErrorKind, Exec, Hello, Request, Response, Welcome,
    WelcomeHead,
};
use futures::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::*;

/// What a raw connection saw for one request.
#[derive(Debug, Default)]
pub struct RawOutcome {
    /// `Queued` positions seen.
    pub queued: Vec<u32>,
    /// The run id from `Started`.
    pub run_id: Option<u64>,
    /// Concatenated stdout chunks.
    pub stdout: Vec<u8>,
    /// Concatenated stderr chunks.
    pub stderr: Vec<u8>,
    /// The final `Finished`, if any.
    pub finished: Option<codejail_protocol::Finished>,
    /// The final `Error`, if any.
    pub error: Option<(ErrorKind, String)>,
    /// The connection ended before a final answer.
    pub closed: bool,
}

impl RawOutcome {
    /// The error answer; panics (showing everything seen) when there is none.
    #[track_caller]
    pub fn expect_error(&self, what: &str) -> (ErrorKind, String) {
        self.error
            .clone()
            .unwrap_or_else(|| panic!("{what}: expected an error answer, got {self:?}"))
    }

    /// The `Finished` answer; panics (showing everything seen) when there is none.
    #[track_caller]
    pub fn expect_finished(&self, what: &str) -> codejail_protocol::Finished {
        self.finished
            .clone()
            .unwrap_or_else(|| panic!("{what}: expected the run to finish, got {self:?}"))
    }
}

/// How a connection ended a bad exchange.
#[derive(Debug)]
pub enum Ending {
    /// A `Welcome` that refuses, with its reason.
    Refused(String),
    /// A `Response::Error`.
    Error(ErrorKind, String),
    /// The broker closed the connection (EOF or reset) without a frame.
    Closed,
}

/// A raw protocol connection (length-delimited frames of postcard bodies), for sending
/// what the client library never would.
#[derive(Debug)]
pub struct RawConn {
    framed: Framed<UnixStream, LengthDelimitedCodec>,
}

impl RawConn {
    /// Connect without a handshake; the local frame cap is the default.
    pub async fn connect(socket: &Path) -> RawConn {
        let stream = UnixStream::connect(socket)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        RawConn {
            framed: codejail_protocol::framed(stream, codejail_protocol::DEFAULT_MAX_FRAME),
        }
    }

    /// Connect and complete the handshake; panics if the broker refuses.
    pub async fn handshake(socket: &Path) -> (RawConn, Welcome) {
        let mut conn = RawConn::connect(socket).await;
        conn.send(&Hello::current()).await;
        let body = conn
            .recv_frame()
            .await
            .expect("the broker closed the connection instead of answering Hello")
            .expect("read Welcome");
        let welcome: Welcome = decode(&body).unwrap_or_else(|e| {
            let head: Result<WelcomeHead, _> = decode_head(&body);
            panic!("undecodable Welcome ({e}); head: {head:?}")
        });
        assert_eq!(welcome.refused, None, "the broker refused a valid client");
        (conn, welcome)
    }

    /// The underlying stream, for writing bytes outside any framing.
    pub fn stream_mut(&mut self) -> &mut UnixStream {
        self.framed.get_mut()
    }

    /// Send one frame with this body.
    pub async fn send_frame(&mut self, body: Vec<u8>) {
        self.framed
            .send(Bytes::from(body))
            .await
            .expect("send a frame to the broker");
    }

    /// Send one value as a frame; a failed write is ignored (the broker may have closed
    /// the connection already, which the next read reports).
    pub async fn send<T: Serialize>(&mut self, value: &T) {
        let body = encode(value).expect("encode");
        let _ = self.framed.send(Bytes::from(body)).await;
    }

    /// Send `Request::Exec`.
    pub async fn exec(&mut self, exec: Exec) {
        self.send(&Request::Exec(Box::new(exec))).await;
    }

    /// The next frame: `None` at EOF, `Some(Err)` on a reset or framing error. Panics
    /// after [`RAW_READ_TIMEOUT`].
    pub async fn recv_frame(&mut self) -> Option<io::Result<Vec<u8>>> {
        match tokio::time::timeout(RAW_READ_TIMEOUT, self.framed.next()).await {
            Ok(frame) => frame.map(|r| r.map(|b| b.to_vec())),
            Err(_) => panic!("no frame from the broker within {RAW_READ_TIMEOUT:?}"),
        }
    }

    /// The next response (`None` when the connection ended); panics on an undecodable
    /// frame.
    pub async fn recv(&mut self) -> Option<Response> {
        recv_typed(self).await
    }

    /// Read responses until the request's final answer (or the end of the connection).
    pub async fn collect(&mut self) -> RawOutcome {
        let mut out = RawOutcome::default();
        loop {
            match self.recv().await {
                None => {
                    out.closed = true;
                    return out;
                }
                Some(Response::Queued { position }) => out.queued.push(position),
                Some(Response::Started { run_id }) => out.run_id = Some(run_id),
                Some(Response::Stdout(b)) => out.stdout.extend(b),
                Some(Response::Stderr(b)) => out.stderr.extend(b),
                Some(Response::Finished(f)) => {
                    out.finished = Some(f);
                    return out;
                }
                Some(Response::Error { kind, message }) => {
                    out.error = Some((kind, message));
                    return out;
                }
                Some(other) => panic!("unexpected response {other:?}"),
            }
        }
    }

    /// Send `exec` and collect its answer.
    pub async fn run(&mut self, exec: Exec) -> RawOutcome {
        self.exec(exec).await;
        self.collect().await
    }

    /// Read until the broker refuses, answers an error or closes. Panics if it keeps the
    /// connection open without answering for `within`.
    pub async fn ending(&mut self, within: Duration) -> Ending {
        let fut = async {
            loop {
                match self.framed.next().await {
                    None | Some(Err(_)) => return Ending::Closed,
                    Some(Ok(body)) => {
                        if let Ok(r) = decode::<Response>(&body) {
                            if let Response::Error { kind, message } = r {
                                return Ending::Error(kind, message);
                            }
                            continue;
                        }
                        if let Ok(head) = decode_head::<WelcomeHead>(&body) {
                            if let Some(reason) = head.refused {
                                return Ending::Refused(reason);
                            }
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(within, fut).await {
            Ok(e) => e,
            Err(_) => {
                panic!("the broker neither answered nor closed the connection within {within:?}")
            }
        }
    }
}

async fn recv_typed<T: DeserializeOwned>(conn: &mut RawConn) -> Option<T> {
    match conn.recv_frame().await? {
        Ok(body) => {
            Some(decode(&body).unwrap_or_else(|e| panic!("undecodable frame ({e}): {body:?}")))
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedent_strips_common_indent() {
        assert_eq!(dedent("\n    a\n      b\n\n    c\n"), "a\n  b\n\nc\n");
        assert_eq!(dedent("print(1)"), "print(1)");
    }
}
