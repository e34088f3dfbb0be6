//! The jail stage from the broker's side: spawn `codejail-jail` as the run's outside
//! uid with its fds, into the run's cgroup before its exec; send it the plan; then
//! supervise the run: feed stdin, stream stdout and stderr under the OUTPUT cap,
//! collect the stage's reports, and end the run at REALTIME or on cancellation. The
//! stage builds the jail itself (`jail/src/stage.rs`); the fd table both sides share is
//! in `plan/src/lib.rs`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use codejail_protocol::{LimitName, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::budget::Reservation;
use super::cgroup::RunCgroup;
use super::cleanup::Cleanup;
use super::outcome::{finish, Ended, OutputCap, Reports, RunResult};
use super::process::{kill_stage, stdio_ends, StageProcess, StdioFd};
use super::request::RunSpec;
use super::RunError;
use crate::config::RunIdentity;
use crate::sys;
use codejail_plan::{self as plan, Plan, StageReport, MAX_REPORT_FRAME};

/// How long the stage gets to end the run after its control pipe closes, before the
/// broker kills the stage itself (its init then dies by PDEATHSIG; a forked run's
/// "stage" is its init, whose death ends the run's pid namespace).
pub(super) const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long output pipes may stay open after the stage has exited (they close as soon
/// as the run's pid namespace is gone; this only bounds a kernel surprise).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Read size for output pipes.
const CHUNK: usize = 64 * 1024;

/// A chunk of program output, in the order read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// stdout bytes.
    Stdout(Vec<u8>),
    /// stderr bytes.
    Stderr(Vec<u8>),
}

/// What the supervision of a run reads of its spec.
#[derive(Debug)]
pub struct Supervision {
    /// The run's id (logs).
    pub run_id: u64,
    /// The program's stdin.
    pub stdin: Vec<u8>,
    /// Its share of the request's bytes under the broker's budget.
    pub stdin_held: Option<Reservation>,
    /// Effective limits (REALTIME, OUTPUT and CPU are read here).
    pub limits: Limits,
    /// The run's directory as the program sees it (reported in `Finished`).
    pub workdir: String,
}

impl RunSpec {
    /// What the supervision reads of this spec (its stdin moves out).
    pub(crate) fn supervision(&mut self) -> Supervision {
        Supervision {
            run_id: self.run_id,
            stdin: std::mem::take(&mut self.stdin),
            stdin_held: self.stdin_held.take(),
            limits: self.limits,
            workdir: self.workdir.clone(),
        }
    }
}

/// A spawned stage past its handshake: its process, its pipes and its pid. A cold
/// run's is supervised at once; a warm jail's waits in the pool (`pool`) first.
#[derive(Debug)]
pub struct Stage {
    process: StageProcess,
    /// The run's stdin (the broker's end).
    stdin: Option<pipe::Sender>,
    /// The run's stdout and stderr (the broker's ends).
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    control: pipe::Sender,
    reports: pipe::Receiver,
    /// A warm jail's hand-over pipe (fd 5 of the stage, read by its init).
    pub(crate) handover: Option<pipe::Sender>,
    pid: u32,
    /// The run's outside uid, which the stage runs as ([`kill_stage`]).
    owner: u32,
}

