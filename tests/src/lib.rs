//! Harness for end-to-end tests: starts a real broker on a temporary socket.
//!
//! Every test gets its own [`TestBroker`]: a `codejail-broker --dev` process listening on
//! a socket in a fresh temporary directory. When the tests run as root (as in CI), the
//! broker runs as a unique non-root uid (root is exempt from `RLIMIT_NPROC`, and the
//! broker must never run programs as root anyway); otherwise it runs as the caller.
//!
//! Besides starting and stopping brokers, the harness offers:
//! - request helpers ([`py`], [`dedent`]) for the client library;
//! - [`RawConn`], a raw protocol connection for the bad-input tests, which must send
//!   what the client library never would;
//! - `/proc` scans ([`processes`]) to check that nothing outlives a run;
//! - [`require_privileged`] / [`skip_or_fail`]: tests that need root or namespaces skip
//!   with a printed reason, or fail when `CODEJAIL_REQUIRE_PRIVILEGED=1` (as in CI).
//!
//! The binaries are found next to the test executable (`target/debug/`), or in
//! `$CODEJAIL_TEST_BIN_DIR` (set by `scripts/test.sh` when it had to stage them in a
//! directory the broker's uid can reach).

// The harness is test code: a failed step must stop the test with a message, which is
// what `expect` does.
#![allow(clippy::expect_used)]

pub mod http;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use codejail_protocol::{
    codec::decode_head, decode, encode, ErrorKind, Exec, Hello, Request, Response, Welcome,
    WelcomeHead,
};
use futures::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

pub use codejail_client::{ClientConfig, ClientError, JailRequest, JailResult};

/// Environment variable naming the sandbox interpreter (set by `scripts/test.sh`).
pub const ENV_PYTHON: &str = "CODEJAIL_TEST_PYTHON";
/// When `1`, tests that cannot run for lack of privileges fail instead of skipping.
pub const ENV_REQUIRE_PRIVILEGED: &str = "CODEJAIL_REQUIRE_PRIVILEGED";
/// Directory holding the binaries, when they are not next to the test executable.
pub const ENV_BIN_DIR: &str = "CODEJAIL_TEST_BIN_DIR";
/// The interpreter used when [`ENV_PYTHON`] is not set.
pub const DEFAULT_PYTHON: &str = "/usr/bin/python3";
/// The socket's file name inside the broker's directory.
pub const SOCKET_NAME: &str = "b.sock";
/// How long a broker may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a raw read may wait before the test fails (nothing should take that long).
pub const RAW_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// First uid used for brokers under test when running as root. Each broker gets its own
/// uid (see [`TestBroker::uid`]) so that a `/proc` scan by uid sees only its runs.
const BROKER_UID_BASE: u32 = 200_000;
/// A uid that no broker under test allows (used to test peer refusal).
pub const OUTSIDER_UID: u32 = BROKER_UID_BASE - 1;

static NEXT_BROKER: AtomicU32 = AtomicU32::new(0);

/// Whether the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `CODEJAIL_REQUIRE_PRIVILEGED=1`.
pub fn privileged_required() -> bool {
    std::env::var(ENV_REQUIRE_PRIVILEGED).is_ok_and(|v| v == "1")
}

/// Skip (print the reason, return `false`) or, under `CODEJAIL_REQUIRE_PRIVILEGED=1`, fail.
pub fn skip_or_fail(reason: &str) -> bool {
    if privileged_required() {
        panic!("{ENV_REQUIRE_PRIVILEGED}=1 but this test cannot run: {reason}");
    }
    eprintln!("SKIPPED: {reason} (set {ENV_REQUIRE_PRIVILEGED}=1 to make this a failure)");
    false
}

/// `true` when the test runs as root; otherwise skip or fail (see [`skip_or_fail`]).
pub fn require_privileged(what: &str) -> bool {
    is_root() || skip_or_fail(&format!("{what} needs root"))
}

