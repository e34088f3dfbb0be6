//! A real broker under test ([`TestBroker`]): starting and restarting it, running
//! requests through it, stopping it, and what it leaves behind. Its [`Shape`] and
//! [`BrokerOpts`] are in the `broker_opts` module.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::*;

/// Define `NAME::dev` and `NAME::production`, two tests each running the async scenario
/// `NAME(shape)` of the calling module in that [`Shape`](crate::Shape).
#[macro_export]
macro_rules! both_shapes {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn dev() {
                super::$name($crate::Shape::Dev).await;
            }

            #[tokio::test]
            async fn production() {
                super::$name($crate::Shape::Production).await;
            }
        }
    };
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
            let mut paths = vec![broker.clone(), bin("codejail-jail"), python()];
            if crate::env::test_fork_server() {
                paths.push(bin("libcodejail_zygote.so"));
            }
            for path in paths {
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
        let mut cgroups = cgroups;
        let child = Self::spawn_child(
            &opts,
            uid,
            &state_dir,
            &socket,
            run_ids,
            cgroups.as_ref(),
            log_file,
        );
        if let Some(parents) = cgroups.as_mut() {
            parents.pooled_broker = opts.pooled().then_some(child.id() as i32);
        }
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
        if let Some(parents) = self.cgroups.as_mut() {
            parents.pooled_broker = self.opts.pooled().then_some(self.child.id() as i32);
        }
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
                // does, with no_new_privs as the unit's NoNewPrivileges=yes sets it (an
                // exec that changes uids behaves differently under it); it re-arms the
                // parent-death signal after changing the ids.
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .args([
                        "--inh-caps=-all,+setuid,+setgid",
                        "--ambient-caps=-all,+setuid,+setgid",
                        "--bounding-set=-all,+setuid,+setgid",
                        "--no-new-privs",
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
            .arg(opts.python.clone().unwrap_or_else(python))
            .args(["--allow-uid", "0", "--allow-uid"])
            .arg(our_uid.to_string());
        if let (Some((first, count)), Some(parents)) = (run_ids, cgroups) {
            cmd.arg("--run-ids")
                .arg(format!("{first}:{count}"))
                .arg("--cgroup-v1")
                .arg(parents.arg())
                .arg("--require-cgroups");
        }
        // CODEJAIL_TEST_POOL=N: every broker keeps N warm jails (the suites' second
        // pass, scripts/test.sh), unless the test sets its own pool.
        if let Some(size) = crate::env::test_pool_size() {
            if !opts.args.iter().any(|a| a == "--pool-size") {
                cmd.arg("--pool-size").arg(size.to_string());
            }
        }
        // CODEJAIL_TEST_FORK_SERVER=1: the warm jails forked from a zygote, in both
        // shapes.
        if crate::env::test_fork_server() && !opts.args.iter().any(|a| a == "--fork-server") {
            cmd.arg("--fork-server");
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
        self.strays(processes)
    }

    /// How many [`stray_processes`](Self::stray_processes) there are, counted without
    /// reading command lines ([`crate::processes_without_cmdline`]), so that a count
    /// while a fork bomb runs does not wait on one.
    pub fn stray_count(&self) -> usize {
        self.strays(crate::procs::processes_without_cmdline).len()
    }

    fn strays(&self, scan: fn() -> Vec<ProcInfo>) -> Vec<ProcInfo> {
        let Some(uid) = self.uid else {
            return Vec::new();
        };
        let me = self.child.id() as i32;
        let range = self.run_ids();
        let procs = scan();
        // A pooled broker's unused warm jails are its descendants: not leftovers (a
        // run's stage is reaped, its whole pid namespace gone, before its run ends).
        let pooled = self.opts.pooled();
        procs
            .iter()
            .filter(|p| {
                (p.uid == uid || range.as_ref().is_some_and(|r| r.contains(&p.uid)))
                    && p.pid != me
                    && !(pooled && crate::procs::descends_from(&procs, p.pid, me))
            })
            .cloned()
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

pub(crate) fn next_broker_uid() -> u32 {
    let n = NEXT_BROKER.fetch_add(1, Ordering::Relaxed) % 100;
    // Spread concurrent test processes apart so their scans never see each other.
    BROKER_UID_BASE + 1 + (std::process::id() % 1000) * 100 + n
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}