impl Stage {
    /// Spawn the stage as `identity` (it creates the run's user namespace as the run's
    /// uid and maps its own ids: `codejail_jail::userns`), move it into `cgroup` while
    /// it waits for its plan, and send the plan (then drop its payload and `held`). A
    /// plan with `warm` set also gets the hand-over pipe.
    pub async fn spawn(
        stage: &std::path::Path,
        plan: &mut Plan,
        identity: RunIdentity,
        cgroup: Option<&RunCgroup>,
        held: Option<Reservation>,
    ) -> Result<Stage, RunError> {
        let (control_r, control_w) = sys::pipe_high().map_err(RunError::Pipes)?;
        let (report_r, report_w) = sys::pipe_high().map_err(RunError::Pipes)?;
        let handover = match plan.warm {
            Some(_) => Some(sys::pipe_high().map_err(RunError::Pipes)?),
            None => None,
        };

        let mut cmd = tokio::process::Command::new(stage);
        // The run's init keeps this argv: a plain name, not the host path of the binary,
        // is what the program sees in /proc/1/cmdline.
        cmd.arg0("codejail-jail")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let (cr, rw) = (control_r.as_raw_fd(), report_w.as_raw_fd());
        let hr = handover.as_ref().map(|(r, _)| r.as_raw_fd());
        let id = sys::StageIdentity::from(identity);
        let owner = identity.outer_uid;
        // Into the run's cgroup before the exec: everything the run does is charged
        // there, and the stage, the run's uid from its exec on, could not be moved by
        // the broker afterwards (see `RunCgroup::procs_files`).
        let procs = match cgroup {
            Some(cg) => cg.procs_files().map_err(RunError::Cgroup)?,
            None => Vec::new(),
        };
        let procs_raw: Vec<std::os::fd::RawFd> = procs.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: the closure only calls prctl, write, dup2 and the set*id system calls
        // (async-signal-safe, no allocation), on fds the blocking task below owns until
        // spawn has returned (even if this future is dropped meanwhile); the pipes are
        // >= 10 (pipe_high), so the stdio set-up std does before this closure cannot
        // have clobbered them, and the cgroup files are written before any dup2.
        unsafe {
            cmd.pre_exec(move || sys::install_stage_fds(cr, rw, hr, &procs_raw, id));
        }
        let (handover_r, handover_w) = match handover {
            Some((r, w)) => (Some(r), Some(w)),
            None => (None, None),
        };
        // Off the runtime's threads: spawn returns once the child has exec'd, and
        // joining a cgroup waits for an RCU grace period (about 10 ms on v1 memory).
        // The child's ends of the pipes and the cgroup files go with the task, closed
        // once the child has its own copies.
        let mut child = tokio::task::spawn_blocking(move || {
            let spawned = cmd.spawn();
            drop((procs, control_r, report_w, handover_r));
            spawned
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|spawned| spawned)
        .map_err(|source| RunError::Spawn {
            path: stage.to_path_buf(),
            source,
        })?;
        let pid = child.id().ok_or(RunError::StageGone)?;
        let stdio = (
            child.stdin.take().map(|p| p.into_owned_fd()),
            child.stdout.take().map(|p| p.into_owned_fd()),
            child.stderr.take().map(|p| p.into_owned_fd()),
        );
        Stage::send_plan(
            StageProcess::Spawned(child),
            stdio,
            (control_w, report_r, handover_w),
            pid,
            owner,
            plan,
            held,
        )
        .await
    }

    /// Have `zygote` clone the run's init (a warm plan: the run's program is the
    /// zygote's interpreter, forked by that init, and returns into it confined;
    /// `zygote.rs`). A forked run has no stage process: its init, the zygote's child,
    /// takes the stage's part towards the broker (the same fds, reports and control
    /// pipe), and is the process this `Stage` holds and kills. Its user namespace is
    /// `identity`'s (with `per_run_ids`; else the zygote's own ids); it enters `cgroup`
    /// (writing its own pid to the cgroup files before anything else); then the plan
    /// is sent.
    pub async fn fork(
        zygote: std::sync::Arc<super::pool::Zygote>,
        plan: &mut Plan,
        identity: RunIdentity,
        per_run_ids: bool,
        cgroup: Option<&RunCgroup>,
    ) -> Result<Stage, RunError> {
        let owner = identity.outer_uid;
        let ids = per_run_ids.then_some((identity.outer_uid, identity.outer_gid));
        let (control_r, control_w) = sys::pipe_high().map_err(RunError::Pipes)?;
        let (report_r, report_w) = sys::pipe_high().map_err(RunError::Pipes)?;
        let (handover_r, handover_w) = sys::pipe_high().map_err(RunError::Pipes)?;
        let (stdin_r, stdin_w) = sys::pipe_high().map_err(RunError::Pipes)?;
        let (stdout_r, stdout_w) = sys::pipe_high().map_err(RunError::Pipes)?;
        let (stderr_r, stderr_w) = sys::pipe_high().map_err(RunError::Pipes)?;
        let mut theirs = vec![stdin_r, stdout_w, stderr_w, control_r, report_w, handover_r];
        if let Some(cg) = cgroup {
            let procs = cg.procs_files().map_err(RunError::Cgroup)?;
            theirs.extend(procs);
        }
        let zygote_pid = zygote.pid();
        let forked = tokio::task::spawn_blocking(move || zygote.fork(theirs, ids))
            .await
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|forked| forked)
            .map_err(|e| RunError::Forked {
                zygote: zygote_pid,
                source: e,
            })?;
        let (pid, pidfd) = forked;
        // SAFETY: the AsyncFd owns the pidfd (an OwnedFd, moved in) for its whole life,
        // so the fd it watches stays open and the same until it is dropped.
        let pidfd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        }
        .map_err(|e| RunError::Pipes(e.into()))?;
        Stage::send_plan(
            StageProcess::Forked { pidfd },
            (Some(Ok(stdin_w)), Some(Ok(stdout_r)), Some(Ok(stderr_r))),
            (control_w, report_r, Some(handover_w)),
            pid,
            owner,
            plan,
            None,
        )
        .await
    }

    /// The stage's pipes made async, then the plan sent (its payload then dropped, and
    /// `held`); a stage that cannot take it is killed.
    async fn send_plan(
        mut process: StageProcess,
        stdio: (StdioFd, StdioFd, StdioFd),
        (control_w, report_r, handover_w): (OwnedFd, OwnedFd, Option<OwnedFd>),
        pid: u32,
        owner: u32,
        plan: &mut Plan,
        held: Option<Reservation>,
    ) -> Result<Stage, RunError> {
        let pipes = (|| {
            let handover = match handover_w {
                Some(w) => Some(pipe::Sender::from_owned_fd(w)?),
                None => None,
            };
            let control = pipe::Sender::from_owned_fd(control_w)?;
            let reports = pipe::Receiver::from_owned_fd(report_r)?;
            Ok::<_, io::Error>((stdio_ends(stdio)?, handover, control, reports))
        })();
        let ((stdin, stdout, stderr), handover, mut control, reports) = match pipes {
            Ok(p) => p,
            Err(e) => {
                kill_stage(&mut process, owner);
                process.wait().await;
                return Err(RunError::Pipes(e));
            }
        };

        // The plan, serialised once; its files then leave memory (the frame has them),
        // and the frame itself once it is in the pipe. Until the files go, the frame is
        // a second copy of them: it takes the budget's copy room meanwhile. A stage
        // that fails from here on reports it on the report pipe, which the caller reads
        // next.
        let second = match &held {
            Some(h) => Some(h.second_copy().await),
            None => None,
        };
        let frame = plan::encode_frame(&*plan).map_err(RunError::Pipes)?;
        plan.drop_payload();
        drop(second);
        let setup = async {
            control
                .write_all(&frame)
                .await
                .map_err(RunError::SendPlan)?;
            drop(frame);
            drop(held);
            Ok::<(), RunError>(())
        };
        if let Err(e) = setup.await {
            kill_stage(&mut process, owner);
            process.wait().await;
            return Err(e);
        }
        Ok(Stage {
            process,
            stdin,
            stdout,
            stderr,
            control,
            reports,
            handover,
            pid,
            owner,
        })
    }

    /// The stage's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Read the stage's next report (`None` at EOF).
    pub(crate) async fn next_report(&mut self) -> Result<Option<StageReport>, RunError> {
        read_report(&mut self.reports).await
    }

    /// Take what the program wrote before its run (a warm jail's interpreter start and
    /// preimports), without waiting: it is not the run's output.
    pub(crate) fn take_pending_output(&mut self) -> Vec<u8> {
        let mut taken = Vec::new();
        for fd in [
            self.stdout.as_ref().map(|o| o.as_fd()),
            self.stderr.as_ref().map(|e| e.as_fd()),
        ]
        .into_iter()
        .flatten()
        {
            sys::read_available(fd, &mut taken, 64 * 1024);
        }
        taken
    }

    /// Set the access and modification times of the run's stdio pipes (the broker made
    /// them at the stage's spawn: a warm jail's build) to now, so that a warm run's
    /// `fstat` of its stdio does not tell when its jail was built. Called at the
    /// hand-over.
    pub(crate) fn restamp_stdio(&self) -> std::io::Result<()> {
        let now = nix::sys::time::TimeSpec::UTIME_NOW;
        let fds = [
            self.stdin.as_ref().map(|p| p.as_fd()),
            self.stdout.as_ref().map(|p| p.as_fd()),
            self.stderr.as_ref().map(|p| p.as_fd()),
        ];
        for fd in fds.into_iter().flatten() {
            nix::sys::stat::futimens(fd.as_raw_fd(), &now, &now)?;
        }
        Ok(())
    }

    /// Whether the stage is still running (a warm jail's can die while it waits).
    pub(crate) fn is_alive(&mut self) -> bool {
        self.process.is_alive()
    }

    /// Kill the stage and reap it: its init dies with it (PDEATHSIG), and the run's
    /// pid namespace with the init.
    pub(crate) async fn kill(mut self) {
        kill_stage(&mut self.process, self.owner);
        self.process.wait().await;
    }

    /// Supervise the run to its end: feed stdin, stream stdout and stderr under the
    /// OUTPUT cap, collect the reports (`seen` holds what was reported before, e.g. a
    /// warm jail's confinement), enforce REALTIME from `started` and cancellation.
    pub async fn supervise(
        mut self,
        spec: &Supervision,
        seen: Reports,
        started: Instant,
        cleanup: &mut Cleanup,
        out: mpsc::Sender<Output>,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<RunResult, RunError> {
        let (pid, owner) = (self.pid, self.owner);
        let mut child = self.process;
        let cgroup = cleanup.cgroup.as_ref();
        let mut reports = self.reports;
        let control = self.control;
        drop(self.handover.take());
        let mut stdin = self.stdin.take();
        let stdout = self.stdout.take();
        let stderr = self.stderr.take();

        // Supervise: stdin feeder, two readers, report reader, REALTIME and cancel.
        let feed = async {
            if let Some(mut w) = stdin.take() {
                // A program that does not read its stdin closes the pipe: not an error.
                let _ = w.write_all(&spec.stdin).await;
            }
        };
        let cap = std::sync::Mutex::new(OutputCap {
            remaining: spec.limits.effective(LimitName::Output),
            truncated: false,
        });
        let pump_out = pump(stdout, &cap, &out, Output::Stdout);
        let pump_err = pump(stderr, &cap, &out, Output::Stderr);
        let collect_reports = async {
            let mut seen = seen;
            loop {
                match read_report(&mut reports).await? {
                    Some(StageReport::Failed { step, message }) => {
                        // The first failure is the one that matters; later reports (the
                        // init relaying the failed program's exit) do not override it.
                        seen.failed.get_or_insert((step, message));
                    }
                    Some(StageReport::Confined {
                        landlock,
                        seccomp_denied,
                    }) => {
                        seen.landlock = Some(landlock);
                        seen.seccomp_denied = Some(seccomp_denied);
                    }
                    // The program's end (or the run's, when the broker ended it) is the
                    // last report that matters: the stage's exit is not waited for here
                    // (Cleanup::finish reaps it), so that the answer does not wait for
                    // the namespaces' teardown.
                    Some(exited @ StageReport::Exited { .. }) => {
                        seen.exited = Some(exited);
                        return Ok(seen);
                    }
                    Some(StageReport::Killed {
                        cpu_user_us,
                        cpu_sys_us,
                        max_rss_kib,
                    }) => {
                        seen.killed_usage = Some((cpu_user_us, cpu_sys_us, max_rss_kib));
                        return Ok(seen);
                    }
                    Some(other) => {
                        return Err(RunError::Reports(format!("unexpected report {other:?}")))
                    }
                    None => return Ok(seen),
                }
            }
        };
        let realtime = spec
            .limits
            .effective(LimitName::Realtime)
            .map(Duration::from_secs);
        // REALTIME counts from `started` (a cold run's spawn, a warm jail's hand-over),
        // as upstream's timer starts before its process: with CPU = REALTIME, a busy
        // loop then ends by REALTIME (-9), never by a race with its CPU limit.
        let deadline = async {
            match realtime {
                Some(d) => tokio::time::sleep_until((started + d).into()).await,
                None => std::future::pending().await,
            }
        };

        // Done when the program has ended (its report read) and nothing holds its
        // output pipes any more (the stage and the init gave their copies up: the
        // program and what it started are done with them).
        let io = async { tokio::join!(feed, pump_out, pump_err, collect_reports) };
        tokio::pin!(io);
        let mut ended = None;
        let early = tokio::select! {
            r = &mut io => Some(r),
            () = deadline => { ended = Some(Ended::Realtime); None }
            () = cancel => { ended = Some(Ended::Cancelled); None }
        };
        if let Some(r) = early {
            let result = with_pid(finish(r.3, None, ended, started, spec, &cap, cgroup), pid);
            cleanup.stage = Some(child);
            return result;
        }
        // End the run: closing the control pipe makes the stage end the run's init (a
        // forked run's init sees it itself), which takes the whole pid namespace with
        // it, and the stage reaps it. If the stage does not exit in time, kill the whole
        // cgroup and the stage (init then dies by PDEATHSIG if it was not in the cgroup;
        // a forked run's init is the process killed). Not both at once: an init whose
        // stage died first is reparented to the host's PID 1 and left for it to reap.
        drop(control);
        let r = match tokio::time::timeout(KILL_GRACE, &mut io).await {
            Ok(r) => r,
            Err(_) => {
                kill_cgroup(cgroup, spec.run_id);
                kill_stage(&mut child, owner);
                match tokio::time::timeout(KILL_GRACE + DRAIN_GRACE, &mut io).await {
                    Ok(r) => r,
                    Err(_) => {
                        cleanup.stage = Some(child);
                        return Err(RunError::Unkillable);
                    }
                }
            }
        };
        let result = with_pid(finish(r.3, None, ended, started, spec, &cap, cgroup), pid);
        cleanup.stage = Some(child);
        result
    }
}