/// The sandbox interpreter the brokers under test use.
pub fn python() -> PathBuf {
    std::env::var_os(ENV_PYTHON)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON))
}

/// The directory holding `codejail-broker`, `codejail-jail` and `codejail-client`.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os(ENV_BIN_DIR).filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => {
                // target/debug/deps/<test> -> target/debug
                let exe = std::env::current_exe().expect("current_exe");
                exe.parent()
                    .and_then(Path::parent)
                    .expect("the test executable lives in target/<profile>/deps")
                    .to_path_buf()
            }
        };
        for name in ["codejail-broker", "codejail-jail", "codejail-client"] {
            assert!(
                dir.join(name).is_file(),
                "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
                dir.join(name).display()
            );
        }
        dir
    })
    .clone()
}

/// The path of one of the workspace's binaries.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Check that a uid other than the owner can execute `path` (every ancestor directory
/// searchable by others, the file executable by others).
pub fn reachable_by_others(path: &Path) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o005 != 0o005 {
        return Err(format!(
            "{} is not readable and executable by others",
            path.display()
        ));
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        let meta = fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(format!(
                "{} is not searchable by others (mode {:o})",
                d.display(),
                meta.permissions().mode() & 0o7777
            ));
        }
        dir = d.parent();
    }
    Ok(())
}

/// Whether a process running as `uid` can create user, pid and mount namespaces here
/// (the dev broker needs them). Checked once with `unshare(1)`; `true` when unknown.
fn namespaces_usable(uid: Option<u32>) -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            let unshare = Path::new("/usr/bin/unshare");
            if !unshare.exists() {
                return Ok(());
            }
            let mut cmd = Command::new(unshare);
            cmd.args([
                "--user",
                "--map-root-user",
                "--pid",
                "--mount",
                "--fork",
                "--mount-proc",
                "true",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
            if let Some(uid) = uid {
                cmd.uid(uid).gid(uid);
            }
            match cmd.output() {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(format!(
                    "user/pid/mount namespaces are not usable here (unshare: {})",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => Err(format!("could not run unshare(1): {e}")),
            }
        })
        .clone()
}

/// Start a broker for this test ([`TestBroker::start_or_skip`]), or return from the test
/// (a skip) when this machine cannot run one.
#[macro_export]
macro_rules! broker {
    () => {
        $crate::broker!($crate::BrokerOpts::new())
    };
    ($opts:expr) => {
        match $crate::TestBroker::start_or_skip($opts) {
            Some(b) => b,
            None => return,
        }
    };
}

/// How a broker under test is started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shape {
    /// `--dev` as a plain uid with no capabilities (a unique non-root uid when the tests
    /// run as root, else the caller): every run maps the broker's own uid, no cgroups.
    #[default]
    Dev,
    /// As production runs it (needs root to set up): the broker as a unique non-root uid
    /// holding only CAP_SETUID and CAP_SETGID, ambient (what systemd's
    /// `AmbientCapabilities=` gives; nothing else in its bounding set), started with
    /// `setpriv`; per-run outside uids from a range of its own (`--run-ids`, see
    /// [`TestBroker::run_ids`]); v1 memory and pids cgroup parents created and chowned
    /// for it, required (`--cgroup-v1 ... --require-cgroups`), removed on drop.
    Production,
}

/// How many per-run ids a production-shape broker gets.
pub const PRODUCTION_RUN_IDS: u32 = 32;
/// First per-run id of production-shape brokers: far above the broker uids, so that no
/// broker's start-up sweep of its range can touch another test's broker or runs.
const RUN_IDS_BASE: u32 = 1_000_000;

/// Extra command-line options for a broker under test.
#[derive(Debug, Clone, Default)]
pub struct BrokerOpts {
    /// Arguments appended after the harness's own.
    pub args: Vec<String>,
    /// Extra environment variables of the broker process.
    pub env: Vec<(String, String)>,
    /// How the broker is started (default [`Shape::Dev`]).
    pub shape: Shape,
    /// RLIMIT_NOFILE (soft = hard) of the broker process, when set.
    pub nofile: Option<u64>,
}

