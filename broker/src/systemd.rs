//! Where the broker meets its service manager (systemd/codejail-broker.service): the
//! listening socket passed by socket activation (`LISTEN_FDS`/`LISTEN_PID`,
//! sd_listen_fds(3)), readiness and status (`NOTIFY_SOCKET`, sd_notify(3)), and the
//! watchdog (`WATCHDOG_USEC`). Each is a no-op when its variable is unset, so the same
//! binary runs under systemd, by hand, and under the tests.
//!
//! The notification protocol is one datagram of `KEY=VALUE` lines to a Unix socket;
//! it is written here with std's `UnixDatagram` rather than with a crate: no `unsafe`,
//! abstract socket addresses included, and the environment is read (and cleared) in
//! exactly one place, [`Activation::from_env`], before any thread exists.

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, UnixAddr,
};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The variables [`Activation::from_env`] reads and removes from the environment, so
/// that nothing the broker starts inherits them (sd_listen_fds(3): "unset_environment").
pub const ACTIVATION_VARS: [&str; 6] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Why what systemd passed cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` is not what the socket unit passes.
    #[error("LISTEN_FDS={0:?}: codejail-broker.socket passes exactly one socket")]
    FdCount(String),
    /// fd 3 is not ours to take.
    #[error("cannot take the socket systemd passed as fd 3: {0}")]
    Adopt(#[source] io::Error),
    /// fd 3 is not a listening Unix stream socket.
    #[error("fd 3 from systemd is not a listening Unix stream socket: {0}")]
    NotAListener(String),
}

/// What the service manager handed this process, taken from the environment.
#[derive(Debug, Default)]
pub struct Activation {
    /// `LISTEN_FDS` when `LISTEN_PID` named this process.
    listen_fds: Option<String>,
    /// Where readiness and status go.
    notifier: Option<Notifier>,
    /// `WATCHDOG_USEC`, when the watchdog is for this process.
    watchdog: Option<Duration>,
}

impl Activation {
    /// Read the activation variables and remove them from the environment. Call once,
    /// first thing in `main`: changing the environment is only sound while the process
    /// has a single thread.
    pub fn from_env() -> Activation {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let vars: Vec<Option<String>> = ACTIVATION_VARS.iter().map(|k| get(k)).collect();
        for k in ACTIVATION_VARS {
            std::env::remove_var(k);
        }
        let [listen_pid, listen_fds, _names, notify, wd_usec, wd_pid] =
            <[Option<String>; 6]>::try_from(vars).unwrap_or_default();
        Activation::from_values(
            std::process::id(),
            listen_pid.as_deref(),
            listen_fds,
            notify.as_deref(),
            wd_usec.as_deref(),
            wd_pid.as_deref(),
        )
    }

    fn from_values(
        own_pid: u32,
        listen_pid: Option<&str>,
        listen_fds: Option<String>,
        notify: Option<&str>,
        wd_usec: Option<&str>,
        wd_pid: Option<&str>,
    ) -> Activation {
        let for_us = |pid: Option<&str>| pid.and_then(|p| p.parse::<u32>().ok()) == Some(own_pid);
        // The fds are ours only when LISTEN_PID names us: a variable inherited from a
        // parent that was itself socket-activated must be ignored.
        let listen_fds = listen_fds.filter(|_| for_us(listen_pid));
        // WATCHDOG_PID is optional; when set it must name us.
        let watchdog = wd_usec
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0)
            .filter(|_| wd_pid.is_none() || for_us(wd_pid))
            .map(Duration::from_micros);
        Activation {
            listen_fds,
            notifier: notify.map(Notifier::new),
            watchdog,
        }
    }

    /// Whether systemd passed this process its listening socket.
    pub fn has_listener(&self) -> bool {
        self.listen_fds.is_some()
    }

    /// Take the socket systemd passed (fd 3): checked to be one listening
    /// `AF_UNIX`/`SOCK_STREAM` socket, made close-on-exec (systemd passes it without
    /// `FD_CLOEXEC`, and no jail stage may inherit it). `Ok(None)` without socket
    /// activation. Also returns the socket's path, when it has one.
    pub fn take_listener(
        &mut self,
    ) -> Result<Option<(std::os::unix::net::UnixListener, Option<PathBuf>)>, ActivationError> {
        let Some(count) = self.listen_fds.take() else {
            return Ok(None);
        };
        if count.trim() != "1" {
            return Err(ActivationError::FdCount(count));
        }
        let fd =
            crate::sys::adopt_inherited_fd(LISTEN_FDS_START).map_err(ActivationError::Adopt)?;
        set_cloexec(&fd).map_err(ActivationError::Adopt)?;
        let path = check_listener(&fd)?;
        Ok(Some((std::os::unix::net::UnixListener::from(fd), path)))
    }

    /// The readiness/status channel (a no-op one without `NOTIFY_SOCKET`).
    pub fn notifier(&self) -> Notifier {
        self.notifier.clone().unwrap_or_default()
    }

    /// How often systemd expects `WATCHDOG=1`, when the unit sets `WatchdogSec=`.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }
}

fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    let flags = fcntl(raw, FcntlArg::F_GETFD)?;
    let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
    fcntl(raw, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Check that `fd` is a listening Unix stream socket; its path if it has one.
fn check_listener(fd: &OwnedFd) -> Result<Option<PathBuf>, ActivationError> {
    use std::os::fd::AsRawFd;
    let bad = |what: String| ActivationError::NotAListener(what);
    let ty =
        getsockopt(&fd.as_fd(), sockopt::SockType).map_err(|e| bad(format!("SO_TYPE: {e}")))?;
    if ty != SockType::Stream {
        return Err(bad(format!("type {ty:?}, not SOCK_STREAM")));
    }
    let listening = getsockopt(&fd.as_fd(), sockopt::AcceptConn)
        .map_err(|e| bad(format!("SO_ACCEPTCONN: {e}")))?;
    if !listening {
        return Err(bad(
            "not listening (a socket unit with Accept=no passes a listening socket)".into(),
        ));
    }
    let addr: nix::sys::socket::SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(|e| bad(format!("getsockname: {e}")))?;
    if addr.family() != Some(AddressFamily::Unix) {
        return Err(bad(format!("family {:?}, not AF_UNIX", addr.family())));
    }
    Ok(addr
        .as_unix_addr()
        .and_then(UnixAddr::path)
        .map(|p| p.to_path_buf()))
}

/// Sends sd_notify(3) messages to the service manager; every method is a no-op when
/// `NOTIFY_SOCKET` was unset. Sending is best effort: a lost notification is logged,
/// never fatal (systemd then times the start out, which says more than we could).
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<String>,
}

impl Notifier {
    /// A notifier for the `NOTIFY_SOCKET` value `target` (a path, or `@name` for an
    /// abstract socket).
    pub fn new(target: &str) -> Notifier {
        Notifier {
            target: Some(target.to_string()),
        }
    }

    /// Whether notifications go anywhere.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Send one message (`KEY=VALUE` lines).
    pub fn send(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        let sent = if let Some(name) = target.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(message.as_bytes(), &addr)?
        } else if target.starts_with('/') {
            sock.send_to(message.as_bytes(), target)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("NOTIFY_SOCKET={target:?} is neither a path nor an abstract socket"),
            ));
        };
        if sent != message.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
        }
        Ok(())
    }

    fn send_logged(&self, message: &str) {
        if let Err(e) = self.send(message) {
            tracing::warn!(error = %e, message, "cannot notify the service manager");
        }
    }

    /// `READY=1` with a status line: the self-test passed and the socket is listening.
    pub fn ready(&self, status: &str) {
        self.send_logged(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A `STATUS=` line (shown by `systemctl status`).
    pub fn status(&self, status: &str) {
        self.send_logged(&format!("STATUS={}", one_line(status)));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send_logged("STOPPING=1\nSTATUS=stopping: runs get their grace period");
    }

    /// `WATCHDOG=1`: the broker's event loop is alive.
    pub fn watchdog(&self) {
        self.send_logged("WATCHDOG=1");
    }

    /// Ping the watchdog at half of `interval` (sd_watchdog_enabled(3)'s advice) from
    /// a task of the broker's runtime, so that a wedged runtime stops the pings and
    /// systemd restarts the service. Ends when the returned handle is aborted or dropped
    /// with the runtime.
    pub fn spawn_watchdog(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let period = (interval / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.watchdog();
            }
        })
    }
}

/// A status value is one line of the datagram.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_fds_only_for_our_pid() {
        let a = Activation::from_values(42, Some("42"), Some("1".into()), None, None, None);
        assert!(a.has_listener());
        let a = Activation::from_values(42, Some("41"), Some("1".into()), None, None, None);
        assert!(!a.has_listener(), "LISTEN_PID names another process");
        let a = Activation::from_values(42, None, Some("1".into()), None, None, None);
        assert!(!a.has_listener(), "no LISTEN_PID");
    }

    #[test]
    fn watchdog_interval_and_pid() {
        let a = Activation::from_values(42, None, None, None, Some("3000000"), None);
        assert_eq!(a.watchdog(), Some(Duration::from_secs(3)));
        let a = Activation::from_values(42, None, None, None, Some("3000000"), Some("42"));
        assert_eq!(a.watchdog(), Some(Duration::from_secs(3)));
        let a = Activation::from_values(42, None, None, None, Some("3000000"), Some("7"));
        assert_eq!(a.watchdog(), None, "WATCHDOG_PID names another process");
        let a = Activation::from_values(42, None, None, None, Some("0"), None);
        assert_eq!(a.watchdog(), None);
    }

    #[test]
    fn wrong_fd_count_is_refused_before_touching_fd_3() {
        let mut a = Activation::from_values(42, Some("42"), Some("2".into()), None, None, None);
        let e = a.take_listener().expect_err("two fds");
        assert!(e.to_string().contains("exactly one"), "{e}");
    }

    #[test]
    fn no_notify_socket_is_a_no_op() {
        let n = Activation::default().notifier();
        assert!(!n.is_active());
        n.send("READY=1").expect("no-op");
    }

    #[test]
    fn notifications_reach_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        Notifier::new(&path.to_string_lossy()).ready("serving\nsoon");
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving soon");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("codejail-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        Notifier::new(&format!("@{name}")).watchdog();
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn a_socketpair_end_is_not_a_listener() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let e = check_listener(&OwnedFd::from(a)).expect_err("not listening");
        assert!(e.to_string().contains("not listening"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let l = std::os::unix::net::UnixListener::bind(dir.path().join("s")).expect("bind");
        let path = check_listener(&OwnedFd::from(l)).expect("a listener");
        assert_eq!(path, Some(dir.path().join("s")));
    }
}
