//! The jail stage's process, as the broker holds it: spawned (`codejail-jail`, the
//! broker's child) or forked by a zygote (`pool/zygote.rs`), and the broker's ends of
//! its stdio. `stage.rs` spawns or forks it and supervises the run.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use tokio::net::unix::pipe;

use crate::sys;

/// The stage's process: spawned by the broker (`codejail-jail`, the broker's child),
/// or forked by a zygote (the zygote's child, reaped by the kernel as it exits: the
/// broker watches it through a pidfd the zygote sent, which also names it safely).
#[derive(Debug)]
pub(crate) enum StageProcess {
    /// `codejail-jail`, spawned.
    Spawned(tokio::process::Child),
    /// Forked by a zygote.
    Forked {
        /// Readable once it has exited.
        pidfd: tokio::io::unix::AsyncFd<OwnedFd>,
    },
}

impl StageProcess {
    /// Whether it still runs.
    pub(super) fn is_alive(&mut self) -> bool {
        match self {
            StageProcess::Spawned(child) => matches!(child.try_wait(), Ok(None)),
            StageProcess::Forked { pidfd } => {
                let mut fds = [nix::poll::PollFd::new(
                    pidfd.get_ref().as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                matches!(
                    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
                    Ok(0)
                )
            }
        }
    }

    /// Wait until it has exited (and, when spawned, reap it).
    pub(crate) async fn wait(&mut self) {
        match self {
            StageProcess::Spawned(child) => {
                let _ = child.wait().await;
            }
            StageProcess::Forked { pidfd } => {
                let _ = pidfd.readable().await;
            }
        }
    }
}

/// SIGKILL a stage, which runs as its run's outside uid `owner`: the broker shares no
/// uid with it and holds no capability over the namespaces it created, so where a plain
/// kill is refused the signal is sent as `owner` (`sys::pidfd_kill_as`); tokio's kill
/// once the stage has no pid left to open. (The control pipe is the usual way to end a
/// run: its EOF makes the stage end the run and exit.)
pub(crate) fn kill_stage(process: &mut StageProcess, owner: u32) {
    match process {
        StageProcess::Spawned(child) => {
            let sent = child
                .id()
                .and_then(|pid| libc::pid_t::try_from(pid).ok())
                .and_then(|pid| sys::pidfd_open(pid).ok())
                .map(|fd| sys::pidfd_kill_as(&fd, libc::SIGKILL, owner));
            if !matches!(sent, Some(Ok(()))) {
                let _ = child.start_kill();
            }
        }
        StageProcess::Forked { pidfd } => {
            let _ = sys::pidfd_kill_as(pidfd.get_ref(), libc::SIGKILL, owner);
        }
    }
}

/// The run's stdio, the broker's ends.
pub(super) type StdioEnds = (
    Option<pipe::Sender>,
    Option<pipe::Receiver>,
    Option<pipe::Receiver>,
);

/// One of the broker's ends of the run's stdio, before it is made async.
pub(super) type StdioFd = Option<io::Result<OwnedFd>>;

/// The broker's ends of the run's stdio, made async.
pub(super) fn stdio_ends(
    (stdin, stdout, stderr): (StdioFd, StdioFd, StdioFd),
) -> io::Result<StdioEnds> {
    Ok((
        stdin
            .transpose()?
            .map(pipe::Sender::from_owned_fd)
            .transpose()?,
        stdout
            .transpose()?
            .map(pipe::Receiver::from_owned_fd)
            .transpose()?,
        stderr
            .transpose()?
            .map(pipe::Receiver::from_owned_fd)
            .transpose()?,
    ))
}