impl BrokerOpts {
    /// No extra options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Start the broker in this shape.
    pub fn shape(mut self, shape: Shape) -> Self {
        self.shape = shape;
        self
    }

    /// [`Shape::Production`]: ambient CAP_SETUID/CAP_SETGID only, per-run uids, v1
    /// cgroups. Tests using it skip without root (fail under
    /// `CODEJAIL_REQUIRE_PRIVILEGED=1`).
    pub fn production_shape(self) -> Self {
        self.shape(Shape::Production)
    }

    /// Append raw arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--max-running N`.
    pub fn max_running(self, n: u32) -> Self {
        self.args(["--max-running".to_string(), n.to_string()])
    }

    /// `--max-queue N`.
    pub fn max_queue(self, n: u32) -> Self {
        self.args(["--max-queue".to_string(), n.to_string()])
    }

    /// `--ceiling NAME=VALUE`.
    pub fn ceiling(self, name: &str, value: u64) -> Self {
        self.args(["--ceiling".to_string(), format!("{name}={value}")])
    }

    /// `--default NAME=VALUE`.
    pub fn default_limit(self, name: &str, value: u64) -> Self {
        self.args(["--default".to_string(), format!("{name}={value}")])
    }

    /// `--context CTX:NAME=VALUE`.
    pub fn context(self, ctx: &str, name: &str, value: u64) -> Self {
        self.args(["--context".to_string(), format!("{ctx}:{name}={value}")])
    }

    /// `--max-frame BYTES`.
    pub fn max_frame(self, bytes: usize) -> Self {
        self.args(["--max-frame".to_string(), bytes.to_string()])
    }

    /// Start the broker with this open-file limit (soft = hard).
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// Set an environment variable of the broker process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// A broker process on a temporary socket; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct TestBroker {
    child: Child,
    exit: Option<ExitStatus>,
    /// Holds the log file and the broker's own directory.
    root: tempfile::TempDir,
    state_dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    uid: Option<u32>,
    shape: Shape,
    /// Per-run outside ids `(first, count)` (production shape).
    run_ids: Option<(u32, u32)>,
    /// Dropped after the broker is stopped (fields drop after `Drop::drop`).
    cgroups: Option<V1CgroupParents>,
    /// How it was started, for [`TestBroker::crash_and_restart`].
    opts: BrokerOpts,
}

impl TestBroker {
    /// Start a broker, or skip the test (print why, `None`) when this machine cannot run
    /// one; under `CODEJAIL_REQUIRE_PRIVILEGED=1` that is a failure instead.
    pub fn start_or_skip(opts: BrokerOpts) -> Option<TestBroker> {
        let uid = is_root().then(next_broker_uid);
        if let Err(reason) = namespaces_usable(uid).and_then(|()| shape_usable(opts.shape)) {
            skip_or_fail(&reason);
            return None;
        }
        Some(Self::start_as(opts, uid))
    }

    /// Start a broker; panics (with the broker's output) when it does not come up.
    pub fn start(opts: BrokerOpts) -> TestBroker {
        Self::start_as(opts, is_root().then(next_broker_uid))
    }