/// `result` with the pid of the run's stage (known only to the spawner).
fn with_pid(result: Result<RunResult, RunError>, pid: u32) -> Result<RunResult, RunError> {
    result.map(|mut r| {
        r.finished.pid = pid;
        r
    })
}

pub(super) fn kill_cgroup(cgroup: Option<&RunCgroup>, run_id: u64) {
    if let Some(Err(e)) = cgroup.map(RunCgroup::kill) {
        tracing::error!(run_id, error = %e, "cannot kill the run's cgroup");
    }
}

/// Read one pipe to EOF, passing what fits under the cap to `out` and draining the rest.
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: &std::sync::Mutex<OutputCap>,
    out: &mpsc::Sender<Output>,
    wrap: fn(Vec<u8>) -> Output,
) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let kept = match cap.lock() {
            Ok(mut c) => c.admit(buf[..n].to_vec()),
            Err(_) => None,
        };
        if let Some(chunk) = kept {
            // A gone receiver means the client left; keep draining so the program is
            // not blocked on a full pipe while the run is being ended.
            let _ = out.send(wrap(chunk)).await;
        }
    }
}

/// Read one report frame (the async side of [`plan::read_frame`]). `Ok(None)` at EOF.
async fn read_report(r: &mut pipe::Receiver) -> Result<Option<StageReport>, RunError> {
    let protocol = |e: std::io::Error| RunError::Reports(format!("reading a report: {e}"));
    let mut head = [0u8; 4];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(protocol(e)),
    }
    let mut body = vec![0u8; plan::frame_len(head, MAX_REPORT_FRAME).map_err(protocol)?];
    r.read_exact(&mut body).await.map_err(protocol)?;
    plan::decode_body(&body).map(Some).map_err(protocol)
}
