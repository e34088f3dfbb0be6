//! A command's zygote (fork server), from the broker's side: the command's interpreter,
//! started once with the pool's preimports and parked in its start-up hook in zygote
//! mode (`jail/warm/_codejail_warm.py`, the native half in `zygote/src/lib.rs`). A warm
//! jail of a pool with `fork_server = true` is built by asking it for a child
//! ([`Zygote::fork`]) instead of spawning `codejail-jail`: the child, cloned into the
//! run's namespaces, is the run's init (there is no stage process), and its program
//! returns into the already started interpreter, so a warm jail costs a fork and the
//! layers, not an interpreter start (docs/architecture.md, "Fork server").
//!
//! The zygote never sees a request: it gets a warm jail's fds before the jail exists,
//! and the request reaches the jail's init later, on those fds. Its stdio is on pipes
//! whose output the broker logs. It runs as the broker's own ids: with one identity for
//! all runs (the broker's) with no capability; with per-run ids with `CAP_SETUID` and
//! `CAP_SETGID`, as the broker has them, with which it makes each clone as its run's
//! ids (its effective ids, for the clone only), so that the run's user namespace is the
//! run's uid's; the child holds no capability outside that namespace. (Not
//! a user namespace of the zygote's own with the run ids mapped: the kernel charges
//! what a namespace's processes hold, at the top level, to the uid that created the
//! outermost namespace below the host's, which would then be the broker's for every
//! run: one run could exhaust the pending signals and timers of all.)
//!
//! One str-hash seed and one address layout are shared by the runs of one zygote (they
//! are fixed at an interpreter's start); a zygote is replaced after the pool's
//! `zygote_max_forks` forks or `zygote_max_age_secs` ([`ZygoteLife`]), and whenever it
//! fails to fork (its pool's builds then fail and runs
//! go cold until a new one is up).

use std::collections::{BTreeMap, VecDeque};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::time::TimeVal;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use codejail_plan::{FORKED, FORK_REQUEST};
use codejail_protocol::ForkServerStatus;

use crate::config::{CommandSpec, PoolSpec, ZygoteLife};
use crate::run::{planning, Runs, WarmError};
use crate::sys;

/// The native half, looked for beside the jail stage binary.
pub const ZYGOTE_LIBRARY: &str = "libcodejail_zygote.so";
/// How long a zygote may take to start and import the preimports.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of a zygote's output kept for the error of a failed start.
const OUTPUT_TAIL: usize = 12;
/// How long a failed zygote's output is waited for.
const OUTPUT_WAIT: Duration = Duration::from_secs(2);
/// How long a zygote may take to answer a fork request.
const FORK_TIMEOUT: Duration = Duration::from_secs(5);
/// The environment's value for the run-specific directories (`TMPDIR`, and `HOME` or
/// any variable set to `$TMPDIR...`) while the zygote starts: the runs' do not exist
/// yet, and each run gets its own. (A module that writes a cache at import may still
/// fall back to the host's `/tmp`, as `tempfile` does: docs/operating.md says which
/// preimports to keep out of a fork server.)
const NO_DIR: &str = "/nonexistent";

/// A running zygote.
#[derive(Debug)]
pub struct Zygote {
    /// Its process (killed when the zygote is dropped).
    child: Mutex<tokio::process::Child>,
    /// The broker's end of its socket (fd 3 in the zygote), one request at a time.
    sock: Mutex<OwnedFd>,
    pid: u32,
    started: Instant,
    forks: AtomicU64,
    /// When it is replaced.
    life: ZygoteLife,
    /// Set when a request got no proper answer: the socket's requests and answers may
    /// no longer pair up, so it serves no more.
    broken: std::sync::atomic::AtomicBool,
}