    /// Start a broker that must refuse to start: its exit status and output, once it
    /// exited (within [`START_TIMEOUT`]). `None` (a skip) as in [`Self::start_or_skip`].
    pub fn start_expecting_failure(opts: BrokerOpts) -> Option<(ExitStatus, String)> {
        let uid = is_root().then(next_broker_uid);
        if let Err(reason) = namespaces_usable(uid).and_then(|()| shape_usable(opts.shape)) {
            skip_or_fail(&reason);
            return None;
        }
        let mut b = Self::spawn(opts, uid);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = b.child.try_wait().expect("try_wait broker") {
                b.exit = Some(status);
                return Some((status, b.log()));
            }
            if Instant::now() > deadline {
                panic!(
                    "the broker should have refused to start; its output:\n{}",
                    b.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn start_as(opts: BrokerOpts, uid: Option<u32>) -> TestBroker {
        let mut b = Self::spawn(opts, uid);
        b.wait_listening();
        b
    }

    fn spawn(opts: BrokerOpts, uid: Option<u32>) -> TestBroker {
        let broker = bin("codejail-broker");
        if uid.is_some() {
            for path in [broker.clone(), bin("codejail-jail"), python()] {
                if let Err(why) = reachable_by_others(&path) {
                    panic!(
                        "the broker under test runs as a non-root uid and cannot reach {}: {why}. \
                         Run the tests with scripts/test.sh (it stages the binaries in a \
                         world-readable directory) or move the repository.",
                        path.display()
                    );
                }
            }
        }
        let root = tempfile::Builder::new()
            .prefix("codejail-test-")
            .tempdir()
            .expect("create the broker's temp dir");
        set_mode(root.path(), 0o755);
        let state_dir = root.path().join("broker");
        fs::create_dir(&state_dir).expect("create the broker's state dir");
        set_mode(&state_dir, 0o755);
        if let Some(uid) = uid {
            nix::unistd::chown(&state_dir, Some(uid.into()), Some(uid.into()))
                .expect("chown the broker's state dir");
        }
        let socket = state_dir.join(SOCKET_NAME);
        let log = root.path().join("broker.log");
        let log_file = File::create(&log).expect("create the broker log");
        let (run_ids, cgroups) = match opts.shape {
            Shape::Dev => (None, None),
            Shape::Production => {
                let uid = uid.expect("the production shape needs root (checked by shape_usable)");
                let parents = V1CgroupParents::create(uid)
                    .unwrap_or_else(|e| panic!("production shape: {e}"));
                (Some(production_run_ids(uid)), Some(parents))
            }
        };
        let child = Self::spawn_child(
            &opts,
            uid,
            &state_dir,
            &socket,
            run_ids,
            cgroups.as_ref(),
            log_file,
        );
        TestBroker {
            child,
            exit: None,
            root,
            state_dir,
            socket,
            log,
            uid,
            shape: opts.shape,
            run_ids,
            cgroups,
            opts,
        }
    }

    /// Kill the broker outright (SIGKILL, as a crash or the OOM killer would), then
    /// start it again as it was started (same uid, socket, state directory, per-run
    /// ids and cgroup parents), appending to the same log; returns once it listens.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log_file = fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("reopen the broker log");
        self.child = Self::spawn_child(
            &self.opts,
            self.uid,
            &self.state_dir,
            &self.socket,
            self.run_ids,
            self.cgroups.as_ref(),
            log_file,
        );
        self.exit = None;
        self.wait_listening();
    }

    fn spawn_child(
        opts: &BrokerOpts,
        uid: Option<u32>,
        state_dir: &Path,
        socket: &Path,
        run_ids: Option<(u32, u32)>,
        cgroups: Option<&V1CgroupParents>,
        log_file: File,
    ) -> Child {
        let broker = bin("codejail-broker");
        let our_uid = nix::unistd::getuid().as_raw();
        let mut cmd = match (opts.shape, uid) {
            (Shape::Production, Some(uid)) => {
                // setpriv changes the ids itself, keeping exactly these two capabilities
                // (inheritable, ambient, bounding), as systemd's AmbientCapabilities=
                // does; it re-arms the parent-death signal after changing the ids.
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .args([
                        "--inh-caps=-all,+setuid,+setgid",
                        "--ambient-caps=-all,+setuid,+setgid",
                        "--bounding-set=-all,+setuid,+setgid",
                        "--pdeathsig",
                        "SIGKILL",
                    ])
                    .arg(&broker);
                c
            }
            _ => Command::new(&broker),
        };
        cmd.arg("--dev")
            .arg("--socket")
            .arg(socket)
            .arg("--python")
            .arg(python())
            .args(["--allow-uid", "0", "--allow-uid"])
            .arg(our_uid.to_string());
        if let (Some((first, count)), Some(parents)) = (run_ids, cgroups) {
            cmd.arg("--run-ids")
                .arg(format!("{first}:{count}"))
                .arg("--cgroup-v1")
                .arg(parents.arg())
                .arg("--require-cgroups");
        }
        cmd.args(&opts.args)
            .current_dir(state_dir)
            // Anything the broker writes to a temp dir must show up here (the cleanup
            // tests check that nothing is left).
            .env("TMPDIR", state_dir)
            // test_cant_see_environment_variables: the broker's environment must never
            // reach a run.
            .env("HONEY_BOO_BOO", "Look!")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("XDG_RUNTIME_DIR")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup the log file"))
            .stderr(log_file);
        if let (Some(uid), Shape::Dev) = (uid, opts.shape) {
            // std clears the supplementary groups when it sets the uid as root.
            cmd.uid(uid).gid(uid);
        }
        let nofile = opts.nofile;
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl(2) and setrlimit(2), which are async-signal-safe and allocate nothing.
        // It runs after std changed the uid, which would otherwise clear the
        // parent-death signal.
        unsafe {
            cmd.pre_exec(move || {
                // A test process killed outright must not leave its broker behind.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(n) = nofile {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", broker.display()))
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait broker") {
                self.exit = Some(status);
                panic!(
                    "the broker exited during start-up ({status}); its output:\n{}",
                    self.log()
                );
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the broker did not listen on {} within {START_TIMEOUT:?}; its output:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The broker's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The broker's own directory (its cwd, `TMPDIR`, and the socket's directory).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The uid the broker runs as, when the harness chose one (running as root).
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// How the broker was started.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The per-run outside uids/gids `first..first+count` (production shape only).
    pub fn run_ids(&self) -> Option<std::ops::Range<u32>> {
        self.run_ids.map(|(first, count)| first..first + count)
    }

    /// The v1 cgroup parents of its runs (production shape only).
    pub fn cgroup_parents(&self) -> Option<&V1CgroupParents> {
        self.cgroups.as_ref()
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the broker printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log.display()))
    }

    /// A client configuration for this broker, with generous timeouts (the tests must
    /// fail, not hang, when the broker misbehaves).
    pub fn cfg(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.socket.clone());
        cfg.connect_timeout = Duration::from_secs(10);
        cfg.queue_timeout = Duration::from_secs(120);
        cfg.total_timeout = Duration::from_secs(180);
        cfg
    }

    /// Run a request through the client library.
    pub async fn try_run(&self, req: &JailRequest) -> Result<JailResult, ClientError> {
        codejail_client::jail_code(&self.cfg(), req).await
    }

    /// Run a request through the client library; panics (with the broker's log) on a
    /// client or broker error.
    pub async fn run(&self, req: &JailRequest) -> JailResult {
        match self.try_run(req).await {
            Ok(res) => res,
            Err(e) => panic!(
                "jail_code failed: {e} ({e:?}); broker output:\n{}",
                self.log()
            ),
        }
    }

    /// Whether the broker process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && self.child.try_wait().expect("try_wait broker").is_none()
    }

    /// Send SIGTERM and wait for the broker to exit (SIGKILL after `grace`).
    pub fn terminate_within(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait broker") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait broker");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.exit = Some(status);
        status
    }

    /// Processes that run as the broker's uid besides the broker itself (its runs), or
    /// (production shape) as one of its per-run uids. Empty when the broker runs as the
    /// caller (no uid of its own to scan).
    pub fn stray_processes(&self) -> Vec<ProcInfo> {
        let Some(uid) = self.uid else {
            return Vec::new();
        };
        let me = self.child.id() as i32;
        let range = self.run_ids();
        processes()
            .into_iter()
            .filter(|p| {
                (p.uid == uid || range.as_ref().is_some_and(|r| r.contains(&p.uid))) && p.pid != me
            })
            .collect()
    }

    /// Entries of the broker's directory other than its socket.
    pub fn state_dir_leftovers(&self) -> Vec<String> {
        match fs::read_dir(&self.state_dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != SOCKET_NAME)
                .collect(),
            Err(e) => vec![format!("<cannot list {}: {e}>", self.state_dir.display())],
        }
    }

    /// The temporary directory holding the broker's log and state dir.
    pub fn root_dir(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.terminate_within(Duration::from_secs(10));
    }
}

/// Whether brokers of this shape can run here: the production shape needs root (to
/// start the broker with `setpriv` and create its cgroup parents) and the v1 memory and
/// pids hierarchies (what this project's hybrid hosts have).
fn shape_usable(shape: Shape) -> Result<(), String> {
    match shape {
        Shape::Dev => Ok(()),
        Shape::Production if !is_root() => Err(
            "the production shape needs root (setpriv with ambient capabilities, chowned cgroup parents)"
                .into(),
        ),
        Shape::Production => V1CgroupParents::own("memory")
            .and(V1CgroupParents::own("pids"))
            .map(|_| ())
            .ok_or_else(|| {
                "the production shape needs the v1 memory and pids cgroup hierarchies, which this host lacks"
                    .into()
            }),
    }
}

/// The per-run id range of a production-shape broker of `uid`: its own, so that the
/// start-up sweeps of concurrent brokers never meet.
fn production_run_ids(uid: u32) -> (u32, u32) {
    let slot = uid.saturating_sub(BROKER_UID_BASE);
    (RUN_IDS_BASE + slot * PRODUCTION_RUN_IDS, PRODUCTION_RUN_IDS)
}

/// v1 memory and pids cgroup parents for one production-shape broker, created under
/// this test process's own cgroups and owned by the broker's uid, as an operator sets
/// them up (see `broker/tests/cgroup.rs`). Removed (with whatever run cgroups are left,
/// their tasks killed) on drop.
#[derive(Debug)]
pub struct V1CgroupParents {
    /// The memory parent.
    pub memory: PathBuf,
    /// The pids parent.
    pub pids: PathBuf,
}

impl V1CgroupParents {
    /// The directory of `controller`'s v1 hierarchy that holds this process.
    fn own(controller: &str) -> Option<PathBuf> {
        let mount = Path::new("/sys/fs/cgroup").join(controller);
        let cgroup = fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, list, path) = (f.next()?, f.next()?, f.next()?);
            list.split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })?;
        let dir = mount.join(rel.trim_start_matches('/'));
        dir.join("cgroup.procs").exists().then_some(dir)
    }

    /// Create both parents for a broker running as `uid` (needs root).
    pub fn create(uid: u32) -> Result<V1CgroupParents, String> {
        let (Some(memory), Some(pids)) = (Self::own("memory"), Self::own("pids")) else {
            return Err("no v1 memory and pids hierarchies here".into());
        };
        let name = format!("codejail-test-{}-{uid}", std::process::id());
        let parents = V1CgroupParents {
            memory: memory.join(&name),
            pids: pids.join(&name),
        };
        for dir in [&parents.memory, &parents.pids] {
            // A leftover of a killed earlier test process with the same pid.
            if dir.exists() {
                remove_cgroup(dir);
            }
            fs::create_dir(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            // The broker creates the run cgroups itself; the parent's own files are
            // chowned as `chown -R` would.
            let id = Some(uid.into());
            nix::unistd::chown(dir, id, Some(uid.into()))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
            for entry in fs::read_dir(dir)
                .map_err(|e| format!("read {}: {e}", dir.display()))?
                .flatten()
            {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    nix::unistd::chown(&entry.path(), id, Some(uid.into()))
                        .map_err(|e| format!("chown {}: {e}", entry.path().display()))?;
                }
            }
        }
        Ok(parents)
    }

    /// The `--cgroup-v1` argument.
    pub fn arg(&self) -> String {
        format!("{},{}", self.memory.display(), self.pids.display())
    }

    /// Run cgroups (`run-*`) left under either parent.
    pub fn leftover_runs(&self) -> Vec<PathBuf> {
        [&self.memory, &self.pids]
            .iter()
            .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten())
            .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
            .map(|e| e.path())
            .collect()
    }
}

