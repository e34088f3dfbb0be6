//! One connection: authenticate the peer, handshake, then serve requests one at a time
//! (an `Exec` through [`Runs::exec`](crate::run::Runs::exec), this connection its
//! [`Client`]). Bad input gets a typed error and the connection (and the broker)
//! lives on, except where the framing itself is broken, which closes this connection
//! only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codejail_protocol::{
    decode, decode_head, encode, ErrorKind, Hello, Request, Response, Welcome, HELLO_MAGIC,
    PROTOCOL_VERSION,
};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::codec::{Inbound, RequestCodec};
use super::connections::Place;
use super::peer::Peer;
use super::Service;
use crate::config::Settings;
use crate::run::{Caller, Client, Warmth};

/// How long a peer has to send its `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Tx = SplitSink<Framed<UnixStream, RequestCodec>, Bytes>;
type Rx = SplitStream<Framed<UnixStream, RequestCodec>>;

/// How long one frame may take to reach a client. A client that stops reading is
/// treated as gone (its run is cancelled) rather than holding a slot, a uid and a
/// cgroup for as long as it likes. The clients read as frames arrive (each has a
/// reader of its own, the Python package's off the GIL), so a frame that waits this
/// long is a stalled client, whose slot is held up to this long after its run ended
/// (its pending frame is waited for before the clean-up).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Send one response; `false` when the client is gone or not reading.
async fn send(tx: &mut Tx, resp: &Response) -> bool {
    match encode(resp) {
        Ok(body) => matches!(
            tokio::time::timeout(SEND_TIMEOUT, tx.send(Bytes::from(body))).await,
            Ok(Ok(()))
        ),
        Err(_) => false,
    }
}

async fn send_error(tx: &mut Tx, kind: ErrorKind, message: String) -> bool {
    send(tx, &Response::Error { kind, message }).await
}

/// Answer a connection the cap has no room for: a `Welcome` that refuses it, with the
/// reason (the peer sends its `Hello` first and reads the answer; it is not read
/// here), within a short time whatever the peer does.
pub async fn refuse(stream: UnixStream, reason: String, status: codejail_protocol::StatusReport) {
    let welcome = Welcome {
        protocol_version: PROTOCOL_VERSION,
        broker_version: env!("CARGO_PKG_VERSION").to_string(),
        refused: Some(reason),
        status,
    };
    let mut framed = Framed::new(stream, LengthDelimitedCodec::new());
    if let Ok(body) = encode(&welcome) {
        let _ = tokio::time::timeout(REFUSE_TIMEOUT, framed.send(Bytes::from(body))).await;
    }
}