impl Zygote {
    /// Start `command`'s zygote with `spec`'s preimports; returns once it has imported
    /// them and answered `ready`.
    pub async fn start(runs: &Runs, command: &str, spec: &PoolSpec) -> Result<Zygote, WarmError> {
        let settings = runs.settings();
        let cmd = settings
            .commands
            .get(command)
            .ok_or_else(|| WarmError::NoCommand(command.to_string()))?;
        let library = settings.jail_stage.with_file_name(ZYGOTE_LIBRARY);
        let library = library
            .to_str()
            .filter(|l| !l.chars().any(char::is_whitespace))
            .ok_or_else(|| {
                WarmError::Zygote(format!(
                    "{} is not a path the hook's greeting can carry (UTF-8, no whitespace)",
                    library.display()
                ))
            })?
            .to_string();
        if !std::path::Path::new(&library).is_file() {
            return Err(WarmError::Zygote(format!(
                "no {library}: the fork server's library is built with `cargo build -p codejail-zygote` and goes beside codejail-jail"
            )));
        }
        let failed = |what: &str, e: std::io::Error| WarmError::Zygote(format!("{what}: {e}"));
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| failed("socketpair", e.into()))?;
        // Above the numbers the child's stdio set-up and the dup2 onto 3 use.
        let theirs = {
            let low = theirs;
            sys::dup_high(&low).map_err(|e| failed("dup", e))?
        };
        let argv = planning::command_argv(cmd, true);
        let mut c = tokio::process::Command::new(&cmd.bin);
        c.arg0(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(zygote_env(cmd))
            // CPython makes the script's path absolute from the cwd, and would run that
            // file if its start-up ever ended in the zygote (an interpreter started
            // without site, `-S`, never runs the hook): in /proc no file can be put at
            // that path, so that ends in an error, not in a file someone left in /tmp.
            // (Not "/": the path would be "//jailed_code".)
            .current_dir("/proc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let raw = theirs.as_raw_fd();
        let id = sys::StageIdentity::from(settings.identity);
        // Per-run ids: the zygote keeps CAP_SETUID and CAP_SETGID, with which it makes
        // each clone as its run's ids.
        let keep_setid = settings.run_ids.is_some();
        // Under AppArmor, the stage's profile stacked at the exec, as a stage's is
        // (checked once it is ready).
        let apparmor = crate::apparmor::zygote_exec_request();
        let stacked = apparmor.is_some();
        // SAFETY: the closure only calls prctl, dup2, close_range, open, write, close and
        // the set*id system calls (async-signal-safe, no allocation), on an fd the
        // blocking task below owns until spawn has returned; it is >= 10, out of the way
        // of std's stdio set-up.
        unsafe {
            c.pre_exec(move || sys::install_zygote_fd(raw, id, keep_setid, apparmor.as_deref()));
        }
        let mut child = tokio::task::spawn_blocking(move || {
            let spawned = c.spawn();
            drop(theirs);
            spawned
        })
        .await
        .map_err(|e| WarmError::Zygote(e.to_string()))?
        .map_err(|e| failed(&format!("spawning {}", cmd.bin.display()), e))?;
        let pid = child.id().unwrap_or(0);
        // Its stdin stays open and empty; what it writes is logged, and its last lines
        // kept for the error if it fails to start.
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut readers = Vec::new();
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let command = command.to_string();
            let tail = Arc::clone(&tail);
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::warn!(command, zygote = pid, "zygote output: {line}");
                    if let Ok(mut tail) = tail.lock() {
                        if tail.len() == OUTPUT_TAIL {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                }
            }));
        }
        let mut greeting = format!("codejail-zygote 4 {library}");
        for module in &spec.preimport {
            greeting.push(' ');
            greeting.push_str(module);
        }
        greeting.push('\n');
        let answer = tokio::task::spawn_blocking(move || -> std::io::Result<(String, OwnedFd)> {
            set_timeout(&ours, START_TIMEOUT)?;
            send(&ours, greeting.as_bytes(), &[])?;
            let (answer, _) = receive(&ours)?;
            set_timeout(&ours, FORK_TIMEOUT)?;
            Ok((answer, ours))
        })
        .await
        .map_err(|e| WarmError::Zygote(e.to_string()))?;
        let ended = "it ended before it was ready: is this build's start-up hook installed in the interpreter's site-packages (scripts/setup-sandbox-venv.sh; an earlier build's speaks an earlier zygote protocol)?";
        let why = match answer {
            Ok((answer, _)) if answer != "ready\n" => {
                let answer = answer.trim().to_string();
                if answer.is_empty() {
                    ended.to_string()
                } else {
                    format!("it answered {answer:?}")
                }
            }
            // It exited with the greeting unread.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => ended.to_string(),
            Ok((_, ours)) => match crate::apparmor::check_zygote_label(stacked, pid) {
                Ok(()) => {
                    drop(readers);
                    return Ok(Zygote::started(pid, child, ours, spec));
                }
                Err(why) => why,
            },
            Err(e) => format!("waiting for its ready: {e}"),
        };
        let _ = child.start_kill();
        // What it printed (a traceback, an AppArmor denial's EACCES) says why: its pipes
        // close as it dies, so the readers end.
        let _ = tokio::time::timeout(OUTPUT_WAIT, futures::future::join_all(readers)).await;
        let output: Vec<String> = tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        let error = WarmError::Zygote(why);
        Err(if output.is_empty() {
            error
        } else {
            WarmError::WithOutput {
                cause: Box::new(error),
                output: output.join(" | "),
            }
        })
    }

    /// The record of a zygote that answered `ready`.
    fn started(pid: u32, child: tokio::process::Child, ours: OwnedFd, spec: &PoolSpec) -> Zygote {
        Zygote {
            child: Mutex::new(child),
            sock: Mutex::new(ours),
            pid,
            started: Instant::now(),
            forks: AtomicU64::new(0),
            life: spec.zygote,
            broken: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Take one of its forks for a build about to ask for it ([`Zygotes::reserve`]):
    /// `false` when it may serve no more (not [`usable`](Zygote::usable), or every fork
    /// its [`ZygoteLife`] allows already taken). A fork counts from here, so builds
    /// that take one at the same time never take more than `max_forks` between them.
    fn reserve(&self) -> bool {
        self.usable()
            && self
                .forks
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                    (f < self.life.max_forks).then_some(f + 1)
                })
                .is_ok()
    }

    /// Whether it may serve another fork: alive, not broken, within its [`ZygoteLife`].
    pub fn usable(&self) -> bool {
        let alive = match self.child.lock() {
            Ok(mut c) => matches!(c.try_wait(), Ok(None)),
            Err(_) => false,
        };
        alive
            && !self.broken.load(Ordering::Relaxed)
            && self.started.elapsed() < self.life.max_age
            && self.forks.load(Ordering::Relaxed) < self.life.max_forks
    }

    /// Ask for a child, the run's init, on `fds` (the run's stdin, stdout, stderr, the
    /// stage's control, report and hand-over pipes, then the cgroup.procs files: the
    /// child's ends, closed here once sent), as the run's outside `ids` when there are
    /// per-run ids. Returns the child's pid and a pidfd of it. The fork was counted
    /// when the caller took it ([`Zygotes::reserve`]).
    /// Blocking: call it off the runtime's threads.
    ///
    /// Any failure breaks the zygote: a late answer would otherwise be read as the
    /// next request's.
    pub fn fork(
        &self,
        fds: Vec<OwnedFd>,
        ids: Option<(u32, u32)>,
    ) -> std::io::Result<(u32, OwnedFd)> {
        let sock = self
            .sock
            .lock()
            .map_err(|_| std::io::Error::other("the zygote's socket lock is poisoned"))?;
        if self.broken.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the zygote is broken"));
        }
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let request = match ids {
            Some((uid, gid)) => format!("{FORK_REQUEST} {uid} {gid}\n"),
            None => format!("{FORK_REQUEST}\n"),
        };
        let answered = send(&sock, request.as_bytes(), &raw).and_then(|()| {
            drop(fds);
            receive(&sock)
        });
        let (answer, pidfd) = match answered {
            Ok(a) => a,
            Err(e) => {
                self.break_off(&sock);
                return Err(e);
            }
        };
        let line = answer.trim_end();
        let pid = line
            .strip_prefix(FORKED)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|p| p.parse::<u32>().ok());
        match (pid, pidfd) {
            (Some(pid), Some(pidfd)) => Ok((pid, pidfd)),
            _ => {
                self.break_off(&sock);
                Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the zygote answered {line:?}"),
                ))
            }
        }
    }

    /// Serve no more: the next build starts another zygote, and this one ends when its
    /// socket is gone.
    fn break_off(&self, sock: &OwnedFd) {
        self.broken.store(true, Ordering::Relaxed);
        let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

/// The zygote's environment: the command's, with the run-specific directories pointing
/// nowhere ([`NO_DIR`]).
fn zygote_env(cmd: &CommandSpec) -> Vec<(String, String)> {
    let mut env = vec![("TMPDIR".to_string(), NO_DIR.to_string())];
    let defaults = [
        ("PATH", codejail_plan::layout::DEFAULT_PATH),
        ("HOME", codejail_plan::layout::DEFAULT_HOME),
    ];
    for (k, v) in defaults {
        if !cmd.env.iter().any(|(key, _)| key == k) {
            env.push((k.to_string(), v.to_string()));
        }
    }
    env.extend(cmd.env.iter().cloned());
    for (_, value) in env.iter_mut() {
        if let Some(rest) = value.strip_prefix("$TMPDIR") {
            if rest.is_empty() || rest.starts_with('/') {
                *value = format!("{NO_DIR}{rest}");
            }
        }
    }
    env
}

fn set_timeout(sock: &OwnedFd, timeout: Duration) -> std::io::Result<()> {
    let tv = TimeVal::new(
        i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        i64::from(timeout.subsec_micros()),
    );
    setsockopt(sock, sockopt::ReceiveTimeout, &tv)?;
    setsockopt(sock, sockopt::SendTimeout, &tv)?;
    Ok(())
}

fn send(sock: &OwnedFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let iov = [IoSlice::new(data)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One message: its text (lossy) and the first fd it carried (others are closed).
fn receive(sock: &OwnedFd) -> std::io::Result<(String, Option<OwnedFd>)> {
    let mut data = [0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [IoSliceMut::new(&mut data)];
    let (len, mut fds) = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(rights) = cmsg {
                        // SAFETY: the kernel just installed these fds in this process
                        // for this message; nothing else owns them.
                        fds.extend(rights.into_iter().map(|fd| unsafe {
                            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                        }));
                    }
                }
                break (msg.bytes, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let text = String::from_utf8_lossy(&data[..len]).into_owned();
    let first = if fds.is_empty() {
        None
    } else {
        Some(fds.remove(0))
    };
    Ok((text, first))
}

/// The zygotes of the pools with a fork server, started on their first build.
#[derive(Debug, Default)]
pub struct Zygotes {
    /// Held while a zygote starts (its preimports can take seconds), so that builds
    /// waiting for one start one, not several.
    starting: tokio::sync::Mutex<()>,
    /// Each command's fork server: its running zygote and its counts, under a lock
    /// never held across an await.
    book: Mutex<BTreeMap<String, Book>>,
}

/// One command's fork server over the broker's life.
#[derive(Debug, Default)]
struct Book {
    current: Option<Arc<Zygote>>,
    started: u64,
    /// Forks of the zygotes before the current one.
    forks_before: u64,
}

impl Zygotes {
    /// `command`'s zygote, started (or replaced) if there is none that may serve.
    pub async fn get(
        &self,
        runs: &Runs,
        command: &str,
        spec: &PoolSpec,
    ) -> Result<Arc<Zygote>, WarmError> {
        let _starting = self.starting.lock().await;
        if let Some(z) = self.reserve(command) {
            return Ok(z);
        }
        if let Some(old) = self.take_current(command, None) {
            tracing::info!(
                command,
                zygote = old.pid(),
                forks = old.forks.load(Ordering::Relaxed),
                "zygote replaced"
            );
        }
        let zygote = Arc::new(Zygote::start(runs, command, spec).await?);
        let mut book = self.book();
        let entry = book.entry(command.to_string()).or_default();
        entry.started += 1;
        entry.current = Some(zygote.clone());
        // This build's fork, taken as `reserve` takes one, under the same lock.
        let reserved = zygote.reserve();
        drop(book);
        // Logged once `status` counts it, so that the two never disagree.
        tracing::info!(command, zygote = zygote.pid(), preimport = ?spec.preimport, "zygote started");
        if !reserved {
            return Err(WarmError::Zygote(format!(
                "zygote {} ended as soon as it was ready",
                zygote.pid()
            )));
        }
        Ok(zygote)
    }

    /// `command`'s zygote if one runs that may serve, with one of its forks taken for
    /// the caller's build, without starting one (for a run that forks its own jail: a
    /// zygote's start stays off the request path). The fork is taken under the book's
    /// lock, which `take_current` holds too: a zygote taken out gets no more, so the
    /// forks it counted then are all it ever serves.
    pub fn reserve(&self, command: &str) -> Option<Arc<Zygote>> {
        let book = self.book();
        book.get(command)
            .and_then(|b| b.current.clone())
            .filter(|z| z.reserve())
    }

    /// `command`'s fork server as `status` shows it.
    pub fn status(&self, command: &str) -> ForkServerStatus {
        let book = self.book();
        let Some(b) = book.get(command) else {
            return ForkServerStatus::default();
        };
        let current = b.current.as_ref();
        let forks = current.map_or(0, |z| z.forks.load(Ordering::Relaxed));
        ForkServerStatus {
            pid: current.map(|z| z.pid()),
            age_ms: current.map_or(0, |z| z.started.elapsed().as_millis() as u64),
            forks,
            rss_kib: current.map_or(0, |z| rss_kib(z.pid())),
            started: b.started,
            forks_total: b.forks_before + forks,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Book>> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take `command`'s running zygote out (only if its pid is `pid`, when given): it
    /// serves no more, and its forks go to the total.
    fn take_current(&self, command: &str, pid: Option<u32>) -> Option<Arc<Zygote>> {
        let mut book = self.book();
        let b = book.get_mut(command)?;
        if pid.is_some_and(|pid| b.current.as_ref().is_some_and(|z| z.pid() != pid)) {
            return None;
        }
        let gone = b.current.take()?;
        b.forks_before += gone.forks.load(Ordering::Relaxed);
        Some(gone)
    }

    /// Drop `command`'s zygote `pid` (it can serve no more: it failed to fork, died,
    /// or aged out): the next build starts another.
    pub fn discard(&self, command: &str, pid: u32) {
        if self.take_current(command, Some(pid)).is_some() {
            tracing::warn!(command, zygote = pid, "zygote can serve no more; replaced");
        }
    }

    /// Stop every zygote (shutdown), once a start in flight has ended.
    pub async fn stop(&self) {
        let _starting = self.starting.lock().await;
        let commands: Vec<String> = self.book().keys().cloned().collect();
        for command in commands {
            self.take_current(&command, None);
        }
    }
}

/// The resident memory of process `pid`, KiB (0 when it cannot be read).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    super::warm::status_kib(&status, "VmRSS:")
}