impl Drop for V1CgroupParents {
    fn drop(&mut self) {
        for dir in [&self.memory, &self.pids] {
            let children: Vec<PathBuf> = fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            for child in children.iter().chain(std::iter::once(dir)) {
                remove_cgroup(child);
            }
        }
    }
}

/// Kill whatever is in a cgroup and rmdir it (test clean-up; retries while tasks exit).
fn remove_cgroup(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.exists() && Instant::now() < deadline {
        for pid in fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if fs::remove_dir(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn next_broker_uid() -> u32 {
    let n = NEXT_BROKER.fetch_add(1, Ordering::Relaxed) % 100;
    // Spread concurrent test processes apart so their scans never see each other.
    BROKER_UID_BASE + 1 + (std::process::id() % 1000) * 100 + n
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// A fixture file or directory of this crate (`tests/fixtures/NAME`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Python's `textwrap.dedent`, after dropping one leading newline: lets tests write
/// programs as indented Rust string literals.
pub fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() {
            out.push_str(if line.ends_with('\n') { "\n" } else { "" });
        } else {
            out.push_str(&line[indent..]);
        }
    }
    out
}

/// A `python` request running `code` (dedented).
pub fn py(code: &str) -> JailRequest {
    JailRequest {
        command: "python".into(),
        code: Some(dedent(code)),
        ..JailRequest::default()
    }
}

/// `req` with one more limit value.
pub fn with_limit(mut req: JailRequest, name: &str, value: u64) -> JailRequest {
    req.limits.insert(name.to_string(), value);
    req
}

/// Lossy text of output bytes, for messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Upstream's `assertResultOk`: empty stderr and status 0.
#[track_caller]
pub fn assert_ok(res: &JailResult) {
    assert_eq!(
        (text(&res.stderr).as_str(), res.status),
        ("", 0),
        "expected success; stdout: {:?}",
        text(&res.stdout)
    );
}

/// One process, as seen in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id (in our pid namespace).
    pub pid: i32,
    /// Real uid.
    pub uid: u32,
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: String,
    /// Command line, arguments joined by spaces (empty for zombies).
    pub cmdline: String,
}

/// Every process visible in `/proc` (processes that vanish mid-scan are skipped).
pub fn processes() -> Vec<ProcInfo> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in rd.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| rest.trim().to_string())
                .unwrap_or_default()
        };
        let uid = field("Uid:")
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or(u32::MAX);
        let cmdline = fs::read(entry.path().join("cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        out.push(ProcInfo {
            pid,
            uid,
            state: field("State:"),
            cmdline,
        });
    }
    out
}

/// Processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<ProcInfo> {
    processes()
        .into_iter()
        .filter(|p| p.cmdline.contains(marker))
        .collect()
}

/// Poll `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A unique marker for a test's processes (put in their argv, found in `/proc`).
pub fn unique_marker(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "cjmark_{tag}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `python` [`Exec`] for the raw protocol.
pub fn raw_python(code: &str) -> Exec {
    Exec {
        command: "python".into(),
        code: Some(dedent(code).into_bytes()),
        ..Exec::default()
    }
}

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

/// `limits` map from pairs.
pub fn limits(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
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