/// How long a refused connection may take to hear why.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serve one connection to its end. `place` is its place under the connection cap: the
/// connection is idle (closable to make room) except while it serves a request.
pub async fn serve(
    stream: UnixStream,
    service: Arc<Service>,
    stop: CancellationToken,
    place: Place,
) {
    // SO_PEERCRED and SO_PEERGROUPS, as at connect(2).
    let peer = match Peer::of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    let peer_uid = peer.uid;
    let runs = service.runs.clone();
    let codec = RequestCodec::new(
        service.settings().max_frame,
        runs.budget().clone(),
        move || runs.has_room(),
    );
    let (mut tx, mut rx) = Framed::new(stream, codec).split();

    // Handshake: a Hello, then a Welcome (which may be a refusal). A connection the
    // cap closes to make room meanwhile just ends.
    let hello = tokio::select! {
        () = place.evicted() => return,
        h = tokio::time::timeout(HANDSHAKE_TIMEOUT, rx.next()) => h,
    };
    let refusal = match hello {
        Err(_) => Some("no Hello within 10 s".to_string()),
        Ok(None) => return,
        Ok(Some(Err(e))) => Some(format!("malformed Hello frame: {e}")),
        Ok(Some(Ok(Inbound::Refused { len, .. }))) => {
            Some(format!("a Hello of {len} bytes is no Hello"))
        }
        Ok(Some(Ok(Inbound::Frame(body, _held)))) => check_hello(&body, &peer, service.settings()),
    };
    // Logged before the answer, so the log line exists by the time the peer hears it.
    if let Some(reason) = &refusal {
        tracing::warn!(peer_uid, %reason, "connection refused");
    }
    let refused = refusal.is_some();
    let welcome = Welcome {
        protocol_version: PROTOCOL_VERSION,
        broker_version: env!("CARGO_PKG_VERSION").to_string(),
        refused: refusal,
        status: service.status(),
    };
    let sent = match encode(&welcome) {
        Ok(body) => tx.send(Bytes::from(body)).await.is_ok(),
        Err(_) => false,
    };
    if refused || !sent {
        return;
    }

    let idle_timeout = service.settings().idle_timeout;
    loop {
        place.idle();
        let frame = tokio::select! {
            () = stop.cancelled() => {
                let _ = send_error(&mut tx, ErrorKind::ShuttingDown, "the broker is shutting down".into()).await;
                return;
            }
            // Closed silently: no request is in flight, so the client loses nothing
            // and reconnects for its next one.
            () = place.evicted() => {
                tracing::info!(peer_uid, "idle connection closed to make room under the connection cap");
                return;
            }
            () = tokio::time::sleep(idle_timeout) => {
                tracing::debug!(peer_uid, "idle connection closed after {idle_timeout:?}");
                return;
            }
            f = rx.next() => f,
        };
        place.busy();
        let (body, held) = match frame {
            None => return,
            Some(Ok(Inbound::Frame(body, held))) => (body, held),
            Some(Ok(Inbound::Refused { len, queue_full })) => {
                // Answered before the body is read, then closed: the client reads the
                // answer even though its write of the body fails.
                let message = if queue_full {
                    let load = service.runs.load();
                    format!(
                        "busy: {} runs running and {} queued (the maximum); this request ({len} bytes) was not read; try again later",
                        load.running, load.queued
                    )
                } else {
                    format!(
                        "busy: the broker holds {} of its {} bytes for requests; this request ({len} bytes) was not read; try again later",
                        service.runs.budget().held(),
                        service.runs.budget().limit()
                    )
                };
                tracing::warn!(peer_uid, len, queue_full, "busy before reading a request");
                let _ = send_error(&mut tx, ErrorKind::Busy, message).await;
                return;
            }
            Some(Err(e)) => {
                // The framing is broken (e.g. a frame over the cap): this connection
                // cannot be resynchronised, so answer and close it.
                tracing::warn!(peer_uid, error = %e, "bad frame; closing connection");
                let _ = send_error(
                    &mut tx,
                    ErrorKind::InvalidRequest,
                    format!(
                        "bad frame: {e} (cap {} bytes)",
                        service.settings().max_frame
                    ),
                )
                .await;
                return;
            }
        };
        // The decoded request is a second copy of the frame's bytes: it takes the copy
        // room until the frame goes, right after (nothing is awaited in between).
        let second = held.second_copy().await;
        let decoded = decode::<Request>(&body);
        drop(body);
        drop(second);
        let request = match decoded {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(peer_uid, error = %e, "malformed request");
                if !send_error(
                    &mut tx,
                    ErrorKind::InvalidRequest,
                    format!("malformed request: {e}"),
                )
                .await
                {
                    return;
                }
                continue;
            }
        };
        let alive = match request {
            Request::Status => send(&mut tx, &Response::Status(service.status())).await,
            Request::Exec(exec) => {
                let caller = Caller {
                    peer_uid,
                    held: Some(held),
                    warmth: Warmth::Any,
                };
                let mut client = Connection {
                    tx: &mut tx,
                    rx: &mut rx,
                };
                service.runs.exec(*exec, caller, &mut client).await
            }
            _ => {
                send_error(
                    &mut tx,
                    ErrorKind::InvalidRequest,
                    "unsupported request".into(),
                )
                .await
            }
        };
        if !alive {
            return;
        }
    }
}

/// Why a Hello is refused, if it is.
fn check_hello(body: &[u8], peer: &Peer, settings: &Settings) -> Option<String> {
    let hello: Hello = match decode_head(body) {
        Ok(h) => h,
        Err(e) => return Some(format!("malformed Hello: {e}")),
    };
    if hello.magic != HELLO_MAGIC {
        return Some("not a codejail client (bad magic in Hello)".into());
    }
    if hello.protocol_version != PROTOCOL_VERSION {
        return Some(format!(
            "unsupported protocol version {} (this broker speaks {PROTOCOL_VERSION})",
            hello.protocol_version
        ));
    }
    peer.check_allowed(settings).err()
}

/// This connection as the client of its run.
struct Connection<'a> {
    tx: &'a mut Tx,
    rx: &'a mut Rx,
}

impl Client for Connection<'_> {
    async fn send(&mut self, response: Response) -> bool {
        send(self.tx, &response).await
    }

    async fn left(&mut self) -> bool {
        self.rx.next().await.is_none()
    }
}
