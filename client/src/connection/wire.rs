//! The frames of one connection: the handshake, sending a request, and reading the
//! broker's responses, each within a [`Deadline`].

use std::time::Duration;

use bytes::Bytes;
use codejail_protocol::{
    codec::decode_head, decode, encode, framed, Hello, Response, Welcome, WelcomeHead,
    PROTOCOL_VERSION,
};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::deadline::Deadline;
use crate::{ClientConfig, ClientError};

/// A framed connection to the broker's socket.
pub(super) type Conn = Framed<UnixStream, LengthDelimitedCodec>;

/// Connect (within the connect timeout), then send the `Hello` and read and check the
/// `Welcome` (within the start timeout), all before `deadline`.
pub(super) async fn handshake(
    cfg: &ClientConfig,
    deadline: Deadline,
) -> Result<(Conn, Welcome), ClientError> {
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

/// Encode a frame body, refusing one over the cap before it reaches the socket.
pub(super) fn encode_request<T: serde::Serialize>(
    value: &T,
    max_frame: usize,
) -> Result<Bytes, ClientError> {
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
pub(super) async fn next_frame(conn: &mut Conn) -> Result<Option<bytes::BytesMut>, ClientError> {
    conn.next().await.transpose().map_err(ClientError::Io)
}

/// Send a request. The broker may refuse a big one (busy) after reading only its length
/// prefix, answer, and close: the write then fails (EPIPE, ECONNRESET) with the answer
/// already waiting to be read, so it is read and returned instead of the write error.
pub(super) async fn send_request(
    conn: &mut Conn,
    body: Bytes,
    deadline: Deadline,
) -> Result<(), ClientError> {
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

/// The next response, before `deadline`.
pub(super) async fn recv(conn: &mut Conn, deadline: Deadline) -> Result<Response, ClientError> {
    let body = deadline
        .run(next_frame(conn))
        .await??
        .ok_or(ClientError::Disconnected)?;
    decode(&body).map_err(|e| ClientError::Protocol(format!("cannot read a broker response: {e}")))
}

/// The error for a response that makes no sense at this point.
pub(super) fn unexpected(resp: &Response, during: &str) -> ClientError {
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
