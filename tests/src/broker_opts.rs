//! How a broker under test is started: its [`Shape`] and its [`BrokerOpts`].

use std::path::PathBuf;

use crate::*;

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
pub(crate) const RUN_IDS_BASE: u32 = 1_000_000;

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
    /// The interpreter of the `python` command (default: the test interpreter).
    pub python: Option<PathBuf>,
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

    /// Whether the broker keeps a warm pool (its own flags, or `CODEJAIL_TEST_POOL`).
    pub fn pooled(&self) -> bool {
        crate::env::test_pool_size().is_some()
            || self
                .args
                .iter()
                .any(|a| a == "--pool-size" || a == "--preimport" || a == "--fork-server")
    }

    /// The `python` command's interpreter.
    pub fn python(mut self, path: impl Into<PathBuf>) -> Self {
        self.python = Some(path.into());
        self
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

/// Whether brokers of this shape can run here: the production shape needs root (to
/// start the broker with `setpriv` and create its cgroup parents) and the v1 memory and
/// pids hierarchies (what this project's hybrid hosts have).
pub(crate) fn shape_usable(shape: Shape) -> Result<(), String> {
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
pub(crate) fn production_run_ids(uid: u32) -> (u32, u32) {
    let slot = uid.saturating_sub(BROKER_UID_BASE);
    (RUN_IDS_BASE + slot * PRODUCTION_RUN_IDS, PRODUCTION_RUN_IDS)
}
