//! One connection: authenticate the peer, handshake, then serve requests one at a time.
//! Bad input gets a typed error and the connection (and the broker) lives on, except
//! where the framing itself is broken, which closes this connection only.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codejail_protocol::validate::{self, NameError};
use codejail_protocol::{
    decode, decode_head, encode, EntryKind, ErrorKind, Exec, Hello, LimitName, Limits, Request,
    Response, Welcome, HELLO_MAGIC, PROTOCOL_VERSION,
};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::admission::Ticket;
use super::budget::{Inbound, RequestCodec, Reservation};
use super::connections::Slot;
use super::Shared;
use crate::config::{LimitError, Settings};
use crate::run::{Jail, Output, RunSpec};
use codejail_plan::{Plan, RunLimits};

/// How long a peer has to send its `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Output chunks buffered between a run and a slow client.
const OUTPUT_BUFFER: usize = 16;

type Tx = SplitSink<Framed<UnixStream, RequestCodec>, Bytes>;
type Rx = SplitStream<Framed<UnixStream, RequestCodec>>;

/// An error to send to the peer.
pub(crate) struct Refuse(pub(crate) ErrorKind, pub(crate) String);

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

/// Serve one connection to its end. `slot` is its place under the connection cap: the
/// connection is idle (closable to make room) except while it serves a request.
pub async fn serve(stream: UnixStream, shared: Arc<Shared>, stop: CancellationToken, slot: Slot) {
    // SO_PEERCRED and SO_PEERGROUPS, as at connect(2).
    let peer = match super::peer::Peer::of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    let peer_uid = peer.uid;
    let room = shared.clone();
    let codec = RequestCodec::new(
        shared.settings.max_frame,
        shared.budget.clone(),
        move || room.admission.has_room(),
    );
    let (mut tx, mut rx) = Framed::new(stream, codec).split();

    // Handshake: a Hello, then a Welcome (which may be a refusal). A connection the
    // cap closes to make room meanwhile just ends.
    let hello = tokio::select! {
        () = slot.evicted() => return,
        h = tokio::time::timeout(HANDSHAKE_TIMEOUT, rx.next()) => h,
    };
    let refusal = match hello {
        Err(_) => Some("no Hello within 10 s".to_string()),
        Ok(None) => return,
        Ok(Some(Err(e))) => Some(format!("malformed Hello frame: {e}")),
        Ok(Some(Ok(Inbound::Refused { len, .. }))) => {
            Some(format!("a Hello of {len} bytes is no Hello"))
        }
        Ok(Some(Ok(Inbound::Frame(body, _held)))) => check_hello(&body, &peer, &shared.settings),
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
        status: shared.status(),
    };
    let sent = match encode(&welcome) {
        Ok(body) => tx.send(Bytes::from(body)).await.is_ok(),
        Err(_) => false,
    };
    if refused || !sent {
        return;
    }

    let idle_timeout = shared.settings.idle_timeout;
    loop {
        slot.idle();
        let frame = tokio::select! {
            () = stop.cancelled() => {
                let _ = send_error(&mut tx, ErrorKind::ShuttingDown, "the broker is shutting down".into()).await;
                return;
            }
            // Closed silently: no request is in flight, so the client loses nothing
            // and reconnects for its next one.
            () = slot.evicted() => {
                tracing::info!(peer_uid, "idle connection closed to make room under the connection cap");
                return;
            }
            () = tokio::time::sleep(idle_timeout) => {
                tracing::debug!(peer_uid, "idle connection closed after {idle_timeout:?}");
                return;
            }
            f = rx.next() => f,
        };
        slot.busy();
        let (body, held) = match frame {
            None => return,
            Some(Ok(Inbound::Frame(body, held))) => (body, held),
            Some(Ok(Inbound::Refused { len, queue_full })) => {
                // Answered before the body is read, then closed: the client reads the
                // answer even though its write of the body fails.
                let message = if queue_full {
                    let load = shared.admission.load();
                    format!(
                        "busy: {} runs running and {} queued (the maximum); this request ({len} bytes) was not read; try again later",
                        load.running, load.queued
                    )
                } else {
                    format!(
                        "busy: the broker holds {} of its {} bytes for requests; this request ({len} bytes) was not read; try again later",
                        shared.budget.held(),
                        shared.budget.limit()
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
                    format!("bad frame: {e} (cap {} bytes)", shared.settings.max_frame),
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
            Request::Status => send(&mut tx, &Response::Status(shared.status())).await,
            Request::Exec(exec) => {
                handle_exec(&mut tx, &mut rx, &shared, *exec, peer_uid, held).await
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
fn check_hello(body: &[u8], peer: &super::peer::Peer, settings: &Settings) -> Option<String> {
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

/// The checks of an Exec against the settings, made before anything is allocated for
/// it: its names, its command, its limits, something to run. Returns the command and
/// the effective limits.
fn check_exec<'s>(
    settings: &'s Settings,
    exec: &Exec,
) -> Result<(&'s crate::config::CommandSpec, Limits), Refuse> {
    validate::check_exec_names(exec).map_err(|e| match e {
        NameError::BadCommand(_) => Refuse(ErrorKind::UnknownCommand, e.to_string()),
        _ => Refuse(ErrorKind::BadFileName, e.to_string()),
    })?;
    let command = settings.commands.get(&exec.command).ok_or_else(|| {
        let known: Vec<_> = settings.commands.keys().map(String::as_str).collect();
        Refuse(
            ErrorKind::UnknownCommand,
            format!(
                "command {:?} is not configured (configured: {})",
                exec.command,
                known.join(", ")
            ),
        )
    })?;
    let limits = settings
        .limits
        .resolve(exec.limits_context.as_deref(), &exec.limits)
        .map_err(|e| match e {
            LimitError::Unknown(_) => Refuse(ErrorKind::UnknownLimit, e.to_string()),
            LimitError::AboveCeiling { .. } => Refuse(ErrorKind::LimitAboveCeiling, e.to_string()),
            LimitError::OutOfRange(_) => Refuse(ErrorKind::InvalidRequest, e.to_string()),
        })?;
    if exec.code.is_none() && exec.argv.is_empty() {
        return Err(Refuse(
            ErrorKind::InvalidRequest,
            "no code and no argv: nothing to run".into(),
        ));
    }
    // execve takes C strings: the stage would refuse the plan, after the run had
    // taken a slot and a uid (found by fuzz/request).
    if let Some(arg) = exec.argv.iter().find(|a| a.contains('\0')) {
        return Err(Refuse(
            ErrorKind::InvalidRequest,
            format!("argument {arg:?} contains a NUL byte"),
        ));
    }
    Ok((command, limits))
}

/// [`prepare`]'s checks of a decoded Exec, for the fuzz targets (`fuzz/`): the
/// effective limits, or the error kind and message the peer would get.
#[doc(hidden)]
pub fn fuzz_check_exec(settings: &Settings, exec: &Exec) -> Result<Limits, (ErrorKind, String)> {
    check_exec(settings, exec)
        .map(|(_, limits)| limits)
        .map_err(|Refuse(kind, message)| (kind, message))
}

/// Validate an Exec into a run spec, or say what is wrong.
pub(crate) fn prepare(shared: &Shared, exec: Exec) -> Result<(RunSpec, Limits), Refuse> {
    let settings = &shared.settings;
    let (command, limits) = check_exec(settings, &exec)?;
    let run_id = shared.next_run_id.fetch_add(1, Ordering::SeqCst);
    let mut argv = crate::run::planning::command_argv(command, exec.code.is_some());
    argv.extend(exec.argv);
    let file_bytes: u64 = exec
        .files
        .iter()
        .map(|f| match &f.kind {
            EntryKind::File { contents, .. } => crate::run::planning::page_round(contents.len()),
            _ => 4096,
        })
        .chain(
            exec.extra_files
                .iter()
                .map(|(_, c)| crate::run::planning::page_round(c.len())),
        )
        .chain(
            exec.code
                .iter()
                .map(|c| crate::run::planning::page_round(c.len())),
        )
        .sum();
    let entries = (exec.files.len() + exec.extra_files.len() + 4) as u64;
    let tmp = limits.effective(LimitName::Tmp);
    let workdir_name = crate::run::planning::workdir_name().map_err(|e| {
        Refuse(
            ErrorKind::Internal,
            format!("no randomness for the run's directory name: {e}"),
        )
    })?;
    let plan = crate::run::planning::command_plan(
        settings,
        command,
        argv,
        RunLimits {
            cpu_secs: limits.effective(LimitName::Cpu),
            vmem_bytes: limits.effective(LimitName::Vmem),
            fsize_bytes: limits.get(LimitName::Fsize),
            nproc: limits.effective(LimitName::Nproc),
            nofile: limits.get(LimitName::Nofile),
            // The tmpfs holds the copied files too: the TMP limit is what the program
            // may add on top of them.
            tmp_bytes: tmp.map(|t| t.saturating_add(file_bytes)),
            tmp_inodes: tmp.map(|t| (t / 4096).max(1024).saturating_add(entries)),
        },
        workdir_name,
    );
    let plan = Plan {
        code: exec.code,
        files: exec.files,
        extra_files: exec.extra_files,
        ..plan
    };
    let spec = RunSpec {
        run_id,
        stage: settings.jail_stage.clone(),
        workdir: crate::run::planning::program_workdir(&plan.workdir_name),
        plan,
        stdin: exec.stdin,
        limits,
        identity: settings.identity,
        cgroups: shared.cgroups.clone(),
        held: None,
        stdin_held: None,
    };
    Ok((spec, limits))
}

/// Which jails a run may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Warmth {
    /// A warm one when the pool has one that fits, else a cold one.
    Any,
    /// A cold one.
    Cold,
    /// A warm one, or the refusal (the self-test of the pool).
    Warm,
}

/// The jail for a run that has its admission slot: a warm one from the command's pool
/// when it can serve the run, else a cold one with its own outside uid/gid from the
/// uid pool (production; without a uid pool the spec keeps the shared identity).
pub(crate) fn choose_jail(
    shared: &Shared,
    spec: &mut RunSpec,
    command: &str,
    warmth: Warmth,
) -> Result<Jail, Refuse> {
    if warmth != Warmth::Cold {
        if let Some(jail) = shared
            .pools
            .take(command, &spec.limits, spec.plan.code.is_some())
        {
            return Ok(Jail::Warm(Box::new(jail)));
        }
        if warmth == Warmth::Warm {
            return Err(Refuse(
                ErrorKind::JailFailed,
                format!("no warm jail of {command} is ready"),
            ));
        }
    }
    let Some(pool) = &shared.uid_pool else {
        return Ok(Jail::Cold(None));
    };
    // max_running + pool sizes <= count (checked at start-up), so a slot implies a free
    // id unless ids were quarantined after runs whose processes could not be removed.
    let lease = pool.lease().ok_or_else(|| {
        Refuse(
            ErrorKind::JailFailed,
            format!(
                "no free run uid in {} (ids are quarantined after runs whose processes could not be removed; see the broker log)",
                pool.range()
            ),
        )
    })?;
    spec.identity = lease.identity();
    Ok(Jail::Cold(Some(lease)))
}

/// Serve one Exec. Returns whether the connection is still usable.
async fn handle_exec(
    tx: &mut Tx,
    rx: &mut Rx,
    shared: &Shared,
    exec: Exec,
    peer_uid: u32,
    held: Reservation,
) -> bool {
    let slug = exec.slug.clone().unwrap_or_default();
    let command = exec.command.clone();
    let (mut spec, limits) = match prepare(shared, exec) {
        Ok(mut s) => {
            // The request's bytes stay counted until the plan has reached the stage,
            // stdin's until the run ends (it is held until then).
            let mut held = held;
            s.0.stdin_held = Some(held.split_off(s.0.stdin.len() as u64));
            s.0.held = Some(held);
            s
        }
        Err(Refuse(kind, message)) => {
            tracing::warn!(peer_uid, slug, %kind, %message, "request refused");
            return send_error(tx, kind, message).await;
        }
    };
    let run_id = spec.run_id;

    // Admission: a slot now, a place in the queue, or Busy.
    let mut slot = match shared.admission.try_admit() {
        Ticket::Now(slot) => slot,
        Ticket::Busy => {
            tracing::warn!(
                run_id,
                peer_uid,
                slug,
                "busy: every slot and the queue are full"
            );
            let load = shared.admission.load();
            return send_error(
                tx,
                ErrorKind::Busy,
                format!(
                    "busy: {} runs running and {} queued (the maximum); try again later",
                    load.running, load.queued
                ),
            )
            .await;
        }
        Ticket::Queued(position) => {
            if !send(tx, &Response::Queued { position }).await {
                return false;
            }
            tokio::select! {
                slot = shared.admission.wait() => match slot {
                    Some(s) => s,
                    None => return send_error(tx, ErrorKind::ShuttingDown, "the broker is shutting down".into()).await,
                },
                // Anything from the client while queued: it left (or broke the
                // one-request-at-a-time rule). Either way, drop its place.
                _ = rx.next() => {
                    tracing::info!(run_id, peer_uid, slug, "client left while queued");
                    return false;
                }
            }
        }
    };

    let jail = match choose_jail(shared, &mut spec, &command, Warmth::Any) {
        Ok(j) => j,
        Err(Refuse(kind, message)) => {
            tracing::error!(run_id, peer_uid, slug, %message, "no run uid");
            return send_error(tx, kind, message).await;
        }
    };
    // From here on the jail's guard (a warm jail's already holds its uid and cgroup)
    // gives everything back on every path, by Cleanup::finish or by its drop.
    if !send(tx, &Response::Started { run_id }).await {
        if let Jail::Warm(warm) = jail {
            warm.retire().await;
        }
        return false;
    }
    let run_uid = jail.outer_uid(&spec);
    let warm = jail.is_warm();
    let cancel = shared.kill_runs.child_token();
    let (out_tx, mut out_rx) = mpsc::channel::<Output>(OUTPUT_BUFFER);
    // The run goes on in its own task, so that its REALTIME timer and output pumps
    // never wait on this client: a slow or stalled reader delays only its own frames
    // (and is dropped after SEND_TIMEOUT), never the enforcement of its limits.
    let mut run = tokio::spawn(jail.run(spec, out_tx, cancel.clone().cancelled_owned()));
    let mut client_alive = true;
    let joined = loop {
        tokio::select! {
            r = &mut run => break r,
            Some(chunk) = out_rx.recv() => {
                if client_alive && !send(tx, &to_response(chunk)).await {
                    client_alive = false;
                    cancel.cancel();
                }
            }
            frame = rx.next(), if client_alive => {
                // The client closed (None/Err) or sent a frame mid-run, which the
                // protocol forbids: cancel the run either way.
                tracing::info!(run_id, peer_uid, slug, closed = frame.is_none(), "client left mid-run; cancelling");
                client_alive = false;
                cancel.cancel();
            }
        }
    };
    while let Ok(chunk) = out_rx.try_recv() {
        if client_alive && !send(tx, &to_response(chunk)).await {
            client_alive = false;
        }
    }
    // The program is gone; what is left (the answer, then Cleanup::finish) does not
    // wait on it, so a request arriving now may wait for this slot.
    slot.finishing();
    let (result, cleanup) = match joined {
        Ok(done) => done,
        Err(e) => {
            // The run task panicked: a bug, answered as an internal error.
            tracing::error!(run_id, slug, peer_uid, error = %e, "run task failed");
            return client_alive
                && send_error(
                    tx,
                    ErrorKind::Internal,
                    "the run failed inside the broker".into(),
                )
                .await;
        }
    };
    let alive = match result {
        Ok(result) => {
            let fin = result.finished;
            let outcome = if cancel.is_cancelled() && fin.limit_hit.is_none() {
                "cancelled"
            } else {
                "finished"
            };
            tracing::info!(
                run_id,
                slug,
                peer_uid,
                command,
                limits = %limits,
                outcome,
                status = fin.status,
                limit_hit = fin.limit_hit.as_deref().unwrap_or("-"),
                truncated = fin.truncated,
                wall_ms = fin.usage.wall_ms,
                cpu_user_ms = fin.usage.cpu_user_ms,
                cpu_sys_ms = fin.usage.cpu_sys_ms,
                max_rss_kib = fin.usage.max_rss_kib,
                peak_memory_bytes = fin.usage.peak_memory_bytes.unwrap_or(0),
                run_uid,
                warm,
                "run ended"
            );
            client_alive && send(tx, &Response::Finished(fin)).await
        }
        Err(e) => {
            tracing::error!(run_id, slug, peer_uid, command, limits = %limits, warm, outcome = "jail failed", error = %e, "run failed");
            client_alive && send_error(tx, ErrorKind::JailFailed, e.to_string()).await
        }
    };
    // The client has its answer; the cgroup goes now, then the uid goes back to the
    // pool once none of its processes is left (checked, and leftovers killed), both
    // before the slot is freed at the end of this function, so that a slot always
    // finds a free uid.
    cleanup.finish().await;
    drop(slot);
    alive
}

fn to_response(chunk: Output) -> Response {
    match chunk {
        Output::Stdout(b) => Response::Stdout(b),
        Output::Stderr(b) => Response::Stderr(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;
    use codejail_protocol::Mode;

    fn settings() -> Settings {
        let cfg: FileConfig =
            toml::from_str("[commands.python]\nbin = \"/usr/bin/python3\"\n").expect("toml");
        Settings::from_config(&cfg, Mode::Confined).expect("settings")
    }

    #[test]
    fn argument_with_nul_is_an_invalid_request() {
        // fuzz/request: accepted by the broker, then refused by the stage's plan check.
        let mut exec = Exec {
            command: "python".into(),
            code: Some(b"print(1)".to_vec()),
            argv: vec!["-\0\0\0ig".into(), "x".into()],
            ..Exec::default()
        };
        match fuzz_check_exec(&settings(), &exec) {
            Err((ErrorKind::InvalidRequest, message)) => {
                assert!(message.contains("NUL"), "{message}")
            }
            other => panic!("argv with a NUL: {other:?}"),
        }
        exec.argv = vec!["-ig".into(), "x".into()];
        fuzz_check_exec(&settings(), &exec).expect("plain argv");
    }
}
